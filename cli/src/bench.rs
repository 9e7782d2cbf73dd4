//! Host-fill timing for `attention-layout bench`: each scenario's step is built many
//! times, alternating with a copy whose decode rows advanced one token (as in a real
//! decode loop), and every step is timed on its own.

use std::time::Instant;

use attention_layout_codegen::Geometry;

use crate::scenarios::Scenario;
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
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
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
pub fn run_gpu(steps: usize, out: &mut dyn std::io::Write) -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        crate::cuda_bench::run(steps, out)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (steps, out);
        gpu_available().map(|_| ())
    }
}
