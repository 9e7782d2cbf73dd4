//! The engine-side batch state: the request table, its KV blocks and Mamba slots, and the
//! step input (rows in Megatron order plus block-table residency) built from it.
//!
//! [`BatchState`] is the high-level API: an engine that lets it own the
//! request table gets, every step, a [`StepInput`] whose rows are in context order
//! (paused, then decode, then prefill) and a [`Residency`] that says which block-table
//! entries changed since the previous step, so a backend can keep the block table resident
//! on the device and move only the changes.
//!
//! # Life of a request
//!
//! 1. [`admit`](BatchState::admit) gives it a *resident row* (the lowest free row in
//!    `[0, max_requests)`) and, for Mamba layouts, a state slot from the
//!    [`MambaSlotPool`]. It starts in [`RequestPhase::Prefill`] with no KV blocks.
//! 2. Each step the engine schedules some live requests:
//!    [`schedule_prefill`](BatchState::schedule_prefill) (a chunk of the prompt) or
//!    [`schedule_decode`](BatchState::schedule_decode) (`s + 1` tokens: the last sampled
//!    token and `s` draft tokens). Scheduling allocates, from the [`KvBlockAllocator`],
//!    the blocks the step's positions need: `ceil((kv_offset + q) / block_size)` blocks in
//!    all. A live *decode* request that is not scheduled is a *paused row* of the step
//!    (it keeps its blocks and slot; Megatron's paused rows do too). A live *prefill*
//!    request that is not scheduled (a chunked prefill between two chunks, or one admitted
//!    but not started) is no row of the step at all: Megatron keeps its one in-flight
//!    chunked prefill request beyond `total_request_count`, not among the paused rows, and
//!    adds a waiting request to the context only with its first chunk. It keeps its
//!    resident row, blocks and slot all the same. [`pause`](BatchState::pause) marks a
//!    request as paused on purpose (it then refuses to be scheduled until
//!    [`resume`](BatchState::resume)), which is what a scheduler does when KV blocks run
//!    out.
//! 3. [`with_step`](BatchState::with_step) builds the step input and hands it to a
//!    closure (typically `backend.step(input)`).
//! 4. [`commit_step`](BatchState::commit_step) advances every scheduled request: a
//!    prefill chunk moves `kv_offset` and the processed prompt on; the last chunk also
//!    samples the first output token (the request becomes a decode request); a decode row
//!    adds `1 + accepted` tokens (the accepted draft tokens and one sampled token).
//!    Requests that reach their `max_output` tokens finish: their blocks go back to the
//!    allocator, their slot to the pool, their row to the free rows.
//!
//! A request can also leave early with [`release`](BatchState::release) (an abort, or an
//! eviction that will recompute it later).
//!
//! An engine that prepares the next step while the current one runs ends a step with
//! Megatron's async-scheduling calls instead of `commit_step`:
//! [`prepare`](BatchState::prepare), [`commit_sampled`](BatchState::commit_sampled) and
//! [`resolve`](BatchState::resolve) (docs/ASYNC-SCHEDULING.md). `resolve` moves rows in
//! step order (Megatron's hole filling); requests keep their resident rows, so the
//! residency contract below holds across moves.
//!
//! # Residency contract
//!
//! The consumer (a backend) keeps a *resident block table* of `max_requests` rows by
//! `block_table_width` entries, indexed by resident row, not by the step's row order. The
//! contract between this state and that table:
//!
//! * **Initial state.** A fresh `BatchState` corresponds to a resident table whose entries
//!   are all `-1`. The first step's changes describe everything set since creation. A
//!   backend that already ran steps of another engine (or of an earlier `BatchState`)
//!   must be told before the fresh state's first step,
//!   [`MetadataBackend::reset_residency`](crate::MetadataBackend::reset_residency):
//!   otherwise it keeps trusting rows the other engine wrote and never cleared.
//! * **Stable rows.** A request keeps its resident row from admission until it finishes or
//!   is released; `Residency::resident_rows[i]` is the resident row of step row `i` (paused
//!   rows included), so the rows of a step are pairwise distinct. A request with no row in
//!   the step (an unscheduled prefill) keeps its resident row and its entries there. A
//!   freed row is reused by a later admission (lowest free row first).
//! * **Changes are absolute and ordered.** `Residency::changes` lists every entry written
//!   since the previous *committed* step, in the order the writes happened: an appended
//!   block is `{resident_row, index, block}` where `index` is its position in the
//!   request's block list (blocks are only ever appended, at increasing indices); a
//!   request that finishes or is released clears every entry it had, `{row, j, -1}` for
//!   `j` in `0..len`, in increasing `j`. When a row is freed and reused between two steps,
//!   its clears come before the new request's sets. Applying the changes in order to the
//!   resident table makes row `r`, entries `0..len`, equal the block list of the request
//!   living in row `r` (the `blocks` of its step row, when it has one), and every other
//!   entry `-1`.
//! * **Idempotent, all or nothing.** A backend applies the changes only when its step
//!   succeeds. If the step fails, the engine does not commit it, and the next
//!   [`with_step`](BatchState::with_step) hands out the same changes again, followed by any
//!   newer ones. Because each change is an absolute store, applying a prefix twice is
//!   harmless as long as the whole list is applied in order afterwards.
//! * **Consistency.** The rows' `blocks` stay authoritative and always agree with the
//!   table the changes produce. The full host fill ignores the residency; the CPU
//!   backend's fill uses it to leave rows that stayed in place untouched
//!   ([`fill::plan_step_resident`](crate::fill::plan_step_resident)).
//! * **Shared blocks.** With prefix caching ([`BatchState::with_prefix_caching`])
//!   a block may sit in several rows at once (requests sharing a
//!   prefix); every row's entries are still its own absolute stores.
//!
//! # Allocation
//!
//! All tables are sized for the layout at construction. In steady state a step allocates
//! nothing: the row scratch is recycled between steps (through std's in-place `collect`,
//! which keeps the buffer of an emptied `Vec` whose element type has the same layout), and
//! the change list keeps its capacity.

use std::num::NonZeroU32;

mod schedule;

pub use schedule::{AsyncError, Prepared};

use crate::alloc::{AllocError, KvBlockAllocator, MambaSlotPool};
use crate::dims::Dims;
use crate::step::{BlockChange, RequestRow, Residency, StepInput, StepOrigin};

mod prefix;
pub use prefix::{MambaStore, PrefixHit, PrefixOptions, PrefixStats};

/// Where a live request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestPhase {
    /// Part of its prompt is still to be processed.
    Prefill,
    /// Generating output tokens.
    Decode,
}

impl RequestPhase {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
        }
    }
}

/// A live request: its resident row and its admission number. Stale handles (of a
/// request that has finished, even if the row was reused) are rejected with
/// [`BatchError::UnknownRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestHandle {
    /// Admission number: 1 for the first admitted request, then increasing. Orders
    /// requests by age.
    id: u64,
    /// Resident row in `[0, max_requests)`.
    row: u32,
}

impl RequestHandle {
    /// The admission number (1, 2, … in admission order; never reused).
    pub const fn id(self) -> u64 {
        self.id
    }

    /// The resident row in `[0, max_requests)`.
    pub const fn row(self) -> u32 {
        self.row
    }
}

/// A snapshot of one live request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Its handle.
    pub handle: RequestHandle,
    /// Prefill or decode.
    pub phase: RequestPhase,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Prompt tokens already processed.
    pub prompt_done: u32,
    /// Output tokens sampled so far.
    pub generated: u32,
    /// Output tokens after which the request finishes.
    pub max_output: u32,
    /// Tokens in its KV cache (the next step's `kv_offset`).
    pub kv_offset: u32,
    /// KV blocks it holds.
    pub blocks: u32,
    /// Its Mamba slot (`-1` for layouts without Mamba).
    pub mamba_slot: i32,
    /// Whether it is paused on purpose ([`BatchState::pause`]).
    pub paused: bool,
    /// Tokens scheduled this step (0: none; a decode request is then a paused row of the
    /// step, a prefill request no row at all).
    pub scheduled: u32,
}

/// A request that left the table: finished in [`BatchState::commit_step`] or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Its (now stale) handle.
    pub handle: RequestHandle,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Prompt tokens that had been processed.
    pub prompt_done: u32,
    /// Output tokens sampled.
    pub generated: u32,
    /// Output tokens it asked for.
    pub max_output: u32,
}

/// Why the batch state refused an operation. A call that returns one changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Every resident row holds a request.
    #[error("no free request row (max_requests = {max_requests} rows are all in use)")]
    NoFreeRow {
        /// `max_requests`.
        max_requests: usize,
    },
    /// The Mamba slot pool is empty.
    #[error("no free Mamba state slot ({slots} slots are all in use)")]
    NoMambaSlot {
        /// Slots in the pool.
        slots: usize,
    },
    /// A request with an empty prompt.
    #[error("a request needs at least one prompt token")]
    EmptyPrompt,
    /// A request that asks for no output.
    #[error("a request needs to generate at least one token (max_output = 0)")]
    NoOutput,
    /// A request longer than the longest sequence: Megatron's admission rule,
    /// `prompt + output ≤ max_seq_len`.
    #[error(
        "a request of {prompt_len} prompt and {max_output} output tokens has {tokens} tokens, more than max_seq_len = {max_seq_len}"
    )]
    TooLong {
        /// Prompt tokens.
        prompt_len: u32,
        /// Output tokens.
        max_output: u32,
        /// `prompt_len + max_output`.
        tokens: u64,
        /// `max_seq_len`.
        max_seq_len: usize,
    },
    /// A request whose last decode step would write past the block table's positions
    /// (only possible when `speculative_tokens` exceeds the room the extra block-table
    /// column leaves; Megatron would index past the block table there).
    #[error(
        "a request of {prompt_len} prompt and {max_output} output tokens writes {positions} KV positions (prompt + output - 1 + speculative tokens), more than the {limit} a block-table row holds (block_table_width * block_size)"
    )]
    ExceedsBlockTable {
        /// Prompt tokens.
        prompt_len: u32,
        /// Output tokens.
        max_output: u32,
        /// KV positions its last step writes up to.
        positions: u64,
        /// The positions one block-table row holds, capped at `max_seq_len + s`
        /// ([`Dims::decode_kv_limit`]).
        limit: usize,
    },
    /// A request that needs more KV blocks than the whole pool holds.
    #[error(
        "a request of {prompt_len} prompt and {max_output} output tokens needs {blocks} KV blocks, more than the pool's {pool} usable blocks"
    )]
    ExceedsPool {
        /// Prompt tokens.
        prompt_len: u32,
        /// Output tokens.
        max_output: u32,
        /// Blocks it needs at its longest.
        blocks: u64,
        /// Usable blocks in the pool (the dummy excluded).
        pool: usize,
    },
    /// A handle that names no live request.
    #[error("request {id} (row {row}) is not live")]
    UnknownRequest {
        /// Admission number.
        id: u64,
        /// Resident row.
        row: u32,
    },
    /// Scheduling a request that is paused.
    #[error("request {id} is paused; resume it before scheduling it")]
    Paused {
        /// Admission number.
        id: u64,
    },
    /// Scheduling (or pausing) a request already scheduled this step.
    #[error("request {id} is already scheduled this step")]
    AlreadyScheduled {
        /// Admission number.
        id: u64,
    },
    /// Decode scheduled for a prefill request or the other way round.
    #[error("request {id} is in {phase}, cannot schedule a {wanted} step")]
    WrongPhase {
        /// Admission number.
        id: u64,
        /// Its phase.
        phase: &'static str,
        /// The step asked for.
        wanted: &'static str,
    },
    /// A prefill chunk of 0 tokens or longer than the rest of the prompt.
    #[error("request {id}: prefill chunk of {chunk} tokens, the prompt has {remaining} left")]
    Chunk {
        /// Admission number.
        id: u64,
        /// The chunk asked for.
        chunk: u32,
        /// Prompt tokens not yet processed.
        remaining: u32,
    },
    /// The step would exceed `max_tokens`.
    #[error("the step would have {tokens} tokens, more than max_tokens = {limit}")]
    TokenBudget {
        /// Tokens the step would have.
        tokens: u64,
        /// `max_tokens`.
        limit: usize,
    },
    /// Not enough free KV blocks.
    #[error("{needed} KV blocks needed, {available} free")]
    OutOfBlocks {
        /// Blocks the operation needs.
        needed: u32,
        /// Blocks free.
        available: usize,
    },
    /// [`BatchState::commit_step`] without a step built since the last change.
    #[error("no step was built since the schedule last changed: call with_step before commit_step")]
    NotBuilt,
    /// [`BatchState::commit_step`] while a step prepared with [`BatchState::prepare`]
    /// awaits its [`BatchState::resolve`] (the prepared step was advanced already).
    #[error("a prepared step awaits resolve: end it with resolve, not commit_step")]
    PreparedPending,
    /// A layout the batch state cannot serve.
    #[error("layout: {0}")]
    Layout(String),
    /// An allocator refused an operation. The state hands out and takes back only ids it
    /// got from its pools, so this is a bug in this module if it ever shows (and the one
    /// exception to "nothing changed": a release may have been half done).
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The prefix cache refused an operation (prefix caching only; see
    /// [`BatchState::with_prefix_caching`]).
    #[error(transparent)]
    Prefix(#[from] crate::prefix::PrefixError),
}

/// One resident row's request.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u64,
    phase: RequestPhase,
    prompt_len: u32,
    prompt_done: u32,
    generated: u32,
    max_output: u32,
    kv: u32,
    blocks: u32,
    mamba_slot: i32,
    paused: bool,
    scheduled: Option<NonZeroU32>,
}

/// The engine-side request table (see the [module documentation](self)).
#[derive(Debug)]
pub struct BatchState {
    max_requests: usize,
    max_tokens: usize,
    max_seq_len: usize,
    /// [`Dims::decode_kv_limit`].
    decode_kv_limit: usize,
    block_size: usize,
    speculative_tokens: u32,
    block_table_width: usize,
    kv: KvBlockAllocator,
    slots: Option<MambaSlotPool>,
    /// Per resident row, its request.
    rows: Vec<Option<Entry>>,
    /// Host copy of the resident block table, `max_requests × nkv`, `-1` where unset.
    table: Vec<i32>,
    /// Resident rows in admission order.
    live: Vec<u32>,
    /// Resident rows scheduled for decode / prefill this step, in scheduling order.
    decode_order: Vec<u32>,
    prefill_order: Vec<u32>,
    scheduled_tokens: u64,
    /// Changes not yet acknowledged by a commit.
    changes: Vec<BlockChange>,
    /// Step-row scratch (resident row of each step row).
    resident_rows: Vec<u32>,
    /// Recycled step rows (always empty between calls).
    row_scratch: Vec<RequestRow<'static>>,
    /// Finished requests of the last commit.
    finished: Vec<Finished>,
    next_id: u64,
    built: bool,
    /// This state's number in the process ([`StepOrigin`]).
    state_id: u64,
    /// The number of the last build of a schedule (counted by [`with_step`](Self::with_step)
    /// when the schedule changed since the build before).
    builds: u64,
    /// The build the schedule advances ([`StepOrigin`]): set by a `prepare` whose rows all
    /// ran with `q = s + 1`, kept by a `resolve` in which every row continues, cleared by
    /// any other change of the schedule. Vouched for only once the prepared step resolved
    /// (not while `sched` holds a prepared step).
    advances: Option<u64>,
    /// Megatron's async scheduling: prepare / commit / resolve (`schedule.rs`).
    sched: schedule::AsyncState,
    /// Prefix caching, when enabled ([`BatchState::with_prefix_caching`]).
    prefix: Option<Box<prefix::PrefixState>>,
}

/// Writes `ids` into resident row `row`'s block list from entry `first` (rows of `width`
/// entries in `table`) and records each as a residency change: how every path that gives a
/// request blocks (scheduling, a prepared step's crossings, a prefix-cache hit) appends
/// them. The callers have bounded the entries by the row.
fn append_blocks<'a>(
    table: &mut [i32],
    changes: &mut Vec<BlockChange>,
    width: usize,
    row: u32,
    first: u32,
    ids: impl Iterator<Item = &'a i32> + Clone,
) {
    let start = row as usize * width + first as usize;
    let len = ids.clone().count();
    if let Some(dst) = table.get_mut(start..start + len) {
        for (d, &id) in dst.iter_mut().zip(ids.clone()) {
            *d = id;
        }
    }
    changes.extend((first..).zip(ids).map(|(index, &block)| BlockChange {
        resident_row: row,
        index,
        block,
    }));
}

/// Numbers the batch states of the process ([`StepOrigin`]).
static NEXT_STATE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Empties `v` and reuses its buffer for rows of another lifetime (std collects in place
/// when the element layout is the same, so nothing is allocated).
fn recycle<'b>(mut v: Vec<RequestRow<'_>>) -> Vec<RequestRow<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| RequestRow::paused(0, &[], -1))
        .collect()
}

impl BatchState {
    /// An empty table for a layout: `max_requests` rows, a KV pool of the layout's size
    /// (`dummy_block + 1` blocks) and, for Mamba layouts, `max_requests` slots.
    ///
    /// # Errors
    ///
    /// [`BatchError::Alloc`] when the pools cannot be built, [`BatchError::Layout`] when the
    /// block table does not fit memory.
    pub fn new<D: Dims>(dims: &D) -> Result<Self, BatchError> {
        let r = dims.max_requests();
        let nkv = dims.block_table_width();
        let pool = usize::try_from(dims.dummy_block())
            .map_err(|_| BatchError::Layout("negative dummy block".to_owned()))?
            .saturating_add(1);
        let kv = KvBlockAllocator::new(pool)?;
        let slots = if dims.has_mamba() {
            Some(MambaSlotPool::new(r)?)
        } else {
            None
        };
        let cells = r.checked_mul(nkv).ok_or_else(|| {
            BatchError::Layout("max_requests × block table width overflows".to_owned())
        })?;
        if r > u32::MAX as usize || nkv > u32::MAX as usize {
            return Err(BatchError::Layout(
                "max_requests and the block table width must fit u32".to_owned(),
            ));
        }
        Ok(Self {
            max_requests: r,
            max_tokens: dims.max_tokens(),
            max_seq_len: dims.max_seq_len(),
            decode_kv_limit: dims.decode_kv_limit(),
            block_size: dims.block_size().max(1),
            speculative_tokens: u32::try_from(dims.speculative_tokens()).unwrap_or(u32::MAX),
            block_table_width: nkv,
            kv,
            slots,
            rows: vec![None; r],
            table: vec![-1; cells],
            live: Vec::with_capacity(r),
            decode_order: Vec::with_capacity(r),
            prefill_order: Vec::with_capacity(r),
            scheduled_tokens: 0,
            changes: Vec::new(),
            resident_rows: Vec::with_capacity(r),
            row_scratch: Vec::with_capacity(r),
            finished: Vec::with_capacity(r),
            next_id: 1,
            built: false,
            state_id: NEXT_STATE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            builds: 0,
            advances: None,
            sched: schedule::AsyncState::with_capacity(
                r,
                dims.speculative_tokens().saturating_add(1),
            ),
            prefix: None,
        })
    }

    // --- capacities and pools ------------------------------------------------------------

    /// `max_requests`: resident rows.
    pub fn max_requests(&self) -> usize {
        self.max_requests
    }

    /// `s`: draft tokens per decode step.
    pub fn speculative_tokens(&self) -> u32 {
        self.speculative_tokens
    }

    /// Tokens per KV block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The KV block allocator (read only).
    pub fn kv_pool(&self) -> &KvBlockAllocator {
        &self.kv
    }

    /// KV blocks that can be handed out (the pool without its dummy block).
    pub fn kv_capacity(&self) -> usize {
        self.kv.pool_size().saturating_sub(1)
    }

    /// The Mamba slot pool (`None` for layouts without Mamba).
    pub fn mamba_pool(&self) -> Option<&MambaSlotPool> {
        self.slots.as_ref()
    }

    /// Live requests (paused ones included).
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Handles of the live requests, oldest first.
    pub fn live(&self) -> impl Iterator<Item = RequestHandle> + '_ {
        self.live.iter().filter_map(|&row| {
            self.rows
                .get(row as usize)
                .and_then(|e| e.as_ref())
                .map(|e| RequestHandle { id: e.id, row })
        })
    }

    /// Whether [`admit`](Self::admit) would find a row and (for Mamba layouts) a slot.
    pub fn can_admit(&self) -> bool {
        self.live.len() < self.max_requests
            && self.slots.as_ref().is_none_or(|s| s.free_count() > 0)
    }

    /// Tokens scheduled for this step so far.
    pub fn scheduled_tokens(&self) -> u64 {
        self.scheduled_tokens
    }

    /// The host copy of the resident block table (`max_requests × block_table_width`,
    /// `-1` where unset): what a consumer's table holds after applying every change.
    pub fn resident_table(&self) -> &[i32] {
        &self.table
    }

    /// Block-table width `nkv`.
    pub fn block_table_width(&self) -> usize {
        self.block_table_width
    }

    // --- requests --------------------------------------------------------------------------

    fn entry(&self, h: RequestHandle) -> Result<&Entry, BatchError> {
        self.rows
            .get(h.row as usize)
            .and_then(|e| e.as_ref())
            .filter(|e| e.id == h.id)
            .ok_or(BatchError::UnknownRequest {
                id: h.id,
                row: h.row,
            })
    }

    fn entry_mut(&mut self, h: RequestHandle) -> Result<&mut Entry, BatchError> {
        self.rows
            .get_mut(h.row as usize)
            .and_then(|e| e.as_mut())
            .filter(|e| e.id == h.id)
            .ok_or(BatchError::UnknownRequest {
                id: h.id,
                row: h.row,
            })
    }

    /// A snapshot of a live request.
    pub fn info(&self, h: RequestHandle) -> Result<RequestInfo, BatchError> {
        let e = self.entry(h)?;
        Ok(RequestInfo {
            handle: h,
            phase: e.phase,
            prompt_len: e.prompt_len,
            prompt_done: e.prompt_done,
            generated: e.generated,
            max_output: e.max_output,
            kv_offset: e.kv,
            blocks: e.blocks,
            mamba_slot: e.mamba_slot,
            paused: e.paused,
            scheduled: e.scheduled.map_or(0, NonZeroU32::get),
        })
    }

    /// The KV block ids of a live request, block `j` holding positions `j·B .. j·B+B−1`.
    pub fn blocks(&self, h: RequestHandle) -> Result<&[i32], BatchError> {
        let e = self.entry(h)?;
        Ok(self.row_blocks(h.row, e.blocks))
    }

    fn row_blocks(&self, row: u32, len: u32) -> &[i32] {
        let start = row as usize * self.block_table_width;
        self.table.get(start..start + len as usize).unwrap_or(&[])
    }

    /// Megatron's `request_kv_block_counts` of a live request: the KV blocks it holds
    /// (`ceil((kv_offset + q) / B)` once its step is scheduled; after rejected draft
    /// tokens it may hold one block beyond its last cached token until its next step).
    pub fn kv_block_count(&self, h: RequestHandle) -> Result<u32, BatchError> {
        Ok(self.entry(h)?.blocks)
    }

    /// The last KV position of a request: the last one its scheduled step writes
    /// (`kv_offset + q − 1`), else its last cached token (`kv_offset − 1`); `None` before
    /// it has any.
    fn last_position(e: &Entry) -> Option<u64> {
        let q = e.scheduled.map_or(0, NonZeroU32::get);
        (u64::from(e.kv) + u64::from(q)).checked_sub(1)
    }

    /// Megatron's `request_last_kv_block_offset` of a live request: where in its block its
    /// last KV position lies, `position mod B`, the position being the last one its
    /// scheduled step writes (`kv_offset + q − 1`) or, when it is not scheduled, its last
    /// cached token (`kv_offset − 1`; Megatron pauses a decode request whose last token
    /// filled its block, i.e. at offset `B − 1`). `None` before it has any position
    /// (admitted, not yet scheduled).
    pub fn last_kv_block_offset(&self, h: RequestHandle) -> Result<Option<u32>, BatchError> {
        let e = self.entry(h)?;
        Ok(Self::last_position(e).and_then(|p| u32::try_from(p % self.block_size as u64).ok()))
    }

    /// Megatron's `request_last_kv_block_id` of a live request: the block holding the
    /// position [`last_kv_block_offset`](Self::last_kv_block_offset) describes (for a
    /// scheduled request, its last block, entry `kv_block_count − 1`). `None` before it
    /// has any position.
    pub fn last_kv_block_id(&self, h: RequestHandle) -> Result<Option<i32>, BatchError> {
        let e = self.entry(h)?;
        let blocks = self.row_blocks(h.row, e.blocks);
        Ok(Self::last_position(e)
            .and_then(|p| usize::try_from(p / self.block_size as u64).ok())
            .and_then(|j| blocks.get(j).copied()))
    }

    /// KV positions a request's longest step writes up to: the whole prompt, or, when it
    /// decodes, `prompt + max_output − 1 + s` (its last decode step starts at
    /// `kv_offset = prompt + max_output − 2` and writes `s + 1` positions).
    pub fn positions_needed(&self, prompt_len: u32, max_output: u32) -> u64 {
        let p = u64::from(prompt_len);
        if max_output <= 1 {
            p
        } else {
            p + u64::from(max_output) - 1 + u64::from(self.speculative_tokens)
        }
    }

    /// Checks that a request could ever be served: a prompt, some output,
    /// `prompt + output ≤ max_seq_len` (Megatron's admission rule), the positions of its
    /// last step inside a block-table row, and few enough blocks for the whole pool.
    ///
    /// With `s` draft tokens the last decode step of a request that reaches `max_seq_len`
    /// writes up to position `max_seq_len − 2 + s`: past the sequence, into the block
    /// table's extra column (see [`Dims::decode_kv_limit`]).
    pub fn check_request(&self, prompt_len: u32, max_output: u32) -> Result<(), BatchError> {
        if prompt_len == 0 {
            return Err(BatchError::EmptyPrompt);
        }
        if max_output == 0 {
            return Err(BatchError::NoOutput);
        }
        let tokens = u64::from(prompt_len) + u64::from(max_output);
        if tokens > self.max_seq_len as u64 {
            return Err(BatchError::TooLong {
                prompt_len,
                max_output,
                tokens,
                max_seq_len: self.max_seq_len,
            });
        }
        let positions = self.positions_needed(prompt_len, max_output);
        if positions > self.decode_kv_limit as u64 {
            return Err(BatchError::ExceedsBlockTable {
                prompt_len,
                max_output,
                positions,
                limit: self.decode_kv_limit,
            });
        }
        let blocks = positions.div_ceil(self.block_size as u64);
        if blocks > self.kv_capacity() as u64 {
            return Err(BatchError::ExceedsPool {
                prompt_len,
                max_output,
                blocks,
                pool: self.kv_capacity(),
            });
        }
        Ok(())
    }

    /// Admits a request: the lowest free resident row, a Mamba slot for Mamba layouts, no
    /// KV blocks yet (they come with scheduling).
    ///
    /// # Errors
    ///
    /// The errors of [`check_request`](Self::check_request), [`BatchError::NoFreeRow`],
    /// [`BatchError::NoMambaSlot`].
    pub fn admit(&mut self, prompt_len: u32, max_output: u32) -> Result<RequestHandle, BatchError> {
        self.check_request(prompt_len, max_output)?;
        let row = self
            .rows
            .iter()
            .position(Option::is_none)
            .ok_or(BatchError::NoFreeRow {
                max_requests: self.max_requests,
            })?;
        let mamba_slot = match &mut self.slots {
            Some(pool) => {
                let slot = pool.allocate().ok_or(BatchError::NoMambaSlot {
                    slots: pool.max_requests(),
                })?;
                if let Err(e) = pool.set_row(row, slot) {
                    // Cannot happen (fresh slot, row in range); give the slot back.
                    let _ = pool.free(slot);
                    return Err(e.into());
                }
                slot
            }
            None => -1,
        };
        let id = self.next_id;
        self.next_id += 1;
        // `row < max_requests ≤ u32::MAX` (checked in `new`).
        let row32 = row as u32;
        if let Some(cell) = self.rows.get_mut(row) {
            *cell = Some(Entry {
                id,
                phase: RequestPhase::Prefill,
                prompt_len,
                prompt_done: 0,
                generated: 0,
                max_output,
                kv: 0,
                blocks: 0,
                mamba_slot,
                paused: false,
                scheduled: None,
            });
        }
        self.live.push(row32);
        self.schedule_changed();
        Ok(RequestHandle { id, row: row32 })
    }

    /// Extra KV blocks a live request needs to process `q` more tokens from its current
    /// `kv_offset` (0 when its blocks already cover them).
    pub fn blocks_needed(&self, h: RequestHandle, q: u32) -> Result<u32, BatchError> {
        let e = self.entry(h)?;
        Ok(self.extra_blocks(e, q))
    }

    fn extra_blocks(&self, e: &Entry, q: u32) -> u32 {
        let need = (u64::from(e.kv) + u64::from(q)).div_ceil(self.block_size as u64);
        u32::try_from(need.saturating_sub(u64::from(e.blocks))).unwrap_or(u32::MAX)
    }

    /// Schedules a decode step (`s + 1` tokens) for a live decode request, allocating the
    /// blocks for positions `kv_offset .. kv_offset + s + 1`.
    ///
    /// # Errors
    ///
    /// Nothing changes on error: [`BatchError::UnknownRequest`], [`BatchError::Paused`],
    /// [`BatchError::AlreadyScheduled`], [`BatchError::WrongPhase`],
    /// [`BatchError::TokenBudget`], [`BatchError::OutOfBlocks`].
    pub fn schedule_decode(&mut self, h: RequestHandle) -> Result<(), BatchError> {
        self.schedule(
            h,
            RequestPhase::Decode,
            self.speculative_tokens.saturating_add(1),
        )
    }

    /// Schedules a prefill chunk of `chunk` prompt tokens (`1 ..= remaining`) for a live
    /// prefill request, allocating the blocks its positions need. The engine schedules the
    /// one request whose prompt is cut (chunked prefill) last, as Megatron does; rows keep
    /// the order of these calls.
    ///
    /// # Errors
    ///
    /// As [`schedule_decode`](Self::schedule_decode), plus [`BatchError::Chunk`].
    pub fn schedule_prefill(&mut self, h: RequestHandle, chunk: u32) -> Result<(), BatchError> {
        self.schedule(h, RequestPhase::Prefill, chunk)
    }

    fn schedule(
        &mut self,
        h: RequestHandle,
        phase: RequestPhase,
        q: u32,
    ) -> Result<(), BatchError> {
        let e = *self.entry(h)?;
        if e.paused {
            return Err(BatchError::Paused { id: h.id });
        }
        if e.scheduled.is_some() {
            return Err(BatchError::AlreadyScheduled { id: h.id });
        }
        if e.phase != phase {
            return Err(BatchError::WrongPhase {
                id: h.id,
                phase: e.phase.as_str(),
                wanted: phase.as_str(),
            });
        }
        let Some(qnz) = NonZeroU32::new(q) else {
            return Err(BatchError::Chunk {
                id: h.id,
                chunk: q,
                remaining: e.prompt_len.saturating_sub(e.prompt_done),
            });
        };
        if phase == RequestPhase::Prefill && q > e.prompt_len.saturating_sub(e.prompt_done) {
            return Err(BatchError::Chunk {
                id: h.id,
                chunk: q,
                remaining: e.prompt_len.saturating_sub(e.prompt_done),
            });
        }
        if phase == RequestPhase::Prefill && self.prefix.is_some() {
            return self.schedule_cached_prefill(h, &e, q);
        }
        let tokens = self.scheduled_tokens + u64::from(q);
        if tokens > self.max_tokens as u64 {
            return Err(BatchError::TokenBudget {
                tokens,
                limit: self.max_tokens,
            });
        }
        let extra = self.extra_blocks(&e, q);
        if extra > 0 {
            let start = h.row as usize * self.block_table_width + e.blocks as usize;
            let end = start + extra as usize;
            // `check_request` bounded the positions by the decode limit, at most the
            // row's nkv · B positions; checked again rather than trusted.
            if end > (h.row as usize + 1) * self.block_table_width {
                return Err(BatchError::Layout(format!(
                    "request {} would need more than {} blocks",
                    h.id, self.block_table_width
                )));
            }
            let available = self.kv_available();
            let out_of_blocks = BatchError::OutOfBlocks {
                needed: extra,
                available,
            };
            let cached_ids;
            let ids: &[i32] = match self.prefix.as_deref_mut() {
                Some(p) => {
                    cached_ids = p.allocate(extra as usize).ok_or(out_of_blocks)?;
                    &cached_ids
                }
                None => self.kv.allocate(extra as usize).ok_or(out_of_blocks)?,
            };
            append_blocks(
                &mut self.table,
                &mut self.changes,
                self.block_table_width,
                h.row,
                e.blocks,
                ids.iter(),
            );
        }
        if let Some(entry) = self.rows.get_mut(h.row as usize).and_then(|x| x.as_mut()) {
            entry.blocks += extra;
            entry.scheduled = Some(qnz);
        }
        match phase {
            RequestPhase::Decode => self.decode_order.push(h.row),
            RequestPhase::Prefill => self.prefill_order.push(h.row),
        }
        self.scheduled_tokens = tokens;
        self.schedule_changed();
        Ok(())
    }

    /// Pauses a live request that is not scheduled this step: it cannot be scheduled (a
    /// decode request stays a paused row, a prefill request out of the steps, with its
    /// blocks and slot) until [`resume`](Self::resume). Returns whether it was running.
    pub fn pause(&mut self, h: RequestHandle) -> Result<bool, BatchError> {
        let e = self.entry_mut(h)?;
        if e.scheduled.is_some() {
            return Err(BatchError::AlreadyScheduled { id: h.id });
        }
        let was_running = !e.paused;
        e.paused = true;
        Ok(was_running)
    }

    /// Resumes a paused request (it may be scheduled again). Returns whether it was paused.
    pub fn resume(&mut self, h: RequestHandle) -> Result<bool, BatchError> {
        let e = self.entry_mut(h)?;
        let was_paused = e.paused;
        e.paused = false;
        Ok(was_paused)
    }

    /// Removes a live request now (an abort, or an eviction to recompute it later): its
    /// blocks go back to the allocator, its slot to the pool, its row is freed and its
    /// block-table entries are cleared in the residency changes. If it was scheduled this
    /// step it leaves the schedule (the step must be built again).
    pub fn release(&mut self, h: RequestHandle) -> Result<Finished, BatchError> {
        let e = *self.entry(h)?;
        if let Some(q) = e.scheduled {
            self.scheduled_tokens = self.scheduled_tokens.saturating_sub(u64::from(q.get()));
            self.decode_order.retain(|&r| r != h.row);
            self.prefill_order.retain(|&r| r != h.row);
        }
        self.free_row(h.row, &e)?;
        self.schedule_changed();
        Ok(Finished {
            handle: h,
            prompt_len: e.prompt_len,
            prompt_done: e.prompt_done,
            generated: e.generated,
            max_output: e.max_output,
        })
    }

    /// The schedule changed: the step must be built again, and it advances no build.
    fn schedule_changed(&mut self) {
        self.built = false;
        self.advances = None;
    }

    /// Releases a row's blocks and slot and clears its table entries.
    fn free_row(&mut self, row: u32, e: &Entry) -> Result<(), BatchError> {
        let start = row as usize * self.block_table_width;
        let end = start + e.blocks as usize;
        if let Some(ids) = self.table.get(start..end) {
            match self.prefix.as_deref_mut() {
                Some(p) => p.release_row(row, ids)?,
                None => self.kv.release(ids)?,
            }
        }
        if let Some(pool) = &mut self.slots {
            pool.free_rows(std::slice::from_ref(&(row as usize)))?;
        }
        if let Some(ids) = self.table.get_mut(start..end) {
            ids.fill(-1);
        }
        for j in 0..e.blocks {
            self.changes.push(BlockChange {
                resident_row: row,
                index: j,
                block: -1,
            });
        }
        if let Some(cell) = self.rows.get_mut(row as usize) {
            *cell = None;
        }
        self.live.retain(|&r| r != row);
        Ok(())
    }

    /// Back to the freshly built state, whatever happened before: no live request, every
    /// resident row free, the KV block allocator and the Mamba slot pool reset (their
    /// Megatron `reset`), the resident table all `-1`, nothing scheduled, no pending
    /// block-table change, no finished request. The next steps are then exactly those of a
    /// new `BatchState` given the same calls. Allocates nothing.
    ///
    /// Two things carry over, on purpose: admission numbers continue (so a handle from
    /// before the reset stays stale, [`BatchError::UnknownRequest`], instead of naming a
    /// new request in the same row), and a backend that ran this state's steps still holds
    /// their resident table: as for a new `BatchState`, tell it before the next step
    /// ([`MetadataBackend::reset_residency`](crate::MetadataBackend::reset_residency)).
    pub fn reset(&mut self) {
        self.kv.reset();
        if let Some(p) = self.prefix.as_deref_mut() {
            p.reset();
        }
        if let Some(pool) = &mut self.slots {
            pool.reset();
        }
        self.rows.fill(None);
        self.table.fill(-1);
        self.live.clear();
        self.decode_order.clear();
        self.prefill_order.clear();
        self.scheduled_tokens = 0;
        self.changes.clear();
        self.resident_rows.clear();
        self.finished.clear();
        self.schedule_changed();
        self.sched.clear();
    }

    // --- the step --------------------------------------------------------------------------

    /// Builds the step input of the current schedule and calls `f` with it.
    ///
    /// Rows, in Megatron's context order: every live decode request that is not
    /// scheduled, as a paused row, oldest first; then the decode rows, then the prefill
    /// rows, each in the order they were scheduled. Live prefill requests that are not
    /// scheduled are no row (see the [module documentation](self)), so they shift neither
    /// the paused count nor `token_to_request_idx`. `residency` is `Some`: the resident
    /// row of each step row and every block-table change not yet committed (see the
    /// [residency contract](self#residency-contract)). `token_ids` and `intermediate` are
    /// `None`.
    ///
    /// May be called more than once for the same schedule (after a failed backend step);
    /// each call hands out the same changes.
    pub fn with_step<R>(&mut self, f: impl FnOnce(&StepInput<'_>) -> R) -> R {
        self.with_step_origin(|input, _| f(input))
    }

    /// [`with_step`](Self::with_step), also handing `f` the step's [`StepOrigin`]: which
    /// build of this state's schedule the step is and, after a prepared step in which
    /// every row continued, the build it advances. A device backend's staging builder
    /// uses it to stage such a step from the changes alone
    /// ([`MetadataBackend::step_batch`](crate::MetadataBackend::step_batch)).
    pub fn with_step_origin<R>(&mut self, f: impl FnOnce(&StepInput<'_>, &StepOrigin) -> R) -> R {
        if !self.built {
            self.builds += 1;
        }
        // Resident rows in step order: paused rows are the unscheduled decode requests
        // (an unscheduled prefill request is hidden, as Megatron's chunked one is).
        self.resident_rows.clear();
        // When every live request is scheduled (the orders hold distinct live rows) none
        // is paused, without a look at each.
        let all_scheduled = self.decode_order.len() + self.prefill_order.len() == self.live.len();
        if !all_scheduled {
            for &row in &self.live {
                let paused = self
                    .rows
                    .get(row as usize)
                    .and_then(|e| e.as_ref())
                    .is_some_and(|e| e.scheduled.is_none() && e.phase == RequestPhase::Decode);
                if paused {
                    self.resident_rows.push(row);
                }
            }
        }
        debug_assert!(
            !all_scheduled || self.paused_decode_rows().0 == 0,
            "a live request outside the schedule orders"
        );
        self.resident_rows.extend_from_slice(&self.decode_order);
        self.resident_rows.extend_from_slice(&self.prefill_order);

        self.prepare_intermediate();
        let mut rows = recycle(std::mem::take(&mut self.row_scratch));
        let out = {
            let this = &*self;
            for &row in &this.resident_rows {
                let Some(e) = this.rows.get(row as usize).and_then(|e| e.as_ref()) else {
                    continue;
                };
                let blocks = this.row_blocks(row, e.blocks);
                rows.push(match (e.scheduled, e.phase) {
                    (None, _) => RequestRow::paused(e.kv, blocks, e.mamba_slot),
                    (Some(q), RequestPhase::Decode) => {
                        RequestRow::decode(q.get(), e.kv, blocks, e.mamba_slot)
                    }
                    (Some(q), RequestPhase::Prefill) => {
                        RequestRow::prefill(q.get(), e.kv, blocks, e.mamba_slot)
                    }
                });
            }
            let input = StepInput {
                rows: &rows,
                token_ids: None,
                intermediate: this.prefix.as_deref().and_then(|p| p.step_intermediate()),
                residency: Some(Residency {
                    resident_rows: &this.resident_rows,
                    changes: &this.changes,
                }),
            };
            let origin = StepOrigin {
                state: this.state_id,
                build: this.builds,
                advances: this.advances.filter(|_| !this.sched.is_prepared()),
                rows: (rows.as_ptr() as usize, rows.len()),
                resident_rows: (
                    this.resident_rows.as_ptr() as usize,
                    this.resident_rows.len(),
                ),
                changes: (this.changes.as_ptr() as usize, this.changes.len()),
            };
            f(&input, &origin)
        };
        self.row_scratch = recycle(rows);
        self.built = true;
        out
    }

    /// Ends the step built last: acknowledges its residency changes and advances every
    /// scheduled request. `accepted(h)` gives, for each decode row, how many of its `s`
    /// draft tokens were accepted (clamped to `s` and to the output tokens left). Requests
    /// that reach `max_output` finish and are returned (oldest-scheduled first: decode rows,
    /// then prefill rows, in step order).
    ///
    /// # Errors
    ///
    /// [`BatchError::NotBuilt`] (nothing changes) when the schedule changed after the last
    /// [`with_step`](Self::with_step), or no step was built.
    pub fn commit_step(
        &mut self,
        mut accepted: impl FnMut(RequestHandle) -> u32,
    ) -> Result<&[Finished], BatchError> {
        if self.sched.is_prepared() {
            return Err(BatchError::PreparedPending);
        }
        if !self.built {
            return Err(BatchError::NotBuilt);
        }
        self.changes.clear();
        self.finished.clear();
        if let Some(p) = self.prefix.as_deref_mut() {
            p.begin_commit();
        }
        let s = self.speculative_tokens;
        let order = std::mem::take(&mut self.decode_order);
        for &row in &order {
            let Some(e) = self.rows.get_mut(row as usize).and_then(|x| x.as_mut()) else {
                continue;
            };
            let h = RequestHandle { id: e.id, row };
            let left = e.max_output.saturating_sub(e.generated).saturating_sub(1);
            let a = accepted(h).min(s).min(left);
            e.kv += 1 + a;
            e.generated += 1 + a;
            e.scheduled = None;
            if e.generated >= e.max_output {
                let done = *e;
                self.finish(row, &done)?;
            }
        }
        self.decode_order = order;
        self.decode_order.clear();
        let order = std::mem::take(&mut self.prefill_order);
        for &row in &order {
            let Some(e) = self.rows.get_mut(row as usize).and_then(|x| x.as_mut()) else {
                continue;
            };
            let q = e.scheduled.map_or(0, NonZeroU32::get);
            e.kv += q;
            e.prompt_done += q;
            e.scheduled = None;
            let prefill_done = e.prompt_done >= e.prompt_len;
            if prefill_done {
                // The last prompt token's logits give the first output token.
                e.phase = RequestPhase::Decode;
                e.generated = 1;
            }
            let done = *e;
            if self.prefix.is_some() {
                self.commit_cached_prefill(row, &done)?;
            }
            if prefill_done && done.generated >= done.max_output {
                self.finish(row, &done)?;
            }
        }
        if let Some(p) = self.prefix.as_deref_mut() {
            p.end_step();
        }
        self.prefill_order = order;
        self.prefill_order.clear();
        self.scheduled_tokens = 0;
        self.schedule_changed();
        Ok(&self.finished)
    }

    fn finish(&mut self, row: u32, e: &Entry) -> Result<(), BatchError> {
        self.free_row(row, e)?;
        self.finished.push(Finished {
            handle: RequestHandle { id: e.id, row },
            prompt_len: e.prompt_len,
            prompt_done: e.prompt_done,
            generated: e.generated,
            max_output: e.max_output,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "Test code: a panic is a failed test."
    )]

    use super::*;
    use crate::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
    use crate::{Geometry, RuntimeDims};

    /// R=4, T=64, S=64, B=4, s=1, hybrid, 12 blocks (11 usable).
    fn dims() -> RuntimeDims {
        let spec = LayoutSpec {
            name: None,
            source: None,
            model: ModelKind::Hybrid,
            max_requests: 4,
            max_tokens: 64,
            max_seq_len: 64,
            block_size: 4,
            speculative_tokens: 1,
            tensor_parallel: 1,
            decode_index_dtype: Default::default(),
            kv_pool_blocks: Some(12),
            mamba: Some(MambaSpec {
                chunk_size: 4,
                conv_width: 4,
            }),
            graphs: GraphSpec::default(),
            memory: None,
            formats: Vec::new(),
        };
        RuntimeDims::new(Geometry::new(&spec).unwrap())
    }

    #[test]
    fn admission_lifecycle_and_rows() {
        let mut b = BatchState::new(&dims()).unwrap();
        let a = b.admit(6, 3).unwrap();
        let c = b.admit(3, 1).unwrap();
        assert_eq!((a.row(), c.row()), (0, 1));
        assert_eq!(b.mamba_pool().unwrap().in_use(), 2);
        b.schedule_prefill(a, 4).unwrap();
        b.schedule_prefill(c, 3).unwrap();
        assert_eq!(b.kv_pool().in_use(), 2);
        let n = b.with_step(|input| {
            assert_eq!(input.rows.len(), 2);
            assert_eq!(input.residency.unwrap().resident_rows, &[0, 1]);
            input.residency.unwrap().changes.len()
        });
        assert_eq!(n, 2);
        let done: Vec<_> = b.commit_step(|_| 0).unwrap().to_vec();
        // `c` had max_output 1: done after its prompt.
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].handle, c);
        assert_eq!(b.kv_pool().in_use(), 1);
        // Row 1 is reused.
        let d = b.admit(2, 2).unwrap();
        assert_eq!(d.row(), 1);
        assert!(b.info(c).is_err());
        // a: 2 more prompt tokens; d, a prefill request not scheduled, is no row.
        b.schedule_prefill(a, 2).unwrap();
        b.with_step(|input| {
            assert_eq!(input.rows.len(), 1);
            assert_eq!(input.rows[0].phase, crate::Phase::Prefill);
            assert_eq!(input.residency.unwrap().resident_rows, &[0]);
        });
        b.commit_step(|_| 0).unwrap();
        let i = b.info(a).unwrap();
        assert_eq!(
            (i.phase, i.generated, i.kv_offset),
            (RequestPhase::Decode, 1, 6)
        );
        // Decode with s=1: positions 6, 7 -> blocks 0, 1 (has 2).
        assert_eq!(b.blocks_needed(a, 2).unwrap(), 0);
        b.schedule_decode(a).unwrap();
        b.with_step(|_| ());
        let done = b.commit_step(|_| 1).unwrap().to_vec();
        // generated 1 + min(1, 3-1-1=1) + 1 = 3 = max_output.
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].generated, 3);
        b.release(d).unwrap();
        assert_eq!(b.kv_pool().in_use(), 0);
        assert_eq!(b.mamba_pool().unwrap().in_use(), 0);
        assert!(b.resident_table().iter().all(|&x| x == -1));
    }

    #[test]
    fn typed_errors() {
        let mut b = BatchState::new(&dims()).unwrap();
        assert_eq!(b.admit(0, 1), Err(BatchError::EmptyPrompt));
        assert_eq!(b.admit(1, 0), Err(BatchError::NoOutput));
        assert!(matches!(b.admit(60, 5), Err(BatchError::TooLong { .. })));
        // 11 usable blocks of 4 = 44 positions.
        assert!(matches!(
            b.admit(40, 5),
            Err(BatchError::ExceedsPool { .. })
        ));
        let h = b.admit(8, 2).unwrap();
        assert!(matches!(
            b.schedule_decode(h),
            Err(BatchError::WrongPhase { .. })
        ));
        assert!(matches!(
            b.schedule_prefill(h, 9),
            Err(BatchError::Chunk { .. })
        ));
        assert!(matches!(
            b.schedule_prefill(h, 0),
            Err(BatchError::Chunk { .. })
        ));
        assert_eq!(b.commit_step(|_| 0).unwrap_err(), BatchError::NotBuilt);
        b.pause(h).unwrap();
        assert_eq!(
            b.schedule_prefill(h, 1),
            Err(BatchError::Paused { id: h.id() })
        );
        b.resume(h).unwrap();
        b.schedule_prefill(h, 8).unwrap();
        assert!(matches!(
            b.schedule_prefill(h, 1),
            Err(BatchError::AlreadyScheduled { .. })
        ));
        for _ in 0..3 {
            b.admit(1, 1).unwrap();
        }
        assert_eq!(
            b.admit(1, 1),
            Err(BatchError::NoFreeRow { max_requests: 4 })
        );
        // Out of blocks: 9 of 11 free after h's 2; a 40-token prompt in chunks.
        let mut b = BatchState::new(&dims()).unwrap();
        let x = b.admit(36, 1).unwrap();
        let y = b.admit(12, 1).unwrap();
        b.schedule_prefill(x, 36).unwrap();
        let before = b.kv_pool().available();
        assert_eq!(
            b.schedule_prefill(y, 12),
            Err(BatchError::OutOfBlocks {
                needed: 3,
                available: 2
            })
        );
        assert_eq!(b.kv_pool().available(), before);
    }

    #[test]
    fn admission_follows_megatron_prompt_plus_output_within_max_seq_len() {
        let spec = LayoutSpec {
            kv_pool_blocks: Some(40),
            ..dims().geometry().spec.clone()
        };
        let mut b = BatchState::new(&RuntimeDims::new(Geometry::new(&spec).unwrap())).unwrap();
        // S = 64, s = 1: 63 + 1 and 2 + 62 fit (their last steps write up to positions 62
        // and 63).
        b.admit(63, 1).unwrap();
        b.admit(2, 62).unwrap();
        // A whole-sequence prompt leaves no room for the output Megatron counts in S.
        assert_eq!(
            b.admit(64, 1),
            Err(BatchError::TooLong {
                prompt_len: 64,
                max_output: 1,
                tokens: 65,
                max_seq_len: 64
            })
        );
        assert_eq!(b.live_count(), 2);
    }

    #[test]
    fn drafts_past_the_block_table_are_refused() {
        // S = 8, B = 1, s = 3: nkv = 9 one-position blocks, fewer than S + s = 11.
        let spec = LayoutSpec {
            max_seq_len: 8,
            block_size: 1,
            speculative_tokens: 3,
            kv_pool_blocks: Some(40),
            ..dims().geometry().spec.clone()
        };
        let d = RuntimeDims::new(Geometry::new(&spec).unwrap());
        assert_eq!(d.decode_kv_limit(), 9);
        let mut b = BatchState::new(&d).unwrap();
        // 5 + 2: the last decode step (kv = 5) writes positions 5..=8, the ninth column.
        let h = b.admit(5, 2).unwrap();
        // 6 + 2 <= S, but its last decode step would write position 9.
        let before = b.kv_pool().available();
        assert_eq!(
            b.admit(6, 2),
            Err(BatchError::ExceedsBlockTable {
                prompt_len: 6,
                max_output: 2,
                positions: 10,
                limit: 9
            })
        );
        assert_eq!((b.live_count(), b.kv_pool().available()), (1, before));
        b.schedule_prefill(h, 5).unwrap();
        b.with_step(|_| ());
        b.commit_step(|_| 0).unwrap();
        b.schedule_decode(h).unwrap();
        assert_eq!(b.blocks(h).unwrap().len(), 9);
    }

    #[test]
    fn row_scratch_is_recycled_without_allocating() {
        let mut b = BatchState::new(&dims()).unwrap();
        let h = b.admit(4, 40).unwrap();
        b.schedule_prefill(h, 4).unwrap();
        b.with_step(|_| ());
        let cap = b.row_scratch.capacity();
        assert!(cap >= 4);
        b.commit_step(|_| 0).unwrap();
        b.schedule_decode(h).unwrap();
        b.with_step(|i| assert_eq!(i.rows.len(), 1));
        assert_eq!(b.row_scratch.capacity(), cap);
    }
}
