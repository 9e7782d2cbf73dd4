//! The public golden file replays with no mismatch (the file is embedded so the test runs
//! on a fresh clone and on the GPU machine, where paths differ).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]
const GOLDEN: &str = include_str!("../../testdata/megatron-public.jsonl");

#[test]
fn public_golden_file_replays_without_mismatch() {
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
    // Every record kind of the file was seen.
    for kind in ["buckets", "step", "error", "kv_allocator", "mamba_slots"] {
        let (pass, _) = report.kinds.get(kind).copied().unwrap_or_default();
        assert!(pass > 0, "no {kind} records replayed");
    }
    assert_eq!(report.kinds["step"].0, 420);
    // The one documented deviation: Megatron accepts a double free, we reject it.
    assert_eq!(report.deviations.len(), 1, "{:?}", report.deviations);
}

#[test]
fn a_corrupted_record_is_reported_with_line_field_and_index() {
    let line = GOLDEN
        .lines()
        .find(|l| l.contains("\"kind\": \"step\"") && l.contains("\"batch_kind\": \"mixed\""))
        .unwrap();
    // Change one block-table entry of the expected output.
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    let bt = &mut v["mha"]["block_table"][0][0];
    *bt = serde_json::json!(bt.as_i64().unwrap() + 1);
    let report = attention_layout_cli::golden::replay(&v.to_string());
    assert_eq!(report.failed(), 1);
    let m = &report.mismatches[0];
    assert_eq!(
        (m.line, m.field.as_str(), m.index),
        (1, "mha.block_table", Some(0))
    );
}

#[test]
fn a_wrongly_typed_field_is_reported_with_its_line_and_field_name() {
    let step = GOLDEN
        .lines()
        .find(|l| l.contains("\"kind\": \"step\"") && l.contains("\"batch_kind\": \"mixed\""))
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(step).unwrap();
    v["inputs"]["requests"][0]["q"] = serde_json::json!("three");
    // The bad record is the third line; the lines around it replay.
    let text = format!("{step}\n{step}\n{v}\n");
    let report = attention_layout_cli::golden::replay(&text);
    assert_eq!((report.passed(), report.failed()), (2, 1));
    let m = &report.mismatches[0];
    assert_eq!((m.line, m.field.as_str()), (3, "inputs.requests[0].q"));
    assert!(m.got.contains("invalid type: string \"three\""), "{m}");
    assert!(
        m.to_string()
            .starts_with("record 3: inputs.requests[0].q: "),
        "{m}"
    );
}

#[test]
fn an_unknown_or_missing_field_is_reported_by_name() {
    let step = GOLDEN
        .lines()
        .find(|l| l.contains("\"kind\": \"step\""))
        .unwrap();
    let mut typo: serde_json::Value = serde_json::from_str(step).unwrap();
    let table = typo["mha"]
        .as_object_mut()
        .unwrap()
        .remove("block_table")
        .unwrap();
    typo["mha"]["blcok_table"] = table;
    let report = attention_layout_cli::golden::replay(&typo.to_string());
    assert_eq!(report.failed(), 1);
    let m = &report.mismatches[0];
    assert_eq!((m.line, m.field.as_str()), (1, "mha.blcok_table"));
    assert!(m.got.contains("unknown field `blcok_table`"), "{m}");

    let mut missing: serde_json::Value = serde_json::from_str(step).unwrap();
    missing["mha"]
        .as_object_mut()
        .unwrap()
        .remove("max_seqlen_q");
    let report = attention_layout_cli::golden::replay(&missing.to_string());
    let m = &report.mismatches[0];
    assert_eq!((m.line, m.field.as_str()), (1, "mha"));
    assert!(m.got.contains("missing field `max_seqlen_q`"), "{m}");
}

#[test]
fn the_step_reader_yields_every_step_record_with_its_line_and_layout() {
    let steps: Vec<_> = attention_layout_cli::golden::steps(GOLDEN)
        .map(Result::unwrap)
        .collect();
    assert_eq!(steps.len(), 420);
    // Line numbers are 1-based and point at step records.
    for (line, _) in &steps {
        assert!(
            GOLDEN
                .lines()
                .nth(line - 1)
                .unwrap()
                .contains("\"kind\": \"step\"")
        );
    }
    // The GPU replay (cuda_golden.rs) builds one backend per distinct layout.
    let layouts: std::collections::HashSet<String> = steps
        .iter()
        .map(|(_, s)| format!("{:?}", s.spec()))
        .collect();
    assert_eq!(layouts.len(), 105);
    // Each step's input has as many rows as its record has requests.
    let (line, first) = &steps[0];
    let rec: serde_json::Value =
        serde_json::from_str(GOLDEN.lines().nth(line - 1).unwrap()).unwrap();
    let rows = first.with_input(|input| input.rows.len());
    assert_eq!(rows, rec["inputs"]["requests"].as_array().unwrap().len());
}
