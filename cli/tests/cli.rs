//! The command line tool, run as a program: every subcommand exits quietly (status 141)
//! when the reader of its output goes away, bad input is refused with the project's
//! message and exit code 2 (never a panic), and the outputs are what the options say.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use attention_layout_cli::console::CLOSED_PIPE_STATUS;
use attention_layout_cli::scenarios;
use attention_layout_cli::simulate::{MAX_STEPS, MAX_WAITING};

const EXE: &str = env!("CARGO_BIN_EXE_attention-layout");

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn golden_file() -> String {
    testdata("megatron-public.jsonl")
        .to_str()
        .unwrap()
        .to_owned()
}

/// A scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("al-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit 2, an `error: ` line containing `needle` on stderr, nothing on stdout, no panic.
fn assert_refused(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(needle)),
        "{args:?}: `{stderr}` has no error line with `{needle}`"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
}

/// A short simulate run on a small layout (under a second in a debug build).
const SHORT_SIMULATE: &[&str] = &[
    "simulate",
    "mamba2-2.7b",
    "--backend",
    "cpu",
    "--steps",
    "30",
    "--rate",
    "200",
    "--prompt-len",
    "uniform:8-300",
    "--output-len",
    "uniform:2-20",
];

/// Runs `args` with standard output (or standard error) on a pipe whose read end was
/// closed before the program started, so its first write there fails with `EPIPE`.
fn run_into_closed_pipe(args: &[&str], close_stderr: bool) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(EXE);
    cmd.args(args).stdin(Stdio::null());
    if close_stderr {
        cmd.stdout(Stdio::piped()).stderr(writer);
    } else {
        cmd.stdout(writer).stderr(Stdio::piped());
    }
    let child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copy of the write end
    child.wait_with_output().unwrap()
}

#[test]
fn every_subcommand_exits_quietly_with_status_141_when_stdout_is_a_closed_pipe() {
    let golden = golden_file();
    let cases: Vec<Vec<&str>> = vec![
        vec!["layouts"],
        vec!["inspect", "nemotron-h-8b"],
        vec!["inspect", "nemotron-h-8b", "--rust"],
        vec!["inspect", "jamba-1.5-mini", "--cuda"],
        vec!["replay", &golden],
        vec!["bench", "--backend", "cpu", "--steps", "5"],
        [SHORT_SIMULATE, &["--quiet"]].concat(),
        [SHORT_SIMULATE, &["--quiet", "--json", "-"]].concat(),
    ];
    for args in &cases {
        let out = run_into_closed_pipe(args, false);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.code(),
            Some(i32::from(CLOSED_PIPE_STATUS)),
            "{args:?}: {stderr}"
        );
        // Quietly: no message about the closed pipe (simulate's first line is its own).
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
    // clap prints help and version itself and ignores the failed write: no panic.
    for args in [&["--help"][..], &["bench", "--help"], &["--version"]] {
        let out = run_into_closed_pipe(args, false);
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0 | 141)),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

#[test]
fn simulate_exits_quietly_when_stderr_is_a_closed_pipe() {
    // The first line on stderr (layout and backend) already finds the pipe closed: the
    // process ends there, before the run and before any report.
    for quiet in [false, true] {
        let mut args = SHORT_SIMULATE.to_vec();
        if quiet {
            args.push("--quiet");
        }
        let out = run_into_closed_pipe(&args, true);
        assert_eq!(
            out.status.code(),
            Some(i32::from(CLOSED_PIPE_STATUS)),
            "quiet {quiet}: {}",
            text(&out.stdout)
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
    // An error message to a closed stderr ends the same way.
    let out = run_into_closed_pipe(&["simulate", "--rate", "0"], true);
    assert_eq!(out.status.code(), Some(i32::from(CLOSED_PIPE_STATUS)));
}

/// `attention-layout inspect nemotron-h-8b --rust --cuda | head -1`: the reader takes one
/// line and exits while the tool is still writing (the output, 133 kB, is larger than a
/// pipe holds).
#[test]
fn a_reader_that_stops_after_one_line_ends_inspect_quietly() {
    let mut child = Command::new(EXE)
        .args(["inspect", "nemotron-h-8b", "--rust", "--cuda"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader (and the only read end) is dropped here.
    assert!(
        first.starts_with("layout nemotron-h-8b (bundled)"),
        "{first}"
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(status.code(), Some(i32::from(CLOSED_PIPE_STATUS)));
}

#[test]
fn simulate_runs_and_writes_its_report_json_and_plot() {
    let dir = scratch("simulate");
    let json = dir.join("report.json");
    let svg = dir.join("plot.SVG");
    let mut args: Vec<&str> = SHORT_SIMULATE.to_vec();
    args.extend(["--quiet", "--json", json.to_str().unwrap()]);
    args.extend(["--plot", svg.to_str().unwrap()]);
    let out = run(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.starts_with("simulate mamba2-2.7b on the cpu backend"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["requests"]["completed"],
        report["requests"]["arrived"]
    );
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_json_to_stdout_writes_only_the_json_there() {
    let out = run(&[SHORT_SIMULATE, &["--json", "-"]].concat());
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The whole of stdout is one JSON document: the report's.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(report["layout"], "mamba2-2.7b");
    assert!(report["steps"].as_u64().unwrap() >= 30);
    // The text report and the progress went to stderr.
    assert!(
        stderr.contains("simulate mamba2-2.7b on the cpu backend"),
        "{stderr}"
    );
    assert!(stderr.contains("step "), "{stderr}");
}

#[test]
fn simulate_refuses_a_plot_that_is_not_svg_before_running() {
    let dir = scratch("plot");
    for name in ["x.png", "x", "x.svg.png", "-"] {
        let path = dir.join(name);
        let path = if name == "-" {
            "-"
        } else {
            path.to_str().unwrap()
        };
        assert_refused(
            &[SHORT_SIMULATE, &["--plot", path]].concat(),
            "--plot writes SVG only",
        );
        assert!(!dir.join(name).exists(), "{name} was written");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn simulate_refuses_bad_numbers_with_the_projects_message() {
    // Negative numbers reach the checks instead of being taken for options.
    assert_refused(
        &["simulate", "--rate", "-3"],
        "rate must be a positive number of requests per second, got -3",
    );
    assert_refused(
        &["simulate", "--rate", "0"],
        "rate must be a positive number",
    );
    assert_refused(
        &["simulate", "--acceptance", "-0.5"],
        "acceptance must lie in [0, 1], got -0.5",
    );
    assert_refused(
        &["simulate", "--step-base-ms", "-1"],
        "the step time needs a base above 0 ms",
    );
    assert_refused(
        &["simulate", "--steps", "-3"],
        "must not be negative, got -3",
    );
    assert_refused(
        &["simulate", "--seed", "-1"],
        "must not be negative, got -1",
    );
    assert_refused(
        &["simulate", "--token-budget", "-8"],
        "must not be negative, got -8",
    );
    assert_refused(&["simulate", "--steps", "0"], "steps must be at least 1");
    let over = (MAX_STEPS + 1).to_string();
    assert_refused(
        &["simulate", "--steps", &over],
        &format!("steps must be at most {MAX_STEPS}"),
    );
    assert_refused(
        &["simulate", "--steps", "18446744073709551615"],
        "steps must be at most",
    );
    assert_refused(&["simulate", "--prompt-len", "fixed:9000"], "never fits");
    assert_refused(&["simulate", "no-such-layout.toml"], "no-such-layout.toml");
}

/// `simulate --steps 50 --rate 1e9` used to queue arrivals until the machine ran out of
/// memory (past 10 GB); the queue now stops at `MAX_WAITING` within the first steps.
#[test]
fn simulate_refuses_a_rate_that_overloads_the_layout_past_the_queue_bound() {
    let start = std::time::Instant::now();
    assert_refused(
        &[
            "simulate",
            "--steps",
            "50",
            "--rate",
            "1e9",
            "--backend",
            "cpu",
        ],
        &format!("the waiting queue reached {MAX_WAITING} requests at step"),
    );
    // Seconds, not minutes: a generous bound for a loaded machine and a debug build.
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
}

#[test]
fn bench_refuses_unknown_scenarios_and_zero_steps() {
    let names: Vec<&str> = scenarios::all().iter().map(|s| s.name).collect();
    let out = run(&["bench", "--scenario", "nope", "--backend", "cpu"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: no benchmark scenario name contains `nope`"),
        "{stderr}"
    );
    for name in &names {
        assert!(stderr.contains(name), "{name} not listed: {stderr}");
    }
    assert!(out.stdout.is_empty());
    // The GPU benchmark's own rows (long context, compile times) are named, and a filter
    // that selects only them is refused on the CPU backend, which has none of them.
    for row in scenarios::gpu_only_rows() {
        assert!(stderr.contains(&row), "{row} not listed: {stderr}");
    }
    for only_gpu in ["long-context", "compile"] {
        let out = run(&["bench", "--scenario", only_gpu, "--backend", "cpu"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("the GPU benchmark (`--backend cuda`) also has the rows"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_refused(&["bench", "--steps", "0"], "steps must lie in [1, ");
    assert_refused(&["bench", "--steps", "-5"], "must not be negative, got -5");
    assert_refused(&["bench", "--steps", "100000000000"], "steps must lie in");
}

#[test]
fn bench_help_lists_every_scenario_name() {
    let out = run(&["bench", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for s in scenarios::all() {
        assert!(help.contains(s.name), "{} not in\n{help}", s.name);
    }
    for s in scenarios::steady() {
        assert!(help.contains(s.name), "{} not in\n{help}", s.name);
    }
    for row in scenarios::gpu_only_rows() {
        assert!(help.contains(&row), "{row} not in\n{help}");
    }
}

#[test]
fn bench_times_the_scenarios_a_filter_selects() {
    let out = run(&[
        "bench",
        "--backend",
        "cpu",
        "--steps",
        "3",
        "--scenario",
        "hybrid",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("hybrid-") || l.starts_with("mha-"))
        .collect();
    let want = scenarios::all()
        .iter()
        .filter(|s| s.name.contains("hybrid"))
        .count()
        + scenarios::steady()
            .iter()
            .filter(|s| s.name.contains("hybrid"))
            .count();
    assert_eq!(rows.len(), want, "{stdout}");
    assert!(rows.iter().all(|r| r.starts_with("hybrid-")), "{stdout}");
    assert!(!stdout.contains("NaN"), "{stdout}");
}

#[test]
fn bench_times_the_steady_decode_scenarios_through_the_prepared_path() {
    let out = run(&[
        "bench",
        "--backend",
        "cpu",
        "--steps",
        "20",
        "--scenario",
        "steady",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // Only the steady table: no header of the fixed-step scenarios.
    assert!(!stdout.contains("buffer B"), "{stdout}");
    for s in scenarios::steady() {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(s.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{stdout}", s.name));
        let cols: Vec<&str> = row.split_whitespace().collect();
        // median, p99, full, ratio, engine, prepared, finished
        assert_eq!(cols.len(), 8, "{row}");
        let prepared: u64 = cols[6].parse().unwrap();
        let finished: u64 = cols[7].parse().unwrap();
        if s.replace_per_mille == 0 {
            assert_eq!((prepared, finished), (20, 0), "{row}");
        } else {
            assert!(finished > 0, "{row}");
        }
    }
    assert!(!stdout.contains("NaN"), "{stdout}");
}

#[test]
fn replay_refuses_files_that_hold_no_golden_records() {
    let dir = scratch("replay");
    let cases = [
        ("empty.jsonl", "", "the file is empty"),
        ("blank.jsonl", "\n  \n\n", "the file is empty"),
        (
            "text.jsonl",
            "hello\nworld\n",
            "no golden record in the file (expected one JSON object with a `kind` a line); line 1: not JSON",
        ),
        (
            "pretty.json",
            "{\n  \"kind\": \"step\"\n}\n",
            "line 1: not JSON",
        ),
        (
            "other.jsonl",
            "{\"a\": 1}\n[1, 2]\n",
            "line 1: a JSON value without a string `kind`",
        ),
    ];
    for (name, contents, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        assert_refused(&["replay", path.to_str().unwrap()], needle);
    }
    assert_refused(
        &["replay", dir.join("missing.jsonl").to_str().unwrap()],
        "cannot read",
    );
    // Not UTF-8.
    let path = dir.join("binary.jsonl");
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x81]).unwrap();
    assert_refused(&["replay", path.to_str().unwrap()], "cannot read");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_of_the_golden_records_passes_every_one() {
    let out = run(&["replay", &golden_file()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(!last.starts_with("0 passed"), "{last}");
}

/// Whether this build's CUDA backend finds a device (then `--backend cuda` runs).
fn cuda_usable() -> bool {
    #[cfg(feature = "cuda")]
    {
        attention_layout::cuda::probe(0).is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// `--backend cuda` where CUDA cannot be used (no `cuda` feature, or no driver, NVRTC or
/// device) is a message and exit 2; where it can, the run uses it.
#[test]
fn backend_cuda_without_a_device_is_refused_with_a_message() {
    let sim = [SHORT_SIMULATE, &["--quiet"]].concat();
    let sim: Vec<&str> = sim
        .iter()
        .map(|&a| if a == "cpu" { "cuda" } else { a })
        .collect();
    let bench = ["bench", "--backend", "cuda", "--steps", "3"];
    if cuda_usable() {
        let out = run(&sim);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("on the cuda"),
            "{}",
            text(&out.stdout)
        );
    } else {
        assert_refused(&sim, "CUDA");
        assert_refused(&bench, "CUDA backend unavailable: ");
    }
}

#[test]
fn layouts_lists_every_bundled_layout_with_its_numbers() {
    use attention_layout::LayoutSpec;
    use attention_layout::codegen::Geometry;
    use attention_layout::layouts::{BUNDLED, DEFAULT};

    let out = run(&["layouts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "name", "model", "requests", "tokens", "seq", "len", "KV", "block", "draft", "graphs"
        ]
    );
    // One line per bundled layout, in order, with the numbers of its own spec.
    for (i, (name, src)) in BUNDLED.iter().enumerate() {
        let g = Geometry::new(&LayoutSpec::from_toml_str(src, name).unwrap()).unwrap();
        let cols: Vec<&str> = lines[i + 1].split_whitespace().collect();
        let mut want = vec![name.to_string()];
        if *name == DEFAULT {
            want.push("*".to_owned());
        }
        want.extend([
            g.spec.model.as_str().to_owned(),
            g.facts.max_requests.to_string(),
            g.facts.max_tokens.to_string(),
            g.facts.max_seq_len.to_string(),
            g.facts.block_size.to_string(),
            g.facts.speculative_tokens.to_string(),
            g.buckets.len().to_string(),
        ]);
        assert_eq!(cols, want, "line {}: {}", i + 1, lines[i + 1]);
    }
    // Then the legend: every column explained.
    let legend = lines[BUNDLED.len() + 1..].join(" ");
    for column in [
        "requests:",
        "tokens:",
        "seq len:",
        "KV block:",
        "draft:",
        "graphs:",
    ] {
        assert!(
            legend.contains(column),
            "no `{column}` in the legend: {legend}"
        );
    }
}

#[test]
fn simulate_and_tune_describe_the_workload_options_identically() {
    let help = |cmd: &str| {
        let out = Command::new(EXE).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    // An option's description: after its name (and value) on the same line, or on the
    // next line when clap wraps the help.
    let option = |text: &str, flag: &str| -> String {
        let mut lines = text.lines();
        let line = lines
            .find(|l| l.trim_start().split(' ').next() == Some(flag))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let rest = line.trim_start().trim_start_matches(flag).trim_start();
        let rest = match rest.strip_prefix('<') {
            Some(r) => r.split_once('>').map_or("", |(_, after)| after),
            None => rest,
        };
        match rest.trim() {
            "" => lines.next().unwrap_or_default().trim().to_owned(),
            same_line => same_line.to_owned(),
        }
    };
    let (simulate, tune) = (help("simulate"), help("tune"));
    for flag in [
        "--steps",
        "--no-drain",
        "--rate",
        "--seed",
        "--prompt-len",
        "--output-len",
        "--token-budget",
        "--acceptance",
        "--step-base-ms",
        "--step-token-us",
    ] {
        let s = option(&simulate, flag);
        assert!(!s.is_empty(), "{flag}");
        assert_eq!(s, option(&tune, flag), "{flag}");
    }
}
