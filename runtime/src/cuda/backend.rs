//! [`CudaBackend`]: device buffers, pinned staging, the fill launches and their graphs.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

use attention_layout_codegen::emit_cuda::{self, EmitOptions, THREADS};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr,
    PinnedHostSlice, result, sys,
};
use cudarc::nvrtc::Ptx;

use super::compile::{self, CompileOptions, CompileReport};
use super::{DeviceInfo, probe};
use crate::agree::AgreedShape;
use crate::backend::{BackendError, MetadataBackend};
use crate::devfill::{self, Staged, StagingBuilder};
use crate::dims::{Dims, RuntimeDims};
use crate::fill::{self, FillState, StepInfo};
use crate::metadata::MetadataView;
use crate::step::StepInput;

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
    /// Compile one entry per bucket (else every step uses the eager entry, which reads
    /// the padded dims from the staging header: much faster to compile).
    pub bucket_kernels: bool,
    /// NVRTC and PTX cache settings.
    pub compile: CompileOptions,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            ordinal: 0,
            mode: FillMode::Device,
            graphs: true,
            bucket_kernels: true,
            compile: CompileOptions::default(),
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
    /// Graphs captured.
    pub graphs: usize,
    /// Why graphs are off although asked for, if they are.
    pub graphs_disabled: Option<String>,
    /// Bytes of each pinned staging buffer.
    pub staging_bytes: usize,
}

/// One pinned staging buffer and the event of the last copy that read it.
struct Slot {
    ptr: *mut u8,
    len: usize,
    /// Recorded after the step that used this buffer; the host waits on it before
    /// writing the buffer again (never while a copy may still read it).
    done: CudaEvent,
    /// Host fill: the fill state of this buffer's contents.
    fill: Option<FillState>,
    _pinned: PinnedHostSlice<u8>,
}

/// A captured step: its graph and the copy node whose source and size change per step.
struct StepGraph {
    graph: CudaGraph,
    node: sys::CUgraphNode,
    params: sys::CUDA_MEMCPY3D,
}

/// The CUDA backend. See the [module docs](super).
///
/// Not `Send`: it holds raw pointers into pinned memory. All work runs on its own
/// (non-default) stream; [`MetadataBackend::step`] never waits for the device except for
/// a staging buffer two steps old.
pub struct CudaBackend {
    // Fields drop in order; `Drop` synchronizes the stream first.
    graphs: Vec<Option<StepGraph>>,
    host_graph: Option<StepGraph>,
    eager: Option<CudaFunction>,
    bucket_fns: Vec<CudaFunction>,
    bucket_grid: Vec<u32>,
    _module: Option<Arc<CudaModule>>,
    slots: Vec<Slot>,
    meta_ptr: sys::CUdeviceptr,
    staging_ptr: sys::CUdeviceptr,
    resident_ptr: sys::CUdeviceptr,
    _meta: CudaSlice<u8>,
    _staging: Option<CudaSlice<u8>>,
    _resident: Option<CudaSlice<i32>>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
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

fn cuda(what: &str) -> impl Fn(result::DriverError) -> BackendError + '_ {
    move |e| BackendError::Cuda(format!("{what}: {e}"))
}

impl CudaBackend {
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

        // Kernels (device fill only).
        let mut compile_report = None;
        let mut load_seconds = 0.0;
        let (module, eager, bucket_fns) = if options.mode == FillMode::Device {
            let source = emit_cuda::cuda_source_with(
                geometry,
                EmitOptions {
                    bucket_entries: options.bucket_kernels,
                },
            );
            let (major, minor) = device.compute_capability;
            let arch = compile::target_arch(major, minor)?;
            let (ptx, report) = compile::compile(&source, &arch, &options.compile)?;
            compile_report = Some(report);
            let t0 = Instant::now();
            let module = ctx
                .load_module(Ptx::from_src(ptx.to_string()))
                .map_err(cuda("load the fill kernels"))?;
            let eager = module
                .load_function(emit_cuda::EAGER_ENTRY)
                .map_err(cuda("find the eager entry"))?;
            let mut fns = Vec::new();
            if options.bucket_kernels {
                for i in 0..geometry.buckets.len() {
                    fns.push(
                        module
                            .load_function(&emit_cuda::bucket_entry(i))
                            .map_err(cuda("find a bucket entry"))?,
                    );
                }
            }
            load_seconds = t0.elapsed().as_secs_f64();
            (Some(module), Some(eager), fns)
        } else {
            (None, None, Vec::new())
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
        let builder = StagingBuilder::new(&dims);
        let (staging, resident) = if options.mode == FillMode::Device {
            let staging = stream
                .alloc_zeros::<u8>(builder.capacity())
                .map_err(cuda("allocate the staging buffer"))?;
            let resident = stream
                .alloc_zeros::<i32>((dims.max_requests() * dims.block_table_width()).max(1))
                .map_err(cuda("allocate the resident block table"))?;
            (Some(staging), Some(resident))
        } else {
            (None, None)
        };
        let ptr_of = |s: &CudaSlice<u8>| s.device_ptr(&stream).0;
        let meta_ptr = ptr_of(&meta);
        let staging_ptr = staging.as_ref().map_or(0, ptr_of);
        let resident_ptr = resident.as_ref().map_or(0, |s| s.device_ptr(&stream).0);

        let slot_len = match options.mode {
            FillMode::Device => builder.capacity(),
            FillMode::Host => total.next_multiple_of(16),
        };
        let mut slots = Vec::with_capacity(2);
        for _ in 0..2 {
            // SAFETY: the memory is written (by the fill or the staging builder) before
            // any copy reads it; flags 0: cached (not write-combined) memory, which the
            // host fill also reads back.
            let mut pinned = unsafe { ctx.alloc_pinned_with_flags::<u8>(slot_len, 0) }
                .map_err(cuda("allocate pinned staging"))?;
            let ptr = pinned.as_mut_ptr().map_err(cuda("pinned staging"))?;
            let mut fill_state = None;
            if options.mode == FillMode::Host {
                // SAFETY: `ptr` points to `slot_len` bytes of pinned memory owned by
                // `pinned`, page aligned, not used by any copy yet.
                let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, slot_len) };
                fill::init_buffer(&dims, bytes)?;
                fill_state = Some(FillState::new(&dims));
            }
            slots.push(Slot {
                ptr,
                len: slot_len,
                done: ctx.new_event(None).map_err(cuda("create an event"))?,
                fill: fill_state,
                _pinned: pinned,
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
            graphs: Vec::new(),
            host_graph: None,
            eager,
            bucket_fns,
            bucket_grid,
            _module: module,
            slots,
            meta_ptr,
            staging_ptr,
            resident_ptr,
            _meta: meta,
            _staging: staging,
            _resident: resident,
            stream,
            ctx,
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
        me.stream
            .synchronize()
            .map_err(cuda("initialize the buffers"))?;
        if me.options.graphs && !me.dims.buckets().is_empty() {
            let t0 = Instant::now();
            if let Err(e) = me.capture_graphs() {
                // Graphs are an optimization: run eagerly, and say why.
                me.graphs.clear();
                me.host_graph = None;
                me.report.graphs_disabled = Some(e.to_string());
                me.stream
                    .synchronize()
                    .map_err(cuda("recover from a failed capture"))?;
            }
            me.report.capture_seconds = t0.elapsed().as_secs_f64();
        }
        me.report.graphs =
            me.graphs.iter().flatten().count() + usize::from(me.host_graph.is_some());
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
        self.meta_ptr
    }

    /// The stream every step runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn launch_fill(&self, f: &CudaFunction, grid: u32) -> Result<(), BackendError> {
        let (mut meta, mut staging, mut resident) =
            (self.meta_ptr, self.staging_ptr, self.resident_ptr);
        let mut args: [*mut c_void; 3] = [
            (&raw mut meta).cast(),
            (&raw mut staging).cast(),
            (&raw mut resident).cast(),
        ];
        // SAFETY: every fill entry is `(al_u8* meta, const al_u8* staging, al_i32*
        // resident)`; the three pointers are live allocations of the sizes the kernels
        // index (metadata: the layout's bytes; staging: the builder's capacity; resident:
        // R x nkv ids), and the argument values outlive the call, which copies them.
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (THREADS, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut args,
            )
        }
        .map_err(cuda("launch the fill kernel"))
    }

    fn copy_async(
        &self,
        src: *const u8,
        dst: sys::CUdeviceptr,
        bytes: usize,
    ) -> Result<(), BackendError> {
        // SAFETY: `src` points to at least `bytes` bytes of pinned memory that stays
        // unchanged until the copy ran (steps wait on the slot's event, recorded after the
        // copy, before rewriting it; warm-ups synchronize); `dst` has room for `bytes`
        // (callers copy within the buffer they name).
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.cast(), bytes, self.stream.cu_stream()) }
            .result()
            .map_err(cuda("copy staging to the device"))
    }

    /// Captures `copy` (+ `kernel`) into a graph and finds its copy node.
    fn capture(
        &self,
        src: *const u8,
        dst: sys::CUdeviceptr,
        bytes: usize,
        kernel: Option<(&CudaFunction, u32)>,
    ) -> Result<StepGraph, BackendError> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda("begin capture"))?;
        let recorded = self
            .copy_async(src, dst, bytes)
            .and_then(|()| kernel.map_or(Ok(()), |(f, grid)| self.launch_fill(f, grid)));
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
        })
    }

    /// Warms every entry up (eager launches of an empty step), then captures one graph
    /// per bucket (device fill) or one copy graph (host fill).
    fn capture_graphs(&mut self) -> Result<(), BackendError> {
        let slot0 = self.slots.first().map(|s| (s.ptr, s.len));
        let Some((ptr0, len0)) = slot0 else {
            return Ok(());
        };
        match self.options.mode {
            FillMode::Host => {
                let total = self.dims.total_bytes();
                self.host_graph = Some(self.capture(ptr0, self.meta_ptr, total, None)?);
            }
            FillMode::Device => {
                let buckets = self.dims.buckets().to_vec();
                // SAFETY: slot 0's pinned memory, `len0` bytes, not in use by any copy.
                let image = unsafe { std::slice::from_raw_parts_mut(ptr0, len0) };
                for (i, b) in buckets.iter().enumerate() {
                    let bytes = devfill::write_empty_step(*b, image)?;
                    self.copy_async(ptr0, self.staging_ptr, bytes)?;
                    let f = self.bucket_fns.get(i).or(self.eager.as_ref());
                    if let Some(f) = f {
                        self.launch_fill(f, self.bucket_grid.get(i).copied().unwrap_or(1))?;
                    }
                    // Each warm-up reads slot 0: finish before rewriting it.
                    self.stream.synchronize().map_err(cuda("warm up"))?;
                }
                for i in 0..buckets.len() {
                    let f = self.bucket_fns.get(i).or(self.eager.as_ref());
                    let Some(f) = f else { break };
                    let grid = self.bucket_grid.get(i).copied().unwrap_or(1);
                    // The captured length is a placeholder: each step sets its own.
                    let header = emit_cuda::abi::HEADER_BYTES;
                    let g = self.capture(ptr0, self.staging_ptr, header, Some((f, grid)))?;
                    self.graphs.push(Some(g));
                }
            }
        }
        self.stream.synchronize().map_err(cuda("capture"))?;
        self.ctx.check_err().map_err(cuda("capture"))
    }

    /// Points a graph's copy at `src` / `dst`, `bytes` long (before launching it).
    fn set_copy(
        &self,
        g: &StepGraph,
        src: *const u8,
        dst: sys::CUdeviceptr,
        bytes: usize,
    ) -> Result<(), BackendError> {
        let mut p = g.params;
        match p.srcMemoryType {
            sys::CUmemorytype::CU_MEMORYTYPE_HOST => p.srcHost = src.cast(),
            _ => p.srcDevice = src as sys::CUdeviceptr,
        }
        p.dstDevice = dst;
        p.WidthInBytes = bytes;
        // SAFETY: `g.node` is the copy node of the graph `g.graph.cu_graph_exec()` was
        // instantiated from; the parameters keep the captured (1-D) shape and memory kinds
        // and point into the same allocations (a pinned slot, a device buffer) of this
        // context. Launches already enqueued keep their old parameters.
        unsafe {
            sys::cuGraphExecMemcpyNodeSetParams(
                g.graph.cu_graph_exec(),
                g.node,
                &p,
                self.ctx.cu_ctx(),
            )
        }
        .result()
        .map_err(cuda("update a graph's copy"))
    }

    /// Waits until no copy reads slot `i` any more.
    fn claim(&self, i: usize) -> Result<&Slot, BackendError> {
        let slot = self
            .slots
            .get(i)
            .ok_or_else(|| BackendError::Cuda("no staging slot".into()))?;
        slot.done.synchronize().map_err(cuda("wait for staging"))?;
        Ok(slot)
    }

    fn step_device(
        &mut self,
        input: &StepInput<'_>,
        agreed: Option<&AgreedShape>,
    ) -> Result<StepInfo, BackendError> {
        // With residency the staging builder checks every id it sends (changes, uploads,
        // patches): the plan only reads the ids the step's tokens land in, so a step costs
        // what changed rather than the whole table.
        let check = if input.residency.is_some() {
            fill::BlockCheck::Needed
        } else {
            fill::BlockCheck::Full
        };
        let plan = match agreed {
            None => fill::plan_step_checking(&self.dims, input, &mut self.plan_state, check)?,
            Some(g) => fill::plan_step_agreed(&self.dims, input, &mut self.plan_state, check, g)?,
        };
        let info = devfill::complete_info(&self.dims, input, plan.info());
        let slot = self.next;
        let (ptr, len) = {
            let s = self.claim(slot)?;
            (s.ptr, s.len)
        };
        // SAFETY: slot `slot`'s pinned buffer is `len` bytes, and its event completed:
        // no copy reads it until the one this step enqueues.
        let image = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let staged = self.builder.build(input, &info, image)?;
        // From here the host state assumes the launch happens: a failure poisons.
        let launched = self.launch_device(slot, &info, &staged);
        if let Err(e) = launched {
            self.poisoned = Some(e.to_string());
            return Err(e);
        }
        self.staged = staged;
        self.bytes_copied = staged.bytes;
        self.info = info;
        Ok(info)
    }

    fn launch_device(
        &mut self,
        slot: usize,
        info: &StepInfo,
        staged: &Staged,
    ) -> Result<(), BackendError> {
        let src = self.slots.get(slot).map_or(std::ptr::null_mut(), |s| s.ptr);
        let graph = info
            .bucket
            .and_then(|b| self.graphs.get(b as usize))
            .and_then(Option::as_ref);
        if let Some(g) = graph {
            self.set_copy(g, src, self.staging_ptr, staged.bytes)?;
            g.graph.launch().map_err(cuda("launch a graph"))?;
            self.graphed_last = true;
        } else {
            self.copy_async(src, self.staging_ptr, staged.bytes)?;
            let f = info
                .bucket
                .and_then(|b| self.bucket_fns.get(b as usize))
                .or(self.eager.as_ref())
                .ok_or_else(|| BackendError::Cuda("no fill kernel loaded".into()))?;
            self.launch_fill(f, staged.grid(self.max_workers))?;
            self.graphed_last = false;
        }
        self.record(slot)
    }

    fn record(&mut self, slot: usize) -> Result<(), BackendError> {
        if let Some(s) = self.slots.get(slot) {
            s.done
                .record(&self.stream)
                .map_err(cuda("record an event"))?;
        }
        self.next = (slot + 1) % self.slots.len().max(1);
        Ok(())
    }

    fn step_host(
        &mut self,
        input: &StepInput<'_>,
        agreed: Option<&AgreedShape>,
    ) -> Result<StepInfo, BackendError> {
        let slot = self.next;
        self.claim(slot)?;
        let total = self.dims.total_bytes();
        let Some(s) = self.slots.get_mut(slot) else {
            return Err(BackendError::Cuda("no staging slot".into()));
        };
        let Some(state) = s.fill.as_mut() else {
            return Err(BackendError::Cuda("host fill state missing".into()));
        };
        // SAFETY: the slot's pinned buffer (`len >= total` bytes) is idle: its event
        // completed.
        let bytes = unsafe { std::slice::from_raw_parts_mut(s.ptr, s.len) };
        let plan = match agreed {
            None => fill::plan_step(&self.dims, input, state)?,
            Some(g) => fill::plan_step_agreed(&self.dims, input, state, fill::BlockCheck::Full, g)?,
        };
        let info = fill::write_step(&self.dims, input, &plan, bytes, state)?;
        let src = s.ptr;
        // Without token ids the device keeps its own (an engine that writes sampled ids
        // on the device): skip the ids' real entries, copy the rest.
        let skip = if input.token_ids.is_some() {
            0
        } else {
            info.real.tokens as usize * 8
        };
        let len = total - skip;
        // SAFETY: `skip <= total` (real tokens fit the buffer): the offset stays inside
        // the slot's buffer.
        let src = unsafe { src.add(skip) };
        let dst = self.meta_ptr + skip as u64;
        let launched = match (&self.host_graph, info.graphed()) {
            (Some(g), true) => self
                .set_copy(g, src, dst, len)
                .and_then(|()| g.graph.launch().map_err(cuda("launch a graph")))
                .map(|()| true),
            _ => self.copy_async(src, dst, len).map(|()| false),
        }
        .and_then(|graphed| self.record(slot).map(|()| graphed));
        match launched {
            Ok(graphed) => self.graphed_last = graphed,
            Err(e) => {
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
        }
        self.bytes_copied = len;
        self.info = info;
        Ok(info)
    }

    /// Waits for the device and copies the whole metadata buffer back.
    pub fn download(&mut self) -> Result<Snapshot, BackendError> {
        self.stream.synchronize().map_err(cuda("synchronize"))?;
        let total = self.dims.total_bytes();
        let mut words = vec![0u64; total.div_ceil(8)];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        let bytes = bytes.get_mut(..total).unwrap_or_default();
        // SAFETY: the metadata buffer is `total` bytes, and the stream is idle.
        unsafe { result::memcpy_dtoh_sync(bytes, self.meta_ptr) }
            .map_err(cuda("copy the metadata back"))?;
        Ok(Snapshot {
            words,
            total,
            info: self.info,
        })
    }

    /// Pinned room for `count` snapshots of the metadata buffer, filled by
    /// [`snapshot_into`](Self::snapshot_into) without synchronizing.
    pub fn snapshot_ring(&self, count: usize) -> Result<SnapshotRing, BackendError> {
        let stride = self.dims.total_bytes().next_multiple_of(16);
        let len = (stride * count).max(16);
        // SAFETY: read only after the copies that write it completed.
        let mut pinned = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(len, 0) }
            .map_err(cuda("allocate snapshot memory"))?;
        let ptr = pinned.as_mut_ptr().map_err(cuda("snapshot memory"))?;
        Ok(SnapshotRing {
            ptr,
            stride,
            count,
            infos: vec![StepInfo::default(); count],
            _pinned: pinned,
        })
    }

    /// Enqueues a copy of the metadata buffer as it is after the last step into snapshot
    /// `index` of `ring` (stream-ordered: no host synchronization).
    pub fn snapshot_into(
        &mut self,
        ring: &mut SnapshotRing,
        index: usize,
    ) -> Result<(), BackendError> {
        if index >= ring.count {
            return Err(BackendError::Cuda(format!(
                "snapshot {index} of a ring of {}",
                ring.count
            )));
        }
        self.ctx
            .bind_to_thread()
            .map_err(cuda("bind the CUDA context"))?;
        let total = self.dims.total_bytes();
        // SAFETY: snapshot `index` is `stride >= total` bytes inside the ring's pinned
        // allocation; the metadata buffer is `total` bytes; the copy is ordered after the
        // last step on this stream.
        unsafe {
            sys::cuMemcpyDtoHAsync_v2(
                ring.ptr.add(index * ring.stride).cast(),
                self.meta_ptr,
                total,
                self.stream.cu_stream(),
            )
        }
        .result()
        .map_err(cuda("snapshot the metadata"))?;
        if let Some(i) = ring.infos.get_mut(index) {
            *i = self.info;
        }
        Ok(())
    }
}

/// The one copy node of a captured graph and its parameters.
fn copy_node(graph: &CudaGraph) -> Result<(sys::CUgraphNode, sys::CUDA_MEMCPY3D), BackendError> {
    let mut n = 0usize;
    // SAFETY: the graph is owned by `graph`; a null array asks for the node count only.
    unsafe { sys::cuGraphGetNodes(graph.cu_graph(), std::ptr::null_mut(), &mut n) }
        .result()
        .map_err(cuda("list graph nodes"))?;
    let mut nodes: Vec<sys::CUgraphNode> = vec![std::ptr::null_mut(); n];
    // SAFETY: `nodes` has room for the `n` nodes just counted.
    unsafe { sys::cuGraphGetNodes(graph.cu_graph(), nodes.as_mut_ptr(), &mut n) }
        .result()
        .map_err(cuda("list graph nodes"))?;
    for &node in nodes.iter().take(n) {
        let mut ty = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
        // SAFETY: `node` belongs to the graph; `ty` is valid for the call.
        unsafe { sys::cuGraphNodeGetType(node, &mut ty) }
            .result()
            .map_err(cuda("graph node type"))?;
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
        // In-flight copies read the pinned buffers freed below.
        let _ = self.stream.synchronize();
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
        self.step_with(input, None)
    }

    fn step_agreed(
        &mut self,
        input: &StepInput<'_>,
        agreed: &AgreedShape,
    ) -> Result<StepInfo, BackendError> {
        self.step_with(input, Some(agreed))
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.stream.synchronize().map_err(cuda("synchronize"))
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
    ) -> Result<StepInfo, BackendError> {
        if let Some(p) = &self.poisoned {
            return Err(BackendError::Cuda(format!(
                "the backend is unusable after an earlier CUDA failure: {p}"
            )));
        }
        // Another library may have made its own context current on this thread.
        self.ctx
            .bind_to_thread()
            .map_err(cuda("bind the CUDA context"))?;
        match self.options.mode {
            FillMode::Device => self.step_device(input, agreed),
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

/// Pinned memory for many snapshots taken without synchronizing
/// ([`CudaBackend::snapshot_into`]).
pub struct SnapshotRing {
    ptr: *mut u8,
    stride: usize,
    count: usize,
    infos: Vec<StepInfo>,
    _pinned: PinnedHostSlice<u8>,
}

impl SnapshotRing {
    /// Snapshots it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Snapshot `index` as a view, after waiting for `backend`'s stream (so every
    /// enqueued snapshot copy has landed).
    pub fn view<'a, D: Dims>(
        &'a self,
        backend: &mut CudaBackend,
        dims: &D,
        index: usize,
    ) -> Result<MetadataView<'a>, BackendError> {
        backend.synchronize()?;
        let info = self
            .infos
            .get(index)
            .ok_or_else(|| BackendError::Cuda(format!("no snapshot {index}")))?;
        // SAFETY: snapshot `index` lies inside the pinned allocation (index < count), and
        // the stream that writes it is idle.
        let bytes = unsafe {
            std::slice::from_raw_parts(self.ptr.add(index * self.stride), dims.total_bytes())
        };
        Ok(MetadataView::from_parts(dims, bytes, info))
    }
}
