//! Layout specs with arbitrary field values (every `u32` in its full range, any float):
//! `LayoutSpec` -> `Geometry::new`, bypassing TOML so that large and extreme numbers are
//! as likely as small ones (the text target rarely writes two huge numbers at once).
//!
//! Checked: no panic (overflow checks are on in fuzz builds) and no hang; a derived
//! geometry is self-consistent and its buckets valid; a small one fills an empty step.

#![no_main]

use arbitrary::Arbitrary;
use attention_layout::codegen::Distribution;
use attention_layout::codegen::buckets::is_valid;
use attention_layout::codegen::spec::{
    GraphCount, GraphSpec, IndexDtype, LayoutSpec, MambaSpec, MemorySpec, ModelKind,
};
use attention_layout::{Geometry, HostMetadata, RuntimeDims, StepInput};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Memory {
    attention_layers: u32,
    mamba_layers: u32,
    kv_heads: u32,
    head_dim: u32,
    dtype_bytes: u32,
    mamba_heads: u32,
    mamba_head_dim: u32,
    mamba_state_dim: u32,
    mamba_groups: u32,
    state_dtype_bytes: u32,
    budget_gib: f64,
}

#[derive(Arbitrary, Debug)]
struct Raw {
    model: u8,
    max_requests: u32,
    max_tokens: u32,
    max_seq_len: u32,
    block_size: u32,
    speculative_tokens: u32,
    tensor_parallel: u32,
    i32_idx: bool,
    kv_pool_blocks: Option<u32>,
    mamba: Option<(u32, u32)>,
    count: u8,
    count_n: u32,
    linear: bool,
    token_budget: Option<u32>,
    mixed_prefill: u32,
    non_decode: bool,
    memory: Option<Memory>,
}

fuzz_target!(|raw: Raw| {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: [ModelKind::Mha, ModelKind::Hybrid, ModelKind::Mamba][usize::from(raw.model % 3)],
        max_requests: raw.max_requests,
        max_tokens: raw.max_tokens,
        max_seq_len: raw.max_seq_len,
        block_size: raw.block_size,
        speculative_tokens: raw.speculative_tokens,
        tensor_parallel: raw.tensor_parallel,
        decode_index_dtype: if raw.i32_idx {
            IndexDtype::I32
        } else {
            IndexDtype::I64
        },
        kv_pool_blocks: raw.kv_pool_blocks,
        mamba: raw.mamba.map(|(chunk_size, conv_width)| MambaSpec {
            chunk_size,
            conv_width,
        }),
        graphs: GraphSpec {
            count: match raw.count % 3 {
                0 => GraphCount::Auto,
                1 => GraphCount::Off,
                _ => GraphCount::Count(raw.count_n),
            },
            distribution: if raw.linear {
                Distribution::Linear
            } else {
                Distribution::Exponential
            },
            token_budget: raw.token_budget,
            mixed_prefill: raw.mixed_prefill,
            non_decode: raw.non_decode,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: raw.memory.map(|m| MemorySpec {
            attention_layers: m.attention_layers,
            mamba_layers: m.mamba_layers,
            kv_heads: m.kv_heads,
            head_dim: m.head_dim,
            dtype_bytes: m.dtype_bytes,
            mamba_heads: m.mamba_heads,
            mamba_head_dim: m.mamba_head_dim,
            mamba_state_dim: m.mamba_state_dim,
            mamba_groups: m.mamba_groups,
            state_dtype_bytes: m.state_dtype_bytes,
            budget_gib: m.budget_gib,
        }),
        formats: Vec::new(),
    };
    let _ = spec.decode_tokens();
    let _ = spec.token_rounder();
    let Ok(g) = Geometry::new(&spec) else {
        return;
    };
    // Bucket lists of huge layouts are long (linear ladders up to T / tp entries); the
    // geometry itself is cheap, so only the consistency checks are bounded.
    let mut end = 0;
    for f in &g.fields {
        assert!(
            f.offset >= end,
            "{:?} overlaps the field before it",
            f.field
        );
        assert_eq!(f.offset % f.dtype.size(), 0, "{:?} misaligned", f.field);
        end = f.end();
    }
    assert_eq!(end, g.facts.total_bytes);
    assert!(g.facts.dummy_block >= 1);
    assert!(g.buckets.windows(2).all(|w| w[0] < w[1]));
    for b in &g.buckets {
        assert!(is_valid(
            *b,
            spec.max_requests,
            spec.max_seq_len,
            spec.speculative_tokens
        ));
    }
    if g.facts.total_bytes <= 1 << 16 {
        let mut meta = HostMetadata::new(RuntimeDims::new(g));
        let info = *meta
            .fill(&StepInput::default())
            .unwrap_or_else(|e| panic!("empty step rejected: {e}"));
        assert_eq!(info.real.tokens, 0);
    }
});
