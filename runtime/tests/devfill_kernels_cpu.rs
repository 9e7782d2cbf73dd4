//! The emitted CUDA fill kernels, compiled for the CPU with the host C++ compiler
//! (`support/cuda_shim.h`: one OS thread per CUDA thread) and fed by the staging builder,
//! write exactly the host fill's bytes into every field's live prefix, step after step of
//! a random workload (requests arrive, grow, pause, get holes and finish; steps with and
//! without residency, token ids and intermediate offsets; the fill and parameter entries; one to
//! three blocks per launch, block 0 first or last), on the GPU sanitize test's sequence
//! (a step per bucket, then a new engine on the same backend), and on steps `BatchState`
//! builds (with its residency) for requests that reach `max_seq_len` with draft tokens.
//!
//! This is the GPU-free half of the device-fill tests: it checks the kernels' logic and
//! the staging format. `cuda_equivalence.rs` and `cuda_sanitize.rs` run the same
//! comparisons on a GPU.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::batch::{BatchState, RequestPhase};
use attention_layout::codegen::emit_cuda;
use attention_layout::devfill::{self, StagingError};
use attention_layout::{Dims, Phase, RuntimeDims, StepInfo};
use support::layouts;
use support::shaped::ShapedStep;
use support::shim::{self, Replay};
use support::workload::Workload;

#[derive(Default, Debug)]
struct Coverage {
    graphed: u32,
    eager: u32,
    compact: u32,
    overflow: u32,
    patches: u64,
    changes: u64,
    gathered: u64,
    uploaded: u64,
    prefill_steps: u32,
}

/// `param_entry`: the harness compiles the parameter entry too (not launched here).
fn run_layout(name: &str, src: &str, steps: usize, seed: u64, param_entry: bool) -> Coverage {
    let cxx = shim::compiler();
    let dims = layouts::dims(src);
    let harness = shim::build(&cxx, name, dims.geometry(), param_entry);
    let mut replay = Replay::new(&dims);
    let mut w = Workload::new(&dims, seed, layouts::knobs(name));
    let mut cov = Coverage::default();
    let debug: Option<usize> = std::env::var("AL_DEBUG_STEP")
        .ok()
        .and_then(|s| s.parse().ok());
    for step in 0..steps {
        let st = w.step();
        let shown = debug.is_some_and(|d| step + 8 >= d && step <= d);
        if shown {
            eprintln!(
                "--- step {step}: residency {} changes {:?}",
                st.residency, st.changes
            );
            for (i, r) in st.rows.iter().enumerate() {
                eprintln!(
                    "  row {i} res {} {:?} q {} kv {} blocks {:?}",
                    st.resident_rows[i], r.0, r.1, r.2, r.3
                );
            }
        }
        let rows = st.rows();
        // One to three blocks per launch.
        let launch = |_: &StepInfo, _: &devfill::Staged| (shim::FILL, 1 + (step % 3) as u32);
        let (info, staged) = replay.step(format!("{name} step {step}"), &st.input(&rows), &launch);
        if shown {
            eprintln!("  staged {staged:?} info {:?} {:?}", info.real, info.padded);
        }
        if info.graphed() {
            cov.graphed += 1;
        } else {
            cov.eager += 1;
        }
        cov.compact += u32::from(staged.compact);
        cov.overflow += u32::from(staged.compact && st.residency);
        cov.patches += u64::from(staged.patches);
        cov.changes += u64::from(staged.changes);
        cov.gathered += u64::from(staged.gathered_rows);
        cov.uploaded += u64::from(staged.uploaded_rows);
        cov.prefill_steps += u32::from(info.padded.prefill > 0);
    }
    replay.check(&harness, name);
    shim::clean(&harness);
    println!("{name}: {steps} steps, {cov:?}");
    cov
}

/// Steps per layout (`AL_SHIM_STEPS` overrides; the default keeps CI short).
fn steps() -> usize {
    std::env::var("AL_SHIM_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn emitted_kernels_match_the_host_fill_on_every_test_layout() {
    let mut overflow = 0;
    for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
        let cov = run_layout(name, src, steps(), 0x5eed + i as u64, i % 2 == 0);
        // The workload reaches every path of the staging builder and the kernels.
        assert!(cov.eager > 0, "{name}: no eager step");
        assert!(cov.compact > 0, "{name}: no compact step");
        assert!(cov.patches > 0, "{name}: no in-place patch");
        assert!(cov.changes > 0, "{name}: no resident change");
        assert!(cov.gathered > 0, "{name}: no gathered row");
        assert!(cov.uploaded > 0, "{name}: no uploaded row");
        assert!(cov.prefill_steps > 0, "{name}: no prefill step");
        let has_graphs = !layouts::dims(src).geometry().buckets.is_empty();
        assert_eq!(cov.graphed > 0, has_graphs, "{name}: graphed steps");
        overflow += cov.overflow;
    }
    assert!(overflow > 0, "no step overflowed the staging capacity");
}

/// Worker blocks the bucket graphs get on an H200 (132 SMs), where the sequence below
/// first failed.
const H200_WORKERS: u32 = 131;

/// What the GPU test `cuda_sanitize.rs` runs on one backend: a step shaped like each
/// bucket (resident rows 0.., blocks numbered from 0, no clears in between), then a new
/// engine — a random workload whose residency view starts from an all -1 table — for
/// `steps` steps. `reset`: tell the builder the view started over. Launches as the CUDA
/// backend with graphs: a matched bucket replays its graph (the fill entry on the bucket's
/// fixed grid), others run the fill entry on the step's grid.
fn bucket_steps_then_a_new_engine(
    name: &str,
    dims: &RuntimeDims,
    steps: usize,
    reset: bool,
    full_verify: bool,
) -> (Replay, Result<(), StagingError>) {
    let nkv = dims.block_table_width() as u64;
    let bucket_grid: Vec<u32> = dims
        .buckets()
        .iter()
        .map(|b| devfill::grid_for(u64::from(b.requests()) * nkv, H200_WORKERS))
        .collect();
    let launch = |info: &StepInfo, staged: &devfill::Staged| match info.bucket {
        Some(b) => (shim::FILL, bucket_grid[b as usize]),
        None => (shim::FILL, staged.grid(H200_WORKERS)),
    };
    let mut replay = Replay::new(dims);
    replay.builder.set_verify(full_verify);
    for (i, &b) in dims.buckets().iter().enumerate() {
        let Some(shaped) = ShapedStep::new(dims, b) else {
            continue;
        };
        let rows = shaped.rows();
        let (info, _) = replay.step(format!("{name} bucket {i}"), &shaped.input(&rows), &launch);
        assert_eq!(
            info.bucket,
            Some(i as u32),
            "{name} bucket {i}: matched bucket"
        );
    }
    if reset {
        replay.builder.forget_residency();
    }
    let mut w = Workload::new(dims, 7, layouts::knobs(name));
    for k in 0..steps {
        let st = w.step();
        let rows = st.rows();
        let what = format!("{name} random step {k}");
        if let Err(e) = replay.try_step(what, &st.input(&rows), &launch) {
            return (replay, Err(e));
        }
    }
    (replay, Ok(()))
}

/// Regression (first seen on an H200, `cuda_sanitize.rs`): after the bucket steps, the
/// resident table held their block ids in rows the new engine believes are `-1`, and the
/// builder still trusted them, so a row passed with trailing `-1`s was gathered with the
/// bucket steps' ids (`mha_block_table[597]: expected 399, got 235` at random step 14 of
/// `hybrid-linear-tight-pool`). Told that the residency view started over, the builder
/// uploads such rows again; the kernels then match the host fill.
#[test]
fn a_new_engine_after_the_bucket_steps_is_filled_from_its_own_residency() {
    let (name, src) = layouts::LAYOUTS
        .iter()
        .find(|(n, _)| *n == "hybrid-linear-tight-pool")
        .unwrap();
    let dims = layouts::dims(src);
    let (replay, result) = bucket_steps_then_a_new_engine(name, &dims, 40, true, true);
    result.unwrap_or_else(|e| panic!("{e}"));
    let cxx = shim::compiler();
    let harness = shim::build(&cxx, "new-engine", dims.geometry(), true);
    replay.check(&harness, name);
    shim::clean(&harness);
}

/// Without the reset, the fully verifying builder refuses the first step whose rows
/// contradict the resident table (instead of filling stale ids); with it, every test layout runs the
/// sequence through.
#[test]
fn a_residency_view_that_started_over_unannounced_is_refused() {
    let mut refused = 0;
    for (name, src) in layouts::LAYOUTS {
        let dims = layouts::dims(src);
        let (_, told) = bucket_steps_then_a_new_engine(name, &dims, 40, true, true);
        told.unwrap_or_else(|e| panic!("{name}, reset: {e}"));
        let (replay, untold) = bucket_steps_then_a_new_engine(name, &dims, 40, false, true);
        if let Err(e) = untold {
            assert!(
                matches!(e, StagingError::ResidentContradictsRow { .. }),
                "{name}: {e}"
            );
            refused += 1;
        } else {
            assert!(
                *name != "hybrid-linear-tight-pool",
                "{name}: the stale rows went unnoticed ({} steps)",
                replay.len()
            );
        }
    }
    assert!(refused > 0);
}

/// `BatchState` drives the steps (with its residency), on a layout with draft tokens:
/// requests whose prompt + output is exactly `max_seq_len`, so their last decode steps
/// write draft tokens past it, into the block table's extra column; long prompts are
/// chunked, and every third step a chunked prefill waits (no row of the step, its entries
/// kept in the resident table). The kernels match the host fill on every step.
#[test]
fn batch_state_steps_reaching_max_seq_len_with_draft_tokens_match_the_host_fill() {
    let (name, src) = layouts::LAYOUTS
        .iter()
        .find(|(n, _)| *n == "hybrid-spec2")
        .unwrap();
    let dims = layouts::dims(src);
    let s = dims.max_seq_len() as u32;
    let s1 = dims.speculative_tokens() as u32 + 1;
    let budget = dims.max_tokens() as u64;
    let mut state = BatchState::new(&dims).unwrap();
    let mut replay = Replay::new(&dims);
    for (p, o) in [
        (s - 2, 2),
        (s - 9, 9),
        (s - 40, 40),
        (100, s - 100),
        (30, 20),
    ] {
        state.admit(p, o).unwrap();
    }
    let launch = |_: &StepInfo, _: &devfill::Staged| (shim::FILL, 2);
    let (mut steps, mut past_the_end, mut waited) = (0u32, 0u32, 0u32);
    while state.live_count() > 0 {
        let live: Vec<_> = state.live().collect();
        for h in live {
            let info = state.info(h).unwrap();
            let left = budget - state.scheduled_tokens();
            match info.phase {
                RequestPhase::Decode if left >= u64::from(s1) => state.schedule_decode(h).unwrap(),
                RequestPhase::Prefill if info.prompt_done > 0 && steps % 3 == 1 => waited += 1,
                RequestPhase::Prefill if left > 0 => {
                    let chunk = (info.prompt_len - info.prompt_done).min(left as u32);
                    state.schedule_prefill(h, chunk).unwrap();
                }
                _ => {}
            }
        }
        past_the_end += state.with_step(|input| {
            replay.step(format!("{name} batch step {steps}"), input, &launch);
            input
                .rows
                .iter()
                .filter(|r| r.phase == Phase::Decode && r.kv_offset + r.query_length > s)
                .count() as u32
        });
        // The first three requests accept no draft, so each reaches its last position
        // with a decode step at kv = S - 2 (writing up to S); the others alternate full
        // and no acceptance.
        let accept = steps % 2 * 2;
        state
            .commit_step(|h| if h.id() <= 3 { 0 } else { accept })
            .unwrap();
        steps += 1;
        assert!(steps < 1000, "the requests do not finish");
    }
    assert!(
        past_the_end >= 3,
        "{past_the_end} decode rows ran past max_seq_len"
    );
    assert!(waited > 0, "no chunked prefill waited");
    let cxx = shim::compiler();
    let harness = shim::build(&cxx, "batch-end", dims.geometry(), true);
    replay.check(&harness, name);
    shim::clean(&harness);
}

/// The per-step check of every build (full verification off) reads only the entries a
/// step sends or gathers, and that is enough for the H200 regression above: the stale
/// rows were gathered, so the unannounced restart is refused there too. On every layout
/// the steps it accepted fill, through the kernels, exactly the host fill's bytes: where
/// full verification refuses earlier (`hybrid-spec2`: a paused row's entry), the stale
/// entry is one no kernel reads.
#[test]
fn the_per_step_check_alone_refuses_the_gathered_stale_rows() {
    let cxx = shim::compiler();
    for (name, src) in layouts::LAYOUTS {
        let dims = layouts::dims(src);
        let (full, full_result) = bucket_steps_then_a_new_engine(name, &dims, 40, false, true);
        let (cheap, cheap_result) = bucket_steps_then_a_new_engine(name, &dims, 40, false, false);
        if *name == "hybrid-linear-tight-pool" {
            let e = cheap_result
                .as_ref()
                .expect_err("the stale rows went unnoticed");
            assert!(
                matches!(e, StagingError::ResidentContradictsRow { .. }),
                "{name}: {e}"
            );
        }
        // Full verification sees at least as much, no later.
        if cheap_result.is_err() {
            assert!(full_result.is_err(), "{name}");
            assert!(full.len() <= cheap.len(), "{name}");
        }
        eprintln!(
            "{name}: full verification {} after {} steps, per-step check {} after {} steps",
            if full_result.is_err() {
                "refused"
            } else {
                "accepted all"
            },
            full.len(),
            if cheap_result.is_err() {
                "refused"
            } else {
                "accepted all"
            },
            cheap.len()
        );
        let harness = shim::build(&cxx, &format!("per-step-{name}"), dims.geometry(), true);
        cheap.check(&harness, name);
        shim::clean(&harness);
    }
}

/// The value of `constexpr al_u32 NAME = ...u;` in the fill kernels' source (the one
/// statement of the kernels' own thresholds).
fn kernel_constant(name: &str) -> u32 {
    let src = attention_layout::codegen::emit_cuda::FILL_CUH;
    let decl = format!("constexpr al_u32 {name} = ");
    let at = src
        .find(&decl)
        .unwrap_or_else(|| panic!("{name} is not in fill.cuh"))
        + decl.len();
    let value: String = src[at..].chars().take_while(char::is_ascii_digit).collect();
    value.parse().unwrap()
}

/// What the steady sequences reached.
#[derive(Default, Debug)]
struct SteadyCoverage {
    steps: u64,
    /// Delta steps that sent only the header.
    header_only: u64,
    /// Delta steps without edits (every row advanced on the device).
    delta_no_edits: u64,
    /// Delta steps with edits (rows finished, replaced, resampled, partially accepted).
    delta_edits: u64,
    /// Delta steps with more edits than every thread of the kernel reads (the shared row
    /// map's path, `AL_EDITS_BROADCAST` in `fill.cuh`).
    delta_many_edits: u64,
    /// Delta steps with block-table changes (rows crossing into a new block).
    delta_changes: u64,
    /// Steps that keep the rows of the step before (no request scan in the kernel)...
    kept_rows: u64,
    /// ... of them with patches (which the rows' owners write) ...
    kept_patches: u64,
    /// ... and with padding rows (whose totals the kernel derives too).
    kept_padding: u64,
    /// Full steps (request records sent).
    full: u64,
    /// The most active rows of a step.
    rows_max: u64,
}

impl SteadyCoverage {
    fn add(&mut self, staged: &devfill::Staged) {
        self.steps += 1;
        self.rows_max = self.rows_max.max(u64::from(staged.info.real.requests()));
        if !staged.delta {
            self.full += 1;
            return;
        }
        if staged.bytes == attention_layout::codegen::emit_cuda::abi::HEADER_BYTES {
            self.header_only += 1;
        }
        if staged.edits == 0 {
            self.delta_no_edits += 1;
        } else {
            self.delta_edits += 1;
        }
        if staged.edits > kernel_constant("AL_EDITS_BROADCAST") {
            self.delta_many_edits += 1;
        }
        if staged.changes > 0 {
            self.delta_changes += 1;
        }
        if staged.kept_rows {
            self.kept_rows += 1;
            self.kept_patches += u64::from(staged.patches > 0);
            self.kept_padding +=
                u64::from(staged.info.padded.requests() > staged.info.real.requests());
        }
    }
}

/// Runs steady sequences driven with `knobs` through the kernels on every test layout
/// (the parameter entry on every other layout's small bucketed images) and checks every step's bytes against the
/// host fill; returns each layout's coverage, with the driver's finished requests.
fn run_steady(
    knobs: support::steady::SteadyKnobs,
    seed: u64,
    threads: u32,
) -> Vec<(&'static str, SteadyCoverage, u64)> {
    run_steady_on(layouts::LAYOUTS, knobs, seed, threads)
}

/// [`run_steady`] over `layouts`.
fn run_steady_on(
    layouts: &[(&'static str, &str)],
    knobs: support::steady::SteadyKnobs,
    seed: u64,
    threads: u32,
) -> Vec<(&'static str, SteadyCoverage, u64)> {
    use support::steady::SteadyDriver;
    let cxx = shim::compiler();
    let mut out = Vec::new();
    for (i, (name, src)) in layouts.iter().enumerate() {
        let dims = layouts::dims(src);
        let param_entry = i % 2 == 1;
        let mut replay = Replay::new(&dims);
        let mut driver = SteadyDriver::new(&dims, seed + i as u64, knobs);
        let mut cov = SteadyCoverage::default();
        let params = std::cell::Cell::new(0u64);
        for k in 0..steps() {
            // Every other bucketed step whose image fits runs the parameter entry
            // (the image passed by value, as `CudaOptions::param_images` launches it).
            let launch =
                |info: &StepInfo, staged: &devfill::Staged| match (param_entry, info.bucket) {
                    (true, Some(_))
                        if k % 2 == 1 && staged.bytes <= emit_cuda::abi::PARAM_IMAGE_BYTES =>
                    {
                        params.set(params.get() + 1);
                        (shim::PARAM, 1 + (k % 3) as u32)
                    }
                    _ => (shim::FILL, 1 + (k % 3) as u32),
                };
            // Now and then the builder forgets what the device's block table holds: every
            // row is then sent again, in a full step that refreshes the request table.
            if k % 37 == 36 {
                replay.builder.forget_residency();
            }
            let (_, staged) =
                driver.step(|input| replay.step(format!("{name} steady step {k}"), input, &launch));
            cov.add(&staged);
        }
        let harness = shim::build_with_threads(
            &cxx,
            &format!("steady-{name}-{seed:x}"),
            dims.geometry(),
            param_entry,
            threads,
        );
        replay.check(&harness, name);
        shim::clean(&harness);
        println!(
            "{name}: {cov:?}, {} decode-only steps, {} finished, {} through the parameter entry",
            driver.decode_only_steps,
            driver.finished,
            params.get()
        );
        if param_entry && !dims.buckets().is_empty() {
            assert!(params.get() > 0, "{name}: no step ran a parameter entry");
        }
        out.push((*name, cov, driver.finished));
    }
    out
}

/// Steady decode sequences (`support/steady.rs`: `BatchState` steps where rows advance,
/// cross into new blocks, finish and are replaced, prefill and start decoding, change
/// their sampling, accept part of their drafts, with and without token ids) go through
/// the kernels as delta steps wherever the rows advanced, full steps (every 37th, after
/// the builder forgot the residency) refresh the device's request table, and every step's
/// bytes equal the host fill's, on every test layout (the parameter entry on every other
/// layout's small bucketed images).
#[test]
fn steady_decode_sequences_match_the_host_fill_through_delta_steps() {
    let mut total = SteadyCoverage::default();
    for (name, cov, finished) in run_steady(
        support::steady::SteadyKnobs::DEFAULT,
        0x57ead,
        shim::THREADS,
    ) {
        assert!(
            cov.delta_no_edits > 0,
            "{name}: no delta step without edits"
        );
        assert!(cov.delta_edits > 0, "{name}: no delta step with edits");
        assert!(cov.full > 0, "{name}: no full step");
        assert!(finished > 0, "{name}: no request finished");
        assert!(cov.kept_rows > 0, "{name}: no step kept its rows");
        total.header_only += cov.header_only;
        total.delta_changes += cov.delta_changes;
        total.kept_patches += cov.kept_patches;
        total.kept_padding += cov.kept_padding;
    }
    assert!(total.header_only > 0, "no delta step sent only its header");
    assert!(
        total.delta_changes > 0,
        "no delta step carried block-table changes"
    );
    assert!(total.kept_patches > 0, "no step kept its rows with patches");
    assert!(
        total.kept_padding > 0,
        "no step kept its rows with padding rows"
    );
}

/// A layout whose steady runs keep more than 64 rows live (the test layouts' keep at most
/// 32): with four warps per block its rows span three warps.
const WIDE: (&str, &str) = (
    "mha-96-rows",
    r#"
model = "mha"
max_requests = 96
max_tokens = 256
max_seq_len = 4096
block_size = 16
[graphs]
count = 8
"#,
);

/// The steady sequences again with four warps per block (128 threads), where the other
/// tests run one: the block-wide scans run over four warps, whole warps own no row (as
/// most of the GPU's 16 warps do on a 256-row layout: they skip the tails' patch loop),
/// and on a 96-row layout the rows span three warps, so the scans' prefixes cross warps
/// that hold rows. Every step's bytes equal the host fill's.
#[test]
fn steady_decode_sequences_match_the_host_fill_on_four_warps() {
    let mut layouts = layouts::LAYOUTS.to_vec();
    layouts.push(WIDE);
    // Twice the default admissions, so that the wide layout fills past two warps' rows.
    let knobs = support::steady::SteadyKnobs {
        admit: 0.6,
        ..support::steady::SteadyKnobs::DEFAULT
    };
    let runs = run_steady_on(&layouts, knobs, 0x4a4b5, 128);
    let no_edits: u64 = runs.iter().map(|(_, c, _)| c.delta_no_edits).sum();
    let changes: u64 = runs.iter().map(|(_, c, _)| c.delta_changes).sum();
    let kept: u64 = runs.iter().map(|(_, c, _)| c.kept_rows).sum();
    assert!(no_edits > 0, "no delta step without edits");
    assert!(changes > 0, "no delta step carried block-table changes");
    assert!(kept > 0, "no step kept its rows");
    let wide = runs
        .iter()
        .find(|(name, ..)| *name == WIDE.0)
        .map(|(_, c, _)| c);
    assert!(
        wide.is_some_and(|c| c.rows_max > 64),
        "{}: no step with rows in a third warp ({wide:?})",
        WIDE.0
    );
}

/// Steady sequences where many rows change their sampling or accept part of their drafts
/// each step: delta steps then carry more edits than every thread of the kernel reads
/// (`AL_EDITS_BROADCAST`), which go through the kernel's shared row map, and every step's
/// bytes still equal the host fill's.
#[test]
fn steady_sequences_with_many_edits_per_step_match_the_host_fill() {
    let knobs = support::steady::SteadyKnobs {
        resample: 0.3,
        partial_accept: 0.3,
        ..support::steady::SteadyKnobs::DEFAULT
    };
    let runs = run_steady(knobs, 0xed175, shim::THREADS);
    let many: u64 = runs.iter().map(|(_, c, _)| c.delta_many_edits).sum();
    let few: u64 = runs
        .iter()
        .map(|(_, c, _)| c.delta_edits - c.delta_many_edits)
        .sum();
    assert!(
        many > 0,
        "no delta step had more edits than the kernel reads on every thread"
    );
    assert!(few > 0, "no delta step had a few edits");
}
