//! Every kind of bad step input gets its typed error, and a rejected step leaves the
//! previously built metadata byte for byte as it was.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::fill::{self, FillState};
use attention_layout::{
    Dims, Field, Geometry, HostMetadata, IntermediateOffsets, Phase, RequestRow, RuntimeDims,
    StepError, StepInput,
};

/// R=8, T=64, B=4, S=32, s=1, hybrid, Pk=17 (dummy 16), Kmax = min(16, 24) = 16.
fn spec() -> LayoutSpec {
    LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Hybrid,
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 32,
        block_size: 4,
        speculative_tokens: 1,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(17),
        mamba: Some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    }
}

const B0: &[i32] = &[0, 1];
const B1: &[i32] = &[2, 3, 4];
const B2: &[i32] = &[5, 6];

/// A valid step: one decode, one prefill.
fn good_rows() -> Vec<RequestRow<'static>> {
    vec![
        RequestRow::decode(2, 5, B0, 0),
        RequestRow::prefill(6, 4, B1, 1),
    ]
}

/// Fills a valid step, then `bad`, and checks the error kind and that nothing changed.
fn rejects(bad: StepInput<'_>, kind: &str) -> StepError {
    rejects_in(&spec(), &good_rows(), bad, kind)
}

/// [`rejects`] on another layout, with a valid step `rows` of it.
fn rejects_in(
    spec: &LayoutSpec,
    rows: &[RequestRow<'_>],
    bad: StepInput<'_>,
    kind: &str,
) -> StepError {
    let mut m = HostMetadata::new(RuntimeDims::new(Geometry::new(spec).unwrap()));
    m.fill(&StepInput {
        rows,
        ..Default::default()
    })
    .unwrap();
    let before = m.bytes().to_vec();
    let info = *m.info();
    let err = m.fill(&bad).unwrap_err();
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(m.bytes(), before.as_slice(), "buffer changed after {err}");
    assert_eq!(*m.info(), info, "step info changed after {err}");
    // And the metadata is still usable: the good step again gives the same bytes.
    m.fill(&StepInput {
        rows,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(m.bytes(), before.as_slice());
    err
}

fn input<'a>(rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
    StepInput {
        rows,
        ..Default::default()
    }
}

#[test]
fn too_many_requests() {
    let rows: Vec<_> = (0..9).map(|i| RequestRow::paused(0, &[], i)).collect();
    let e = rejects(input(&rows), "too_many_requests");
    assert!(e.to_string().contains("max_requests = 8"));
}

#[test]
fn too_many_tokens() {
    let blocks: Vec<i32> = (0..7).collect();
    let rows: Vec<_> = (0..3)
        .map(|i: i32| RequestRow::prefill(22 + i as u32, 0, &blocks, i))
        .collect();
    let e = rejects(input(&rows), "too_many_tokens");
    assert_eq!(
        e,
        StepError::TooManyTokens {
            tokens: 69,
            limit: 64
        }
    );
}

#[test]
fn zero_query_length_on_an_active_row() {
    let rows = [RequestRow::prefill(0, 0, B0, 0)];
    assert_eq!(
        rejects(input(&rows), "zero_query_length"),
        StepError::ZeroQueryLength { row: 0 }
    );
}

#[test]
fn sequence_beyond_max_seq_len() {
    let blocks: Vec<i32> = (0..8).collect();
    let rows = [RequestRow::prefill(4, 30, &blocks, 0)];
    let e = rejects(input(&rows), "sequence_too_long");
    assert!(e.to_string().contains("request 0"));
    assert!(e.to_string().contains("max_seq_len = 32"));
    // A prefill row gets no room for draft tokens: 33 positions are one too many.
    let blocks: Vec<i32> = (0..9).collect();
    let rows = [RequestRow::prefill(3, 30, &blocks, 0)];
    assert_eq!(
        rejects(input(&rows), "sequence_too_long"),
        StepError::SequenceTooLong {
            row: 0,
            kv_offset: 30,
            query_length: 3,
            limit: 32,
            bound: "max_seq_len",
        }
    );
}

/// S = 32, B = 4, s = 1: the block table is 8 + 1 columns wide so that the last decode
/// step of a request reaching max_seq_len can write its draft token at position 32.
#[test]
fn a_decode_row_may_run_its_draft_tokens_past_max_seq_len() {
    let mut m = HostMetadata::new(RuntimeDims::new(Geometry::new(&spec()).unwrap()));
    let blocks: Vec<i32> = (0..9).collect();
    let rows = [RequestRow::decode(2, 31, &blocks, 0)];
    m.fill(&input(&rows)).unwrap();
    let v = m.view();
    assert_eq!(v.kv_seq_lengths()[0], 33);
    assert_eq!(&v.token_to_pos_ids()[..2], [31, 32]);
    // Position 32 lands in column 8, the extra one.
    assert_eq!(&v.token_to_block_idx()[..2], [7, 8]);
    assert_eq!(&v.token_to_local_position_within_kv_block()[..2], [3, 0]);
    assert_eq!(&v.block_table()[..9], blocks.as_slice());
}

#[test]
fn a_decode_row_beyond_max_seq_len_plus_speculative_tokens() {
    let blocks: Vec<i32> = (0..9).collect();
    let rows = [RequestRow::decode(2, 32, &blocks, 0)];
    let e = rejects(input(&rows), "sequence_too_long");
    assert_eq!(
        e,
        StepError::SequenceTooLong {
            row: 0,
            kv_offset: 32,
            query_length: 2,
            limit: 33,
            bound: "max_seq_len + speculative_tokens",
        }
    );
    assert!(
        e.to_string()
            .contains("exceeds max_seq_len + speculative_tokens = 33"),
        "{e}"
    );
}

/// More draft tokens than the extra column holds: S = 8, B = 1, s = 2 gives 8 + 1 columns
/// of one position, so a decode row may reach 9 positions, not S + s = 10.
#[test]
fn a_decode_row_beyond_the_block_table_positions() {
    let mut tight = spec();
    tight.max_seq_len = 8;
    tight.block_size = 1;
    tight.speculative_tokens = 2;
    let g = Geometry::new(&tight).unwrap();
    assert_eq!(g.facts.block_table_width, 9);
    assert_eq!(RuntimeDims::new(g).decode_kv_limit(), 9);
    let blocks: Vec<i32> = (0..9).collect();
    let good = [RequestRow::decode(3, 6, &blocks, 0)];
    let bad = [RequestRow::decode(3, 7, &blocks, 0)];
    let e = rejects_in(&tight, &good, input(&bad), "sequence_too_long");
    assert_eq!(
        e,
        StepError::SequenceTooLong {
            row: 0,
            kv_offset: 7,
            query_length: 3,
            limit: 9,
            bound: "block_table_width * block_size",
        }
    );
}

#[test]
fn block_outside_the_pool() {
    let rows = [RequestRow::decode(2, 1, &[16], 0)];
    let e = rejects(input(&rows), "block_out_of_range");
    assert_eq!(
        e,
        StepError::BlockOutOfRange {
            row: 0,
            index: 0,
            id: 16,
            limit: 16
        }
    );
    let rows = [RequestRow::decode(2, 1, &[-5], 0)];
    rejects(input(&rows), "block_out_of_range");
}

#[test]
fn too_few_blocks_for_the_positions_written() {
    // Positions 3..5 need blocks 0 and 1; only block 0 given.
    let rows = [RequestRow::decode(2, 3, &[7], 0)];
    let e = rejects(input(&rows), "missing_block");
    assert_eq!(
        e,
        StepError::MissingBlock {
            row: 0,
            position: 4,
            index: 1,
            count: 1
        }
    );
    // A -1 hole where a position lands.
    let rows = [RequestRow::prefill(8, 0, &[7, -1], 0)];
    rejects(input(&rows), "missing_block");
}

#[test]
fn too_many_block_ids() {
    let blocks: Vec<i32> = (0..10).collect();
    let rows = [RequestRow::decode(2, 1, &blocks, 0)];
    rejects(input(&rows), "too_many_blocks");
}

#[test]
fn decode_after_prefill() {
    let rows = [
        RequestRow::prefill(3, 0, B0, 0),
        RequestRow::decode(2, 3, B2, 1),
    ];
    let e = rejects(input(&rows), "phase_order");
    assert!(
        e.to_string()
            .contains("request 1: a decode row after a prefill row")
    );
    let rows = [
        RequestRow::decode(2, 3, B2, 1),
        RequestRow::paused(0, &[], 2),
    ];
    rejects(input(&rows), "phase_order");
}

#[test]
fn decode_query_length_must_be_spec_plus_one() {
    let rows = [RequestRow::decode(1, 3, B2, 1)];
    assert_eq!(
        rejects(input(&rows), "decode_query_length"),
        StepError::DecodeQueryLength {
            row: 0,
            got: 1,
            expected: 2
        }
    );
}

#[test]
fn missing_mamba_slot() {
    let rows = [RequestRow::decode(2, 3, B2, -1)];
    rejects(input(&rows), "missing_mamba_slot");
}

#[test]
fn duplicated_mamba_slot() {
    let rows = [
        RequestRow::paused(3, B2, 4),
        RequestRow::decode(2, 3, B0, 4),
    ];
    assert_eq!(
        rejects(input(&rows), "duplicate_mamba_slot"),
        StepError::DuplicateMambaSlot {
            row: 1,
            slot: 4,
            other: 0
        }
    );
}

#[test]
fn mamba_slot_out_of_range() {
    let rows = [RequestRow::decode(2, 3, B0, 8)];
    rejects(input(&rows), "mamba_slot_out_of_range");
}

#[test]
fn more_intermediate_offsets_than_capacity() {
    // Kmax = 16 here; 6 prefill rows with 3 offsets each = 18.
    let blocks: Vec<Vec<i32>> = (0..6).map(|i| vec![2 * i, 2 * i + 1]).collect();
    let rows: Vec<_> = (0..6)
        .map(|i| RequestRow::prefill(8, 0, &blocks[i], i as i32))
        .collect();
    let three = IntermediateOffsets {
        count: 3,
        offsets: [1, 2, 4],
    };
    let inter = [three; 6];
    let e = rejects(
        StepInput {
            rows: &rows,
            token_ids: None,
            intermediate: Some(&inter),
            residency: None,
        },
        "too_many_intermediates",
    );
    assert_eq!(
        e,
        StepError::TooManyIntermediates {
            count: 18,
            limit: 16
        }
    );
}

#[test]
fn bad_intermediate_offsets() {
    let rows = good_rows();
    let wrong_len = [IntermediateOffsets::default(); 2];
    rejects(
        StepInput {
            rows: &rows,
            token_ids: None,
            intermediate: Some(&wrong_len),
            residency: None,
        },
        "intermediate_length",
    );
    let at_end = [IntermediateOffsets {
        count: 1,
        offsets: [6, 0, 0],
    }];
    rejects(
        StepInput {
            rows: &rows,
            token_ids: None,
            intermediate: Some(&at_end),
            residency: None,
        },
        "intermediate_offset",
    );
}

#[test]
fn token_ids_of_the_wrong_length() {
    let rows = good_rows();
    rejects(
        StepInput {
            rows: &rows,
            token_ids: Some(&[1, 2, 3]),
            intermediate: None,
            residency: None,
        },
        "token_ids_length",
    );
}

#[test]
fn paused_rows_are_checked_but_contribute_nothing() {
    let mut m = HostMetadata::new(RuntimeDims::new(Geometry::new(&spec()).unwrap()));
    let rows = [
        RequestRow::paused(7, B2, 3),
        RequestRow::decode(2, 5, B0, 0),
    ];
    let info = *m.fill(&input(&rows)).unwrap();
    assert_eq!(info.paused, 1);
    assert_eq!(info.real.decode, 1);
    assert_eq!(m.view().token_to_request_idx()[0], 1);
    assert_eq!(rows[0].phase, Phase::Paused);
}

#[test]
fn intermediate_count_over_three() {
    let rows = good_rows();
    let four = [IntermediateOffsets {
        count: 4,
        offsets: [1, 2, 3],
    }];
    let e = rejects(
        StepInput {
            rows: &rows,
            token_ids: None,
            intermediate: Some(&four),
            residency: None,
        },
        "intermediate_offset",
    );
    assert!(e.to_string().contains("count 4"));
}

/// An expert-parallel rank whose step is not the one its group agreed on (more tokens than
/// the group's maximum, or a prefill the group did not see) is refused before anything is
/// written, and the agreed step still builds afterwards.
#[test]
fn a_step_the_expert_parallel_group_did_not_agree_on() {
    use attention_layout::AgreedShape;
    let mut m = HostMetadata::new(RuntimeDims::new(Geometry::new(&spec()).unwrap()));
    let rows = good_rows();
    let good = input(&rows);
    // The good step: 8 tokens, one prefill. Agreed on it (and a bigger step elsewhere).
    let agreed = AgreedShape {
        ranks: 2,
        max_tokens: 20,
        any_prefill: true,
    };
    m.fill_agreed(&good, &agreed).unwrap();
    let before = m.bytes().to_vec();
    let info = *m.info();
    for wrong in [
        AgreedShape {
            max_tokens: 7,
            ..agreed
        },
        AgreedShape {
            any_prefill: false,
            ..agreed
        },
    ] {
        let e = m.fill_agreed(&good, &wrong).unwrap_err();
        assert_eq!(e.kind(), "not_agreed", "{e}");
        assert_eq!(
            e,
            StepError::NotAgreed {
                tokens: 8,
                prefill: 1,
                max_tokens: wrong.max_tokens,
                any_prefill: wrong.any_prefill,
            }
        );
        assert!(e.to_string().contains("8 tokens, 1 prefill"), "{e}");
        assert_eq!(m.bytes(), before.as_slice(), "buffer changed after {e}");
        assert_eq!(*m.info(), info, "step info changed after {e}");
    }
    m.fill_agreed(&good, &agreed).unwrap();
    assert_eq!(m.bytes(), before.as_slice());
}

/// [`Dims`] of a real layout that claim a buffer 8 bytes too short: the only way a
/// [`HostMetadata`] can meet a buffer that does not fit (its own buffer is sized from the
/// same dims).
#[derive(Debug, Clone)]
struct ShortBuffer(RuntimeDims, attention_layout::Facts);

impl ShortBuffer {
    fn new(dims: RuntimeDims) -> Self {
        let mut facts = *dims.facts();
        facts.total_bytes -= 8;
        Self(dims, facts)
    }
}

impl Dims for ShortBuffer {
    fn facts(&self) -> &attention_layout::Facts {
        &self.1
    }
    fn field_offset(&self, f: Field) -> usize {
        self.0.field_offset(f)
    }
    fn field_elems(&self, f: Field) -> usize {
        self.0.field_elems(f)
    }
    fn buckets(&self) -> &[attention_layout::BatchDims] {
        self.0.buckets()
    }
}

#[test]
fn buffer_that_does_not_fit() {
    let dims = RuntimeDims::new(Geometry::new(&spec()).unwrap());
    let rows = good_rows();
    let good = input(&rows);

    // Through HostMetadata (dims that disagree with their own buffer).
    let mut m = HostMetadata::new(ShortBuffer::new(dims.clone()));
    let before = m.bytes().to_vec();
    let info = *m.info();
    let e = m.fill(&good).unwrap_err();
    assert_eq!(e.kind(), "buffer", "{e}");
    assert_eq!(m.bytes(), before.as_slice(), "buffer changed after {e}");
    assert_eq!(*m.info(), info);

    // Through the low-level fill: a short buffer and a misaligned one.
    let total = dims.total_bytes();
    let mut words = vec![0x5a5a_5a5a_5a5a_5a5au64; total.div_ceil(8) + 1];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let snapshot = bytes.to_vec();
    for range in [0..total - 1, 1..total + 1] {
        let e = fill::init_buffer(&dims, &mut bytes[range]).unwrap_err();
        assert_eq!(e.kind(), "buffer");
    }
    assert_eq!(
        &*bytes,
        snapshot.as_slice(),
        "init_buffer wrote into a bad buffer"
    );
    let mut state = FillState::new(&dims);
    let mut plan = fill::plan_step(&dims, &good, &mut state).unwrap();
    // The plan holds the fill state: its debug form shows both.
    let plan_before = format!("{plan:?}");
    for range in [0..total - 1, 4..total + 4] {
        let e = fill::write_step(&mut plan, &mut bytes[range]).unwrap_err();
        assert_eq!(e.kind(), "buffer");
    }
    assert_eq!(
        &*bytes,
        snapshot.as_slice(),
        "write_step wrote into a bad buffer"
    );
    assert_eq!(
        format!("{plan:?}"),
        plan_before,
        "write_step changed its plan or state"
    );
}

/// The kind name of every [`StepError`] variant; the match is exhaustive, so a new variant
/// does not compile until it is listed here and gets a test above.
fn kind_name(e: &StepError) -> &'static str {
    match e {
        StepError::TooManyRequests { .. } => "too_many_requests",
        StepError::TooManyTokens { .. } => "too_many_tokens",
        StepError::PhaseOrder { .. } => "phase_order",
        StepError::ZeroQueryLength { .. } => "zero_query_length",
        StepError::DecodeQueryLength { .. } => "decode_query_length",
        StepError::SequenceTooLong { .. } => "sequence_too_long",
        StepError::TooManyBlocks { .. } => "too_many_blocks",
        StepError::BlockOutOfRange { .. } => "block_out_of_range",
        StepError::MissingBlock { .. } => "missing_block",
        StepError::MissingMambaSlot { .. } => "missing_mamba_slot",
        StepError::MambaSlotOutOfRange { .. } => "mamba_slot_out_of_range",
        StepError::DuplicateMambaSlot { .. } => "duplicate_mamba_slot",
        StepError::TokenIdsLength { .. } => "token_ids_length",
        StepError::IntermediateLength { .. } => "intermediate_length",
        StepError::IntermediateOffset { .. } => "intermediate_offset",
        StepError::TooManyIntermediates { .. } => "too_many_intermediates",
        StepError::NotAgreed { .. } => "not_agreed",
        StepError::Buffer { .. } => "buffer",
        StepError::FillState { .. } => "fill_state",
    }
}

/// Every kind is provoked by one of the tests of this file (each through `rejects`, which
/// checks that the metadata bytes and step info are unchanged, or, for `buffer`, by
/// `buffer_that_does_not_fit`, for `fill_state` by
/// `a_fill_state_made_for_another_layout_is_refused`). This test keeps that list complete.
#[test]
fn every_step_error_kind_is_covered() {
    let tested = [
        "too_many_requests",
        "too_many_tokens",
        "phase_order",
        "zero_query_length",
        "decode_query_length",
        "sequence_too_long",
        "too_many_blocks",
        "block_out_of_range",
        "missing_block",
        "missing_mamba_slot",
        "mamba_slot_out_of_range",
        "duplicate_mamba_slot",
        "token_ids_length",
        "intermediate_length",
        "intermediate_offset",
        "too_many_intermediates",
        "not_agreed",
        "buffer",
        "fill_state",
    ];
    let samples = [
        StepError::TooManyRequests { rows: 0, limit: 0 },
        StepError::TooManyTokens {
            tokens: 0,
            limit: 0,
        },
        StepError::PhaseOrder {
            row: 0,
            phase: "",
            previous: "",
        },
        StepError::ZeroQueryLength { row: 0 },
        StepError::DecodeQueryLength {
            row: 0,
            got: 0,
            expected: 0,
        },
        StepError::SequenceTooLong {
            row: 0,
            kv_offset: 0,
            query_length: 0,
            limit: 0,
            bound: "",
        },
        StepError::TooManyBlocks {
            row: 0,
            count: 0,
            limit: 0,
        },
        StepError::BlockOutOfRange {
            row: 0,
            index: 0,
            id: 0,
            limit: 0,
        },
        StepError::MissingBlock {
            row: 0,
            position: 0,
            index: 0,
            count: 0,
        },
        StepError::MissingMambaSlot { row: 0 },
        StepError::MambaSlotOutOfRange {
            row: 0,
            slot: 0,
            limit: 0,
        },
        StepError::DuplicateMambaSlot {
            row: 0,
            slot: 0,
            other: 0,
        },
        StepError::TokenIdsLength {
            got: 0,
            expected: 0,
        },
        StepError::IntermediateLength {
            got: 0,
            expected: 0,
        },
        StepError::IntermediateOffset {
            row: 0,
            offset: 0,
            query_length: 0,
            count: 0,
        },
        StepError::TooManyIntermediates { count: 0, limit: 0 },
        StepError::NotAgreed {
            tokens: 0,
            prefill: 0,
            max_tokens: 0,
            any_prefill: false,
        },
        StepError::Buffer {
            got: 0,
            align: 0,
            expected: 0,
        },
        StepError::FillState {
            rows: 0,
            slots: 0,
            expected_rows: 0,
            expected_slots: 0,
        },
    ];
    for e in &samples {
        assert_eq!(e.kind(), kind_name(e));
        assert!(tested.contains(&e.kind()), "{} has no test", e.kind());
    }
    assert_eq!(samples.len(), tested.len());
}

#[test]
fn a_fill_state_made_for_another_layout_is_refused() {
    let dims = RuntimeDims::new(Geometry::new(&spec()).unwrap());
    let rows = good_rows();
    let good = input(&rows);
    let mut small = spec();
    small.max_requests -= 1;
    let other = RuntimeDims::new(Geometry::new(&small).unwrap());
    let mut state = FillState::new(&other);
    let before = format!("{state:?}");
    let e = fill::plan_step(&dims, &good, &mut state).unwrap_err();
    assert_eq!(
        e,
        StepError::FillState {
            rows: other.max_requests(),
            slots: other.max_requests(),
            expected_rows: dims.max_requests(),
            expected_slots: dims.max_requests(),
        }
    );
    assert_eq!(
        format!("{state:?}"),
        before,
        "a refused plan changed its state"
    );
}

#[test]
fn needed_block_check_reads_only_the_blocks_tokens_land_in() {
    use attention_layout::fill::{BlockCheck, FillState, plan_step_checking};
    let dims = RuntimeDims::new(Geometry::new(&spec()).unwrap());
    let mut state = FillState::new(&dims);
    // Positions 5..7 land in block index 1; index 0 holds an id outside the pool.
    let rows = [RequestRow::decode(2, 5, &[99, 3], 0)];
    let step = input(&rows);
    let full = plan_step_checking(&dims, &step, &mut state, BlockCheck::Full).unwrap_err();
    assert_eq!(full.kind(), "block_out_of_range");
    plan_step_checking(&dims, &step, &mut state, BlockCheck::Needed).unwrap();
    // An id the tokens land in is checked in both modes.
    let rows = [RequestRow::decode(2, 5, &[3, 99], 0)];
    let step = input(&rows);
    for check in [BlockCheck::Full, BlockCheck::Needed] {
        let e = plan_step_checking(&dims, &step, &mut state, check).unwrap_err();
        assert_eq!(
            e,
            StepError::BlockOutOfRange {
                row: 0,
                index: 1,
                id: 99,
                limit: 16
            }
        );
    }
}

#[test]
fn a_decode_step_that_reuses_the_last_steps_mamba_slots_passes_and_one_that_duplicates_a_slot_is_refused()
 {
    let dims = RuntimeDims::new(Geometry::new(&spec()).unwrap());
    let mut state = FillState::new(&dims);
    let plan = |state: &mut FillState, rows: &[RequestRow<'_>]| {
        fill::plan_step_checking(&dims, &input(rows), state, fill::BlockCheck::Needed)
            .map(|p| *p.info())
    };
    let steady = [
        RequestRow::decode(2, 3, B0, 0),
        RequestRow::decode(2, 3, B2, 1),
    ];
    // The same slots step after step (the lean pass then skips their claims).
    let first = plan(&mut state, &steady).unwrap();
    assert_eq!(plan(&mut state, &steady).unwrap(), first);
    // Then a duplicate, an out-of-range slot and a missing one: each still named.
    let duplicate = [
        RequestRow::decode(2, 3, B0, 1),
        RequestRow::decode(2, 3, B2, 1),
    ];
    assert_eq!(
        plan(&mut state, &duplicate).unwrap_err(),
        StepError::DuplicateMambaSlot {
            row: 1,
            slot: 1,
            other: 0
        }
    );
    let out_of_range = [
        RequestRow::decode(2, 3, B0, 0),
        RequestRow::decode(2, 3, B2, 8),
    ];
    assert_eq!(
        plan(&mut state, &out_of_range).unwrap_err().kind(),
        "mamba_slot_out_of_range"
    );
    assert_eq!(plan(&mut state, &steady).unwrap(), first);
    let missing = [
        RequestRow::decode(2, 3, B0, 0),
        RequestRow::decode(2, 3, B2, -1),
    ];
    assert_eq!(
        plan(&mut state, &missing).unwrap_err(),
        StepError::MissingMambaSlot { row: 1 }
    );
    // Fewer rows with slots the last list held: still checked among themselves.
    let shorter = [RequestRow::decode(2, 3, B0, 1)];
    assert!(plan(&mut state, &shorter).is_ok());
    assert!(plan(&mut state, &steady).is_ok());
}
