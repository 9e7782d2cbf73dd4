//! docs/LAYOUT-KEYS.md against the schema (`spec::KEYS`, `REQUIRED_KEYS`,
//! `REQUIRED_SECTION_KEYS` and the defaults of `LayoutSpec`): the same keys, types and
//! required keys, the documented literal defaults equal to what the code fills in, and
//! every example a value of its key's type.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::collections::BTreeSet;

use attention_layout_codegen::load;
use attention_layout_codegen::spec::{KEYS, KeyType, REQUIRED_KEYS, REQUIRED_SECTION_KEYS};
use toml::{Table, Value};

const DOC: &str = include_str!("../../docs/LAYOUT-KEYS.md");

/// One documented key: the cells of its table row.
struct Row {
    key: String,
    ty: String,
    default: String,
    example: String,
}

/// The rows of the doc's key tables: rows whose first cell is a backticked key.
fn rows() -> Vec<Row> {
    DOC.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split(" | ")
                .map(str::trim)
                .collect();
            let key = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            assert_eq!(
                cells.len(),
                5,
                "row `{key}`: key, type, default, rule, example"
            );
            Some(Row {
                key: key.to_owned(),
                ty: cells[1].to_owned(),
                default: cells[2].to_owned(),
                example: cells[4].to_owned(),
            })
        })
        .collect()
}

/// How the doc writes a type.
fn type_word(ty: KeyType) -> &'static str {
    match ty {
        KeyType::Int => "integer",
        KeyType::Number => "number",
        KeyType::Str => "string",
        KeyType::Bool => "boolean",
        KeyType::IntOrStr => "integer or string",
        KeyType::Table => "table",
        KeyType::Buckets => "list of `[tokens, prefill, decode]`",
        KeyType::Names => "list of names",
    }
}

/// A cell that is one backticked TOML value or fragment: its text.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// A valid spec that sets none of the keys with a literal default.
const BASE: &str = r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4

[mamba]
chunk_size = 4
conv_width = 4

[memory]
attention_layers = 0
budget_gib = 1.0
"#;

/// `table` with `key` (dotted, one level at most) set to `value`.
fn with(mut table: Table, key: &str, value: Value) -> Table {
    match key.split_once('.') {
        Some((section, name)) => {
            let t = table
                .entry(section)
                .or_insert_with(|| Value::Table(Table::new()));
            t.as_table_mut().unwrap().insert(name.to_owned(), value);
        }
        None => {
            table.insert(key.to_owned(), value);
        }
    }
    table
}

#[test]
fn the_doc_lists_exactly_the_keys_of_the_schema_with_their_types() {
    let rows = rows();
    let documented: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let unique: BTreeSet<&str> = documented.iter().copied().collect();
    assert_eq!(unique.len(), documented.len(), "a key documented twice");
    let schema: BTreeSet<&str> = KEYS.iter().map(|(k, _)| *k).collect();
    let missing: Vec<&&str> = schema.difference(&unique).collect();
    let extra: Vec<&&str> = unique.difference(&schema).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "keys in the schema but not in docs/LAYOUT-KEYS.md: {missing:?}; documented but not in the schema: {extra:?}"
    );
    for row in &rows {
        let ty = KEYS.iter().find(|(k, _)| *k == row.key).unwrap().1;
        assert_eq!(row.ty, type_word(ty), "type of `{}`", row.key);
    }
}

#[test]
fn the_doc_marks_exactly_the_required_keys_required() {
    for row in rows() {
        let key = row.key.as_str();
        let want = if REQUIRED_KEYS.contains(&key) {
            Some("required".to_owned())
        } else if REQUIRED_SECTION_KEYS.contains(&key) {
            let section = key.split_once('.').unwrap().0;
            Some(format!("required in `[{section}]`"))
        } else {
            None
        };
        match want {
            Some(want) => assert_eq!(row.default, want, "`{key}`"),
            None => assert!(
                !row.default.starts_with("required"),
                "`{key}` is documented as required but is not"
            ),
        }
    }
}

#[test]
fn every_literal_default_in_the_doc_is_the_default_the_code_fills_in() {
    let base: Table = BASE.parse().unwrap();
    let without = load::load(None, base.clone()).unwrap();
    let mut checked = 0;
    for row in rows() {
        let Some(literal) = code(&row.default) else {
            continue;
        };
        let value: Value = format!("v = {literal}").parse::<Table>().unwrap()["v"].clone();
        let (section, name) = row.key.split_once('.').unwrap_or(("", &row.key));
        let in_base = match section {
            "" => base.contains_key(name),
            s => base
                .get(s)
                .and_then(Value::as_table)
                .is_some_and(|t| t.contains_key(name)),
        };
        assert!(!in_base, "the base spec sets `{}`", row.key);
        let set = load::load(None, with(base.clone(), &row.key, value))
            .unwrap_or_else(|e| panic!("`{}` = {literal}: {e}", row.key));
        assert_eq!(set.spec, without.spec, "default of `{}`", row.key);
        assert_eq!(set.geometry, without.geometry, "default of `{}`", row.key);
        checked += 1;
    }
    // The literal defaults of today's schema (a key gaining a literal default adds one).
    assert!(checked >= 14, "{checked} literal defaults checked");
}

#[test]
fn every_example_in_the_doc_is_a_value_of_its_key_type() {
    for row in rows() {
        let example = code(&row.example)
            .unwrap_or_else(|| panic!("example of `{}` is one code span", row.key));
        let parsed: Table = example
            .parse()
            .unwrap_or_else(|e| panic!("example of `{}`: {e}", row.key));
        let name = row.key.rsplit('.').next().unwrap();
        assert_eq!(
            parsed.keys().collect::<Vec<_>>(),
            [name],
            "the example of `{}` sets it alone",
            row.key
        );
        let table = with(Table::new(), &row.key, parsed[name].clone());
        let about_it: Vec<String> = load::check_table(&table)
            .into_iter()
            .filter(|d| {
                d.key
                    .as_deref()
                    .is_some_and(|k| k == row.key || k.starts_with(&format!("{}.", row.key)))
            })
            .filter(|d| !d.message.starts_with("missing required key"))
            .map(|d| d.to_string())
            .collect();
        assert!(
            about_it.is_empty(),
            "example of `{}`: {about_it:?}",
            row.key
        );
    }
}
