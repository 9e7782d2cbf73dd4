//! The scheduler: which live requests run each step, which wait, which are admitted.
//!
//! Per step, with a token budget (`max_tokens`, or less):
//!
//! 1. **Decode**, oldest request first: each decode request that fits the remaining budget
//!    (`s + 1` tokens) gets the KV blocks its positions `kv .. kv + s + 1` need. When the
//!    free blocks do not cover them it is *paused* (it keeps its blocks and Mamba slot and
//!    shows up as a paused row); a paused request is *resumed* as soon as the free blocks
//!    cover it again. Older requests are served first, so blocks running out pause the
//!    most recent requests first and resume the oldest paused first (Megatron's policy).
//! 2. **Chunked prefill continuation**, oldest first: a request part-way through its
//!    prompt gets `min(prompt left, budget left, positions its blocks plus the free blocks
//!    hold)` tokens; zero free positions pause it.
//! 3. **Admission**, first come first served, only while no request is paused: the next
//!    waiting request gets a resident row and a Mamba slot and a first chunk of
//!    `min(prompt, budget left, free positions)` tokens, where the free positions leave one
//!    block per live request aside (headroom for the running requests to grow into, so
//!    that a new prompt does not at once pause them). A request whose prompt is cut is the
//!    step's last row (Megatron keeps the one chunked request last) and ends admission.
//!
//! If nothing could run (every live request is waiting for blocks), the most recent live
//! requests are *evicted* until the oldest can run: their blocks and slot are released and
//! they go back to the front of the waiting queue to recompute (prompt plus the tokens
//! generated so far as the new prompt). Every request fits the pool on its own (checked at
//! configuration), so this always makes progress, and the oldest request always advances.
//!
//! **Bucket-aware chunking** (optional, [`Scheduler::set_bucket_chunking`]). The step's
//! last prefill row is scheduled last of all, after every other row is known. With the
//! step's real shape `(t, p, d)` padded to `t + g` tokens (its bucket, or eager padding),
//! the chunk is shortened by `δ` so the step lands exactly on a smaller bucket: the largest
//! bucket token count `t' = t − δ` such that `(t', p, d)` matches a bucket of exactly `t'`
//! tokens, with `1 ≤ δ < chunk` (the row keeps at least one token, so `p` and `d` do not
//! change) and `δ ≤ g` (no more tokens deferred than padding avoided). The `δ` prompt
//! tokens are not lost: the request continues from there next step. A chunk is never
//! grown: in this scheduler the last chunk is already as long as the prompt, the token
//! budget and the free KV blocks allow.

use std::collections::VecDeque;

use attention_layout_codegen::BatchDims;

use attention_layout::batch::{
    AsyncError, BatchError, BatchState, Finished, RequestHandle, RequestPhase,
};

use super::table::BucketTable;

/// A request waiting for admission (first arrival, or back after an eviction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// Arrival number of the original request.
    pub id: u64,
    /// Simulated arrival time.
    pub arrival: f64,
    /// Prompt tokens (after an eviction: the original prompt plus the tokens generated).
    pub prompt_len: u32,
    /// Output tokens still to generate.
    pub max_output: u32,
    /// Output tokens generated before evictions.
    pub generated_before: u32,
    /// Its conversation (the prompt's token ids, [`super::workload::prompt_tokens`]).
    pub conversation: u64,
}

/// Counters the scheduler keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedCounters {
    /// Requests admitted (re-admissions after an eviction included).
    pub admitted: u64,
    /// Running requests paused for lack of KV blocks.
    pub pauses: u64,
    /// Paused requests resumed.
    pub resumes: u64,
    /// Requests evicted (released to recompute).
    pub evictions: u64,
}

/// The engine-side state of the simulation: the batch state, the waiting queue and what
/// the scheduler knows about each live request.
#[derive(Debug)]
pub struct Scheduler {
    /// The request table.
    pub state: BatchState,
    /// Waiting requests, first come first.
    pub waiting: VecDeque<Pending>,
    /// Per resident row, the request living there.
    tags: Vec<Option<Pending>>,
    live: Vec<RequestHandle>,
    budget: u32,
    s1: u32,
    /// Counters.
    pub counters: SchedCounters,
    /// The bucket table, when chunks are sized to it.
    chunking: Option<BucketTable>,
    /// The step's latest prefill row, not yet scheduled: `(request, chunk)`.
    pending: Option<(RequestHandle, u32)>,
    /// Decode rows and prefill rows (pending included) scheduled this step.
    step_rows: (u32, u32),
    /// With prefix caching: the system prompt length the prompts' token ids start with
    /// (requests are admitted with their tokens).
    prompt_ids: Option<u32>,
}

impl Scheduler {
    /// A scheduler over `state` with `budget` tokens per step.
    pub fn new(state: BatchState, budget: u32) -> Self {
        let r = state.max_requests();
        let s1 = state.speculative_tokens().saturating_add(1);
        Self {
            state,
            waiting: VecDeque::new(),
            tags: vec![None; r],
            live: Vec::with_capacity(r),
            budget,
            s1,
            counters: SchedCounters::default(),
            chunking: None,
            pending: None,
            step_rows: (0, 0),
            prompt_ids: None,
        }
    }

    /// Admits requests with their prompt token ids (for a batch state with prefix
    /// caching), the first `system` of them the shared system prompt.
    pub fn set_prompt_ids(&mut self, system: Option<u32>) {
        self.prompt_ids = system;
    }

    /// Schedules a prefill chunk; with prefix caching a chunk the pool cannot take after
    /// all (the free-position estimate counts cached blocks that pinning a match makes
    /// unevictable) waits for a later step instead.
    fn schedule_chunk(&mut self, h: RequestHandle, chunk: u32) -> Result<(), BatchError> {
        match self.state.schedule_prefill(h, chunk) {
            Err(BatchError::OutOfBlocks { .. }) if self.prompt_ids.is_some() => Ok(()),
            r => r,
        }
    }

    /// Turns bucket-aware chunking on (with the layout's bucket table) or off.
    pub fn set_bucket_chunking(&mut self, table: Option<BucketTable>) {
        self.chunking = table;
    }

    /// The request living in a resident row.
    pub fn tag(&self, row: u32) -> Option<&Pending> {
        self.tags.get(row as usize).and_then(|t| t.as_ref())
    }

    /// Forgets the request of a row that finished, returning it.
    pub fn untag(&mut self, row: u32) -> Option<Pending> {
        self.tags.get_mut(row as usize).and_then(Option::take)
    }

    /// Whether any live request is paused.
    fn any_paused(&self) -> Result<bool, BatchError> {
        for h in self.state.live() {
            if self.state.info(h)?.paused {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Free KV positions: free blocks, less those the pending prefill row will take, times
    /// the block size.
    fn free_positions(&self) -> u64 {
        let reserved = self
            .pending
            .map_or(0, |(h, q)| self.state.blocks_needed(h, q).unwrap_or(0));
        (self.state.kv_available() as u64).saturating_sub(u64::from(reserved))
            * self.state.block_size() as u64
    }

    /// Schedules the pending prefill row, if any, with its chunk as planned.
    fn flush_pending(&mut self) -> Result<(), BatchError> {
        if let Some((h, chunk)) = self.pending.take() {
            self.schedule_chunk(h, chunk)?;
        }
        Ok(())
    }

    /// Plans a prefill row; the previous pending one is scheduled first (it is not the
    /// step's last).
    fn defer_prefill(&mut self, h: RequestHandle, chunk: u32) -> Result<(), BatchError> {
        self.flush_pending()?;
        self.pending = Some((h, chunk));
        self.step_rows.1 += 1;
        Ok(())
    }

    /// Schedules the step's last prefill row, its chunk sized to the bucket table when
    /// bucket-aware chunking is on (see the module docs).
    fn finish_prefill(&mut self) -> Result<(), BatchError> {
        let Some((h, chunk)) = self.pending.take() else {
            return Ok(());
        };
        let chunk = match &self.chunking {
            Some(table) => {
                let (d, p) = self.step_rows;
                let t = self.state.scheduled_tokens() + u64::from(chunk);
                let t = u32::try_from(t).unwrap_or(u32::MAX);
                chunk - bucket_shortening(table, BatchDims::new(t, p, d), chunk)
            }
            None => chunk,
        };
        self.schedule_chunk(h, chunk)
    }

    /// Schedules one step. Returns the tokens scheduled (0 only when nothing is live or
    /// waiting).
    pub fn schedule(&mut self) -> Result<u64, BatchError> {
        self.schedule_once()?;
        if self.state.scheduled_tokens() == 0 && self.state.live_count() > 0 {
            self.evict_until_oldest_runs()?;
            self.schedule_once()?;
        }
        Ok(self.state.scheduled_tokens())
    }

    fn schedule_once(&mut self) -> Result<(), BatchError> {
        self.pending = None;
        self.step_rows = (0, 0);
        self.prefill_and_decode()?;
        self.finish_prefill()
    }

    fn prefill_and_decode(&mut self) -> Result<(), BatchError> {
        // Rows a prepared step scheduled already (`resolve_prepared`) keep their place and
        // their share of the budget.
        let mut budget = self
            .budget
            .saturating_sub(u32::try_from(self.state.scheduled_tokens()).unwrap_or(u32::MAX));
        self.live.clear();
        self.live.extend(self.state.live());

        // 1. Decode, oldest first.
        for i in 0..self.live.len() {
            let Some(&h) = self.live.get(i) else { break };
            let info = self.state.info(h)?;
            if info.scheduled > 0 {
                self.step_rows.0 += u32::from(info.phase == RequestPhase::Decode);
                continue;
            }
            if info.phase != RequestPhase::Decode || budget < self.s1 {
                continue;
            }
            let need = self.state.blocks_needed(h, self.s1)?;
            if need == 0 || need as usize <= self.state.kv_available() {
                if self.state.resume(h)? {
                    self.counters.resumes += 1;
                }
                self.state.schedule_decode(h)?;
                self.step_rows.0 += 1;
                budget -= self.s1;
            } else if self.state.pause(h)? {
                self.counters.pauses += 1;
            }
        }

        // 2. Chunked prefill continuation, oldest first.
        for i in 0..self.live.len() {
            let Some(&h) = self.live.get(i) else { break };
            let info = self.state.info(h)?;
            if info.phase != RequestPhase::Prefill || budget == 0 {
                continue;
            }
            let held = u64::from(info.blocks) * self.state.block_size() as u64;
            let room = (held + self.free_positions()).saturating_sub(u64::from(info.kv_offset));
            let left = info.prompt_len.saturating_sub(info.prompt_done);
            let chunk = u64::from(left).min(u64::from(budget)).min(room) as u32;
            if chunk == 0 {
                if self.state.pause(h)? {
                    self.counters.pauses += 1;
                }
                continue;
            }
            if self.state.resume(h)? {
                self.counters.resumes += 1;
            }
            self.defer_prefill(h, chunk)?;
            budget -= chunk;
        }

        // 3. Admission, first come first served, while nothing is paused.
        if self.any_paused()? {
            return Ok(());
        }
        while budget > 0 && self.state.can_admit() {
            let Some(&p) = self.waiting.front() else {
                break;
            };
            let headroom = self.state.live_count() as u64 * self.state.block_size() as u64;
            let chunk = u64::from(p.prompt_len)
                .min(u64::from(budget))
                .min(self.free_positions().saturating_sub(headroom)) as u32;
            if chunk == 0 {
                break;
            }
            let h = match self.prompt_ids {
                Some(system) => self.state.admit_prompt(
                    &super::workload::prompt_tokens(system, p.conversation, p.prompt_len),
                    p.max_output,
                )?,
                None => self.state.admit(p.prompt_len, p.max_output)?,
            };
            self.waiting.pop_front();
            if let Some(t) = self.tags.get_mut(h.row() as usize) {
                *t = Some(p);
            }
            self.counters.admitted += 1;
            self.defer_prefill(h, chunk)?;
            budget -= chunk;
            if chunk < p.prompt_len {
                break;
            }
        }
        Ok(())
    }

    /// The shortening bucket-aware chunking would give the last prefill chunk of a step of
    /// real shape `real` (0: none). Exposed for tests.
    pub fn shortening(table: &BucketTable, real: BatchDims, chunk: u32) -> u32 {
        bucket_shortening(table, real, chunk)
    }

    /// Commits the built step (see [`BatchState::commit_step`]); `draw()` gives the
    /// accepted draft tokens of each decode row. Returns the requests completed, their
    /// output tokens (before evictions included) and the accepted drafts drawn.
    pub fn commit(&mut self, mut draw: impl FnMut() -> u32) -> Result<(u64, u64, u64), BatchError> {
        let mut accepted = 0u64;
        let finished = self.state.commit_step(|_| {
            let a = draw();
            accepted += u64::from(a);
            a
        })?;
        let (completed, tokens) = completions(&mut self.tags, finished);
        Ok((completed, tokens, accepted))
    }

    /// Ends a step that [`BatchState::prepare`] prepared, as an async-scheduling engine
    /// does once the forward pass is done: commits the sampled tokens (placeholders: the
    /// simulator has no model) and resolves with every row still active; rows that reached
    /// their output length finish there. Returns the requests completed, their output
    /// tokens and the draft tokens accepted (all of them: a prepared step advances every
    /// row by `s + 1`).
    pub fn resolve_prepared(&mut self, rows: usize) -> Result<(u64, u64, u64), AsyncError> {
        let s = self.s1 - 1;
        let sampled = vec![0i64; rows];
        let drafts = vec![0i64; rows * s as usize];
        self.state.commit_sampled(&sampled, &drafts)?;
        let mask = vec![true; rows];
        let finished = self.state.resolve(&mask)?;
        let (completed, tokens) = completions(&mut self.tags, finished);
        Ok((completed, tokens, rows as u64 * u64::from(s)))
    }

    /// Evicts the most recent live requests until the oldest one can run.
    fn evict_until_oldest_runs(&mut self) -> Result<(), BatchError> {
        loop {
            let Some(oldest) = self.state.live().next() else {
                return Ok(());
            };
            let Some(newest) = self.state.live().last() else {
                return Ok(());
            };
            if oldest == newest {
                return Ok(());
            }
            let info = self.state.info(oldest)?;
            let q = match info.phase {
                RequestPhase::Decode => self.s1,
                RequestPhase::Prefill => 1,
            };
            if self.state.blocks_needed(oldest, q)? as usize <= self.state.kv_available() {
                return Ok(());
            }
            let gone = self.state.release(newest)?;
            self.counters.evictions += 1;
            if let Some(p) = self.untag(newest.row()) {
                // Recompute: the prompt plus what was generated becomes the new prompt.
                self.waiting.push_front(Pending {
                    prompt_len: p.prompt_len + gone.generated,
                    max_output: p.max_output.saturating_sub(gone.generated).max(1),
                    generated_before: p.generated_before + gone.generated,
                    ..p
                });
            }
        }
    }
}

/// How many tokens to take off a step's last prefill chunk of `chunk` tokens so that the
/// step, of real shape `real`, lands exactly on a bucket (see the module docs); 0 when no
/// bucket is reached that way or the deferral would exceed the padding it avoids.
fn bucket_shortening(table: &BucketTable, real: BatchDims, chunk: u32) -> u32 {
    let (padded, _) = table.pad(real);
    let gap = padded.tokens.saturating_sub(real.tokens);
    if gap == 0 || chunk <= 1 {
        return 0;
    }
    // Bucket token counts in [t - gap, t) and above t - chunk, largest first.
    let lowest = real
        .tokens
        .saturating_sub(gap)
        .max(real.tokens.saturating_sub(chunk - 1));
    let below = table.buckets().partition_point(|b| b.tokens < lowest);
    let end = table.buckets().partition_point(|b| b.tokens < real.tokens);
    let candidates = table.buckets().get(below..end).unwrap_or_default();
    candidates
        .iter()
        .rev()
        .map(|b| b.tokens)
        .find(|&t| {
            table
                .matched(BatchDims::new(t, real.prefill, real.decode))
                .is_some_and(|m| m.tokens == t)
        })
        .map_or(0, |t| real.tokens - t)
}

/// The requests among `finished` that the simulator tracks (their tags are taken) and
/// their output tokens, evictions' earlier tokens included.
fn completions(tags: &mut [Option<Pending>], finished: &[Finished]) -> (u64, u64) {
    let (mut completed, mut tokens) = (0u64, 0u64);
    for f in finished {
        if let Some(p) = tags.get_mut(f.handle.row() as usize).and_then(Option::take) {
            completed += 1;
            tokens += u64::from(p.generated_before + f.generated);
        }
    }
    (completed, tokens)
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
    use attention_layout::dims::RuntimeDims;
    use attention_layout_codegen::{Geometry, LayoutSpec};

    /// Hybrid (strict), R = 8, T = 64: buckets (8, 0, 8), (16, 2, 6), (32, 2, 6),
    /// (64, 2, 6) and (64, 4, 4).
    fn table() -> BucketTable {
        let spec = LayoutSpec::from_toml_str(
            r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 64
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
[graphs]
buckets = [[8, 0, 8], [16, 2, 6], [32, 2, 6], [64, 2, 6], [64, 4, 4]]
"#,
            "t.toml",
        )
        .unwrap();
        BucketTable::of(&RuntimeDims::new(Geometry::new(&spec).unwrap()))
    }

    fn b(t: u32, p: u32, d: u32) -> BatchDims {
        BatchDims::new(t, p, d)
    }

    #[test]
    fn the_last_chunk_shortens_to_the_largest_bucket_below() {
        let t = table();
        // 40 tokens pad to 64 (24 padded); 32 is a bucket of (2, 3): defer 8.
        assert_eq!(bucket_shortening(&t, b(40, 2, 3), 30), 8);
        // 20 tokens pad to 32 (12 padded); 16 hosts (2, 3) exactly: defer 4.
        assert_eq!(bucket_shortening(&t, b(20, 2, 3), 10), 4);
    }

    #[test]
    fn the_chunk_keeps_a_token_and_defers_no_more_than_the_padding() {
        let t = table();
        // A 4-token chunk cannot give up 4 tokens (the row would vanish).
        assert_eq!(bucket_shortening(&t, b(20, 2, 3), 4), 0);
        assert_eq!(bucket_shortening(&t, b(20, 2, 3), 5), 4);
        // 30 tokens pad to 32: deferring 14 to reach 16 costs more than 2 padded tokens.
        assert_eq!(bucket_shortening(&t, b(30, 2, 3), 29), 0);
        // Exactly on a bucket: nothing to gain.
        assert_eq!(bucket_shortening(&t, b(32, 2, 3), 20), 0);
    }

    #[test]
    fn only_buckets_that_host_the_step_exactly_count() {
        let t = table();
        // Three prefills: only (64, 4, 4) hosts them, strictly; 32 hosts (2, ·) only.
        assert_eq!(t.pad(b(40, 3, 3)).0, b(64, 4, 4));
        assert_eq!(bucket_shortening(&t, b(40, 3, 3), 30), 0);
        // Five decodes and one prefill: strict needs 6 decode slots at most, (16, 2, 6)
        // hosts it — the shortening lands on 16.
        assert_eq!(bucket_shortening(&t, b(20, 1, 5), 14), 4);
        // A step no bucket hosts (three prefills and five decodes) runs eagerly, padded to
        // 64 tokens; no shorter chunk changes its counts, so it stays as it is.
        assert_eq!(t.pad(b(40, 3, 5)), (b(64, 3, 5), false));
        assert_eq!(bucket_shortening(&t, b(40, 3, 5), 30), 0);
    }
}
