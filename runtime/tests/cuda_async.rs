//! GPU: asynchronous scheduling. Thousands of steps are submitted without synchronizing
//! (the host builds step N+1 while the device still runs step N; the double-buffered
//! pinned staging is reused only after the event of the copy that read it), each followed
//! by a stream-ordered snapshot of the metadata buffer into pinned memory. After one
//! synchronize at the end, every step's snapshot equals the host fill of that step — so
//! no staging buffer was overwritten while a copy still read it.

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
    use std::time::Instant;

    use attention_layout::cuda::FillMode;
    use attention_layout::{Dims, Field, HostMetadata, MetadataBackend, MetadataView};

    use super::support::gpu::{backend, require_device};
    use super::support::layouts;
    use super::support::workload::Workload;

    fn overlapped(name: &str, src: &str, mode: FillMode, steps: usize, seed: u64) {
        let dims = layouts::dims(src);
        let mut gpu = backend(&dims, mode, true);
        let mut cpu = HostMetadata::new(dims.clone());
        let mut ring = gpu.snapshot_ring(steps).unwrap();
        let mut w = Workload::new(&dims, seed, layouts::knobs(name));
        // The reference: each step's info and live bytes.
        let mut want = Vec::with_capacity(steps);
        let t0 = Instant::now();
        for k in 0..steps {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let info = *cpu.fill(&input).unwrap();
            let engine_ids = input.token_ids.is_none();
            let got = gpu
                .step(&input)
                .unwrap_or_else(|e| panic!("{name} step {k}: {e}"));
            assert_eq!(info, got, "{name} step {k}: info");
            gpu.snapshot_into(&mut ring, k).unwrap();
            let view = cpu.view();
            let live: Vec<(Field, Vec<u8>)> = Field::ALL
                .iter()
                .filter_map(|&f| view.live_bytes(f).map(|b| (f, b.to_vec())))
                .collect();
            want.push((info, live, engine_ids));
        }
        let submit = t0.elapsed();
        gpu.synchronize().unwrap();
        let total = t0.elapsed();
        eprintln!("{name} {mode:?}: {steps} steps submitted in {submit:?}, done after {total:?}");
        for (k, (info, live, engine_ids)) in want.iter().enumerate() {
            let got = ring.view(k).unwrap();
            assert_eq!(got.info(), info, "{name} step {k}: snapshot info");
            // Rebuild the reference view from its live bytes and compare field by field.
            let mut bytes = vec![0u8; dims.total_bytes()];
            for (f, b) in live {
                let off = dims.field_offset(*f);
                bytes[off..off + b.len()].copy_from_slice(b);
            }
            let reference = MetadataView::from_parts(&dims, &bytes, info);
            if let Some(d) = reference.first_difference_with(&got, *engine_ids) {
                panic!("{name} {mode:?} step {k} (overlapped): {d}");
            }
        }
    }

    /// A ring belongs to the backend that made it: a backend with a larger layout (whose
    /// copy would run past the ring's snapshots) and one with the same layout both refuse
    /// it, an index outside the ring or never taken is an error, and nothing of that
    /// disturbs the owner's snapshots.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_snapshot_ring_is_refused_by_every_backend_but_its_own() {
        use attention_layout::backend::{BackendError, SnapshotError};
        require_device();
        let sizes: Vec<(usize, &str, &str)> = layouts::LAYOUTS
            .iter()
            .map(|(n, s)| (layouts::dims(s).total_bytes(), *n, *s))
            .collect();
        let small = sizes.iter().min().unwrap();
        let large = sizes.iter().max().unwrap();
        assert!(small.0 < large.0, "the test layouts differ in size");
        let (small_dims, large_dims) = (layouts::dims(small.2), layouts::dims(large.2));
        let mut owner = backend(&small_dims, FillMode::Device, true);
        let mut bigger = backend(&large_dims, FillMode::Device, true);
        let mut twin = backend(&small_dims, FillMode::Device, true);
        let mut ring = owner.snapshot_ring(2).unwrap();

        let mut w = Workload::new(&small_dims, 3, layouts::knobs(small.1));
        let st = w.step();
        let rows = st.rows();
        let input = st.input(&rows);
        let info = owner.step(&input).unwrap();
        owner.snapshot_into(&mut ring, 0).unwrap();
        let want = owner.download().unwrap();

        let e = bigger.snapshot_into(&mut ring, 1).unwrap_err();
        assert_eq!(
            e,
            BackendError::Snapshot(SnapshotError::ForeignRing {
                ring_bytes: small.0,
                layout_bytes: large.0
            })
        );
        let e = twin.snapshot_into(&mut ring, 1).unwrap_err();
        assert!(
            matches!(e, BackendError::Snapshot(SnapshotError::ForeignRing { .. })),
            "{e}"
        );
        let e = owner.snapshot_into(&mut ring, 2).unwrap_err();
        assert_eq!(
            e,
            BackendError::Snapshot(SnapshotError::Index { index: 2, count: 2 })
        );
        let e = ring.view(1).unwrap_err();
        assert_eq!(
            e,
            BackendError::Snapshot(SnapshotError::NotTaken { index: 1 })
        );
        let mut larger_ring = bigger.snapshot_ring(1).unwrap();
        let e = owner.snapshot_into(&mut larger_ring, 0).unwrap_err();
        assert!(
            matches!(e, BackendError::Snapshot(SnapshotError::ForeignRing { .. })),
            "{e}"
        );

        let got = ring.view(0).unwrap();
        assert_eq!(got.info(), &info);
        assert_eq!(
            got.first_difference_with(&want.view(&small_dims), false),
            None,
            "the owner's snapshot"
        );
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn overlapped_steps_each_produce_their_own_metadata() {
        require_device();
        for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
            overlapped(name, src, FillMode::Device, 3000, 0xa5 + i as u64);
            overlapped(name, src, FillMode::Host, 1000, 0xb5 + i as u64);
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
