//! `docs/JSON-REPORTS.md` documents every field of the JSON reports: for every object type
//! it lists, the fields the tool emits are exactly the documented ones (the optional ones
//! seen at least once), with the documented JSON type, and each report names its schema.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::collections::{BTreeMap, BTreeSet};

use attention_layout::LayoutSpec;
use attention_layout::RuntimeDims;
use attention_layout::backend::{CpuBackend, MetadataBackend};
use attention_layout::codegen::Geometry;
use attention_layout::layouts::bundled;
use attention_layout_cli::reports;
use attention_layout_cli::simulate::ep::EpConfig;
use attention_layout_cli::simulate::{self, LengthDist, SimConfig};
use attention_layout_cli::tune::{self, TuneOptions};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/JSON-REPORTS.md");

/// A documented field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    StringOrNull,
    Triples,
    Object(String),
    Objects(String),
}

#[derive(Debug)]
struct FieldDoc {
    kind: Kind,
    optional: bool,
}

/// `### Name` sections and their `| \`field\` | type | meaning |` rows.
fn documented_types() -> BTreeMap<String, BTreeMap<String, FieldDoc>> {
    let mut types: BTreeMap<String, BTreeMap<String, FieldDoc>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            current = Some(name.trim().to_owned());
            types.entry(name.trim().to_owned()).or_default();
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let Some(ty) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 5 || !cells[1].starts_with('`') {
            continue;
        }
        let field = cells[1].trim_matches('`').to_owned();
        let (kind, note) = cells[2].split_once(", ").unwrap_or((cells[2], ""));
        let kind = match kind {
            "string" => Kind::String,
            "integer" => Kind::Integer,
            "number" => Kind::Number,
            "boolean" => Kind::Boolean,
            "string or null" => Kind::StringOrNull,
            "array of integer triples" => Kind::Triples,
            k => {
                if let Some(n) = k.strip_prefix("array of object ") {
                    Kind::Objects(n.to_owned())
                } else if let Some(n) = k.strip_prefix("object ") {
                    Kind::Object(n.to_owned())
                } else {
                    panic!("{ty}.{field}: unknown type `{k}`")
                }
            }
        };
        let optional = note.starts_with("omitted");
        let previous = types
            .get_mut(ty)
            .unwrap()
            .insert(field.clone(), FieldDoc { kind, optional });
        assert!(previous.is_none(), "{ty}.{field} documented twice");
    }
    types
}

/// Checks `value` against type `ty` and records which fields of which type were seen.
fn check(
    types: &BTreeMap<String, BTreeMap<String, FieldDoc>>,
    ty: &str,
    value: &Value,
    path: &str,
    top_level: bool,
    seen: &mut BTreeSet<(String, String)>,
) {
    let fields = types
        .get(ty)
        .unwrap_or_else(|| panic!("{path}: type `{ty}` has no section in the document"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    for (key, v) in object {
        // `schema` only at the top level of a report.
        if key == "schema" {
            assert!(top_level, "{path}: a nested report carries `schema`");
        }
        let doc = fields
            .get(key)
            .unwrap_or_else(|| panic!("{path}.{key} is emitted but not documented under {ty}"));
        seen.insert((ty.to_owned(), key.clone()));
        let at = format!("{path}.{key}");
        match &doc.kind {
            Kind::String => assert!(v.is_string(), "{at}: {v}"),
            Kind::Integer => assert!(v.is_i64() || v.is_u64(), "{at}: {v}"),
            Kind::Number => assert!(v.is_number(), "{at}: {v}"),
            Kind::Boolean => assert!(v.is_boolean(), "{at}: {v}"),
            Kind::StringOrNull => assert!(v.is_string() || v.is_null(), "{at}: {v}"),
            Kind::Triples => {
                for t in v.as_array().unwrap_or_else(|| panic!("{at}: {v}")) {
                    let t = t.as_array().unwrap_or_else(|| panic!("{at}: {t}"));
                    assert!(t.len() == 3 && t.iter().all(Value::is_u64), "{at}: {v}");
                }
            }
            Kind::Object(n) => check(types, n, v, &at, false, seen),
            Kind::Objects(n) => {
                for (i, x) in v
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: {v}"))
                    .iter()
                    .enumerate()
                {
                    check(types, n, x, &format!("{at}[{i}]"), false, seen);
                }
            }
        }
    }
    for (key, doc) in fields {
        let nested_schema = key == "schema" && !top_level;
        assert!(
            doc.optional || nested_schema || object.contains_key(key),
            "{path}: documented field {ty}.{key} is missing"
        );
    }
}

fn dims(name: &str) -> RuntimeDims {
    let spec = LayoutSpec::from_toml_str(bundled(name).unwrap(), name).unwrap();
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

fn short(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        steps: 60,
        rate: 150.0,
        prompt: LengthDist::Uniform { lo: 8, hi: 600 },
        output: LengthDist::Uniform { lo: 2, hi: 40 },
        ..SimConfig::default()
    }
}

#[test]
fn the_documented_fields_are_exactly_the_emitted_ones() {
    let types = documented_types();
    let mut seen = BTreeSet::new();
    let schema_of = |json: String, schema: &str, root: &str, seen: &mut BTreeSet<_>| {
        let v: Value = serde_json::from_str(&json).unwrap();
        // The schema is the first field, and the document names it in the root's table.
        assert!(
            json.trim_start()
                .starts_with(&format!("{{\n  \"schema\": \"{schema}\"")),
            "{json}"
        );
        assert!(DOC.contains(&format!(
            "| `{schema}` | [{root}](#{})",
            root.to_lowercase()
        )));
        check(&types, root, &v, root, true, seen);
    };

    // simulate, on a hybrid layout (Mamba pools) and an MHA one with draft tokens.
    for name in ["mamba2-2.7b", "llama-3.1-8b-spec2", "nemotron-h-8b"] {
        let d = dims(name);
        let mut b = CpuBackend::new(d.clone());
        let r = simulate::run(&short(3), &d, &mut b, &mut |_| {}).unwrap();
        schema_of(r.to_json(), reports::SIMULATE, "SimulateReport", &mut seen);
    }
    // simulate with prefix caching (the `prefix` object), a hybrid layout with a Mamba
    // cache.
    let d = dims("nemotron-h-8b");
    let mut b = CpuBackend::new(d.clone());
    let config = SimConfig {
        prefix_caching: Some(attention_layout::EvictionPolicy::Lru),
        prefix_mamba_slots: Some(16),
        system_prompt: 300,
        turns: 2,
        ..short(3)
    };
    let r = simulate::run(&config, &d, &mut b, &mut |_| {}).unwrap();
    assert!(r.prefix.is_some());
    schema_of(r.to_json(), reports::SIMULATE, "SimulateReport", &mut seen);
    // simulate --ep-ranks 3.
    let d = dims("nemotron-h-8b");
    let ep = EpConfig {
        ranks: 3,
        rank_skew: 1.0,
    };
    let mut backends: Vec<Box<dyn MetadataBackend>> = (0..3)
        .map(|_| Box::new(CpuBackend::new(d.clone())) as Box<dyn MetadataBackend>)
        .collect();
    let r = simulate::run_ep(&short(4), &ep, &d, &mut backends, &mut |_| {}).unwrap();
    schema_of(r.to_json(), reports::SIMULATE_EP, "EpReport", &mut seen);
    // tune, with and without bucket-aware chunking (which adds the `*_chunked` figures).
    let spec = LayoutSpec::from_toml_str(bundled("mamba2-2.7b").unwrap(), "mamba2-2.7b").unwrap();
    for bucket_chunking in [false, true] {
        let opts = TuneOptions {
            max_graphs: 8,
            bucket_chunking,
            ..TuneOptions::default()
        };
        let o = tune::tune(&spec, &short(5), &short(6), &opts, &mut |_| {}).unwrap();
        let json = tune::cli::to_json(&o);
        assert_eq!(
            json.contains("\"tuned_chunked\""),
            bucket_chunking,
            "{json}"
        );
        schema_of(json, reports::TUNE, "TuneReport", &mut seen);
    }

    // Every documented field of every type was emitted somewhere.
    let documented: BTreeSet<(String, String)> = types
        .iter()
        .flat_map(|(t, f)| f.keys().map(move |k| (t.clone(), k.clone())))
        .collect();
    let never: Vec<_> = documented.difference(&seen).collect();
    assert!(never.is_empty(), "documented but never emitted: {never:?}");
}
