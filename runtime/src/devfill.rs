//! The host half of the device fill: the staging image of one step.
//!
//! The device fill moves no metadata field across the bus. The host writes a compact
//! image — per-step values, one 16-byte record per active request, the token ids, and the
//! block-table work of the step — and one host-to-device copy moves it; the layout's fill
//! kernel (`attention_layout_codegen::emit_cuda`) computes every field on the device.
//! The image format is `emit_cuda::abi`.
//!
//! # Delta steps
//!
//! The device also keeps a *request table*: the record of each active row of the last
//! step. When every row that can advances by its query length in place (same `q`, Mamba
//! slot and sampling, the same position), the step is staged as a delta
//! (`abi::FLAG_DELTA`): no request records and no sampling travel, only an edit record per
//! row that did something else, and the kernel advances the table itself. A 256-decode
//! steady step without new blocks and without token ids is then the header alone. The
//! builder stages a delta step whenever it is no larger than the full records
//! ([`StagingBuilder::set_delta_steps`] turns them off); full steps refresh the table.
//!
//! # The block table
//!
//! The device keeps a *resident* block table, one row per resident row of the engine's
//! request table (`Residency::resident_rows`), updated from `Residency::changes`. The
//! block table in the metadata buffer is in active order. For each active row the host
//! knows (from what it sent before) which resident row the metadata row currently holds,
//! so per row it picks the cheapest correct source:
//!
//! * **in place** — the metadata row already holds this request's row: only the entries
//!   that changed this step (and the ones the row grew into or left) travel, as patches;
//! * **gather** — the row moved but its resident row is valid and unchanged this step:
//!   the kernel copies it from the resident table (nothing travels);
//! * **upload** — otherwise the row's block ids travel (and are written back into the
//!   resident table). Without residency every active row is uploaded.
//!
//! Changes are applied to the resident table in the same launch. The choice above keeps
//! every memory location written by at most one thread and never both read and written
//! in one launch: a gathered row has no changes, an uploaded row's changes inside its
//! length are dropped (the upload carries them), and tokens of moved rows read the row's
//! source rather than the metadata row being written. A step whose image would not fit
//! the staging capacity uploads every active row instead (correct, and it forgets the
//! residency of the rows that were not active).
//!
//! The host's knowledge rests on the residency contract (`batch.rs`): the changes describe
//! every write to the engine's table since the last step staged here. An engine whose view
//! starts over (a new `BatchState` on a device that served another) must say so
//! ([`StagingBuilder::forget_residency`], `MetadataBackend::reset_residency`), or rows it
//! believes `-1` are gathered with the old engine's ids.
//!
//! The residency is engine input like the step itself, and the builder checks it in every
//! build profile against a host model of the resident table (the ids it sent there), at a
//! cost that follows what the step sends rather than what the table holds:
//!
//! * every change (after deduplication) that writes inside a step row's block list must
//!   set the row's id ([`StagingError::ChangeContradictsRow`]), O(changes);
//! * every entry the step reads from the device or sends to it — the rows it uploads or
//!   gathers, the entries an in-place row grows into — must agree with what the model
//!   knows the resident table holds ([`StagingError::ResidentContradictsRow`]),
//!   O(entries sent or gathered).
//!
//! Entries of rows kept in place that the step neither changes nor sends are not read: a
//! steady decode step costs its changes, not its rows' lengths. An engine whose lists
//! contradict such entries (ids it never wrote, a view that started over unannounced) is
//! found only by full verification ([`StagingBuilder::set_verify`]: every entry of every
//! step row the model knows, O(entries of the step's rows), off by default). A failed
//! check changes nothing.
//!
//! A *steady* step — every active row in place and advancing from the request table, as
//! in a prepared decode step — is recognized by one compare loop over its rows, and the
//! sources, counts, checks, patches and commit then touch only the rows whose list length
//! changed (and the changes). The checks are the ones above, run on the same entries; any
//! other step, or a steady one whose checks fail, takes the general passes, which decide
//! and report alike.
//!
//! Everything here is plain host code, testable without a GPU;
//! `tests/devfill_kernels_cpu.rs` runs the emitted kernels on the CPU against the host
//! fill.

use attention_layout_codegen::BatchDims;
use attention_layout_codegen::emit_cuda::abi;
use thiserror::Error;

use crate::dims::Dims;
use crate::fill::{StepInfo, StepPlan};
use crate::step::{BlockChange, RequestRow, Residency, Sampling, StepInput, StepOrigin};

/// No resident row / no metadata row.
const NONE: u32 = u32::MAX;

/// Why a step's residency was rejected (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StagingError {
    /// `resident_rows` does not have one entry per step row.
    #[error("residency has {got} resident rows but the step has {expected} rows")]
    ResidentRowsLength {
        /// Entries given.
        got: usize,
        /// Rows in the step.
        expected: usize,
    },
    /// A resident row outside the table.
    #[error("request {row}: resident row {resident_row} is outside [0, {limit})")]
    ResidentRowOutOfRange {
        /// The step row.
        row: usize,
        /// Its resident row.
        resident_row: u32,
        /// `max_requests`.
        limit: usize,
    },
    /// Two step rows sharing a resident row.
    #[error("request {row}: resident row {resident_row} is already used by request {other}")]
    DuplicateResidentRow {
        /// The step row.
        row: usize,
        /// Its resident row.
        resident_row: u32,
        /// The first step row that uses it.
        other: usize,
    },
    /// A block-table change outside the table or with a block id outside the pool.
    #[error(
        "block change {change}: row {resident_row} index {index} block {block} is outside the table ({rows} x {width}) or the pool [-1, {dummy})"
    )]
    BadChange {
        /// Position in `changes`.
        change: usize,
        /// Its resident row.
        resident_row: u32,
        /// Its index.
        index: u32,
        /// Its block id.
        block: i32,
        /// Resident rows.
        rows: usize,
        /// Block-table width.
        width: usize,
        /// The dummy block id.
        dummy: i32,
    },
    /// A block-table change contradicts the step row it writes: the latest change of an
    /// entry inside a step row's block list must set that entry to the row's id (applied
    /// in order, the changes make the resident row equal the row's `blocks`). Checked in
    /// every build, O(changes).
    #[error(
        "request {row}: blocks[{index}] = {block}, but residency change {change} sets resident row {resident_row} entry {index} to {changed_to} (the changes must describe the rows' block lists)"
    )]
    ChangeContradictsRow {
        /// The step row.
        row: usize,
        /// Position of the change in `changes` (the latest for its entry).
        change: usize,
        /// The step row's resident row.
        resident_row: u32,
        /// The entry (position in the row's block list).
        index: u32,
        /// The id in the row's `blocks`.
        block: i32,
        /// The id the change writes.
        changed_to: i32,
    },
    /// A step row's block list disagrees with an entry of the resident table that the
    /// changes sent so far determine and this step leaves unchanged: the engine's changes
    /// do not describe what the device holds. Typically the engine's residency view started
    /// over (a new engine or `BatchState` on a backend that served another one) without
    /// [`StagingBuilder::forget_residency`]. Checked in every build on the rows whose
    /// entries the step reads or sends (uploaded and gathered rows, the entries an in-place
    /// row grows into); on every step row with full verification
    /// ([`StagingBuilder::set_verify`]).
    #[error(
        "request {row}: blocks[{index}] = {block}, but resident row {resident_row} entry {index} holds {table} after the changes sent so far (if the engine's residency view started over, the backend must be told: reset_residency)"
    )]
    ResidentContradictsRow {
        /// The step row.
        row: usize,
        /// Its resident row.
        resident_row: u32,
        /// The entry (position in the row's block list).
        index: u32,
        /// The id in the row's `blocks`.
        block: i32,
        /// The id the resident table holds.
        table: i32,
    },
    /// A block id the step would send to the device (an uploaded row, or an in-place
    /// row's new or patched entry) outside `[-1, dummy)`. Checked here because a backend
    /// that plans with [`BlockCheck::Needed`](crate::fill::BlockCheck) leaves every id that
    /// no token lands in to the staging builder.
    #[error(
        "request {row}: blocks[{index}] = {block} is outside the KV pool [0, {dummy}) (block {dummy} is the dummy block)"
    )]
    BadBlock {
        /// The step row.
        row: usize,
        /// Position in its block list.
        index: usize,
        /// The id.
        block: i32,
        /// The dummy block id.
        dummy: i32,
    },
    /// The step was planned for another layout than the builder's (a bug in the caller:
    /// a builder stages the steps of the layout it was made for).
    #[error(
        "the step was planned for a layout of {rows} x {width} blocks (dummy block {dummy}, images up to {capacity} bytes), this staging builder is for {builder_rows} x {builder_width} (dummy block {builder_dummy}, {builder_capacity} bytes)"
    )]
    OtherLayout {
        /// Request rows of the plan's layout.
        rows: usize,
        /// Its block-table width.
        width: usize,
        /// Its dummy block.
        dummy: i32,
        /// Its largest image.
        capacity: usize,
        /// Request rows of the builder's layout.
        builder_rows: usize,
        /// Its block-table width.
        builder_width: usize,
        /// Its dummy block.
        builder_dummy: i32,
        /// Its largest image.
        builder_capacity: usize,
    },
    /// The image buffer is too small or misaligned (a bug in the caller).
    #[error(
        "the staging buffer has {got} bytes at alignment {align}, {need} bytes 16-aligned are needed"
    )]
    Buffer {
        /// Bytes given.
        got: usize,
        /// Alignment of its address (capped at 16).
        align: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// What one staged step holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Staged {
    /// Bytes of the image: what the one host-to-device copy moves.
    pub bytes: usize,
    /// Whether every active row was uploaded (no residency, or the step did not fit).
    pub compact: bool,
    /// Block-table entries patched in place.
    pub patches: u32,
    /// Resident block-table entries changed.
    pub changes: u32,
    /// Block-table rows rewritten (moved and padding rows).
    pub jobs: u32,
    /// Block ids uploaded.
    pub uploaded_blocks: u32,
    /// Active rows whose block-table row was uploaded.
    pub uploaded_rows: u32,
    /// Active rows whose block-table row was gathered from the resident table.
    pub gathered_rows: u32,
    /// Whether the step was staged as a delta of the step before (`abi::FLAG_DELTA`): no
    /// request records and no sampling travel, only edits of the rows that did not advance
    /// by their query length.
    pub delta: bool,
    /// Edit records of a delta step (rows that did not simply advance).
    pub edits: u32,
    /// Whether the step keeps the rows of the step before (`abi::FLAG_KEPT_ROWS`: a delta
    /// step without edits whose rows are all short; the kernel takes the rows' cumulative
    /// lengths from the step before's instead of scanning them).
    pub kept_rows: bool,
    /// Whether [`StagingBuilder::try_advance`] staged it (from the changes alone).
    pub advanced: bool,
    /// Entries the worker blocks write (changes plus job widths).
    pub worker_entries: u64,
    /// The step's complete info ([`StepPlan::complete_info`]): what the host fill reports
    /// for the same step.
    pub info: StepInfo,
}

impl Staged {
    /// Thread blocks for a launch of this step: block 0 alone when the block-table work is
    /// small, else block 0 plus up to `max_workers` workers at about 32 K entries each.
    pub fn grid(&self, max_workers: u32) -> u32 {
        grid_for(self.worker_entries, max_workers)
    }
}

/// Thread blocks for `worker_entries` block-table entries (see [`Staged::grid`]).
pub fn grid_for(worker_entries: u64, max_workers: u32) -> u32 {
    const ALONE: u64 = 8 * 1024;
    const PER_WORKER: u64 = 32 * 1024;
    if worker_entries <= ALONE || max_workers == 0 {
        return 1;
    }
    1 + u32::try_from(worker_entries.div_ceil(PER_WORKER))
        .unwrap_or(u32::MAX)
        .min(max_workers)
}

/// Writes the image of a step with no requests padded to `padded` (every field
/// padding): what a launch needs to warm a kernel up before graph capture. Returns its
/// bytes.
pub fn write_empty_step(padded: BatchDims, out: &mut [u8]) -> Result<usize, StagingError> {
    let need = abi::HEADER_BYTES;
    let bad = StagingError::Buffer {
        got: out.len(),
        align: 1usize << (out.as_ptr() as usize).trailing_zeros().min(4),
        need,
    };
    let words: &mut [u32] = out
        .get_mut(..need)
        .and_then(|b| bytemuck::try_cast_slice_mut(b).ok())
        .ok_or(bad)?;
    words.fill(0);
    set_word(words, abi::H_ABI, abi::VERSION);
    set_word(words, abi::H_PAD_TOKENS, padded.tokens);
    set_word(words, abi::H_PAD_PREFILL, padded.prefill);
    set_word(words, abi::H_PAD_DECODE, padded.decode);
    for w in [
        abi::H_OFF_REQUESTS,
        abi::H_OFF_TOKEN_IDS,
        abi::H_OFF_SAMPLING,
        abi::H_OFF_INTER,
        abi::H_OFF_PATCHES,
        abi::H_OFF_CHANGES,
        abi::H_OFF_JOBS,
        abi::H_OFF_BLOCKS,
    ] {
        set_word(words, w, need as u32);
    }
    Ok(need)
}

/// Where an active row's block-table row comes from this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Already in place in the metadata block table.
    Meta,
    /// Gathered from the resident table.
    Resident,
    /// Uploaded; `writeback` also stores it into its resident row.
    Upload { writeback: bool },
}

/// The sizes of one image, section by section (byte offsets from the start).
#[derive(Debug, Clone, Copy, Default)]
struct Sections {
    requests: usize,
    token_ids: usize,
    sampling: usize,
    inter: usize,
    patches: usize,
    changes: usize,
    jobs: usize,
    blocks: usize,
    end: usize,
}

fn align16(x: usize) -> usize {
    x.next_multiple_of(16)
}

impl Sections {
    #[allow(
        clippy::too_many_arguments,
        reason = "one count per staging section: naming them at the call is clearer than a struct"
    )]
    fn new(
        record_bytes: usize,
        token_ids: usize,
        sampling: usize,
        inter: usize,
        patches: usize,
        changes: usize,
        jobs: usize,
        blocks: usize,
    ) -> Self {
        let requests = abi::HEADER_BYTES;
        let token_ids_at = align16(requests + record_bytes);
        let sampling_at = align16(token_ids_at + token_ids * 8);
        let inter_at = align16(sampling_at + sampling * abi::SAMPLING_BYTES);
        let patches_at = align16(inter_at + inter * abi::INTER_BYTES);
        let changes_at = align16(patches_at + patches * abi::WRITE_BYTES);
        let jobs_at = align16(changes_at + changes * abi::WRITE_BYTES);
        let blocks_at = align16(jobs_at + jobs * abi::JOB_BYTES);
        Self {
            requests,
            token_ids: token_ids_at,
            sampling: sampling_at,
            inter: inter_at,
            patches: patches_at,
            changes: changes_at,
            jobs: jobs_at,
            blocks: blocks_at,
            end: align16(blocks_at + blocks * 4),
        }
    }
}

/// The host state of the device fill: what the device's block tables hold, as far as the
/// host knows, and scratch for the per-step plan. One per device buffer set.
#[derive(Debug, Clone)]
pub struct StagingBuilder {
    rows: usize,
    width: usize,
    dummy: i32,
    capacity: usize,
    /// Per metadata block-table row: the resident row whose ids it holds (`NONE`: unknown).
    meta_src: Vec<u32>,
    /// Per metadata block-table row: entries that may differ from the dummy block.
    meta_len: Vec<u32>,
    /// Per resident row: how many leading entries of the device's resident row are known
    /// to equal the engine's (gathering a row needs its whole length known).
    res_known: Vec<u32>,
    /// Per resident row: the metadata row holding its ids (inverse of `meta_src`).
    res_meta: Vec<u32>,
    // Per-step scratch, stamped with `generation` so nothing is cleared per step.
    generation: u32,
    row_stamp: Vec<u32>,
    row_of: Vec<u32>,
    changed_stamp: Vec<u32>,
    /// Per resident row: entries changed this step (valid where `changed_stamp` is current).
    changed_count: Vec<u32>,
    element_stamp: Vec<u32>,
    /// Indices into `changes` of the changes kept after deduplication (latest wins).
    kept: Vec<u32>,
    source: Vec<Source>,
    /// Whether every step row is verified ([`set_verify`](Self::set_verify)).
    verify: bool,
    /// Whether delta steps may be staged ([`set_delta_steps`](Self::set_delta_steps)).
    delta_steps: bool,
    /// The device's resident table as the host models it: the raw ids this builder sent
    /// there (uploads written back, changes sent). Trusted only inside `res_known`.
    mirror: Vec<i32>,
    /// The device's request table as the host models it: the records of the last staged
    /// step's active rows, `[0, table_rows)` (what a delta step advances). The KV offsets
    /// and query lengths apart (`table_kv`, `table_q`), so that advancing every row is one
    /// pass over two dense arrays (`try_advance`).
    table: Vec<TableRow>,
    table_kv: Vec<u32>,
    table_q: Vec<u32>,
    /// Active rows of the last staged step (0: nothing known, after `new` or `reset`).
    table_rows: usize,
    /// Per active row of the step being staged: whether it advances from the request
    /// table (scratch).
    advanced: Vec<bool>,
    /// A steady step's active rows whose list length changed, in order (scratch; see
    /// [`steady_rows`](Self::steady_rows)).
    resized: Vec<u32>,
    /// `log2 B` and the largest `kv_offset + q` of a decode row (what
    /// [`try_advance`](Self::try_advance) checks without a plan).
    block_shift: u32,
    decode_max: u64,
    /// The batch-state build staged last ([`StepOrigin::key`]), when it came with its
    /// origin: what a step that advances it may be staged from.
    origin: Option<(u64, u64)>,
    /// The info of the step staged last.
    last_info: Option<StepInfo>,
    /// The query length every row of the step staged last has, if they all have the same
    /// (what [`try_advance`](Self::try_advance) advances them by, reading no `table_q`).
    uniform_q: Option<u32>,
    /// The longest query length of the step staged last's active rows (a step that keeps
    /// them keeps it: [`keeps_rows`](Self::keeps_rows)).
    max_q: u32,
    /// Whether the step staged last left every active row in place, linked both ways
    /// (staged with residency, not compact): what [`try_advance`](Self::try_advance)
    /// needs besides `last_info` (decode rows only, none paused, graphed).
    rows_in_place: bool,
}

/// One row of the device's request table, as the host last sent it, short of its KV
/// offset and query length (`StagingBuilder::table_kv`, `table_q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct TableRow {
    slot: i32,
    /// Temperature bits, top-k, top-p bits (what the row's sampling fields hold).
    sampling: (u32, i32, u32),
}

impl TableRow {
    fn of(row: &RequestRow<'_>) -> Self {
        Self {
            slot: row.mamba_slot,
            sampling: sampling_bits(&row.sampling),
        }
    }

    /// Whether `row` is this row (KV offset `kv`, query length `q`) advanced by its query
    /// length: the same query length, Mamba slot and sampling, the KV offset moved by `q`
    /// (what the kernel computes for a row a delta step does not edit).
    fn advances_to(&self, kv: u32, q: u32, row: &RequestRow<'_>) -> bool {
        kv.checked_add(q) == Some(row.kv_offset)
            && q == row.query_length
            && self.slot == row.mamba_slot
            && self.sampling == sampling_bits(&row.sampling)
    }
}

/// A sampling record's bits, as the kernels copy them.
fn sampling_bits(x: &Sampling) -> (u32, i32, u32) {
    (x.temperature.to_bits(), x.top_k, x.top_p.to_bits())
}

/// Two builders are equal when they hold the same knowledge of the device and the same
/// settings, so that they stage every future step identically; the per-step scratch is
/// not compared. (A step the builder refuses leaves it equal to what it was.)
impl PartialEq for StagingBuilder {
    fn eq(&self, other: &Self) -> bool {
        (
            self.rows,
            self.width,
            self.dummy,
            self.capacity,
            self.verify,
            self.delta_steps,
        ) == (
            other.rows,
            other.width,
            other.dummy,
            other.capacity,
            other.verify,
            other.delta_steps,
        ) && self.meta_src == other.meta_src
            && self.meta_len == other.meta_len
            && self.res_known == other.res_known
            && self.res_meta == other.res_meta
            && self.mirror == other.mirror
            && self.table_rows == other.table_rows
            && self.table.get(..self.table_rows) == other.table.get(..other.table_rows)
            && self.table_kv.get(..self.table_rows) == other.table_kv.get(..other.table_rows)
            && self.table_q.get(..self.table_rows) == other.table_q.get(..other.table_rows)
            && self.last_info == other.last_info
    }
}

impl Eq for StagingBuilder {}

impl StagingBuilder {
    /// State for a device whose buffers were just allocated (nothing known).
    pub fn new<D: Dims>(d: &D) -> Self {
        let r = d.max_requests();
        let w = d.block_table_width();
        Self {
            rows: r,
            width: w,
            dummy: d.dummy_block(),
            capacity: Self::capacity_for(d),
            meta_src: vec![NONE; r],
            meta_len: vec![0; r],
            res_known: vec![0; r],
            res_meta: vec![NONE; r],
            generation: 0,
            row_stamp: vec![0; r],
            row_of: vec![0; r],
            changed_stamp: vec![0; r],
            changed_count: vec![0; r],
            element_stamp: vec![0; r * w],
            kept: Vec::new(),
            source: Vec::with_capacity(r),
            verify: false,
            delta_steps: true,
            mirror: vec![-1; r * w],
            table: vec![TableRow::default(); r],
            table_kv: vec![0; r],
            table_q: vec![0; r],
            table_rows: 0,
            advanced: Vec::with_capacity(r),
            resized: Vec::with_capacity(r),
            block_shift: d.block_size().trailing_zeros(),
            decode_max: d.decode_kv_limit() as u64,
            origin: None,
            last_info: None,
            uniform_q: None,
            max_q: 0,
            rows_in_place: false,
        }
    }

    /// Turns full verification on or off (off by default, in every build profile).
    ///
    /// Whatever this setting, [`build`](Self::build) checks the residency wherever the
    /// step reads or sends block-table entries (module docs). With full verification it
    /// also checks every entry of every step row (paused rows included) that the host's
    /// model of the resident table knows, so a row whose blocks contradict the changes
    /// sent so far fails with [`StagingError::ResidentContradictsRow`] even when the step
    /// would have kept it in place untouched. Costs O(entries of the step's rows) per
    /// step: for tests and engines under development.
    pub fn set_verify(&mut self, on: bool) {
        self.verify = on;
    }

    /// Whether full verification is on.
    pub fn verifying(&self) -> bool {
        self.verify
    }

    /// Allows or forbids delta steps (`abi::FLAG_DELTA`; allowed by default). Forbidden,
    /// every step sends every active row's record and sampling, as before delta steps
    /// existed: for measuring what they save on the same steps.
    pub fn set_delta_steps(&mut self, on: bool) {
        self.delta_steps = on;
    }

    /// Bytes of the largest image of a layout (what the staging buffers hold): every
    /// active row uploaded, no changes.
    pub fn capacity_for<D: Dims>(d: &D) -> usize {
        let r = d.max_requests();
        Sections::new(
            r * abi::REQUEST_BYTES,
            d.max_tokens(),
            r,
            r,
            0,
            0,
            r,
            r * d.block_table_width(),
        )
        .end
    }

    /// Bytes of the largest image.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes a staging buffer the kernels read must hold: the largest image, and at least
    /// the head every launch loads first ([`abi::HEAD_BYTES`]; more than the largest image
    /// of the smallest layouts).
    pub fn buffer_len(&self) -> usize {
        self.capacity.max(abi::HEAD_BYTES)
    }

    /// Forgets what the device holds (after its buffers were reset).
    pub fn reset(&mut self) {
        self.forget_residency();
        self.meta_len.fill(0);
        self.table_rows = 0;
        self.last_info = None;
    }

    /// Forgets what the device's resident table holds, keeping what the metadata block
    /// table holds: for an engine whose residency view starts over (a new `BatchState`, or
    /// another engine's steps before), whose changes describe writes since an all `-1`
    /// table rather than since the last step this builder staged. Until rows are uploaded
    /// again nothing is gathered from the resident table or kept in place. What a step
    /// without residency does too.
    pub fn forget_residency(&mut self) {
        self.origin = None;
        self.rows_in_place = false;
        self.meta_src.fill(NONE);
        self.res_meta.fill(NONE);
        self.res_known.fill(0);
    }

    fn unlink_meta(&mut self, a: usize) {
        let Some(src) = self.meta_src.get_mut(a) else {
            return;
        };
        let r = std::mem::replace(src, NONE);
        if r != NONE
            && let Some(back) = self.res_meta.get_mut(r as usize)
            && *back == a as u32
        {
            *back = NONE;
        }
    }

    fn unlink_resident(&mut self, r: usize) {
        let Some(meta) = self.res_meta.get_mut(r) else {
            return;
        };
        let a = std::mem::replace(meta, NONE);
        if a != NONE
            && let Some(back) = self.meta_src.get_mut(a as usize)
            && *back == r as u32
        {
            *back = NONE;
        }
    }

    fn link(&mut self, a: usize, r: usize) {
        self.unlink_meta(a);
        self.unlink_resident(r);
        if let (Some(src), Some(meta)) = (self.meta_src.get_mut(a), self.res_meta.get_mut(r)) {
            *src = r as u32;
            *meta = a as u32;
        }
    }

    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.row_stamp.fill(0);
            self.changed_stamp.fill(0);
            self.changed_count.fill(0);
            self.element_stamp.fill(0);
            self.generation = 1;
        }
        self.generation
    }

    /// Writes the image of a planned step into `out` (16-byte aligned, at least
    /// [`capacity`](Self::capacity) bytes) and records what the device will hold after
    /// the step. The returned [`Staged::info`] is the step's complete info. On error
    /// nothing changes.
    ///
    /// # Errors
    ///
    /// [`StagingError::OtherLayout`] when the step was planned for a layout other than
    /// this builder's, [`StagingError::Buffer`] when `out` is too small or misaligned, and
    /// the residency errors (module docs).
    pub fn build<D: Dims>(
        &mut self,
        plan: &StepPlan<'_, D>,
        out: &mut [u8],
    ) -> Result<Staged, StagingError> {
        self.check_layout(plan.dims())?;
        let align = 1usize << (out.as_ptr() as usize).trailing_zeros().min(4);
        if out.len() < self.capacity || align < 16 {
            return Err(StagingError::Buffer {
                got: out.len(),
                align,
                need: self.capacity,
            });
        }
        let info = plan.complete_info();
        let input = plan.input();
        let stamp = self.next_generation();

        // Pass 1: check the residency, choose each row's source, size the image, check
        // every id the image sends and every entry it relies on.
        self.kept.clear();
        if let Some(res) = input.residency {
            self.check_residency(input, &res, stamp)?;
        }
        // A steady step (every active row in place and advancing) takes one lean pass over
        // its rows; anything else, or a steady image too large for the staging, the
        // general passes, which then decide (and report errors) as if it never ran.
        let steady = self
            .steady_rows(input, &info, stamp)
            .map(|rows| Counted {
                steady: true,
                ..self.finish_count(input, &info, stamp, true, rows)
            })
            .filter(|c| c.end <= self.capacity);
        let (counted, compact) = match steady {
            Some(counted) => {
                self.check_patched_ids(input, &info, stamp)?;
                (counted, false)
            }
            None => {
                self.choose_sources(input, &info, stamp);
                let sized = self.size_image(input, &info, stamp);
                self.check_sent_ids(input, &info, stamp)?;
                if let Some(res) = input.residency {
                    self.check_read_entries(input, &info, &res, stamp)?;
                }
                sized
            }
        };

        let counted = Counted {
            kept_rows: counted.delta && counted.edits == 0 && self.keeps_rows(&info),
            ..counted
        };

        // Pass 2: write the image.
        let got = out.len();
        let words: &mut [u32] = out
            .get_mut(..counted.end)
            .and_then(|b| bytemuck::try_cast_slice_mut(b).ok())
            .ok_or(StagingError::Buffer {
                got,
                align,
                need: counted.end,
            })?;
        let staged = self.write(input, &info, &counted, words, compact, stamp)?;

        // Commit: what the device holds after the step.
        self.commit(input, &info, compact, counted.steady);
        self.origin = None;
        Ok(staged)
    }

    /// [`build`](Self::build) of a step that came from a batch state with its
    /// [`StepOrigin`]: remembers which build it staged, so that a step advancing it can
    /// take [`try_advance`](Self::try_advance).
    ///
    /// # Errors
    ///
    /// Those of [`build`](Self::build); nothing changes on error.
    pub fn build_with_origin<D: Dims>(
        &mut self,
        plan: &StepPlan<'_, D>,
        out: &mut [u8],
        origin: &StepOrigin,
    ) -> Result<Staged, StagingError> {
        let staged = self.build(plan, out)?;
        self.origin = origin.describes(plan.input()).then(|| origin.key());
        Ok(staged)
    }

    /// Stages a step that advances the batch-state build staged last, without planning it
    /// and without a look at each row: what a steady decode step of an async-scheduling
    /// engine costs the host is then its changes (and one pass of arithmetic over the
    /// request table for the KV page count).
    ///
    /// The step's origin vouches that it is the staged build's step with every KV offset
    /// moved by its query length and the block lists grown only by the residency changes
    /// ([`StepOrigin`]). What it cannot vouch for is checked, O(changes): each change
    /// appends a valid id to an active row the device holds in place (and agrees with the
    /// row's list), the rows that grew grew by exactly their changes, no sequence passes
    /// the decode bound, and every block a token lands in for the first time is one of
    /// the appended ones. The image, the info and the builder's state after it are those
    /// [`build`](Self::build) gives for the same step (tested).
    ///
    /// `None`, with nothing changed, when the step cannot be staged this way (no origin
    /// that advances the build staged last, full verification or no delta steps, rows of
    /// different query lengths, changes out of `prepare`'s order, a check above fails, an
    /// image too large): then plan it and use
    /// [`build_with_origin`](Self::build_with_origin), which decides and reports errors.
    #[allow(
        clippy::indexing_slicing,
        reason = "n = table_rows <= R and every per-row vector is sized R; a change's \
                  resident row is read through `get`, its active row a = res_meta[r] is \
                  checked < n and its entry j < width before use; padding rows < Np <= R"
    )]
    pub fn try_advance<D: Dims>(
        &mut self,
        d: &D,
        input: &StepInput<'_>,
        origin: &StepOrigin,
        out: &mut [u8],
    ) -> Option<Staged> {
        let from = origin.advances?;
        if !self.rows_in_place
            || !self.delta_steps
            || self.verify
            || self.origin != Some((origin.state, from))
            || !origin.describes(input)
            || self.check_layout(d).is_err()
            || d.block_size().trailing_zeros() != self.block_shift
            || d.decode_kv_limit() as u64 != self.decode_max
        {
            return None;
        }
        let align = 1usize << (out.as_ptr() as usize).trailing_zeros().min(4);
        if out.len() < self.capacity || align < 16 {
            return None;
        }
        let prev = self.last_info?;
        let res = input.residency?;
        let q = self.uniform_q.filter(|&q| q > 0)?;
        let n = self.table_rows;
        // A graphed decode-only step without paused rows: its shape fixes every length
        // bound, so the same rows advanced have the same info but for the KV pages.
        if n == 0
            || prev.paused != 0
            || prev.real.prefill != 0
            || !prev.graphed()
            || input.rows.len() != n
            || prev.real.requests() as usize != n
            || self.decode_max >= 1 << 30
            || (self.rows as u64) * (self.width as u64) >= 1 << 32
        {
            return None;
        }
        // Each change appends a valid id to an active row held in place (`resized`: the
        // rows). Few lines of memory per change: the step's cost is mostly cache misses, so
        // this path keeps to the arrays it needs.
        // The changes come in step order, each row's in entry order (as `prepare` appends
        // them): then they are distinct entries and `resized` is in row order without a
        // sort. Another order (or a repeated entry: the general build keeps the latest)
        // takes the general build.
        let (rows, w) = (input.rows, self.width);
        self.resized.clear();
        let mut last = None;
        for ch in res.changes {
            let (r, j) = (ch.resident_row as usize, ch.index as usize);
            let a = *self.res_meta.get(r)? as usize;
            if a >= n
                || j >= w
                || last.is_some_and(|l| (a, j) <= l)
                || self.meta_src[a] != ch.resident_row
                || ch.block < 0
                || ch.block >= self.dummy
                || j < self.meta_len[a] as usize
                || rows[a].blocks.get(j) != Some(&ch.block)
            {
                return None;
            }
            if last.is_none_or(|(b, _)| b != a) {
                self.resized.push(a as u32);
            }
            last = Some((a, j));
        }
        // Those rows grew by exactly their changes: each change lies in its row's new
        // entries `[l0, l1)`, the entries are distinct, and there are as many as new entries.
        let mut grown = 0usize;
        let mut landed = 0u64;
        for &a in &self.resized {
            let a = a as usize;
            let (l0, l1) = (self.meta_len[a] as usize, rows[a].blocks.len());
            if l1 > w || l1 <= l0 {
                return None;
            }
            grown += l1 - l0;
            // The blocks its tokens land in for the first time must be appended ones.
            let kv = u64::from(self.table_kv[a]) + u64::from(q);
            let before = kv.saturating_sub(1) >> self.block_shift;
            let last = (kv + u64::from(q)).saturating_sub(1) >> self.block_shift;
            if last >= l1 as u64 || (last > before && before + 1 < l0 as u64) {
                return None;
            }
            landed += last - before;
        }
        let k = res.changes.len();
        if grown != k {
            return None;
        }
        // One pass of arithmetic over the request table: it advances every row's KV
        // offset by its query length (undone if a check below fails) and gives the KV
        // pages, the decode bound and the rows whose tokens land in a new block (only the
        // grown ones may).
        // A row's pages are ceil(end / B) = ((end - 1) >> log2 B) + 1 (end >= q >= 1), and
        // its old end is its new KV offset: the blocks rows land in for the first time
        // are the step's pages less the last step's. In u32 lanes without a branch or a
        // min / max, so that it vectorizes with the baseline x86-64 instructions: every
        // value stays below 2^31 (the model's offsets are within the decode bound, checked
        // below 2^30 on entry, and a row's pages below the block-table width), and the
        // pages sum below R x width < 2^32 (checked on entry).
        let sh = self.block_shift;
        let limit = self.decode_max as u32;
        if q > limit {
            return None;
        }
        let (mut pages, mut bad) = (n as u32, 0u32);
        for kv in &mut self.table_kv[..n] {
            let new = kv.wrapping_add(q);
            let end = new.wrapping_add(q);
            *kv = new;
            pages = pages.wrapping_add(end.wrapping_sub(1) >> sh);
            bad |= u32::from(end > limit);
        }
        let crossed = u64::from(pages).wrapping_sub(u64::from(prev.kv_pages));
        if bad != 0 || crossed != landed {
            self.unadvance(n, q);
            return None;
        }
        let info = StepInfo {
            kv_pages: pages,
            ..prev
        };
        // The image: what the general build writes for a steady step (header, the padding
        // rows' jobs, a patch per new entry in row order, the changes latest first).
        let np = info.padded.requests() as usize;
        let jobs = (n..np).filter(|&a| self.meta_len[a] > 0).count();
        let sections = Sections::new(0, 0, 0, 0, k, k, jobs, 0);
        let counted = Counted {
            patches: k,
            changes: k,
            jobs,
            end: sections.end,
            sections,
            delta: true,
            steady: true,
            kept_rows: self.keeps_rows(&info),
            ..Counted::default()
        };
        let Some(words) = out
            .get_mut(..sections.end)
            .and_then(|b| bytemuck::try_cast_slice_mut::<u8, u32>(b).ok())
            .filter(|_| sections.end <= self.capacity)
        else {
            self.unadvance(n, q);
            return None;
        };
        write_header(words, input, &info, &counted);
        let padding = self.write_padding_jobs(&info, sections.jobs / 4, words);
        let mut at = sections.patches / 4;
        for &a in &self.resized {
            let a = a as usize;
            let (l0, blocks) = (self.meta_len[a] as usize, rows[a].blocks);
            for (j, &id) in blocks.iter().enumerate().skip(l0) {
                words[at] = (a * w + j) as u32;
                words[at + 1] = id as u32;
                at += 2;
            }
        }
        let mut at = sections.changes / 4;
        for ch in res.changes.iter().rev() {
            words[at] = ch.resident_row * w as u32 + ch.index;
            words[at + 1] = ch.block as u32;
            at += 2;
        }
        set_word(words, abi::H_N_PATCHES, k as u32);
        set_word(words, abi::H_N_CHANGES, k as u32);
        set_word(words, abi::H_N_JOBS, padding.jobs);
        // What the device holds after it (what `commit` records for a steady step): the
        // sent ids in the resident table's model (extending the known prefix of a row
        // whose new entries begin inside it), the rows' new lengths, no padding row.
        for ch in res.changes {
            let (r, j) = (ch.resident_row as usize, ch.index as usize);
            self.mirror[r * w + j] = ch.block;
        }
        for &a in &self.resized {
            let a = a as usize;
            let r = self.meta_src[a] as usize;
            let (l0, l1) = (self.meta_len[a], rows[a].blocks.len() as u32);
            if (l0..l1).contains(&self.res_known[r]) {
                self.res_known[r] = l1;
            }
            self.meta_len[a] = l1;
        }
        for a in n..np {
            self.unlink_meta(a);
            self.meta_len[a] = 0;
        }
        self.last_info = Some(info);
        self.origin = Some(origin.key());
        Some(Staged {
            bytes: sections.end,
            compact: false,
            patches: k as u32,
            changes: k as u32,
            jobs: padding.jobs,
            uploaded_blocks: 0,
            uploaded_rows: 0,
            gathered_rows: 0,
            delta: true,
            edits: 0,
            kept_rows: counted.kept_rows,
            advanced: true,
            worker_entries: padding.worker_entries + k as u64,
            info,
        })
    }

    /// Undoes [`try_advance`](Self::try_advance)'s advance of the request table's first
    /// `n` rows by `q` (a check after it failed).
    fn unadvance(&mut self, n: usize, q: u32) {
        for kv in self.table_kv.iter_mut().take(n) {
            *kv = kv.wrapping_sub(q);
        }
    }

    /// The plan's layout is this builder's: the numbers every index below relies on.
    fn check_layout<D: Dims>(&self, d: &D) -> Result<(), StagingError> {
        let (rows, width, dummy) = (d.max_requests(), d.block_table_width(), d.dummy_block());
        let capacity = Self::capacity_for(d);
        if (rows, width, dummy, capacity) == (self.rows, self.width, self.dummy, self.capacity) {
            return Ok(());
        }
        Err(StagingError::OtherLayout {
            rows,
            width,
            dummy,
            capacity,
            builder_rows: self.rows,
            builder_width: self.width,
            builder_dummy: self.dummy,
            builder_capacity: self.capacity,
        })
    }

    /// Pass 1 with residency: every step row has its own resident row, every change is
    /// inside the table, and the latest change of each entry (kept in `kept`) agrees with
    /// the step's rows; with full verification every row agrees with the model.
    fn check_residency(
        &mut self,
        input: &StepInput<'_>,
        res: &Residency<'_>,
        stamp: u32,
    ) -> Result<(), StagingError> {
        self.claim_resident_rows(input, res, stamp)?;
        self.keep_latest_changes(res, stamp)?;
        self.check_changes(input, res, stamp)?;
        if self.verify {
            self.verify_rows(input, res, stamp)?;
        }
        Ok(())
    }

    /// One resident row per step row, each inside the table and used once; stamps them
    /// (`row_stamp`, `row_of`) for this step.
    fn claim_resident_rows(
        &mut self,
        input: &StepInput<'_>,
        res: &Residency<'_>,
        stamp: u32,
    ) -> Result<(), StagingError> {
        if res.resident_rows.len() != input.rows.len() {
            return Err(StagingError::ResidentRowsLength {
                got: res.resident_rows.len(),
                expected: input.rows.len(),
            });
        }
        for (i, &r) in res.resident_rows.iter().enumerate() {
            let ru = r as usize;
            let (Some(row_stamp), Some(row_of)) =
                (self.row_stamp.get_mut(ru), self.row_of.get_mut(ru))
            else {
                return Err(StagingError::ResidentRowOutOfRange {
                    row: i,
                    resident_row: r,
                    limit: self.rows,
                });
            };
            if *row_stamp == stamp {
                return Err(StagingError::DuplicateResidentRow {
                    row: i,
                    resident_row: r,
                    other: *row_of as usize,
                });
            }
            *row_stamp = stamp;
            *row_of = i as u32;
        }
        Ok(())
    }

    /// Checks every change and keeps the latest of each entry (in `kept`, latest first),
    /// counting the kept changes per resident row (`changed_count`).
    #[allow(
        clippy::indexing_slicing,
        reason = "ru < rows and iu < width are checked first; the per-row and per-entry \
                  scratch is sized rows and rows * width"
    )]
    fn keep_latest_changes(&mut self, res: &Residency<'_>, stamp: u32) -> Result<(), StagingError> {
        for (ci, c) in res.changes.iter().enumerate().rev() {
            let (ru, iu) = (c.resident_row as usize, c.index as usize);
            if ru >= self.rows || iu >= self.width || c.block < -1 || c.block >= self.dummy {
                return Err(StagingError::BadChange {
                    change: ci,
                    resident_row: c.resident_row,
                    index: c.index,
                    block: c.block,
                    rows: self.rows,
                    width: self.width,
                    dummy: self.dummy,
                });
            }
            let e = ru * self.width + iu;
            if self.element_stamp[e] != stamp {
                self.element_stamp[e] = stamp;
                if self.changed_stamp[ru] == stamp {
                    self.changed_count[ru] += 1;
                } else {
                    self.changed_stamp[ru] = stamp;
                    self.changed_count[ru] = 1;
                }
                self.kept.push(ci as u32);
            }
        }
        Ok(())
    }

    /// Per active row, where its block-table row comes from (`source`): in place when it
    /// is and mostly unchanged, gathered when its resident row is known and unchanged,
    /// else uploaded. Without residency every row is uploaded.
    #[allow(
        clippy::indexing_slicing,
        reason = "a < N <= R (the plan, of this builder's layout), P + N <= rows, \
                  resident_rows has one entry per row and each is < R (claim_resident_rows)"
    )]
    fn choose_sources(&mut self, input: &StepInput<'_>, info: &StepInfo, stamp: u32) {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        self.source.clear();
        for a in 0..n {
            let source = match input.residency {
                None => Source::Upload { writeback: false },
                Some(res) => {
                    let r = res.resident_rows[paused + a];
                    let len = input.rows[paused + a].blocks.len();
                    let changed = if self.changed_stamp[r as usize] == stamp {
                        self.changed_count[r as usize] as usize
                    } else {
                        0
                    };
                    // In place, a changed entry costs a patch and a change (16 bytes); an
                    // upload costs 4 bytes per entry: rewrite rows that mostly changed,
                    // unless the row advances from the request table (a delta step then
                    // sends it nothing but its patches).
                    if self.meta_src[a] == r
                        && (4 * changed <= len || self.advances(a, input.rows[paused + a]))
                    {
                        Source::Meta
                    } else if changed == 0 && self.res_known[r as usize] as usize >= len {
                        Source::Resident
                    } else {
                        Source::Upload { writeback: true }
                    }
                }
            };
            self.source.push(source);
        }
    }

    /// Whether a delta step without edits of shape `info` keeps the rows of the step
    /// staged last (`abi::FLAG_KEPT_ROWS`): as many active rows (each then the step
    /// before's row advanced, with its query length), none longer than the kernel's owned
    /// rows (`min(B, abi::OWNED_TOKENS_MAX)`), and at most as many padded rows. The kernel
    /// then derives every row's cumulative lengths from the step before's.
    fn keeps_rows(&self, info: &StepInfo) -> bool {
        let n = info.real.requests();
        let owned = (1u32 << self.block_shift).min(abi::OWNED_TOKENS_MAX);
        self.last_info.is_some_and(|prev| {
            n > 0
                && n == prev.real.requests()
                && n as usize == self.table_rows
                && info.padded.requests() <= prev.padded.requests()
                && self.max_q <= owned
        })
    }

    /// Whether active row `a` of this step is the request table's row `a` advanced by its
    /// query length (the device can compute its record).
    fn advances(&self, a: usize, row: RequestRow<'_>) -> bool {
        a < self.table_rows
            && match (self.table.get(a), self.table_kv.get(a), self.table_q.get(a)) {
                (Some(t), Some(&kv), Some(&q)) => t.advances_to(kv, q, &row),
                _ => false,
            }
    }

    /// The lean pass of a steady step: when delta steps are allowed, the step has
    /// residency and every active row `a` is in place (its metadata row holds its resident
    /// row, linked both ways) and advances from the request table, it sets what
    /// [`choose_sources`](Self::choose_sources) and [`choose_delta`](Self::choose_delta)
    /// would (every source [`Source::Meta`], every row advanced: a delta step without
    /// edits), lists the rows whose length changed (`resized`) and checks what the general
    /// passes check of such rows: the ids each grew into
    /// ([`check_sent_ids`](Self::check_sent_ids)) and their agreement with the model
    /// ([`check_read_entries`](Self::check_read_entries)); a row that did not change
    /// length sends and reads nothing. `None` (the general passes then run, decide alike
    /// and name any error) when the step is not like that or a check fails. Rows that
    /// advance cost a few compares; only the resized rows cost more.
    #[allow(
        clippy::indexing_slicing,
        reason = "a < N <= table_rows <= R and resident rows < R (claim_resident_rows); \
                  l0 < l1 <= width (the plan, of this builder's layout)"
    )]
    fn steady_rows(
        &mut self,
        input: &StepInput<'_>,
        info: &StepInfo,
        stamp: u32,
    ) -> Option<RowCounts> {
        let res = input.residency?;
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        if !self.delta_steps || n == 0 || n > self.table_rows {
            return None;
        }
        let rows = input.rows.get(paused..paused + n)?;
        let resident = res.resident_rows.get(paused..paused + n)?;
        if self.meta_src.len() < n
            || self.meta_len.len() < n
            || self.table.len() < n
            || self.table_kv.len() < n
            || self.table_q.len() < n
        {
            return None;
        }
        let dummy = self.dummy;
        let mut resized = std::mem::take(&mut self.resized);
        resized.clear();
        let mut patches = 0usize;
        let mut ok = true;
        // Per active row `a`: the step row, its resident row, and what the device holds
        // (each of the three at least `n` long, checked above).
        let held = self.meta_src[..n].iter().zip(&self.meta_len[..n]).zip(
            self.table[..n]
                .iter()
                .zip(&self.table_kv[..n])
                .zip(&self.table_q[..n]),
        );
        for (a, ((row, &r), ((&src, &len), ((table, &kv), &q)))) in
            rows.iter().zip(resident).zip(held).enumerate()
        {
            let (l0, l1) = (len as usize, row.blocks.len());
            if src != r
                || self.res_meta.get(r as usize) != Some(&(a as u32))
                || !table.advances_to(kv, q, row)
            {
                ok = false;
                break;
            }
            if l0 != l1 {
                patches += l0.abs_diff(l1);
                resized.push(a as u32);
                if l1 > l0
                    && (row.blocks[l0..].iter().any(|&id| id < -1 || id >= dummy)
                        || self
                            .check_known(paused + a, r, row.blocks, l0, self.width, stamp)
                            .is_err())
                {
                    ok = false;
                    break;
                }
            }
        }
        self.resized = resized;
        if !ok {
            return None;
        }
        self.source.clear();
        self.source.resize(n, Source::Meta);
        self.advanced.clear();
        self.advanced.resize(n, true);
        Some(RowCounts {
            patches,
            ..RowCounts::default()
        })
    }

    /// Marks the active rows that a delta step would not edit (`advanced`: in place and
    /// advancing from the request table) and says whether a delta step is smaller than a
    /// full one: edits of the other rows against every row's record and sampling.
    #[allow(
        clippy::indexing_slicing,
        reason = "P + N <= rows.len() (the plan); `source` has one entry per active row"
    )]
    fn choose_delta(&mut self, input: &StepInput<'_>, info: &StepInfo) -> bool {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        self.advanced.clear();
        let mut edits = 0usize;
        for a in 0..n {
            let kept = self.source[a] == Source::Meta && self.advances(a, input.rows[paused + a]);
            edits += usize::from(!kept);
            self.advanced.push(kept);
        }
        if n == 0 || !self.delta_steps {
            return false;
        }
        let active = &input.rows[paused..paused + n];
        let sampling = if uniform_sampling(active) { 1 } else { n };
        let full = align16(n * abi::REQUEST_BYTES) + align16(sampling * abi::SAMPLING_BYTES);
        align16(edits * abi::EDIT_BYTES) <= full
    }

    /// Counts the image for the chosen sources; if it would not fit the staging capacity,
    /// uploads every active row instead and drops the changes. Returns the counts and
    /// whether the image is compact (every row uploaded).
    fn size_image(
        &mut self,
        input: &StepInput<'_>,
        info: &StepInfo,
        stamp: u32,
    ) -> (Counted, bool) {
        let delta = self.choose_delta(input, info);
        let counted = self.count(input, info, stamp, delta);
        if counted.end <= self.capacity {
            return (counted, input.residency.is_none());
        }
        for s in &mut self.source {
            *s = Source::Upload { writeback: true };
        }
        self.kept.clear();
        let delta = self.choose_delta(input, info);
        let counted = self.count(input, info, stamp, delta);
        debug_assert!(counted.end <= self.capacity);
        (counted, true)
    }

    /// Every kept change (the latest for its entry) that writes inside a step row's block
    /// list sets the row's id. O(changes); reads only.
    #[allow(
        clippy::indexing_slicing,
        reason = "ci indexes `changes` (kept from its enumeration), ru < rows (keep_latest_changes), and row_of holds step rows < rows.len() (claim_resident_rows)"
    )]
    fn check_changes(
        &self,
        input: &StepInput<'_>,
        res: &Residency<'_>,
        stamp: u32,
    ) -> Result<(), StagingError> {
        for &ci in &self.kept {
            let ch = &res.changes[ci as usize];
            let ru = ch.resident_row as usize;
            if self.row_stamp[ru] != stamp {
                continue;
            }
            let i = self.row_of[ru] as usize;
            match input.rows[i].blocks.get(ch.index as usize) {
                Some(&block) if block != ch.block => {
                    return Err(StagingError::ChangeContradictsRow {
                        row: i,
                        change: ci as usize,
                        resident_row: ch.resident_row,
                        index: ch.index,
                        block,
                        changed_to: ch.block,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Entries `from..to` of step row `i` (resident row `r`) agree with the host's model
    /// of the resident table wherever it knows them and this step does not change them
    /// (changed entries are [`check_changes`](Self::check_changes)'). Reads only.
    #[allow(
        clippy::indexing_slicing,
        reason = "ru < rows (claim_resident_rows); from < to <= min(blocks.len(), res_known[ru]) and res_known <= width, so both slices and the stamps lie inside row ru"
    )]
    fn check_known(
        &self,
        i: usize,
        r: u32,
        blocks: &[i32],
        from: usize,
        to: usize,
        stamp: u32,
    ) -> Result<(), StagingError> {
        let ru = r as usize;
        let to = to.min(blocks.len()).min(self.res_known[ru] as usize);
        if from >= to {
            return Ok(());
        }
        let base = ru * self.width;
        let (ours, table) = (&blocks[from..to], &self.mirror[base + from..base + to]);
        // Equal slices are the rule; the search (skipping changed entries) only when not.
        if ours == table {
            return Ok(());
        }
        for (j, (&block, &held)) in (from..to).zip(ours.iter().zip(table)) {
            if block != held && self.element_stamp[base + j] != stamp {
                return Err(StagingError::ResidentContradictsRow {
                    row: i,
                    resident_row: r,
                    index: j as u32,
                    block,
                    table: held,
                });
            }
        }
        Ok(())
    }

    /// Full verification: every step row against every entry the model knows.
    /// O(entries of the step's rows); reads only.
    fn verify_rows(
        &self,
        input: &StepInput<'_>,
        res: &Residency<'_>,
        stamp: u32,
    ) -> Result<(), StagingError> {
        for (i, (row, &r)) in input.rows.iter().zip(res.resident_rows).enumerate() {
            self.check_known(i, r, row.blocks, 0, self.width, stamp)?;
        }
        Ok(())
    }

    /// The entries this step reads from the resident table or sends to the device agree
    /// with what the model knows: an uploaded row whole (its upload overwrites entries the
    /// host relied on), a gathered row whole (the device copies it), an in-place row's
    /// entries it grows into (patched from its list). O(entries sent or gathered); reads
    /// only. Runs after the sources are final (the fallback may change them).
    #[allow(
        clippy::indexing_slicing,
        reason = "i = P + a < P + N <= rows.len() = resident_rows.len() (claim_resident_rows)"
    )]
    fn check_read_entries(
        &self,
        input: &StepInput<'_>,
        info: &StepInfo,
        res: &Residency<'_>,
        stamp: u32,
    ) -> Result<(), StagingError> {
        let paused = info.paused as usize;
        for (a, src) in self.source.iter().enumerate() {
            let i = paused + a;
            let (row, r) = (&input.rows[i], res.resident_rows[i]);
            let from = match src {
                Source::Upload { .. } | Source::Resident => 0,
                Source::Meta => self.meta_len[a] as usize,
            };
            self.check_known(i, r, row.blocks, from, self.width, stamp)?;
        }
        Ok(())
    }

    /// Applies what the launch writes into the resident table (uploads written back,
    /// changes sent) to the host's model of it. O(what is sent).
    #[allow(
        clippy::indexing_slicing,
        reason = "i = P + a < P + N <= rows.len() = resident_rows.len(); resident rows < rows; a row's blocks <= width (the plan, of this layout); ci indexes `changes`, whose entries are inside the table (keep_latest_changes)"
    )]
    fn mirror_launch(
        &mut self,
        input: &StepInput<'_>,
        info: &StepInfo,
        compact: bool,
        steady: bool,
    ) {
        let Some(res) = input.residency else {
            return;
        };
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let w = self.width;
        // A steady step uploads no row.
        for a in 0..if steady { 0 } else { n } {
            if let Source::Upload { writeback: true } = self.source[a] {
                let r = res.resident_rows[paused + a] as usize;
                let blocks = input.rows[paused + a].blocks;
                self.mirror[r * w..r * w + blocks.len()].copy_from_slice(blocks);
            }
        }
        if !compact {
            let active = &input.rows[paused..paused + n];
            for &ci in &self.kept {
                let ch = &res.changes[ci as usize];
                if self.route(ch, active, paused, self.generation).0 {
                    self.mirror[ch.resident_row as usize * w + ch.index as usize] = ch.block;
                }
            }
        }
    }

    /// Checks every block id this step takes from the rows' block lists and sends to the
    /// device: uploaded rows whole, in-place rows' grown entries and patched changes. Ids
    /// gathered from the resident table were checked when they were sent. O(what is sent).
    #[allow(
        clippy::indexing_slicing,
        reason = "P + N <= rows.len() (the plan); j < ids.len() (position); l0 <= blocks.len(); route returns active indices"
    )]
    fn check_sent_ids(
        &self,
        input: &StepInput<'_>,
        info: &StepInfo,
        stamp: u32,
    ) -> Result<(), StagingError> {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let active = &input.rows[paused..paused + n];
        let dummy = self.dummy;
        let bad = |a: usize, j: usize, block: i32| StagingError::BadBlock {
            row: paused + a,
            index: j,
            block,
            dummy,
        };
        let check = |a: usize, from: usize, ids: &[i32]| -> Result<(), StagingError> {
            // Branch-free scan first (as in the fill); the search only on failure.
            let ok = ids.iter().fold(-1i32, |all, &id| {
                all & id.wrapping_sub(dummy) & (-2i32).wrapping_sub(id)
            }) < 0;
            if ok {
                return Ok(());
            }
            match ids.iter().position(|&id| id < -1 || id >= dummy) {
                Some(j) => Err(bad(a, from + j, ids[j])),
                None => Ok(()),
            }
        };
        for (a, (row, src)) in active.iter().zip(&self.source).enumerate() {
            match src {
                Source::Upload { .. } => check(a, 0, row.blocks)?,
                Source::Meta => {
                    let l0 = (self.meta_len[a] as usize).min(row.blocks.len());
                    check(a, l0, &row.blocks[l0..])?;
                }
                Source::Resident => {}
            }
        }
        self.check_patched_ids(input, info, stamp)
    }

    /// The part of [`check_sent_ids`](Self::check_sent_ids) that reads the kept changes:
    /// the ids patched into in-place rows. O(changes).
    #[allow(
        clippy::indexing_slicing,
        reason = "P + N <= rows.len() (the plan); ci indexes `changes`; route returns active indices"
    )]
    fn check_patched_ids(
        &self,
        input: &StepInput<'_>,
        info: &StepInfo,
        stamp: u32,
    ) -> Result<(), StagingError> {
        let Some(res) = input.residency else {
            return Ok(());
        };
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let active = &input.rows[paused..paused + n];
        for &ci in &self.kept {
            let ch = &res.changes[ci as usize];
            if let (_, Some(a)) = self.route(ch, active, paused, stamp)
                && let Some(&id) = active[a].blocks.get(ch.index as usize)
                && (id < -1 || id >= self.dummy)
            {
                return Err(StagingError::BadBlock {
                    row: paused + a,
                    index: ch.index as usize,
                    block: id,
                    dummy: self.dummy,
                });
            }
        }
        Ok(())
    }

    /// Counts each section of the image for the current sources and kept changes.
    #[allow(
        clippy::indexing_slicing,
        reason = "P + N <= rows.len() and Np <= R (the plan, of this builder's layout; meta_len is sized R); ci indexes `changes`"
    )]
    fn count(&self, input: &StepInput<'_>, info: &StepInfo, stamp: u32, delta: bool) -> Counted {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let active = &input.rows[paused..paused + n];
        let mut rows = RowCounts::default();
        for (a, (row, src)) in active.iter().zip(&self.source).enumerate() {
            let l1 = row.blocks.len();
            match src {
                Source::Meta => {
                    rows.patches += l1.abs_diff(self.meta_len[a] as usize);
                }
                Source::Resident => rows.jobs += 1,
                Source::Upload { .. } => {
                    rows.jobs += 1;
                    rows.blocks += l1;
                }
            }
        }
        rows.edits = self.advanced.iter().filter(|&&kept| !kept).count();
        self.finish_count(input, info, stamp, delta, rows)
    }

    /// [`count`](Self::count) from the active rows' own counts: adds the padding rows'
    /// jobs, the kept changes and the other sections.
    #[allow(
        clippy::indexing_slicing,
        reason = "P + N <= rows.len() and Np <= R (the plan, of this builder's layout; meta_len is sized R); ci indexes `changes`"
    )]
    fn finish_count(
        &self,
        input: &StepInput<'_>,
        info: &StepInfo,
        stamp: u32,
        delta: bool,
        rows: RowCounts,
    ) -> Counted {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let np = info.padded.requests() as usize;
        let active = &input.rows[paused..paused + n];
        let mut c = Counted {
            patches: rows.patches,
            jobs: rows.jobs,
            blocks: rows.blocks,
            ..Counted::default()
        };
        c.jobs += (n..np).filter(|&a| self.meta_len[a] > 0).count();
        if let Some(res) = input.residency {
            for &ci in &self.kept {
                let (send, patch) = self.route(&res.changes[ci as usize], active, paused, stamp);
                c.changes += usize::from(send);
                c.patches += usize::from(patch.is_some());
            }
        }
        let has_inter = input.intermediate.is_some() && info.attn.prefill > 0;
        let per_request = !delta && !uniform_sampling(active);
        let edits = rows.edits;
        let sections = Sections::new(
            if delta {
                edits * abi::EDIT_BYTES
            } else {
                n * abi::REQUEST_BYTES
            },
            if input.token_ids.is_some() {
                info.real.tokens as usize
            } else {
                0
            },
            match (delta, per_request) {
                (true, _) => 0,
                (false, true) => n,
                (false, false) => 1,
            },
            if has_inter {
                info.attn.prefill as usize
            } else {
                0
            },
            c.patches,
            c.changes,
            c.jobs,
            c.blocks,
        );
        c.end = sections.end;
        c.sections = sections;
        c.per_request_sampling = per_request;
        c.has_inter = has_inter;
        c.delta = delta;
        c.edits = edits as u32;
        c
    }

    /// Where a kept change goes: whether it is sent to the resident table, and the
    /// active row whose in-place metadata row it patches (entries below both lengths).
    /// A change of an uploaded row inside its length is dropped (the upload carries it);
    /// a gathered row has no changes by construction.
    #[allow(
        clippy::indexing_slicing,
        reason = "active_index returns a < source.len() = N = active.len()"
    )]
    fn route(
        &self,
        ch: &BlockChange,
        active: &[RequestRow<'_>],
        paused: usize,
        stamp: u32,
    ) -> (bool, Option<usize>) {
        let Some(a) = self.active_index(ch.resident_row, paused, stamp) else {
            return (true, None);
        };
        let j = ch.index as usize;
        let len = active[a].blocks.len();
        match self.source[a] {
            Source::Meta => (true, (j < len.min(self.meta_len[a] as usize)).then_some(a)),
            Source::Upload { .. } => (j >= len, None),
            Source::Resident => (true, None),
        }
    }

    /// The active index of resident row `r` this step, if it is an active row.
    fn active_index(&self, r: u32, paused: usize, stamp: u32) -> Option<usize> {
        let ru = r as usize;
        if self.row_stamp.get(ru) != Some(&stamp) {
            return None;
        }
        let i = *self.row_of.get(ru)? as usize;
        let a = i.checked_sub(paused)?;
        (a < self.source.len()).then_some(a)
    }

    /// Pass 2: writes every section of the image into `words` (exactly `counted.end`
    /// bytes), in the order the sections lie, and says what it wrote.
    fn write(
        &self,
        input: &StepInput<'_>,
        info: &StepInfo,
        counted: &Counted,
        words: &mut [u32],
        compact: bool,
        stamp: u32,
    ) -> Result<Staged, StagingError> {
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let active = input.rows.get(paused..paused + n).unwrap_or(&[]);
        let s = counted.sections;
        write_header(words, input, info, counted);
        let rows = if counted.steady {
            // Every row in place and advanced: no record, upload or job.
            RowWork {
                jobs_end: s.jobs / 4,
                ..RowWork::default()
            }
        } else {
            self.write_requests(input, paused, active, &s, words, counted.delta)
        };
        let padding = self.write_padding_jobs(info, rows.jobs_end, words);
        write_token_ids(input, &s, words, counted.end)?;
        if !counted.delta {
            write_sampling(active, &s, words, counted.per_request_sampling);
        }
        if counted.has_inter {
            write_intermediate(input, info, &s, words);
        }
        let resized = counted.steady.then_some(self.resized.as_slice());
        let writes =
            self.write_block_writes(input, paused, active, &s, words, compact, stamp, resized);
        let jobs = rows.jobs + padding.jobs;
        let worker_entries =
            rows.worker_entries + padding.worker_entries + u64::from(writes.changes);
        set_word(words, abi::H_N_PATCHES, writes.patches);
        set_word(words, abi::H_N_CHANGES, writes.changes);
        set_word(words, abi::H_N_JOBS, jobs);
        Ok(Staged {
            bytes: counted.end,
            compact,
            patches: writes.patches,
            changes: writes.changes,
            jobs,
            uploaded_blocks: rows.uploaded_blocks,
            uploaded_rows: rows.uploaded_rows,
            gathered_rows: rows.gathered_rows,
            delta: counted.delta,
            edits: rows.edits,
            kept_rows: counted.kept_rows,
            advanced: false,
            worker_entries,
            info: *info,
        })
    }

    /// The request records, the uploaded rows' ids and the jobs of the active rows that
    /// are not in place, in one pass over the active rows.
    #[allow(
        clippy::indexing_slicing,
        reason = "the sections were sized by `count` for these rows and sources: N records, \
                  one job per row not in place, the uploaded rows' ids; a < N <= R"
    )]
    fn write_requests(
        &self,
        input: &StepInput<'_>,
        paused: usize,
        active: &[RequestRow<'_>],
        s: &Sections,
        words: &mut [u32],
        delta: bool,
    ) -> RowWork {
        let mut work = RowWork {
            jobs_end: s.jobs / 4,
            ..RowWork::default()
        };
        for (a, (row, src)) in active.iter().zip(&self.source).enumerate() {
            let l1 = row.blocks.len();
            let (src_word, writeback) = match *src {
                Source::Meta => (abi::SRC_META, None),
                Source::Resident => {
                    work.gathered_rows += 1;
                    let r = residency_row(input, paused + a);
                    (abi::SRC_RESIDENT | r, None)
                }
                Source::Upload { writeback } => {
                    work.uploaded_rows += 1;
                    let at = s.blocks / 4 + work.uploaded_blocks as usize;
                    for (dst, &id) in words[at..at + l1].iter_mut().zip(row.blocks) {
                        *dst = id as u32;
                    }
                    let word = abi::SRC_UPLOAD | work.uploaded_blocks;
                    work.uploaded_blocks += l1 as u32;
                    (word, writeback.then(|| residency_row(input, paused + a)))
                }
            };
            if !delta {
                let at = s.requests / 4 + a * 4;
                words[at..at + 4].copy_from_slice(&[
                    row.query_length,
                    row.kv_offset,
                    src_word,
                    row.mamba_slot as u32,
                ]);
            } else if !self.advanced[a] {
                let at = s.requests / 4 + work.edits as usize * (abi::EDIT_BYTES / 4);
                let (t, k, tp) = sampling_bits(&row.sampling);
                words[at..at + 8].copy_from_slice(&[
                    a as u32,
                    row.query_length,
                    row.kv_offset,
                    src_word,
                    row.mamba_slot as u32,
                    t,
                    k as u32,
                    tp,
                ]);
                work.edits += 1;
            }
            if *src != Source::Meta {
                let width = l1.max(self.meta_len[a] as usize);
                let job = [
                    a as u32,
                    l1 as u32,
                    width as u32,
                    src_word,
                    writeback.unwrap_or(abi::NO_ROW),
                ];
                words[work.jobs_end..work.jobs_end + 5].copy_from_slice(&job);
                work.jobs_end += 5;
                work.jobs += 1;
                work.worker_entries += width as u64;
            }
        }
        work
    }

    /// The jobs that clear padding rows `[N, Np)` still holding entries, after the active
    /// rows' jobs (which end at word `at`).
    #[allow(
        clippy::indexing_slicing,
        reason = "Np <= R (the plan, of this builder's layout); `count` sized one job per \
                  such row"
    )]
    fn write_padding_jobs(&self, info: &StepInfo, mut at: usize, words: &mut [u32]) -> RowWork {
        let n = info.real.requests() as usize;
        let np = info.padded.requests() as usize;
        let mut work = RowWork::default();
        for a in n..np {
            let len = self.meta_len[a];
            if len > 0 {
                let job = [a as u32, 0, len, abi::SRC_NONE, abi::NO_ROW];
                words[at..at + 5].copy_from_slice(&job);
                at += 5;
                work.jobs += 1;
                work.worker_entries += u64::from(len);
            }
        }
        work
    }

    /// Patches of in-place rows (the entries each grew into or left, then the changed
    /// entries below both lengths) and the changes for the resident table.
    #[allow(
        clippy::indexing_slicing,
        reason = "`count` sized the patch and change sections by the same `route`; a < N, \
                  j below both of a row's lengths (route), meta_len sized R"
    )]
    #[allow(
        clippy::too_many_arguments,
        reason = "the step's parts the two sections read: a struct would only regroup them"
    )]
    fn write_block_writes(
        &self,
        input: &StepInput<'_>,
        paused: usize,
        active: &[RequestRow<'_>],
        s: &Sections,
        words: &mut [u32],
        compact: bool,
        stamp: u32,
        resized: Option<&[u32]>,
    ) -> BlockWrites {
        let w = self.width;
        let dummy = self.dummy;
        let map = |id: i32| if id == -1 { dummy } else { id };
        let mut patch = s.patches / 4;
        let mut out = BlockWrites::default();
        let mut put_patch = |words: &mut [u32], index: usize, value: i32| {
            words[patch] = index as u32;
            words[patch + 1] = value as u32;
            patch += 2;
            out.patches += 1;
        };
        let mut patch_row = |words: &mut [u32], a: usize, row: &RequestRow<'_>| {
            let (l0, l1) = (self.meta_len[a] as usize, row.blocks.len());
            for j in l0.min(l1)..l0.max(l1) {
                let v = if j < l1 { map(row.blocks[j]) } else { dummy };
                put_patch(words, a * w + j, v);
            }
        };
        match resized {
            // A steady step: every row in place; only the listed ones changed length.
            Some(list) => {
                for &a in list {
                    patch_row(words, a as usize, &active[a as usize]);
                }
            }
            None => {
                for (a, (row, src)) in active.iter().zip(&self.source).enumerate() {
                    if *src == Source::Meta {
                        patch_row(words, a, row);
                    }
                }
            }
        }
        let mut change = s.changes / 4;
        let mut changes = 0u32;
        if let Some(res) = input.residency
            && !compact
        {
            for &ci in &self.kept {
                let ch = &res.changes[ci as usize];
                let (send, patch) = self.route(ch, active, paused, stamp);
                if let Some(a) = patch {
                    let j = ch.index as usize;
                    put_patch(words, a * w + j, map(active[a].blocks[j]));
                }
                if send {
                    words[change] = ch.resident_row * w as u32 + ch.index;
                    words[change + 1] = ch.block as u32;
                    change += 2;
                    changes += 1;
                }
            }
        }
        out.changes = changes;
        out
    }

    /// Records what the device holds once the step ran.
    #[allow(
        clippy::indexing_slicing,
        reason = "as in mirror_launch: rows, resident rows and metadata rows below their bounds (the plan and claim_resident_rows); kept changes are inside the table"
    )]
    fn commit(&mut self, input: &StepInput<'_>, info: &StepInfo, compact: bool, steady: bool) {
        self.mirror_launch(input, info, compact, steady);
        let paused = info.paused as usize;
        let n = info.real.requests() as usize;
        let np = info.padded.requests() as usize;
        let stamp = self.generation;
        match input.residency {
            None => {
                // The engine's changes of this step never reach the device.
                self.forget_residency();
            }
            Some(res) => {
                if compact {
                    // The changes were dropped: only the active rows' uploaded prefixes
                    // are known; every other row is forgotten.
                    for r in 0..self.rows {
                        if self.active_index(r as u32, paused, stamp).is_none() {
                            self.res_known[r] = 0;
                            self.unlink_resident(r);
                        }
                    }
                    for a in 0..n {
                        let r = res.resident_rows[paused + a] as usize;
                        self.res_known[r] = input.rows[paused + a].blocks.len() as u32;
                    }
                } else {
                    // A steady step uploads no row.
                    for a in 0..if steady { 0 } else { n } {
                        if let Source::Upload { writeback: true } = self.source[a] {
                            let r = res.resident_rows[paused + a] as usize;
                            let len = input.rows[paused + a].blocks.len() as u32;
                            self.res_known[r] = self.res_known[r].max(len);
                        }
                    }
                    for k in 0..self.kept.len() {
                        let r = res.changes[self.kept[k] as usize].resident_row;
                        let ru = r as usize;
                        // A changed row that is not active: its metadata copy is stale.
                        if self.active_index(r, paused, stamp).is_none() {
                            self.unlink_resident(ru);
                        }
                        // Entries set this step right after the known prefix extend it.
                        let mut known = self.res_known[ru] as usize;
                        while known < self.width
                            && self.element_stamp[ru * self.width + known] == stamp
                        {
                            known += 1;
                        }
                        self.res_known[ru] = known as u32;
                    }
                }
                // A steady step's rows are linked already (`steady_rows` checked both ways).
                for a in 0..if steady { 0 } else { n } {
                    let r = res.resident_rows[paused + a] as usize;
                    self.link(a, r);
                }
            }
        }
        let active = &input.rows[paused..paused + n];
        if steady {
            // Every row advanced (`steady_rows`): only its KV offset moved, and only the
            // resized rows changed length.
            for (kv, row) in self.table_kv.iter_mut().zip(active) {
                *kv = row.kv_offset;
            }
            for &a in &self.resized {
                self.meta_len[a as usize] = active[a as usize].blocks.len() as u32;
            }
        } else {
            for (a, row) in active.iter().enumerate() {
                self.meta_len[a] = row.blocks.len() as u32;
                // Full steps write every record into the device's request table; delta
                // steps advance or edit each: either way it holds this step's rows.
                self.table[a] = TableRow::of(row);
                self.table_kv[a] = row.kv_offset;
                self.table_q[a] = row.query_length;
            }
        }
        self.table_rows = n;
        for a in n..np {
            self.unlink_meta(a);
            self.meta_len[a] = 0;
        }
        self.last_info = Some(*info);
        let q0 = self.table_q.first().copied().unwrap_or(0);
        let active_q = self.table_q.get(..n).unwrap_or_default();
        self.uniform_q = active_q.iter().all(|&q| q == q0).then_some(q0);
        self.max_q = active_q.iter().copied().max().unwrap_or(0);
        self.rows_in_place = input.residency.is_some() && !compact;
    }
}

/// Section counts of one image.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    patches: usize,
    changes: usize,
    jobs: usize,
    blocks: usize,
    end: usize,
    sections: Sections,
    per_request_sampling: bool,
    has_inter: bool,
    /// A delta step (`abi::FLAG_DELTA`) with `edits` edit records.
    delta: bool,
    edits: u32,
    /// Counted by [`StagingBuilder::steady_rows`]: every row in place and advanced, the
    /// resized ones listed in `resized` (no records, jobs or uploads to write).
    steady: bool,
    /// A delta step without edits that keeps the rows of the step before
    /// (`abi::FLAG_KEPT_ROWS`, [`StagingBuilder::keeps_rows`]).
    kept_rows: bool,
}

/// What the active rows alone add to an image's sections.
#[derive(Debug, Clone, Copy, Default)]
struct RowCounts {
    patches: usize,
    jobs: usize,
    blocks: usize,
    /// Edit records of a delta step (rows that do not advance).
    edits: usize,
}

/// What [`StagingBuilder::write_requests`] (or the padding jobs) wrote.
#[derive(Debug, Clone, Copy, Default)]
struct RowWork {
    /// The word after the last job written.
    jobs_end: usize,
    jobs: u32,
    worker_entries: u64,
    uploaded_blocks: u32,
    uploaded_rows: u32,
    gathered_rows: u32,
    edits: u32,
}

/// What [`StagingBuilder::write_block_writes`] wrote.
#[derive(Debug, Clone, Copy, Default)]
struct BlockWrites {
    patches: u32,
    changes: u32,
}

/// Sets header word `i` (an `abi::H_*` index, below `HEADER_BYTES / 4`, which every image
/// starts with).
#[inline]
fn set_word(words: &mut [u32], i: usize, v: u32) {
    if let Some(w) = words.get_mut(i) {
        *w = v;
    }
}

/// The header: the step's shapes, flags and section offsets (the counts of patches,
/// changes and jobs are set once written).
fn write_header(words: &mut [u32], input: &StepInput<'_>, info: &StepInfo, counted: &Counted) {
    let s = counted.sections;
    if let Some(header) = words.get_mut(..abi::HEADER_BYTES / 4) {
        header.fill(0);
    }
    let mut flags = 0;
    if input.token_ids.is_some() {
        flags |= abi::FLAG_TOKEN_IDS;
    }
    if counted.has_inter {
        flags |= abi::FLAG_INTERMEDIATE;
    }
    if counted.per_request_sampling {
        flags |= abi::FLAG_PER_REQUEST_SAMPLING;
    }
    if counted.delta {
        flags |= abi::FLAG_DELTA;
    }
    if counted.kept_rows {
        flags |= abi::FLAG_KEPT_ROWS;
    }
    let header = [
        (abi::H_ABI, abi::VERSION),
        (abi::H_ACTIVE, info.real.requests()),
        (abi::H_PAUSED, info.paused),
        (abi::H_REAL_TOKENS, info.real.tokens),
        (abi::H_REAL_DECODE, info.real.decode),
        (abi::H_ATTN_DECODE, info.attn.decode),
        (abi::H_ATTN_PREFILL, info.attn.prefill),
        (abi::H_PAD_TOKENS, info.padded.tokens),
        (abi::H_PAD_PREFILL, info.padded.prefill),
        (abi::H_PAD_DECODE, info.padded.decode),
        (abi::H_FLAGS, flags),
        (
            abi::H_INTER_COUNT,
            if counted.has_inter {
                info.intermediate_count
            } else {
                0
            },
        ),
        (abi::H_OFF_REQUESTS, s.requests as u32),
        (abi::H_OFF_TOKEN_IDS, s.token_ids as u32),
        (abi::H_OFF_SAMPLING, s.sampling as u32),
        (abi::H_OFF_INTER, s.inter as u32),
        (abi::H_OFF_PATCHES, s.patches as u32),
        (abi::H_OFF_CHANGES, s.changes as u32),
        (abi::H_OFF_JOBS, s.jobs as u32),
        (abi::H_OFF_BLOCKS, s.blocks as u32),
        (abi::H_N_EDITS, counted.edits),
    ];
    for (i, v) in header {
        set_word(words, i, v);
    }
}

/// The token ids, as i64 (the section is 16-byte aligned and sized for them).
fn write_token_ids(
    input: &StepInput<'_>,
    s: &Sections,
    words: &mut [u32],
    need: usize,
) -> Result<(), StagingError> {
    let Some(ids) = input.token_ids else {
        return Ok(());
    };
    let at = s.token_ids / 4;
    let got = words.len() * 4;
    let dst: &mut [i64] = words
        .get_mut(at..at + ids.len() * 2)
        .and_then(|w| bytemuck::try_cast_slice_mut(w).ok())
        .ok_or(StagingError::Buffer {
            got,
            align: 4,
            need,
        })?;
    dst.copy_from_slice(ids);
    Ok(())
}

/// The sampling records: one per active row, or one for all when they sample alike.
#[allow(
    clippy::indexing_slicing,
    reason = "`count` sized the section for N records, or one"
)]
fn write_sampling(active: &[RequestRow<'_>], s: &Sections, words: &mut [u32], per_request: bool) {
    let at = s.sampling / 4;
    let put_sampling = |words: &mut [u32], i: usize, x: &Sampling| {
        words[at + 3 * i..at + 3 * i + 3].copy_from_slice(&[
            x.temperature.to_bits(),
            x.top_k as u32,
            x.top_p.to_bits(),
        ]);
    };
    if per_request {
        for (a, row) in active.iter().enumerate() {
            put_sampling(words, a, &row.sampling);
        }
    } else {
        put_sampling(
            words,
            0,
            active.first().map_or(&Sampling::PAD, |r| &r.sampling),
        );
    }
}

/// The intermediate records of the real prefill rows: first entry index and count, and
/// the offsets.
#[allow(
    clippy::indexing_slicing,
    reason = "`count` sized the section for Fr records (the plan checked one entry per \
              prefill row)"
)]
fn write_intermediate(input: &StepInput<'_>, info: &StepInfo, s: &Sections, words: &mut [u32]) {
    let Some(inter) = input.intermediate else {
        return;
    };
    let fr = info.attn.prefill as usize;
    let mut base = 0u32;
    for (f, io) in inter.iter().enumerate().take(fr) {
        let at = s.inter / 4 + f * 4;
        let count = u32::from(io.count.min(3));
        words[at] = base | (count << abi::INTER_COUNT_SHIFT);
        words[at + 1..at + 4].copy_from_slice(&io.offsets);
        base += count;
    }
}

fn residency_row(input: &StepInput<'_>, i: usize) -> u32 {
    input
        .residency
        .and_then(|r| r.resident_rows.get(i).copied())
        .unwrap_or(0)
}

/// Whether every active row samples alike (bit for bit), so one record serves them all.
fn uniform_sampling(active: &[RequestRow<'_>]) -> bool {
    match active.first() {
        None => true,
        Some(first) => {
            let b = sampling_bits(&first.sampling);
            active.iter().all(|r| sampling_bits(&r.sampling) == b)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "Test code: a panic is a failed test.")]

    use super::*;
    use crate::dims::RuntimeDims;
    use crate::fill::{FillState, plan_step};
    use crate::step::{BlockChange, RequestRow, Residency};
    use attention_layout_codegen::{Geometry, LayoutSpec};

    fn dims() -> RuntimeDims {
        let spec = LayoutSpec::from_toml_str(
            "model = \"mha\"\nmax_requests = 4\nmax_tokens = 64\nmax_seq_len = 32\nblock_size = 4\n",
            "t.toml",
        )
        .unwrap();
        RuntimeDims::new(Geometry::new(&spec).unwrap())
    }

    struct Stager {
        d: RuntimeDims,
        b: StagingBuilder,
        plan: FillState,
        buf: Vec<u128>,
    }

    impl Stager {
        fn new() -> Self {
            let d = dims();
            let b = StagingBuilder::new(&d);
            let buf = vec![0u128; b.capacity() / 16 + 1];
            Self {
                plan: FillState::new(&d),
                d,
                b,
                buf,
            }
        }
        fn stage(&mut self, input: &StepInput<'_>) -> Result<Staged, StagingError> {
            let plan = plan_step(&self.d, input, &mut self.plan).unwrap();
            self.b.build(&plan, bytemuck::cast_slice_mut(&mut self.buf))
        }
        fn word(&self, i: usize) -> u32 {
            bytemuck::cast_slice::<u128, u32>(&self.buf)[i]
        }
    }

    fn input<'a>(
        rows: &'a [RequestRow<'a>],
        resident: &'a [u32],
        changes: &'a [BlockChange],
    ) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: None,
            intermediate: None,
            residency: Some(Residency {
                resident_rows: resident,
                changes,
            }),
        }
    }

    fn set(row: u32, index: u32, block: i32) -> BlockChange {
        BlockChange {
            resident_row: row,
            index,
            block,
        }
    }

    /// The changes that write every entry of each resident row's blocks, in order: what
    /// an engine sends for rows it just filled.
    fn filled(rows: &[(u32, &[i32])]) -> Vec<BlockChange> {
        rows.iter()
            .flat_map(|&(r, blocks)| (0u32..).zip(blocks).map(move |(j, &id)| set(r, j, id)))
            .collect()
    }

    #[test]
    fn ids_no_token_lands_in_are_checked_when_they_are_sent() {
        use crate::fill::{BlockCheck, plan_step_checking};
        let mut s = Stager::new();
        // Dummy block 32 (4 rows x 8 blocks + 1). Entry 0 is outside the pool; the step's
        // token lands in entry 1, so a plan that reads only those ids accepts the step.
        let a = [99, 7];
        let rows = [RequestRow::decode(1, 5, &a, -1)];
        let changes = [set(0, 1, 7)];
        let step = input(&rows, &[0], &changes);
        let plan = plan_step_checking(&s.d, &step, &mut s.plan, BlockCheck::Needed).unwrap();
        // The row is new on the device, so it is uploaded: the staging builder refuses it.
        let e =
            s.b.build(&plan, bytemuck::cast_slice_mut(&mut s.buf))
                .unwrap_err();
        assert_eq!(
            e,
            StagingError::BadBlock {
                row: 0,
                index: 0,
                block: 99,
                dummy: 32
            }
        );
    }

    #[test]
    fn a_steady_decode_step_moves_only_its_records() {
        let mut s = Stager::new();
        let (a, b) = ([3, 7, 8, 6], [5]);
        let rows = [
            RequestRow::decode(1, 5, &a, -1),
            RequestRow::decode(1, 2, &b, -1),
        ];
        let all = filled(&[(2, &a), (0, &b)]);
        let first = s.stage(&input(&rows, &[2, 0], &all)).unwrap();
        assert_eq!((first.uploaded_rows, first.changes), (2, 0));
        // The same rows again: nothing but the header, two records and one sampling record.
        let again = s.stage(&input(&rows, &[2, 0], &[])).unwrap();
        assert_eq!(
            (again.jobs, again.patches, again.changes, again.compact),
            (0, 0, 0, false)
        );
        assert_eq!(again.bytes, abi::HEADER_BYTES + 2 * abi::REQUEST_BYTES + 16);
        assert_eq!(s.word(abi::H_N_JOBS), 0);
        // Swapped: both rows are gathered from the resident table, nothing uploaded.
        let rows = [rows[1], rows[0]];
        let swapped = s.stage(&input(&rows, &[0, 2], &[])).unwrap();
        assert_eq!((swapped.gathered_rows, swapped.uploaded_rows), (2, 0));
        // A new block for a long in-place row: one change for the resident table, one patch.
        let a = [3, 7, 8, 6, 9];
        let rows = [rows[0], RequestRow::decode(1, 16, &a, -1)];
        let grown = s.stage(&input(&rows, &[0, 2], &[set(2, 4, 9)])).unwrap();
        assert_eq!((grown.changes, grown.patches, grown.jobs), (1, 1, 0));
        // A row that mostly changed is rewritten instead (its change rides along).
        let b = [10];
        let rows = [RequestRow::decode(1, 2, &b, -1), rows[1]];
        let replaced = s.stage(&input(&rows, &[0, 2], &[set(0, 0, 10)])).unwrap();
        assert_eq!(
            (replaced.uploaded_rows, replaced.changes, replaced.patches),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_step_whose_rows_advance_by_their_query_length_is_a_delta_of_only_the_header() {
        let mut s = Stager::new();
        let (a, b) = ([3, 7, 8], [5]);
        let rows = [
            RequestRow::decode(1, 5, &a, -1),
            RequestRow::decode(1, 2, &b, -1),
        ];
        let all = filled(&[(2, &a), (0, &b)]);
        let first = s.stage(&input(&rows, &[2, 0], &all)).unwrap();
        // Nothing known about the device's request table yet: a full step.
        assert!(!first.delta);
        assert_eq!(s.word(abi::H_FLAGS) & abi::FLAG_DELTA, 0);
        // Both rows advance by q = 1 with the same blocks: the header alone travels.
        let rows = [
            RequestRow::decode(1, 6, &a, -1),
            RequestRow::decode(1, 3, &b, -1),
        ];
        let steady = s.stage(&input(&rows, &[2, 0], &[])).unwrap();
        assert_eq!(
            (steady.delta, steady.edits, steady.kept_rows),
            (true, 0, true)
        );
        assert_eq!(steady.bytes, abi::HEADER_BYTES);
        assert_eq!(
            s.word(abi::H_FLAGS) & abi::FLAG_KEPT_ROWS,
            abi::FLAG_KEPT_ROWS
        );
        assert_eq!(s.word(abi::H_FLAGS) & abi::FLAG_DELTA, abi::FLAG_DELTA);
        assert_eq!(s.word(abi::H_N_EDITS), 0);
        // The second row crosses into a new block (a short row, kept in place): one
        // change for the resident table and one patch, no edit.
        let b2 = [5, 9];
        let rows = [
            RequestRow::decode(1, 7, &a, -1),
            RequestRow::decode(1, 4, &b2, -1),
        ];
        let crossing = s.stage(&input(&rows, &[2, 0], &[set(0, 1, 9)])).unwrap();
        assert_eq!(
            (
                crossing.delta,
                crossing.edits,
                crossing.changes,
                crossing.patches,
                crossing.kept_rows
            ),
            (true, 0, 1, 1, true)
        );
        assert_eq!(crossing.bytes, abi::HEADER_BYTES + 16 + 16);
        // The first row changes its sampling: one edit record with it.
        let mut hot = RequestRow::decode(1, 8, &a, -1);
        hot.sampling.temperature = 0.5;
        let rows = [hot, RequestRow::decode(1, 5, &b2, -1)];
        let resampled = s.stage(&input(&rows, &[2, 0], &[])).unwrap();
        assert_eq!(
            (resampled.delta, resampled.edits, resampled.kept_rows),
            (true, 1, false)
        );
        assert_eq!(s.word(abi::H_FLAGS) & abi::FLAG_KEPT_ROWS, 0);
        assert_eq!(resampled.bytes, abi::HEADER_BYTES + abi::EDIT_BYTES);
        let at = s.word(abi::H_OFF_REQUESTS) as usize / 4;
        assert_eq!(
            (s.word(at), s.word(at + 1), s.word(at + 2), s.word(at + 5)),
            (0, 1, 8, 0.5f32.to_bits())
        );
        // Two rows that do not advance (same KV offsets again) cost two edits (64 bytes),
        // more than their records and one sampling record (48): a full step.
        let rows = [
            RequestRow::decode(1, 8, &a, -1),
            RequestRow::decode(1, 5, &b2, -1),
        ];
        let again = s.stage(&input(&rows, &[2, 0], &[])).unwrap();
        assert!(!again.delta && !again.kept_rows);
        assert_eq!(again.bytes, abi::HEADER_BYTES + 2 * abi::REQUEST_BYTES + 16);
        // A step with token ids sends them next to the header.
        let rows = [
            RequestRow::decode(1, 9, &a, -1),
            RequestRow::decode(1, 6, &b2, -1),
        ];
        let ids = [11i64, 12];
        let mut with_ids = input(&rows, &[2, 0], &[]);
        with_ids.token_ids = Some(&ids);
        let staged = s.stage(&with_ids).unwrap();
        assert_eq!((staged.delta, staged.edits), (true, 0));
        assert_eq!(staged.bytes, abi::HEADER_BYTES + 16);
        // After `reset` (the device's buffers were reset) nothing is advanced.
        s.b.reset();
        let rows = [
            RequestRow::decode(1, 10, &a, -1),
            RequestRow::decode(1, 7, &b2, -1),
        ];
        let after = s.stage(&input(&rows, &[2, 0], &[])).unwrap();
        assert!(!after.delta && !after.kept_rows);
    }

    #[test]
    fn only_a_delta_step_of_the_same_short_rows_keeps_its_rows() {
        let mut s = Stager::new();
        let (a, b) = ([3, 7, 8], [5, 6]);
        let all = filled(&[(2, &a), (0, &b)]);
        let rows = [
            RequestRow::decode(1, 5, &a, -1),
            RequestRow::decode(1, 2, &b, -1),
        ];
        assert!(!s.stage(&input(&rows, &[2, 0], &all)).unwrap().kept_rows);
        let rows = [
            RequestRow::decode(1, 6, &a, -1),
            RequestRow::decode(1, 3, &b, -1),
        ];
        assert!(s.stage(&input(&rows, &[2, 0], &[])).unwrap().kept_rows);
        // The last row finished: a delta step without edits, but one row fewer (the
        // padding totals of the step before are not this step's).
        let rows = [RequestRow::decode(1, 7, &a, -1)];
        let fewer = s.stage(&input(&rows, &[2], &[])).unwrap();
        assert_eq!(
            (fewer.delta, fewer.edits, fewer.kept_rows),
            (true, 0, false)
        );
        assert_eq!(s.word(abi::H_FLAGS) & abi::FLAG_KEPT_ROWS, 0);
        // The same one row again: kept.
        let rows = [RequestRow::decode(1, 8, &a, -1)];
        assert!(s.stage(&input(&rows, &[2], &[])).unwrap().kept_rows);
        // A prefill row of more than min(B, 8) = 4 tokens that advances by its query
        // length (a chunked prefill) is long: its tokens need the scan.
        let c = [4, 9, 10, 11];
        let changes = [set(1, 0, 4), set(1, 1, 9), set(1, 2, 10), set(1, 3, 11)];
        let rows = [RequestRow::prefill(5, 0, &c, -1)];
        assert!(!s.stage(&input(&rows, &[1], &changes)).unwrap().kept_rows);
        let rows = [RequestRow::prefill(5, 5, &c, -1)];
        let long = s.stage(&input(&rows, &[1], &[])).unwrap();
        assert_eq!((long.delta, long.edits, long.kept_rows), (true, 0, false));
    }

    #[test]
    fn a_delta_step_of_256_decode_rows_without_new_blocks_sends_only_the_header() {
        let spec = LayoutSpec::from_toml_str(
            "model = \"mha\"\nmax_requests = 256\nmax_tokens = 256\nmax_seq_len = 4096\nblock_size = 64\n",
            "t.toml",
        )
        .unwrap();
        let d = RuntimeDims::new(Geometry::new(&spec).unwrap());
        let mut b = StagingBuilder::new(&d);
        let mut state = FillState::new(&d);
        let mut buf = vec![0u128; b.capacity() / 16 + 1];
        let blocks: Vec<[i32; 2]> = (0..256).map(|i| [2 * i, 2 * i + 1]).collect();
        let resident: Vec<u32> = (0..256).collect();
        let all: Vec<BlockChange> = (0..256u32)
            .flat_map(|r| [set(r, 0, 2 * r as i32), set(r, 1, 2 * r as i32 + 1)])
            .collect();
        let mut sizes = Vec::new();
        for step in 0..3u32 {
            let rows: Vec<RequestRow<'_>> = blocks
                .iter()
                .map(|bl| RequestRow::decode(1, 70 + step, bl, -1))
                .collect();
            let changes = if step == 0 { &all[..] } else { &[] };
            let plan = plan_step(&d, &input(&rows, &resident, changes), &mut state).unwrap();
            let staged = b.build(&plan, bytemuck::cast_slice_mut(&mut buf)).unwrap();
            sizes.push((staged.delta, staged.bytes));
        }
        // The full step: header, 256 records, one sampling record, 256 rows uploaded.
        assert_eq!(
            sizes[0],
            (
                false,
                abi::HEADER_BYTES + 256 * abi::REQUEST_BYTES + 16 + 256 * 20 + 512 * 4
            )
        );
        assert_eq!(sizes[1..], [(true, abi::HEADER_BYTES); 2]);
        const { assert!(abi::HEADER_BYTES <= 256) };
    }

    #[test]
    fn with_delta_steps_forbidden_every_step_sends_its_records() {
        let mut s = Stager::new();
        s.b.set_delta_steps(false);
        let a = [3, 7];
        let all = filled(&[(1, &a)]);
        let rows = [RequestRow::decode(1, 5, &a, -1)];
        s.stage(&input(&rows, &[1], &all)).unwrap();
        let rows = [RequestRow::decode(1, 6, &a, -1)];
        let staged = s.stage(&input(&rows, &[1], &[])).unwrap();
        assert!(!staged.delta);
        assert_eq!(staged.bytes, abi::HEADER_BYTES + abi::REQUEST_BYTES + 16);
    }

    #[test]
    fn the_latest_change_to_an_entry_wins() {
        let mut s = Stager::new();
        let b = [4];
        let rows = [RequestRow::decode(1, 0, &b, -1)];
        let changes = [set(3, 2, 8), set(1, 0, 9), set(3, 2, 6), set(1, 0, 4)];
        let staged = s.stage(&input(&rows, &[1], &changes)).unwrap();
        // Row 1 is uploaded (its change inside the row is dropped); row 3's change travels.
        assert_eq!((staged.uploaded_rows, staged.changes), (1, 1));
        let at = s.word(abi::H_OFF_CHANGES) as usize / 4;
        assert_eq!((s.word(at), s.word(at + 1)), (3 * 8 + 2, 6));
    }

    #[test]
    fn bad_residency_is_rejected_and_changes_nothing() {
        let mut s = Stager::new();
        let b = [4];
        let rows = [
            RequestRow::decode(1, 0, &b, -1),
            RequestRow::decode(1, 0, &b, -1),
        ];
        let e = s.stage(&input(&rows, &[1, 1], &[])).unwrap_err();
        assert!(
            matches!(e, StagingError::DuplicateResidentRow { row: 1, .. }),
            "{e}"
        );
        let e = s.stage(&input(&rows, &[1], &[])).unwrap_err();
        assert!(matches!(e, StagingError::ResidentRowsLength { .. }), "{e}");
        let e = s.stage(&input(&rows, &[0, 9], &[])).unwrap_err();
        assert!(
            matches!(e, StagingError::ResidentRowOutOfRange { row: 1, .. }),
            "{e}"
        );
        let e = s
            .stage(&input(&rows, &[0, 1], &[set(0, 8, 1)]))
            .unwrap_err();
        assert!(
            matches!(e, StagingError::BadChange { change: 0, .. }),
            "{e}"
        );
        let e = s
            .stage(&input(&rows, &[0, 1], &[set(0, 0, s.d.dummy_block())]))
            .unwrap_err();
        assert!(e.to_string().contains("pool"), "{e}");
        assert_eq!(
            s.b,
            StagingBuilder::new(&s.d),
            "refused steps change nothing"
        );
        // Nothing was recorded: both rows are still unknown to the device.
        let ok = s.stage(&input(&rows, &[0, 1], &[])).unwrap();
        assert_eq!(ok.uploaded_rows, 2);
    }

    #[test]
    fn a_residency_view_that_starts_over_must_be_announced() {
        let mut s = Stager::new();
        s.b.set_verify(true);
        // One engine: resident row 0 holds [3, 7, 8, 6].
        let a = [3, 7, 8, 6];
        let rows = [RequestRow::decode(1, 5, &a, -1)];
        let all = filled(&[(0, &a)]);
        s.stage(&input(&rows, &[0], &all)).unwrap();
        // A new engine whose view of row 0 starts all -1: it sets entry 0 only, and passes
        // the row with trailing -1s. The device still holds 7, 8, 6 at entries 1..4.
        let b = [5, -1, -1, -1];
        let rows = [RequestRow::decode(1, 2, &b, -1)];
        let changes = [set(0, 0, 5)];
        let before = s.b.clone();
        let e = s.stage(&input(&rows, &[0], &changes)).unwrap_err();
        assert_eq!(
            e,
            StagingError::ResidentContradictsRow {
                row: 0,
                resident_row: 0,
                index: 1,
                block: -1,
                table: 7
            }
        );
        assert_eq!(s.b, before, "a refused step changes nothing");
        // Without full verification the row stays in place with only entry 0 patched, and
        // entries 1..4 (7, 8, 6) are neither changed nor sent, so nothing reads them: this
        // is the one kind of contradiction the per-step check does not see (module docs).
        let mut quiet = s.b.clone();
        quiet.set_verify(false);
        let step = input(&rows, &[0], &changes);
        let plan = plan_step(&s.d, &step, &mut s.plan).unwrap();
        let mut buf = vec![0u128; quiet.capacity() / 16 + 1];
        let stale = quiet
            .build(&plan, bytemuck::cast_slice_mut(&mut buf))
            .unwrap();
        assert_eq!((stale.uploaded_rows, stale.patches), (0, 1));
        // Announced: the row travels again (written back), and is trusted from then on.
        s.b.forget_residency();
        let told = s.stage(&input(&rows, &[0], &changes)).unwrap();
        assert_eq!((told.uploaded_rows, told.changes), (1, 0));
        let again = s.stage(&input(&rows, &[0], &[])).unwrap();
        assert_eq!((again.jobs, again.patches), (0, 0));
    }

    /// Stages `input` on a clone of `s` first and checks that the refusal is `want` and that
    /// it left the builder as it was; then the same on `s` itself.
    fn refused(s: &mut Stager, input: &StepInput<'_>, want: StagingError) {
        let before = s.b.clone();
        let e = s.stage(input).unwrap_err();
        assert_eq!(e, want);
        assert_eq!(s.b, before, "{want}: a refused step must change nothing");
    }

    /// Resident row 0 holds [3, 7, 8, 6], uploaded (so known) and in place at metadata
    /// row 0.
    fn one_known_row(s: &mut Stager) {
        let a = [3, 7, 8, 6];
        let rows = [RequestRow::decode(1, 13, &a, -1)];
        let all = filled(&[(0, &a)]);
        let first = s.stage(&input(&rows, &[0], &all)).unwrap();
        assert_eq!(first.uploaded_rows, 1);
    }

    #[test]
    fn full_verification_is_off_by_default_in_every_build() {
        let s = Stager::new();
        assert!(!s.b.verifying());
    }

    #[test]
    fn a_change_that_contradicts_its_row_is_refused() {
        let mut s = Stager::new();
        one_known_row(&mut s);
        // Entry 3 set to 9 while the row's list says 6: an active row kept in place.
        let a = [3, 7, 8, 6];
        let rows = [RequestRow::decode(1, 13, &a, -1)];
        let changes = [set(0, 3, 9)];
        refused(
            &mut s,
            &input(&rows, &[0], &changes),
            StagingError::ChangeContradictsRow {
                row: 0,
                change: 0,
                resident_row: 0,
                index: 3,
                block: 6,
                changed_to: 9,
            },
        );
        // Only the latest change of an entry counts: 9 then 6 agrees with the row.
        let ok = s
            .stage(&input(&rows, &[0], &[set(0, 3, 9), set(0, 3, 6)]))
            .unwrap();
        assert_eq!((ok.changes, ok.patches), (1, 1));
        // A paused row is checked as well (its changes reach the resident table).
        let b = [4];
        let rows = [
            RequestRow::paused(0, &a, -1),
            RequestRow::decode(1, 2, &b, -1),
        ];
        refused(
            &mut s,
            &input(&rows, &[0, 1], &[set(1, 0, 4), set(0, 1, 5)]),
            StagingError::ChangeContradictsRow {
                row: 0,
                change: 1,
                resident_row: 0,
                index: 1,
                block: 7,
                changed_to: 5,
            },
        );
        // Past a row's list a change is not a contradiction (entries there are never read).
        s.stage(&input(&rows, &[0, 1], &[set(1, 0, 4), set(0, 5, 11)]))
            .unwrap();
    }

    #[test]
    fn an_uploaded_row_that_contradicts_the_known_table_is_refused() {
        let mut s = Stager::new();
        one_known_row(&mut s);
        // The row moves to metadata row 1 and gains entry 4: it is uploaded. Its entry 1
        // says 9, but the device's resident row holds 7 and no change says otherwise.
        let (a, b) = ([3, 9, 8, 6, 10], [4]);
        let rows = [
            RequestRow::decode(1, 2, &b, -1),
            RequestRow::decode(1, 17, &a, -1),
        ];
        refused(
            &mut s,
            &input(&rows, &[1, 0], &[set(1, 0, 4), set(0, 4, 10)]),
            StagingError::ResidentContradictsRow {
                row: 1,
                resident_row: 0,
                index: 1,
                block: 9,
                table: 7,
            },
        );
        // With the change reported, the same step is fine.
        let ok = s
            .stage(&input(
                &rows,
                &[1, 0],
                &[set(1, 0, 4), set(0, 4, 10), set(0, 1, 9)],
            ))
            .unwrap();
        assert_eq!(ok.uploaded_rows, 2);
    }

    #[test]
    fn a_gathered_row_that_contradicts_the_known_table_is_refused() {
        let mut s = Stager::new();
        one_known_row(&mut s);
        // The row moves without changes: it would be gathered from the resident table,
        // which holds 7 at entry 1 where its list says 9.
        let (a, b) = ([3, 9, 8, 6], [4]);
        let rows = [
            RequestRow::decode(1, 2, &b, -1),
            RequestRow::decode(1, 13, &a, -1),
        ];
        refused(
            &mut s,
            &input(&rows, &[1, 0], &[set(1, 0, 4)]),
            StagingError::ResidentContradictsRow {
                row: 1,
                resident_row: 0,
                index: 1,
                block: 9,
                table: 7,
            },
        );
        let a = [3, 7, 8, 6];
        let rows = [rows[0], RequestRow::decode(1, 13, &a, -1)];
        let ok = s.stage(&input(&rows, &[1, 0], &[set(1, 0, 4)])).unwrap();
        assert_eq!((ok.gathered_rows, ok.uploaded_rows), (1, 1));
    }

    #[test]
    fn an_in_place_row_that_grows_into_contradicting_entries_is_refused() {
        let mut s = Stager::new();
        // Resident row 0: [3, 7] in the step, and entries 2 and 3 set past the list (an
        // engine that reserved them): the device's resident row is known up to 4.
        let a = [3, 7];
        let rows = [RequestRow::decode(1, 5, &a, -1)];
        s.stage(&input(&rows, &[0], &[set(0, 0, 3), set(0, 1, 7)]))
            .unwrap();
        let grown = s
            .stage(&input(&rows, &[0], &[set(0, 2, 8), set(0, 3, 6)]))
            .unwrap();
        assert_eq!(grown.changes, 2);
        // The row now lists four entries, the third of which contradicts the table.
        let a = [3, 7, 5, 6];
        let rows = [RequestRow::decode(1, 13, &a, -1)];
        refused(
            &mut s,
            &input(&rows, &[0], &[]),
            StagingError::ResidentContradictsRow {
                row: 0,
                resident_row: 0,
                index: 2,
                block: 5,
                table: 8,
            },
        );
        let a = [3, 7, 8, 6];
        let rows = [RequestRow::decode(1, 13, &a, -1)];
        let ok = s.stage(&input(&rows, &[0], &[])).unwrap();
        assert_eq!((ok.patches, ok.jobs), (2, 0));
    }

    #[test]
    fn a_steady_row_that_grows_is_checked_and_patched_like_any_in_place_row() {
        let mut s = Stager::new();
        let a = [3, 7];
        // Uploaded, then advancing in place: delta steps without edits.
        s.stage(&input(
            &[RequestRow::decode(1, 5, &a, -1)],
            &[0],
            &[set(0, 0, 3), set(0, 1, 7)],
        ))
        .unwrap();
        let steady = s
            .stage(&input(&[RequestRow::decode(1, 6, &a, -1)], &[0], &[]))
            .unwrap();
        assert!(steady.delta);
        assert_eq!((steady.edits, steady.patches, steady.jobs), (0, 0, 0));
        // Entries past the list set by the engine: sent, so known to the model.
        let ahead = s
            .stage(&input(
                &[RequestRow::decode(1, 7, &a, -1)],
                &[0],
                &[set(0, 2, 8), set(0, 3, 6)],
            ))
            .unwrap();
        assert!(ahead.delta);
        assert_eq!((ahead.edits, ahead.changes, ahead.jobs), (0, 2, 0));
        // Crossing into block 2 with an id that contradicts what was sent: refused, as
        // the general passes refuse it, and nothing changes.
        let wrong = [3, 7, 5];
        refused(
            &mut s,
            &input(&[RequestRow::decode(1, 8, &wrong, -1)], &[0], &[]),
            StagingError::ResidentContradictsRow {
                row: 0,
                resident_row: 0,
                index: 2,
                block: 5,
                table: 8,
            },
        );
        // The same crossing with the id sent: one patch, still a delta step without edits.
        let right = [3, 7, 8];
        let crossed = s
            .stage(&input(&[RequestRow::decode(1, 8, &right, -1)], &[0], &[]))
            .unwrap();
        assert!(crossed.delta);
        assert_eq!(
            (
                crossed.edits,
                crossed.patches,
                crossed.jobs,
                crossed.changes
            ),
            (0, 1, 0, 0)
        );
        // The patch writes entry 2 of metadata row 0 with the id.
        let at = s.word(abi::H_OFF_PATCHES) as usize / 4;
        assert_eq!((s.word(at), s.word(at + 1)), (2, 8));
    }

    #[test]
    fn a_step_planned_for_another_layout_is_refused_and_changes_nothing() {
        let mut s = Stager::new();
        one_known_row(&mut s);
        let other = RuntimeDims::new(
            Geometry::new(
                &LayoutSpec::from_toml_str(
                    "model = \"mha\"\nmax_requests = 8\nmax_tokens = 64\nmax_seq_len = 32\nblock_size = 4\n",
                    "other.toml",
                )
                .unwrap(),
            )
            .unwrap(),
        );
        let mut state = FillState::new(&other);
        let a = [3, 7, 8, 6];
        let rows = [RequestRow::decode(1, 13, &a, -1)];
        let step = input(&rows, &[5], &[]);
        let plan = plan_step(&other, &step, &mut state).unwrap();
        let before = s.b.clone();
        let e =
            s.b.build(&plan, bytemuck::cast_slice_mut(&mut s.buf))
                .unwrap_err();
        assert!(
            matches!(
                e,
                StagingError::OtherLayout {
                    rows: 8,
                    builder_rows: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(s.b, before, "a refused step changes nothing");
    }

    #[test]
    fn the_staged_info_is_the_host_fills() {
        let mut s = Stager::new();
        let mut host = crate::HostMetadata::new(s.d.clone());
        let (a, b) = ([3, 7], [5, 9, 2]);
        let rows = [
            RequestRow::decode(1, 5, &a, -1),
            RequestRow::prefill(6, 3, &b, -1),
        ];
        let step = input(&rows, &[1, 2], &[]);
        let staged = s.stage(&step).unwrap();
        assert_eq!(staged.info, *host.fill(&step).unwrap());
    }

    #[test]
    fn grids_grow_with_the_block_table_work() {
        assert_eq!(grid_for(0, 100), 1);
        assert_eq!(grid_for(8 * 1024, 100), 1);
        assert_eq!(grid_for(8 * 1024 + 1, 100), 2);
        assert_eq!(grid_for(1 << 20, 100), 33);
        assert_eq!(grid_for(1 << 30, 100), 101);
        assert_eq!(grid_for(1 << 30, 0), 1);
    }
}
