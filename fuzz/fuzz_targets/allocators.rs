//! Allocator operation sequences on `KvBlockAllocator` and `MambaSlotPool`, valid and not.
//!
//! A shadow set of the ids handed out (kept by this harness, not by the allocators) checks
//! after every operation: `free + in use = pool`, no id is ever handed out twice, the free
//! lists hold no repeats and nothing handed out, `is_allocated` agrees with the shadow,
//! mapped rows point at allocated slots, and a failed call leaves the allocator exactly as
//! it was.

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use attention_layout::alloc::{KvBlockAllocator, MambaSlotPool};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    KvAllocate(u8),
    KvAllocateInto(u8),
    KvReleaseHeld { stride: u8, skip: u8, reverse: bool },
    KvRelease(Vec<i16>),
    KvReset,
    SlotAllocate,
    SlotAllocateN(u8),
    SlotAllocateNInto(u8),
    SlotFree(i16),
    SlotFreeHeld(u8),
    SlotFreeRows(Vec<u8>),
    SlotSetRow(u8, i16),
    SlotMapHeld(u8, u8),
    SlotClearRow(u8),
    SlotDetach(u8),
    SlotReset,
}

#[derive(Arbitrary, Debug)]
struct Case {
    kv_pool: u8,
    slots: u8,
    ops: Vec<Op>,
}

fn pick(held: &BTreeSet<i32>, k: u8) -> Option<i32> {
    if held.is_empty() {
        return None;
    }
    held.iter().nth(usize::from(k) % held.len()).copied()
}

fuzz_target!(|case: Case| {
    let pk = 2 + usize::from(case.kv_pool % 63);
    let r = 1 + usize::from(case.slots % 32);
    let mut kv = KvBlockAllocator::new(pk).unwrap_or_else(|e| panic!("{e}"));
    let mut sp = MambaSlotPool::new(r).unwrap_or_else(|e| panic!("{e}"));
    let mut kv_held: BTreeSet<i32> = BTreeSet::new();
    let mut slot_held: BTreeSet<i32> = BTreeSet::new();
    let mut out = Vec::new();
    for op in case.ops.iter().take(256) {
        let (kv_before, sp_before) = (kv.clone(), sp.clone());
        let take_kv = |ids: &[i32], held: &mut BTreeSet<i32>| {
            for &id in ids {
                assert!(
                    (0..kv_before.dummy_block()).contains(&id),
                    "handed out {id}"
                );
                assert!(held.insert(id), "block {id} handed out twice");
            }
        };
        let failed = match op {
            Op::KvAllocate(n) => {
                match kv.allocate(usize::from(*n)).map(<[i32]>::to_vec) {
                    Some(ids) => {
                        assert_eq!(ids.len(), usize::from(*n));
                        take_kv(&ids, &mut kv_held);
                    }
                    None => assert_eq!(kv, kv_before),
                }
                false
            }
            Op::KvAllocateInto(n) => {
                out.clear();
                if kv.allocate_into(usize::from(*n), &mut out) {
                    take_kv(&out, &mut kv_held);
                } else {
                    assert!(out.is_empty());
                    assert_eq!(kv, kv_before);
                }
                false
            }
            Op::KvReleaseHeld {
                stride,
                skip,
                reverse,
            } => {
                let mut ids: Vec<i32> = kv_held
                    .iter()
                    .copied()
                    .skip(usize::from(*skip % 4))
                    .step_by(1 + usize::from(*stride % 3))
                    .collect();
                if *reverse {
                    ids.reverse();
                }
                kv.release(&ids)
                    .unwrap_or_else(|e| panic!("legitimate release: {e}"));
                for id in &ids {
                    kv_held.remove(id);
                }
                false
            }
            Op::KvRelease(raw) => {
                let ids: Vec<i32> = raw.iter().take(80).map(|&x| i32::from(x)).collect();
                match kv.release(&ids) {
                    Ok(()) => {
                        for id in &ids {
                            assert!(kv_held.remove(id), "accepted a release of {id}");
                        }
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::KvReset => {
                kv.reset();
                kv_held.clear();
                false
            }
            Op::SlotAllocate => {
                if let Some(s) = sp.allocate() {
                    assert!(slot_held.insert(s), "slot {s} handed out twice");
                } else {
                    assert_eq!(sp, sp_before);
                }
                false
            }
            Op::SlotAllocateN(n) => {
                match sp.allocate_n(usize::from(*n)) {
                    Some(v) => {
                        assert_eq!(v.len(), usize::from(*n));
                        for s in v {
                            assert!(slot_held.insert(s), "slot {s} handed out twice");
                        }
                    }
                    None => assert_eq!(sp, sp_before),
                }
                false
            }
            Op::SlotAllocateNInto(n) => {
                out.clear();
                if sp.allocate_n_into(usize::from(*n), &mut out) {
                    for &s in &out {
                        assert!(slot_held.insert(s), "slot {s} handed out twice");
                    }
                } else {
                    assert_eq!(sp, sp_before);
                }
                false
            }
            Op::SlotFree(s) => match sp.free(i32::from(*s)) {
                Ok(()) => {
                    assert!(slot_held.remove(&i32::from(*s)), "accepted a free of {s}");
                    false
                }
                Err(_) => true,
            },
            Op::SlotFreeHeld(k) => {
                // A held slot no row maps (a mapped one goes through free_rows).
                let unmapped: BTreeSet<i32> = slot_held
                    .iter()
                    .copied()
                    .filter(|s| !sp.row_to_slot().contains(s))
                    .collect();
                if let Some(s) = pick(&unmapped, *k) {
                    sp.free(s)
                        .unwrap_or_else(|e| panic!("legitimate free: {e}"));
                    slot_held.remove(&s);
                }
                false
            }
            Op::SlotFreeRows(rows) => {
                let rows: Vec<usize> = rows.iter().take(40).map(|&x| usize::from(x)).collect();
                let slots: Vec<i32> = rows.iter().filter_map(|&x| sp.row_slot(x)).collect();
                match sp.free_rows(&rows) {
                    Ok(()) => {
                        for s in slots {
                            assert!(slot_held.remove(&s), "accepted a free of {s}");
                        }
                        for &x in &rows {
                            assert_eq!(sp.row_slot(x), None);
                        }
                        false
                    }
                    Err(_) => true,
                }
            }
            Op::SlotSetRow(row, s) => match sp.set_row(usize::from(*row), i32::from(*s)) {
                Ok(()) => {
                    assert!(slot_held.contains(&i32::from(*s)));
                    false
                }
                Err(_) => true,
            },
            Op::SlotMapHeld(row, k) => {
                let mapped: BTreeSet<i32> = sp.row_to_slot().iter().copied().collect();
                let unmapped: BTreeSet<i32> = slot_held.difference(&mapped).copied().collect();
                if let Some(s) = pick(&unmapped, *k) {
                    sp.set_row(usize::from(*row) % r, s)
                        .unwrap_or_else(|e| panic!("legitimate set_row: {e}"));
                }
                false
            }
            Op::SlotClearRow(row) => sp.clear_row(usize::from(*row)).is_err(),
            Op::SlotDetach(row) => match sp.detach(usize::from(*row)) {
                Ok(s) => {
                    assert!(slot_held.contains(&s));
                    false
                }
                Err(_) => true,
            },
            Op::SlotReset => {
                sp.reset();
                slot_held.clear();
                false
            }
        };
        if failed {
            assert_eq!(kv, kv_before, "a failed call changed the KV allocator");
            assert_eq!(sp, sp_before, "a failed call changed the slot pool");
        }
        // Accounting and disjointness.
        assert_eq!(kv.available() + kv.in_use(), pk - 1);
        assert_eq!(kv.in_use(), kv_held.len());
        let free: BTreeSet<i32> = kv.free_blocks().iter().copied().collect();
        assert_eq!(free.len(), kv.available(), "a free block repeats");
        assert!(free.is_disjoint(&kv_held));
        assert!(!free.contains(&kv.dummy_block()));
        for id in 0..pk as i32 {
            assert_eq!(kv.is_allocated(id), kv_held.contains(&id));
        }
        assert_eq!(sp.free_count() + sp.in_use(), r);
        assert_eq!(sp.in_use(), slot_held.len());
        let free: BTreeSet<i32> = sp.free_stack().iter().copied().collect();
        assert_eq!(free.len(), sp.free_count(), "a free slot repeats");
        assert!(free.is_disjoint(&slot_held));
        for s in 0..r as i32 {
            assert_eq!(sp.is_allocated(s), slot_held.contains(&s));
        }
        // Every mapped row points at an allocated slot, and no two rows share one: else a
        // later free_rows would free a slot that has been handed out again.
        let mut mapped = BTreeSet::new();
        for &s in sp.row_to_slot().iter().filter(|&&s| s != -1) {
            assert!(sp.is_allocated(s), "a row maps free slot {s}");
            assert!(mapped.insert(s), "two rows map slot {s}");
        }
    }
});
