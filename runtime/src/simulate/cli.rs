//! The `simulate` subcommand: arguments, progress display, report output.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::backend::{self, BackendKind};
use crate::codegen::{Geometry, LayoutSpec};
use crate::dims::RuntimeDims;
use crate::layouts;

use super::config::{LengthDist, SimConfig, StepTime};
use super::{Progress, SimError};

/// Arguments of `attention-layout simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Layout: a bundled name or a TOML file (default: the embedded default layout).
    pub layout: Option<String>,
    /// Backend that builds the metadata: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// Steps during which requests arrive.
    #[arg(long, default_value_t = SimConfig::default().steps)]
    pub steps: u64,
    /// Stop after `--steps` instead of draining (finishing every request).
    #[arg(long)]
    pub no_drain: bool,
    /// Mean request arrivals per simulated second (Poisson).
    #[arg(long, default_value_t = SimConfig::default().rate)]
    pub rate: f64,
    /// Seed of all random draws.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    pub seed: u64,
    /// Prompt lengths: azure-conv, fixed:N, uniform:LO-HI or lognormal:MU,SIGMA (or MU,SIGMA,MAX).
    #[arg(long, default_value = "azure-conv", value_parser = |s: &str| LengthDist::parse(s, LengthDist::AZURE_CONV_PROMPT))]
    pub prompt_len: LengthDist,
    /// Output lengths: azure-conv, fixed:N, uniform:LO-HI or lognormal:MU,SIGMA (or MU,SIGMA,MAX).
    #[arg(long, default_value = "azure-conv", value_parser = |s: &str| LengthDist::parse(s, LengthDist::AZURE_CONV_OUTPUT))]
    pub output_len: LengthDist,
    /// Tokens per step (default: the layout's max_tokens).
    #[arg(long)]
    pub token_budget: Option<u32>,
    /// Probability that a draft token is accepted (layouts with speculative tokens).
    #[arg(long, default_value_t = SimConfig::default().acceptance)]
    pub acceptance: f64,
    /// Simulated step time: fixed part, milliseconds.
    #[arg(long, default_value_t = StepTime::default().base_ms)]
    pub step_base_ms: f64,
    /// Simulated step time: per token, microseconds.
    #[arg(long, default_value_t = StepTime::default().per_token_us)]
    pub step_token_us: f64,
    /// Replay a recorded trace (CSV or JSONL: arrival time, prompt tokens, output tokens;
    /// the Azure LLM inference trace columns are read as they are) instead of Poisson
    /// arrivals; --rate and the length distributions are then unused. Arrivals stop at
    /// the trace's end or after --steps steps (raise --steps to replay a long trace whole).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --trace: replay it this many times faster.
    #[arg(long, default_value_t = 1.0)]
    pub trace_speedup: f64,
    /// Bucket-aware chunking: shorten a step's last prefill chunk so the step lands exactly
    /// on a CUDA-graph bucket's token count.
    #[arg(long)]
    pub bucket_chunking: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw per-step latency and bucket use to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
}

impl SimulateArgs {
    /// The simulation settings these arguments ask for (the trace, if any, read by
    /// [`load_trace`]).
    pub fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            steps: self.steps,
            drain: !self.no_drain,
            rate: self.rate,
            prompt: self.prompt_len,
            output: self.output_len,
            token_budget: self.token_budget,
            acceptance: self.acceptance,
            step_time: StepTime {
                base_ms: self.step_base_ms,
                per_token_us: self.step_token_us,
            },
            trace: None,
            bucket_chunking: self.bucket_chunking,
        }
    }
}

/// Reads `--trace` (sped up by `speedup`), or `None` without one; errors are messages
/// naming the file and line.
pub fn load_trace(
    path: Option<&std::path::Path>,
    speedup: f64,
) -> Result<Option<std::sync::Arc<super::Trace>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !(speedup.is_finite() && speedup > 0.0) {
        return Err(format!(
            "--trace-speedup must be a positive number, got {speedup}"
        ));
    }
    let trace = super::trace::read(path).map_err(|e| e.to_string())?;
    Ok(Some(std::sync::Arc::new(trace.speed_up(speedup))))
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Runs `simulate`: exit 0 on success, 2 on bad input (layout, settings, unavailable
/// backend), 1 when the run itself fails.
pub fn main(args: SimulateArgs) -> ExitCode {
    let name = args.layout.as_deref().unwrap_or(layouts::DEFAULT);
    let (src, shown) = match layouts::read(name) {
        Ok(x) => x,
        Err(e) => return fail(2, e),
    };
    let spec = match LayoutSpec::from_toml_str(&src, &shown) {
        Ok(s) => s,
        Err(e) => return fail(2, e.locate(&shown, &src)),
    };
    let geometry = match Geometry::new(&spec) {
        Ok(g) => g,
        Err(e) => return fail(2, e.locate(&shown, &src)),
    };
    let dims = RuntimeDims::new(geometry);
    let mut config = args.config();
    match load_trace(args.trace.as_deref(), args.trace_speedup) {
        Ok(t) => config.trace = t,
        Err(e) => return fail(2, e),
    }
    if let Err(e) = config.check(&dims) {
        return fail(2, e);
    }
    let mut selected = match backend::select(args.backend, dims.clone()) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    eprintln!("layout {shown}; {}", selected.reason);

    // A TTY gets one line rewritten at most every 100 ms; a log gets a line every 10 % of
    // the arrival steps, when draining starts, and at most every 2 s while draining.
    let tty = std::io::stderr().is_terminal();
    let show = !args.quiet;
    let mut last = Instant::now();
    let mut next_step = 0u64;
    let mut drain_announced = false;
    let mut progress = |p: &Progress| {
        if !show {
            return;
        }
        let line = || {
            format!(
                "step {}{} | {:.1} sim s | {} live, {} waiting, {} done | KV {:.1} % | p50 {:.2} µs",
                p.step,
                if p.draining {
                    " (draining)".to_owned()
                } else {
                    format!("/{}", p.steps)
                },
                p.sim_seconds,
                p.live,
                p.waiting,
                p.completed,
                100.0 * p.kv_in_use as f64 / p.kv_capacity.max(1) as f64,
                p.recent_p50_us
            )
        };
        let due = if tty {
            last.elapsed() >= Duration::from_millis(100)
        } else if p.draining {
            !drain_announced || last.elapsed() >= Duration::from_secs(2)
        } else {
            p.step >= next_step
        };
        if !due {
            return;
        }
        last = Instant::now();
        if tty {
            eprint!("\r\x1b[2K{}", line());
            let _ = std::io::stderr().flush();
        } else {
            drain_announced |= p.draining;
            next_step = p.step + (p.steps / 10).max(1);
            eprintln!("{}", line());
        }
    };
    let result = super::run(&config, &dims, selected.backend.as_mut(), &mut progress);
    if show && tty {
        eprint!("\r\x1b[2K");
    }
    let report = match result {
        Ok(r) => r,
        Err(e @ SimError::Config(_)) => return fail(2, e),
        Err(e) => return fail(1, e),
    };
    print!("{report}");
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, report.to_json() + "\n")
    {
        return fail(1, format!("cannot write {}: {e}", path.display()));
    }
    if let Some(path) = &args.plot
        && let Err(e) = std::fs::write(path, super::svg::plot(&report))
    {
        return fail(1, format!("cannot write {}: {e}", path.display()));
    }
    ExitCode::SUCCESS
}
