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

/// Where a step input came from, handed beside it by
/// [`BatchState::with_step_origin`](crate::BatchState::with_step_origin): which batch
/// state built it, which build of that state's schedule it is, and, when the state can
/// vouch for it, the build this step merely *advances*.
///
/// A step advances build `b` when it is build `b`'s step after a prepared step in which
/// every row continued ([`BatchState::prepare`](crate::BatchState::prepare), then
/// [`resolve`](crate::BatchState::resolve) with no row finishing): the same rows in the same
/// order, resident rows, phases, query lengths, Mamba slots and sampling, every KV offset
/// moved by its query length, and the block lists grown only by the entries the
/// residency changes append. A staging builder that staged build `b` of the same state
/// can then stage this step from what it knows and the changes alone
/// ([`StagingBuilder::try_advance`](crate::devfill::StagingBuilder::try_advance)),
/// without a look at each row.
///
/// It cannot be made or copied outside this crate, and it names the slices of the input
/// it came with (a different input with it is not vouched for).
#[derive(Debug)]
pub struct StepOrigin {
    /// The batch state (unique per `BatchState` in the process).
    pub(crate) state: u64,
    /// This build's number.
    pub(crate) build: u64,
    /// The build this step advances, if any.
    pub(crate) advances: Option<u64>,
    /// The input's rows, resident rows and changes (address and length): the origin
    /// vouches for these.
    pub(crate) rows: (usize, usize),
    pub(crate) resident_rows: (usize, usize),
    pub(crate) changes: (usize, usize),
}

impl StepOrigin {
    /// Whether the batch state vouches that this step advances the build before it (see
    /// the type's docs).
    pub fn advances(&self) -> bool {
        self.advances.is_some()
    }

    /// Whether `input` is the input this origin came with (the same row, resident-row and
    /// change slices, no token ids or intermediate offsets).
    pub(crate) fn describes(&self, input: &StepInput<'_>) -> bool {
        let Some(res) = input.residency else {
            return false;
        };
        input.token_ids.is_none()
            && input.intermediate.is_none()
            && self.rows == (input.rows.as_ptr() as usize, input.rows.len())
            && self.resident_rows == (res.resident_rows.as_ptr() as usize, res.resident_rows.len())
            && self.changes == (res.changes.as_ptr() as usize, res.changes.len())
    }

    /// The build this step is (for the builder's record of what it staged last).
    pub(crate) fn key(&self) -> (u64, u64) {
        (self.state, self.build)
    }
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
