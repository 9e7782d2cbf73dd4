//! The CUDA backend (cargo feature `cuda`): the layout's fill kernels compiled with NVRTC,
//! a double-buffered pinned staging area, one host-to-device copy per step, the
//! device-resident block table, and a CUDA graph per bucket.
//!
//! cudarc loads `libcuda` and `libnvrtc` at run time, so this builds and links on machines
//! with no CUDA at all; [`probe`] checks for both libraries before any CUDA call (cudarc
//! panics at the first call when one is missing) and returns a typed error instead.
//!
//! Two fill modes ([`FillMode`]):
//! * **device fill** (the default): the host stages compact per-request records and the
//!   block-table work of the step (`crate::devfill`), one copy moves them, and the bucket's
//!   fill kernel computes every field in the device buffer;
//! * **host fill**: the CPU fill writes the whole buffer into pinned memory and one copy
//!   moves all of it (Megatron's design) — the baseline, and a fallback.
//!
//! Design notes are in `docs/DESIGN.md` ("CUDA backend").

mod backend;
pub mod compile;
#[cfg(feature = "nccl")]
pub mod nccl;
mod pinned;
pub mod stream_fill;

pub use backend::{CudaBackend, CudaOptions, FillMode, SetupReport, Snapshot, SnapshotRing};
pub use compile::{CompileOptions, CompileReport, PtxOrigin, RejectedEntry};
pub use stream_fill::{FillGraph, StreamFill};

use cudarc::driver::{CudaContext, sys};

use crate::backend::BackendError;

/// The device [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Its name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability.
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
    /// NVRTC's version.
    pub nvrtc: (i32, i32),
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (device {}, sm_{}{}, {} SMs, NVRTC {}.{})",
            self.name,
            self.ordinal,
            self.compute_capability.0,
            self.compute_capability.1,
            self.multiprocessors,
            self.nvrtc.0,
            self.nvrtc.1
        )
    }
}

/// Whether the CUDA driver library and NVRTC can be loaded, without calling either.
pub fn libraries_present() -> Result<(), BackendError> {
    // SAFETY: `is_culib_present` only tries to dlopen the library under its usual names
    // and closes it again; it calls no CUDA function.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(BackendError::CudaUnavailable(
            "the NVIDIA driver library (libcuda.so) was not found".to_owned(),
        ));
    }
    // SAFETY: as above, for libnvrtc.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(BackendError::CudaUnavailable(
            "NVRTC (libnvrtc.so) was not found; the CUDA toolkit's runtime compiler is needed"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Finds device `ordinal`: checks the libraries, initializes the driver and reads the
/// device's properties. Every failure is a typed error, never a panic.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, BackendError> {
    libraries_present()?;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        BackendError::CudaUnavailable(format!("{what}: {e}"))
    };
    let count = CudaContext::device_count()
        .map_err(|e| unavailable("the CUDA driver did not initialize", &e))?;
    if usize::try_from(count).unwrap_or(0) <= ordinal {
        return Err(BackendError::CudaUnavailable(format!(
            "no CUDA device {ordinal} (the driver reports {count} devices)"
        )));
    }
    let ctx =
        CudaContext::new(ordinal).map_err(|e| unavailable("cannot open the CUDA device", &e))?;
    let name = ctx.name().map_err(|e| unavailable("device name", &e))?;
    let compute_capability = ctx
        .compute_capability()
        .map_err(|e| unavailable("compute capability", &e))?;
    let multiprocessors = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| unavailable("multiprocessor count", &e))?;
    let nvrtc = compile::nvrtc_version()?;
    Ok(DeviceInfo {
        ordinal,
        name,
        compute_capability,
        multiprocessors: u32::try_from(multiprocessors).unwrap_or(1).max(1),
        nvrtc,
    })
}

/// Stages one step of the device fill into `out`: from its changes alone when its origin
/// says it advances the step staged last
/// ([`StagingBuilder::try_advance`](crate::devfill::StagingBuilder::try_advance)), else
/// planned and built, remembering the origin. The plan reads only the ids the step's tokens
/// land in when the step has residency (the builder checks every id it sends), so a step
/// costs what changed rather than the whole table. What the backend's steps and
/// `StreamFill::prepare` run. On error nothing changes.
fn stage_step(
    builder: &mut crate::devfill::StagingBuilder,
    plan_state: &mut crate::fill::FillState,
    dims: &crate::dims::RuntimeDims,
    input: &crate::step::StepInput<'_>,
    origin: Option<&crate::step::StepOrigin>,
    agreed: Option<&crate::agree::AgreedShape>,
    out: &mut [u8],
) -> Result<crate::devfill::Staged, BackendError> {
    use crate::fill;
    if let Some(staged) = origin
        .filter(|_| agreed.is_none())
        .and_then(|o| builder.try_advance(dims, input, o, out))
    {
        return Ok(staged);
    }
    let check = if input.residency.is_some() {
        fill::BlockCheck::Needed
    } else {
        fill::BlockCheck::Full
    };
    let plan = match agreed {
        None => fill::plan_step_checking(dims, input, plan_state, check)?,
        Some(g) => fill::plan_step_agreed(dims, input, plan_state, check, g)?,
    };
    Ok(match origin {
        Some(o) => builder.build_with_origin(&plan, out, o)?,
        None => builder.build(&plan, out)?,
    })
}
