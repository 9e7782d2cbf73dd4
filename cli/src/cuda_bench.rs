//! `attention-layout bench --backend cuda`: per scenario, host fill vs device fill, graph
//! vs eager — the median latency from the host's step call until the metadata is on the
//! device (step, then a stream synchronize, on a wall clock), the pipelined cost per step
//! (steps submitted back to back, one synchronize at the end), and the bytes copied per
//! step; then the kernels' compile times (cold, disk cache, memory cache, module load).
//!
//! Steps are driven like an engine that owns its request table: a stable resident row per
//! request and, per step, the block-table changes since the previous step (the first step
//! carries every block). The five scenarios of the core issue alternate a step with its
//! decode rows one token later; the long-context variants grow or replace requests every
//! step, so the cost per step can be read against what changed.

use std::io::Write;
use std::time::Instant;

use attention_layout_codegen::Geometry;
use attention_layout_codegen::emit_cuda;

use crate::bench::quantile_of;
use crate::scenarios::{self, Driver, Scenario, SteadyEngine, SteadyScenario};
use attention_layout::backend::MetadataBackend;
use attention_layout::cuda::compile::{self, CompileOptions};
use attention_layout::cuda::{CudaBackend, CudaOptions, FillMode, probe};
use attention_layout::dims::RuntimeDims;
use attention_layout::step::{RequestRow, StepInput};

/// What `measure` drives: an engine-like source of steps.
trait Steps {
    /// Advances to the next step (outside the timed region, except in the pipelined run).
    fn advance(&mut self);
    /// The step's rows.
    fn rows(&self) -> Vec<RequestRow<'_>>;
    /// The step over `rows`.
    fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a>;
}

impl Steps for Driver {
    fn advance(&mut self) {
        Driver::advance(self);
    }
    fn rows(&self) -> Vec<RequestRow<'_>> {
        Driver::rows(self)
    }
    fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        Driver::input(self, rows)
    }
}

// ---- Steady decode steps (issue 11) ---------------------------------------------------
//
// The steady scenarios of `scenarios::steady()` (the one list the CPU benchmark uses too),
// driven by their `SteadyEngine`: a `BatchState` whose decode-only steps end through
// prepare / commit_sampled / resolve, as an engine that schedules asynchronously ends them.

/// Device fill with graphs, with and without delta steps, with the small images in the
/// kernels' parameters (`CudaOptions::param_images`), and eagerly; the host fill on the
/// device with graphs: each on the same steady steps. (mode, graphs, delta steps,
/// parameter images, name.)
fn steady_configs() -> [(FillMode, bool, bool, bool, &'static str); 5] {
    [
        (
            FillMode::Device,
            true,
            true,
            false,
            "device / graph / delta",
        ),
        (
            FillMode::Device,
            true,
            true,
            true,
            "device / graph / params",
        ),
        (
            FillMode::Device,
            true,
            false,
            false,
            "device / graph / full",
        ),
        (
            FillMode::Device,
            false,
            true,
            false,
            "device / eager / delta",
        ),
        (FillMode::Host, true, false, false, "host fill / graph"),
    ]
}

/// Ends the engine's step; a reseeded engine starts a fresh table, so the backend forgets
/// its residency.
fn advance_engine(engine: &mut SteadyEngine, backend: &mut CudaBackend) -> Result<(), String> {
    if engine.advance()?.reseeded {
        backend.reset_residency();
    }
    Ok(())
}

/// [`measure`] for a steady scenario: the synchronized latency of the backend's step, and
/// the pipelined cost of whole engine steps (build, backend step, prepare / commit /
/// resolve) submitted back to back.
fn measure_steady(
    scenario: &SteadyScenario,
    options: CudaOptions,
    steps: usize,
) -> Result<Measurement, String> {
    let mut engine = SteadyEngine::new(scenario)?;
    let dims = engine.dims()?;
    let mut backend = CudaBackend::new(dims, options).map_err(|e| e.to_string())?;
    let warmup = (steps / 10).clamp(10, 500);
    for _ in 0..warmup {
        engine.with_step_origin(|input, origin| {
            backend
                .step_with_origin(input, origin)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        advance_engine(&mut engine, &mut backend)?;
    }
    backend.synchronize().map_err(|e| e.to_string())?;
    let mut lat = Vec::with_capacity(steps);
    let mut bytes = Vec::with_capacity(steps);
    let (mut graphed, mut delta) = (0usize, 0usize);
    for _ in 0..steps {
        let dt = engine.with_step_origin(|input, origin| {
            let t0 = Instant::now();
            backend
                .step_with_origin(input, origin)
                .map_err(|e| e.to_string())?;
            backend.synchronize().map_err(|e| e.to_string())?;
            Ok::<_, String>(t0.elapsed().as_secs_f64() * 1e6)
        })?;
        lat.push(dt);
        bytes.push(backend.bytes_copied_last_step() as f64);
        graphed += usize::from(backend.last_step_graphed());
        delta += usize::from(backend.last_staged().delta);
        advance_engine(&mut engine, &mut backend)?;
    }
    let mut enqueue = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for _ in 0..steps {
        let dt = engine.with_step_origin(|input, origin| {
            let t1 = Instant::now();
            backend
                .step_with_origin(input, origin)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(t1.elapsed().as_secs_f64() * 1e6)
        })?;
        enqueue.push(dt);
        advance_engine(&mut engine, &mut backend)?;
    }
    backend.synchronize().map_err(|e| e.to_string())?;
    let pipelined_us = t0.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
    Ok(Measurement::of(
        Samples {
            lat,
            bytes,
            enqueue,
        },
        pipelined_us,
        graphed,
        delta,
        steps,
    ))
}

fn bench_steady(
    out: &mut dyn Write,
    scenario: &SteadyScenario,
    steps: usize,
) -> Result<(), String> {
    for (mode, graphs, delta_steps, param_images, name) in steady_configs() {
        let options = CudaOptions {
            mode,
            graphs,
            delta_steps,
            param_images,
            ..CudaOptions::default()
        };
        let m = measure_steady(scenario, options, steps)?;
        writeln!(
            out,
            "{:<44} {name:<24} {:>9.2} {:>9.2} {:>10.2} {:>8.2} {:>8} {:>8} {:>6.0}%",
            scenario.name,
            m.median_us,
            m.p99_us,
            m.pipelined_us,
            m.enqueue_us,
            m.bytes,
            m.delta_share_pct(),
            m.graphed * 100.0
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

// ---- end of the steady section --------------------------------------------------------

/// One measured configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Median of step + synchronize, microseconds.
    pub median_us: f64,
    /// 99th percentile of step + synchronize, microseconds.
    pub p99_us: f64,
    /// Mean per step with steps submitted back to back, microseconds.
    pub pipelined_us: f64,
    /// Median of the backend's step call alone in that back-to-back run (the host's
    /// enqueue: plan, staging, copy and launch), microseconds.
    pub enqueue_us: f64,
    /// Median bytes copied host-to-device per step.
    pub bytes: usize,
    /// Share of timed steps that replayed a graph.
    pub graphed: f64,
    /// Share of timed steps staged as delta steps (device fill).
    pub delta: f64,
}

/// The per-step samples of one measured configuration.
struct Samples {
    /// Step + synchronize, microseconds.
    lat: Vec<f64>,
    /// Bytes copied host-to-device.
    bytes: Vec<f64>,
    /// The step call alone in the back-to-back run, microseconds.
    enqueue: Vec<f64>,
}

impl Measurement {
    /// The figures of `steps` timed steps: their samples, the back-to-back mean, and how
    /// many replayed a graph and were staged as delta steps.
    fn of(mut s: Samples, pipelined_us: f64, graphed: usize, delta: usize, steps: usize) -> Self {
        let share = |k: usize| k as f64 / steps.max(1) as f64;
        Self {
            median_us: quantile_of(&mut s.lat, 0.5),
            p99_us: quantile_of(&mut s.lat, 0.99),
            pipelined_us,
            enqueue_us: quantile_of(&mut s.enqueue, 0.5),
            bytes: quantile_of(&mut s.bytes, 0.5) as usize,
            graphed: share(graphed),
            delta: share(delta),
        }
    }

    /// [`delta`](Self::delta) in percent, rounded, as text.
    fn delta_share_pct(&self) -> String {
        format!("{:.0}%", self.delta * 100.0)
    }
}

fn measure(
    dims: &RuntimeDims,
    options: CudaOptions,
    steps: usize,
    drv: &mut dyn Steps,
) -> Result<Measurement, String> {
    let mut backend = CudaBackend::new(dims.clone(), options).map_err(|e| e.to_string())?;
    let warmup = (steps / 10).clamp(10, 500);
    for _ in 0..warmup {
        drv.advance();
        let rows = drv.rows();
        backend.step(&drv.input(&rows)).map_err(|e| e.to_string())?;
    }
    backend.synchronize().map_err(|e| e.to_string())?;
    let mut lat = Vec::with_capacity(steps);
    let mut bytes = Vec::with_capacity(steps);
    let mut graphed = 0usize;
    let mut delta = 0usize;
    for _ in 0..steps {
        drv.advance();
        let rows = drv.rows();
        let input = drv.input(&rows);
        let t0 = Instant::now();
        backend.step(&input).map_err(|e| e.to_string())?;
        backend.synchronize().map_err(|e| e.to_string())?;
        lat.push(t0.elapsed().as_secs_f64() * 1e6);
        bytes.push(backend.bytes_copied_last_step() as f64);
        graphed += usize::from(backend.last_step_graphed());
        delta += usize::from(backend.last_staged().delta);
    }
    // Pipelined: the same steps without a synchronize each (inputs prepared up front
    // would need owned copies of every step; preparing inside the loop is host work an
    // engine does too).
    let mut enqueue = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for _ in 0..steps {
        drv.advance();
        let rows = drv.rows();
        let input = drv.input(&rows);
        let t1 = Instant::now();
        backend.step(&input).map_err(|e| e.to_string())?;
        enqueue.push(t1.elapsed().as_secs_f64() * 1e6);
    }
    backend.synchronize().map_err(|e| e.to_string())?;
    let pipelined_us = t0.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
    Ok(Measurement::of(
        Samples {
            lat,
            bytes,
            enqueue,
        },
        pipelined_us,
        graphed,
        delta,
        steps,
    ))
}

fn configs() -> [(FillMode, bool, &'static str); 4] {
    [
        (FillMode::Host, false, "host fill / eager"),
        (FillMode::Host, true, "host fill / graph"),
        (FillMode::Device, false, "device fill / eager"),
        (FillMode::Device, true, "device fill / graph"),
    ]
}

fn bench_one(
    out: &mut dyn Write,
    label: &str,
    s: &Scenario,
    steps: usize,
    grow: usize,
    replace: usize,
) -> Result<(), String> {
    let g = Geometry::new(&s.spec).map_err(|e| e.to_string())?;
    let dims = RuntimeDims::new(g);
    for (mode, graphs, name) in configs() {
        let options = CudaOptions {
            mode,
            graphs,
            ..CudaOptions::default()
        };
        let mut drv = Driver::new(s, &dims, grow, replace);
        let m = measure(&dims, options, steps, &mut drv)?;
        writeln!(
            out,
            "{label:<44} {name:<20} {:>9.2} {:>9.2} {:>10.2} {:>8.2} {:>10} {:>6.0}%",
            m.median_us,
            m.p99_us,
            m.pipelined_us,
            m.enqueue_us,
            m.bytes,
            m.graphed * 100.0
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the GPU benchmark, writing a report to `out`: every scenario and row whose name
/// contains `filter` (all without one; the long-context rows are named `long-context: ...`,
/// the compile times `compile <scenario>`: [`scenarios::gpu_only_rows`]).
pub fn run(steps: usize, filter: Option<&str>, out: &mut dyn Write) -> Result<(), String> {
    let wanted = |name: &str| filter.is_none_or(|f| name.contains(f));
    let device = probe(0).map_err(|e| e.to_string())?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    w(out, format!("GPU benchmark on {device}"))?;
    w(
        out,
        format!(
            "latency = host step call until the metadata is on the device (step + stream synchronize), \
             median and 99th percentile (p99) of {steps} steps after warm-up; pipelined = mean per step, {steps} steps \
             submitted back to back and one synchronize; enqueue = median of the backend's step call alone in that run; \
             bytes = host-to-device bytes per step (median); \
             graph = share of steps replayed from a graph"
        ),
    )?;
    w(
        out,
        format!(
            "{:<44} {:<20} {:>9} {:>9} {:>10} {:>8} {:>10} {:>7}",
            "scenario", "mode", "median µs", "p99 µs", "pipelined", "enqueue", "bytes", "graph"
        ),
    )?;
    for s in scenarios::all().into_iter().filter(|s| wanted(s.name)) {
        bench_one(out, s.name, &s, steps, 0, 0)?;
    }
    // Long context: the cost per step follows what changed, not the 8 MB table.
    let long = scenarios::long_context();
    let long_steps = steps.min(2000);
    for (label, grow, replace) in scenarios::LONG_CONTEXT_ROWS {
        if wanted(label) {
            bench_one(out, label, &long, long_steps, grow, replace)?;
        }
    }

    // Steady decode (issue 11): the same steps with and without delta steps.
    w(out, String::new())?;
    w(
        out,
        "steady decode (scenarios::steady, a BatchState through prepare / commit_sampled / \
         resolve): every row advances by its query length each step (about 1 row in B \
         crosses into a new block), -replace1: 1 % of the rows finish and are replaced each \
         step (their prompts a prefill row of the next step); pipelined = whole engine steps \
         back to back; delta = share of steps staged as delta steps"
            .to_owned(),
    )?;
    w(
        out,
        format!(
            "{:<44} {:<24} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7}",
            "scenario",
            "mode",
            "median µs",
            "p99 µs",
            "pipelined",
            "enqueue",
            "bytes",
            "delta",
            "graph"
        ),
    )?;
    for scenario in scenarios::steady().into_iter().filter(|s| wanted(s.name)) {
        bench_steady(out, &scenario, steps)?;
    }
    // Compile times, for the largest scenario layout (the hybrid mix) and the long-context one.
    let all = scenarios::all();
    let compile_rows: Vec<(String, &Scenario)> = scenarios::COMPILED
        .iter()
        .map(|&name| (scenarios::compile_row(name), name))
        .filter(|(row, _)| wanted(row))
        .map(|(row, name)| {
            let s = all.iter().chain([&long]).find(|s| s.name == name);
            s.map(|s| (row, s))
                .ok_or_else(|| format!("no benchmark scenario is named {name}"))
        })
        .collect::<Result<_, _>>()?;
    if compile_rows.is_empty() {
        return Ok(());
    }
    w(out, String::new())?;
    // Each layout with and without the parameter entry (`CudaOptions::param_images`):
    // what the option costs to compile, load and capture.
    let arch = compile::target_arch(device.compute_capability.0, device.compute_capability.1)
        .map_err(|e| e.to_string())?;
    let dir =
        std::env::temp_dir().join(format!("attention-layout-bench-ptx-{}", std::process::id()));
    let opts = |force, skip| CompileOptions {
        cache_dir: Some(dir.clone()),
        force_compile: force,
        skip_memory_cache: skip,
    };
    for (name, s) in &compile_rows {
        let g = Geometry::new(&s.spec).map_err(|e| e.to_string())?;
        for param_entries in [false, true] {
            let options = CudaOptions {
                param_images: param_entries,
                ..CudaOptions::default()
            };
            // The source the backend below compiles (the same options' entries).
            let source = emit_cuda::cuda_source_with(&g, options.emit_options());
            let (_, cold) =
                compile::compile(&source, &arch, &opts(true, true)).map_err(|e| e.to_string())?;
            let (_, disk) =
                compile::compile(&source, &arch, &opts(false, true)).map_err(|e| e.to_string())?;
            let (_, mem) =
                compile::compile(&source, &arch, &opts(false, false)).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&dir);
            let backend = CudaBackend::new(RuntimeDims::new(g.clone()), options)
                .map_err(|e| e.to_string())?;
            let r = backend.report();
            w(
                out,
                format!(
                    "{}{} ({} buckets, {} KB of CUDA C, {} KB of PTX, {arch}): cold {:.1} ms (NVRTC {}), \
                     disk cache {:.2} ms, memory cache {:.3} ms; module load {:.1} ms; warm-up + capture of {} graphs {:.1} ms",
                    name,
                    if param_entries {
                        ", with the parameter entry"
                    } else {
                        ""
                    },
                    g.buckets.len(),
                    source.len() / 1024,
                    cold.ptx_bytes / 1024,
                    cold.seconds * 1e3,
                    cold.nvrtc,
                    disk.seconds * 1e3,
                    mem.seconds * 1e3,
                    r.load_seconds * 1e3,
                    r.graphs,
                    r.capture_seconds * 1e3
                ),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "Test code: a panic is a failed test.")]

    use super::*;
    use attention_layout::devfill::StagingBuilder;
    use attention_layout::fill::{self, FillState};

    /// Stages `steps` steps of a steady scenario's engine with the device fill's staging
    /// builder (no GPU needed); returns (delta steps, sorted bytes, finished rows).
    fn stage(name: &str, steps: usize) -> (usize, Vec<usize>, usize) {
        let scenario = scenarios::steady()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        let mut engine = SteadyEngine::new(&scenario).unwrap();
        let dims = engine.dims().unwrap();
        let mut b = StagingBuilder::new(&dims);
        let mut state = FillState::new(&dims);
        let mut buf = vec![0u128; b.capacity() / 16 + 1];
        let (mut delta, mut bytes, mut finished) = (0, Vec::new(), 0);
        for _ in 0..steps {
            let staged = engine.with_step(|input| {
                let plan = fill::plan_step(&dims, input, &mut state).unwrap();
                b.build(&plan, bytemuck::cast_slice_mut(&mut buf)).unwrap()
            });
            delta += usize::from(staged.delta);
            bytes.push(staged.bytes);
            let a = engine.advance().unwrap();
            finished += a.finished;
            if a.reseeded {
                b.reset();
                state = FillState::new(&dims);
            }
        }
        bytes.sort_unstable();
        (delta, bytes, finished)
    }

    #[test]
    fn the_steady_bench_steps_are_delta_steps_of_a_few_hundred_bytes() {
        for model in ["mha", "hybrid"] {
            let (delta, bytes, _) = stage(&format!("{model}-256-decode-steady"), 3000);
            // Every step after the first of a table advances every row.
            assert!(delta >= 2990, "{model}: {delta} delta steps of 3000");
            // About 256 / B = 4 rows cross into a new block per step: the header, their
            // patches and changes (a full step of 256 decode rows sends 4,208 bytes
            // without token ids).
            let median = bytes[bytes.len() / 2];
            assert!(
                median <= 256,
                "{model}: median {median} bytes (min {}, max {})",
                bytes[0],
                bytes[bytes.len() - 1]
            );
            let (_, bytes, finished) = stage(&format!("{model}-256-decode-steady-replace1"), 300);
            assert!(
                finished >= 2 * 299,
                "{model} replace1: {finished} rows finished"
            );
            let median = bytes[bytes.len() / 2];
            assert!(median < 6256, "{model} replace1: median {median} bytes");
        }
    }
}
