//! Regression tests: layout specs whose sizes overflow 64-bit arithmetic are rejected
//! with a diagnostic, never a panic (fuzz target `layout_toml`).

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
