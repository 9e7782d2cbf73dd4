//! Property tests of the allocators under random operation sequences, valid and not,
//! against a shadow record of what was handed out (kept here, not by the allocators):
//!
//! * `free + in use = pool` after every operation (the KV pool without its dummy block);
//! * no id is ever handed out while it is already out (never twice), and nothing outside
//!   the pool or the KV dummy block is ever handed out;
//! * the free lists hold no repeats and nothing that is handed out; `is_allocated` agrees;
//! * every row of the slot map points at an allocated slot, and no two rows share one
//!   (otherwise a later `free_rows` frees a slot that has since been handed out again);
//! * a call that fails leaves the allocator exactly as it was (for every error kind: see
//!   also `every_alloc_error_kind_changes_nothing`).
//!
//! 256 cases per property by default; `PROPTEST_CASES=N` for a long run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};

use attention_layout::alloc::{AllocError, KvBlockAllocator, MambaSlotPool};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

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

/// A short stable name per error kind; the match is exhaustive, so a new kind must be
/// added here (and to the per-kind test below).
fn kind(e: &AllocError) -> &'static str {
    match e {
        AllocError::InvalidPoolSize { .. } => "invalid_pool_size",
        AllocError::OutOfRange { .. } => "out_of_range",
        AllocError::DummyBlock { .. } => "dummy_block",
        AllocError::DoubleFree { .. } => "double_free",
        AllocError::PoolFull { .. } => "pool_full",
        AllocError::RowOutOfRange { .. } => "row_out_of_range",
        AllocError::RowHasNoSlot { .. } => "row_has_no_slot",
        AllocError::SlotNotAllocated { .. } => "slot_not_allocated",
        AllocError::SlotMapped { .. } => "slot_mapped",
    }
}

const ALL_KINDS: &[&str] = &[
    "invalid_pool_size",
    "out_of_range",
    "dummy_block",
    "double_free",
    "pool_full",
    "row_out_of_range",
    "row_has_no_slot",
    "slot_not_allocated",
    "slot_mapped",
];

// ---------------------------------------------------------------------------------------
// KV blocks

#[derive(Debug, Clone)]
enum KvOp {
    Allocate(usize),
    AllocateInto(usize),
    /// Release held blocks: every `stride`-th after skipping `skip`, maybe reversed.
    ReleaseHeld {
        skip: usize,
        stride: usize,
        reverse: bool,
    },
    /// Release arbitrary ids (mostly invalid: foreign, repeated, dummy, out of range).
    Release(Vec<i32>),
    /// Release held blocks plus one bad id at a random place.
    ReleaseHeldWithBad {
        bad: i32,
        at: usize,
    },
    Reset,
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        4 => (0usize..6).prop_map(KvOp::Allocate),
        2 => (0usize..6).prop_map(KvOp::AllocateInto),
        3 => (0usize..3, 1usize..4, any::<bool>())
            .prop_map(|(skip, stride, reverse)| KvOp::ReleaseHeld { skip, stride, reverse }),
        2 => proptest::collection::vec(-3i32..40, 0..5).prop_map(KvOp::Release),
        2 => (-3i32..40, any::<usize>()).prop_map(|(bad, at)| KvOp::ReleaseHeldWithBad { bad, at }),
        1 => Just(KvOp::Reset),
    ]
}

fn kv_invariants(kv: &KvBlockAllocator, held: &BTreeSet<i32>) -> Result<(), TestCaseError> {
    let pk = kv.pool_size();
    prop_assert_eq!(
        kv.available() + kv.in_use(),
        pk - 1,
        "free + in use != pool"
    );
    prop_assert_eq!(kv.in_use(), held.len());
    let free: BTreeSet<i32> = kv.free_blocks().iter().copied().collect();
    prop_assert_eq!(free.len(), kv.available(), "a free block repeats");
    prop_assert!(
        free.is_disjoint(held),
        "a handed-out block is on the free list"
    );
    prop_assert!(!free.contains(&kv.dummy_block()));
    for id in -1..=pk as i32 {
        prop_assert_eq!(kv.is_allocated(id), held.contains(&id));
    }
    Ok(())
}

fn take(ids: &[i32], dummy: i32, held: &mut BTreeSet<i32>) -> Result<(), TestCaseError> {
    for &id in ids {
        prop_assert!((0..dummy).contains(&id), "handed out {}", id);
        prop_assert!(held.insert(id), "block {} handed out twice", id);
    }
    Ok(())
}

fn run_kv(
    pk: usize,
    ops: &[KvOp],
    errors: &mut BTreeMap<&'static str, u64>,
) -> Result<(), TestCaseError> {
    let mut kv = KvBlockAllocator::new(pk).unwrap();
    let dummy = kv.dummy_block();
    let mut held = BTreeSet::new();
    let mut out = Vec::new();
    for op in ops {
        let before = kv.clone();
        let result = match op {
            KvOp::Allocate(n) => {
                match kv.allocate(*n).map(<[i32]>::to_vec) {
                    Some(ids) => {
                        prop_assert_eq!(ids.len(), *n);
                        take(&ids, dummy, &mut held)?;
                    }
                    None => {
                        prop_assert!(before.available() < *n);
                        prop_assert_eq!(&kv, &before);
                    }
                }
                Ok(())
            }
            KvOp::AllocateInto(n) => {
                out.clear();
                out.push(-42);
                if kv.allocate_into(*n, &mut out) {
                    take(&out[1..], dummy, &mut held)?;
                } else {
                    prop_assert_eq!(&out, &vec![-42]);
                    prop_assert_eq!(&kv, &before);
                }
                Ok(())
            }
            KvOp::ReleaseHeld {
                skip,
                stride,
                reverse,
            } => {
                let mut ids: Vec<i32> = held.iter().copied().skip(*skip).step_by(*stride).collect();
                if *reverse {
                    ids.reverse();
                }
                let r = kv.release(&ids);
                prop_assert!(r.is_ok(), "legitimate release rejected: {:?}", r);
                for id in &ids {
                    held.remove(id);
                }
                // LIFO: the released blocks come back first, in the order given.
                prop_assert_eq!(&kv.free_blocks()[kv.available() - ids.len()..], &ids[..]);
                Ok(())
            }
            KvOp::Release(ids) => {
                let r = kv.release(ids);
                if r.is_ok() {
                    for id in ids {
                        prop_assert!(held.remove(id), "accepted a release of {}", id);
                    }
                }
                r
            }
            KvOp::ReleaseHeldWithBad { bad, at } => {
                let mut ids: Vec<i32> = held.iter().copied().collect();
                ids.insert(at % (ids.len() + 1), *bad);
                let r = kv.release(&ids);
                if r.is_ok() {
                    for id in &ids {
                        prop_assert!(held.remove(id), "accepted a release of {}", id);
                    }
                }
                r
            }
            KvOp::Reset => {
                kv.reset();
                held.clear();
                prop_assert_eq!(&kv, &KvBlockAllocator::new(pk).unwrap());
                Ok(())
            }
        };
        if let Err(e) = result {
            prop_assert_eq!(&kv, &before, "{} changed the allocator", e);
            *errors.entry(kind(&e)).or_default() += 1;
        }
        kv_invariants(&kv, &held)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Mamba slots

#[derive(Debug, Clone)]
enum SlotOp {
    Allocate,
    AllocateN(usize),
    AllocateNInto(usize),
    /// Free an arbitrary id.
    Free(i32),
    /// Free a held slot (mapped to a row or not).
    FreeHeld(usize),
    FreeRows(Vec<usize>),
    SetRow(usize, i32),
    /// Map a row to a held slot (mapped elsewhere or not).
    MapHeld(usize, usize),
    ClearRow(usize),
    Detach(usize),
    Reset,
}

fn slot_op() -> impl Strategy<Value = SlotOp> {
    prop_oneof![
        3 => Just(SlotOp::Allocate),
        2 => (0usize..5).prop_map(SlotOp::AllocateN),
        1 => (0usize..5).prop_map(SlotOp::AllocateNInto),
        2 => (-2i32..20).prop_map(SlotOp::Free),
        3 => any::<usize>().prop_map(SlotOp::FreeHeld),
        3 => proptest::collection::vec(0usize..20, 0..5).prop_map(SlotOp::FreeRows),
        2 => (0usize..20, -2i32..20).prop_map(|(r, s)| SlotOp::SetRow(r, s)),
        4 => (0usize..20, any::<usize>()).prop_map(|(r, k)| SlotOp::MapHeld(r, k)),
        1 => (0usize..20).prop_map(SlotOp::ClearRow),
        2 => (0usize..20).prop_map(SlotOp::Detach),
        1 => Just(SlotOp::Reset),
    ]
}

fn slot_invariants(sp: &MambaSlotPool, held: &BTreeSet<i32>) -> Result<(), TestCaseError> {
    let r = sp.max_requests();
    prop_assert_eq!(sp.free_count() + sp.in_use(), r, "free + in use != pool");
    prop_assert_eq!(sp.in_use(), held.len());
    let free: BTreeSet<i32> = sp.free_stack().iter().copied().collect();
    prop_assert_eq!(free.len(), sp.free_count(), "a free slot repeats");
    prop_assert!(
        free.is_disjoint(held),
        "a handed-out slot is on the free stack"
    );
    for s in -1..=r as i32 {
        prop_assert_eq!(sp.is_allocated(s), held.contains(&s));
    }
    let mut mapped = BTreeSet::new();
    for &s in sp.row_to_slot().iter().filter(|&&s| s != -1) {
        prop_assert!(sp.is_allocated(s), "a row maps free slot {}", s);
        prop_assert!(mapped.insert(s), "two rows map slot {}", s);
    }
    Ok(())
}

fn nth(set: &BTreeSet<i32>, k: usize) -> Option<i32> {
    (!set.is_empty()).then(|| *set.iter().nth(k % set.len()).unwrap())
}

fn run_slots(
    r: usize,
    ops: &[SlotOp],
    errors: &mut BTreeMap<&'static str, u64>,
) -> Result<(), TestCaseError> {
    let mut sp = MambaSlotPool::new(r).unwrap();
    let mut held: BTreeSet<i32> = BTreeSet::new();
    let mut out = Vec::new();
    for op in ops {
        let before = sp.clone();
        let result: Result<(), AllocError> = match op {
            SlotOp::Allocate => {
                match sp.allocate() {
                    Some(s) => {
                        prop_assert!((0..r as i32).contains(&s));
                        prop_assert!(held.insert(s), "slot {} handed out twice", s);
                    }
                    None => prop_assert_eq!(&sp, &before),
                }
                Ok(())
            }
            SlotOp::AllocateN(n) | SlotOp::AllocateNInto(n) => {
                let got = if matches!(op, SlotOp::AllocateN(_)) {
                    sp.allocate_n(*n)
                } else {
                    out.clear();
                    sp.allocate_n_into(*n, &mut out).then(|| out.clone())
                };
                match got {
                    Some(v) => {
                        prop_assert_eq!(v.len(), *n);
                        for s in v {
                            prop_assert!(held.insert(s), "slot {} handed out twice", s);
                        }
                    }
                    None => prop_assert_eq!(&sp, &before),
                }
                Ok(())
            }
            SlotOp::Free(s) => {
                let r = sp.free(*s);
                if r.is_ok() {
                    prop_assert!(held.remove(s), "accepted a free of {}", s);
                }
                r
            }
            SlotOp::FreeHeld(k) => match nth(&held, *k) {
                Some(s) => {
                    let r = sp.free(s);
                    if r.is_ok() {
                        held.remove(&s);
                    }
                    r
                }
                None => Ok(()),
            },
            SlotOp::FreeRows(rows) => {
                let slots: Vec<i32> = rows.iter().filter_map(|&x| sp.row_slot(x)).collect();
                let r = sp.free_rows(rows);
                if r.is_ok() {
                    for s in slots {
                        prop_assert!(held.remove(&s), "accepted a free of {}", s);
                    }
                }
                r
            }
            SlotOp::SetRow(row, s) => sp.set_row(*row, *s),
            SlotOp::MapHeld(row, k) => match nth(&held, *k) {
                Some(s) => sp.set_row(*row % r, s),
                None => Ok(()),
            },
            SlotOp::ClearRow(row) => sp.clear_row(*row).map(|_| ()),
            SlotOp::Detach(row) => sp.detach(*row).map(|s| {
                let _ = s;
            }),
            SlotOp::Reset => {
                sp.reset();
                held.clear();
                prop_assert_eq!(&sp, &MambaSlotPool::new(r).unwrap());
                Ok(())
            }
        };
        if let Err(e) = result {
            prop_assert_eq!(&sp, &before, "{} changed the pool", e);
            *errors.entry(kind(&e)).or_default() += 1;
        }
        slot_invariants(&sp, &held)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties

fn report(name: &str, cases: u32, errors: &BTreeMap<&'static str, u64>) {
    eprintln!("{name}: {cases} cases, rejected calls by kind: {errors:?}");
}

#[test]
fn kv_allocator_random_operations() {
    let mut runner = TestRunner::new(config());
    let errors = std::cell::RefCell::new(BTreeMap::new());
    let strategy = (2usize..24, proptest::collection::vec(kv_op(), 0..60));
    let result = runner.run(&strategy, |(pk, ops)| {
        run_kv(pk, &ops, &mut errors.borrow_mut())
    });
    report(
        "kv_allocator_random_operations",
        runner.config().cases,
        &errors.borrow(),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn slot_pool_random_operations() {
    let mut runner = TestRunner::new(config());
    let errors = std::cell::RefCell::new(BTreeMap::new());
    let strategy = (1usize..12, proptest::collection::vec(slot_op(), 0..60));
    let result = runner.run(&strategy, |(r, ops)| {
        run_slots(r, &ops, &mut errors.borrow_mut())
    });
    report(
        "slot_pool_random_operations",
        runner.config().cases,
        &errors.borrow(),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Every allocator error kind, provoked on a pool with some state, leaves that state
/// exactly as it was (and the pool still works afterwards).
#[test]
fn every_alloc_error_kind_changes_nothing() {
    let mut seen = BTreeSet::new();
    let mut check = |e: AllocError, changed: bool| {
        assert!(!changed, "{e} changed the allocator");
        seen.insert(kind(&e));
    };

    // Constructors (no state to change).
    check(KvBlockAllocator::new(1).unwrap_err(), false);
    check(MambaSlotPool::new(0).unwrap_err(), false);

    // KV: a pool of 10 (dummy 9) with 3 blocks out.
    let mut kv = KvBlockAllocator::new(10).unwrap();
    let out = kv.allocate(3).unwrap().to_vec();
    for bad in [
        vec![out[0], 10],
        vec![out[0], 9],
        vec![out[0], 0],
        vec![out[1], out[1]],
    ] {
        let before = kv.clone();
        let e = kv.release(&bad).unwrap_err();
        check(e, kv != before);
    }
    kv.release(&out).unwrap();

    // Slots: R = 4, slots 3 and 2 out, 3 mapped to row 0, 2 unmapped.
    let mut sp = MambaSlotPool::new(4).unwrap();
    let a = sp.allocate().unwrap();
    let b = sp.allocate().unwrap();
    sp.set_row(0, a).unwrap();
    type Attempt = Box<dyn Fn(&mut MambaSlotPool) -> Result<(), AllocError>>;
    let attempts: Vec<Attempt> = vec![
        Box::new(|p| p.free(4)),                  // out_of_range
        Box::new(|p| p.free(0)),                  // double_free (never handed out)
        Box::new(move |p| p.free(a)),             // slot_mapped (free_rows owns it)
        Box::new(|p| p.free_rows(&[0, 9])),       // row_out_of_range
        Box::new(|p| p.free_rows(&[0, 0])),       // double_free (slot reached twice)
        Box::new(|p| p.set_row(9, 0)),            // row_out_of_range
        Box::new(|p| p.set_row(1, 0)),            // slot_not_allocated
        Box::new(move |p| p.set_row(1, a)),       // slot_mapped (to row 0)
        Box::new(|p| p.set_row(1, -3)),           // out_of_range
        Box::new(|p| p.detach(1).map(|_| ())),    // row_has_no_slot
        Box::new(|p| p.detach(7).map(|_| ())),    // row_out_of_range
        Box::new(|p| p.clear_row(4).map(|_| ())), // row_out_of_range
    ];
    for f in &attempts {
        let before = sp.clone();
        let e = f(&mut sp).unwrap_err();
        check(e, sp != before);
    }
    // pool_full: only reachable once every slot is free.
    sp.free_rows(&[0]).unwrap();
    sp.free(b).unwrap();
    let before = sp.clone();
    check(sp.free(1).unwrap_err(), sp != before);

    let all: BTreeSet<&str> = ALL_KINDS.iter().copied().collect();
    assert_eq!(seen, all, "error kinds not provoked");
}
