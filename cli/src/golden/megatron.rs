//! The Megatron metadata record kinds (`buckets`, `step`, `error`) and its allocators'
//! (`kv_allocator`, `mamba_slots`): their serde types and their replay.

use serde::{Deserialize, Serialize};

use attention_layout_codegen::Geometry;
use attention_layout_codegen::buckets::{self, BatchDims, Distribution};
use attention_layout_codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};

use attention_layout::alloc::{AllocError, KvBlockAllocator, MambaSlotPool};
use attention_layout::dims::{Dims, RuntimeDims};
use attention_layout::error::StepError;
use attention_layout::fill::StepInfo;
use attention_layout::metadata::{HostMetadata, MetadataView};
use attention_layout::step::{IntermediateOffsets, Phase, RequestRow, StepInput};

use super::{Cmp, Mismatch, Record, Report, Unused, lines, read_line, spelled};

/// Compares fields of a record section with ours, each labelled `section.field` as the
/// record spells it (the section's variable is named like the record's key).
macro_rules! compare {
    ($cmp:ident . $how:ident : $($section:ident . $field:ident = $got:expr;)*) => {$(
        $cmp.$how(
            concat!(stringify!($section), ".", stringify!($field)),
            &$section.$field,
            &$got,
        );
    )*};
}

/// An id read from a record as `i32`; a value outside `i32` becomes `i32::MIN`, which
/// every consumer rejects as out of range (an `as` cast could wrap it onto a valid id).
fn id32(x: i64) -> i32 {
    i32::try_from(x).unwrap_or(i32::MIN)
}

fn widen32(x: &[i32]) -> Vec<i64> {
    x.iter().map(|&v| i64::from(v)).collect()
}

fn widen_u32(x: &[u32]) -> Vec<i64> {
    x.iter().map(|&v| i64::from(v)).collect()
}

// ---- the layout of a record --------------------------------------------------------------

/// A golden `config`: the Megatron settings a `buckets`, `step` or `error` record ran with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    max_requests: u32,
    max_tokens: u32,
    max_seq_len: u32,
    block_size: u32,
    #[serde(rename = "num_spec")]
    speculative_tokens: u32,
    #[serde(rename = "tp")]
    tensor_parallel: u32,
    #[serde(default)]
    hybrid: bool,
    /// Hybrid configs only.
    mamba_chunk_size: Option<u32>,
    /// Hybrid configs only: the convolution width.
    d_conv: Option<u32>,
    /// Absent or `null`: no CUDA graphs; `-1`: Megatron picks the count; `n ≥ 1`: `n`.
    num_cuda_graphs: Option<i64>,
    #[serde(default)]
    distribution: GraphDistribution,
    cuda_graph_max_tokens: Option<u32>,
    mixed_prefill_count: u32,
    #[serde(default = "yes")]
    non_decode_graphs: bool,
    /// Chunked prefill does not change the layout.
    #[serde(rename = "chunked_prefill")]
    _chunked_prefill: Unused,
}

fn yes() -> bool {
    true
}

/// A config's `distribution` of graph token counts.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GraphDistribution {
    #[default]
    Exponential,
    Linear,
}

/// The layout spec a golden `config` describes, with the KV pool size of `derived` when
/// the record has one.
fn spec_of(config: &Config, kv_pool: Option<u32>) -> Result<LayoutSpec, String> {
    let c = config;
    let (r, t, s) = (c.max_requests, c.max_tokens, c.speculative_tokens);
    let count = match c.num_cuda_graphs {
        None => GraphCount::Off,
        Some(-1) => GraphCount::Auto,
        Some(n) if n >= 1 => GraphCount::Count(
            u32::try_from(n).map_err(|_| format!("num_cuda_graphs {n} out of range"))?,
        ),
        Some(n) => return Err(format!("num_cuda_graphs {n}")),
    };
    let hybrid_field = |v: Option<u32>, key: &str| {
        v.ok_or_else(|| format!("config lacks `{key}` (a hybrid config)"))
    };
    // What the context passes (docs/SEMANTICS.md §3.2): min(max(configured, R(s+1)), T).
    let budget = c.cuda_graph_max_tokens.unwrap_or(t).max(r * (s + 1)).min(t);
    Ok(LayoutSpec {
        name: None,
        source: None,
        model: if c.hybrid {
            ModelKind::Hybrid
        } else {
            ModelKind::Mha
        },
        max_requests: r,
        max_tokens: t,
        max_seq_len: c.max_seq_len,
        block_size: c.block_size,
        speculative_tokens: s,
        tensor_parallel: c.tensor_parallel,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: kv_pool,
        mamba: c
            .hybrid
            .then(|| -> Result<MambaSpec, String> {
                Ok(MambaSpec {
                    chunk_size: hybrid_field(c.mamba_chunk_size, "mamba_chunk_size")?,
                    conv_width: hybrid_field(c.d_conv, "d_conv")?,
                })
            })
            .transpose()?,
        graphs: GraphSpec {
            count,
            distribution: match c.distribution {
                GraphDistribution::Exponential => Distribution::Exponential,
                GraphDistribution::Linear => Distribution::Linear,
            },
            token_budget: Some(budget),
            mixed_prefill: c.mixed_prefill_count,
            non_decode: c.non_decode_graphs,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    })
}

/// A `[tokens, prefill, decode]` triple.
type Shape = [u32; 3];

fn batch_dims([t, p, d]: Shape) -> BatchDims {
    BatchDims::new(t, p, d)
}

// ---- buckets -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BucketsRecord {
    config: Config,
    buckets: Vec<Shape>,
    /// `null`: no graphs, so no token counts.
    token_counts: Option<Vec<i64>>,
    matches: Vec<BucketMatch>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketMatch {
    real: Shape,
    strict: bool,
    /// `null`: no bucket fits.
    #[serde(rename = "match")]
    matched: Option<Shape>,
}

pub(super) fn replay_buckets(rec: &BucketsRecord, cmp: &mut Cmp) -> Result<(), String> {
    let spec = spec_of(&rec.config, None)?;
    let list = buckets::build_buckets(&spec.bucket_params());
    compare_bucket_set(cmp, &rec.buckets, &list);
    let counts = buckets::token_counts(&list);
    match &rec.token_counts {
        None if !counts.is_empty() => {
            cmp.miss("token_counts", None, "null".into(), format!("{counts:?}"));
        }
        None => {}
        Some(want) => cmp.seq("token_counts", want, &widen_u32(&counts)),
    }
    for (j, m) in rec.matches.iter().enumerate() {
        let real = batch_dims(m.real);
        let want = m.matched.map(batch_dims);
        let got = buckets::match_bucket(real, &list, m.strict);
        if want != got {
            cmp.miss(
                &format!("matches[{j}] {real:?} strict={}", m.strict),
                None,
                format!("{want:?}"),
                format!("{got:?}"),
            );
        }
    }
    Ok(())
}

fn compare_bucket_set(cmp: &mut Cmp, want: &[Shape], got: &[BatchDims]) {
    let mut want_set: Vec<BatchDims> = want.iter().copied().map(batch_dims).collect();
    want_set.sort();
    want_set.dedup();
    let mut got_set = got.to_vec();
    got_set.sort();
    if want_set != got_set {
        let first = want_set
            .iter()
            .zip(&got_set)
            .position(|(a, b)| a != b)
            .unwrap_or(want_set.len().min(got_set.len()));
        cmp.miss(
            "buckets (as a set, ascending)",
            Some(first),
            format!("{} buckets {:?}", want_set.len(), want_set.get(first)),
            format!("{} buckets {:?}", got_set.len(), got_set.get(first)),
        );
    }
}

// ---- step and error ----------------------------------------------------------------------

/// A step's inputs (`step.inputs` and `error.inputs`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inputs {
    requests: Vec<InputRow>,
    token_to_input_ids: Vec<i64>,
    token_to_request_idx: Vec<i64>,
    /// Per prefill request, up to 3 offsets; `null` when the step has none.
    intermediate_offsets: Option<Vec<Vec<i64>>>,
    intermediate_counts: Option<Vec<i64>>,
    /// Implied by the rows' phases.
    #[serde(rename = "paused_request_count")]
    _paused_request_count: Unused,
    /// The length of `token_to_input_ids`.
    #[serde(rename = "active_token_count")]
    _active_token_count: Unused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputRow {
    phase: InputPhase,
    q: u32,
    kv: u32,
    blocks: Vec<i64>,
    /// Hybrid configs only.
    mamba_slot: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InputPhase {
    Paused,
    Decode,
    Prefill,
}

impl From<InputPhase> for Phase {
    fn from(p: InputPhase) -> Self {
        match p {
            InputPhase::Paused => Phase::Paused,
            InputPhase::Decode => Phase::Decode,
            InputPhase::Prefill => Phase::Prefill,
        }
    }
}

/// A record's inputs in the runtime's types, owned (the rows borrow the block lists).
struct OwnedInput {
    blocks: Vec<Vec<i32>>,
    rows: Vec<(Phase, u32, u32, i32)>,
    token_ids: Vec<i64>,
    intermediate: Option<Vec<IntermediateOffsets>>,
}

impl OwnedInput {
    fn new(inputs: &Inputs) -> Result<Self, String> {
        let blocks = inputs
            .requests
            .iter()
            .map(|r| r.blocks.iter().copied().map(id32).collect())
            .collect();
        let rows = inputs
            .requests
            .iter()
            .map(|r| {
                let slot = id32(r.mamba_slot.unwrap_or(-1));
                (r.phase.into(), r.q, r.kv, slot)
            })
            .collect();
        let intermediate = match (&inputs.intermediate_offsets, &inputs.intermediate_counts) {
            (None, _) => None,
            (Some(_), None) => {
                return Err("inputs.intermediate_offsets without intermediate_counts".into());
            }
            (Some(offs), Some(counts)) => Some(
                offs.iter()
                    .zip(counts)
                    .map(|(o, &c)| {
                        let mut offsets = [0u32; 3];
                        for (d, &s) in offsets.iter_mut().zip(o) {
                            // Out of range: u32::MAX, which the fill rejects (offset >= q).
                            *d = u32::try_from(s).unwrap_or(u32::MAX);
                        }
                        IntermediateOffsets {
                            // Out of range: u8::MAX, which the fill rejects (count > 3).
                            count: u8::try_from(c).unwrap_or(u8::MAX),
                            offsets,
                        }
                    })
                    .collect(),
            ),
        };
        Ok(Self {
            blocks,
            rows,
            token_ids: inputs.token_to_input_ids.clone(),
            intermediate,
        })
    }

    /// Runs `f` on the step input these records describe.
    fn with_input<R>(&self, f: impl FnOnce(&StepInput<'_>) -> R) -> R {
        let rows: Vec<RequestRow<'_>> = self
            .rows
            .iter()
            .zip(&self.blocks)
            .map(|(&(phase, q, kv, slot), b)| {
                let mut row = RequestRow::decode(q, kv, b, slot);
                row.phase = phase;
                if phase == Phase::Paused {
                    row.query_length = 0;
                }
                row
            })
            .collect();
        f(&StepInput {
            rows: &rows,
            token_ids: Some(&self.token_ids),
            intermediate: self.intermediate.as_deref(),
            residency: None,
        })
    }
}

/// An `error` record: inputs Megatron refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ErrorRecord {
    config: Config,
    inputs: Inputs,
    /// What Megatron raised.
    error: String,
    #[serde(rename = "buckets")]
    _buckets: Unused,
    #[serde(rename = "batch_kind")]
    _batch_kind: Unused,
}

/// A `step` record: a config, a step's inputs, and every array Megatron built for it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StepRecord {
    config: Config,
    inputs: Inputs,
    buckets: Option<Vec<Shape>>,
    batch_dimensions: Vec<i64>,
    padded_batch_dimensions: Vec<i64>,
    using_cuda_graph: bool,
    derived: Option<Derived>,
    mha: MhaArrays,
    token: TokenArrays,
    request: RequestArrays,
    /// Hybrid configs only.
    mamba: Option<MambaArrays>,
    /// How the generator picked the batch (`decode`, `mixed`, …).
    #[serde(rename = "batch_kind")]
    _batch_kind: Unused,
    /// The generator's own check of Megatron's legacy Mamba update.
    #[serde(rename = "mamba_legacy_update_agrees")]
    _mamba_legacy_update_agrees: Unused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Derived {
    max_kv_blocks: i64,
    dummy_block_idx: i64,
    kv_pool_size: Option<u64>,
    max_intermediate_count: Option<i64>,
    max_mamba_chunks: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MhaArrays {
    query_lengths: Vec<i64>,
    cu_query_seq_lengths: Vec<i64>,
    kv_seq_lengths: Vec<i64>,
    cu_kv_seq_lengths: Vec<i64>,
    /// One row per request, read row after row.
    #[serde(deserialize_with = "rows_concatenated")]
    block_table: Vec<i64>,
    max_seqlen_q: i64,
    max_seqlen_k: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenArrays {
    token_to_input_ids: Vec<i64>,
    token_to_pos_ids: Vec<i64>,
    token_to_block_idx: Vec<i64>,
    token_to_request_idx: Vec<i64>,
    token_to_local_position_within_kv_block: Vec<i64>,
    token_to_position_in_request: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestArrays {
    last_token_idxs: Vec<i64>,
    query_lengths: Vec<i64>,
    kv_length_offsets: Vec<i64>,
    in_prefill_status: Vec<i64>,
    real_token_count: i64,
}

/// The Mamba arrays; `null` means the field is absent this step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MambaArrays {
    batch_indices_decode: Option<Vec<i64>>,
    batch_indices_prefill: Option<Vec<i64>>,
    seq_idx: Option<Vec<i64>>,
    cu_seqlens: Option<Vec<i64>>,
    cu_chunk_seqlens: Option<Vec<i64>>,
    last_chunk_indices: Option<Vec<i64>>,
    seq_idx_for_varlen: Option<Vec<i64>>,
    conv_seq_idx: Option<Vec<i64>>,
    conv_seq_start: Option<Vec<i64>>,
    device_decode_prefill: Option<Vec<i64>>,
    intermediate_chunk_indices: Option<Vec<i64>>,
    intermediate_abs_positions: Option<Vec<i64>>,
    intermediate_real_count: Option<Vec<i64>>,
    intermediate_count: i64,
    per_request_intermediate_counts: Vec<i64>,
    cu_seqlens_list: Vec<i64>,
    real_prefill_token_count: i64,
}

/// A 2-D array as its rows one after the other.
fn rows_concatenated<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    Vec::<Vec<i64>>::deserialize(d).map(|rows| rows.concat())
}

/// The KV pool size a record's `derived` gives, if any.
fn kv_pool(derived: Option<&Derived>) -> Option<u32> {
    derived
        .and_then(|d| d.kv_pool_size)
        // Out of range: u32::MAX, which Geometry::new rejects (over i32::MAX blocks).
        .map(|p| u32::try_from(p).unwrap_or(u32::MAX))
}

fn metadata_for(
    config: &Config,
    derived: Option<&Derived>,
) -> Result<HostMetadata<RuntimeDims>, String> {
    let spec = spec_of(config, kv_pool(derived))?;
    let geometry = Geometry::new(&spec).map_err(|e| format!("layout rejected: {e}"))?;
    Ok(HostMetadata::new(RuntimeDims::new(geometry)))
}

pub(super) fn replay_error(rec: &ErrorRecord, cmp: &mut Cmp) -> Result<(), String> {
    let mut meta = metadata_for(&rec.config, None)?;
    let owned = OwnedInput::new(&rec.inputs)?;
    if let Ok(info) = owned.with_input(|input| meta.fill(input).copied()) {
        cmp.miss(
            "error",
            None,
            rec.error.clone(),
            format!("accepted: {info:?}"),
        );
    }
    Ok(())
}

pub(super) fn replay_step(rec: &StepRecord, cmp: &mut Cmp) -> Result<(), String> {
    let mut meta = metadata_for(&rec.config, rec.derived.as_ref())?;
    let g = meta.dims().geometry().clone();
    replay_step_on(rec, cmp, &g, &mut meta)
}

/// A `step` record's layout and inputs: what another backend needs to fill the same step
/// (the GPU test replays them through the CUDA backend).
pub struct GoldenStep {
    spec: LayoutSpec,
    input: OwnedInput,
}

impl GoldenStep {
    /// The record's layout (its config and KV pool size).
    pub fn spec(&self) -> &LayoutSpec {
        &self.spec
    }

    /// Runs `f` on the record's step input.
    pub fn with_input<R>(&self, f: impl FnOnce(&StepInput<'_>) -> R) -> R {
        self.input.with_input(f)
    }
}

/// The `step` records of a golden JSONL text with their 1-based line numbers; lines of
/// other kinds are skipped, a step line that cannot be read is an error naming its field.
pub fn steps(text: &str) -> impl Iterator<Item = Result<(usize, GoldenStep), Mismatch>> + '_ {
    lines(text).filter_map(|(line, text)| {
        let why = |field: String, expected: String, got: String| Mismatch {
            line,
            field,
            index: None,
            expected,
            got,
        };
        match read_line(text) {
            (_, Ok(Record::Step(rec))) => Some(
                rec.golden_step()
                    .map(|step| (line, step))
                    .map_err(|e| why("record".into(), "a replayable record".into(), e)),
            ),
            (kind, Err(m)) if kind == "step" => Some(Err(why(m.field, m.expected, m.got))),
            _ => None,
        }
    })
}

impl StepRecord {
    fn golden_step(&self) -> Result<GoldenStep, String> {
        Ok(GoldenStep {
            spec: spec_of(&self.config, kv_pool(self.derived.as_ref()))?,
            input: OwnedInput::new(&self.inputs)?,
        })
    }
}

/// Something the replay can build step metadata with: the runtime's [`HostMetadata`], or
/// a builder generated by `#[attention_layout]` (its user implements this for it).
pub trait StepBuilder {
    /// Builds one step's metadata; on error nothing changes.
    fn fill_step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, StepError>;
    /// Views of the last step's metadata.
    fn step_view(&self) -> MetadataView<'_>;
    /// The whole buffer.
    fn step_bytes(&self) -> &[u8];
}

impl<D: Dims> StepBuilder for HostMetadata<D> {
    fn fill_step(&mut self, input: &StepInput<'_>) -> Result<StepInfo, StepError> {
        self.fill(input).copied()
    }
    fn step_view(&self) -> MetadataView<'_> {
        self.view()
    }
    fn step_bytes(&self) -> &[u8] {
        self.bytes()
    }
}

/// Replays the `step` records for which `builder_for` returns a builder (it is given the
/// record's layout, derived at run time) through that builder: every array and scalar is
/// compared with the record, as [`replay`](super::replay) does, and the whole buffer and step info with
/// the runtime's own fill ([`RuntimeDims`]) of the same input, byte for byte. Records it
/// declines are skipped and not counted, as are lines of other kinds.
pub fn replay_with(
    text: &str,
    mut builder_for: impl FnMut(&Geometry) -> Option<Box<dyn StepBuilder>>,
) -> Report {
    let mut report = Report::default();
    for (line_no, line) in lines(text) {
        let (kind, record) = read_line(line);
        let mut cmp = Cmp::new(line_no);
        let replayed = match record {
            Ok(Record::Step(rec)) => replay_through(&rec, &mut cmp, &mut builder_for)
                .unwrap_or_else(|e| {
                    cmp.miss("record", None, "a replayable record".into(), e);
                    true
                }),
            Ok(_) => false,
            Err(m) if kind == "step" => {
                cmp.miss(&m.field, None, m.expected, m.got);
                true
            }
            Err(_) => false,
        };
        if replayed {
            report.tally("step", cmp);
        }
    }
    report
}

/// One step record through the builder `builder_for` gives for its layout, compared with
/// the record and with the runtime's fill; `false` when it gives none.
fn replay_through(
    rec: &StepRecord,
    cmp: &mut Cmp,
    builder_for: &mut impl FnMut(&Geometry) -> Option<Box<dyn StepBuilder>>,
) -> Result<bool, String> {
    let mut runtime = metadata_for(&rec.config, rec.derived.as_ref())?;
    let g = runtime.dims().geometry().clone();
    let Some(mut builder) = builder_for(&g) else {
        return Ok(false);
    };
    replay_step_on(rec, cmp, &g, builder.as_mut())?;
    let owned = OwnedInput::new(&rec.inputs)?;
    let want = owned
        .with_input(|input| runtime.fill(input).copied())
        .map_err(|e| e.to_string())?;
    let got = builder.step_view().info();
    if want != *got {
        cmp.miss(
            "info vs runtime",
            None,
            format!("{want:?}"),
            format!("{got:?}"),
        );
    }
    let (a, b) = (runtime.bytes(), builder.step_bytes());
    if a != b {
        let at = a.iter().zip(b).position(|(x, y)| x != y);
        cmp.miss(
            "buffer vs runtime",
            at,
            format!("{} bytes", a.len()),
            format!("{} bytes", b.len()),
        );
    }
    Ok(true)
}

fn replay_step_on(
    rec: &StepRecord,
    cmp: &mut Cmp,
    g: &Geometry,
    meta: &mut dyn StepBuilder,
) -> Result<(), String> {
    if let Some(want) = &rec.buckets {
        compare_bucket_set(cmp, want, &g.buckets);
    }
    let owned = OwnedInput::new(&rec.inputs)?;
    let info = match owned.with_input(|input| meta.fill_step(input)) {
        Ok(info) => info,
        Err(e) => {
            cmp.miss("step", None, "accepted".into(), format!("error: {e}"));
            return Ok(());
        }
    };
    let dims = |d: BatchDims| [d.tokens, d.prefill, d.decode].map(i64::from);
    cmp.seq("batch_dimensions", &rec.batch_dimensions, &dims(info.real));
    cmp.seq(
        "padded_batch_dimensions",
        &rec.padded_batch_dimensions,
        &dims(info.padded),
    );
    cmp.same("using_cuda_graph", &rec.using_cuda_graph, &info.graphed());
    if let Some(derived) = &rec.derived {
        let facts = &g.facts;
        compare!(cmp.same:
            derived.max_kv_blocks = facts.block_table_width as i64;
            derived.dummy_block_idx = i64::from(facts.dummy_block);
        );
        // Absent from records of configs without them.
        if let Some(k) = &derived.max_intermediate_count {
            cmp.same(
                "derived.max_intermediate_count",
                k,
                &(facts.max_intermediate as i64),
            );
        }
        if let Some(c) = &derived.max_mamba_chunks {
            cmp.same("derived.max_mamba_chunks", c, &(facts.max_chunks as i64));
        }
    }
    let v = meta.step_view();
    // The derived token_to_request_idx must equal the record's input stream.
    let inputs = &rec.inputs;
    let tri = v.token_to_request_idx();
    let real_tokens = tri.get(..info.real.tokens as usize).unwrap_or(tri);
    compare!(cmp.seq: inputs.token_to_request_idx = widen32(real_tokens););
    compare_view(cmp, rec, &v, owned.intermediate.as_deref());
    Ok(())
}

/// Every array and scalar of the step's metadata against the record's.
fn compare_view(
    cmp: &mut Cmp,
    rec: &StepRecord,
    v: &MetadataView<'_>,
    intermediate: Option<&[IntermediateOffsets]>,
) {
    let (mha, token, request) = (&rec.mha, &rec.token, &rec.request);
    compare!(cmp.seq:
        mha.query_lengths = widen32(v.query_lengths());
        mha.cu_query_seq_lengths = widen32(v.cu_query_seq_lengths());
        mha.kv_seq_lengths = widen32(v.kv_seq_lengths());
        mha.cu_kv_seq_lengths = widen32(v.cu_kv_seq_lengths());
        mha.block_table = widen32(v.block_table());
        token.token_to_input_ids = v.token_to_input_ids();
        token.token_to_block_idx = v.token_to_block_idx();
        token.token_to_local_position_within_kv_block =
            widen32(v.token_to_local_position_within_kv_block());
        token.token_to_position_in_request = widen32(v.token_to_position_in_request());
        request.last_token_idxs = widen32(v.active_request_last_token_idxs());
        request.query_lengths = widen32(v.request_query_lengths());
        request.kv_length_offsets = widen32(v.request_kv_length_offsets());
        request.in_prefill_status = widen32(v.request_in_prefill_status());
    );
    compare!(cmp.padded:
        token.token_to_pos_ids = v.token_to_pos_ids();
        token.token_to_request_idx = widen32(v.token_to_request_idx());
    );
    compare!(cmp.same:
        mha.max_seqlen_q = i64::from(v.max_seqlen_q());
        mha.max_seqlen_k = i64::from(v.max_seqlen_k());
        request.real_token_count = i64::from(v.real_token_count());
    );

    let Some(mamba) = &rec.mamba else {
        return;
    };
    let info = v.info();
    let wide = |x: Option<&[i32]>| x.map(widen32);
    compare!(cmp.optional:
        mamba.batch_indices_decode = v.mamba_batch_indices_decode().map(|d| d.to_vec());
        mamba.batch_indices_prefill = wide(v.mamba_batch_indices_prefill());
        mamba.seq_idx = wide(v.mamba_seq_idx());
        mamba.cu_seqlens = wide(v.mamba_cu_seqlens());
        mamba.cu_chunk_seqlens = wide(v.mamba_cu_chunk_seqlens());
        mamba.last_chunk_indices = wide(v.mamba_last_chunk_indices());
        mamba.seq_idx_for_varlen = wide(v.mamba_seq_idx_for_varlen());
        mamba.conv_seq_idx = wide(v.mamba_conv_seq_idx());
        mamba.conv_seq_start = wide(v.mamba_conv_seq_start());
        mamba.device_decode_prefill = wide(v.mamba_device_decode_prefill());
        mamba.intermediate_chunk_indices =
            v.mamba_intermediate_chunk_indices().map(<[i64]>::to_vec);
        mamba.intermediate_abs_positions = wide(v.mamba_intermediate_abs_positions());
        mamba.intermediate_real_count = wide(v.mamba_intermediate_real_count());
    );
    let per_request: Vec<i64> = intermediate
        .map(|x| x.iter().map(|o| i64::from(o.count)).collect())
        .unwrap_or_default();
    // Megatron's list form of cu_seqlens: its prefill prefix ([0] without prefill).
    let fr = info.attn.prefill as usize;
    let cu_list: Vec<i64> = match v.mamba_cu_seqlens() {
        Some(c) => widen32(c.get(..=fr).unwrap_or(c)),
        None => vec![0],
    };
    compare!(cmp.seq:
        mamba.per_request_intermediate_counts = per_request;
        mamba.cu_seqlens_list = cu_list;
    );
    compare!(cmp.same:
        mamba.intermediate_count = i64::from(info.intermediate_count);
        mamba.real_prefill_token_count = i64::from(info.real_prefill_tokens);
    );
}

// ---- allocators --------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvRecord {
    pool_size: u32,
    dummy_block_idx: i64,
    ops: Vec<KvOp>,
}

/// One `kv_allocator` op with the allocator state after it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KvOp {
    op: KvOpName,
    /// `allocate`.
    n: Option<u32>,
    /// `release`.
    ids: Option<Vec<i64>>,
    /// `allocate`: the blocks, or `null` when the pool cannot serve `n`.
    result: Option<Vec<i64>>,
    pool_avail: i64,
    bag: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum KvOpName {
    Allocate,
    Release,
    Reset,
}

/// An op argument that its op requires.
fn arg<T: Copy>(v: Option<T>, at: &str, key: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("{at} lacks `{key}`"))
}

pub(super) fn replay_kv(rec: &KvRecord, cmp: &mut Cmp) -> Result<(), String> {
    let mut alloc = KvBlockAllocator::new(rec.pool_size as usize).map_err(|e| e.to_string())?;
    cmp.same(
        "dummy_block_idx",
        &rec.dummy_block_idx,
        &i64::from(alloc.dummy_block()),
    );
    for (j, op) in rec.ops.iter().enumerate() {
        let at = format!("ops[{j}] {}", spelled(op.op));
        let field = |f: &str| format!("{at}: {f}");
        match op.op {
            KvOpName::Allocate => {
                let n = arg(op.n, &at, "n")? as usize;
                let got = alloc.allocate(n).map(widen32);
                cmp.optional(&field("result"), &op.result, &got);
            }
            KvOpName::Release => {
                let ids: Vec<i32> = op
                    .ids
                    .as_deref()
                    .ok_or_else(|| format!("{at} lacks `ids`"))?
                    .iter()
                    .copied()
                    .map(id32)
                    .collect();
                if let Err(e) = alloc.release(&ids) {
                    cmp.miss(&field("result"), None, "released".into(), e.to_string());
                }
            }
            KvOpName::Reset => alloc.reset(),
        }
        cmp.same(
            &field("pool_avail"),
            &op.pool_avail,
            &(alloc.available() as i64),
        );
        cmp.seq(&field("bag"), &op.bag, &widen32(alloc.bag()));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SlotsRecord {
    max_requests: u32,
    ops: Vec<SlotOp>,
}

/// One `mamba_slots` op: its arguments, its result or error, and the pool state after it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotOp {
    op: SlotOpName,
    /// `batch_allocate_slots`.
    n: Option<u32>,
    /// `free_slot`.
    slot: Option<i64>,
    /// `free_slots`.
    request_indices: Option<Vec<i64>>,
    /// `set_request_to_slot`: a slot per row, `-1` for none.
    values: Option<Vec<i64>>,
    /// `detach_state_slot`.
    request_idx: Option<u32>,
    result: Option<SlotResult>,
    /// What Megatron raised (`ValueError`, `RuntimeError`).
    error: Option<String>,
    free_count: i64,
    free_stack: Vec<i64>,
    request_to_slot: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum SlotOpName {
    AllocateSlot,
    BatchAllocateSlots,
    FreeSlot,
    FreeSlots,
    SetRequestToSlot,
    DetachStateSlot,
    Reset,
}

/// A slot op's result: one slot or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum SlotResult {
    One(i64),
    Many(Vec<i64>),
}

impl SlotResult {
    fn to_vec(&self) -> Vec<i64> {
        match self {
            Self::One(s) => vec![*s],
            Self::Many(v) => v.clone(),
        }
    }
}

pub(super) fn replay_slots(
    rec: &SlotsRecord,
    cmp: &mut Cmp,
    deviations: &mut Vec<String>,
) -> Result<(), String> {
    let line = cmp.line;
    let mut pool = MambaSlotPool::new(rec.max_requests as usize).map_err(|e| e.to_string())?;
    // After a documented deviation our state legitimately differs until the next reset.
    let mut diverged = false;
    for (j, op) in rec.ops.iter().enumerate() {
        let name = spelled(op.op);
        let at = format!("ops[{j}] {name}");
        let field = |f: &str| format!("{at}: {f}");
        let outcome: Result<Option<Vec<i64>>, AllocError> = match op.op {
            SlotOpName::AllocateSlot => Ok(pool.allocate().map(|s| vec![i64::from(s)])),
            SlotOpName::BatchAllocateSlots => {
                let n = arg(op.n, &at, "n")? as usize;
                Ok(pool.allocate_n(n).map(|v| widen32(&v)))
            }
            SlotOpName::FreeSlot => {
                let slot = arg(op.slot, &at, "slot")?;
                let slot = i32::try_from(slot).map_err(|_| format!("slot {slot} out of i32"))?;
                pool.free(slot).map(|()| None)
            }
            SlotOpName::FreeSlots => {
                let rows: Vec<usize> = op
                    .request_indices
                    .as_deref()
                    .ok_or_else(|| format!("{at} lacks `request_indices`"))?
                    .iter()
                    .map(|&x| usize::try_from(x).unwrap_or(usize::MAX))
                    .collect();
                pool.free_rows(&rows).map(|()| None)
            }
            SlotOpName::SetRequestToSlot => {
                let values = op
                    .values
                    .as_deref()
                    .ok_or_else(|| format!("{at} lacks `values`"))?;
                let mut outcome = Ok(None);
                for (row, &s) in values.iter().enumerate() {
                    let r = if s == -1 {
                        pool.clear_row(row).map(|_| ())
                    } else {
                        pool.set_row(row, id32(s))
                    };
                    if let Err(e) = r {
                        outcome = Err(e);
                        break;
                    }
                }
                outcome
            }
            SlotOpName::DetachStateSlot => {
                let row = arg(op.request_idx, &at, "request_idx")? as usize;
                pool.detach(row).map(|s| Some(vec![i64::from(s)]))
            }
            SlotOpName::Reset => {
                pool.reset();
                diverged = false;
                Ok(None)
            }
        };
        let want = op.result.as_ref().map(SlotResult::to_vec);
        match (&op.error, outcome) {
            (Some(_), Err(_)) => {}
            // Megatron's error came from the stack its double free corrupted.
            (Some(_), Ok(_)) if diverged => continue,
            (Some(e), Ok(got)) => cmp.miss(
                &field("error"),
                None,
                e.clone(),
                format!("accepted: {got:?}"),
            ),
            (None, Err(AllocError::DoubleFree { id, .. })) => {
                deviations.push(format!(
                    "record {line} ops[{j}]: {name}({id}) accepted by Megatron (a double free), rejected here by design"
                ));
                diverged = true;
                continue;
            }
            // Megatron's state already holds the duplicate; ours does not.
            (None, Err(_)) if diverged => continue,
            (None, Err(e)) => cmp.miss(
                &field("result"),
                None,
                format!("{want:?}"),
                format!("error: {e}"),
            ),
            (None, Ok(got)) => {
                if want != got && !diverged {
                    cmp.miss(
                        &field("result"),
                        None,
                        format!("{want:?}"),
                        format!("{got:?}"),
                    );
                }
            }
        }
        if diverged {
            continue;
        }
        cmp.same(
            &field("free_count"),
            &op.free_count,
            &(pool.free_count() as i64),
        );
        cmp.seq(
            &field("free_stack"),
            &op.free_stack,
            &widen32(pool.free_stack()),
        );
        cmp.seq(
            &field("request_to_slot"),
            &op.request_to_slot,
            &widen32(pool.row_to_slot()),
        );
    }
    Ok(())
}
