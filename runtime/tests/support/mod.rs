//! Shared test support: random workloads, test layouts, and the CPU build of the emitted
//! CUDA kernels.

#![allow(
    clippy::panic,
    dead_code,
    reason = "Each test binary uses part of this module."
)]

#[cfg(feature = "cuda")]
pub mod gpu;
pub mod layouts;
pub mod prepared;
pub mod shaped;
pub mod shim;
pub mod steady;
pub mod workload;
