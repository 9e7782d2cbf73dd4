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
pub mod ep;
pub mod report;
pub mod rng;
pub mod scheduler;
pub mod svg;
pub mod table;
pub mod trace;
pub mod workload;

pub mod cli;

use std::time::Instant;

use attention_layout_codegen::BatchDims;

use attention_layout::backend::{BackendError, MetadataBackend};
use attention_layout::batch::{AsyncError, BatchError, BatchState, PrefixOptions};
use attention_layout::dims::{Dims, RuntimeDims};

pub use config::{LengthDist, Limits, MAX_STEPS, MAX_WAITING, SimConfig, StepTime};
pub use ep::{EpConfig, EpReport, run_ep};
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
    /// The batch state refused a prepare, commit or resolve (a bug in the simulator's
    /// async-scheduling path).
    #[error("step {step}: async scheduling: {error}")]
    Async {
        /// Step number, from 0.
        step: u64,
        /// The error.
        error: AsyncError,
    },
    /// Requests arrived faster than the layout served them until the waiting queue held
    /// [`MAX_WAITING`] (the run stopped: the configuration asks for more than the memory
    /// bound allows).
    #[error(
        "the waiting queue reached {limit} requests at step {step} ({sim_seconds:.3} simulated s, {completed} requests completed): {rate} requests/s overload this layout; lower the rate or the number of steps"
    )]
    Overloaded {
        /// The queue bound, [`MAX_WAITING`].
        limit: usize,
        /// Step number, from 0.
        step: u64,
        /// Simulated seconds.
        sim_seconds: f64,
        /// Requests completed so far.
        completed: u64,
        /// The configured arrival rate.
        rate: f64,
    },
    /// Draining would take the run past [`MAX_STEPS`] steps (the run stopped).
    #[error(
        "the run reached {limit} steps while draining ({live} live and {waiting} waiting requests left); lower the rate or the number of steps, or do not drain"
    )]
    TooLong {
        /// The step bound, [`MAX_STEPS`].
        limit: u64,
        /// Live requests left.
        live: usize,
        /// Waiting requests left.
        waiting: usize,
    },
    /// A failure on one rank of an expert-parallel run (`ep::run_ep`).
    #[error("rank {rank}: {error}")]
    Rank {
        /// The rank.
        rank: u32,
        /// What failed there.
        error: Box<SimError>,
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
    /// Whether the error is about the input (exit code 2) rather than a failure: a
    /// configuration refused before the run, or one that asked for more than the memory
    /// bounds ([`MAX_STEPS`], [`MAX_WAITING`]) allow.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::Overloaded { .. } | Self::TooLong { .. }
        ) || matches!(self, Self::Rank { error, .. } if error.is_config())
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
    /// Whether decode-only steps were ended through prepare / commit / resolve.
    pub async_scheduling: bool,
    /// Most KV blocks owned by two requests or more at once (prefix caching).
    pub kv_shared_peak: usize,
}

/// Runs a simulation of `config` on a layout, building metadata with `backend`, calling
/// `progress` after every step.
///
/// # Errors
///
/// [`SimError::Config`] before anything runs when the configuration cannot work with the
/// layout; [`SimError::Overloaded`] or [`SimError::TooLong`] when the run would pass a
/// memory bound; the other variants are failures (bugs) found while running.
pub fn run(
    config: &SimConfig,
    dims: &RuntimeDims,
    backend: &mut dyn MetadataBackend,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, SimError> {
    run_within(
        config,
        dims,
        backend,
        progress,
        Bounds {
            steps: MAX_STEPS,
            waiting: MAX_WAITING,
        },
    )
}

/// The memory bounds of a run: [`MAX_STEPS`] and [`MAX_WAITING`], smaller in tests.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    steps: u64,
    waiting: usize,
}

fn run_within(
    config: &SimConfig,
    dims: &RuntimeDims,
    backend: &mut dyn MetadataBackend,
    progress: &mut dyn FnMut(&Progress),
    bounds: Bounds,
) -> Result<Report, SimError> {
    let limits = config.check(dims)?;
    let state = match config.prefix_caching {
        Some(policy) => BatchState::with_prefix_caching(
            dims,
            PrefixOptions {
                mamba_cache_slots: config.prefix_mamba_slots.or(PrefixOptions::for_layout(
                    dims.geometry(),
                    policy,
                )
                .mamba_cache_slots),
                policy,
            },
        ),
        None => BatchState::new(dims),
    }
    .map_err(|e| SimError::Config(e.to_string()))?;
    let mut sched = Scheduler::new(state, limits.token_budget);
    if config.prefix_caching.is_some() {
        sched.set_prompt_ids(Some(config.system_prompt));
    }
    if config.bucket_chunking {
        sched.set_bucket_chunking(Some(table::BucketTable::of(dims)));
    }
    let mut workload = Workload::new(config, limits);
    let mut accept_rng = Rng::stream(config.seed, 3);
    let s = dims.speculative_tokens() as u32;
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
    // Whether decode-only steps end through prepare / commit / resolve (not with draft
    // tokens that can be rejected).
    // Prefix caching ends every step with commit_step (prepare/resolve refuse it).
    let async_path = (s == 0 || config.acceptance >= 1.0) && config.prefix_caching.is_none();

    loop {
        let open = step < config.steps && !workload.is_exhausted();
        if open {
            while workload.peek().time <= clock {
                if sched.waiting.len() >= bounds.waiting {
                    return Err(SimError::Overloaded {
                        limit: bounds.waiting,
                        step,
                        sim_seconds: clock,
                        completed: totals.completed,
                        rate: config.rate,
                    });
                }
                let a = workload.take();
                totals.arrived += 1;
                sched.waiting.push_back(Pending {
                    id: a.id,
                    arrival: a.time,
                    prompt_len: a.prompt_len,
                    max_output: a.max_output,
                    generated_before: 0,
                    conversation: a.conversation,
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
            if step >= bounds.steps {
                return Err(SimError::TooLong {
                    limit: bounds.steps,
                    live: sched.state.live_count(),
                    waiting: sched.waiting.len(),
                });
            }
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
        totals.kv_peak = totals.kv_peak.max(sched.state.kv_in_use());
        totals.mamba_peak = totals
            .mamba_peak
            .max(sched.state.mamba_pool().map_or(0, |p| p.in_use()));
        totals.live_peak = totals.live_peak.max(sched.state.live_count());
        if config.prefix_caching.is_some() {
            totals.kv_shared_peak = totals.kv_shared_peak.max(sched.state.kv_shared());
        }

        // With the step's origin: a device backend stages a steady step (after a prepared
        // step whose rows all continued) from its changes alone.
        let (result, elapsed) = sched.state.with_step_origin(|input, origin| {
            let t0 = Instant::now();
            let r = backend.step_with_origin(input, origin).and_then(|info| {
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
            end_ns: 0,
        });
        if let Some(slot) = recent.get_mut((step % 1024) as usize) {
            *slot = latency_ns as f64 / 1000.0;
        }

        totals.drafts += u64::from(info.real.decode) * u64::from(s);
        let p = config.acceptance;
        // Async scheduling: a decode-only step without paused rows is ended the way an
        // engine that overlaps the next step's preparation with the forward pass ends it
        // (prepare, commit the sampled tokens, resolve). Not with rejectable drafts: the
        // prepared path advances every row by s + 1.
        let t_end = Instant::now();
        let prepared = async_path
            && sched.state.can_prepare().is_ok()
            && match sched.state.prepare() {
                Ok(_) => true,
                Err(AsyncError::OutOfBlocks { .. }) => false,
                Err(error) => return Err(SimError::Async { step, error }),
            };
        let (completed, output_tokens, accepted) = if prepared {
            let rows = (info.real.decode + info.real.prefill) as usize;
            let r = sched
                .resolve_prepared(rows)
                .map_err(|error| SimError::Async { step, error })?;
            if let Some(last) = records.last_mut() {
                last.end_ns = u32::try_from(t_end.elapsed().as_nanos())
                    .unwrap_or(u32::MAX)
                    .max(1);
            }
            r
        } else {
            sched
                .commit(|| {
                    let mut a = 0;
                    while a < s && accept_rng.bernoulli(p) {
                        a += 1;
                    }
                    a
                })
                .map_err(|error| SimError::Batch { step, error })?
        };
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
            kv_in_use: sched.state.kv_in_use(),
            kv_capacity,
            sim_seconds: clock,
            recent_p50_us,
        });
    }

    totals.sim_seconds = clock;
    totals.kv_in_use_end = sched.state.kv_in_use();
    totals.mamba_in_use_end = sched.state.mamba_pool().map_or(0, |p| p.in_use());
    totals.live_end = sched.state.live_count();
    totals.waiting_end = sched.waiting.len();
    let mut report = Report::new(
        config,
        dims,
        &backend.name(),
        limits,
        records,
        RunTotals {
            async_scheduling: async_path,
            ..totals
        },
        sched.counters,
    );
    report.prefix = sched
        .state
        .prefix_stats()
        .map(|stats| report::PrefixReport::new(config, &sched.state, stats, totals.kv_shared_peak));
    Ok(report)
}

/// The batch shape a step was padded to, checked against the layout: the matched bucket
/// for a graphed step, the eager padding of docs/SEMANTICS.md §3.4 otherwise.
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
            dims.tensor_parallel(),
            dims.speculative_tokens() as u32,
        )),
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
    use attention_layout::backend::CpuBackend;
    use attention_layout::codegen::{Geometry, LayoutSpec};

    fn nemotron() -> RuntimeDims {
        let (src, name) = attention_layout::layouts::read("nemotron-h-8b").unwrap();
        RuntimeDims::new(Geometry::new(&LayoutSpec::from_toml_str(&src, &name).unwrap()).unwrap())
    }

    fn run_bounded(config: &SimConfig, bounds: Bounds) -> Result<Report, SimError> {
        let dims = nemotron();
        let mut backend = CpuBackend::new(dims.clone());
        run_within(config, &dims, &mut backend, &mut |_| {}, bounds)
    }

    /// Short requests, 8 ms steps: about `rate / 125` arrivals per step.
    fn config(steps: u64, rate: f64) -> SimConfig {
        SimConfig {
            steps,
            rate,
            prompt: LengthDist::Uniform { lo: 8, hi: 64 },
            output: LengthDist::Uniform { lo: 2, hi: 8 },
            step_time: StepTime {
                base_ms: 8.0,
                per_token_us: 0.0,
            },
            ..SimConfig::default()
        }
    }

    #[test]
    fn an_arrival_past_the_queue_bound_stops_the_run_as_refused_input() {
        let bounds = Bounds {
            steps: 1000,
            waiting: 500,
        };
        // 1e6 requests/s: 8,000 arrive during the first step.
        let e = run_bounded(&config(50, 1e6), bounds).unwrap_err();
        assert!(e.is_config(), "{e}");
        let SimError::Overloaded { limit, step, .. } = e else {
            panic!("{e}")
        };
        assert_eq!((limit, step), (500, 1));
        assert!(
            e.to_string()
                .starts_with("the waiting queue reached 500 requests at step 1"),
            "{e}"
        );
        // A rate the layout keeps up with stays under the same bound.
        let r = run_bounded(&config(50, 1000.0), bounds).unwrap();
        assert_eq!(r.requests.completed, r.requests.arrived);
    }

    #[test]
    fn a_drain_past_the_step_bound_stops_the_run_as_refused_input() {
        let bounds = Bounds {
            steps: 60,
            waiting: 100_000,
        };
        // 20 steps of 640 arrivals each are far more than 40 more steps can finish.
        let e = run_bounded(&config(20, 80_000.0), bounds).unwrap_err();
        assert!(e.is_config(), "{e}");
        let SimError::TooLong { limit, waiting, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(limit, 60);
        assert!(waiting > 0);
        // Without the drain the same run stops at its 20 steps.
        let r = run_bounded(
            &SimConfig {
                drain: false,
                ..config(20, 80_000.0)
            },
            bounds,
        )
        .unwrap();
        assert_eq!(r.steps, 20);
    }

    /// The figures `MAX_STEPS` and `MAX_WAITING` document: 48 bytes a step record (and 8
    /// for the sorted latency), 40 a waiting request, under a gigabyte in all (the queue
    /// rounded up to a power of two, as a growing buffer may be).
    #[test]
    fn the_memory_bounds_keep_a_run_under_a_gigabyte() {
        assert_eq!(std::mem::size_of::<StepRecord>(), 48);
        assert_eq!(std::mem::size_of::<Pending>(), 40);
        let per_step = std::mem::size_of::<StepRecord>() + std::mem::size_of::<f64>();
        let queue = MAX_WAITING.next_power_of_two() * std::mem::size_of::<Pending>();
        let total = MAX_STEPS as usize * per_step + queue;
        assert!(total < 1 << 30, "{total} bytes");
    }
}
