//! [`CudaBackend`]: device buffers, pinned staging, the fill launches and their graphs.

use std::cell::Cell;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use attention_layout_codegen::emit_cuda::{self, EmitOptions, THREADS};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, result, sys,
};
use cudarc::nvrtc::Ptx;

use super::compile::{self, CompileOptions, CompileReport};
use super::pinned::{PinnedBuffer, TrackedStream};
use super::{DeviceInfo, probe};
use crate::agree::AgreedShape;
use crate::backend::{BackendError, MetadataBackend, SnapshotError};
use crate::devfill::{self, Staged, StagingBuilder};
use crate::dims::{Dims, RuntimeDims};
use crate::fill::{self, FillState, StepInfo};
use crate::metadata::MetadataView;
use crate::step::{StepInput, StepOrigin};

/// Where the metadata is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillMode {
    /// The fill kernels compute every field on the device from compact staging (default).
    #[default]
    Device,
    /// The CPU fill writes the whole buffer into pinned memory; one copy moves all of it.
    Host,
}

/// How to set up a [`CudaBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal.
    pub ordinal: usize,
    /// Device fill or host fill.
    pub mode: FillMode,
    /// Capture a CUDA graph per bucket and replay it for matched steps (else every step
    /// is launched eagerly).
    pub graphs: bool,
    /// NVRTC and PTX cache settings.
    pub compile: CompileOptions,
    /// Stage steady steps as delta steps (device fill: the device advances its request
    /// table, only the header and what changed travel). Off, every step sends every
    /// active row's record: for measuring what delta steps save.
    pub delta_steps: bool,
    /// With graphs (device fill): a graphed step whose image fits
    /// [`PARAM_IMAGE_BYTES`](emit_cuda::abi::PARAM_IMAGE_BYTES) (a steady decode step)
    /// passes it in the kernel's parameters — one kernel node, no copy node, no staging
    /// event — instead of copying it to the staging buffer first (about 1.7 µs less per
    /// synchronized step on an H200: BENCHMARKS.md). Costs one more entry to compile and
    /// load, and one more graph per bucket to capture (`bench --backend cuda` reports the
    /// times). On by default: the GPU equivalence tests and compute-sanitizer memcheck and
    /// racecheck have run the parameter entry on every bucket (docs/gpu-runs/). Off, every
    /// graphed step takes the copy graph.
    pub param_images: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            mode: FillMode::Device,
            graphs: true,
            compile: CompileOptions::default(),
            delta_steps: true,
            param_images: true,
        }
    }
}

impl CudaOptions {
    /// The kernel entries these options compile (device fill): the fill entry, and the
    /// parameter entry when parameter images can be used (graphs and
    /// [`param_images`](Self::param_images), and a layout with buckets:
    /// [`EmitOptions::has_param_entry`]).
    /// [`CudaBackend::new`] compiles and loads exactly these.
    pub fn emit_options(&self) -> EmitOptions {
        EmitOptions {
            param_entries: self.param_images && self.graphs,
        }
    }
}

/// What setting the backend up took.
#[derive(Debug, Clone, PartialEq)]
pub struct SetupReport {
    /// The device.
    pub device: DeviceInfo,
    /// The kernels' compile (device fill only).
    pub compile: Option<CompileReport>,
    /// Seconds to load the module (PTX JIT included).
    pub load_seconds: f64,
    /// Seconds to warm up and capture the graphs.
    pub capture_seconds: f64,
    /// Graphs captured: one per bucket and staging slot (device fill), one per slot (host
    /// fill); plus, with [`CudaOptions::param_images`], one parameter graph per bucket.
    pub graphs: usize,
    /// Why graphs are off although asked for, if they are.
    pub graphs_disabled: Option<String>,
    /// Bytes of each pinned staging buffer.
    pub staging_bytes: usize,
}

/// One pinned staging buffer and, for the host fill, the fill state of its contents.
struct Slot {
    pinned: PinnedBuffer,
    /// Host fill: the fill state of this buffer's contents.
    fill: Option<FillState>,
}

/// A captured step: its graph and the copy node whose source and size change per step.
struct StepGraph {
    graph: CudaGraph,
    node: sys::CUgraphNode,
    params: sys::CUDA_MEMCPY3D,
    /// The copy the instantiated graph holds now, as `set_copy` last set it: a step whose
    /// copy is the same launches without updating the graph.
    copy: Cell<Option<CopyParams>>,
}

/// A step's image passed by value in a parameter entry's kernel parameters
/// (`AlParamImage` in the kernels: [`emit_cuda::PARAM_ENTRY`]).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub(super) struct ParamImage([u8; emit_cuda::abi::PARAM_IMAGE_BYTES]);

impl ParamImage {
    /// The image whose first bytes are `image` (the rest zero); `None` when it is longer
    /// than a parameter image.
    pub(super) fn of(image: &[u8]) -> Option<Self> {
        let mut out = Self([0; emit_cuda::abi::PARAM_IMAGE_BYTES]);
        out.0.get_mut(..image.len())?.copy_from_slice(image);
        Some(out)
    }
}

/// The one kernel node of `graph` that runs `function`, with its parameters (what
/// [`set_kernel_node`] updates). An error when there is none or more than one.
pub(super) fn find_kernel_node(
    graph: &CudaGraph,
    function: &CudaFunction,
) -> Result<(sys::CUgraphNode, sys::CUDA_KERNEL_NODE_PARAMS), BackendError> {
    let mut found = None;
    for (node, ty) in graph_nodes(graph)? {
        if ty != sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL {
            continue;
        }
        let mut p = std::mem::MaybeUninit::<sys::CUDA_KERNEL_NODE_PARAMS>::uninit();
        // SAFETY: `node` is a kernel node of the graph; `p` has room for its parameters.
        unsafe { sys::cuGraphKernelNodeGetParams_v2(node, p.as_mut_ptr()) }
            .result()
            .map_err(cuda("read a graph's kernel"))?;
        // SAFETY: the call succeeded, so the driver wrote every field of `p`.
        let params = unsafe { p.assume_init() };
        if params.func != function.cu_function() {
            continue;
        }
        if found.is_some() {
            return Err(BackendError::Cuda(
                "the graph runs the fill kernel in more than one node".into(),
            ));
        }
        found = Some((node, params));
    }
    found.ok_or_else(|| BackendError::Cuda("the graph holds no fill kernel node".into()))
}

/// The three parameter values of a fill entry: the metadata buffer, the image (`T`: the
/// staging's device address for the fill entry, a [`ParamImage`] for the parameter
/// entry) and the resident tables.
pub(super) struct FillArgs<T> {
    pub(super) meta: sys::CUdeviceptr,
    pub(super) image: T,
    pub(super) resident: sys::CUdeviceptr,
}

impl<T> FillArgs<T> {
    /// The driver's argument array: pointers to the three values, valid while `self` is
    /// borrowed.
    fn pointers(&mut self) -> [*mut c_void; 3] {
        [
            (&raw mut self.meta).cast(),
            (&raw mut self.image).cast(),
            (&raw mut self.resident).cast(),
        ]
    }
}

/// Points kernel node `node` of the executable graph `exec` at `function`, launched with
/// `grid` blocks and `args` (the rest of the launch as in `template`, the node's parameters
/// as captured). Launches already enqueued keep their parameters.
///
/// # Safety
///
/// `exec` must be instantiated from the graph `node` belongs to and be alive, `function`
/// must be an entry of the module `template`'s function was loaded from (the same
/// context), and `args` must meet [`launch_with_args`]'s contract for `function`: every
/// later launch of `exec` runs it with them.
pub(super) unsafe fn set_kernel_node<T>(
    exec: sys::CUgraphExec,
    node: sys::CUgraphNode,
    template: &sys::CUDA_KERNEL_NODE_PARAMS,
    function: sys::CUfunction,
    grid: u32,
    args: &mut FillArgs<T>,
) -> Result<(), BackendError> {
    let mut pointers = args.pointers();
    let mut p = *template;
    p.func = function;
    p.kern = std::ptr::null_mut();
    p.gridDimX = grid.max(1);
    p.kernelParams = pointers.as_mut_ptr();
    p.extra = std::ptr::null_mut();
    // SAFETY: this function's contract; the driver copies the parameter values during the
    // call.
    unsafe { sys::cuGraphExecKernelNodeSetParams_v2(exec, node, &p) }
        .result()
        .map_err(cuda("set a graph's fill kernel"))
}

/// A bucket's parameter graph: one kernel node running the bucket's parameter entry, whose
/// image is set before each launch ([`Device::launch_param_graph`]).
struct ParamGraph {
    graph: CudaGraph,
    node: sys::CUgraphNode,
    params: sys::CUDA_KERNEL_NODE_PARAMS,
}

/// Where a graph's copy reads, where it writes, and how many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CopyParams {
    src: usize,
    dst: sys::CUdeviceptr,
    bytes: usize,
}

/// Staging copies of at most this many bytes are rounded up to a power of two, at least
/// [`COPY_FLOOR`]: steady steps then launch their slot's graph with the copy it already
/// holds, without a graph update (`cuGraphExecMemcpyNodeSetParams`) per step. Larger
/// copies move their exact size.
const COPY_ROUNDED_UP_TO: usize = 4096;
/// The smallest staging copy of a graphed step (the 96-byte header and a few records).
const COPY_FLOOR: usize = 256;

/// The bytes a graphed step copies for a staging image of `bytes` bytes, in a staging
/// buffer of `capacity` bytes: never fewer than `bytes`, never more than `capacity`.
fn graphed_copy_bytes(bytes: usize, capacity: usize) -> usize {
    if bytes > COPY_ROUNDED_UP_TO {
        return bytes;
    }
    bytes
        .max(COPY_FLOOR)
        .next_power_of_two()
        .min(capacity)
        .max(bytes)
}

/// The device buffer a host-to-device copy lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The staging buffer the fill kernels read.
    Staging,
    /// The metadata buffer (host fill).
    Meta,
}

/// The device side of the backend: its stream, kernels and graphs, and the device buffers
/// they write.
///
/// Invariant, on which its launches rest: the function handles are entries of `_module`,
/// compiled for the layout the buffers were sized for; each address is that of the
/// allocation owned next to it, of the size recorded with it (the resident allocation
/// holds `abi::resident_words` words: the block table, then the request table); every graph was captured on `stream`.
struct Device {
    // Fields drop in order: graphs before the module whose kernels they launch.
    /// Per staging slot, one graph per bucket, its copy reading that slot.
    graphs: Vec<Vec<Option<StepGraph>>>,
    /// Per staging slot, the host fill's copy graph.
    host_graphs: Vec<Option<StepGraph>>,
    /// Per bucket, its parameter graph ([`CudaOptions::param_images`]).
    param_graphs: Vec<ParamGraph>,
    /// The fill entry (device fill).
    fill: Option<CudaFunction>,
    /// The parameter entry ([`CudaOptions::param_images`], a layout with buckets).
    param: Option<CudaFunction>,
    _module: Option<Arc<CudaModule>>,
    meta_ptr: sys::CUdeviceptr,
    meta_bytes: usize,
    staging_ptr: sys::CUdeviceptr,
    staging_bytes: usize,
    resident_ptr: sys::CUdeviceptr,
    _meta: CudaSlice<u8>,
    _staging: Option<CudaSlice<u8>>,
    _resident: Option<CudaSlice<i32>>,
    stream: Arc<CudaStream>,
    /// `stream`, with the count of its synchronizations the pinned buffers read.
    tracked: Rc<TrackedStream>,
    ctx: Arc<CudaContext>,
}

fn cuda(what: &str) -> impl Fn(result::DriverError) -> BackendError + '_ {
    move |e| BackendError::Cuda(format!("{what}: {e}"))
}

impl Device {
    fn function(&self) -> Result<&CudaFunction, BackendError> {
        self.fill
            .as_ref()
            .ok_or_else(|| BackendError::Cuda("no fill kernel loaded".into()))
    }

    /// The device address and size of `target`, with `bytes` at `offset` checked to fit.
    fn target(
        &self,
        target: Target,
        offset: usize,
        bytes: usize,
    ) -> Result<sys::CUdeviceptr, BackendError> {
        let (ptr, size) = match target {
            Target::Staging => (self.staging_ptr, self.staging_bytes),
            Target::Meta => (self.meta_ptr, self.meta_bytes),
        };
        match offset.checked_add(bytes) {
            Some(end) if end <= size && ptr != 0 => Ok(ptr + offset as u64),
            _ => Err(BackendError::Cuda(format!(
                "a copy of {bytes} bytes at offset {offset} into a {size}-byte {target:?} buffer"
            ))),
        }
    }

    /// Launches the fill entry with `grid` blocks on the stream.
    ///
    /// # Safety
    ///
    /// When the launch runs (in stream order), the staging buffer must hold an image for
    /// this layout — written by [`StagingBuilder::build`] or [`devfill::write_empty_step`]
    /// and copied in full — since the kernel trusts the offsets and counts in its header.
    unsafe fn launch_fill(&self, grid: u32) -> Result<(), BackendError> {
        let f = self.function()?;
        // SAFETY: `f` is an entry of this device's module (the invariant above); the three
        // pointers are this backend's live allocations of the sizes the kernels index
        // (metadata: the layout's bytes; staging: the builder's capacity; resident:
        // `abi::resident_words`), and the image the kernel reads is one for this layout
        // (this function's contract).
        unsafe {
            launch_fill_kernel(
                f,
                grid,
                &self.stream,
                [self.meta_ptr, self.staging_ptr, self.resident_ptr],
            )
        }
    }

    /// The parameter entry.
    fn param_fn(&self) -> Result<&CudaFunction, BackendError> {
        self.param
            .as_ref()
            .ok_or_else(|| BackendError::Cuda("no parameter entry loaded".into()))
    }

    /// Launches the parameter entry with `image` and `grid` blocks.
    ///
    /// # Safety
    ///
    /// `image` must hold an image for this layout (written by
    /// [`StagingBuilder::build`] or [`devfill::write_empty_step`], at most
    /// [`PARAM_IMAGE_BYTES`](emit_cuda::abi::PARAM_IMAGE_BYTES)): the kernel trusts the
    /// offsets and counts in its header.
    unsafe fn launch_param(&self, grid: u32, image: &ParamImage) -> Result<(), BackendError> {
        let f = self.param_fn()?;
        let mut args = FillArgs {
            meta: self.meta_ptr,
            image: *image,
            resident: self.resident_ptr,
        };
        // SAFETY: `f` is the parameter entry of this device's module, whose
        // parameters are (al_u8*, AlParamImage, al_i32*): `ParamImage` has its size and
        // alignment; the two pointers are this backend's live allocations of the sizes the
        // kernels index; the image is one for this layout (this function's contract); the
        // argument values outlive the call, which copies them.
        unsafe { launch_with_args(f, grid, &self.stream, &mut args) }
    }

    /// Captures a launch of the parameter entry (with `image`, a placeholder) into
    /// a graph, and finds its kernel node. Nothing runs.
    ///
    /// # Safety
    ///
    /// Every launch of the returned graph must go through
    /// [`launch_param_graph`](Self::launch_param_graph) (which sets an image meeting
    /// [`launch_param`](Self::launch_param)'s contract), and `image` must meet it too.
    unsafe fn capture_param(
        &self,
        grid: u32,
        image: &ParamImage,
    ) -> Result<ParamGraph, BackendError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda("begin capture"))?;
        // SAFETY: recorded, not executed; `image` meets the contract (this function's).
        let recorded = unsafe { self.launch_param(grid, image) };
        let ended = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(cuda("end capture"));
        recorded?;
        let graph = ended?.ok_or_else(|| BackendError::Cuda("capture produced no graph".into()))?;
        graph.upload().map_err(cuda("upload a graph"))?;
        let (node, params) = find_kernel_node(&graph, self.param_fn()?)?;
        Ok(ParamGraph {
            graph,
            node,
            params,
        })
    }

    /// Sets a parameter graph's image to `image` and launches it.
    ///
    /// # Safety
    ///
    /// `g` must be a graph [`capture_param`](Self::capture_param) captured on this device,
    /// and `image` must meet [`launch_param`](Self::launch_param)'s contract.
    unsafe fn launch_param_graph(
        &self,
        g: &ParamGraph,
        image: &ParamImage,
    ) -> Result<(), BackendError> {
        let mut args = FillArgs {
            meta: self.meta_ptr,
            image: *image,
            resident: self.resident_ptr,
        };
        // SAFETY: `g.node` is the kernel node of the graph `g.graph` was instantiated
        // from, running `g.params.func` (the parameter entry), kept with its
        // shape; `args` points at one value of each of the entry's parameter types: the
        // pointers are this device's live allocations and the image one for this layout
        // (this function's contract).
        unsafe {
            set_kernel_node(
                g.graph.cu_graph_exec(),
                g.node,
                &g.params,
                g.params.func,
                g.params.gridDimX,
                &mut args,
            )
        }?;
        g.graph.launch().map_err(cuda("launch a graph"))
    }

    /// Enqueues a copy of `bytes` bytes from `src` to `target` at `offset` on the stream
    /// (the target range is checked).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of `bytes` bytes of page-locked host memory that stay
    /// allocated and unchanged until the copy has executed: an address
    /// [`PinnedBuffer::device_access`] gave, used inside that call, whose stream is this
    /// device's stream.
    unsafe fn copy_async(
        &self,
        src: *const u8,
        target: Target,
        offset: usize,
        bytes: usize,
    ) -> Result<(), BackendError> {
        let dst = self.target(target, offset, bytes)?;
        // SAFETY: `dst` has room for `bytes` (checked above, in an allocation this device
        // owns); `src` is readable and stable until the copy executes (this function's
        // contract).
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, self.stream.cu_stream()) }
            .result()
            .map_err(cuda("copy staging to the device"))
    }

    /// Enqueues a copy of the first `bytes` bytes of the metadata buffer to `dst` on the
    /// stream (the size is checked).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of `bytes` bytes of page-locked host memory that
    /// stay allocated and unread by the host until the copy has executed: an address
    /// [`PinnedBuffer::device_access`] gave, used inside that call, whose stream is this
    /// device's stream.
    unsafe fn download_async(&self, dst: *mut u8, bytes: usize) -> Result<(), BackendError> {
        let src = self.target(Target::Meta, 0, bytes)?;
        // SAFETY: `src` holds `bytes` bytes (checked above); `dst` is writable and not
        // accessed by the host until the copy executes (this function's contract).
        unsafe { sys::cuMemcpyDtoHAsync_v2(dst.cast(), src, bytes, self.stream.cu_stream()) }
            .result()
            .map_err(cuda("snapshot the metadata"))
    }

    /// Waits for the stream, then copies the start of the metadata buffer into `out`.
    fn download_sync(&self, out: &mut [u8]) -> Result<(), BackendError> {
        let src = self.target(Target::Meta, 0, out.len())?;
        self.tracked.synchronize().map_err(cuda("synchronize"))?;
        // SAFETY: the metadata buffer holds `out.len()` bytes (checked above); `out` is a
        // unique borrow of that many bytes; the stream is idle, so no kernel writes the
        // buffer during the copy.
        unsafe { result::memcpy_dtoh_sync(out, src) }.map_err(cuda("copy the metadata back"))
    }

    /// Captures a copy of `bytes` bytes from `src` to `target` at `offset` and, given, a
    /// fill launch on the stream into a graph, and finds its copy node. Nothing runs.
    ///
    /// # Safety
    ///
    /// At every launch of the returned graph, its copy must read memory that satisfies
    /// [`copy_async`](Self::copy_async)'s contract — the backend repoints the copy with
    /// [`set_copy`](Self::set_copy), inside the `device_access` of the pinned buffer it
    /// reads, before every launch — and, with a kernel, the copied bytes must be an image
    /// for this layout ([`launch_fill`](Self::launch_fill)'s contract).
    unsafe fn capture(
        &self,
        src: *const u8,
        target: Target,
        offset: usize,
        bytes: usize,
        kernel: Option<u32>,
    ) -> Result<StepGraph, BackendError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda("begin capture"))?;
        // SAFETY: while capturing, the copy is recorded, not executed; the graph's launches
        // meet `copy_async`'s contract (this function's contract).
        let recorded = unsafe { self.copy_async(src, target, offset, bytes) }.and_then(|()| {
            kernel.map_or(Ok(()), |grid| {
                // SAFETY: recorded, not executed; at each launch the graph's copy brings
                // an image for this layout (this function's contract).
                unsafe { self.launch_fill(grid) }
            })
        });
        // Always end the capture, so the stream is usable whatever happened.
        let ended = self
            .stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .map_err(cuda("end capture"));
        recorded?;
        let graph = ended?.ok_or_else(|| BackendError::Cuda("capture produced no graph".into()))?;
        graph.upload().map_err(cuda("upload a graph"))?;
        let (node, params) = copy_node(&graph)?;
        Ok(StepGraph {
            graph,
            node,
            params,
            copy: Cell::new(None),
        })
    }

    /// Points a graph's copy at `src` and `target` at `offset`, `bytes` long (the target
    /// range is checked). Affects only later launches of the graph.
    ///
    /// # Safety
    ///
    /// `g` must be a graph this device captured, and `src` must meet
    /// [`copy_async`](Self::copy_async)'s contract for every launch of `g` until the copy
    /// is repointed again: the backend launches `g` right after this call, inside the
    /// `device_access` that gave `src`.
    unsafe fn set_copy(
        &self,
        g: &StepGraph,
        src: *const u8,
        target: Target,
        offset: usize,
        bytes: usize,
    ) -> Result<(), BackendError> {
        let dst = self.target(target, offset, bytes)?;
        let wanted = CopyParams {
            src: src as usize,
            dst,
            bytes,
        };
        if g.copy.get() == Some(wanted) {
            // The instantiated graph already copies exactly this.
            return Ok(());
        }
        let mut p = g.params;
        match p.srcMemoryType {
            sys::CUmemorytype::CU_MEMORYTYPE_HOST => p.srcHost = src.cast(),
            _ => p.srcDevice = src as sys::CUdeviceptr,
        }
        p.dstDevice = dst;
        p.WidthInBytes = bytes;
        // SAFETY: `g.node` is the copy node of the graph `g.graph.cu_graph_exec()` was
        // instantiated from (`capture`); the parameters keep the captured 1-D shape and
        // memory kinds and point into allocations of this context: `dst` into a buffer this
        // device owns with room for `bytes` (checked above), `src` as this function's
        // contract says. Launches already enqueued keep their old parameters.
        unsafe {
            sys::cuGraphExecMemcpyNodeSetParams(
                g.graph.cu_graph_exec(),
                g.node,
                &p,
                self.ctx.cu_ctx(),
            )
        }
        .result()
        .map_err(cuda("update a graph's copy"))?;
        g.copy.set(Some(wanted));
        Ok(())
    }

    /// Runs the fill of the step whose image `pinned` holds (`bytes` long): bucket `b`'s
    /// parameter graph with the image in the kernel's parameters when it has one and the
    /// image fits, else the copy to the staging buffer and bucket `b`'s graph when the
    /// step matched a bucket that has one, else the copy and a launch of `grid` blocks.
    /// `slot` is the index of `pinned` (each slot has graphs of its own, whose copies
    /// read it). Returns whether a graph ran and the bytes that travelled to the device.
    fn run_device_step(
        &self,
        pinned: &mut PinnedBuffer,
        slot: usize,
        bucket: Option<u32>,
        bytes: usize,
        grid: u32,
    ) -> Result<(bool, usize), BackendError> {
        // A small image travels in the kernel's parameters: no copy, no staging event.
        let param = bucket
            .and_then(|b| self.param_graphs.get(b as usize))
            .filter(|_| bytes <= emit_cuda::abi::PARAM_IMAGE_BYTES);
        if let Some(g) = param {
            let image = pinned
                .bytes()?
                .get(..bytes)
                .and_then(ParamImage::of)
                .ok_or_else(|| {
                    BackendError::Cuda(format!("a {bytes}-byte image in a smaller staging slot"))
                })?;
            // SAFETY: `g` is this device's parameter graph of the step's bucket; the image
            // is the step's, written by `StagingBuilder::build` for this layout (the
            // caller's, as for the copy below), and fits.
            unsafe { self.launch_param_graph(g, &image) }?;
            return Ok((true, bytes));
        }
        let graph = bucket
            .and_then(|b| self.graphs.get(slot)?.get(b as usize))
            .and_then(Option::as_ref);
        // A graphed step copies a rounded size (the bytes past the image are the slot's
        // own, initialized, and the kernel never reads them), so that steady steps reuse
        // the copy their graph already holds.
        let copied = match graph {
            Some(_) => graphed_copy_bytes(bytes, self.staging_bytes.min(pinned.len())),
            None => bytes,
        };
        pinned.device_access(0..copied, |stream, src, len| {
            debug_assert!(Arc::ptr_eq(stream, &self.stream));
            if let Some(g) = graph {
                // SAFETY: `g` was captured on this device; `src` is the pinned image,
                // unchanged until the event `device_access` records after this closure, on
                // this device's stream (the slot's), and `g` is launched right below.
                unsafe { self.set_copy(g, src, Target::Staging, 0, len) }?;
                g.graph.launch().map_err(cuda("launch a graph"))?;
                Ok((true, len))
            } else {
                // SAFETY: as above.
                unsafe { self.copy_async(src, Target::Staging, 0, len) }?;
                // SAFETY: the copy just enqueued brings the image `StagingBuilder::build`
                // wrote for this layout, in full.
                unsafe { self.launch_fill(grid) }?;
                Ok((false, len))
            }
        })
    }
}

/// The CUDA backend. See the [module docs](super).
///
/// Not `Send`: it holds raw pointers into pinned memory. All work runs on its own
/// (non-default) stream; [`MetadataBackend::step`] never waits for the device except for
/// a staging buffer two steps old.
pub struct CudaBackend {
    // Fields drop in order; `Drop` synchronizes the stream first.
    dev: Device,
    slots: Vec<Slot>,
    bucket_grid: Vec<u32>,
    dims: RuntimeDims,
    options: CudaOptions,
    builder: StagingBuilder,
    plan_state: FillState,
    next: usize,
    max_workers: u32,
    info: StepInfo,
    staged: Staged,
    bytes_copied: usize,
    graphed_last: bool,
    poisoned: Option<String>,
    report: SetupReport,
}

impl CudaBackend {
    /// Pinned staging buffers the backend alternates between (a step fills one while the
    /// device may still copy the other); the device fill captures one graph per bucket and
    /// buffer.
    pub const STAGING_SLOTS: usize = 2;

    /// Sets up the backend for `dims`: finds the device, compiles (or loads from the
    /// cache) the layout's kernels, allocates every buffer for the largest step, warms the
    /// kernels up and captures one graph per bucket. No allocation happens after this.
    pub fn new(dims: RuntimeDims, options: CudaOptions) -> Result<Self, BackendError> {
        let device = probe(options.ordinal)?;
        let geometry = dims.geometry();
        emit_cuda::check_supported(geometry).map_err(BackendError::Unsupported)?;
        let ctx = CudaContext::new(options.ordinal).map_err(cuda("open the device"))?;
        // SAFETY: every buffer of this backend is used on its one stream only, so cudarc's
        // cross-stream event tracking is not needed, and it would invalidate graph capture
        // (docs/DESIGN.md, "Graphs": what breaks a capture, 1). Affects only slices created after this call.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(cuda("create a stream"))?;
        let tracked = TrackedStream::new(stream.clone());

        // Kernels (device fill only).
        let mut compile_report = None;
        let mut load_seconds = 0.0;
        let (module, fill_fn, param_fn) = if options.mode == FillMode::Device {
            let entries = options.emit_options();
            let source = emit_cuda::cuda_source_with(geometry, entries);
            let (major, minor) = device.compute_capability;
            let arch = compile::target_arch(major, minor)?;
            let (ptx, report) = compile::compile(&source, &arch, &options.compile)?;
            compile_report = Some(report);
            let t0 = Instant::now();
            let module = ctx
                .load_module(Ptx::from_src(ptx.to_string()))
                .map_err(cuda("load the fill kernels"))?;
            let fill_fn = module
                .load_function(emit_cuda::FILL_ENTRY)
                .map_err(cuda("find the fill entry"))?;
            let param_fn = if entries.has_param_entry(geometry) {
                Some(
                    module
                        .load_function(emit_cuda::PARAM_ENTRY)
                        .map_err(cuda("find the parameter entry"))?,
                )
            } else {
                None
            };
            load_seconds = t0.elapsed().as_secs_f64();
            (Some(module), Some(fill_fn), param_fn)
        } else {
            (None, None, None)
        };

        // Buffers, all sized for the largest step.
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
        let mut builder = StagingBuilder::new(&dims);
        builder.set_delta_steps(options.delta_steps);
        let (staging, resident) = if options.mode == FillMode::Device {
            let staging = stream
                .alloc_zeros::<u8>(builder.buffer_len())
                .map_err(cuda("allocate the staging buffer"))?;
            // The resident block table, then the request table delta steps advance.
            let words =
                emit_cuda::abi::resident_words(dims.max_requests(), dims.block_table_width());
            let resident = stream
                .alloc_zeros::<i32>(words.max(1))
                .map_err(cuda("allocate the resident tables"))?;
            (Some(staging), Some(resident))
        } else {
            (None, None)
        };
        let ptr_of = |s: &CudaSlice<u8>| s.device_ptr(&stream).0;
        let meta_ptr = ptr_of(&meta);
        let staging_ptr = staging.as_ref().map_or(0, ptr_of);
        let staging_bytes = staging.as_ref().map_or(0, |s| s.len());
        let resident_ptr = resident.as_ref().map_or(0, |s| s.device_ptr(&stream).0);

        let slot_len = match options.mode {
            FillMode::Device => builder.buffer_len(),
            FillMode::Host => total.next_multiple_of(16),
        };
        let mut slots = Vec::with_capacity(Self::STAGING_SLOTS);
        for _ in 0..Self::STAGING_SLOTS {
            let mut pinned = PinnedBuffer::new(&tracked, slot_len)?;
            let mut fill_state = None;
            if options.mode == FillMode::Host {
                fill::init_buffer(&dims, pinned.bytes_mut()?)?;
                fill_state = Some(FillState::new(&dims));
            }
            slots.push(Slot {
                pinned,
                fill: fill_state,
            });
        }

        let max_workers = device.multiprocessors.saturating_sub(1).max(1);
        let nkv = dims.block_table_width() as u64;
        let bucket_grid = geometry
            .buckets
            .iter()
            .map(|b| devfill::grid_for(u64::from(b.requests()) * nkv, max_workers))
            .collect();
        let mut me = Self {
            dev: Device {
                graphs: Vec::new(),
                host_graphs: Vec::new(),
                param_graphs: Vec::new(),
                fill: fill_fn,
                param: param_fn,
                _module: module,
                meta_ptr,
                meta_bytes: total,
                staging_ptr,
                staging_bytes,
                resident_ptr,
                _meta: meta,
                _staging: staging,
                _resident: resident,
                stream,
                tracked,
                ctx,
            },
            slots,
            bucket_grid,
            plan_state: FillState::new(&dims),
            dims,
            options,
            builder,
            next: 0,
            max_workers,
            info: StepInfo::default(),
            staged: Staged::default(),
            bytes_copied: 0,
            graphed_last: false,
            poisoned: None,
            report: SetupReport {
                device,
                compile: compile_report,
                load_seconds,
                capture_seconds: 0.0,
                graphs: 0,
                graphs_disabled: None,
                staging_bytes: slot_len,
            },
        };
        me.dev
            .stream
            .synchronize()
            .map_err(cuda("initialize the buffers"))?;
        if me.options.graphs && !me.dims.buckets().is_empty() {
            let t0 = Instant::now();
            if let Err(e) = me.capture_graphs() {
                // Graphs are an optimization: run eagerly, and say why.
                me.dev.graphs.clear();
                me.dev.host_graphs.clear();
                me.dev.param_graphs.clear();
                me.report.graphs_disabled = Some(e.to_string());
                me.dev
                    .stream
                    .synchronize()
                    .map_err(cuda("recover from a failed capture"))?;
            }
            me.report.capture_seconds = t0.elapsed().as_secs_f64();
        }
        me.report.graphs = me.dev.graphs.iter().flatten().flatten().count()
            + me.dev.host_graphs.iter().flatten().count()
            + me.dev.param_graphs.len();
        Ok(me)
    }

    /// The setup report.
    pub fn report(&self) -> &SetupReport {
        &self.report
    }

    /// The layout's dims.
    pub fn dims(&self) -> &RuntimeDims {
        &self.dims
    }

    /// The options the backend was set up with.
    pub fn options(&self) -> &CudaOptions {
        &self.options
    }

    /// The last step's info.
    pub fn info(&self) -> &StepInfo {
        &self.info
    }

    /// What the last device-fill step staged.
    pub fn last_staged(&self) -> &Staged {
        &self.staged
    }

    /// Whether the last step replayed a graph.
    pub fn last_step_graphed(&self) -> bool {
        self.graphed_last
    }

    /// The device address of the coalesced metadata buffer (fields at the layout's
    /// offsets). Kernels that read it must run on [`stream`](Self::stream) or after it.
    pub fn device_buffer(&self) -> u64 {
        self.dev.meta_ptr
    }

    /// The stream every step runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.dev.stream
    }

    /// A device fill that runs on the caller's streams and can be captured into the
    /// caller's own graph ([`StreamFill`](super::StreamFill): its contract; or
    /// [`StreamFill::capture`](super::StreamFill::capture) for a
    /// [`FillGraph`](super::FillGraph), with this backend's parameter entry when it has
    /// them), with this backend's kernels and device but buffers of its own (metadata,
    /// resident tables, mapped staging), so it never races with this backend's steps.
    ///
    /// # Errors
    ///
    /// [`StreamFillError::HostFill`](crate::backend::StreamFillError::HostFill) for a
    /// host-fill backend; CUDA failures of the allocations.
    pub fn stream_fill(&self) -> Result<super::StreamFill, BackendError> {
        let fill = self
            .dev
            .fill
            .clone()
            .ok_or(crate::backend::StreamFillError::HostFill)?;
        super::StreamFill::new(
            self.dev.ctx.clone(),
            fill,
            self.dev.param.clone(),
            self.dims.clone(),
            self.max_workers,
        )
    }

    /// Warms every entry up (eager launches of an empty step), then captures, for each
    /// staging slot, one graph per bucket (device fill) or one copy graph (host fill)
    /// whose copy reads that slot: a step launches its slot's graph, and repoints the
    /// copy only when its size changed.
    fn capture_graphs(&mut self) -> Result<(), BackendError> {
        let dev = &mut self.dev;
        match self.options.mode {
            FillMode::Host => {
                let total = self.dims.total_bytes();
                for slot in &self.slots {
                    // SAFETY: the host-fill graph of a slot is launched only by
                    // `step_host`, right after `set_copy` inside the `device_access` of
                    // that slot; it copies into the metadata buffer (no kernel).
                    let g =
                        unsafe { dev.capture(slot.pinned.as_ptr(), Target::Meta, 0, total, None) }?;
                    dev.host_graphs.push(Some(g));
                }
            }
            FillMode::Device => {
                let Some(slot0) = self.slots.first_mut() else {
                    return Ok(());
                };
                let buckets = self.dims.buckets().to_vec();
                for (i, b) in buckets.iter().enumerate() {
                    let grid = self.bucket_grid.get(i).copied().unwrap_or(1);
                    // Waits for the previous warm-up, which read slot 0.
                    let bytes = devfill::write_empty_step(*b, slot0.pinned.bytes_mut()?)?;
                    let dev = &*dev;
                    slot0.pinned.device_access(0..bytes, |stream, src, len| {
                        debug_assert!(Arc::ptr_eq(stream, &dev.stream));
                        // SAFETY: `src` is slot 0's image, unchanged until the event
                        // `device_access` records after this closure, on this device's
                        // stream (the slot's).
                        unsafe { dev.copy_async(src, Target::Staging, 0, len) }?;
                        // SAFETY: the copy just enqueued brings the empty-step image
                        // `write_empty_step` wrote for bucket `i` of this layout, in full.
                        unsafe { dev.launch_fill(grid) }
                    })?;
                }
                // Module loading happened in the warm-ups, outside capture.
                dev.stream.synchronize().map_err(cuda("warm up"))?;
                for slot in &self.slots {
                    let src = slot.pinned.as_ptr();
                    let mut graphs = Vec::with_capacity(buckets.len());
                    for i in 0..buckets.len() {
                        let grid = self.bucket_grid.get(i).copied().unwrap_or(1);
                        // The captured length is a placeholder: the first step sets its own.
                        let header = emit_cuda::abi::HEADER_BYTES;
                        let kernel = Some(grid);
                        // SAFETY: a slot's step graph is launched only by
                        // `run_device_step`, right after `set_copy` inside the
                        // `device_access` of that slot, whose image (written by
                        // `StagingBuilder::build` for this layout) it copies.
                        let g = unsafe { dev.capture(src, Target::Staging, 0, header, kernel) }?;
                        graphs.push(Some(g));
                    }
                    dev.graphs.push(graphs);
                }
                if self.options.param_images && dev.param.is_some() {
                    // Warm the parameter entry up per bucket (module loading stays outside capture),
                    // then capture each alone, with an empty step's image as placeholder.
                    let mut images = Vec::with_capacity(buckets.len());
                    for (i, b) in buckets.iter().enumerate() {
                        let grid = self.bucket_grid.get(i).copied().unwrap_or(1);
                        let mut image = ParamImage([0; emit_cuda::abi::PARAM_IMAGE_BYTES]);
                        devfill::write_empty_step(*b, &mut image.0)?;
                        // SAFETY: `image` is the empty-step image of bucket `i` of this layout.
                        unsafe { dev.launch_param(grid, &image) }?;
                        images.push(image);
                    }
                    dev.stream.synchronize().map_err(cuda("warm up"))?;
                    for (i, image) in images.iter().enumerate() {
                        let grid = self.bucket_grid.get(i).copied().unwrap_or(1);
                        // SAFETY: as above; the graph is launched only through
                        // `launch_param_graph`, which sets an image the builder wrote.
                        let g = unsafe { dev.capture_param(grid, image) }?;
                        dev.param_graphs.push(g);
                    }
                }
            }
        }
        dev.stream.synchronize().map_err(cuda("capture"))?;
        dev.ctx.check_err().map_err(cuda("capture"))
    }

    fn step_device(
        &mut self,
        input: &StepInput<'_>,
        agreed: Option<&AgreedShape>,
        origin: Option<&StepOrigin>,
    ) -> Result<StepInfo, BackendError> {
        let slot = self.next;
        let Some(s) = self.slots.get_mut(slot) else {
            return Err(BackendError::Cuda("no staging slot".into()));
        };
        // Waits until no copy reads the slot any more.
        let staged = super::stage_step(
            &mut self.builder,
            &mut self.plan_state,
            &self.dims,
            input,
            origin,
            agreed,
            s.pinned.bytes_mut()?,
        )?;
        let info = staged.info;
        // From here the host state assumes the launch happens: a failure poisons.
        let grid = staged.grid(self.max_workers);
        let copied =
            match self
                .dev
                .run_device_step(&mut s.pinned, slot, info.bucket, staged.bytes, grid)
            {
                Ok((graphed, copied)) => {
                    self.graphed_last = graphed;
                    copied
                }
                Err(e) => {
                    self.poisoned = Some(e.to_string());
                    return Err(e);
                }
            };
        self.next = (slot + 1) % self.slots.len().max(1);
        self.staged = staged;
        self.bytes_copied = copied;
        self.info = info;
        Ok(info)
    }

    fn step_host(
        &mut self,
        input: &StepInput<'_>,
        agreed: Option<&AgreedShape>,
    ) -> Result<StepInfo, BackendError> {
        let slot = self.next;
        let total = self.dims.total_bytes();
        let Some(s) = self.slots.get_mut(slot) else {
            return Err(BackendError::Cuda("no staging slot".into()));
        };
        let Some(state) = s.fill.as_mut() else {
            return Err(BackendError::Cuda("host fill state missing".into()));
        };
        // Waits until no copy reads the slot any more.
        let bytes = s.pinned.bytes_mut()?;
        let mut plan = match agreed {
            None => fill::plan_step(&self.dims, input, state)?,
            Some(g) => fill::plan_step_agreed(&self.dims, input, state, fill::BlockCheck::Full, g)?,
        };
        let info = fill::write_step(&mut plan, bytes)?;
        // Without token ids the device keeps its own (an engine that writes sampled ids
        // on the device): skip the ids' real entries, copy the rest.
        let skip = if input.token_ids.is_some() {
            0
        } else {
            info.real.tokens as usize * 8
        };
        let graph = self
            .dev
            .host_graphs
            .get(slot)
            .and_then(Option::as_ref)
            .filter(|_| info.graphed());
        let dev = &self.dev;
        let launched = s.pinned.device_access(skip..total, |stream, src, len| {
            debug_assert!(Arc::ptr_eq(stream, &dev.stream));
            match graph {
                Some(g) => {
                    // SAFETY: `g` was captured on this device; `src` is the slot's filled
                    // buffer from byte `skip`, unchanged until the event `device_access`
                    // records after this closure, on this device's stream (the slot's),
                    // and `g` is launched right below.
                    unsafe { dev.set_copy(g, src, Target::Meta, skip, len) }?;
                    g.graph.launch().map_err(cuda("launch a graph"))?;
                    Ok(true)
                }
                None => {
                    // SAFETY: as above.
                    unsafe { dev.copy_async(src, Target::Meta, skip, len) }?;
                    Ok(false)
                }
            }
        });
        match launched {
            Ok(graphed) => self.graphed_last = graphed,
            Err(e) => {
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
        }
        self.next = (slot + 1) % self.slots.len().max(1);
        self.bytes_copied = total.saturating_sub(skip);
        self.info = info;
        Ok(info)
    }

    /// Waits for the device and copies the whole metadata buffer back.
    pub fn download(&mut self) -> Result<Snapshot, BackendError> {
        let total = self.dims.total_bytes();
        let mut words = vec![0u64; total.div_ceil(8)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        self.dev
            .download_sync(bytes.get_mut(..total).unwrap_or_default())?;
        Ok(Snapshot {
            words,
            total,
            info: self.info,
        })
    }

    /// Pinned room for `count` snapshots of the metadata buffer, filled by
    /// [`snapshot_into`](Self::snapshot_into) without synchronizing. The ring belongs to
    /// this backend: another backend refuses it.
    pub fn snapshot_ring(&self, count: usize) -> Result<SnapshotRing, BackendError> {
        let geometry = RingGeometry::new(self.dims.total_bytes(), count)?;
        let pinned = PinnedBuffer::new(&self.dev.tracked, geometry.bytes())?;
        let mut infos = Vec::new();
        infos
            .try_reserve_exact(count)
            .map_err(|_| SnapshotError::TooLarge {
                count,
                stride: geometry.stride,
            })?;
        infos.resize(count, None);
        Ok(SnapshotRing {
            pinned,
            geometry,
            infos,
            dims: self.dims.clone(),
        })
    }

    /// Enqueues a copy of the metadata buffer as it is after the last step into snapshot
    /// `index` of `ring` (stream-ordered: no host synchronization). Refuses a ring another
    /// backend made ([`SnapshotError::ForeignRing`]) and an index outside it.
    pub fn snapshot_into(
        &mut self,
        ring: &mut SnapshotRing,
        index: usize,
    ) -> Result<(), BackendError> {
        let owned = Arc::ptr_eq(ring.pinned.stream(), &self.dev.stream);
        let range = ring.geometry.range(owned, self.dims.total_bytes(), index)?;
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(cuda("bind the CUDA context"))?;
        let dev = &self.dev;
        ring.pinned.device_access(range, |stream, dst, len| {
            debug_assert!(Arc::ptr_eq(stream, &dev.stream));
            // SAFETY: `dst` is snapshot `index` of the ring, `len` = the layout's bytes,
            // not read by the host until the event `device_access` records after this
            // closure; the ring's stream is this backend's (checked above), so the copy is
            // ordered after the last step.
            unsafe { dev.download_async(dst, len) }
        })?;
        if let Some(i) = ring.infos.get_mut(index) {
            *i = Some(self.info);
        }
        Ok(())
    }
}

/// Every node of `graph`, with its type.
fn graph_nodes(
    graph: &CudaGraph,
) -> Result<Vec<(sys::CUgraphNode, sys::CUgraphNodeType)>, BackendError> {
    let mut n = 0usize;
    // SAFETY: the graph is owned by `graph`; a null array asks for the node count only.
    unsafe { sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(cuda("list graph nodes"))?;
    let mut nodes: Vec<sys::CUgraphNode> = vec![std::ptr::null_mut(); n];
    // SAFETY: `nodes` has room for the `n` nodes just counted; the driver writes at most
    // `n` and sets `n` to the number written.
    unsafe { sys::cuGraphGetNodes(graph.cu_graph(), nodes.as_mut_ptr(), &mut n) }
        .result()
        .map_err(cuda("list graph nodes"))?;
    nodes.truncate(n);
    nodes
        .into_iter()
        .map(|node| {
            let mut ty = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            // SAFETY: `node` belongs to the graph; `ty` is valid for the call.
            unsafe { sys::cuGraphNodeGetType(node, &mut ty) }
                .result()
                .map_err(cuda("graph node type"))?;
            Ok((node, ty))
        })
        .collect()
}

/// The one copy node of a captured graph and its parameters.
fn copy_node(graph: &CudaGraph) -> Result<(sys::CUgraphNode, sys::CUDA_MEMCPY3D), BackendError> {
    for (node, ty) in graph_nodes(graph)? {
        if ty == sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_MEMCPY {
            let mut p = std::mem::MaybeUninit::<sys::CUDA_MEMCPY3D>::uninit();
            // SAFETY: `node` is a copy node of the graph; `p` has room for the parameters.
            unsafe { sys::cuGraphMemcpyNodeGetParams(node, p.as_mut_ptr()) }
                .result()
                .map_err(cuda("read a graph's copy"))?;
            // SAFETY: the call succeeded, so the driver wrote every field of `p`.
            let p = unsafe { p.assume_init() };
            let kinds_ok = matches!(
                p.srcMemoryType,
                sys::CUmemorytype::CU_MEMORYTYPE_HOST | sys::CUmemorytype::CU_MEMORYTYPE_UNIFIED
            ) && matches!(
                p.dstMemoryType,
                sys::CUmemorytype::CU_MEMORYTYPE_DEVICE | sys::CUmemorytype::CU_MEMORYTYPE_UNIFIED
            ) && p.Height <= 1
                && p.Depth <= 1;
            if !kinds_ok {
                return Err(BackendError::Cuda(format!(
                    "captured copy has an unexpected shape ({:?} -> {:?}, {}x{})",
                    p.srcMemoryType, p.dstMemoryType, p.Height, p.Depth
                )));
            }
            return Ok((node, p));
        }
    }
    Err(BackendError::Cuda("captured graph has no copy node".into()))
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // In-flight copies read the pinned buffers freed below (each also waits for its
        // own copies).
        let _ = self.dev.stream.synchronize();
    }
}

impl MetadataBackend for CudaBackend {
    fn name(&self) -> String {
        let mode = match self.options.mode {
            FillMode::Device => "device fill",
            FillMode::Host => "host fill",
        };
        let graphs = if self.report.graphs > 0 {
            "graphs"
        } else {
            "eager"
        };
        format!("cuda ({mode}, {graphs}) on {}", self.report.device)
    }

    fn step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, BackendError> {
        self.step_with(input, None, None)
    }

    fn step_agreed(
        &mut self,
        input: &StepInput<'_>,
        agreed: &AgreedShape,
    ) -> Result<StepInfo, BackendError> {
        self.step_with(input, Some(agreed), None)
    }

    /// The device fill stages a step that advances the one it staged last from the
    /// step's changes alone ([`StagingBuilder::try_advance`](crate::devfill::StagingBuilder::try_advance)).
    fn step_with_origin(
        &mut self,
        input: &StepInput<'_>,
        origin: &StepOrigin,
    ) -> Result<StepInfo, BackendError> {
        self.step_with(input, None, Some(origin))
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.dev.tracked.synchronize().map_err(cuda("synchronize"))
    }

    fn bytes_copied_last_step(&self) -> usize {
        self.bytes_copied
    }

    fn reset_residency(&mut self) {
        // The device's resident table keeps its contents; the host just stops relying on
        // them. The metadata block table stays known (its dirty lengths still hold).
        self.builder.forget_residency();
    }
}

impl CudaBackend {
    /// A step, matched on its own (`agreed` is `None`) or as the group agreed.
    fn step_with(
        &mut self,
        input: &StepInput<'_>,
        agreed: Option<&AgreedShape>,
        origin: Option<&StepOrigin>,
    ) -> Result<StepInfo, BackendError> {
        if let Some(p) = &self.poisoned {
            return Err(BackendError::Cuda(format!(
                "the backend is unusable after an earlier CUDA failure: {p}"
            )));
        }
        // Another library may have made its own context current on this thread.
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(cuda("bind the CUDA context"))?;
        match self.options.mode {
            FillMode::Device => self.step_device(input, agreed, origin),
            FillMode::Host => self.step_host(input, agreed),
        }
    }
}

/// A copy of the device metadata buffer after one step.
#[derive(Debug, Clone)]
pub struct Snapshot {
    words: Vec<u64>,
    total: usize,
    info: StepInfo,
}

impl Snapshot {
    /// A snapshot of `total` bytes held in `words`.
    pub(super) fn from_words(words: Vec<u64>, total: usize, info: StepInfo) -> Self {
        Self { words, total, info }
    }

    /// The step's info.
    pub fn info(&self) -> &StepInfo {
        &self.info
    }

    /// The whole buffer.
    pub fn bytes(&self) -> &[u8] {
        let b: &[u8] = bytemuck::cast_slice(&self.words);
        b.get(..self.total).unwrap_or(b)
    }

    /// Typed views, as the kernels see them.
    pub fn view<'a, D: Dims>(&'a self, dims: &D) -> MetadataView<'a> {
        MetadataView::from_parts(dims, self.bytes(), &self.info)
    }
}

/// Where the snapshots of a ring lie: `count` snapshots of `total` bytes, `stride` bytes
/// apart (16-byte aligned). Plain numbers, so the checks can be tested without a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RingGeometry {
    total: usize,
    stride: usize,
    count: usize,
}

impl RingGeometry {
    /// Room for `count` snapshots of a `total`-byte layout.
    fn new(total: usize, count: usize) -> Result<Self, SnapshotError> {
        let stride = total.next_multiple_of(16);
        let fits = stride
            .checked_mul(count)
            .is_some_and(|b| isize::try_from(b).is_ok());
        if !fits {
            return Err(SnapshotError::TooLarge { count, stride });
        }
        Ok(Self {
            total,
            stride,
            count,
        })
    }

    /// Bytes of the whole ring.
    fn bytes(&self) -> usize {
        self.stride * self.count
    }

    /// The bytes of snapshot `index`, for a backend whose layout has `layout_bytes` and
    /// that made the ring (`owned`) — otherwise a copy of its buffer could run past the
    /// snapshot, or the ring's wait would not cover the copy.
    fn range(
        &self,
        owned: bool,
        layout_bytes: usize,
        index: usize,
    ) -> Result<std::ops::Range<usize>, SnapshotError> {
        if !owned || layout_bytes != self.total || self.total > self.stride {
            return Err(SnapshotError::ForeignRing {
                ring_bytes: self.total,
                layout_bytes,
            });
        }
        if index >= self.count {
            return Err(SnapshotError::Index {
                index,
                count: self.count,
            });
        }
        let start = index * self.stride;
        Ok(start..start + self.total)
    }
}

/// Pinned memory for many snapshots of one backend's metadata buffer, taken without
/// synchronizing ([`CudaBackend::snapshot_into`]). It records its owner (the backend's
/// stream), its layout and where each snapshot lies, so a snapshot can only be written by
/// its owner and read at the size it was written.
pub struct SnapshotRing {
    pinned: PinnedBuffer,
    geometry: RingGeometry,
    infos: Vec<Option<StepInfo>>,
    dims: RuntimeDims,
}

impl SnapshotRing {
    /// Snapshots it holds.
    pub fn len(&self) -> usize {
        self.geometry.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.geometry.count == 0
    }

    /// Snapshot `index` as a view, once every snapshot copy enqueued into the ring has
    /// landed (it waits for them). An index outside the ring, or one never taken, is an
    /// error.
    pub fn view(&self, index: usize) -> Result<MetadataView<'_>, BackendError> {
        let range = self.geometry.range(true, self.geometry.total, index)?;
        let Some(Some(info)) = self.infos.get(index) else {
            return Err(SnapshotError::NotTaken { index }.into());
        };
        let bytes = self.pinned.bytes()?;
        let len = bytes.len();
        let bytes = bytes.get(range.clone()).ok_or_else(|| {
            BackendError::Cuda(format!("snapshot bytes {range:?} of a {len}-byte ring"))
        })?;
        Ok(MetadataView::from_parts(&self.dims, bytes, info))
    }
}

/// Launches a fill entry (`(al_u8* meta, const al_u8* staging, al_i32* resident)`) with
/// `grid` blocks of `THREADS` threads on `stream`; the one launch of both the backend and
/// [`StreamFill`](super::StreamFill).
///
/// # Safety
///
/// `function` is a fill entry of a module compiled for the layout the three device
/// pointers `[meta, staging, resident]` were sized for (metadata: the layout's bytes;
/// staging: the staging builder's capacity; resident: `abi::resident_words`), all live
/// until the kernel finishes, and when the launch runs (in stream order) the staging holds
/// an image the builder wrote for that layout: the kernel trusts its offsets and counts.
pub(super) unsafe fn launch_fill_kernel(
    function: &CudaFunction,
    grid: u32,
    stream: &CudaStream,
    pointers: [sys::CUdeviceptr; 3],
) -> Result<(), BackendError> {
    let [meta, image, resident] = pointers;
    let mut args = FillArgs {
        meta,
        image,
        resident,
    };
    // SAFETY: the caller's contract: `function`'s signature and the allocations it indexes
    // match the three pointers; the argument values outlive the call, which copies them.
    unsafe { launch_with_args(function, grid, stream, &mut args) }
}

/// Launches fill entry `function` with `grid` blocks of [`THREADS`] on `stream`, with
/// `args`.
///
/// # Safety
///
/// `args` must hold one value of each of `function`'s parameter types, in order (`T` its
/// second's), and the launch must meet the entry's contract (the buffers it indexes, the
/// image it reads): see [`launch_fill_kernel`] and [`Device::launch_param`].
unsafe fn launch_with_args<T>(
    function: &CudaFunction,
    grid: u32,
    stream: &CudaStream,
    args: &mut FillArgs<T>,
) -> Result<(), BackendError> {
    let mut pointers = args.pointers();
    // SAFETY: this function's contract; the driver copies the values during the call.
    unsafe {
        result::launch_kernel(
            function.cu_function(),
            (grid.max(1), 1, 1),
            (THREADS, 1, 1),
            0,
            stream.cu_stream(),
            &mut pointers,
        )
    }
    .map_err(cuda("launch the fill kernel"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "Test code: a panic is a failed test.")]

    use super::*;

    #[test]
    fn a_parameter_image_holds_an_image_up_to_its_size_zero_padded() {
        let max = emit_cuda::abi::PARAM_IMAGE_BYTES;
        let image: Vec<u8> = (1..=96u8).collect();
        let p = ParamImage::of(&image).unwrap();
        assert_eq!(&p.0[..96], &image[..]);
        assert!(p.0[96..].iter().all(|&b| b == 0));
        assert!(ParamImage::of(&vec![7u8; max]).is_some_and(|p| p.0.iter().all(|&b| b == 7)));
        assert!(ParamImage::of(&vec![7u8; max + 1]).is_none());
        assert_eq!(std::mem::align_of::<ParamImage>(), 16);
    }

    #[test]
    fn the_parameter_entry_is_compiled_only_where_a_parameter_graph_can_use_it() {
        assert!(CudaOptions::default().emit_options().param_entries);
        for off in [
            CudaOptions {
                param_images: false,
                ..CudaOptions::default()
            },
            CudaOptions {
                graphs: false,
                ..CudaOptions::default()
            },
        ] {
            assert!(!off.emit_options().param_entries, "{off:?}");
        }
    }

    #[test]
    fn graphed_copies_round_small_images_up_and_never_cut_one() {
        // Small images share a power-of-two copy size, at least the floor.
        assert_eq!(graphed_copy_bytes(96, 1 << 20), COPY_FLOOR);
        assert_eq!(graphed_copy_bytes(160, 1 << 20), COPY_FLOOR);
        assert_eq!(graphed_copy_bytes(257, 1 << 20), 512);
        assert_eq!(
            graphed_copy_bytes(COPY_ROUNDED_UP_TO, 1 << 20),
            COPY_ROUNDED_UP_TO
        );
        // Larger ones move their exact size.
        assert_eq!(
            graphed_copy_bytes(COPY_ROUNDED_UP_TO + 1, 1 << 20),
            COPY_ROUNDED_UP_TO + 1
        );
        // Never past the buffers, never short of the image.
        assert_eq!(graphed_copy_bytes(96, 200), 200);
        assert_eq!(graphed_copy_bytes(300, 400), 400);
        for bytes in 0..=2 * COPY_ROUNDED_UP_TO {
            let copied = graphed_copy_bytes(bytes, 3000);
            assert!(copied >= bytes, "{bytes} -> {copied}");
            assert!(copied <= 3000 || copied == bytes, "{bytes} -> {copied}");
        }
    }

    #[test]
    fn a_ring_made_for_a_smaller_layout_is_refused() {
        // A ring of 4 snapshots of a 1,000-byte layout, offered to a backend whose layout
        // has 4,000 bytes: its copy would run past the snapshot.
        let small = RingGeometry::new(1000, 4).unwrap();
        assert_eq!(
            small.range(false, 4000, 0),
            Err(SnapshotError::ForeignRing {
                ring_bytes: 1000,
                layout_bytes: 4000
            })
        );
        // Its own backend's, whatever the layout says.
        assert_eq!(
            small.range(true, 4000, 3),
            Err(SnapshotError::ForeignRing {
                ring_bytes: 1000,
                layout_bytes: 4000
            })
        );
        // Another backend with a layout of the same size is refused too (its stream does
        // not order the copy before the ring's wait).
        assert!(matches!(
            small.range(false, 1000, 0),
            Err(SnapshotError::ForeignRing { .. })
        ));
    }

    #[test]
    fn a_snapshot_index_outside_the_ring_is_refused() {
        let ring = RingGeometry::new(1000, 4).unwrap();
        assert_eq!(
            ring.range(true, 1000, 4),
            Err(SnapshotError::Index { index: 4, count: 4 })
        );
        assert_eq!(ring.range(true, 1000, 3), Ok(3 * 1008..3 * 1008 + 1000));
        assert_eq!(ring.bytes(), 4 * 1008);
    }

    #[test]
    fn a_ring_beyond_the_address_space_is_refused_before_allocating() {
        assert_eq!(
            RingGeometry::new(1000, usize::MAX / 64),
            Err(SnapshotError::TooLarge {
                count: usize::MAX / 64,
                stride: 1008
            })
        );
        assert!(RingGeometry::new(1000, 0).is_ok());
    }
}
