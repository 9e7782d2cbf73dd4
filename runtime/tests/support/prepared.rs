//! An async-scheduling engine over a `BatchState` (docs/ASYNC-SCHEDULING.md): each step
//! that can be is prepared while it "runs" (`prepare`), its sampled tokens committed and
//! resolved with rows finishing at a random rate (holes filled in Megatron's order); the
//! other steps end with `commit_step` or an unprepared `resolve`. Requests are admitted
//! now and then (always into an empty batch), so most steps are decode-only, rows cross
//! into new KV blocks at random, and runs of steps advance the one before (`StepOrigin`).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    dead_code,
    reason = "Test support: a panic is a failed test; each test binary uses part of this module."
)]

use attention_layout::batch::{AsyncError, BatchState, RequestHandle, RequestPhase};
use attention_layout::{Dims, Phase, RuntimeDims, StepInput};

use super::workload::Rng;

/// The engine: its batch state and what it did so far.
pub struct PreparedDriver {
    pub state: BatchState,
    rng: Rng,
    s1: usize,
    /// Steps ended through `prepare`.
    pub prepared: usize,
    /// Requests that finished.
    pub finished: usize,
    /// Steps ended.
    pub steps: usize,
}

impl PreparedDriver {
    pub fn new(dims: &RuntimeDims, seed: u64) -> Self {
        Self {
            state: BatchState::new(dims).unwrap(),
            rng: Rng::new(seed),
            s1: dims.speculative_tokens() + 1,
            prepared: 0,
            finished: 0,
            steps: 0,
        }
    }

    /// Schedules the next step, unless a prepared step already scheduled every row:
    /// admissions now and then (always into an empty batch), every live request that is
    /// not scheduled or paused scheduled for decode or its whole remaining prompt.
    pub fn schedule(&mut self) {
        if self.state.is_prepared() {
            return;
        }
        let state = &mut self.state;
        let admit = state.live_count() == 0 || self.rng.chance(0.05);
        for _ in 0..if admit {
            self.rng.range_inclusive(1, 4)
        } else {
            0
        } {
            if !state.can_admit() {
                break;
            }
            let prompt = 1 + self.rng.below(24) as u32;
            let out = 1 + self.rng.below(200) as u32;
            if let Ok(h) = state.admit(prompt, out) {
                let _ = state.schedule_prefill(h, prompt);
            }
        }
        let live: Vec<RequestHandle> = state.live().collect();
        for h in live {
            let info = state.info(h).unwrap();
            if info.scheduled > 0 || info.paused {
                continue;
            }
            if info.phase == RequestPhase::Decode {
                let _ = state.schedule_decode(h);
            } else {
                let _ = state.schedule_prefill(h, info.prompt_len - info.prompt_done);
            }
        }
    }

    /// The resident rows of a step's active rows, in step order (what the step "ran").
    pub fn active_rows(input: &StepInput<'_>) -> Vec<u32> {
        let res = input.residency.unwrap();
        let paused = input
            .rows
            .iter()
            .filter(|r| r.phase == Phase::Paused)
            .count();
        res.resident_rows[paused..].to_vec()
    }

    /// Ends the step that ran (its active resident rows `ran`, built last): prepares the
    /// next one when it can, else sometimes commits; then commits the sampled tokens and
    /// resolves, rows finishing at one of three rates (none, 2 %, 10 %).
    pub fn end_step(&mut self, ran: &[u32], what: &str) {
        self.steps += 1;
        let state = &mut self.state;
        let is_prepared = state.can_prepare().is_ok()
            && match state.prepare() {
                Ok(_) => true,
                Err(AsyncError::OutOfBlocks { .. }) => false,
                Err(e) => panic!("{what}: prepare refused a preparable step: {e}"),
            };
        self.prepared += usize::from(is_prepared);
        if !is_prepared && self.rng.chance(0.3) {
            self.finished += state.commit_step(|_| 0).unwrap().len();
            return;
        }
        let stamp = self.steps as i64;
        let s1 = self.s1;
        let sampled: Vec<i64> = ran.iter().map(|&r| i64::from(r) * 1000 + stamp).collect();
        let drafts: Vec<i64> = ran
            .iter()
            .flat_map(|&r| (1..s1).map(move |d| i64::from(r) * 1000 + stamp + d as i64))
            .collect();
        state.commit_sampled(&sampled, &drafts).unwrap();
        let p_finish = [0.0, 0.02, 0.1][self.rng.below(3) as usize];
        let mask: Vec<bool> = ran.iter().map(|_| !self.rng.chance(p_finish)).collect();
        self.finished += state.resolve(&mask).unwrap().len();
    }
}
