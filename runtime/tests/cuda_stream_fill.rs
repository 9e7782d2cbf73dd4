//! GPU: the fill on a caller's stream (`cuda::StreamFill`), eagerly and captured into a
//! graph of the caller's that is replayed step after step (prepare before each replay),
//! equals the host fill on every step of steady decode sequences (`support/steady.rs`:
//! delta steps, rows finishing and replaced, blocks crossed); its misuse is refused with
//! typed errors.
//!
//! Run on a GPU machine: `cargo test --features cuda --test cuda_stream_fill -- --include-ignored`.

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
    use attention_layout::backend::{BackendError, StreamFillError};
    use attention_layout::cuda::{FillMode, StreamFill};
    use attention_layout::{HostMetadata, MetadataView, RuntimeDims};
    use cudarc::driver::{CudaStream, sys};

    use super::support::gpu::{backend, compare_step, require_device};
    use super::support::layouts;
    use super::support::steady::{SteadyDriver, SteadyKnobs};

    /// Steps per layout (`AL_GPU_STEPS` overrides).
    fn steps() -> usize {
        std::env::var("AL_GPU_STEPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(2_000, |n: usize| n / 5)
            .max(100)
    }

    /// Runs `n` steady steps through `run` (which prepares and launches the step) and
    /// compares each with the host fill. Returns the delta steps.
    fn compare_steps(
        what: &str,
        dims: &RuntimeDims,
        fill: &mut StreamFill,
        stream: &CudaStream,
        n: usize,
        seed: u64,
        run: &mut dyn FnMut(&mut StreamFill),
    ) -> usize {
        let mut cpu = HostMetadata::new(dims.clone());
        let mut driver = SteadyDriver::new(dims, seed, SteadyKnobs::DEFAULT);
        let mut delta = 0;
        for k in 0..n {
            let step_what = format!("{what} step {k}");
            driver.step(|input| {
                let want = *cpu.fill(input).unwrap();
                let got = fill
                    .prepare(input)
                    .unwrap_or_else(|e| panic!("{step_what}: prepare: {e}"));
                assert_eq!(want, got, "{step_what}: step info");
                run(fill);
                let snap = fill.download(stream).unwrap();
                let view: MetadataView<'_> = snap.view(dims);
                compare_step(&step_what, &cpu.view(), &view, input.token_ids.is_none());
            });
            delta += usize::from(fill.last_staged().delta);
        }
        delta
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn the_fill_on_a_callers_stream_matches_the_host_fill_eagerly_and_captured() {
        require_device();
        for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
            let dims = layouts::dims(src);
            let b = backend(&dims, FillMode::Device, true, true);
            let ctx = b.stream().context().clone();
            let stream = ctx.new_stream().unwrap();

            // Eagerly, one enqueue per prepare.
            let mut fill = b.stream_fill().unwrap();
            let eager = compare_steps(
                &format!("{name} eager"),
                &dims,
                &mut fill,
                &stream,
                steps(),
                0x5f + i as u64,
                &mut |f| f.enqueue_on(&stream).unwrap(),
            );
            assert!(eager > 0, "{name}: no delta step");

            // Captured once into the caller's graph, then replayed: prepare, launch.
            let mut fill = b.stream_fill().unwrap();
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .unwrap();
            let enqueued = fill.enqueue_on(&stream);
            let graph = stream
                .end_capture(sys::CUgraphInstantiate_flags(0))
                .unwrap()
                .expect("a graph");
            enqueued.unwrap();
            assert!(fill.captured());
            let captured = compare_steps(
                &format!("{name} captured"),
                &dims,
                &mut fill,
                &stream,
                steps(),
                0x6f + i as u64,
                &mut |_| graph.launch().unwrap(),
            );
            assert!(captured > 0, "{name}: no delta step");
            // The graph's replays own the staging now.
            assert!(matches!(
                fill.enqueue_on(&stream),
                Err(BackendError::StreamFill(StreamFillError::AlreadyCaptured))
            ));
            eprintln!("{name}: {eager} eager and {captured} captured delta steps");
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn an_enqueue_without_a_new_step_and_a_host_fill_backend_are_refused() {
        require_device();
        let (_, src) = layouts::LAYOUTS[0];
        let dims = layouts::dims(src);
        let b = backend(&dims, FillMode::Device, false, false);
        let stream = b.stream().context().new_stream().unwrap();
        let mut fill = b.stream_fill().unwrap();
        assert!(matches!(
            fill.enqueue_on(&stream),
            Err(BackendError::StreamFill(StreamFillError::NotPrepared))
        ));
        let host = backend(&dims, FillMode::Host, false, false);
        assert!(matches!(
            host.stream_fill(),
            Err(BackendError::StreamFill(StreamFillError::HostFill))
        ));
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
