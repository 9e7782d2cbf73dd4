//! A random serving workload for equivalence tests: requests arrive, prefill in chunks,
//! decode, pause, get holes in their block lists and finish; every block-table
//! modification is recorded as a `BlockChange` of a stable resident row, as an engine that
//! owns its request table would report it.

#![allow(
    clippy::panic,
    dead_code,
    reason = "Each test binary uses part of this module."
)]

use attention_layout::{
    BlockChange, Dims, IntermediateOffsets, Phase, RequestRow, Residency, RuntimeDims, Sampling,
    StepInput,
};

/// SplitMix64: small, deterministic, good enough for workloads.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// In `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// In `[lo, hi]` (`lo` when `hi < lo`).
    pub fn range_inclusive(&mut self, lo: u32, hi: u32) -> u32 {
        if hi <= lo {
            return lo;
        }
        lo + self.below(u64::from(hi - lo) + 1) as u32
    }
}

/// Knobs of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// New requests per step (expected).
    pub arrival: f64,
    /// A decode request finishes this step.
    pub finish: f64,
    /// An active request is paused this step.
    pub pause: f64,
    /// Longest prompt.
    pub max_prompt: u32,
    /// Longest prefill chunk.
    pub max_chunk: u32,
    /// The active order is shuffled this step.
    pub shuffle: f64,
    /// A step comes without residency.
    pub no_residency: f64,
    /// A step comes without token ids.
    pub no_token_ids: f64,
    /// Prefill rows carry intermediate offsets this step (Mamba layouts).
    pub intermediate: f64,
    /// A request samples with its own parameters.
    pub own_sampling: f64,
    /// A row's block list is passed with trailing `-1`s.
    pub trailing_holes: f64,
    /// A block before a request's needed range is released (its entry becomes `-1`).
    pub hole: f64,
    /// Bursts: many requests arrive at once.
    pub burst: f64,
    /// Every decode request finishes at once (a burst of block-table changes).
    pub mass_finish: f64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            arrival: 0.6,
            finish: 0.04,
            pause: 0.03,
            max_prompt: 200,
            max_chunk: 64,
            shuffle: 0.05,
            no_residency: 0.02,
            no_token_ids: 0.05,
            intermediate: 0.3,
            own_sampling: 0.2,
            trailing_holes: 0.1,
            hole: 0.02,
            burst: 0.02,
            mass_finish: 0.01,
        }
    }
}

#[derive(Debug, Clone)]
struct Request {
    row: u32,
    prompt: u32,
    kv: u32,
    blocks: Vec<i32>,
    slot: i32,
    sampling: Sampling,
    /// Position key of the (mostly stable) active order.
    key: u64,
}

/// One generated step, owned.
#[derive(Debug, Clone)]
pub struct Step {
    pub rows: Vec<(Phase, u32, u32, Vec<i32>, i32, Sampling)>,
    pub resident_rows: Vec<u32>,
    pub changes: Vec<BlockChange>,
    pub token_ids: Option<Vec<i64>>,
    pub intermediate: Option<Vec<IntermediateOffsets>>,
    pub residency: bool,
}

impl Step {
    /// The borrowed rows.
    pub fn rows(&self) -> Vec<RequestRow<'_>> {
        self.rows
            .iter()
            .map(|(phase, q, kv, b, slot, sampling)| RequestRow {
                phase: *phase,
                query_length: *q,
                kv_offset: *kv,
                blocks: b,
                mamba_slot: *slot,
                sampling: *sampling,
            })
            .collect()
    }

    /// The step input over `rows` (from [`Step::rows`]).
    pub fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: self.token_ids.as_deref(),
            intermediate: self.intermediate.as_deref(),
            residency: self.residency.then_some(Residency {
                resident_rows: &self.resident_rows,
                changes: &self.changes,
            }),
        }
    }
}

/// The workload state.
pub struct Workload {
    pub rng: Rng,
    pub knobs: Knobs,
    r: usize,
    t: u32,
    s_max: u32,
    /// The most KV positions a decode row may reach (`Dims::decode_kv_limit`: its draft
    /// tokens run into the block table's extra column at the end of a sequence).
    decode_reach: u32,
    b: u32,
    spec: u32,
    width: usize,
    has_mamba: bool,
    max_inter: usize,
    live: Vec<Request>,
    free_rows: Vec<u32>,
    free_blocks: Vec<i32>,
    free_slots: Vec<i32>,
    /// Mirror of the resident table (what the changes describe).
    resident: Vec<Vec<i32>>,
    changes: Vec<BlockChange>,
    next_key: u64,
    pub steps: u64,
}

impl Workload {
    pub fn new(d: &RuntimeDims, seed: u64, knobs: Knobs) -> Self {
        let mut rng = Rng::new(seed);
        let r = d.max_requests();
        let pool = d.dummy_block();
        let mut free_blocks: Vec<i32> = (0..pool).collect();
        shuffle(&mut rng, &mut free_blocks);
        let mut free_rows: Vec<u32> = (0..r as u32).collect();
        shuffle(&mut rng, &mut free_rows);
        let mut free_slots: Vec<i32> = (0..r as i32).collect();
        shuffle(&mut rng, &mut free_slots);
        Self {
            rng,
            knobs,
            r,
            t: d.max_tokens() as u32,
            s_max: d.max_seq_len() as u32,
            decode_reach: d.decode_kv_limit() as u32,
            b: d.block_size() as u32,
            spec: d.speculative_tokens() as u32,
            width: d.block_table_width(),
            has_mamba: d.has_mamba(),
            max_inter: d.max_intermediate(),
            live: Vec::new(),
            free_rows,
            free_blocks,
            free_slots,
            resident: vec![vec![-1; d.block_table_width()]; r],
            changes: Vec::new(),
            next_key: 0,
            steps: 0,
        }
    }

    fn set(&mut self, row: u32, index: usize, block: i32) {
        self.resident[row as usize][index] = block;
        self.changes.push(BlockChange {
            resident_row: row,
            index: index as u32,
            block,
        });
    }

    fn release_request(&mut self, i: usize) {
        let req = self.live.swap_remove(i);
        for (j, &b) in req.blocks.iter().enumerate() {
            if b != -1 {
                self.free_blocks.push(b);
                self.set(req.row, j, -1);
            }
        }
        if req.slot >= 0 {
            self.free_slots.push(req.slot);
        }
        self.free_rows.push(req.row);
    }

    fn arrive(&mut self) {
        let Some(row) = self.free_rows.pop() else {
            return;
        };
        let slot = if self.has_mamba {
            self.free_slots.pop().unwrap_or(-1)
        } else {
            -1
        };
        let max_prompt = self
            .knobs
            .max_prompt
            .min(self.s_max.saturating_sub(self.spec + 2))
            .max(1);
        let prompt = self.rng.range(1, u64::from(max_prompt)) as u32;
        let sampling = if self.rng.chance(self.knobs.own_sampling) {
            Sampling {
                temperature: f32::from_bits(self.rng.next() as u32 & 0x7f7f_ffff),
                top_k: self.rng.below(100) as i32,
                top_p: self.rng.below(1000) as f32 / 1000.0,
            }
        } else {
            Sampling::PAD
        };
        self.next_key += 1;
        self.live.push(Request {
            row,
            prompt,
            kv: 0,
            blocks: Vec::new(),
            slot,
            sampling,
            key: self.next_key,
        });
    }

    /// Makes sure `req` owns blocks for positions `[kv, kv + q)` (plus, sometimes, one
    /// pre-allocated block). Returns false when the pool is empty.
    fn ensure_blocks(&mut self, i: usize, q: u32) -> bool {
        let (kv, row) = (self.live[i].kv, self.live[i].row);
        let last = ((kv + q - 1) / self.b) as usize;
        let want = (last + 1 + usize::from(self.rng.chance(0.1))).min(self.width);
        for j in 0..want {
            let needed = j >= (kv / self.b) as usize && j <= last;
            let have = self.live[i].blocks.get(j).copied();
            match have {
                Some(b) if b != -1 => {}
                Some(_) if !needed => {}
                _ => {
                    let Some(b) = self.free_blocks.pop() else {
                        return !needed;
                    };
                    if self.rng.chance(0.01) {
                        // An engine may write an entry twice between steps; the last wins.
                        let junk = self.rng.below(self.free_blocks.len().max(1) as u64) as i32;
                        self.set(row, j, junk.min(b));
                    }
                    if j < self.live[i].blocks.len() {
                        self.live[i].blocks[j] = b;
                    } else {
                        self.live[i].blocks.push(b);
                    }
                    self.set(row, j, b);
                }
            }
        }
        true
    }

    /// Generates the next step.
    pub fn step(&mut self) -> Step {
        self.steps += 1;
        // Finish some decode requests (and those that cannot grow any more).
        let everyone = self.rng.chance(self.knobs.mass_finish);
        let mut i = 0;
        while i < self.live.len() {
            let req = &self.live[i];
            let decoding = req.kv >= req.prompt;
            if decoding
                && (everyone
                    || req.kv + self.spec + 1 > self.decode_reach
                    || self.rng.chance(self.knobs.finish))
            {
                self.release_request(i);
            } else {
                i += 1;
            }
        }
        // Arrivals.
        let arrivals = if self.rng.chance(self.knobs.burst) {
            self.r
        } else {
            usize::from(self.rng.chance(self.knobs.arrival.fract()))
                + self.knobs.arrival.trunc() as usize
        };
        for _ in 0..arrivals {
            self.arrive();
        }
        // Holes: release a block before a request's next position.
        if !self.live.is_empty() && self.rng.chance(self.knobs.hole) {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let first_needed = (self.live[i].kv / self.b) as usize;
            if first_needed > 0 {
                let j = self.rng.below(first_needed as u64) as usize;
                let b = self.live[i].blocks.get(j).copied().unwrap_or(-1);
                if b != -1 {
                    self.live[i].blocks[j] = -1;
                    self.free_blocks.push(b);
                    let row = self.live[i].row;
                    self.set(row, j, -1);
                }
            }
        }
        // Order: a stable key, shuffled now and then.
        if self.rng.chance(self.knobs.shuffle) {
            for req in &mut self.live {
                req.key = self.rng.next();
            }
        }
        self.live.sort_by_key(|r| r.key);

        // Schedule: decode first (budget permitting), then prefill chunks.
        let s1 = self.spec + 1;
        let mut budget = self.t;
        let mut plan: Vec<(usize, Phase, u32)> = Vec::new();
        for i in 0..self.live.len() {
            let req = &self.live[i];
            let decoding = req.kv >= req.prompt;
            let pause = self.rng.chance(self.knobs.pause);
            if decoding
                && !pause
                && budget >= s1
                && req.kv + s1 <= self.decode_reach
                && self.ensure_blocks(i, s1)
            {
                budget -= s1;
                plan.push((i, Phase::Decode, s1));
                continue;
            }
            plan.push((i, Phase::Paused, 0));
        }
        for entry in plan.iter_mut() {
            let i = entry.0;
            let req = &self.live[i];
            if req.kv >= req.prompt || entry.1 != Phase::Paused {
                continue;
            }
            if budget == 0 || self.rng.chance(self.knobs.pause) {
                continue;
            }
            let left = req.prompt - req.kv;
            let chunk = (self.rng.range(1, u64::from(self.knobs.max_chunk.max(1))) as u32)
                .min(left)
                .min(budget);
            if self.ensure_blocks(i, chunk) {
                budget -= chunk;
                *entry = (i, Phase::Prefill, chunk);
            }
        }
        let rank = |p: Phase| match p {
            Phase::Paused => 0,
            Phase::Decode => 1,
            Phase::Prefill => 2,
        };
        plan.sort_by_key(|&(i, p, _)| (rank(p), self.live[i].key));

        let mut rows = Vec::with_capacity(plan.len());
        let mut resident_rows = Vec::with_capacity(plan.len());
        let mut tokens = 0u32;
        let mut prefill_qs = Vec::new();
        for &(i, phase, q) in &plan {
            let req = &self.live[i];
            let mut blocks = req.blocks.clone();
            if self.rng.chance(self.knobs.trailing_holes) && blocks.len() < self.width {
                let extra = self.rng.range(1, (self.width - blocks.len()) as u64) as usize;
                blocks.resize(blocks.len() + extra, -1);
            }
            rows.push((phase, q, req.kv, blocks, req.slot, req.sampling));
            resident_rows.push(req.row);
            tokens += q;
            if phase == Phase::Prefill {
                prefill_qs.push(q);
            }
        }
        let token_ids = (!self.rng.chance(self.knobs.no_token_ids))
            .then(|| (0..tokens).map(|_| self.rng.next() as i64 >> 1).collect());
        let intermediate =
            (self.has_mamba && self.rng.chance(self.knobs.intermediate)).then(|| {
                let mut left = self.max_inter;
                prefill_qs
                    .iter()
                    .map(|&q| {
                        let count = if q > 1 {
                            (self.rng.below(4) as usize).min(left)
                        } else {
                            0
                        };
                        left -= count;
                        let mut offsets = [0u32; 3];
                        for o in offsets.iter_mut().take(count) {
                            *o = self.rng.range(1, u64::from(q - 1)) as u32;
                        }
                        IntermediateOffsets {
                            count: count as u8,
                            offsets,
                        }
                    })
                    .collect()
            });
        let residency = !self.rng.chance(self.knobs.no_residency);
        let changes = std::mem::take(&mut self.changes);
        // Advance: the step's tokens are now in the KV cache.
        for &(i, _, q) in &plan {
            self.live[i].kv += q;
        }
        Step {
            rows,
            resident_rows,
            changes,
            token_ids,
            intermediate,
            residency,
        }
    }
}

fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
