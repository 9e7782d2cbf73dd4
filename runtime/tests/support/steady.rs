//! Steady decode sequences driven through `BatchState` with today's API (`schedule_decode`
//! for every decode row, `with_step`, `commit_step`, admissions and finishing rows): most
//! steps are decode-only and every row advances by its query length; rows cross into new
//! KV blocks, finish at random and are replaced, the hole filled by the last decode row
//! (Megatron's order: `Vec::swap_remove`); new requests prefill (sometimes in chunks)
//! before they decode. Rows sample with per-request parameters that change now and then,
//! drafts are accepted in full most of the time (so rows advance by `s + 1`), and some
//! steps carry token ids.
//!
//! The device-fill tests feed these steps to the staging builder: most become delta steps
//! (`abi::FLAG_DELTA`), the rest full ones.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    dead_code,
    reason = "Test support: a panic is a failed test; each test binary uses part of this module."
)]

use attention_layout::batch::{BatchState, RequestHandle, RequestPhase};
use attention_layout::{Dims, RequestRow, RuntimeDims, Sampling, StepInput};

use super::workload::Rng;

/// How often things happen, per step.
#[derive(Debug, Clone, Copy)]
pub struct SteadyKnobs {
    /// Chance of admitting a request (while below `live_target`).
    pub admit: f64,
    /// Chance that a row's sampling changes.
    pub resample: f64,
    /// Chance that a decode row accepts fewer than all its drafts.
    pub partial_accept: f64,
    /// Chance that a step carries token ids.
    pub token_ids: f64,
    /// Longest output (capped by what the layout can hold).
    pub max_output: u32,
}

impl SteadyKnobs {
    /// Mostly steady: a few admissions, rare sampling changes and partial acceptance.
    pub const DEFAULT: Self = Self {
        admit: 0.3,
        resample: 0.01,
        partial_accept: 0.05,
        token_ids: 0.2,
        max_output: 400,
    };
}

/// The driver: a `BatchState` and the order its decode rows keep.
pub struct SteadyDriver {
    pub state: BatchState,
    /// Decode requests in step order (holes filled by the last one).
    order: Vec<RequestHandle>,
    /// Requests still prefilling, in admission order.
    prefilling: Vec<RequestHandle>,
    rng: Rng,
    knobs: SteadyKnobs,
    /// Per resident row: a counter its sampling parameters derive from.
    epoch: Vec<u32>,
    s: u32,
    budget: u32,
    live_target: usize,
    max_prompt: u32,
    ids: Vec<i64>,
    /// Steps that were decode-only.
    pub decode_only_steps: u64,
    /// Requests that finished.
    pub finished: u64,
}

impl SteadyDriver {
    pub fn new(dims: &RuntimeDims, seed: u64, knobs: SteadyKnobs) -> Self {
        let state = BatchState::new(dims).unwrap();
        let s = dims.speculative_tokens() as u32;
        let budget = dims.max_tokens() as u32;
        // Leave room in the token budget for one prefill chunk next to the decode rows.
        let live_target = dims
            .max_requests()
            .min((budget as usize / (s as usize + 1)).saturating_sub(2))
            .max(1);
        let max_prompt = (dims.max_seq_len() as u32 / 4).clamp(1, 48);
        Self {
            state,
            order: Vec::new(),
            prefilling: Vec::new(),
            rng: Rng::new(seed),
            knobs,
            epoch: vec![0; dims.max_requests()],
            s,
            budget,
            live_target,
            max_prompt,
            ids: Vec::new(),
            decode_only_steps: 0,
            finished: 0,
        }
    }

    /// Admits, schedules, builds the step and calls `f` with it, then commits. Sampling
    /// and token ids are added to `BatchState`'s rows.
    pub fn step<R>(&mut self, f: impl FnOnce(&StepInput<'_>) -> R) -> R {
        self.admit();
        let mut left = self.budget;
        for &h in &self.order {
            if left > self.s && self.state.schedule_decode(h).is_ok() {
                left -= self.s + 1;
            }
        }
        let mut prefill_rows = 0;
        for &h in &self.prefilling {
            let info = self.state.info(h).unwrap();
            let chunk = (info.prompt_len - info.prompt_done).min(left);
            // Now and then a long prompt is cut to a random chunk.
            let chunk = if chunk > 1 && self.rng.chance(0.2) {
                self.rng.range_inclusive(1, chunk)
            } else {
                chunk
            };
            if chunk > 0 && self.state.schedule_prefill(h, chunk).is_ok() {
                left -= chunk;
                prefill_rows += 1;
            }
        }
        if prefill_rows == 0 {
            self.decode_only_steps += 1;
        }
        for e in &mut self.epoch {
            if self.rng.chance(self.knobs.resample) {
                *e += 1;
            }
        }
        let with_ids = self.rng.chance(self.knobs.token_ids);
        let step_no = self.decode_only_steps;
        let (epoch, ids_buf) = (&self.epoch, &mut self.ids);
        let out = self.state.with_step(|input| {
            let mut rows: Vec<RequestRow<'_>> = Vec::with_capacity(input.rows.len());
            let resident = input.residency.unwrap().resident_rows;
            for (row, &r) in input.rows.iter().zip(resident) {
                let mut row = *row;
                row.sampling = sampling_of(r, epoch[r as usize]);
                rows.push(row);
            }
            ids_buf.clear();
            if with_ids {
                let tokens: u32 = rows
                    .iter()
                    .filter(|r| r.phase != attention_layout::Phase::Paused)
                    .map(|r| r.query_length)
                    .sum();
                ids_buf.extend((0..tokens).map(|t| (step_no as i64) * 1000 + i64::from(t)));
            }
            let step = StepInput {
                rows: &rows,
                token_ids: with_ids.then_some(&ids_buf[..]),
                intermediate: None,
                residency: input.residency,
            };
            f(&step)
        });
        self.commit();
        out
    }

    fn admit(&mut self) {
        let live = self.order.len() + self.prefilling.len();
        if live >= self.live_target || !self.rng.chance(self.knobs.admit) {
            return;
        }
        let prompt = self.rng.range_inclusive(1, self.max_prompt);
        let output = self.rng.range_inclusive(1, self.knobs.max_output);
        // Shorten the output until the request fits the layout (and the pool).
        let mut output = output;
        while output > 1 && self.state.check_request(prompt, output).is_err() {
            output /= 2;
        }
        if self.state.check_request(prompt, output).is_err() || !self.state.can_admit() {
            return;
        }
        if let Ok(h) = self.state.admit(prompt, output) {
            if let Some(e) = self.epoch.get_mut(h.row() as usize) {
                *e += 1;
            }
            self.prefilling.push(h);
        }
    }

    fn commit(&mut self) {
        let s = self.s;
        let (rng, knobs) = (&mut self.rng, self.knobs);
        let finished: Vec<RequestHandle> = self
            .state
            .commit_step(|_| {
                if rng.chance(knobs.partial_accept) {
                    rng.range_inclusive(0, s)
                } else {
                    s
                }
            })
            .unwrap()
            .iter()
            .map(|f| f.handle)
            .collect();
        for h in finished {
            self.finished += 1;
            if let Some(i) = self.order.iter().position(|&x| x == h) {
                self.order.swap_remove(i);
            }
            self.prefilling.retain(|&x| x != h);
        }
        // Requests whose prompt is done decode from the next step, after the others.
        let mut i = 0;
        while i < self.prefilling.len() {
            let h = self.prefilling[i];
            if self.state.info(h).unwrap().phase == RequestPhase::Decode {
                self.prefilling.remove(i);
                self.order.push(h);
            } else {
                i += 1;
            }
        }
    }
}

/// Per-request sampling parameters: a function of the resident row and its epoch.
fn sampling_of(row: u32, epoch: u32) -> Sampling {
    let k = row.wrapping_mul(7).wrapping_add(epoch.wrapping_mul(3));
    Sampling {
        temperature: 0.5 + (k % 5) as f32 * 0.25,
        top_k: (k % 4) as i32 * 10,
        top_p: if k.is_multiple_of(3) { 0.0 } else { 0.9 },
    }
}
