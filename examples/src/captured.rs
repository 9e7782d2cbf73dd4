//! The metadata fill as the first node of an engine's own CUDA graph (`cuda` feature).
//!
//! An engine that captures its forward pass wants the fill inside that graph, on its
//! stream. This program does what such an engine does with
//! [`StreamFill`](attention_layout::cuda::StreamFill): it captures *fill + a consumer
//! kernel* as one graph on a stream of its own, then, step after step of a steady decode
//! workload (256 decode rows advancing, crossing into new KV blocks, a few finishing and
//! being replaced), writes the step's staging (`prepare`) and replays the graph.
//!
//! The consumer is the first thing a KV-append kernel computes: each token's cache slot,
//! `token_to_block_idx × B + token_to_local_position_within_kv_block`, and each request's
//! KV length, read from the metadata buffer at the layout's offsets (the facts header).
//! Every step is checked against the CPU reference: the whole metadata buffer against the
//! host fill, and the consumer's output against the same computation on the host fill's
//! buffer.
//!
//! It prints the fill node's GPU time (device events around replays of a graph that holds
//! only the fill, and the difference between *fill + consumer* and *consumer alone*), the
//! host cost of preparing the staging, and the bytes the kernel reads over the bus.

use std::time::Instant;

use attention_layout::BatchState;
use attention_layout::codegen::emit_cuda;
use attention_layout::cuda::{CudaBackend, CudaOptions, Snapshot};
use attention_layout::step::{BlockChange, RequestRow, Residency, StepInput};
use attention_layout::{Dims, Field, Geometry, HostMetadata, LayoutSpec, RuntimeDims};
use cudarc::driver::{
    CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg, sys,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use std::sync::Arc;

use crate::Result;

/// The layout of the core benchmark's 256-decode scenario: MHA, R = 256, T = 4096,
/// S = 8192, B = 64.
pub const LAYOUT: &str = "name = \"captured-fill\"\nmodel = \"mha\"\nmax_requests = 256\nmax_tokens = 4096\nmax_seq_len = 8192\nblock_size = 64\n";

/// Decode rows of the workload.
pub const ROWS: u32 = 256;

const CONSUMER: &str = r#"
extern "C" __global__ void kv_slots(const al_u8* meta, al_i64* slots, al_u32* kv_lengths) {
  const al_u32 i = blockIdx.x * blockDim.x + threadIdx.x;
  const al_i64* block = reinterpret_cast<const al_i64*>(meta + AL_OFF_TOKEN_TO_BLOCK_IDX);
  const al_i32* local = reinterpret_cast<const al_i32*>(meta + AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK);
  const al_u32* kv = reinterpret_cast<const al_u32*>(meta + AL_OFF_MHA_KV_SEQ_LENGTHS);
  if (i < AL_CAP_TOKEN_TO_BLOCK_IDX) slots[i] = block[i] * (al_i64)AL_BLOCK_SIZE + local[i];
  if (i < AL_CAP_MHA_KV_SEQ_LENGTHS) kv_lengths[i] = kv[i];
}
"#;

/// A steady decode workload over a stable set of resident rows: every row advances by
/// one token per step (a new block when it crosses one), and every `replace_every` steps
/// one row finishes: the last row moves into its place and a new request (context of 256
/// tokens) is appended, as Megatron fills holes.
struct Workload {
    order: Vec<u32>,
    kv: Vec<u32>,
    blocks: Vec<Vec<i32>>,
    changes: Vec<BlockChange>,
    free: Vec<i32>,
    block_size: u32,
    max_seq_len: u32,
    step: u64,
    replace_every: u64,
}

impl Workload {
    fn new(dims: &RuntimeDims, rows: u32, replace_every: u64) -> Self {
        let mut w = Self {
            order: (0..rows).collect(),
            kv: (0..rows)
                .map(|i| 256 + (i.wrapping_mul(2_654_435_761) >> 8) % 5888)
                .collect(),
            blocks: vec![Vec::new(); rows as usize],
            changes: Vec::new(),
            free: (0..dims.dummy_block()).rev().collect(),
            block_size: dims.block_size() as u32,
            max_seq_len: dims.max_seq_len() as u32,
            step: 0,
            replace_every,
        };
        for r in 0..rows as usize {
            w.cover(r);
        }
        w
    }

    fn cover(&mut self, r: usize) {
        let (Some(&kv), Some(blocks)) = (self.kv.get(r), self.blocks.get_mut(r)) else {
            return;
        };
        while (blocks.len() as u32) * self.block_size < kv + 1 {
            let Some(id) = self.free.pop() else { return };
            self.changes.push(BlockChange {
                resident_row: r as u32,
                index: blocks.len() as u32,
                block: id,
            });
            blocks.push(id);
        }
    }

    fn replace(&mut self, i: usize) {
        if i >= self.order.len() {
            return;
        }
        let r = self.order.swap_remove(i) as usize;
        if let Some(blocks) = self.blocks.get_mut(r) {
            for (j, id) in blocks.drain(..).enumerate().rev() {
                self.changes.push(BlockChange {
                    resident_row: r as u32,
                    index: j as u32,
                    block: -1,
                });
                self.free.push(id);
            }
        }
        if let Some(kv) = self.kv.get_mut(r) {
            *kv = 256;
        }
        self.cover(r);
        self.order.push(r as u32);
    }

    /// The next step's changes and lengths (after the first step, which is the set-up).
    fn advance(&mut self) {
        self.step += 1;
        if self.step == 1 {
            return;
        }
        self.changes.clear();
        for &r in &self.order {
            if let Some(kv) = self.kv.get_mut(r as usize) {
                *kv += 1;
            }
        }
        let mut i = 0;
        while i < self.order.len() {
            let r = self.order.get(i).copied().unwrap_or(0) as usize;
            if self.kv.get(r).is_some_and(|&kv| kv + 1 > self.max_seq_len) {
                self.replace(i);
            } else {
                i += 1;
            }
        }
        if self.replace_every > 0 && self.step.is_multiple_of(self.replace_every) {
            let i = (self.step.wrapping_mul(2_654_435_761) >> 5) as usize % self.order.len().max(1);
            self.replace(i);
        }
        for k in 0..self.order.len() {
            let r = self.order.get(k).copied().unwrap_or(0) as usize;
            self.cover(r);
        }
    }

    fn rows(&self) -> Vec<RequestRow<'_>> {
        self.order
            .iter()
            .filter_map(|&r| {
                let r = r as usize;
                Some(RequestRow::decode(
                    1,
                    *self.kv.get(r)?,
                    self.blocks.get(r)?,
                    -1,
                ))
            })
            .collect()
    }

    fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: None,
            intermediate: None,
            residency: Some(Residency {
                resident_rows: &self.order,
                changes: &self.changes,
            }),
        }
    }
}

/// The consumer kernel and its output buffers.
struct Consumer {
    function: CudaFunction,
    slots: CudaSlice<i64>,
    kv_lengths: CudaSlice<u32>,
    tokens: usize,
    requests: usize,
}

impl Consumer {
    fn new(backend: &CudaBackend, arch: &'static str) -> Result<Self> {
        let g = backend.dims().geometry();
        let src = format!("{}{CONSUMER}", emit_cuda::facts_header(g));
        let ptx = compile_ptx_with_opts(
            src,
            CompileOptions {
                arch: Some(arch),
                name: Some("kv_slots.cu".to_owned()),
                ..Default::default()
            },
        )
        .map_err(|e| format!("NVRTC failed on the consumer: {e}"))?;
        let stream = backend.stream();
        let module = stream.context().load_module(ptx)?;
        let function = module.load_function("kv_slots")?;
        let tokens = backend.dims().max_tokens();
        let requests = backend.dims().max_requests();
        let slots = stream.alloc_zeros::<i64>(tokens)?;
        let kv_lengths = stream.alloc_zeros::<u32>(requests)?;
        // The buffers are used on the engine's stream (the backend disabled cudarc's
        // cross-stream event tracking): their zeroing finishes first.
        stream.synchronize()?;
        Ok(Self {
            function,
            slots,
            kv_lengths,
            tokens,
            requests,
        })
    }

    /// Launches the consumer on `stream`, reading the metadata buffer at `meta`.
    fn launch(&mut self, stream: &Arc<CudaStream>, meta: u64) -> Result<()> {
        let n = self.tokens.max(self.requests) as u32;
        let mut b = stream.launch_builder(&self.function);
        b.arg(&meta).arg(&mut self.slots).arg(&mut self.kv_lengths);
        // SAFETY: the arguments match `kv_slots(const al_u8*, al_i64*, al_u32*)`; `meta` is
        // a live metadata buffer of this layout (the kernel reads two fields at their
        // offsets, within their capacities), `slots` holds the token capacity and
        // `kv_lengths` the request capacity, which is what the kernel indexes.
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (n.div_ceil(256), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            })
        }?;
        Ok(())
    }

    /// The outputs, after waiting for `stream`.
    fn read(&self, stream: &Arc<CudaStream>) -> Result<(Vec<i64>, Vec<u32>)> {
        stream.synchronize()?;
        Ok((
            stream.clone_dtoh(&self.slots)?,
            stream.clone_dtoh(&self.kv_lengths)?,
        ))
    }
}

/// The consumer's output computed on the host fill's buffer (the CPU reference).
fn expected(
    cpu: &HostMetadata<RuntimeDims>,
    tokens: usize,
    requests: usize,
) -> Result<(Vec<i64>, Vec<u32>)> {
    let dims = cpu.dims();
    let bytes = cpu.bytes();
    let read = |f: Field, i: usize, size: usize| -> Result<&[u8]> {
        let at = dims.field_offset(f) + i * size;
        bytes
            .get(at..at + size)
            .ok_or_else(|| format!("{f:?}[{i}] outside the buffer").into())
    };
    let mut slots = Vec::with_capacity(tokens);
    for t in 0..tokens {
        let block = i64::from_le_bytes(read(Field::TokenToBlockIdx, t, 8)?.try_into()?);
        let local =
            i32::from_le_bytes(read(Field::TokenToLocalPositionWithinKvBlock, t, 4)?.try_into()?);
        slots.push(block * dims.block_size() as i64 + i64::from(local));
    }
    let mut kv = Vec::with_capacity(requests);
    for a in 0..requests {
        kv.push(u32::from_le_bytes(
            read(Field::MhaKvSeqLengths, a, 4)?.try_into()?,
        ));
    }
    Ok((slots, kv))
}

/// Two device events on a stream: the GPU time of what a launch enqueues between them.
struct Timer {
    stream: Arc<CudaStream>,
    start: CudaEvent,
    end: CudaEvent,
}

impl Timer {
    fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let event = || {
            stream
                .context()
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        };
        Ok(Self {
            stream: stream.clone(),
            start: event()?,
            end: event()?,
        })
    }

    /// Microseconds of GPU time between the events around `launch` (waited for).
    fn time(&self, launch: impl FnOnce() -> Result<()>) -> Result<f64> {
        self.start.record(&self.stream)?;
        launch()?;
        self.end.record(&self.stream)?;
        self.end.synchronize()?;
        Ok(f64::from(self.start.elapsed_ms(&self.end)?) * 1e3)
    }
}

/// Compares step `what`'s metadata (`snap`) with the CPU reference and, given, the
/// consumer's output with what it computes on the reference; records the first mismatch
/// in `report` and counts the check.
fn check_step(
    report: &mut Report,
    what: &str,
    cpu: &HostMetadata<RuntimeDims>,
    snap: &Snapshot,
    consumer: Option<(&Consumer, &Arc<CudaStream>)>,
) -> Result<()> {
    report.checked += 1;
    if report.mismatch.is_some() {
        return Ok(());
    }
    if let Some(d) = cpu
        .view()
        .first_difference_with(&snap.view(cpu.dims()), true)
    {
        report.mismatch = Some(format!("{what}: metadata: {d}"));
        return Ok(());
    }
    if let Some((consumer, stream)) = consumer {
        let (slots, kv) = consumer.read(stream)?;
        let (want_slots, want_kv) = expected(cpu, consumer.tokens, consumer.requests)?;
        if slots != want_slots || kv != want_kv {
            report.mismatch = Some(format!("{what}: the consumer's output differs"));
        }
    }
    Ok(())
}

/// Captures `enqueue` on `stream` into a graph.
fn capture(
    stream: &Arc<CudaStream>,
    enqueue: impl FnOnce() -> Result<()>,
) -> Result<cudarc::driver::CudaGraph> {
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
    let enqueued = enqueue();
    let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
    enqueued?;
    let graph = graph?.ok_or("the capture produced no graph")?;
    graph.upload()?;
    Ok(graph)
}

/// The median of `v` (sorted in place); `launch_costs` reports its medians with it too.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What a run measured and checked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Steps replayed.
    pub steps: usize,
    /// Steps whose metadata and consumer output were compared with the CPU reference.
    pub checked: usize,
    /// The first mismatch, if any.
    pub mismatch: Option<String>,
    /// Median GPU time of a replay of the fill-only graph, microseconds.
    pub fill_gpu_us: f64,
    /// Median GPU time of a replay of the fill + consumer graph, microseconds.
    pub fill_and_consumer_gpu_us: f64,
    /// Median GPU time of a replay of the consumer-only graph, microseconds.
    pub consumer_gpu_us: f64,
    /// Median host time of `prepare` (plan + staging), microseconds.
    pub prepare_host_us: f64,
    /// Median staging bytes per step (what the kernel reads over the bus).
    pub bytes: usize,
    /// Share of steps staged as delta steps (`run_prepared`, `run_graph`: staged by
    /// `try_advance`).
    pub delta: f64,
    /// `run_graph`: share of steps whose image travelled in the kernel's parameters.
    pub in_params: f64,
}

/// The timed steps' measurements of a run, reduced to a [`Report`]'s medians and shares.
#[derive(Default)]
struct Samples {
    both: Vec<f64>,
    fill: Vec<f64>,
    consumer: Vec<f64>,
    prepare: Vec<f64>,
    bytes: Vec<f64>,
    /// Steps staged as delta steps (`run`) or by `try_advance` (the others).
    counted: usize,
    /// Steps whose image travelled in the kernel's parameters (`run_graph`).
    in_params: usize,
}

impl Samples {
    /// The GPU times of one step's three graphs: fill + consumer, fill, consumer.
    fn gpu(&mut self, both: f64, fill: f64, consumer: f64) {
        self.both.push(both);
        self.fill.push(fill);
        self.consumer.push(consumer);
    }

    /// The host side of one step: `prepare`'s time, the bytes staged, and whether it counts
    /// for [`Report::delta`].
    fn host(&mut self, prepare_us: f64, bytes: usize, counted: bool) {
        self.prepare.push(prepare_us);
        self.bytes.push(bytes as f64);
        self.counted += usize::from(counted);
    }

    /// `report` with the medians and shares of `steps` timed steps (a time no step took
    /// stays 0).
    fn finish(mut self, report: &mut Report, steps: usize) {
        let med = |v: &mut Vec<f64>| if v.is_empty() { 0.0 } else { median(v) };
        report.steps = steps;
        report.fill_and_consumer_gpu_us = med(&mut self.both);
        report.fill_gpu_us = med(&mut self.fill);
        report.consumer_gpu_us = med(&mut self.consumer);
        report.prepare_host_us = med(&mut self.prepare);
        report.bytes = med(&mut self.bytes) as usize;
        report.delta = self.counted as f64 / steps.max(1) as f64;
        report.in_params = self.in_params as f64 / steps.max(1) as f64;
    }
}

/// Runs `steps` steps of the workload through the captured graph, checking every
/// `check_every`-th step (and the first 64) against the CPU reference.
pub fn run(arch: &'static str, steps: usize, check_every: usize) -> Result<Report> {
    let spec = LayoutSpec::from_toml_str(LAYOUT, "captured-fill.toml")?;
    let dims = RuntimeDims::new(Geometry::new(&spec)?);
    // The backend compiles the fill kernels (and disables cudarc's event tracking, which
    // capture needs); the stream fills use its kernels with buffers of their own.
    let backend = CudaBackend::new(dims.clone(), CudaOptions::default())?;
    let stream = backend.stream().context().new_stream()?;
    let mut consumer = Consumer::new(&backend, arch)?;

    // Three graphs on the engine's stream: fill + consumer (the engine's), fill alone and
    // consumer alone (for the fill node's time). Each stream fill is captured once.
    let mut fill = backend.stream_fill()?;
    let mut fill_only = backend.stream_fill()?;
    let meta = fill.device_buffer();
    let both = capture(&stream, || {
        fill.enqueue_on(&stream)?;
        consumer.launch(&stream, meta)
    })?;
    let alone = capture(&stream, || Ok(fill_only.enqueue_on(&stream)?))?;
    let consumer_graph = capture(&stream, || consumer.launch(&stream, meta))?;

    let mut cpu = HostMetadata::new(dims.clone());
    let mut w = Workload::new(&dims, ROWS, 50);
    let mut w_alone = Workload::new(&dims, ROWS, 50);
    let timer = Timer::new(&stream)?;
    let mut report = Report::default();
    let mut samples = Samples::default();
    let warmup = 100;
    for k in 0..steps + warmup {
        w.advance();
        let rows = w.rows();
        let input = w.input(&rows);
        // The engine's graph: prepare (host), then one replay.
        let t0 = Instant::now();
        fill.prepare(&input)?;
        let prepare_us = t0.elapsed().as_secs_f64() * 1e6;
        let both_us = timer.time(|| Ok(both.launch()?))?;
        cpu.fill(&input)?;
        if k < 64 || k % check_every.max(1) == 0 {
            let snap = fill.download(&stream)?;
            let what = format!("step {k}");
            check_step(&mut report, &what, &cpu, &snap, Some((&consumer, &stream)))?;
        }
        // The fill alone (its own stream fill and workload), and the consumer alone.
        w_alone.advance();
        let rows = w_alone.rows();
        fill_only.prepare(&w_alone.input(&rows))?;
        let alone_us = timer.time(|| Ok(alone.launch()?))?;
        let consumer_us = timer.time(|| Ok(consumer_graph.launch()?))?;
        if k >= warmup {
            samples.gpu(both_us, alone_us, consumer_us);
            let staged = fill.last_staged();
            samples.host(prepare_us, staged.bytes, staged.delta);
        }
    }
    samples.finish(&mut report, steps);
    Ok(report)
}

/// [`run`]'s measurement of the fill alone with the steps a [`BatchState`] builds for an
/// async-scheduling engine (`prepare`, `commit_sampled`, `resolve` with every row
/// continuing): [`ROWS`] requests with contexts spread over `[256, 2304)` are prefilled
/// (untimed), then each decode step (at most 5,000) is prepared with its origin
/// (`StreamFill::prepare_with_origin`: a step that advances the one before is staged from
/// its changes alone) and replayed. Checks every `check_every`-th step (and the first 64)
/// against the CPU reference. Reports the fill's GPU time, the host cost of
/// `prepare_with_origin` (the state's building of the step input is the engine's and not
/// timed, as `run` does not time its workload's rows), the bytes and the share of steps
/// staged by `try_advance` (in `Report::delta`).
pub fn run_prepared(steps: usize, check_every: usize) -> Result<Report> {
    let spec = LayoutSpec::from_toml_str(LAYOUT, "captured-fill.toml")?;
    let dims = RuntimeDims::new(Geometry::new(&spec)?);
    let backend = CudaBackend::new(dims.clone(), CudaOptions::default())?;
    let stream = backend.stream().context().new_stream()?;
    let mut fill = backend.stream_fill()?;
    let graph = capture(&stream, || Ok(fill.enqueue_on(&stream)?))?;
    let mut cpu = HostMetadata::new(dims.clone());
    let timer = Timer::new(&stream)?;
    let mut report = Report::default();
    let mut samples = Samples::default();
    // One step: prepare (timed), replay (timed on the device), compare now and then.
    let mut step = |state: &mut BatchState, k: Option<usize>| -> Result<()> {
        let prepare_us = state.with_step_origin(|input, origin| -> Result<f64> {
            let t0 = Instant::now();
            fill.prepare_with_origin(input, origin)?;
            Ok(t0.elapsed().as_secs_f64() * 1e6)
        })?;
        let fill_us = timer.time(|| Ok(graph.launch()?))?;
        // The host reference fills every step (it keeps its own residency).
        state.with_step(|input| cpu.fill(input).map(|_| ()))?;
        if k.is_none_or(|k| k < 64 || k % check_every.max(1) == 0) {
            let snap = fill.download(&stream)?;
            check_step(
                &mut report,
                &format!("prepared step {k:?}"),
                &cpu,
                &snap,
                None,
            )?;
        }
        if let Some(k) = k
            && k >= 100
        {
            samples.fill.push(fill_us);
            let staged = fill.last_staged();
            samples.host(prepare_us, staged.bytes, staged.advanced);
        }
        Ok(())
    };
    let mut state = admitted(&dims)?;
    prefill(&mut state, &dims, |state| step(state, None))?;
    let mut ids = Vec::with_capacity(ROWS as usize);
    for k in 0..steps.min(5000) + 100 {
        step(&mut state, Some(k))?;
        end_decode_step(&mut state, &mut ids, k)?;
    }
    samples.finish(&mut report, steps.min(5000));
    Ok(report)
}

/// A batch state with [`ROWS`] requests admitted, contexts spread over `[256, 2304)` (no
/// request reaches `max_seq_len` in 5,000 decode steps).
fn admitted(dims: &RuntimeDims) -> Result<BatchState> {
    let mut state = BatchState::new(dims)?;
    let s = dims.max_seq_len() as u32;
    for i in 0..ROWS {
        let prompt = 256 + (i.wrapping_mul(2_654_435_761) >> 8) % 2048;
        state.admit(prompt, s - prompt)?;
    }
    Ok(state)
}

/// Prefills every request of `state` in steps of at most `max_tokens` tokens, each run
/// through `step` and committed, then schedules every request for decode.
fn prefill(
    state: &mut BatchState,
    dims: &RuntimeDims,
    mut step: impl FnMut(&mut BatchState) -> Result<()>,
) -> Result<()> {
    let budget = dims.max_tokens() as u32;
    let handles: Vec<_> = state.live().collect();
    let mut pending: std::collections::VecDeque<_> = handles
        .iter()
        .map(|&h| Ok((h, state.info(h)?.prompt_len)))
        .collect::<Result<_>>()?;
    while !pending.is_empty() {
        let mut left = budget;
        while let Some((h, remaining)) = pending.front_mut() {
            let chunk = (*remaining).min(left);
            state.schedule_prefill(*h, chunk)?;
            *remaining -= chunk;
            left -= chunk;
            if *remaining == 0 {
                pending.pop_front();
            }
            if left == 0 {
                break;
            }
        }
        step(state)?;
        state.commit_step(|_| 0)?;
    }
    for &h in &handles {
        state.schedule_decode(h)?;
    }
    Ok(())
}

/// Ends decode step `k` as an async-scheduling engine does: prepare the next step, commit
/// the sampled tokens, resolve with every row continuing.
fn end_decode_step(state: &mut BatchState, ids: &mut Vec<i64>, k: usize) -> Result<()> {
    state.prepare()?;
    ids.clear();
    ids.extend((0..i64::from(ROWS)).map(|i| i + k as i64));
    state.commit_sampled(ids, &[])?;
    state.resolve(&vec![true; ROWS as usize])?;
    Ok(())
}

/// [`run_prepared`]'s workload through [`FillGraph`](attention_layout::cuda::FillGraph)s:
/// the graph's fill node is pointed at each step before its launch, so a steady step's
/// image travels in the kernel's parameters and the node reads nothing over the bus. Two
/// graphs, each driven by its own batch state through the same steps: *fill + consumer*
/// (the engine's) and *fill alone*; plus *consumer alone*, for the fill node's time by
/// difference. Checks every `check_every`-th step (and the first 64) of the engine's graph
/// against the CPU reference: the metadata and the consumer's output. Reports the GPU
/// times, the host cost of `prepare_with_origin` (staging, and the update of the graph's
/// node), the bytes, the share staged by `try_advance` and the share with the image in
/// the parameters.
pub fn run_graph(arch: &'static str, steps: usize, check_every: usize) -> Result<Report> {
    let spec = LayoutSpec::from_toml_str(LAYOUT, "captured-fill.toml")?;
    let dims = RuntimeDims::new(Geometry::new(&spec)?);
    let backend = CudaBackend::new(dims.clone(), CudaOptions::default())?;
    let stream = backend.stream().context().new_stream()?;
    let mut consumer = Consumer::new(&backend, arch)?;
    let mut both = backend
        .stream_fill()?
        .capture(&stream, |s, meta| consumer.launch(s, meta))?;
    let mut alone = backend
        .stream_fill()?
        .capture(&stream, |_, _| Ok::<_, crate::Error>(()))?;
    let meta = both.device_buffer();
    let consumer_graph = capture(&stream, || consumer.launch(&stream, meta))?;
    let mut cpu = HostMetadata::new(dims.clone());
    let timer = Timer::new(&stream)?;
    let mut state = admitted(&dims)?;
    let mut state_alone = admitted(&dims)?;
    prefill(&mut state, &dims, |state| {
        both.prepare_batch(state)?;
        both.launch()?;
        // The host reference fills every step (it keeps its own residency).
        state.with_step(|input| cpu.fill(input).map(|_| ()))?;
        Ok(())
    })?;
    prefill(&mut state_alone, &dims, |state| {
        alone.prepare_batch(state)?;
        alone.launch()?;
        Ok(())
    })?;
    stream.synchronize()?;
    let mut report = Report::default();
    let mut samples = Samples::default();
    let mut ids = Vec::with_capacity(ROWS as usize);
    let warmup = 100;
    for k in 0..steps.min(5000) + warmup {
        let prepare_us = state.with_step_origin(|input, origin| -> Result<f64> {
            let t0 = Instant::now();
            both.prepare_with_origin(input, origin)?;
            Ok(t0.elapsed().as_secs_f64() * 1e6)
        })?;
        let both_us = timer.time(|| Ok(both.launch()?))?;
        state.with_step(|input| cpu.fill(input).map(|_| ()))?;
        if k < 64 || k % check_every.max(1) == 0 {
            let snap = both.download()?;
            let what = format!("fill graph step {k}");
            check_step(&mut report, &what, &cpu, &snap, Some((&consumer, &stream)))?;
        }
        alone.prepare_batch(&mut state_alone)?;
        let alone_us = timer.time(|| Ok(alone.launch()?))?;
        let consumer_us = timer.time(|| Ok(consumer_graph.launch()?))?;
        if k >= warmup {
            samples.gpu(both_us, alone_us, consumer_us);
            let staged = both.last_staged();
            samples.host(prepare_us, staged.bytes, staged.advanced);
            samples.in_params += usize::from(both.image_in_params());
        }
        end_decode_step(&mut state, &mut ids, k)?;
        end_decode_step(&mut state_alone, &mut ids, k)?;
    }
    samples.finish(&mut report, steps.min(5000));
    Ok(report)
}
