//! Layouts as an engine crate declares them: with the attribute inline, with the attribute
//! reading a per-model file (with and without inline overrides), and from `build.rs`.
//! The small layouts equal configs of the golden data, so `tests/` can replay Megatron's
//! records through their generated builders; the bundled model layouts show real sizes.

#![deny(missing_docs)]

use attention_layout::attention_layout;

/// The repository's README, whose Rust code blocks `cargo test` runs as doctests of this
/// crate (which depends on `attention-layout` with the `macros` feature, as the README
/// tells an engine to).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct Readme;

/// Hybrid, automatic exponential graphs: the golden data's most common config.
#[attention_layout(
    model = "hybrid",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    kv_pool_blocks = 65,
    mamba(chunk_size = 4, conv_width = 4),
    graphs(count = "auto", distribution = "exponential", mixed_prefill = 4)
)]
pub struct HybridSmall;

/// The same layout without CUDA graphs: every step eager.
#[attention_layout(
    model = "hybrid",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    mamba(chunk_size = 4, conv_width = 4),
    graphs(count = "off")
)]
pub struct HybridEager;

/// Two speculative tokens, from a per-model file.
#[attention_layout(config = "layouts/hybrid-spec2.toml")]
pub struct HybridSpec2;

/// An explicit bucket table written inline: `[tokens, prefill, decode]` per CUDA graph.
#[attention_layout(
    model = "hybrid",
    max_requests = 8,
    max_tokens = 64,
    max_seq_len = 32,
    block_size = 4,
    mamba(chunk_size = 4, conv_width = 4),
    graphs(buckets = [[8, 0, 8], [3, 0, 3], [16, 2, 6], [32, 1, 7], [64, 4, 4]])
)]
pub struct HybridTable;

/// Both kernel formats written inline (`formats = [...]`): FlashInfer's CSR arrays and
/// vLLM's slot mapping, state indices and conv program map join the buffer.
#[attention_layout(
    model = "hybrid",
    max_requests = 8,
    max_tokens = 128,
    max_seq_len = 240,
    block_size = 16,
    formats = ["flashinfer", "vllm"],
    mamba(chunk_size = 16, conv_width = 4)
)]
pub struct HybridFormats;

/// `hybrid-small.toml` with an inline override: graphs for decode-only steps alone.
#[attention_layout(config = "layouts/hybrid-small.toml", graphs(non_decode = false))]
pub struct HybridDecodeGraphs;

// From build.rs: `MhaGraphs4` and `HybridLinearTp2`, and `Mamba2ByName` (a bundled
// layout named).
include!(concat!(env!("OUT_DIR"), "/mha_graphs4.rs"));
include!(concat!(env!("OUT_DIR"), "/hybrid_linear_tp2.rs"));
include!(concat!(env!("OUT_DIR"), "/mamba2_by_name.rs"));

/// A bundled layout named rather than found by path: `models::NemotronH8b`, smaller.
#[attention_layout(config = "nemotron-h-8b", max_requests = 128)]
pub struct NemotronH8bByName;

/// `models::NemotronH8b`, smaller: the bundled file by path, with the same override.
#[attention_layout(config = "../../layouts/nemotron-h-8b.toml", max_requests = 128)]
pub struct NemotronH8bByPath;

/// Real models: every layout bundled in `layouts/`, generated at full size.
pub mod models {
    use attention_layout::attention_layout;

    /// Nemotron-H-8B.
    #[attention_layout(config = "../../layouts/nemotron-h-8b.toml")]
    pub struct NemotronH8b;

    /// Llama-3.1-8B.
    #[attention_layout(config = "../../layouts/llama-3.1-8b.toml")]
    pub struct Llama3_1_8b;

    /// Qwen2.5-7B.
    #[attention_layout(config = "../../layouts/qwen2.5-7b.toml")]
    pub struct Qwen2_5_7b;

    /// Mamba2-2.7B.
    #[attention_layout(config = "../../layouts/mamba2-2.7b.toml")]
    pub struct Mamba2_2_7b;

    /// Jamba-1.5-Mini.
    #[attention_layout(config = "../../layouts/jamba-1.5-mini.toml")]
    pub struct Jamba1_5Mini;

    /// Llama-3.1-8B with two draft tokens per decode step.
    #[attention_layout(config = "../../layouts/llama-3.1-8b-spec2.toml")]
    pub struct Llama3_1_8bSpec2;

    /// Nemotron-H-8B with the bucket table `attention-layout tune` chose.
    #[attention_layout(config = "../../layouts/nemotron-h-8b-tuned.toml")]
    pub struct NemotronH8bTuned;
}
