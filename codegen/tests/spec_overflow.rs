//! Regression tests for extreme layout specs: sizes that overflow 64-bit arithmetic and
//! graph policies that enumerate millions of buckets are rejected with a diagnostic,
//! never a panic or a hang (fuzz targets `layout_toml` and `layout_spec`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
use attention_layout_codegen::{Geometry, LayoutSpec};

const BASE: &str = r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
"#;

fn geometry(extra: &str) -> Result<Geometry, String> {
    let spec = LayoutSpec::from_toml_str(&format!("{BASE}{extra}"), "t.toml")
        .map_err(|e| e.to_string())?;
    Geometry::new(&spec).map_err(|e| e.to_string())
}

#[test]
fn huge_kv_block_size_is_an_error() {
    let e = geometry(
        "[memory]\nattention_layers = 4294967295\nkv_heads = 4294967295\nhead_dim = 4294967295\nbudget_gib = 1.0\n",
    );
    assert!(e.is_err(), "{e:?}");
}

#[test]
fn huge_mamba_state_is_an_error() {
    let e = geometry(
        "[memory]\nattention_layers = 1\nkv_heads = 1\nhead_dim = 1\nmamba_layers = 4294967295\nmamba_heads = 4294967295\nmamba_head_dim = 4294967295\nmamba_state_dim = 4294967295\nmamba_groups = 4294967295\nbudget_gib = 1.0\n",
    );
    assert!(e.is_err(), "{e:?}");
}

/// Found by the `layout_spec` fuzz target (a >10 s timeout): 50,331,648 linear graphs
/// over a 16,132,608-token budget make a ladder with a step of 2, i.e. millions of
/// candidate buckets. Geometry::new now refuses it after building only the ladders.
#[test]
fn a_graph_policy_with_millions_of_buckets_is_rejected_quickly() {
    use attention_layout_codegen::spec::{GraphCount, GraphSpec, ModelKind};
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Mha,
        max_requests: 2_508_800,
        max_tokens: 16_132_608,
        max_seq_len: 58,
        block_size: 512,
        speculative_tokens: 4,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: None,
        mamba: None,
        graphs: GraphSpec {
            count: GraphCount::Count(50_331_648),
            distribution: attention_layout_codegen::Distribution::Linear,
            token_budget: None,
            mixed_prefill: 458_990,
            non_decode: true,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    };
    let start = std::time::Instant::now();
    let e = Geometry::new(&spec).unwrap_err().to_string();
    assert!(e.contains("candidate CUDA-graph buckets"), "{e}");
    // Generous for a debug build on a loaded machine; it used to take well over 10 s in
    // an optimized build.
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

#[test]
fn bounded_build_matches_the_unbounded_one() {
    use attention_layout_codegen::buckets::{BucketParams, build_buckets, build_buckets_bounded};
    let p = BucketParams {
        tensor_parallel: 1,
        num_cuda_graphs: Some(-1),
        cg_max: 64,
        mixed_prefill_count: 4,
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 32,
        non_decode_graphs: true,
        speculative_tokens: 0,
        distribution: attention_layout_codegen::Distribution::Exponential,
    };
    assert_eq!(build_buckets_bounded(&p, 1 << 16), Ok(build_buckets(&p)));
    assert_eq!(build_buckets(&p).len(), 24);
    // Decode ladder 4 (+2 extra) and prefill ladder 7 x (grid 4 + 1): 41 candidates.
    assert_eq!(build_buckets_bounded(&p, 10), Err(41));
}

/// The same layout with the automatic linear ladder (a step of 16 tokens up to
/// 16,132,608): about a million candidates, refused after counting 65,537 grid values.
#[test]
fn an_automatic_linear_ladder_over_millions_of_tokens_is_rejected() {
    use attention_layout_codegen::spec::{GraphCount, GraphSpec, ModelKind};
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Mha,
        max_requests: 2_490_614,
        max_tokens: 16_132_608,
        max_seq_len: 58,
        block_size: 512,
        speculative_tokens: 4,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: None,
        mamba: None,
        graphs: GraphSpec {
            count: GraphCount::Auto,
            distribution: attention_layout_codegen::Distribution::Linear,
            token_budget: None,
            mixed_prefill: 458_990,
            non_decode: true,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    };
    let e = Geometry::new(&spec).unwrap_err().to_string();
    assert!(e.contains("candidate CUDA-graph buckets"), "{e}");
}
