//! # 01 — paged attention from the metadata
//!
//! Builds 24 random steps (decode-only, prefill-only, mixed, one empty; on a graphed layout,
//! an eager one and a graphed one with speculative decoding) with the runtime's host fill,
//! copies each step's coalesced metadata buffer to the GPU as one buffer, and runs two NVRTC
//! kernels that read it at the geometry's byte offsets:
//!
//! 1. `kv_append` writes every step token's K/V into the paged cache at
//!    `(token_to_block_idx, token_to_local_position_within_kv_block)` (padding tokens: the
//!    dummy block, slot 0);
//! 2. `paged_attention` runs one block per (padded request, head, query token) over
//!    `cu_query_seq_lengths`, `cu_kv_seq_lengths` and the block table, causal within each
//!    request; padded requests have no queries and write nothing.
//!
//! Each batch is compared with dense attention in f64 (row-wise relative error < 1e-3), and
//! the cache is checked bit for bit: outside the dummy block only the new tokens' slots may
//! change. One line per batch, then `N passed, M failed`.
//!
//! ```text
//! cargo run --release -p attention-layout-examples --features cuda --example paged_attention [BATCHES] [SEED]
//! ```
//! Exit codes: 0 all passed, 1 a batch failed, 2 built without the `cuda` feature, 3 no
//! usable GPU or another error.

#[cfg(not(feature = "cuda"))]
fn main() {
    attention_layout_examples::exit_without_cuda("paged_attention")
}

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use attention_layout_examples::{RunArgs, attention, gpu, layouts};
    let run = || -> attention_layout_examples::Result<bool> {
        let args = RunArgs::parse(std::env::args().skip(1))?;
        let layouts = layouts::attention()?;
        let mut exec = gpu::GpuAttention::new(gpu::Gpu::open()?);
        let summary = attention::run_batches(&layouts, args, &mut exec, &mut |l| println!("{l}"))?;
        Ok(summary.failed == 0)
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("paged_attention: error: {e}");
            std::process::ExitCode::from(3)
        }
    }
}
