//! Prefix caching in the batch state: [`BatchState::with_prefix_caching`].
//!
//! A request admitted with its prompt tokens ([`BatchState::admit_prompt`]) gets the
//! block hashes of its prompt ([`crate::prefix::block_hashes`]). Each prefill chunk it is
//! scheduled for is matched against the cache ([`compute_prefix_match`]: Megatron's skip
//! rules, the chunk caps and, for hybrid layouts, the Mamba back-off); the matched blocks
//! are pinned and the new ones allocated in one all-or-nothing
//! [`PrefixKvAllocator::acquire`]. The matched blocks fill the request's block list at the
//! chunk's first block positions, so a block shared by several requests sits in several
//! rows of the resident table (the residency contract of the [parent module](super) is
//! unchanged: every entry is still an absolute store). The skipped tokens count as
//! processed: the request's `kv_offset` and processed prompt move to `f + skip` when the
//! chunk is scheduled and its step row has `q − skip` query tokens.
//!
//! A chunk's complete prompt blocks are registered (hash and parent hash) when the step
//! that computes them is committed, not when it is scheduled as Megatron does: a block
//! whose KV is not yet written is never matched. Finishing or releasing a request drops
//! one reference per block it holds; under `ref_zero` a block without owners is freed at
//! once, under `lru` a registered one stays cached until an allocation evicts it.
//!
//! Hybrid layouts with a durable Mamba state cache
//! ([`PrefixOptions::mamba_cache_slots`]) also get, per scheduled prefill chunk, the
//! intermediate extraction offsets ([`compute_intermediate_offsets`], handed to the step
//! as `StepInput::intermediate`), the durable slot a hit restores the live state from
//! ([`BatchState::prefix_hit`]), and at commit the durable slots the extracted states are
//! to be stored in ([`BatchState::mamba_stores`]). A hit never restores from a block
//! whose state is not cached: matching counts only blocks that hold a slot and an index
//! entry, and the restore slot is looked up (and checked) when the chunk is scheduled.

use std::num::NonZeroU32;

use super::append_blocks;
use super::{BatchError, BatchState, Entry, RequestHandle};
use crate::dims::Dims;
use crate::prefix::{
    BlockHash, DeregistrationObserver, EvictionPolicy, IntermediateStates, MambaMode,
    MambaStateCache, MatchQuery, OffsetsQuery, PrefixError, PrefixKvAllocator, block_hashes,
    compute_intermediate_offsets, compute_prefix_match,
};
use crate::step::IntermediateOffsets;

/// How a [`BatchState`] caches prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixOptions {
    /// What happens to a block whose last owner leaves (Megatron's
    /// `prefix_caching_eviction_policy`).
    pub policy: EvictionPolicy,
    /// Durable Mamba state slots (hybrid layouts only). `None` on a hybrid layout is
    /// Megatron's "memory-only" mode: KV blocks are shared, but a first chunk never skips
    /// a token (its Mamba state could not be restored). [`PrefixOptions::for_layout`]
    /// takes it from the layout's `memory.prefix_caching_mamba_gb`.
    pub mamba_cache_slots: Option<usize>,
}

impl PrefixOptions {
    /// The options of a layout under `policy`: the durable Mamba cache slots its
    /// `memory.prefix_caching_mamba_gb` buys (Megatron's sizing,
    /// [`crate::codegen::memory::prefix_mamba_cache_slots`]), none without the key.
    pub fn for_layout(geometry: &crate::Geometry, policy: EvictionPolicy) -> Self {
        Self {
            policy,
            mamba_cache_slots: geometry.prefix_mamba_cache_slots(),
        }
    }
}

/// What prefix caching did for a prefill chunk scheduled this step
/// ([`BatchState::prefix_hit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixHit {
    /// Cached blocks the chunk matched (pinned into its block list).
    pub matched_blocks: u32,
    /// Leading prompt tokens of the chunk not recomputed.
    pub skip_tokens: u32,
    /// Tokens the step computes for it (`chunk − skip`).
    pub query_length: u32,
    /// The durable Mamba slot the engine restores the request's live Mamba state from
    /// before the step (a first chunk that skips tokens on a hybrid layout); `None`: the
    /// live state starts from zero as usual (nothing skipped).
    pub restore_from: Option<i32>,
}

/// A Mamba state the engine copies into the durable cache after a committed step
/// ([`BatchState::mamba_stores`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MambaStore {
    /// The request whose state it is.
    pub handle: RequestHandle,
    /// The KV block the state follows (the state after the block's last token).
    pub block: i32,
    /// The durable slot to write.
    pub slot: i32,
    /// Where in the step's chunk the state was extracted: `Some(k)` for the request's
    /// `k`-th intermediate offset of the step, `None` for its final state (the chunk
    /// ended the prompt on a block boundary).
    pub intermediate: Option<u8>,
}

/// Counters of a [`BatchState`] with prefix caching, over committed steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixStats {
    /// Prefill chunks committed of requests admitted with their prompt tokens.
    pub lookups: u64,
    /// Those that matched at least one cached block.
    pub hits: u64,
    /// Blocks matched, over all chunks.
    pub matched_blocks: u64,
    /// Prompt tokens not recomputed.
    pub skipped_tokens: u64,
    /// Prompt tokens computed.
    pub computed_tokens: u64,
    /// Cached KV blocks evicted (LRU) to make room.
    pub evicted_blocks: u64,
    /// Chunks that restored their Mamba state from the durable cache.
    pub mamba_restores: u64,
    /// Mamba states stored into the durable cache.
    pub mamba_stores: u64,
    /// Mamba states not stored for lack of durable slots (an optimisation lost).
    pub mamba_stores_dropped: u64,
}

/// The chunk a request is scheduled for.
#[derive(Debug, Clone, Copy)]
struct ChunkPlan {
    matched: u32,
    skip: u32,
    effective: u32,
    restore: Option<i32>,
    /// Intermediate states, with block *positions* in the request's list as block ids.
    states: Option<IntermediateStates>,
}

#[derive(Debug, Clone, Default)]
struct PrefixRow {
    hashes: Vec<BlockHash>,
    /// Leading blocks registered (or matched) so far.
    registered: u32,
    plan: Option<ChunkPlan>,
}

/// The observer of KV deregistrations: the Mamba cache, if any, and an eviction count.
struct Observer<'a> {
    mamba: Option<&'a mut MambaStateCache>,
    blocks: u64,
}

impl DeregistrationObserver for Observer<'_> {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        self.blocks = self.blocks.saturating_add(blocks.len() as u64);
        if let Some(m) = self.mamba.as_deref_mut() {
            m.deregistered(blocks, hashes);
        }
    }
}

/// The prefix-caching part of a [`BatchState`].
#[derive(Debug)]
pub(super) struct PrefixState {
    kv: PrefixKvAllocator,
    mamba: Option<MambaStateCache>,
    mode: MambaMode,
    chunk_size: u32,
    rows: Vec<PrefixRow>,
    /// Per prefill row of the step built last (hybrid layouts with a Mamba cache).
    intermediate: Vec<IntermediateOffsets>,
    stores: Vec<MambaStore>,
    stats: PrefixStats,
    /// Under LRU, `available + evictable_count` as of the last KV change (the leaf peel is
    /// O(pool); schedulers ask for it once per request and step).
    allocatable: std::cell::Cell<Option<usize>>,
    /// Blocks with two owners or more (kept as owners come and go).
    shared: usize,
}

impl PrefixState {
    /// Blocks a new allocation can get: free ones, under LRU also the cached ones the
    /// leaf peel reaches.
    fn allocatable(&self) -> usize {
        match self.kv.policy() {
            EvictionPolicy::RefZero => self.kv.available(),
            EvictionPolicy::Lru => {
                if let Some(n) = self.allocatable.get() {
                    return n;
                }
                let n = self
                    .kv
                    .available()
                    .saturating_add(self.kv.evictable_count());
                self.allocatable.set(Some(n));
                n
            }
        }
    }

    /// The KV allocator to change (forgets the memoized allocatable count) and the
    /// observer of its deregistrations.
    fn observer(&mut self) -> (&mut PrefixKvAllocator, Observer<'_>) {
        self.allocatable.set(None);
        (
            &mut self.kv,
            Observer {
                mamba: self.mamba.as_mut(),
                blocks: 0,
            },
        )
    }

    /// `n` new blocks (evicting cached ones under LRU); `None` when short.
    pub(super) fn allocate(&mut self, n: usize) -> Option<Vec<i32>> {
        let (kv, mut obs) = self.observer();
        let ids = kv.allocate(n, &mut obs);
        let evicted = obs.blocks;
        self.stats.evicted_blocks = self.stats.evicted_blocks.saturating_add(evicted);
        ids
    }

    /// Drops a row's references (its blocks are distinct) and forgets its prompt.
    pub(super) fn release_row(&mut self, row: u32, ids: &[i32]) -> Result<(), BatchError> {
        let unshared = ids
            .iter()
            .filter(|&&blk| {
                usize::try_from(blk)
                    .ok()
                    .and_then(|i| self.kv.ref_counts().get(i))
                    == Some(&2)
            })
            .count();
        let (kv, mut obs) = self.observer();
        kv.release(ids, &mut obs)?;
        self.shared = self.shared.saturating_sub(unshared);
        if let Some(r) = self.rows.get_mut(row as usize) {
            *r = PrefixRow::default();
        }
        Ok(())
    }

    pub(super) fn reset(&mut self) {
        self.allocatable.set(None);
        self.shared = 0;
        self.kv.reset();
        self.kv.set_clock(0);
        if let Some(m) = &mut self.mamba {
            m.reset();
        }
        self.rows.fill(PrefixRow::default());
        self.intermediate.clear();
        self.stores.clear();
    }

    pub(super) fn begin_commit(&mut self) {
        self.stores.clear();
    }

    /// After a committed step: the LRU clock moves on (Megatron's engine step counter).
    pub(super) fn end_step(&mut self) {
        self.allocatable.set(None);
        self.kv.tick();
    }

    pub(super) fn step_intermediate(&self) -> Option<&[IntermediateOffsets]> {
        (self.mode == MambaMode::Cache).then_some(self.intermediate.as_slice())
    }
}

impl BatchState {
    /// An empty table for a layout, with prefix caching (`docs/DESIGN.md`, "Prefix
    /// caching in the batch state"). Requests admitted with
    /// [`admit_prompt`](Self::admit_prompt) share the KV blocks of common prompt prefixes;
    /// [`admit`](Self::admit) still works (a request without tokens never matches).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`BatchError::Prefix`] for a Mamba cache of 0 slots;
    /// [`BatchError::Layout`] for Mamba cache slots on a layout without Mamba.
    pub fn with_prefix_caching<D: Dims>(
        dims: &D,
        options: PrefixOptions,
    ) -> Result<Self, BatchError> {
        let mut state = Self::new(dims)?;
        let pool = state.kv.pool_size();
        let kv = PrefixKvAllocator::new(pool, options.policy)?;
        let (mamba, mode) = match (dims.has_mamba(), options.mamba_cache_slots) {
            (false, None) => (None, MambaMode::NotHybrid),
            (false, Some(_)) => {
                return Err(BatchError::Layout(
                    "Mamba cache slots given for a layout without Mamba layers".to_owned(),
                ));
            }
            (true, None) => (None, MambaMode::MemoryOnly),
            (true, Some(slots)) => (Some(MambaStateCache::new(slots, pool)?), MambaMode::Cache),
        };
        let chunk_size = u32::try_from(dims.chunk_size().max(1))
            .map_err(|_| BatchError::Layout("Mamba chunk size exceeds u32".to_owned()))?;
        state.prefix = Some(Box::new(PrefixState {
            kv,
            mamba,
            mode,
            chunk_size,
            rows: vec![PrefixRow::default(); state.max_requests],
            intermediate: Vec::with_capacity(state.max_requests),
            stores: Vec::new(),
            stats: PrefixStats::default(),
            allocatable: std::cell::Cell::new(None),
            shared: 0,
        }));
        Ok(state)
    }

    /// Whether prefix caching is on.
    pub fn prefix_caching(&self) -> bool {
        self.prefix.is_some()
    }

    /// The caching KV allocator (`None` without prefix caching; the allocator of
    /// [`kv_pool`](Self::kv_pool) is then unused).
    pub fn prefix_kv(&self) -> Option<&PrefixKvAllocator> {
        self.prefix.as_deref().map(|p| &p.kv)
    }

    /// The durable Mamba state cache (`None` without prefix caching or without one).
    pub fn mamba_cache(&self) -> Option<&MambaStateCache> {
        self.prefix.as_deref().and_then(|p| p.mamba.as_ref())
    }

    /// Prefix-caching counters (`None` without prefix caching).
    pub fn prefix_stats(&self) -> Option<PrefixStats> {
        self.prefix.as_deref().map(|p| p.stats)
    }

    /// KV blocks a new allocation can get now: the free blocks, plus under LRU the cached
    /// blocks eviction can reach.
    pub fn kv_available(&self) -> usize {
        match self.prefix.as_deref() {
            None => self.kv.available(),
            Some(p) => p.allocatable(),
        }
    }

    /// KV blocks with at least one owner (a shared block counts once).
    pub fn kv_in_use(&self) -> usize {
        match self.prefix.as_deref() {
            None => self.kv.in_use(),
            Some(p) => p.kv.in_use_count(),
        }
    }

    /// KV blocks owned by two requests or more (0 without prefix caching). O(1).
    pub fn kv_shared(&self) -> usize {
        self.prefix.as_deref().map_or(0, |p| p.shared)
    }

    /// Admits a request with its prompt tokens (prefix caching: its block hashes are
    /// computed now, its chunks matched when scheduled). Without prefix caching it is
    /// [`admit`](Self::admit) of `tokens.len()` prompt tokens.
    ///
    /// # Errors
    ///
    /// As [`admit`](Self::admit) (nothing changes); [`BatchError::TooLong`] for a prompt
    /// longer than `u32::MAX` tokens.
    pub fn admit_prompt(
        &mut self,
        tokens: &[i64],
        max_output: u32,
    ) -> Result<RequestHandle, BatchError> {
        let prompt_len = u32::try_from(tokens.len()).map_err(|_| BatchError::TooLong {
            prompt_len: u32::MAX,
            max_output,
            tokens: tokens.len() as u64,
            max_seq_len: self.max_seq_len,
        })?;
        let hashes = match &self.prefix {
            Some(_) => {
                self.check_request(prompt_len, max_output)?;
                let b = u32::try_from(self.block_size).unwrap_or(u32::MAX);
                block_hashes(tokens, b)?
            }
            None => Vec::new(),
        };
        let h = self.admit(prompt_len, max_output)?;
        if let Some(r) = self
            .prefix
            .as_deref_mut()
            .and_then(|p| p.rows.get_mut(h.row as usize))
        {
            *r = PrefixRow {
                hashes,
                registered: 0,
                plan: None,
            };
        }
        Ok(h)
    }

    /// What prefix caching did for a request's prefill chunk scheduled this step (`None`
    /// when it is not scheduled for prefill or prefix caching is off).
    pub fn prefix_hit(&self, h: RequestHandle) -> Result<Option<PrefixHit>, BatchError> {
        self.entry(h)?;
        Ok(self
            .prefix
            .as_deref()
            .and_then(|p| p.rows.get(h.row as usize))
            .and_then(|r| r.plan)
            .map(|plan| PrefixHit {
                matched_blocks: plan.matched,
                skip_tokens: plan.skip,
                query_length: plan.effective,
                restore_from: plan.restore,
            }))
    }

    /// The Mamba states the engine stores into the durable cache after the last
    /// [`commit_step`](Self::commit_step) (hybrid layouts with a Mamba cache; empty
    /// otherwise), in step order.
    pub fn mamba_stores(&self) -> &[MambaStore] {
        self.prefix.as_deref().map_or(&[], |p| p.stores.as_slice())
    }

    /// Schedules a prefill chunk with prefix caching. `e` is the request's entry, checked
    /// by `schedule` (live, not paused, not scheduled, in prefill, `1 ≤ q ≤ remaining`).
    pub(super) fn schedule_cached_prefill(
        &mut self,
        h: RequestHandle,
        e: &Entry,
        q: u32,
    ) -> Result<(), BatchError> {
        let Some(p) = self.prefix.as_deref() else {
            return Err(BatchError::Layout("prefix caching is off".to_owned()));
        };
        let b = u32::try_from(self.block_size).unwrap_or(u32::MAX);
        let hashes = p
            .rows
            .get(h.row as usize)
            .map_or(&[][..], |r| r.hashes.as_slice());
        let m = compute_prefix_match(
            &MatchQuery {
                hashes,
                block_size: b,
                finished: e.prompt_done,
                chunk: q,
                mamba: p.mode,
            },
            |x| p.kv.lookup(x),
            |x, blk| p.mamba.as_ref().is_some_and(|c| c.holds_state(x, blk)),
        )?;
        let mut m = m;
        // Two places where Megatron's skip would leave the Mamba state wrong (DESIGN.md,
        // "Prefix caching", D9 and D10): the 2-token clamp can move a first chunk's skip
        // to a block whose state is not cached (Megatron then restores zeros), and a
        // continuation chunk of a hybrid model skips tokens its live state never sees.
        if p.mode != MambaMode::NotHybrid {
            let keep = if e.prompt_done > 0 {
                0
            } else {
                let cached = |n: u32| {
                    let j = n as usize - 1;
                    match (hashes.get(j), m.matched_blocks.get(j), &p.mamba) {
                        (Some(&x), Some(&blk), Some(c)) => c.holds_state(x, blk),
                        _ => false,
                    }
                };
                (1..=m.skip_tokens / b)
                    .rev()
                    .find(|&n| cached(n))
                    .unwrap_or(0)
                    * b
            };
            if keep < m.skip_tokens {
                m.effective_chunk_length += m.skip_tokens - keep;
                m.skip_tokens = keep;
            }
        }
        let internal = |what: String| BatchError::Layout(format!("request {}: {what}", h.id));
        if m.already_allocated_blocks != e.blocks {
            return Err(internal(format!(
                "holds {} blocks, {} expected before its chunk",
                e.blocks, m.already_allocated_blocks
            )));
        }
        let Some(effective) = NonZeroU32::new(m.effective_chunk_length) else {
            return Err(internal("a chunk that computes no token".to_owned()));
        };
        let tokens = self.scheduled_tokens + u64::from(effective.get());
        if tokens > self.max_tokens as u64 {
            return Err(BatchError::TokenBudget {
                tokens,
                limit: self.max_tokens,
            });
        }
        let overall = m.overall_required_blocks as usize;
        if overall > self.block_table_width {
            return Err(internal(format!(
                "would need more than {} blocks",
                self.block_table_width
            )));
        }
        let matched = u32::try_from(m.matched_blocks.len()).unwrap_or(u32::MAX);
        // The restore: the state after the last skipped block, which matching found cached.
        let skipped_blocks = m.skip_tokens / b;
        let restore = match (&p.mamba, e.prompt_done, skipped_blocks) {
            (Some(cache), 0, n) if n > 0 => {
                let block = m
                    .matched_blocks
                    .get(n as usize - 1)
                    .copied()
                    .ok_or_else(|| internal("skips past its matched blocks".to_owned()))?;
                Some(cache.restore_slot(block)?)
            }
            _ => None,
        };
        // Intermediate states, computed on block positions (a row of 0, 1, 2, …) so that
        // nothing is allocated before every check passed.
        let states = match p.mode {
            MambaMode::Cache => {
                let positions: Vec<i32> = (0..=i32::MAX).take(overall).collect();
                Some(compute_intermediate_offsets(&OffsetsQuery {
                    block_size: b,
                    ssm_chunk_alignment: p.chunk_size,
                    mamba_chunk_size: p.chunk_size,
                    prompt_len: e.prompt_len,
                    finished: e.prompt_done,
                    skip_tokens: m.skip_tokens,
                    chunk: q,
                    matched_blocks: matched,
                    overall_blocks: m.overall_required_blocks,
                    block_row: &positions,
                })?)
            }
            _ => None,
        };
        let Some(p) = self.prefix.as_deref_mut() else {
            return Err(internal("prefix caching is off".to_owned()));
        };
        // Matched blocks with one owner now get a second.
        let newly_shared = m
            .matched_blocks
            .iter()
            .filter(|&&blk| {
                usize::try_from(blk)
                    .ok()
                    .and_then(|i| p.kv.ref_counts().get(i))
                    == Some(&1)
            })
            .count();
        let (kv, mut obs) = p.observer();
        let new = kv
            .acquire(&m.matched_blocks, m.blocks_from_pool as usize, &mut obs)
            .map_err(|err| match err {
                // `available` is `kv_available()`: free, plus evictable under LRU.
                PrefixError::BlockOverflow { available, .. } => BatchError::OutOfBlocks {
                    needed: m.blocks_from_pool,
                    available,
                },
                other => BatchError::Prefix(other),
            })?;
        let evicted = obs.blocks;
        p.shared += newly_shared;
        p.stats.evicted_blocks = p.stats.evicted_blocks.saturating_add(evicted);
        if let Some(r) = p.rows.get_mut(h.row as usize) {
            r.plan = Some(ChunkPlan {
                matched,
                skip: m.skip_tokens,
                effective: effective.get(),
                restore,
                states,
            });
        }
        append_blocks(
            &mut self.table,
            &mut self.changes,
            self.block_table_width,
            h.row,
            e.blocks,
            m.matched_blocks.iter().chain(&new),
        );
        if let Some(entry) = self.rows.get_mut(h.row as usize).and_then(|x| x.as_mut()) {
            entry.kv += m.skip_tokens;
            entry.prompt_done += m.skip_tokens;
            entry.blocks = m.overall_required_blocks;
            entry.scheduled = Some(effective);
        }
        self.prefill_order.push(h.row);
        self.scheduled_tokens = tokens;
        self.schedule_changed();
        Ok(())
    }

    /// The step's intermediate offsets, one per prefill row in step order.
    pub(super) fn prepare_intermediate(&mut self) {
        let Some(p) = self.prefix.as_deref_mut() else {
            return;
        };
        p.intermediate.clear();
        if p.mode != MambaMode::Cache {
            return;
        }
        for &row in &self.prefill_order {
            let offsets = p
                .rows
                .get(row as usize)
                .and_then(|r| r.plan)
                .and_then(|plan| plan.states)
                .map(|s| s.offsets)
                .unwrap_or_default();
            p.intermediate.push(offsets);
        }
    }

    /// After a committed prefill chunk (`e` already advanced): registers the request's
    /// newly complete prompt blocks, then gives the extracted Mamba states durable slots.
    pub(super) fn commit_cached_prefill(&mut self, row: u32, e: &Entry) -> Result<(), BatchError> {
        let start = row as usize * self.block_table_width;
        let blocks = self
            .table
            .get(start..start + e.blocks as usize)
            .unwrap_or(&[]);
        let b = self.block_size;
        let Some(p) = self.prefix.as_deref_mut() else {
            return Ok(());
        };
        let Some(r) = p.rows.get_mut(row as usize) else {
            return Ok(());
        };
        let plan = r.plan.take();
        let complete = (e.prompt_done as usize / b).min(r.hashes.len());
        let from = (r.registered as usize).min(complete);
        if from < complete {
            let ids = blocks.get(from..complete).unwrap_or(&[]);
            let hashes = r.hashes.get(from..complete).unwrap_or(&[]);
            let parents: Vec<BlockHash> = (from..complete)
                .map(|j| {
                    j.checked_sub(1)
                        .and_then(|i| r.hashes.get(i).copied())
                        .unwrap_or(0)
                })
                .collect();
            p.allocatable.set(None);
            p.kv.register(ids, hashes, Some(&parents))?;
            r.registered = u32::try_from(complete).unwrap_or(u32::MAX);
        }
        let Some(plan) = plan else {
            return Ok(());
        };
        let hashes = r.hashes.clone();
        let st = &mut p.stats;
        st.lookups += 1;
        st.hits += u64::from(plan.matched > 0);
        st.matched_blocks += u64::from(plan.matched);
        st.skipped_tokens += u64::from(plan.skip);
        st.computed_tokens += u64::from(plan.effective);
        st.mamba_restores += u64::from(plan.restore.is_some());
        let (Some(cache), Some(states)) = (p.mamba.as_mut(), plan.states) else {
            return Ok(());
        };
        // (position in the block list, which state) of each state to store.
        let mut wanted: Vec<(usize, Option<u8>)> = states
            .block_ids()
            .iter()
            .zip(0u8..)
            .map(|(&pos, k)| (usize::try_from(pos).unwrap_or(usize::MAX), Some(k)))
            .collect();
        if let Some(pos) = states.eos_block {
            wanted.push((usize::try_from(pos).unwrap_or(usize::MAX), None));
        }
        let mut ids: Vec<i32> = wanted
            .iter()
            .filter_map(|&(pos, _)| blocks.get(pos).copied())
            .collect();
        // Short of slots: keep the blocks that have one and the first new ones that fit.
        let alloc = match cache.allocate_slots(&p.kv, &ids) {
            Ok(a) => a,
            Err(PrefixError::MambaSlotCapacity { available, .. }) => {
                let mut room = available;
                let mut keep = Vec::with_capacity(wanted.len());
                let mut kept_ids = Vec::with_capacity(ids.len());
                for (&w, &id) in wanted.iter().zip(&ids) {
                    if cache.has_state(id) || kept_ids.contains(&id) {
                        keep.push(w);
                        kept_ids.push(id);
                    } else if room > 0 {
                        room -= 1;
                        keep.push(w);
                        kept_ids.push(id);
                    }
                }
                st.mamba_stores_dropped += (wanted.len() - keep.len()) as u64;
                wanted = keep;
                ids = kept_ids;
                cache.allocate_slots(&p.kv, &ids)?
            }
            Err(other) => return Err(other.into()),
        };
        let state_hashes: Vec<BlockHash> = wanted
            .iter()
            .map(|&(pos, _)| hashes.get(pos).copied().unwrap_or(-1))
            .collect();
        cache.register_hashes(&p.kv, &ids, &state_hashes)?;
        let handle = RequestHandle { id: e.id, row };
        for ((&(_, k), &block), &slot) in wanted.iter().zip(&ids).zip(&alloc.slots) {
            p.stores.push(MambaStore {
                handle,
                block,
                slot,
                intermediate: k,
            });
        }
        st.mamba_stores += ids.len() as u64;
        Ok(())
    }
}
