//! The `tune` subcommand: arguments, the printed table and comparison, `--json`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::console;
use crate::simulate::cli::load_trace;
use crate::simulate::{LengthDist, SimConfig, StepTime};
use attention_layout::codegen::LayoutSpec;
use attention_layout::layouts;

use super::{DEFAULT_EAGER_PENALTY_US, Figures, TuneOptions, TuneOutcome};

/// Arguments of `attention-layout tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Layout: a bundled name or a TOML file (default: the embedded default layout).
    pub layout: Option<String>,
    /// Most CUDA graphs (buckets) in the table.
    #[arg(long, default_value_t = TuneOptions::default().max_graphs)]
    pub max_graphs: usize,
    /// Cost of an eager step beyond its padding, microseconds (a padded token costs the
    /// simulated clock's per-token time, --step-token-us).
    #[arg(long, default_value_t = DEFAULT_EAGER_PENALTY_US)]
    pub eager_penalty_us: f64,
    /// Graph memory budget, MiB: at most budget / `graphs.graph_memory_mib` graphs.
    #[arg(long)]
    pub graph_memory: Option<u64>,
    /// Tune for bucket-aware chunking (the scheduler shortens a step's last prefill chunk
    /// to land on a bucket) and report it next to the table alone.
    #[arg(long)]
    pub bucket_chunking: bool,
    /// Traffic from a trace (CSV or JSONL; see `simulate --trace`) instead of the Poisson
    /// workload: its first part tunes, the rest is held out. Each part's arrivals stop at
    /// its end or after --steps steps.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --trace: the share of its requests (in arrival order) that tunes.
    #[arg(long, default_value_t = 0.5)]
    pub split: f64,
    /// With --trace: replay it this many times faster.
    #[arg(long, default_value_t = 1.0)]
    pub trace_speedup: f64,
    /// Seed of the tuning traffic.
    #[arg(long, default_value_t = SimConfig::default().seed)]
    pub seed: u64,
    /// Seed of the held-out traffic (default: --seed + 1).
    #[arg(long)]
    pub eval_seed: Option<u64>,
    /// Steps during which requests arrive (each traffic).
    #[arg(long, default_value_t = SimConfig::default().steps)]
    pub steps: u64,
    /// Stop after --steps instead of draining.
    #[arg(long)]
    pub no_drain: bool,
    /// Mean request arrivals per simulated second (Poisson).
    #[arg(long, default_value_t = SimConfig::default().rate)]
    pub rate: f64,
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
    /// Simulated step time: per token, microseconds (also the cost of a padded token).
    #[arg(long, default_value_t = StepTime::default().per_token_us)]
    pub step_token_us: f64,
    /// Also write the outcome as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl TuneArgs {
    /// The tuning options.
    pub fn options(&self) -> TuneOptions {
        TuneOptions {
            max_graphs: self.max_graphs,
            eager_penalty_us: self.eager_penalty_us,
            graph_memory_mib: self.graph_memory,
            bucket_chunking: self.bucket_chunking,
        }
    }

    /// The tuning and held-out traffic (reading and splitting the trace, if any).
    ///
    /// # Errors
    ///
    /// A trace that cannot be read or split.
    pub fn traffic(&self) -> Result<(SimConfig, SimConfig), String> {
        let base = SimConfig {
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
        };
        let eval_seed = self.eval_seed.unwrap_or_else(|| self.seed.wrapping_add(1));
        match load_trace(self.trace.as_deref(), self.trace_speedup)? {
            None => Ok((
                base.clone(),
                SimConfig {
                    seed: eval_seed,
                    ..base
                },
            )),
            Some(trace) => {
                let (a, b) = trace.split(self.split).ok_or_else(|| {
                    format!(
                        "--split {} must leave requests on both sides (0 < split < 1; the trace has {})",
                        self.split,
                        trace.requests().len()
                    )
                })?;
                Ok((
                    SimConfig {
                        trace: Some(std::sync::Arc::new(a)),
                        ..base.clone()
                    },
                    SimConfig {
                        trace: Some(std::sync::Arc::new(b)),
                        seed: eval_seed,
                        ..base
                    },
                ))
            }
        }
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    console::error(message);
    ExitCode::from(code)
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// A count with thousands separators.
fn n(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The printed outcome: the comparison as TOML comments, then the `[graphs]` section, so
/// the whole text can be pasted (or redirected) into a layout file. `graph_memory_mib` is
/// repeated when the layout has it, since the section replaces the layout's.
pub fn render(o: &TuneOutcome, command: &str, graph_memory_mib: Option<u32>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# {command}\n# {}: {} CUDA graphs chosen (at most {}); the layout's own table has {}.",
        o.layout, o.graphs, o.max_graphs, o.baseline_graphs
    );
    let _ = writeln!(
        s,
        "# Cost: a padded token {} µs (the simulated clock's per-token time), an eager step {} µs more.",
        o.token_us, o.eager_penalty_us
    );
    let _ = writeln!(s, "# Tuning traffic:   {}", o.tuning_traffic);
    let _ = writeln!(s, "# Held-out traffic: {}", o.held_out_traffic);
    let _ = writeln!(s, "#");
    let _ = writeln!(
        s,
        "# {:<44} {:>6} {:>8} {:>13} {:>12}",
        "", "graphs", "steps", "padded share", "eager share"
    );
    let mut row = |label: &str, f: &Figures| {
        let _ = writeln!(
            s,
            "# {:<44} {:>6} {:>8} {:>13} {:>12}",
            label,
            f.graphs,
            n(f.steps),
            pct(f.padded_share),
            pct(f.eager_share)
        );
    };
    row("layout's table, tuning traffic", &o.baseline_tuning);
    row("tuned table, tuning traffic", &o.tuned);
    row("layout's table, held-out traffic", &o.baseline_held_out);
    row("tuned table, held-out traffic", &o.held_out);
    if let Some(f) = &o.tuned_chunked {
        row("tuned table + chunking, tuning traffic", f);
    }
    if let Some(f) = &o.baseline_held_out_chunked {
        row("layout's table + chunking, held-out traffic", f);
    }
    if let Some(f) = &o.held_out_chunked {
        row("tuned table + chunking, held-out traffic", f);
    }
    let _ = writeln!(
        s,
        "#\n# Replaces the layout's [graphs] section (an explicit table takes no ladder keys).{}",
        if o.bucket_chunking {
            "\n# Tuned for bucket-aware chunking: the engine sizes each step's last prefill chunk to land on a bucket."
        } else {
            ""
        }
    );
    let _ = writeln!(s, "[graphs]");
    if let Some(m) = graph_memory_mib {
        let _ = writeln!(s, "graph_memory_mib = {m}");
    }
    let _ = writeln!(s, "buckets = [");
    for chunk in o.buckets.chunks(4) {
        let cells: Vec<String> = chunk
            .iter()
            .map(|[t, p, d]| format!("[{t}, {p}, {d}]"))
            .collect();
        let _ = writeln!(s, "    {},", cells.join(", "));
    }
    let _ = writeln!(s, "]");
    s
}

/// The outcome as JSON (every figure; shares as fractions), schema
/// [`crate::reports::TUNE`] (`docs/JSON-REPORTS.md`).
pub fn to_json(o: &TuneOutcome) -> String {
    crate::reports::to_json(crate::reports::TUNE, o)
}

/// Runs `tune`: exit 0 on success, 2 on bad input, 1 when a run fails.
pub fn main(args: TuneArgs) -> ExitCode {
    let name = args.layout.as_deref().unwrap_or(layouts::DEFAULT);
    let (src, shown) = match layouts::read(name) {
        Ok(x) => x,
        Err(e) => return fail(2, e),
    };
    let spec = match LayoutSpec::from_toml_str(&src, &shown) {
        Ok(s) => s,
        Err(e) => return fail(2, e.locate(&shown, &src)),
    };
    let (tuning, held_out) = match args.traffic() {
        Ok(t) => t,
        Err(e) => return fail(2, e),
    };
    let quiet = args.quiet;
    let start = std::time::Instant::now();
    let mut progress = |what: &str| {
        if !quiet {
            // A closed pipe ends the process in the write; other failures only lose a line.
            let _ = writeln!(
                console::stderr(),
                "tune {shown}: {what} ({:.1} s)",
                start.elapsed().as_secs_f64()
            );
        }
    };
    let outcome = match super::tune(&spec, &tuning, &held_out, &args.options(), &mut progress) {
        Ok(o) => o,
        Err(e) if e.is_config() => return fail(2, e),
        Err(e) => return fail(1, e),
    };
    if !quiet {
        let _ = writeln!(
            console::stderr(),
            "tune {shown}: done in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    let command: Vec<String> = std::env::args().skip(1).collect();
    let text = render(
        &outcome,
        &format!("attention-layout {}", command.join(" ")),
        spec.graphs.graph_memory_mib,
    );
    if let Err(e) = console::stdout().write_all(text.as_bytes()) {
        return fail(1, format!("cannot write the table: {e}"));
    }
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, to_json(&outcome) + "\n")
    {
        return fail(1, format!("cannot write {}: {e}", path.display()));
    }
    ExitCode::SUCCESS
}
