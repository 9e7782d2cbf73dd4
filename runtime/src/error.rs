//! Typed errors of a step. Each names the offending request row, the field and the limit.

use thiserror::Error;

/// Why a step input was rejected. A rejected step changes nothing: the previous
/// metadata, and any state the fill keeps between steps, stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StepError {
    /// More rows than the layout holds.
    #[error("{rows} request rows exceed max_requests = {limit}")]
    TooManyRequests {
        /// Rows given (paused and active).
        rows: usize,
        /// `max_requests`.
        limit: usize,
    },
    /// More tokens than the layout holds.
    #[error("{tokens} tokens in the step exceed max_tokens = {limit}")]
    TooManyTokens {
        /// Sum of the active rows' query lengths.
        tokens: u64,
        /// `max_tokens`.
        limit: usize,
    },
    /// Rows out of the paused / decode / prefill order.
    #[error(
        "request {row}: a {phase} row after a {previous} row (rows must be paused, then decode, then prefill)"
    )]
    PhaseOrder {
        /// The row.
        row: usize,
        /// Its phase.
        phase: &'static str,
        /// The phase of the row before it.
        previous: &'static str,
    },
    /// An active row contributing no tokens.
    #[error("request {row}: query_length is 0; an active request contributes at least one token")]
    ZeroQueryLength {
        /// The row.
        row: usize,
    },
    /// A decode row whose query length is not `s + 1`.
    #[error(
        "request {row}: decode query_length {got} must equal speculative_tokens + 1 = {expected}"
    )]
    DecodeQueryLength {
        /// The row.
        row: usize,
        /// Its query length.
        got: u32,
        /// `s + 1`.
        expected: u32,
    },
    /// `kv_offset + query_length` beyond the longest sequence: `max_seq_len` for a
    /// prefill row; for a decode row `max_seq_len + speculative_tokens` (its draft tokens
    /// may run past the sequence's end), within the block table's positions
    /// ([`Dims::decode_kv_limit`](crate::Dims::decode_kv_limit)).
    #[error(
        "request {row}: kv_offset {kv_offset} + query_length {query_length} exceeds {bound} = {limit}"
    )]
    SequenceTooLong {
        /// The row.
        row: usize,
        /// Its KV offset.
        kv_offset: u32,
        /// Its query length.
        query_length: u32,
        /// The largest `kv_offset + query_length` allowed for the row.
        limit: usize,
        /// What sets the limit: `"max_seq_len"`, `"max_seq_len + speculative_tokens"` or
        /// `"block_table_width * block_size"`.
        bound: &'static str,
    },
    /// More block ids than the block table is wide.
    #[error("request {row}: {count} block ids exceed the block table width {limit}")]
    TooManyBlocks {
        /// The row.
        row: usize,
        /// Block ids given.
        count: usize,
        /// Block-table width.
        limit: usize,
    },
    /// A block id outside the pool (the dummy block is never handed out).
    #[error(
        "request {row}: blocks[{index}] = {id} is outside the KV pool [0, {limit}) (block {limit} is the dummy block)"
    )]
    BlockOutOfRange {
        /// The row.
        row: usize,
        /// Position in the row's block list.
        index: usize,
        /// The id.
        id: i32,
        /// The dummy block id (first id not handed out).
        limit: i32,
    },
    /// A token position whose block is missing.
    #[error(
        "request {row}: position {position} needs blocks[{index}], but the row has {count} block ids (or -1 there)"
    )]
    MissingBlock {
        /// The row.
        row: usize,
        /// The token position written.
        position: u32,
        /// The block index it needs.
        index: usize,
        /// Block ids the row has.
        count: usize,
    },
    /// A Mamba layout with an active row that has no state slot.
    #[error(
        "request {row}: mamba_slot is missing (-1); every active request of a Mamba layout needs a state slot"
    )]
    MissingMambaSlot {
        /// The row.
        row: usize,
    },
    /// A Mamba slot outside `[0, max_requests)`.
    #[error("request {row}: mamba_slot {slot} is outside [0, {limit})")]
    MambaSlotOutOfRange {
        /// The row.
        row: usize,
        /// The slot.
        slot: i32,
        /// `max_requests`.
        limit: usize,
    },
    /// Two rows sharing a Mamba slot.
    #[error("request {row}: mamba_slot {slot} is already used by request {other}")]
    DuplicateMambaSlot {
        /// The row.
        row: usize,
        /// The slot.
        slot: i32,
        /// The first row that uses it.
        other: usize,
    },
    /// Token ids whose count is not the step's token count.
    #[error("token_ids has {got} entries but the step has {expected} tokens")]
    TokenIdsLength {
        /// Entries given.
        got: usize,
        /// Step tokens.
        expected: usize,
    },
    /// Intermediate offsets given for a layout without Mamba, or not one entry per
    /// prefill request.
    #[error("intermediate_offsets has {got} entries but the step has {expected} prefill requests")]
    IntermediateLength {
        /// Entries given.
        got: usize,
        /// Prefill requests (0 for a layout without Mamba).
        expected: usize,
    },
    /// A bad intermediate offset.
    #[error(
        "request {row}: intermediate offset {offset} must lie in (0, query_length = {query_length}) (count {count} of at most 3)"
    )]
    IntermediateOffset {
        /// The row.
        row: usize,
        /// The offset (or the count when the count is over 3).
        offset: u32,
        /// The row's query length.
        query_length: u32,
        /// The row's offset count.
        count: u8,
    },
    /// More intermediate offsets than the layout's capacity.
    #[error(
        "{count} intermediate offsets exceed the layout's capacity {limit} (min(ceil(max_tokens / block_size), 3 * max_requests))"
    )]
    TooManyIntermediates {
        /// Offsets given.
        count: usize,
        /// `Kmax`.
        limit: usize,
    },
    /// An expert-parallel step whose shape the group's agreement does not cover: the rank
    /// agreed on another step than the one it builds (see `crate::agree`).
    #[error(
        "the step ({tokens} tokens, {prefill} prefill requests) is not covered by the expert-parallel agreement (at most {max_tokens} tokens, prefill on some rank: {any_prefill}); this rank agreed on another step"
    )]
    NotAgreed {
        /// The step's real tokens.
        tokens: u32,
        /// Its prefill requests.
        prefill: u32,
        /// The group's largest token count.
        max_tokens: u32,
        /// Whether the group saw a prefill request.
        any_prefill: bool,
    },
    /// A buffer handed to the fill that does not fit the layout.
    #[error(
        "the metadata buffer has {got} bytes at alignment {align}, the layout needs {expected} bytes 8-aligned"
    )]
    Buffer {
        /// Bytes given.
        got: usize,
        /// Its address alignment (largest power of two dividing it, capped at 8).
        align: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// A [`FillState`](crate::fill::FillState) made for another layout (a bug in the
    /// caller: a fill state belongs to the buffer and layout it was made for).
    #[error(
        "the fill state was made for {rows} request rows and {slots} Mamba slots, the layout has {expected_rows} rows and {expected_slots} slots"
    )]
    FillState {
        /// Request rows of the state's layout.
        rows: usize,
        /// Mamba slots of the state's layout (0 without Mamba).
        slots: usize,
        /// Request rows of this layout.
        expected_rows: usize,
        /// Mamba slots of this layout.
        expected_slots: usize,
    },
}

impl StepError {
    /// A short stable name of the error kind, for reports and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooManyRequests { .. } => "too_many_requests",
            Self::TooManyTokens { .. } => "too_many_tokens",
            Self::PhaseOrder { .. } => "phase_order",
            Self::ZeroQueryLength { .. } => "zero_query_length",
            Self::DecodeQueryLength { .. } => "decode_query_length",
            Self::SequenceTooLong { .. } => "sequence_too_long",
            Self::TooManyBlocks { .. } => "too_many_blocks",
            Self::BlockOutOfRange { .. } => "block_out_of_range",
            Self::MissingBlock { .. } => "missing_block",
            Self::MissingMambaSlot { .. } => "missing_mamba_slot",
            Self::MambaSlotOutOfRange { .. } => "mamba_slot_out_of_range",
            Self::DuplicateMambaSlot { .. } => "duplicate_mamba_slot",
            Self::TokenIdsLength { .. } => "token_ids_length",
            Self::IntermediateLength { .. } => "intermediate_length",
            Self::IntermediateOffset { .. } => "intermediate_offset",
            Self::TooManyIntermediates { .. } => "too_many_intermediates",
            Self::NotAgreed { .. } => "not_agreed",
            Self::Buffer { .. } => "buffer",
            Self::FillState { .. } => "fill_state",
        }
    }
}
