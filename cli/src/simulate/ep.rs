//! `simulate --ep-ranks N`: `N` expert-parallel ranks, each with its own arrivals,
//! scheduler, batch state and backend, stepping in lockstep and agreeing on every step's
//! shape by Megatron's rule (`attention_layout::agree`). The report says what the agreement costs
//! each rank against running alone: steps forced to run eagerly because some rank had a
//! prefill request, and padding forced by the largest rank's token count.
//!
//! * **Workloads.** Rank `r` draws from its own random streams
//!   ([`workload::stream_of_rank`](super::workload::stream_of_rank); rank 0 draws what a
//!   run without expert parallelism draws). `--rate` is the mean arrival rate per rank;
//!   `--rank-skew X` spreads it geometrically: rank `r` gets `rate · N · q^r / Σ_k q^k`
//!   with `q = (1 + X)^(−1 / (N − 1))`, so rank 0 is the busiest, the busiest rank gets
//!   `1 + X` times the arrivals of the idlest, and the total stays `N · rate` ([`EpConfig::rates`]).
//! * **Lockstep.** Every rank runs every step (the MoE collectives of a real model make the
//!   ranks wait for each other). A rank with no request runs the dummy step: no row,
//!   padded to the agreed bucket, or to nothing when the group runs eagerly. The simulated
//!   clock advances by the step time of the largest rank's real tokens. When no rank has
//!   anything to do, the clock jumps to the next arrival at any rank.
//! * **Agreement.** The simulator knows every rank's local shape, so it agrees on the
//!   host ([`AgreedShape::reduce`], the CPU-side agreement); its measured cost is reported.
//! * **Forced work.** For each step with a request, a rank's own match (what it would run
//!   alone) is compared with what the agreement gave it: a step a graph would have served
//!   that ran eagerly is *forced eager* (by another rank's prefill, by its own prefill —
//!   alone it would have replayed a mixed-prefill graph, which expert-parallel steps never
//!   use — or by the largest rank's token count being beyond every decode graph); a graphed
//!   step in a larger bucket than its own carries *forced padding* (the difference in
//!   tokens).
//!
//! With one rank the run is exactly [`super::run`]'s (tested).

use std::fmt;
use std::time::Instant;

use attention_layout_codegen::{BatchDims, buckets};
use serde::Serialize;

use attention_layout::agree::{AgreedShape, step_shape};
use attention_layout::backend::MetadataBackend;
use attention_layout::batch::BatchState;
use attention_layout::dims::{Dims, RuntimeDims};

use super::config::{MAX_STEPS, MAX_WAITING, SimConfig};
use super::report::{ConfigSummary, Report, StepRecord, n, pct};
use super::rng::Rng;
use super::scheduler::{Pending, Scheduler};
use super::table::BucketTable;
use super::workload::{Workload, stream_of_rank};
use super::{Progress, RunTotals, SimError};

/// The largest group `simulate` runs.
pub const MAX_RANKS: u32 = 64;

/// The expert-parallel settings of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpConfig {
    /// Ranks in the group (1: no expert parallelism).
    pub ranks: u32,
    /// Load skew: the busiest rank gets `1 + rank_skew` times the arrivals of the idlest.
    pub rank_skew: f64,
}

impl Default for EpConfig {
    fn default() -> Self {
        Self {
            ranks: 1,
            rank_skew: 0.0,
        }
    }
}

impl EpConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] for a rank count outside `[1, MAX_RANKS]` or a skew that is
    /// not a finite number `>= 0`.
    pub fn check(&self) -> Result<(), SimError> {
        if !(1..=MAX_RANKS).contains(&self.ranks) {
            return Err(SimError::Config(format!(
                "ep-ranks must lie in [1, {MAX_RANKS}], got {}",
                self.ranks
            )));
        }
        if !(self.rank_skew.is_finite() && self.rank_skew >= 0.0) {
            return Err(SimError::Config(format!(
                "rank-skew must be a finite number >= 0, got {}",
                self.rank_skew
            )));
        }
        Ok(())
    }

    /// Each rank's arrival rate for a mean of `rate` per rank (see the
    /// [module docs](self)): geometric from rank 0 (busiest) to rank `N − 1`, summing to
    /// `N · rate`.
    pub fn rates(&self, rate: f64) -> Vec<f64> {
        let n = self.ranks.max(1);
        if n == 1 {
            return vec![rate];
        }
        let q = (1.0 + self.rank_skew).powf(-1.0 / f64::from(n - 1));
        let weights: Vec<f64> = (0..n).map(|r| q.powf(f64::from(r))).collect();
        let sum: f64 = weights.iter().sum();
        weights
            .iter()
            .map(|w| rate * f64::from(n) * w / sum)
            .collect()
    }
}

/// What the agreement cost one rank (or, summed, the group).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Forced {
    /// Steps run (every lockstep step; summed over ranks in the total).
    pub steps: u64,
    /// Steps without a request of the rank's own: the dummy step.
    pub dummy_steps: u64,
    /// Padded tokens of the dummy steps (all of them padding).
    pub dummy_padded_tokens: u64,
    /// Steps with at least one request.
    pub active_steps: u64,
    /// Active steps that would have run eagerly alone too.
    pub eager_alone_steps: u64,
    /// Active steps a graph would have served alone that ran eagerly under the agreement.
    pub forced_eager_steps: u64,
    /// Of those: another rank had a prefill request (this rank had none).
    pub forced_eager_by_other_prefill: u64,
    /// Of those: this rank had a prefill request and alone would have replayed a
    /// mixed-prefill graph (expert-parallel steps with a prefill never replay a graph).
    pub forced_eager_by_own_prefill: u64,
    /// Of those: no rank had a prefill, but the largest token count is beyond every decode
    /// graph.
    pub forced_eager_by_max_tokens: u64,
    /// `forced_eager_steps / active_steps`.
    pub forced_eager_share: f64,
    /// Σ over forced eager steps of (eager padded tokens − tokens of the bucket the rank
    /// would have replayed alone): what running eagerly changed in padding (negative when
    /// the eager padding is the smaller).
    pub forced_eager_padding_delta: i64,
    /// Σ over graphed active steps of (agreed bucket tokens − own bucket tokens).
    pub forced_padding_tokens: u64,
    /// Padded tokens of the active steps.
    pub active_padded_tokens: u64,
    /// `forced_padding_tokens / active_padded_tokens`.
    pub forced_padding_share: f64,
}

impl Forced {
    fn share(a: u64, b: u64) -> f64 {
        if b == 0 { 0.0 } else { a as f64 / b as f64 }
    }

    fn finish(mut self) -> Self {
        self.forced_eager_share = Self::share(self.forced_eager_steps, self.active_steps);
        self.forced_padding_share =
            Self::share(self.forced_padding_tokens, self.active_padded_tokens);
        self
    }

    fn add(mut self, o: &Self) -> Self {
        self.steps += o.steps;
        self.dummy_steps += o.dummy_steps;
        self.dummy_padded_tokens += o.dummy_padded_tokens;
        self.active_steps += o.active_steps;
        self.eager_alone_steps += o.eager_alone_steps;
        self.forced_eager_steps += o.forced_eager_steps;
        self.forced_eager_by_other_prefill += o.forced_eager_by_other_prefill;
        self.forced_eager_by_own_prefill += o.forced_eager_by_own_prefill;
        self.forced_eager_by_max_tokens += o.forced_eager_by_max_tokens;
        self.forced_eager_padding_delta += o.forced_eager_padding_delta;
        self.forced_padding_tokens += o.forced_padding_tokens;
        self.active_padded_tokens += o.active_padded_tokens;
        self
    }

    /// Accounts one step of a rank: its local shape, what it ran (`info`), what it would
    /// have matched alone, and the group's agreement.
    fn record(
        &mut self,
        local: BatchDims,
        ran: &StepRecord,
        alone: Option<BatchDims>,
        agreed: &AgreedShape,
    ) {
        self.steps += 1;
        if local == BatchDims::default() {
            self.dummy_steps += 1;
            self.dummy_padded_tokens += u64::from(ran.padded.tokens);
            return;
        }
        self.active_steps += 1;
        self.active_padded_tokens += u64::from(ran.padded.tokens);
        match (alone, ran.bucket.is_some()) {
            (None, _) => self.eager_alone_steps += 1,
            (Some(own), true) => {
                self.forced_padding_tokens +=
                    u64::from(ran.padded.tokens.saturating_sub(own.tokens));
            }
            (Some(own), false) => {
                self.forced_eager_steps += 1;
                self.forced_eager_padding_delta +=
                    i64::from(ran.padded.tokens) - i64::from(own.tokens);
                if local.prefill > 0 {
                    self.forced_eager_by_own_prefill += 1;
                } else if agreed.any_prefill {
                    self.forced_eager_by_other_prefill += 1;
                } else {
                    self.forced_eager_by_max_tokens += 1;
                }
            }
        }
    }
}

/// One rank of an expert-parallel run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankReport {
    /// The rank.
    pub rank: u32,
    /// Its arrival rate, requests per simulated second.
    pub rate: f64,
    /// What the agreement cost it.
    pub forced: Forced,
    /// Its run, as `simulate` reports a run (dummy steps included; its `config.rate` is
    /// the mean rate per rank).
    pub report: Report,
}

/// The report of an expert-parallel run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpReport {
    /// Layout name.
    pub layout: String,
    /// Backend name (every rank has its own backend of this kind).
    pub backend: String,
    /// Ranks.
    pub ranks: u32,
    /// Load skew (`--rank-skew`).
    pub rank_skew: f64,
    /// How the ranks agreed.
    pub agreement: String,
    /// Settings (the rate is the mean per rank).
    pub config: ConfigSummary,
    /// Lockstep steps (each rank ran every one).
    pub steps: u64,
    /// Steps every rank ran through a graph.
    pub graphed_steps: u64,
    /// Steps every rank ran eagerly.
    pub eager_steps: u64,
    /// `eager_steps / steps`.
    pub eager_share: f64,
    /// Steps on which the ranks did not all replay the same bucket or all run eagerly;
    /// 0 in a correct run.
    pub disagreeing_steps: u64,
    /// Median time of the agreement per step, nanoseconds.
    pub agreement_p50_ns: u64,
    /// Mean time of the agreement per step, nanoseconds.
    pub agreement_mean_ns: f64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// The ranks' forced work, summed (shares over the sums).
    pub total: Forced,
    /// Every rank.
    pub per_rank: Vec<RankReport>,
}

impl EpReport {
    /// The report as pretty-printed JSON (per-step records left out), schema
    /// [`crate::reports::SIMULATE_EP`] (`docs/JSON-REPORTS.md`).
    pub fn to_json(&self) -> String {
        crate::reports::to_json(crate::reports::SIMULATE_EP, self)
    }
}

/// One rank's engine.
struct Rank {
    sched: Scheduler,
    workload: Workload,
    accept: Rng,
    rate: f64,
    records: Vec<StepRecord>,
    totals: RunTotals,
    forced: Forced,
    local: BatchDims,
}

impl Rank {
    fn idle(&self) -> bool {
        self.sched.state.live_count() == 0 && self.sched.waiting.is_empty()
    }
}

fn at_rank(rank: usize, error: SimError) -> SimError {
    SimError::Rank {
        rank: u32::try_from(rank).unwrap_or(u32::MAX),
        error: Box::new(error),
    }
}

/// Runs an expert-parallel simulation: `backends[r]` builds rank `r`'s metadata (one per
/// rank, `ep.ranks` of them); `progress` is called after every step with the group's
/// totals.
///
/// # Errors
///
/// [`SimError::Config`] before anything runs (bad settings, or not one backend per rank);
/// failures found while running come wrapped in [`SimError::Rank`].
pub fn run_ep(
    config: &SimConfig,
    ep: &EpConfig,
    dims: &RuntimeDims,
    backends: &mut [Box<dyn MetadataBackend>],
    progress: &mut dyn FnMut(&Progress),
) -> Result<EpReport, SimError> {
    ep.check()?;
    let limits = config.check(dims)?;
    if backends.len() != ep.ranks as usize {
        return Err(SimError::Config(format!(
            "{} ranks need {} backends, got {}",
            ep.ranks,
            ep.ranks,
            backends.len()
        )));
    }
    if ep.ranks > 1 && config.prefix_caching.is_some() {
        return Err(SimError::Config(
            "--prefix-caching is simulated on one engine; it cannot be combined with --ep-ranks > 1 yet".into(),
        ));
    }
    if ep.ranks > 1 && config.trace.is_some() {
        return Err(SimError::Config(
            "--trace replays one engine's requests; it cannot be combined with --ep-ranks > 1 (each rank draws its own arrivals)".into(),
        ));
    }
    let mut ranks = Vec::with_capacity(backends.len());
    for (r, &rate) in (0u32..).zip(&ep.rates(config.rate)) {
        let state = BatchState::new(dims).map_err(|e| SimError::Config(e.to_string()))?;
        let mut sched = Scheduler::new(state, limits.token_budget);
        if config.bucket_chunking {
            sched.set_bucket_chunking(Some(BucketTable::of(dims)));
        }
        ranks.push(Rank {
            sched,
            workload: Workload::for_rank(config, limits, r, rate),
            accept: Rng::stream(config.seed, stream_of_rank(r, 3)),
            rate,
            records: Vec::with_capacity(config.steps as usize + 1024),
            totals: RunTotals::default(),
            forced: Forced::default(),
            local: BatchDims::default(),
        });
    }
    let s = dims.speculative_tokens() as u32;
    let strict = dims.has_mamba();
    let kv_capacity: usize = ranks.iter().map(|r| r.sched.state.kv_capacity()).sum();

    let mut clock = 0.0f64;
    let mut step: u64 = 0;
    let mut drain_limit: Option<u64> = None;
    let mut agreement_ns: Vec<u64> = Vec::with_capacity(config.steps as usize + 1024);
    let mut locals: Vec<BatchDims> = vec![BatchDims::default(); ranks.len()];
    let (mut graphed, mut disagreeing) = (0u64, 0u64);
    let mut recent = [0f64; 1024];
    let mut recent_sorted = Vec::with_capacity(recent.len());
    let mut recent_p50_us = 0.0;

    loop {
        let open = step < config.steps;
        if open {
            let completed: u64 = ranks.iter().map(|r| r.totals.completed).sum();
            for rank in &mut ranks {
                while rank.workload.peek().time <= clock {
                    // The same memory bound as a one-rank run, per rank.
                    if rank.sched.waiting.len() >= MAX_WAITING {
                        return Err(SimError::Overloaded {
                            limit: MAX_WAITING,
                            step,
                            sim_seconds: clock,
                            completed,
                            rate: config.rate,
                        });
                    }
                    let a = rank.workload.take();
                    rank.totals.arrived += 1;
                    rank.sched.waiting.push_back(Pending {
                        id: a.id,
                        arrival: a.time,
                        prompt_len: a.prompt_len,
                        max_output: a.max_output,
                        generated_before: 0,
                        conversation: a.conversation,
                    });
                }
            }
        }
        if ranks.iter().all(Rank::idle) {
            if open {
                // Every engine idle: jump to the next arrival at any rank.
                let next = ranks
                    .iter()
                    .map(|r| r.workload.peek().time)
                    .fold(f64::INFINITY, f64::min);
                clock = clock.max(next);
                continue;
            }
            break;
        }
        if !open {
            if !config.drain {
                break;
            }
            let limit = *drain_limit.get_or_insert_with(|| {
                let outstanding: u64 = ranks
                    .iter()
                    .map(|r| (r.sched.state.live_count() + r.sched.waiting.len()) as u64)
                    .sum();
                step + outstanding.saturating_mul(dims.max_seq_len() as u64 + 2) + 1000
            });
            if step >= MAX_STEPS {
                return Err(SimError::TooLong {
                    limit: MAX_STEPS,
                    live: ranks.iter().map(|r| r.sched.state.live_count()).sum(),
                    waiting: ranks.iter().map(|r| r.sched.waiting.len()).sum(),
                });
            }
            if step >= limit {
                return Err(SimError::Stalled {
                    limit,
                    live: ranks.iter().map(|r| r.sched.state.live_count()).sum(),
                    waiting: ranks.iter().map(|r| r.sched.waiting.len()).sum(),
                });
            }
        }

        // Every rank schedules and says what its step looks like.
        for (i, (rank, local)) in ranks.iter_mut().zip(locals.iter_mut()).enumerate() {
            rank.sched
                .schedule()
                .map_err(|error| at_rank(i, SimError::Batch { step, error }))?;
            let t = &mut rank.totals;
            t.kv_peak = t.kv_peak.max(rank.sched.state.kv_in_use());
            t.mamba_peak = t
                .mamba_peak
                .max(rank.sched.state.mamba_pool().map_or(0, |p| p.in_use()));
            t.live_peak = t.live_peak.max(rank.sched.state.live_count());
            *local = rank.sched.state.with_step(step_shape);
            rank.local = *local;
        }
        // The CPU-side agreement.
        let t0 = Instant::now();
        let agreed = AgreedShape::reduce(&locals).unwrap_or_default();
        agreement_ns.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));

        // Every rank builds its step with the agreed shape.
        let mut slowest = 0f64;
        let mut first_bucket: Option<Option<u32>> = None;
        let mut same = true;
        for (i, (rank, backend)) in ranks.iter_mut().zip(backends.iter_mut()).enumerate() {
            let (result, elapsed) = rank.sched.state.with_step(|input| {
                let t0 = Instant::now();
                let r = backend.step_agreed(input, &agreed).and_then(|info| {
                    backend.synchronize()?;
                    Ok(info)
                });
                (r, t0.elapsed())
            });
            let info = result.map_err(|error| at_rank(i, SimError::Step { step, error }))?;
            let latency_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            slowest = slowest.max(latency_ns as f64 / 1000.0);
            let record = StepRecord {
                latency_ns,
                real: info.real,
                padded: info.padded,
                bucket: info.bucket,
                paused: info.paused,
                end_ns: 0,
            };
            let alone = buckets::match_bucket(rank.local, dims.buckets(), strict);
            rank.forced.record(rank.local, &record, alone, &agreed);
            rank.records.push(record);
            same &= *first_bucket.get_or_insert(info.bucket) == info.bucket;
        }
        disagreeing += u64::from(!same);
        graphed += u64::from(same && first_bucket.flatten().is_some());
        if let Some(slot) = recent.get_mut((step % 1024) as usize) {
            *slot = slowest;
        }

        // Every rank commits.
        let p = config.acceptance;
        for (i, rank) in ranks.iter_mut().enumerate() {
            let decode = rank.local.decode;
            rank.totals.drafts += u64::from(decode) * u64::from(s);
            let accept = &mut rank.accept;
            let (completed, output_tokens, accepted) = rank
                .sched
                .commit(|| {
                    let mut a = 0;
                    while a < s && accept.bernoulli(p) {
                        a += 1;
                    }
                    a
                })
                .map_err(|error| at_rank(i, SimError::Batch { step, error }))?;
            rank.totals.completed += completed;
            rank.totals.output_tokens += output_tokens;
            rank.totals.drafts_accepted += accepted;
        }
        clock += config.step_time.seconds(agreed.max_tokens);
        step += 1;

        if step.is_multiple_of(64) || step < 64 {
            let filled = (step as usize).min(recent.len());
            recent_sorted.clear();
            recent_sorted.extend(recent.iter().take(filled).copied());
            recent_sorted.sort_by(f64::total_cmp);
            recent_p50_us = recent_sorted.get(filled / 2).copied().unwrap_or(0.0);
        }
        progress(&Progress {
            step,
            steps: config.steps,
            draining: !open,
            live: ranks.iter().map(|r| r.sched.state.live_count()).sum(),
            waiting: ranks.iter().map(|r| r.sched.waiting.len()).sum(),
            completed: ranks.iter().map(|r| r.totals.completed).sum(),
            kv_in_use: ranks.iter().map(|r| r.sched.state.kv_in_use()).sum(),
            kv_capacity,
            sim_seconds: clock,
            recent_p50_us,
        });
    }

    let mut per_rank = Vec::with_capacity(ranks.len());
    let mut total = Forced::default();
    for ((r, mut rank), backend) in (0u32..).zip(ranks).zip(backends.iter()) {
        rank.totals.sim_seconds = clock;
        rank.totals.kv_in_use_end = rank.sched.state.kv_in_use();
        rank.totals.mamba_in_use_end = rank.sched.state.mamba_pool().map_or(0, |p| p.in_use());
        rank.totals.live_end = rank.sched.state.live_count();
        rank.totals.waiting_end = rank.sched.waiting.len();
        let forced = rank.forced.finish();
        total = total.add(&forced);
        per_rank.push(RankReport {
            rank: r,
            rate: rank.rate,
            forced,
            report: Report::new(
                config,
                dims,
                &backend.name(),
                limits,
                rank.records,
                rank.totals,
                // The lockstep ranks end every step the ordinary way
                // (`async_scheduling` stays false).
                rank.sched.counters,
            ),
        });
    }
    let first = per_rank.first();
    let layout = first.map(|r| r.report.layout.clone()).unwrap_or_default();
    let backend = first.map(|r| r.report.backend.clone()).unwrap_or_default();
    let Some(summary) = first.map(|r| r.report.config.clone()) else {
        return Err(SimError::Config("no ranks".to_owned()));
    };
    let mut sorted = agreement_ns.clone();
    sorted.sort_unstable();
    let agreement_p50_ns = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    let agreement_mean_ns = if sorted.is_empty() {
        0.0
    } else {
        sorted.iter().map(|&x| x as f64).sum::<f64>() / sorted.len() as f64
    };
    Ok(EpReport {
        layout,
        backend,
        ranks: ep.ranks,
        rank_skew: ep.rank_skew,
        agreement: "cpu (the host reduces every rank's shape)".to_owned(),
        config: summary,
        steps: step,
        graphed_steps: graphed,
        eager_steps: step - graphed - disagreeing,
        eager_share: Forced::share(step - graphed - disagreeing, step),
        disagreeing_steps: disagreeing,
        agreement_p50_ns,
        agreement_mean_ns,
        sim_seconds: clock,
        total: total.finish(),
        per_rank,
    })
}

impl fmt::Display for EpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let t = &self.total;
        writeln!(
            f,
            "simulate {} on the {} backend, {} expert-parallel ranks",
            self.layout, self.backend, self.ranks
        )?;
        let rates: Vec<f64> = self.per_rank.iter().map(|r| r.rate).collect();
        let (hi, lo) = (
            rates.iter().copied().fold(0.0, f64::max),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
        );
        writeln!(
            f,
            "  workload   seed {}, {} steps of arrivals{}, Poisson {} req/s per rank on average (rank skew {}: {:.1} … {:.1} req/s), token budget {}, {} draft tokens per decode request{}",
            c.seed,
            n(c.steps),
            if c.drain { " then drain" } else { "" },
            c.rate,
            self.rank_skew,
            hi,
            lo,
            n(u64::from(c.token_budget)),
            c.speculative_tokens,
            if c.speculative_tokens > 0 {
                format!(", acceptance {}", c.acceptance)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "             prompt {}, output {} (clipped to {} prompt / {} positions)",
            c.prompt,
            c.output,
            n(u64::from(c.max_prompt)),
            n(c.max_positions)
        )?;
        writeln!(
            f,
            "  steps      {} in lockstep ({} graphed on every rank, {} eager on every rank = {} eager share), {:.1} simulated s; {} steps the ranks disagreed on",
            n(self.steps),
            n(self.graphed_steps),
            n(self.eager_steps),
            pct(self.eager_share),
            self.sim_seconds,
            n(self.disagreeing_steps)
        )?;
        writeln!(
            f,
            "  agreement  {}: median {} ns, mean {:.0} ns per step",
            self.agreement, self.agreement_p50_ns, self.agreement_mean_ns
        )?;
        writeln!(
            f,
            "  forced     eager: {} of {} rank-steps with requests ({}) that a graph would have served alone — {} by another rank's prefill, {} by the rank's own prefill, {} by the largest rank's tokens; their eager padding differs from the graphs' by {:+} tokens",
            n(t.forced_eager_steps),
            n(t.active_steps),
            pct(t.forced_eager_share),
            n(t.forced_eager_by_other_prefill),
            n(t.forced_eager_by_own_prefill),
            n(t.forced_eager_by_max_tokens),
            t.forced_eager_padding_delta
        )?;
        writeln!(
            f,
            "             padding: {} tokens forced by the largest rank ({} of the {} padded tokens of steps with requests); {} dummy rank-steps (no request) padded {} tokens",
            n(t.forced_padding_tokens),
            pct(t.forced_padding_share),
            n(t.active_padded_tokens),
            n(t.dummy_steps),
            n(t.dummy_padded_tokens)
        )?;
        let row = |rank: &str,
                   rate: f64,
                   arrived: u64,
                   completed: u64,
                   fr: &Forced,
                   waste: u64,
                   p50: String| {
            format!(
                "             {rank:>4}  {rate:>6.1}  {:>7}  {:>9}  {:>7}  {:>11}  {:>16}  {:>18}  {:>11}  {p50:>8}",
                n(arrived),
                n(completed),
                n(fr.dummy_steps),
                n(fr.eager_alone_steps),
                format!(
                    "{} ({})",
                    n(fr.forced_eager_steps),
                    pct(fr.forced_eager_share)
                ),
                format!(
                    "{} ({})",
                    n(fr.forced_padding_tokens),
                    pct(fr.forced_padding_share)
                ),
                n(waste),
            )
        };
        writeln!(
            f,
            "  per rank   {:>4}  {:>6}  {:>7}  {:>9}  {:>7}  {:>11}  {:>16}  {:>18}  {:>11}  {:>8}",
            "rank",
            "req/s",
            "arrived",
            "completed",
            "dummy",
            "eager alone",
            "forced eager",
            "forced padding",
            "waste",
            "p50 µs"
        )?;
        for r in &self.per_rank {
            let p = &r.report;
            writeln!(
                f,
                "{}",
                row(
                    &r.rank.to_string(),
                    r.rate,
                    p.requests.arrived,
                    p.requests.completed,
                    &r.forced,
                    p.padding.waste_tokens,
                    format!("{:.2}", p.latency.p50_us)
                )
            )?;
        }
        let sum = |g: fn(&RankReport) -> u64| self.per_rank.iter().map(g).sum::<u64>();
        writeln!(
            f,
            "{}",
            row(
                "all",
                rates.iter().sum::<f64>(),
                sum(|r| r.report.requests.arrived),
                sum(|r| r.report.requests.completed),
                t,
                sum(|r| r.report.padding.waste_tokens),
                String::new()
            )
        )?;
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

    #[test]
    fn rates_spread_geometrically_and_keep_the_mean() {
        let ep = EpConfig {
            ranks: 4,
            rank_skew: 1.0,
        };
        let r = ep.rates(10.0);
        assert_eq!(r.len(), 4);
        assert!((r.iter().sum::<f64>() - 40.0).abs() < 1e-9);
        assert!((r[0] / r[3] - 2.0).abs() < 1e-9, "{r:?}");
        assert!(r.windows(2).all(|w| w[0] > w[1]));
        let flat = EpConfig {
            rank_skew: 0.0,
            ..ep
        }
        .rates(10.0);
        assert!(flat.iter().all(|&x| (x - 10.0).abs() < 1e-9));
        assert_eq!(EpConfig::default().rates(3.0), [3.0]);
    }

    #[test]
    fn bad_settings_are_refused() {
        for ep in [
            EpConfig {
                ranks: 0,
                rank_skew: 0.0,
            },
            EpConfig {
                ranks: MAX_RANKS + 1,
                rank_skew: 0.0,
            },
            EpConfig {
                ranks: 2,
                rank_skew: -0.5,
            },
            EpConfig {
                ranks: 2,
                rank_skew: f64::NAN,
            },
        ] {
            assert!(ep.check().unwrap_err().is_config(), "{ep:?}");
        }
    }
}
