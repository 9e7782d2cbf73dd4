//! The layouts bundled with attention-layout: the files of `layouts/` at the repository
//! root, embedded at build time. This is their one list; the runtime's command line tool
//! (`attention_layout::layouts`), the attribute's `config = "nemotron-h-8b"` and the
//! build-script entry all read it.
//!
//! A `config` value names a bundled layout when it has no path separator and does not end
//! in `.toml` ([`is_layout_name`]); anything else is a file path.

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

/// The default layout of the command line tool.
pub const DEFAULT: &str = "nemotron-h-8b";

/// The TOML source of a bundled layout.
pub fn bundled(name: &str) -> Option<&'static str> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The names of the bundled layouts, comma-separated (for messages).
pub fn names() -> String {
    let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
    names.join(", ")
}

/// Whether a `config` value is a layout name rather than a file path: it has no path
/// separator (`/`, or `\` on any platform) and does not end in `.toml`.
pub fn is_layout_name(config: &str) -> bool {
    !config.contains(['/', '\\']) && !config.ends_with(".toml")
}

/// A `config` value that has the form of a layout name but names no bundled layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{name}` is not a bundled layout{hint}; the bundled layouts are {list} (a layout file is named by a path with a `/` or ending in `.toml`, e.g. `./{name}` or `layouts/{name}.toml`)",
    hint = match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    },
    list = names(),
)]
pub struct UnknownLayout {
    /// The name as written.
    pub name: String,
    /// The bundled name nearest to it, when it looks like a typo of one.
    pub suggestion: Option<&'static str>,
}

/// What a `config` value refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigRef<'a> {
    /// A bundled layout.
    Bundled {
        /// Its name (`nemotron-h-8b`).
        name: &'static str,
        /// Its TOML source.
        text: &'static str,
    },
    /// A file path, as written.
    File(&'a str),
}

/// Resolves a `config` value: a layout name ([`is_layout_name`]) must be a bundled one;
/// anything else is a file path, returned as written.
pub fn resolve(config: &str) -> Result<ConfigRef<'_>, UnknownLayout> {
    if !is_layout_name(config) {
        return Ok(ConfigRef::File(config));
    }
    match BUNDLED.iter().find(|(n, _)| *n == config) {
        Some(&(name, text)) => Ok(ConfigRef::Bundled { name, text }),
        None => {
            let known: Vec<&'static str> = BUNDLED.iter().map(|(n, _)| *n).collect();
            Err(UnknownLayout {
                name: config.to_owned(),
                suggestion: crate::load::closest(config, &known),
            })
        }
    }
}

/// The name a bundled layout goes by in diagnostics: the file it was embedded from.
pub fn source_name(name: &str) -> String {
    format!("layouts/{name}.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_layout_loads_and_the_default_is_one_of_them() {
        for (name, text) in BUNDLED {
            let loaded = crate::load::load_file(crate::load::Source {
                name: &source_name(name),
                text,
            });
            assert!(loaded.is_ok(), "{name}: {:?}", loaded.err());
        }
        assert!(bundled(DEFAULT).is_some());
    }

    #[test]
    fn names_resolve_to_bundled_layouts_and_paths_stay_paths() {
        let ConfigRef::Bundled { name, text } = resolve("llama-3.1-8b").unwrap() else {
            panic!("a bundled name resolves to its layout");
        };
        assert_eq!(
            (name, Some(text)),
            ("llama-3.1-8b", bundled("llama-3.1-8b"))
        );
        for path in [
            "layouts/llama-3.1-8b.toml",
            "llama-3.1-8b.toml",
            "./llama-3.1-8b",
            "..\\layouts\\x",
            "/abs/model",
        ] {
            assert_eq!(resolve(path).unwrap(), ConfigRef::File(path), "{path}");
        }
    }

    #[test]
    fn an_unknown_name_lists_the_bundled_ones_and_suggests_the_nearest() {
        let e = resolve("nemotron-h8b").unwrap_err();
        assert_eq!(e.suggestion, Some("nemotron-h-8b"));
        let message = e.to_string();
        assert!(
            message.contains("did you mean `nemotron-h-8b`?"),
            "{message}"
        );
        for (name, _) in BUNDLED {
            assert!(message.contains(name), "{message}");
        }
        let e = resolve("gpt-5").unwrap_err();
        assert_eq!(e.suggestion, None);
        assert!(!e.to_string().contains("did you mean"), "{e}");
    }
}
