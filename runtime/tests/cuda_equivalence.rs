//! GPU: on random workloads (requests arrive, grow, pause, get holes and finish; steps
//! with and without residency, token ids and intermediate offsets), every field's live
//! bytes from the CUDA backend equal the host fill's, step after step:
//!
//! * device fill with graphs (bucketed steps replay graphs, the others run eagerly),
//!   at least 10,000 steps per layout;
//! * host fill on the device (the whole buffer copied), with graphs, 10,000 steps;
//! * device fill without graphs, 2,000 steps;
//! * device fill with graphs on steady decode sequences (`support/steady.rs`: delta
//!   steps, rows finishing and replaced, blocks crossed), at least 10,000 steps per layout;
//! * device fill with graphs on steps that end through Megatron's async-scheduling
//!   contract (`prepare`, `commit_sampled`, `resolve` with rows finishing at random and the
//!   holes filled in Megatron's order, replacements admitted, the ordinary `commit_step`
//!   now and then), until 10,000 prepared steps per layout.
//!
//! Layouts: `support/layouts.rs` (hybrid with speculative tokens, MHA with tensor
//! parallelism, pure Mamba with i32 indices and no graphs, linear ladders, explicit bucket
//! tables, a tight KV pool, long rows), the bundled Nemotron-H-8B and the same model with
//! the bucket table `tune` chose (`nemotron-h-8b-tuned`).
//!
//! And steps built by a `BatchState` with prefix caching (shared system prompts, so blocks
//! appear in several rows of the block table and the device-resident table receives the
//! same block in several rows; a hybrid layout with a Mamba cache also sends the
//! intermediate offsets the batch state computes), device fill with graphs, under both
//! eviction policies.
//!
//! Run on a GPU machine: `cargo test --features cuda --test cuda_equivalence -- --include-ignored`
//! (or the staged `.gpu/run-all -- --include-ignored`).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

#[cfg(feature = "cuda")]
mod gpu {
    use std::collections::HashMap;

    use attention_layout::batch::{BatchError, BatchState, PrefixOptions, RequestPhase};
    use attention_layout::cuda::FillMode;
    use attention_layout::{Dims, EvictionPolicy, HostMetadata, LayoutSpec, Phase, RuntimeDims};

    use super::support::gpu::{
        backend, backend_with_param_images, require_device, step_and_compare,
        step_and_compare_origin,
    };
    use super::support::layouts;
    use super::support::prepared::PreparedDriver;
    use super::support::workload::{Rng, Workload};

    /// Steps per layout for the main (device fill, graphs) run.
    fn steps() -> usize {
        std::env::var("AL_GPU_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10_000)
    }

    /// Runs `n` steps; returns (graphed, eager) step counts.
    fn run(
        name: &str,
        dims: &RuntimeDims,
        mode: FillMode,
        graphs: bool,
        n: usize,
        seed: u64,
    ) -> (usize, usize) {
        let mut gpu = backend(dims, mode, graphs);
        let mut cpu = HostMetadata::new(dims.clone());
        let mut w = Workload::new(dims, seed, layouts::knobs(name));
        let (mut graphed, mut eager) = (0usize, 0usize);
        for step in 0..n {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let what = format!("{name} {mode:?} graphs={graphs} step {step}");
            if step_and_compare(&what, &mut cpu, &mut gpu, &input) {
                graphed += 1;
            } else {
                eager += 1;
            }
            let expect_graph = graphs && cpu.info().graphed();
            assert_eq!(
                gpu.last_step_graphed(),
                expect_graph,
                "{what}: graph replay"
            );
        }
        eprintln!("{name} {mode:?} graphs={graphs}: {n} steps, {graphed} graphed, {eager} eager");
        if graphs && !dims.geometry().buckets.is_empty() {
            assert!(graphed > 0, "{name}: no step replayed a graph");
        }
        (graphed, eager)
    }

    fn all_layouts() -> Vec<(String, RuntimeDims)> {
        let mut v: Vec<(String, RuntimeDims)> = layouts::LAYOUTS
            .iter()
            .map(|(n, s)| ((*n).to_owned(), layouts::dims(s)))
            .collect();
        // The bundled layout with Megatron's ladder, and with a table tuned by `tune`.
        for name in ["nemotron-h-8b", "nemotron-h-8b-tuned"] {
            let src = attention_layout::layouts::bundled(name).unwrap();
            let spec = LayoutSpec::from_toml_str(src, name).unwrap();
            v.push((
                name.to_owned(),
                RuntimeDims::new(attention_layout::Geometry::new(&spec).unwrap()),
            ));
        }
        v
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn device_fill_with_graphs_matches_the_host_fill() {
        require_device();
        let (mut graphed, mut eager) = (0, 0);
        for (i, (name, dims)) in all_layouts().iter().enumerate() {
            let (g, e) = run(
                name,
                dims,
                FillMode::Device,
                true,
                steps(),
                0xd15c + i as u64,
            );
            graphed += g;
            eager += e;
        }
        assert!(
            graphed > 0 && eager > 0,
            "graph and eager steps: {graphed}, {eager}"
        );
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn host_fill_on_the_device_matches_the_host_fill() {
        require_device();
        let (mut graphed, mut eager) = (0, 0);
        for (i, (name, dims)) in all_layouts().iter().enumerate() {
            let (g, e) = run(name, dims, FillMode::Host, true, steps(), 0x4057 + i as u64);
            graphed += g;
            eager += e;
        }
        assert!(
            graphed > 0 && eager > 0,
            "graph and eager steps: {graphed}, {eager}"
        );
    }

    /// Steady decode sequences (`support/steady.rs`): rows advance step after step,
    /// cross into new blocks, finish and are replaced (holes filled by the last row),
    /// prefill then decode, change sampling, accept part of their drafts; with and without
    /// token ids. Most steps are delta steps (the device advances its request table); every
    /// 37th step follows a `reset_residency`, so a full step refreshes the table. At least
    /// 10,000 steps per layout, each compared with the host fill.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn device_fill_matches_the_host_fill_on_steady_decode_sequences() {
        use super::support::steady::{SteadyDriver, SteadyKnobs};
        use attention_layout::MetadataBackend;
        require_device();
        let header = attention_layout::codegen::emit_cuda::abi::HEADER_BYTES;
        let mut header_only_steps = 0;
        for (i, (name, dims)) in all_layouts().iter().enumerate() {
            let mut gpu = backend(dims, FillMode::Device, true);
            let mut cpu = HostMetadata::new(dims.clone());
            let mut driver = SteadyDriver::new(dims, 0x57ead + i as u64, SteadyKnobs::DEFAULT);
            let (mut delta, mut full, mut header_only, mut graphed) = (0u64, 0u64, 0u64, 0u64);
            let mut kept = 0u64;
            let n = steps();
            for k in 0..n {
                if k % 37 == 36 {
                    gpu.reset_residency();
                }
                let what = format!("{name} steady step {k}");
                graphed += u64::from(
                    driver.step(|input| step_and_compare(&what, &mut cpu, &mut gpu, input)),
                );
                let staged = *gpu.last_staged();
                if staged.delta {
                    delta += 1;
                    header_only += u64::from(staged.bytes == header);
                    kept += u64::from(staged.kept_rows);
                } else {
                    full += 1;
                }
            }
            eprintln!(
                "{name}: {n} steady-sequence steps, {delta} delta ({header_only} header only, {kept} kept rows), {full} full, {graphed} graphed, {} finished",
                driver.finished
            );
            assert!(delta > 0 && full > 0, "{name}: delta and full steps");
            assert!(kept > 0, "{name}: no step kept its rows (no request scan)");
            assert!(driver.finished > 0, "{name}: no request finished");
            header_only_steps += header_only;
        }
        assert!(header_only_steps > 0, "no step sent only its header");
    }

    /// Steps ended through prepare / commit_sampled / resolve (docs/ASYNC-SCHEDULING.md):
    /// every decode-only step without paused rows is prepared (unless the pool cannot serve
    /// it), its sampled and draft ids committed, and resolved with a random mask (no row,
    /// 2 % or 10 % of the rows finishing); the other steps end with `commit_step` or a
    /// resolve; replacements are admitted. Runs until 10,000 prepared steps per layout (at
    /// most 30,000 steps; at least 5,000 must be prepared), each step compared byte for
    /// byte with the host fill.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn device_fill_matches_the_host_fill_on_prepared_steps() {
        prepared_steps(false);
    }

    /// The same with the small graphed images in the kernels' parameters
    /// (`CudaOptions::param_images`: every steady step, and the small full steps).
    #[test]
    #[ignore = "needs a CUDA device"]
    fn device_fill_with_parameter_images_matches_the_host_fill_on_prepared_steps() {
        prepared_steps(true);
    }

    fn prepared_steps(params: bool) {
        require_device();
        for (i, (name, dims)) in all_layouts().iter().enumerate() {
            let mut gpu = if params {
                backend_with_param_images(dims)
            } else {
                backend(dims, FillMode::Device, true)
            };
            let mut cpu = HostMetadata::new(dims.clone());
            let mut drv = PreparedDriver::new(dims, 0xa57c + i as u64);
            let n = steps();
            let (mut graphed, mut vouched, mut advanced, mut kept) =
                (0usize, 0usize, 0usize, 0usize);
            let mut k = 0usize;
            // Until `n` prepared steps (or 3n steps in all).
            while drv.prepared < n && k < 3 * n {
                k += 1;
                drv.schedule();
                let what = format!("{name} prepared-path step {k}");
                // With the step's origin, as `step_batch` runs it: steps that advance the
                // one before are staged from their changes alone (`try_advance`).
                let ran = drv.state.with_step_origin(|input, origin| {
                    vouched += usize::from(origin.advances());
                    graphed += usize::from(step_and_compare_origin(
                        &what,
                        &mut cpu,
                        &mut gpu,
                        input,
                        Some(origin),
                    ));
                    advanced += usize::from(gpu.last_staged().advanced);
                    kept += usize::from(gpu.last_staged().kept_rows);
                    PreparedDriver::active_rows(input)
                });
                drv.end_step(&ran, &what);
            }
            eprintln!(
                "{name}: {k} steps, {} prepared, {vouched} vouched for, {advanced} staged by try_advance, {kept} kept rows, {graphed} graphed, {} finished",
                drv.prepared, drv.finished
            );
            assert!(kept > 0, "{name}: no step kept its rows (no request scan)");
            assert!(
                drv.prepared * 2 >= n,
                "{name}: only {} of {k} steps prepared",
                drv.prepared
            );
            assert!(drv.finished > 0, "{name}: no request finished");
            if !dims.geometry().buckets.is_empty() {
                assert!(
                    advanced * 10 >= vouched * 9 && advanced > 0,
                    "{name}: only {advanced} of {vouched} vouched steps staged by try_advance"
                );
            }
        }
    }

    /// Runs `n` steps of a random engine over a `BatchState` with prefix caching: prompts
    /// start with one of three shared system prompts (2 to 4 blocks); returns the steps
    /// whose active rows shared a block.
    fn run_prefix(
        name: &str,
        dims: &RuntimeDims,
        policy: EvictionPolicy,
        slots: Option<usize>,
        n: usize,
        seed: u64,
    ) -> usize {
        let mut gpu = backend(dims, FillMode::Device, true);
        let mut cpu = HostMetadata::new(dims.clone());
        let mut state = BatchState::with_prefix_caching(
            dims,
            PrefixOptions {
                policy,
                mamba_cache_slots: slots,
            },
        )
        .unwrap();
        let mut rng = Rng::new(seed);
        let b = dims.block_size() as i64;
        let s1 = dims.speculative_tokens() as u64 + 1;
        let budget = dims.max_tokens() as u64;
        let (mut shared_steps, mut skipped, mut compared) = (0usize, 0u64, 0usize);
        for step in 0..n {
            for _ in 0..rng.range_inclusive(0, 3) {
                if !state.can_admit() {
                    break;
                }
                let k = rng.below(3) as i64;
                let mut p: Vec<i64> = (0..b * (k + 2)).map(|i| 1_000_000 * (k + 1) + i).collect();
                let extra = rng.range_inclusive(1, 3 * b as u32);
                p.extend((0..extra).map(|_| rng.range(1, 50) as i64));
                match state.admit_prompt(&p, rng.range_inclusive(1, 16)) {
                    Ok(_) | Err(BatchError::ExceedsPool { .. } | BatchError::TooLong { .. }) => {}
                    Err(e) => panic!("{name}: admit: {e}"),
                }
            }
            let live: Vec<_> = state.live().collect();
            for h in live {
                if rng.chance(0.01) {
                    state.release(h).unwrap();
                    continue;
                }
                let i = state.info(h).unwrap();
                let left = budget - state.scheduled_tokens();
                let r = match i.phase {
                    RequestPhase::Decode if left >= s1 => state.schedule_decode(h),
                    RequestPhase::Prefill if left > 0 => {
                        let rem = i.prompt_len - i.prompt_done;
                        state.schedule_prefill(h, rng.range_inclusive(1, rem.min(left as u32)))
                    }
                    _ => continue,
                };
                match r {
                    Ok(()) => {
                        skipped += state
                            .prefix_hit(h)
                            .unwrap()
                            .map_or(0, |x| u64::from(x.skip_tokens));
                    }
                    Err(BatchError::OutOfBlocks { .. } | BatchError::TokenBudget { .. }) => {}
                    Err(e) => panic!("{name}: schedule: {e}"),
                }
            }
            let what = format!("{name} prefix caching {} step {step}", policy.name());
            let ran = state.with_step(|input| {
                let active: Vec<_> = input
                    .rows
                    .iter()
                    .filter(|r| r.phase != Phase::Paused)
                    .collect();
                if active.is_empty() {
                    return None;
                }
                let mut owners: HashMap<i32, usize> = HashMap::new();
                for r in &active {
                    for &blk in r.blocks {
                        *owners.entry(blk).or_default() += 1;
                    }
                }
                step_and_compare(&what, &mut cpu, &mut gpu, input);
                Some(owners.values().any(|&c| c > 1))
            });
            match ran {
                Some(shared) => {
                    compared += 1;
                    shared_steps += usize::from(shared);
                    state.commit_step(|_| 0).unwrap();
                }
                None => {
                    // Nothing could run (blocks short): the step is not sent, its changes
                    // stay pending; free room for the next one.
                    if let Some(h) = state.live().last() {
                        state.release(h).unwrap();
                    }
                }
            }
        }
        eprintln!(
            "{name} prefix caching {}: {n} steps, {compared} compared, {shared_steps} with shared blocks, {skipped} prompt tokens skipped",
            policy.name()
        );
        assert!(skipped > 0, "{name}: no prefix hit skipped a token");
        shared_steps
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn prefix_caching_steps_with_shared_blocks_match_the_host_fill() {
        require_device();
        let n = (steps() / 5).max(1);
        let mut shared = 0;
        for (i, (name, slots)) in [("nemotron-h-8b", Some(64)), ("llama-3.1-8b", None)]
            .into_iter()
            .enumerate()
        {
            let src = attention_layout::layouts::bundled(name).unwrap();
            let spec = LayoutSpec::from_toml_str(src, name).unwrap();
            let dims = RuntimeDims::new(attention_layout::Geometry::new(&spec).unwrap());
            for (j, policy) in [EvictionPolicy::RefZero, EvictionPolicy::Lru]
                .into_iter()
                .enumerate()
            {
                shared += run_prefix(
                    name,
                    &dims,
                    policy,
                    slots,
                    n,
                    0x9f1c + 2 * i as u64 + j as u64,
                );
            }
        }
        assert!(shared > 0, "no step had a block in several rows");
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn eager_device_fill_matches_the_host_fill() {
        require_device();
        for (i, (name, dims)) in all_layouts().iter().enumerate() {
            let n = (steps() / 5).max(1);
            let (g, _) = run(name, dims, FillMode::Device, false, n, 0xea6e + i as u64);
            assert_eq!(g, 0, "{name}: graphs are off");
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
