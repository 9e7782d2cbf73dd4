//! `attention-layout`: replay golden records, time the fill, inspect layouts, simulate a
//! serving workload.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use attention_layout::{BackendKind, bench, golden, inspect, scenarios};

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
        #[arg(long, default_value_t = 50)]
        max_mismatches: usize,
    },
    /// Time the metadata build for the five benchmark scenarios.
    Bench {
        /// Steps timed per scenario.
        #[arg(long, default_value_t = 20_000)]
        steps: usize,
        /// Only scenarios whose name contains this.
        #[arg(long)]
        scenario: Option<String>,
        /// cpu (host fill), cuda (GPU: host vs device fill, graph vs eager) or auto (cuda
        /// when a driver, NVRTC and a device are found, else cpu).
        #[arg(long, default_value = "auto")]
        backend: BackendKind,
    },
    /// Run a dynamic-batching engine loop without a model and report the metadata cost.
    Simulate(attention_layout::simulate::cli::SimulateArgs),
    /// Derive a layout's CUDA-graph bucket table from traffic (a trace or the simulated
    /// workload) and compare it with the layout's own on held-out traffic.
    Tune(attention_layout::tune::cli::TuneArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            file,
            max_mismatches,
        } => replay(&file, max_mismatches),
        Command::Bench {
            steps,
            scenario,
            backend,
        } => run_bench(steps, scenario.as_deref(), backend),
        Command::Simulate(args) => attention_layout::simulate::cli::main(args),
        Command::Tune(args) => attention_layout::tune::cli::main(args),
        Command::Inspect { layout, rust, cuda } => inspect::main(&layout, rust, cuda),
    }
}

fn replay(file: &std::path::Path, max_mismatches: usize) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let report = golden::replay(&text);
    for (kind, (pass, fail)) in &report.kinds {
        println!("{kind:>14}: {pass} passed, {fail} failed");
    }
    for d in &report.deviations {
        println!("documented deviation: {d}");
    }
    for m in report.mismatches.iter().take(max_mismatches) {
        println!("MISMATCH {m}");
    }
    if report.mismatches.len() > max_mismatches {
        println!(
            "... {} more mismatches",
            report.mismatches.len() - max_mismatches
        );
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_bench(steps: usize, filter: Option<&str>, backend: BackendKind) -> ExitCode {
    match bench::resolve_backend(backend) {
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Ok((gpu, note)) => {
            println!("{note}");
            if gpu {
                return match bench::run_gpu(steps, &mut std::io::stdout()) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
        }
    }
    println!("host fill, CPU backend, one thread, {steps} steps per scenario");
    println!(
        "{:<40} {:>7} {:>7} {:>10} {:>10} {:>9}",
        "scenario", "tokens", "graph", "median µs", "p99 µs", "buffer B"
    );
    for s in scenarios::all() {
        if filter.is_some_and(|f| !s.name.contains(f)) {
            continue;
        }
        match bench::time_host_fill(&s, steps) {
            Ok(t) => println!(
                "{:<40} {:>7} {:>7} {:>10.2} {:>10.2} {:>9}",
                t.name, t.tokens, t.graphed, t.median_us, t.p99_us, t.buffer_bytes
            ),
            Err(e) => {
                eprintln!("error: {}: {e}", s.name);
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
