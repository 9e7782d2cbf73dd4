//! Property tests of the prefix cache under random operation sequences (register,
//! match-and-retain, acquire, release, evict, allocate, Mamba slot allocation and
//! invalidation, resets), valid and not, against a shadow record of the references this
//! test holds:
//!
//! * reference counts equal the references held (so never negative), and a block with an
//!   owner is never handed out again, evicted, deregistered or freed;
//! * `free + cached + in use = pool` (without the dummy), the free stack without repeats;
//! * whenever `is_memory_available(n)` says yes, `allocate(n)` succeeds;
//! * no Mamba slot is held by two blocks; free and held slots make up the cache;
//! * every call that fails changes nothing (KV allocator and Mamba cache).
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` for a long run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeSet;

use attention_layout::prefix::{
    BlockHash, DeregistrationObserver, EvictionPolicy, MambaStateCache, PrefixKvAllocator,
};
use proptest::prelude::*;

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

#[derive(Debug, Clone)]
enum Op {
    Allocate(usize),
    /// Register held blocks (picked by the indices) as a chain under hash `base`.
    RegisterChain(Vec<usize>, i64),
    /// Look a hash up and retain what it finds (a prefix hit).
    MatchRetain(i64),
    /// Pin a hash's block and allocate more, all or nothing.
    Acquire(i64, usize),
    /// Release held references (picked by the indices).
    ReleaseHeld(Vec<usize>),
    Evict(usize),
    /// Arbitrary calls with arbitrary ids: must either succeed legitimately or change nothing.
    RawRelease(Vec<i32>),
    RawRetain(Vec<i32>),
    RawRegister(Vec<i32>, Vec<i64>, Option<Vec<i64>>),
    AllocateSlots(Vec<i32>),
    RegisterMamba(Vec<usize>),
    Invalidate(i32),
    Tick,
    Reset,
    MambaReset,
}

fn op() -> impl Strategy<Value = Op> {
    let idx = || proptest::collection::vec(0usize..16, 0..5);
    let ids = || proptest::collection::vec(-1i32..12, 0..5);
    prop_oneof![
        3 => (0usize..5).prop_map(Op::Allocate),
        3 => (idx(), 1i64..6).prop_map(|(i, h)| Op::RegisterChain(i, h)),
        2 => (1i64..10).prop_map(Op::MatchRetain),
        2 => (1i64..10, 0usize..4).prop_map(|(h, n)| Op::Acquire(h, n)),
        3 => idx().prop_map(Op::ReleaseHeld),
        1 => (0usize..5).prop_map(Op::Evict),
        1 => ids().prop_map(Op::RawRelease),
        1 => ids().prop_map(Op::RawRetain),
        1 => (ids(), proptest::collection::vec(-1i64..10, 0..5),
              proptest::option::of(proptest::collection::vec(-1i64..10, 0..5)))
            .prop_map(|(b, h, p)| Op::RawRegister(b, h, p)),
        2 => ids().prop_map(Op::AllocateSlots),
        1 => idx().prop_map(Op::RegisterMamba),
        1 => (-1i32..12).prop_map(Op::Invalidate),
        2 => Just(Op::Tick),
        1 => Just(Op::Reset),
        1 => Just(Op::MambaReset),
    ]
}

/// Records the deregistered blocks, then forwards to the Mamba cache.
struct Guard<'a> {
    cache: &'a mut MambaStateCache,
    deregistered: Vec<i32>,
}

impl DeregistrationObserver for Guard<'_> {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        self.deregistered.extend_from_slice(blocks);
        self.cache.deregistered(blocks, hashes);
    }
}

/// `held` without one occurrence of each of `released`.
fn without(held: &[i32], released: &[i32]) -> Vec<i32> {
    let mut left = held.to_vec();
    for b in released {
        if let Some(i) = left.iter().position(|x| x == b) {
            left.remove(i);
        }
    }
    left
}

fn check(kv: &PrefixKvAllocator, m: &MambaStateCache, held: &[i32]) -> Result<(), TestCaseError> {
    let p = kv.pool_size();
    // References equal what is held.
    let mut want = vec![0u32; p];
    for &b in held {
        want[b as usize] += 1;
    }
    prop_assert_eq!(kv.ref_counts(), &want[..]);
    // free + cached + in use = pool without the dummy; the free stack is a set of free blocks.
    prop_assert_eq!(
        kv.available() + kv.cached_count() + kv.in_use_count(),
        p - 1
    );
    let free: BTreeSet<i32> = kv.free_blocks().iter().copied().collect();
    prop_assert_eq!(free.len(), kv.available());
    prop_assert!(!free.contains(&kv.dummy_block()));
    for &b in &free {
        prop_assert!(kv.is_free(b) && !held.contains(&b));
    }
    prop_assert!(kv.evictable_count() <= kv.cached_count());
    // A promise is kept.
    for n in 0..p {
        if kv.is_memory_available(n, 0) {
            prop_assert!(
                kv.clone().allocate(n, &mut ()).is_some(),
                "promised {} blocks",
                n
            );
        }
    }
    // No slot held by two blocks; the maps are inverse; free + held = all slots.
    let mut holders = BTreeSet::new();
    for (b, &s) in m.block_to_slot().iter().enumerate() {
        if s >= 0 {
            prop_assert!(holders.insert(s), "slot {} held twice", s);
            prop_assert_eq!(m.slot_to_block()[s as usize], b as i32);
        }
    }
    let free_slots: BTreeSet<i32> = m.free_slots().iter().copied().collect();
    prop_assert_eq!(free_slots.len(), m.free_count());
    prop_assert!(free_slots.is_disjoint(&holders));
    prop_assert_eq!(free_slots.len() + holders.len(), m.slots());
    Ok(())
}

fn run(
    policy: EvictionPolicy,
    pool: usize,
    slots: usize,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut kv = PrefixKvAllocator::new(pool, policy).unwrap();
    let mut m = MambaStateCache::new(slots, pool).unwrap();
    let mut held: Vec<i32> = Vec::new();
    for op in ops {
        let (kv0, m0) = (kv.clone(), m.clone());
        let snapshot = held.clone();
        let mut guard = Guard {
            cache: &mut m,
            deregistered: Vec::new(),
        };
        let mut released: Vec<i32> = Vec::new();
        let failed = match &op {
            Op::Allocate(n) => match kv.allocate(*n, &mut guard) {
                Some(ids) => {
                    for b in &ids {
                        prop_assert!(!snapshot.contains(b), "block {} handed out twice", b);
                    }
                    held.extend(ids);
                    false
                }
                None => true,
            },
            Op::RegisterChain(pick, base) => {
                let blocks: Vec<i32> = {
                    let mut seen = BTreeSet::new();
                    pick.iter()
                        .filter_map(|&i| snapshot.get(i % snapshot.len().max(1)).copied())
                        .filter(|b| seen.insert(*b))
                        .collect()
                };
                let hashes: Vec<i64> = (0..blocks.len() as i64).map(|i| base + i).collect();
                let parents: Vec<i64> = (0..blocks.len() as i64)
                    .map(|i| if i == 0 { 0 } else { base + i - 1 })
                    .collect();
                kv.register(&blocks, &hashes, Some(&parents)).is_err()
            }
            Op::MatchRetain(h) => match kv.lookup(*h) {
                Some(b) => {
                    kv.retain(&[b]).unwrap();
                    held.push(b);
                    false
                }
                None => false,
            },
            Op::Acquire(h, n) => {
                let matched: Vec<i32> = kv.lookup(*h).into_iter().collect();
                match kv.acquire(&matched, *n, &mut guard) {
                    Ok(ids) => {
                        for b in &ids {
                            prop_assert!(!snapshot.contains(b), "block {} handed out twice", b);
                        }
                        held.extend(matched);
                        held.extend(ids);
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::ReleaseHeld(pick) => {
                let mut idx: Vec<usize> = pick.iter().map(|&i| i % held.len().max(1)).collect();
                idx.sort_unstable();
                idx.dedup();
                let ids: Vec<i32> = idx.iter().filter_map(|&i| held.get(i).copied()).collect();
                kv.release(&ids, &mut guard).unwrap();
                released.clone_from(&ids);
                for &i in idx.iter().rev() {
                    if i < held.len() {
                        held.remove(i);
                    }
                }
                false
            }
            Op::Evict(n) => !matches!(kv.evict(*n, &mut guard), Ok(true)),
            Op::RawRelease(ids) => match kv.release(ids, &mut guard) {
                Ok(()) => {
                    released.clone_from(ids);
                    for b in ids {
                        let pos = held.iter().position(|x| x == b);
                        prop_assert!(pos.is_some(), "released {} that nobody held", b);
                        held.remove(pos.unwrap());
                    }
                    false
                }
                Err(_) => true,
            },
            Op::RawRetain(ids) => match kv.retain(ids) {
                Ok(()) => {
                    for &b in ids {
                        prop_assert!(!kv0.is_free(b), "retained free block {}", b);
                        held.push(b);
                    }
                    false
                }
                Err(_) => true,
            },
            Op::RawRegister(b, h, p) => kv.register(b, h, p.as_deref()).is_err(),
            Op::AllocateSlots(ids) => match guard.cache.allocate_slots(&kv, ids) {
                Ok(got) => {
                    // Every block of the batch holds the slot returned for it, and
                    // distinct blocks got distinct slots.
                    prop_assert_eq!(got.slots.len(), ids.len());
                    for (&b, &s) in ids.iter().zip(&got.slots) {
                        prop_assert!(
                            s >= 0 && guard.cache.slot(b) == Some(s),
                            "block {} got {}",
                            b,
                            s
                        );
                    }
                    for &v in &got.evicted {
                        prop_assert!(!ids.contains(&v), "the batch evicted its own block {}", v);
                        prop_assert_eq!(kv.ref_counts()[v as usize], 0);
                    }
                    false
                }
                Err(_) => true,
            },
            Op::RegisterMamba(pick) => {
                let blocks: Vec<i32> = pick
                    .iter()
                    .filter_map(|&i| snapshot.get(i % snapshot.len().max(1)).copied())
                    .collect();
                let hashes: Vec<i64> = blocks.iter().map(|&b| kv.hashes()[b as usize]).collect();
                guard.cache.register_hashes(&kv, &blocks, &hashes).is_err()
            }
            Op::Invalidate(b) => {
                guard.cache.invalidate(*b);
                false
            }
            Op::Tick => {
                kv.tick();
                false
            }
            Op::Reset => {
                kv.reset();
                held.clear();
                false
            }
            Op::MambaReset => {
                guard.cache.reset();
                false
            }
        };
        // No block that still had an owner was deregistered (evicted or freed).
        let owners = without(&snapshot, &released);
        for b in &guard.deregistered {
            prop_assert!(
                !owners.contains(b),
                "block {} with an owner was deregistered ({:?})",
                b,
                op
            );
        }
        if failed {
            prop_assert_eq!(&kv, &kv0, "a failed {:?} changed the KV allocator", op);
            prop_assert_eq!(&m, &m0, "a failed {:?} changed the Mamba cache", op);
        }
        check(&kv, &m, &held)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lru_prefix_cache_keeps_its_invariants(pool in 2usize..10, slots in 1usize..4,
                                              ops in proptest::collection::vec(op(), 0..80)) {
        run(EvictionPolicy::Lru, pool, slots, ops)?;
    }

    #[test]
    fn ref_zero_prefix_cache_keeps_its_invariants(pool in 2usize..10, slots in 1usize..4,
                                                   ops in proptest::collection::vec(op(), 0..80)) {
        run(EvictionPolicy::RefZero, pool, slots, ops)?;
    }
}
