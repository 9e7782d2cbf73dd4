//! [`StreamFill`]: the device fill enqueued on a caller's stream, capturable as the first
//! node of the caller's own CUDA graph.
//!
//! An engine that captures its forward pass wants the metadata fill inside that graph, on
//! its stream, instead of a separate launch and synchronize. A `StreamFill` owns its own
//! metadata buffer, resident tables and staging (so it never races with the backend it
//! was made from), and its kernel reads the staging image straight from page-locked host
//! memory mapped into the device's address space: the captured work is one kernel launch
//! with fixed arguments, so nothing in the graph has to change from step to step.
//!
//! # The contract: prepare before each replay
//!
//! ```text
//! let mut fill = backend.stream_fill()?;
//! fill.prepare(&step0)?;               // host: plan + staging, before the capture
//! stream.begin_capture(..)?;
//! fill.enqueue_on(&stream)?;           // the fill kernel (reads the staging when it runs)
//! consumer kernels on `stream` reading fill.device_buffer()
//! let graph = stream.end_capture(..)?;
//! loop { fill.prepare(&step)?; graph.launch()?; }   // exactly one replay per prepare
//! ```
//!
//! * [`prepare`](StreamFill::prepare) writes the step's staging. It first waits until the
//!   last kernel that read the staging (an eager enqueue or a replay of the captured graph)
//!   has finished, so the host never writes what the device is reading: the enqueue
//!   records an event after the kernel, and in a capture that record becomes a node of
//!   the graph, so every replay records it again. Call it outside any capture.
//! * Each prepared step must be run exactly once: by one eager
//!   [`enqueue_on`](StreamFill::enqueue_on), or by one replay of the graph the fill was
//!   captured in. The staging builder assumes the device ran every step it staged (delta
//!   steps advance the device's request table), so a replay without a prepare, or a
//!   prepare without a replay, leaves wrong metadata until the next full step. The
//!   kernels stay inside their buffers whatever the device's tables hold (a
//!   misapplied delta step cannot index past a block-table row).
//! * One capture per `StreamFill`: after it, the graph's replays are the only reads of the
//!   staging, and an eager enqueue or a second capture is refused
//!   ([`StreamFillError::AlreadyCaptured`]). Launches of one executable graph are ordered
//!   after each other, so the event the last replay recorded covers every earlier one.
//!   Make another `StreamFill` for another graph.
//! * The stream must belong to the backend's context ([`StreamFillError::OtherContext`]);
//!   the captured kernel is the fill entry (padded dims from the staging header), so one
//!   graph serves every step shape, with a grid sized for the largest step.
//!
//! # A graph whose fill node follows the step: [`FillGraph`]
//!
//! ```text
//! let mut g = backend.stream_fill()?.capture(&stream, |stream, meta| {
//!     consumer kernels on `stream` reading `meta`
//! })?;
//! loop { g.prepare_batch(&mut state)?; g.launch()?; }   // one launch per prepare, enforced
//! ```
//!
//! [`StreamFill::capture`] runs the capture itself and hands back the instantiated graph
//! as a [`FillGraph`], which owns it: before each launch it points the fill node at the
//! step (`cuGraphExecKernelNodeSetParams`). A steady step's image (at most
//! [`abi::PARAM_IMAGE_BYTES`]) then travels in the kernel's parameters to the parameter
//! entry, so the node reads nothing over the bus; larger steps, and steps of no bucket,
//! run the fill entry on the mapped staging as above.

use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::sync::Arc;

use attention_layout_codegen::emit_cuda::abi;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr,
    PinnedHostSlice, result, sys,
};

use super::backend::{
    FillArgs, ParamImage, Snapshot, find_kernel_node, launch_fill_kernel, set_kernel_node,
};
use crate::backend::{BackendError, StreamFillError};
use crate::batch::BatchState;
use crate::devfill::{self, Staged, StagingBuilder};
use crate::dims::{Dims, RuntimeDims};
use crate::fill::{self, FillState, StepInfo};
use crate::step::{StepInput, StepOrigin};

fn cuda(what: &str) -> impl Fn(result::DriverError) -> BackendError + '_ {
    move |e| BackendError::Cuda(format!("{what}: {e}"))
}

/// Page-locked host memory mapped into the device's address space: the staging the
/// stream fill's kernel reads over the bus.
///
/// The safety argument of the mapping lives here. The host sees the bytes only through
/// [`bytes_mut`](Self::bytes_mut), which first waits for `done` when a reader may be
/// pending; every kernel that reads the memory is enqueued by [`StreamFill::enqueue_on`]
/// with `done` recorded after it on the same stream (in a capture, as an event-record
/// node after the kernel node), and the one captured graph's launches are ordered after
/// each other, so `done` completing means no read is pending. Whoever enqueues a reader
/// says so first: an eager enqueue sets `may_be_read`, a capture into a caller's graph
/// `unseen_readers` (its replays are the caller's), and a [`FillGraph`] launch whose node
/// reads the staging `may_be_read`. Dropping waits for `done` too (and leaks the memory
/// if that wait fails).
struct MappedStaging {
    ptr: *mut u8,
    device: sys::CUdeviceptr,
    len: usize,
    done: CudaEvent,
    /// A kernel that reads the memory was enqueued since the last wait.
    may_be_read: bool,
    /// Kernels that read the memory may be launched where this type does not see them
    /// (replays of a caller's graph): every write waits.
    unseen_readers: bool,
    memory: ManuallyDrop<PinnedHostSlice<u8>>,
}

impl MappedStaging {
    fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, BackendError> {
        let len = len.max(1);
        if isize::try_from(len).is_err() {
            return Err(BackendError::Cuda(format!(
                "{len} bytes of pinned memory exceed the address space"
            )));
        }
        // SAFETY: cudarc's one condition is that the memory starts uninitialized: it is
        // zeroed below before anything reads it. DEVICEMAP: mapped into the device's
        // address space (the kernel reads it there).
        let mut memory =
            unsafe { ctx.alloc_pinned_with_flags::<u8>(len, sys::CU_MEMHOSTALLOC_DEVICEMAP) }
                .map_err(cuda("allocate mapped pinned memory"))?;
        let ptr = memory.as_mut_ptr().map_err(cuda("pinned memory"))?;
        // SAFETY: `ptr` is the start of the `len` bytes just allocated, referenced by
        // nothing else yet; no kernel can read them yet.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        let mut device: sys::CUdeviceptr = 0;
        // SAFETY: `ptr` was allocated with CU_MEMHOSTALLOC_DEVICEMAP in this context (bound
        // by the allocation above); `device` is valid for the write; flags must be 0.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device, ptr.cast::<c_void>(), 0) }
            .result()
            .map_err(cuda("map pinned memory into the device"))?;
        let done = ctx.new_event(None).map_err(cuda("create an event"))?;
        Ok(Self {
            ptr,
            device,
            len,
            done,
            may_be_read: false,
            unseen_readers: false,
            memory: ManuallyDrop::new(memory),
        })
    }

    /// The bytes for writing, once no kernel reads them any more.
    fn bytes_mut(&mut self) -> Result<&mut [u8], BackendError> {
        // A query first: cheaper than a synchronize when the last replay is done (a failed
        // query reads as not complete, and the synchronize reports the error).
        if (self.may_be_read || self.unseen_readers) && !self.done.is_complete() {
            self.done
                .synchronize()
                .map_err(cuda("wait for the staging"))?;
        }
        self.may_be_read = false;
        // SAFETY: `ptr` addresses `len` initialized bytes (zeroed at allocation) owned by
        // `memory`, which lives as long as `self`; no kernel reads them (waited above: the
        // type's argument; without a reader enqueued since the last wait, or one that may
        // be unseen, none can be pending), and none can be enqueued while `self` is
        // borrowed mutably.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }
}

impl Drop for MappedStaging {
    fn drop(&mut self) {
        if self.done.synchronize().is_ok() {
            // SAFETY: dropped here, once, never used again; no kernel reads the memory
            // any more (waited above).
            unsafe { ManuallyDrop::drop(&mut self.memory) };
        }
    }
}

/// The device fill on a caller's stream (see the [module docs](crate::cuda::stream_fill) for the contract).
///
/// Not `Send`: it holds raw pointers into pinned memory.
pub struct StreamFill {
    // Fields drop in order: the staging waits for the last kernel that reads it, before
    // the device buffers and the module go.
    staging: MappedStaging,
    entry: CudaFunction,
    /// The backend's parameter entry (when it compiled one): what a [`FillGraph`] points
    /// its node at for a small image.
    param: Option<CudaFunction>,
    grid: u32,
    max_workers: u32,
    meta_ptr: sys::CUdeviceptr,
    resident_ptr: sys::CUdeviceptr,
    _meta: CudaSlice<u8>,
    _resident: CudaSlice<i32>,
    builder: StagingBuilder,
    plan_state: FillState,
    dims: RuntimeDims,
    ctx: Arc<CudaContext>,
    info: StepInfo,
    staged: Staged,
    /// A step was prepared and not yet enqueued eagerly.
    prepared: bool,
    /// The fill was captured into a graph.
    captured: bool,
}

impl Drop for StreamFill {
    fn drop(&mut self) {
        // Kernels of the caller's (consumers of `device_buffer`, replays of its graph)
        // may still read the buffers freed after this; the staging waits for its own
        // readers in any case.
        let _ = self.ctx.synchronize();
    }
}

impl StreamFill {
    /// A stream fill for `dims` with the backend's compiled fill entry (`entry`) and
    /// parameter entry (`param`: loaded for a layout with buckets), in `ctx`, whose grids
    /// use up to `max_workers` worker blocks. Allocates its buffers and initializes its
    /// metadata buffer (synchronously, on a stream of its own).
    pub(super) fn new(
        ctx: Arc<CudaContext>,
        entry: CudaFunction,
        param: Option<CudaFunction>,
        dims: RuntimeDims,
        max_workers: u32,
    ) -> Result<Self, BackendError> {
        ctx.bind_to_thread()
            .map_err(cuda("bind the CUDA context"))?;
        let stream = ctx.new_stream().map_err(cuda("create a stream"))?;
        let total = dims.total_bytes();
        let mut meta = stream
            .alloc_zeros::<u8>(total)
            .map_err(cuda("allocate the metadata buffer"))?;
        let mut initial = vec![0u64; total.div_ceil(8)];
        fill::init_buffer(&dims, bytemuck::cast_slice_mut(&mut initial))?;
        let initial_bytes: &[u8] = bytemuck::cast_slice(&initial);
        stream
            .memcpy_htod(
                initial_bytes.get(..total).unwrap_or(initial_bytes),
                &mut meta,
            )
            .map_err(cuda("initialize the metadata buffer"))?;
        let words = abi::resident_words(dims.max_requests(), dims.block_table_width());
        let resident = stream
            .alloc_zeros::<i32>(words.max(1))
            .map_err(cuda("allocate the resident tables"))?;
        stream
            .synchronize()
            .map_err(cuda("initialize the buffers"))?;
        let builder = StagingBuilder::new(&dims);
        let staging = MappedStaging::new(&ctx, builder.buffer_len())?;
        let nkv = dims.block_table_width() as u64;
        let grid = devfill::grid_for(dims.max_requests() as u64 * nkv, max_workers);
        let meta_ptr = meta.device_ptr(&stream).0;
        let resident_ptr = resident.device_ptr(&stream).0;
        Ok(Self {
            staging,
            entry,
            param,
            grid,
            max_workers,
            meta_ptr,
            resident_ptr,
            _meta: meta,
            _resident: resident,
            builder,
            plan_state: FillState::new(&dims),
            dims,
            ctx,
            info: StepInfo::default(),
            staged: Staged::default(),
            prepared: false,
            captured: false,
        })
    }

    /// The device address of this fill's metadata buffer (fields at the layout's
    /// offsets): what the consumer kernels after [`enqueue_on`](Self::enqueue_on) read.
    /// It stays valid while the fill lives; dropping the fill waits for every stream of
    /// its context first (so for consumers enqueued after it too).
    pub fn device_buffer(&self) -> u64 {
        self.meta_ptr
    }

    /// The layout's dims.
    pub fn dims(&self) -> &RuntimeDims {
        &self.dims
    }

    /// What the last prepared step staged (its bytes: what the kernel reads over the
    /// bus; whether it was a delta step).
    pub fn last_staged(&self) -> &Staged {
        &self.staged
    }

    /// Whether the fill was captured into a graph.
    pub fn captured(&self) -> bool {
        self.captured
    }

    /// The engine's residency view starts over (a fresh `BatchState`, or another engine's
    /// steps before): from the next step on, the residency changes describe every write
    /// since an all `-1` resident table. The fill forgets what its resident table holds,
    /// as [`MetadataBackend::reset_residency`](crate::MetadataBackend::reset_residency)
    /// does for a backend.
    pub fn reset_residency(&mut self) {
        self.builder.forget_residency();
    }

    /// Plans the step and writes its staging, after waiting until no kernel reads the
    /// staging any more. Call it outside any stream capture, once before each eager
    /// enqueue or each replay of the captured graph (module docs). On error nothing
    /// changes.
    ///
    /// # Errors
    ///
    /// The step's errors ([`BackendError::Step`], [`BackendError::Staging`]) and CUDA
    /// failures of the wait.
    pub fn prepare(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError> {
        self.prepare_from(input, None)
    }

    /// [`prepare`](Self::prepare) of the step `state` schedules now, with its origin: a
    /// steady decode step of an async-scheduling engine (prepare, then resolve with every
    /// row continuing) is staged from its changes alone
    /// ([`StagingBuilder::try_advance`](crate::devfill::StagingBuilder::try_advance)), without
    /// a plan or a look at each row. The same contract and errors as `prepare`.
    ///
    /// # Errors
    ///
    /// Those of [`prepare`](Self::prepare).
    pub fn prepare_batch(&mut self, state: &mut BatchState) -> Result<StepInfo, BackendError> {
        state.with_step_origin(|input, origin| self.prepare_with_origin(input, origin))
    }

    /// [`prepare`](Self::prepare) of an input a batch state built, with its origin
    /// ([`BatchState::with_step_origin`](crate::BatchState::with_step_origin)): what
    /// [`prepare_batch`](Self::prepare_batch) runs.
    ///
    /// # Errors
    ///
    /// Those of [`prepare`](Self::prepare).
    pub fn prepare_with_origin(
        &mut self,
        input: &StepInput<'_>,
        origin: &StepOrigin,
    ) -> Result<StepInfo, BackendError> {
        self.prepare_from(input, Some(origin))
    }

    fn prepare_from(
        &mut self,
        input: &StepInput<'_>,
        origin: Option<&StepOrigin>,
    ) -> Result<StepInfo, BackendError> {
        let staged = super::stage_step(
            &mut self.builder,
            &mut self.plan_state,
            &self.dims,
            input,
            origin,
            None,
            self.staging.bytes_mut()?,
        )?;
        self.staged = staged;
        self.info = staged.info;
        self.prepared = true;
        Ok(staged.info)
    }

    /// Enqueues the fill kernel on `stream`, then the event [`prepare`](Self::prepare)
    /// waits for. Outside a capture it runs the step prepared last (one enqueue per
    /// prepare); inside a capture it becomes the graph's fill node, reading the staging
    /// each replay writes before it (module docs).
    ///
    /// # Errors
    ///
    /// [`StreamFillError::OtherContext`], [`StreamFillError::AlreadyCaptured`] (after a
    /// capture), [`StreamFillError::NotPrepared`] (an eager enqueue without a new step),
    /// and CUDA failures.
    pub fn enqueue_on(&mut self, stream: &CudaStream) -> Result<(), BackendError> {
        self.check_stream(stream)?;
        let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        // SAFETY: `stream` is a live stream of this context; `status` is valid for writes.
        unsafe { sys::cuStreamIsCapturing(stream.cu_stream(), &mut status) }
            .result()
            .map_err(cuda("query the stream's capture"))?;
        let capturing = status == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE;
        if !capturing && !self.prepared {
            return Err(StreamFillError::NotPrepared.into());
        }
        // Said before the kernel is enqueued: a failure halfway leaves the waits on.
        if capturing {
            self.staging.unseen_readers = true;
        } else {
            self.staging.may_be_read = true;
        }
        self.enqueue_kernel(stream, capturing)?;
        if capturing {
            self.captured = true;
        } else {
            self.prepared = false;
        }
        Ok(())
    }

    /// Refuses a stream of another context, and any enqueue after a capture.
    fn check_stream(&self, stream: &CudaStream) -> Result<(), BackendError> {
        if !Arc::ptr_eq(stream.context(), &self.ctx) {
            return Err(StreamFillError::OtherContext.into());
        }
        if self.captured {
            return Err(StreamFillError::AlreadyCaptured.into());
        }
        self.ctx
            .bind_to_thread()
            .map_err(cuda("bind the CUDA context"))
    }

    /// Enqueues the fill entry on the staging, then the record of `done` (EXTERNAL when
    /// `capturing`). The caller has said that the staging may be read (`MappedStaging`).
    fn enqueue_kernel(&self, stream: &CudaStream, capturing: bool) -> Result<(), BackendError> {
        // SAFETY: `entry` is the fill entry of the module compiled for this layout; the
        // pointers are this fill's live allocations of the sizes the kernel indexes
        // (metadata: the layout's bytes; staging: the builder's buffer length, mapped;
        // resident: `abi::resident_words`). When the kernel runs, the staging holds an
        // image the builder wrote for this layout: `prepare` writes a whole image before
        // it returns and never while a reader may be pending (MappedStaging), and the
        // memory outlives every reader (dropping `self` waits for `done`, recorded after
        // this kernel).
        unsafe {
            launch_fill_kernel(
                &self.entry,
                self.grid,
                stream,
                [self.meta_ptr, self.staging.device, self.resident_ptr],
            )
        }?;
        // In a capture the record must be EXTERNAL to become a node of the graph (after
        // the kernel node), so each replay records it again; outside a capture the driver
        // refuses EXTERNAL (CUDA_ERROR_ILLEGAL_STATE) and a plain record is what we want.
        let flags = if capturing {
            sys::CUevent_record_flags::CU_EVENT_RECORD_EXTERNAL
        } else {
            sys::CUevent_record_flags::CU_EVENT_RECORD_DEFAULT
        };
        // SAFETY: `done` and `stream` belong to this context (checked by the callers);
        // `flags` is one of the driver's record flags.
        unsafe {
            sys::cuEventRecordWithFlags(
                self.staging.done.cu_event(),
                stream.cu_stream(),
                flags as u32,
            )
        }
        .result()
        .map_err(cuda("record the staging event"))
    }

    /// Captures this fill as the first node of a graph on `stream`, followed by whatever
    /// `then` enqueues on it (given the stream and [`device_buffer`](Self::device_buffer):
    /// the consumers of the metadata), and returns the graph, instantiated, as a
    /// [`FillGraph`] that updates its fill node before each launch: a small image (a steady
    /// step's) then travels in the kernel's parameters, with no read over the bus.
    ///
    /// `stream` must not be capturing already; the capture is thread-local. It ends
    /// whatever happens, so the stream is usable again after an error.
    ///
    /// # Errors
    ///
    /// [`StreamFillError::OtherContext`], [`StreamFillError::AlreadyCaptured`] (a fill
    /// captured by [`enqueue_on`](Self::enqueue_on)), `then`'s error, and CUDA failures of
    /// the capture.
    pub fn capture<E: From<BackendError>>(
        mut self,
        stream: &Arc<CudaStream>,
        then: impl FnOnce(&Arc<CudaStream>, u64) -> Result<(), E>,
    ) -> Result<FillGraph, E> {
        self.check_stream(stream)?;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda("begin capture"))?;
        // No reader of the staging runs before the graph's first launch, which
        // `FillGraph::launch` announces.
        let enqueued = self.enqueue_kernel(stream, true);
        let consumers = match enqueued {
            Ok(()) => then(stream, self.meta_ptr),
            Err(e) => Err(e.into()),
        };
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        consumers?;
        let graph = ended
            .map_err(cuda("end capture"))?
            .ok_or_else(|| BackendError::Cuda("the capture produced no graph".into()))?;
        graph.upload().map_err(cuda("upload a graph"))?;
        let (node, template) = find_kernel_node(&graph, &self.entry)?;
        self.captured = true;
        Ok(FillGraph {
            graph,
            node,
            template,
            stream: stream.clone(),
            fill: self,
            node_reads: NodeReads::Staging,
            pending: false,
            unusable: None,
        })
    }

    /// Waits for `stream` (the stream the fill runs on), then copies the metadata buffer
    /// back, with the last prepared step's info.
    pub fn download(&self, stream: &CudaStream) -> Result<Snapshot, BackendError> {
        if !Arc::ptr_eq(stream.context(), &self.ctx) {
            return Err(StreamFillError::OtherContext.into());
        }
        stream.synchronize().map_err(cuda("synchronize"))?;
        let total = self.dims.total_bytes();
        let mut words = vec![0u64; total.div_ceil(8)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let out = bytes.get_mut(..total).unwrap_or_default();
        // SAFETY: the metadata buffer holds `total` bytes; `out` is a unique borrow of that
        // many; the stream that runs the fill is idle (waited above).
        unsafe { result::memcpy_dtoh_sync(out, self.meta_ptr) }
            .map_err(cuda("copy the metadata back"))?;
        Ok(Snapshot::from_words(words, total, self.info))
    }
}

/// What the fill node of a [`FillGraph`]'s executable graph runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeReads {
    /// The fill entry on the mapped staging, as captured.
    Staging,
    /// The parameter entry, the image in the kernel's parameters.
    Params,
}

/// A [`StreamFill`] captured as the first node of the caller's graph
/// ([`StreamFill::capture`]), which it owns and launches: before each launch it points the
/// fill node at the step (`cuGraphExecKernelNodeSetParams` on the instantiated graph). A
/// step whose image fits a parameter image
/// ([`PARAM_IMAGE_BYTES`](attention_layout_codegen::emit_cuda::abi::PARAM_IMAGE_BYTES), a
/// steady decode step's) and whose shape is a bucket's runs the parameter entry
/// with the image in the kernel's parameters, on as many blocks as its block-table work
/// needs: the node reads nothing over the bus. Any other step runs the fill entry on the
/// mapped staging, as a plain capture does. Without the backend's parameter entry
/// ([`CudaOptions::param_images`](super::CudaOptions::param_images) off) every step runs
/// the fill entry.
///
/// The contract is [`StreamFill`]'s, enforced: each [`prepare`](Self::prepare) is followed
/// by exactly one [`launch`](Self::launch) (a second prepare first is refused with
/// [`StreamFillError::NotLaunched`], a launch without a prepare with
/// [`StreamFillError::NotPrepared`]), and the graph can be launched only through it.
/// Not `Send`: it holds raw pointers into pinned memory and the graph's node.
pub struct FillGraph {
    // Fields drop in order: the graph first (no launch after it; one in flight finishes
    // on its own), then the fill, which waits for every stream of its context.
    graph: CudaGraph,
    /// The fill's kernel node in `graph`'s graph (owned by `graph`).
    node: sys::CUgraphNode,
    /// The node's parameters as captured (the fill entry on the staging).
    template: sys::CUDA_KERNEL_NODE_PARAMS,
    stream: Arc<CudaStream>,
    fill: StreamFill,
    node_reads: NodeReads,
    /// A step was prepared and not launched yet.
    pending: bool,
    /// Why the graph may no longer match the host's model (a failed update or launch).
    unusable: Option<String>,
}

impl FillGraph {
    /// The device address of the metadata buffer the graph's fill node writes.
    pub fn device_buffer(&self) -> u64 {
        self.fill.device_buffer()
    }

    /// The layout's dims.
    pub fn dims(&self) -> &RuntimeDims {
        self.fill.dims()
    }

    /// What the last prepared step staged.
    pub fn last_staged(&self) -> &Staged {
        self.fill.last_staged()
    }

    /// Whether the step prepared last runs with its image in the kernel's parameters
    /// (else the node reads the mapped staging).
    pub fn image_in_params(&self) -> bool {
        self.node_reads == NodeReads::Params
    }

    /// [`StreamFill::reset_residency`] of the graph's fill.
    pub fn reset_residency(&mut self) {
        self.fill.reset_residency();
    }

    /// Whether the backend compiled the parameter entry this graph uses for small
    /// images.
    pub fn has_param_entries(&self) -> bool {
        self.fill.param.is_some()
    }

    /// Plans the step, writes its staging and points the graph's fill node at it; call
    /// [`launch`](Self::launch) next. On a step error nothing changes.
    ///
    /// # Errors
    ///
    /// [`StreamFillError::NotLaunched`] (the last prepared step still waits for its
    /// launch), [`StreamFillError::Unusable`] (after a CUDA failure of an update or a
    /// launch), the step's errors ([`BackendError::Step`], [`BackendError::Staging`]) and
    /// CUDA failures.
    pub fn prepare(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError> {
        self.prepare_from(input, None)
    }

    /// [`prepare`](Self::prepare) with the step's origin (see
    /// [`StreamFill::prepare_with_origin`]): a steady decode step is staged from its
    /// changes alone.
    ///
    /// # Errors
    ///
    /// Those of [`prepare`](Self::prepare).
    pub fn prepare_with_origin(
        &mut self,
        input: &StepInput<'_>,
        origin: &StepOrigin,
    ) -> Result<StepInfo, BackendError> {
        self.prepare_from(input, Some(origin))
    }

    /// [`prepare_with_origin`](Self::prepare_with_origin) of the step `state` schedules now.
    ///
    /// # Errors
    ///
    /// Those of [`prepare`](Self::prepare).
    pub fn prepare_batch(&mut self, state: &mut BatchState) -> Result<StepInfo, BackendError> {
        state.with_step_origin(|input, origin| self.prepare_with_origin(input, origin))
    }

    fn check_usable(&self) -> Result<(), BackendError> {
        match &self.unusable {
            Some(reason) => Err(StreamFillError::Unusable {
                reason: reason.clone(),
            }
            .into()),
            None => Ok(()),
        }
    }

    fn prepare_from(
        &mut self,
        input: &StepInput<'_>,
        origin: Option<&StepOrigin>,
    ) -> Result<StepInfo, BackendError> {
        self.check_usable()?;
        if self.pending {
            return Err(StreamFillError::NotLaunched.into());
        }
        let info = self.fill.prepare_from(input, origin)?;
        // From here the host's model assumes the step runs: a failure makes it unusable.
        let pointed = self.point_node(info);
        if let Err(e) = &pointed {
            self.unusable = Some(e.to_string());
        }
        pointed?;
        self.pending = true;
        Ok(info)
    }

    /// Points the fill node at the step just staged: the parameter entry with the image
    /// for a bucketed step whose image fits, else (if it does not already) the fill entry
    /// on the staging.
    fn point_node(&mut self, info: StepInfo) -> Result<(), BackendError> {
        let fill = &mut self.fill;
        let bytes = fill.staged.bytes;
        let grid = fill.staged.grid(fill.max_workers);
        let entry = info
            .bucket
            .and(fill.param.as_ref())
            .filter(|_| bytes <= abi::PARAM_IMAGE_BYTES);
        let exec = self.graph.cu_graph_exec();
        let (meta, resident) = (fill.meta_ptr, fill.resident_ptr);
        if let Some(f) = entry {
            // No reader of the staging is pending (`prepare` waited when one may be).
            let image = fill
                .staging
                .bytes_mut()?
                .get(..bytes)
                .and_then(ParamImage::of)
                .ok_or_else(|| BackendError::Cuda(format!("a {bytes}-byte parameter image")))?;
            let mut args = FillArgs {
                meta,
                image,
                resident,
            };
            // SAFETY: `exec` is `graph`'s live executable graph, instantiated from the
            // graph `node` belongs to; `f` is an entry of the module the captured fill
            // entry comes from; `args` holds one value of each of its parameter types
            // (al_u8*, AlParamImage, al_i32*): this fill's live allocations of the sizes
            // the kernels index and an image the builder wrote for this layout and the
            // step's bucket, which fits (the parameter entry's contract, as the backend's
            // parameter graphs launch it).
            unsafe {
                set_kernel_node(
                    exec,
                    self.node,
                    &self.template,
                    f.cu_function(),
                    grid,
                    &mut args,
                )
            }?;
            self.node_reads = NodeReads::Params;
        } else if self.node_reads != NodeReads::Staging {
            let mut args = FillArgs {
                meta,
                image: fill.staging.device,
                resident,
            };
            // SAFETY: as above, with the captured parameters: the fill entry on the
            // mapped staging, which holds the step's whole image (`enqueue_kernel`'s
            // argument; `launch` says the staging may be read before it launches).
            unsafe {
                set_kernel_node(
                    exec,
                    self.node,
                    &self.template,
                    self.template.func,
                    self.template.gridDimX,
                    &mut args,
                )
            }?;
            self.node_reads = NodeReads::Staging;
        }
        Ok(())
    }

    /// Launches the graph (the fill, then what the capture put after it) on its stream,
    /// once per [`prepare`](Self::prepare).
    ///
    /// # Errors
    ///
    /// [`StreamFillError::NotPrepared`] (no step prepared since the last launch),
    /// [`StreamFillError::Unusable`], and CUDA failures of the launch (after which the
    /// graph is unusable).
    pub fn launch(&mut self) -> Result<(), BackendError> {
        self.check_usable()?;
        if !self.pending {
            return Err(StreamFillError::NotPrepared.into());
        }
        if self.node_reads == NodeReads::Staging {
            self.fill.staging.may_be_read = true;
        }
        let launched = self.graph.launch().map_err(cuda("launch the fill graph"));
        if let Err(e) = &launched {
            self.unusable = Some(e.to_string());
        }
        launched?;
        self.pending = false;
        Ok(())
    }

    /// Waits for the graph's stream, then copies the metadata buffer back, with the last
    /// prepared step's info.
    ///
    /// # Errors
    ///
    /// CUDA failures.
    pub fn download(&self) -> Result<Snapshot, BackendError> {
        self.fill.download(&self.stream)
    }
}
