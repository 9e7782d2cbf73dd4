//! Layouts the device-fill tests run: small enough for thousands of random steps, and
//! together covering hybrid / MHA / pure Mamba models, speculative tokens, tensor
//! parallelism (non-strict matching with re-labelled decodes), exponential and linear
//! graph ladders, explicit bucket tables (`graphs.buckets`), no graphs, i32 decode indices,
//! a tight KV pool and both kernel formats (`formats = ["flashinfer", "vllm"]`).

use attention_layout::{Geometry, LayoutSpec, RuntimeDims};

/// `(name, TOML)` of every test layout.
pub const LAYOUTS: &[(&str, &str)] = &[
    (
        // Long block-table rows next to a small token budget: a burst of finishing
        // requests changes more entries than the staging image holds.
        "hybrid-long-rows",
        r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 1024
block_size = 4
[mamba]
chunk_size = 16
conv_width = 4
"#,
    ),
    (
        "hybrid-small",
        r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
"#,
    ),
    (
        "hybrid-spec2",
        r#"
model = "hybrid"
max_requests = 16
max_tokens = 128
max_seq_len = 256
block_size = 8
speculative_tokens = 2
[mamba]
chunk_size = 8
conv_width = 4
[graphs]
mixed_prefill = 4
"#,
    ),
    (
        "mha-tp2",
        r#"
model = "mha"
max_requests = 32
max_tokens = 256
max_seq_len = 512
block_size = 16
tensor_parallel = 2
[graphs]
token_budget = 64
"#,
    ),
    (
        "mamba-i32-eager",
        r#"
model = "mamba"
max_requests = 12
max_tokens = 128
max_seq_len = 96
block_size = 2
decode_index_dtype = "i32"
[mamba]
chunk_size = 16
conv_width = 3
[graphs]
count = "off"
"#,
    ),
    (
        "hybrid-linear-tight-pool",
        r#"
model = "hybrid"
max_requests = 64
max_tokens = 512
max_seq_len = 1024
block_size = 32
speculative_tokens = 1
kv_pool_blocks = 400
[mamba]
chunk_size = 64
conv_width = 4
[graphs]
count = 8
distribution = "linear"
mixed_prefill = 2
"#,
    ),
    (
        // An explicit table, matched strictly, with two draft tokens: uneven token
        // counts, decode buckets of 3-token rows, mixed buckets of 1 to 4 prefills.
        "hybrid-spec2-table",
        r#"
model = "hybrid"
max_requests = 16
max_tokens = 128
max_seq_len = 256
block_size = 8
speculative_tokens = 2
[mamba]
chunk_size = 8
conv_width = 4
[graphs]
buckets = [[6, 0, 2], [24, 0, 8], [48, 0, 16], [40, 2, 12], [64, 1, 15], [96, 3, 9], [128, 4, 12]]
"#,
    ),
    (
        // An explicit table, matched non-strictly (decodes re-labelled as prefills),
        // tensor parallel 2: every token count even; steps above 160 tokens run eagerly.
        "mha-tp2-table",
        r#"
model = "mha"
max_requests = 32
max_tokens = 256
max_seq_len = 512
block_size = 16
tensor_parallel = 2
[graphs]
buckets = [[8, 0, 8], [32, 0, 32], [64, 32, 0], [100, 6, 26], [160, 32, 0]]
"#,
    ),
    (
        // Both kernel formats on a hybrid layout: S = 240 ≡ B (mod 2B), the shape whose
        // last column a tiled block-id load overruns; draft tokens; exponential graphs.
        "hybrid-formats",
        r#"
model = "hybrid"
max_requests = 8
max_tokens = 128
max_seq_len = 240
block_size = 16
speculative_tokens = 1
formats = ["flashinfer", "vllm"]
[mamba]
chunk_size = 16
conv_width = 4
"#,
    ),
    (
        // Both kernel formats on an attention-only layout, tensor parallel 2 (non-strict
        // matching), i.e. vLLM's slot mapping without the Mamba arrays; steps above 64
        // tokens run eagerly.
        "mha-formats",
        r#"
model = "mha"
max_requests = 16
max_tokens = 128
max_seq_len = 496
block_size = 16
tensor_parallel = 2
formats = ["vllm", "flashinfer"]
[graphs]
token_budget = 64
mixed_prefill = 2
"#,
    ),
];

/// Workload knobs for a test layout: long prompts where rows are long.
pub fn knobs(name: &str) -> super::workload::Knobs {
    let mut k = super::workload::Knobs::default();
    if name == "hybrid-long-rows" {
        k.max_prompt = 1000;
        k.finish = 0.01;
        k.mass_finish = 0.02;
    }
    k
}

/// The dims of a test layout.
pub fn dims(src: &str) -> RuntimeDims {
    let spec = LayoutSpec::from_toml_str(src, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    RuntimeDims::new(Geometry::new(&spec).unwrap_or_else(|e| panic!("{e}")))
}
