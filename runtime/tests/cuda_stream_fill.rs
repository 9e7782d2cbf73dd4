//! GPU: the fill on a caller's stream (`cuda::StreamFill`), eagerly and captured into a
//! graph of the caller's that is replayed step after step (prepare before each replay),
//! and as a `cuda::FillGraph` (the graph's fill node pointed at each step, small images in
//! the kernel's parameters), equals the host fill on every step of steady decode sequences
//! (`support/steady.rs`: delta steps, rows finishing and replaced, blocks crossed) and of
//! an async-scheduling engine's prepared steps; its misuse is refused with typed errors.
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
    use attention_layout::cuda::{FillGraph, FillMode, StreamFill};
    use attention_layout::{Dims, HostMetadata, MetadataView, RuntimeDims};
    use cudarc::driver::{CudaStream, DevicePtr, result, sys};

    use super::support::gpu::{backend, backend_with_param_images, compare_step, require_device};
    use super::support::layouts;
    use super::support::prepared::PreparedDriver;
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
            let b = backend(&dims, FillMode::Device, true);
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

    /// A fill graph: the fill captured with a consumer after it (a copy of the whole
    /// metadata buffer), the node pointed at each step before its launch — the parameter
    /// entry with the image in the kernel's parameters for small bucketed images, the
    /// fill entry on the mapped staging for the rest. Steady sequences through `prepare`,
    /// then an async-scheduling engine's steps through `prepare_with_origin` (rows
    /// finishing and crossing into new blocks at random): the metadata and the consumer's
    /// copy equal the host fill on every step, and both kinds of node ran.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_fill_graph_matches_the_host_fill_with_small_images_in_the_kernels_parameters() {
        require_device();
        let mut staging_steps = 0usize;
        for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
            let dims = layouts::dims(src);
            let bucketed = !dims.geometry().buckets.is_empty();
            let b = backend_with_param_images(&dims);
            let stream = b.stream().context().new_stream().unwrap();
            let total = dims.total_bytes();
            let shadow = stream.alloc_zeros::<u8>(total).unwrap();
            let shadow_ptr = shadow.device_ptr(&stream).0;
            stream.synchronize().unwrap();
            let mut g = b
                .stream_fill()
                .unwrap()
                .capture(&stream, |s, meta| {
                    // SAFETY: `shadow` holds `total` bytes and outlives every replay (it
                    // is dropped after the graph below); `meta` is the fill's metadata
                    // buffer of `total` bytes; the copy runs on the capturing stream,
                    // after the fill node.
                    unsafe { result::memcpy_dtod_async(shadow_ptr, meta, total, s.cu_stream()) }
                        .map_err(|e| BackendError::Cuda(e.to_string()))
                })
                .unwrap();
            // An eager-only layout has no bucket, so no parameter entry.
            assert_eq!(g.has_param_entries(), bucketed, "{name}: parameter entry");
            let mut cpu = HostMetadata::new(dims.clone());
            let (mut in_params, mut on_staging) = (0usize, 0usize);
            let mut check = |what: &str,
                             g: &mut FillGraph,
                             cpu: &HostMetadata<RuntimeDims>,
                             engine_ids: bool| {
                g.launch().unwrap_or_else(|e| panic!("{what}: launch: {e}"));
                let snap = g.download().unwrap();
                compare_step(what, &cpu.view(), &snap.view(&dims), engine_ids);
                let copied = stream.clone_dtoh(&shadow).unwrap();
                assert!(
                    copied == snap.bytes(),
                    "{what}: the consumer after the fill node saw other metadata"
                );
                if g.image_in_params() {
                    in_params += 1;
                } else {
                    on_staging += 1;
                }
            };
            let mut driver = SteadyDriver::new(&dims, 0x7f + i as u64, SteadyKnobs::DEFAULT);
            for k in 0..steps() {
                let what = format!("{name} fill graph step {k}");
                driver.step(|input| {
                    let want = *cpu.fill(input).unwrap();
                    let got = g
                        .prepare(input)
                        .unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
                    assert_eq!(want, got, "{what}: step info");
                    check(&what, &mut g, &cpu, input.token_ids.is_none());
                });
            }
            // An async-scheduling engine: a fresh batch state, so the device's tables
            // start over.
            g.reset_residency();
            let mut cpu = HostMetadata::new(dims.clone());
            let mut drv = PreparedDriver::new(&dims, 0x8f + i as u64);
            let n = steps();
            let mut k = 0usize;
            while drv.prepared < n && k < 3 * n {
                k += 1;
                drv.schedule();
                let what = format!("{name} fill graph prepared-path step {k}");
                let ran = drv.state.with_step_origin(|input, origin| {
                    let want = *cpu.fill(input).unwrap();
                    let got = g
                        .prepare_with_origin(input, origin)
                        .unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
                    assert_eq!(want, got, "{what}: step info");
                    check(&what, &mut g, &cpu, input.token_ids.is_none());
                    PreparedDriver::active_rows(input)
                });
                drv.end_step(&ran, &what);
            }
            eprintln!(
                "{name}: {in_params} steps with the image in the parameters, {on_staging} on the staging; {} prepared, {} finished",
                drv.prepared, drv.finished
            );
            if bucketed {
                assert!(
                    in_params > 0,
                    "{name}: no step with its image in the parameters"
                );
            } else {
                assert_eq!(in_params, 0, "{name}: parameter steps without a bucket");
            }
            staging_steps += on_staging;
            drop(g);
            drop(shadow);
        }
        // Steps too large for the parameters (prefills, many finished rows) switch the node
        // back to the staging: some layouts have them at any step count.
        assert!(staging_steps > 0, "no step read the mapped staging");
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_fill_graph_enforces_one_launch_per_prepare_and_a_failed_capture_ends() {
        require_device();
        let (_, src) = layouts::LAYOUTS[0];
        let dims = layouts::dims(src);
        let b = backend_with_param_images(&dims);
        let stream = b.stream().context().new_stream().unwrap();
        // The consumers' error comes back and the capture has ended.
        let failed = b.stream_fill().unwrap().capture(&stream, |_, _| {
            Err(BackendError::Cuda("a consumer failed".into()))
        });
        assert!(matches!(failed, Err(BackendError::Cuda(m)) if m == "a consumer failed"));
        assert_eq!(
            stream.capture_status().unwrap(),
            sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
        );
        // A fill captured by `enqueue_on` cannot be captured again.
        let mut fill = b.stream_fill().unwrap();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .unwrap();
        let enqueued = fill.enqueue_on(&stream);
        let _graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .unwrap();
        enqueued.unwrap();
        assert!(matches!(
            fill.capture(&stream, |_, _| Ok::<_, BackendError>(())),
            Err(BackendError::StreamFill(StreamFillError::AlreadyCaptured))
        ));
        // One launch per prepare.
        let mut g = b
            .stream_fill()
            .unwrap()
            .capture(&stream, |_, _| Ok::<_, BackendError>(()))
            .unwrap();
        assert!(matches!(
            g.launch(),
            Err(BackendError::StreamFill(StreamFillError::NotPrepared))
        ));
        let mut cpu = HostMetadata::new(dims.clone());
        let mut driver = SteadyDriver::new(&dims, 0x9f, SteadyKnobs::DEFAULT);
        driver.step(|input| {
            cpu.fill(input).unwrap();
            g.prepare(input).unwrap();
            assert!(matches!(
                g.prepare(input),
                Err(BackendError::StreamFill(StreamFillError::NotLaunched))
            ));
            g.launch().unwrap();
            assert!(matches!(
                g.launch(),
                Err(BackendError::StreamFill(StreamFillError::NotPrepared))
            ));
            let snap = g.download().unwrap();
            compare_step(
                "after the refusals",
                &cpu.view(),
                &snap.view(&dims),
                input.token_ids.is_none(),
            );
        });
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn an_enqueue_without_a_new_step_and_a_host_fill_backend_are_refused() {
        require_device();
        let (_, src) = layouts::LAYOUTS[0];
        let dims = layouts::dims(src);
        let b = backend(&dims, FillMode::Device, false);
        let stream = b.stream().context().new_stream().unwrap();
        let mut fill = b.stream_fill().unwrap();
        assert!(matches!(
            fill.enqueue_on(&stream),
            Err(BackendError::StreamFill(StreamFillError::NotPrepared))
        ));
        let host = backend(&dims, FillMode::Host, false);
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
