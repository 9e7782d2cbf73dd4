//! # attention-layout
//!
//! Megatron-exact per-step metadata for attention (FlashAttention varlen, paged KV) and
//! Mamba2 kernels: the host fill (the reference implementation), the KV block allocator and
//! Mamba slot pool, the prefix cache (block hashes, the caching KV allocator, the durable
//! Mamba state cache), the engine-side batch state, the CUDA backend (feature `cuda`) and the
//! expert-parallel shape agreement. The command line tool (`attention-layout`: simulate,
//! tune, replay, bench, inspect) is its own crate, `attention-layout-cli`; with no default
//! features, an engine that depends on this one compiles none of it.

// The library never prints: an engine owns its process's output.
#![deny(clippy::print_stdout, clippy::print_stderr)]

/// What generated code names: not public API (see the module's source).
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod agree;
pub mod alloc;
pub mod backend;
pub mod batch;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod devfill;
pub mod dims;
pub mod error;
pub mod fill;
pub mod layout;
pub mod layouts;
pub mod metadata;
pub mod prefix;
pub mod step;

pub use agree::{AgreedShape, ShapeAgreement};
pub use attention_layout_codegen as codegen;
pub use attention_layout_codegen::{BatchDims, Facts, Field, Geometry, LayoutSpec};
/// The attribute that generates a [`Layout`] from a spec (feature `macros`).
#[cfg(feature = "macros")]
pub use attention_layout_macros::attention_layout;
pub use backend::{BackendKind, MetadataBackend};
pub use batch::{AsyncError, BatchError, BatchState, Prepared, RequestHandle, RequestPhase};
pub use dims::{Dims, RuntimeDims};
pub use error::StepError;
pub use fill::{FlashInferPlan, StepInfo};
pub use layout::{ConstDims, Layout};
pub use metadata::{DecodeIndices, Difference, HostMetadata, MetadataView};
pub use prefix::{EvictionPolicy, MambaStateCache, PrefixError, PrefixKvAllocator};
pub use step::{
    BlockChange, IntermediateOffsets, Phase, RequestRow, Residency, Sampling, StepInput, StepOrigin,
};
