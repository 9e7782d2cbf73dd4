//! Property tests of the host fill against a deliberately simple reference model.
//!
//! Random small layouts (R 1..=16 a multiple of tp, T a multiple of the eager token
//! rounder up to 4 of them, B a power of two up to 32, S up to 256, s 0..=3, tp 1..=4,
//! MHA / hybrid / Mamba, random graph policy and pool size) get random step inputs that
//! are mostly consistent (phase order, enough blocks, unique Mamba slots, `q = s + 1` on
//! decode rows, the token budget) with an occasional corruption. The reference model
//! below is written straight from docs/SEMANTICS.md §2–§6 (a linear scan for the bucket, plain
//! loops for every array); it shares nothing with `fill.rs` but the bucket *list* of the
//! geometry (bucket generation is tested against the golden data and in
//! `codegen/tests/prop_buckets.rs`).
//!
//! Properties:
//! * `fill_matches_reference_model`: the model's validity verdict and the fill agree; on
//!   success every field the kernels see equals the model's, and the invariants of
//!   [`check_invariants`] hold; on failure the error kind is one the model found and the
//!   buffer and step info are byte for byte as before.
//! * `rejected_steps_change_nothing`: the same with a corruption in every case.
//! * `fill_is_history_free`: filling a step after an arbitrary history (valid and rejected
//!   steps) gives the same live bytes as filling it into fresh metadata, and filling it
//!   twice in a row leaves the whole buffer identical (this exercises the block-table
//!   dirty tracking of the fill).
//!
//! Case counts: 256 per property by default (a few seconds in debug); `PROPTEST_CASES=N`
//! raises them for a long run, e.g.
//! `PROPTEST_CASES=100000 cargo test --release -p attention-layout --test prop_fill -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};

use attention_layout::codegen::Distribution;
use attention_layout::codegen::spec::{
    GraphCount, GraphSpec, IndexDtype, LayoutSpec, MambaSpec, ModelKind,
};
use attention_layout::{
    BatchDims, Geometry, HostMetadata, IntermediateOffsets, MetadataView, Phase, RequestRow,
    RuntimeDims, Sampling, StepInfo, StepInput,
};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

// ---------------------------------------------------------------------------------------
// Configuration

/// 256 cases unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A tiny deterministic generator for the parts of a case that need many values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

// ---------------------------------------------------------------------------------------
// Layouts

type LayoutCore = (u8, u32, u32, u32, u32, u32, u32);
type LayoutGraphs = (u8, u32, bool, Option<u32>, u32, bool);
type LayoutRest = (bool, Option<u32>, u32, u32);

fn build_layout((core, graphs, rest): (LayoutCore, LayoutGraphs, LayoutRest)) -> LayoutSpec {
    let (model, r, t_mult, b_log, s, spec, tp) = core;
    // A multiple of tp (a spec rule, as in Megatron), still at most 16.
    let r = (r / tp).max(1) * tp;
    let (count, count_n, linear, budget, mixed, non_decode) = graphs;
    let (i32_idx, pool, cs, dconv) = rest;
    let model = [ModelKind::Mha, ModelKind::Hybrid, ModelKind::Mamba][usize::from(model % 3)];
    let rounder = 64u32.div_ceil(tp) * tp;
    let t = rounder * t_mult;
    let b = 1u32 << b_log;
    let s1 = spec + 1;
    let nkv = s.div_ceil(b) + u32::from(spec > 0);
    let lo = r * s1;
    LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: r,
        max_tokens: t,
        max_seq_len: s,
        block_size: b,
        speculative_tokens: spec,
        tensor_parallel: tp,
        decode_index_dtype: if i32_idx {
            IndexDtype::I32
        } else {
            IndexDtype::I64
        },
        kv_pool_blocks: pool.map(|p| 2 + p % (r * nkv)),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: cs.next_power_of_two(),
            conv_width: dconv,
        }),
        graphs: GraphSpec {
            count: match count % 3 {
                0 => GraphCount::Auto,
                1 => GraphCount::Off,
                _ => GraphCount::Count(count_n),
            },
            distribution: if linear {
                Distribution::Linear
            } else {
                Distribution::Exponential
            },
            token_budget: budget.map(|x| lo + x % (t - lo + 1)),
            mixed_prefill: mixed,
            non_decode,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    }
}

fn layout_strategy() -> impl Strategy<Value = Geometry> {
    (
        (
            0u8..3,
            1u32..=16,
            1u32..=4,
            0u32..=5,
            1u32..=256,
            0u32..=3,
            1u32..=4,
        ),
        (
            0u8..3,
            1u32..=8,
            any::<bool>(),
            proptest::option::of(any::<u32>()),
            0u32..=5,
            any::<bool>(),
        ),
        (
            any::<bool>(),
            proptest::option::weighted(0.3, any::<u32>()),
            1u32..=64,
            1u32..=8,
        ),
    )
        .prop_map(|parts| {
            let spec = build_layout(parts);
            Geometry::new(&spec).unwrap_or_else(|e| panic!("generated an invalid layout: {e}"))
        })
}

// ---------------------------------------------------------------------------------------
// Steps

/// One generated row, owning its blocks.
#[derive(Debug, Clone)]
struct Row {
    phase: Phase,
    q: u32,
    kv: u32,
    blocks: Vec<i32>,
    slot: i32,
    sampling: Sampling,
}

/// One generated step, owning everything [`StepInput`] borrows.
#[derive(Debug, Clone)]
struct Step {
    rows: Vec<Row>,
    token_ids: Option<Vec<i64>>,
    intermediate: Option<Vec<IntermediateOffsets>>,
}

impl Step {
    fn request_rows(&self) -> Vec<RequestRow<'_>> {
        self.rows
            .iter()
            .map(|r| RequestRow {
                phase: r.phase,
                query_length: r.q,
                kv_offset: r.kv,
                blocks: &r.blocks,
                mamba_slot: r.slot,
                sampling: r.sampling,
            })
            .collect()
    }

    fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: self.token_ids.as_deref(),
            intermediate: self.intermediate.as_deref(),
            residency: None,
        }
    }

    fn tokens(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.phase != Phase::Paused)
            .map(|r| u64::from(r.q))
            .sum()
    }
}

/// Raw numbers a row is built from.
#[derive(Debug, Clone)]
struct RowRecipe {
    phase: u8,
    q: u32,
    kv: u32,
    extra_block: bool,
    holes: u8,
    seed: u64,
}

/// Raw numbers a step is built from.
#[derive(Debug, Clone)]
struct StepRecipe {
    rows: Vec<RowRecipe>,
    with_ids: bool,
    intermediate: Option<u64>,
    seed: u64,
    corrupt: Option<(u8, u32, u32)>,
}

fn row_strategy() -> impl Strategy<Value = RowRecipe> {
    (
        0u8..5,
        prop_oneof![3 => 0u32..8, 1 => any::<u32>()],
        prop_oneof![2 => Just(0u32), 3 => any::<u32>()],
        any::<bool>(),
        0u8..4,
        any::<u64>(),
    )
        .prop_map(|(phase, q, kv, extra_block, holes, seed)| RowRecipe {
            phase,
            q,
            kv,
            extra_block,
            holes,
            seed,
        })
}

/// A corruption with probability `weight` (0 and 1 included).
fn corruption(weight: f64) -> BoxedStrategy<Option<(u8, u32, u32)>> {
    let c = (0u8..16, any::<u32>(), any::<u32>());
    if weight <= 0.0 {
        Just(None).boxed()
    } else if weight >= 1.0 {
        c.prop_map(Some).boxed()
    } else {
        proptest::option::weighted(weight, c).boxed()
    }
}

fn step_strategy(corrupt_weight: f64) -> impl Strategy<Value = StepRecipe> {
    (
        proptest::collection::vec(row_strategy(), 0..=16),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        any::<u64>(),
        corruption(corrupt_weight),
    )
        .prop_map(|(rows, with_ids, intermediate, seed, corrupt)| StepRecipe {
            rows,
            with_ids,
            intermediate,
            seed,
            corrupt,
        })
}

fn rank(p: Phase) -> u8 {
    match p {
        Phase::Paused => 0,
        Phase::Decode => 1,
        Phase::Prefill => 2,
    }
}

/// Builds a consistent step from a recipe, then applies its corruption, if any.
fn build_step(g: &Geometry, rc: &StepRecipe) -> Step {
    let r = g.facts.max_requests;
    let s = g.facts.max_seq_len as u32;
    let b = g.facts.block_size as u32;
    let nkv = g.facts.block_table_width;
    let s1 = g.facts.speculative_tokens as u32 + 1;
    let dummy = g.facts.dummy_block;
    let mut rng = Rng(rc.seed);
    let mut recipes: Vec<&RowRecipe> = rc.rows.iter().take(r).collect();
    let phase_of = |x: &RowRecipe| match x.phase {
        0 => Phase::Paused,
        1 | 2 => Phase::Decode,
        _ => Phase::Prefill,
    };
    recipes.sort_by_key(|x| rank(phase_of(x)));
    let mut left = g.facts.max_tokens as u32;
    let mut rows = Vec::new();
    for x in recipes {
        let mut phase = phase_of(x);
        let (mut q, mut kv) = (0, 0);
        match phase {
            Phase::Decode if s1 <= s && s1 <= left => {
                q = s1;
                // Up to the end of the block table's extra column: a decode row's draft
                // tokens may run up to s past max_seq_len.
                let reach = (s + s1 - 1).min(nkv as u32 * b);
                kv = x.kv % (reach - s1 + 1);
            }
            Phase::Prefill if left > 0 => {
                kv = x.kv % s;
                q = (1 + x.q % (s - kv)).min(left);
            }
            _ => phase = Phase::Paused,
        }
        if phase == Phase::Paused {
            q = 0;
            kv = x.kv % (s + 1);
        }
        left -= q;
        let end = kv + q;
        let mut rr = Rng(x.seed);
        let mut nb = end.div_ceil(b) as usize;
        if x.extra_block && nb < nkv {
            nb += 1;
        }
        let mut blocks: Vec<i32> = (0..nb).map(|_| rr.below(dummy as u64) as i32).collect();
        match x.holes {
            // A hole before the first block this step writes (allowed).
            1 => {
                let first = (kv / b) as usize;
                if first > 0 && phase != Phase::Paused {
                    blocks[rr.below(first as u64) as usize] = -1;
                }
            }
            // Trailing holes up to the full width (allowed).
            2 => blocks.resize(nkv, -1),
            _ => {}
        }
        let sampling = Sampling {
            temperature: [1.0, 0.5, 0.7, 1.3][rr.below(4) as usize],
            top_k: rr.below(50) as i32,
            top_p: [0.0, 0.9, 0.95][rr.below(3) as usize],
        };
        rows.push(Row {
            phase,
            q,
            kv,
            blocks,
            slot: -1,
            sampling,
        });
    }
    rows.sort_by_key(|x| rank(x.phase));
    // Mamba slots: a random permutation (unique); without Mamba, junk the fill ignores.
    let mut perm: Vec<i32> = (0..r as i32).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row.slot = if g.has_mamba() {
            perm[i]
        } else {
            rng.below(r as u64 + 4) as i32 - 2
        };
    }
    let tokens: u64 = rows
        .iter()
        .filter(|r| r.phase != Phase::Paused)
        .map(|r| u64::from(r.q))
        .sum();
    let token_ids = rc
        .with_ids
        .then(|| (0..tokens).map(|_| rng.next() as i64 >> 8).collect());
    let intermediate = rc.intermediate.map(|seed| {
        if !g.has_mamba() {
            return Vec::new();
        }
        let mut ir = Rng(seed);
        let mut budget = g.facts.max_intermediate;
        rows.iter()
            .filter(|r| r.phase == Phase::Prefill)
            .map(|r| {
                let mut io = IntermediateOffsets::default();
                if r.q >= 2 {
                    let count = (ir.below(4) as usize).min(budget);
                    budget -= count;
                    io.count = count as u8;
                    for o in io.offsets.iter_mut().take(count) {
                        *o = 1 + ir.below(u64::from(r.q - 1)) as u32;
                    }
                }
                io
            })
            .collect()
    });
    let mut step = Step {
        rows,
        token_ids,
        intermediate,
    };
    if let Some((kind, pos, val)) = rc.corrupt {
        corrupt(g, &mut step, kind, pos, val);
    }
    step
}

/// Applies one corruption (it may or may not make the step invalid: the model decides).
fn corrupt(g: &Geometry, st: &mut Step, kind: u8, pos: u32, val: u32) {
    let r = g.facts.max_requests;
    let s = g.facts.max_seq_len as u32;
    let b = g.facts.block_size as u32;
    let nkv = g.facts.block_table_width;
    let s1 = g.facts.speculative_tokens as u32 + 1;
    let dummy = g.facts.dummy_block;
    let n = st.rows.len();
    let pick = |len: usize| (pos as usize) % len.max(1);
    let active: Vec<usize> = (0..n)
        .filter(|&i| st.rows[i].phase != Phase::Paused)
        .collect();
    let mut some_active = |f: &mut dyn FnMut(&mut Row)| {
        if let Some(&i) = active.get(pick(active.len())) {
            f(&mut st.rows[i]);
        }
    };
    match kind {
        0 => {
            // Too many rows.
            while st.rows.len() <= r {
                st.rows.insert(
                    0,
                    Row {
                        phase: Phase::Paused,
                        q: 0,
                        kv: 0,
                        blocks: Vec::new(),
                        slot: -1,
                        sampling: Sampling::PAD,
                    },
                );
            }
        }
        1 => {
            // More prefill tokens than the budget (possibly also more rows).
            let blocks: Vec<i32> = (0..s.div_ceil(b)).map(|j| j as i32 % dummy).collect();
            let mut tokens = st.tokens();
            while tokens <= g.facts.max_tokens as u64 {
                st.rows.push(Row {
                    phase: Phase::Prefill,
                    q: s,
                    kv: 0,
                    blocks: blocks.clone(),
                    slot: -1,
                    sampling: Sampling::PAD,
                });
                tokens += u64::from(s);
            }
        }
        2 => {
            // Phase order.
            if n >= 2 {
                let i = pick(n);
                let j = (i + 1 + val as usize % (n - 1)) % n;
                st.rows.swap(i, j);
            } else if n == 1 {
                st.rows.push(Row {
                    phase: Phase::Paused,
                    ..st.rows[0].clone()
                });
            }
        }
        3 => some_active(&mut |row| row.q = 0),
        4 => some_active(&mut |row| {
            if row.phase == Phase::Decode {
                row.q = s1 + 1 + val % 3;
            } else {
                row.phase = Phase::Decode;
            }
        }),
        5 => some_active(&mut |row| row.kv = s.saturating_sub(row.q) + 1 + val % 5),
        6 => {
            if n > 0 {
                let i = pick(n);
                let extra = nkv + 1 + (val as usize % 3);
                st.rows[i].blocks.resize(extra, 0);
            }
        }
        7 => {
            if let Some(row) = st.rows.get_mut(pick(n))
                && !row.blocks.is_empty()
            {
                let j = val as usize % row.blocks.len();
                row.blocks[j] = if val.is_multiple_of(2) {
                    dummy + (val % 3) as i32
                } else {
                    -2 - (val % 3) as i32
                };
            }
        }
        8 => some_active(&mut |row| {
            let needed = ((row.kv + row.q).div_ceil(b)) as usize;
            if val.is_multiple_of(2) {
                row.blocks.truncate(needed.saturating_sub(1));
            } else if needed > 0 {
                let first = (row.kv / b) as usize;
                let j = first + val as usize % needed.saturating_sub(first).max(1);
                if let Some(x) = row.blocks.get_mut(j) {
                    *x = -1;
                }
            }
        }),
        9 => some_active(&mut |row| row.slot = -1),
        10 => {
            if let Some(row) = st.rows.get_mut(pick(n)) {
                row.slot = if val.is_multiple_of(2) {
                    (r as u32 + val % 3) as i32
                } else {
                    -2 - (val % 3) as i32
                };
            }
        }
        11 => {
            if n >= 2 {
                let i = pick(n);
                let j = (i + 1 + val as usize % (n - 1)) % n;
                st.rows[j].slot = st.rows[i].slot;
            }
        }
        12 => {
            let len = st.tokens() as usize;
            let new_len = if val.is_multiple_of(2) {
                len + 1 + val as usize % 3
            } else {
                len.saturating_sub(1 + val as usize % 3)
            };
            st.token_ids = Some(vec![7; new_len]);
        }
        13 => {
            let mut v = st.intermediate.take().unwrap_or_default();
            if val.is_multiple_of(2) || v.is_empty() {
                v.push(IntermediateOffsets::default());
            } else {
                v.pop();
            }
            st.intermediate = Some(v);
        }
        14 => {
            if let Some(v) = st.intermediate.as_mut()
                && !v.is_empty()
            {
                let i = pick(v.len());
                match val % 3 {
                    0 => v[i].count = 4 + (val % 200) as u8,
                    1 => {
                        v[i].count = v[i].count.max(1);
                        v[i].offsets[0] = 0;
                    }
                    _ => {
                        v[i].count = v[i].count.max(1);
                        v[i].offsets[0] = s + val % 4;
                    }
                }
            }
        }
        _ => {
            // Three offsets on every prefill row with room for them.
            let prefill: Vec<&Row> = st
                .rows
                .iter()
                .filter(|r| r.phase == Phase::Prefill)
                .collect();
            st.intermediate = Some(
                prefill
                    .iter()
                    .map(|r| {
                        if r.q >= 2 {
                            IntermediateOffsets {
                                count: 3,
                                offsets: [1, r.q - 1, 1 + val % (r.q - 1)],
                            }
                        } else {
                            IntermediateOffsets::default()
                        }
                    })
                    .collect(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reference model: validity

/// Every rule the step breaks, by error kind (empty: the step is valid). Written from the
/// documented rules, independently of the fill's order of checks.
fn model_errors(g: &Geometry, st: &Step) -> BTreeSet<&'static str> {
    let mut e = BTreeSet::new();
    let r = g.facts.max_requests;
    let s = g.facts.max_seq_len as u64;
    let b = g.facts.block_size as u64;
    let s1 = g.facts.speculative_tokens as u32 + 1;
    let dummy = g.facts.dummy_block;
    if st.rows.len() > r {
        e.insert("too_many_requests");
    }
    let mut seen_slots = BTreeSet::new();
    for (i, row) in st.rows.iter().enumerate() {
        if i > 0 && rank(row.phase) < rank(st.rows[i - 1].phase) {
            e.insert("phase_order");
        }
        if row.blocks.len() > g.facts.block_table_width {
            e.insert("too_many_blocks");
        }
        if row.blocks.iter().any(|&id| id < -1 || id >= dummy) {
            e.insert("block_out_of_range");
        }
        if g.has_mamba() && row.slot != -1 {
            if row.slot < 0 || row.slot as usize >= r {
                e.insert("mamba_slot_out_of_range");
            } else if !seen_slots.insert(row.slot) {
                e.insert("duplicate_mamba_slot");
            }
        }
        if row.phase == Phase::Paused {
            continue;
        }
        if row.q == 0 {
            e.insert("zero_query_length");
        } else if row.phase == Phase::Decode && row.q != s1 {
            e.insert("decode_query_length");
        }
        let end = u64::from(row.kv) + u64::from(row.q);
        // A decode row's s draft tokens may run past max_seq_len, as far as the block
        // table's columns reach (nkv = ceil(S / B) + 1 when s > 0).
        let reach = if row.phase == Phase::Decode {
            (s + u64::from(s1 - 1)).min((g.facts.block_table_width as u64) * b)
        } else {
            s
        };
        if end > reach {
            e.insert("sequence_too_long");
        }
        for pos in u64::from(row.kv)..end.min(reach) {
            if row
                .blocks
                .get((pos / b) as usize)
                .is_none_or(|&id| id == -1)
            {
                e.insert("missing_block");
            }
        }
        if g.has_mamba() && row.slot == -1 {
            e.insert("missing_mamba_slot");
        }
    }
    let tokens = st.tokens();
    if tokens > g.facts.max_tokens as u64 {
        e.insert("too_many_tokens");
    }
    if let Some(ids) = &st.token_ids
        && ids.len() as u64 != tokens
    {
        e.insert("token_ids_length");
    }
    if let Some(inter) = &st.intermediate {
        let prefill: Vec<&Row> = st
            .rows
            .iter()
            .filter(|r| r.phase == Phase::Prefill)
            .collect();
        let expected = if g.has_mamba() { prefill.len() } else { 0 };
        if inter.len() != expected {
            e.insert("intermediate_length");
        } else {
            let mut total = 0usize;
            for (io, row) in inter.iter().zip(&prefill) {
                if io.count > 3 {
                    e.insert("intermediate_offset");
                    continue;
                }
                for &off in &io.offsets[..usize::from(io.count)] {
                    if off == 0 || off >= row.q {
                        e.insert("intermediate_offset");
                    }
                }
                total += usize::from(io.count);
            }
            if total > g.facts.max_intermediate {
                e.insert("too_many_intermediates");
            }
        }
    }
    e
}

// ---------------------------------------------------------------------------------------
// The reference model: outputs

/// Every field the kernels see, by name, as i64 (f32 as its bits); `None` when absent.
type Snap = BTreeMap<&'static str, Option<Vec<i64>>>;

fn ints<T: Copy + Into<i64>>(x: &[T]) -> Option<Vec<i64>> {
    Some(x.iter().map(|&v| v.into()).collect())
}

fn floats(x: &[f32]) -> Option<Vec<i64>> {
    Some(x.iter().map(|v| i64::from(v.to_bits())).collect())
}

/// Snapshot of a view. `mask_ids`: leave out the real prefix of `token_to_input_ids`
/// (a step without token ids leaves it as it was).
fn snapshot(v: &MetadataView<'_>, mask_ids: bool) -> Snap {
    let mut m = Snap::new();
    let n_real = v.info().real.tokens as usize;
    let ids = v.token_to_input_ids();
    m.insert(
        "token_to_input_ids",
        ints(if mask_ids { &ids[n_real..] } else { ids }),
    );
    m.insert("token_to_pos_ids", ints(v.token_to_pos_ids()));
    m.insert("token_to_block_idx", ints(v.token_to_block_idx()));
    m.insert(
        "token_to_local_position_within_kv_block",
        ints(v.token_to_local_position_within_kv_block()),
    );
    m.insert("token_to_request_idx", ints(v.token_to_request_idx()));
    m.insert(
        "token_to_position_in_request",
        ints(v.token_to_position_in_request()),
    );
    m.insert(
        "request_in_prefill_status",
        ints(v.request_in_prefill_status()),
    );
    m.insert("request_query_lengths", ints(v.request_query_lengths()));
    m.insert(
        "request_kv_length_offsets",
        ints(v.request_kv_length_offsets()),
    );
    m.insert("temperature", floats(v.temperature()));
    m.insert("top_k", ints(v.top_k()));
    m.insert("top_p", floats(v.top_p()));
    m.insert(
        "active_request_last_token_idxs",
        ints(v.active_request_last_token_idxs()),
    );
    m.insert(
        "real_token_count",
        Some(vec![i64::from(v.real_token_count())]),
    );
    m.insert("query_lengths", ints(v.query_lengths()));
    m.insert("cu_query_seq_lengths", ints(v.cu_query_seq_lengths()));
    m.insert("kv_seq_lengths", ints(v.kv_seq_lengths()));
    m.insert("cu_kv_seq_lengths", ints(v.cu_kv_seq_lengths()));
    m.insert("block_table", ints(v.block_table()));
    m.insert(
        "max_seqlen",
        Some(vec![
            i64::from(v.max_seqlen_q()),
            i64::from(v.max_seqlen_k()),
        ]),
    );
    m.insert(
        "mamba_batch_indices_decode",
        v.mamba_batch_indices_decode().map(|d| d.to_vec()),
    );
    m.insert(
        "mamba_batch_indices_prefill",
        v.mamba_batch_indices_prefill().and_then(ints),
    );
    m.insert("mamba_seq_idx", v.mamba_seq_idx().and_then(ints));
    m.insert("mamba_cu_seqlens", v.mamba_cu_seqlens().and_then(ints));
    m.insert(
        "mamba_cu_chunk_seqlens",
        v.mamba_cu_chunk_seqlens().and_then(ints),
    );
    m.insert(
        "mamba_last_chunk_indices",
        v.mamba_last_chunk_indices().and_then(ints),
    );
    m.insert(
        "mamba_seq_idx_for_varlen",
        v.mamba_seq_idx_for_varlen().and_then(ints),
    );
    m.insert("mamba_conv_seq_idx", v.mamba_conv_seq_idx().and_then(ints));
    m.insert(
        "mamba_conv_seq_start",
        v.mamba_conv_seq_start().and_then(ints),
    );
    m.insert(
        "mamba_device_decode_prefill",
        v.mamba_device_decode_prefill().and_then(ints),
    );
    m.insert(
        "mamba_intermediate_chunk_indices",
        v.mamba_intermediate_chunk_indices().and_then(ints),
    );
    m.insert(
        "mamba_intermediate_abs_positions",
        v.mamba_intermediate_abs_positions().and_then(ints),
    );
    m.insert(
        "mamba_intermediate_real_count",
        v.mamba_intermediate_real_count().and_then(ints),
    );
    m
}

/// docs/SEMANTICS.md §3.3 applicability, for a plain scan over the whole list.
fn applicable(real: BatchDims, b: BatchDims, strict: bool) -> bool {
    if b.tokens < real.tokens {
        return false;
    }
    if real.prefill == 0 {
        b.prefill == 0 && b.decode >= real.decode
    } else if strict {
        b.prefill >= real.prefill && b.decode >= real.decode
    } else {
        b.prefill >= real.prefill && b.prefill + b.decode >= real.prefill + real.decode
    }
}

/// docs/SEMANTICS.md §3.4, literally.
fn eager(g: &Geometry, real: BatchDims) -> BatchDims {
    let tp = g.spec.tensor_parallel;
    let tok_k = 64u32.div_ceil(tp) * tp;
    let req_k = 4u32.div_ceil(tp) * tp;
    let up = |v: u32, k: u32| v.div_ceil(k) * k;
    let r = g.facts.max_requests as u32;
    let s = g.facts.speculative_tokens as u32;
    if real.prefill == 0 {
        if s > 0 {
            let pd = r.min(up(real.decode, req_k));
            BatchDims::new(pd * (s + 1), 0, pd)
        } else {
            let pt = (g.facts.max_tokens as u32)
                .min(r)
                .min(up(real.tokens, tok_k));
            BatchDims::new(pt, 0, pt)
        }
    } else {
        let pr = r.min(up(real.decode + real.prefill, req_k));
        BatchDims::new(up(real.tokens, tok_k), pr - real.decode, real.decode)
    }
}

fn pad<T: Clone>(mut v: Vec<T>, len: usize, x: T) -> Vec<T> {
    assert!(
        v.len() <= len,
        "model: {} real entries, {len} padded",
        v.len()
    );
    v.resize(len, x);
    v
}

/// What a valid step must produce (docs/SEMANTICS.md §3–§6, with this project's documented
/// deviation: token padding writes 0 to the two arrays Megatron leaves stale).
fn model(g: &Geometry, st: &Step) -> (StepInfo, Snap) {
    let s1 = g.facts.speculative_tokens as u32 + 1;
    let bsz = g.facts.block_size as u32;
    let nkv = g.facts.block_table_width;
    let dummy = g.facts.dummy_block;
    let paused = st
        .rows
        .iter()
        .take_while(|r| r.phase == Phase::Paused)
        .count();
    let active: Vec<&Row> = st.rows[paused..].iter().collect();
    let n = active.len();
    let d = active.iter().filter(|r| r.phase == Phase::Decode).count() as u32;
    let f = n as u32 - d;
    let tokens = st.tokens() as u32;
    let real = BatchDims::new(tokens, f, d);
    let strict = g.has_mamba();
    let matched = g
        .buckets
        .iter()
        .copied()
        .filter(|&b| applicable(real, b, strict))
        .min();
    let padded = matched.unwrap_or_else(|| eager(g, real));
    let bucket = matched.map(|m| g.buckets.iter().position(|&b| b == m).unwrap() as u32);
    let attn = match matched {
        Some(b) if real.decode > b.decode => {
            BatchDims::new(real.tokens, n as u32 - b.decode, b.decode)
        }
        _ => real,
    };
    let np = (padded.prefill + padded.decode) as usize;
    let tp = padded.tokens as usize;

    // §5 token arrays.
    let (mut pos, mut block, mut local, mut req) = (vec![], vec![], vec![], vec![]);
    for (a, row) in active.iter().enumerate() {
        for j in 0..row.q {
            let p = row.kv + j;
            pos.push(i64::from(p));
            block.push(i64::from(row.blocks[(p / bsz) as usize]));
            local.push(i64::from(p % bsz));
            req.push((paused + a) as i64);
        }
    }
    let mut m = Snap::new();
    let ids = match &st.token_ids {
        Some(ids) => pad(ids.clone(), tp, 0),
        None => vec![0; tp - tokens as usize],
    };
    m.insert("token_to_input_ids", Some(ids));
    m.insert("token_to_pos_ids", Some(pad(pos.clone(), tp, 0)));
    m.insert("token_to_block_idx", Some(pad(block, tp, i64::from(dummy))));
    m.insert(
        "token_to_local_position_within_kv_block",
        Some(pad(local, tp, 0)),
    );
    m.insert("token_to_request_idx", Some(pad(req.clone(), tp, 0)));
    m.insert("token_to_position_in_request", Some(pad(pos, tp, 0)));

    // §5 request staging and §4 MHA arrays.
    let col =
        |f: &dyn Fn(&Row) -> i64, x: i64| Some(pad(active.iter().map(|r| f(r)).collect(), np, x));
    let mut cu_q = vec![0i64];
    let mut cu_kv = vec![0i64];
    for r in &active {
        cu_q.push(cu_q.last().unwrap() + i64::from(r.q));
        cu_kv.push(cu_kv.last().unwrap() + i64::from(r.kv + r.q));
    }
    let cu_q = pad(cu_q.clone(), np + 1, *cu_q.last().unwrap());
    let cu_kv = pad(cu_kv.clone(), np + 1, *cu_kv.last().unwrap());
    m.insert(
        "request_in_prefill_status",
        col(&|r| i64::from(r.phase == Phase::Prefill), 0),
    );
    m.insert("request_query_lengths", col(&|r| i64::from(r.q), 0));
    m.insert("request_kv_length_offsets", col(&|r| i64::from(r.kv), 0));
    m.insert(
        "temperature",
        col(
            &|r| i64::from(r.sampling.temperature.to_bits()),
            i64::from(1.0f32.to_bits()),
        ),
    );
    m.insert("top_k", col(&|r| i64::from(r.sampling.top_k), 0));
    m.insert(
        "top_p",
        col(
            &|r| i64::from(r.sampling.top_p.to_bits()),
            i64::from(0.0f32.to_bits()),
        ),
    );
    m.insert(
        "active_request_last_token_idxs",
        Some(pad((1..=n).map(|a| cu_q[a] - 1).collect(), np, 0)),
    );
    m.insert("real_token_count", Some(vec![i64::from(tokens)]));
    m.insert("query_lengths", col(&|r| i64::from(r.q), 0));
    m.insert("cu_query_seq_lengths", Some(cu_q.clone()));
    m.insert("kv_seq_lengths", col(&|r| i64::from(r.kv + r.q), 0));
    m.insert("cu_kv_seq_lengths", Some(cu_kv));
    let mut bt = Vec::new();
    for a in 0..np {
        for j in 0..nkv {
            let id = active
                .get(a)
                .and_then(|r| r.blocks.get(j))
                .copied()
                .unwrap_or(-1);
            bt.push(i64::from(if id == -1 { dummy } else { id }));
        }
    }
    m.insert("block_table", Some(bt));
    let (mq, mk) = if matched.is_some() {
        let q = if padded.prefill == 0 {
            s1
        } else {
            padded.tokens.max(2)
        };
        (q, g.facts.max_seq_len as u32)
    } else if n > 0 {
        (
            active.iter().map(|r| r.q).max().unwrap(),
            active.iter().map(|r| r.kv + r.q).max().unwrap(),
        )
    } else {
        (s1, 1)
    };
    m.insert("max_seqlen", Some(vec![i64::from(mq), i64::from(mk)]));

    let mut info = StepInfo {
        paused: paused as u32,
        real,
        padded,
        attn,
        bucket,
        max_seqlen_q: mq,
        max_seqlen_k: mk,
        // Every real row's KV pages (the FlashInfer index array's length).
        kv_pages: active.iter().map(|r| (r.kv + r.q).div_ceil(bsz)).sum(),
        ..StepInfo::default()
    };

    // §6 Mamba.
    let mamba_fields = [
        "mamba_batch_indices_decode",
        "mamba_batch_indices_prefill",
        "mamba_seq_idx",
        "mamba_cu_seqlens",
        "mamba_cu_chunk_seqlens",
        "mamba_last_chunk_indices",
        "mamba_seq_idx_for_varlen",
        "mamba_conv_seq_idx",
        "mamba_conv_seq_start",
        "mamba_device_decode_prefill",
        "mamba_intermediate_chunk_indices",
        "mamba_intermediate_abs_positions",
        "mamba_intermediate_real_count",
    ];
    for k in mamba_fields {
        m.insert(k, None);
    }
    if !g.has_mamba() {
        return (info, m);
    }
    let dp = padded.decode as usize;
    let fp = padded.prefill as usize;
    let dr = attn.decode as usize;
    let fr = attn.prefill as usize;
    if dp > 0 {
        m.insert(
            "mamba_batch_indices_decode",
            Some(pad(
                active[..dr].iter().map(|r| i64::from(r.slot)).collect(),
                dp,
                -1,
            )),
        );
    }
    if fp == 0 {
        return (info, m);
    }
    let q0 = cu_q[dr];
    let l = cu_q[dr + fr] - q0;
    m.insert(
        "mamba_batch_indices_prefill",
        Some(pad(
            active[dr..dr + fr]
                .iter()
                .map(|r| i64::from(r.slot))
                .collect(),
            fp,
            -1,
        )),
    );
    let seq_idx: Vec<i64> = (0..tp as i64)
        .map(|k| {
            if k < l {
                req[(q0 + k) as usize] - req[q0 as usize]
            } else {
                -1
            }
        })
        .collect();
    let mut cu = vec![0i64];
    for ff in 0..fr {
        cu.push(cu_q[dr + ff + 1] - q0);
    }
    let cu = pad(cu, fp + 1, l);
    let cs = g.facts.chunk_size as i64;
    let c = tp / g.facts.chunk_size + fp;
    let (mut bounds, mut chunk_seq, mut last) = (vec![0i64], vec![], vec![]);
    for ff in 0..fp {
        let (st0, en) = (cu[ff], cu[ff + 1]);
        let nf = ((en - st0 + cs - 1) / cs).max(1);
        for k in 0..nf {
            bounds.push((st0 + (k + 1) * cs).min(en));
            chunk_seq.push(ff as i64);
        }
        last.push(chunk_seq.len() as i64 - 1);
    }
    let lastb = *bounds.last().unwrap();
    m.insert("mamba_seq_idx", Some(seq_idx.clone()));
    m.insert("mamba_cu_seqlens", Some(cu.clone()));
    m.insert("mamba_cu_chunk_seqlens", Some(pad(bounds, c + 1, lastb)));
    m.insert("mamba_last_chunk_indices", Some(last));
    m.insert("mamba_seq_idx_for_varlen", Some(pad(chunk_seq, c, 0)));
    m.insert(
        "mamba_conv_seq_idx",
        Some(seq_idx.iter().map(|&x| x.max(0)).collect()),
    );
    m.insert(
        "mamba_conv_seq_start",
        Some(
            seq_idx
                .iter()
                .map(|&x| if x < 0 { 0 } else { cu[x as usize] })
                .collect(),
        ),
    );
    if dp > 0 {
        m.insert("mamba_device_decode_prefill", Some(vec![q0, l]));
    }
    let kk = (3 * fp).min(g.facts.max_intermediate);
    let (mut chunks, mut abs) = (vec![], vec![]);
    if let Some(inter) = &st.intermediate {
        let mut cum = 0i64;
        for (ff, io) in inter.iter().enumerate().take(fr) {
            for &off in &io.offsets[..usize::from(io.count)] {
                chunks.push(cum + i64::from(off) / cs - 1);
                abs.push(cu[ff] + i64::from(off));
            }
            cum += ((cu[ff + 1] - cu[ff] + cs - 1) / cs).max(1);
        }
    }
    let emitted = chunks.len();
    m.insert("mamba_intermediate_chunk_indices", Some(pad(chunks, kk, 0)));
    m.insert(
        "mamba_intermediate_abs_positions",
        Some(pad(abs, kk, g.facts.conv_width as i64)),
    );
    m.insert("mamba_intermediate_real_count", Some(vec![emitted as i64]));
    info.mamba_chunks = c as u32;
    info.intermediate_len = kk as u32;
    info.intermediate_count = emitted as u32;
    info.real_prefill_tokens = l as u32;
    (info, m)
}

// ---------------------------------------------------------------------------------------
// Invariants, checked on the view directly (the list)

fn check_invariants(g: &Geometry, st: &Step, v: &MetadataView<'_>) -> Result<(), TestCaseError> {
    let info = v.info();
    let real = info.real;
    let padded = info.padded;
    let n = (real.prefill + real.decode) as usize;
    let np = (padded.prefill + padded.decode) as usize;
    let dummy = g.facts.dummy_block;
    let bsz = g.facts.block_size as i64;
    let nkv = g.facts.block_table_width;
    prop_assert!(padded.tokens >= real.tokens && np >= n, "padded below real");
    prop_assert!(padded.prefill >= info.attn.prefill && padded.decode >= info.attn.decode);
    prop_assert!(np <= g.facts.max_requests && padded.tokens as usize <= g.facts.max_tokens);

    // Cumulative arrays: start at 0, non-decreasing, consistent with the lengths.
    for (cu, len) in [
        (v.cu_query_seq_lengths(), v.query_lengths()),
        (v.cu_kv_seq_lengths(), v.kv_seq_lengths()),
    ] {
        prop_assert_eq!(cu.len(), np + 1);
        prop_assert_eq!(cu[0], 0);
        for a in 0..np {
            prop_assert!(cu[a + 1] >= cu[a], "cumulative array decreases");
            prop_assert_eq!(cu[a + 1] - cu[a], len[a]);
        }
    }
    prop_assert_eq!(v.cu_query_seq_lengths()[np], real.tokens as i32);
    prop_assert_eq!(v.real_token_count(), real.tokens as i32);

    // Block table: every entry inside the pool (the dummy included); padded rows dummy.
    let bt = v.block_table();
    prop_assert_eq!(bt.len(), np * nkv);
    prop_assert!(bt.iter().all(|&id| (0..=dummy).contains(&id)));
    prop_assert!(bt[n * nkv..].iter().all(|&id| id == dummy));

    // Every token's KV slot lies inside its request's blocks, padding in the dummy block.
    let active: Vec<&Row> = st.rows[info.paused as usize..].iter().collect();
    let blocks = v.token_to_block_idx();
    let locals = v.token_to_local_position_within_kv_block();
    let mut t = 0usize;
    for row in &active {
        let row_blocks: BTreeSet<i64> = row.blocks.iter().map(|&b| i64::from(b)).collect();
        for j in 0..row.q {
            let p = i64::from(row.kv + j);
            let slot = blocks[t] * bsz + i64::from(locals[t]);
            prop_assert!(
                row_blocks.contains(&blocks[t]),
                "token {t} outside its blocks"
            );
            prop_assert!((0..bsz).contains(&i64::from(locals[t])));
            prop_assert_eq!(slot % bsz, p % bsz);
            prop_assert_eq!(
                i64::from(row.blocks[(p / bsz) as usize]),
                blocks[t],
                "token {} in the wrong block",
                t
            );
            t += 1;
        }
    }
    prop_assert_eq!(t, real.tokens as usize);
    for k in t..padded.tokens as usize {
        prop_assert_eq!(blocks[k], i64::from(dummy));
        prop_assert_eq!(locals[k], 0);
    }

    // Padded request entries equal their pad values.
    prop_assert!(v.query_lengths()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.kv_seq_lengths()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.request_query_lengths()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.request_kv_length_offsets()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.request_in_prefill_status()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.temperature()[n..].iter().all(|&x| x == 1.0));
    prop_assert!(v.top_k()[n..].iter().all(|&x| x == 0));
    prop_assert!(v.top_p()[n..].iter().all(|&x| x == 0.0));
    prop_assert!(
        v.active_request_last_token_idxs()[n..]
            .iter()
            .all(|&x| x == 0)
    );

    if !g.has_mamba() {
        prop_assert!(v.mamba_batch_indices_decode().is_none());
        prop_assert!(v.mamba_cu_seqlens().is_none());
        return Ok(());
    }
    // Mamba indices: unique among real rows, -1 on padding.
    let dr = info.attn.decode as usize;
    let fr = info.attn.prefill as usize;
    let mut real_slots = Vec::new();
    if let Some(dec) = v.mamba_batch_indices_decode() {
        let dec = dec.to_vec();
        prop_assert_eq!(dec.len(), padded.decode as usize);
        real_slots.extend(dec[..dr].iter().copied());
        prop_assert!(dec[dr..].iter().all(|&x| x == -1));
    } else {
        prop_assert_eq!(padded.decode, 0);
    }
    if let Some(pre) = v.mamba_batch_indices_prefill() {
        real_slots.extend(pre[..fr].iter().map(|&x| i64::from(x)));
        prop_assert!(pre[fr..].iter().all(|&x| x == -1));
    }
    let unique: BTreeSet<i64> = real_slots.iter().copied().collect();
    prop_assert_eq!(unique.len(), real_slots.len(), "Mamba slots repeat");
    prop_assert!(
        real_slots
            .iter()
            .all(|&x| (0..g.facts.max_requests as i64).contains(&x))
    );

    // Chunk boundaries cover each prefill exactly.
    let Some(cu) = v.mamba_cu_seqlens() else {
        prop_assert_eq!(padded.prefill, 0);
        return Ok(());
    };
    let chunks = v.mamba_cu_chunk_seqlens().unwrap();
    let chunk_seq = v.mamba_seq_idx_for_varlen().unwrap();
    let last = v.mamba_last_chunk_indices().unwrap();
    let cs = g.facts.chunk_size as i32;
    prop_assert_eq!(chunks[0], 0);
    prop_assert!(chunks.windows(2).all(|w| w[0] <= w[1]));
    let mut start = 0usize; // first chunk of sequence f
    for f in 0..padded.prefill as usize {
        let end_chunk = last[f] as usize;
        prop_assert!(end_chunk >= start && end_chunk < chunk_seq.len());
        prop_assert_eq!(chunks[start], cu[f], "sequence {} starts off a boundary", f);
        prop_assert_eq!(
            chunks[end_chunk + 1],
            cu[f + 1],
            "sequence {} ends off a boundary",
            f
        );
        for c in start..=end_chunk {
            prop_assert_eq!(chunk_seq[c], f as i32);
            let len = chunks[c + 1] - chunks[c];
            prop_assert!(len <= cs && (len > 0 || cu[f] == cu[f + 1]));
        }
        start = end_chunk + 1;
    }
    // seq_idx agrees with cu_seqlens.
    let seq = v.mamba_seq_idx().unwrap();
    for (k, &got) in seq.iter().enumerate() {
        let want = (0..fr)
            .find(|&f| (cu[f]..cu[f + 1]).contains(&(k as i32)))
            .map_or(-1, |f| f as i32);
        prop_assert_eq!(got, want);
    }
    prop_assert_eq!(seq.len(), padded.tokens as usize);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties

#[derive(Default)]
struct Stats {
    ok: u64,
    graphed: u64,
    errors: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn report(&self, name: &str) {
        eprintln!(
            "{name}: {} accepted ({} graphed), {} rejected: {:?}",
            self.ok,
            self.graphed,
            self.errors.values().sum::<u64>(),
            self.errors
        );
    }
}

/// Fills `prev` (if valid) then `st`; checks the outcome against the model.
fn check_step(
    g: &Geometry,
    prev: &Step,
    st: &Step,
    stats: &mut Stats,
) -> Result<(), TestCaseError> {
    let mut meta = HostMetadata::new(RuntimeDims::new(g.clone()));
    let prev_rows = prev.request_rows();
    let _ = meta.fill(&prev.input(&prev_rows));
    let before = meta.bytes().to_vec();
    let info_before = *meta.info();
    let rows = st.request_rows();
    let expected_errors = model_errors(g, st);
    match meta.fill(&st.input(&rows)) {
        Ok(info) => {
            let info = *info;
            prop_assert!(
                expected_errors.is_empty(),
                "accepted a step the model rejects: {:?}",
                expected_errors
            );
            let (want_info, want) = model(g, st);
            prop_assert_eq!(info, want_info);
            let got = snapshot(&meta.view(), st.token_ids.is_none());
            for (k, w) in &want {
                prop_assert_eq!(got.get(k), Some(w), "field {}", k);
            }
            check_invariants(g, st, &meta.view())?;
            stats.ok += 1;
            stats.graphed += u64::from(info.graphed());
        }
        Err(e) => {
            prop_assert!(
                expected_errors.contains(e.kind()),
                "rejected with {} ({}), model found {:?}",
                e.kind(),
                e,
                expected_errors
            );
            prop_assert!(
                meta.bytes() == before.as_slice(),
                "buffer changed after {}",
                e
            );
            prop_assert_eq!(*meta.info(), info_before, "info changed after {}", e);
            *stats.errors.entry(e.kind()).or_default() += 1;
        }
    }
    Ok(())
}

fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value, &mut Stats) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    let stats = std::cell::RefCell::new(Stats::default());
    let result = runner.run(&strategy, |v| test(v, &mut stats.borrow_mut()));
    stats.borrow().report(name);
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

#[test]
fn fill_matches_reference_model() {
    run(
        "fill_matches_reference_model",
        layout_strategy().prop_flat_map(|g| (Just(g), step_strategy(0.3), step_strategy(0.25))),
        |(g, prev, step), stats| {
            let prev = build_step(&g, &prev);
            let st = build_step(&g, &step);
            check_step(&g, &prev, &st, stats)
        },
    );
}

#[test]
fn rejected_steps_change_nothing() {
    run(
        "rejected_steps_change_nothing",
        layout_strategy().prop_flat_map(|g| (Just(g), step_strategy(0.0), step_strategy(1.0))),
        |(g, prev, step), stats| {
            let prev = build_step(&g, &prev);
            let st = build_step(&g, &step);
            check_step(&g, &prev, &st, stats)
        },
    );
}

#[test]
fn fill_is_history_free() {
    run(
        "fill_is_history_free",
        layout_strategy().prop_flat_map(|g| {
            (
                Just(g),
                proptest::collection::vec(step_strategy(0.3), 0..6),
                step_strategy(0.0),
            )
        }),
        |(g, history, step), stats| {
            let st = build_step(&g, &step);
            let errs = model_errors(&g, &st);
            prop_assert!(
                errs.is_empty(),
                "generator made an invalid step: {:?}",
                errs
            );
            let rows = st.request_rows();
            let input = st.input(&rows);

            let mut fresh = HostMetadata::new(RuntimeDims::new(g.clone()));
            fresh.fill(&input).unwrap();
            let mut used = HostMetadata::new(RuntimeDims::new(g.clone()));
            for h in &history {
                let h = build_step(&g, h);
                let h_rows = h.request_rows();
                match used.fill(&h.input(&h_rows)) {
                    Ok(_) => stats.ok += 1,
                    Err(e) => *stats.errors.entry(e.kind()).or_default() += 1,
                }
            }
            used.fill(&input).unwrap();
            let mask = st.token_ids.is_none();
            prop_assert_eq!(fresh.info(), used.info());
            prop_assert_eq!(snapshot(&fresh.view(), mask), snapshot(&used.view(), mask));
            // The same step again: not a byte of the buffer moves.
            let once = used.bytes().to_vec();
            used.fill(&input).unwrap();
            prop_assert!(used.bytes() == once.as_slice(), "refill changed the buffer");
            Ok(())
        },
    );
}
