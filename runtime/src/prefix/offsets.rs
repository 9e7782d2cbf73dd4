//! Where a prefill chunk's intermediate Mamba states are extracted (Megatron's
//! `compute_and_store_offsets`; `docs/DESIGN.md`, "Prefix caching"), as a pure function.
//!
//! A chunk computes tokens `[start, start + len)` with `start = f + skip` and `len = q −
//! skip`. Three block boundaries are worth a snapshot of the Mamba state: the end of the
//! KV match (`m·B`), the end of the prompt's last complete block (`⌊L/B⌋·B`) and the start
//! of the chunk's last block (`(overall − 1)·B`). Each that falls strictly inside the
//! computed tokens at a multiple of the SSM chunk alignment `A` (relative to `start`)
//! becomes an offset, ascending and without repeats, with the block that *ends* there.
//! The chunk that reaches the end of a prompt of whole blocks also stores the final state
//! (the end-of-sequence block). The offsets feed the step's Mamba metadata
//! ([`crate::IntermediateOffsets`]); after the forward pass the engine commits the states
//! into [`super::MambaStateCache`] slots.

use crate::step::IntermediateOffsets;

use super::PrefixError;

/// The inputs of [`compute_intermediate_offsets`].
#[derive(Debug, Clone, Copy)]
pub struct OffsetsQuery<'a> {
    /// Tokens per KV block, `B ≥ 1`.
    pub block_size: u32,
    /// The SSM chunk alignment `A` (a multiple of `mamba_chunk_size`).
    pub ssm_chunk_alignment: u32,
    /// The Mamba kernel's chunk size.
    pub mamba_chunk_size: u32,
    /// The prompt length `L`.
    pub prompt_len: u32,
    /// Prompt tokens prefilled by earlier chunks, `f`.
    pub finished: u32,
    /// Leading tokens of this chunk not recomputed ([`super::PrefixMatch::skip_tokens`]).
    pub skip_tokens: u32,
    /// This chunk's prompt tokens, `q ≥ skip`.
    pub chunk: u32,
    /// KV-matched blocks `m` ([`super::PrefixMatch::matched_blocks`]).
    pub matched_blocks: u32,
    /// Blocks after this chunk ([`super::PrefixMatch::overall_required_blocks`]).
    pub overall_blocks: u32,
    /// The request's KV blocks, at least the first `overall_blocks`.
    pub block_row: &'a [i32],
}

/// Where to extract a chunk's Mamba states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntermediateStates {
    /// Offsets relative to the chunk's first computed token, ascending, at most 3.
    pub offsets: IntermediateOffsets,
    /// The block ending at each offset (the first `offsets.count` entries; −1 after).
    pub block_ids: [i32; 3],
    /// The block whose end is the prompt's end, when this chunk finishes a prompt of
    /// whole blocks.
    pub eos_block: Option<i32>,
}

impl IntermediateStates {
    /// Whether anything is to be stored.
    pub fn has_intermediates(&self) -> bool {
        self.offsets.count > 0 || self.eos_block.is_some()
    }

    /// The used offsets.
    pub fn offsets(&self) -> &[u32] {
        self.offsets
            .offsets
            .get(..usize::from(self.offsets.count))
            .unwrap_or(&[])
    }

    /// The used block ids.
    pub fn block_ids(&self) -> &[i32] {
        self.block_ids
            .get(..usize::from(self.offsets.count))
            .unwrap_or(&[])
    }
}

/// Computes a chunk's intermediate extraction points. See the [module docs](self).
///
/// # Errors
///
/// [`PrefixError::InvalidQuery`] when the sizes are zero, the alignment is not a multiple
/// of the Mamba chunk size, `skip > chunk`, or the block row is too short for a boundary.
pub fn compute_intermediate_offsets(
    q: &OffsetsQuery<'_>,
) -> Result<IntermediateStates, PrefixError> {
    const CALL: &str = "compute_intermediate_offsets";
    let bad = |reason: String| PrefixError::InvalidQuery { call: CALL, reason };
    let (b, a) = (u64::from(q.block_size), u64::from(q.ssm_chunk_alignment));
    if b == 0
        || a == 0
        || q.mamba_chunk_size == 0
        || !q.ssm_chunk_alignment.is_multiple_of(q.mamba_chunk_size)
    {
        return Err(bad(format!(
            "block size {}, alignment {} and Mamba chunk size {} must be positive, the alignment a multiple of the chunk size",
            q.block_size, q.ssm_chunk_alignment, q.mamba_chunk_size
        )));
    }
    if q.skip_tokens > q.chunk {
        return Err(bad(format!(
            "skip_tokens {} exceeds the chunk of {}",
            q.skip_tokens, q.chunk
        )));
    }
    let start = u64::from(q.finished) + u64::from(q.skip_tokens);
    let len = u64::from(q.chunk - q.skip_tokens);
    let prompt = u64::from(q.prompt_len);
    let last = u64::from(q.finished) + u64::from(q.chunk) >= prompt;
    let row = |abs: u64| -> Result<i32, PrefixError> {
        let idx = abs / b;
        usize::try_from(idx)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| q.block_row.get(i).copied())
            .ok_or_else(|| {
                bad(format!(
                    "block_row has {} blocks, block {} is needed for token {abs}",
                    q.block_row.len(),
                    idx.saturating_sub(1)
                ))
            })
    };
    let mut candidates = vec![u64::from(q.matched_blocks) * b, prompt / b * b];
    if q.overall_blocks > 0 {
        candidates.push(u64::from(q.overall_blocks - 1) * b);
    }
    let mut rel: Vec<u64> = candidates
        .into_iter()
        .filter_map(|abs| abs.checked_sub(start))
        .filter(|&o| o > 0 && o < len && o % a == 0)
        .collect();
    rel.sort_unstable();
    rel.dedup();
    let mut out = IntermediateStates {
        block_ids: [-1; 3],
        ..IntermediateStates::default()
    };
    for ((o, slot), id) in rel
        .iter()
        .zip(out.offsets.offsets.iter_mut())
        .zip(out.block_ids.iter_mut())
    {
        // o < len ≤ u32::MAX.
        *slot = u32::try_from(*o).unwrap_or(u32::MAX);
        *id = row(start + o)?;
    }
    out.offsets.count = u8::try_from(rel.len().min(3)).unwrap_or(3);
    if last && prompt > 0 && prompt % b == 0 {
        out.eos_block = Some(row(prompt)?);
    }
    Ok(out)
}
