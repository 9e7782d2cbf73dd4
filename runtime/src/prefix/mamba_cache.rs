//! The durable Mamba state cache (Megatron's `MambaSlotAllocator`; `docs/DESIGN.md`,
//! "Prefix caching", differences D1, D5 and D5b): `S` slots, each holding the Mamba state (conv + SSM, all layers)
//! after some KV block, so a later request with that prefix can restore it instead of
//! recomputing the prefix.
//!
//! State: `block_to_slot` (per KV block, −1: none), `slot_to_block` (per slot), a LIFO
//! free stack of slots, and an index hash → block of the hashes whose state is cached.
//! Slots are taken by [`allocate_slots`](MambaStateCache::allocate_slots) (free ones
//! first, then evicting slots of blocks without KV owners: least recently used under LRU,
//! lowest id under ref_zero), returned by [`invalidate`](MambaStateCache::invalidate) and
//! when the KV allocator deregisters a block whose hash is indexed here (the cache is a
//! [`DeregistrationObserver`]).
//!
//! Megatron's behaviour, with these differences (`docs/DESIGN.md`, "Prefix caching"):
//!
//! * a block being given a slot is never chosen as an eviction victim in the same call
//!   (Megatron may evict it and hand its old slot to another block too: one slot, two
//!   blocks);
//! * evicting a slot removes the victim's hash from the index only when the index maps it
//!   to the victim;
//! * a Mamba hash is registered only for a block that holds a slot and that KV hash;
//! * whether a matched block's state can be restored is
//!   [`holds_state`](MambaStateCache::holds_state) (index entry *and* slot), and
//!   [`restore_slot`](MambaStateCache::restore_slot) refuses a block without a slot (after
//!   [`invalidate`](MambaStateCache::invalidate) Megatron keeps the hash indexed, matches
//!   on it, then silently restores a zero state);
//! * eviction order under LRU is ascending `(timestamp, block id)` (Megatron's is an
//!   unordered top-k, unspecified on ties).

use std::collections::HashMap;

use super::kv::{EvictionPolicy, PrefixKvAllocator};
use super::{BlockHash, DeregistrationObserver, PrefixError, block_index};

/// Largest cache: slots are `i32`.
const MAX_SLOTS: usize = i32::MAX as usize;

/// The result of [`MambaStateCache::allocate_slots`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotAllocation {
    /// The slot of each input block, in input order (a repeated block, its one slot).
    pub slots: Vec<i32>,
    /// Blocks that lost their slot to this call, ascending.
    pub evicted: Vec<i32>,
}

/// The durable Mamba state cache. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MambaStateCache {
    block_to_slot: Vec<i32>,
    slot_to_block: Vec<i32>,
    /// `free[0..free_count)` is the free stack, the top last.
    free: Vec<i32>,
    free_count: usize,
    map: HashMap<BlockHash, i32>,
}

impl MambaStateCache {
    /// A fresh cache of `slots` slots for a KV pool of `pool_size` blocks.
    ///
    /// # Errors
    ///
    /// [`PrefixError::InvalidSize`] unless `1 ≤ slots ≤ i32::MAX` and
    /// `2 ≤ pool_size ≤ i32::MAX` (Megatron's `S < 1` configuration error).
    pub fn new(slots: usize, pool_size: usize) -> Result<Self, PrefixError> {
        if !(1..=MAX_SLOTS).contains(&slots) {
            return Err(PrefixError::InvalidSize {
                what: "Mamba cache slots",
                size: slots,
                min: 1,
                max: MAX_SLOTS,
            });
        }
        if !(2..=MAX_SLOTS).contains(&pool_size) {
            return Err(PrefixError::InvalidSize {
                what: "KV pool size",
                size: pool_size,
                min: 2,
                max: MAX_SLOTS,
            });
        }
        Ok(Self {
            block_to_slot: vec![-1; pool_size],
            slot_to_block: vec![-1; slots],
            free: (0..=i32::MAX).take(slots).collect(),
            free_count: slots,
            map: HashMap::new(),
        })
    }

    /// Number of slots, `S`.
    pub fn slots(&self) -> usize {
        self.slot_to_block.len()
    }

    /// Free slots.
    pub fn free_count(&self) -> usize {
        self.free_count
    }

    /// The free stack, the top last.
    pub fn free_slots(&self) -> &[i32] {
        self.free.get(..self.free_count).unwrap_or(&[])
    }

    /// The slot of each KV block (−1: none).
    pub fn block_to_slot(&self) -> &[i32] {
        &self.block_to_slot
    }

    /// The block of each slot (−1: free).
    pub fn slot_to_block(&self) -> &[i32] {
        &self.slot_to_block
    }

    /// The index as `(hash, block)` pairs, ascending.
    pub fn index_entries(&self) -> Vec<(BlockHash, i32)> {
        let mut v: Vec<_> = self.map.iter().map(|(&h, &b)| (h, b)).collect();
        v.sort_unstable();
        v
    }

    /// The slot holding `block`'s state (`None` also for ids outside the pool).
    pub fn slot(&self, block: i32) -> Option<i32> {
        let i = usize::try_from(block).ok()?;
        self.block_to_slot.get(i).copied().filter(|&s| s >= 0)
    }

    /// Whether `block` holds a slot (Megatron's `has_state`).
    pub fn has_state(&self, block: i32) -> bool {
        self.slot(block).is_some()
    }

    /// Whether the Mamba state after the prefix `hash` is cached in matched `block`: the
    /// index maps `hash` to `block` and the block holds a slot. The `mamba_cached` lookup
    /// of [`super::compute_prefix_match`].
    pub fn holds_state(&self, hash: BlockHash, block: i32) -> bool {
        self.map.get(&hash) == Some(&block) && self.has_state(block)
    }

    /// The slot to restore a request's live state from, for matched `block`.
    ///
    /// # Errors
    ///
    /// [`PrefixError::NoMambaState`] when the block holds no slot (Megatron zeroes the
    /// live state instead).
    pub fn restore_slot(&self, block: i32) -> Result<i32, PrefixError> {
        self.slot(block).ok_or(PrefixError::NoMambaState { block })
    }

    /// Gives each of `blocks` a slot: blocks that have one keep it; the others (each
    /// once, in first-occurrence order) take free slots from the top of the stack
    /// (ascending stack positions), then slots evicted from blocks without KV owners that
    /// are not among `blocks`: under LRU smallest `(timestamp, id)` first, under ref_zero
    /// lowest id first. An evicted block's hash leaves the index when the index maps it
    /// to that block. An empty `blocks` gives an empty result.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`PrefixError::BlockOutOfRange`] (against the KV pool),
    /// [`PrefixError::MambaSlotCapacity`] when free plus evictable slots are too few.
    pub fn allocate_slots(
        &mut self,
        kv: &PrefixKvAllocator,
        blocks: &[i32],
    ) -> Result<SlotAllocation, PrefixError> {
        const CALL: &str = "allocate_slots";
        if blocks.is_empty() {
            return Ok(SlotAllocation::default());
        }
        let pool = self.block_to_slot.len();
        let mut new: Vec<i32> = Vec::new();
        let mut in_batch = vec![false; pool];
        for &b in blocks {
            let i = block_index(CALL, b, pool)?;
            if let Some(seen) = in_batch.get_mut(i)
                && !*seen
            {
                *seen = true;
                if !self.has_state(b) {
                    new.push(b);
                }
            }
        }
        let k = new.len().min(self.free_count);
        let mut victims: Vec<i32> = Vec::new();
        if new.len() > k {
            let refs = kv.ref_counts();
            let ts = kv.timestamps();
            let mut candidates: Vec<(u64, i32)> = self
                .block_to_slot
                .iter()
                .enumerate()
                .filter(|&(i, &s)| {
                    s >= 0 && refs.get(i) == Some(&0) && !in_batch.get(i).is_some_and(|&x| x)
                })
                .map(|(i, _)| {
                    let b = i32::try_from(i).unwrap_or(i32::MAX);
                    match kv.policy() {
                        EvictionPolicy::Lru => (ts.get(i).copied().unwrap_or(0), b),
                        EvictionPolicy::RefZero => (0, b),
                    }
                })
                .collect();
            let available = self.free_count.saturating_add(candidates.len());
            if available < new.len() {
                return Err(PrefixError::MambaSlotCapacity {
                    required: new.len(),
                    available,
                });
            }
            candidates.sort_unstable();
            victims = candidates
                .iter()
                .take(new.len() - k)
                .map(|&(_, b)| b)
                .collect();
        }
        // Free slots, in ascending stack positions, then the victims' slots.
        let start = self.free_count - k;
        let mut given: Vec<i32> = self
            .free
            .get(start..self.free_count)
            .unwrap_or(&[])
            .to_vec();
        self.free_count = start;
        for &v in &victims {
            let Some(s) = self.slot(v) else { continue };
            given.push(s);
            self.unmap(v, s);
            let h = kv
                .hashes()
                .get(usize::try_from(v).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or(-1);
            if h > 0 && self.map.get(&h) == Some(&v) {
                self.map.remove(&h);
            }
        }
        for (&b, &s) in new.iter().zip(&given) {
            self.map_slot(b, s);
        }
        let slots = blocks.iter().map(|&b| self.slot(b).unwrap_or(-1)).collect();
        victims.sort_unstable();
        Ok(SlotAllocation {
            slots,
            evicted: victims,
        })
    }

    /// Frees `block`'s slot, if it has one. The index is not touched (a stale entry is
    /// harmless: [`holds_state`](Self::holds_state) also needs the slot).
    pub fn invalidate(&mut self, block: i32) {
        if let Some(s) = self.slot(block) {
            self.unmap(block, s);
            self.push_free(s);
        }
    }

    /// Indexes `hashes[i]` → `blocks[i]` for every positive hash, in order (a later entry
    /// wins); non-positive hashes are skipped.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`PrefixError::LengthMismatch`],
    /// [`PrefixError::BlockOutOfRange`], [`PrefixError::NotCommitted`] for a block
    /// without a slot or whose KV hash is another (Megatron indexes it anyway).
    pub fn register_hashes(
        &mut self,
        kv: &PrefixKvAllocator,
        blocks: &[i32],
        hashes: &[BlockHash],
    ) -> Result<(), PrefixError> {
        const CALL: &str = "register_mamba_hashes";
        if blocks.len() != hashes.len() {
            return Err(PrefixError::LengthMismatch {
                call: CALL,
                field: "hashes",
                expected: blocks.len(),
                got: hashes.len(),
            });
        }
        for (&b, &h) in blocks.iter().zip(hashes) {
            let i = block_index(CALL, b, self.block_to_slot.len())?;
            if h <= 0 {
                continue;
            }
            if !self.has_state(b) {
                return Err(PrefixError::NotCommitted {
                    block: b,
                    reason: "has no Mamba cache slot".into(),
                });
            }
            let held = kv.hashes().get(i).copied().unwrap_or(-1);
            if held != h {
                return Err(PrefixError::NotCommitted {
                    block: b,
                    reason: format!("holds KV hash {held}, not {h}"),
                });
            }
        }
        for (&b, &h) in blocks.iter().zip(hashes) {
            if h > 0 {
                self.map.insert(h, b);
            }
        }
        Ok(())
    }

    /// Back to the initial state (no slot mapped, the stack `[0..S)`, the index empty).
    pub fn reset(&mut self) {
        self.block_to_slot.fill(-1);
        self.slot_to_block.fill(-1);
        for (x, s) in self.free.iter_mut().zip(0..=i32::MAX) {
            *x = s;
        }
        self.free_count = self.free.len();
        self.map.clear();
    }

    fn unmap(&mut self, block: i32, slot: i32) {
        if let Some(x) = usize::try_from(block)
            .ok()
            .and_then(|i| self.block_to_slot.get_mut(i))
        {
            *x = -1;
        }
        if let Some(x) = usize::try_from(slot)
            .ok()
            .and_then(|i| self.slot_to_block.get_mut(i))
        {
            *x = -1;
        }
    }

    fn map_slot(&mut self, block: i32, slot: i32) {
        if let Some(x) = usize::try_from(block)
            .ok()
            .and_then(|i| self.block_to_slot.get_mut(i))
        {
            *x = slot;
        }
        if let Some(x) = usize::try_from(slot)
            .ok()
            .and_then(|i| self.slot_to_block.get_mut(i))
        {
            *x = block;
        }
    }

    /// Pushes a slot that was mapped (so the stack has room).
    fn push_free(&mut self, slot: i32) {
        if let Some(x) = self.free.get_mut(self.free_count) {
            *x = slot;
            self.free_count += 1;
        }
    }
}

/// The KV deregistration hook (Megatron's callback): when one of the deregistered hashes
/// is indexed, those index entries go and every deregistered block that holds a slot
/// frees it (in the order given); otherwise nothing changes (a block with a slot but no
/// indexed hash keeps it, as in Megatron; it is never restored from, see
/// [`holds_state`](MambaStateCache::holds_state), and a later commit overwrites it).
impl DeregistrationObserver for MambaStateCache {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        let mut hit = false;
        for h in hashes {
            hit |= self.map.remove(h).is_some();
        }
        if !hit {
            return;
        }
        for &b in blocks {
            self.invalidate(b);
        }
    }
}
