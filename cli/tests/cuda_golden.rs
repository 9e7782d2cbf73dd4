//! GPU: the public golden file (Megatron-LM step records) replays through the CUDA
//! backend. Every step record is filled by the device fill and compared byte for byte, in
//! every field's live prefix, with the host fill; the host fill itself is checked against
//! Megatron's arrays by `golden::replay` (also run here), so the device output matches
//! Megatron's.
//!
//! One backend per distinct layout of the file (105 of them) without graphs, plus, for
//! the first layouts with buckets, one with graphs.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

#[cfg(feature = "cuda")]
mod gpu {
    use std::collections::HashMap;

    use attention_layout::cuda::{CudaBackend, FillMode};
    use attention_layout::{Geometry, HostMetadata, RuntimeDims};

    use super::support::gpu::{backend, require_device, step_and_compare};

    const GOLDEN: &str = include_str!("../../testdata/megatron-public.jsonl");

    /// Graph-capturing backends for this many layouts (the rest run eager only).
    const GRAPHED_LAYOUTS: usize = 6;

    #[test]
    #[ignore = "needs a CUDA device"]
    fn the_public_golden_file_replays_through_the_cuda_backend() {
        require_device();
        let report = attention_layout_cli::golden::replay(GOLDEN);
        assert_eq!(
            report.failed(),
            0,
            "the host fill no longer matches Megatron"
        );

        let mut layouts: HashMap<String, (HostMetadata<RuntimeDims>, Vec<CudaBackend>)> =
            HashMap::new();
        let (mut steps, mut graphed) = (0usize, 0usize);
        for step in attention_layout_cli::golden::steps(GOLDEN) {
            let (line_no, step) = step.unwrap();
            let key = format!("{:?}", step.spec());
            let n_layouts = layouts.len();
            let (cpu, gpus) = layouts.entry(key).or_insert_with(|| {
                let dims = RuntimeDims::new(Geometry::new(step.spec()).unwrap());
                let mut gpus = vec![backend(&dims, FillMode::Device, false)];
                if n_layouts < GRAPHED_LAYOUTS && !dims.geometry().buckets.is_empty() {
                    gpus.push(backend(&dims, FillMode::Device, true));
                }
                (HostMetadata::new(dims), gpus)
            });
            step.with_input(|input| {
                for (k, gpu) in gpus.iter_mut().enumerate() {
                    // Each backend gets its own reference (they see the same steps).
                    let mut reference = cpu.clone();
                    let what = format!("golden line {line_no} backend {k}");
                    graphed += usize::from(step_and_compare(&what, &mut reference, gpu, input));
                }
                cpu.fill(input).unwrap();
            });
            steps += 1;
        }
        eprintln!(
            "{steps} golden steps over {} layouts, {graphed} graph replays",
            layouts.len()
        );
        assert_eq!(steps, 420);
        assert!(graphed > 0, "no golden step replayed a graph");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
