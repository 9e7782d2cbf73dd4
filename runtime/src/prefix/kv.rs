//! The KV block allocator with prefix caching (Megatron's caching `KVBlockAllocator`;
//! `docs/DESIGN.md`, "Prefix caching", and its deliberate differences D2 and D3).
//!
//! State, per block `b` of a pool of `P` (block `P − 1` is the reserved dummy, never handed
//! out): a reference count `ref[b]` (owners), a registered hash `hash[b]` (−1: none), and
//! under [`EvictionPolicy::Lru`] a last-use timestamp `ts[b]`, the parent block
//! `parent[b]` (−1: none) and the number of registered children `children[b]`. A
//! discovery index maps each registered hash to a block. Free blocks sit in a LIFO stack
//! exactly as in [`crate::alloc::KvBlockAllocator`].
//!
//! A block is *free* (in the stack: `ref == 0`, no hash), *in use* (`ref > 0`) or, under
//! LRU only, *cached* (`ref == 0` with a hash): a cached block can be matched again by a
//! new request with the same prefix, or evicted when the free stack runs short. Eviction
//! takes leaves of the prefix forest only (a block none of whose registered children is
//! left), oldest timestamp first, lower id on ties.
//!
//! Behaviour is Megatron's, op for op (`allocate`, `release`, `retain`, `register`,
//! `evict`, `is_memory_available`, `reset`), with these differences, each in
//! `docs/DESIGN.md` ("Prefix caching") with its test:
//!
//! * every failure is a typed [`PrefixError`] that changes nothing (Megatron's assertions
//!   are the same checks); ids outside the pool and the dummy block are refused;
//! * retaining or registering a *free* block is refused (Megatron corrupts its state);
//!   so is a registration naming a block twice, a non-positive hash, or a block as its
//!   own parent;
//! * deregistering a block removes its hash from the index only when the index maps the
//!   hash to *that* block (Megatron removes it whatever block it names, which hides a
//!   live block with the same hash and breaks the prefix chain);
//! * [`is_memory_available`](PrefixKvAllocator::is_memory_available) and the eviction
//!   inside [`allocate`](PrefixKvAllocator::allocate) count only blocks the leaf peel can
//!   actually reach (Megatron counts every cached block, so when a cached block has a
//!   descendant in use it promises blocks its eviction then asserts on);
//! * [`acquire`](PrefixKvAllocator::acquire) (pin the matched blocks, then allocate) is
//!   all or nothing, timestamps included.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::{BlockHash, DeregistrationObserver, PrefixError, block_index};

/// Largest pool: ids are `i32`.
const MAX_POOL: usize = i32::MAX as usize;

/// What happens to a block whose last owner releases it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EvictionPolicy {
    /// Deregistered and freed at once (Megatron's default): blocks are shared only between
    /// requests alive at the same time.
    #[default]
    RefZero,
    /// A registered block stays cached (matchable, evictable); allocation evicts cached
    /// leaves, least recently used first, when the free stack is short.
    Lru,
}

impl EvictionPolicy {
    /// Megatron's name (`ref_zero`, `lru`).
    pub fn name(self) -> &'static str {
        match self {
            Self::RefZero => "ref_zero",
            Self::Lru => "lru",
        }
    }

    /// The policy of a Megatron name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ref_zero" => Some(Self::RefZero),
            "lru" => Some(Self::Lru),
            _ => None,
        }
    }
}

/// The paged-KV block allocator with prefix caching. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixKvAllocator {
    policy: EvictionPolicy,
    /// Megatron's `block_bag`: `bag[0..avail)` is the free stack, the top last.
    bag: Vec<i32>,
    avail: usize,
    /// `hash[b]`, −1 for none.
    hash: Vec<BlockHash>,
    /// The discovery index, hash → block.
    map: HashMap<BlockHash, i32>,
    refs: Vec<u32>,
    /// LRU only (all 0 under ref_zero).
    ts: Vec<u64>,
    /// LRU only (all −1 under ref_zero).
    parent: Vec<i32>,
    /// LRU only (all 0 under ref_zero).
    children: Vec<u32>,
    /// The LRU clock (the engine's step counter).
    clock: u64,
}

/// `[0, 1, …, n−1]` as `i32` (`n ≤ MAX_POOL`).
fn iota(n: usize) -> impl Iterator<Item = i32> {
    (0..=i32::MAX).take(n)
}

/// Occurrences per distinct id, ascending (Megatron's `unique(return_counts=True)`).
fn counts(ids: &[i32]) -> BTreeMap<i32, usize> {
    let mut m = BTreeMap::new();
    for &b in ids {
        *m.entry(b).or_insert(0usize) += 1;
    }
    m
}

impl PrefixKvAllocator {
    /// A fresh pool of `pool_size` blocks (`pool_size − 1` is the dummy) under `policy`;
    /// the clock starts at 0.
    ///
    /// # Errors
    ///
    /// [`PrefixError::InvalidSize`] unless `2 ≤ pool_size ≤ i32::MAX`.
    pub fn new(pool_size: usize, policy: EvictionPolicy) -> Result<Self, PrefixError> {
        if !(2..=MAX_POOL).contains(&pool_size) {
            return Err(PrefixError::InvalidSize {
                what: "KV pool size",
                size: pool_size,
                min: 2,
                max: MAX_POOL,
            });
        }
        Ok(Self {
            policy,
            bag: iota(pool_size).collect(),
            avail: pool_size - 1,
            hash: vec![-1; pool_size],
            map: HashMap::new(),
            refs: vec![0; pool_size],
            ts: vec![0; pool_size],
            parent: vec![-1; pool_size],
            children: vec![0; pool_size],
            clock: 0,
        })
    }

    // ---- observation -----------------------------------------------------------------

    /// The eviction policy.
    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// Blocks in the pool, the dummy included (`P`).
    pub fn pool_size(&self) -> usize {
        self.bag.len()
    }

    /// The reserved dummy block, `P − 1`.
    pub fn dummy_block(&self) -> i32 {
        i32::try_from(self.bag.len().saturating_sub(1)).unwrap_or(i32::MAX)
    }

    /// Free blocks (Megatron's `total_avail`).
    pub fn available(&self) -> usize {
        self.avail
    }

    /// The free stack, the top last (allocation takes from the end).
    pub fn free_blocks(&self) -> &[i32] {
        self.bag.get(..self.avail).unwrap_or(&[])
    }

    /// Reference counts, per block.
    pub fn ref_counts(&self) -> &[u32] {
        &self.refs
    }

    /// Registered hashes, per block (−1: none).
    pub fn hashes(&self) -> &[BlockHash] {
        &self.hash
    }

    /// LRU timestamps, per block (all 0 under ref_zero).
    pub fn timestamps(&self) -> &[u64] {
        &self.ts
    }

    /// Parent blocks, per block (−1: none; all −1 under ref_zero).
    pub fn parents(&self) -> &[i32] {
        &self.parent
    }

    /// Registered children counts, per block (all 0 under ref_zero).
    pub fn children(&self) -> &[u32] {
        &self.children
    }

    /// The block registered under `hash`, if any (the discovery index).
    pub fn lookup(&self, hash: BlockHash) -> Option<i32> {
        self.map.get(&hash).copied()
    }

    /// The discovery index as `(hash, block)` pairs, ascending.
    pub fn index_entries(&self) -> Vec<(BlockHash, i32)> {
        let mut v: Vec<_> = self.map.iter().map(|(&h, &b)| (h, b)).collect();
        v.sort_unstable();
        v
    }

    /// Whether `block` is free (in the free stack). `false` for the dummy and ids outside
    /// the pool.
    pub fn is_free(&self, block: i32) -> bool {
        let Ok(i) = usize::try_from(block) else {
            return false;
        };
        block != self.dummy_block() && self.refs.get(i) == Some(&0) && self.hash.get(i) == Some(&-1)
    }

    /// Whether `block` is cached: no owner, still registered (matchable and evictable).
    pub fn is_cached(&self, block: i32) -> bool {
        usize::try_from(block).ok().is_some_and(|i| {
            self.refs.get(i) == Some(&0) && self.hash.get(i).is_some_and(|&h| h != -1)
        })
    }

    /// Blocks with at least one owner.
    pub fn in_use_count(&self) -> usize {
        self.refs.iter().filter(|&&r| r > 0).count()
    }

    /// Cached blocks: no owner, still registered (Megatron's `evictable` count). Some of
    /// them may not be evictable now; see [`evictable_count`](Self::evictable_count).
    pub fn cached_count(&self) -> usize {
        self.refs
            .iter()
            .zip(&self.hash)
            .filter(|&(&r, &h)| r == 0 && h != -1)
            .count()
    }

    /// How many of `blocks` are cached now (the `potential_matched_count` of an admission
    /// check: matched blocks that pinning takes out of the evictable ones).
    pub fn cached_among(&self, blocks: &[i32]) -> usize {
        blocks.iter().filter(|&&b| self.is_cached(b)).count()
    }

    /// Cached blocks that eviction can actually take (under ref_zero, 0): those with no
    /// descendant in use. Equal to [`cached_count`](Self::cached_count) as long as every
    /// owner of a block also owns its ancestors.
    pub fn evictable_count(&self) -> usize {
        if self.policy == EvictionPolicy::RefZero {
            return 0;
        }
        let mut left = self.children.clone();
        let mut stack: Vec<usize> = (0..self.refs.len())
            .filter(|&i| self.cached_at(i) && left.get(i) == Some(&0))
            .collect();
        let mut n = 0;
        while let Some(i) = stack.pop() {
            n += 1;
            if let Some(p) = self.cached_parent(i)
                && let Some(c) = left.get_mut(p)
                && *c > 0
            {
                *c -= 1;
                if *c == 0 {
                    stack.push(p);
                }
            }
        }
        n
    }

    /// Megatron's `allocatable`: free plus cached blocks under LRU, free blocks under
    /// ref_zero. It may count cached blocks eviction cannot reach; admission uses
    /// [`is_memory_available`](Self::is_memory_available).
    pub fn allocatable(&self) -> usize {
        match self.policy {
            EvictionPolicy::RefZero => self.avail,
            EvictionPolicy::Lru => self.avail.saturating_add(self.cached_count()),
        }
    }

    /// The LRU clock.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    // ---- the clock -------------------------------------------------------------------

    /// Sets the LRU clock (timestamps written from now on take this value).
    pub fn set_clock(&mut self, clock: u64) {
        self.clock = clock;
    }

    /// Advances the LRU clock by one (the engine does so after every step).
    pub fn tick(&mut self) {
        self.clock = self.clock.saturating_add(1);
    }

    // ---- operations ------------------------------------------------------------------

    /// Whether `n` blocks can be allocated once `potential_matched` currently cached
    /// blocks are pinned: `available ≥ n`, or (LRU) `available + evictable −
    /// potential_matched ≥ n`, where evictable counts only blocks the eviction can reach
    /// ([`evictable_count`](Self::evictable_count); Megatron counts every cached block).
    pub fn is_memory_available(&self, n: usize, potential_matched: usize) -> bool {
        if self.avail >= n {
            return true;
        }
        match self.policy {
            EvictionPolicy::RefZero => false,
            EvictionPolicy::Lru => {
                self.avail
                    .saturating_add(self.evictable_count())
                    .saturating_sub(potential_matched)
                    >= n
            }
        }
    }

    /// Takes `n` blocks: the top `n` of the free stack in ascending stack positions, each
    /// with one reference (LRU: timestamp = clock). Under LRU a short free stack is first
    /// topped up by [`evict`](Self::evict)ing `n − available` cached blocks, whose ids
    /// then come last, in eviction order. `None`, with nothing changed, when that is not
    /// possible. `allocate(0)` gives an empty vector.
    #[must_use = "an allocation that is not kept leaks its blocks"]
    pub fn allocate(
        &mut self,
        n: usize,
        observer: &mut impl DeregistrationObserver,
    ) -> Option<Vec<i32>> {
        if self.avail < n {
            if self.policy == EvictionPolicy::RefZero {
                return None;
            }
            match self.evict(n - self.avail, observer) {
                Ok(true) => {}
                Ok(false) | Err(_) => return None,
            }
        }
        let start = self.avail.checked_sub(n)?;
        let taken = self.bag.get(start..self.avail)?.to_vec();
        self.avail = start;
        for &b in &taken {
            if let Ok(i) = usize::try_from(b) {
                if let Some(r) = self.refs.get_mut(i) {
                    *r = 1;
                }
                if self.policy == EvictionPolicy::Lru
                    && let Some(t) = self.ts.get_mut(i)
                {
                    *t = self.clock;
                }
            }
        }
        Some(taken)
    }

    /// Drops one reference per occurrence of each block in `blocks` (a multiset: two
    /// finishing owners of a shared block name it twice). Blocks left without owners:
    /// under ref_zero, all of them are deregistered and freed in ascending id order (one
    /// observer call if there are any, even when none had a hash); under LRU, those without a hash are
    /// freed in ascending id order and registered ones become cached (no observer call).
    /// Timestamps are not touched.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`PrefixError::BlockOutOfRange`],
    /// [`PrefixError::DummyBlock`], [`PrefixError::OverRelease`] (more occurrences than
    /// references: Megatron's assertion; also a release of a free or cached block).
    pub fn release(
        &mut self,
        blocks: &[i32],
        observer: &mut impl DeregistrationObserver,
    ) -> Result<(), PrefixError> {
        if blocks.is_empty() {
            return Ok(());
        }
        let grouped = self.validate("release", blocks)?;
        for &(i, b, k) in &grouped {
            let held = self.refs.get(i).copied().unwrap_or(0);
            if usize::try_from(held).unwrap_or(usize::MAX) < k {
                return Err(PrefixError::OverRelease {
                    block: b,
                    held,
                    released: k,
                });
            }
        }
        let mut zero = Vec::new();
        for &(i, b, k) in &grouped {
            if let Some(r) = self.refs.get_mut(i) {
                *r = r.saturating_sub(u32::try_from(k).unwrap_or(u32::MAX));
                if *r == 0 {
                    zero.push(b);
                }
            }
        }
        match self.policy {
            EvictionPolicy::RefZero => self.deregister(&zero, observer),
            EvictionPolicy::Lru => {
                zero.retain(|&b| self.is_free(b));
                self.push_free(&zero);
            }
        }
        Ok(())
    }

    /// Adds one owner per occurrence of each block (a cached block becomes in use again);
    /// LRU: timestamp = clock for each.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`PrefixError::BlockOutOfRange`],
    /// [`PrefixError::DummyBlock`], [`PrefixError::FreeBlock`] (Megatron accepts a free
    /// block and corrupts its state), [`PrefixError::TooManyReferences`].
    pub fn retain(&mut self, blocks: &[i32]) -> Result<(), PrefixError> {
        let grouped = self.validate_retain("retain", blocks)?;
        self.apply_retain(&grouped);
        Ok(())
    }

    /// Registers `hashes[i]` for `blocks[i]`, with parents `parent_hashes[i]` (0 or
    /// `None`: no parent). A block that already holds the given hash is skipped; the
    /// index maps each hash to the last block registered with it. Under LRU each new
    /// entry's parent is the block the index gives for its parent hash (looked up after
    /// this call's own entries are indexed), and that parent gains a child. Reference
    /// counts and timestamps are not touched. An empty `blocks` is a no-op.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. [`PrefixError::LengthMismatch`] (`hashes` or
    /// `parent_hashes` of another length), [`PrefixError::BlockOutOfRange`],
    /// [`PrefixError::DummyBlock`], [`PrefixError::DuplicateBlock`],
    /// [`PrefixError::InvalidHash`] (a hash ≤ 0, or a parent hash equal to the block's
    /// own), [`PrefixError::FreeBlock`], [`PrefixError::HashConflict`] (the block holds
    /// another hash: Megatron's assertion).
    pub fn register(
        &mut self,
        blocks: &[i32],
        hashes: &[BlockHash],
        parent_hashes: Option<&[BlockHash]>,
    ) -> Result<(), PrefixError> {
        const CALL: &str = "register";
        if blocks.is_empty() {
            return Ok(());
        }
        if hashes.len() != blocks.len() {
            return Err(PrefixError::LengthMismatch {
                call: CALL,
                field: "hashes",
                expected: blocks.len(),
                got: hashes.len(),
            });
        }
        if let Some(p) = parent_hashes
            && p.len() != blocks.len()
        {
            return Err(PrefixError::LengthMismatch {
                call: CALL,
                field: "parent_hashes",
                expected: blocks.len(),
                got: p.len(),
            });
        }
        let parent_of = |j: usize| parent_hashes.and_then(|p| p.get(j).copied()).unwrap_or(0);
        let mut entries = Vec::with_capacity(blocks.len());
        let mut seen = std::collections::HashSet::with_capacity(blocks.len());
        for (j, (&b, &h)) in blocks.iter().zip(hashes).enumerate() {
            let i = self.check_block(CALL, b)?;
            if !seen.insert(b) {
                return Err(PrefixError::DuplicateBlock { block: b });
            }
            if h <= 0 || parent_of(j) == h {
                return Err(PrefixError::InvalidHash {
                    call: CALL,
                    block: b,
                    hash: h,
                });
            }
            if self.is_free(b) {
                return Err(PrefixError::FreeBlock {
                    call: CALL,
                    block: b,
                });
            }
            let held = self.hash.get(i).copied().unwrap_or(-1);
            if held != -1 && held != h {
                return Err(PrefixError::HashConflict {
                    block: b,
                    held,
                    given: h,
                });
            }
            if held != h {
                entries.push((i, b, h, parent_of(j)));
            }
        }
        for &(i, _, h, _) in &entries {
            if let Some(x) = self.hash.get_mut(i) {
                *x = h;
            }
        }
        for &(_, b, h, _) in &entries {
            self.map.insert(h, b);
        }
        if self.policy == EvictionPolicy::Lru {
            let parents: Vec<i32> = entries
                .iter()
                .map(|&(_, _, _, ph)| {
                    if ph == 0 {
                        -1
                    } else {
                        self.lookup(ph).unwrap_or(-1)
                    }
                })
                .collect();
            for (&(i, ..), &p) in entries.iter().zip(&parents) {
                if let Some(x) = self.parent.get_mut(i) {
                    *x = p;
                }
            }
            for &p in &parents {
                if let Some(c) = usize::try_from(p)
                    .ok()
                    .and_then(|p| self.children.get_mut(p))
                {
                    *c = c.saturating_add(1);
                }
            }
        }
        Ok(())
    }

    /// Evicts `n` cached blocks (LRU): leaves of the prefix forest, smallest `(timestamp,
    /// id)` first, a parent becoming a leaf once its cached children are taken. The taken
    /// blocks are deregistered in that order (one observer call) and pushed on the free
    /// stack. `Ok(false)`, nothing changed, when fewer than `n` blocks are cached;
    /// `Ok(true)` for `n = 0`.
    ///
    /// # Errors
    ///
    /// [`PrefixError::NotAForest`], nothing changed, when enough blocks are cached but
    /// fewer than `n` can be reached (a cached block with a descendant in use: Megatron's
    /// assertion).
    pub fn evict(
        &mut self,
        n: usize,
        observer: &mut impl DeregistrationObserver,
    ) -> Result<bool, PrefixError> {
        if self.cached_count() < n {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
        let taken = self.peel(n);
        if taken.len() < n {
            return Err(PrefixError::NotAForest {
                requested: n,
                evictable: self.evictable_count(),
            });
        }
        self.deregister(&taken, observer);
        Ok(true)
    }

    /// Pins `matched` (one reference each, LRU: timestamp = clock), then allocates
    /// `new_blocks` blocks, evicting under LRU (the pinned blocks cannot be evicted):
    /// what an admission with a prefix hit does. All or nothing: on failure the pins are
    /// undone, timestamps included.
    ///
    /// # Errors
    ///
    /// Nothing changes on error. Those of [`retain`](Self::retain) for `matched`, and
    /// [`PrefixError::BlockOverflow`] when the pool cannot provide `new_blocks`.
    pub fn acquire(
        &mut self,
        matched: &[i32],
        new_blocks: usize,
        observer: &mut impl DeregistrationObserver,
    ) -> Result<Vec<i32>, PrefixError> {
        let grouped = self.validate_retain("acquire", matched)?;
        let saved: Vec<u64> = grouped
            .iter()
            .map(|&(i, ..)| self.ts.get(i).copied().unwrap_or(0))
            .collect();
        self.apply_retain(&grouped);
        if let Some(ids) = self.allocate(new_blocks, observer) {
            return Ok(ids);
        }
        let available = match self.policy {
            EvictionPolicy::RefZero => self.avail,
            EvictionPolicy::Lru => self.avail.saturating_add(self.evictable_count()),
        };
        for (&(i, _, k), &t) in grouped.iter().zip(&saved) {
            if let Some(r) = self.refs.get_mut(i) {
                *r = r.saturating_sub(u32::try_from(k).unwrap_or(u32::MAX));
            }
            if let Some(x) = self.ts.get_mut(i) {
                *x = t;
            }
        }
        Err(PrefixError::BlockOverflow {
            required: new_blocks,
            available,
        })
    }

    /// Back to the initial state: every block free, no hash, no reference, the index
    /// empty. The clock is kept (the engine resets it with its own counters); no observer
    /// is told.
    pub fn reset(&mut self) {
        for (x, id) in self.bag.iter_mut().zip(iota(usize::MAX)) {
            *x = id;
        }
        self.avail = self.bag.len().saturating_sub(1);
        self.hash.fill(-1);
        self.map.clear();
        self.refs.fill(0);
        self.ts.fill(0);
        self.parent.fill(-1);
        self.children.fill(0);
    }

    // ---- internals -------------------------------------------------------------------

    fn check_block(&self, call: &'static str, b: i32) -> Result<usize, PrefixError> {
        let i = block_index(call, b, self.bag.len())?;
        if b == self.dummy_block() {
            return Err(PrefixError::DummyBlock { call, block: b });
        }
        Ok(i)
    }

    /// Range and dummy checks, grouped by distinct id: `(index, id, occurrences)`.
    fn validate(
        &self,
        call: &'static str,
        blocks: &[i32],
    ) -> Result<Vec<(usize, i32, usize)>, PrefixError> {
        counts(blocks)
            .into_iter()
            .map(|(b, k)| self.check_block(call, b).map(|i| (i, b, k)))
            .collect()
    }

    fn validate_retain(
        &self,
        call: &'static str,
        blocks: &[i32],
    ) -> Result<Vec<(usize, i32, usize)>, PrefixError> {
        let grouped = self.validate(call, blocks)?;
        for &(i, b, k) in &grouped {
            if self.is_free(b) {
                return Err(PrefixError::FreeBlock { call, block: b });
            }
            let held = self.refs.get(i).copied().unwrap_or(0);
            if u32::try_from(k)
                .ok()
                .and_then(|k| held.checked_add(k))
                .is_none()
            {
                return Err(PrefixError::TooManyReferences {
                    block: b,
                    max: u32::MAX,
                });
            }
        }
        Ok(grouped)
    }

    fn apply_retain(&mut self, grouped: &[(usize, i32, usize)]) {
        for &(i, _, k) in grouped {
            if let Some(r) = self.refs.get_mut(i) {
                *r = r.saturating_add(u32::try_from(k).unwrap_or(u32::MAX));
            }
            if self.policy == EvictionPolicy::Lru
                && let Some(t) = self.ts.get_mut(i)
            {
                *t = self.clock;
            }
        }
    }

    fn cached_at(&self, i: usize) -> bool {
        self.refs.get(i) == Some(&0) && self.hash.get(i).is_some_and(|&h| h != -1)
    }

    /// The parent of block `i` when it is cached.
    fn cached_parent(&self, i: usize) -> Option<usize> {
        let p = usize::try_from(*self.parent.get(i)?).ok()?;
        self.cached_at(p).then_some(p)
    }

    /// The leaf peel: up to `limit` cached blocks in eviction order.
    fn peel(&self, limit: usize) -> Vec<i32> {
        let mut left = self.children.clone();
        let mut heap: BinaryHeap<Reverse<(u64, i32)>> = BinaryHeap::new();
        for (i, b) in iota(self.refs.len()).enumerate() {
            if self.cached_at(i) && left.get(i) == Some(&0) {
                heap.push(Reverse((self.ts.get(i).copied().unwrap_or(0), b)));
            }
        }
        let mut taken = Vec::with_capacity(limit);
        while taken.len() < limit {
            let Some(Reverse((_, b))) = heap.pop() else {
                break;
            };
            taken.push(b);
            let Ok(i) = usize::try_from(b) else { continue };
            if let Some(p) = self.cached_parent(i)
                && let Some(c) = left.get_mut(p)
                && *c > 0
            {
                *c -= 1;
                if *c == 0 {
                    let pb = i32::try_from(p).unwrap_or(i32::MAX);
                    heap.push(Reverse((self.ts.get(p).copied().unwrap_or(0), pb)));
                }
            }
        }
        taken
    }

    /// Deregisters `blocks` (in this order) and frees them; one observer call with the
    /// hashes they held (none for an empty list).
    fn deregister(&mut self, blocks: &[i32], observer: &mut impl DeregistrationObserver) {
        if blocks.is_empty() {
            return;
        }
        let mut removed: Vec<BlockHash> = Vec::new();
        for &b in blocks {
            let Ok(i) = usize::try_from(b) else { continue };
            let h = self.hash.get(i).copied().unwrap_or(-1);
            if h != -1 {
                removed.push(h);
                if self.map.get(&h) == Some(&b) {
                    self.map.remove(&h);
                }
            }
            if self.policy == EvictionPolicy::Lru {
                if let Some(p) = self.parent.get(i).and_then(|&p| usize::try_from(p).ok())
                    && let Some(c) = self.children.get_mut(p)
                {
                    *c = c.saturating_sub(1);
                }
                if let Some(x) = self.parent.get_mut(i) {
                    *x = -1;
                }
                if let Some(x) = self.children.get_mut(i) {
                    *x = 0;
                }
                if let Some(x) = self.ts.get_mut(i) {
                    *x = 0;
                }
            }
            if let Some(x) = self.hash.get_mut(i) {
                *x = -1;
            }
            if let Some(x) = self.refs.get_mut(i) {
                *x = 0;
            }
        }
        self.push_free(blocks);
        removed.sort_unstable();
        removed.dedup();
        observer.deregistered(blocks, &removed);
    }

    /// Pushes `blocks` on the free stack in order. They are distinct blocks that were not
    /// free, so they fit below the dummy.
    fn push_free(&mut self, blocks: &[i32]) {
        let end = self.avail.saturating_add(blocks.len());
        if end < self.bag.len()
            && let Some(dst) = self.bag.get_mut(self.avail..end)
        {
            dst.copy_from_slice(blocks);
            self.avail = end;
        }
    }
}
