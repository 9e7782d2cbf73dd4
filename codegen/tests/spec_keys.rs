//! The spec schema is written in two places that cannot be derived from each other: the
//! serde attributes of `LayoutSpec` (what deserializes) and the key table `KEYS` with
//! `REQUIRED_KEYS` / `REQUIRED_SECTION_KEYS` (what `load::check_table` checks key by key,
//! at its own span, before serde runs). This test fails when they disagree: a key serde
//! knows that the table lacks (or the other way round), a key serde requires that the
//! table does not, or a required key serde would default.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::collections::BTreeSet;

use attention_layout_codegen::spec::{KEYS, KeyType, REQUIRED_KEYS, REQUIRED_SECTION_KEYS};
use attention_layout_codegen::{LayoutSpec, load};
use toml::{Table, Value};

/// A spec with every key of `KEYS` set to a valid value.
const FULL: &str = r#"
name = "all-keys"
source = "test"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
speculative_tokens = 0
tensor_parallel = 1
decode_index_dtype = "i64"
kv_pool_blocks = 65
formats = ["flashinfer"]

[mamba]
chunk_size = 4
conv_width = 4

[graphs]
count = "auto"
distribution = "exponential"
token_budget = 64
mixed_prefill = 4
non_decode = true
# Beside the ladder keys only here, to list every key; the checks take one or the other.
buckets = [[8, 0, 8], [64, 4, 4]]
graph_memory_mib = 64

[memory]
attention_layers = 1
mamba_layers = 1
kv_heads = 1
head_dim = 8
dtype_bytes = 2
mamba_heads = 1
mamba_head_dim = 8
mamba_state_dim = 8
mamba_groups = 1
state_dtype_bytes = 4
budget_gib = 1.0
prefix_caching_mamba_gb = 0.5
"#;

fn full() -> Table {
    FULL.parse().unwrap()
}

/// Every dotted key of a table.
fn dotted(table: &Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Table(t) = v {
            dotted(t, &key, out);
        }
        out.insert(key);
    }
}

fn table_keys() -> BTreeSet<String> {
    KEYS.iter().map(|(k, _)| (*k).to_owned()).collect()
}

/// The fields serde accepts under `prefix`, from its own "unknown field" message.
fn serde_fields(prefix: &str) -> BTreeSet<String> {
    let mut t = full();
    let level = if prefix.is_empty() {
        &mut t
    } else {
        t.get_mut(prefix).unwrap().as_table_mut().unwrap()
    };
    level.insert("zz_not_a_key".to_owned(), Value::Integer(1));
    let e = LayoutSpec::from_table(t).unwrap_err().to_string();
    // serde writes "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`".
    let list = e
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("serde did not list the fields of `{prefix}`: {e}"));
    let list = list.trim_start_matches("one of ").replace(" or ", ", ");
    list.split(", ")
        .map(|f| {
            let f = f.trim().trim_matches('`');
            if prefix.is_empty() {
                f.to_owned()
            } else {
                format!("{prefix}.{f}")
            }
        })
        .collect()
}

#[test]
fn the_full_spec_sets_every_key_of_the_table_and_passes_both_checks() {
    let mut keys = BTreeSet::new();
    dotted(&full(), "", &mut keys);
    assert_eq!(keys, table_keys(), "the test spec and KEYS differ");
    LayoutSpec::from_table(full()).unwrap();
    // An explicit table and the ladder keys exclude each other: the checks pass on each.
    let ladder = [
        "count",
        "distribution",
        "token_budget",
        "mixed_prefill",
        "non_decode",
    ];
    let (mut with_table, mut with_ladder) = (full(), full());
    let graphs = |t: &mut Table| t.get_mut("graphs").unwrap().as_table_mut().unwrap().clone();
    let mut g = graphs(&mut with_table);
    g.retain(|k, _| !ladder.contains(&k));
    with_table.insert("graphs".to_owned(), Value::Table(g));
    let mut g = graphs(&mut with_ladder);
    g.remove("buckets");
    with_ladder.insert("graphs".to_owned(), Value::Table(g));
    for t in [with_table, with_ladder] {
        assert_eq!(load::check_table(&t), []);
        LayoutSpec::from_table(t).unwrap();
    }
}

#[test]
fn serde_and_the_key_table_know_the_same_keys() {
    let mut serde = serde_fields("");
    for (k, ty) in KEYS {
        if *ty == KeyType::Table {
            serde.extend(serde_fields(k));
        }
    }
    assert_eq!(
        serde,
        table_keys(),
        "serde's fields (left) and KEYS (right)"
    );
}

#[test]
fn serde_requires_exactly_the_required_keys() {
    let required: BTreeSet<&str> = REQUIRED_KEYS
        .iter()
        .chain(REQUIRED_SECTION_KEYS)
        .copied()
        .collect();
    for (key, ty) in KEYS {
        if *ty == KeyType::Table {
            continue;
        }
        let mut t = full();
        match key.split_once('.') {
            Some((section, name)) => {
                t.get_mut(section)
                    .unwrap()
                    .as_table_mut()
                    .unwrap()
                    .remove(name);
            }
            None => {
                t.remove(*key);
            }
        }
        let serde_missing = LayoutSpec::from_table(t.clone())
            .err()
            .is_some_and(|e| e.to_string().contains("missing field"));
        let table_missing = load::check_table(&t)
            .iter()
            .any(|d| d.message.contains("missing required key"));
        assert_eq!(
            serde_missing,
            required.contains(key),
            "`{key}`: serde requires it: {serde_missing}"
        );
        assert_eq!(
            table_missing,
            required.contains(key),
            "`{key}`: check_table requires it: {table_missing}"
        );
    }
}
