//! A layout's bucket table with the rest of what padding a step needs: which bucket a real
//! shape lands in (docs/SEMANTICS.md §3.3, strict for Mamba layouts) and, when none, its eager
//! padding (§3.4). The scheduler's bucket-aware chunking and `tune` ask it; the fill
//! answers the same question from the same two functions of
//! [`attention_layout_codegen::buckets`].

use attention_layout_codegen::BatchDims;
use attention_layout_codegen::buckets::{eager_padding, match_bucket};

use attention_layout::dims::Dims;

/// Buckets (ascending) and the layout numbers padding depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    buckets: Vec<BatchDims>,
    strict: bool,
    max_requests: u32,
    max_tokens: u32,
    tensor_parallel: u32,
    speculative_tokens: u32,
}

impl BucketTable {
    /// The table of a layout.
    pub fn of<D: Dims + ?Sized>(dims: &D) -> Self {
        Self {
            buckets: dims.buckets().to_vec(),
            strict: dims.has_mamba(),
            max_requests: u32::try_from(dims.max_requests()).unwrap_or(u32::MAX),
            max_tokens: u32::try_from(dims.max_tokens()).unwrap_or(u32::MAX),
            tensor_parallel: dims.tensor_parallel(),
            speculative_tokens: u32::try_from(dims.speculative_tokens()).unwrap_or(u32::MAX),
        }
    }

    /// The same layout with another bucket list (sorted and deduplicated here).
    pub fn with_buckets(&self, mut buckets: Vec<BatchDims>) -> Self {
        buckets.sort_unstable();
        buckets.dedup();
        Self {
            buckets,
            ..self.clone()
        }
    }

    /// The buckets, ascending.
    pub fn buckets(&self) -> &[BatchDims] {
        &self.buckets
    }

    /// Whether matching is strict (Mamba layouts).
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// `R`.
    pub fn max_requests(&self) -> u32 {
        self.max_requests
    }

    /// `s`.
    pub fn speculative_tokens(&self) -> u32 {
        self.speculative_tokens
    }

    /// Tensor-parallel size.
    pub fn tensor_parallel(&self) -> u32 {
        self.tensor_parallel
    }

    /// The bucket `real` lands in, if any.
    pub fn matched(&self, real: BatchDims) -> Option<BatchDims> {
        match_bucket(real, &self.buckets, self.strict)
    }

    /// The eager padding of `real` (what it gets when no bucket matches).
    pub fn eager(&self, real: BatchDims) -> BatchDims {
        eager_padding(
            real,
            self.max_requests,
            self.max_tokens,
            self.tensor_parallel,
            self.speculative_tokens,
        )
    }

    /// The shape `real` is padded to, and whether a bucket matched (graphed).
    pub fn pad(&self, real: BatchDims) -> (BatchDims, bool) {
        match self.matched(real) {
            Some(b) => (b, true),
            None => (self.eager(real), false),
        }
    }
}
