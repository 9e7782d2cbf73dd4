//! Host-fill timing for `attention-layout bench`: each scenario's step is built many
//! times, alternating with a copy whose decode rows advanced one token (as in a real
//! decode loop), and every step is timed on its own.

use std::time::Instant;

use attention_layout_codegen::Geometry;

use crate::scenarios::{Scenario, SteadyEngine, SteadyScenario};
use attention_layout::backend::{CpuBackend, MetadataBackend};
use attention_layout::dims::RuntimeDims;
use attention_layout::metadata::HostMetadata;
use attention_layout::step::{Phase, RequestRow, StepInput};

/// Timing of one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Scenario name.
    pub name: &'static str,
    /// Steps timed.
    pub steps: usize,
    /// Median per-step time, microseconds.
    pub median_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Tokens per step.
    pub tokens: u32,
    /// Whether a graph bucket matched.
    pub graphed: bool,
    /// Bytes of the coalesced buffer.
    pub buffer_bytes: usize,
}

/// Most steps `bench` times per scenario: one `f64` sample each, 80 MB at the cap.
pub const MAX_STEPS: usize = 10_000_000;

/// Checks a step count for [`time_host_fill`] and the GPU benchmark: `1 ..= MAX_STEPS`.
pub fn check_steps(steps: usize) -> Result<(), String> {
    if (1..=MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(format!(
            "steps must lie in [1, {MAX_STEPS}] (one timing sample per step), got {steps}"
        ))
    }
}

/// Times the host fill of `scenario` over `steps` steps (after a warm-up); `steps` must
/// pass [`check_steps`].
#[allow(
    clippy::indexing_slicing,
    reason = "`inputs[i & 1]` indexes a two-element array"
)]
pub fn time_host_fill(scenario: &Scenario, steps: usize) -> Result<Timing, String> {
    check_steps(steps)?;
    let geometry = Geometry::new(&scenario.spec).map_err(|e| e.to_string())?;
    let buffer_bytes = geometry.facts.total_bytes;
    let mut meta = HostMetadata::new(RuntimeDims::new(geometry));
    let rows = scenario.rows();
    let bs = scenario.spec.block_size as usize;
    // The same step one token later: decode rows advance by one position.
    let advanced: Vec<RequestRow<'_>> = rows
        .iter()
        .map(|r| {
            let mut r = *r;
            if r.phase == Phase::Decode
                && (r.kv_offset + 1 + r.query_length) as usize <= r.blocks.len() * bs
            {
                r.kv_offset += 1;
            }
            r
        })
        .collect();
    let ids = scenario.token_ids();
    let inputs = [
        StepInput {
            rows: &rows,
            token_ids: Some(&ids),
            intermediate: None,
            residency: None,
        },
        StepInput {
            rows: &advanced,
            token_ids: Some(&ids),
            intermediate: None,
            residency: None,
        },
    ];
    let info = *meta.fill(&inputs[0]).map_err(|e| e.to_string())?;
    for i in 0..steps.min(2000) {
        meta.fill(&inputs[i & 1]).map_err(|e| e.to_string())?;
    }
    let mut samples = Vec::with_capacity(steps);
    for i in 0..steps {
        let input = &inputs[i & 1];
        let t0 = Instant::now();
        let r = meta.fill(input);
        let dt = t0.elapsed();
        r.map_err(|e| e.to_string())?;
        samples.push(dt.as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| quantile(&samples, q);
    Ok(Timing {
        name: scenario.name,
        steps,
        median_us: pick(0.5),
        p99_us: pick(0.99),
        tokens: scenario.tokens(),
        graphed: info.graphed(),
        buffer_bytes,
    })
}

/// The `q` quantile of sorted samples (NaN when there are none).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The `q` quantile of unsorted samples (sorted here).
pub fn quantile_of(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    quantile(samples, q)
}

/// The median of unsorted samples (the breakdown examples' figure).
pub fn median(mut samples: Vec<f64>) -> f64 {
    quantile_of(&mut samples, 0.5)
}

/// Timing of one steady-decode scenario on the CPU backend.
#[derive(Debug, Clone, PartialEq)]
pub struct SteadyTiming {
    /// Scenario name.
    pub name: &'static str,
    /// Steps timed.
    pub steps: usize,
    /// `CpuBackend::step` (the residency-aware fill): median and 99th percentile, µs.
    pub median_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// The full host fill (`HostMetadata::fill`) of the same steps, in the same run:
    /// median, µs.
    pub full_median_us: f64,
    /// The engine's own step end (prepare or not, commit_sampled, resolve, replacements):
    /// median, µs.
    pub engine_median_us: f64,
    /// Steps that took the prepared path.
    pub prepared_steps: usize,
    /// Rows finished (and replaced) over the timed steps.
    pub finished_rows: usize,
}

impl SteadyTiming {
    /// Median of the residency-aware fill over the full fill's.
    pub fn ratio(&self) -> f64 {
        self.median_us / self.full_median_us
    }
}

/// Times a steady-decode scenario: each step is built by the scenario's engine, filled by
/// a `CpuBackend` (timed) and by the full host fill into other metadata (timed, the
/// comparison), and ended by the engine (timed apart). Every 64th step the two buffers
/// are compared byte for byte (an error if they differ). `steps` must pass
/// [`check_steps`]; 2,000 steps of warm-up come first.
pub fn time_steady(scenario: &SteadyScenario, steps: usize) -> Result<SteadyTiming, String> {
    check_steps(steps)?;
    let mut engine = SteadyEngine::new(scenario)?;
    let dims = engine.dims()?;
    let mut cpu = CpuBackend::new(dims.clone());
    let mut full = HostMetadata::new(dims);
    let warm_up = steps.min(2000);
    let mut fill = Vec::with_capacity(steps);
    let mut full_fill = Vec::with_capacity(steps);
    let mut engine_cost = Vec::with_capacity(steps);
    let mut prepared_steps = 0;
    let mut finished_rows = 0;
    for i in 0..warm_up + steps {
        let (dt, dt_full) = engine.with_step(|input| {
            let t0 = Instant::now();
            let r = cpu.step(input);
            let dt = t0.elapsed();
            let t1 = Instant::now();
            let f = full.fill(input).map(|_| ());
            let dt_full = t1.elapsed();
            r.map_err(|e| e.to_string())?;
            f.map_err(|e| e.to_string())?;
            Ok::<_, String>((dt, dt_full))
        })?;
        if i % 64 == 0 && cpu.metadata().bytes() != full.bytes() {
            return Err(format!(
                "{}: step {i}: the CPU backend's buffer differs from the full fill's",
                scenario.name
            ));
        }
        let t0 = Instant::now();
        let a = engine.advance()?;
        let dt_engine = t0.elapsed();
        if a.reseeded {
            cpu.reset_residency();
        }
        if i >= warm_up {
            fill.push(dt.as_secs_f64() * 1e6);
            full_fill.push(dt_full.as_secs_f64() * 1e6);
            if !a.reseeded {
                engine_cost.push(dt_engine.as_secs_f64() * 1e6);
            }
            prepared_steps += usize::from(a.prepared);
            finished_rows += a.finished;
        }
    }
    for v in [&mut fill, &mut full_fill, &mut engine_cost] {
        v.sort_by(f64::total_cmp);
    }
    Ok(SteadyTiming {
        name: scenario.name,
        steps,
        median_us: quantile(&fill, 0.5),
        p99_us: quantile(&fill, 0.99),
        full_median_us: quantile(&full_fill, 0.5),
        engine_median_us: quantile(&engine_cost, 0.5),
        prepared_steps,
        finished_rows,
    })
}

/// Resolves `bench --backend`: `Ok((true, note))` runs the GPU benchmark, `Ok((false,
/// note))` the host-fill benchmark (`note` says why), `Err` when CUDA was asked for and
/// cannot be used (a message, not a panic).
pub fn resolve_backend(
    kind: attention_layout::backend::BackendKind,
) -> Result<(bool, String), String> {
    use attention_layout::backend::BackendKind;
    match (kind, gpu_available()) {
        (BackendKind::Cpu, _) => Ok((false, "backend: cpu (asked for)".to_owned())),
        (BackendKind::Cuda, Ok(device)) => Ok((true, format!("backend: cuda on {device}"))),
        (BackendKind::Cuda, Err(why)) => Err(format!("CUDA backend unavailable: {why}")),
        (BackendKind::Auto, Ok(device)) => Ok((
            true,
            format!("backend: cuda on {device} (auto: CUDA found)"),
        )),
        (BackendKind::Auto, Err(why)) => Ok((false, format!("backend: cpu (auto: {why})"))),
    }
}

#[cfg(feature = "cuda")]
fn gpu_available() -> Result<String, String> {
    attention_layout::cuda::probe(0)
        .map(|d| d.to_string())
        .map_err(|e| match e {
            attention_layout::backend::BackendError::CudaUnavailable(why) => why,
            other => other.to_string(),
        })
}

#[cfg(not(feature = "cuda"))]
fn gpu_available() -> Result<String, String> {
    Err("this build has no CUDA support (build with `--features cuda`)".to_owned())
}

/// The GPU benchmark (`bench --backend cuda`), or why this build cannot run it.
/// `filter`: only scenarios and rows whose name contains it (with its own rows:
/// [`scenarios::gpu_only_rows`](crate::scenarios::gpu_only_rows)).
pub fn run_gpu(
    steps: usize,
    filter: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_bench::run(steps, filter, out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (steps, filter, out);
        gpu_available().map(|_| ())
    }
}
