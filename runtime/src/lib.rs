//! # attention-layout
//!
//! Megatron-exact per-step metadata for attention (FlashAttention varlen, paged KV) and
//! Mamba2 kernels: the host fill (the reference implementation), the KV block allocator and
//! Mamba slot pool, and the command line tool.

pub mod alloc;
pub mod backend;
pub mod bench;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod devfill;
pub mod dims;
pub mod error;
pub mod fill;
#[cfg(feature = "golden")]
pub mod golden;
pub mod layouts;
pub mod metadata;
pub mod scenarios;
pub mod step;

pub use attention_layout_codegen as codegen;
pub use attention_layout_codegen::{BatchDims, Field, Geometry, LayoutSpec};
pub use backend::{BackendKind, MetadataBackend};
pub use dims::{Dims, RuntimeDims};
pub use error::StepError;
pub use fill::StepInfo;
pub use metadata::{DecodeIndices, Difference, HostMetadata, MetadataView};
pub use step::{
    BlockChange, IntermediateOffsets, Phase, RequestRow, Residency, Sampling, StepInput,
};
