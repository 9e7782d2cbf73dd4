//! The layouts bundled with the tool (the files of `layouts/`, embedded at build time so
//! the command line works with no files around). The list is the codegen crate's
//! ([`attention_layout_codegen::bundled`]), which the attribute's `config = "name"` reads
//! too.

pub use attention_layout_codegen::bundled::{BUNDLED, DEFAULT, bundled};

/// Reads a layout named on the command line: a bundled name, or a path to a TOML file.
/// Returns the source and the name to use in messages.
pub fn read(name_or_path: &str) -> Result<(String, String), String> {
    if let Some(src) = bundled(name_or_path) {
        return Ok((src.to_owned(), format!("{name_or_path} (bundled)")));
    }
    std::fs::read_to_string(name_or_path)
        .map(|s| (s, name_or_path.to_owned()))
        .map_err(|e| {
            format!(
                "cannot read layout `{name_or_path}`: {e} (bundled layouts: {})",
                attention_layout_codegen::bundled::names()
            )
        })
}
