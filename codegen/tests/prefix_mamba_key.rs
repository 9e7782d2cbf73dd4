//! `memory.prefix_caching_mamba_gb`: the durable Mamba state cache's slots follow
//! Megatron's sizing, and every way to get the key wrong is an error naming it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout_codegen::{Geometry, LayoutSpec};

/// A hybrid layout whose one Mamba layer's state is 400 bytes per slot: SSM 1 head × 8 ×
/// 8 state × 4 bytes = 256, conv (2 · 1 group · 8 + 8 channels) × (4 − 1) × 2 bytes = 144.
fn spec(memory_extra: &str) -> String {
    format!(
        r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
[memory]
attention_layers = 1
kv_heads = 1
head_dim = 8
mamba_heads = 1
mamba_head_dim = 8
mamba_state_dim = 8
mamba_groups = 1
budget_gib = 1.0
{memory_extra}
"#
    )
}

fn geometry(extra: &str) -> Result<Geometry, String> {
    let s = LayoutSpec::from_toml_str(&spec(extra), "t.toml").map_err(|e| e.to_string())?;
    Geometry::new(&s).map_err(|e| e.to_string())
}

#[test]
fn the_mamba_cache_slots_are_the_budget_less_the_extraction_scratch_over_the_slot_size() {
    // Mamba layers 1: 400 bytes per slot. Scratch: min(ceil(64 / 4), 3 · 8) = 16 slots.
    let g = geometry("mamba_layers = 1\nprefix_caching_mamba_gb = 0.5").unwrap();
    let budget: u64 = 1 << 29;
    assert_eq!(
        g.prefix_mamba_cache_slots(),
        Some(((budget - 16 * 400) / 400) as usize)
    );
    // Two layers double the slot size.
    let g = geometry("mamba_layers = 2\nprefix_caching_mamba_gb = 0.5").unwrap();
    assert_eq!(
        g.prefix_mamba_cache_slots(),
        Some(((budget - 16 * 800) / 800) as usize)
    );
    // Without the key: no cache.
    let g = geometry("mamba_layers = 1").unwrap();
    assert_eq!(g.prefix_mamba_cache_slots(), None);
}

#[test]
fn a_mamba_cache_budget_that_holds_no_slot_is_refused_naming_the_key() {
    // 17 slots of 400 bytes: the scratch (16) and one slot; 6,799 bytes hold 16 and a bit.
    let gib = 1u64 << 30;
    let ok = 17.0 * 400.0 / gib as f64;
    let g = geometry(&format!(
        "mamba_layers = 1\nprefix_caching_mamba_gb = {ok:e}"
    ))
    .unwrap();
    assert_eq!(g.prefix_mamba_cache_slots(), Some(1));
    let short = 6799.0 / gib as f64;
    let e = geometry(&format!(
        "mamba_layers = 1\nprefix_caching_mamba_gb = {short:e}"
    ))
    .unwrap_err();
    assert!(e.contains("memory.prefix_caching_mamba_gb"), "{e}");
    assert!(e.contains("holds 0 Mamba cache slots"), "{e}");
}

#[test]
fn a_mamba_cache_budget_must_be_positive_and_needs_mamba_layers() {
    for bad in ["0.0", "-1.0", "nan", "inf"] {
        let e = geometry(&format!(
            "mamba_layers = 1\nprefix_caching_mamba_gb = {bad}"
        ))
        .unwrap_err();
        assert!(e.contains("memory.prefix_caching_mamba_gb"), "{bad}: {e}");
        assert!(e.contains("positive"), "{bad}: {e}");
    }
    let e = geometry("prefix_caching_mamba_gb = 1.0").unwrap_err();
    assert!(e.contains("memory.prefix_caching_mamba_gb"), "{e}");
    assert!(e.contains("needs Mamba layers"), "{e}");
}
