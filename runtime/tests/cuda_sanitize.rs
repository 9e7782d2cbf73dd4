//! GPU: every bucket's fill entry and the eager entry run at least once (through graphs
//! and eagerly), on steps shaped exactly like each bucket, plus a short random workload —
//! each result compared with the host fill. Small on purpose: this is the binary to run
//! under `compute-sanitizer` (memcheck, racecheck, synccheck, initcheck); see
//! `docs/DESIGN.md` ("Checking the kernels").

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
    use attention_layout::cuda::FillMode;
    use attention_layout::{
        BatchDims, BlockChange, Dims, HostMetadata, LayoutSpec, RequestRow, Residency, RuntimeDims,
        StepInput,
    };

    use super::support::gpu::{backend, require_device, step_and_compare};
    use super::support::layouts;
    use super::support::workload::Workload;

    /// One row: (prefill?, query length, KV offset, blocks).
    type Row = (bool, u32, u32, Vec<i32>);

    /// Rows whose real shape is exactly `b`: `b.decode` decode rows, `b.prefill` prefill
    /// rows sharing the remaining tokens. None if no such step exists.
    fn shaped(dims: &RuntimeDims, b: BatchDims) -> Option<Vec<Row>> {
        let s1 = dims.num_spec() as u32 + 1;
        let bs = dims.block_size() as u32;
        let left = b.tokens.checked_sub(b.decode * s1)?;
        if (b.prefill == 0) != (left == 0) {
            return None;
        }
        let mut rows = Vec::new();
        let mut next = 0i32;
        let mut take = |n: u32| {
            let v: Vec<i32> = (next..next + n as i32).collect();
            next += n as i32;
            v
        };
        for i in 0..b.decode {
            let kv = (i * 7) % (dims.max_seq_len() as u32 - s1 + 1);
            rows.push((false, s1, kv, take((kv + s1).div_ceil(bs))));
        }
        for f in 0..b.prefill {
            let q = left / b.prefill + u32::from(f < left % b.prefill);
            if q == 0 || q > dims.max_seq_len() as u32 {
                return None;
            }
            rows.push((true, q, 0, take(q.div_ceil(bs))));
        }
        (next < dims.dummy_block()).then_some(rows)
    }

    fn every_bucket(name: &str, dims: &RuntimeDims) {
        for graphs in [true, false] {
            let mut gpu = backend(dims, FillMode::Device, graphs, true);
            let mut cpu = HostMetadata::new(dims.clone());
            let buckets = dims.buckets().to_vec();
            let mut hit = 0;
            for (i, &b) in buckets.iter().enumerate() {
                let Some(shape) = shaped(dims, b) else {
                    continue;
                };
                let rows: Vec<RequestRow<'_>> = shape
                    .iter()
                    .enumerate()
                    .map(|(k, (prefill, q, kv, blocks))| {
                        let slot = if dims.has_mamba() { k as i32 } else { -1 };
                        if *prefill {
                            RequestRow::prefill(*q, *kv, blocks, slot)
                        } else {
                            RequestRow::decode(*q, *kv, blocks, slot)
                        }
                    })
                    .collect();
                let resident: Vec<u32> = (0..rows.len() as u32).collect();
                let changes: Vec<BlockChange> = rows
                    .iter()
                    .enumerate()
                    .flat_map(|(r, row)| {
                        row.blocks
                            .iter()
                            .enumerate()
                            .map(move |(j, &id)| BlockChange {
                                resident_row: r as u32,
                                index: j as u32,
                                block: id,
                            })
                    })
                    .collect();
                let tokens: u32 = rows.iter().map(|r| r.query_length).sum();
                let ids: Vec<i64> = (0..i64::from(tokens)).collect();
                let input = StepInput {
                    rows: &rows,
                    token_ids: Some(&ids),
                    intermediate: None,
                    residency: Some(Residency {
                        resident_rows: &resident,
                        changes: &changes,
                    }),
                };
                let what = format!("{name} bucket {i} {b:?} graphs={graphs}");
                let replayed = step_and_compare(&what, &mut cpu, &mut gpu, &input);
                assert_eq!(cpu.info().bucket, Some(i as u32), "{what}: matched bucket");
                assert_eq!(replayed, graphs, "{what}: graph replay");
                hit += 1;
            }
            assert!(
                buckets.is_empty() || hit > 0,
                "{name}: no bucket could be shaped"
            );
            eprintln!(
                "{name} graphs={graphs}: {hit} of {} buckets launched",
                buckets.len()
            );
            // The eager entry, on a short random workload.
            let mut w = Workload::new(dims, 7, layouts::knobs(name));
            for k in 0..40 {
                let st = w.step();
                let rows = st.rows();
                let what = format!("{name} random step {k} graphs={graphs}");
                step_and_compare(&what, &mut cpu, &mut gpu, &st.input(&rows));
            }
        }
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn every_bucket_entry_and_the_eager_entry_run() {
        require_device();
        for (name, src) in layouts::LAYOUTS {
            every_bucket(name, &layouts::dims(src));
        }
        let src = attention_layout::layouts::bundled("nemotron-h-8b").unwrap();
        let spec = LayoutSpec::from_toml_str(src, "nemotron-h-8b").unwrap();
        every_bucket(
            "nemotron-h-8b",
            &RuntimeDims::new(attention_layout::Geometry::new(&spec).unwrap()),
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
#[ignore = "needs a CUDA device"]
fn gpu_tests_need_the_cuda_feature() {
    panic!("built without the `cuda` feature: build with `--features attention-layout/cuda`");
}
