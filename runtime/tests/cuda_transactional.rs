//! Transactional steps on the device: a step the layout rejects, of every error kind the
//! step input can carry, leaves the device metadata (and the backend's state) exactly as
//! it was, in both fill modes; the next good step still equals the host fill. Needs a CUDA
//! device (ignored otherwise; fails when asked to run without one).

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
    use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
    use attention_layout::cuda::FillMode;
    use attention_layout::{
        Geometry, HostMetadata, IntermediateOffsets, MetadataBackend, RequestRow, RuntimeDims,
        StepInput,
    };

    use super::support::gpu::{backend, require_device, step_and_compare};

    /// R=8, T=64, B=4, S=32, s=1, hybrid, Pk=17 (dummy 16): the host-side bad-input layout.
    fn dims() -> RuntimeDims {
        let spec = LayoutSpec {
            name: None,
            source: None,
            model: ModelKind::Hybrid,
            max_requests: 8,
            max_tokens: 64,
            max_seq_len: 32,
            block_size: 4,
            speculative_tokens: 1,
            tensor_parallel: 1,
            decode_index_dtype: Default::default(),
            kv_pool_blocks: Some(17),
            mamba: Some(MambaSpec {
                chunk_size: 4,
                conv_width: 4,
            }),
            graphs: GraphSpec::default(),
            memory: None,
            formats: Vec::new(),
        };
        RuntimeDims::new(Geometry::new(&spec).unwrap())
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_rejected_step_leaves_the_device_metadata_unchanged() {
        require_device();
        let d = dims();
        let (b0, b1) = ([0, 1], [2, 3, 4]);
        let good = [
            RequestRow::decode(2, 5, &b0, 0),
            RequestRow::prefill(6, 4, &b1, 1),
        ];
        let seven: Vec<i32> = (0..7).collect();
        let ten: Vec<i32> = (0..10).collect();
        let eight: Vec<i32> = (0..8).collect();
        let too_many: Vec<RequestRow<'_>> = (0..9).map(|i| RequestRow::paused(0, &[], i)).collect();
        let too_long: Vec<RequestRow<'_>> = (0..3)
            .map(|i: i32| RequestRow::prefill(22 + i as u32, 0, &seven, i))
            .collect();
        let six: Vec<Vec<i32>> = (0..6).map(|i| vec![2 * i, 2 * i + 1]).collect();
        let six_prefills: Vec<RequestRow<'_>> = (0..6)
            .map(|i| RequestRow::prefill(8, 0, &six[i], i as i32))
            .collect();
        let three = [IntermediateOffsets {
            count: 3,
            offsets: [1, 2, 4],
        }; 6];
        let bad_rows: Vec<(&str, Vec<RequestRow<'_>>)> = vec![
            ("too_many_requests", too_many),
            ("too_many_tokens", too_long),
            ("zero_query_length", vec![RequestRow::prefill(0, 0, &b0, 0)]),
            (
                "sequence_too_long",
                vec![RequestRow::prefill(4, 30, &eight, 0)],
            ),
            (
                "block_out_of_range",
                vec![RequestRow::decode(2, 1, &[16], 0)],
            ),
            ("missing_block", vec![RequestRow::decode(2, 3, &[7], 0)]),
            ("too_many_blocks", vec![RequestRow::decode(2, 1, &ten, 0)]),
            (
                "phase_order",
                vec![
                    RequestRow::prefill(3, 0, &b0, 0),
                    RequestRow::decode(2, 3, &b1, 1),
                ],
            ),
            (
                "decode_query_length",
                vec![RequestRow::decode(1, 3, &b1, 1)],
            ),
            (
                "missing_mamba_slot",
                vec![RequestRow::decode(2, 3, &b1, -1)],
            ),
            (
                "duplicate_mamba_slot",
                vec![
                    RequestRow::paused(3, &b1, 4),
                    RequestRow::decode(2, 3, &b0, 4),
                ],
            ),
            (
                "mamba_slot_out_of_range",
                vec![RequestRow::decode(2, 3, &b0, 8)],
            ),
        ];
        for mode in [FillMode::Device, FillMode::Host] {
            let mut gpu = backend(&d, mode, true);
            let mut cpu = HostMetadata::new(d.clone());
            let ok = StepInput {
                rows: &good,
                ..Default::default()
            };
            step_and_compare(&format!("{mode:?} good step"), &mut cpu, &mut gpu, &ok);
            let before = gpu.download().unwrap();
            let mut check = |kind: &str, input: &StepInput<'_>| {
                let e = gpu
                    .step(input)
                    .expect_err(&format!("{mode:?} {kind}: accepted"));
                assert!(e.to_string().len() > 10, "{mode:?} {kind}: {e}");
                let after = gpu.download().unwrap();
                assert_eq!(after.info(), before.info(), "{mode:?} {kind}: step info");
                assert!(
                    after.bytes() == before.bytes(),
                    "{mode:?} {kind}: the device metadata changed"
                );
            };
            for (kind, rows) in &bad_rows {
                check(
                    kind,
                    &StepInput {
                        rows,
                        ..Default::default()
                    },
                );
            }
            check(
                "too_many_intermediates",
                &StepInput {
                    rows: &six_prefills,
                    token_ids: None,
                    intermediate: Some(&three),
                    residency: None,
                },
            );
            check(
                "token_ids_length",
                &StepInput {
                    rows: &good,
                    token_ids: Some(&[1, 2, 3]),
                    intermediate: None,
                    residency: None,
                },
            );
            // The backend is still usable and still equals the host fill.
            step_and_compare(
                &format!("{mode:?} good step again"),
                &mut cpu,
                &mut gpu,
                &ok,
            );
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: rebuild with --features cuda to run the GPU tests");
}
