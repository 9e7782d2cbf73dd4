//! Operation sequences on the prefix cache: `PrefixKvAllocator` (either policy) wired to a
//! `MambaStateCache`, valid and not.
//!
//! A shadow multiset of the references this harness holds checks after every operation:
//! reference counts equal it (never negative); no block with an owner is handed out again,
//! evicted or deregistered; `free + cached + in use = pool`; the free stack has no repeats
//! and only free blocks; a yes from `is_memory_available` is kept by `allocate`; no Mamba
//! slot is held by two blocks and the slot maps are inverse; a successful
//! `allocate_slots` gives every block of its batch the slot it returns and evicts none of
//! them; a failed call leaves both exactly as they were.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use attention_layout::prefix::{
    BlockHash, DeregistrationObserver, EvictionPolicy, MambaStateCache, PrefixKvAllocator,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate(u8),
    RegisterChain {
        pick: Vec<u8>,
        base: u8,
        parentless: bool,
    },
    MatchRetain(u8),
    Acquire {
        hash: u8,
        n: u8,
    },
    ReleaseHeld(Vec<u8>),
    Evict(u8),
    RawRelease(Vec<i8>),
    RawRetain(Vec<i8>),
    RawRegister(Vec<i8>, Vec<i8>, Option<Vec<i8>>),
    AllocateSlots(Vec<i8>),
    RegisterMamba(Vec<u8>),
    Invalidate(i8),
    IsMemoryAvailable(u8, u8),
    Tick,
    SetClock(u8),
    Reset,
    MambaReset,
}

#[derive(Arbitrary, Debug)]
struct Case {
    lru: bool,
    pool: u8,
    slots: u8,
    ops: Vec<Op>,
}

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

fn pick(held: &[i32], k: u8) -> Option<i32> {
    (!held.is_empty()).then(|| held[usize::from(k) % held.len()])
}

fn remove_one(held: &mut Vec<i32>, b: i32) -> bool {
    match held.iter().position(|&x| x == b) {
        Some(i) => {
            held.remove(i);
            true
        }
        None => false,
    }
}

fn check(kv: &PrefixKvAllocator, m: &MambaStateCache, held: &[i32]) {
    let p = kv.pool_size();
    let mut want = vec![0u32; p];
    for &b in held {
        want[b as usize] += 1;
    }
    assert_eq!(kv.ref_counts(), &want[..], "reference counts");
    assert_eq!(
        kv.available() + kv.cached_count() + kv.in_use_count(),
        p - 1,
        "free + cached + in use"
    );
    let free: BTreeSet<i32> = kv.free_blocks().iter().copied().collect();
    assert_eq!(free.len(), kv.available(), "free stack repeats");
    for &b in &free {
        assert!(kv.is_free(b) && !held.contains(&b), "free block {b}");
    }
    assert!(kv.evictable_count() <= kv.cached_count());
    for n in kv.available() + 1..=kv.available() + 3 {
        if kv.is_memory_available(n, 0) {
            assert!(kv.clone().allocate(n, &mut ()).is_some(), "promised {n}");
        }
    }
    let mut holders = BTreeSet::new();
    for (b, &s) in m.block_to_slot().iter().enumerate() {
        if s >= 0 {
            assert!(holders.insert(s), "slot {s} held twice");
            assert_eq!(m.slot_to_block()[s as usize], b as i32);
        }
    }
    let free_slots: BTreeSet<i32> = m.free_slots().iter().copied().collect();
    assert_eq!(free_slots.len(), m.free_count());
    assert!(free_slots.is_disjoint(&holders));
    assert_eq!(free_slots.len() + holders.len(), m.slots());
}

fuzz_target!(|case: Case| {
    let pool = 2 + usize::from(case.pool % 32);
    let slots = 1 + usize::from(case.slots % 8);
    let policy = if case.lru {
        EvictionPolicy::Lru
    } else {
        EvictionPolicy::RefZero
    };
    let mut kv = PrefixKvAllocator::new(pool, policy).unwrap_or_else(|e| panic!("{e}"));
    let mut m = MambaStateCache::new(slots, pool).unwrap_or_else(|e| panic!("{e}"));
    let mut held: Vec<i32> = Vec::new();
    for op in case.ops.iter().take(256) {
        let (kv0, m0, before) = (kv.clone(), m.clone(), held.clone());
        let mut g = Guard {
            cache: &mut m,
            deregistered: Vec::new(),
        };
        let mut released: Vec<i32> = Vec::new();
        let fresh = |ids: &[i32]| {
            for b in ids {
                assert!(!before.contains(b), "block {b} handed out twice");
                assert!((0..kv0.dummy_block()).contains(b), "handed out {b}");
            }
        };
        let failed = match op {
            Op::Allocate(n) => match kv.allocate(usize::from(*n % 8), &mut g) {
                Some(ids) => {
                    fresh(&ids);
                    held.extend(ids);
                    false
                }
                None => true,
            },
            Op::RegisterChain {
                pick: p,
                base,
                parentless,
            } => {
                let mut seen = BTreeSet::new();
                let blocks: Vec<i32> = p
                    .iter()
                    .filter_map(|&k| pick(&before, k))
                    .filter(|b| seen.insert(*b))
                    .collect();
                let base = 1 + i64::from(*base % 16);
                let hashes: Vec<i64> = (0..blocks.len() as i64).map(|i| base + i).collect();
                let parents: Vec<i64> = (0..blocks.len() as i64)
                    .map(|i| if i == 0 { 0 } else { base + i - 1 })
                    .collect();
                let parents = (!parentless).then_some(&parents[..]);
                kv.register(&blocks, &hashes, parents).is_err()
            }
            Op::MatchRetain(h) => {
                if let Some(b) = kv.lookup(1 + i64::from(*h % 24)) {
                    kv.retain(&[b]).unwrap_or_else(|e| panic!("{e}"));
                    held.push(b);
                }
                false
            }
            Op::Acquire { hash, n } => {
                let matched: Vec<i32> = kv.lookup(1 + i64::from(*hash % 24)).into_iter().collect();
                match kv.acquire(&matched, usize::from(*n % 6), &mut g) {
                    Ok(ids) => {
                        fresh(&ids);
                        held.extend(matched);
                        held.extend(ids);
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::ReleaseHeld(p) => {
                let mut idx: Vec<usize> = if before.is_empty() {
                    Vec::new()
                } else {
                    p.iter().map(|&k| usize::from(k) % before.len()).collect()
                };
                idx.sort_unstable();
                idx.dedup();
                released = idx.iter().map(|&i| before[i]).collect();
                kv.release(&released, &mut g)
                    .unwrap_or_else(|e| panic!("{e}"));
                for &b in &released {
                    remove_one(&mut held, b);
                }
                false
            }
            Op::Evict(n) => !matches!(kv.evict(usize::from(*n % 8), &mut g), Ok(true)),
            Op::RawRelease(ids) => {
                let ids: Vec<i32> = ids.iter().map(|&x| i32::from(x)).collect();
                match kv.release(&ids, &mut g) {
                    Ok(()) => {
                        for &b in &ids {
                            assert!(remove_one(&mut held, b), "released {b} nobody held");
                        }
                        released = ids;
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::RawRetain(ids) => {
                let ids: Vec<i32> = ids.iter().map(|&x| i32::from(x)).collect();
                match kv.retain(&ids) {
                    Ok(()) => {
                        for &b in &ids {
                            assert!(!kv0.is_free(b), "retained free block {b}");
                        }
                        held.extend(ids);
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::RawRegister(b, h, p) => {
                let b: Vec<i32> = b.iter().map(|&x| i32::from(x)).collect();
                let h: Vec<i64> = h.iter().map(|&x| i64::from(x)).collect();
                let p: Option<Vec<i64>> = p
                    .as_ref()
                    .map(|p| p.iter().map(|&x| i64::from(x)).collect());
                kv.register(&b, &h, p.as_deref()).is_err()
            }
            Op::AllocateSlots(ids) => {
                let ids: Vec<i32> = ids.iter().map(|&x| i32::from(x)).collect();
                match g.cache.allocate_slots(&kv, &ids) {
                    Ok(got) => {
                        assert_eq!(got.slots.len(), ids.len());
                        for (&b, &s) in ids.iter().zip(&got.slots) {
                            assert!(s >= 0 && g.cache.slot(b) == Some(s), "block {b} got {s}");
                        }
                        for v in &got.evicted {
                            assert!(!ids.contains(v), "evicted its own block {v}");
                            assert_eq!(kv.ref_counts()[*v as usize], 0, "evicted an owned block");
                        }
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::RegisterMamba(p) => {
                let blocks: Vec<i32> = p.iter().filter_map(|&k| pick(&before, k)).collect();
                let hashes: Vec<i64> = blocks.iter().map(|&b| kv.hashes()[b as usize]).collect();
                match g.cache.register_hashes(&kv, &blocks, &hashes) {
                    Ok(()) => {
                        for (&b, &h) in blocks.iter().zip(&hashes) {
                            if h > 0 {
                                assert!(g.cache.has_state(b));
                            }
                        }
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::Invalidate(b) => {
                g.cache.invalidate(i32::from(*b));
                assert!(!g.cache.has_state(i32::from(*b)));
                false
            }
            Op::IsMemoryAvailable(n, pm) => {
                let _ = kv.is_memory_available(usize::from(*n), usize::from(*pm));
                false
            }
            Op::Tick => {
                kv.tick();
                false
            }
            Op::SetClock(c) => {
                kv.set_clock(u64::from(*c));
                false
            }
            Op::Reset => {
                kv.reset();
                held.clear();
                false
            }
            Op::MambaReset => {
                g.cache.reset();
                false
            }
        };
        let deregistered = std::mem::take(&mut g.deregistered);
        let mut owners = before.clone();
        for &b in &released {
            remove_one(&mut owners, b);
        }
        if !matches!(op, Op::Reset) {
            for b in &deregistered {
                assert!(
                    !owners.contains(b),
                    "block {b} with an owner was deregistered"
                );
            }
        }
        if failed {
            assert_eq!(kv, kv0, "a failed {op:?} changed the KV allocator");
            assert_eq!(m, m0, "a failed {op:?} changed the Mamba cache");
        }
        check(&kv, &m, &held);
    }
});
