//! Conformance replay of Megatron-LM golden records (`testdata/GOLDEN-README.md`): every
//! line is read into the serde-derived type of its `kind`, re-run through this crate, and
//! every array and scalar compared.
//!
//! This file holds what every kind shares: reading a line, dispatch by kind, comparison and
//! the report. The kinds themselves are in `golden/megatron.rs` (`buckets`, `step`,
//! `error`, `kv_allocator`, `mamba_slots`) and `golden/prefix.rs` (the prefix-caching
//! kinds). A line that does not match its kind's type (a missing field, a wrongly-typed
//! value, an unknown key) fails with the path of the field (`inputs.requests[2].q`) and
//! serde's reason.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The record kinds: Megatron's metadata, buckets and allocators, and its prefix caching.
mod megatron;
mod prefix;

pub use megatron::{GoldenStep, StepBuilder, replay_with, steps};

/// Value Megatron leaves stale in the token arrays' padding (any value conforms).
pub const STALE: i64 = -7;

/// One difference between a record and this crate's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// 1-based line of the record in the file.
    pub line: usize,
    /// What was compared (`mha.block_table`), or the path of a field that could not be read
    /// (`inputs.requests[2].q`).
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

    /// Counts one record of `kind`, passed when `cmp` found nothing.
    fn tally(&mut self, kind: &str, cmp: Cmp) {
        let entry = self.kinds.entry(kind.to_owned()).or_default();
        if cmp.found == 0 {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            self.mismatches.extend(cmp.out);
        }
    }
}

// ---- comparison --------------------------------------------------------------------------

/// Compares one record's values; collects its mismatches (the first few).
struct Cmp {
    line: usize,
    out: Vec<Mismatch>,
    found: usize,
}

impl Cmp {
    fn new(line: usize) -> Self {
        Self {
            line,
            out: Vec::new(),
            found: 0,
        }
    }

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

    /// Compares two values.
    fn same<T: PartialEq + Debug>(&mut self, field: &str, expected: &T, got: &T) {
        if expected != got {
            self.miss(field, None, format!("{expected:?}"), format!("{got:?}"));
        }
    }

    /// Compares two sequences; reports the length or the first differing index.
    fn seq<T: PartialEq + Debug>(&mut self, field: &str, expected: &[T], got: &[T]) {
        self.seq_where(field, expected, got, |e, g| e == g);
    }

    /// Compares a token array whose padding Megatron leaves stale: a `STALE` entry in
    /// `expected` matches anything.
    fn padded(&mut self, field: &str, expected: &[i64], got: &[i64]) {
        self.seq_where(field, expected, got, |e, g| e == g || *e == STALE);
    }

    /// Compares an array that may be absent (`null` in the record).
    fn optional<T: PartialEq + Debug>(
        &mut self,
        field: &str,
        expected: &Option<Vec<T>>,
        got: &Option<Vec<T>>,
    ) {
        match (expected, got) {
            (None, None) => {}
            (None, Some(g)) => self.miss(field, None, "absent".into(), format!("{g:?}")),
            (Some(e), None) => self.miss(field, None, format!("{e:?}"), "absent".into()),
            (Some(e), Some(g)) => self.seq(field, e, g),
        }
    }

    fn seq_where<T: Debug>(
        &mut self,
        field: &str,
        expected: &[T],
        got: &[T],
        agree: impl Fn(&T, &T) -> bool,
    ) {
        if expected.len() != got.len() {
            self.miss(
                field,
                None,
                format!("length {}", expected.len()),
                format!("length {}", got.len()),
            );
        } else if let Some(i) = expected.iter().zip(got).position(|(e, g)| !agree(e, g)) {
            let show = |v: Option<&T>| v.map_or("-".to_owned(), |x| format!("{x:?}"));
            self.miss(field, Some(i), show(expected.get(i)), show(got.get(i)));
        }
    }
}

// ---- reading -----------------------------------------------------------------------------

/// A documented field this replay reads past without checking (its type is not checked
/// either); naming it keeps every other key an error.
type Unused = Option<IgnoredAny>;

/// Why a line could not be read as a record of its kind.
struct Malformed {
    /// Path of the offending field in the record (`inputs.requests[2].q`), `kind`, or
    /// `json` for a line that is not JSON.
    field: String,
    expected: String,
    got: String,
}

/// Reads a value of type `T`, naming the field that failed.
fn read<T: DeserializeOwned>(value: Value) -> Result<T, Malformed> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Malformed {
            // `.` is the record itself (a missing field is named in serde's message).
            field: if path == "." {
                "record".to_owned()
            } else {
                path
            },
            expected: "a field as testdata/GOLDEN-README.md documents it".to_owned(),
            got: e.into_inner().to_string(),
        }
    })
}

/// A name as the record spells it (an op's, from its `rename_all`), so the spelling is
/// written once, in the type that reads it.
fn spelled(name: impl Serialize) -> String {
    match serde_json::to_value(name) {
        Ok(Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// One line of a golden file, read by its `kind`.
enum Record {
    Buckets(megatron::BucketsRecord),
    Step(Box<megatron::StepRecord>),
    Error(Box<megatron::ErrorRecord>),
    KvAllocator(megatron::KvRecord),
    MambaSlots(megatron::SlotsRecord),
    PrefixKv(prefix::TraceRecord<prefix::KvState>),
    /// A `prefix_kv` trace with a Mamba state cache.
    MambaCache(prefix::TraceRecord<prefix::CacheState>),
    PrefixHash(prefix::HashRecord),
    MambaOffsets(prefix::OffsetsRecord),
    /// Counts and provenance; nothing to check.
    Summary,
}

/// Reads one non-empty line: its kind as written (`invalid` for a line that is not JSON,
/// `unknown` for one without a string `kind`) and the record.
fn read_line(line: &str) -> (String, Result<Record, Malformed>) {
    let mut value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            let why = Malformed {
                field: "json".to_owned(),
                expected: "a JSON object".to_owned(),
                got: e.to_string(),
            };
            return ("invalid".to_owned(), Err(why));
        }
    };
    let kind = match value.as_object_mut().and_then(|o| o.remove("kind")) {
        Some(Value::String(k)) => k,
        _ => "unknown".to_owned(),
    };
    let record = match kind.as_str() {
        "buckets" => read(value).map(Record::Buckets),
        "step" => read(value).map(|r| Record::Step(Box::new(r))),
        "error" => read(value).map(|r| Record::Error(Box::new(r))),
        "kv_allocator" => read(value).map(Record::KvAllocator),
        "mamba_slots" => read(value).map(Record::MambaSlots),
        "prefix_kv" => read(value).map(Record::PrefixKv),
        "mamba_cache" => read(value).map(Record::MambaCache),
        "prefix_hash" => read(value).map(Record::PrefixHash),
        "mamba_offsets" => read(value).map(Record::MambaOffsets),
        "summary" => Ok(Record::Summary),
        other => Err(Malformed {
            field: "kind".to_owned(),
            expected: "a record kind of testdata/GOLDEN-README.md".to_owned(),
            got: format!("`{other}`"),
        }),
    };
    (kind, record)
}

/// The kind of a line, if it is a JSON object with a string `kind` (the command line
/// tool's check that a file holds golden records at all); otherwise why not.
pub fn record_kind(line: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Kind {
        kind: Option<Value>,
    }
    match serde_json::from_str::<Kind>(line) {
        Ok(Kind {
            kind: Some(Value::String(k)),
        }) => Ok(k),
        Ok(_) => Err("a JSON value without a string `kind`".to_owned()),
        Err(e) if e.is_data() => Err("a JSON value without a string `kind`".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The non-empty lines of a golden file with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    (1..)
        .zip(text.lines())
        .filter(|(_, line)| !line.trim().is_empty())
}

/// Replays every record of a golden JSONL text.
pub fn replay(text: &str) -> Report {
    let mut report = Report::default();
    for (line_no, line) in lines(text) {
        let (kind, record) = read_line(line);
        let mut cmp = Cmp::new(line_no);
        let result = match record {
            Ok(record) => replay_record(record, &mut cmp, &mut report.deviations),
            Err(m) => {
                cmp.miss(&m.field, None, m.expected, m.got);
                Ok(())
            }
        };
        if let Err(e) = result {
            cmp.miss("record", None, "a replayable record".into(), e);
        }
        report.tally(&kind, cmp);
    }
    report
}

fn replay_record(
    record: Record,
    cmp: &mut Cmp,
    deviations: &mut Vec<String>,
) -> Result<(), String> {
    match record {
        Record::Buckets(r) => megatron::replay_buckets(&r, cmp),
        Record::Step(r) => megatron::replay_step(&r, cmp),
        Record::Error(r) => megatron::replay_error(&r, cmp),
        Record::KvAllocator(r) => megatron::replay_kv(&r, cmp),
        Record::MambaSlots(r) => megatron::replay_slots(&r, cmp, deviations),
        Record::PrefixKv(r) => prefix::replay_trace(&r, cmp, deviations),
        Record::MambaCache(r) => prefix::replay_trace(&r, cmp, deviations),
        Record::PrefixHash(r) => prefix::replay_hash(&r, cmp, deviations),
        Record::MambaOffsets(r) => prefix::replay_offsets(&r, cmp),
        Record::Summary => Ok(()),
    }
}
