//! `BatchState` with prefix caching driven by a random engine over prompts that share
//! prefixes (a few fixed "system prompts", and follow-up turns that resend a finished
//! request's whole prompt), on an MHA layout and on hybrid layouts with and without a
//! durable Mamba cache, under both eviction policies. After every operation:
//!
//! * each block's reference count equals the number of live block lists holding it (so
//!   counts never go negative and a shared block has one reference per owner), no block a
//!   live request holds is free or cached, and free + cached + in use = the pool;
//! * a failed admission or schedule changed nothing;
//! * the KV contents a request relies on (every position below its `kv_offset`) are its
//!   own tokens: the test writes each step's tokens into a model of the KV cache, so a hit
//!   that pinned a block holding another prefix, or a block freed or evicted while a
//!   live request holds it, shows up as a wrong token;
//! * a hit that skips tokens on a hybrid layout restores from a durable slot holding
//!   exactly the skipped prefix's state (modelled as the tokens the engine stored there);
//!   a skip without a restore (a silent zero state) fails;
//! * every step input's metadata, filled by the CPU backend from `with_step` (with its
//!   residency), equals the host fill of the step rebuilt from the test's own mirror of
//!   the resident table.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use std::collections::HashMap;

use attention_layout::backend::{CpuBackend, MetadataBackend};
use attention_layout::batch::{BatchError, BatchState, PrefixOptions, RequestHandle, RequestPhase};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{
    Dims, EvictionPolicy, Geometry, HostMetadata, Phase, RequestRow, RuntimeDims, StepInput,
};
use proptest::prelude::*;
use support::workload::Rng;

const B: u32 = 4;

fn dims(model: ModelKind, pool: u32) -> RuntimeDims {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: 6,
        max_tokens: 64,
        max_seq_len: 96,
        block_size: B,
        speculative_tokens: 0,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(pool),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

/// The token at position `p` of request `id`: its prompt, then its generated tokens
/// (negative, unique per request and position).
fn token(id: u64, prompt: &[i64], p: u32) -> i64 {
    prompt
        .get(p as usize)
        .copied()
        .unwrap_or_else(|| -((id as i64) * 100_000 + i64::from(p)))
}

struct Shadow {
    prompt: Vec<i64>,
    blocks: Vec<i32>,
}

/// What the allocator's counts must be, given the live block lists.
fn check_pool(state: &BatchState) {
    let kv = state.prefix_kv().unwrap();
    let pool = kv.pool_size();
    let mut owners = vec![0u32; pool];
    for h in state.live() {
        for &b in state.blocks(h).unwrap() {
            assert!(b >= 0 && (b as usize) < pool - 1, "block {b} out of range");
            owners[b as usize] += 1;
            assert!(!kv.is_free(b), "block {b} held by {h:?} is free");
            assert!(!kv.is_cached(b), "block {b} held by {h:?} is cached");
        }
    }
    assert_eq!(kv.ref_counts(), owners.as_slice(), "reference counts");
    let free = kv.available();
    let cached = kv.cached_count();
    let in_use = kv.in_use_count();
    assert_eq!(free + cached + in_use, pool - 1, "free + cached + in use");
    assert_eq!(state.kv_in_use(), in_use);
    let evictable = match kv.policy() {
        EvictionPolicy::Lru => kv.evictable_count(),
        EvictionPolicy::RefZero => 0,
    };
    assert_eq!(state.kv_available(), free + evictable, "kv_available");
    let shared = kv.ref_counts().iter().filter(|&&r| r > 1).count();
    assert_eq!(state.kv_shared(), shared, "kv_shared");
    if let Some(m) = state.mamba_cache() {
        let mut seen = vec![false; m.slots()];
        for (b, &s) in m.block_to_slot().iter().enumerate() {
            if s >= 0 {
                assert!(!seen[s as usize], "slot {s} given to two blocks");
                seen[s as usize] = true;
                assert_eq!(m.slot_to_block()[s as usize], b as i32);
            }
        }
        assert_eq!(
            seen.iter().filter(|&&x| x).count() + m.free_count(),
            m.slots()
        );
    }
}

/// Everything a failed call must leave as it was.
type Snap = (
    Vec<u32>,
    Vec<i32>,
    Vec<i64>,
    Vec<u64>,
    Vec<i32>,
    Vec<RequestHandle>,
    u64,
    Option<Vec<i32>>,
);

fn snapshot(state: &BatchState) -> Snap {
    let kv = state.prefix_kv().unwrap();
    (
        kv.ref_counts().to_vec(),
        kv.free_blocks().to_vec(),
        kv.hashes().to_vec(),
        kv.timestamps().to_vec(),
        state.resident_table().to_vec(),
        state.live().collect::<Vec<_>>(),
        state.scheduled_tokens(),
        state.mamba_cache().map(|m| m.block_to_slot().to_vec()),
    )
}

#[derive(Default, Debug)]
struct Tally {
    hits: u64,
    skipped: u64,
    restores: u64,
    stores: u64,
    shared_rows: u64,
    failed: u64,
    evicted: u64,
    steps: u64,
}

fn drive(model: ModelKind, policy: EvictionPolicy, mamba_slots: Option<usize>, seed: u64) -> Tally {
    let d = dims(model, 26);
    let mut rng = Rng::new(seed);
    let mut state = BatchState::with_prefix_caching(
        &d,
        PrefixOptions {
            policy,
            mamba_cache_slots: mamba_slots,
        },
    )
    .unwrap();
    let nkv = d.block_table_width();
    let mut mirror = vec![-1i32; d.max_requests() * nkv];
    let mut backend = CpuBackend::new(d.clone());
    let mut reference = HostMetadata::new(d.clone());
    // The KV cache model: (block, offset) → token.
    let mut kv_cells: HashMap<(i32, u32), i64> = HashMap::new();
    // The durable Mamba slots model: slot → the prefix whose state it holds.
    let mut slot_state: HashMap<i32, Vec<i64>> = HashMap::new();
    let mut shadow: HashMap<u64, Shadow> = HashMap::new();
    let mut history: Vec<Vec<i64>> = Vec::new();
    let systems: Vec<Vec<i64>> = (0..3)
        .map(|k| (0..(8 + 8 * k)).map(|i| 1000 * (k + 1) + i).collect())
        .collect();
    let mut t = Tally::default();
    let cached_mode = model.has_mamba() && mamba_slots.is_some();
    for _step in 0..60 {
        // Arrivals: a system prompt plus a question, or a follow-up turn.
        for _ in 0..rng.range_inclusive(0, 2) {
            let mut prompt = if !history.is_empty() && rng.chance(0.3) {
                history[rng.below(history.len() as u64) as usize].clone()
            } else {
                systems[rng.below(3) as usize].clone()
            };
            for _ in 0..rng.range_inclusive(1, 12) {
                prompt.push(rng.range(1, 5) as i64);
            }
            prompt.truncate(80);
            let out = rng.range_inclusive(1, 8);
            let before = snapshot(&state);
            match state.admit_prompt(&prompt, out) {
                Ok(h) => {
                    shadow.insert(
                        h.id(),
                        Shadow {
                            prompt: prompt.clone(),
                            blocks: Vec::new(),
                        },
                    );
                    history.push(prompt);
                }
                Err(
                    BatchError::NoFreeRow { .. }
                    | BatchError::NoMambaSlot { .. }
                    | BatchError::TooLong { .. }
                    | BatchError::ExceedsPool { .. },
                ) => {
                    t.failed += 1;
                    assert_eq!(snapshot(&state), before, "a failed admission changed state");
                }
                Err(e) => panic!("admit: {e}"),
            }
        }
        let live: Vec<_> = state.live().collect();
        for h in live {
            let x = rng.unit();
            if x < 0.03 {
                state.release(h).unwrap();
                shadow.remove(&h.id());
                check_pool(&state);
                continue;
            }
            let info = state.info(h).unwrap();
            let left = 64 - state.scheduled_tokens();
            let before = snapshot(&state);
            let r = match info.phase {
                RequestPhase::Decode if left > 0 && rng.chance(0.8) => state.schedule_decode(h),
                RequestPhase::Prefill if left > 0 && rng.chance(0.8) => {
                    let rem = info.prompt_len - info.prompt_done;
                    let q = if rng.chance(0.5) {
                        rem
                    } else {
                        rng.range_inclusive(1, rem)
                    };
                    state.schedule_prefill(h, q)
                }
                _ => continue,
            };
            match r {
                Ok(()) => {
                    if let Some(hit) = state.prefix_hit(h).unwrap() {
                        let i = state.info(h).unwrap();
                        assert_eq!(i.scheduled, hit.query_length);
                        assert_eq!(i.kv_offset, info.kv_offset + hit.skip_tokens);
                        t.hits += u64::from(hit.matched_blocks > 0);
                        t.skipped += u64::from(hit.skip_tokens);
                        let s = &shadow[&h.id()];
                        if info.prompt_done == 0 && hit.skip_tokens > 0 && model.has_mamba() {
                            assert!(cached_mode, "memory-only mode skipped a first chunk");
                            let slot = hit
                                .restore_from
                                .expect("a skip on a hybrid layout without a restore");
                            assert_eq!(
                                slot_state.get(&slot).map(Vec::as_slice),
                                Some(&s.prompt[..hit.skip_tokens as usize]),
                                "restore from slot {slot} of another prefix"
                            );
                            t.restores += 1;
                        } else {
                            assert_eq!(hit.restore_from, None);
                        }
                    }
                }
                Err(BatchError::OutOfBlocks { .. } | BatchError::TokenBudget { .. }) => {
                    t.failed += 1;
                    assert_eq!(snapshot(&state), before, "a failed schedule changed state");
                }
                Err(e) => panic!("schedule: {e}"),
            }
            check_pool(&state);
        }
        // The step: apply the residency, rebuild the rows from the mirror, compare.
        let by_row: HashMap<u32, u64> = state.live().map(|h| (h.row(), h.id())).collect();
        let mut writes: Vec<(u64, u32, u32)> = Vec::new();
        state.with_step(|input| {
            let res = input.residency.unwrap();
            for c in res.changes {
                mirror[c.resident_row as usize * nkv + c.index as usize] = c.block;
            }
            let rows: Vec<(Phase, u32, u32, Vec<i32>, i32)> = input
                .rows
                .iter()
                .zip(res.resident_rows)
                .map(|(r, &rr)| {
                    let m = &mirror[rr as usize * nkv..(rr as usize + 1) * nkv];
                    let n = m.iter().take_while(|&&b| b >= 0).count();
                    (
                        r.phase,
                        r.query_length,
                        r.kv_offset,
                        m[..n].to_vec(),
                        r.mamba_slot,
                    )
                })
                .collect();
            let rebuilt: Vec<RequestRow<'_>> = rows
                .iter()
                .map(|(phase, q, kv, blocks, slot)| RequestRow {
                    phase: *phase,
                    query_length: *q,
                    kv_offset: *kv,
                    blocks,
                    mamba_slot: *slot,
                    ..RequestRow::DECODE
                })
                .collect();
            let shared = rows
                .iter()
                .filter(|r| {
                    r.3.iter()
                        .any(|b| rows.iter().filter(|o| o.3.contains(b)).count() > 1)
                })
                .count();
            t.shared_rows += shared as u64;
            if !cached_mode {
                assert!(input.intermediate.is_none());
            }
            let want = reference
                .fill(&StepInput {
                    rows: &rebuilt,
                    token_ids: None,
                    intermediate: input.intermediate,
                    residency: None,
                })
                .copied();
            let got = backend.step(input);
            match (want, got) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(
                        reference.view().first_difference(&backend.view()),
                        None,
                        "CPU backend and reference fill differ"
                    );
                }
                (Err(a), Err(b)) if input.rows.iter().all(|r| r.phase == Phase::Paused) => {
                    // A step without active rows is refused by both.
                    assert_eq!(a.to_string(), b.to_string());
                }
                (a, b) => panic!("fill outcomes differ: {a:?} / {b:?}"),
            }
            for (r, &rr) in input.rows.iter().zip(res.resident_rows) {
                if r.phase != Phase::Paused {
                    writes.push((by_row[&rr], r.kv_offset, r.query_length));
                }
            }
        });
        // Every live request's blocks hold its own tokens below its kv_offset (before
        // this step's writes), then the step writes its tokens.
        for h in state.live() {
            let s = shadow.get_mut(&h.id()).unwrap();
            s.blocks = state.blocks(h).unwrap().to_vec();
            let kv = state.info(h).unwrap().kv_offset;
            for p in 0..kv {
                let cell = (s.blocks[(p / B) as usize], p % B);
                assert_eq!(
                    kv_cells.get(&cell),
                    Some(&token(h.id(), &s.prompt, p)),
                    "request {} position {p} (block {}) holds another token",
                    h.id(),
                    cell.0
                );
            }
        }
        for &(id, kv, q) in &writes {
            let s = &shadow[&id];
            for p in kv..kv + q {
                kv_cells.insert((s.blocks[(p / B) as usize], p % B), token(id, &s.prompt, p));
            }
        }
        t.steps += 1;
        let done: Vec<_> = state.commit_step(|_| 0).unwrap().to_vec();
        for st in state.mamba_stores() {
            let s = &shadow[&st.handle.id()];
            let pos = s.blocks.iter().position(|&b| b == st.block).unwrap();
            let end = (pos + 1) * B as usize;
            // The state after a block covers a computed prefix of the prompt.
            assert!(end <= s.prompt.len());
            slot_state.insert(st.slot, s.prompt[..end].to_vec());
            t.stores += 1;
        }
        for f in done {
            shadow.remove(&f.handle.id());
        }
        check_pool(&state);
        if rng.chance(0.02) {
            state.reset();
            mirror.fill(-1);
            backend.reset_residency();
            shadow.clear();
            check_pool(&state);
        }
    }
    t.evicted = state.prefix_stats().unwrap().evicted_blocks;
    t
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(48),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mha_prefix_caching_keeps_references_contents_and_metadata_exact(
        seed in any::<u64>(), lru in any::<bool>()
    ) {
        let policy = if lru { EvictionPolicy::Lru } else { EvictionPolicy::RefZero };
        drive(ModelKind::Mha, policy, None, seed);
    }

    #[test]
    fn hybrid_prefix_caching_restores_only_cached_states(
        seed in any::<u64>(), lru in any::<bool>(), slots in 1usize..8
    ) {
        let policy = if lru { EvictionPolicy::Lru } else { EvictionPolicy::RefZero };
        drive(ModelKind::Hybrid, policy, Some(slots), seed);
    }

    #[test]
    fn hybrid_memory_only_prefix_caching_never_skips_a_first_chunk(
        seed in any::<u64>(), lru in any::<bool>()
    ) {
        let policy = if lru { EvictionPolicy::Lru } else { EvictionPolicy::RefZero };
        drive(ModelKind::Hybrid, policy, None, seed);
    }
}

/// The random workloads do exercise sharing: hits, skipped tokens, shared blocks in
/// several rows of a step, Mamba stores and restores (a test whose workload never hits
/// would pass vacuously).
#[test]
fn the_random_workloads_hit_share_and_restore() {
    let mut total = Tally::default();
    for seed in 0..24 {
        for (model, slots) in [(ModelKind::Mha, None), (ModelKind::Hybrid, Some(6))] {
            for policy in [EvictionPolicy::RefZero, EvictionPolicy::Lru] {
                let t = drive(model, policy, slots, seed);
                total.hits += t.hits;
                total.skipped += t.skipped;
                total.restores += t.restores;
                total.stores += t.stores;
                total.shared_rows += t.shared_rows;
                total.steps += t.steps;
                total.failed += t.failed;
                total.evicted += t.evicted;
            }
        }
    }
    eprintln!("{total:?}");
    assert!(total.hits > 100, "{total:?}");
    assert!(total.skipped > 1000, "{total:?}");
    assert!(total.shared_rows > 100, "{total:?}");
    assert!(total.stores > 50, "{total:?}");
    assert!(total.restores > 10, "{total:?}");
    assert!(total.failed > 10, "{total:?}");
    assert!(total.evicted > 10, "{total:?}");
}
