//! Conformance replay of Megatron-LM golden records (`testdata/GOLDEN-README.md`): every
//! record is re-run through this crate and every array and scalar compared. The
//! prefix-caching kinds are in `golden/prefix.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use attention_layout_codegen::Geometry;
use attention_layout_codegen::buckets::{self, BatchDims, Distribution};
use attention_layout_codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};

use attention_layout::alloc::{AllocError, KvBlockAllocator, MambaSlotPool};
use attention_layout::dims::{Dims, RuntimeDims};
use attention_layout::error::StepError;
use attention_layout::fill::StepInfo;
use attention_layout::metadata::{HostMetadata, MetadataView};
use attention_layout::step::{IntermediateOffsets, Phase, RequestRow, StepInput};

// The prefix-caching record kinds (`prefix_kv`, `prefix_hash`, `mamba_cache`,
// `mamba_offsets`) live in their own file.
mod prefix;

/// Value Megatron leaves stale in the token arrays' padding (any value conforms).
pub const STALE: i64 = -7;

/// One difference between a record and this crate's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// 1-based line of the record in the file.
    pub line: usize,
    /// What was compared (`mha.block_table`).
    pub field: String,
    /// First differing index, when an array differs.
    pub index: Option<usize>,
    /// Megatron's value.
    pub expected: String,
    /// This crate's value.
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.line, self.field)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        write!(f, ": expected {}, got {}", self.expected, self.got)
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per record kind: (passed, failed).
    pub kinds: BTreeMap<String, (usize, usize)>,
    /// Every mismatch found (the first few per record).
    pub mismatches: Vec<Mismatch>,
    /// Documented deviations from Megatron that were hit (e.g. a rejected double free).
    pub deviations: Vec<String>,
}

impl Report {
    /// Records that passed.
    pub fn passed(&self) -> usize {
        self.kinds.values().map(|k| k.0).sum()
    }
    /// Records that failed.
    pub fn failed(&self) -> usize {
        self.kinds.values().map(|k| k.1).sum()
    }
}

/// Compares one record's values; collects mismatches.
struct Cmp<'a> {
    line: usize,
    out: &'a mut Vec<Mismatch>,
    found: usize,
}

impl Cmp<'_> {
    fn miss(&mut self, field: &str, index: Option<usize>, expected: String, got: String) {
        self.found += 1;
        if self.found <= 8 {
            self.out.push(Mismatch {
                line: self.line,
                field: field.to_owned(),
                index,
                expected,
                got,
            });
        }
    }

    fn scalar(&mut self, field: &str, expected: Option<i64>, got: i64) {
        if expected != Some(got) {
            let e = expected.map_or("missing".to_owned(), |v| v.to_string());
            self.miss(field, None, e, got.to_string());
        }
    }

    /// Compares an array; `STALE` entries in `expected` match anything when `stale_ok`.
    fn array(&mut self, field: &str, expected: &Value, got: &[i64], stale_ok: bool) {
        let Some(exp) = ints(expected) else {
            self.miss(field, None, expected.to_string(), format!("{got:?}"));
            return;
        };
        if exp.len() != got.len() {
            self.miss(
                field,
                None,
                format!("length {}", exp.len()),
                format!("length {}", got.len()),
            );
            return;
        }
        if let Some(i) = exp
            .iter()
            .zip(got)
            .position(|(e, g)| e != g && !(stale_ok && *e == STALE))
        {
            let (e, g) = (exp.get(i), got.get(i));
            self.miss(field, Some(i), fmt_opt(e), fmt_opt(g));
        }
    }

    fn optional(&mut self, field: &str, expected: &Value, got: Option<Vec<i64>>) {
        match (expected.is_null(), got) {
            (true, None) => {}
            (true, Some(g)) => self.miss(field, None, "absent".into(), format!("{g:?}")),
            (false, None) => self.miss(field, None, expected.to_string(), "absent".into()),
            (false, Some(g)) => self.array(field, expected, &g, false),
        }
    }
}

fn fmt_opt(v: Option<&i64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}

/// A JSON array of integers (nested arrays flattened), or `None`.
/// An id read from a record as `i32`; a value outside `i32` becomes `i32::MIN`, which
/// every consumer rejects as out of range (an `as` cast could wrap it onto a valid id).
fn id32(x: i64) -> i32 {
    i32::try_from(x).unwrap_or(i32::MIN)
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<i64>) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out)),
            Value::Number(n) => n.as_i64().map(|x| out.push(x)).is_some(),
            _ => false,
        }
    }
    walk(v, &mut out).then_some(out)
}

fn u32_of(v: &Value, key: &str) -> Result<u32, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|x| u32::try_from(x).ok())
        .ok_or_else(|| format!("record lacks a non-negative integer `{key}`"))
}

fn dims_of(v: &Value) -> Option<BatchDims> {
    let a = ints(v)?;
    match a.as_slice() {
        [t, p, d] => Some(BatchDims::new(
            u32::try_from(*t).ok()?,
            u32::try_from(*p).ok()?,
            u32::try_from(*d).ok()?,
        )),
        _ => None,
    }
}

/// The layout spec a golden `config` describes, with the KV pool size of `derived` when
/// the record has one.
pub fn spec_of(config: &Value, kv_pool: Option<u32>) -> Result<LayoutSpec, String> {
    let r = u32_of(config, "max_requests")?;
    let t = u32_of(config, "max_tokens")?;
    let s = u32_of(config, "num_spec")?;
    let hybrid = config
        .get("hybrid")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let count = match config.get("num_cuda_graphs").and_then(Value::as_i64) {
        None => GraphCount::Off,
        Some(-1) => GraphCount::Auto,
        Some(n) if n >= 1 => GraphCount::Count(
            u32::try_from(n).map_err(|_| format!("num_cuda_graphs {n} out of range"))?,
        ),
        Some(n) => return Err(format!("num_cuda_graphs {n}")),
    };
    let distribution = match config.get("distribution").and_then(Value::as_str) {
        Some("linear") => Distribution::Linear,
        _ => Distribution::Exponential,
    };
    // What the context passes (docs/SEMANTICS.md §3.2): min(max(configured, R(s+1)), T).
    let cg = u32_of(config, "cuda_graph_max_tokens").unwrap_or(t);
    let budget = cg.max(r * (s + 1)).min(t);
    Ok(LayoutSpec {
        name: None,
        source: None,
        model: if hybrid {
            ModelKind::Hybrid
        } else {
            ModelKind::Mha
        },
        max_requests: r,
        max_tokens: t,
        max_seq_len: u32_of(config, "max_seq_len")?,
        block_size: u32_of(config, "block_size")?,
        speculative_tokens: s,
        tensor_parallel: u32_of(config, "tp")?,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: kv_pool,
        mamba: hybrid
            .then(|| -> Result<MambaSpec, String> {
                Ok(MambaSpec {
                    chunk_size: u32_of(config, "mamba_chunk_size")?,
                    conv_width: u32_of(config, "d_conv")?,
                })
            })
            .transpose()?,
        graphs: GraphSpec {
            count,
            distribution,
            token_budget: Some(budget),
            mixed_prefill: u32_of(config, "mixed_prefill_count")?,
            non_decode: config
                .get("non_decode_graphs")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    })
}

/// Replays every record of a golden JSONL text.
pub fn replay(text: &str) -> Report {
    let mut report = Report::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let mut mismatches = Vec::new();
        let mut cmp = Cmp {
            line: line_no,
            out: &mut mismatches,
            found: 0,
        };
        let record: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                cmp.miss("json", None, "a JSON object".into(), e.to_string());
                tally(&mut report, "invalid", cmp.found, mismatches);
                continue;
            }
        };
        let kind = record
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let result = match kind.as_str() {
            "buckets" => replay_buckets(&record, &mut cmp),
            "step" => replay_step(&record, &mut cmp),
            "error" => replay_error(&record, &mut cmp),
            "kv_allocator" => replay_kv(&record, &mut cmp),
            "mamba_slots" => replay_slots(&record, &mut cmp, &mut report.deviations, line_no),
            "prefix_kv" | "mamba_cache" => {
                prefix::replay_trace(&record, &mut cmp, &mut report.deviations, line_no)
            }
            "prefix_hash" => {
                prefix::replay_hash(&record, &mut cmp, &mut report.deviations, line_no)
            }
            "mamba_offsets" => prefix::replay_offsets(&record, &mut cmp),
            "summary" => Ok(()),
            other => Err(format!("unknown record kind `{other}`")),
        };
        if let Err(e) = result {
            cmp.miss("record", None, "a replayable record".into(), e);
        }
        let found = cmp.found;
        tally(&mut report, &kind, found, mismatches);
    }
    report
}

fn tally(report: &mut Report, kind: &str, found: usize, mut mismatches: Vec<Mismatch>) {
    let entry = report.kinds.entry(kind.to_owned()).or_default();
    if found == 0 {
        entry.0 += 1;
    } else {
        entry.1 += 1;
        report.mismatches.append(&mut mismatches);
    }
}

fn replay_buckets(rec: &Value, cmp: &mut Cmp<'_>) -> Result<(), String> {
    let config = rec.get("config").ok_or("no config")?;
    let spec = spec_of(config, None)?;
    let list = buckets::build_buckets(&spec.bucket_params());
    compare_bucket_set(cmp, rec.get("buckets").unwrap_or(&Value::Null), &list);
    let counts = buckets::token_counts(&list);
    let want = rec.get("token_counts").unwrap_or(&Value::Null);
    if want.is_null() {
        if !counts.is_empty() {
            cmp.miss("token_counts", None, "null".into(), format!("{counts:?}"));
        }
    } else {
        let got: Vec<i64> = counts.iter().map(|&c| i64::from(c)).collect();
        cmp.array("token_counts", want, &got, false);
    }
    for (j, m) in rec
        .get("matches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let real = m.get("real").and_then(dims_of).ok_or("bad match.real")?;
        let strict = m.get("strict").and_then(Value::as_bool).unwrap_or(false);
        let want = m.get("match").and_then(dims_of);
        let got = buckets::match_bucket(real, &list, strict);
        if want != got {
            cmp.miss(
                &format!("matches[{j}] {real:?} strict={strict}"),
                None,
                format!("{want:?}"),
                format!("{got:?}"),
            );
        }
    }
    Ok(())
}

fn compare_bucket_set(cmp: &mut Cmp<'_>, want: &Value, got: &[BatchDims]) {
    let mut want_set: Vec<BatchDims> = want
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(dims_of)
        .collect();
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

/// The inputs of a step or error record, owned.
struct OwnedInput {
    blocks: Vec<Vec<i32>>,
    phases: Vec<(Phase, u32, u32, i32)>,
    token_ids: Vec<i64>,
    intermediate: Option<Vec<IntermediateOffsets>>,
}

impl OwnedInput {
    fn parse(inputs: &Value) -> Result<Self, String> {
        let mut blocks = Vec::new();
        let mut phases = Vec::new();
        for r in inputs
            .get("requests")
            .and_then(Value::as_array)
            .ok_or("no requests")?
        {
            let phase = match r.get("phase").and_then(Value::as_str) {
                Some("paused") => Phase::Paused,
                Some("decode") => Phase::Decode,
                Some("prefill") => Phase::Prefill,
                other => return Err(format!("unknown phase {other:?}")),
            };
            let b = ints(r.get("blocks").unwrap_or(&Value::Null)).ok_or("bad blocks")?;
            blocks.push(b.into_iter().map(id32).collect());
            let slot = id32(r.get("mamba_slot").and_then(Value::as_i64).unwrap_or(-1));
            phases.push((phase, u32_of(r, "q")?, u32_of(r, "kv")?, slot));
        }
        let token_ids = ints(inputs.get("token_to_input_ids").unwrap_or(&Value::Null))
            .ok_or("bad token ids")?;
        let intermediate = match inputs.get("intermediate_offsets") {
            Some(Value::Array(offs)) => {
                let counts = ints(inputs.get("intermediate_counts").unwrap_or(&Value::Null))
                    .ok_or("bad intermediate counts")?;
                let mut v = Vec::new();
                for (o, c) in offs.iter().zip(counts) {
                    let o = ints(o).ok_or("bad offsets")?;
                    let mut offsets = [0u32; 3];
                    for (d, s) in offsets.iter_mut().zip(&o) {
                        // Out of range: u32::MAX, which the fill rejects (offset >= q).
                        *d = u32::try_from(*s).unwrap_or(u32::MAX);
                    }
                    v.push(IntermediateOffsets {
                        // Out of range: u8::MAX, which the fill rejects (count > 3).
                        count: u8::try_from(c).unwrap_or(u8::MAX),
                        offsets,
                    });
                }
                Some(v)
            }
            _ => None,
        };
        Ok(Self {
            blocks,
            phases,
            token_ids,
            intermediate,
        })
    }

    fn rows(&self) -> Vec<RequestRow<'_>> {
        self.phases
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
            .collect()
    }
}

fn metadata_for(rec: &Value) -> Result<HostMetadata<RuntimeDims>, String> {
    let config = rec.get("config").ok_or("no config")?;
    let pool = rec
        .get("derived")
        .and_then(|d| d.get("kv_pool_size"))
        .and_then(Value::as_u64)
        // Out of range: u32::MAX, which Geometry::new rejects (over i32::MAX blocks).
        .map(|p| u32::try_from(p).unwrap_or(u32::MAX));
    let spec = spec_of(config, pool)?;
    let geometry = Geometry::new(&spec).map_err(|e| format!("layout rejected: {e}"))?;
    Ok(HostMetadata::new(RuntimeDims::new(geometry)))
}

fn replay_error(rec: &Value, cmp: &mut Cmp<'_>) -> Result<(), String> {
    let mut meta = metadata_for(rec)?;
    let owned = OwnedInput::parse(rec.get("inputs").ok_or("no inputs")?)?;
    let rows = owned.rows();
    let input = StepInput {
        rows: &rows,
        token_ids: Some(&owned.token_ids),
        intermediate: owned.intermediate.as_deref(),
        residency: None,
    };
    if let Ok(info) = meta.fill(&input) {
        let want = rec
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("an error");
        cmp.miss(
            "error",
            None,
            want.to_owned(),
            format!("accepted: {info:?}"),
        );
    }
    Ok(())
}

fn replay_step(rec: &Value, cmp: &mut Cmp<'_>) -> Result<(), String> {
    let mut meta = metadata_for(rec)?;
    let g = meta.dims().geometry().clone();
    replay_step_on(rec, cmp, &g, &mut meta)
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
/// compared with the record, as [`replay`] does, and the whole buffer and step info with
/// the runtime's own fill ([`RuntimeDims`]) of the same input, byte for byte. Records it
/// declines are skipped and not counted.
pub fn replay_with(
    text: &str,
    mut builder_for: impl FnMut(&Geometry) -> Option<Box<dyn StepBuilder>>,
) -> Report {
    let mut report = Report::default();
    for (i, line) in text.lines().enumerate() {
        let Ok(rec) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if rec.get("kind").and_then(Value::as_str) != Some("step") {
            continue;
        }
        let mut mismatches = Vec::new();
        let mut cmp = Cmp {
            line: i + 1,
            out: &mut mismatches,
            found: 0,
        };
        let result = metadata_for(&rec).and_then(|mut runtime| {
            let g = runtime.dims().geometry().clone();
            let Some(mut builder) = builder_for(&g) else {
                return Ok(false);
            };
            replay_step_on(&rec, &mut cmp, &g, builder.as_mut())?;
            let owned = OwnedInput::parse(rec.get("inputs").ok_or("no inputs")?)?;
            let rows = owned.rows();
            let input = StepInput {
                rows: &rows,
                token_ids: Some(&owned.token_ids),
                intermediate: owned.intermediate.as_deref(),
                residency: None,
            };
            let want = runtime.fill(&input).map_err(|e| e.to_string())?;
            let got = builder.step_view().info();
            if want != got {
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
        });
        match result {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => cmp.miss("record", None, "a replayable record".into(), e),
        }
        let found = cmp.found;
        tally(&mut report, "step", found, mismatches);
    }
    report
}

fn replay_step_on(
    rec: &Value,
    cmp: &mut Cmp<'_>,
    g: &Geometry,
    meta: &mut dyn StepBuilder,
) -> Result<(), String> {
    if let Some(want) = rec.get("buckets") {
        compare_bucket_set(cmp, want, &g.buckets);
    }
    let inputs = rec.get("inputs").ok_or("no inputs")?;
    let owned = OwnedInput::parse(inputs)?;
    let rows = owned.rows();
    let input = StepInput {
        rows: &rows,
        token_ids: Some(&owned.token_ids),
        intermediate: owned.intermediate.as_deref(),
        residency: None,
    };
    let info = match meta.fill_step(&input) {
        Ok(info) => info,
        Err(e) => {
            cmp.miss("step", None, "accepted".into(), format!("error: {e}"));
            return Ok(());
        }
    };
    let dims = |d: BatchDims| {
        vec![
            i64::from(d.tokens),
            i64::from(d.prefill),
            i64::from(d.decode),
        ]
    };
    let null = Value::Null;
    let get = |v: &'_ Value, k: &str| -> Value { v.get(k).cloned().unwrap_or(Value::Null) };
    cmp.array(
        "batch_dimensions",
        &get(rec, "batch_dimensions"),
        &dims(info.real),
        false,
    );
    cmp.array(
        "padded_batch_dimensions",
        &get(rec, "padded_batch_dimensions"),
        &dims(info.padded),
        false,
    );
    cmp.scalar(
        "using_cuda_graph",
        rec.get("using_cuda_graph")
            .and_then(Value::as_bool)
            .map(i64::from),
        i64::from(info.graphed()),
    );
    if let Some(d) = rec.get("derived") {
        cmp.scalar(
            "derived.max_kv_blocks",
            d.get("max_kv_blocks").and_then(Value::as_i64),
            g.facts.block_table_width as i64,
        );
        cmp.scalar(
            "derived.dummy_block_idx",
            d.get("dummy_block_idx").and_then(Value::as_i64),
            i64::from(g.facts.dummy_block),
        );
        if let Some(k) = d.get("max_intermediate_count").and_then(Value::as_i64) {
            cmp.scalar(
                "derived.max_intermediate_count",
                Some(k),
                g.facts.max_intermediate as i64,
            );
        }
        if let Some(c) = d.get("max_mamba_chunks").and_then(Value::as_i64) {
            cmp.scalar(
                "derived.max_mamba_chunks",
                Some(c),
                g.facts.max_chunks as i64,
            );
        }
    }
    // The derived token_to_request_idx must equal the record's input stream.
    let v = meta.step_view();
    let n_real = info.real.tokens as usize;
    let tri: Vec<i64> = v
        .token_to_request_idx()
        .iter()
        .take(n_real)
        .map(|&x| i64::from(x))
        .collect();
    cmp.array(
        "inputs.token_to_request_idx",
        &get(inputs, "token_to_request_idx"),
        &tri,
        false,
    );
    compare_view(cmp, rec, &v, owned.intermediate.as_deref());
    let _ = &null;
    Ok(())
}

fn widen32(x: &[i32]) -> Vec<i64> {
    x.iter().map(|&v| i64::from(v)).collect()
}

fn compare_view(
    cmp: &mut Cmp<'_>,
    rec: &Value,
    v: &MetadataView<'_>,
    intermediate: Option<&[IntermediateOffsets]>,
) {
    let null = Value::Null;
    let sec = |k: &str| rec.get(k).unwrap_or(&null);
    let at = |s: &Value, k: &str| s.get(k).cloned().unwrap_or(Value::Null);
    let mha = sec("mha");
    cmp.array(
        "mha.query_lengths",
        &at(mha, "query_lengths"),
        &widen32(v.query_lengths()),
        false,
    );
    cmp.array(
        "mha.cu_query_seq_lengths",
        &at(mha, "cu_query_seq_lengths"),
        &widen32(v.cu_query_seq_lengths()),
        false,
    );
    cmp.array(
        "mha.kv_seq_lengths",
        &at(mha, "kv_seq_lengths"),
        &widen32(v.kv_seq_lengths()),
        false,
    );
    cmp.array(
        "mha.cu_kv_seq_lengths",
        &at(mha, "cu_kv_seq_lengths"),
        &widen32(v.cu_kv_seq_lengths()),
        false,
    );
    cmp.array(
        "mha.block_table",
        &at(mha, "block_table"),
        &widen32(v.block_table()),
        false,
    );
    cmp.scalar(
        "mha.max_seqlen_q",
        mha.get("max_seqlen_q").and_then(Value::as_i64),
        i64::from(v.max_seqlen_q()),
    );
    cmp.scalar(
        "mha.max_seqlen_k",
        mha.get("max_seqlen_k").and_then(Value::as_i64),
        i64::from(v.max_seqlen_k()),
    );

    let tok = sec("token");
    cmp.array(
        "token.token_to_input_ids",
        &at(tok, "token_to_input_ids"),
        v.token_to_input_ids(),
        false,
    );
    cmp.array(
        "token.token_to_pos_ids",
        &at(tok, "token_to_pos_ids"),
        v.token_to_pos_ids(),
        true,
    );
    cmp.array(
        "token.token_to_block_idx",
        &at(tok, "token_to_block_idx"),
        v.token_to_block_idx(),
        false,
    );
    cmp.array(
        "token.token_to_request_idx",
        &at(tok, "token_to_request_idx"),
        &widen32(v.token_to_request_idx()),
        true,
    );
    cmp.array(
        "token.token_to_local_position_within_kv_block",
        &at(tok, "token_to_local_position_within_kv_block"),
        &widen32(v.token_to_local_position_within_kv_block()),
        false,
    );
    cmp.array(
        "token.token_to_position_in_request",
        &at(tok, "token_to_position_in_request"),
        &widen32(v.token_to_position_in_request()),
        false,
    );

    let req = sec("request");
    cmp.array(
        "request.last_token_idxs",
        &at(req, "last_token_idxs"),
        &widen32(v.active_request_last_token_idxs()),
        false,
    );
    cmp.array(
        "request.query_lengths",
        &at(req, "query_lengths"),
        &widen32(v.request_query_lengths()),
        false,
    );
    cmp.array(
        "request.kv_length_offsets",
        &at(req, "kv_length_offsets"),
        &widen32(v.request_kv_length_offsets()),
        false,
    );
    cmp.array(
        "request.in_prefill_status",
        &at(req, "in_prefill_status"),
        &widen32(v.request_in_prefill_status()),
        false,
    );
    cmp.scalar(
        "request.real_token_count",
        req.get("real_token_count").and_then(Value::as_i64),
        i64::from(v.real_token_count()),
    );

    let Some(m) = rec.get("mamba") else {
        return;
    };
    let info = v.info();
    cmp.optional(
        "mamba.batch_indices_decode",
        &at(m, "batch_indices_decode"),
        v.mamba_batch_indices_decode().map(|d| d.to_vec()),
    );
    cmp.optional(
        "mamba.batch_indices_prefill",
        &at(m, "batch_indices_prefill"),
        v.mamba_batch_indices_prefill().map(widen32),
    );
    cmp.optional(
        "mamba.seq_idx",
        &at(m, "seq_idx"),
        v.mamba_seq_idx().map(widen32),
    );
    cmp.optional(
        "mamba.cu_seqlens",
        &at(m, "cu_seqlens"),
        v.mamba_cu_seqlens().map(widen32),
    );
    cmp.optional(
        "mamba.cu_chunk_seqlens",
        &at(m, "cu_chunk_seqlens"),
        v.mamba_cu_chunk_seqlens().map(widen32),
    );
    cmp.optional(
        "mamba.last_chunk_indices",
        &at(m, "last_chunk_indices"),
        v.mamba_last_chunk_indices().map(widen32),
    );
    cmp.optional(
        "mamba.seq_idx_for_varlen",
        &at(m, "seq_idx_for_varlen"),
        v.mamba_seq_idx_for_varlen().map(widen32),
    );
    cmp.optional(
        "mamba.conv_seq_idx",
        &at(m, "conv_seq_idx"),
        v.mamba_conv_seq_idx().map(widen32),
    );
    cmp.optional(
        "mamba.conv_seq_start",
        &at(m, "conv_seq_start"),
        v.mamba_conv_seq_start().map(widen32),
    );
    cmp.optional(
        "mamba.device_decode_prefill",
        &at(m, "device_decode_prefill"),
        v.mamba_device_decode_prefill().map(widen32),
    );
    cmp.optional(
        "mamba.intermediate_chunk_indices",
        &at(m, "intermediate_chunk_indices"),
        v.mamba_intermediate_chunk_indices().map(<[i64]>::to_vec),
    );
    cmp.optional(
        "mamba.intermediate_abs_positions",
        &at(m, "intermediate_abs_positions"),
        v.mamba_intermediate_abs_positions().map(widen32),
    );
    cmp.optional(
        "mamba.intermediate_real_count",
        &at(m, "intermediate_real_count"),
        v.mamba_intermediate_real_count().map(widen32),
    );
    cmp.scalar(
        "mamba.intermediate_count",
        m.get("intermediate_count").and_then(Value::as_i64),
        i64::from(info.intermediate_count),
    );
    let per_request: Vec<i64> = intermediate
        .map(|x| x.iter().map(|o| i64::from(o.count)).collect())
        .unwrap_or_default();
    cmp.array(
        "mamba.per_request_intermediate_counts",
        &at(m, "per_request_intermediate_counts"),
        &per_request,
        false,
    );
    let fr = info.attn.prefill as usize;
    let cu_list: Vec<i64> = match v.mamba_cu_seqlens() {
        Some(c) => widen32(c.get(..=fr).unwrap_or(c)),
        None => vec![0],
    };
    cmp.array(
        "mamba.cu_seqlens_list",
        &at(m, "cu_seqlens_list"),
        &cu_list,
        false,
    );
    cmp.scalar(
        "mamba.real_prefill_token_count",
        m.get("real_prefill_token_count").and_then(Value::as_i64),
        i64::from(info.real_prefill_tokens),
    );
}

fn replay_kv(rec: &Value, cmp: &mut Cmp<'_>) -> Result<(), String> {
    let pool = u32_of(rec, "pool_size")? as usize;
    let mut alloc = KvBlockAllocator::new(pool).map_err(|e| e.to_string())?;
    cmp.scalar(
        "dummy_block_idx",
        rec.get("dummy_block_idx").and_then(Value::as_i64),
        i64::from(alloc.dummy_block()),
    );
    for (j, op) in rec
        .get("ops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("?");
        let field = |f: &str| format!("ops[{j}] {name}: {f}");
        match name {
            "allocate" => {
                let n = u32_of(op, "n")? as usize;
                let got = alloc
                    .allocate(n)
                    .map(|b| b.iter().map(|&x| i64::from(x)).collect::<Vec<_>>());
                cmp.optional(
                    &field("result"),
                    op.get("result").unwrap_or(&Value::Null),
                    got,
                );
            }
            "release" => {
                let ids: Vec<i32> = ints(op.get("ids").unwrap_or(&Value::Null))
                    .ok_or("bad ids")?
                    .into_iter()
                    .map(id32)
                    .collect();
                if let Err(e) = alloc.release(&ids) {
                    cmp.miss(&field("result"), None, "released".into(), e.to_string());
                }
            }
            "reset" => alloc.reset(),
            other => return Err(format!("unknown kv_allocator op `{other}`")),
        }
        cmp.scalar(
            &field("pool_avail"),
            op.get("pool_avail").and_then(Value::as_i64),
            alloc.available() as i64,
        );
        let bag: Vec<i64> = alloc.bag().iter().map(|&x| i64::from(x)).collect();
        cmp.array(
            &field("bag"),
            op.get("bag").unwrap_or(&Value::Null),
            &bag,
            false,
        );
    }
    Ok(())
}

fn replay_slots(
    rec: &Value,
    cmp: &mut Cmp<'_>,
    deviations: &mut Vec<String>,
    line: usize,
) -> Result<(), String> {
    let r = u32_of(rec, "max_requests")? as usize;
    let mut pool = MambaSlotPool::new(r).map_err(|e| e.to_string())?;
    // After a documented deviation our state legitimately differs until the next reset.
    let mut diverged = false;
    for (j, op) in rec
        .get("ops")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("?");
        let field = |f: &str| format!("ops[{j}] {name}: {f}");
        let want_error = op.get("error").and_then(Value::as_str);
        let want = op.get("result").unwrap_or(&Value::Null);
        let outcome: Result<Option<Vec<i64>>, AllocError> = match name {
            "allocate_slot" => Ok(pool.allocate().map(|s| vec![i64::from(s)])),
            "batch_allocate_slots" => {
                let n = u32_of(op, "n")? as usize;
                Ok(pool
                    .allocate_n(n)
                    .map(|v| v.iter().map(|&s| i64::from(s)).collect()))
            }
            "free_slot" => {
                let slot = op.get("slot").and_then(Value::as_i64).ok_or("no slot")?;
                let slot = i32::try_from(slot).map_err(|_| format!("slot {slot} out of i32"))?;
                pool.free(slot).map(|()| None)
            }
            "free_slots" => {
                let rows: Vec<usize> = ints(op.get("request_indices").unwrap_or(&Value::Null))
                    .ok_or("bad request_indices")?
                    .into_iter()
                    .map(|x| usize::try_from(x).unwrap_or(usize::MAX))
                    .collect();
                pool.free_rows(&rows).map(|()| None)
            }
            "set_request_to_slot" => {
                let values = ints(op.get("values").unwrap_or(&Value::Null)).ok_or("bad values")?;
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
            "detach_state_slot" => {
                let row = u32_of(op, "request_idx")? as usize;
                pool.detach(row).map(|s| Some(vec![i64::from(s)]))
            }
            "reset" => {
                pool.reset();
                diverged = false;
                Ok(None)
            }
            other => return Err(format!("unknown mamba_slots op `{other}`")),
        };
        match (want_error, outcome) {
            (Some(_), Err(_)) => {}
            // Megatron's error came from the stack its double free corrupted.
            (Some(_), Ok(_)) if diverged => continue,
            (Some(e), Ok(got)) => cmp.miss(
                &field("error"),
                None,
                e.to_owned(),
                format!("accepted: {got:?}"),
            ),
            (None, Err(AllocError::DoubleFree { id, .. })) => {
                deviations.push(format!(
                    "record {line} ops[{j}]: {name}({id}) accepted by Megatron (a double free), rejected here by design"
                ));
                diverged = true;
                continue;
            }
            (None, Err(e)) if diverged => {
                // Megatron's state already holds the duplicate; ours does not.
                let _ = e;
                continue;
            }
            (None, Err(e)) => cmp.miss(
                &field("result"),
                None,
                want.to_string(),
                format!("error: {e}"),
            ),
            (None, Ok(got)) => {
                let want_v = if want.is_null() {
                    None
                } else if let Some(x) = want.as_i64() {
                    Some(vec![x])
                } else {
                    ints(want)
                };
                if want_v != got && !diverged {
                    cmp.miss(
                        &field("result"),
                        None,
                        format!("{want_v:?}"),
                        format!("{got:?}"),
                    );
                }
            }
        }
        if diverged {
            continue;
        }
        cmp.scalar(
            &field("free_count"),
            op.get("free_count").and_then(Value::as_i64),
            pool.free_count() as i64,
        );
        cmp.array(
            &field("free_stack"),
            op.get("free_stack").unwrap_or(&Value::Null),
            &pool
                .free_stack()
                .iter()
                .map(|&x| i64::from(x))
                .collect::<Vec<_>>(),
            false,
        );
        cmp.array(
            &field("request_to_slot"),
            op.get("request_to_slot").unwrap_or(&Value::Null),
            &pool
                .row_to_slot()
                .iter()
                .map(|&x| i64::from(x))
                .collect::<Vec<_>>(),
            false,
        );
    }
    Ok(())
}
