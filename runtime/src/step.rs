//! Step inputs: the request rows of one inference step, in context order.

/// What a request row does this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Holds KV blocks and a Mamba slot but contributes no tokens.
    Paused,
    /// Generates: `speculative_tokens + 1` tokens.
    Decode,
    /// Processes (a chunk of) its prompt.
    Prefill,
}

impl Phase {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Decode => "decode",
            Self::Prefill => "prefill",
        }
    }
}

/// Sampling parameters carried in the request staging arrays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Temperature.
    pub temperature: f32,
    /// Top-k (0: off).
    pub top_k: i32,
    /// Top-p (0.0: off).
    pub top_p: f32,
}

impl Sampling {
    /// The values padded rows get (Megatron's pad values).
    pub const PAD: Self = Self {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.0,
    };
}

impl Default for Sampling {
    fn default() -> Self {
        Self::PAD
    }
}

/// One request row.
///
/// Write it with named fields over one of the phase constants, the fields not named
/// taking the constant's values:
///
/// ```
/// use attention_layout::RequestRow;
///
/// let blocks = [3, 7];
/// let row = RequestRow {
///     query_length: 1,
///     kv_offset: 5,
///     blocks: &blocks,
///     mamba_slot: 6,
///     ..RequestRow::DECODE
/// };
/// assert_eq!(row, RequestRow::decode(1, 5, &blocks, 6));
/// ```
///
/// [`decode`](Self::decode), [`prefill`](Self::prefill) and [`paused`](Self::paused) are
/// the positional shorthands of the same rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRow<'a> {
    /// Paused, decode or prefill.
    pub phase: Phase,
    /// Tokens it contributes this step (`q`); ignored for paused rows.
    pub query_length: u32,
    /// Tokens already in its KV cache (`kv_off`).
    pub kv_offset: u32,
    /// Its KV block ids, block `j` holding positions `j*B .. j*B+B-1`; `-1` marks no block.
    pub blocks: &'a [i32],
    /// Its Mamba state slot (`-1`: none; required on active rows of Mamba layouts).
    pub mamba_slot: i32,
    /// Sampling parameters.
    pub sampling: Sampling,
}

impl<'a> RequestRow<'a> {
    /// A decode row with nothing else set: no tokens, no KV, no blocks, no Mamba slot
    /// (`-1`), [`Sampling::PAD`]. The base of a row written with named fields.
    pub const DECODE: Self = Self {
        phase: Phase::Decode,
        query_length: 0,
        kv_offset: 0,
        blocks: &[],
        mamba_slot: -1,
        sampling: Sampling::PAD,
    };

    /// A prefill row with nothing else set (as [`DECODE`](Self::DECODE)).
    pub const PREFILL: Self = Self {
        phase: Phase::Prefill,
        ..Self::DECODE
    };

    /// A paused row with nothing else set (as [`DECODE`](Self::DECODE)).
    pub const PAUSED: Self = Self {
        phase: Phase::Paused,
        ..Self::DECODE
    };

    /// A decode row (query length `s + 1`); positional shorthand of
    /// `RequestRow { query_length, kv_offset, blocks, mamba_slot, ..RequestRow::DECODE }`.
    pub const fn decode(
        query_length: u32,
        kv_offset: u32,
        blocks: &'a [i32],
        mamba_slot: i32,
    ) -> Self {
        Self {
            query_length,
            kv_offset,
            blocks,
            mamba_slot,
            ..Self::DECODE
        }
    }

    /// A prefill row (a prompt chunk of `query_length` tokens after `kv_offset`);
    /// positional shorthand of
    /// `RequestRow { query_length, kv_offset, blocks, mamba_slot, ..RequestRow::PREFILL }`.
    pub const fn prefill(
        query_length: u32,
        kv_offset: u32,
        blocks: &'a [i32],
        mamba_slot: i32,
    ) -> Self {
        Self {
            query_length,
            kv_offset,
            blocks,
            mamba_slot,
            ..Self::PREFILL
        }
    }

    /// A paused row; positional shorthand of
    /// `RequestRow { kv_offset, blocks, mamba_slot, ..RequestRow::PAUSED }`.
    pub const fn paused(kv_offset: u32, blocks: &'a [i32], mamba_slot: i32) -> Self {
        Self {
            kv_offset,
            blocks,
            mamba_slot,
            ..Self::PAUSED
        }
    }
}

/// Up to three token offsets into one prefill request's chunk at which the Mamba state is
/// extracted (prefix caching), docs/SEMANTICS.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IntermediateOffsets {
    /// How many of `offsets` are used (0..=3).
    pub count: u8,
    /// The offsets; each in `(0, query_length)`.
    pub offsets: [u32; 3],
}

/// One block-table entry an engine set (or cleared) since the previous step, in a block
/// table that stays resident on the device, indexed by resident row (one per request,
/// stable while the request lives) rather than by the step's active order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockChange {
    /// Resident row in `[0, max_requests)`.
    pub resident_row: u32,
    /// Position in that row's block list.
    pub index: u32,
    /// The block id, or `-1` to clear the entry (a finished request's row).
    pub block: i32,
}

/// What an engine that owns its request table knows about block-table residency: where
/// each row of this step lives, and what changed since the previous step. Backends that
/// keep the block table on the device use it to move only the changes; the host fill
/// ignores it (the rows' `blocks` stay authoritative and must agree with it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Residency<'a> {
    /// Resident row of each step row (same length as `StepInput::rows`).
    pub resident_rows: &'a [u32],
    /// Entries changed since the previous step, in order (later entries win).
    pub changes: &'a [BlockChange],
}

/// Everything one step needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepInput<'a> {
    /// Rows in context order: paused, then decode, then prefill.
    pub rows: &'a [RequestRow<'a>],
    /// Token ids of the active tokens in row order; `None` leaves the real entries of
    /// `token_to_input_ids` as they are (an engine that writes sampled ids on the device).
    pub token_ids: Option<&'a [i64]>,
    /// Per prefill request, Mamba intermediate offsets; `None` when not used.
    pub intermediate: Option<&'a [IntermediateOffsets]>,
    /// Block-table residency, when the engine tracks it (see [`Residency`]).
    pub residency: Option<Residency<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_positional_shorthands_equal_the_named_rows() {
        const BLOCKS: [i32; 2] = [3, 7];
        // Usable in constants.
        const ROW: RequestRow<'static> = RequestRow::prefill(4, 5, &BLOCKS, 6);
        let named = |phase| RequestRow {
            phase,
            query_length: 4,
            kv_offset: 5,
            blocks: &BLOCKS,
            mamba_slot: 6,
            sampling: Sampling::PAD,
        };
        assert_eq!(ROW, named(Phase::Prefill));
        assert_eq!(RequestRow::decode(4, 5, &BLOCKS, 6), named(Phase::Decode));
        assert_eq!(
            RequestRow::paused(5, &BLOCKS, 6),
            RequestRow {
                query_length: 0,
                ..named(Phase::Paused)
            }
        );
        for (base, phase) in [
            (RequestRow::DECODE, Phase::Decode),
            (RequestRow::PREFILL, Phase::Prefill),
            (RequestRow::PAUSED, Phase::Paused),
        ] {
            assert_eq!(
                base,
                RequestRow {
                    query_length: 0,
                    kv_offset: 0,
                    blocks: &[],
                    mamba_slot: -1,
                    ..named(phase)
                }
            );
        }
    }
}
