//! Expert-parallel shape agreement: Megatron's rule on hand-worked cases, each rank on its
//! own thread with its own host fill and the in-process group between them; a property
//! test that every rank of a group replays the same bucket or every rank runs eagerly;
//! and a group of one rank, which must change nothing.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use std::time::Duration;

use attention_layout::agree::{
    AgreedShape, InProcessRank, ShapeAgreement, Solo, agreed_step, in_process_group, step_shape,
};
use attention_layout::backend::CpuBackend;
use attention_layout::codegen::buckets::{eager_padding, match_bucket};
use attention_layout::fill::StepInfo;
use attention_layout::{BatchDims, Dims, HostMetadata, RuntimeDims};
use proptest::prelude::*;

use support::layouts;
use support::shaped::ShapedStep;

fn b(t: u32, p: u32, d: u32) -> BatchDims {
    BatchDims::new(t, p, d)
}

/// docs/SEMANTICS.md §3.2's worked layout: R = 8, T = 64, S = 32, s = 0, tp = 1, automatic
/// exponential ladder, mixed prefill count 4, non-decode graphs on (24 buckets).
const WORKED_MHA: &str = r#"
model = "mha"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
"#;

/// The same numbers for a hybrid model (strict matching).
const WORKED_HYBRID: &str = r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
"#;

/// Tensor parallelism 4: decode buckets only at multiples of 4 tokens.
const TP4: &str = r#"
model = "mha"
max_requests = 16
max_tokens = 128
max_seq_len = 64
block_size = 4
tensor_parallel = 4
"#;

/// What one rank of a group ended with.
struct RankResult {
    agreed: AgreedShape,
    info: StepInfo,
    meta: HostMetadata<RuntimeDims>,
}

/// Runs one step on a group of `shapes.len()` ranks, rank `i` on its own thread with a
/// step of real shape `shapes[i]` (a rank of shape `(0, 0, 0)` has no request: the dummy
/// step), agreeing through an in-process group.
fn run_group(dims: &RuntimeDims, shapes: &[BatchDims]) -> Vec<RankResult> {
    let group = in_process_group(shapes.len(), Some(Duration::from_secs(60))).unwrap();
    let threads: Vec<_> = group
        .into_iter()
        .zip(shapes.iter().copied())
        .map(|(rank, shape)| {
            let dims = dims.clone();
            std::thread::spawn(move || one_rank(dims, rank, shape))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn one_rank(dims: RuntimeDims, mut rank: InProcessRank, shape: BatchDims) -> RankResult {
    let step = ShapedStep::new(&dims, shape)
        .unwrap_or_else(|| panic!("rank {}: no step of shape {shape:?}", rank.rank()));
    let rows = step.rows();
    let input = step.input(&rows);
    assert_eq!(step_shape(&input), shape);
    let mut backend = CpuBackend::new(dims);
    let (agreed, info) = agreed_step(&mut backend, &mut rank, &input)
        .unwrap_or_else(|e| panic!("rank {}: {e}", rank.rank()));
    assert_eq!(info.real, shape, "rank {}", rank.rank());
    RankResult {
        agreed,
        info,
        meta: backend.metadata().clone(),
    }
}

/// The padded shapes of a group's ranks and whether each replayed a graph.
fn padded(results: &[RankResult]) -> Vec<(BatchDims, bool)> {
    results
        .iter()
        .map(|r| (r.info.padded, r.info.graphed()))
        .collect()
}

/// What each rank would have run on its own (the forced padding and eager share of the
/// agreement are measured against this).
fn alone(dims: &RuntimeDims, shapes: &[BatchDims]) -> Vec<Option<BatchDims>> {
    shapes
        .iter()
        .map(|&s| match_bucket(s, dims.buckets(), dims.has_mamba()))
        .collect()
}

#[test]
fn decode_only_skew_replays_the_bucket_of_the_largest_rank_everywhere() {
    let dims = layouts::dims(WORKED_MHA);
    let shapes = [b(3, 0, 3), b(7, 0, 7), b(1, 0, 1), b(5, 0, 5)];
    let results = run_group(&dims, &shapes);
    for r in &results {
        assert_eq!(
            r.agreed,
            AgreedShape {
                ranks: 4,
                max_tokens: 7,
                any_prefill: false
            }
        );
    }
    // Every rank replays (8, 0, 8), the smallest decode bucket holding 7 tokens.
    assert_eq!(padded(&results), vec![(b(8, 0, 8), true); 4]);
    // On their own, ranks 0 and 2 would have replayed smaller graphs: the agreement
    // forces 4 and 7 padding tokens on them.
    assert_eq!(
        alone(&dims, &shapes),
        [
            Some(b(4, 0, 4)),
            Some(b(8, 0, 8)),
            Some(b(1, 0, 1)),
            Some(b(8, 0, 8))
        ]
    );
}

/// The worked example of `docs/DESIGN.md` ("Expert-parallel shape agreement").
#[test]
fn the_worked_example_of_the_design_notes() {
    let dims = layouts::dims(WORKED_MHA);
    // Step 1: decode-only ranks and an empty one replay (8, 0, 8).
    let step1 = [b(3, 0, 3), b(7, 0, 7), b(1, 0, 1), b(0, 0, 0)];
    let results = run_group(&dims, &step1);
    assert_eq!(padded(&results), vec![(b(8, 0, 8), true); 4]);
    let own: Vec<u32> = alone(&dims, &step1[..3])
        .iter()
        .map(|m| m.unwrap().tokens)
        .collect();
    assert_eq!(own, [4, 8, 1], "forced padding 4 + 0 + 7");
    // Step 2: rank 1 prefills; nobody replays a graph.
    let step2 = [b(3, 0, 3), b(12, 1, 7), b(1, 0, 1), b(0, 0, 0)];
    let results = run_group(&dims, &step2);
    assert_eq!(
        padded(&results),
        [
            (b(8, 0, 8), false),
            (b(64, 1, 7), false),
            (b(8, 0, 8), false),
            (b(0, 0, 0), false)
        ]
    );
    assert_eq!(
        alone(&dims, &step2[..3]),
        [Some(b(4, 0, 4)), Some(b(16, 1, 7)), Some(b(1, 0, 1))]
    );
}

#[test]
fn one_rank_prefilling_makes_every_rank_run_eagerly() {
    let dims = layouts::dims(WORKED_MHA);
    let shapes = [b(4, 0, 4), b(12, 2, 3), b(6, 0, 6)];
    let results = run_group(&dims, &shapes);
    for r in &results {
        assert!(r.agreed.any_prefill);
        assert_eq!(r.agreed.max_tokens, 12);
    }
    // Each rank pads its own step eagerly (docs/SEMANTICS.md §3.4): decode-only s = 0 to
    // min(T, R, round_up_tokens(t)) = 8; the mixed step to 64 tokens and 8 requests.
    assert_eq!(
        padded(&results),
        [
            (b(8, 0, 8), false),
            (b(64, 5, 3), false),
            (b(8, 0, 8), false)
        ]
    );
    // Alone, all three would have replayed a graph (the mixed one non-strictly).
    assert_eq!(
        alone(&dims, &shapes),
        [Some(b(4, 0, 4)), Some(b(16, 2, 6)), Some(b(8, 0, 8))]
    );
}

#[test]
fn an_empty_rank_runs_the_dummy_step_padded_to_the_agreed_bucket() {
    let dims = layouts::dims(WORKED_MHA);
    let dummy = dims.dummy_block();
    let results = run_group(&dims, &[b(0, 0, 0), b(5, 0, 5)]);
    assert_eq!(padded(&results), vec![(b(8, 0, 8), true); 2]);
    // The empty rank: no real request, every padded row and token on the dummy block.
    let empty = &results[0];
    assert_eq!(empty.info.real, b(0, 0, 0));
    let v = empty.meta.view();
    assert_eq!(v.query_lengths(), [0; 8]);
    assert_eq!(v.kv_seq_lengths(), [0; 8]);
    assert_eq!(v.cu_query_seq_lengths(), [0; 9]);
    assert_eq!(v.cu_kv_seq_lengths(), [0; 9]);
    assert!(v.block_table().iter().all(|&id| id == dummy));
    assert_eq!(v.block_table().len(), 8 * dims.block_table_width());
    assert_eq!(v.token_to_block_idx(), [i64::from(dummy); 8]);
    assert_eq!(v.real_token_count(), 0);

    // Seven empty ranks and one decoding two requests: everyone replays (2, 0, 2).
    let mut shapes = vec![b(0, 0, 0); 7];
    shapes.push(b(2, 0, 2));
    let results = run_group(&dims, &shapes);
    assert_eq!(padded(&results), vec![(b(2, 0, 2), true); 8]);

    // No request anywhere: the zero-request step of docs/SEMANTICS.md §11 E, bucket (1, 0, 1).
    let results = run_group(&dims, &[b(0, 0, 0), b(0, 0, 0)]);
    assert_eq!(padded(&results), vec![(b(1, 0, 1), true); 2]);
    let v = results[1].meta.view();
    assert_eq!(v.query_lengths(), [0]);
    assert_eq!(v.cu_query_seq_lengths(), [0, 0]);
    assert_eq!(v.max_seqlen_q(), 1);
    assert_eq!(v.max_seqlen_k(), 32);

    // An empty rank next to a prefilling one: eager, and nothing to pad.
    let results = run_group(&dims, &[b(0, 0, 0), b(3, 1, 2)]);
    assert_eq!(
        padded(&results),
        [(b(0, 0, 0), false), (b(64, 2, 2), false)]
    );
    let v = results[0].meta.view();
    assert_eq!(v.cu_query_seq_lengths(), [0]);
    assert!(v.query_lengths().is_empty());
}

#[test]
fn hybrid_models_match_strictly_but_agree_by_the_same_rule() {
    let hybrid = layouts::dims(WORKED_HYBRID);
    let mha = layouts::dims(WORKED_MHA);
    assert_eq!(hybrid.buckets(), mha.buckets());
    // (8, 3, 5) has no strict match (it would replay (8, 4, 4) non-strictly); next to a
    // decoding rank both run eagerly, on either model.
    let shapes = [b(8, 3, 5), b(2, 0, 2)];
    assert_eq!(alone(&hybrid, &shapes), [None, Some(b(2, 0, 2))]);
    assert_eq!(alone(&mha, &shapes), [Some(b(8, 4, 4)), Some(b(2, 0, 2))]);
    for dims in [&hybrid, &mha] {
        let results = run_group(dims, &shapes);
        assert_eq!(
            padded(&results),
            [(b(64, 3, 5), false), (b(8, 0, 8), false)]
        );
    }
    // Decode-only steps: strictness plays no part, the largest rank decides.
    let shapes = [b(2, 0, 2), b(5, 0, 5), b(0, 0, 0)];
    for dims in [&hybrid, &mha] {
        let results = run_group(dims, &shapes);
        assert_eq!(padded(&results), vec![(b(8, 0, 8), true); 3]);
        // The hybrid dummy rank has no Mamba decode entry of its own.
        if dims.has_mamba() {
            let v = results[2].meta.view();
            let idx = v.mamba_batch_indices_decode().unwrap().to_vec();
            assert_eq!(idx, [-1; 8]);
        }
    }
}

#[test]
fn tensor_parallel_rounding_comes_from_the_bucket_table_not_the_reduction() {
    let dims = layouts::dims(TP4);
    let decode: Vec<BatchDims> = dims
        .buckets()
        .iter()
        .copied()
        .filter(|x| x.prefill == 0)
        .collect();
    // tp = 4: the decode ladder 16, 8, 4 (2 and 1 round up to 4).
    assert_eq!(decode, [b(4, 0, 4), b(8, 0, 8), b(16, 0, 16)]);
    // The group reduces real token counts (5, unrounded); the bucket is a multiple of 4.
    let results = run_group(&dims, &[b(1, 0, 1), b(5, 0, 5)]);
    assert_eq!(results[0].agreed.max_tokens, 5);
    assert_eq!(padded(&results), vec![(b(8, 0, 8), true); 2]);
    assert_eq!(
        alone(&dims, &[b(1, 0, 1)]),
        [Some(b(4, 0, 4))],
        "alone, rank 0 would replay (4, 0, 4)"
    );
    // Eagerly, each rank rounds its own step with the TP-aware rounders: 64 tokens
    // (ceil(64 / 4) · 4), requests to a multiple of 4; decode-only to min(T, R, 64) = 16.
    let results = run_group(&dims, &[b(1, 0, 1), b(3, 1, 2)]);
    assert_eq!(
        padded(&results),
        [(b(16, 0, 16), false), (b(64, 2, 2), false)]
    );
}

#[test]
fn a_group_of_one_rank_matches_each_step_on_its_own() {
    for (name, src) in layouts::LAYOUTS {
        let dims = layouts::dims(src);
        let mut plain = HostMetadata::new(dims.clone());
        let mut solo = HostMetadata::new(dims.clone());
        let mut threaded = CpuBackend::new(dims.clone());
        let mut group = in_process_group(1, None).unwrap();
        let mut w = support::workload::Workload::new(&dims, 7, layouts::knobs(name));
        for k in 0..300 {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let want = *plain.fill(&input).unwrap();
            let agreed = Solo.agree(step_shape(&input)).unwrap();
            assert_eq!(agreed.ranks, 1);
            let got = *solo.fill_agreed(&input, &agreed).unwrap();
            assert_eq!(want, got, "{name} step {k}");
            assert_eq!(plain.bytes(), solo.bytes(), "{name} step {k}");
            let (_, got) = agreed_step(&mut threaded, &mut group[0], &input).unwrap();
            assert_eq!(want, got, "{name} step {k}");
        }
    }
}

/// The layouts the property tests draw from.
fn property_layouts() -> Vec<RuntimeDims> {
    let mut all: Vec<RuntimeDims> = [WORKED_MHA, WORKED_HYBRID, TP4]
        .iter()
        .map(|src| layouts::dims(src))
        .collect();
    all.extend(layouts::LAYOUTS.iter().map(|(_, src)| layouts::dims(src)));
    all
}

/// A step shape a layout can hold: `(0, 0, 0)`, decode-only, or with prefill requests.
fn shape_in(dims: &RuntimeDims, kind: u8, p: u32, d: u32, extra: u32) -> BatchDims {
    let r = dims.max_requests() as u32;
    let t = dims.max_tokens() as u32;
    let s1 = dims.speculative_tokens() as u32 + 1;
    let d = d % (r + 1);
    match kind % 4 {
        0 => b(0, 0, 0),
        1 | 2 => {
            let d = d.max(1).min(t / s1);
            b(d * s1, 0, d)
        }
        _ => {
            let p = 1 + p % r;
            let d = d.min(r - p).min((t - p) / s1);
            let min = p + d * s1;
            let max = t.min(p * dims.max_seq_len() as u32 + d * s1);
            b(min + extra % (max - min + 1), p, d)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The rule alone, on many groups: every rank gets the same bucket (a decode-only one
    /// holding every rank's step, the smallest such) or every rank runs eagerly.
    #[test]
    fn every_rank_of_a_group_chooses_the_same_bucket_or_all_run_eagerly(
        layout in 0usize..8,
        ranks in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()), 1..=8),
    ) {
        let all = property_layouts();
        let dims = &all[layout % all.len()];
        let shapes: Vec<BatchDims> = ranks
            .iter()
            .map(|&(k, p, d, e)| shape_in(dims, k, p, d, e))
            .collect();
        let agreed = AgreedShape::reduce(&shapes).unwrap();
        prop_assert_eq!(agreed.ranks as usize, shapes.len());
        let strict = dims.has_mamba();
        let mut chosen: Vec<Option<BatchDims>> = Vec::new();
        for &s in &shapes {
            prop_assert!(agreed.covers(s));
            chosen.push(agreed.match_bucket(s, dims.buckets(), strict));
        }
        if shapes.len() == 1 {
            prop_assert_eq!(chosen[0], match_bucket(shapes[0], dims.buckets(), strict));
            return Ok(());
        }
        prop_assert!(chosen.iter().all(|c| *c == chosen[0]), "{:?} -> {:?}", shapes, chosen);
        let smallest = dims
            .buckets()
            .iter()
            .copied()
            .find(|x| x.prefill == 0 && x.tokens >= agreed.max_tokens);
        match chosen[0] {
            Some(bucket) => {
                prop_assert!(!agreed.any_prefill);
                prop_assert_eq!(Some(bucket), smallest);
                for s in &shapes {
                    prop_assert!(bucket.tokens >= s.tokens && bucket.decode >= s.decode);
                }
            }
            None => prop_assert!(agreed.any_prefill || smallest.is_none()),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Through the fill, each rank on its own thread: the ranks' step infos name the same
    /// bucket or none; a graphed rank is padded to that bucket, an eager one to its own
    /// eager padding.
    #[test]
    fn ranks_on_threads_build_steps_of_one_agreed_shape(
        layout in 0usize..8,
        ranks in prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()), 2..=8),
    ) {
        let all = property_layouts();
        let dims = &all[layout % all.len()];
        let shapes: Vec<BatchDims> = ranks
            .iter()
            .map(|&(k, p, d, e)| shape_in(dims, k, p, d, e))
            .filter(|&s| ShapedStep::new(dims, s).is_some())
            .collect();
        prop_assume!(shapes.len() >= 2);
        let results = run_group(dims, &shapes);
        let bucket = results[0].info.bucket;
        for (r, s) in results.iter().zip(&shapes) {
            prop_assert_eq!(r.info.bucket, bucket);
            match bucket {
                Some(i) => prop_assert_eq!(r.info.padded, dims.buckets()[i as usize]),
                None => prop_assert_eq!(
                    r.info.padded,
                    eager_padding(
                        *s,
                        dims.max_requests() as u32,
                        dims.max_tokens() as u32,
                        dims.tensor_parallel(),
                        dims.speculative_tokens() as u32,
                    )
                ),
            }
        }
    }
}
