//! The KV block allocator and the Mamba live-state slot pool (docs/SEMANTICS.md §8).
//!
//! Both are plain LIFO stacks, reproduced from Megatron-LM (`megatron/core/inference/`,
//! HEAD `d98e8a64dd`) element for element:
//!
//! * [`KvBlockAllocator`] (§8.2, pool of `Pk` blocks): the last block, `Pk − 1`, is the
//!   reserved *dummy* block and is never handed out. State is the `bag` array, initially
//!   `[0, 1, …, Pk−1]`, and `avail`, initially `Pk − 1`. `allocate(n)` returns `None` when
//!   `avail < n`, else `avail −= n` and returns `bag[avail .. avail+n)` (LIFO from the top:
//!   with `Pk = 10`, `allocate(3)` gives `[6, 7, 8]`). `release(ids)` writes
//!   `bag[avail .. avail+len) = ids` in the given order and `avail += len`, so a following
//!   allocation of the same size returns them in that order. `reset()` restores the
//!   initial state. (Prefix caching, with its reference counts and eviction, is not
//!   modelled.)
//! * [`MambaSlotPool`] (§8.1, `R` slots): a free stack initially `[0, 1, …, R−1]` with a
//!   count `c = R`, and a per-row map `row → slot` initially all `-1`. `allocate()` pops
//!   `stack[c−1]` (a fresh pool hands out `R−1, R−2, …`); `allocate_n(n)` takes the block
//!   `stack[c−n .. c)` in ascending stack positions (a fresh pool with `R = 4` gives
//!   `[0, 1, 2, 3]`); `free(slot)` pushes; `free_rows(rows)` pushes the rows' mapped slots in
//!   order (skipping rows without a slot) and clears those rows; `detach(row)` clears a
//!   row's map entry and returns its slot *without* freeing it; `reset()` restores the
//!   initial state.
//!
//! Exhaustion is not an error in either pool: an allocation that does not fit returns
//! `None` and takes nothing.
//!
//! # Deliberate differences from Megatron
//!
//! Megatron does not track which ids are handed out, so it silently accepts a double free
//! (the id then sits twice in the free stack and is later handed out twice). Here both
//! pools keep a per-id "allocated" flag and reject, with a typed [`AllocError`]:
//!
//! * freeing an id that is not currently handed out (a double free, or a foreign id) —
//!   [`AllocError::DoubleFree`], also for an id repeated inside one batch call;
//! * an id outside the pool — [`AllocError::OutOfRange`] (Megatron's Mamba `ValueError`;
//!   Megatron's KV allocator does not check);
//! * releasing the KV dummy block — [`AllocError::DummyBlock`];
//! * freeing into a full pool — [`AllocError::PoolFull`] (Megatron's Mamba `RuntimeError`;
//!   with the allocation flags it can only be reached through a double free);
//! * mapping a row to a slot that is not currently allocated
//!   ([`MambaSlotPool::set_row`]) — [`AllocError::SlotNotAllocated`]. Megatron writes the
//!   map unchecked; every legitimate use maps a freshly allocated slot.
//! * freeing a slot that a row still maps ([`MambaSlotPool::free`]), or mapping a row to a
//!   slot that another row maps ([`MambaSlotPool::set_row`]) — [`AllocError::SlotMapped`].
//!   Megatron accepts both; either leaves a row pointing at a slot that may be handed out
//!   again, and a later `free_rows` of that row would free the new owner's slot, so the
//!   slot would be handed out twice. (Found by `runtime/tests/prop_alloc.rs`.)
//!
//! A call that fails changes **nothing**: every id of a batch call is checked before any
//! state is touched, so a `release` / `free_rows` containing one bad id leaves the pool
//! exactly as it was. Where Megatron raises, the same condition raises here, in the same
//! order (range first, then pool full, then the double-free check).
//!
//! Everything else — LIFO order, ascending batch allocations, release order, the `bag` and
//! free-stack contents, `None` on exhaustion, reset — is Megatron's behaviour.
//!
//! A *detached* slot ([`MambaSlotPool::detach`]) stays allocated: it is no longer reachable
//! through the row map, so [`MambaSlotPool::free_rows`] will not free it, but it may (and
//! should, eventually) be returned with [`MambaSlotPool::free`] — exactly once.
//!
//! No method panics, whatever its input.

use std::fmt;

/// Largest pool size: ids are `i32`, as in Megatron's block and slot tensors.
const MAX_POOL: usize = i32::MAX as usize;

/// Which pool an [`AllocError`] refers to (used in the error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// The paged-KV block pool ([`KvBlockAllocator`]).
    KvBlocks,
    /// The Mamba live-state slot pool ([`MambaSlotPool`]).
    MambaSlots,
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KvBlocks => "KV block",
            Self::MambaSlots => "Mamba slot",
        })
    }
}

/// Errors of the allocators. A call that returns one has changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The requested pool size is unusable.
    #[error("{pool} pool size {size} is invalid (must be between {min} and {max})")]
    InvalidPoolSize {
        /// The pool concerned.
        pool: PoolKind,
        /// The size asked for.
        size: usize,
        /// Smallest allowed size.
        min: usize,
        /// Largest allowed size.
        max: usize,
    },
    /// An id outside `0..limit`.
    #[error("{pool} {id} is out of range (valid ids are 0..{limit})")]
    OutOfRange {
        /// The pool concerned.
        pool: PoolKind,
        /// The offending id.
        id: i64,
        /// The pool size.
        limit: usize,
    },
    /// An attempt to release the reserved KV dummy block.
    #[error("KV block {id} is the reserved dummy block and is never allocated")]
    DummyBlock {
        /// The dummy block id (`pool_size − 1`).
        id: i32,
    },
    /// An id that is not currently handed out: a double free (also an id repeated inside
    /// one call) or a foreign id.
    #[error("{pool} {id} is not allocated (double free or foreign id)")]
    DoubleFree {
        /// The pool concerned.
        pool: PoolKind,
        /// The offending id.
        id: i32,
    },
    /// Freeing would push more ids than the pool holds.
    #[error("cannot free into a full {pool} pool (capacity {capacity})")]
    PoolFull {
        /// The pool concerned.
        pool: PoolKind,
        /// Number of ids the free stack can hold.
        capacity: usize,
    },
    /// A row index outside the row map.
    #[error("row {row} is out of range (the slot map has {rows} rows)")]
    RowOutOfRange {
        /// The offending row.
        row: usize,
        /// Number of rows.
        rows: usize,
    },
    /// [`MambaSlotPool::detach`] on a row that has no slot (Megatron's `RuntimeError`).
    #[error("row {row} has no live Mamba state slot")]
    RowHasNoSlot {
        /// The offending row.
        row: usize,
    },
    /// [`MambaSlotPool::set_row`] with a slot that is not currently allocated.
    #[error("Mamba slot {slot} is not allocated and cannot be mapped to a row")]
    SlotNotAllocated {
        /// The offending slot.
        slot: i32,
    },
    /// [`MambaSlotPool::free`] of a slot that a row still maps (free it with
    /// [`MambaSlotPool::free_rows`], or detach it first), or [`MambaSlotPool::set_row`]
    /// with a slot that another row maps.
    #[error(
        "Mamba slot {slot} is mapped to row {row} (free it with free_rows, or detach it first)"
    )]
    SlotMapped {
        /// The offending slot.
        slot: i32,
        /// The row that maps it.
        row: usize,
    },
}

/// Converts an id to an index below `limit`, or reports it out of range.
fn checked_index(pool: PoolKind, id: i32, limit: usize) -> Result<usize, AllocError> {
    match usize::try_from(id) {
        Ok(i) if i < limit => Ok(i),
        _ => Err(AllocError::OutOfRange {
            pool,
            id: i64::from(id),
            limit,
        }),
    }
}

/// Sets the allocation flag of `id` (ids taken from the internal stacks, always in range).
fn set_flag(flags: &mut [bool], id: i32, value: bool) {
    if let Some(flag) = usize::try_from(id).ok().and_then(|i| flags.get_mut(i)) {
        *flag = value;
    }
}

/// `[0, 1, …, n−1]` as `i32` (`n ≤ MAX_POOL + 1`, checked by the constructors).
fn iota(n: usize) -> impl Iterator<Item = i32> {
    (0..=i32::MAX).take(n)
}

// ---------------------------------------------------------------------------------------
// KV block allocator
// ---------------------------------------------------------------------------------------

/// The paged-KV block allocator (docs/SEMANTICS.md §8.2), without prefix caching.
///
/// Megatron-exact LIFO behaviour, plus double-free detection (see the
/// [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvBlockAllocator {
    /// Megatron's `block_bag`: `bag[0..avail)` are the free blocks; the last entry is the
    /// dummy block and is never overwritten.
    bag: Vec<i32>,
    /// Megatron's `total_avail`.
    avail: usize,
    /// `allocated[b]`: block `b` is currently handed out.
    allocated: Vec<bool>,
}

impl KvBlockAllocator {
    /// A fresh pool of `pool_size` blocks: `0 .. pool_size−1` usable, `pool_size − 1` the
    /// dummy.
    ///
    /// # Errors
    ///
    /// [`AllocError::InvalidPoolSize`] unless `pool_size` is at least 2 (one usable block
    /// plus the dummy) and fits an `i32`.
    pub fn new(pool_size: usize) -> Result<Self, AllocError> {
        if !(2..=MAX_POOL).contains(&pool_size) {
            return Err(AllocError::InvalidPoolSize {
                pool: PoolKind::KvBlocks,
                size: pool_size,
                min: 2,
                max: MAX_POOL,
            });
        }
        Ok(Self {
            bag: iota(pool_size).collect(),
            avail: pool_size - 1,
            allocated: vec![false; pool_size],
        })
    }

    /// Total number of blocks, the dummy included (`Pk`).
    pub fn pool_size(&self) -> usize {
        self.bag.len()
    }

    /// The reserved dummy block, `Pk − 1`.
    pub fn dummy_block(&self) -> i32 {
        // `pool_size ≤ MAX_POOL`, so this never saturates.
        i32::try_from(self.bag.len().saturating_sub(1)).unwrap_or(i32::MAX)
    }

    /// Number of free blocks (Megatron's `total_avail`).
    pub fn available(&self) -> usize {
        self.avail
    }

    /// Number of blocks currently handed out.
    pub fn in_use(&self) -> usize {
        self.bag.len().saturating_sub(1).saturating_sub(self.avail)
    }

    /// Whether `block` is currently handed out (`false` for ids outside the pool).
    pub fn is_allocated(&self, block: i32) -> bool {
        usize::try_from(block)
            .ok()
            .and_then(|i| self.allocated.get(i))
            .is_some_and(|&a| a)
    }

    /// The whole bag array (Megatron's `block_bag`, `Pk` entries): `bag()[..available()]`
    /// are the free blocks in stack order; the rest is whatever was last handed out, then
    /// the dummy block.
    pub fn bag(&self) -> &[i32] {
        &self.bag
    }

    /// The free blocks in stack order (the top of the stack is last).
    pub fn free_blocks(&self) -> &[i32] {
        self.bag.get(..self.avail).unwrap_or(&[])
    }

    /// Takes `n` blocks: `bag[avail−n .. avail)`, in that order. `None` (nothing taken)
    /// when fewer than `n` are free; `allocate(0)` gives an empty slice.
    ///
    /// The slice borrows the allocator; copy it (or use
    /// [`allocate_into`](Self::allocate_into)) to keep it.
    #[must_use = "an allocation that is not kept leaks its ids"]
    pub fn allocate(&mut self, n: usize) -> Option<&[i32]> {
        let start = self.avail.checked_sub(n)?;
        let taken = self.bag.get(start..self.avail)?;
        for &id in taken {
            set_flag(&mut self.allocated, id, true);
        }
        self.avail = start;
        Some(taken)
    }

    /// Like [`allocate`](Self::allocate), but appends the `n` blocks to `out` (no heap
    /// allocation once `out` has the capacity). Returns `false`, leaving `out` and the
    /// allocator untouched, when fewer than `n` blocks are free.
    #[must_use = "an allocation that is not kept leaks its ids"]
    pub fn allocate_into(&mut self, n: usize, out: &mut Vec<i32>) -> bool {
        match self.allocate(n) {
            Some(ids) => {
                out.extend_from_slice(ids);
                true
            }
            None => false,
        }
    }

    /// Returns `blocks` to the pool: `bag[avail .. avail+len) = blocks` in the given order,
    /// `avail += len`. An empty slice is a no-op.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`AllocError::OutOfRange`] for an id outside
    /// `0..Pk`, [`AllocError::DummyBlock`] for the dummy block,
    /// [`AllocError::DoubleFree`] for a block not currently handed out or repeated in
    /// `blocks`.
    pub fn release(&mut self, blocks: &[i32]) -> Result<(), AllocError> {
        let dummy = self.dummy_block();
        // Validate, clearing flags as we go (this also catches repeats inside `blocks`);
        // on the first bad id, restore the flags cleared so far.
        for (done, &id) in blocks.iter().enumerate() {
            if let Err(e) = self.unmark(id, dummy) {
                self.remark(blocks.iter().take(done));
                return Err(e);
            }
        }
        let end = self.avail.saturating_add(blocks.len());
        // Every block was handed out and is distinct, so this always fits below the dummy.
        match self.bag.get_mut(self.avail..end) {
            Some(dst) if end < self.allocated.len() => {
                dst.copy_from_slice(blocks);
                self.avail = end;
                Ok(())
            }
            _ => {
                self.remark(blocks.iter());
                Err(AllocError::PoolFull {
                    pool: PoolKind::KvBlocks,
                    capacity: self.bag.len().saturating_sub(1),
                })
            }
        }
    }

    /// Checks one block of a release and clears its allocation flag.
    fn unmark(&mut self, id: i32, dummy: i32) -> Result<(), AllocError> {
        let i = checked_index(PoolKind::KvBlocks, id, self.allocated.len())?;
        if id == dummy {
            return Err(AllocError::DummyBlock { id });
        }
        match self.allocated.get_mut(i) {
            Some(flag) if *flag => {
                *flag = false;
                Ok(())
            }
            _ => Err(AllocError::DoubleFree {
                pool: PoolKind::KvBlocks,
                id,
            }),
        }
    }

    /// Re-sets the allocation flags of blocks that [`unmark`](Self::unmark) accepted.
    fn remark<'a>(&mut self, ids: impl Iterator<Item = &'a i32>) {
        for &id in ids {
            set_flag(&mut self.allocated, id, true);
        }
    }

    /// Back to the initial state: `bag = [0..Pk)`, `avail = Pk − 1`, nothing allocated.
    pub fn reset(&mut self) {
        for (b, id) in self.bag.iter_mut().zip(iota(usize::MAX)) {
            *b = id;
        }
        self.avail = self.bag.len().saturating_sub(1);
        self.allocated.fill(false);
    }
}

// ---------------------------------------------------------------------------------------
// Mamba slot pool
// ---------------------------------------------------------------------------------------

/// The Mamba live-state slot pool (docs/SEMANTICS.md §8.1): `R` slots, a LIFO free stack and a
/// `row → slot` map with `R` rows.
///
/// Megatron-exact LIFO behaviour, plus double-free detection (see the
/// [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MambaSlotPool {
    /// Megatron's `mamba_state_free_slots`; `stack[0..count)` is live.
    stack: Vec<i32>,
    /// Megatron's `mamba_state_free_slot_count`.
    count: usize,
    /// `allocated[s]`: slot `s` is currently handed out (mapped to a row or not).
    allocated: Vec<bool>,
    /// Megatron's `request_to_mamba_state_idx`: `-1` for a row without a slot.
    row_to_slot: Vec<i32>,
    /// The inverse of `row_to_slot`: the row that maps slot `s`, or `-1`. Kept so that
    /// [`free`](Self::free) and [`set_row`](Self::set_row) can refuse a mapped slot in O(1).
    slot_to_row: Vec<i32>,
}

impl MambaSlotPool {
    /// A fresh pool of `max_requests` slots (`R`), with `R` unmapped rows.
    ///
    /// # Errors
    ///
    /// [`AllocError::InvalidPoolSize`] unless `R` is at least 1 and fits an `i32`.
    pub fn new(max_requests: usize) -> Result<Self, AllocError> {
        if !(1..=MAX_POOL).contains(&max_requests) {
            return Err(AllocError::InvalidPoolSize {
                pool: PoolKind::MambaSlots,
                size: max_requests,
                min: 1,
                max: MAX_POOL,
            });
        }
        Ok(Self {
            stack: iota(max_requests).collect(),
            count: max_requests,
            allocated: vec![false; max_requests],
            row_to_slot: vec![-1; max_requests],
            slot_to_row: vec![-1; max_requests],
        })
    }

    /// Number of slots (and of rows), `R`.
    pub fn max_requests(&self) -> usize {
        self.stack.len()
    }

    /// Number of free slots (Megatron's `mamba_state_free_slot_count`).
    pub fn free_count(&self) -> usize {
        self.count
    }

    /// Number of slots currently handed out (mapped, detached or never mapped).
    pub fn in_use(&self) -> usize {
        self.stack.len().saturating_sub(self.count)
    }

    /// The live part of the free stack, `stack[0..free_count)` (the top is last).
    pub fn free_stack(&self) -> &[i32] {
        self.stack.get(..self.count).unwrap_or(&[])
    }

    /// The `row → slot` map (`R` entries, `-1` for a row without a slot).
    pub fn row_to_slot(&self) -> &[i32] {
        &self.row_to_slot
    }

    /// The slot mapped to `row`; `None` if the row has none or is out of range.
    pub fn row_slot(&self, row: usize) -> Option<i32> {
        self.row_to_slot.get(row).copied().filter(|&s| s >= 0)
    }

    /// Whether `slot` is currently handed out (`false` for ids outside the pool).
    pub fn is_allocated(&self, slot: i32) -> bool {
        usize::try_from(slot)
            .ok()
            .and_then(|i| self.allocated.get(i))
            .is_some_and(|&a| a)
    }

    /// Pops one slot (LIFO: a fresh pool hands out `R−1`, then `R−2`, …); `None` when the
    /// pool is empty. The row map is not touched (see [`set_row`](Self::set_row)).
    #[must_use = "an allocation that is not kept leaks its ids"]
    pub fn allocate(&mut self) -> Option<i32> {
        let top = self.count.checked_sub(1)?;
        let slot = *self.stack.get(top)?;
        set_flag(&mut self.allocated, slot, true);
        self.count = top;
        Some(slot)
    }

    /// Takes `n` slots at once: `stack[c−n .. c)` in ascending stack positions (a fresh
    /// pool with `R = 4` gives `[0, 1, 2, 3]` for `n = 4`). `None` (nothing taken) when
    /// fewer than `n` are free; `n = 0` gives an empty vector.
    #[must_use = "an allocation that is not kept leaks its ids"]
    pub fn allocate_n(&mut self, n: usize) -> Option<Vec<i32>> {
        let mut out = Vec::with_capacity(n.min(self.count));
        self.allocate_n_into(n, &mut out).then_some(out)
    }

    /// Like [`allocate_n`](Self::allocate_n), but appends the slots to `out` (no heap
    /// allocation once `out` has the capacity). Returns `false`, leaving `out` and the pool
    /// untouched, when fewer than `n` slots are free.
    #[must_use = "an allocation that is not kept leaks its ids"]
    pub fn allocate_n_into(&mut self, n: usize, out: &mut Vec<i32>) -> bool {
        let Some(start) = self.count.checked_sub(n) else {
            return false;
        };
        let Some(taken) = self.stack.get(start..self.count) else {
            return false;
        };
        for &slot in taken {
            set_flag(&mut self.allocated, slot, true);
        }
        out.extend_from_slice(taken);
        self.count = start;
        true
    }

    /// Pushes `slot` back onto the free stack. Only a slot that no row maps (a detached
    /// one, or one never mapped) can be freed this way; use
    /// [`free_rows`](Self::free_rows) for mapped slots.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. In Megatron's order:
    /// [`AllocError::OutOfRange`] (`slot ∉ [0, R)`, Megatron's `ValueError`),
    /// [`AllocError::PoolFull`] (Megatron's `RuntimeError`), then
    /// [`AllocError::DoubleFree`] (not currently allocated; Megatron accepts it) and
    /// [`AllocError::SlotMapped`] (a row still maps it; Megatron accepts it).
    pub fn free(&mut self, slot: i32) -> Result<(), AllocError> {
        let i = checked_index(PoolKind::MambaSlots, slot, self.allocated.len())?;
        let full = AllocError::PoolFull {
            pool: PoolKind::MambaSlots,
            capacity: self.stack.len(),
        };
        if self.count >= self.stack.len() {
            return Err(full);
        }
        match self.allocated.get(i) {
            Some(true) => {}
            _ => {
                return Err(AllocError::DoubleFree {
                    pool: PoolKind::MambaSlots,
                    id: slot,
                });
            }
        }
        if let Some(row) = self.mapping_row(i) {
            return Err(AllocError::SlotMapped { slot, row });
        }
        let Some(dst) = self.stack.get_mut(self.count) else {
            return Err(full);
        };
        *dst = slot;
        self.count += 1;
        set_flag(&mut self.allocated, slot, false);
        Ok(())
    }

    /// Frees the slots mapped to `rows`: rows without a slot are skipped, the others' slots
    /// are pushed in the order of `rows`, then every listed row is unmapped (Megatron's
    /// `free_slots`).
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`AllocError::RowOutOfRange`],
    /// [`AllocError::PoolFull`] (the push would overflow, Megatron's `RuntimeError`), then
    /// [`AllocError::DoubleFree`] (a mapped slot that is not allocated, or the same slot
    /// reached twice, e.g. through a repeated row; Megatron accepts it).
    pub fn free_rows(&mut self, rows: &[usize]) -> Result<(), AllocError> {
        let n_rows = self.row_to_slot.len();
        let mut pushes = 0usize;
        for &row in rows {
            match self.row_to_slot.get(row) {
                None => return Err(AllocError::RowOutOfRange { row, rows: n_rows }),
                Some(&s) if s != -1 => pushes += 1,
                Some(_) => {}
            }
        }
        let end = self.count.saturating_add(pushes);
        if end > self.stack.len() {
            return Err(AllocError::PoolFull {
                pool: PoolKind::MambaSlots,
                capacity: self.stack.len(),
            });
        }
        // Validate the slots, clearing their flags as we go (catches a slot reached twice);
        // on the first bad one, restore the flags cleared so far.
        for (done, &row) in rows.iter().enumerate() {
            if let Err(e) = self.unmark_row(row) {
                self.remark_rows(rows.iter().take(done));
                return Err(e);
            }
        }
        // Commit: push in order, then unmap every listed row.
        let mut top = self.count;
        for &row in rows {
            let slot = self.row_to_slot.get(row).copied().unwrap_or(-1);
            if slot != -1 {
                if let Some(dst) = self.stack.get_mut(top) {
                    *dst = slot;
                }
                top += 1;
            }
        }
        self.count = end;
        for &row in rows {
            if let Some(entry) = self.row_to_slot.get_mut(row) {
                let slot = std::mem::replace(entry, -1);
                self.set_inverse(slot, -1);
            }
        }
        Ok(())
    }

    /// The row that maps the slot at index `slot`, if any.
    fn mapping_row(&self, slot: usize) -> Option<usize> {
        self.slot_to_row
            .get(slot)
            .and_then(|&row| usize::try_from(row).ok())
    }

    /// Records that `row` (or `-1`: no row) maps `slot` (ignored for `slot == -1`).
    fn set_inverse(&mut self, slot: i32, row: i32) {
        if let Some(entry) = usize::try_from(slot)
            .ok()
            .and_then(|s| self.slot_to_row.get_mut(s))
        {
            *entry = row;
        }
    }

    /// Checks the slot mapped to `row` (if any) and clears its allocation flag.
    fn unmark_row(&mut self, row: usize) -> Result<(), AllocError> {
        let slot = self.row_to_slot.get(row).copied().unwrap_or(-1);
        if slot == -1 {
            return Ok(());
        }
        let i = checked_index(PoolKind::MambaSlots, slot, self.allocated.len())?;
        match self.allocated.get_mut(i) {
            Some(flag) if *flag => {
                *flag = false;
                Ok(())
            }
            _ => Err(AllocError::DoubleFree {
                pool: PoolKind::MambaSlots,
                id: slot,
            }),
        }
    }

    /// Re-sets the allocation flags of the slots of rows that
    /// [`unmark_row`](Self::unmark_row) accepted.
    fn remark_rows<'a>(&mut self, rows: impl Iterator<Item = &'a usize>) {
        for &row in rows {
            if let Some(&slot) = self.row_to_slot.get(row) {
                set_flag(&mut self.allocated, slot, true);
            }
        }
    }

    /// Maps `row` to `slot` (Megatron writes `request_to_mamba_state_idx[row] = slot` after
    /// allocating). A previous mapping of `row` is overwritten, and its slot stays
    /// allocated, as with [`detach`](Self::detach).
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`AllocError::RowOutOfRange`],
    /// [`AllocError::OutOfRange`] for `slot ∉ [0, R)`, [`AllocError::SlotNotAllocated`] for
    /// a slot that is not currently handed out, [`AllocError::SlotMapped`] for a slot that
    /// another row maps (Megatron checks neither).
    pub fn set_row(&mut self, row: usize, slot: i32) -> Result<(), AllocError> {
        let rows = self.row_to_slot.len();
        if row >= rows {
            return Err(AllocError::RowOutOfRange { row, rows });
        }
        let i = checked_index(PoolKind::MambaSlots, slot, self.allocated.len())?;
        if !self.is_allocated(slot) {
            return Err(AllocError::SlotNotAllocated { slot });
        }
        if let Some(other) = self.mapping_row(i).filter(|&other| other != row) {
            return Err(AllocError::SlotMapped { slot, row: other });
        }
        // `row < rows <= MAX_POOL`, so it fits an i32.
        let row_id = i32::try_from(row).unwrap_or(i32::MAX);
        if let Some(entry) = self.row_to_slot.get_mut(row) {
            let old = std::mem::replace(entry, slot);
            self.set_inverse(old, -1);
        }
        self.set_inverse(slot, row_id);
        Ok(())
    }

    /// Unmaps `row` and returns the slot it had, if any; the slot stays allocated. Unlike
    /// [`detach`](Self::detach), a row without a slot is not an error.
    ///
    /// # Errors
    ///
    /// [`AllocError::RowOutOfRange`] (and then nothing changes).
    pub fn clear_row(&mut self, row: usize) -> Result<Option<i32>, AllocError> {
        let rows = self.row_to_slot.len();
        let entry = self
            .row_to_slot
            .get_mut(row)
            .ok_or(AllocError::RowOutOfRange { row, rows })?;
        let old = std::mem::replace(entry, -1);
        self.set_inverse(old, -1);
        Ok((old != -1).then_some(old))
    }

    /// Detaches `row`'s slot (Megatron's `detach_state_slot`): unmaps the row and returns
    /// its slot **without freeing it**. The slot stays allocated, so
    /// [`free_rows`](Self::free_rows) no longer reaches it; return it later with
    /// [`free`](Self::free) (exactly once).
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`AllocError::RowOutOfRange`], [`AllocError::RowHasNoSlot`] (Megatron's
    /// `RuntimeError`).
    pub fn detach(&mut self, row: usize) -> Result<i32, AllocError> {
        let rows = self.row_to_slot.len();
        let entry = self
            .row_to_slot
            .get_mut(row)
            .ok_or(AllocError::RowOutOfRange { row, rows })?;
        if *entry < 0 {
            return Err(AllocError::RowHasNoSlot { row });
        }
        let slot = std::mem::replace(entry, -1);
        self.set_inverse(slot, -1);
        Ok(slot)
    }

    /// Back to the initial state: stack `[0..R)`, all slots free, every row unmapped.
    pub fn reset(&mut self) {
        for (s, id) in self.stack.iter_mut().zip(iota(usize::MAX)) {
            *s = id;
        }
        self.count = self.stack.len();
        self.allocated.fill(false);
        self.row_to_slot.fill(-1);
        self.slot_to_row.fill(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: PoolKind = PoolKind::KvBlocks;
    const MS: PoolKind = PoolKind::MambaSlots;

    fn kv(pk: usize) -> KvBlockAllocator {
        KvBlockAllocator::new(pk).unwrap()
    }

    fn slots(r: usize) -> MambaSlotPool {
        MambaSlotPool::new(r).unwrap()
    }

    // ---- §11 F, KV ----------------------------------------------------------------------

    #[test]
    fn f_kv_pool_10() {
        let mut a = kv(10);
        assert_eq!(a.dummy_block(), 9);
        assert_eq!(a.available(), 9);
        assert_eq!(a.allocate(3).unwrap(), &[6, 7, 8]);
        a.release(&[8, 7, 6]).unwrap();
        assert_eq!(a.bag(), &[0, 1, 2, 3, 4, 5, 8, 7, 6, 9]);
        assert_eq!(a.available(), 9);
        assert_eq!(a.allocate(1).unwrap(), &[6]);
        a.release(&[6]).unwrap();
        assert_eq!(a.allocate(4).unwrap(), &[5, 8, 7, 6]);
        assert_eq!(a.available(), 5);
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn f_kv_lifo_from_top() {
        let mut a = kv(10);
        assert_eq!(a.allocate(3).unwrap(), &[6, 7, 8]);
        assert_eq!(a.allocate(1).unwrap(), &[5]);
        assert_eq!(a.allocate(0).unwrap(), &[] as &[i32]);
        assert_eq!(a.available(), 5);
    }

    #[test]
    fn f_kv_pool_6_exhaustion() {
        let mut a = kv(6);
        assert!(a.allocate(9).is_none());
        assert!(a.allocate(6).is_none(), "the dummy is never handed out");
        assert_eq!(a.available(), 5);
        assert_eq!(a.allocate(5).unwrap(), &[0, 1, 2, 3, 4]);
        assert!(a.allocate(1).is_none());
        assert_eq!(a.allocate(0).unwrap(), &[] as &[i32]);
        assert_eq!(a.bag(), &[0, 1, 2, 3, 4, 5]);
    }

    // ---- §11 F, Mamba slots -------------------------------------------------------------

    #[test]
    fn f_mamba_slots_r4() {
        let mut p = slots(4);
        assert_eq!(p.allocate(), Some(3));
        assert_eq!(p.allocate_n(2), Some(vec![1, 2]));
        p.free(3).unwrap();
        assert_eq!(p.free_stack(), &[0, 3]);
        assert_eq!(p.allocate_n(3), None);
        assert_eq!(p.free_stack(), &[0, 3]);
        assert_eq!(p.allocate(), Some(3));
        p.set_row(0, 2).unwrap();
        p.set_row(1, 1).unwrap();
        assert_eq!(p.row_to_slot(), &[2, 1, -1, -1]);
        p.free_rows(&[0, 1, 3]).unwrap();
        assert_eq!(p.free_stack(), &[0, 2, 1]);
        assert_eq!(p.row_to_slot(), &[-1, -1, -1, -1]);
        assert_eq!(
            p.free(7),
            Err(AllocError::OutOfRange {
                pool: MS,
                id: 7,
                limit: 4
            })
        );
        assert_eq!(p.detach(3), Err(AllocError::RowHasNoSlot { row: 3 }));

        // Megatron accepts this double free (stack becomes [0,2,1,2]); we reject it and
        // change nothing.
        let before = p.clone();
        assert_eq!(p.free(2), Err(AllocError::DoubleFree { pool: MS, id: 2 }));
        assert_eq!(p, before);
        assert_eq!(p.free_stack(), &[0, 2, 1]);
        assert_eq!(p.free_count(), 3);

        // Slot 3 really is still allocated (taken by the second `allocate`, never mapped):
        // Megatron's "pool full" here only came from the corrupted stack. We free it.
        assert!(p.is_allocated(3));
        p.free(3).unwrap();
        assert_eq!(p.free_stack(), &[0, 2, 1, 3]);
        // Now the pool is full: any further free is Megatron's RuntimeError.
        assert_eq!(
            p.free(3),
            Err(AllocError::PoolFull {
                pool: MS,
                capacity: 4
            })
        );

        p.reset();
        assert_eq!(p.allocate_n(4), Some(vec![0, 1, 2, 3]));
        assert_eq!(p.allocate(), None);
        assert_eq!(p.free_count(), 0);
        assert_eq!(p.free_stack(), &[] as &[i32]);
    }

    // ---- KV edge cases ------------------------------------------------------------------

    #[test]
    fn kv_invalid_pool_sizes() {
        for pk in [0, 1] {
            assert!(matches!(
                KvBlockAllocator::new(pk),
                Err(AllocError::InvalidPoolSize { min: 2, .. })
            ));
        }
        let a = kv(2);
        assert_eq!(a.dummy_block(), 1);
        assert_eq!(a.available(), 1);
    }

    #[test]
    fn kv_release_empty_is_noop() {
        let mut a = kv(10);
        a.allocate(2).unwrap();
        let before = a.clone();
        a.release(&[]).unwrap();
        assert_eq!(a, before);
    }

    #[test]
    fn kv_release_dummy() {
        let mut a = kv(10);
        a.allocate(9).unwrap();
        let before = a.clone();
        assert_eq!(a.release(&[9]), Err(AllocError::DummyBlock { id: 9 }));
        assert_eq!(a, before);
    }

    #[test]
    fn kv_release_out_of_range() {
        let mut a = kv(10);
        a.allocate(3).unwrap();
        let before = a.clone();
        for id in [10, -1, i32::MAX, i32::MIN] {
            assert_eq!(
                a.release(&[id]),
                Err(AllocError::OutOfRange {
                    pool: KV,
                    id: i64::from(id),
                    limit: 10
                })
            );
            assert_eq!(a, before);
        }
    }

    #[test]
    fn kv_double_free_and_foreign() {
        let mut a = kv(10);
        let got = a.allocate(3).unwrap().to_vec();
        a.release(&got).unwrap();
        let before = a.clone();
        assert_eq!(
            a.release(&[7]),
            Err(AllocError::DoubleFree { pool: KV, id: 7 })
        );
        // 0 was never handed out.
        assert_eq!(
            a.release(&[0]),
            Err(AllocError::DoubleFree { pool: KV, id: 0 })
        );
        assert_eq!(a, before);
        assert_eq!(
            a.release(&[0]).unwrap_err().to_string(),
            "KV block 0 is not allocated (double free or foreign id)"
        );
    }

    #[test]
    fn kv_duplicate_inside_one_release() {
        let mut a = kv(10);
        a.allocate(3).unwrap();
        let before = a.clone();
        assert_eq!(
            a.release(&[6, 7, 6]),
            Err(AllocError::DoubleFree { pool: KV, id: 6 })
        );
        assert_eq!(a, before);
        assert!(a.is_allocated(6) && a.is_allocated(7) && a.is_allocated(8));
        a.release(&[6, 7, 8]).unwrap();
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn kv_failed_batch_changes_nothing() {
        let mut a = kv(10);
        a.allocate(4).unwrap(); // [5,6,7,8]
        let before = a.clone();
        // Good ids first, then one bad one of each kind.
        for (bad, err) in [
            (2, AllocError::DoubleFree { pool: KV, id: 2 }),
            (9, AllocError::DummyBlock { id: 9 }),
            (
                42,
                AllocError::OutOfRange {
                    pool: KV,
                    id: 42,
                    limit: 10,
                },
            ),
        ] {
            assert_eq!(a.release(&[8, 5, bad, 6]), Err(err));
            assert_eq!(a, before);
        }
        // After all those failures the same blocks can still be released, in order.
        a.release(&[8, 5, 7, 6]).unwrap();
        assert_eq!(a.bag(), &[0, 1, 2, 3, 4, 8, 5, 7, 6, 9]);
        assert_eq!(a.allocate(2).unwrap(), &[7, 6]);
    }

    #[test]
    fn kv_allocate_into_appends_and_none_leaves_buffer() {
        let mut a = kv(6);
        let mut buf = vec![100];
        assert!(a.allocate_into(2, &mut buf));
        assert_eq!(buf, [100, 3, 4]);
        assert!(!a.allocate_into(4, &mut buf));
        assert_eq!(buf, [100, 3, 4]);
        assert!(a.allocate_into(0, &mut buf));
        assert_eq!(buf, [100, 3, 4]);
        assert_eq!(a.available(), 3);
    }

    #[test]
    fn kv_reset_round_trip() {
        let mut a = kv(10);
        let x = a.allocate(5).unwrap().to_vec();
        a.release(&[x[4], x[0]]).unwrap();
        a.reset();
        assert_eq!(a, kv(10));
        // Blocks handed out before the reset are no longer allocated.
        assert_eq!(
            a.release(&[x[1]]),
            Err(AllocError::DoubleFree { pool: KV, id: x[1] })
        );
    }

    // ---- Mamba edge cases ---------------------------------------------------------------

    #[test]
    fn mamba_invalid_sizes() {
        assert!(matches!(
            MambaSlotPool::new(0),
            Err(AllocError::InvalidPoolSize { min: 1, .. })
        ));
        let mut p = slots(1);
        assert_eq!(p.allocate(), Some(0));
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn mamba_lifo_freed_slot_is_next() {
        let mut p = slots(4);
        assert_eq!(p.allocate(), Some(3));
        assert_eq!(p.allocate(), Some(2));
        p.free(3).unwrap();
        assert_eq!(p.allocate(), Some(3));
    }

    #[test]
    fn mamba_allocate_n_zero_and_into() {
        let mut p = slots(4);
        assert_eq!(p.allocate_n(0), Some(vec![]));
        let mut buf = vec![9];
        assert!(p.allocate_n_into(3, &mut buf));
        assert_eq!(buf, [9, 1, 2, 3]);
        assert!(!p.allocate_n_into(2, &mut buf));
        assert_eq!(buf, [9, 1, 2, 3]);
        assert_eq!(p.free_stack(), &[0]);
    }

    #[test]
    fn mamba_batch_is_a_copy() {
        let mut p = slots(4);
        let got = p.allocate_n(2).unwrap();
        p.free(got[1]).unwrap();
        p.free(got[0]).unwrap();
        assert_eq!(got, [2, 3]);
        assert_eq!(p.free_stack(), &[0, 1, 3, 2]);
    }

    #[test]
    fn mamba_free_errors_change_nothing() {
        let mut p = slots(4);
        p.allocate().unwrap();
        let before = p.clone();
        assert_eq!(
            p.free(-1),
            Err(AllocError::OutOfRange {
                pool: MS,
                id: -1,
                limit: 4
            })
        );
        assert_eq!(p.free(0), Err(AllocError::DoubleFree { pool: MS, id: 0 }));
        assert_eq!(p, before);
    }

    #[test]
    fn mamba_free_on_full_pool_is_pool_full() {
        let mut p = slots(3);
        let before = p.clone();
        assert_eq!(
            p.free(1),
            Err(AllocError::PoolFull {
                pool: MS,
                capacity: 3
            })
        );
        assert_eq!(
            p.free(3),
            Err(AllocError::OutOfRange {
                pool: MS,
                id: 3,
                limit: 3
            })
        );
        assert_eq!(p, before);
    }

    #[test]
    fn mamba_free_rows_errors_change_nothing() {
        let mut p = slots(4);
        let got = p.allocate_n(3).unwrap(); // [1,2,3]
        p.set_row(0, got[0]).unwrap();
        p.set_row(1, got[1]).unwrap();
        p.set_row(2, got[2]).unwrap();
        let before = p.clone();
        assert_eq!(
            p.free_rows(&[0, 4]),
            Err(AllocError::RowOutOfRange { row: 4, rows: 4 })
        );
        assert_eq!(p, before);
        // A repeated row reaches its slot twice.
        assert_eq!(
            p.free_rows(&[1, 0, 1]),
            Err(AllocError::DoubleFree { pool: MS, id: 2 })
        );
        assert_eq!(p, before);
        // A mapped slot cannot be freed directly (that would leave a stale row).
        assert_eq!(
            p.free(got[2]),
            Err(AllocError::SlotMapped { slot: 3, row: 2 })
        );
        assert_eq!(p, before);
        // Rows 0 and 1 pass first, the repeat of row 1 fails: both must be rolled back.
        assert_eq!(
            p.free_rows(&[0, 1, 1]),
            Err(AllocError::DoubleFree { pool: MS, id: 2 })
        );
        assert_eq!(p, before);
        // Too many pushes for the room left: Megatron's overflow error comes first.
        assert_eq!(
            p.free_rows(&[0, 2, 1, 0]),
            Err(AllocError::PoolFull {
                pool: MS,
                capacity: 4
            })
        );
        assert_eq!(p, before);
        assert!(p.is_allocated(1) && p.is_allocated(2) && p.is_allocated(3));
        p.free_rows(&[1, 2, 0]).unwrap();
        assert_eq!(p.free_stack(), &[0, 2, 3, 1]);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn mamba_free_rows_overflow_is_pool_full() {
        let mut p = slots(2);
        let s = p.allocate().unwrap();
        p.set_row(0, s).unwrap();
        // Two rows sharing a slot (Megatron accepts it, and its free_slots then overflows)
        // are refused here.
        let before = p.clone();
        assert_eq!(
            p.set_row(1, s),
            Err(AllocError::SlotMapped { slot: s, row: 0 })
        );
        assert_eq!(p, before);
        // A repeated row still asks for more pushes than the stack has room for.
        assert_eq!(
            p.free_rows(&[0, 0]),
            Err(AllocError::PoolFull {
                pool: MS,
                capacity: 2
            })
        );
        assert_eq!(p, before);
    }

    /// Found by `tests/prop_alloc.rs`: freeing a slot a row still maps left the row
    /// pointing at it; once the slot was handed out again, `free_rows` of the stale row
    /// freed the new owner's slot, which was then handed out twice.
    #[test]
    fn mapped_slot_cannot_be_freed_or_shared() {
        let mut p = slots(3);
        let s = p.allocate().unwrap();
        p.set_row(0, s).unwrap();
        let before = p.clone();
        assert_eq!(p.free(s), Err(AllocError::SlotMapped { slot: s, row: 0 }));
        assert_eq!(p, before);
        // Detached, it can be freed (once); remapped, the old mapping is forgotten.
        let t = p.allocate().unwrap();
        p.set_row(0, t).unwrap();
        p.free(s).unwrap();
        assert_eq!(
            p.set_row(1, t),
            Err(AllocError::SlotMapped { slot: t, row: 0 })
        );
        assert_eq!(p.detach(0), Ok(t));
        p.set_row(1, t).unwrap();
        p.free_rows(&[1]).unwrap();
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.allocate_n(3), Some(vec![0, 2, 1]));
    }

    #[test]
    fn mamba_free_rows_empty_and_unmapped() {
        let mut p = slots(4);
        let before = p.clone();
        p.free_rows(&[]).unwrap();
        p.free_rows(&[0, 1, 2, 3]).unwrap();
        assert_eq!(p, before);
    }

    #[test]
    fn mamba_set_row_validation() {
        let mut p = slots(4);
        let s = p.allocate().unwrap();
        let before = p.clone();
        assert_eq!(
            p.set_row(4, s),
            Err(AllocError::RowOutOfRange { row: 4, rows: 4 })
        );
        assert_eq!(
            p.set_row(0, -1),
            Err(AllocError::OutOfRange {
                pool: MS,
                id: -1,
                limit: 4
            })
        );
        assert_eq!(
            p.set_row(0, 0),
            Err(AllocError::SlotNotAllocated { slot: 0 })
        );
        assert_eq!(p, before);
        p.set_row(2, s).unwrap();
        assert_eq!(p.row_slot(2), Some(s));
        assert_eq!(p.row_slot(1), None);
        assert_eq!(p.row_slot(99), None);
        assert_eq!(p.clear_row(2), Ok(Some(s)));
        assert_eq!(p.clear_row(2), Ok(None));
        assert_eq!(
            p.clear_row(4),
            Err(AllocError::RowOutOfRange { row: 4, rows: 4 })
        );
        assert!(p.is_allocated(s));
    }

    #[test]
    fn mamba_detach_then_free() {
        let mut p = slots(4);
        let other = p.allocate().unwrap();
        let s = p.allocate().unwrap();
        p.set_row(1, s).unwrap();
        assert_eq!(p.detach(1), Ok(s));
        assert_eq!(p.row_to_slot(), &[-1, -1, -1, -1]);
        assert_eq!(p.detach(1), Err(AllocError::RowHasNoSlot { row: 1 }));
        assert_eq!(
            p.detach(7),
            Err(AllocError::RowOutOfRange { row: 7, rows: 4 })
        );
        // The detached slot survives freeing of its row...
        p.free_rows(&[1]).unwrap();
        assert!(p.is_allocated(s));
        assert_eq!(p.free_count(), 2);
        // ...and can be freed exactly once.
        p.free(s).unwrap();
        assert_eq!(p.free(s), Err(AllocError::DoubleFree { pool: MS, id: s }));
        p.free(other).unwrap();
        assert_eq!(p.free_stack(), &[0, 1, 2, 3]);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn mamba_reset_clears_everything() {
        let mut p = slots(3);
        let s = p.allocate_n(2).unwrap();
        p.set_row(0, s[0]).unwrap();
        p.reset();
        assert_eq!(p, slots(3));
        assert_eq!(
            p.free(s[1]),
            Err(AllocError::PoolFull {
                pool: MS,
                capacity: 3
            })
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AllocError::OutOfRange {
                pool: MS,
                id: 7,
                limit: 4
            }
            .to_string(),
            "Mamba slot 7 is out of range (valid ids are 0..4)"
        );
        assert_eq!(
            AllocError::DoubleFree { pool: KV, id: 12 }.to_string(),
            "KV block 12 is not allocated (double free or foreign id)"
        );
    }

    // ---- Property test against a literal Megatron model ---------------------------------

    /// Megatron's allocators, transcribed without any checks beyond its own.
    mod megatron {
        pub struct Kv {
            pub bag: Vec<i32>,
            pub avail: usize,
        }
        impl Kv {
            pub fn new(pk: usize) -> Self {
                Self {
                    bag: (0..pk as i32).collect(),
                    avail: pk - 1,
                }
            }
            pub fn allocate(&mut self, n: usize) -> Option<Vec<i32>> {
                if self.avail < n {
                    return None;
                }
                self.avail -= n;
                Some(self.bag[self.avail..self.avail + n].to_vec())
            }
            pub fn release(&mut self, ids: &[i32]) {
                self.bag[self.avail..self.avail + ids.len()].copy_from_slice(ids);
                self.avail += ids.len();
            }
        }

        pub struct Slots {
            pub stack: Vec<i32>,
            pub c: usize,
            pub map: Vec<i32>,
        }
        impl Slots {
            pub fn new(r: usize) -> Self {
                Self {
                    stack: (0..r as i32).collect(),
                    c: r,
                    map: vec![-1; r],
                }
            }
            pub fn allocate(&mut self) -> Option<i32> {
                if self.c == 0 {
                    return None;
                }
                self.c -= 1;
                Some(self.stack[self.c])
            }
            pub fn allocate_n(&mut self, n: usize) -> Option<Vec<i32>> {
                if self.c < n {
                    return None;
                }
                self.c -= n;
                Some(self.stack[self.c..self.c + n].to_vec())
            }
            pub fn free(&mut self, s: i32) {
                self.stack[self.c] = s;
                self.c += 1;
            }
            pub fn free_rows(&mut self, rows: &[usize]) {
                let v: Vec<i32> = rows
                    .iter()
                    .map(|&r| self.map[r])
                    .filter(|&s| s != -1)
                    .collect();
                for s in v {
                    self.free(s);
                }
                for &r in rows {
                    self.map[r] = -1;
                }
            }
        }
    }

    use proptest::prelude::*;

    proptest! {
        /// Random operations, valid or not: whenever our allocator accepts a release it is
        /// a legitimate one and the results match Megatron's exactly; a rejected release
        /// changes nothing (and Megatron is not driven with it).
        #[test]
        fn kv_matches_megatron(pk in 2usize..12, ops in proptest::collection::vec(
            (0u8..3, 0usize..8, proptest::collection::vec(-2i32..14, 0..6)), 0..60)) {
            let mut ours = KvBlockAllocator::new(pk).unwrap();
            let mut theirs = megatron::Kv::new(pk);
            let mut held: Vec<i32> = Vec::new();
            for (kind, n, ids) in ops {
                match kind {
                    0 => {
                        let a = ours.allocate(n).map(<[i32]>::to_vec);
                        prop_assert_eq!(&a, &theirs.allocate(n));
                        held.extend(a.unwrap_or_default());
                    }
                    1 => {
                        // Release a random subset of held blocks, in a scrambled order.
                        let pick: Vec<i32> = held.iter().copied().rev().step_by(n % 3 + 1).collect();
                        ours.release(&pick).unwrap();
                        theirs.release(&pick);
                        held.retain(|b| !pick.contains(b));
                    }
                    _ => {
                        let before = ours.clone();
                        match ours.release(&ids) {
                            Ok(()) => {
                                theirs.release(&ids);
                                held.retain(|b| !ids.contains(b));
                            }
                            Err(_) => prop_assert_eq!(&ours, &before),
                        }
                    }
                }
                prop_assert_eq!(ours.bag(), &theirs.bag[..]);
                prop_assert_eq!(ours.available(), theirs.avail);
                prop_assert_eq!(ours.in_use(), held.len());
            }
        }

        /// Same for the slot pool, with rows mapped to allocated slots.
        #[test]
        fn slots_match_megatron(r in 1usize..8, ops in proptest::collection::vec(
            (0u8..6, 0usize..9, -2i32..10, proptest::collection::vec(0usize..9, 0..5)), 0..60)) {
            let mut ours = MambaSlotPool::new(r).unwrap();
            let mut theirs = megatron::Slots::new(r);
            for (kind, n, s, rows) in ops {
                let before = ours.clone();
                match kind {
                    0 => prop_assert_eq!(ours.allocate(), theirs.allocate()),
                    1 => prop_assert_eq!(ours.allocate_n(n), theirs.allocate_n(n)),
                    2 => if ours.free(s).is_ok() { theirs.free(s) } else {
                        prop_assert_eq!(&ours, &before);
                    },
                    3 => if ours.free_rows(&rows).is_ok() { theirs.free_rows(&rows) } else {
                        prop_assert_eq!(&ours, &before);
                    },
                    4 => if ours.set_row(n, s).is_ok() { theirs.map[n] = s } else {
                        prop_assert_eq!(&ours, &before);
                    },
                    _ => match ours.detach(n) {
                        Ok(got) => {
                            prop_assert_eq!(got, theirs.map[n]);
                            theirs.map[n] = -1;
                        }
                        Err(_) => prop_assert_eq!(&ours, &before),
                    },
                }
                prop_assert_eq!(ours.free_stack(), &theirs.stack[..theirs.c]);
                prop_assert_eq!(ours.row_to_slot(), &theirs.map[..]);
                // No slot is ever both free and allocated, and no free slot repeats.
                let mut seen = vec![false; r];
                for &f in ours.free_stack() {
                    prop_assert!(!seen[f as usize] && !ours.is_allocated(f));
                    seen[f as usize] = true;
                }
                prop_assert_eq!(ours.in_use() + ours.free_count(), r);
            }
        }
    }
}
