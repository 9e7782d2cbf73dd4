//! # 02 — a Mamba2 consumer of the metadata
//!
//! Builds 24 random steps on four hybrid layouts (graphed with i64 decode indices, eager,
//! graphed with i32 decode indices and another chunk size and conv width, graphed with the
//! `vllm` format), copies each step's coalesced metadata buffer to the GPU as one buffer, and
//! runs six NVRTC kernels that read it at the geometry's byte offsets:
//!
//! * `mamba_decode`: conv and SSM state update of slot `batch_indices_decode[i]` (padded
//!   entries are `-1`: skipped, nothing written);
//! * `mamba_conv_prefill` / `mamba_conv_state_update`: causal conv1d over the prefill tokens,
//!   windows clipped by `conv_seq_idx` / `conv_seq_start`, slot conv states read and updated
//!   through `batch_indices_prefill`;
//! * `mamba_chunk_state` → `mamba_state_passing` → `mamba_chunk_scan`: the chunked SSD scan
//!   over `cu_chunk_seqlens`, `seq_idx_for_varlen` and `last_chunk_indices`, each sequence
//!   starting from its slot's state and leaving its final state there.
//!
//! On the `vllm` layout the kernels take vLLM's path (`*_vllm`): every state slot comes from
//! `vllm_state_indices_decode` / `vllm_state_indices_prefill` with no padding check, so
//! padding rows read and write the scratch slot `R` of an `R + 1`-slot state pool, the
//! final-state write-back included; fresh sequences start from zero by
//! `vllm_has_initial_state`; decode rows write their outputs by decode row into a separate
//! decode output (a padding row's output never lands on a token's). Run it under
//! `compute-sanitizer --tool memcheck` to see that no index leaves the pool.
//!
//! Each batch is compared with a sequential f64 recurrence per request (row-wise relative
//! error of `y` and of the final SSM states < 1e-3); conv states must match exactly, and
//! slots that no active row owns (free or paused) must be bit-identical. One line per batch,
//! then `N passed, M failed`.
//!
//! ```text
//! cargo run --release -p attention-layout-examples --features cuda --example mamba_consumer [BATCHES] [SEED]
//! ```
//! Exit codes: 0 all passed, 1 a batch failed, 2 built without the `cuda` feature, 3 no
//! usable GPU or another error.

#[cfg(not(feature = "cuda"))]
fn main() {
    attention_layout_examples::exit_without_cuda("mamba_consumer")
}

#[cfg(feature = "cuda")]
fn main() -> std::process::ExitCode {
    use attention_layout_examples::{RunArgs, gpu, layouts, mamba};
    let run = || -> attention_layout_examples::Result<bool> {
        let args = RunArgs::parse(std::env::args().skip(1))?;
        let layouts = layouts::mamba()?;
        let mut exec = gpu::GpuMamba::new(gpu::Gpu::open()?);
        let summary = mamba::run_batches(&layouts, args, &mut exec, &mut |l| println!("{l}"))?;
        Ok(summary.failed == 0)
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("mamba_consumer: error: {e}");
            std::process::ExitCode::from(3)
        }
    }
}
