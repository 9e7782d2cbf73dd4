//! The `simulate` subcommand: arguments, progress display, report output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::console::{self, Console};
use attention_layout::EvictionPolicy;
use attention_layout::backend::{self, BackendKind};
use attention_layout::codegen::{Geometry, LayoutSpec};
use attention_layout::dims::RuntimeDims;
use attention_layout::layouts;

use super::Progress;
use super::config::{LengthDist, MAX_STEPS, SimConfig, StepTime};
use super::ep::EpConfig;

/// Arguments of `attention-layout simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Layout: a bundled name or a TOML file (default: the embedded default layout).
    pub layout: Option<String>,
    /// Backend that builds the metadata: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub backend: BackendKind,
    /// The workload.
    #[command(flatten)]
    pub workload: WorkloadArgs,
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
    /// Prefix caching with this eviction policy: ref_zero (blocks shared between live
    /// requests only) or lru (finished prefixes stay cached until evicted). Default: off.
    #[arg(long, value_parser = parse_policy)]
    pub prefix_caching: Option<EvictionPolicy>,
    /// With --prefix-caching on a hybrid layout: durable Mamba state slots (default: the
    /// layout's `[memory] prefix_caching_mamba_gb`, else none: KV blocks are shared but no
    /// prompt token is skipped).
    #[arg(long, value_parser = console::whole::<usize>)]
    pub prefix_mamba_slots: Option<usize>,
    /// Tokens of a system prompt every request's prompt starts with (the same token ids
    /// for all).
    #[arg(long, default_value_t = 0, value_parser = console::whole::<u32>)]
    pub system_prompt: u32,
    /// Turns per conversation: each turn after the first resends the conversation so far
    /// (the previous turn's prompt and output) before its own drawn prompt.
    #[arg(long, default_value_t = 1, value_parser = console::whole::<u32>)]
    pub turns: u32,
    /// Write the report as JSON to this file; `-`: to standard output (the text report then
    /// goes to standard error).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw per-step latency and bucket use to this SVG file (the name must end in `.svg`).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
    /// Expert-parallel ranks: each with its own arrivals, scheduler and backend, agreeing
    /// on every step's shape (1: no expert parallelism, the plain report).
    #[arg(long, default_value_t = EpConfig::default().ranks)]
    pub ep_ranks: u32,
    /// Load skew between ranks: the busiest rank gets 1 + X times the arrivals of the
    /// idlest, geometrically in between, the mean staying `--rate` per rank.
    #[arg(long, default_value_t = EpConfig::default().rank_skew)]
    pub rank_skew: f64,
}

impl SimulateArgs {
    /// The expert-parallel settings these arguments ask for.
    pub fn ep_config(&self) -> EpConfig {
        EpConfig {
            ranks: self.ep_ranks,
            rank_skew: self.rank_skew,
        }
    }

    /// The simulation settings these arguments ask for (the trace, if any, read by
    /// [`load_trace`]).
    pub fn config(&self) -> SimConfig {
        SimConfig {
            bucket_chunking: self.bucket_chunking,
            prefix_caching: self.prefix_caching,
            prefix_mamba_slots: self.prefix_mamba_slots,
            system_prompt: self.system_prompt,
            turns: self.turns,
            ..self.workload.config()
        }
    }
}

/// The workload options `simulate` and `tune` share: what arrives, how long, and the
/// simulated clock. One definition, flattened into both commands' arguments.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Steps during which requests arrive.
    #[arg(long, default_value_t = SimConfig::default().steps, allow_negative_numbers = true, value_parser = console::whole::<u64>,
          help = format!("Steps during which requests arrive (a run takes at most {MAX_STEPS}, drain included; tune: per traffic)"))]
    pub steps: u64,
    /// Stop after `--steps` instead of draining (finishing every request).
    #[arg(long)]
    pub no_drain: bool,
    /// Mean request arrivals per simulated second (Poisson).
    #[arg(long, default_value_t = SimConfig::default().rate, allow_negative_numbers = true)]
    pub rate: f64,
    /// Seed of all random draws (tune: of the tuning traffic).
    #[arg(long, default_value_t = SimConfig::default().seed, allow_negative_numbers = true, value_parser = console::whole::<u64>)]
    pub seed: u64,
    /// Prompt lengths: azure-conv, fixed:N, uniform:LO-HI or lognormal:MU,SIGMA (or MU,SIGMA,MAX).
    #[arg(long, default_value = "azure-conv", value_parser = |s: &str| LengthDist::parse(s, LengthDist::AZURE_CONV_PROMPT))]
    pub prompt_len: LengthDist,
    /// Output lengths: azure-conv, fixed:N, uniform:LO-HI or lognormal:MU,SIGMA (or MU,SIGMA,MAX).
    #[arg(long, default_value = "azure-conv", value_parser = |s: &str| LengthDist::parse(s, LengthDist::AZURE_CONV_OUTPUT))]
    pub output_len: LengthDist,
    /// Tokens per step (default: the layout's max_tokens).
    #[arg(long, allow_negative_numbers = true, value_parser = console::whole::<u32>)]
    pub token_budget: Option<u32>,
    /// Probability that a draft token is accepted (layouts with speculative tokens).
    #[arg(long, default_value_t = SimConfig::default().acceptance, allow_negative_numbers = true)]
    pub acceptance: f64,
    /// Simulated step time: fixed part, milliseconds.
    #[arg(long, default_value_t = StepTime::default().base_ms, allow_negative_numbers = true)]
    pub step_base_ms: f64,
    /// Simulated step time: per token, microseconds (tune: also the cost of a padded token).
    #[arg(long, default_value_t = StepTime::default().per_token_us, allow_negative_numbers = true)]
    pub step_token_us: f64,
}

impl WorkloadArgs {
    /// The simulation settings of this workload: Poisson arrivals (no trace), no
    /// bucket-aware chunking.
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
            bucket_chunking: false,
            ..SimConfig::default()
        }
    }
}

/// `ref_zero` or `lru`.
fn parse_policy(s: &str) -> Result<EvictionPolicy, String> {
    EvictionPolicy::from_name(s)
        .ok_or_else(|| format!("unknown eviction policy `{s}`: expected ref_zero or lru"))
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
    console::error(message);
    ExitCode::from(code)
}

/// `--json -`: the JSON goes to standard output.
fn json_to_stdout(path: Option<&Path>) -> bool {
    path.is_some_and(|p| p.as_os_str() == "-")
}

/// `--plot` writes SVG only: refuses a file name that does not end in `.svg`.
fn check_plot_path(path: &Path) -> Result<(), String> {
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if svg {
        Ok(())
    } else {
        Err(format!(
            "--plot writes SVG only: `{}` does not end in .svg",
            path.display()
        ))
    }
}

/// Runs `simulate`: exit 0 on success, 2 on bad input (layout, settings, unavailable
/// backend, a run past the memory bounds), 1 when the run itself fails or an output file
/// cannot be written, [`console::CLOSED_PIPE_STATUS`] when a reader closed the pipe.
pub fn main(args: SimulateArgs) -> ExitCode {
    if let Some(path) = &args.plot
        && let Err(e) = check_plot_path(path)
    {
        return fail(2, e);
    }
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
    let ep = args.ep_config();
    if let Err(e) = ep.check() {
        return fail(2, e);
    }
    if ep.ranks > 1 {
        return main_ep(&args, &config, &ep, dims, &shown);
    }
    let mut selected = match backend::select(args.backend, dims.clone()) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let mut err = console::stderr();
    let _ = writeln!(err, "layout {shown}; {}", selected.reason);

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
                "step {}{} | {:.1} simulated s | {} live, {} waiting, {} done | KV pool {:.1} % used | median {:.2} µs",
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
        // A closed pipe ends the process in the write; other failures only lose a line.
        if tty {
            let _ = write!(err, "\r\x1b[2K{}", line());
            let _ = err.flush();
        } else {
            drain_announced |= p.draining;
            next_step = p.step + (p.steps / 10).max(1);
            let _ = writeln!(err, "{}", line());
        }
    };
    let result = super::run(&config, &dims, selected.backend.as_mut(), &mut progress);
    if show && tty {
        let _ = write!(console::stderr(), "\r\x1b[2K");
    }
    let report = match result {
        Ok(r) => r,
        Err(e) if e.is_config() => return fail(2, e),
        Err(e) => return fail(1, e),
    };
    match write_outputs(&args, &report, report.to_json(), Some(&report)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// Writes the text report (standard output, or standard error under `--json -`), the
/// JSON and the plot (the plot of `plot`, when there is one).
fn write_outputs(
    args: &SimulateArgs,
    text_report: &dyn std::fmt::Display,
    json_report: String,
    plot: Option<&super::Report>,
) -> Result<(), String> {
    let json = args.json.as_deref();
    let mut text: Console = if json_to_stdout(json) {
        console::stderr()
    } else {
        console::stdout()
    };
    write!(text, "{text_report}").map_err(|e| format!("cannot write the report: {e}"))?;
    let write_file = |path: &Path, contents: String| {
        std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = json {
        let contents = json_report + "\n";
        if json_to_stdout(Some(path)) {
            console::stdout()
                .write_all(contents.as_bytes())
                .map_err(|e| format!("cannot write the JSON report: {e}"))?;
        } else {
            write_file(path, contents)?;
        }
    }
    if let (Some(path), Some(report)) = (&args.plot, plot) {
        write_file(path, super::svg::plot(report))?;
    }
    Ok(())
}

/// `simulate --ep-ranks N` with `N > 1`: one backend per rank, the expert-parallel report.
fn main_ep(
    args: &SimulateArgs,
    config: &SimConfig,
    ep: &EpConfig,
    dims: RuntimeDims,
    shown: &str,
) -> ExitCode {
    let mut backends = Vec::with_capacity(ep.ranks as usize);
    for rank in 0..ep.ranks {
        match backend::select(args.backend, dims.clone()) {
            Ok(s) => {
                if rank == 0 {
                    let _ = writeln!(
                        console::stderr(),
                        "layout {shown}; {} on each of {} ranks",
                        s.reason,
                        ep.ranks
                    );
                }
                backends.push(s.backend);
            }
            Err(e) => return fail(2, format!("rank {rank}: {e}")),
        }
    }
    // A line every 10 % of the arrival steps and every 1,000 steps while draining.
    let show = !args.quiet;
    let mut next = 0u64;
    let mut progress = |p: &Progress| {
        if !show || p.step < next {
            return;
        }
        next = p.step
            + if p.draining {
                1000
            } else {
                (p.steps / 10).max(1)
            };
        // A closed pipe ends the process in the write; other failures only lose a line.
        let _ = writeln!(
            console::stderr(),
            "step {}{} | {:.1} sim s | {} live, {} waiting, {} done on all ranks",
            p.step,
            if p.draining { " (draining)" } else { "" },
            p.sim_seconds,
            p.live,
            p.waiting,
            p.completed
        );
    };
    let report = match super::run_ep(config, ep, &dims, &mut backends, &mut progress) {
        Ok(r) => r,
        Err(e) if e.is_config() => return fail(2, e),
        Err(e) => return fail(1, e),
    };
    // The plot shows rank 0 (the busiest rank).
    let plot = report.per_rank.first().map(|r| &r.report);
    match write_outputs(args, &report, report.to_json(), plot) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}
