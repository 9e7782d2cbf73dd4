//! The generated items themselves: constants equal the geometry derived at run time from
//! the same spec, the build-script entry writes the same items as the attribute, inline
//! overrides take effect, and the typed accessors read the buffer the fill wrote.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::codegen::emit_cuda;
use attention_layout::layout::same_dims;
use attention_layout::{
    Field, Layout, RequestRow, RuntimeDims, StepError, StepInput, attention_layout,
};
use layout_user::models::*;
use layout_user::*;

/// The attribute on the file build.rs reads: the same layout as `MhaGraphs4`.
#[attention_layout(config = "layouts/mha-graphs4.toml")]
struct MhaGraphs4ByAttribute;

/// Checks a layout's constants against the geometry derived at run time from its spec.
fn check<L: Layout>() {
    let g = L::geometry().unwrap_or_else(|e| panic!("{}: {e}", L::NAME));
    assert!(
        same_dims(&L::dims(), &RuntimeDims::new(g.clone())),
        "{}",
        L::NAME
    );
    assert_eq!(L::FACTS, g.facts);
    assert_eq!(L::FIELDS, g.fields.as_slice());
    assert_eq!(L::BUCKETS, g.buckets.as_slice());
    assert_eq!(L::cuda_source().unwrap(), emit_cuda::cuda_source(&g));
    for f in &g.fields {
        assert_eq!(L::FIELD_OFFSETS[f.field.index()], f.offset);
        assert_eq!(L::FIELD_ELEMS[f.field.index()], f.elems);
    }
}

#[test]
fn constants_equal_the_runtime_geometry() {
    check::<HybridSmall>();
    check::<HybridEager>();
    check::<HybridSpec2>();
    check::<HybridDecodeGraphs>();
    check::<MhaGraphs4>();
    check::<HybridLinearTp2>();
    check::<MhaGraphs4ByAttribute>();
    check::<NemotronH8b>();
    check::<Llama3_1_8b>();
    check::<Qwen2_5_7b>();
    check::<Mamba2_2_7b>();
    check::<Jamba1_5Mini>();
    check::<Llama3_1_8bSpec2>();
    check::<NemotronH8bTuned>();
    check::<HybridTable>();
    check::<NemotronH8bByName>();
    check::<NemotronH8bByPath>();
    check::<Mamba2ByName>();
    check::<HybridFormats>();
}

#[test]
fn a_layout_with_formats_generates_their_fields_and_fills_them() {
    const { assert!(HybridFormats::FACTS.flashinfer && HybridFormats::FACTS.vllm) };
    assert_eq!(
        HybridFormats::VLLM_HAS_INITIAL_STATE.dtype,
        attention_layout::codegen::Dtype::U8
    );
    let mut b = HybridFormatsBuilder::new();
    let blocks = [3, 4];
    let rows = [attention_layout::RequestRow::prefill(20, 4, &blocks, 1)];
    b.fill(&attention_layout::StepInput {
        rows: &rows,
        ..Default::default()
    })
    .unwrap();
    let m = b.metadata();
    assert_eq!(&m.flashinfer_paged_kv_indptr()[..2], &[0, 2]);
    assert_eq!(&m.flashinfer_paged_kv_indices()[..2], &[3, 4]);
    assert_eq!(m.flashinfer_paged_kv_last_page_len()[0], 8);
    assert_eq!(m.vllm_slot_mapping()[0], 3 * 16 + 4);
    assert_eq!(m.vllm_has_initial_state()[0], 1);
    assert_eq!(m.vllm_state_indices_prefill()[0], 1);
}

#[test]
fn explicit_tables_are_the_bucket_list_sorted() {
    use attention_layout::BatchDims;
    let b = |t, p, d| BatchDims::new(t, p, d);
    assert_eq!(
        HybridTable::BUCKETS,
        [
            b(3, 0, 3),
            b(8, 0, 8),
            b(16, 2, 6),
            b(32, 1, 7),
            b(64, 4, 4)
        ]
    );
    assert!(HybridTable::SPEC_TOML.contains("buckets"));
    assert!(NemotronH8bTuned::BUCKETS.len() <= 32);
    assert!(NemotronH8bTuned::BUCKETS.contains(&b(256, 0, 256)));
    // Strict matching: (12, 1, 5) lands in the smallest bucket with at least 12 tokens,
    // 1 prefill and 5 decode slots.
    let mut builder = HybridTableBuilder::new();
    let blocks = [[0, 1, 2]; 6];
    let mut rows: Vec<RequestRow<'_>> = (0..5)
        .map(|i| RequestRow::decode(1, 4, &blocks[i], i as i32))
        .collect();
    rows.push(RequestRow::prefill(7, 0, &blocks[5], 5));
    let m = builder
        .fill(&attention_layout::StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(m.info().real, b(12, 1, 5));
    assert_eq!(m.info().padded, b(16, 2, 6));
}

#[test]
fn a_bundled_layout_named_is_the_layout_of_its_file() {
    type Name = NemotronH8bByName;
    type Path = NemotronH8bByPath;
    assert!(same_dims(&Name::dims(), &Path::dims()));
    assert_eq!(Name::SPEC_TOML, Path::SPEC_TOML);
    assert_eq!(Name::FIELDS, Path::FIELDS);
    assert_eq!(Name::BUCKETS, Path::BUCKETS);
    assert_eq!(Name::FACTS.max_requests, 128);
    // Through the build-script entry too.
    assert!(same_dims(&Mamba2ByName::dims(), &Mamba2_2_7b::dims()));
    assert_eq!(Mamba2ByName::SPEC_TOML, Mamba2_2_7b::SPEC_TOML);
}

#[test]
fn build_script_and_attribute_generate_the_same_layout() {
    type A = MhaGraphs4;
    type B = MhaGraphs4ByAttribute;
    assert!(same_dims(&A::dims(), &B::dims()));
    assert_eq!(A::NAME, B::NAME);
    assert_eq!(A::SPEC_TOML, B::SPEC_TOML);
    assert_eq!(A::cuda_source().unwrap(), B::cuda_source().unwrap());
    assert_eq!(A::FIELDS, B::FIELDS);
}

#[test]
fn inline_keys_override_the_file() {
    // hybrid-small.toml has mixed and prefill graphs; the override turns them off.
    assert!(HybridSmall::BUCKETS.iter().any(|b| b.prefill > 0));
    assert!(!HybridDecodeGraphs::BUCKETS.is_empty());
    assert!(HybridDecodeGraphs::BUCKETS.iter().all(|b| b.prefill == 0));
    assert!(HybridDecodeGraphs::SPEC_TOML.contains("non_decode = false"));
    assert!(HybridDecodeGraphs::SPEC_TOML.contains("mixed_prefill = 4"));
    assert!(HybridEager::BUCKETS.is_empty());
    assert_eq!(HybridSpec2::FACTS.block_table_width, 9);
    assert_eq!(HybridLinearTp2::FACTS.tensor_parallel, 2);
}

#[test]
fn accessors_read_the_fields_the_fill_wrote() {
    let mut b = HybridSmallBuilder::new();
    let (b0, b1, b2) = ([0, 1], [2, 3, 4], [5]);
    let rows = [
        RequestRow::decode(1, 5, &b0, 0),
        RequestRow::decode(1, 9, &b1, 1),
        RequestRow::prefill(3, 0, &b2, 2),
    ];
    let input = StepInput {
        rows: &rows,
        ..Default::default()
    };
    let m = b.fill(&input).unwrap();
    let v = m.view();
    let info = *m.info();
    assert_eq!(
        (info.real.tokens, info.real.prefill, info.real.decode),
        (5, 1, 2)
    );
    // Whole fields, at their constant offsets and capacities.
    assert_eq!(m.bytes().len(), HybridSmall::FACTS.total_bytes);
    assert_eq!(m.token_to_input_ids().len(), HybridSmall::FACTS.max_tokens);
    assert_eq!(
        m.mha_block_table().len(),
        HybridSmall::FACTS.max_requests * HybridSmall::FACTS.block_table_width
            + attention_layout::codegen::BLOCK_TABLE_GUARD
    );
    // The step's views are prefixes of them.
    let np = info.padded.requests() as usize;
    assert_eq!(
        &m.mha_block_table()[..v.block_table().len()],
        v.block_table()
    );
    assert_eq!(
        &m.mha_cu_query_seq_lengths()[..np + 1],
        v.cu_query_seq_lengths()
    );
    assert_eq!(
        &m.token_to_position_in_request()[..info.padded.tokens as usize],
        v.token_to_position_in_request()
    );
    let cu = v.mamba_cu_seqlens().unwrap();
    assert_eq!(&m.mamba_cu_seqlens()[..cu.len()], cu);
    assert_eq!(m.real_token_count(), [5]);
    assert_eq!(&m.mha_block_table()[..2], [0, 1]);
    assert_eq!(
        HybridSmall::MHA_BLOCK_TABLE.offset,
        HybridSmall::FIELD_OFFSETS[Field::MhaBlockTable.index()]
    );

    // A rejected step changes nothing.
    let before = b.metadata().bytes().to_vec();
    let bad = [RequestRow::decode(1, 0, &[99], 0)];
    let err = b
        .fill(&StepInput {
            rows: &bad,
            ..Default::default()
        })
        .err()
        .unwrap();
    assert!(matches!(err, StepError::BlockOutOfRange { .. }), "{err}");
    assert_eq!(b.metadata().bytes(), before.as_slice());
}

#[test]
fn a_reset_builder_builds_what_a_new_one_builds() {
    let (b0, b1, b2) = ([0, 1], [2, 3, 4], [5]);
    let first = [
        RequestRow::paused(4, &b2, 3),
        RequestRow::decode(1, 5, &b0, 0),
        RequestRow::prefill(9, 0, &b1, 1),
    ];
    let next = [RequestRow::decode(1, 2, &b2, 5)];
    let step = |rows| StepInput {
        rows,
        ..Default::default()
    };
    let mut used = HybridSmallBuilder::new();
    used.fill(&step(&first)).unwrap();
    used.reset();
    let mut fresh = HybridSmallBuilder::new();
    assert_eq!(used.metadata().bytes(), fresh.metadata().bytes());
    assert_eq!(used.metadata().info(), fresh.metadata().info());
    used.fill(&step(&next)).unwrap();
    fresh.fill(&step(&next)).unwrap();
    assert_eq!(used.metadata().bytes(), fresh.metadata().bytes());
    assert_eq!(used.metadata().info(), fresh.metadata().info());
}

#[test]
fn the_big_layouts_build_a_step() {
    let mut b = NemotronH8bBuilder::default();
    let blocks: Vec<i32> = (0..4).collect();
    let rows = [RequestRow::prefill(200, 0, &blocks, 0)];
    let m = b
        .fill(&StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(m.info().real.tokens, 200);
    assert_eq!(m.bytes().len(), NemotronH8b::FACTS.total_bytes);
    // Megatron's 347,172 bytes and the block table's 128-byte guard.
    assert_eq!(b.host().bytes().len(), 347_172 + 128);
}
