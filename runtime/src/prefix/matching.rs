//! Prefix matching for a new prefill chunk (Megatron's `_compute_prefix_match`;
//! `docs/DESIGN.md`, "Prefix caching", difference D4), as a
//! pure function of the request's block hashes and two lookups.
//!
//! For a chunk of `q` prompt tokens after `f` tokens already prefilled, with block size
//! `B`: `already = ⌈f/B⌉` blocks exist, `overall = ⌈(f+q)/B⌉` are needed. The chunk's KV
//! match is the longest run of hashes `h[already..min(overall, n))` found in the KV index,
//! from the start of the range. Matched tokens are skipped (not recomputed) when `f` is a
//! multiple of `B`: at most `q − 1` of them; for a hybrid model's first chunk, only up to
//! the last block whose Mamba state is cached (and, when that would skip the whole chunk,
//! the one before it), none at all without a Mamba cache. At least 2 query tokens are
//! kept when the chunk has 2 or more (a 1-token prefill would run as a decode).
//!
//! One difference from Megatron (`docs/DESIGN.md`, "Prefix caching"): Megatron scans the
//! range from its end for the last indexed hash and then looks up every hash before it,
//! which raises `KeyError` when an earlier one is not indexed (a broken chain); here the
//! scan runs forward and stops at the first miss. Both give the same match whenever every
//! indexed hash's ancestors are indexed.

use super::{BlockHash, PrefixError};

/// What the model has of Mamba state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MambaMode {
    /// No Mamba layers: skipping follows the KV match alone.
    NotHybrid,
    /// Mamba layers, no durable state cache ("memory-only" prefix caching): KV blocks are
    /// shared but a first chunk never skips a token.
    MemoryOnly,
    /// Mamba layers with a durable state cache: a first chunk skips only up to a block
    /// whose Mamba state is cached.
    Cache,
}

/// A prefill chunk to match.
#[derive(Debug, Clone, Copy)]
pub struct MatchQuery<'a> {
    /// The request's prompt block hashes ([`super::block_hashes`]).
    pub hashes: &'a [BlockHash],
    /// Tokens per KV block, `B ≥ 1`.
    pub block_size: u32,
    /// Prompt tokens prefilled by earlier chunks, `f`.
    pub finished: u32,
    /// This chunk's prompt tokens, `q ≥ 1`.
    pub chunk: u32,
    /// The model's Mamba state.
    pub mamba: MambaMode,
}

/// The result of matching a chunk (Megatron's `_compute_prefix_match`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrefixMatch {
    /// Cached blocks to pin, for block positions `already ..`.
    pub matched_blocks: Vec<i32>,
    /// New blocks to allocate after the matched ones: `overall − already − matched`.
    pub blocks_from_pool: u32,
    /// Blocks the request already has, `⌈f/B⌉`.
    pub already_allocated_blocks: u32,
    /// Blocks the request has after this chunk, `⌈(f+q)/B⌉`.
    pub overall_required_blocks: u32,
    /// Leading tokens of the chunk not recomputed.
    pub skip_tokens: u32,
    /// Tokens computed, `q − skip`.
    pub effective_chunk_length: u32,
    /// Matched blocks whose Mamba state is cached (first chunk of a hybrid model with a
    /// cache; 0 in memory-only mode), else `None`.
    pub mamba_matched_blocks: Option<u32>,
}

impl PrefixMatch {
    /// The answer with prefix caching off: nothing matched or skipped.
    ///
    /// # Errors
    ///
    /// [`PrefixError::InvalidQuery`] for a block size or chunk of 0.
    pub fn uncached(block_size: u32, finished: u32, chunk: u32) -> Result<Self, PrefixError> {
        let (already, overall) = ranges(block_size, finished, chunk)?;
        Ok(Self {
            matched_blocks: Vec::new(),
            blocks_from_pool: overall.saturating_sub(already),
            already_allocated_blocks: already,
            overall_required_blocks: overall,
            skip_tokens: 0,
            effective_chunk_length: chunk,
            mamba_matched_blocks: None,
        })
    }
}

/// `(⌈f/B⌉, ⌈(f+q)/B⌉)`, checked.
fn ranges(block_size: u32, finished: u32, chunk: u32) -> Result<(u32, u32), PrefixError> {
    const CALL: &str = "compute_prefix_match";
    if block_size == 0 || chunk == 0 {
        return Err(PrefixError::InvalidQuery {
            call: CALL,
            reason: format!("block size {block_size} and chunk {chunk} must be positive"),
        });
    }
    let end = finished
        .checked_add(chunk)
        .ok_or_else(|| PrefixError::InvalidQuery {
            call: CALL,
            reason: format!("finished {finished} + chunk {chunk} overflows u32"),
        })?;
    Ok((finished.div_ceil(block_size), end.div_ceil(block_size)))
}

/// Matches a prefill chunk: `kv_lookup(h)` is the block the KV index holds for hash `h`
/// ([`super::PrefixKvAllocator::lookup`]); `mamba_cached(h, block)` says whether the Mamba
/// state after matched `block` (hash `h`) is cached
/// ([`super::MambaStateCache::holds_state`]). Only consulted for [`MambaMode::Cache`].
///
/// # Errors
///
/// [`PrefixError::InvalidQuery`] for a block size or chunk of 0, or `f + q` past `u32`.
pub fn compute_prefix_match(
    query: &MatchQuery<'_>,
    kv_lookup: impl Fn(BlockHash) -> Option<i32>,
    mamba_cached: impl Fn(BlockHash, i32) -> bool,
) -> Result<PrefixMatch, PrefixError> {
    let b = query.block_size;
    let (f, q) = (query.finished, query.chunk);
    let (already, overall) = ranges(b, f, q)?;
    // Forward scan over h[already .. min(overall, n)), stopping at the first miss.
    let start = usize::try_from(already).unwrap_or(usize::MAX);
    let end = usize::try_from(overall)
        .unwrap_or(usize::MAX)
        .min(query.hashes.len());
    let range = query.hashes.get(start..end).unwrap_or(&[]);
    let matched: Vec<i32> = range.iter().map_while(|&h| kv_lookup(h)).collect();
    let m = u32::try_from(matched.len()).unwrap_or(u32::MAX);
    let aligned = f % b == 0;
    let tokens = |blocks: u32| u64::from(blocks) * u64::from(b);
    // Rule 2: skip by KV match.
    let mut skip: u64 = if m > 0 && aligned {
        tokens(m).min(u64::from(q - 1))
    } else {
        0
    };
    let mut mamba_matched = None;
    if f == 0 {
        match query.mamba {
            MambaMode::NotHybrid => {}
            MambaMode::MemoryOnly => {
                skip = 0;
                mamba_matched = Some(0);
            }
            MambaMode::Cache => {
                // Matched blocks (positions already..already+m) whose Mamba state is cached.
                let cached = |j: usize| {
                    range
                        .get(j)
                        .zip(matched.get(j))
                        .is_some_and(|(&h, &blk)| mamba_cached(h, blk))
                };
                let mm = (0..matched.len())
                    .rev()
                    .find(|&j| cached(j))
                    .map_or(0, |j| j + 1);
                let mm32 = u32::try_from(mm).unwrap_or(u32::MAX);
                mamba_matched = Some(mm32);
                skip = if mm == 0 || !aligned {
                    0
                } else if tokens(mm32) < u64::from(q) {
                    tokens(mm32)
                } else {
                    // The whole chunk is cached: back off to an earlier cached block.
                    (0..mm - 1)
                        .rev()
                        .find(|&j| cached(j))
                        .map_or(0, |j| tokens(u32::try_from(j + 1).unwrap_or(u32::MAX)))
                };
            }
        }
    }
    // Rule 4: keep at least 2 query tokens.
    let q64 = u64::from(q);
    if q >= 2 && q64.saturating_sub(skip) < 2 {
        skip = (q64 - 2) / u64::from(b) * u64::from(b);
    }
    let skip = u32::try_from(skip.min(q64)).unwrap_or(q);
    Ok(PrefixMatch {
        matched_blocks: matched,
        blocks_from_pool: overall.saturating_sub(already).saturating_sub(m),
        already_allocated_blocks: already,
        overall_required_blocks: overall,
        skip_tokens: skip,
        effective_chunk_length: q - skip,
        mamba_matched_blocks: mamba_matched,
    })
}
