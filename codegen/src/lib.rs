//! # attention-layout-codegen
//!
//! The build-time half of attention-layout: the layout spec (from TOML or from the
//! attribute's arguments), its validation, the derived geometry of the one coalesced
//! metadata buffer, the CUDA-graph bucket list, and (behind the `emit` feature) the
//! emitters for the generated Rust items and CUDA C fill kernels.
//!
//! Everything here is plain data and pure functions, so it is unit-tested without a
//! compiler and shared by the proc-macro, build scripts and the runtime.

pub mod bucket_table;
pub mod buckets;
#[cfg(feature = "build")]
pub mod build;
pub mod bundled;
pub mod emit_cuda;
#[cfg(feature = "emit")]
pub mod emit_rust;
pub mod geometry;
pub mod load;
pub mod memory;
pub mod model;
pub mod spec;
#[cfg(test)]
mod test_layouts;

pub use buckets::{BatchDims, BucketParams, Distribution};
pub use geometry::{FieldLayout, Geometry};
pub use model::{
    ALIASES, BLOCK_TABLE_GUARD, Dtype, FIELD_COUNT, Fact, Facts, Field, Format, LiveDims,
    VLLM_CONV_BLOCK,
};
pub use spec::{LayoutSpec, ModelKind, SpecError};
