//! docs/SEMANTICS.md §11's worked examples A–F (real Megatron HEAD output), field by field, and
//! two more worked by hand from Megatron's rules, through the batch state: G, speculative
//! decoding at the end of the longest sequence (the block table's extra column), and H, a
//! chunked prefill that is not scheduled in a step (hidden, not a paused row).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
use attention_layout::alloc::{AllocError, KvBlockAllocator, MambaSlotPool};
use attention_layout::batch::{BatchError, BatchState, RequestPhase};
use attention_layout::codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{
    BatchDims, DecodeIndices, Dims, Geometry, HostMetadata, IntermediateOffsets, Phase, RequestRow,
    RuntimeDims, StepError, StepInput,
};

/// §11's common config: R=8, T=64, B=4, S=32, s=0, tp=1, hybrid, cs=4, d_conv=4, Pk=17.
fn common() -> LayoutSpec {
    LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Hybrid,
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 32,
        block_size: 4,
        speculative_tokens: 0,
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

fn meta(spec: &LayoutSpec) -> HostMetadata<RuntimeDims> {
    HostMetadata::new(RuntimeDims::new(Geometry::new(spec).unwrap()))
}

fn rep(v: i32, n: usize) -> Vec<i32> {
    vec![v; n]
}

fn cat(parts: &[&[i32]]) -> Vec<i32> {
    parts.concat()
}

fn decode_idx(d: Option<DecodeIndices<'_>>) -> Option<Vec<i64>> {
    d.map(|d| d.to_vec())
}

#[test]
fn a_three_decode_two_prefill_graphed_padded_to_eight() {
    let spec = common();
    assert_eq!(Geometry::new(&spec).unwrap().buckets.len(), 24);
    let mut m = meta(&spec);
    let b = [vec![3, 7], vec![0, 1, 2], vec![4], vec![8, 9], vec![10, 11]];
    let rows = [
        RequestRow::decode(1, 5, &b[0], 6),
        RequestRow::decode(1, 8, &b[1], 5),
        RequestRow::decode(1, 2, &b[2], 7),
        RequestRow::prefill(6, 0, &b[3], 4),
        RequestRow::prefill(3, 4, &b[4], 3),
    ];
    let info = *m
        .fill(&StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info.real, BatchDims::new(12, 2, 3));
    assert_eq!(info.padded, BatchDims::new(16, 2, 6));
    assert!(info.graphed());
    let v = m.view();
    assert_eq!(v.query_lengths(), [1, 1, 1, 6, 3, 0, 0, 0]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 1, 2, 3, 9, 12, 12, 12, 12]);
    assert_eq!(v.kv_seq_lengths(), [6, 9, 3, 6, 7, 0, 0, 0]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 6, 15, 18, 24, 31, 31, 31, 31]);
    let bt = cat(&[
        &[3, 7],
        &rep(16, 6),
        &[0, 1, 2],
        &rep(16, 5),
        &[4],
        &rep(16, 7),
        &[8, 9],
        &rep(16, 6),
        &[10, 11],
        &rep(16, 6),
        &rep(16, 24),
    ]);
    assert_eq!(v.block_table(), bt.as_slice());
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (16, 32));
    assert_eq!(
        &v.token_to_pos_ids()[..12],
        [5, 8, 2, 0, 1, 2, 3, 4, 5, 4, 5, 6]
    );
    assert_eq!(
        v.token_to_block_idx(),
        [7, 2, 4, 8, 8, 8, 8, 9, 9, 11, 11, 11, 16, 16, 16, 16]
    );
    assert_eq!(
        v.token_to_local_position_within_kv_block(),
        [1, 0, 2, 0, 1, 2, 3, 0, 1, 0, 1, 2, 0, 0, 0, 0]
    );
    assert_eq!(
        &v.token_to_request_idx()[..12],
        [0, 1, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4]
    );
    assert_eq!(
        v.token_to_position_in_request(),
        [5, 8, 2, 0, 1, 2, 3, 4, 5, 4, 5, 6, 0, 0, 0, 0]
    );
    // Flat slots block * B + local.
    let slots: Vec<i64> = v
        .token_to_block_idx()
        .iter()
        .zip(v.token_to_local_position_within_kv_block())
        .map(|(&b, &l)| b * 4 + i64::from(l))
        .collect();
    assert_eq!(
        slots,
        [
            29, 8, 18, 32, 33, 34, 35, 36, 37, 44, 45, 46, 64, 64, 64, 64
        ]
    );
    assert_eq!(
        v.active_request_last_token_idxs(),
        [0, 1, 2, 8, 11, 0, 0, 0]
    );
    assert_eq!(v.real_token_count(), 12);
    assert_eq!(
        decode_idx(v.mamba_batch_indices_decode()),
        Some(vec![6, 5, 7, -1, -1, -1])
    );
    assert_eq!(v.mamba_batch_indices_prefill(), Some(&[4, 3][..]));
    let seq = cat(&[&rep(0, 6), &rep(1, 3), &rep(-1, 7)]);
    assert_eq!(v.mamba_seq_idx(), Some(seq.as_slice()));
    assert_eq!(v.mamba_cu_seqlens(), Some(&[0, 6, 9][..]));
    assert_eq!(v.mamba_cu_chunk_seqlens(), Some(&[0, 4, 6, 9, 9, 9, 9][..]));
    assert_eq!(v.mamba_last_chunk_indices(), Some(&[1, 2][..]));
    assert_eq!(v.mamba_seq_idx_for_varlen(), Some(&[0, 0, 1, 0, 0, 0][..]));
    let conv_idx = cat(&[&rep(0, 6), &rep(1, 3), &rep(0, 7)]);
    assert_eq!(v.mamba_conv_seq_idx(), Some(conv_idx.as_slice()));
    let conv_start = cat(&[&rep(0, 6), &rep(6, 3), &rep(0, 7)]);
    assert_eq!(v.mamba_conv_seq_start(), Some(conv_start.as_slice()));
    assert_eq!(v.mamba_device_decode_prefill(), Some(&[3, 9][..]));
    assert_eq!(v.mamba_intermediate_chunk_indices(), Some(&[0i64; 6][..]));
    assert_eq!(v.mamba_intermediate_abs_positions(), Some(&[4; 6][..]));
    assert_eq!(v.mamba_intermediate_real_count(), Some(&[0][..]));
}

#[test]
fn b_eager_mixed_with_paused_row_and_speculative_decoding() {
    let mut spec = common();
    spec.speculative_tokens = 1;
    spec.graphs.count = GraphCount::Off;
    spec.mamba = Some(MambaSpec {
        chunk_size: 8,
        conv_width: 4,
    });
    let g = Geometry::new(&spec).unwrap();
    assert_eq!(g.facts.block_table_width, 9);
    let mut m = meta(&spec);
    let b = [vec![5, 6, 9], vec![0, 1], vec![2, 3], vec![4, 8]];
    let rows = [
        RequestRow::paused(10, &b[0], 7),
        RequestRow::decode(2, 6, &b[1], 6),
        RequestRow::decode(2, 3, &b[2], 5),
        RequestRow::prefill(5, 0, &b[3], 4),
    ];
    let info = *m
        .fill(&StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info.real, BatchDims::new(9, 1, 2));
    assert_eq!(info.padded, BatchDims::new(64, 2, 2));
    assert!(!info.graphed());
    let v = m.view();
    assert_eq!(v.query_lengths(), [2, 2, 5, 0]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 2, 4, 9, 9]);
    assert_eq!(v.kv_seq_lengths(), [8, 5, 5, 0]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 8, 13, 18, 18]);
    let bt = cat(&[
        &[0, 1],
        &rep(16, 7),
        &[2, 3],
        &rep(16, 7),
        &[4, 8],
        &rep(16, 7),
        &rep(16, 9),
    ]);
    assert_eq!(v.block_table(), bt.as_slice());
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (5, 8));
    assert_eq!(&v.token_to_pos_ids()[..9], [6, 7, 3, 4, 0, 1, 2, 3, 4]);
    let blocks: Vec<i64> = [1, 1, 2, 3, 4, 4, 4, 4, 8]
        .into_iter()
        .chain(std::iter::repeat_n(16, 55))
        .collect();
    assert_eq!(v.token_to_block_idx(), blocks.as_slice());
    let local = cat(&[&[2, 3, 3, 0, 0, 1, 2, 3, 0], &rep(0, 55)]);
    assert_eq!(
        v.token_to_local_position_within_kv_block(),
        local.as_slice()
    );
    assert_eq!(&v.token_to_request_idx()[..9], [1, 1, 2, 2, 3, 3, 3, 3, 3]);
    assert_eq!(v.active_request_last_token_idxs(), [1, 3, 8, 0]);
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), Some(vec![6, 5]));
    assert_eq!(v.mamba_batch_indices_prefill(), Some(&[4, -1][..]));
    let seq = cat(&[&rep(0, 5), &rep(-1, 59)]);
    assert_eq!(v.mamba_seq_idx(), Some(seq.as_slice()));
    assert_eq!(v.mamba_cu_seqlens(), Some(&[0, 5, 5][..]));
    let chunks = cat(&[&[0], &rep(5, 10)]);
    assert_eq!(v.mamba_cu_chunk_seqlens(), Some(chunks.as_slice()));
    assert_eq!(v.mamba_last_chunk_indices(), Some(&[0, 1][..]));
    let varlen = cat(&[&[0, 1], &rep(0, 8)]);
    assert_eq!(v.mamba_seq_idx_for_varlen(), Some(varlen.as_slice()));
    assert_eq!(v.mamba_conv_seq_idx(), Some(&rep(0, 64)[..]));
    assert_eq!(v.mamba_conv_seq_start(), Some(&rep(0, 64)[..]));
    assert_eq!(v.mamba_device_decode_prefill(), Some(&[4, 5][..]));
    assert_eq!(v.mamba_intermediate_chunk_indices(), Some(&[0i64; 6][..]));
    assert_eq!(v.mamba_intermediate_abs_positions(), Some(&[4; 6][..]));
    assert_eq!(v.mamba_intermediate_real_count(), Some(&[0][..]));
}

#[test]
fn c_decode_only_graphed_with_padding() {
    let mut m = meta(&common());
    let b = [vec![2], vec![0, 1], vec![3, 4, 5]];
    let rows = [
        RequestRow::decode(1, 3, &b[0], 7),
        RequestRow::decode(1, 4, &b[1], 6),
        RequestRow::decode(1, 9, &b[2], 5),
    ];
    let info = *m
        .fill(&StepInput {
            rows: &rows,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(info.padded, BatchDims::new(4, 0, 4));
    let v = m.view();
    assert_eq!(v.query_lengths(), [1, 1, 1, 0]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 1, 2, 3, 3]);
    assert_eq!(v.kv_seq_lengths(), [4, 5, 10, 0]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 4, 9, 19, 19]);
    let bt = cat(&[
        &[2],
        &rep(16, 7),
        &[0, 1],
        &rep(16, 6),
        &[3, 4, 5],
        &rep(16, 5),
        &rep(16, 8),
    ]);
    assert_eq!(v.block_table(), bt.as_slice());
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (1, 32));
    assert_eq!(&v.token_to_pos_ids()[..3], [3, 4, 9]);
    assert_eq!(v.token_to_block_idx(), [2, 1, 5, 16]);
    assert_eq!(v.token_to_local_position_within_kv_block(), [3, 0, 1, 0]);
    assert_eq!(v.active_request_last_token_idxs(), [0, 1, 2, 0]);
    assert_eq!(
        decode_idx(v.mamba_batch_indices_decode()),
        Some(vec![7, 6, 5, -1])
    );
    assert_eq!(v.mamba_batch_indices_prefill(), None);
    assert_eq!(v.mamba_seq_idx(), None);
    assert_eq!(v.mamba_cu_chunk_seqlens(), None);
    assert_eq!(v.mamba_device_decode_prefill(), None);
    assert_eq!(v.mamba_intermediate_chunk_indices(), None);
}

#[test]
fn d_prefill_only_eager_with_intermediate_extraction() {
    let mut spec = common();
    spec.graphs.count = GraphCount::Off;
    spec.block_size = 16;
    spec.max_seq_len = 64;
    spec.kv_pool_blocks = Some(9);
    spec.mamba = Some(MambaSpec {
        chunk_size: 16,
        conv_width: 4,
    });
    let g = Geometry::new(&spec).unwrap();
    assert_eq!(
        (g.facts.block_table_width, g.facts.max_intermediate),
        (4, 4)
    );
    let mut m = meta(&spec);
    let b = [vec![0, 1], vec![2, 3, 4], vec![5], vec![6]];
    let rows = [
        RequestRow::prefill(30, 0, &b[0], 7),
        RequestRow::prefill(20, 16, &b[1], 6),
        RequestRow::prefill(10, 0, &b[2], 5),
        RequestRow::prefill(4, 0, &b[3], 4),
    ];
    let one = |o| IntermediateOffsets {
        count: 1,
        offsets: [o, 0, 0],
    };
    let inter = [one(16), one(16), Default::default(), Default::default()];
    let info = *m
        .fill(&StepInput {
            rows: &rows,
            token_ids: None,
            intermediate: Some(&inter),
            residency: None,
        })
        .unwrap();
    assert_eq!(info.real, BatchDims::new(64, 4, 0));
    assert_eq!(info.padded, BatchDims::new(64, 4, 0));
    let v = m.view();
    assert_eq!(v.query_lengths(), [30, 20, 10, 4]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 30, 50, 60, 64]);
    assert_eq!(v.kv_seq_lengths(), [30, 36, 10, 4]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 30, 66, 76, 80]);
    assert_eq!(
        v.block_table(),
        [0, 1, 8, 8, 2, 3, 4, 8, 5, 8, 8, 8, 6, 8, 8, 8]
    );
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (30, 36));
    let blocks: Vec<i64> = [(0, 16), (1, 14), (3, 16), (4, 4), (5, 10), (6, 4)]
        .iter()
        .flat_map(|&(b, n)| std::iter::repeat_n(b, n))
        .collect();
    assert_eq!(v.token_to_block_idx(), blocks.as_slice());
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), None);
    assert_eq!(v.mamba_batch_indices_prefill(), Some(&[7, 6, 5, 4][..]));
    let seq = cat(&[&rep(0, 30), &rep(1, 20), &rep(2, 10), &rep(3, 4)]);
    assert_eq!(v.mamba_seq_idx(), Some(seq.as_slice()));
    assert_eq!(v.mamba_cu_seqlens(), Some(&[0, 30, 50, 60, 64][..]));
    assert_eq!(
        v.mamba_cu_chunk_seqlens(),
        Some(&[0, 16, 30, 46, 50, 60, 64, 64, 64][..])
    );
    assert_eq!(v.mamba_last_chunk_indices(), Some(&[1, 3, 4, 5][..]));
    assert_eq!(
        v.mamba_seq_idx_for_varlen(),
        Some(&[0, 0, 1, 1, 2, 3, 0, 0][..])
    );
    assert_eq!(v.mamba_conv_seq_idx(), Some(seq.as_slice()));
    let start = cat(&[&rep(0, 30), &rep(30, 20), &rep(50, 10), &rep(60, 4)]);
    assert_eq!(v.mamba_conv_seq_start(), Some(start.as_slice()));
    assert_eq!(v.mamba_device_decode_prefill(), None);
    assert_eq!(
        v.mamba_intermediate_chunk_indices(),
        Some(&[0i64, 2, 0, 0][..])
    );
    assert_eq!(
        v.mamba_intermediate_abs_positions(),
        Some(&[16, 46, 4, 4][..])
    );
    assert_eq!(v.mamba_intermediate_real_count(), Some(&[2][..]));
    assert_eq!(info.intermediate_count, 2);
}

#[test]
fn e_zero_requests_with_and_without_graphs() {
    let mut m = meta(&common());
    let info = *m.fill(&StepInput::default()).unwrap();
    assert_eq!(info.padded, BatchDims::new(1, 0, 1));
    let v = m.view();
    assert_eq!(v.query_lengths(), [0]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 0]);
    assert_eq!(v.kv_seq_lengths(), [0]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 0]);
    assert_eq!(v.block_table(), rep(16, 8).as_slice());
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (1, 32));
    assert_eq!(v.token_to_block_idx(), [16]);
    assert_eq!(v.token_to_local_position_within_kv_block(), [0]);
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), Some(vec![-1]));
    assert_eq!(v.mamba_batch_indices_prefill(), None);

    let mut spec = common();
    spec.graphs.count = GraphCount::Off;
    let mut m = meta(&spec);
    let info = *m.fill(&StepInput::default()).unwrap();
    assert_eq!(info.padded, BatchDims::new(0, 0, 0));
    let v = m.view();
    assert!(v.query_lengths().is_empty());
    assert_eq!(v.cu_query_seq_lengths(), [0]);
    assert_eq!(v.cu_kv_seq_lengths(), [0]);
    assert!(v.block_table().is_empty());
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (1, 1));
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), None);
    assert_eq!(v.mamba_seq_idx(), None);
}

#[test]
fn f_allocators() {
    let mut kv = KvBlockAllocator::new(10).unwrap();
    assert_eq!(kv.dummy_block(), 9);
    assert_eq!(kv.allocate(3).unwrap(), [6, 7, 8]);
    kv.release(&[8, 7, 6]).unwrap();
    assert_eq!(kv.bag(), [0, 1, 2, 3, 4, 5, 8, 7, 6, 9]);
    assert_eq!(kv.allocate(1).unwrap(), [6]);
    kv.release(&[6]).unwrap();
    assert_eq!(kv.allocate(4).unwrap(), [5, 8, 7, 6]);
    let mut small = KvBlockAllocator::new(6).unwrap();
    assert!(small.allocate(9).is_none());

    let mut slots = MambaSlotPool::new(4).unwrap();
    assert_eq!(slots.allocate(), Some(3));
    assert_eq!(slots.allocate_n(2).unwrap(), [1, 2]);
    slots.free(3).unwrap();
    assert!(slots.allocate_n(3).is_none());
    assert_eq!(slots.allocate(), Some(3));
    slots.set_row(0, 2).unwrap();
    slots.set_row(1, 1).unwrap();
    slots.free_rows(&[0, 1, 3]).unwrap();
    assert_eq!(slots.free_stack(), [0, 2, 1]);
    assert!(matches!(slots.free(7), Err(AllocError::OutOfRange { .. })));
    assert!(matches!(
        slots.detach(3),
        Err(AllocError::RowHasNoSlot { .. })
    ));
    // Megatron accepts this double free (stack [0,2,1,2]); we reject it and change nothing.
    assert!(matches!(slots.free(2), Err(AllocError::DoubleFree { .. })));
    assert_eq!(slots.free_stack(), [0, 2, 1]);
    slots.reset();
    assert_eq!(slots.allocate_n(4).unwrap(), [0, 1, 2, 3]);
    assert_eq!(slots.allocate(), None);
}

/// G. S = 32, B = 16, s = 2: the block table is `ceil(32 / 16) + 1 = 3` columns wide.
/// Megatron admits a request of 30 prompt and 2 output tokens (`30 + 2 ≤ S`); its prefill
/// takes 2 blocks, samples the first output token, and its one decode step (q = 3 at
/// kv = 30) writes positions 30, 31, 32: position 32 needs a third block, in column 2.
/// Graphed in the decode bucket (3, 0, 1). Worked by hand from Megatron's rules.
#[test]
fn g_speculative_decode_at_the_end_of_the_sequence_uses_the_extra_column() {
    let mut spec = common();
    spec.speculative_tokens = 2;
    spec.block_size = 16;
    let dims = RuntimeDims::new(Geometry::new(&spec).unwrap());
    assert_eq!(dims.block_table_width(), 3);
    assert_eq!(dims.decode_kv_limit(), 34);
    let mut m = HostMetadata::new(dims.clone());
    let mut b = BatchState::new(&dims).unwrap();

    // Admission: Megatron's rule is prompt + output <= max_seq_len.
    let h = b.admit(30, 2).unwrap();
    assert_eq!(
        b.admit(31, 2),
        Err(BatchError::TooLong {
            prompt_len: 31,
            max_output: 2,
            tokens: 33,
            max_seq_len: 32
        })
    );
    assert_eq!(b.live_count(), 1);

    // Prefill: 30 positions, 2 blocks (LIFO from the top of a 17-block pool).
    b.schedule_prefill(h, 30).unwrap();
    assert_eq!(b.blocks(h).unwrap(), [14, 15]);
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!(info.real, BatchDims::new(30, 1, 0));
    assert_eq!(&m.view().block_table()[..3], [14, 15, 16]);
    b.commit_step(|_| 0).unwrap();
    let i = b.info(h).unwrap();
    assert_eq!(
        (i.phase, i.kv_offset, i.generated),
        (RequestPhase::Decode, 30, 1)
    );

    // The decode step: positions 30..=32, the last in a third block, column 2.
    b.schedule_decode(h).unwrap();
    assert_eq!(b.blocks(h).unwrap(), [14, 15, 13]);
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!(info.real, BatchDims::new(3, 0, 1));
    assert_eq!(info.padded, BatchDims::new(3, 0, 1));
    assert!(info.graphed());
    let v = m.view();
    assert_eq!(v.query_lengths(), [3]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 3]);
    assert_eq!(v.kv_seq_lengths(), [33]);
    assert_eq!(v.cu_kv_seq_lengths(), [0, 33]);
    assert_eq!(v.block_table(), [14, 15, 13]);
    // Graphed: max_seqlen_q = s + 1 and max_seqlen_k = S, as Megatron passes them (here
    // below the row's 33 KV positions).
    assert_eq!((v.max_seqlen_q(), v.max_seqlen_k()), (3, 32));
    assert_eq!(v.token_to_pos_ids(), [30, 31, 32]);
    assert_eq!(v.token_to_block_idx(), [15, 15, 13]);
    assert_eq!(v.token_to_local_position_within_kv_block(), [14, 15, 0]);
    assert_eq!(v.token_to_request_idx(), [0, 0, 0]);
    assert_eq!(v.token_to_position_in_request(), [30, 31, 32]);
    assert_eq!(v.active_request_last_token_idxs(), [2]);
    assert_eq!(v.real_token_count(), 3);
    // Megatron's per-request KV bookkeeping of the row: 3 blocks, the last token (position
    // 32) at offset 0 of block 13; the same from the batch state.
    assert_eq!(v.kv_block_count(0), Some(3));
    assert_eq!(v.last_kv_block_offset(0), Some(0));
    assert_eq!(v.last_kv_block_id(0), Some(13));
    assert_eq!(v.kv_block_count(1), None);
    assert_eq!(b.kv_block_count(h), Ok(3));
    assert_eq!(b.last_kv_block_offset(h), Ok(Some(0)));
    assert_eq!(b.last_kv_block_id(h), Ok(Some(13)));
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), Some(vec![7]));
    assert_eq!(v.mamba_batch_indices_prefill(), None);
    // It samples its last output token and finishes; everything goes back.
    let done = b.commit_step(|_| 2).unwrap();
    assert_eq!((done.len(), done[0].generated), (1, 2));
    assert_eq!(b.kv_pool().in_use(), 0);

    // The fill accepts exactly kv + q <= S + s for a decode row, S for a prefill row.
    let blocks = [0, 1, 2];
    let last = [RequestRow::decode(3, 31, &blocks, 0)];
    m.fill(&StepInput {
        rows: &last,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(m.view().token_to_block_idx(), [1, 2, 2]);
    for (row, limit, bound) in [
        (
            RequestRow::decode(3, 32, &blocks, 0),
            34,
            "max_seq_len + speculative_tokens",
        ),
        (RequestRow::prefill(3, 30, &blocks, 0), 32, "max_seq_len"),
    ] {
        let e = m
            .fill(&StepInput {
                rows: &[row],
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            e,
            StepError::SequenceTooLong {
                row: 0,
                kv_offset: row.kv_offset,
                query_length: 3,
                limit,
                bound
            }
        );
    }
}

/// H. The common config (s = 0, B = 4). Two requests prefill whole, a third is cut after 8
/// of its 20 prompt tokens. Next step only the two decode: Megatron keeps the in-flight
/// chunked request beyond `total_request_count`, not among the paused rows, so the step
/// has no paused row and `token_to_request_idx = [0, 1]` (a paused row would make it 1 and
/// `[1, 2]`). A decode request that is not scheduled is still a paused row. Worked by
/// hand from Megatron's rules.
#[test]
fn h_a_chunked_prefill_left_out_of_a_step_is_hidden_not_paused() {
    let dims = RuntimeDims::new(Geometry::new(&common()).unwrap());
    let mut m = HostMetadata::new(dims.clone());
    let mut b = BatchState::new(&dims).unwrap();
    let a = b.admit(4, 5).unwrap();
    let c = b.admit(4, 5).unwrap();
    let long = b.admit(20, 2).unwrap();
    // Step 1: both short prompts, then the first 8 tokens of the long one (the cut
    // prefill is the last row).
    b.schedule_prefill(a, 4).unwrap();
    b.schedule_prefill(c, 4).unwrap();
    b.schedule_prefill(long, 8).unwrap();
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!((info.paused, info.real), (0, BatchDims::new(16, 3, 0)));
    b.commit_step(|_| 0).unwrap();
    let i = b.info(long).unwrap();
    assert_eq!(
        (i.phase, i.prompt_done, i.blocks),
        (RequestPhase::Prefill, 8, 2)
    );

    // Step 2: the two decode; the chunked request waits.
    b.schedule_decode(a).unwrap();
    b.schedule_decode(c).unwrap();
    let (rows, resident) = b.with_step(|input| {
        let r = input.residency.unwrap().resident_rows.to_vec();
        (input.rows.len(), r)
    });
    assert_eq!((rows, resident), (2, vec![0, 1]));
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!(info.paused, 0);
    assert_eq!(info.real, BatchDims::new(2, 0, 2));
    assert_eq!(info.padded, BatchDims::new(2, 0, 2));
    let v = m.view();
    assert_eq!(v.token_to_request_idx(), [0, 1]);
    assert_eq!(v.token_to_pos_ids(), [4, 4]);
    assert_eq!(v.query_lengths(), [1, 1]);
    assert_eq!(v.kv_seq_lengths(), [5, 5]);
    // Blocks LIFO from a 17-block pool: a 15, c 14, the long prompt 12, 13; then the
    // decode steps' second blocks a 11, c 10.
    let bt = cat(&[&[15, 11], &rep(16, 6), &[14, 10], &rep(16, 6)]);
    assert_eq!(v.block_table(), bt.as_slice());
    assert_eq!(v.token_to_block_idx(), [11, 10]);
    assert_eq!(decode_idx(v.mamba_batch_indices_decode()), Some(vec![7, 6]));
    // Per row: 2 blocks each, the token (position 4) at offset 0 of the second.
    let per_row: Vec<_> = (0..2)
        .map(|a| {
            (
                v.kv_block_count(a),
                v.last_kv_block_offset(a),
                v.last_kv_block_id(a),
            )
        })
        .collect();
    assert_eq!(
        per_row,
        [(Some(2), Some(0), Some(11)), (Some(2), Some(0), Some(10))]
    );
    // The waiting chunk's last cached token (position 7) is at offset 3 of block 13.
    assert_eq!(b.kv_block_count(long), Ok(2));
    assert_eq!(b.last_kv_block_offset(long), Ok(Some(3)));
    assert_eq!(b.last_kv_block_id(long), Ok(Some(13)));
    // The hidden request keeps its row, blocks and slot; the resident table still has them.
    assert_eq!(b.blocks(long).unwrap(), [12, 13]);
    assert_eq!(&b.resident_table()[16..18], [12, 13]);
    assert_eq!(b.info(long).unwrap().mamba_slot, 5);
    b.commit_step(|_| 0).unwrap();

    // Step 3: its next chunk is the last row again, continuing at kv = 8.
    b.schedule_decode(a).unwrap();
    b.schedule_decode(c).unwrap();
    b.schedule_prefill(long, 12).unwrap();
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!((info.paused, info.real), (0, BatchDims::new(14, 1, 2)));
    let v = m.view();
    assert_eq!(
        &v.token_to_request_idx()[..14],
        cat(&[&[0, 1], &rep(2, 12)])
    );
    assert_eq!(&v.request_kv_length_offsets()[..3], [5, 5, 8]);
    // The chunk writes positions 8..=19: 5 blocks, [12, 13, 7, 8, 9], the last at offset 3.
    assert_eq!(b.blocks(long).unwrap(), [12, 13, 7, 8, 9]);
    assert_eq!(
        (
            v.kv_block_count(2),
            v.last_kv_block_offset(2),
            v.last_kv_block_id(2)
        ),
        (Some(5), Some(3), Some(9))
    );
    b.commit_step(|_| 0).unwrap();

    // Step 4 (the long prompt is done, so all three decode): a decode request left out
    // is a paused row, and shifts the rows after it.
    b.pause(a).unwrap();
    b.schedule_decode(c).unwrap();
    b.schedule_decode(long).unwrap();
    let phases = b.with_step(|input| input.rows.iter().map(|r| r.phase).collect::<Vec<_>>());
    assert_eq!(phases, [Phase::Paused, Phase::Decode, Phase::Decode]);
    let info = b.with_step(|input| m.fill(input).copied()).unwrap();
    assert_eq!(info.paused, 1);
    assert_eq!(m.view().token_to_request_idx(), [1, 2]);
}
