//! Expected-output tests: the generated Rust (formatted with prettyplease) for three
//! bundled layouts, and the generated CUDA C, diffed against the files in
//! `tests/expected/`. After an intended change, re-bless them with
//! `BLESS=1 cargo test -p attention-layout-codegen --features build --test expected_output`
//! and review the diff.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::path::PathBuf;

use attention_layout_codegen::load::{self, Source};
use attention_layout_codegen::{emit_cuda, emit_rust};

/// One of each model kind: hybrid, attention only, Mamba only.
const LAYOUTS: &[(&str, &str)] = &[
    (
        "nemotron-h-8b",
        include_str!("../../layouts/nemotron-h-8b.toml"),
    ),
    (
        "llama-3.1-8b",
        include_str!("../../layouts/llama-3.1-8b.toml"),
    ),
    (
        "mamba2-2.7b",
        include_str!("../../layouts/mamba2-2.7b.toml"),
    ),
];

fn expected_path(file: &str) -> PathBuf {
    // The checkout this test was built in, else the repository root as the current
    // directory (a staged binary runs from the root of a copy elsewhere).
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/expected");
    let dir = if built.is_dir() {
        built
    } else {
        PathBuf::from("codegen/tests/expected")
    };
    dir.join(file)
}

/// Compares `got` with the expected file, or rewrites the file when `BLESS` is set.
/// Returns a description of the difference, if any.
fn check(file: &str, got: &str) -> Option<String> {
    let path = expected_path(file);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    if want == got {
        return None;
    }
    let line = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    Some(format!(
        "{file} differs from the generated output at line {}:\n  expected: {:?}\n  got:      {:?}\n(re-bless with BLESS=1 if the change is intended)",
        line + 1,
        want.lines().nth(line).unwrap_or("<end of file>"),
        got.lines().nth(line).unwrap_or("<end of output>"),
    ))
}

#[test]
fn generated_rust_matches_the_expected_files() {
    let mut diffs = Vec::new();
    for (name, text) in LAYOUTS {
        let l = load::load_file(Source { name, text }).unwrap();
        let ty = emit_rust::type_name_for(name);
        let src = emit_rust::layout_source(&ty, &l.geometry, &l.spec_toml()).unwrap();
        diffs.extend(check(&format!("{name}.rs"), &src));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// What stands for the fill body in the expected CUDA C: the body is the same for every
/// layout and is checked in itself (`codegen/src/kernels/fill.cuh`).
const FILL_CUH_MARK: &str = "// ---- #include \"fill.cuh\" (codegen/src/kernels/fill.cuh, the same for every layout) ----\n";

#[test]
fn generated_cuda_matches_the_expected_files() {
    let mut diffs = Vec::new();
    for (name, text) in LAYOUTS {
        let l = load::load_file(Source { name, text }).unwrap();
        let src = emit_cuda::cuda_source(&l.geometry);
        assert_eq!(src.matches(emit_cuda::FILL_CUH).count(), 1, "{name}");
        diffs.extend(check(
            &format!("{name}.cu"),
            &src.replace(emit_cuda::FILL_CUH, FILL_CUH_MARK),
        ));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn a_changed_layout_is_detected() {
    // The test would catch a change: the Rust of a modified spec differs from the file.
    if std::env::var_os("BLESS").is_some() {
        return; // The file is being rewritten.
    }
    let (name, text) = LAYOUTS[0];
    let changed = text.replace("max_requests = 256", "max_requests = 128");
    let l = load::load_file(Source {
        name,
        text: &changed,
    })
    .unwrap();
    let src = emit_rust::layout_source("NemotronH8b", &l.geometry, &l.spec_toml()).unwrap();
    let want = std::fs::read_to_string(expected_path("nemotron-h-8b.rs")).unwrap();
    assert_ne!(src, want);
}
