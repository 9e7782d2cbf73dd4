//! `attention-layout tune`: a CUDA-graph bucket table derived from the traffic an engine
//! serves, instead of a fixed ladder.
//!
//! 1. **Record.** The tuning traffic (a seed of `simulate`'s workload, or one part of a
//!    trace) runs through the engine loop of [`crate::simulate`] on the layout as it is;
//!    every step's real shape `(tokens, prefill, decode)` is kept. Without bucket-aware
//!    chunking the scheduler never looks at the bucket table, so these shapes are the same
//!    under any table and a table can be priced from them alone.
//! 2. **Choose** at most `max_graphs` buckets ([`optimize`]): padded tokens cost what real
//!    ones do (the simulated clock's per-token time), an eager step costs its eager padding
//!    plus a fixed penalty. A per-graph memory figure in the layout
//!    (`graphs.graph_memory_mib`) and a memory budget lower the count further.
//! 3. **Evaluate honestly.** The chosen table becomes a layout spec (`graphs.buckets`,
//!    checked like any written one) and `simulate` runs the held-out traffic (another seed,
//!    or the trace's other part) on it and on the layout's own ladder. Both the tuning and
//!    the held-out figures are reported, so a table that only fits the tuning traffic
//!    shows it.
//! 4. **Bucket-aware chunking** (optional): the table is tuned again on steps scheduled
//!    with chunking (the shapes now depend on the table; a few rounds, the cheapest table
//!    on the tuning traffic kept) and every figure is also given with chunking on.
//!
//! Everything is seeded or read from a file and the search is exact integer arithmetic,
//! so a tuning run gives the same table on every machine.

pub mod cli;
pub mod optimize;

use std::collections::BTreeMap;

use attention_layout_codegen::spec::GraphSpec;
use attention_layout_codegen::{BatchDims, Geometry, LayoutSpec, SpecError};
use serde::Serialize;

use crate::simulate::{self, BucketTable, Report, SimConfig, SimError};
use attention_layout::backend::CpuBackend;
use attention_layout::dims::{Dims, RuntimeDims};

use optimize::{CostModel, LayoutFacts, OptimizeError, Shape};

/// How to tune.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// Most graphs (buckets) the table may have.
    pub max_graphs: usize,
    /// Cost of an eager step beyond its padding, microseconds.
    pub eager_penalty_us: f64,
    /// Graph memory budget, MiB (needs the layout's `graphs.graph_memory_mib`).
    pub graph_memory_mib: Option<u64>,
    /// Tune for, and also report, bucket-aware chunking.
    pub bucket_chunking: bool,
}

impl Default for TuneOptions {
    /// 32 graphs, [`DEFAULT_EAGER_PENALTY_US`], no memory budget, no chunking.
    fn default() -> Self {
        Self {
            max_graphs: 32,
            eager_penalty_us: DEFAULT_EAGER_PENALTY_US,
            graph_memory_mib: None,
            bucket_chunking: false,
        }
    }
}

/// The default cost of an eager step beyond its padding: 20 ms, two and a half times the
/// simulated clock's fixed step time (8 ms). An eager step launches every kernel of the
/// model from the host — for an 8B model thousands of launches of several microseconds
/// each — where a graph replays them with one; the figure is deliberately on the high
/// side, so that tables keep nearly every step graphed (a bucket table is bought to avoid
/// eager steps) and trade padding against graphs rather than against eager steps. Lower it
/// for a model whose eager steps are cheap.
pub const DEFAULT_EAGER_PENALTY_US: f64 = 20_000.0;

/// Rounds of re-tuning on chunked steps (with bucket-aware chunking).
const CHUNKING_ROUNDS: usize = 3;

/// Why tuning could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TuneError {
    /// A setting that cannot work (exit code 2).
    #[error("{0}")]
    Config(String),
    /// A simulation failed.
    #[error("{what}: {error}")]
    Simulate {
        /// Which run.
        what: &'static str,
        /// Its error.
        error: SimError,
    },
    /// The tuned table was refused by the spec rules (a bug).
    #[error("the tuned table was refused: {0}")]
    Spec(SpecError),
}

impl TuneError {
    /// Whether the error is about the input (exit code 2) rather than a failure.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config(_) => true,
            Self::Simulate { error, .. } => error.is_config(),
            Self::Spec(_) => false,
        }
    }
}

impl From<OptimizeError> for TuneError {
    fn from(e: OptimizeError) -> Self {
        Self::Config(e.to_string())
    }
}

/// Padding and eager steps of one run (or of recorded shapes under a table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    /// Buckets of the table.
    pub graphs: usize,
    /// Steps.
    pub steps: u64,
    /// Steps that found no bucket.
    pub eager_steps: u64,
    /// `eager_steps / steps`.
    pub eager_share: f64,
    /// Σ padded tokens.
    pub padded_tokens: u64,
    /// Σ real tokens.
    pub real_tokens: u64,
    /// `(padded − real) / padded`.
    pub padded_share: f64,
}

fn share(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Figures {
    /// The figures of a simulation's report.
    pub fn of_report(r: &Report) -> Self {
        Self {
            graphs: r.bucket_count,
            steps: r.steps,
            eager_steps: r.eager_steps,
            eager_share: r.eager_share,
            padded_tokens: r.padding.padded_tokens,
            real_tokens: r.padding.real_tokens,
            padded_share: r.padding.waste_share,
        }
    }

    /// The figures recorded shapes would have under `table` (what `simulate` reports for
    /// the same steps: the shapes do not depend on the table without chunking).
    pub fn of_shapes(shapes: &[Shape], table: &BucketTable) -> Self {
        let (mut steps, mut eager, mut padded, mut real) = (0u64, 0u64, 0u64, 0u64);
        for s in shapes {
            let (pad, graphed) = table.pad(s.real);
            steps = steps.saturating_add(s.steps);
            eager = eager.saturating_add(if graphed { 0 } else { s.steps });
            padded = padded.saturating_add(u64::from(pad.tokens).saturating_mul(s.steps));
            real = real.saturating_add(u64::from(s.real.tokens).saturating_mul(s.steps));
        }
        Self {
            graphs: table.buckets().len(),
            steps,
            eager_steps: eager,
            eager_share: share(eager, steps),
            padded_tokens: padded,
            real_tokens: real,
            padded_share: share(padded.saturating_sub(real), padded),
        }
    }
}

/// What tuning found, with every figure it reports. Serializes to the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuneOutcome {
    /// Layout name.
    pub layout: String,
    /// Buckets chosen.
    pub graphs: usize,
    /// The table, ascending, as `[tokens, prefill, decode]`.
    pub buckets: Vec<[u32; 3]>,
    /// Graphs allowed (after the memory budget).
    pub max_graphs: usize,
    /// Eager step penalty, microseconds.
    pub eager_penalty_us: f64,
    /// Cost of a padded token, microseconds.
    pub token_us: f64,
    /// Whether the table was tuned with bucket-aware chunking.
    pub bucket_chunking: bool,
    /// The tuning traffic, in words.
    pub tuning_traffic: String,
    /// The held-out traffic, in words.
    pub held_out_traffic: String,
    /// Buckets of the layout's own table.
    pub baseline_graphs: usize,
    /// The tuned table on the tuning traffic.
    pub tuned: Figures,
    /// The tuned table on the held-out traffic.
    pub held_out: Figures,
    /// The layout's own table on the tuning traffic.
    pub baseline_tuning: Figures,
    /// The layout's own table on the held-out traffic.
    pub baseline_held_out: Figures,
    /// With bucket-aware chunking: the tuned table on the tuning traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuned_chunked: Option<Figures>,
    /// With bucket-aware chunking: the tuned table on the held-out traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_chunked: Option<Figures>,
    /// With bucket-aware chunking: the layout's own table on the held-out traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_held_out_chunked: Option<Figures>,
}

/// The distinct real shapes of a run's steps, with their counts, in shape order.
pub fn shapes_of(report: &Report) -> Vec<Shape> {
    let mut m: BTreeMap<BatchDims, u64> = BTreeMap::new();
    for r in &report.records {
        *m.entry(r.real).or_default() += 1;
    }
    m.into_iter()
        .map(|(real, steps)| Shape { real, steps })
        .collect()
}

/// `spec` with its graph policy replaced by the explicit table `buckets` (other `graphs`
/// settings back to their defaults; the per-graph memory figure kept).
pub fn with_table(spec: &LayoutSpec, buckets: &[BatchDims]) -> LayoutSpec {
    let mut s = spec.clone();
    s.graphs = GraphSpec {
        buckets: Some(
            buckets
                .iter()
                .map(|b| [b.tokens, b.prefill, b.decode])
                .collect(),
        ),
        graph_memory_mib: spec.graphs.graph_memory_mib,
        ..GraphSpec::default()
    };
    s
}

/// Runs one simulation on the CPU backend.
fn simulate(
    what: &'static str,
    config: &SimConfig,
    dims: &RuntimeDims,
) -> Result<Report, TuneError> {
    let mut backend = CpuBackend::new(dims.clone());
    simulate::run(config, dims, &mut backend, &mut |_| {})
        .map_err(|error| TuneError::Simulate { what, error })
}

/// Graphs a memory budget allows, if both the budget and the layout's per-graph figure
/// are there.
///
/// # Errors
///
/// A budget without the layout's figure, or a budget below one graph.
pub fn graphs_allowed(spec: &LayoutSpec, opts: &TuneOptions) -> Result<usize, TuneError> {
    if opts.max_graphs == 0 {
        return Err(TuneError::Config(
            "--max-graphs must be at least 1 (every table holds the full decode bucket)".to_owned(),
        ));
    }
    let Some(budget) = opts.graph_memory_mib else {
        return Ok(opts.max_graphs);
    };
    let Some(per) = spec.graphs.graph_memory_mib.filter(|&m| m > 0) else {
        return Err(TuneError::Config(
            "--graph-memory needs the layout to state what one graph takes: set `graphs.graph_memory_mib`"
                .to_owned(),
        ));
    };
    let fit = budget / u64::from(per);
    if fit == 0 {
        return Err(TuneError::Config(format!(
            "--graph-memory {budget} MiB holds no graph of {per} MiB (the full decode bucket needs one)"
        )));
    }
    Ok(opts
        .max_graphs
        .min(usize::try_from(fit).unwrap_or(usize::MAX)))
}

/// Tunes `spec`'s bucket table on the `tuning` traffic and evaluates it on `held_out`
/// (see the module docs). `progress` is told what runs.
///
/// # Errors
///
/// [`TuneError::Config`] for settings that cannot work (checked before the long runs),
/// other variants for failures.
pub fn tune(
    spec: &LayoutSpec,
    tuning: &SimConfig,
    held_out: &SimConfig,
    opts: &TuneOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<TuneOutcome, TuneError> {
    let geometry = Geometry::new(spec).map_err(|e| TuneError::Config(e.to_string()))?;
    let base = RuntimeDims::new(geometry);
    let max_graphs = graphs_allowed(spec, opts)?;
    if !(opts.eager_penalty_us.is_finite() && opts.eager_penalty_us >= 0.0) {
        return Err(TuneError::Config(format!(
            "--eager-penalty-us must be a number of at least 0, got {}",
            opts.eager_penalty_us
        )));
    }
    for c in [tuning, held_out] {
        c.check(&base)
            .map_err(|e| TuneError::Config(e.to_string()))?;
    }
    let token_us = tuning.step_time.per_token_us;
    let cost = CostModel {
        token_ns: (token_us * 1000.0).round() as u64,
        eager_ns: (opts.eager_penalty_us * 1000.0).round() as u64,
    };
    let facts = LayoutFacts {
        rules: spec.table_rules(),
        strict: base.has_mamba(),
    };
    let plain = |c: &SimConfig| SimConfig {
        bucket_chunking: false,
        ..c.clone()
    };
    let chunked = |c: &SimConfig| SimConfig {
        bucket_chunking: true,
        ..c.clone()
    };
    let dims_of = |buckets: &[BatchDims]| -> Result<RuntimeDims, TuneError> {
        Geometry::new(&with_table(spec, buckets))
            .map(RuntimeDims::new)
            .map_err(TuneError::Spec)
    };

    progress("recording the tuning traffic");
    let base_tuning = simulate("tuning traffic", &plain(tuning), &base)?;
    let shapes = shapes_of(&base_tuning);
    progress("choosing buckets");
    let mut choice = optimize::optimize(facts, cost, &shapes, max_graphs)?;
    let mut tuned_dims = dims_of(&choice.buckets)?;

    let mut tuned_chunked = None;
    if opts.bucket_chunking {
        // The shapes now follow the table: tune again on chunked steps and keep the table
        // that costs least on the tuning traffic, chunked.
        let mut best: Option<(u128, optimize::Choice, RuntimeDims, Report)> = None;
        let mut candidate = choice.clone();
        for _ in 0..CHUNKING_ROUNDS {
            progress("tuning with bucket-aware chunking");
            let dims = dims_of(&candidate.buckets)?;
            let run = simulate("tuning traffic, chunked", &chunked(tuning), &dims)?;
            let run_shapes = shapes_of(&run);
            let c = optimize::table_cost(facts, cost, &run_shapes, &candidate.buckets);
            let next = optimize::optimize(facts, cost, &run_shapes, max_graphs)?;
            let better = best.as_ref().is_none_or(|(b, ..)| c < *b);
            if better {
                best = Some((c, candidate.clone(), dims, run));
            }
            if next.buckets == candidate.buckets {
                break;
            }
            candidate = next;
        }
        if let Some((_, c, dims, run)) = best {
            choice = c;
            tuned_dims = dims;
            tuned_chunked = Some(Figures::of_report(&run));
        }
    }

    progress("evaluating on the held-out traffic");
    let base_held = simulate("held-out traffic", &plain(held_out), &base)?;
    let tuned_held = simulate(
        "held-out traffic, tuned table",
        &plain(held_out),
        &tuned_dims,
    )?;
    let (held_chunked, base_held_chunked) = if opts.bucket_chunking {
        (
            Some(Figures::of_report(&simulate(
                "held-out traffic, tuned table, chunked",
                &chunked(held_out),
                &tuned_dims,
            )?)),
            Some(Figures::of_report(&simulate(
                "held-out traffic, chunked",
                &chunked(held_out),
                &base,
            )?)),
        )
    } else {
        (None, None)
    };

    let tuned_table = BucketTable::of(&tuned_dims);
    Ok(TuneOutcome {
        layout: spec
            .name
            .clone()
            .unwrap_or_else(|| "(unnamed layout)".to_owned()),
        graphs: choice.buckets.len(),
        buckets: choice
            .buckets
            .iter()
            .map(|b| [b.tokens, b.prefill, b.decode])
            .collect(),
        max_graphs,
        eager_penalty_us: opts.eager_penalty_us,
        token_us,
        bucket_chunking: opts.bucket_chunking,
        tuning_traffic: describe(tuning),
        held_out_traffic: describe(held_out),
        baseline_graphs: base.buckets().len(),
        tuned: Figures::of_shapes(&shapes, &tuned_table),
        held_out: Figures::of_report(&tuned_held),
        baseline_tuning: Figures::of_report(&base_tuning),
        baseline_held_out: Figures::of_report(&base_held),
        tuned_chunked,
        held_out_chunked: held_chunked,
        baseline_held_out_chunked: base_held_chunked,
    })
}

/// A traffic setting in words.
pub fn describe(c: &SimConfig) -> String {
    let drain = if c.drain { " then drain" } else { "" };
    match &c.trace {
        Some(t) => format!(
            "{t}; arrivals until its end or for {} steps{drain}",
            c.steps
        ),
        None => format!(
            "seed {}, Poisson {} req/s, prompt {}, output {}; {} steps of arrivals{drain}",
            c.seed, c.rate, c.prompt, c.output, c.steps
        ),
    }
}
