//! Operation sequences on `BatchState::with_prefix_caching` (MHA or hybrid, with or
//! without a durable Mamba cache, `lru` or `ref_zero`): admissions with prompts built from
//! a few shared prefixes, prefill chunks and decodes scheduled, steps built (sometimes
//! twice, as after a failed backend step) and committed, releases, resets.
//!
//! After every operation: each block's reference count equals the number of live block
//! lists holding it; no block a live request holds is free or cached; `free + cached + in
//! use = pool`; no Mamba slot is held by two blocks. A failed admission or schedule
//! changes nothing. Every position below a live request's `kv_offset` holds its own token
//! in a model of the KV cache the harness writes each step; every restore names a durable
//! slot holding exactly the skipped prefix. Every step input passes the host fill.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use attention_layout::batch::{BatchError, BatchState, PrefixOptions, RequestPhase};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{EvictionPolicy, Geometry, HostMetadata, Phase, RuntimeDims};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Admit { family: u8, suffix: Vec<u8>, out: u8 },
    Release(u8),
    Prefill { pick: u8, q: u8 },
    Decode(u8),
    Step { twice: bool },
    Reset,
}

#[derive(Arbitrary, Debug)]
struct Case {
    hybrid: bool,
    slots: u8,
    lru: bool,
    pool: u8,
    block4: bool,
    ops: Vec<Op>,
}

fn token(id: u64, prompt: &[i64], p: u32) -> i64 {
    prompt
        .get(p as usize)
        .copied()
        .unwrap_or_else(|| -((id as i64) * 100_000 + i64::from(p)))
}

fn check_pool(state: &BatchState) {
    let kv = state.prefix_kv().unwrap();
    let pool = kv.pool_size();
    let mut owners = vec![0u32; pool];
    for h in state.live() {
        for &b in state.blocks(h).unwrap() {
            owners[b as usize] += 1;
            assert!(!kv.is_free(b) && !kv.is_cached(b), "held block {b} free/cached");
        }
    }
    assert_eq!(kv.ref_counts(), owners.as_slice(), "reference counts");
    assert_eq!(kv.available() + kv.cached_count() + kv.in_use_count(), pool - 1);
    if let Some(m) = state.mamba_cache() {
        let mut seen = vec![false; m.slots()];
        for &s in m.block_to_slot() {
            if s >= 0 {
                assert!(!seen[s as usize], "slot {s} held twice");
                seen[s as usize] = true;
            }
        }
    }
}

type Snap = (Vec<u32>, Vec<i32>, Vec<i64>, Vec<i32>, usize, u64);

fn snapshot(state: &BatchState) -> Snap {
    let kv = state.prefix_kv().unwrap();
    (
        kv.ref_counts().to_vec(),
        kv.free_blocks().to_vec(),
        kv.hashes().to_vec(),
        state.resident_table().to_vec(),
        state.live_count(),
        state.scheduled_tokens(),
    )
}

fuzz_target!(|case: Case| {
    let model = if case.hybrid {
        ModelKind::Hybrid
    } else {
        ModelKind::Mha
    };
    let block_size = if case.block4 { 4 } else { 8 };
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: 4,
        max_tokens: 64,
        max_seq_len: 64,
        block_size,
        speculative_tokens: 0,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(8 + u32::from(case.pool % 24)),
        mamba: case.hybrid.then_some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
    };
    let d = RuntimeDims::new(Geometry::new(&spec).unwrap());
    let slots = (case.hybrid && case.slots % 8 != 0).then_some(usize::from(case.slots % 8));
    let policy = if case.lru {
        EvictionPolicy::Lru
    } else {
        EvictionPolicy::RefZero
    };
    let mut state = BatchState::with_prefix_caching(
        &d,
        PrefixOptions {
            policy,
            mamba_cache_slots: slots,
        },
    )
    .unwrap();
    let b = block_size;
    let mut meta = HostMetadata::new(d.clone());
    let mut cells: HashMap<(i32, u32), i64> = HashMap::new();
    let mut slot_state: HashMap<i32, Vec<i64>> = HashMap::new();
    let mut prompts: HashMap<u64, Vec<i64>> = HashMap::new();
    let families: [Vec<i64>; 3] = [
        (0..8).collect(),
        (100..116).collect(),
        (200..224).collect(),
    ];
    for op in case.ops.iter().take(64) {
        let live: Vec<_> = state.live().collect();
        let pick = |k: u8| (!live.is_empty()).then(|| live[usize::from(k) % live.len()]);
        let before = snapshot(&state);
        match op {
            Op::Admit {
                family,
                suffix,
                out,
            } => {
                let mut p = families[usize::from(*family % 3)].clone();
                if family & 4 != 0 {
                    p.truncate(usize::from(*family >> 3) % (p.len() + 1));
                }
                p.extend(suffix.iter().take(40).map(|&x| i64::from(x % 4)));
                if p.is_empty() {
                    p.push(1);
                }
                match state.admit_prompt(&p, 1 + u32::from(*out % 8)) {
                    Ok(h) => {
                        prompts.insert(h.id(), p);
                    }
                    Err(
                        BatchError::NoFreeRow { .. }
                        | BatchError::NoMambaSlot { .. }
                        | BatchError::TooLong { .. }
                        | BatchError::ExceedsBlockTable { .. }
                        | BatchError::ExceedsPool { .. },
                    ) => assert_eq!(snapshot(&state), before),
                    Err(e) => panic!("admit: {e}"),
                }
            }
            Op::Release(k) => {
                if let Some(h) = pick(*k) {
                    state.release(h).unwrap();
                    prompts.remove(&h.id());
                }
            }
            Op::Prefill { pick: k, q } => {
                let Some(h) = pick(*k) else { continue };
                let i = state.info(h).unwrap();
                let rem = i.prompt_len - i.prompt_done;
                let r = state.schedule_prefill(h, u32::from(*q) % (rem + 1));
                match r {
                    Ok(()) => {
                        let hit = state.prefix_hit(h).unwrap().unwrap();
                        let after = state.info(h).unwrap();
                        assert_eq!(after.kv_offset, i.kv_offset + hit.skip_tokens);
                        if let Some(slot) = hit.restore_from {
                            assert_eq!(
                                slot_state.get(&slot).map(Vec::as_slice),
                                Some(&prompts[&h.id()][..hit.skip_tokens as usize])
                            );
                        } else if case.hybrid {
                            assert!(i.prompt_done > 0 || hit.skip_tokens == 0);
                        }
                        if case.hybrid && i.prompt_done > 0 {
                            assert_eq!(hit.skip_tokens, 0);
                        }
                    }
                    Err(
                        BatchError::OutOfBlocks { .. }
                        | BatchError::TokenBudget { .. }
                        | BatchError::Chunk { .. }
                        | BatchError::WrongPhase { .. }
                        | BatchError::AlreadyScheduled { .. },
                    ) => assert_eq!(snapshot(&state), before),
                    Err(e) => panic!("prefill: {e}"),
                }
            }
            Op::Decode(k) => {
                let Some(h) = pick(*k) else { continue };
                match state.schedule_decode(h) {
                    Ok(()) => {}
                    Err(
                        BatchError::OutOfBlocks { .. }
                        | BatchError::TokenBudget { .. }
                        | BatchError::WrongPhase { .. }
                        | BatchError::AlreadyScheduled { .. },
                    ) => assert_eq!(snapshot(&state), before),
                    Err(e) => panic!("decode: {e}"),
                }
            }
            Op::Step { twice } => {
                if *twice {
                    state.with_step(|_| ());
                }
                let by_row: HashMap<u32, u64> =
                    state.live().map(|h| (h.row(), h.id())).collect();
                let mut writes = Vec::new();
                state.with_step(|input| {
                    if input.rows.iter().any(|r| r.phase != Phase::Paused) {
                        meta.fill(input).unwrap_or_else(|e| panic!("fill: {e}"));
                    }
                    let res = input.residency.unwrap();
                    for (r, &rr) in input.rows.iter().zip(res.resident_rows) {
                        if r.phase != Phase::Paused {
                            writes.push((by_row[&rr], r.kv_offset, r.query_length));
                        }
                    }
                });
                let mut blocks: HashMap<u64, Vec<i32>> = HashMap::new();
                for h in state.live() {
                    let bl = state.blocks(h).unwrap().to_vec();
                    let kv = state.info(h).unwrap().kv_offset;
                    let p = &prompts[&h.id()];
                    for pos in 0..kv {
                        let cell = (bl[(pos / b) as usize], pos % b);
                        assert_eq!(cells.get(&cell), Some(&token(h.id(), p, pos)));
                    }
                    blocks.insert(h.id(), bl);
                }
                for &(id, kv, q) in &writes {
                    for pos in kv..kv + q {
                        let cell = (blocks[&id][(pos / b) as usize], pos % b);
                        cells.insert(cell, token(id, &prompts[&id], pos));
                    }
                }
                state.commit_step(|_| 0).unwrap();
                for st in state.mamba_stores() {
                    let bl = &blocks[&st.handle.id()];
                    let pos = bl.iter().position(|&x| x == st.block).unwrap();
                    let p = &prompts[&st.handle.id()];
                    let end = (pos + 1) * b as usize;
                    assert!(end <= p.len());
                    slot_state.insert(st.slot, p[..end].to_vec());
                }
                let live: Vec<u64> = state.live().map(|h| h.id()).collect();
                prompts.retain(|id, _| live.contains(id));
            }
            Op::Reset => {
                state.reset();
                prompts.clear();
            }
        }
        // Never a request scheduled in a phase it is not in.
        for h in state.live() {
            let i = state.info(h).unwrap();
            assert!(i.phase == RequestPhase::Decode || i.prompt_done < i.prompt_len);
        }
        check_pool(&state);
    }
});
