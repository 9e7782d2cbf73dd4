//! `tune`: a bucket table derived from traffic, checked against the spec rules, evaluated
//! by `simulate` on held-out traffic, deterministic for a seed; and the command line
//! (printed section, `--json`, traces, bad input).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::backend::CpuBackend;
use attention_layout::codegen::LayoutSpec;
use attention_layout::layouts::bundled;
use attention_layout::{BatchDims, Dims, Geometry, RuntimeDims};
use attention_layout_cli::simulate::{self, SimConfig};
use attention_layout_cli::tune::{self, Figures, TuneError, TuneOptions, TuneOutcome};

fn spec(name: &str) -> LayoutSpec {
    LayoutSpec::from_toml_str(bundled(name).unwrap(), name).unwrap()
}

/// A short workload (the default lengths and rate, 300 steps of arrivals) on `seed`, and
/// the held-out one on `seed + 1`.
fn traffic(seed: u64) -> (SimConfig, SimConfig) {
    let c = SimConfig {
        seed,
        steps: 300,
        ..SimConfig::default()
    };
    (
        c.clone(),
        SimConfig {
            seed: seed + 1,
            ..c
        },
    )
}

fn tune_with(name: &str, seed: u64, opts: &TuneOptions) -> Result<TuneOutcome, TuneError> {
    let (a, b) = traffic(seed);
    tune::tune(&spec(name), &a, &b, opts, &mut |_| {})
}

fn buckets(o: &TuneOutcome) -> Vec<BatchDims> {
    o.buckets
        .iter()
        .map(|&[t, p, d]| BatchDims::new(t, p, d))
        .collect()
}

fn run(config: &SimConfig, dims: &RuntimeDims) -> simulate::Report {
    let mut b = CpuBackend::new(dims.clone());
    simulate::run(config, dims, &mut b, &mut |_| {}).unwrap()
}

#[test]
fn tuning_is_deterministic_for_a_seed() {
    let opts = TuneOptions::default();
    let a = tune_with("nemotron-h-8b", 5, &opts).unwrap();
    let b = tune_with("nemotron-h-8b", 5, &opts).unwrap();
    assert_eq!(a, b);
    assert_eq!(tune::cli::to_json(&a), tune::cli::to_json(&b));
    let c = tune_with("nemotron-h-8b", 6, &opts).unwrap();
    assert_ne!(a.buckets, c.buckets, "another seed, another traffic");
}

/// The held-out figures are `simulate` runs of the layout with the tuned table (and of
/// the layout as it is); the tuning figures, priced from the recorded shapes, equal a run
/// too (without chunking the steps do not depend on the table).
#[test]
fn the_held_out_figures_are_simulate_runs_of_the_tuned_layout() {
    for name in ["nemotron-h-8b", "llama-3.1-8b-spec2"] {
        let o = tune_with(name, 1, &TuneOptions::default()).unwrap();
        let (tuning, held_out) = traffic(1);
        let base = RuntimeDims::new(Geometry::new(&spec(name)).unwrap());
        let tuned_spec = tune::with_table(&spec(name), &buckets(&o));
        let tuned = RuntimeDims::new(Geometry::new(&tuned_spec).unwrap());
        assert_eq!(tuned.buckets(), buckets(&o).as_slice());
        assert_eq!(
            o.held_out,
            Figures::of_report(&run(&held_out, &tuned)),
            "{name}"
        );
        assert_eq!(
            o.baseline_held_out,
            Figures::of_report(&run(&held_out, &base)),
            "{name}"
        );
        assert_eq!(o.tuned, Figures::of_report(&run(&tuning, &tuned)), "{name}");
        assert_eq!(
            o.baseline_tuning,
            Figures::of_report(&run(&tuning, &base)),
            "{name}"
        );
        assert_eq!(o.baseline_graphs, base.buckets().len());
        assert!(
            o.tuning_traffic.starts_with("seed 1,"),
            "{}",
            o.tuning_traffic
        );
        assert!(
            o.held_out_traffic.starts_with("seed 2,"),
            "{}",
            o.held_out_traffic
        );
    }
}

#[test]
fn the_tuned_table_keeps_its_limits_and_beats_the_ladder() {
    for name in ["nemotron-h-8b", "llama-3.1-8b", "llama-3.1-8b-spec2"] {
        let s = spec(name);
        for max_graphs in [1, 8, 32] {
            let o = tune_with(
                name,
                3,
                &TuneOptions {
                    max_graphs,
                    ..TuneOptions::default()
                },
            )
            .unwrap();
            assert!(
                o.graphs <= max_graphs && o.graphs == o.buckets.len(),
                "{name}"
            );
            // Legal under the spec rules, with the full decode step.
            let g = Geometry::new(&tune::with_table(&s, &buckets(&o))).unwrap();
            assert!(g.buckets.contains(&s.table_rules().full_decode()));
        }
        // With enough traffic to tune on, far less padding than the ladder on both the
        // tuning and the held-out traffic, with fewer graphs.
        let tuning = SimConfig {
            seed: 3,
            steps: 1500,
            ..SimConfig::default()
        };
        let held_out = SimConfig {
            seed: 4,
            ..tuning.clone()
        };
        let o = tune::tune(&s, &tuning, &held_out, &TuneOptions::default(), &mut |_| {}).unwrap();
        for (t, b) in [
            (&o.tuned, &o.baseline_tuning),
            (&o.held_out, &o.baseline_held_out),
        ] {
            assert!(
                t.padded_share < b.padded_share / 2.0,
                "{name}: {} vs the ladder's {}",
                t.padded_share,
                b.padded_share
            );
            assert!(t.graphs < b.graphs);
        }
    }
}

/// Tuned on a sliver of traffic, a table fits that traffic and not the next: the held-out
/// figures show it.
#[test]
fn a_table_tuned_on_too_little_traffic_shows_its_overfit() {
    let s = spec("nemotron-h-8b");
    let tuning = SimConfig {
        seed: 8,
        steps: 40,
        drain: false,
        ..SimConfig::default()
    };
    let held_out = SimConfig {
        seed: 9,
        steps: 1500,
        ..SimConfig::default()
    };
    let o = tune::tune(&s, &tuning, &held_out, &TuneOptions::default(), &mut |_| {}).unwrap();
    println!(
        "tuning {:.4}, held out {:.4} (eager {:.4})",
        o.tuned.padded_share, o.held_out.padded_share, o.held_out.eager_share
    );
    assert!(o.tuned.padded_share < 0.01, "{}", o.tuned.padded_share);
    assert!(
        o.held_out.padded_share > 5.0 * o.tuned.padded_share.max(0.002)
            || o.held_out.eager_share > 0.05,
        "{o:?}"
    );
}

#[test]
fn bucket_aware_chunking_is_reported_next_to_the_table_alone() {
    let o = tune_with(
        "nemotron-h-8b",
        1,
        &TuneOptions {
            bucket_chunking: true,
            ..TuneOptions::default()
        },
    )
    .unwrap();
    let (chunked, base_chunked, tuned_chunked) = (
        o.held_out_chunked.unwrap(),
        o.baseline_held_out_chunked.unwrap(),
        o.tuned_chunked.unwrap(),
    );
    // The same table with and without chunking; chunking pads less.
    assert_eq!(chunked.graphs, o.held_out.graphs);
    assert!(chunked.padded_share < o.held_out.padded_share);
    assert!(tuned_chunked.padded_share < o.tuned.padded_share);
    assert!(base_chunked.padded_share < o.baseline_held_out.padded_share);
    // And it is a simulate run with chunking on.
    let (_, held_out) = traffic(1);
    let tuned = RuntimeDims::new(
        Geometry::new(&tune::with_table(&spec("nemotron-h-8b"), &buckets(&o))).unwrap(),
    );
    let r = run(
        &SimConfig {
            bucket_chunking: true,
            ..held_out
        },
        &tuned,
    );
    assert_eq!(chunked, Figures::of_report(&r));
    // Without the option, none of it.
    let plain = tune_with("nemotron-h-8b", 1, &TuneOptions::default()).unwrap();
    assert!(plain.held_out_chunked.is_none() && plain.tuned_chunked.is_none());
}

#[test]
fn a_memory_budget_caps_the_graphs_and_bad_settings_are_refused() {
    let mut s = spec("nemotron-h-8b");
    let opts = |graph_memory_mib| TuneOptions {
        graph_memory_mib,
        ..TuneOptions::default()
    };
    let err = |s: &LayoutSpec, o: &TuneOptions| {
        let (a, b) = traffic(1);
        let e = tune::tune(s, &a, &b, o, &mut |_| {}).unwrap_err();
        assert!(e.is_config(), "{e}");
        e.to_string()
    };
    assert!(err(&s, &opts(Some(400))).contains("set `graphs.graph_memory_mib`"));
    s.graphs.graph_memory_mib = Some(40);
    assert_eq!(tune::graphs_allowed(&s, &opts(Some(400))).unwrap(), 10);
    assert_eq!(tune::graphs_allowed(&s, &opts(Some(4000))).unwrap(), 32);
    assert_eq!(tune::graphs_allowed(&s, &opts(None)).unwrap(), 32);
    assert!(err(&s, &opts(Some(39))).contains("holds no graph of 40 MiB"));
    let (a, b) = traffic(1);
    let o = tune::tune(&s, &a, &b, &opts(Some(400)), &mut |_| {}).unwrap();
    assert!(o.graphs <= 10 && o.max_graphs == 10);
    let zero = TuneOptions {
        max_graphs: 0,
        ..TuneOptions::default()
    };
    assert!(err(&s, &zero).contains("--max-graphs must be at least 1"));
    let bad_penalty = TuneOptions {
        eager_penalty_us: f64::NAN,
        ..TuneOptions::default()
    };
    assert!(err(&s, &bad_penalty).contains("--eager-penalty-us"));
    let (mut a, b) = traffic(1);
    a.rate = 0.0;
    let e = tune::tune(&s, &a, &b, &TuneOptions::default(), &mut |_| {}).unwrap_err();
    assert!(e.is_config() && e.to_string().contains("rate"), "{e}");
}

/// `testdata/trace-sample.csv`, as in tests/simulate.rs.
fn sample_trace() -> std::path::PathBuf {
    let built = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/trace-sample.csv"
    ));
    if built.is_file() {
        built.to_owned()
    } else {
        std::path::PathBuf::from("testdata/trace-sample.csv")
    }
}

/// The command line: the printed text is a `[graphs]` section (comparison as comments)
/// that, pasted in place of the layout's own, gives the tuned table; `--json` holds the
/// figures as fractions; a trace tunes on its first half and is evaluated on the second.
#[test]
fn the_command_prints_a_section_to_paste_and_json() {
    let Some(exe) = option_env!("CARGO_BIN_EXE_attention-layout") else {
        return; // built without the `cli` feature
    };
    let dir = std::env::temp_dir().join(format!("al-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("tune.json");
    let trace = sample_trace();
    let out = std::process::Command::new(exe)
        .args([
            "tune",
            "llama-3.1-8b",
            "--quiet",
            "--max-graphs",
            "12",
            "--trace",
        ])
        .arg(&trace)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let graphs = v["graphs"].as_u64().unwrap();
    assert!((1..=12).contains(&graphs));
    for key in ["tuned", "held_out", "baseline_held_out", "baseline_tuning"] {
        for share in ["padded_share", "eager_share"] {
            let x = v[key][share].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{key}.{share} = {x}");
        }
    }
    assert!(
        v["tuning_traffic"]
            .as_str()
            .unwrap()
            .contains("[requests 1–200] (200 requests")
    );
    assert!(
        v["held_out_traffic"]
            .as_str()
            .unwrap()
            .contains("[requests 201–400] (200 requests")
    );
    assert!(
        printed.contains("# tuned table, held-out traffic"),
        "{printed}"
    );
    assert!(
        printed.contains("# layout's table, held-out traffic"),
        "{printed}"
    );
    // Paste: the layout without its [graphs] section, then the printed text.
    let layout = bundled("llama-3.1-8b").unwrap();
    let mut kept = String::new();
    let mut in_graphs = false;
    for line in layout.lines() {
        if line.starts_with('[') {
            in_graphs = line == "[graphs]";
        }
        if !in_graphs {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let pasted = format!("{kept}\n{printed}");
    let spec = LayoutSpec::from_toml_str(&pasted, "pasted.toml").unwrap_or_else(|e| panic!("{e}"));
    let g = Geometry::new(&spec).unwrap();
    let want: Vec<[u32; 3]> = serde_json::from_value(v["buckets"].clone()).unwrap();
    assert_eq!(
        g.buckets
            .iter()
            .map(|b| [b.tokens, b.prefill, b.decode])
            .collect::<Vec<_>>(),
        want
    );
    // Bad input: exit 2 with a message.
    for (args, needle) in [
        (
            vec!["tune", "--max-graphs", "0"],
            "--max-graphs must be at least 1",
        ),
        (
            vec!["tune", "--graph-memory", "100"],
            "graphs.graph_memory_mib",
        ),
        (vec!["tune", "--trace", "/nonexistent.csv"], "cannot read"),
        (vec!["tune", "--split", "1.5", "--trace"], "--split"),
        (vec!["tune", "no-such-layout"], "cannot read layout"),
    ] {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&args);
        if args.last() == Some(&"--trace") {
            cmd.arg(&trace);
        }
        let out = cmd.arg("--quiet").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
