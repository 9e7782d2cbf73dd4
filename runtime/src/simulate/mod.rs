//! `attention-layout simulate`: a dynamic-batching engine loop without a model.
//!
//! Requests arrive as a Poisson process on a simulated clock ([`workload`]), with prompt
//! and output lengths from documented distributions ([`config::LengthDist`]). A scheduler
//! ([`scheduler`]) admits them into a [`BatchState`] (KV blocks and Mamba slots from the
//! runtime's allocators), runs chunked prefill and (speculative) decode under a per-step
//! token budget, and pauses, resumes and as a last resort evicts requests when KV blocks
//! run out. Every step's metadata is built by a [`MetadataBackend`]; the time of that call
//! (plus `synchronize`) is the measured per-step latency. The run ends with a [`Report`].
//!
//! The simulated clock (see [`config::StepTime`]) only paces arrivals: the workload and
//! every scheduling decision depend on the seed alone, never on measured times, so a seed
//! gives the same steps on every machine and backend.

pub mod config;
pub mod report;
pub mod rng;
pub mod scheduler;
pub mod svg;
pub mod table;
pub mod trace;
pub mod workload;

#[cfg(feature = "cli")]
pub mod cli;

use std::time::Instant;

use attention_layout_codegen::BatchDims;

use crate::backend::{BackendError, MetadataBackend};
use crate::batch::{BatchError, BatchState};
use crate::dims::{Dims, RuntimeDims};

pub use config::{LengthDist, Limits, SimConfig, StepTime};
pub use report::{Report, StepRecord};
pub use table::BucketTable;
pub use trace::{Trace, TraceRequest};

use rng::Rng;
use scheduler::{Pending, Scheduler};
use workload::Workload;

/// Why a simulation did not run or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The configuration cannot work with this layout (nothing ran).
    #[error("{0}")]
    Config(String),
    /// The backend rejected a step (a bug: the batch state builds valid steps).
    #[error("step {step}: {error}")]
    Step {
        /// Step number, from 0.
        step: u64,
        /// The backend's error.
        error: BackendError,
    },
    /// The batch state refused an operation (a bug in the scheduler).
    #[error("step {step}: batch state: {error}")]
    Batch {
        /// Step number, from 0.
        step: u64,
        /// The error.
        error: BatchError,
    },
    /// Draining took more steps than any schedule can need (a bug).
    #[error(
        "the run did not drain within {limit} steps ({live} live and {waiting} waiting requests left)"
    )]
    Stalled {
        /// The step limit.
        limit: u64,
        /// Live requests left.
        live: usize,
        /// Waiting requests left.
        waiting: usize,
    },
}

impl SimError {
    /// Whether the error is about the input (exit code 2) rather than a failure.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// A snapshot for progress displays, given after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Steps with arrivals (the configured `steps`).
    pub steps: u64,
    /// Whether arrivals have stopped and the run is draining.
    pub draining: bool,
    /// Live requests (running and paused).
    pub live: usize,
    /// Waiting requests.
    pub waiting: usize,
    /// Requests completed.
    pub completed: u64,
    /// KV blocks in use.
    pub kv_in_use: usize,
    /// Usable KV blocks.
    pub kv_capacity: usize,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Median metadata latency of the last 1,024 steps (updated every 64), microseconds.
    pub recent_p50_us: f64,
}

/// Counters of a run besides the per-step records (see [`Report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTotals {
    /// Requests that arrived.
    pub arrived: u64,
    /// Requests that finished.
    pub completed: u64,
    /// Output tokens of the finished requests.
    pub output_tokens: u64,
    /// Draft tokens proposed by decode rows (`s` per decode row).
    pub drafts: u64,
    /// Draft tokens accepted (as drawn, before clipping at a request's end).
    pub drafts_accepted: u64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Most KV blocks in use at once.
    pub kv_peak: usize,
    /// KV blocks in use at the end.
    pub kv_in_use_end: usize,
    /// Most Mamba slots in use at once.
    pub mamba_peak: usize,
    /// Mamba slots in use at the end.
    pub mamba_in_use_end: usize,
    /// Live requests at the end.
    pub live_end: usize,
    /// Waiting requests at the end.
    pub waiting_end: usize,
    /// Most live requests at once.
    pub live_peak: usize,
}

/// Runs a simulation of `config` on a layout, building metadata with `backend`, calling
/// `progress` after every step.
///
/// # Errors
///
/// [`SimError::Config`] before anything runs when the configuration cannot work with the
/// layout; the other variants are failures (bugs) found while running.
pub fn run(
    config: &SimConfig,
    dims: &RuntimeDims,
    backend: &mut dyn MetadataBackend,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, SimError> {
    let limits = config.check(dims)?;
    let state = BatchState::new(dims).map_err(|e| SimError::Config(e.to_string()))?;
    let mut sched = Scheduler::new(state, limits.token_budget);
    if config.bucket_chunking {
        sched.set_bucket_chunking(Some(table::BucketTable::of(dims)));
    }
    let mut workload = Workload::new(config, limits);
    let mut accept_rng = Rng::stream(config.seed, 3);
    let s = dims.num_spec() as u32;
    let kv_capacity = sched.state.kv_capacity();

    let mut records: Vec<StepRecord> =
        Vec::with_capacity(usize::try_from(config.steps.min(1 << 20)).unwrap_or(0) + 1024);
    let mut totals = RunTotals::default();
    let mut clock = 0.0f64;
    let mut step: u64 = 0;
    let mut drain_limit: Option<u64> = None;
    let mut recent = [0f64; 1024];
    let mut recent_sorted = Vec::with_capacity(recent.len());
    let mut recent_p50_us = 0.0;

    loop {
        let open = step < config.steps && !workload.is_exhausted();
        if open {
            while workload.peek().time <= clock {
                let a = workload.take();
                totals.arrived += 1;
                sched.waiting.push_back(Pending {
                    id: a.id,
                    arrival: a.time,
                    prompt_len: a.prompt_len,
                    max_output: a.max_output,
                    generated_before: 0,
                });
            }
        }
        if sched.state.live_count() == 0 && sched.waiting.is_empty() {
            if open {
                // Idle engine: jump to the next arrival.
                clock = clock.max(workload.peek().time);
                continue;
            }
            break;
        }
        if !open {
            if !config.drain {
                break;
            }
            // Each outstanding request needs at most `max_seq_len + 1` steps on its own.
            let limit = *drain_limit.get_or_insert_with(|| {
                let outstanding = (sched.state.live_count() + sched.waiting.len()) as u64;
                step + outstanding.saturating_mul(dims.max_seq_len() as u64 + 2) + 1000
            });
            if step >= limit {
                return Err(SimError::Stalled {
                    limit,
                    live: sched.state.live_count(),
                    waiting: sched.waiting.len(),
                });
            }
        }

        sched
            .schedule()
            .map_err(|error| SimError::Batch { step, error })?;
        totals.kv_peak = totals.kv_peak.max(sched.state.kv_pool().in_use());
        totals.mamba_peak = totals
            .mamba_peak
            .max(sched.state.mamba_pool().map_or(0, |p| p.in_use()));
        totals.live_peak = totals.live_peak.max(sched.state.live_count());

        let (result, elapsed) = sched.state.with_step(|input| {
            let t0 = Instant::now();
            let r = backend.step(input).and_then(|info| {
                backend.synchronize()?;
                Ok(info)
            });
            (r, t0.elapsed())
        });
        let info = result.map_err(|error| SimError::Step { step, error })?;
        let latency_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        records.push(StepRecord {
            latency_ns,
            real: info.real,
            padded: info.padded,
            bucket: info.bucket,
            paused: info.paused,
        });
        if let Some(slot) = recent.get_mut((step % 1024) as usize) {
            *slot = latency_ns as f64 / 1000.0;
        }

        totals.drafts += u64::from(info.real.decode) * u64::from(s);
        let p = config.acceptance;
        let (completed, output_tokens, accepted) = sched
            .commit(|| {
                let mut a = 0;
                while a < s && accept_rng.bernoulli(p) {
                    a += 1;
                }
                a
            })
            .map_err(|error| SimError::Batch { step, error })?;
        totals.completed += completed;
        totals.output_tokens += output_tokens;
        totals.drafts_accepted += accepted;
        clock += config.step_time.seconds(info.real.tokens);
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
            live: sched.state.live_count(),
            waiting: sched.waiting.len(),
            completed: totals.completed,
            kv_in_use: sched.state.kv_pool().in_use(),
            kv_capacity,
            sim_seconds: clock,
            recent_p50_us,
        });
    }

    totals.sim_seconds = clock;
    totals.kv_in_use_end = sched.state.kv_pool().in_use();
    totals.mamba_in_use_end = sched.state.mamba_pool().map_or(0, |p| p.in_use());
    totals.live_end = sched.state.live_count();
    totals.waiting_end = sched.waiting.len();
    Ok(Report::new(
        config,
        dims,
        &backend.name(),
        limits,
        records,
        totals,
        sched.counters,
    ))
}

/// The batch shape a step was padded to, checked against the layout: the matched bucket
/// for a graphed step, the eager padding of SEMANTICS §3.4 otherwise.
pub fn expected_padding<D: Dims>(
    dims: &D,
    real: BatchDims,
    bucket: Option<u32>,
) -> Option<BatchDims> {
    match bucket {
        Some(i) => dims.buckets().get(i as usize).copied(),
        None => Some(attention_layout_codegen::buckets::eager_padding(
            real,
            dims.max_requests() as u32,
            dims.max_tokens() as u32,
            dims.tp(),
            dims.num_spec() as u32,
        )),
    }
}
