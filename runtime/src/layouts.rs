//! The layouts bundled with the tool (the files of `layouts/`, embedded at build time so
//! the command line works with no files around).

/// `(name, TOML source)` of every bundled layout.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "nemotron-h-8b",
        include_str!("../../layouts/nemotron-h-8b.toml"),
    ),
    (
        "llama-3.1-8b",
        include_str!("../../layouts/llama-3.1-8b.toml"),
    ),
    ("qwen2.5-7b", include_str!("../../layouts/qwen2.5-7b.toml")),
    (
        "mamba2-2.7b",
        include_str!("../../layouts/mamba2-2.7b.toml"),
    ),
    (
        "jamba-1.5-mini",
        include_str!("../../layouts/jamba-1.5-mini.toml"),
    ),
    (
        "llama-3.1-8b-spec2",
        include_str!("../../layouts/llama-3.1-8b-spec2.toml"),
    ),
    (
        "nemotron-h-8b-tuned",
        include_str!("../../layouts/nemotron-h-8b-tuned.toml"),
    ),
];

/// The default layout: the first bundled one.
pub const DEFAULT: &str = "nemotron-h-8b";

/// The TOML source of a bundled layout.
pub fn bundled(name: &str) -> Option<&'static str> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Reads a layout named on the command line: a bundled name, or a path to a TOML file.
/// Returns the source and the name to use in messages.
pub fn read(name_or_path: &str) -> Result<(String, String), String> {
    if let Some(src) = bundled(name_or_path) {
        return Ok((src.to_owned(), format!("{name_or_path} (bundled)")));
    }
    std::fs::read_to_string(name_or_path)
        .map(|s| (s, name_or_path.to_owned()))
        .map_err(|e| {
            let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
            format!(
                "cannot read layout `{name_or_path}`: {e} (bundled layouts: {})",
                names.join(", ")
            )
        })
}
