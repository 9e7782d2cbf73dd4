//! Backend selection: where a step's metadata is built. `cpu` is the host fill (the
//! reference); `cuda` builds it on the GPU; `auto` picks CUDA when a driver and NVRTC are
//! present and says why it chose what it chose.

use std::fmt;

use crate::agree::AgreedShape;
use crate::dims::{Dims, RuntimeDims};
use crate::error::StepError;
use crate::fill::StepInfo;
use crate::metadata::{HostMetadata, MetadataView};
use crate::step::StepInput;

/// Which backend was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The host fill.
    Cpu,
    /// The CUDA backend (fails when no CUDA is present).
    Cuda,
    /// CUDA when available, else the CPU.
    #[default]
    Auto,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown backend `{other}`: expected cpu, cuda or auto"
            )),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        })
    }
}

/// A backend could not be set up or a step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The step input was rejected (nothing changed).
    #[error(transparent)]
    Step(#[from] StepError),
    /// CUDA was asked for but cannot be used.
    #[error("CUDA backend unavailable: {0}")]
    CudaUnavailable(String),
    /// A CUDA call failed.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// NVRTC rejected the generated kernels (a bug in the emitter): its log.
    #[error("NVRTC could not compile the fill kernels (options {options:?}):\n{log}")]
    Compile {
        /// NVRTC's log.
        log: String,
        /// The options it was given.
        options: Vec<String>,
    },
    /// The step's block-table residency was rejected (nothing changed).
    #[error(transparent)]
    Staging(#[from] crate::devfill::StagingError),
    /// The layout is beyond what the CUDA backend supports.
    #[error("CUDA backend: unsupported layout: {0}")]
    Unsupported(String),
    /// The expert-parallel group could not agree on the step's shape (nothing was built).
    #[error(transparent)]
    Agree(#[from] crate::agree::AgreeError),
    /// A snapshot ring was misused (nothing was copied).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The fill on a caller's stream (`cuda::StreamFill`) was misused (nothing was
    /// enqueued).
    #[error(transparent)]
    StreamFill(#[from] StreamFillError),
}

/// Why the fill on a caller's stream (`cuda::StreamFill`) refused to enqueue. Nothing was
/// enqueued and nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFillError {
    /// An eager enqueue without a step prepared since the last one: the kernel would apply
    /// the last step again.
    #[error(
        "no step was prepared since the last enqueue: call prepare before each eager enqueue_on"
    )]
    NotPrepared,
    /// The fill was already captured into a graph: that graph's replays are the only reads
    /// of the staging from now on (prepare before each replay), so neither an eager enqueue
    /// nor a second capture may read it too.
    #[error(
        "the fill was already captured into a graph: replay that graph (prepare before each replay); a second capture or an eager enqueue is refused"
    )]
    AlreadyCaptured,
    /// The stream belongs to another CUDA context than the backend the fill was made from.
    #[error("the stream belongs to another CUDA context than the fill's backend")]
    OtherContext,
    /// A fill graph (`cuda::FillGraph`) was asked to prepare a step while the step it
    /// prepared last was never launched: the device would miss that step.
    #[error(
        "the step prepared last was not launched yet: launch the fill graph once after each prepare"
    )]
    NotLaunched,
    /// A fill graph (`cuda::FillGraph`) failed to update or launch its graph after the
    /// step's staging was written, so the device's tables and the host's model of them may
    /// differ: it refuses every later step. Make a new one.
    #[error("the fill graph is unusable after a CUDA failure ({reason}): make a new one")]
    Unusable {
        /// The failure.
        reason: String,
    },
    /// The backend runs the host fill: there are no fill kernels to enqueue.
    #[error(
        "the backend runs the host fill (FillMode::Host): a stream fill needs the device fill's kernels"
    )]
    HostFill,
}

/// Why a snapshot ring of the CUDA backend (`cuda::SnapshotRing`) refused a snapshot or a
/// view. Nothing was copied or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The ring was made by another backend (`CudaBackend::snapshot_ring`): a copy of this
    /// backend's buffer could run past the ring's snapshots, and the ring's wait would not
    /// cover it.
    #[error(
        "the snapshot ring belongs to another backend (its snapshots hold {ring_bytes} bytes, this backend's layout has {layout_bytes}): take a ring from this backend's snapshot_ring"
    )]
    ForeignRing {
        /// Bytes of each of the ring's snapshots.
        ring_bytes: usize,
        /// Bytes of this backend's metadata buffer.
        layout_bytes: usize,
    },
    /// A snapshot index outside the ring.
    #[error("snapshot {index} is outside the ring of {count}")]
    Index {
        /// The index asked for.
        index: usize,
        /// Snapshots in the ring.
        count: usize,
    },
    /// A snapshot that was never taken.
    #[error("snapshot {index} of the ring was never taken")]
    NotTaken {
        /// The index asked for.
        index: usize,
    },
    /// The ring would not fit the address space.
    #[error("a ring of {count} snapshots of {stride} bytes exceeds the address space")]
    TooLarge {
        /// Snapshots asked for.
        count: usize,
        /// Bytes per snapshot (16-byte aligned).
        stride: usize,
    },
}

/// Something that builds a layout's metadata, one step at a time.
pub trait MetadataBackend {
    /// `"cpu"`, `"cuda (device fill)"`, ...
    fn name(&self) -> String;
    /// Builds one step's metadata. On error nothing changes.
    fn step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError>;
    /// Builds one step's metadata on a rank of an expert-parallel group: the padded shape
    /// is the one `agreed` selects (the same bucket on every rank, or eager padding on
    /// every rank; `crate::agree`), the rest as for [`step`](Self::step). With a
    /// one-rank agreement this is `step`. On error nothing changes.
    fn step_agreed(
        &mut self,
        input: &StepInput<'_>,
        agreed: &AgreedShape,
    ) -> Result<StepInfo, BackendError>;
    /// [`step`](Self::step) of an input a batch state built, with its origin
    /// ([`BatchState::with_step_origin`](crate::BatchState::with_step_origin)). A device
    /// backend stages a step that advances the one it staged last (a steady decode step of
    /// an async-scheduling engine: prepare, then resolve with every row continuing) from
    /// its changes alone, without a look at each row
    /// ([`StagingBuilder::try_advance`](crate::devfill::StagingBuilder::try_advance)); the
    /// metadata is the same either way. The CPU backend ignores the origin.
    ///
    /// # Errors
    ///
    /// Those of [`step`](Self::step).
    fn step_with_origin(
        &mut self,
        input: &StepInput<'_>,
        origin: &crate::StepOrigin,
    ) -> Result<StepInfo, BackendError> {
        let _ = origin;
        self.step(input)
    }

    /// The step `state` schedules now, with its origin
    /// ([`step_with_origin`](Self::step_with_origin)).
    ///
    /// # Errors
    ///
    /// Those of [`step`](Self::step).
    fn step_batch(&mut self, state: &mut crate::BatchState) -> Result<StepInfo, BackendError> {
        state.with_step_origin(|input, origin| self.step_with_origin(input, origin))
    }

    /// Waits until the last step's metadata is ready where the kernels read it.
    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Bytes moved host-to-device by the last step (0 for the CPU backend).
    fn bytes_copied_last_step(&self) -> usize {
        0
    }
    /// The engine's residency view starts over: from the next step on, `Residency::changes`
    /// describe every write since an all `-1` resident table (a fresh `BatchState`), not
    /// since the last step this backend ran — for example a new engine on a backend that
    /// served another one. A backend that keeps a resident block table forgets what it
    /// holds (the next steps upload their rows). Without this call such a backend trusts
    /// rows the old engine wrote. The CPU backend forgets which request each block-table
    /// row holds (its next step copies every row).
    fn reset_residency(&mut self) {}
}

/// The CPU backend: the host fill into host memory.
///
/// A step that carries residency (every step of a `BatchState`) is filled with
/// [`HostMetadata::fill_resident`]: rows that stayed where they were rewrite their
/// lengths and positions and only the block-table entries the residency changes name; a
/// step without residency, and rows that moved, are filled in full. The bytes are the full
/// fill's either way (docs/DESIGN.md, "The steady decode step").
#[derive(Debug, Clone)]
pub struct CpuBackend<D: Dims> {
    meta: HostMetadata<D>,
}

impl<D: Dims> CpuBackend<D> {
    /// A CPU backend for `dims`.
    pub fn new(dims: D) -> Self {
        Self {
            meta: HostMetadata::new(dims),
        }
    }

    /// The metadata of the last step.
    pub fn view(&self) -> MetadataView<'_> {
        self.meta.view()
    }

    /// The host metadata.
    pub fn metadata(&self) -> &HostMetadata<D> {
        &self.meta
    }
}

impl<D: Dims> MetadataBackend for CpuBackend<D> {
    fn name(&self) -> String {
        "cpu".to_owned()
    }
    fn step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError> {
        Ok(*self.meta.fill_resident(input)?)
    }
    fn step_agreed(
        &mut self,
        input: &StepInput<'_>,
        agreed: &AgreedShape,
    ) -> Result<StepInfo, BackendError> {
        Ok(*self.meta.fill_agreed(input, agreed)?)
    }
    fn reset_residency(&mut self) {
        self.meta.forget_residency();
    }
}

/// The chosen backend and why it was chosen.
pub struct Selected {
    /// The backend.
    pub backend: Box<dyn MetadataBackend>,
    /// One line saying what was chosen and why.
    pub reason: String,
}

/// Sets up the backend `kind` for a layout.
///
/// `cuda` fails with [`BackendError::CudaUnavailable`] when the build has no CUDA support
/// or the machine has no driver, NVRTC or device (never a panic). `auto` picks CUDA when
/// the driver and NVRTC load and a device opens, else the CPU backend; either way
/// [`Selected::reason`] says which and why.
pub fn select(kind: BackendKind, dims: RuntimeDims) -> Result<Selected, BackendError> {
    match kind {
        BackendKind::Cpu => Ok(Selected {
            backend: Box::new(CpuBackend::new(dims)),
            reason: "cpu backend (asked for)".to_owned(),
        }),
        BackendKind::Cuda => {
            let backend = cuda_backend(dims)?;
            let reason = format!("{} (asked for)", backend.name());
            Ok(Selected { backend, reason })
        }
        BackendKind::Auto => match cuda_backend(dims.clone()) {
            Ok(backend) => {
                let reason = format!(
                    "{} (auto: a CUDA driver, NVRTC and a device were found)",
                    backend.name()
                );
                Ok(Selected { backend, reason })
            }
            Err(e) => Ok(Selected {
                backend: Box::new(CpuBackend::new(dims)),
                reason: format!("cpu backend (auto: {})", auto_reason(&e)),
            }),
        },
    }
}

fn auto_reason(e: &BackendError) -> String {
    match e {
        BackendError::CudaUnavailable(why) => why.clone(),
        other => format!("CUDA is present but the CUDA backend could not be set up: {other}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda_backend(dims: RuntimeDims) -> Result<Box<dyn MetadataBackend>, BackendError> {
    let backend = crate::cuda::CudaBackend::new(dims, crate::cuda::CudaOptions::default())?;
    Ok(Box::new(backend))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(_dims: RuntimeDims) -> Result<Box<dyn MetadataBackend>, BackendError> {
    Err(BackendError::CudaUnavailable(
        "this build has no CUDA support (build with `--features cuda`)".to_owned(),
    ))
}
