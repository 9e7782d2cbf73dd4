//! Prefix caching: the pieces of Megatron-LM's prefix cache (`megatron/core/inference/`,
//! HEAD `d98e8a64dd`) that do not depend on a running engine, reproduced exactly and
//! checked against Megatron's own traces (`testdata/megatron-prefix-public.jsonl`).
//!
//! * [`hash`] — a prompt's block hashes: SHA-256 chained over full blocks of
//!   little-endian `i64` token ids, the first 8 digest bytes reduced into `1 ..= 2^63 − 1`.
//! * [`kv`] — [`PrefixKvAllocator`], the KV block allocator with prefix caching: reference
//!   counts, registration of block hashes with their parents, release under the
//!   [`EvictionPolicy::RefZero`] and [`EvictionPolicy::Lru`] policies, leaf-only LRU
//!   eviction, the admission check and the LRU clock. The allocator without caching,
//!   [`crate::alloc::KvBlockAllocator`], stays the default.
//! * [`matching`] — prefix matching of a prefill chunk (longest cached prefix, tokens to
//!   skip, the Mamba back-off) as pure functions over lookups.
//! * [`mamba_cache`] — [`MambaStateCache`], the durable Mamba state slots of cached
//!   blocks: LRU slot eviction, block ↔ slot maps, the hash index and the KV
//!   deregistration hook.
//! * [`offsets`] — where a prefill chunk's intermediate Mamba states are extracted.
//!
//! The KV allocator tells whoever holds Mamba state about the blocks it deregisters
//! through a [`DeregistrationObserver`] passed to the call that may deregister (`()`
//! when there is none); [`MambaStateCache`] is one.
//!
//! Every call that fails returns a [`PrefixError`] and changes nothing. Where Megatron
//! raises, the same condition is an error here; where Megatron would corrupt its state or
//! assert on a reachable situation, this module does the safe thing instead: the list,
//! each with its test, is in `docs/DESIGN.md` ("Prefix caching").

pub mod hash;
pub mod kv;
pub mod mamba_cache;
pub mod matching;
pub mod offsets;

pub use hash::{BlockHash, block_hashes};
pub use kv::{EvictionPolicy, PrefixKvAllocator};
pub use mamba_cache::{MambaStateCache, SlotAllocation};
pub use matching::{MambaMode, MatchQuery, PrefixMatch, compute_prefix_match};
pub use offsets::{IntermediateStates, OffsetsQuery, compute_intermediate_offsets};

/// Receives the KV allocator's deregistrations: the blocks (in the order they were
/// deregistered) and the hashes they held (ascending, without duplicates; possibly
/// empty). Called once per deregistration batch, after the KV state changed.
pub trait DeregistrationObserver {
    /// Blocks `blocks` lost their hashes `hashes` (and are free again).
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]);
}

/// No observer.
impl DeregistrationObserver for () {
    fn deregistered(&mut self, _blocks: &[i32], _hashes: &[BlockHash]) {}
}

/// Records every call (tests, golden replay).
impl DeregistrationObserver for Vec<(Vec<i32>, Vec<BlockHash>)> {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        self.push((blocks.to_vec(), hashes.to_vec()));
    }
}

/// Both observers, in order.
impl<A: DeregistrationObserver, B: DeregistrationObserver> DeregistrationObserver for (A, B) {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        self.0.deregistered(blocks, hashes);
        self.1.deregistered(blocks, hashes);
    }
}

impl<O: DeregistrationObserver + ?Sized> DeregistrationObserver for &mut O {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        (**self).deregistered(blocks, hashes);
    }
}

/// Errors of the prefix cache. A call that returns one has changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// A pool or cache size outside the allowed range.
    #[error("{what} {size} is invalid (must be between {min} and {max})")]
    InvalidSize {
        /// What was sized (`KV pool size`, `Mamba cache slots`, `block size`).
        what: &'static str,
        /// The size asked for.
        size: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A block id outside `0..pool_size`.
    #[error("{call}: KV block {block} is out of range (valid ids are 0..{pool_size})")]
    BlockOutOfRange {
        /// The call (`release`, `retain`, …).
        call: &'static str,
        /// The offending id.
        block: i64,
        /// The pool size.
        pool_size: usize,
    },
    /// The reserved dummy block (`pool_size − 1`) named in a call.
    #[error("{call}: KV block {block} is the reserved dummy block")]
    DummyBlock {
        /// The call.
        call: &'static str,
        /// The dummy block.
        block: i32,
    },
    /// A release of more references than a block has (Megatron's assertion).
    #[error("release: KV block {block} has {held} references, {released} released")]
    OverRelease {
        /// The block.
        block: i32,
        /// Its reference count.
        held: u32,
        /// How often the call names it.
        released: usize,
    },
    /// A retain or registration of a free block (one in the free stack): Megatron accepts
    /// it and corrupts its state.
    #[error("{call}: KV block {block} is free (neither in use nor cached)")]
    FreeBlock {
        /// The call.
        call: &'static str,
        /// The block.
        block: i32,
    },
    /// A reference count that would pass `u32::MAX`.
    #[error("retain: KV block {block} would pass {max} references")]
    TooManyReferences {
        /// The block.
        block: i32,
        /// The limit.
        max: u32,
    },
    /// A block registered under a hash other than the one it holds (Megatron's
    /// assertion).
    #[error("register: KV block {block} holds hash {held}, cannot take {given}")]
    HashConflict {
        /// The block.
        block: i32,
        /// The hash it holds.
        held: BlockHash,
        /// The hash given.
        given: BlockHash,
    },
    /// A hash outside `1 ..= i64::MAX` (0 means "no parent" and −1 "no hash").
    #[error("{call}: hash {hash} of KV block {block} is not a block hash (must be positive)")]
    InvalidHash {
        /// The call.
        call: &'static str,
        /// The block.
        block: i32,
        /// The hash.
        hash: BlockHash,
    },
    /// A block named twice in one registration.
    #[error("register: KV block {block} is named twice")]
    DuplicateBlock {
        /// The block.
        block: i32,
    },
    /// Two parallel lists of different lengths (Megatron's assertion for `parent_hashes`).
    #[error("{call}: {field} has {got} entries, {expected} expected")]
    LengthMismatch {
        /// The call.
        call: &'static str,
        /// The list.
        field: &'static str,
        /// Length of the list it must match.
        expected: usize,
        /// Its length.
        got: usize,
    },
    /// The leaf peel of an eviction found fewer evictable blocks than asked for, though
    /// enough blocks are cached: some cached block has a descendant in use (Megatron's
    /// "parent graph is not a forest" assertion).
    #[error(
        "evict: {requested} blocks asked, only {evictable} of the cached blocks can be evicted"
    )]
    NotAForest {
        /// Blocks asked for.
        requested: usize,
        /// Blocks the peel can take.
        evictable: usize,
    },
    /// Pinning and allocating for an admission failed (Megatron's `BlockOverflowError`).
    #[error("acquire: {required} new KV blocks needed, {available} can be allocated")]
    BlockOverflow {
        /// New blocks asked for.
        required: usize,
        /// What the pool could provide with the matched blocks pinned.
        available: usize,
    },
    /// Too few durable Mamba slots, even after evicting every evictable one
    /// (Megatron's `MambaSlotCapacityError`).
    #[error("allocate_slots: {required} new Mamba cache slots needed, {available} available")]
    MambaSlotCapacity {
        /// Blocks that need a new slot.
        required: usize,
        /// Free slots plus evictable ones.
        available: usize,
    },
    /// A Mamba hash registered for a block without a durable slot, or under a hash the
    /// block does not hold in the KV allocator.
    #[error("register_mamba_hashes: KV block {block} {reason}")]
    NotCommitted {
        /// The block.
        block: i32,
        /// Why (`has no Mamba cache slot`, `holds KV hash 5, not 7`).
        reason: String,
    },
    /// A restore from a block whose Mamba state is not cached (Megatron silently zeroes
    /// the live state instead).
    #[error("restore: KV block {block} has no cached Mamba state")]
    NoMambaState {
        /// The block.
        block: i32,
    },
    /// Inputs of a pure function that cannot describe a request.
    #[error("{call}: {reason}")]
    InvalidQuery {
        /// The function.
        call: &'static str,
        /// What is wrong, with the values.
        reason: String,
    },
}

/// Converts a block id to an index below `pool_size`, or reports it.
pub(crate) fn block_index(
    call: &'static str,
    block: i32,
    pool_size: usize,
) -> Result<usize, PrefixError> {
    match usize::try_from(block) {
        Ok(i) if i < pool_size => Ok(i),
        _ => Err(PrefixError::BlockOutOfRange {
            call,
            block: i64::from(block),
            pool_size,
        }),
    }
}
