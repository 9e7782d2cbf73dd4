//! `simulate --ep-ranks N`: expert-parallel ranks in lockstep on the CPU backend. One rank
//! is exactly the plain simulation; several ranks agree on every step, their forced eager
//! steps and forced padding add up against the per-step records, runs are deterministic
//! for a seed, and the command line prints and writes it.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::backend::{CpuBackend, MetadataBackend};
use attention_layout::codegen::buckets::match_bucket;
use attention_layout::codegen::spec::LayoutSpec;
use attention_layout::layouts::BUNDLED;
use attention_layout::{BatchDims, Dims, Geometry, RuntimeDims};
use attention_layout_cli::simulate::ep::Forced;
use attention_layout_cli::simulate::{
    self, EpConfig, EpReport, LengthDist, Report, SimConfig, StepTime,
};

fn bundled(i: usize) -> (&'static str, RuntimeDims) {
    let (name, src) = BUNDLED[i];
    let spec = LayoutSpec::from_toml_str(src, name).unwrap();
    (name, RuntimeDims::new(Geometry::new(&spec).unwrap()))
}

/// Short requests, a step of 8 ms whatever its size: a few arrivals per step and rank.
fn config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        steps: 80,
        drain: true,
        rate: 150.0,
        prompt: LengthDist::Uniform { lo: 8, hi: 600 },
        output: LengthDist::Uniform { lo: 2, hi: 40 },
        token_budget: None,
        acceptance: 0.7,
        step_time: StepTime {
            base_ms: 8.0,
            per_token_us: 0.0,
        },
        trace: None,
        bucket_chunking: false,
        ..SimConfig::default()
    }
}

fn run_ep(config: &SimConfig, ep: &EpConfig, dims: &RuntimeDims) -> EpReport {
    let mut backends: Vec<Box<dyn MetadataBackend>> = (0..ep.ranks)
        .map(|_| Box::new(CpuBackend::new(dims.clone())) as Box<dyn MetadataBackend>)
        .collect();
    simulate::run_ep(config, ep, dims, &mut backends, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"))
}

fn shapes(r: &Report) -> Vec<(BatchDims, BatchDims, Option<u32>, u32)> {
    r.records
        .iter()
        .map(|s| (s.real, s.padded, s.bucket, s.paused))
        .collect()
}

#[test]
fn one_rank_runs_exactly_as_the_plain_simulation() {
    for i in 0..BUNDLED.len() {
        let (name, dims) = bundled(i);
        let mut backend = CpuBackend::new(dims.clone());
        let plain = simulate::run(&config(3), &dims, &mut backend, &mut |_| {}).unwrap();
        let ep = run_ep(&config(3), &EpConfig::default(), &dims);
        assert_eq!(ep.per_rank.len(), 1);
        let one = &ep.per_rank[0].report;
        assert_eq!(shapes(&plain), shapes(one), "{name}");
        assert_eq!(plain.requests, one.requests, "{name}");
        assert_eq!(plain.tokens, one.tokens, "{name}");
        assert_eq!(plain.pools, one.pools, "{name}");
        assert_eq!(plain.sim_seconds, one.sim_seconds, "{name}");
        assert_eq!(plain.bucket_hits, one.bucket_hits, "{name}");
        // Nothing is forced on a rank that agrees with nobody else.
        let f = &ep.total;
        assert_eq!(
            f.forced_eager_steps + f.forced_padding_tokens + f.dummy_steps,
            0
        );
        assert_eq!(ep.steps, plain.steps);
        assert_eq!(ep.graphed_steps, plain.graphed_steps);
    }
}

/// Every invariant of an expert-parallel run, checked against the per-step records.
fn check(name: &str, dims: &RuntimeDims, ep: &EpReport) {
    assert_eq!(ep.disagreeing_steps, 0, "{name}");
    assert_eq!(ep.graphed_steps + ep.eager_steps, ep.steps, "{name}");
    let steps = ep.steps as usize;
    let mut total = Forced::default();
    for r in &ep.per_rank {
        let rep = &r.report;
        let f = &r.forced;
        assert_eq!(rep.records.len(), steps, "{name} rank {}", r.rank);
        assert_eq!(rep.requests.completed, rep.requests.arrived, "{name}");
        assert_eq!(rep.pools.kv_in_use_end, 0, "{name}: KV blocks leaked");
        assert_eq!(rep.padding.inconsistent_steps, 0, "{name}");
        assert_eq!(
            rep.graphed_steps, ep.graphed_steps,
            "{name} rank {}",
            r.rank
        );
        // Recompute the forced work from the records.
        let (mut dummy, mut alone_eager, mut forced_eager, mut forced_pad) = (0, 0, 0, 0);
        let mut delta = 0i64;
        for s in &rep.records {
            if s.real == BatchDims::default() {
                dummy += 1;
                continue;
            }
            let alone = match_bucket(s.real, dims.buckets(), dims.has_mamba());
            match (alone, s.bucket) {
                (None, b) => {
                    assert_eq!(b, None, "{name}: graphed under the agreement but not alone");
                    alone_eager += 1;
                }
                (Some(a), None) => {
                    forced_eager += 1;
                    delta += i64::from(s.padded.tokens) - i64::from(a.tokens);
                }
                (Some(a), Some(b)) => {
                    let agreed = dims.buckets()[b as usize];
                    assert_eq!(
                        agreed.prefill, 0,
                        "{name}: a mixed graph under expert parallelism"
                    );
                    assert!(agreed.tokens >= a.tokens, "{name}");
                    forced_pad += u64::from(agreed.tokens - a.tokens);
                }
            }
        }
        assert_eq!(f.steps, steps as u64, "{name}");
        assert_eq!(f.dummy_steps, dummy, "{name}");
        assert_eq!(f.active_steps + f.dummy_steps, f.steps, "{name}");
        assert_eq!(f.eager_alone_steps, alone_eager, "{name}");
        assert_eq!(f.forced_eager_steps, forced_eager, "{name}");
        assert_eq!(
            f.forced_eager_by_other_prefill
                + f.forced_eager_by_own_prefill
                + f.forced_eager_by_max_tokens,
            forced_eager,
            "{name}"
        );
        assert_eq!(f.forced_padding_tokens, forced_pad, "{name}");
        assert_eq!(f.forced_eager_padding_delta, delta, "{name}");
        total.forced_eager_steps += f.forced_eager_steps;
        total.forced_padding_tokens += f.forced_padding_tokens;
        total.dummy_steps += f.dummy_steps;
    }
    assert_eq!(
        ep.total.forced_eager_steps, total.forced_eager_steps,
        "{name}"
    );
    assert_eq!(
        ep.total.forced_padding_tokens, total.forced_padding_tokens,
        "{name}"
    );
    assert_eq!(ep.total.dummy_steps, total.dummy_steps, "{name}");
    // Step by step, every rank replayed the same bucket or every rank ran eagerly.
    for k in 0..steps {
        let b = ep.per_rank[0].report.records[k].bucket;
        for r in &ep.per_rank {
            assert_eq!(
                r.report.records[k].bucket, b,
                "{name} step {k} rank {}",
                r.rank
            );
        }
    }
}

#[test]
fn ranks_agree_on_every_step_and_their_forced_work_adds_up() {
    for i in 0..BUNDLED.len() {
        let (name, dims) = bundled(i);
        for (ranks, skew) in [(2, 0.0), (5, 3.0), (8, 1.0)] {
            let ep = run_ep(
                &config(11),
                &EpConfig {
                    ranks,
                    rank_skew: skew,
                },
                &dims,
            );
            println!("{ep}");
            check(name, &dims, &ep);
            assert_eq!(ep.per_rank.len(), ranks as usize);
            assert!(
                ep.total.forced_eager_steps > 0,
                "{name}, {ranks} ranks: no step was forced eager"
            );
        }
    }
}

#[test]
fn skew_moves_arrivals_to_the_first_ranks() {
    let (_, dims) = bundled(0);
    let ep = run_ep(
        &config(5),
        &EpConfig {
            ranks: 4,
            rank_skew: 7.0,
        },
        &dims,
    );
    check("skewed", &dims, &ep);
    let arrived: Vec<u64> = ep
        .per_rank
        .iter()
        .map(|r| r.report.requests.arrived)
        .collect();
    assert!(arrived[0] > 3 * arrived[3], "{arrived:?}");
    assert!((ep.per_rank[0].rate / ep.per_rank[3].rate - 8.0).abs() < 1e-9);
    // The idle ranks wait for the busy one: they run dummy steps, the busy one hardly.
    assert!(ep.per_rank[3].forced.dummy_steps > ep.per_rank[0].forced.dummy_steps);
}

#[test]
fn expert_parallel_runs_are_deterministic_for_a_seed() {
    let (_, dims) = bundled(4);
    let ep = EpConfig {
        ranks: 3,
        rank_skew: 0.5,
    };
    let a = run_ep(&config(21), &ep, &dims);
    let b = run_ep(&config(21), &ep, &dims);
    let c = run_ep(&config(22), &ep, &dims);
    let all = |r: &EpReport| -> Vec<_> { r.per_rank.iter().map(|x| shapes(&x.report)).collect() };
    assert_eq!(all(&a), all(&b));
    assert_eq!(a.total, b.total);
    assert_eq!(a.steps, b.steps);
    assert_ne!(all(&a), all(&c));
}

#[test]
fn a_backend_count_that_is_not_the_rank_count_is_refused() {
    let (_, dims) = bundled(0);
    let mut one: Vec<Box<dyn MetadataBackend>> = vec![Box::new(CpuBackend::new(dims.clone()))];
    let e = simulate::run_ep(
        &config(1),
        &EpConfig {
            ranks: 2,
            rank_skew: 0.0,
        },
        &dims,
        &mut one,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        e.is_config() && e.to_string().contains("2 ranks need 2 backends"),
        "{e}"
    );
}

/// The JSON of a run without the fields that measure time.
fn without_timings(mut v: serde_json::Value) -> serde_json::Value {
    let o = v.as_object_mut().unwrap();
    o.remove("agreement_p50_ns");
    o.remove("agreement_mean_ns");
    for r in o["per_rank"].as_array_mut().unwrap() {
        let rep = r["report"].as_object_mut().unwrap();
        rep.remove("latency");
        rep.remove("metadata_tokens_per_second");
        let a = rep["async_scheduling"].as_object_mut().unwrap();
        a.remove("prepared_latency");
        a.remove("other_latency");
        a.remove("end_p50_us");
    }
    v
}

#[test]
fn command_line_runs_eight_ranks_and_rejects_bad_settings() {
    let Some(exe) = option_env!("CARGO_BIN_EXE_attention-layout") else {
        return; // built without the `cli` feature
    };
    let dir = std::env::temp_dir().join(format!("al-simulate-ep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let common = [
        "simulate",
        "mamba2-2.7b",
        "--backend",
        "cpu",
        "--steps",
        "40",
        "--rate",
        "100",
        "--prompt-len",
        "uniform:8-300",
        "--output-len",
        "uniform:2-20",
        "--quiet",
    ];
    let run = |extra: &[&str], json: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(common).args(extra);
        if let Some(j) = json {
            cmd.arg("--json").arg(j);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{extra:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let eight = ["--ep-ranks", "8", "--rank-skew", "2", "--seed", "4"];
    let (j1, j2) = (dir.join("a.json"), dir.join("b.json"));
    let text = run(&eight, Some(&j1));
    run(&eight, Some(&j2));
    assert!(
        text.contains("simulate mamba2-2.7b on the cpu backend, 8 expert-parallel ranks"),
        "{text}"
    );
    assert!(text.contains("forced     eager: "), "{text}");
    assert!(text.contains("padding: "), "{text}");
    assert!(text.contains(" all "), "{text}");
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&j1), read(&j2));
    assert_eq!(a["ranks"], 8);
    assert_eq!(a["per_rank"].as_array().unwrap().len(), 8);
    assert_eq!(a["disagreeing_steps"], 0);
    assert!(
        a["total"]["forced_eager_share"].as_f64().unwrap() > 0.0,
        "{a}"
    );
    assert!(a["total"]["forced_padding_tokens"].is_u64());
    assert!(a["per_rank"][7]["forced"]["forced_padding_share"].is_f64());
    assert_eq!(without_timings(a), without_timings(b), "not deterministic");

    // One rank is the plain report, line for line but for the measured latency.
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                let l = l.trim_start();
                // Measured times, and the async path's line (its times; the ranks of an
                // expert-parallel run end every step the ordinary way).
                !l.starts_with("metadata ") && !l.starts_with("async ")
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        strip(&run(&[], None)),
        strip(&run(&["--ep-ranks", "1"], None))
    );
    std::fs::remove_dir_all(&dir).unwrap();

    for args in [
        &["simulate", "--ep-ranks", "0"][..],
        &["simulate", "--ep-ranks", "65"],
        &["simulate", "--ep-ranks", "2", "--rank-skew", "-1"],
        &["simulate", "--rank-skew", "inf"],
    ] {
        let out = std::process::Command::new(exe).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
