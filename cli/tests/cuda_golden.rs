//! GPU: the public golden file (Megatron-LM step records) replays through the CUDA
//! backend. Every step record is filled by the device fill and compared byte for byte, in
//! every field's live prefix, with the host fill; the host fill itself is checked against
//! Megatron's arrays by `golden::replay` (also run here), so the device output matches
//! Megatron's.
//!
//! One backend per distinct layout of the file (105 of them): the eager entry only
//! (fast to compile), plus, for the first layouts with buckets, per-bucket kernels and
//! graphs.

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
    use attention_layout::{
        Geometry, HostMetadata, IntermediateOffsets, Phase, RequestRow, RuntimeDims, StepInput,
    };
    use serde_json::Value;

    use super::support::gpu::{backend, require_device, step_and_compare};

    const GOLDEN: &str = include_str!("../../testdata/megatron-public.jsonl");

    /// Graph-capturing backends for this many layouts (the rest run eager only).
    const GRAPHED_LAYOUTS: usize = 6;

    struct Record {
        key: String,
        dims: RuntimeDims,
        rows: Vec<(Phase, u32, u32, Vec<i32>, i32)>,
        token_ids: Vec<i64>,
        intermediate: Option<Vec<IntermediateOffsets>>,
    }

    fn ints(v: &Value) -> Vec<i64> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    fn parse(line: &str) -> Option<Record> {
        let rec: Value = serde_json::from_str(line).unwrap();
        if rec["kind"] != "step" {
            return None;
        }
        let config = &rec["config"];
        let pool = rec["derived"]["kv_pool_size"].as_u64().map(|p| p as u32);
        let config: attention_layout_cli::golden::Config =
            serde_json::from_value(config.clone()).unwrap();
        let spec = attention_layout_cli::golden::spec_of(&config, pool).unwrap();
        let dims = RuntimeDims::new(Geometry::new(&spec).unwrap());
        let inputs = &rec["inputs"];
        let rows = inputs["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let phase = match r["phase"].as_str().unwrap() {
                    "paused" => Phase::Paused,
                    "decode" => Phase::Decode,
                    _ => Phase::Prefill,
                };
                let q = if phase == Phase::Paused {
                    0
                } else {
                    r["q"].as_u64().unwrap() as u32
                };
                (
                    phase,
                    q,
                    r["kv"].as_u64().unwrap() as u32,
                    ints(&r["blocks"]).into_iter().map(|b| b as i32).collect(),
                    r["mamba_slot"].as_i64().unwrap_or(-1) as i32,
                )
            })
            .collect();
        let intermediate = inputs["intermediate_offsets"].as_array().map(|offs| {
            let counts = ints(&inputs["intermediate_counts"]);
            offs.iter()
                .zip(counts)
                .map(|(o, c)| {
                    let mut offsets = [0u32; 3];
                    for (d, s) in offsets.iter_mut().zip(ints(o)) {
                        *d = s as u32;
                    }
                    IntermediateOffsets {
                        count: c as u8,
                        offsets,
                    }
                })
                .collect()
        });
        Some(Record {
            key: format!("{config}|{pool:?}"),
            dims,
            rows,
            token_ids: ints(&inputs["token_to_input_ids"]),
            intermediate,
        })
    }

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
        for (line_no, line) in GOLDEN.lines().enumerate() {
            let Some(rec) = parse(line) else { continue };
            let n_layouts = layouts.len();
            let (cpu, gpus) = layouts.entry(rec.key.clone()).or_insert_with(|| {
                let mut gpus = vec![backend(&rec.dims, FillMode::Device, false, false)];
                if n_layouts < GRAPHED_LAYOUTS && !rec.dims.geometry().buckets.is_empty() {
                    gpus.push(backend(&rec.dims, FillMode::Device, true, true));
                }
                (HostMetadata::new(rec.dims.clone()), gpus)
            });
            let rows: Vec<RequestRow<'_>> = rec
                .rows
                .iter()
                .map(|(phase, q, kv, b, slot)| {
                    let mut r = RequestRow::decode(*q, *kv, b, *slot);
                    r.phase = *phase;
                    r
                })
                .collect();
            let input = StepInput {
                rows: &rows,
                token_ids: Some(&rec.token_ids),
                intermediate: rec.intermediate.as_deref(),
                residency: None,
            };
            for (k, gpu) in gpus.iter_mut().enumerate() {
                // Each backend gets its own reference (they see the same steps).
                let mut reference = cpu.clone();
                let what = format!("golden line {} backend {k}", line_no + 1);
                graphed += usize::from(step_and_compare(&what, &mut reference, gpu, &input));
            }
            cpu.fill(&input).unwrap();
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
