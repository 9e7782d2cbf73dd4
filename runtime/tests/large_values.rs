//! Regression tests for values near the limits of the 32-bit metadata arrays: the fill
//! never wraps (or, in debug builds, panics on) an int32 cumulative length.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use attention_layout::codegen::spec::{GraphCount, GraphSpec, LayoutSpec, ModelKind};
use attention_layout::{Geometry, HostMetadata, RequestRow, RuntimeDims, StepInput};

/// R decode rows of one token each at the very end of a 2^24-token sequence, one block
/// per row: the sum of KV lengths is R · 2^24.
fn spec(r: u32) -> LayoutSpec {
    LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Mha,
        max_requests: r,
        max_tokens: 64 * r.div_ceil(64),
        max_seq_len: 1 << 24,
        block_size: 1 << 24,
        speculative_tokens: 0,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(2),
        mamba: None,
        graphs: GraphSpec {
            count: GraphCount::Off,
            ..GraphSpec::default()
        },
        memory: None,
        formats: Vec::new(),
    }
}

#[test]
fn largest_cumulative_kv_length_fits_int32() {
    // 127 · 2^24 = 2_130_706_432 <= i32::MAX.
    let g = Geometry::new(&spec(127)).unwrap();
    let mut m = HostMetadata::new(RuntimeDims::new(g));
    let blocks = [0];
    let rows: Vec<_> = (0..127)
        .map(|_| RequestRow::decode(1, (1 << 24) - 1, &blocks, -1))
        .collect();
    m.fill(&StepInput {
        rows: &rows,
        ..Default::default()
    })
    .unwrap();
    let v = m.view();
    assert_eq!(v.cu_kv_seq_lengths()[127], 127 << 24);
    assert_eq!(v.max_seqlen_k(), 1 << 24);
}

#[test]
fn layouts_whose_kv_sum_overflows_int32_are_rejected() {
    // 128 · 2^24 = 2^31 > i32::MAX: cu_kv_seq_lengths could not hold it.
    let e = Geometry::new(&spec(128)).unwrap_err();
    assert!(
        e.to_string()
            .contains("max_requests * max_seq_len = 2147483648"),
        "{e}"
    );
}

/// With draft tokens a decode row's KV length reaches max_seq_len + s, so that is what the
/// cumulative KV lengths must hold for every row.
#[test]
fn speculative_decode_rows_at_the_end_of_the_longest_sequence_fit_int32() {
    let mut spec = spec(127);
    spec.speculative_tokens = 1;
    spec.max_tokens = 256;
    // 127 · (2^24 + 1) = 2_130_706_559 <= i32::MAX.
    let g = Geometry::new(&spec).unwrap();
    assert_eq!(g.facts.block_table_width, 2);
    let mut m = HostMetadata::new(RuntimeDims::new(g));
    // Positions 2^24 - 1 and 2^24: the last one in the extra column.
    let blocks = [0, 0];
    let rows: Vec<_> = (0..127)
        .map(|_| RequestRow::decode(2, (1 << 24) - 1, &blocks, -1))
        .collect();
    m.fill(&StepInput {
        rows: &rows,
        ..Default::default()
    })
    .unwrap();
    let v = m.view();
    assert_eq!(v.kv_seq_lengths()[0], (1 << 24) + 1);
    assert_eq!(v.cu_kv_seq_lengths()[127], 127 * ((1 << 24) + 1));
}

#[test]
fn layouts_whose_speculative_kv_sum_overflows_int32_are_rejected() {
    // 128 · (2^24 − 1) fits, but 128 · (2^24 − 1 + 64) = 2^31 + 8064 does not.
    let mut spec = spec(128);
    spec.max_seq_len = (1 << 24) - 1;
    spec.block_size = 1 << 23;
    assert!(Geometry::new(&spec).is_ok());
    spec.speculative_tokens = 64;
    spec.max_tokens = 128 * 65;
    let e = Geometry::new(&spec).unwrap_err();
    assert!(
        e.to_string()
            .contains("max_requests * (max_seq_len + speculative_tokens) = 2147491712"),
        "{e}"
    );
}
