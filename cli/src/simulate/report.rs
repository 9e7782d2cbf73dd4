//! The report of a simulation run: what the workload was, what the steps looked like
//! (bucket hits, padding, eager share), what the metadata cost, how full the pools got.

use std::fmt;

use attention_layout_codegen::BatchDims;
use serde::Serialize;

use attention_layout::dims::{Dims, RuntimeDims};

use super::config::{Limits, SimConfig};
use super::scheduler::SchedCounters;
use super::{RunTotals, expected_padding};

/// One step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRecord {
    /// Time of the backend's `step` plus `synchronize`, nanoseconds.
    pub latency_ns: u64,
    /// Real shape `(tokens, prefill, decode)`.
    pub real: BatchDims,
    /// Padded shape (the bucket, or eager padding).
    pub padded: BatchDims,
    /// Index of the matched bucket (`None`: eager step).
    pub bucket: Option<u32>,
    /// Paused rows.
    pub paused: u32,
    /// Host time of ending the step with prepare, commit_sampled and resolve, nanoseconds
    /// (at least 1; 0 when it was ended otherwise). The next step's schedule was then
    /// prepared while this one ran: the async-scheduling path.
    pub end_ns: u32,
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSummary {
    /// Seed.
    pub seed: u64,
    /// Steps with arrivals.
    pub steps: u64,
    /// Whether the run drained.
    pub drain: bool,
    /// Arrivals per simulated second.
    pub rate: f64,
    /// Prompt length distribution.
    pub prompt: String,
    /// Output length distribution.
    pub output: String,
    /// Tokens per step.
    pub token_budget: u32,
    /// Draft tokens per decode request (`s`).
    pub speculative_tokens: u32,
    /// Draft acceptance probability.
    pub acceptance: f64,
    /// Simulated step time: fixed part, milliseconds.
    pub step_base_ms: f64,
    /// Simulated step time: per token, microseconds.
    pub step_token_us: f64,
    /// Longest prompt after clipping.
    pub max_prompt: u32,
    /// KV positions a request may use.
    pub max_positions: u64,
    /// The trace replayed (name, requests, span), when arrivals came from one.
    pub trace: Option<String>,
    /// Whether bucket-aware chunking was on.
    pub bucket_chunking: bool,
    /// Prefix caching's eviction policy (`ref_zero`, `lru`), `None` without it.
    pub prefix_caching: Option<String>,
    /// System prompt tokens every prompt starts with.
    pub system_prompt: u32,
    /// Turns per conversation.
    pub turns: u32,
}

/// What prefix caching did in a run (`--prefix-caching`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixReport {
    /// The eviction policy.
    pub policy: String,
    /// Durable Mamba state slots (0: none; hybrid layouts then share KV blocks only).
    pub mamba_cache_slots: usize,
    /// Prefill chunks committed (each one matched against the cache).
    pub lookups: u64,
    /// Chunks that matched at least one cached block.
    pub hits: u64,
    /// `hits / lookups`.
    pub hit_rate: f64,
    /// KV blocks matched, over all chunks.
    pub matched_blocks: u64,
    /// Prompt tokens not recomputed thanks to a match.
    pub prefill_tokens_saved: u64,
    /// Prompt tokens computed.
    pub prefill_tokens_computed: u64,
    /// `saved / (saved + computed)`.
    pub prefill_saved_share: f64,
    /// Most KV blocks owned by two requests or more at once.
    pub shared_blocks_peak: usize,
    /// Cached KV blocks evicted to make room (`lru`).
    pub evicted_blocks: u64,
    /// First chunks that restored their Mamba state from the durable cache.
    pub mamba_restores: u64,
    /// Mamba states stored into the durable cache.
    pub mamba_stores: u64,
}

impl PrefixReport {
    /// The prefix-caching part of a run's report.
    pub(crate) fn new(
        config: &SimConfig,
        state: &attention_layout::batch::BatchState,
        stats: attention_layout::batch::PrefixStats,
        shared_peak: usize,
    ) -> Self {
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Self {
            policy: config
                .prefix_caching
                .map_or("off", attention_layout::EvictionPolicy::name)
                .to_owned(),
            mamba_cache_slots: state.mamba_cache().map_or(0, |m| m.slots()),
            lookups: stats.lookups,
            hits: stats.hits,
            hit_rate: share(stats.hits, stats.lookups),
            matched_blocks: stats.matched_blocks,
            prefill_tokens_saved: stats.skipped_tokens,
            prefill_tokens_computed: stats.computed_tokens,
            prefill_saved_share: share(
                stats.skipped_tokens,
                stats.skipped_tokens + stats.computed_tokens,
            ),
            shared_blocks_peak: shared_peak,
            evicted_blocks: stats.evicted_blocks,
            mamba_restores: stats.mamba_restores,
            mamba_stores: stats.mamba_stores,
        }
    }
}

/// Request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// Arrived.
    pub arrived: u64,
    /// Admitted (re-admissions after evictions included).
    pub admitted: u64,
    /// Finished.
    pub completed: u64,
    /// Live (running or paused) at the end.
    pub live_at_end: usize,
    /// Waiting at the end.
    pub waiting_at_end: usize,
    /// Most live at once.
    pub live_peak: usize,
    /// Pauses for lack of KV blocks.
    pub pauses: u64,
    /// Resumes.
    pub resumes: u64,
    /// Evictions (released to recompute).
    pub evictions: u64,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Real tokens of all steps.
    pub real: u64,
    /// Of which prefill tokens.
    pub prefill: u64,
    /// Of which decode tokens (`s + 1` per decode row).
    pub decode: u64,
    /// Output tokens of the completed requests.
    pub output: u64,
    /// Draft tokens proposed.
    pub drafts: u64,
    /// Draft tokens accepted (as drawn).
    pub drafts_accepted: u64,
}

/// Padding: tokens the kernels process beyond the real ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Padding {
    /// Σ padded tokens.
    pub padded_tokens: u64,
    /// Σ real tokens.
    pub real_tokens: u64,
    /// Σ (padded − real).
    pub waste_tokens: u64,
    /// `waste_tokens / padded_tokens`.
    pub waste_share: f64,
    /// Waste of the graphed steps.
    pub graphed_waste_tokens: u64,
    /// Waste of the eager steps.
    pub eager_waste_tokens: u64,
    /// Steps whose padded shape is not the layout's (the matched bucket, or the eager
    /// padding of docs/SEMANTICS.md §3.4); 0 in a correct run.
    pub inconsistent_steps: u64,
}

/// Per-step metadata latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
    /// Sum over all steps, milliseconds.
    pub total_ms: f64,
}

/// The async-scheduling path: steps whose schedule was prepared while the step before ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AsyncSteps {
    /// Whether decode-only steps were ended through prepare / commit / resolve (not with
    /// draft tokens accepted with probability below 1: a prepared step counts every draft
    /// accepted).
    pub enabled: bool,
    /// Steps whose schedule was prepared.
    pub prepared_steps: u64,
    /// Metadata latency of the prepared steps.
    pub prepared_latency: Latency,
    /// Metadata latency of the other steps.
    pub other_latency: Latency,
    /// Host time of ending a step with prepare, commit_sampled and resolve: median,
    /// microseconds (0 when no step was).
    pub end_p50_us: f64,
}

/// Hits of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BucketHits {
    /// Index in the layout's ascending bucket list.
    pub index: u32,
    /// Bucket tokens.
    pub tokens: u32,
    /// Bucket prefill requests.
    pub prefill: u32,
    /// Bucket decode requests.
    pub decode: u32,
    /// Steps it served.
    pub hits: u64,
}

/// Pool use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pools {
    /// Usable KV blocks (the dummy excluded).
    pub kv_blocks: usize,
    /// Most KV blocks in use at once.
    pub kv_peak: usize,
    /// KV blocks in use at the end.
    pub kv_in_use_end: usize,
    /// Mamba slots (0 without Mamba).
    pub mamba_slots: usize,
    /// Most Mamba slots in use at once.
    pub mamba_peak: usize,
    /// Mamba slots in use at the end.
    pub mamba_in_use_end: usize,
}

/// The report of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Layout name.
    pub layout: String,
    /// Backend name.
    pub backend: String,
    /// Settings.
    pub config: ConfigSummary,
    /// Steps run.
    pub steps: u64,
    /// Steps a CUDA graph bucket served.
    pub graphed_steps: u64,
    /// Steps padded eagerly.
    pub eager_steps: u64,
    /// `eager_steps / steps`.
    pub eager_share: f64,
    /// Request counts.
    pub requests: Requests,
    /// Token counts.
    pub tokens: Tokens,
    /// Padding.
    pub padding: Padding,
    /// Per-step metadata latency.
    pub latency: Latency,
    /// The async-scheduling path and its cost.
    pub async_scheduling: AsyncSteps,
    /// Real tokens per second of metadata building (Σ real tokens / Σ step latency).
    pub metadata_tokens_per_second: f64,
    /// Buckets in the layout.
    pub bucket_count: usize,
    /// Buckets that served at least one step, ascending.
    pub bucket_hits: Vec<BucketHits>,
    /// Pool use.
    pub pools: Pools,
    /// What prefix caching did (omitted without `--prefix-caching`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixReport>,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Every step (not serialized).
    #[serde(skip)]
    pub records: Vec<StepRecord>,
    /// The layout's buckets, ascending (not serialized; `bucket_count` says how many).
    #[serde(skip)]
    pub buckets: Vec<BatchDims>,
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

impl Latency {
    /// The latency figures of a list of microsecond values (sorted here).
    fn of(values: &mut [f64]) -> Self {
        let total_us: f64 = values.iter().sum();
        let max_us = values.iter().copied().fold(0.0, f64::max);
        values.sort_by(f64::total_cmp);
        Self {
            p50_us: percentile(values, 0.50),
            p99_us: percentile(values, 0.99),
            mean_us: if values.is_empty() {
                0.0
            } else {
                total_us / values.len() as f64
            },
            max_us,
            total_ms: total_us / 1000.0,
        }
    }
}

impl Report {
    /// Assembles the report of a run.
    pub(crate) fn new(
        config: &SimConfig,
        dims: &RuntimeDims,
        backend: &str,
        limits: Limits,
        records: Vec<StepRecord>,
        totals: RunTotals,
        counters: SchedCounters,
    ) -> Self {
        let s1 = dims.speculative_tokens() as u64 + 1;
        let buckets = dims.buckets();
        let mut hits = vec![0u64; buckets.len()];
        let (mut graphed, mut real, mut decode, mut padded) = (0u64, 0u64, 0u64, 0u64);
        let (mut graphed_waste, mut eager_waste, mut inconsistent) = (0u64, 0u64, 0u64);
        let mut lat: Vec<f64> = Vec::with_capacity(records.len());
        let (mut prepared_lat, mut other_lat, mut end) = (Vec::new(), Vec::new(), Vec::new());
        let mut prepared = false;
        for r in &records {
            let us = r.latency_ns as f64 / 1000.0;
            // A step is prepared when the step before it ended through prepare.
            if std::mem::replace(&mut prepared, r.end_ns > 0) {
                prepared_lat.push(us);
            } else {
                other_lat.push(us);
            }
            if r.end_ns > 0 {
                end.push(r.end_ns as f64 / 1000.0);
            }
            let waste = u64::from(r.padded.tokens.saturating_sub(r.real.tokens));
            if let Some(h) = r.bucket.and_then(|b| hits.get_mut(b as usize)) {
                *h += 1;
                graphed += 1;
                graphed_waste += waste;
            } else {
                eager_waste += waste;
            }
            if expected_padding(dims, r.real, r.bucket) != Some(r.padded)
                || r.padded.tokens < r.real.tokens
            {
                inconsistent += 1;
            }
            real += u64::from(r.real.tokens);
            decode += u64::from(r.real.decode) * s1;
            padded += u64::from(r.padded.tokens);
            lat.push(r.latency_ns as f64 / 1000.0);
        }
        let total_us: f64 = lat.iter().sum();
        let max_us = lat.iter().copied().fold(0.0, f64::max);
        lat.sort_by(f64::total_cmp);
        let steps = records.len() as u64;
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let bucket_hits = buckets
            .iter()
            .zip(&hits)
            .enumerate()
            .filter(|(_, (_, h))| **h > 0)
            .map(|(i, (b, &h))| BucketHits {
                index: i as u32,
                tokens: b.tokens,
                prefill: b.prefill,
                decode: b.decode,
                hits: h,
            })
            .collect();
        let name = dims
            .geometry()
            .spec
            .name
            .clone()
            .unwrap_or_else(|| "(unnamed layout)".to_owned());
        Self {
            layout: name,
            backend: backend.to_owned(),
            config: ConfigSummary {
                seed: config.seed,
                steps: config.steps,
                drain: config.drain,
                rate: config.rate,
                prompt: config.prompt.to_string(),
                output: config.output.to_string(),
                token_budget: limits.token_budget,
                speculative_tokens: limits.speculative_tokens,
                acceptance: config.acceptance,
                step_base_ms: config.step_time.base_ms,
                step_token_us: config.step_time.per_token_us,
                max_prompt: limits.max_prompt,
                max_positions: limits.positions,
                trace: config.trace.as_ref().map(|t| t.to_string()),
                bucket_chunking: config.bucket_chunking,
                prefix_caching: config.prefix_caching.map(|p| p.name().to_owned()),
                system_prompt: config.system_prompt,
                turns: config.turns,
            },
            steps,
            graphed_steps: graphed,
            eager_steps: steps - graphed,
            eager_share: share(steps - graphed, steps),
            requests: Requests {
                arrived: totals.arrived,
                admitted: counters.admitted,
                completed: totals.completed,
                live_at_end: totals.live_end,
                waiting_at_end: totals.waiting_end,
                live_peak: totals.live_peak,
                pauses: counters.pauses,
                resumes: counters.resumes,
                evictions: counters.evictions,
            },
            tokens: Tokens {
                real,
                prefill: real.saturating_sub(decode),
                decode,
                output: totals.output_tokens,
                drafts: totals.drafts,
                drafts_accepted: totals.drafts_accepted,
            },
            padding: Padding {
                padded_tokens: padded,
                real_tokens: real,
                waste_tokens: padded.saturating_sub(real),
                waste_share: share(padded.saturating_sub(real), padded),
                graphed_waste_tokens: graphed_waste,
                eager_waste_tokens: eager_waste,
                inconsistent_steps: inconsistent,
            },
            async_scheduling: AsyncSteps {
                enabled: totals.async_scheduling,
                prepared_steps: prepared_lat.len() as u64,
                prepared_latency: Latency::of(&mut prepared_lat),
                other_latency: Latency::of(&mut other_lat),
                end_p50_us: Latency::of(&mut end).p50_us,
            },
            latency: Latency {
                p50_us: percentile(&lat, 0.50),
                p99_us: percentile(&lat, 0.99),
                mean_us: if steps == 0 {
                    0.0
                } else {
                    total_us / steps as f64
                },
                max_us,
                total_ms: total_us / 1000.0,
            },
            metadata_tokens_per_second: if total_us > 0.0 {
                real as f64 / (total_us / 1e6)
            } else {
                0.0
            },
            bucket_count: buckets.len(),
            bucket_hits,
            pools: Pools {
                kv_blocks: dims.dummy_block().max(0) as usize,
                kv_peak: totals.kv_peak,
                kv_in_use_end: totals.kv_in_use_end,
                mamba_slots: if dims.has_mamba() {
                    dims.max_requests()
                } else {
                    0
                },
                mamba_peak: totals.mamba_peak,
                mamba_in_use_end: totals.mamba_in_use_end,
            },
            prefix: None,
            sim_seconds: totals.sim_seconds,
            records,
            buckets: buckets.to_vec(),
        }
    }

    /// The report as pretty-printed JSON (per-step records left out), schema
    /// [`crate::reports::SIMULATE`] (`docs/JSON-REPORTS.md`).
    pub fn to_json(&self) -> String {
        crate::reports::to_json(crate::reports::SIMULATE, self)
    }
}

/// A count with thousands separators.
pub(crate) fn n(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A share as a percentage with one decimal.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let r = &self.requests;
        let t = &self.tokens;
        let p = &self.padding;
        let l = &self.latency;
        let pools = &self.pools;
        writeln!(
            f,
            "simulate {} on the {} backend",
            self.layout, self.backend
        )?;
        writeln!(
            f,
            "  workload   seed {}, {} steps of arrivals{}, {}, token budget {}, {} draft tokens per decode request{}{}",
            c.seed,
            n(c.steps),
            if c.drain { " then drain" } else { "" },
            match &c.trace {
                Some(t) => t.clone(),
                None => format!("Poisson {} req/s", c.rate),
            },
            n(u64::from(c.token_budget)),
            c.speculative_tokens,
            if c.speculative_tokens > 0 {
                format!(", acceptance {}", c.acceptance)
            } else {
                String::new()
            },
            if c.bucket_chunking {
                ", bucket-aware chunking"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "             {} (clipped to {} prompt / {} positions)",
            if c.trace.is_some() {
                "lengths from the trace".to_owned()
            } else {
                format!("prompt {}, output {}", c.prompt, c.output)
            },
            n(u64::from(c.max_prompt)),
            n(c.max_positions)
        )?;
        if c.system_prompt > 0 || c.turns > 1 {
            writeln!(
                f,
                "             shared prefixes: a {}-token system prompt, {} turn{} per conversation (each resends its history)",
                n(u64::from(c.system_prompt)),
                c.turns,
                if c.turns == 1 { "" } else { "s" }
            )?;
        }
        writeln!(
            f,
            "  steps      {} ({} graphed, {} eager = {} eager share), {:.1} simulated s",
            n(self.steps),
            n(self.graphed_steps),
            n(self.eager_steps),
            pct(self.eager_share),
            self.sim_seconds
        )?;
        writeln!(
            f,
            "  requests   {} arrived, {} completed, {} live and {} waiting at the end (peak {} live)",
            n(r.arrived),
            n(r.completed),
            n(r.live_at_end as u64),
            n(r.waiting_at_end as u64),
            n(r.live_peak as u64)
        )?;
        writeln!(
            f,
            "             {} pauses, {} resumes, {} evictions, {} admissions",
            n(r.pauses),
            n(r.resumes),
            n(r.evictions),
            n(r.admitted)
        )?;
        writeln!(
            f,
            "  tokens     {} processed ({} prefill, {} decode), {} generated{}",
            n(t.real),
            n(t.prefill),
            n(t.decode),
            n(t.output),
            if t.drafts > 0 {
                format!(
                    ", {} of {} drafts accepted",
                    n(t.drafts_accepted),
                    n(t.drafts)
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  metadata   median {:.2} µs, 99th percentile {:.2} µs, mean {:.2} µs, max {:.1} µs per step; {:.3e} tokens/s",
            l.p50_us, l.p99_us, l.mean_us, l.max_us, self.metadata_tokens_per_second
        )?;
        let a = &self.async_scheduling;
        if a.enabled {
            writeln!(
                f,
                "  async      {} of {} steps prepared while the step before ran: median {:.2} µs, 99th percentile {:.2} µs; other steps median {:.2} µs; ending a step with prepare + commit + resolve: median {:.2} µs",
                n(a.prepared_steps),
                n(self.steps),
                a.prepared_latency.p50_us,
                a.prepared_latency.p99_us,
                a.other_latency.p50_us,
                a.end_p50_us
            )?;
        } else {
            writeln!(
                f,
                "  async      off: draft tokens are accepted with probability below 1, which the prepared path (every draft accepted) cannot represent"
            )?;
        }
        writeln!(
            f,
            "  padding    {} padded tokens for {} real: waste {} ({} of padded; graphed {}, eager {}); {} steps off the bucket table",
            n(p.padded_tokens),
            n(p.real_tokens),
            n(p.waste_tokens),
            pct(p.waste_share),
            n(p.graphed_waste_tokens),
            n(p.eager_waste_tokens),
            n(p.inconsistent_steps)
        )?;
        writeln!(
            f,
            "  pools      KV peak {} of {} blocks ({}), {} in use at the end{}",
            n(pools.kv_peak as u64),
            n(pools.kv_blocks as u64),
            pct(if pools.kv_blocks == 0 {
                0.0
            } else {
                pools.kv_peak as f64 / pools.kv_blocks as f64
            }),
            n(pools.kv_in_use_end as u64),
            if pools.mamba_slots > 0 {
                format!(
                    "; Mamba peak {} of {} slots, {} in use at the end",
                    pools.mamba_peak, pools.mamba_slots, pools.mamba_in_use_end
                )
            } else {
                String::new()
            }
        )?;
        if let Some(x) = &self.prefix {
            writeln!(
                f,
                "  prefix     {}: {} of {} prefill chunks hit ({}), {} prompt tokens saved ({} of prefill), peak {} blocks shared, {} evicted{}",
                x.policy,
                n(x.hits),
                n(x.lookups),
                pct(x.hit_rate),
                n(x.prefill_tokens_saved),
                pct(x.prefill_saved_share),
                n(x.shared_blocks_peak as u64),
                n(x.evicted_blocks),
                if x.mamba_cache_slots > 0 {
                    format!(
                        "; Mamba cache {} slots: {} restores, {} states stored",
                        n(x.mamba_cache_slots as u64),
                        n(x.mamba_restores),
                        n(x.mamba_stores)
                    )
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(
            f,
            "  buckets    {} of {} hit (tokens, prefill, decode: steps), most used first:",
            self.bucket_hits.len(),
            self.bucket_count
        )?;
        let mut top: Vec<&BucketHits> = self.bucket_hits.iter().collect();
        top.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.index.cmp(&b.index)));
        let shown = top.len().min(12);
        for row in top.chunks(4).take(shown.div_ceil(4)) {
            let cells: Vec<String> = row
                .iter()
                .map(|b| {
                    format!(
                        "({:>5}, {:>3}, {:>3}): {:>6}",
                        b.tokens,
                        b.prefill,
                        b.decode,
                        n(b.hits)
                    )
                })
                .collect();
            writeln!(f, "             {}", cells.join("   "))?;
        }
        if top.len() > shown {
            writeln!(f, "             … {} more", top.len() - shown)?;
        }
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
    fn percentiles_and_separators() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(n(1_234_567), "1,234,567");
        assert_eq!(n(12), "12");
        assert_eq!(n(123), "123");
        assert_eq!(n(1000), "1,000");
    }
}
