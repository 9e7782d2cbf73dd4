//! Every file in `layouts/` is bundled, loads, validates and is inspected: the report, the
//! generated Rust and the CUDA C; and the `inspect` command prints them.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::process::Command;

use attention_layout::layouts::BUNDLED;
use attention_layout_cli::inspect;

#[test]
fn every_file_in_layouts_is_bundled() {
    // The checkout this test was built in, else `layouts/` under the current directory
    // (a staged binary runs from the repository root of a copy elsewhere).
    let built = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../layouts"));
    let dir = if built.is_dir() {
        built
    } else {
        std::path::Path::new("layouts")
    };
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut bundled: Vec<String> = BUNDLED.iter().map(|(n, _)| format!("{n}.toml")).collect();
    bundled.sort();
    assert_eq!(files, bundled);
    assert!(files.len() >= 5);
}

#[test]
fn every_layout_is_inspected() {
    for (name, src) in BUNDLED {
        // Every layout names its source in a comment and in `source`.
        assert!(src.contains("# Source:"), "{name}: no source comment");
        let l = inspect::read(name).unwrap_or_else(|e| panic!("{e}"));
        let g = l.geometry();
        assert_eq!(l.loaded.spec.name.as_deref(), Some(*name));
        assert!(l.loaded.spec.source.is_some(), "{name}: no `source` key");
        let report = inspect::report(&l);
        for f in &g.fields {
            assert!(
                report.contains(f.field.name()),
                "{name}: {} missing",
                f.field.name()
            );
            assert!(report.contains(&f.offset.to_string()));
        }
        assert!(
            report.contains(&format!("{} bytes", g.facts.total_bytes)),
            "{report}"
        );
        assert!(report.contains(&format!("CUDA-graph buckets: {}", g.buckets.len())));
        assert!(report.contains("memory (per tensor-parallel rank)"));
        // One table row per bucket.
        let rows = report
            .lines()
            .skip_while(|l| !l.starts_with("CUDA-graph buckets"))
            .skip(2)
            .take_while(|l| !l.is_empty())
            .count();
        assert_eq!(rows, g.buckets.len(), "{name}");
        let rust = inspect::rust_source(&l).unwrap();
        let ty = l.type_name();
        assert!(rust.contains(&format!("pub struct {ty};")), "{name}");
        assert!(rust.contains(&format!("impl al::Layout for {ty}")));
        assert!(rust.contains(&format!("total_bytes: {},", g.facts.total_bytes)));
        assert!(!inspect::cuda_source(&l).is_empty());
        println!("{name}: {} lines of Rust", rust.lines().count());
    }
}

#[test]
fn the_inspect_command_prints_the_report_rust_and_cuda() {
    let out = Command::new(env!("CARGO_BIN_EXE_attention-layout"))
        .args(["inspect", "jamba-1.5-mini", "--rust", "--cuda"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("layout jamba-1.5-mini (bundled): hybrid model"));
    assert!(text.contains("buffer map (docs/SEMANTICS.md §9)"));
    assert!(text.contains("// ---- generated Rust (Jamba1_5Mini) ----"));
    assert!(text.contains("pub struct Jamba1_5MiniBuilder"));
    assert!(text.contains("// ---- generated CUDA C ----"));
}

#[test]
fn a_bad_layout_file_is_named_with_line_column_and_key() {
    let path = std::env::temp_dir().join(format!("al-inspect-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "model = \"mha\"\nmax_requests = 8\nmax_tokens = 64\nmax_seq_len = 32\nblock_size = 6\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attention-layout"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!(
            "{}:5:1: `block_size`: must be a power of two",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn inspect_shows_the_format_fields_their_aliases_and_the_guard() {
    let path = std::env::temp_dir().join(format!("al-inspect-formats-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "model = \"hybrid\"\nmax_requests = 8\nmax_tokens = 128\nmax_seq_len = 240\nblock_size = 16\n\
         formats = [\"flashinfer\", \"vllm\"]\n[mamba]\nchunk_size = 16\nconv_width = 4\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_attention-layout"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let l = inspect::read(path.to_str().unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let g = l.geometry();
    for f in [
        "flashinfer_paged_kv_indptr",
        "flashinfer_paged_kv_indices",
        "flashinfer_paged_kv_last_page_len",
        "vllm_slot_mapping",
        "vllm_state_indices_decode",
        "vllm_state_indices_prefill",
        "vllm_has_initial_state",
        "vllm_conv_batch_ptr",
        "vllm_conv_token_chunk_offset",
    ] {
        let field = g.fields.iter().find(|x| x.field.name() == f).unwrap();
        // The field's row: its name, then its offset further along the line.
        let row = text.lines().find(|line| line.contains(f)).unwrap();
        assert!(row.contains(&field.offset.to_string()), "{row}");
    }
    assert!(text.contains("kernel formats: flashinfer, vllm"), "{text}");
    assert!(text.contains("qo_indptr") && text.contains("= mha_cu_query_seq_lengths"));
    assert!(text.contains("seqused_k") && text.contains("= mha_kv_seq_lengths"));
    assert!(text.contains("query_start_loc_p") && text.contains("= mamba_cu_seqlens"));
    assert!(
        text.contains("the block table ends with a 32-entry guard of dummy-block ids (128 bytes)"),
        "{text}"
    );
    // A layout without formats lists none.
    let plain = inspect::report(&inspect::read("nemotron-h-8b").unwrap());
    assert!(!plain.contains("kernel formats"));
    assert!(!plain.contains("vllm_slot_mapping"));
}
