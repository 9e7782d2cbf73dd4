//! The public prefix-caching golden file (`testdata/megatron-prefix-public.jsonl`: Megatron's
//! own KV allocator, Mamba state cache, hash function and prefix matching run on random
//! op sequences) replays with no mismatch. The file is embedded, so the test runs on a
//! fresh clone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

const GOLDEN: &str = include_str!("../../testdata/megatron-prefix-public.jsonl");

fn count(report: &attention_layout_cli::golden::Report, needle: &str) -> usize {
    report
        .deviations
        .iter()
        .filter(|d| d.contains(needle))
        .count()
}

#[test]
fn the_public_prefix_golden_file_replays_without_mismatch() {
    let report = attention_layout_cli::golden::replay(GOLDEN);
    for m in &report.mismatches {
        eprintln!("{m}");
    }
    assert_eq!(
        report.failed(),
        0,
        "{} mismatching records",
        report.failed()
    );
    for (kind, n) in [
        ("prefix_kv", 106),
        ("prefix_hash", 67),
        ("mamba_cache", 76),
        ("mamba_offsets", 60),
        ("summary", 1),
    ] {
        assert_eq!(report.kinds.get(kind), Some(&(n, 0)), "{kind}");
    }
    // The documented deviations this file reaches (docs/DESIGN.md, "Prefix caching"):
    // a duplicate hash's index entry kept (D3), a broken chain matched forward (D4), the
    // batch's own block not evicted (D5b). Nothing else differs.
    assert_eq!(count(&report, "keeps the index entry"), 4);
    assert_eq!(count(&report, "broken prefix chain"), 15);
    assert_eq!(count(&report, "batch's own blocks"), 1);
    assert_eq!(count(&report, "state not compared"), 5);
    assert_eq!(report.deviations.len(), 25, "{:#?}", report.deviations);
}

/// Edits one record of the file as JSON and replays it alone.
fn replay_edited(
    kind: &str,
    edit: impl Fn(&mut serde_json::Value) -> bool,
) -> attention_layout_cli::golden::Report {
    for line in GOLDEN.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == kind && edit(&mut v) {
            return attention_layout_cli::golden::replay(&v.to_string());
        }
    }
    panic!("no {kind} record to edit");
}

#[test]
fn a_wrong_hash_a_wrong_state_and_a_wrong_offset_are_each_reported() {
    let r = replay_edited("prefix_hash", |v| {
        let Some(h) = v["hashes"].get_mut(0) else {
            return false;
        };
        *h = serde_json::json!(h.as_i64().unwrap() ^ 1);
        true
    });
    assert_eq!(r.failed(), 1);
    assert_eq!(
        (r.mismatches[0].field.as_str(), r.mismatches[0].index),
        ("hashes", Some(0))
    );

    let r = replay_edited("prefix_kv", |v| {
        let op = &mut v["ops"][1];
        if op["op"] != "allocate" {
            return false;
        }
        op["state"]["avail"] = serde_json::json!(op["state"]["avail"].as_i64().unwrap() + 1);
        true
    });
    assert_eq!(r.failed(), 1);
    assert!(
        r.mismatches[0].field.ends_with("kv.avail"),
        "{}",
        r.mismatches[0]
    );

    let r = replay_edited("mamba_offsets", |v| {
        if v["output"]["count"] == 0 {
            return false;
        }
        v["output"]["offsets"][0] =
            serde_json::json!(v["output"]["offsets"][0].as_i64().unwrap() + 1);
        true
    });
    assert_eq!(r.failed(), 1);
    assert_eq!(r.mismatches[0].field, "output");
}

#[test]
fn an_error_megatron_raised_must_be_raised_here() {
    // Turn a successful release into one Megatron refused: the replay reports it.
    let r = replay_edited("prefix_kv", |v| {
        let Some(ops) = v["ops"].as_array_mut() else {
            return false;
        };
        let Some(op) = ops.iter_mut().find(|o| o["op"] == "retain") else {
            return false;
        };
        op["error"] = serde_json::json!("AssertionError");
        true
    });
    assert_eq!(r.failed(), 1);
    assert!(
        r.mismatches[0].field.ends_with("retain: error"),
        "{}",
        r.mismatches[0]
    );
}

#[test]
fn a_wrongly_typed_op_argument_or_state_field_is_reported_by_its_path() {
    let r = replay_edited("prefix_kv", |v| {
        let op = &mut v["ops"][1];
        if op["op"] != "allocate" {
            return false;
        }
        op["n"] = serde_json::json!("two");
        true
    });
    assert_eq!(r.failed(), 1);
    let m = &r.mismatches[0];
    assert_eq!((m.line, m.field.as_str()), (1, "ops[1].n"));
    assert!(m.got.contains("invalid type: string \"two\""), "{m}");

    let r = replay_edited("mamba_cache", |v| {
        let Some(op) = v["ops"].as_array_mut().and_then(|ops| ops.first_mut()) else {
            return false;
        };
        op["state"]["mamba"]["free_count"] = serde_json::json!(-1);
        true
    });
    assert_eq!(r.failed(), 1);
    assert_eq!(r.mismatches[0].field, "ops[0].state.mamba.free_count");

    // An op without one of its arguments names the op and the argument.
    let r = replay_edited("prefix_kv", |v| {
        let Some(op) = v["ops"].as_array_mut().and_then(|ops| ops.first_mut()) else {
            return false;
        };
        op.as_object_mut().unwrap().remove("clock").is_some()
    });
    assert_eq!(r.failed(), 1);
    let m = &r.mismatches[0];
    assert_eq!(m.field, "ops[0]");
    assert!(m.got.contains("tick lacks `clock`"), "{m}");
}
