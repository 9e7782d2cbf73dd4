//! Replays the bucket side of the Megatron golden data (`testdata/megatron-public.jsonl`):
//! bucket sets, token counts and matches of every `buckets` record, and the bucket set,
//! match / eager padding of every `step` and `error` record (docs/SEMANTICS.md §3).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
use attention_layout_codegen::buckets::{
    BatchDims, BucketParams, Distribution, build_buckets, eager_padding, match_bucket, token_counts,
};
use serde_json::Value;

const GOLDEN: &str = include_str!("../../testdata/megatron-public.jsonl");

/// The golden config keys this test reads.
#[derive(Debug)]
struct Config {
    max_requests: u32,
    max_tokens: u32,
    max_seq_len: u32,
    speculative_tokens: u32,
    tensor_parallel: u32,
    hybrid: bool,
    num_cuda_graphs: Option<i64>,
    distribution: Distribution,
    mixed_prefill_count: u32,
    non_decode_graphs: bool,
    cuda_graph_max_tokens: u32,
}

/// A JSON number as `u32`, or a panic naming it.
fn uint_of(v: &Value) -> u32 {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("not a u32: {v}"))
}

fn uint(v: &Value, key: &str) -> u32 {
    uint_of(&v[key])
}

fn flag(v: &Value, key: &str) -> bool {
    v[key]
        .as_bool()
        .unwrap_or_else(|| panic!("{key} is not a bool: {v}"))
}

impl Config {
    fn from_json(v: &Value) -> Self {
        let distribution = match v["distribution"].as_str() {
            Some("exponential") => Distribution::Exponential,
            Some("linear") => Distribution::Linear,
            other => panic!("unknown distribution {other:?}"),
        };
        let num_cuda_graphs = match &v["num_cuda_graphs"] {
            Value::Null => None,
            n => Some(
                n.as_i64()
                    .unwrap_or_else(|| panic!("num_cuda_graphs is not an int: {n}")),
            ),
        };
        Self {
            max_requests: uint(v, "max_requests"),
            max_tokens: uint(v, "max_tokens"),
            max_seq_len: uint(v, "max_seq_len"),
            speculative_tokens: uint(v, "num_spec"),
            tensor_parallel: uint(v, "tp"),
            hybrid: flag(v, "hybrid"),
            num_cuda_graphs,
            distribution,
            mixed_prefill_count: uint(v, "mixed_prefill_count"),
            non_decode_graphs: flag(v, "non_decode_graphs"),
            cuda_graph_max_tokens: uint(v, "cuda_graph_max_tokens"),
        }
    }

    /// `cg_max` as the context passes it: `min(max(configured, R·(s+1)), T)`.
    fn params(&self) -> BucketParams {
        let decode_tokens = self.max_requests * (self.speculative_tokens + 1);
        BucketParams {
            tensor_parallel: self.tensor_parallel,
            num_cuda_graphs: self.num_cuda_graphs,
            cg_max: self
                .cuda_graph_max_tokens
                .max(decode_tokens)
                .min(self.max_tokens),
            mixed_prefill_count: self.mixed_prefill_count,
            max_requests: self.max_requests,
            max_tokens: self.max_tokens,
            max_seq_len: self.max_seq_len,
            non_decode_graphs: self.non_decode_graphs,
            speculative_tokens: self.speculative_tokens,
            distribution: self.distribution,
        }
    }
}

fn batch(v: &Value) -> BatchDims {
    match v.as_array().map(Vec::as_slice) {
        Some([t, p, d]) => BatchDims::new(uint_of(t), uint_of(p), uint_of(d)),
        _ => panic!("not a shape: {v}"),
    }
}

fn opt_batch(v: &Value) -> Option<BatchDims> {
    (!v.is_null()).then(|| batch(v))
}

#[derive(Debug, Default)]
struct Counts {
    bucket_records: usize,
    step_records: usize,
    error_records: usize,
    bucket_sets: usize,
    matches: usize,
    graphed_steps: usize,
    eager_steps: usize,
}

#[test]
fn golden_buckets_matches_and_padding() {
    let mut c = Counts::default();
    for (idx, line) in GOLDEN.lines().enumerate() {
        let lineno = idx + 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {lineno}: {e}"));
        let kind = rec["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "buckets" | "step" | "error") {
            continue;
        }
        let cfg = Config::from_json(&rec["config"]);
        let ctx = format!("line {lineno} ({kind}), config {cfg:?}");

        // The bucket set (golden list order is unspecified).
        let list = build_buckets(&cfg.params());
        let mut golden: Vec<BatchDims> = rec["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(batch)
            .collect();
        golden.sort_unstable();
        assert_eq!(list, golden, "bucket set differs at {ctx}");
        c.bucket_sets += 1;

        match kind {
            "buckets" => {
                c.bucket_records += 1;
                // Megatron gives None for an empty list.
                let expected_counts: Vec<u32> = match &rec["token_counts"] {
                    Value::Null => Vec::new(),
                    v => v.as_array().unwrap().iter().map(uint_of).collect(),
                };
                assert_eq!(
                    token_counts(&list),
                    expected_counts,
                    "token counts at {ctx}"
                );
                for m in rec["matches"].as_array().unwrap() {
                    let real = batch(&m["real"]);
                    let strict = m["strict"].as_bool().unwrap();
                    let expected = opt_batch(&m["match"]);
                    assert_eq!(
                        match_bucket(real, &list, strict),
                        expected,
                        "match of {real:?} (strict: {strict}) at {ctx}"
                    );
                    c.matches += 1;
                }
            }
            "step" => {
                c.step_records += 1;
                let real = batch(&rec["batch_dimensions"]);
                let padded = batch(&rec["padded_batch_dimensions"]);
                let graphed = rec["using_cuda_graph"].as_bool().unwrap();
                let matched = match_bucket(real, &list, cfg.hybrid);
                if graphed {
                    assert_eq!(matched, Some(padded), "graphed step {real:?} at {ctx}");
                    c.graphed_steps += 1;
                } else {
                    assert_eq!(matched, None, "eager step {real:?} matched at {ctx}");
                    let eager = eager_padding(
                        real,
                        cfg.max_requests,
                        cfg.max_tokens,
                        cfg.tensor_parallel,
                        cfg.speculative_tokens,
                    );
                    assert_eq!(eager, padded, "eager padding of {real:?} at {ctx}");
                    c.eager_steps += 1;
                }
            }
            _ => c.error_records += 1,
        }
    }
    println!("golden buckets: {c:?}");
    assert!(
        c.bucket_records > 0 && c.step_records > 0 && c.matches > 0,
        "{c:?}"
    );
    assert!(c.graphed_steps > 0 && c.eager_steps > 0, "{c:?}");
}
