//! The host fill: the reference implementation of every field of docs/SEMANTICS.md §4–§6.
//!
//! A step runs in two passes. [`plan_step`] checks the whole input and works out the real
//! and padded batch shapes; it writes nothing. [`write_step`] then writes every field into
//! the coalesced buffer and cannot fail on the step. So a rejected step leaves the previous
//! metadata exactly as it was. The plan ([`StepPlan`]) holds the input, the layout and the
//! fill state it checked, and the writers take nothing else, so a step is written only as
//! it was checked.
//!
//! Per step the fill allocates nothing and writes only the live prefix of each field; the
//! block table is tracked row by row so that only entries that may differ from the dummy
//! block are rewritten.

use attention_layout_codegen::{BatchDims, Field, VLLM_CONV_BLOCK, buckets};

use crate::agree::AgreedShape;
use crate::dims::Dims;
use crate::error::StepError;
use crate::step::{Phase, RequestRow, Sampling, StepInput};

/// What a successful step produced, besides the buffer contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepInfo {
    /// Paused rows `P`.
    pub paused: u32,
    /// The real shape `(Σq, F, D)`.
    pub real: BatchDims,
    /// The padded shape: the matched bucket, or eager padding.
    pub padded: BatchDims,
    /// The shape attention runs with (docs/SEMANTICS.md §3.3).
    pub attn: BatchDims,
    /// Index of the matched bucket in the layout's ascending bucket list.
    pub bucket: Option<u32>,
    /// `max_seqlen_q` for the attention kernel.
    pub max_seqlen_q: u32,
    /// `max_seqlen_k` for the attention kernel.
    pub max_seqlen_k: u32,
    /// Mamba chunk slots `C` of this step (0 without prefill).
    pub mamba_chunks: u32,
    /// Intermediate entries `K` of this step (0 without prefill).
    pub intermediate_len: u32,
    /// Real intermediate entries.
    pub intermediate_count: u32,
    /// Real prefill tokens (`cu_seqlens[F]`).
    pub real_prefill_tokens: u32,
    /// KV pages of the real rows, `Σ ceil((kv_offset + q) / B)`: the live length of
    /// `flashinfer_paged_kv_indices` (docs/CONSUMER-CONTRACT.md).
    pub kv_pages: u32,
}

impl StepInfo {
    /// Whether a CUDA graph serves this step.
    pub fn graphed(&self) -> bool {
        self.bucket.is_some()
    }
}

/// State the fill keeps between steps: which block-table entries may differ from the
/// dummy block, and scratch for duplicate-slot checks. Tied to one buffer.
#[derive(Debug, Clone)]
pub struct FillState {
    /// Per block-table row, how many leading entries may hold something other than the
    /// dummy block (everything after is known to be the dummy).
    block_table_dirty: Vec<u32>,
    /// Per Mamba slot, the generation in which a row last claimed it.
    slot_generation: Vec<u32>,
    /// Per Mamba slot, the row that claimed it in that generation.
    slot_owner: Vec<u32>,
    generation: u32,
    /// Per metadata block-table row: the resident row whose block list it held after the
    /// last step written from a [residency-aware plan](plan_step_resident) ([`NO_ROW`]:
    /// unknown). Meaningful for rows `0 .. src_len` only.
    meta_src: Vec<u32>,
    /// Rows of `meta_src` that may hold something other than [`NO_ROW`].
    src_len: usize,
    /// Per metadata block-table row, this step: whether the plan keeps it in place (its
    /// resident row is the one it held, so only the entries the residency changes name and
    /// the ones it grew into are written).
    in_place: Vec<bool>,
    /// Per metadata row: the first and last block index its tokens landed in at the last
    /// write (meaningful where the row is kept in place: those entries were checked then).
    needed: Vec<[u32; 2]>,
    /// Per resident row: the step row that claims it (valid where `res_stamp` is current).
    res_step_row: Vec<u32>,
    res_stamp: Vec<u32>,
    res_generation: u32,
    /// The Mamba slots of the last rows that passed
    /// [`claim_distinct_slots`](Self::claim_distinct_slots): each in `[0, R)`, no two alike.
    distinct_slots: Vec<i32>,
    /// The shape the buffer was last written with: `(paused, real, padded)` (`None`: not
    /// written since the buffer was initialized).
    last_shape: Option<(u32, BatchDims, BatchDims)>,
}

/// No resident row.
const NO_ROW: u32 = u32::MAX;

impl FillState {
    /// State for a buffer that [`init_buffer`] has just initialized.
    pub fn new<D: Dims>(d: &D) -> Self {
        let r = d.max_requests();
        Self {
            block_table_dirty: vec![0; r],
            slot_generation: vec![0; if d.has_mamba() { r } else { 0 }],
            slot_owner: vec![0; if d.has_mamba() { r } else { 0 }],
            generation: 0,
            meta_src: vec![NO_ROW; r],
            src_len: 0,
            in_place: vec![false; r],
            needed: vec![[0, 0]; r],
            res_step_row: vec![0; r],
            res_stamp: vec![0; r],
            res_generation: 0,
            distinct_slots: Vec::with_capacity(if d.has_mamba() { r } else { 0 }),
            last_shape: None,
        }
    }

    /// Back to the state [`new`](Self::new) gives (for a buffer [`init_buffer`] has just
    /// initialized again), without allocating.
    pub fn reset(&mut self) {
        self.block_table_dirty.fill(0);
        self.slot_generation.fill(0);
        self.slot_owner.fill(0);
        self.generation = 0;
        self.forget_residency();
        self.res_stamp.fill(0);
        self.res_generation = 0;
        self.distinct_slots.clear();
        self.last_shape = None;
    }

    /// Forgets which resident row each block-table row holds: the next
    /// [residency-aware](plan_step_resident) step copies every active row in full. For an
    /// engine whose residency view starts over (`MetadataBackend::reset_residency`).
    pub fn forget_residency(&mut self) {
        self.meta_src.fill(NO_ROW);
        self.in_place.fill(false);
        self.src_len = 0;
    }

    /// Stamps the step's resident rows (resident row → step row) when the residency can be
    /// used: one resident row per step row, each inside the table and used once. Returns
    /// whether it can; a step whose residency cannot be used is filled in full.
    fn claim_resident_rows(&mut self, input: &StepInput<'_>) -> bool {
        let Some(res) = input.residency else {
            return false;
        };
        if res.resident_rows.len() != input.rows.len() {
            return false;
        }
        self.res_generation = self.res_generation.wrapping_add(1);
        if self.res_generation == 0 {
            self.res_stamp.fill(0);
            self.res_generation = 1;
        }
        let g = self.res_generation;
        for (i, &r) in res.resident_rows.iter().enumerate() {
            match (
                self.res_stamp.get_mut(r as usize),
                self.res_step_row.get_mut(r as usize),
            ) {
                (Some(stamp), Some(row)) if *stamp != g => {
                    *stamp = g;
                    // `i < rows.len() <= R`, checked by the caller.
                    *row = i as u32;
                }
                // Outside the table, or claimed twice.
                _ => return false,
            }
        }
        true
    }

    /// The step row that claims resident row `r` this step, if any.
    #[inline]
    fn step_row_of(&self, r: u32) -> Option<usize> {
        let stamp = *self.res_stamp.get(r as usize)?;
        (stamp == self.res_generation)
            .then(|| self.res_step_row.get(r as usize).map(|&i| i as usize))
            .flatten()
    }

    /// Whether this state was made for `d`'s numbers of request rows and Mamba slots
    /// (what every index into it below relies on).
    fn check_fits<D: Dims>(&self, d: &D) -> Result<(), StepError> {
        let rows = d.max_requests();
        let slots = if d.has_mamba() { rows } else { 0 };
        if self.block_table_dirty.len() == rows
            && self.meta_src.len() == rows
            && self.in_place.len() == rows
            && self.needed.len() == rows
            && self.res_stamp.len() == rows
            && self.res_step_row.len() == rows
            && self.slot_generation.len() == slots
            && self.slot_owner.len() == slots
        {
            return Ok(());
        }
        Err(StepError::FillState {
            rows: self.block_table_dirty.len(),
            slots: self.slot_generation.len(),
            expected_rows: rows,
            expected_slots: slots,
        })
    }

    /// Starts a new generation of Mamba slot claims (one per planned step), so that no
    /// scratch is cleared per step.
    #[inline]
    fn next_slot_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: old stamps could collide with the new generation.
            self.slot_generation.fill(0);
            self.generation = 1;
        }
    }

    /// The lean passes' Mamba check: every row holds a slot in `[0, r)` of its own (claimed
    /// this generation). A list equal to the last one that passed (a steady step keeps its
    /// rows' slots) passes without claims: the check depends on the list alone.
    // Once per step, out of line: the lean passes' row loops stay as small as they were.
    #[inline(never)]
    fn claim_distinct_slots(&mut self, rows: &[RequestRow<'_>], r: usize) -> bool {
        if self.distinct_slots.len() == rows.len()
            && rows
                .iter()
                .zip(&self.distinct_slots)
                .all(|(row, &slot)| row.mamba_slot == slot)
        {
            return true;
        }
        self.distinct_slots.clear();
        for (i, row) in rows.iter().enumerate() {
            if row.mamba_slot == -1 || self.claim_slot(i, row.mamba_slot, r).is_err() {
                self.distinct_slots.clear();
                return false;
            }
        }
        self.distinct_slots
            .extend(rows.iter().map(|row| row.mamba_slot));
        true
    }

    /// Row `i` claims Mamba slot `slot`, which must lie in `[0, r)` and be unclaimed this
    /// generation.
    #[inline]
    fn claim_slot(&mut self, i: usize, slot: i32, r: usize) -> Result<(), StepError> {
        let Some(su) = usize::try_from(slot).ok().filter(|&s| s < r) else {
            return Err(StepError::MambaSlotOutOfRange {
                row: i,
                slot,
                limit: r,
            });
        };
        // `su < r`, the length of both scratch vectors (a Mamba layout, `check_fits`).
        if let (Some(stamp), Some(owner)) = (
            self.slot_generation.get_mut(su),
            self.slot_owner.get_mut(su),
        ) {
            if *stamp == self.generation {
                return Err(StepError::DuplicateMambaSlot {
                    row: i,
                    slot,
                    other: *owner as usize,
                });
            }
            *stamp = self.generation;
            // `i < rows.len() <= r <= 2^24`: fits.
            *owner = i as u32;
        }
        Ok(())
    }
}

/// Initializes a whole buffer: zeros, and the block table all dummy (what the fill's
/// block-table tracking assumes of a fresh buffer).
pub fn init_buffer<D: Dims>(d: &D, bytes: &mut [u8]) -> Result<(), StepError> {
    let mut v = Views::carve(d, bytes)?;
    v.zero_all();
    v.mha_block_table.fill(d.dummy_block());
    Ok(())
}

/// A checked step, from [`plan_step`]: the step's input, the layout and the fill state it
/// was checked against, and its shapes.
///
/// The plan borrows all three until it is dropped, so the writers ([`write_step`] and
/// [`StagingBuilder::build`](crate::devfill::StagingBuilder::build)) take the plan alone:
/// they cannot be given another input, layout or state than the ones that were checked,
/// and the rows cannot change in between.
#[derive(Debug)]
pub struct StepPlan<'a, D: Dims> {
    dims: &'a D,
    input: StepInput<'a>,
    state: &'a mut FillState,
    info: StepInfo,
    /// Real active requests `N`.
    active: usize,
    /// Whether any row's block list may hold a `-1`.
    holes: bool,
    /// Whether the plan uses the step's residency ([`plan_step_resident`]): rows kept in
    /// place are marked in the state's `in_place`.
    resident: bool,
}

impl<'a, D: Dims> StepPlan<'a, D> {
    /// The step's shapes (what [`write_step`] reports, before the values it computes while
    /// writing: see [`complete_info`](Self::complete_info)).
    pub fn info(&self) -> &StepInfo {
        &self.info
    }

    /// The step input that was checked.
    pub fn input(&self) -> &StepInput<'a> {
        &self.input
    }

    /// The layout the step was checked against.
    pub fn dims(&self) -> &'a D {
        self.dims
    }

    /// The real active rows, `rows[P .. P + N]`.
    pub fn active_rows(&self) -> &'a [RequestRow<'a>] {
        let paused = self.info.paused as usize;
        self.input
            .rows
            .get(paused..paused + self.active)
            .unwrap_or(&[])
    }

    /// The info [`write_step`] would return, computed without writing anything: the
    /// planned shapes plus `max_seqlen_*` and the Mamba chunk and intermediate counts.
    /// What a backend that builds the fields elsewhere (the device fill) reports.
    pub fn complete_info(&self) -> StepInfo {
        let d = self.dims;
        let mut info = self.info;
        let active = self.active_rows();
        let s1 = d.speculative_tokens() as u32 + 1;
        if info.graphed() {
            info.max_seqlen_q = if info.padded.prefill == 0 {
                s1
            } else {
                info.padded.tokens.max(2)
            };
            info.max_seqlen_k = d.max_seq_len() as u32;
        } else if !active.is_empty() {
            info.max_seqlen_q = active.iter().map(|r| r.query_length).max().unwrap_or(0);
            info.max_seqlen_k = active
                .iter()
                .map(|r| r.kv_offset + r.query_length)
                .max()
                .unwrap_or(0);
        } else {
            info.max_seqlen_q = s1;
            info.max_seqlen_k = 1;
        }
        info.kv_pages = kv_pages(d, active);
        info.mamba_chunks = 0;
        info.intermediate_len = 0;
        info.intermediate_count = 0;
        info.real_prefill_tokens = 0;
        let fp = info.padded.prefill as usize;
        if d.has_mamba() && fp > 0 {
            let dr = info.attn.decode as usize;
            let fr = info.attn.prefill as usize;
            info.mamba_chunks = (info.padded.tokens as usize / d.chunk_size() + fp) as u32;
            info.intermediate_len = (fp * 3).min(d.max_intermediate()) as u32;
            info.intermediate_count = self.input.intermediate.map_or(0, |inter| {
                inter
                    .iter()
                    .take(fr)
                    .map(|io| u32::from(io.count.min(3)))
                    .sum()
            });
            info.real_prefill_tokens = active
                .get(dr..dr + fr)
                .unwrap_or(&[])
                .iter()
                .map(|r| r.query_length)
                .sum();
        }
        info
    }
}

/// The host-side arrays FlashInfer's `plan()` takes for a step (`qo_indptr`,
/// `paged_kv_indptr`, `paged_kv_last_page_len`, each over the padded rows `Np`), computed
/// from the plan's rows on the host: the same values the fills write into the buffer's
/// `mha_cu_query_seq_lengths` (FlashInfer's `qo_indptr`) and `flashinfer_*` fields, with
/// no device-to-host copy (docs/CONSUMER-CONTRACT.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlashInferPlan {
    /// `[Np + 1]`: cumulative query lengths.
    pub qo_indptr: Vec<i32>,
    /// `[Np + 1]`: cumulative KV pages.
    pub paged_kv_indptr: Vec<i32>,
    /// `[Np]`: tokens in each row's last page, 1 for padding rows.
    pub paged_kv_last_page_len: Vec<i32>,
}

impl<D: Dims> StepPlan<'_, D> {
    /// Writes the step's [`FlashInferPlan`] into `out`, reusing its vectors (they allocate
    /// only when a step has more rows than any before). Works for every layout; the device
    /// arrays exist when the layout's `formats` names `flashinfer`.
    pub fn flashinfer_plan(&self, out: &mut FlashInferPlan) {
        let bs = self.dims.block_size() as u32;
        let np = self.info.padded.requests() as usize;
        for v in [&mut out.qo_indptr, &mut out.paged_kv_indptr] {
            v.clear();
            v.push(0);
        }
        out.paged_kv_last_page_len.clear();
        let (mut cu_q, mut cu_pages) = (0i32, 0i32);
        for row in self.active_rows() {
            let kv_len = row.kv_offset + row.query_length;
            let pages = kv_len.div_ceil(bs);
            // Sums and lengths stay inside i32: the plan checked them against the layout.
            cu_q += row.query_length as i32;
            cu_pages += pages as i32;
            out.qo_indptr.push(cu_q);
            out.paged_kv_indptr.push(cu_pages);
            out.paged_kv_last_page_len
                .push((kv_len - (pages - 1) * bs) as i32);
        }
        out.qo_indptr.resize(np + 1, cu_q);
        out.paged_kv_indptr.resize(np + 1, cu_pages);
        out.paged_kv_last_page_len.resize(np, 1);
    }
}

/// Checks a step input against the layout and works out its shapes. Writes nothing but
/// the duplicate-slot scratch in `state`.
///
/// # Errors
///
/// The [`StepError`] of the first rule the input breaks (then nothing changed that a
/// later step reads), or [`StepError::FillState`] when `state` was made for another
/// layout.
pub fn plan_step<'a, D: Dims>(
    d: &'a D,
    input: &StepInput<'a>,
    state: &'a mut FillState,
) -> Result<StepPlan<'a, D>, StepError> {
    plan_step_checking(d, input, state, BlockCheck::Full)
}

/// How much of each row's block list [`plan_step_checking`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCheck {
    /// Every id of every row: O(blocks in the table). What the host fill needs, since it
    /// copies every row into the block table.
    Full,
    /// Only the ids the step's tokens land in (O(tokens / B) per step), plus the lengths.
    /// For a backend that keeps the block table resident and receives every other id
    /// through [`Residency::changes`](crate::step::Residency), which it checks itself:
    /// the ids it gathers were then all checked when they were set.
    Needed,
}

/// [`plan_step`] with a choice of how much of the block lists to check.
///
/// # Errors
///
/// Those of [`plan_step`].
pub fn plan_step_checking<'a, D: Dims>(
    d: &'a D,
    input: &StepInput<'a>,
    state: &'a mut FillState,
    check: BlockCheck,
) -> Result<StepPlan<'a, D>, StepError> {
    plan(d, input, state, check, None, false)
}

/// [`plan_step`] for a host fill that writes only what changed: what `CpuBackend` runs.
///
/// When the step carries a usable [`Residency`](crate::step::Residency) (one resident row
/// per step row, inside the table, each used once), an active row whose metadata
/// block-table row already holds its resident row's list (written by the previous
/// residency-aware step at the same position) is *kept in place*: its block list is not
/// scanned or copied; only the entries the residency changes name, and those it grew
/// into, are checked and written. Every other row, and every step without usable
/// residency, is checked and written in full, exactly as [`plan_step`].
///
/// The result is byte-identical to [`plan_step`] + [`write_step`] as long as the
/// residency keeps its contract (`batch.rs`): the changes list every entry written since
/// the previous step. Like the device fill, the entries of a row kept in place that no
/// change names are trusted, not read.
///
/// # Errors
///
/// Those of [`plan_step`]. An input with several faults may report another of them first.
pub fn plan_step_resident<'a, D: Dims>(
    d: &'a D,
    input: &StepInput<'a>,
    state: &'a mut FillState,
) -> Result<StepPlan<'a, D>, StepError> {
    plan(d, input, state, BlockCheck::Full, None, true)
}

/// [`plan_step_checking`] for one rank of an expert-parallel group: the padded shape
/// follows what the group agreed ([`AgreedShape::match_bucket`]: every rank replays the
/// same bucket, or every rank pads eagerly), not the step's own match. Everything else is
/// planned as for [`plan_step`].
///
/// # Errors
///
/// Those of [`plan_step`], and [`StepError::NotAgreed`] when the step's shape is not one
/// the agreement covers (more tokens than the group's maximum, or a prefill request the
/// group did not see).
pub fn plan_step_agreed<'a, D: Dims>(
    d: &'a D,
    input: &StepInput<'a>,
    state: &'a mut FillState,
    check: BlockCheck,
    agreed: &AgreedShape,
) -> Result<StepPlan<'a, D>, StepError> {
    plan(d, input, state, check, Some(agreed), false)
}

/// The planning pass: the rows one by one, then the step as a whole, then its shapes.
fn plan<'a, D: Dims>(
    d: &'a D,
    input: &StepInput<'a>,
    state: &'a mut FillState,
    check: BlockCheck,
    agreed: Option<&AgreedShape>,
    resident: bool,
) -> Result<StepPlan<'a, D>, StepError> {
    let limits = RowLimits::of(d);
    if input.rows.len() > limits.r {
        return Err(StepError::TooManyRequests {
            rows: input.rows.len(),
            limit: limits.r,
        });
    }
    state.check_fits(d)?;
    if limits.has_mamba {
        state.next_slot_generation();
    }
    let resident = resident && state.claim_resident_rows(input);
    let resident_rows = input
        .residency
        .filter(|_| resident)
        .map(|r| r.resident_rows);
    // Rows come paused, decode, then prefill: a step whose last row is not a decode row
    // (a mixed step) takes neither lean pass, known before a pass over every decode row
    // ahead of its first prefill row.
    let decode_only = input
        .rows
        .last()
        .is_none_or(|row| row.phase == Phase::Decode);
    let steady = match resident_rows {
        _ if !decode_only => None,
        Some(res) => check_steady_rows(&limits, input.rows, res, state),
        // The device fill's steady step (it checks the rest of the block lists itself).
        None if check == BlockCheck::Needed => check_decode_rows_needed(&limits, input.rows, state),
        None => None,
    };
    let tally = match steady {
        Some(tally) => tally,
        None => {
            if limits.has_mamba {
                // The steady pass may have claimed slots: start the claims over.
                state.next_slot_generation();
            }
            check_rows(d, &limits, input.rows, state, check, resident_rows)?
        }
    };
    check_step(d, input, &tally)?;
    if resident {
        check_in_place_entries(&limits, input, state, &tally)?;
    }
    let info = step_shapes(d, &tally, agreed)?;
    Ok(StepPlan {
        dims: d,
        input: *input,
        state,
        info,
        active: (tally.decode + tally.prefill) as usize,
        holes: tally.holes,
        resident,
    })
}

/// The entries named by the residency changes that a residency-aware write copies into rows
/// kept in place: each must be a valid id, and one the step's tokens land in must hold a
/// block.
fn check_in_place_entries(
    limits: &RowLimits,
    input: &StepInput<'_>,
    state: &FillState,
    tally: &Tally,
) -> Result<(), StepError> {
    let paused = tally.paused as usize;
    let active = (tally.decode + tally.prefill) as usize;
    let valid = |i: usize, blocks: &[i32], j: usize| -> Result<(), StepError> {
        match blocks.get(j) {
            Some(&id) if id < -1 || id >= limits.dummy => Err(StepError::BlockOutOfRange {
                row: i,
                index: j,
                id,
                limit: limits.dummy,
            }),
            _ => Ok(()),
        }
    };
    // (The entries a row kept in place grew into are checked in `check_rows`.)
    if let Some(res) = input.residency {
        for c in res.changes {
            let Some(i) = state.step_row_of(c.resident_row) else {
                continue;
            };
            let Some(a) = i.checked_sub(paused).filter(|&a| a < active) else {
                continue;
            };
            if state.in_place.get(a).copied().unwrap_or(false)
                && let Some(row) = input.rows.get(i)
            {
                let j = c.index as usize;
                valid(i, row.blocks, j)?;
                // A changed entry the step's tokens land in must hold a block.
                let first = row.kv_offset as usize >> limits.shift;
                let last =
                    (row.kv_offset as usize + row.query_length.max(1) as usize - 1) >> limits.shift;
                if (first..=last).contains(&j) && row.blocks.get(j).is_none_or(|&id| id == -1) {
                    return Err(StepError::MissingBlock {
                        row: i,
                        position: (j * limits.block_size).max(row.kv_offset as usize) as u32,
                        index: j,
                        count: row.blocks.len(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The layout's numbers the per-row checks use, read once per step.
#[derive(Debug, Clone, Copy)]
struct RowLimits {
    /// `R`.
    r: usize,
    /// `s + 1`, a decode row's query length.
    s1: u32,
    /// `B`.
    block_size: usize,
    /// `log2 B` (the block size is a power of two, validated with the spec).
    shift: u32,
    /// The largest `kv_offset + query_length` of a prefill row.
    max_seq: usize,
    /// The largest `kv_offset + query_length` of a decode row.
    decode_max: usize,
    /// Block-table width.
    block_table_width: usize,
    /// The dummy block id (valid ids lie in `[-1, dummy)`).
    dummy: i32,
    has_mamba: bool,
}

impl RowLimits {
    /// Whether entries `first..=last` of `row`'s block list exist and are valid ids (not
    /// `-1`, below the dummy block): the blocks a decode row's tokens land in.
    #[inline]
    fn valid_blocks(&self, row: &RequestRow<'_>, first: usize, last: usize) -> bool {
        row.blocks
            .get(first..=last)
            .is_some_and(|ids| ids.iter().all(|&id| id >= 0 && id < self.dummy))
    }

    /// The first and last block list entries a decode row's `s + 1` tokens land in;
    /// `None` when its sequence passes the decode bound.
    #[inline]
    fn decode_blocks(&self, row: &RequestRow<'_>) -> Option<(usize, usize)> {
        let end = row.kv_offset as usize + self.s1 as usize;
        if end > self.decode_max {
            return None;
        }
        Some((
            row.kv_offset as usize >> self.shift,
            (end - 1) >> self.shift,
        ))
    }

    /// The tally of a step of `n` decode rows that passed a lean pass.
    #[inline]
    fn decode_tally(&self, n: usize, holes: bool) -> Tally {
        Tally {
            paused: 0,
            decode: n as u32,
            prefill: 0,
            tokens: n as u64 * u64::from(self.s1),
            holes,
        }
    }

    #[inline]
    fn of<D: Dims>(d: &D) -> Self {
        Self {
            r: d.max_requests(),
            s1: d.speculative_tokens() as u32 + 1,
            block_size: d.block_size(),
            shift: d.block_size().trailing_zeros(),
            max_seq: d.max_seq_len(),
            decode_max: d.decode_kv_limit(),
            block_table_width: d.block_table_width(),
            dummy: d.dummy_block(),
            has_mamba: d.has_mamba(),
        }
    }
}

/// What the row checks counted.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    paused: u32,
    decode: u32,
    prefill: u32,
    /// `Σ q` over the active rows.
    tokens: u64,
    /// Whether any row's block list may hold a `-1`.
    holes: bool,
}

/// The checks of a steady decode step, in one lean pass: every row a decode row with
/// `q = s + 1` kept in place (its metadata row holds its resident row), its list not
/// shorter than at the last step (entries it grew into valid ids), its sequence within the decode bound, its tokens in the
/// blocks checked at the last step (else those blocks are checked here), a Mamba slot of its
/// own. `None` as soon as a row is not like that (or breaks a rule): the caller then runs
/// [`check_rows`], which finds the rule and names it. Marks every row in place.
#[inline]
fn check_steady_rows(
    limits: &RowLimits,
    rows: &[RequestRow<'_>],
    resident_rows: &[u32],
    state: &mut FillState,
) -> Option<Tally> {
    let n = rows.len();
    let res = resident_rows.get(..n)?;
    let src = state.meta_src.get(..n)?;
    let dirty = state.block_table_dirty.get(..n)?;
    let needed = state.needed.get(..n)?;
    let s1 = limits.s1;
    for (i, row) in rows.iter().enumerate() {
        let r = *res.get(i)?;
        let len = row.blocks.len();
        let prev = *dirty.get(i)? as usize;
        if row.phase != Phase::Decode
            || row.query_length != s1
            || *src.get(i)? != r
            || r == NO_ROW
            || len < prev
            || len > limits.block_table_width
        {
            return None;
        }
        // Entries it grew into (a block crossing) are copied: check them.
        for &id in row.blocks.get(prev..)? {
            if id < -1 || id >= limits.dummy {
                return None;
            }
        }
        let (first, last) = limits.decode_blocks(row)?;
        let [lo, hi] = *needed.get(i)?;
        // Blocks its tokens had not reached: check them (present and valid ids).
        if (first < lo as usize || last > hi as usize) && !limits.valid_blocks(row, first, last) {
            return None;
        }
    }
    if limits.has_mamba && !state.claim_distinct_slots(rows, limits.r) {
        return None;
    }
    state.in_place.get_mut(..n)?.fill(true);
    Some(limits.decode_tally(n, true))
}

/// The checks of a decode-only step under [`BlockCheck::Needed`], in one lean pass: every
/// row a decode row with `q = s + 1`, its list within the table width, its sequence within
/// the decode bound, every block its tokens land in a valid id (not `-1`), a Mamba slot of
/// its own. Exactly what [`check_rows`] checks of such rows, so where this accepts a step
/// `check_rows` would have accepted it with the same tally and the same slot claims.
/// `None` as soon as a row is not like that (or breaks a rule): the caller then runs
/// [`check_rows`], which finds the rule and names it.
#[inline]
fn check_decode_rows_needed(
    limits: &RowLimits,
    rows: &[RequestRow<'_>],
    state: &mut FillState,
) -> Option<Tally> {
    let s1 = limits.s1;
    for row in rows {
        if row.phase != Phase::Decode
            || row.query_length != s1
            || row.blocks.len() > limits.block_table_width
        {
            return None;
        }
        let (first, last) = limits.decode_blocks(row)?;
        // Every block its tokens land in present (none past the list) and a valid id.
        if !limits.valid_blocks(row, first, last) {
            return None;
        }
    }
    if limits.has_mamba && !state.claim_distinct_slots(rows, limits.r) {
        return None;
    }
    // Unscanned lists may hold holes (what `check_block_list` says under `Needed`).
    Some(limits.decode_tally(rows.len(), !rows.is_empty()))
}

/// Checks every row in order (the first broken rule wins) and counts them.
#[inline]
fn check_rows<D: Dims>(
    d: &D,
    limits: &RowLimits,
    rows: &[RequestRow<'_>],
    state: &mut FillState,
    check: BlockCheck,
    resident_rows: Option<&[u32]>,
) -> Result<Tally, StepError> {
    let mut tally = Tally::default();
    let mut previous = Phase::Paused;
    for (i, row) in rows.iter().enumerate() {
        check_phase_order(i, row.phase, previous)?;
        previous = row.phase;
        let mut known = None;
        let check = match resident_rows {
            Some(res) if row.phase != Phase::Paused => {
                // Active row `a` is kept in place when its metadata row holds its resident
                // row already; then its list is not scanned (the entries the write copies
                // are checked by `check_in_place_entries`).
                let a = i - tally.paused as usize;
                let r = res.get(i).copied().unwrap_or(NO_ROW);
                let keep = state
                    .meta_src
                    .get(a)
                    .is_some_and(|&src| src == r && r != NO_ROW);
                if let Some(flag) = state.in_place.get_mut(a) {
                    *flag = keep;
                }
                if keep {
                    // The blocks its tokens landed in at the last step were checked then;
                    // changed entries are checked by `check_in_place_entries`.
                    let dirty = state.block_table_dirty.get(a).copied().unwrap_or(u32::MAX);
                    if row.blocks.len() >= dirty as usize {
                        known = state.needed.get(a).copied();
                        // The entries it grew into are copied: check them.
                        if let Some(grown) = row.blocks.get(dirty as usize..) {
                            check_block_list(i, grown, limits, BlockCheck::Full).map_err(|e| {
                                match e {
                                    StepError::BlockOutOfRange {
                                        row,
                                        index,
                                        id,
                                        limit,
                                    } => StepError::BlockOutOfRange {
                                        row,
                                        index: index + dirty as usize,
                                        id,
                                        limit,
                                    },
                                    other => other,
                                }
                            })?;
                        }
                    }
                    BlockCheck::Needed
                } else {
                    BlockCheck::Full
                }
            }
            Some(_) => BlockCheck::Full,
            None => check,
        };
        let holes = check_block_list(i, row.blocks, limits, check)?;
        tally.holes |= holes;
        if limits.has_mamba && row.mamba_slot != -1 {
            state.claim_slot(i, row.mamba_slot, limits.r)?;
        }
        match row.phase {
            Phase::Paused => {
                tally.paused += 1;
                continue;
            }
            Phase::Decode => tally.decode += 1,
            Phase::Prefill => tally.prefill += 1,
        }
        tally.tokens += u64::from(check_active_row(d, limits, i, row, holes, known)?);
    }
    Ok(tally)
}

/// Rows come paused, then decode, then prefill.
#[inline]
fn check_phase_order(i: usize, phase: Phase, previous: Phase) -> Result<(), StepError> {
    let rank = |p: Phase| match p {
        Phase::Paused => 0,
        Phase::Decode => 1,
        Phase::Prefill => 2,
    };
    if rank(phase) < rank(previous) {
        return Err(StepError::PhaseOrder {
            row: i,
            phase: phase.as_str(),
            previous: previous.as_str(),
        });
    }
    Ok(())
}

/// A row's block list fits the table and (with [`BlockCheck::Full`]) holds only ids in
/// `[-1, dummy)`. Returns whether it may hold a `-1` (always, when not scanned).
#[inline]
fn check_block_list(
    i: usize,
    blocks: &[i32],
    limits: &RowLimits,
    check: BlockCheck,
) -> Result<bool, StepError> {
    if blocks.len() > limits.block_table_width {
        return Err(StepError::TooManyBlocks {
            row: i,
            count: blocks.len(),
            limit: limits.block_table_width,
        });
    }
    let dummy = limits.dummy;
    match check {
        BlockCheck::Full => {
            // One branch-free scan of the row (vectorizes with SSE2 alone). Valid ids lie
            // in [-1, dummy): then `id - dummy` and `-2 - id` are both negative, so `all`
            // keeps its sign bit iff every id is valid; among valid ids only -1 is
            // negative, so `any` has its sign bit iff the row has a hole. The slow search
            // for the offending index runs only on failure.
            let (all, any) = blocks.iter().fold((-1i32, 0i32), |(all, any), &id| {
                (
                    all & id.wrapping_sub(dummy) & (-2i32).wrapping_sub(id),
                    any | id,
                )
            });
            if all >= 0 {
                let (index, &id) = blocks
                    .iter()
                    .enumerate()
                    .find(|&(_, &id)| id < -1 || id >= dummy)
                    .unwrap_or((0, &-1));
                return Err(StepError::BlockOutOfRange {
                    row: i,
                    index,
                    id,
                    limit: dummy,
                });
            }
            Ok(any < 0)
        }
        // Unscanned: assume holes, so the needed entries are checked one by one.
        BlockCheck::Needed => Ok(true),
    }
}

/// The checks of an active row: its query length, its sequence length, the blocks its
/// tokens land in and its Mamba slot. Returns its query length.
#[inline]
fn check_active_row<D: Dims>(
    d: &D,
    limits: &RowLimits,
    i: usize,
    row: &RequestRow<'_>,
    holes: bool,
    known: Option<[u32; 2]>,
) -> Result<u32, StepError> {
    let q = row.query_length;
    if q == 0 {
        return Err(StepError::ZeroQueryLength { row: i });
    }
    if row.phase == Phase::Decode && q != limits.s1 {
        return Err(StepError::DecodeQueryLength {
            row: i,
            got: q,
            expected: limits.s1,
        });
    }
    let end = u64::from(row.kv_offset) + u64::from(q);
    let limit = if row.phase == Phase::Decode {
        limits.decode_max
    } else {
        limits.max_seq
    };
    if end > limit as u64 {
        return Err(StepError::SequenceTooLong {
            row: i,
            kv_offset: row.kv_offset,
            query_length: q,
            limit,
            bound: kv_bound(d, row.phase),
        });
    }
    // `end <= limit`, a usize.
    // Blocks inside the range checked at the last step (a row kept in place) are known.
    let first = (row.kv_offset as usize >> limits.shift) as u32;
    let last = ((end as usize - 1) >> limits.shift) as u32;
    if !known.is_some_and(|[lo, hi]| lo <= first && last <= hi) {
        check_needed_blocks(limits, i, row, end as usize, holes)?;
    }
    if limits.has_mamba && row.mamba_slot == -1 {
        return Err(StepError::MissingMambaSlot { row: i });
    }
    Ok(q)
}

/// Every block the row's positions `[kv_offset, end)` land in is present and valid. Fast
/// path: a row without `-1` (and scanned) needs only its length checked.
#[inline]
fn check_needed_blocks(
    limits: &RowLimits,
    i: usize,
    row: &RequestRow<'_>,
    end: usize,
    holes: bool,
) -> Result<(), StepError> {
    let first = row.kv_offset as usize >> limits.shift;
    let last = (end - 1) >> limits.shift;
    let scan_from = if holes {
        first
    } else {
        last.min(row.blocks.len()).max(first)
    };
    for j in scan_from..=last {
        let id = row.blocks.get(j).copied();
        if let Some(id) = id
            && (id < -1 || id >= limits.dummy)
        {
            return Err(StepError::BlockOutOfRange {
                row: i,
                index: j,
                id,
                limit: limits.dummy,
            });
        }
        if id.is_none_or(|id| id == -1) {
            let position = (j * limits.block_size).max(row.kv_offset as usize) as u32;
            return Err(StepError::MissingBlock {
                row: i,
                position,
                index: j,
                count: row.blocks.len(),
            });
        }
    }
    Ok(())
}

/// The checks of the step as a whole: its token count, and the lengths of its token ids
/// and intermediate offsets.
#[inline]
fn check_step<D: Dims>(d: &D, input: &StepInput<'_>, tally: &Tally) -> Result<(), StepError> {
    let tokens = tally.tokens;
    if tokens > d.max_tokens() as u64 {
        return Err(StepError::TooManyTokens {
            tokens,
            limit: d.max_tokens(),
        });
    }
    if let Some(ids) = input.token_ids
        && ids.len() as u64 != tokens
    {
        return Err(StepError::TokenIdsLength {
            got: ids.len(),
            expected: tokens as usize,
        });
    }
    if let Some(inter) = input.intermediate {
        check_intermediate(d, input.rows, inter, tally)?;
    }
    Ok(())
}

/// One entry of intermediate offsets per prefill row (none without Mamba), each offset
/// inside its row's chunk, and at most `Kmax` in all.
fn check_intermediate<D: Dims>(
    d: &D,
    rows: &[RequestRow<'_>],
    inter: &[crate::step::IntermediateOffsets],
    tally: &Tally,
) -> Result<(), StepError> {
    let expected = if d.has_mamba() {
        tally.prefill as usize
    } else {
        0
    };
    if inter.len() != expected {
        return Err(StepError::IntermediateLength {
            got: inter.len(),
            expected,
        });
    }
    let first_prefill = (tally.paused + tally.decode) as usize;
    let mut total = 0usize;
    for (f, io) in inter.iter().enumerate() {
        let row = first_prefill + f;
        let q = rows.get(row).map_or(0, |r| r.query_length);
        if io.count > 3 {
            return Err(StepError::IntermediateOffset {
                row,
                offset: u32::from(io.count),
                query_length: q,
                count: io.count,
            });
        }
        for &off in io.offsets.iter().take(usize::from(io.count)) {
            if off == 0 || off >= q {
                return Err(StepError::IntermediateOffset {
                    row,
                    offset: off,
                    query_length: q,
                    count: io.count,
                });
            }
        }
        total += usize::from(io.count);
    }
    if total > d.max_intermediate() {
        return Err(StepError::TooManyIntermediates {
            count: total,
            limit: d.max_intermediate(),
        });
    }
    Ok(())
}

/// The step's real, padded and attention shapes and its bucket: the step's own match, or
/// the group's under an expert-parallel agreement.
#[inline]
fn step_shapes<D: Dims>(
    d: &D,
    tally: &Tally,
    agreed: Option<&AgreedShape>,
) -> Result<StepInfo, StepError> {
    // `tokens <= max_tokens` (checked), a u32.
    let real = BatchDims::new(tally.tokens as u32, tally.prefill, tally.decode);
    let list = d.buckets();
    let has_mamba = d.has_mamba();
    let matched = match agreed {
        None => buckets::match_bucket(real, list, has_mamba),
        Some(g) if g.covers(real) => g.match_bucket(real, list, has_mamba),
        Some(g) => {
            return Err(StepError::NotAgreed {
                tokens: real.tokens,
                prefill: real.prefill,
                max_tokens: g.max_tokens,
                any_prefill: g.any_prefill,
            });
        }
    };
    let padded = matched.unwrap_or_else(|| {
        buckets::eager_padding(
            real,
            d.max_requests() as u32,
            d.max_tokens() as u32,
            d.tensor_parallel(),
            d.speculative_tokens() as u32,
        )
    });
    let bucket = matched.and_then(|m| list.iter().position(|b| *b == m).map(|i| i as u32));
    Ok(StepInfo {
        paused: tally.paused,
        real,
        padded,
        attn: buckets::attention_dims(real, matched),
        bucket,
        ..StepInfo::default()
    })
}
/// What sets the largest `kv_offset + query_length` of a row in `phase` (see
/// [`Dims::decode_kv_limit`]), for [`StepError::SequenceTooLong`].
fn kv_bound<D: Dims>(d: &D, phase: Phase) -> &'static str {
    if phase != Phase::Decode || d.speculative_tokens() == 0 {
        "max_seq_len"
    } else if d.decode_kv_limit() < d.max_seq_len().saturating_add(d.speculative_tokens()) {
        "block_table_width * block_size"
    } else {
        "max_seq_len + speculative_tokens"
    }
}

/// Writes every field of a planned step into `bytes` (the layout's coalesced buffer) and
/// returns the step's info. Cannot fail on a step: the plan was checked against the same
/// layout and state, and it holds the input it checked.
///
/// # Errors
///
/// [`StepError::Buffer`] when `bytes` does not fit the layout (too short or not 8-byte
/// aligned); then nothing is written and the plan and its state are unchanged.
#[allow(
    clippy::indexing_slicing,
    reason = "every index is bounded by a length or capacity that the plan checked against \
              the plan's own layout (rows, blocks, tokens, padded shape), the state sized \
              for that layout (FillState::check_fits), or the buffer carved from it"
)]
pub fn write_step<D: Dims>(
    plan: &mut StepPlan<'_, D>,
    bytes: &mut [u8],
) -> Result<StepInfo, StepError> {
    let d = plan.dims;
    let input = plan.input;
    let state = &mut *plan.state;
    let mut v = Views::carve(d, bytes)?;
    let mut info = plan.info;
    let n = plan.active;
    let paused = info.paused as usize;
    let active = &input.rows[paused..paused + n];
    let padded = info.padded;
    let np = padded.requests() as usize;
    let tp_tokens = padded.tokens as usize;
    let n_real = info.real.tokens as usize;
    let bs = d.block_size();
    let shift = bs.trailing_zeros();
    let mask = bs - 1;
    let dummy = d.dummy_block();
    let nkv = d.block_table_width();
    let s1 = d.speculative_tokens() as u32 + 1;

    // §5 token arrays, and §4 per-request arrays, in one pass over the active rows.
    let mut t = 0usize;
    let mut cu_q = 0i32;
    let mut cu_kv = 0i32;
    let mut max_q = 0u32;
    let mut max_k = 0u32;
    v.mha_cu_query_seq_lengths[0] = 0;
    v.mha_cu_kv_seq_lengths[0] = 0;
    // A decode-only step of the shape written last (paused rows, real and padded shape):
    // every field that depends only on the shape (query lengths, phases, request indices
    // of the tokens, cumulative query lengths, token and request padding) holds its value
    // already; only what a row's position changes is written.
    let shape = (info.paused, info.real, info.padded);
    let same_shape = plan.resident && info.real.prefill == 0 && state.last_shape == Some(shape);
    if same_shape && s1 == 1 {
        // One token per row (s = 0): a tight loop over slices of exactly `n` entries.
        let pos = &mut v.token_to_pos_ids[..n];
        let pir = &mut v.token_to_position_in_request[..n];
        let bidx = &mut v.token_to_block_idx[..n];
        let local = &mut v.token_to_local_position_within_kv_block[..n];
        let kv_off = &mut v.request_kv_length_offsets[..n];
        let kv_len = &mut v.mha_kv_seq_lengths[..n];
        let cu = &mut v.mha_cu_kv_seq_lengths[1..n + 1];
        let temp = &mut v.temperature[..n];
        let top_k = &mut v.top_k[..n];
        let top_p = &mut v.top_p[..n];
        let in_place = &state.in_place[..n];
        let dirty = &mut state.block_table_dirty[..n];
        let needed = &mut state.needed[..n];
        let rows = &active[..n];
        for a in 0..n {
            let row = &rows[a];
            let kv = row.kv_offset as usize;
            let j = kv >> shift;
            // A row kept in place whose token stays in the block of the last step keeps
            // that block's id (a changed entry is written by `write_resident_rows`).
            if !(in_place[a] && j == kv_off[a] as usize >> shift) {
                bidx[a] = i64::from(row.blocks.get(j).copied().unwrap_or(dummy));
            }
            needed[a] = [j as u32, j as u32];
            pos[a] = kv as i64;
            pir[a] = kv as i32;
            local[a] = (kv & mask) as i32;
            let len = kv as u32 + 1;
            cu_kv += len as i32;
            max_k = max_k.max(len);
            kv_off[a] = kv as i32;
            kv_len[a] = len as i32;
            cu[a] = cu_kv;
            temp[a] = row.sampling.temperature;
            top_k[a] = row.sampling.top_k;
            top_p[a] = row.sampling.top_p;
            if !(in_place[a] && dirty[a] as usize == row.blocks.len()) {
                write_block_row(
                    &mut v.mha_block_table[a * nkv..(a + 1) * nkv],
                    row.blocks,
                    &mut dirty[a],
                    in_place[a],
                    plan.holes,
                    dummy,
                );
            }
        }
        t = n;
        cu_q = n as i32;
        max_q = if n > 0 { 1 } else { 0 };
    } else if same_shape {
        for (a, row) in active.iter().enumerate() {
            let q = row.query_length as usize;
            let kv = row.kv_offset as usize;
            state.needed[a] = [(kv >> shift) as u32, ((kv + q - 1) >> shift) as u32];
            if q == 1 {
                v.token_to_pos_ids[t] = kv as i64;
                v.token_to_position_in_request[t] = kv as i32;
                v.token_to_block_idx[t] = i64::from(row.blocks[kv >> shift]);
                v.token_to_local_position_within_kv_block[t] = (kv & mask) as i32;
            } else {
                write_tokens(
                    &mut v,
                    row.blocks,
                    t,
                    kv,
                    q,
                    (paused + a) as i32,
                    shift,
                    mask,
                );
            }
            t += q;
            let kv_len = (kv + q) as u32;
            cu_kv += kv_len as i32;
            max_k = max_k.max(kv_len);
            v.request_kv_length_offsets[a] = kv as i32;
            v.mha_kv_seq_lengths[a] = kv_len as i32;
            v.mha_cu_kv_seq_lengths[a + 1] = cu_kv;
            v.temperature[a] = row.sampling.temperature;
            v.top_k[a] = row.sampling.top_k;
            v.top_p[a] = row.sampling.top_p;
            write_block_row(
                &mut v.mha_block_table[a * nkv..(a + 1) * nkv],
                row.blocks,
                &mut state.block_table_dirty[a],
                state.in_place[a],
                plan.holes,
                dummy,
            );
        }
        cu_q = (n as u32 * s1) as i32;
        max_q = if n > 0 { s1 } else { 0 };
    }
    for (a, row) in active.iter().enumerate().filter(|_| !same_shape) {
        let q = row.query_length as usize;
        let kv = row.kv_offset as usize;
        state.needed[a] = [(kv >> shift) as u32, ((kv + q - 1) >> shift) as u32];
        let abs_row = (paused + a) as i32;
        if q == 1 {
            // A decode token (s = 0): plain stores beat setting up five slice loops.
            v.token_to_pos_ids[t] = kv as i64;
            v.token_to_position_in_request[t] = kv as i32;
            v.token_to_request_idx[t] = abs_row;
            v.token_to_block_idx[t] = i64::from(row.blocks[kv >> shift]);
            v.token_to_local_position_within_kv_block[t] = (kv & mask) as i32;
            t += 1;
        } else {
            write_tokens(&mut v, row.blocks, t, kv, q, abs_row, shift, mask);
            t += q;
        }
        let kv_len = (kv + q) as u32;
        cu_q += q as i32;
        cu_kv += kv_len as i32;
        max_q = max_q.max(q as u32);
        max_k = max_k.max(kv_len);
        let sampling = row.sampling;
        v.request_in_prefill_status[a] = i32::from(row.phase == Phase::Prefill);
        v.request_query_lengths[a] = q as i32;
        v.request_kv_length_offsets[a] = kv as i32;
        v.temperature[a] = sampling.temperature;
        v.top_k[a] = sampling.top_k;
        v.top_p[a] = sampling.top_p;
        v.active_request_last_token_idxs[a] = cu_q - 1;
        v.mha_query_lengths[a] = q as i32;
        v.mha_kv_seq_lengths[a] = kv_len as i32;
        v.mha_cu_query_seq_lengths[a + 1] = cu_q;
        v.mha_cu_kv_seq_lengths[a + 1] = cu_kv;
        write_block_row(
            &mut v.mha_block_table[a * nkv..(a + 1) * nkv],
            row.blocks,
            &mut state.block_table_dirty[a],
            plan.resident && state.in_place[a],
            plan.holes,
            dummy,
        );
    }
    if plan.resident {
        let one_token_rows = (same_shape && s1 == 1).then_some(shift);
        write_resident_rows(state, &input, &mut v, paused, n, nkv, dummy, one_token_rows);
    } else {
        state.meta_src[..state.src_len.max(n)].fill(NO_ROW);
        state.src_len = 0;
    }
    if let Some(ids) = input.token_ids {
        v.token_to_input_ids[..n_real].copy_from_slice(ids);
    }
    // Token padding [n_real, Tp). Megatron leaves pos ids and request idx stale there;
    // we write 0 so every backend produces the same bytes (docs/DESIGN.md).
    if !same_shape {
        write_padding(&mut v, n_real, tp_tokens, n, np, cu_q, dummy);
    }
    v.real_token_count[0] = info.real.tokens as i32;
    v.mha_cu_kv_seq_lengths[n + 1..np + 1].fill(cu_kv);
    // The guard after the last row (docs/SEMANTICS.md §9): rewritten every step, so a
    // tile read past the table's last column always finds dummy-block ids.
    v.mha_block_table[d.max_requests() * nkv..].fill(dummy);
    for a in n..np {
        let dirty = &mut state.block_table_dirty[a];
        if *dirty > 0 {
            v.mha_block_table[a * nkv..a * nkv + *dirty as usize].fill(dummy);
            *dirty = 0;
        }
    }
    state.last_shape = Some(shape);
    // §4 max_seqlen.
    if info.graphed() {
        info.max_seqlen_q = if padded.prefill == 0 {
            s1
        } else {
            padded.tokens.max(2)
        };
        info.max_seqlen_k = d.max_seq_len() as u32;
    } else if n > 0 {
        info.max_seqlen_q = max_q;
        info.max_seqlen_k = max_k;
    } else {
        info.max_seqlen_q = s1;
        info.max_seqlen_k = 1;
    }

    if d.has_mamba() {
        write_mamba(d, &input, &mut info, &mut v, active);
    }
    info.kv_pages = kv_pages(d, active);
    write_formats(d, &info, &mut v, active);
    Ok(info)
}

/// Token padding `[n_real, tp)` and request padding `[n, np)`: the values that depend on
/// the step's shape only (`cu_kv`'s padding excepted, written by the caller).
#[allow(
    clippy::indexing_slicing,
    reason = "the padded shape is bounded by the capacities of the fields, checked by the plan"
)]
fn write_padding(
    v: &mut Views<'_>,
    n_real: usize,
    tp: usize,
    n: usize,
    np: usize,
    cu_q: i32,
    dummy: i32,
) {
    v.token_to_input_ids[n_real..tp].fill(0);
    v.token_to_pos_ids[n_real..tp].fill(0);
    v.token_to_request_idx[n_real..tp].fill(0);
    v.token_to_position_in_request[n_real..tp].fill(0);
    v.token_to_block_idx[n_real..tp].fill(i64::from(dummy));
    v.token_to_local_position_within_kv_block[n_real..tp].fill(0);
    v.request_in_prefill_status[n..np].fill(0);
    v.request_query_lengths[n..np].fill(0);
    v.request_kv_length_offsets[n..np].fill(0);
    v.temperature[n..np].fill(Sampling::PAD.temperature);
    v.top_k[n..np].fill(Sampling::PAD.top_k);
    v.top_p[n..np].fill(Sampling::PAD.top_p);
    v.active_request_last_token_idxs[n..np].fill(0);
    v.mha_query_lengths[n..np].fill(0);
    v.mha_kv_seq_lengths[n..np].fill(0);
    v.mha_cu_query_seq_lengths[n + 1..np + 1].fill(cu_q);
}

/// One active row of the block table: the row's ids (`-1` as the dummy block), then the
/// dummy block up to what may be stale. A row kept in place writes only the entries it grew
/// into (the changed ones are written by [`write_resident_rows`]).
#[allow(
    clippy::indexing_slicing,
    reason = "the row's list fits the table (len <= nkv, checked by the plan) and dirty <= nkv"
)]
#[inline]
fn write_block_row(
    bt: &mut [i32],
    blocks: &[i32],
    dirty: &mut u32,
    in_place: bool,
    holes: bool,
    dummy: i32,
) {
    let len = blocks.len();
    if in_place {
        let prev = *dirty as usize;
        if len > prev {
            for (dst, &id) in bt[prev..len].iter_mut().zip(&blocks[prev..]) {
                *dst = if id == -1 { dummy } else { id };
            }
        }
    } else {
        bt[..len].copy_from_slice(blocks);
        if holes {
            for id in &mut bt[..len] {
                if *id == -1 {
                    *id = dummy;
                }
            }
        }
    }
    if (*dirty as usize) > len {
        bt[len..*dirty as usize].fill(dummy);
    }
    *dirty = len as u32;
}

/// The residency part of a residency-aware write: the changed entries of the rows kept in
/// place, and which resident row each metadata row now holds.
#[allow(
    clippy::indexing_slicing,
    reason = "rows n and metadata rows a < n <= R (the state was checked against the layout); \
              a change is applied only inside its row's list (index < len <= nkv)"
)]
#[allow(
    clippy::too_many_arguments,
    reason = "the write's own locals, passed rather than recomputed"
)]
fn write_resident_rows(
    state: &mut FillState,
    input: &StepInput<'_>,
    v: &mut Views<'_>,
    paused: usize,
    n: usize,
    nkv: usize,
    dummy: i32,
    one_token_rows: Option<u32>,
) {
    let Some(res) = input.residency else {
        return;
    };
    for c in res.changes {
        let Some(i) = state.step_row_of(c.resident_row) else {
            continue;
        };
        let Some(a) = i.checked_sub(paused).filter(|&a| a < n) else {
            continue;
        };
        let j = c.index as usize;
        if state.in_place[a]
            && let Some(&id) = input.rows[i].blocks.get(j)
        {
            let id = if id == -1 { dummy } else { id };
            v.mha_block_table[a * nkv + j] = id;
            // One token per row, written from the last step's block id: refresh it when
            // its block's entry changed.
            if let Some(shift) = one_token_rows
                && j == v.request_kv_length_offsets[a] as usize >> shift
            {
                v.token_to_block_idx[a] = i64::from(id);
            }
        }
    }
    state.meta_src[..n].copy_from_slice(&res.resident_rows[paused..paused + n]);
    if state.src_len > n {
        state.meta_src[n..state.src_len].fill(NO_ROW);
    }
    state.src_len = n;
}

/// `Σ ceil((kv_offset + q) / B)` over the real rows: their KV pages.
fn kv_pages<D: Dims>(d: &D, active: &[RequestRow<'_>]) -> u32 {
    let shift = d.block_size().trailing_zeros();
    active
        .iter()
        .map(|r| (r.kv_offset + r.query_length).div_ceil(1 << shift))
        .sum()
}

/// The fields of the layout's kernel formats (docs/CONSUMER-CONTRACT.md), from the
/// Megatron fields just written: FlashInfer's CSR arrays, vLLM's slot mapping and, in
/// Mamba layouts, vLLM's state indices, `has_initial_state` and conv program map.
#[allow(
    clippy::indexing_slicing,
    reason = "as in write_step: the padded shape is bounded by the capacities the plan \
              checked, a row's pages by its block-table row (ceil(kv_len / B) <= nkv), \
              the step's pages by R × nkv and its conv programs by floor(Tp / 8) + Fp"
)]
fn write_formats<D: Dims>(d: &D, info: &StepInfo, v: &mut Views<'_>, active: &[RequestRow<'_>]) {
    let f = d.facts();
    let n = active.len();
    let np = info.padded.requests() as usize;
    let nkv = d.block_table_width();
    let bs = d.block_size();
    if f.flashinfer {
        let mut cum = 0usize;
        v.flashinfer_paged_kv_indptr[0] = 0;
        for (a, row) in active.iter().enumerate() {
            let kv_len = (row.kv_offset + row.query_length) as usize;
            let pages = kv_len.div_ceil(bs);
            // The block table's row, holes already mapped to the dummy block.
            v.flashinfer_paged_kv_indices[cum..cum + pages]
                .copy_from_slice(&v.mha_block_table[a * nkv..a * nkv + pages]);
            cum += pages;
            v.flashinfer_paged_kv_indptr[a + 1] = cum as i32;
            v.flashinfer_paged_kv_last_page_len[a] = (kv_len - (pages - 1) * bs) as i32;
        }
        v.flashinfer_paged_kv_indptr[n + 1..np + 1].fill(cum as i32);
        // FlashInfer reads a last-page length of 0 as a full page: padding rows say 1.
        v.flashinfer_paged_kv_last_page_len[n..np].fill(1);
    }
    if !f.vllm {
        return;
    }
    let tp_tokens = info.padded.tokens as usize;
    let n_real = info.real.tokens as usize;
    for ((slot, &block), &local) in v.vllm_slot_mapping[..n_real]
        .iter_mut()
        .zip(&v.token_to_block_idx[..n_real])
        .zip(&v.token_to_local_position_within_kv_block[..n_real])
    {
        *slot = block * bs as i64 + i64::from(local);
    }
    v.vllm_slot_mapping[n_real..tp_tokens].fill(-1);
    if !f.has_mamba {
        return;
    }
    // The scratch slot: one past the request rows' slots (docs/CONSUMER-CONTRACT.md).
    let scratch = f.max_requests as i32;
    let (dp, fp) = (info.padded.decode as usize, info.padded.prefill as usize);
    let (dr, fr) = (info.attn.decode as usize, info.attn.prefill as usize);
    for (dst, row) in v.vllm_state_indices_decode[..dr].iter_mut().zip(active) {
        *dst = row.mamba_slot;
    }
    v.vllm_state_indices_decode[dr..dp].fill(scratch);
    if fp == 0 {
        return;
    }
    let prefill = &active[dr..dr + fr];
    for (f_i, row) in prefill.iter().enumerate() {
        v.vllm_state_indices_prefill[f_i] = row.mamba_slot;
        v.vllm_has_initial_state[f_i] = u8::from(row.kv_offset > 0);
    }
    v.vllm_state_indices_prefill[fr..fp].fill(scratch);
    v.vllm_has_initial_state[fr..fp].fill(0);
    let programs = tp_tokens / VLLM_CONV_BLOCK + fp;
    let mut k = 0usize;
    for (f_i, row) in prefill.iter().enumerate() {
        for c in 0..(row.query_length as usize).div_ceil(VLLM_CONV_BLOCK) {
            v.vllm_conv_batch_ptr[k] = f_i as i32;
            v.vllm_conv_token_chunk_offset[k] = c as i32;
            k += 1;
        }
    }
    v.vllm_conv_batch_ptr[k..programs].fill(-1);
    v.vllm_conv_token_chunk_offset[k..programs].fill(-1);
}

/// Token arrays of one row with `q` tokens starting at position `kv`, written from token
/// index `t`: whole-row slices first, so the per-token loops are bounds-check free and
/// vectorize.
#[allow(
    clippy::too_many_arguments,
    reason = "a hot inner helper: a struct of eight loose values would only add a copy"
)]
#[allow(
    clippy::indexing_slicing,
    reason = "t + q and the block runs stay inside the token capacity and the row's blocks, checked by plan_step"
)]
#[inline]
fn write_tokens(
    v: &mut Views<'_>,
    blocks: &[i32],
    t: usize,
    kv: usize,
    q: usize,
    abs_row: i32,
    shift: u32,
    mask: usize,
) {
    let end = kv + q;
    for (d, x) in v.token_to_pos_ids[t..t + q].iter_mut().zip(kv as i64..) {
        *d = x;
    }
    for (d, x) in v.token_to_position_in_request[t..t + q]
        .iter_mut()
        .zip(kv as i32..)
    {
        *d = x;
    }
    v.token_to_request_idx[t..t + q].fill(abs_row);
    let mut pos = kv;
    while pos < end {
        // One run of positions inside one block.
        let j = pos >> shift;
        let run = end.min((j + 1) << shift) - pos;
        let off = t + pos - kv;
        v.token_to_block_idx[off..off + run].fill(i64::from(blocks[j]));
        for (d, x) in v.token_to_local_position_within_kv_block[off..off + run]
            .iter_mut()
            .zip((pos & mask) as i32..)
        {
            *d = x;
        }
        pos += run;
    }
}

/// §6: the Mamba arrays.
#[allow(
    clippy::indexing_slicing,
    reason = "as in write_step: the padded shape and the chunk counts are bounded by the \
              capacities of the Mamba fields (C <= floor(T / cs) + R, K <= Kmax)"
)]
fn write_mamba<D: Dims>(
    d: &D,
    input: &StepInput<'_>,
    info: &mut StepInfo,
    v: &mut Views<'_>,
    active: &[crate::step::RequestRow<'_>],
) {
    let padded = info.padded;
    let dp = padded.decode as usize;
    let fp = padded.prefill as usize;
    let tp_tokens = padded.tokens as usize;
    let dr = info.attn.decode as usize;
    let fr = info.attn.prefill as usize;
    let q = &v.mha_cu_query_seq_lengths;
    let q_dr = q[dr];
    let prefill_tokens = (q[dr + fr] - q_dr) as usize;

    if dp > 0 {
        match &mut v.decode_indices {
            DecodeIdx::I64(x) => {
                for (dst, row) in x[..dr].iter_mut().zip(active) {
                    *dst = i64::from(row.mamba_slot);
                }
                x[dr..dp].fill(-1);
            }
            DecodeIdx::I32(x) => {
                for (dst, row) in x[..dr].iter_mut().zip(active) {
                    *dst = row.mamba_slot;
                }
                x[dr..dp].fill(-1);
            }
        }
    }
    if fp > 0 && dp > 0 {
        v.mamba_device_decode_prefill[0] = q_dr;
        v.mamba_device_decode_prefill[1] = prefill_tokens as i32;
    }
    if fp == 0 {
        info.real_prefill_tokens = 0;
        return;
    }
    for (f, row) in active[dr..dr + fr].iter().enumerate() {
        v.mamba_batch_indices_prefill[f] = row.mamba_slot;
    }
    v.mamba_batch_indices_prefill[fr..fp].fill(-1);

    // cu_seqlens, seq_idx, conv arrays over the prefill token sub-stream.
    v.mamba_cu_seqlens[0] = 0;
    for f in 0..fr {
        let st = (q[dr + f] - q_dr) as usize;
        let en = (q[dr + f + 1] - q_dr) as usize;
        v.mamba_cu_seqlens[f + 1] = en as i32;
        v.mamba_seq_idx[st..en].fill(f as i32);
        v.mamba_conv_seq_idx[st..en].fill(f as i32);
        v.mamba_conv_seq_start[st..en].fill(st as i32);
    }
    let l = prefill_tokens;
    v.mamba_cu_seqlens[fr + 1..fp + 1].fill(l as i32);
    v.mamba_seq_idx[l..tp_tokens].fill(-1);
    v.mamba_conv_seq_idx[l..tp_tokens].fill(0);
    v.mamba_conv_seq_start[l..tp_tokens].fill(0);

    // Chunks: each sequence restarts chunking; an empty (padded) sequence gets one empty chunk.
    let cs = d.chunk_size();
    let c = tp_tokens / cs + fp;
    v.mamba_cu_chunk_seqlens[0] = 0;
    let mut k = 0usize;
    for f in 0..fp {
        let st = v.mamba_cu_seqlens[f] as usize;
        let en = v.mamba_cu_seqlens[f + 1] as usize;
        let nf = (en - st).div_ceil(cs).max(1);
        for i in 0..nf {
            k += 1;
            v.mamba_cu_chunk_seqlens[k] = (st + (i + 1) * cs).min(en) as i32;
            v.mamba_seq_idx_for_varlen[k - 1] = f as i32;
        }
        v.mamba_last_chunk_indices[f] = (k - 1) as i32;
    }
    let last = v.mamba_cu_chunk_seqlens[k];
    v.mamba_cu_chunk_seqlens[k + 1..c + 1].fill(last);
    v.mamba_seq_idx_for_varlen[k..c].fill(0);

    // Intermediate-state extraction.
    let kk = (fp * 3).min(d.max_intermediate());
    let conv = d.conv_width() as i32;
    let mut emitted = 0usize;
    if let Some(inter) = input.intermediate {
        let mut cum = 0usize;
        for (f, io) in inter.iter().enumerate().take(fr) {
            let st = v.mamba_cu_seqlens[f];
            let len = (v.mamba_cu_seqlens[f + 1] - st) as usize;
            for &off in &io.offsets[..usize::from(io.count.min(3))] {
                v.mamba_intermediate_chunk_indices[emitted] = (cum + off as usize / cs) as i64 - 1;
                v.mamba_intermediate_abs_positions[emitted] = st + off as i32;
                emitted += 1;
            }
            cum += len.div_ceil(cs).max(1);
        }
    }
    v.mamba_intermediate_chunk_indices[emitted..kk].fill(0);
    v.mamba_intermediate_abs_positions[emitted..kk].fill(conv);
    v.mamba_intermediate_real_count[0] = emitted as i32;

    info.mamba_chunks = c as u32;
    info.intermediate_len = kk as u32;
    info.intermediate_count = emitted as u32;
    info.real_prefill_tokens = l as u32;
}

/// `mamba_batch_indices_decode` in its configured type.
pub(crate) enum DecodeIdx<'a> {
    I32(&'a mut [i32]),
    I64(&'a mut [i64]),
}

/// Mutable typed views of every field of one buffer.
pub(crate) struct Views<'a> {
    pub token_to_input_ids: &'a mut [i64],
    pub token_to_pos_ids: &'a mut [i64],
    pub token_to_block_idx: &'a mut [i64],
    pub token_to_local_position_within_kv_block: &'a mut [i32],
    pub token_to_request_idx: &'a mut [i32],
    pub token_to_position_in_request: &'a mut [i32],
    pub request_in_prefill_status: &'a mut [i32],
    pub request_query_lengths: &'a mut [i32],
    pub request_kv_length_offsets: &'a mut [i32],
    pub temperature: &'a mut [f32],
    pub top_k: &'a mut [i32],
    pub top_p: &'a mut [f32],
    pub active_request_last_token_idxs: &'a mut [i32],
    pub real_token_count: &'a mut [i32],
    pub mha_query_lengths: &'a mut [i32],
    pub mha_cu_query_seq_lengths: &'a mut [i32],
    pub mha_kv_seq_lengths: &'a mut [i32],
    pub mha_cu_kv_seq_lengths: &'a mut [i32],
    pub mha_block_table: &'a mut [i32],
    pub decode_indices: DecodeIdx<'a>,
    pub mamba_batch_indices_prefill: &'a mut [i32],
    pub mamba_seq_idx: &'a mut [i32],
    pub mamba_cu_seqlens: &'a mut [i32],
    pub mamba_cu_chunk_seqlens: &'a mut [i32],
    pub mamba_last_chunk_indices: &'a mut [i32],
    pub mamba_seq_idx_for_varlen: &'a mut [i32],
    pub mamba_conv_seq_idx: &'a mut [i32],
    pub mamba_conv_seq_start: &'a mut [i32],
    pub mamba_intermediate_chunk_indices: &'a mut [i64],
    pub mamba_intermediate_abs_positions: &'a mut [i32],
    pub mamba_intermediate_real_count: &'a mut [i32],
    pub mamba_device_decode_prefill: &'a mut [i32],
    pub flashinfer_paged_kv_indptr: &'a mut [i32],
    pub flashinfer_paged_kv_indices: &'a mut [i32],
    pub flashinfer_paged_kv_last_page_len: &'a mut [i32],
    pub vllm_slot_mapping: &'a mut [i64],
    pub vllm_state_indices_decode: &'a mut [i32],
    pub vllm_state_indices_prefill: &'a mut [i32],
    pub vllm_has_initial_state: &'a mut [u8],
    pub vllm_conv_batch_ptr: &'a mut [i32],
    pub vllm_conv_token_chunk_offset: &'a mut [i32],
}

/// Splits the next field off `rest` (skipping any alignment pad) as a typed slice.
fn take<'a, T: bytemuck::Pod>(
    rest: &mut &'a mut [u8],
    cursor: &mut usize,
    offset: usize,
    elems: usize,
) -> Option<&'a mut [T]> {
    let buf = std::mem::take(rest);
    let (_, buf) = buf.split_at_mut_checked(offset.checked_sub(*cursor)?)?;
    let (field, tail) = buf.split_at_mut_checked(elems * std::mem::size_of::<T>())?;
    *rest = tail;
    *cursor = offset + field.len();
    bytemuck::try_cast_slice_mut(field).ok()
}

impl<'a> Views<'a> {
    /// Carves `bytes` into the layout's fields. Fails only if the buffer is too small or
    /// misaligned; fields a layout lacks come out empty.
    pub(crate) fn carve<D: Dims>(d: &D, bytes: &'a mut [u8]) -> Result<Self, StepError> {
        let bad = |bytes: &[u8]| StepError::Buffer {
            got: bytes.len(),
            align: 1 << (bytes.as_ptr() as usize).trailing_zeros().min(3),
            expected: d.total_bytes(),
        };
        if bytes.len() < d.total_bytes() || !(bytes.as_ptr() as usize).is_multiple_of(8) {
            return Err(bad(bytes));
        }
        let err = StepError::Buffer {
            got: bytes.len(),
            align: 8,
            expected: d.total_bytes(),
        };
        let mut rest = bytes;
        let mut cursor = 0usize;
        macro_rules! next {
            ($f:ident) => {
                take(
                    &mut rest,
                    &mut cursor,
                    d.field_offset(Field::$f),
                    d.field_elems(Field::$f),
                )
                .ok_or_else(|| err.clone())?
            };
        }
        let token_to_input_ids = next!(TokenToInputIds);
        let token_to_pos_ids = next!(TokenToPosIds);
        let token_to_block_idx = next!(TokenToBlockIdx);
        let token_to_local_position_within_kv_block = next!(TokenToLocalPositionWithinKvBlock);
        let token_to_request_idx = next!(TokenToRequestIdx);
        let token_to_position_in_request = next!(TokenToPositionInRequest);
        let request_in_prefill_status = next!(RequestInPrefillStatus);
        let request_query_lengths = next!(RequestQueryLengths);
        let request_kv_length_offsets = next!(RequestKvLengthOffsets);
        let temperature = next!(Temperature);
        let top_k = next!(TopK);
        let top_p = next!(TopP);
        let active_request_last_token_idxs = next!(ActiveRequestLastTokenIdxs);
        let real_token_count = next!(RealTokenCount);
        let mha_query_lengths = next!(MhaQueryLengths);
        let mha_cu_query_seq_lengths = next!(MhaCuQuerySeqLengths);
        let mha_kv_seq_lengths = next!(MhaKvSeqLengths);
        let mha_cu_kv_seq_lengths = next!(MhaCuKvSeqLengths);
        let mha_block_table = next!(MhaBlockTable);
        let mut empty = Self {
            token_to_input_ids,
            token_to_pos_ids,
            token_to_block_idx,
            token_to_local_position_within_kv_block,
            token_to_request_idx,
            token_to_position_in_request,
            request_in_prefill_status,
            request_query_lengths,
            request_kv_length_offsets,
            temperature,
            top_k,
            top_p,
            active_request_last_token_idxs,
            real_token_count,
            mha_query_lengths,
            mha_cu_query_seq_lengths,
            mha_kv_seq_lengths,
            mha_cu_kv_seq_lengths,
            mha_block_table,
            decode_indices: DecodeIdx::I32(&mut []),
            mamba_batch_indices_prefill: &mut [],
            mamba_seq_idx: &mut [],
            mamba_cu_seqlens: &mut [],
            mamba_cu_chunk_seqlens: &mut [],
            mamba_last_chunk_indices: &mut [],
            mamba_seq_idx_for_varlen: &mut [],
            mamba_conv_seq_idx: &mut [],
            mamba_conv_seq_start: &mut [],
            mamba_intermediate_chunk_indices: &mut [],
            mamba_intermediate_abs_positions: &mut [],
            mamba_intermediate_real_count: &mut [],
            mamba_device_decode_prefill: &mut [],
            flashinfer_paged_kv_indptr: &mut [],
            flashinfer_paged_kv_indices: &mut [],
            flashinfer_paged_kv_last_page_len: &mut [],
            vllm_slot_mapping: &mut [],
            vllm_state_indices_decode: &mut [],
            vllm_state_indices_prefill: &mut [],
            vllm_has_initial_state: &mut [],
            vllm_conv_batch_ptr: &mut [],
            vllm_conv_token_chunk_offset: &mut [],
        };
        if d.has_mamba() {
            empty.decode_indices = if d.decode_index_i64() {
                DecodeIdx::I64(next!(MambaBatchIndicesDecode))
            } else {
                DecodeIdx::I32(next!(MambaBatchIndicesDecode))
            };
            empty.mamba_batch_indices_prefill = next!(MambaBatchIndicesPrefill);
            empty.mamba_seq_idx = next!(MambaSeqIdx);
            empty.mamba_cu_seqlens = next!(MambaCuSeqlens);
            empty.mamba_cu_chunk_seqlens = next!(MambaCuChunkSeqlens);
            empty.mamba_last_chunk_indices = next!(MambaLastChunkIndices);
            empty.mamba_seq_idx_for_varlen = next!(MambaSeqIdxForVarlen);
            empty.mamba_conv_seq_idx = next!(MambaConvSeqIdx);
            empty.mamba_conv_seq_start = next!(MambaConvSeqStart);
            empty.mamba_intermediate_chunk_indices = next!(MambaIntermediateChunkIndices);
            empty.mamba_intermediate_abs_positions = next!(MambaIntermediateAbsPositions);
            empty.mamba_intermediate_real_count = next!(MambaIntermediateRealCount);
            empty.mamba_device_decode_prefill = next!(MambaDeviceDecodePrefill);
        }
        let f = d.facts();
        if f.flashinfer {
            empty.flashinfer_paged_kv_indptr = next!(FlashinferPagedKvIndptr);
            empty.flashinfer_paged_kv_indices = next!(FlashinferPagedKvIndices);
            empty.flashinfer_paged_kv_last_page_len = next!(FlashinferPagedKvLastPageLen);
        }
        if f.vllm {
            empty.vllm_slot_mapping = next!(VllmSlotMapping);
            if f.has_mamba {
                empty.vllm_state_indices_decode = next!(VllmStateIndicesDecode);
                empty.vllm_state_indices_prefill = next!(VllmStateIndicesPrefill);
                empty.vllm_has_initial_state = next!(VllmHasInitialState);
                empty.vllm_conv_batch_ptr = next!(VllmConvBatchPtr);
                empty.vllm_conv_token_chunk_offset = next!(VllmConvTokenChunkOffset);
            }
        }
        Ok(empty)
    }

    fn zero_all(&mut self) {
        self.token_to_input_ids.fill(0);
        self.token_to_pos_ids.fill(0);
        self.token_to_block_idx.fill(0);
        self.token_to_local_position_within_kv_block.fill(0);
        self.token_to_request_idx.fill(0);
        self.token_to_position_in_request.fill(0);
        self.request_in_prefill_status.fill(0);
        self.request_query_lengths.fill(0);
        self.request_kv_length_offsets.fill(0);
        self.temperature.fill(0.0);
        self.top_k.fill(0);
        self.top_p.fill(0.0);
        self.active_request_last_token_idxs.fill(0);
        self.real_token_count.fill(0);
        self.mha_query_lengths.fill(0);
        self.mha_cu_query_seq_lengths.fill(0);
        self.mha_kv_seq_lengths.fill(0);
        self.mha_cu_kv_seq_lengths.fill(0);
        self.mha_block_table.fill(0);
        match &mut self.decode_indices {
            DecodeIdx::I32(x) => x.fill(0),
            DecodeIdx::I64(x) => x.fill(0),
        }
        self.mamba_batch_indices_prefill.fill(0);
        self.mamba_seq_idx.fill(0);
        self.mamba_cu_seqlens.fill(0);
        self.mamba_cu_chunk_seqlens.fill(0);
        self.mamba_last_chunk_indices.fill(0);
        self.mamba_seq_idx_for_varlen.fill(0);
        self.mamba_conv_seq_idx.fill(0);
        self.mamba_conv_seq_start.fill(0);
        self.mamba_intermediate_chunk_indices.fill(0);
        self.mamba_intermediate_abs_positions.fill(0);
        self.mamba_intermediate_real_count.fill(0);
        self.mamba_device_decode_prefill.fill(0);
        self.flashinfer_paged_kv_indptr.fill(0);
        self.flashinfer_paged_kv_indices.fill(0);
        self.flashinfer_paged_kv_last_page_len.fill(0);
        self.vllm_slot_mapping.fill(0);
        self.vllm_state_indices_decode.fill(0);
        self.vllm_state_indices_prefill.fill(0);
        self.vllm_has_initial_state.fill(0);
        self.vllm_conv_batch_ptr.fill(0);
        self.vllm_conv_token_chunk_offset.fill(0);
    }
}
