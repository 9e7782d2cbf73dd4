//! The README's "In an engine" section is what an engine author copies: its Rust block is
//! run as a doctest of this crate (`src/lib.rs`, `Readme`); this checks the rest of what
//! they copy, the dependency line, against the workspace.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

use std::path::Path;

const README: &str = include_str!("../../../README.md");

/// The fenced blocks of a Markdown text: `(info string, body)`.
fn code_blocks(markdown: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut open: Option<(&str, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim(), String::new())),
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in the README");
    out
}

/// The section of the README under `## {title}`, up to the next `## `.
fn section<'a>(markdown: &'a str, title: &str) -> &'a str {
    let start = markdown
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("the README has no section `## {title}`"));
    let rest = &markdown[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

#[test]
fn the_readme_dependency_line_names_the_library_package_with_the_macros_feature() {
    let engine = section(README, "In an engine");
    let blocks = code_blocks(engine);
    let deps: Vec<&String> = blocks
        .iter()
        .filter(|(info, _)| *info == "toml")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(deps.len(), 1, "one `toml` block in `In an engine`");
    let manifest: toml::Table = deps[0].parse().unwrap();
    let dep = manifest["dependencies"]["attention-layout"]
        .as_table()
        .expect("an `attention-layout = { ... }` dependency");
    let features: Vec<&str> = dep["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(features.contains(&"macros"), "{features:?}");
    // The path ends in the folder of the package called `attention-layout`, with the
    // features the line names.
    let dir = Path::new(dep["path"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let package: toml::Table = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        package["package"]["name"].as_str(),
        Some("attention-layout")
    );
    for f in &features {
        assert!(
            package["features"].get(*f).is_some(),
            "feature `{f}` of `{dir}/Cargo.toml`"
        );
    }
}

#[test]
fn the_readme_engine_example_is_a_program_the_doctest_runs() {
    let engine = section(README, "In an engine");
    let blocks = code_blocks(engine);
    let rust: Vec<&(&str, String)> = blocks.iter().filter(|(i, _)| *i != "toml").collect();
    assert_eq!(rust.len(), 1, "one Rust block in `In an engine`");
    // Exactly `rust`: `ignore`, `no_run` or `compile_fail` would stop the doctest running
    // it as it is.
    assert_eq!(rust[0].0, "rust");
    assert!(
        rust[0].1.contains("\nfn main() -> Result<"),
        "{}",
        rust[0].1
    );
    assert!(
        rust[0].1.starts_with("use attention_layout::"),
        "{}",
        rust[0].1
    );
}
