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

use std::collections::VecDeque;

use crate::batch::{BatchError, BatchState, RequestHandle, RequestPhase};

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
        }
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

    /// Free KV positions: free blocks times the block size.
    fn free_positions(&self) -> u64 {
        self.state.kv_pool().available() as u64 * self.state.block_size() as u64
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
        let mut budget = self.budget;
        self.live.clear();
        self.live.extend(self.state.live());

        // 1. Decode, oldest first.
        for i in 0..self.live.len() {
            let Some(&h) = self.live.get(i) else { break };
            let info = self.state.info(h)?;
            if info.phase != RequestPhase::Decode || budget < self.s1 {
                continue;
            }
            let need = self.state.blocks_needed(h, self.s1)?;
            if need as usize <= self.state.kv_pool().available() {
                if self.state.resume(h)? {
                    self.counters.resumes += 1;
                }
                self.state.schedule_decode(h)?;
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
            self.state.schedule_prefill(h, chunk)?;
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
            let h = self.state.admit(p.prompt_len, p.max_output)?;
            self.waiting.pop_front();
            if let Some(t) = self.tags.get_mut(h.row() as usize) {
                *t = Some(p);
            }
            self.counters.admitted += 1;
            self.state.schedule_prefill(h, chunk)?;
            budget -= chunk;
            if chunk < p.prompt_len {
                break;
            }
        }
        Ok(())
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
        let (mut completed, mut tokens) = (0u64, 0u64);
        for f in finished {
            if let Some(p) = self
                .tags
                .get_mut(f.handle.row() as usize)
                .and_then(Option::take)
            {
                completed += 1;
                tokens += u64::from(p.generated_before + f.generated);
            }
        }
        Ok((completed, tokens, accepted))
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
            if self.state.blocks_needed(oldest, q)? as usize <= self.state.kv_pool().available() {
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
