//! `attention-layout`: replay golden records, time the fill, inspect layouts, simulate a
//! serving workload.
//!
//! Exit status: 0 success, 1 a failure (a replay mismatch, a run or a write that failed),
//! 2 refused input (with a message), 141 when the reader of standard output or standard
//! error closed the pipe (quietly; see `attention_layout_cli::console`).

// Every write goes through `attention_layout_cli::console`, which handles a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attention_layout::BackendKind;
use attention_layout_cli::console;
use attention_layout_cli::{bench, golden, inspect, scenarios};

#[derive(Parser)]
#[command(
    name = "attention-layout",
    version,
    about = "Megatron-exact attention / Mamba step metadata"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay Megatron golden records (JSONL) and compare every array and scalar.
    Replay {
        /// The JSONL file.
        file: PathBuf,
        /// Print at most this many mismatches.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = console::whole::<usize>)]
        max_mismatches: usize,
    },
    /// Time the metadata build for the five benchmark scenarios.
    Bench {
        /// Steps timed per scenario.
        #[arg(long, default_value_t = 20_000, allow_negative_numbers = true, value_parser = console::whole::<usize>,
              help = format!("Steps timed per scenario (1 to {})", bench::MAX_STEPS))]
        steps: usize,
        /// Only scenarios whose name contains this (the names are listed).
        #[arg(long, help = scenario_help())]
        scenario: Option<String>,
        /// cpu (host fill), cuda (GPU: host vs device fill, graph vs eager) or auto (cuda
        /// when a driver, NVRTC and a device are found, else cpu).
        #[arg(long, default_value = "auto")]
        backend: BackendKind,
    },
    /// Run a dynamic-batching engine loop without a model and report the metadata cost.
    Simulate(attention_layout_cli::simulate::cli::SimulateArgs),
    /// Derive a layout's CUDA-graph bucket table from traffic (a trace or the simulated
    /// workload) and compare it with the layout's own on held-out traffic.
    Tune(attention_layout_cli::tune::cli::TuneArgs),
    /// List the bundled layouts (name, model kind, request rows, tokens per step, sequence
    /// length, KV block size, draft tokens, CUDA graphs).
    Layouts,
    /// Print a layout's buffer map, buckets and memory totals; optionally its generated
    /// Rust and CUDA C.
    Inspect {
        /// A bundled layout name or a TOML file.
        layout: String,
        /// Also print the generated Rust (formatted with prettyplease).
        #[arg(long)]
        rust: bool,
        /// Also print the generated CUDA C.
        #[arg(long)]
        cuda: bool,
    },
}

/// Every benchmark scenario's name: the fixed steps, then the steady-decode ones.
fn scenario_names() -> Vec<&'static str> {
    scenarios::all()
        .iter()
        .map(|s| s.name)
        .chain(scenarios::steady().iter().map(|s| s.name))
        .collect()
}

/// `bench --scenario`'s help, naming the scenarios.
fn scenario_help() -> String {
    let names = scenario_names();
    format!(
        "Only scenarios whose name contains this: {}; the GPU benchmark also has the rows {}",
        names.join(", "),
        scenarios::gpu_only_rows().join(", ")
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            file,
            max_mismatches,
        } => replay(&file, max_mismatches),
        Command::Bench {
            steps,
            scenario,
            backend,
        } => run_bench(steps, scenario.as_deref(), backend),
        Command::Simulate(args) => return attention_layout_cli::simulate::cli::main(args),
        Command::Tune(args) => return attention_layout_cli::tune::cli::main(args),
        Command::Layouts => return attention_layout_cli::layouts::main(),
        Command::Inspect { layout, rust, cuda } => return inspect::main(&layout, rust, cuda),
    };
    // A closed pipe has already ended the process (`console::Console`); what is left is
    // another write error.
    result.unwrap_or_else(|e| {
        console::error(format!("cannot write the output: {e}"));
        ExitCode::FAILURE
    })
}

fn fail(code: u8, message: impl std::fmt::Display) -> io::Result<ExitCode> {
    console::error(message);
    Ok(ExitCode::from(code))
}

/// Why `text` is not a file of golden records: empty, or no line is a JSON object with a
/// `kind` (a file of other JSON, or not JSON at all). A file with some records is replayed;
/// its bad lines count as failed records.
fn not_golden_records(text: &str) -> Option<String> {
    let mut first_bad: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Err(why) = golden::record_kind(line) else {
            return None;
        };
        first_bad.get_or_insert((i + 1, why));
    }
    Some(match first_bad {
        None => "the file is empty (expected Megatron golden records, one JSON object a line)"
            .to_owned(),
        Some((line, why)) => format!(
            "no golden record in the file (expected one JSON object with a `kind` a line); line {line}: {why}"
        ),
    })
}

fn replay(file: &std::path::Path, max_mismatches: usize) -> io::Result<ExitCode> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(2, format!("cannot read {}: {e}", file.display())),
    };
    if let Some(why) = not_golden_records(&text) {
        return fail(2, format!("{}: {why}", file.display()));
    }
    let report = golden::replay(&text);
    let mut out = console::stdout();
    for (kind, (pass, fail)) in &report.kinds {
        writeln!(out, "{kind:>14}: {pass} passed, {fail} failed")?;
    }
    for d in &report.deviations {
        writeln!(out, "documented deviation: {d}")?;
    }
    for m in report.mismatches.iter().take(max_mismatches) {
        writeln!(out, "MISMATCH {m}")?;
    }
    if report.mismatches.len() > max_mismatches {
        writeln!(
            out,
            "... {} more mismatches",
            report.mismatches.len() - max_mismatches
        )?;
    }
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_bench(steps: usize, filter: Option<&str>, backend: BackendKind) -> io::Result<ExitCode> {
    if let Err(e) = bench::check_steps(steps) {
        return fail(2, e);
    }
    let selected: Vec<scenarios::Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    let steady: Vec<scenarios::SteadyScenario> = scenarios::steady()
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    let (gpu, note) = match bench::resolve_backend(backend) {
        Ok(x) => x,
        Err(e) => return fail(2, e),
    };
    // The GPU benchmark's own rows (long context, compile times) count only there.
    let gpu_rows = scenarios::gpu_only_rows();
    if let Some(f) = filter
        && selected.is_empty()
        && steady.is_empty()
        && !(gpu && gpu_rows.iter().any(|r| r.contains(f)))
    {
        let names = scenario_names();
        return fail(
            2,
            format!(
                "no benchmark scenario name contains `{f}`; the scenarios are {}; the GPU benchmark (`--backend cuda`) also has the rows {}",
                names.join(", "),
                gpu_rows.join(", ")
            ),
        );
    }
    let mut out = console::stdout();
    writeln!(out, "{note}")?;
    if gpu {
        return Ok(match bench::run_gpu(steps, filter, &mut out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                console::error(e);
                ExitCode::FAILURE
            }
        });
    }
    writeln!(
        out,
        "host fill, CPU backend, one thread, {steps} steps per scenario"
    )?;
    if !selected.is_empty() {
        writeln!(
            out,
            "graph: a CUDA-graph bucket serves the step; median, p99: 50th and 99th percentile of one step's fill time; buffer B: the metadata buffer's bytes"
        )?;
        writeln!(
            out,
            "{:<40} {:>7} {:>7} {:>10} {:>10} {:>9}",
            "scenario", "tokens", "graph", "median µs", "p99 µs", "buffer B"
        )?;
    }
    for s in &selected {
        match bench::time_host_fill(s, steps) {
            Ok(t) => writeln!(
                out,
                "{:<40} {:>7} {:>7} {:>10.2} {:>10.2} {:>9}",
                t.name, t.tokens, t.graphed, t.median_us, t.p99_us, t.buffer_bytes
            )?,
            Err(e) => {
                console::error(format!("{}: {e}", s.name));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    if steady.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !selected.is_empty() {
        writeln!(out)?;
    }
    writeln!(
        out,
        "steady decode (BatchState through prepare / commit_sampled / resolve): fill = the CPU backend's residency-aware fill, full = the full host fill of the same steps in the same run, ratio = fill / full (medians), engine = the engine's step end (prepare, commit, resolve, replacements), prepared = steps that took the prepared path"
    )?;
    writeln!(
        out,
        "{:<40} {:>10} {:>10} {:>10} {:>7} {:>10} {:>9} {:>9}",
        "scenario", "median µs", "p99 µs", "full µs", "ratio", "engine µs", "prepared", "finished"
    )?;
    for s in &steady {
        match bench::time_steady(s, steps) {
            Ok(t) => writeln!(
                out,
                "{:<40} {:>10.2} {:>10.2} {:>10.2} {:>7.2} {:>10.2} {:>9} {:>9}",
                t.name,
                t.median_us,
                t.p99_us,
                t.full_median_us,
                t.ratio(),
                t.engine_median_us,
                t.prepared_steps,
                t.finished_rows
            )?,
            Err(e) => {
                console::error(format!("{}: {e}", s.name));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
