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
        let mut gpu = backend(&dims, mode, true, true);
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
            let got = ring.view(&mut gpu, &dims, k).unwrap();
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
