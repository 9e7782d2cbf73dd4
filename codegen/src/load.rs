//! The common front end of every way a layout is written: a TOML file, the attribute's
//! arguments, or a file with inline overrides. All three become one `toml::Table`, which
//! is checked key by key against [`KEYS`] (so every diagnostic names the key it concerns),
//! then deserialized, validated and turned into a [`Geometry`].
//!
//! Parse → check → validate → derive, each stage reporting every independent mistake it
//! finds and none that follow from an earlier one: a later stage runs only when the
//! earlier ones found nothing.

use toml::{Table, Value};

use crate::geometry::Geometry;
use crate::spec::{
    Diagnostic, KEYS, KeyType, LayoutSpec, REQUIRED_KEYS, REQUIRED_SECTION_KEYS, SpecError,
};

/// A TOML source: its text and the name it goes by in messages.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The file as the user named it (`layouts/nemotron-h-8b.toml`).
    pub name: &'a str,
    /// Its contents.
    pub text: &'a str,
}

/// A spec read, checked, validated and derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The merged table the spec was read from (file keys, then inline overrides).
    pub table: Table,
    /// The spec.
    pub spec: LayoutSpec,
    /// Its geometry and buckets.
    pub geometry: Geometry,
}

impl Loaded {
    /// The merged spec as TOML text (what generated code records as `SPEC_TOML`).
    pub fn spec_toml(&self) -> String {
        self.table.to_string()
    }
}

/// Parses TOML text into a table; a syntax error names the file, line and column.
pub fn parse_toml(source: Source<'_>) -> Result<Table, SpecError> {
    source
        .text
        .parse::<Table>()
        .map_err(|e| crate::spec::toml_error(source.name, source.text, &e))
}

/// Merges `overrides` over `base`: a key in both takes the override's value, except that
/// two tables merge key by key (so `graphs(count = 4)` keeps the file's other `graphs`
/// keys).
pub fn merge(base: &mut Table, overrides: Table) {
    for (k, v) in overrides {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Reads a spec from an optional file and inline overrides, checks every key, validates
/// the spec and derives its geometry.
///
/// Diagnostics name their key; when a file is given, each also carries the position of its
/// key in the file (or of the nearest enclosing key that is there). Callers that know where
/// the inline keys were written (the proc-macro) attribute inline keys themselves.
pub fn load(file: Option<Source<'_>>, inline: Table) -> Result<Loaded, SpecError> {
    let locate = |e: SpecError| match file {
        Some(src) => e.locate(src.name, src.text),
        None => e,
    };
    let mut table = match file {
        Some(src) => parse_toml(src)?,
        None => Table::new(),
    };
    merge(&mut table, inline);
    let spec = spec_from_table(&table).map_err(locate)?;
    let geometry = Geometry::new(&spec).map_err(locate)?;
    Ok(Loaded {
        table,
        spec,
        geometry,
    })
}

/// Reads a spec from a TOML file alone (no overrides).
pub fn load_file(file: Source<'_>) -> Result<Loaded, SpecError> {
    load(Some(file), Table::new())
}

/// Checks every key of `table` ([`check_table`]), then deserializes and validates it.
pub fn spec_from_table(table: &Table) -> Result<LayoutSpec, SpecError> {
    let diagnostics = check_table(table);
    if !diagnostics.is_empty() {
        return Err(SpecError { diagnostics });
    }
    LayoutSpec::from_table(table.clone())
}

/// One diagnostic per unknown key, value of the wrong type or unknown name (model kind,
/// distribution, index type, graph count), and missing required key.
///
/// After this returns nothing, deserializing `table` into a [`LayoutSpec`] cannot fail.
pub fn check_table(table: &Table) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut suggested = Vec::new();
    check_level(table, "", &mut out, &mut suggested);
    out.extend(ladder_conflicts(table));
    // A misspelt key is one mistake: its "did you mean" stands in for "missing".
    let missing = |dotted: &str| !suggested.iter().any(|s| s == dotted);
    for key in REQUIRED_KEYS {
        if !table.contains_key(*key) && missing(key) {
            out.push(diag(
                key,
                format!("missing required key ({})", describe(key)),
            ));
        }
    }
    for key in REQUIRED_SECTION_KEYS {
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        if let Some(Value::Table(t)) = table.get(section)
            && !t.contains_key(name)
            && missing(key)
        {
            out.push(diag(
                section,
                format!(
                    "missing required key `{key}` ({}); a `{section}` section must set it",
                    describe(key)
                ),
            ));
        }
    }
    out
}

/// One diagnostic per ladder key (`graphs.count`, ...) written next to an explicit bucket
/// table, which replaces the ladder: the key would silently do nothing.
fn ladder_conflicts(table: &Table) -> Vec<Diagnostic> {
    let Some(Value::Table(graphs)) = table.get("graphs") else {
        return Vec::new();
    };
    if !graphs.contains_key("buckets") {
        return Vec::new();
    }
    crate::spec::LADDER_KEYS
        .iter()
        .filter(|k| graphs.contains_key(**k))
        .map(|k| {
            diag(
                &format!("graphs.{k}"),
                format!(
                    "an explicit bucket table (`{}`) replaces the generated ladder, so `graphs.{k}` would have no effect: remove one of them",
                    crate::spec::BUCKETS_KEY
                ),
            )
        })
        .collect()
}

fn diag(key: &str, message: String) -> Diagnostic {
    Diagnostic {
        key: Some(key.to_owned()),
        message,
        location: None,
    }
}

/// What a required key means, for "missing key" messages.
fn describe(key: &str) -> &'static str {
    match key {
        "model" => "\"mha\", \"mamba\" or \"hybrid\"",
        "max_requests" => "R, request rows per step",
        "max_tokens" => "T, tokens per step",
        "max_seq_len" => "S, the longest sequence",
        "block_size" => "B, tokens per KV block",
        "mamba.chunk_size" => "the SSM chunk size",
        "mamba.conv_width" => "the causal-conv1d width d_conv",
        "memory.attention_layers" => "attention layers per rank",
        "memory.budget_gib" => "GiB for the KV cache and Mamba states",
        _ => "required",
    }
}

fn check_level(
    table: &Table,
    prefix: &str,
    out: &mut Vec<Diagnostic>,
    suggested: &mut Vec<String>,
) {
    for (k, v) in table {
        let dotted = join(prefix, k);
        let Some(&(_, ty)) = KEYS.iter().find(|(name, _)| *name == dotted) else {
            let known = keys_under(prefix);
            let near = closest(k, &known);
            if let Some(near) = near {
                suggested.push(join(prefix, near));
            }
            out.push(diag(&dotted, unknown_key_message(k, prefix, &known, near)));
            continue;
        };
        if let Some(message) = type_error(&dotted, ty, v) {
            out.push(diag(&dotted, message));
        } else if let (KeyType::Table, Value::Table(t)) = (ty, v) {
            check_level(t, &dotted, out, suggested);
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The keys allowed directly under `prefix` (`""` for the top level).
fn keys_under(prefix: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|(k, _)| match k.rsplit_once('.') {
            Some((p, name)) if p == prefix => Some(name),
            None if prefix.is_empty() => Some(*k),
            _ => None,
        })
        .collect()
}

fn unknown_key_message(key: &str, prefix: &str, known: &[&str], near: Option<&str>) -> String {
    let place = if prefix.is_empty() {
        String::new()
    } else {
        format!(" in `{prefix}`")
    };
    let hint = match near {
        Some(k) => format!(" (did you mean `{k}`?)"),
        None => String::new(),
    };
    let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    format!(
        "unknown field `{key}`{place}{hint}, expected one of {}",
        list.join(", ")
    )
}

/// The known key nearest to `key` by edit distance, when it is near enough to be a typo.
pub(crate) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|&(d, k)| d <= 2.max(k.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (small strings only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = i;
        let mut left = i + 1;
        let mut next = Vec::with_capacity(row.len());
        next.push(left);
        for (j, cb) in b.iter().enumerate() {
            let up = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let cost = diag + usize::from(ca != *cb);
            left = cost.min(up + 1).min(left + 1);
            next.push(left);
            diag = up;
        }
        row = next;
    }
    row.last().copied().unwrap_or(0)
}

/// How a value is described in "invalid type" messages.
fn found(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer `{i}`"),
        Value::Float(f) => format!("floating point `{f}`"),
        Value::Boolean(b) => format!("boolean `{b}`"),
        Value::Datetime(d) => format!("datetime `{d}`"),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

/// The names a string key accepts, when it is one of the enumerated keys.
fn names_of(key: &str) -> Option<&'static [&'static str]> {
    match key {
        "model" => Some(&["mha", "mamba", "hybrid"]),
        "graphs.distribution" => Some(&["exponential", "linear"]),
        "decode_index_dtype" => Some(&["i32", "i64"]),
        "formats" => Some(&["flashinfer", "vllm"]),
        _ => None,
    }
}

fn quoted_list(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match q.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => q.join(""),
    }
}

/// Why `v` is not a valid value of type `ty` for `key`, if it is not.
fn type_error(key: &str, ty: KeyType, v: &Value) -> Option<String> {
    let invalid = |expected: &str| Some(format!("invalid type: {}, expected {expected}", found(v)));
    match (ty, v) {
        (KeyType::Int, Value::Integer(i)) => {
            if *i < 0 {
                Some(format!("must be a non-negative integer, got {i}"))
            } else if *i > i64::from(u32::MAX) {
                Some(format!(
                    "must fit in 32 bits (at most {}), got {i}",
                    u32::MAX
                ))
            } else {
                None
            }
        }
        (KeyType::Int, _) => invalid("a non-negative integer"),
        (KeyType::Number, Value::Integer(_) | Value::Float(_)) => None,
        (KeyType::Number, _) => invalid("a number"),
        (KeyType::Bool, Value::Boolean(_)) => None,
        (KeyType::Bool, _) => invalid("`true` or `false`"),
        (KeyType::Table, Value::Table(_)) => None,
        (KeyType::Table, _) => invalid(&format!(
            "a group of keys (`[{key}]` in TOML, `{key}(...)` in the attribute)"
        )),
        (KeyType::Str, Value::String(s)) => match names_of(key) {
            Some(names) if !names.contains(&s.as_str()) => Some(format!(
                "unknown {} \"{s}\": expected {}",
                match key {
                    "model" => "model kind",
                    "graphs.distribution" => "distribution",
                    _ => "index type",
                },
                quoted_list(names)
            )),
            _ => None,
        },
        (KeyType::Str, _) => match names_of(key) {
            Some(names) => invalid(&format!("one of {}", quoted_list(names))),
            None => invalid("a string"),
        },
        (KeyType::IntOrStr, Value::Integer(n)) if *n >= 1 && *n <= i64::from(u32::MAX) => None,
        (KeyType::IntOrStr, Value::Integer(n)) => Some(format!(
            "graph count {n} must be at least 1 (use \"off\" for no graphs)"
        )),
        (KeyType::IntOrStr, Value::String(s)) if s == "auto" || s == "off" => None,
        (KeyType::IntOrStr, Value::String(s)) => Some(format!(
            "unknown graph count \"{s}\": expected a positive integer, \"auto\" or \"off\""
        )),
        (KeyType::IntOrStr, _) => invalid("a positive integer, \"auto\" or \"off\""),
        (KeyType::Buckets, Value::Array(entries)) => bucket_entries_error(entries),
        (KeyType::Names, Value::Array(items)) => names_error(key, items),
        (KeyType::Names, _) => invalid(&format!(
            "a list of names ({})",
            quoted_list(names_of(key).unwrap_or(&[]))
        )),
        (KeyType::Buckets, _) => invalid(
            "a list of [tokens, prefill, decode] entries (`buckets = [[256, 0, 256], [4096, 1, 255]]`)",
        ),
    }
}

/// Why a list of names (`formats`) is not a list of distinct known names, naming the
/// first entry that is not.
fn names_error(key: &str, items: &[Value]) -> Option<String> {
    let names = names_of(key).unwrap_or(&[]);
    items.iter().enumerate().find_map(|(i, v)| match v {
        Value::String(s) if !names.contains(&s.as_str()) => Some(format!(
            "entry {i}: unknown name \"{s}\": expected {}",
            quoted_list(names)
        )),
        Value::String(s) if items.iter().take(i).any(|w| w.as_str() == Some(s)) => {
            Some(format!("entry {i}: \"{s}\" is named twice"))
        }
        Value::String(_) => None,
        other => Some(format!(
            "entry {i} ({}) must be a name: {}",
            found(other),
            quoted_list(names)
        )),
    })
}

/// Why a bucket table's entries are not all `[tokens, prefill, decode]` triples of 32-bit
/// non-negative integers, naming the first entry that is not.
fn bucket_entries_error(entries: &[Value]) -> Option<String> {
    entries.iter().enumerate().find_map(|(i, e)| {
        let ok = match e {
            Value::Array(xs) => {
                xs.len() == 3
                    && xs.iter().all(|x| {
                        matches!(x, Value::Integer(n) if (0..=i64::from(u32::MAX)).contains(n))
                    })
            }
            _ => false,
        };
        (!ok).then(|| {
            format!(
                "entry {i} ({}) must be [tokens, prefill, decode]: three non-negative 32-bit integers",
                match e {
                    Value::Array(_) => e.to_string(),
                    other => found(other),
                }
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_layouts::HYBRID;

    fn src(text: &str) -> Source<'_> {
        Source {
            name: "h.toml",
            text,
        }
    }

    fn one(e: SpecError) -> Diagnostic {
        assert_eq!(e.diagnostics.len(), 1, "{e}");
        e.diagnostics.into_iter().next().unwrap()
    }

    #[test]
    fn a_file_loads_and_overrides_merge_key_by_key() {
        let base = load(Some(src(HYBRID)), Table::new()).unwrap();
        assert_eq!(base.spec.max_tokens, 64);
        let mut inline = Table::new();
        inline.insert("max_tokens".into(), Value::Integer(128));
        let mut mamba = Table::new();
        mamba.insert("chunk_size".into(), Value::Integer(8));
        inline.insert("mamba".into(), Value::Table(mamba));
        let l = load(Some(src(HYBRID)), inline).unwrap();
        assert_eq!(l.spec.max_tokens, 128);
        let m = l.spec.mamba.unwrap();
        assert_eq!((m.chunk_size, m.conv_width), (8, 4));
        // The recorded TOML reads back to the same spec.
        let again = LayoutSpec::from_toml_str(&l.table.to_string(), "again").unwrap();
        assert_eq!(again.max_tokens, 128);
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let e = load(Some(src(&format!("bloc_size = 4\n{HYBRID}"))), Table::new()).unwrap_err();
        let d = one(e);
        assert_eq!(d.key.as_deref(), Some("bloc_size"));
        assert!(
            d.message.contains("did you mean `block_size`?"),
            "{}",
            d.message
        );
        assert_eq!(d.location.unwrap().line, 1);
        // The misspelling alone: `block_size` is not also reported missing.
        let e = load(
            Some(src(&HYBRID.replace("block_size", "blocksize"))),
            Table::new(),
        );
        assert_eq!(one(e.unwrap_err()).key.as_deref(), Some("blocksize"));
    }

    #[test]
    fn wrong_types_and_unknown_names() {
        for (from, to, key, want) in [
            (
                "max_tokens = 64",
                "max_tokens = \"64\"",
                "max_tokens",
                "invalid type: string \"64\", expected a non-negative integer",
            ),
            (
                "\"hybrid\"",
                "\"ssm\"",
                "model",
                "unknown model kind \"ssm\": expected \"mha\", \"mamba\" or \"hybrid\"",
            ),
            (
                "max_requests = 8",
                "max_requests = -8",
                "max_requests",
                "must be a non-negative integer, got -8",
            ),
        ] {
            let d = one(load(Some(src(&HYBRID.replace(from, to))), Table::new()).unwrap_err());
            assert_eq!(d.key.as_deref(), Some(key));
            assert_eq!(d.message, want);
        }
        let d = one(load(
            Some(src(&format!(
                "{HYBRID}\n[graphs]\ndistribution = \"cubic\"\n"
            ))),
            Table::new(),
        )
        .unwrap_err());
        assert_eq!(d.key.as_deref(), Some("graphs.distribution"));
        assert_eq!(d.location.unwrap().line, 13);
    }

    #[test]
    fn missing_keys() {
        let d = one(load(
            Some(src(&HYBRID.replace("max_tokens = 64\n", ""))),
            Table::new(),
        )
        .unwrap_err());
        assert_eq!(d.key.as_deref(), Some("max_tokens"));
        assert!(d.message.starts_with("missing required key"));
        let d = one(load(
            Some(src(&HYBRID.replace("conv_width = 4\n", ""))),
            Table::new(),
        )
        .unwrap_err());
        assert_eq!(d.key.as_deref(), Some("mamba"));
        assert!(d.message.contains("`mamba.conv_width`"), "{}", d.message);
        // A hybrid model without the section points at `model`.
        let no_mamba = HYBRID.split("[mamba]").next().unwrap();
        let d = one(load(Some(src(no_mamba)), Table::new()).unwrap_err());
        assert_eq!(d.key.as_deref(), Some("model"));
        assert_eq!(d.location.unwrap().line, 2);
    }

    #[test]
    fn bucket_tables_must_be_lists_of_triples() {
        for (table, want) in [
            (
                "buckets = 8",
                "invalid type: integer `8`, expected a list of [tokens, prefill, decode] entries",
            ),
            (
                "buckets = [[8, 0, 8], [4, 1]]",
                "entry 1 ([4, 1]) must be [tokens, prefill, decode]: three non-negative 32-bit integers",
            ),
            (
                "buckets = [[8, 0, 8], [4, -1, 3]]",
                "entry 1 ([4, -1, 3]) must be [tokens, prefill, decode]",
            ),
            (
                "buckets = [\"8,0,8\"]",
                "entry 0 (string \"8,0,8\") must be [tokens, prefill, decode]",
            ),
        ] {
            let d = one(load(
                Some(src(&format!("{HYBRID}\n[graphs]\n{table}\n"))),
                Table::new(),
            )
            .unwrap_err());
            assert_eq!(d.key.as_deref(), Some("graphs.buckets"));
            assert!(d.message.starts_with(want), "{}", d.message);
            assert_eq!(d.location.unwrap().line, 13);
        }
    }

    #[test]
    fn a_bucket_table_excludes_the_ladder_keys() {
        let text =
            format!("{HYBRID}\n[graphs]\ncount = 8\nmixed_prefill = 2\nbuckets = [[8, 0, 8]]\n");
        let e = load(Some(src(&text)), Table::new()).unwrap_err();
        let keys: Vec<_> = e
            .diagnostics
            .iter()
            .map(|d| d.key.clone().unwrap())
            .collect();
        assert_eq!(keys, ["graphs.count", "graphs.mixed_prefill"]);
        assert!(
            e.diagnostics[0].message.starts_with(
                "an explicit bucket table (`graphs.buckets`) replaces the generated ladder"
            ),
            "{e}"
        );
        assert_eq!(e.diagnostics[0].location.as_ref().unwrap().line, 13);
        // An override cannot drop the file's ladder keys: the conflict is reported there.
        let mut inline = Table::new();
        let mut graphs = Table::new();
        graphs.insert(
            "buckets".into(),
            Value::Array(vec![Value::Array(vec![
                Value::Integer(8),
                Value::Integer(0),
                Value::Integer(8),
            ])]),
        );
        inline.insert("graphs".into(), Value::Table(graphs));
        let file = format!("{HYBRID}\n[graphs]\ncount = 8\n");
        let d = one(load(Some(src(&file)), inline).unwrap_err());
        assert_eq!(d.key.as_deref(), Some("graphs.count"));
    }

    #[test]
    fn an_explicit_table_is_the_bucket_list() {
        let text = format!("{HYBRID}\n[graphs]\nbuckets = [[64, 2, 6], [8, 0, 8], [4, 0, 4]]\n");
        let l = load(Some(src(&text)), Table::new()).unwrap();
        let want: Vec<_> = [(4, 0, 4), (8, 0, 8), (64, 2, 6)]
            .iter()
            .map(|&(t, p, d)| crate::BatchDims::new(t, p, d))
            .collect();
        assert_eq!(l.geometry.buckets, want);
        // The recorded TOML reads back to the same list.
        let again = load(Some(src(&l.spec_toml())), Table::new()).unwrap();
        assert_eq!(again.geometry.buckets, want);
    }

    #[test]
    fn a_bad_table_is_refused_naming_the_key_and_the_entry() {
        let text = format!("{HYBRID}\n[graphs]\nbuckets = [[8, 0, 8], [63, 1, 7]]\n");
        let d = one(load(Some(src(&text)), Table::new()).unwrap_err());
        assert_eq!(d.key.as_deref(), Some("graphs.buckets"));
        assert_eq!(d.location.as_ref().unwrap().line, 13);
        assert_eq!(
            d.to_string(),
            "h.toml:13:1: `graphs.buckets`: entry 1, [63, 1, 7]: 63 tokens is more than 1 prefill requests of at most max_seq_len = 32 tokens and 7 decode requests can hold (39)"
        );
        // Another mistake elsewhere stops the table from being checked at all (no
        // follow-on diagnostics).
        let text = text.replace("block_size = 4", "block_size = 3");
        let d = one(load(Some(src(&text)), Table::new()).unwrap_err());
        assert_eq!(d.key.as_deref(), Some("block_size"));
    }

    #[test]
    fn syntax_errors_are_located() {
        let d = one(load(Some(src("model = \n")), Table::new()).unwrap_err());
        assert_eq!(d.key, None);
        let loc = d.location.unwrap();
        assert_eq!((loc.file.as_str(), loc.line), ("h.toml", 1));
    }

    #[test]
    fn every_key_type_is_checked() {
        assert_eq!(keys_under("graphs").len(), 7);
        assert!(keys_under("").contains(&"max_tokens"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            closest("mixed_prefil", &keys_under("graphs")),
            Some("mixed_prefill")
        );
        assert_eq!(closest("zzz", &keys_under("graphs")), None);
    }
}
