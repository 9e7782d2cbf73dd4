//! # attention-layout-examples
//!
//! Real consumers of the metadata that `attention-layout` builds: kernels that read only the
//! coalesced buffer, at the geometry's byte offsets, and do the work an engine does with it.
//!
//! * [`attention`]: paged attention for decode and varlen prefill. A KV-append kernel writes
//!   each step token's K/V through `token_to_block_idx` / `token_to_local_position_within_kv_block`,
//!   then an attention kernel walks `cu_query_seq_lengths`, `cu_kv_seq_lengths` and the block
//!   table. Checked against dense attention in f64.
//! * [`mamba`]: a small Mamba2 mixer. Decode rows update their state slot through
//!   `batch_indices_decode`; prefill runs a causal conv over `conv_seq_idx` / `conv_seq_start`
//!   and a chunked SSD scan over `cu_chunk_seqlens`, `seq_idx_for_varlen` and
//!   `last_chunk_indices`. Checked against a sequential f64 recurrence.
//!
//! Each consumer has three implementations of the same thing: the f64 reference, which
//! never looks at the metadata; a CPU emulation of the kernels in f32, which reads the
//! metadata bytes exactly as the kernels do (so the index logic is tested without a GPU);
//! and the CUDA C kernels (NVRTC), run by the example programs behind the `cuda` feature.
//!
//! Layers, in the order a reader meets them: [`rng`] and [`layouts`] (what is run),
//! [`batch`] (random steps and the host fill), [`meta`] (reading the buffer by offset, and
//! the generated CUDA C header), [`check`] (error metrics and the per-batch report), then the
//! two consumers, then `gpu` (device set-up; `cuda` feature only).

pub mod attention;
pub mod batch;
#[cfg(feature = "cuda")]
pub mod captured;
pub mod check;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod layouts;
pub mod mamba;
pub mod meta;
pub mod rng;

/// The error type of the examples: any error, with a message that says what failed.
pub type Error = Box<dyn std::error::Error>;

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit code of a program built without the `cuda` feature.
pub const EXIT_NO_CUDA_BUILD: i32 = 2;

/// Prints why a program cannot run and exits with [`EXIT_NO_CUDA_BUILD`]. For the example
/// programs in builds without the `cuda` feature.
pub fn exit_without_cuda(program: &str) -> ! {
    eprintln!(
        "{program}: built without the cuda feature; rebuild with \
         `--features attention-layout-examples/cuda` and run it on a machine with an NVIDIA GPU"
    );
    std::process::exit(EXIT_NO_CUDA_BUILD)
}

/// Batches and seed of a run, from the command line: `[BATCHES] [SEED]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunArgs {
    /// How many random batches.
    pub batches: usize,
    /// The base seed (batch `i` uses `seed + i`).
    pub seed: u64,
}

impl RunArgs {
    /// The defaults: 24 batches, seed 2024.
    pub const DEFAULT: Self = Self {
        batches: 24,
        seed: 2024,
    };

    /// Parses `[BATCHES] [SEED]` (both optional).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self> {
        let mut out = Self::DEFAULT;
        let mut it = args.into_iter();
        if let Some(b) = it.next() {
            out.batches = b
                .parse()
                .map_err(|e| format!("BATCHES must be a number, got `{b}`: {e}"))?;
        }
        if let Some(s) = it.next() {
            out.seed = s
                .parse()
                .map_err(|e| format!("SEED must be a number, got `{s}`: {e}"))?;
        }
        if let Some(extra) = it.next() {
            return Err(format!("unexpected argument `{extra}` (usage: [BATCHES] [SEED])").into());
        }
        Ok(out)
    }
}
