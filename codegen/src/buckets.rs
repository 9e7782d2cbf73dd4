//! CUDA-graph buckets: token ladders, bucket lists, matching and eager padding
//! (SEMANTICS §2–§3).

/// A batch shape `(token_count, prefill_req_count, decode_req_count)`.
///
/// The derived order is lexicographic by `(tokens, prefill, decode)`, which is the order
/// "smallest bucket" refers to (SEMANTICS §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BatchDims {
    /// Tokens in the step (padded or real).
    pub tokens: u32,
    /// Prefill requests.
    pub prefill: u32,
    /// Decode requests.
    pub decode: u32,
}

impl BatchDims {
    /// A shape from its three counts.
    pub const fn new(tokens: u32, prefill: u32, decode: u32) -> Self {
        Self { tokens, prefill, decode }
    }

    /// `prefill + decode`.
    pub const fn requests(&self) -> u32 {
        self.prefill + self.decode
    }
}

/// How the token ladder is spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distribution {
    /// Halving ladder (Megatron's default).
    #[default]
    Exponential,
    /// Evenly spaced ladder.
    Linear,
}

/// Everything bucket generation needs (SEMANTICS §3.2 inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketParams {
    /// Tensor-parallel size.
    pub tp: u32,
    /// `None`: no graphs; `Some(-1)`: automatic count; `Some(n)`: `n` graphs.
    pub num_cuda_graphs: Option<i64>,
    /// CUDA-graph token budget as the context passes it (`cg_max`).
    pub cg_max: u32,
    /// Mixed prefill count.
    pub mixed_prefill_count: u32,
    /// `R`.
    pub max_requests: u32,
    /// `T`.
    pub max_tokens: u32,
    /// `S`.
    pub max_seq_len: u32,
    /// Whether mixed / prefill steps get graphs.
    pub non_decode_graphs: bool,
    /// Speculative tokens `s`.
    pub num_spec: u32,
    /// Ladder spacing.
    pub distribution: Distribution,
}

/// Temporary until the bucket module lands.
pub fn build_buckets(_p: &BucketParams) -> Vec<BatchDims> {
    Vec::new()
}
/// Temporary.
pub fn match_bucket(_r: BatchDims, _b: &[BatchDims], _s: bool) -> Option<BatchDims> {
    None
}
/// Temporary.
pub fn eager_padding(r: BatchDims, _a: u32, _b: u32, _c: u32, _d: u32) -> BatchDims {
    r
}
/// Temporary.
pub fn attention_dims(r: BatchDims, _m: Option<BatchDims>) -> BatchDims {
    r
}
