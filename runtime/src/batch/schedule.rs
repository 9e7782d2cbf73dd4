//! Megatron's async-scheduling contract on [`BatchState`]: prepare the next step while the
//! current one runs, commit the sampled tokens, resolve the finished rows.
//!
//! docs/ASYNC-SCHEDULING.md states the semantics and the order in which survivors fill the
//! holes of finished rows; this module is their implementation. In short:
//!
//! * [`prepare`](BatchState::prepare) (only for a built decode-only step without paused
//!   rows): every row advances its KV offset by its query length and is scheduled again
//!   with `s + 1` tokens; rows that cross into a new KV block get it, all or nothing.
//! * [`commit_sampled`](BatchState::commit_sampled): the sampled token and the `s` draft
//!   tokens of each row become the next step's input ids, in row order
//!   ([`input_ids`](BatchState::input_ids)).
//! * [`resolve`](BatchState::resolve): a mask of the rows still active; the others release
//!   their blocks and Mamba slots, the survivors fill the holes, prefill rows become decode
//!   rows.

use std::num::NonZeroU32;

use super::append_blocks;
use super::{BatchError, BatchState, Finished, RequestHandle, RequestPhase};

/// Why a prepare, commit or resolve was refused. A call that returns one changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsyncError {
    /// No step to work on: the schedule changed since the last
    /// [`with_step`](BatchState::with_step), or no step was built (and none is prepared).
    #[error(
        "{operation}: no step was built since the schedule last changed (call with_step first)"
    )]
    NotBuilt {
        /// `"prepare"`, `"commit_sampled"` or `"resolve"`.
        operation: &'static str,
    },
    /// [`prepare`](BatchState::prepare) while a prepared step awaits its
    /// [`resolve`](BatchState::resolve).
    #[error("prepare: the step prepared before is not resolved yet")]
    AlreadyPrepared,
    /// [`prepare`](BatchState::prepare) of a step with prefill rows.
    #[error("prepare: the step has {prefill} prefill rows; only decode-only steps can be prepared")]
    NotDecodeOnly {
        /// Prefill rows of the step.
        prefill: usize,
    },
    /// [`prepare`](BatchState::prepare) of a step with paused rows.
    #[error(
        "prepare: the step has {paused} paused rows (request {first} is one); only steps without paused rows can be prepared"
    )]
    PausedRows {
        /// Paused rows of the step.
        paused: usize,
        /// Admission number of the first of them.
        first: u64,
    },
    /// [`prepare`](BatchState::prepare) or [`resolve`](BatchState::resolve) on a state
    /// with prefix caching ([`BatchState::with_prefix_caching`]): they would allocate and
    /// release blocks outside the caching allocator's references and registrations, so they
    /// are refused; such an engine ends its steps with
    /// [`commit_step`](BatchState::commit_step).
    #[error("{operation}: not available with prefix caching (end the step with commit_step)")]
    PrefixCaching {
        /// `"prepare"` or `"resolve"`.
        operation: &'static str,
    },
    /// [`prepare`](BatchState::prepare) of a step with no row.
    #[error("prepare: the step has no decode row")]
    NoRows,
    /// The rows crossing into a new block need more blocks than the pool has free.
    #[error(
        "prepare: {rows} rows cross into a new KV block and need {needed} blocks, {available} free"
    )]
    OutOfBlocks {
        /// Rows that need a new block.
        rows: usize,
        /// Blocks they need.
        needed: usize,
        /// Blocks free.
        available: usize,
    },
    /// A prepared row would need a block past its block-table row (only with
    /// `s + 1 > block_size` and a corrupted table; never for requests
    /// [`check_request`](BatchState::check_request) admitted).
    #[error("prepare: request {id} would need {blocks} blocks, more than the {limit} of a row")]
    BlockTable {
        /// Admission number.
        id: u64,
        /// Blocks it would hold.
        blocks: u64,
        /// `block_table_width`.
        limit: usize,
    },
    /// [`commit_sampled`](BatchState::commit_sampled) with a sampled-token slice of the
    /// wrong length.
    #[error("commit_sampled: {got} sampled tokens for a step of {rows} rows (one per row)")]
    SampledLength {
        /// Tokens given.
        got: usize,
        /// Rows of the step.
        rows: usize,
    },
    /// [`commit_sampled`](BatchState::commit_sampled) with a draft-token slice of the wrong
    /// length.
    #[error(
        "commit_sampled: {got} draft tokens for a step of {rows} rows and speculative_tokens = {s} (expected {expected})"
    )]
    DraftLength {
        /// Tokens given.
        got: usize,
        /// Rows of the step.
        rows: usize,
        /// `s`.
        s: u32,
        /// `rows * s`.
        expected: usize,
    },
    /// [`resolve`](BatchState::resolve) with a mask of the wrong length.
    #[error("resolve: a mask of {got} entries for a step of {rows} active rows")]
    MaskLength {
        /// Entries given.
        got: usize,
        /// Active rows of the step.
        rows: usize,
    },
    /// The batch state refused an internal operation (a bug if it ever shows).
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// What [`prepare`](BatchState::prepare) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prepared {
    /// Rows of the step (the mask [`resolve`](BatchState::resolve) takes has one entry
    /// per row).
    pub rows: usize,
    /// Rows that crossed into a new block.
    pub crossed: usize,
    /// Blocks allocated.
    pub new_blocks: usize,
    /// Rows that reached their `max_output` with this step: not scheduled again, they
    /// finish at [`resolve`](BatchState::resolve) whatever the mask says.
    pub due: usize,
}

/// The async-scheduling part of the batch state.
#[derive(Debug, Clone, Default)]
pub(super) struct AsyncState {
    /// Whether a prepared step awaits its resolve.
    prepared: bool,
    /// The rows of the prepared step, in step order (the index space of the mask).
    ran: Vec<RequestHandle>,
    /// Per row of `ran`: whether it reached `max_output` with the prepared step.
    due: Vec<bool>,
    /// Whether `ids` holds committed tokens.
    committed: bool,
    /// `s + 1` input ids per row of `id_rows`.
    ids: Vec<i64>,
    /// The resident rows `ids` belong to, in step order.
    id_rows: Vec<u32>,
    /// Scratch: the step's rows in their new order during a resolve.
    order: Vec<RequestHandle>,
    /// Scratch: whether each row survives a resolve.
    alive: Vec<bool>,
    /// Scratch: the prepared rows that cross into a new block (their place in the step)
    /// and the blocks each needs.
    need: Vec<(u32, u32)>,
}

impl AsyncState {
    pub(super) fn with_capacity(rows: usize, s1: usize) -> Self {
        Self {
            ran: Vec::with_capacity(rows),
            due: Vec::with_capacity(rows),
            ids: Vec::with_capacity(rows.saturating_mul(s1)),
            id_rows: Vec::with_capacity(rows),
            order: Vec::with_capacity(rows),
            alive: Vec::with_capacity(rows),
            need: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    pub(super) fn clear(&mut self) {
        self.prepared = false;
        self.committed = false;
        self.ran.clear();
        self.due.clear();
        self.ids.clear();
        self.id_rows.clear();
    }

    pub(super) fn is_prepared(&self) -> bool {
        self.prepared
    }
}

impl BatchState {
    /// Live decode requests that are not scheduled (the paused rows of a step), and the
    /// admission number of the first of them (0 when none).
    pub(super) fn paused_decode_rows(&self) -> (usize, u64) {
        let mut paused = 0usize;
        let mut first = 0u64;
        for &row in &self.live {
            if let Some(e) = self.rows.get(row as usize).and_then(|e| e.as_ref())
                && e.phase == RequestPhase::Decode
                && e.scheduled.is_none()
            {
                if paused == 0 {
                    first = e.id;
                }
                paused += 1;
            }
        }
        (paused, first)
    }

    /// Whether [`prepare`](Self::prepare) would accept the current step, short of the
    /// block pool: a step built since the schedule last changed, no prepared step pending,
    /// decode rows only, no paused row (a live decode request not scheduled).
    ///
    /// # Errors
    ///
    /// The precondition it breaks: [`AsyncError::NotBuilt`], [`AsyncError::AlreadyPrepared`],
    /// [`AsyncError::NotDecodeOnly`], [`AsyncError::PausedRows`], [`AsyncError::NoRows`].
    pub fn can_prepare(&self) -> Result<(), AsyncError> {
        if self.prefix.is_some() {
            return Err(AsyncError::PrefixCaching {
                operation: "prepare",
            });
        }
        if self.sched.prepared {
            return Err(AsyncError::AlreadyPrepared);
        }
        if !self.built {
            return Err(AsyncError::NotBuilt {
                operation: "prepare",
            });
        }
        if !self.prefill_order.is_empty() {
            return Err(AsyncError::NotDecodeOnly {
                prefill: self.prefill_order.len(),
            });
        }
        // Decode rows only: when every live request is one of them (`decode_order` holds
        // distinct live rows) none is paused, without a look at each.
        let (paused, first) = if self.decode_order.len() == self.live.len() {
            debug_assert_eq!(self.paused_decode_rows(), (0, 0));
            (0, 0)
        } else {
            self.paused_decode_rows()
        };
        if paused > 0 {
            return Err(AsyncError::PausedRows { paused, first });
        }
        if self.decode_order.is_empty() {
            return Err(AsyncError::NoRows);
        }
        Ok(())
    }

    /// Megatron's `prepare_requests`: sets up the next step while the current one (built
    /// last, decode only, no paused rows) runs, assuming every row continues.
    ///
    /// Every row advances its KV offset by its query length (`s + 1`: the drafts count as
    /// accepted; a row whose drafts are rejected is the engine's to release or recompute)
    /// and is scheduled again with `s + 1` tokens, keeping its place in the step. A row
    /// whose next positions `kv_offset .. kv_offset + s + 1` reach past its blocks gets the
    /// blocks they need (exactly one when `s + 1 ≤ block_size`), all taken from the pool
    /// in one allocation and handed to the rows in step order; the residency changes list
    /// them. A row that reaches its `max_output` is not scheduled again and finishes at
    /// [`resolve`](Self::resolve).
    ///
    /// The step that ran is acknowledged as [`commit_step`](Self::commit_step) would: its
    /// residency changes are dropped (the backend applied them).
    ///
    /// # Errors
    ///
    /// Those of [`can_prepare`](Self::can_prepare), and [`AsyncError::OutOfBlocks`] when
    /// the pool cannot serve every crossing row. Nothing changes on error.
    pub fn prepare(&mut self) -> Result<Prepared, AsyncError> {
        self.can_prepare()?;
        let s1 = self.speculative_tokens.saturating_add(1);
        let bs = self.block_size as u64;
        // Pass 1, read only: what every row needs. Only the rows that cross into a new
        // block are listed (`need`: their place in the step and the blocks they need).
        let mut out = Prepared {
            rows: self.decode_order.len(),
            ..Prepared::default()
        };
        let width = self.block_table_width as u64;
        // Rows that will not be scheduled again: due, or (never) without an entry.
        let mut dropped = 0usize;
        // Whether every row ran with `q = s + 1` (then the next step, if every row
        // continues, advances this one: StepOrigin).
        let mut uniform = true;
        self.sched.need.clear();
        for (i, &row) in self.decode_order.iter().enumerate() {
            let Some(e) = self.rows.get(row as usize).and_then(|e| e.as_ref()) else {
                dropped += 1;
                continue;
            };
            let q = e.scheduled.map_or(0, NonZeroU32::get);
            uniform &= q == s1;
            let kv = u64::from(e.kv) + u64::from(q);
            let generated = e.generated.saturating_add(q).min(e.max_output);
            if generated >= e.max_output {
                out.due += 1;
                dropped += 1;
                continue;
            }
            let end = kv + u64::from(s1);
            let held = u64::from(e.blocks);
            // Within the blocks it holds (and those within its row): nothing to do, no
            // division (`ceil(end / B) ≤ held` iff `end ≤ held · B`).
            if held <= width && end <= held.saturating_mul(bs) {
                continue;
            }
            let blocks = end.div_ceil(bs);
            if blocks > width {
                return Err(AsyncError::BlockTable {
                    id: e.id,
                    blocks,
                    limit: self.block_table_width,
                });
            }
            let need = blocks.saturating_sub(held) as u32;
            if need > 0 {
                out.crossed += 1;
                out.new_blocks += need as usize;
                // `i < decode_order.len() ≤ max_requests ≤ u32::MAX` (checked in `new`).
                self.sched.need.push((i as u32, need));
            }
        }
        let available = self.kv.available();
        if out.new_blocks > available {
            return Err(AsyncError::OutOfBlocks {
                rows: out.crossed,
                needed: out.new_blocks,
                available,
            });
        }
        // Pass 2: nothing can fail from here on.
        self.changes.clear();
        self.finished.clear();
        self.sched.ran.clear();
        self.sched.due.clear();
        self.sched.committed = false;
        self.sched.ids.clear();
        self.sched.id_rows.clear();
        let ids: &[i32] = self.kv.allocate(out.new_blocks).unwrap_or(&[]);
        let mut cursor = 0usize;
        let mut crossing = self.sched.need.iter().copied().peekable();
        for (i, &row) in self.decode_order.iter().enumerate() {
            let Some(e) = self.rows.get_mut(row as usize).and_then(|x| x.as_mut()) else {
                continue;
            };
            let q = e.scheduled.map_or(0, NonZeroU32::get);
            e.kv += q;
            e.generated = e.generated.saturating_add(q).min(e.max_output);
            let due = e.generated >= e.max_output;
            e.scheduled = if due { None } else { NonZeroU32::new(s1) };
            self.sched.ran.push(RequestHandle { id: e.id, row });
            self.sched.due.push(due);
            let Some((_, need)) = crossing.next_if(|&(at, _)| at as usize == i) else {
                continue;
            };
            let take = ids.get(cursor..cursor + need as usize).unwrap_or(&[]);
            cursor += need as usize;
            append_blocks(
                &mut self.table,
                &mut self.changes,
                self.block_table_width,
                row,
                e.blocks,
                take.iter(),
            );
            e.blocks += take.len() as u32;
        }
        if dropped > 0 {
            let rows = &self.rows;
            self.decode_order.retain(|&r| {
                rows.get(r as usize)
                    .and_then(|e| e.as_ref())
                    .is_some_and(|e| e.scheduled.is_some())
            });
        }
        self.scheduled_tokens = self.decode_order.len() as u64 * u64::from(s1);
        self.built = false;
        self.advances = (uniform && dropped == 0).then_some(self.builds);
        self.sched.prepared = true;
        Ok(out)
    }

    /// Whether a prepared step awaits its [`resolve`](Self::resolve).
    pub fn is_prepared(&self) -> bool {
        self.sched.prepared
    }

    /// The active rows of the step that ran, in step order (the mask's index space):
    /// the prepared step's rows, else the built step's decode then prefill rows.
    fn ran_rows(&self, operation: &'static str) -> Result<usize, AsyncError> {
        if self.sched.prepared {
            Ok(self.sched.ran.len())
        } else if self.built {
            Ok(self.decode_order.len() + self.prefill_order.len())
        } else {
            Err(AsyncError::NotBuilt { operation })
        }
    }

    /// Megatron's `commit_sampled_tokens`: the tokens sampled from the step that ran become
    /// the next step's input ids. `sampled` has one token per active row of that step (in
    /// step order), `drafts` `s` per row (row by row); row `i`'s ids are `sampled[i]`, then
    /// `drafts[i·s .. (i+1)·s]`. They move with their rows in [`resolve`](Self::resolve)
    /// and are read with [`input_ids`](Self::input_ids).
    ///
    /// # Errors
    ///
    /// [`AsyncError::NotBuilt`] when no step is prepared or built,
    /// [`AsyncError::SampledLength`], [`AsyncError::DraftLength`]. Nothing changes on error.
    pub fn commit_sampled(&mut self, sampled: &[i64], drafts: &[i64]) -> Result<(), AsyncError> {
        let rows = self.ran_rows("commit_sampled")?;
        if sampled.len() != rows {
            return Err(AsyncError::SampledLength {
                got: sampled.len(),
                rows,
            });
        }
        let s = self.speculative_tokens;
        let expected = rows.saturating_mul(s as usize);
        if drafts.len() != expected {
            return Err(AsyncError::DraftLength {
                got: drafts.len(),
                rows,
                s,
                expected,
            });
        }
        self.sched.ids.clear();
        self.sched.id_rows.clear();
        if self.sched.prepared {
            self.sched
                .id_rows
                .extend(self.sched.ran.iter().map(|h| h.row));
        } else {
            self.sched.id_rows.extend_from_slice(&self.decode_order);
            self.sched.id_rows.extend_from_slice(&self.prefill_order);
        }
        let per = s as usize;
        if per == 0 {
            // No drafts: the ids are the sampled tokens.
            self.sched.ids.extend_from_slice(sampled);
        } else {
            for (i, &token) in sampled.iter().enumerate() {
                self.sched.ids.push(token);
                self.sched
                    .ids
                    .extend_from_slice(drafts.get(i * per..(i + 1) * per).unwrap_or(&[]));
            }
        }
        self.sched.committed = true;
        Ok(())
    }

    /// The committed input ids, `s + 1` per row of [`input_rows`](Self::input_rows), in
    /// that order: after [`resolve`](Self::resolve), the order of the next step's decode
    /// rows. `None` until [`commit_sampled`](Self::commit_sampled), and again after the
    /// next [`prepare`](Self::prepare) (a new step's tokens are not sampled yet).
    pub fn input_ids(&self) -> Option<&[i64]> {
        self.sched.committed.then_some(self.sched.ids.as_slice())
    }

    /// The resident rows [`input_ids`](Self::input_ids) belong to, in order.
    pub fn input_rows(&self) -> &[u32] {
        if self.sched.committed {
            &self.sched.id_rows
        } else {
            &[]
        }
    }

    /// [`resolve`](Self::resolve) of a prepared step in which every row continues: every
    /// mask entry `true`, no row due, every row still live. Then nothing finishes and no
    /// row moves, so the general pass reduces to this one (same state after). Returns
    /// `false`, having changed nothing, when the step is not like that.
    fn resolve_all_continue(&mut self, active: &[bool]) -> bool {
        let n = self.sched.ran.len();
        let all = active.len() == n
            && active.iter().all(|&a| a)
            && !self.sched.due.contains(&true)
            && self.sched.ran.iter().all(|&h| self.entry(h).is_ok());
        if !all {
            return false;
        }
        let s1 = self.speculative_tokens.saturating_add(1);
        self.finished.clear();
        // No row moves: the committed ids stay where they are.
        let ids_kept = self.sched.committed && self.sched.ids.len() == n * s1 as usize;
        let ran = std::mem::take(&mut self.sched.ran);
        self.settle(&ran, ids_kept, true);
        self.sched.ran = ran;
        self.sched.ran.clear();
        true
    }

    /// The end of every [`resolve`](Self::resolve): `survivors` (in the next step's
    /// order) become the next step's decode rows — scheduled already after a prepared
    /// step, scheduled here (where the pool allows) otherwise — and the committed ids
    /// follow them when `ids_kept` (they are in that order already), else are dropped.
    fn settle(&mut self, survivors: &[RequestHandle], ids_kept: bool, prepared: bool) {
        if ids_kept {
            self.sched.id_rows.clear();
            self.sched.id_rows.extend(survivors.iter().map(|h| h.row));
        } else {
            self.sched.committed = false;
            self.sched.ids.clear();
            self.sched.id_rows.clear();
        }
        self.decode_order.clear();
        if prepared {
            let s1 = self.speculative_tokens.saturating_add(1);
            self.decode_order.extend(survivors.iter().map(|h| h.row));
            self.scheduled_tokens =
                self.decode_order.len() as u64 * u64::from(s1) + self.prefill_tokens();
        } else {
            for h in survivors {
                let schedulable = self
                    .entry(*h)
                    .is_ok_and(|e| e.phase == RequestPhase::Decode && !e.paused);
                if schedulable {
                    // Out of blocks or tokens: it stays a paused row of the next step.
                    let _ = self.schedule_decode(*h);
                }
            }
        }
        self.sched.ran.clear();
        self.sched.due.clear();
        self.sched.prepared = false;
        self.built = false;
    }

    /// Tokens scheduled for the prefill rows.
    fn prefill_tokens(&self) -> u64 {
        self.prefill_order
            .iter()
            .filter_map(|&r| self.rows.get(r as usize).and_then(|e| e.as_ref()))
            .map(|e| u64::from(e.scheduled.map_or(0, NonZeroU32::get)))
            .sum::<u64>()
    }

    /// Megatron's `resolve_requests`: ends the step that ran (the prepared one, else the one
    /// built last). `active[i]` says whether active row `i` of that step (in step order,
    /// paused rows not counted) is still active after the forward pass.
    ///
    /// * A step that was not prepared is first advanced as
    ///   [`commit_step`](Self::commit_step) with every draft accepted would: prefill rows
    ///   take their chunk, and those whose prompt is complete become decode rows with
    ///   their first token; decode rows take `s + 1` tokens (capped at `max_output`).
    /// * Rows whose mask entry is `false`, and rows that reached `max_output`, finish:
    ///   their blocks go back to the allocator, their Mamba slot to the pool, their
    ///   resident row is freed and cleared in the residency changes. They are returned,
    ///   in step order.
    /// * The survivors keep their resident rows and fill the holes in Megatron's order
    ///   (docs/ASYNC-SCHEDULING.md): with `k` survivors, the survivors at step positions
    ///   `≥ k`, in increasing position, move to the holes at positions `< k`, in
    ///   increasing position; every other survivor keeps its position. Committed input
    ///   ids move with their rows.
    /// * The survivors in that order are the next step's decode rows: after a prepared
    ///   step they are scheduled already; otherwise each decode survivor is scheduled for
    ///   decode here, and one the pool (or the token budget) cannot serve stays
    ///   unscheduled, a paused row of the next step. A survivor whose prompt is not done
    ///   (a chunked prefill) is left for the engine to schedule.
    ///
    /// # Errors
    ///
    /// [`AsyncError::NotBuilt`] when no step is prepared or built, [`AsyncError::MaskLength`].
    /// Nothing changes on error.
    pub fn resolve(&mut self, active: &[bool]) -> Result<&[Finished], AsyncError> {
        if self.prefix.is_some() {
            return Err(AsyncError::PrefixCaching {
                operation: "resolve",
            });
        }
        let rows = self.ran_rows("resolve")?;
        if active.len() != rows {
            return Err(AsyncError::MaskLength {
                got: active.len(),
                rows,
            });
        }
        let prepared = self.sched.prepared;
        if prepared && self.resolve_all_continue(active) {
            // The next step is the prepared one, every row in place: it advances the
            // build before (`advances`, set by `prepare`, stays).
            return Ok(&self.finished);
        }
        self.advances = None;
        let s = self.speculative_tokens;
        let s1 = s.saturating_add(1);
        // The step's rows, in step order.
        let mut order = std::mem::take(&mut self.sched.order);
        order.clear();
        let mut due = std::mem::take(&mut self.sched.alive);
        due.clear();
        if prepared {
            order.extend_from_slice(&self.sched.ran);
            due.extend_from_slice(&self.sched.due);
        } else {
            // Acknowledge and advance the step, as commit_step does with every draft
            // accepted.
            self.changes.clear();
            for &row in self.decode_order.iter().chain(&self.prefill_order) {
                let Some(e) = self.rows.get_mut(row as usize).and_then(|x| x.as_mut()) else {
                    continue;
                };
                let q = e.scheduled.map_or(0, NonZeroU32::get);
                match e.phase {
                    RequestPhase::Decode => {
                        let left = e.max_output.saturating_sub(e.generated).saturating_sub(1);
                        let a = s.min(left);
                        e.kv += 1 + a;
                        e.generated += 1 + a;
                    }
                    RequestPhase::Prefill => {
                        e.kv += q;
                        e.prompt_done += q;
                        if e.prompt_done >= e.prompt_len {
                            e.phase = RequestPhase::Decode;
                            e.generated = 1;
                        }
                    }
                }
                e.scheduled = None;
                order.push(RequestHandle { id: e.id, row });
                due.push(e.generated >= e.max_output);
            }
            self.decode_order.clear();
            self.prefill_order.clear();
            self.scheduled_tokens = 0;
        }
        // Finish the rows that left.
        self.finished.clear();
        let mut result = Ok(());
        for (i, h) in order.iter().enumerate() {
            let keep =
                active.get(i).copied().unwrap_or(false) && !due.get(i).copied().unwrap_or(true);
            let live = self.entry(*h).ok().copied();
            if let Some(slot) = due.get_mut(i) {
                // From here on `due[i]` means "alive".
                *slot = keep && live.is_some();
            }
            if let (false, Some(e)) = (keep, live) {
                if e.scheduled.is_some() {
                    self.scheduled_tokens = self
                        .scheduled_tokens
                        .saturating_sub(u64::from(e.scheduled.map_or(0, NonZeroU32::get)));
                }
                if let Err(err) = self.finish(h.row, &e) {
                    result = Err(err);
                }
            }
        }
        let alive = due;
        // Fill the holes: survivors past the new count move, in order, into the holes
        // before it, in order.
        let k = alive.iter().filter(|&&a| a).count();
        let holes = (0..k).filter(|&i| !alive.get(i).copied().unwrap_or(true));
        let movers = (k..order.len()).filter(|&i| alive.get(i).copied().unwrap_or(false));
        let per = s1 as usize;
        let ids_moved = self.sched.committed && self.sched.ids.len() == order.len() * per;
        for (hole, mover) in holes.zip(movers) {
            if let Some(&h) = order.get(mover)
                && let Some(dst) = order.get_mut(hole)
            {
                *dst = h;
            }
            if ids_moved {
                self.sched
                    .ids
                    .copy_within(mover * per..(mover + 1) * per, hole * per);
            }
        }
        order.truncate(k);
        if ids_moved {
            self.sched.ids.truncate(k * per);
        }
        self.settle(&order, ids_moved, prepared);
        self.sched.order = order;
        self.sched.alive = alive;
        result?;
        Ok(&self.finished)
    }
}
