//! The prefix cache's behaviour beyond the golden traces: every deliberate difference from
//! Megatron (docs/DESIGN.md, "Prefix caching", D1–D8) and the "a failed call changes
//! nothing" rule, one test each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use attention_layout::prefix::{
    EvictionPolicy, MambaMode, MambaStateCache, MatchQuery, PrefixError, PrefixKvAllocator,
    block_hashes, compute_prefix_match,
};

type Calls = Vec<(Vec<i32>, Vec<i64>)>;

fn lru(pool: usize) -> PrefixKvAllocator {
    PrefixKvAllocator::new(pool, EvictionPolicy::Lru).unwrap()
}

/// Allocates one block and registers it under `hash` with parent `parent`.
fn block(kv: &mut PrefixKvAllocator, hash: i64, parent: i64) -> i32 {
    let b = kv.allocate(1, &mut ()).unwrap()[0];
    kv.register(&[b], &[hash], Some(&[parent])).unwrap();
    b
}

#[test]
fn the_docstring_forest_evicts_f_c_then_b() {
    // A(ts1) → B(ts2) → {C(ts5), F(ts3)}, A → D(ts3) → E(ts5), all cached; ids in
    // alphabetical order, so C's id is below E's (the tie at ts5 goes to C).
    let mut kv = lru(8);
    let ids = kv.allocate(6, &mut ()).unwrap();
    let [a, b, c, d, e, f] = ids[..] else {
        panic!()
    };
    // Hashes 1..=6 for A..F; parents by hash.
    kv.register(
        &[a, b, c, d, e, f],
        &[1, 2, 3, 4, 5, 6],
        Some(&[0, 1, 2, 1, 4, 2]),
    )
    .unwrap();
    for (x, t) in [(a, 1), (b, 2), (c, 5), (d, 3), (e, 5), (f, 3)] {
        kv.set_clock(t);
        kv.retain(&[x]).unwrap();
    }
    kv.release(&[ids.clone(), ids.clone()].concat(), &mut ())
        .unwrap();
    assert_eq!(kv.cached_count(), 6);
    let mut calls = Calls::new();
    assert_eq!(kv.evict(3, &mut calls), Ok(true));
    assert_eq!(calls, vec![(vec![f, c, b], vec![2, 3, 6])]);
    assert_eq!(kv.cached_count(), 3);
}

#[test]
fn ref_zero_frees_and_deregisters_at_the_last_release() {
    let mut kv = PrefixKvAllocator::new(6, EvictionPolicy::RefZero).unwrap();
    let a = block(&mut kv, 7, 0);
    kv.retain(&[a]).unwrap();
    let mut calls = Calls::new();
    kv.release(&[a], &mut calls).unwrap();
    assert!(calls.is_empty() && kv.lookup(7) == Some(a));
    kv.release(&[a], &mut calls).unwrap();
    assert_eq!(calls, vec![(vec![a], vec![7])]);
    assert_eq!(kv.lookup(7), None);
    assert!(kv.is_free(a));
}

#[test]
fn every_failed_kv_call_changes_nothing() {
    let mut kv = lru(6);
    let a = block(&mut kv, 10, 0);
    let b = block(&mut kv, 11, 10);
    kv.release(&[b], &mut ()).unwrap(); // b cached, a in use
    let before = kv.clone();
    let free = kv.free_blocks()[0];
    let dummy = kv.dummy_block();
    let cases: Vec<(Result<(), PrefixError>, &str)> = vec![
        (kv.clone().release(&[a, a], &mut ()), "over_release"),
        (kv.clone().release(&[b], &mut ()), "release_cached"),
        (kv.clone().release(&[a, 99], &mut ()), "out_of_range"),
        (kv.clone().release(&[dummy], &mut ()), "dummy"),
        (kv.clone().retain(&[a, free]), "retain_free"),
        (kv.clone().register(&[a], &[12], None), "conflict"),
        (kv.clone().register(&[free], &[12], None), "register_free"),
        (kv.clone().register(&[a, a], &[10, 10], None), "duplicate"),
        (
            kv.clone().register(&[a], &[10], Some(&[])),
            "parents_length",
        ),
        (kv.clone().register(&[a], &[10, 11], None), "hashes_length"),
        (kv.clone().register(&[a], &[0], None), "zero_hash"),
        (kv.clone().register(&[a], &[10], Some(&[10])), "own_parent"),
    ];
    for (result, name) in cases {
        assert!(result.is_err(), "{name} was accepted");
    }
    // The same calls on the allocator itself leave it as it was.
    assert!(kv.release(&[a, a], &mut ()).is_err());
    assert!(kv.retain(&[a, free]).is_err());
    assert!(kv.register(&[b, a], &[11, 12], None).is_err());
    assert_eq!(kv, before);
}

/// D2: a cached block whose descendant is in use cannot be evicted. Megatron counts it
/// as allocatable, answers yes, then asserts in the eviction.
#[test]
fn a_cached_parent_with_an_in_use_child_is_never_promised() {
    let mut kv = lru(4); // blocks 0..2 usable
    let a = block(&mut kv, 1, 0);
    let b = block(&mut kv, 2, 1);
    let _c = kv.allocate(1, &mut ()).unwrap();
    kv.release(&[a], &mut ()).unwrap(); // a cached, its child b in use
    assert_eq!(
        (kv.available(), kv.cached_count(), kv.evictable_count()),
        (0, 1, 0)
    );
    assert_eq!(kv.allocatable(), 1, "Megatron's count");
    assert!(!kv.is_memory_available(1, 0));
    let before = kv.clone();
    assert_eq!(
        kv.evict(1, &mut ()),
        Err(PrefixError::NotAForest {
            requested: 1,
            evictable: 0
        })
    );
    assert_eq!(kv.allocate(1, &mut ()), None);
    assert_eq!(kv, before);
    // Once the child is released too, both can go, leaf first.
    kv.release(&[b], &mut ()).unwrap();
    assert!(kv.is_memory_available(2, 0));
    let mut calls = Calls::new();
    assert_eq!(kv.allocate(2, &mut calls), Some(vec![b, a]));
    assert_eq!(calls, vec![(vec![b, a], vec![1, 2])]);
}

/// D3: two blocks registered under one hash; deregistering the one the index no longer
/// names must not hide the other.
#[test]
fn deregistering_a_duplicate_keeps_the_live_blocks_index_entry() {
    let mut kv = PrefixKvAllocator::new(6, EvictionPolicy::RefZero).unwrap();
    let first = block(&mut kv, 5, 0);
    let second = block(&mut kv, 5, 0);
    assert_eq!(kv.lookup(5), Some(second));
    let mut calls = Calls::new();
    kv.release(&[first], &mut calls).unwrap();
    assert_eq!(calls, vec![(vec![first], vec![5])]);
    assert_eq!(kv.lookup(5), Some(second), "Megatron deletes the entry");
    kv.release(&[second], &mut ()).unwrap();
    assert_eq!(kv.lookup(5), None);
}

/// D4: with a broken chain (an indexed hash whose ancestor is not indexed) Megatron's
/// lookup raises `KeyError`; the forward scan stops at the first miss.
#[test]
fn a_broken_chain_matches_up_to_its_first_gap() {
    let hashes = block_hashes(&(0..16).collect::<Vec<i64>>(), 4).unwrap();
    let index = |h: i64| match h {
        h if h == hashes[0] => Some(40),
        h if h == hashes[2] => Some(42),
        _ => None,
    };
    let q = MatchQuery {
        hashes: &hashes,
        block_size: 4,
        finished: 0,
        chunk: 16,
        mamba: MambaMode::NotHybrid,
    };
    let m = compute_prefix_match(&q, index, |_, _| false).unwrap();
    assert_eq!(m.matched_blocks, vec![40]);
    assert_eq!(
        (m.skip_tokens, m.effective_chunk_length, m.blocks_from_pool),
        (4, 12, 3)
    );
}

/// D5b: a block of the batch that already holds a slot is never its own victim (Megatron
/// evicts it and returns its old slot for it and for another block).
#[test]
fn a_batch_never_evicts_its_own_blocks_slot() {
    let kv = lru(8);
    let mut m = MambaStateCache::new(2, 8).unwrap();
    m.allocate_slots(&kv, &[0]).unwrap();
    m.allocate_slots(&kv, &[6]).unwrap();
    let got = m.allocate_slots(&kv, &[0, 3]).unwrap();
    assert_eq!(got.evicted, vec![6]);
    assert_ne!(got.slots[0], got.slots[1]);
    assert_eq!(m.slot(0), Some(got.slots[0]));
    assert_eq!(m.slot(3), Some(got.slots[1]));
    // With nothing else to evict, the batch is refused and nothing changes.
    let before = m.clone();
    assert_eq!(
        m.allocate_slots(&kv, &[0, 3, 5]),
        Err(PrefixError::MambaSlotCapacity {
            required: 1,
            available: 0
        })
    );
    assert_eq!(m, before);
}

/// D5: LRU slot eviction takes the oldest KV timestamp first, the lower block id on ties.
#[test]
fn slot_eviction_is_ordered_by_timestamp_then_block_id() {
    let mut kv = lru(8);
    let mut m = MambaStateCache::new(3, 8).unwrap();
    let mut ids = Vec::new();
    for t in [5, 2, 2] {
        kv.set_clock(t);
        ids.push(kv.allocate(1, &mut ()).unwrap()[0]);
    }
    m.allocate_slots(&kv, &ids).unwrap();
    kv.release(&ids, &mut ()).unwrap(); // all unowned, unregistered
    let want: Vec<i32> = {
        let mut v = vec![(2, ids[1]), (2, ids[2])];
        v.sort();
        v.into_iter().map(|(_, b)| b).collect()
    };
    let slots_of: Vec<i32> = want.iter().map(|&b| m.slot(b).unwrap()).collect();
    let got = m.allocate_slots(&kv, &[0, 1]).unwrap();
    let mut evicted = want.clone();
    evicted.sort();
    assert_eq!(got.evicted, evicted);
    assert_eq!(
        got.slots, slots_of,
        "victims' slots go to the new blocks in eviction order"
    );
}

/// D1: after `invalidate`, Megatron keeps the hash indexed, matches on it and restores a
/// zero state. Here the block no longer holds state: no Mamba match, no restore.
#[test]
fn an_invalidated_blocks_state_is_neither_matched_nor_restored() {
    let mut kv = lru(8);
    let tokens: Vec<i64> = (100..108).collect();
    let hashes = block_hashes(&tokens, 4).unwrap();
    let blocks = kv.allocate(2, &mut ()).unwrap();
    kv.register(&blocks, &hashes, Some(&[0, hashes[0]]))
        .unwrap();
    let mut m = MambaStateCache::new(2, 8).unwrap();
    m.allocate_slots(&kv, &blocks[..1]).unwrap();
    m.register_hashes(&kv, &blocks[..1], &hashes[..1]).unwrap();
    let q = MatchQuery {
        hashes: &hashes,
        block_size: 4,
        finished: 0,
        chunk: 8,
        mamba: MambaMode::Cache,
    };
    let matched = |m: &MambaStateCache| {
        compute_prefix_match(&q, |h| kv.lookup(h), |h, b| m.holds_state(h, b)).unwrap()
    };
    assert_eq!(
        (matched(&m).skip_tokens, matched(&m).mamba_matched_blocks),
        (4, Some(1))
    );
    assert_eq!(m.restore_slot(blocks[0]), Ok(m.slot(blocks[0]).unwrap()));
    m.invalidate(blocks[0]);
    assert_eq!(
        m.index_entries(),
        vec![(hashes[0], blocks[0])],
        "the index is Megatron's"
    );
    assert_eq!(
        (matched(&m).skip_tokens, matched(&m).mamba_matched_blocks),
        (0, Some(0))
    );
    assert_eq!(
        m.restore_slot(blocks[0]),
        Err(PrefixError::NoMambaState { block: blocks[0] })
    );
}

#[test]
fn a_mamba_hash_is_indexed_only_for_a_block_holding_a_slot_and_that_kv_hash() {
    let mut kv = lru(8);
    let b = block(&mut kv, 9, 0);
    let mut m = MambaStateCache::new(2, 8).unwrap();
    let before = m.clone();
    assert!(matches!(
        m.register_hashes(&kv, &[b], &[9]),
        Err(PrefixError::NotCommitted { .. })
    ));
    m.allocate_slots(&kv, &[b]).unwrap();
    let with_slot = m.clone();
    assert!(matches!(
        m.register_hashes(&kv, &[b], &[8]),
        Err(PrefixError::NotCommitted { .. })
    ));
    assert_eq!(m, with_slot);
    m.register_hashes(&kv, &[b], &[9]).unwrap();
    assert!(m.holds_state(9, b));
    assert_ne!(m, before);
}

/// D7, kept as in Megatron: a deregistered block whose hash is not in the Mamba index
/// keeps its slot. It is harmless here: the slot is never restored from (no index entry)
/// and is reused, overwritten, by the next commit of that block.
#[test]
fn a_slot_without_an_indexed_hash_survives_deregistration_as_in_megatron() {
    let mut kv = PrefixKvAllocator::new(8, EvictionPolicy::RefZero).unwrap();
    let mut m = MambaStateCache::new(2, 8).unwrap();
    let b = block(&mut kv, 4, 0);
    let slot = m.allocate_slots(&kv, &[b]).unwrap().slots[0];
    kv.release(&[b], &mut m).unwrap();
    assert_eq!(m.slot(b), Some(slot));
    assert!(!m.holds_state(4, b));
    // With the hash indexed, deregistration frees the slot.
    let c = block(&mut kv, 4, 0);
    m.allocate_slots(&kv, &[c]).unwrap();
    m.register_hashes(&kv, &[c], &[4]).unwrap();
    kv.release(&[c], &mut m).unwrap();
    assert_eq!(m.slot(c), None);
    assert!(m.index_entries().is_empty());
}

/// D6 and D8: pinning the matched blocks and allocating is all or nothing; Megatron
/// leaves the pins' timestamps bumped after a failure.
#[test]
fn a_failed_acquire_restores_references_and_timestamps() {
    let mut kv = lru(4); // 3 usable
    let a = block(&mut kv, 1, 0);
    kv.release(&[a], &mut ()).unwrap(); // cached, ts 0
    kv.set_clock(9);
    let before = kv.clone();
    // Pinning a leaves 2 free blocks; 3 new ones cannot be had.
    assert_eq!(
        kv.acquire(&[a], 3, &mut ()),
        Err(PrefixError::BlockOverflow {
            required: 3,
            available: 2
        })
    );
    assert_eq!(kv, before);
    let got = kv.acquire(&[a], 2, &mut ()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (kv.ref_counts()[a as usize], kv.timestamps()[a as usize]),
        (1, 9)
    );
}

#[test]
fn is_memory_available_discounts_blocks_about_to_be_pinned() {
    let mut kv = lru(4);
    let a = block(&mut kv, 1, 0);
    let _b = kv.allocate(2, &mut ()).unwrap();
    kv.release(&[a], &mut ()).unwrap();
    assert!(kv.is_memory_available(1, 0));
    assert!(!kv.is_memory_available(1, kv.cached_among(&[a])));
    let rz = PrefixKvAllocator::new(4, EvictionPolicy::RefZero).unwrap();
    assert!(rz.is_memory_available(3, 0) && !rz.is_memory_available(4, 0));
}

#[test]
fn reset_keeps_the_clock() {
    let mut kv = lru(5);
    kv.set_clock(3);
    block(&mut kv, 1, 0);
    kv.reset();
    assert_eq!(kv.clock(), 3);
    let mut fresh = lru(5);
    fresh.set_clock(3);
    assert_eq!(kv, fresh);
    kv.tick();
    assert_eq!(kv.clock(), 4);
}
