//! Compile-fail tests: every rejected spec is one error, with a clear message, at the
//! argument that is wrong (or, for a config file, at `config = ...` naming the file, line,
//! column and key). Re-bless the `.stderr` files with `TRYBUILD=overwrite` and read them.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// trybuild compiles the cases as a crate of its own under the target directory, so
/// `CARGO_MANIFEST_DIR` (which `config = "..."` is relative to) is that crate's folder.
/// Put the cases' layout files there too, at the same relative paths.
fn stage_config_files() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version=1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let target = PathBuf::from(meta["target_directory"].as_str().unwrap());
    let project = target.join("tests/trybuild/attention-layout-macros");
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/layouts");
    let to = project.join("tests/ui/layouts");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn ui() {
    stage_config_files();
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
