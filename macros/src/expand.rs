//! Expansion: arguments → (file + inline) spec → codegen → items, or errors at the
//! offending argument's span next to a harmless fallback (the struct as written, and the
//! `include_bytes!` that makes an edit to the config file trigger a rebuild).

use std::path::{Path, PathBuf};

use attention_layout_codegen::bundled::{self, ConfigRef};
use attention_layout_codegen::emit_rust::{self, Names};
use attention_layout_codegen::load::{self, Source};
use attention_layout_codegen::spec::Diagnostic;
use attention_layout_codegen::{SpecError, emit_cuda};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, quote};
use syn::{Item, ItemStruct, LitStr};

use crate::args::{self, Args};

/// The whole attribute: `args` are its arguments, `item` what it is on.
pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Struct(s)) => s,
        Ok(other) => {
            let e = syn::Error::new_spanned(
                keyword_of(&other),
                "#[attention_layout] goes on a struct (the layout type), e.g. `pub struct MyLayout;`",
            );
            return fallback(e, item, TokenStream::new());
        }
        Err(e) => return fallback(e, item, TokenStream::new()),
    };
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        let e = syn::Error::new_spanned(
            &item.generics,
            "a layout type cannot be generic: its constants are fixed by the spec",
        );
        return fallback(e, item.into_token_stream(), TokenStream::new());
    }
    let args = match args::parse(args) {
        Ok(a) => a,
        Err(e) => return fallback(e, item.into_token_stream(), TokenStream::new()),
    };
    let config = match &args.config {
        Some((lit, tokens)) => match read_config(lit) {
            Ok(c) => Some(c),
            Err(message) => {
                let e = syn::Error::new_spanned(tokens, message);
                return fallback(e, item.into_token_stream(), TokenStream::new());
            }
        },
        None => None,
    };
    let tracked = config
        .as_ref()
        .and_then(|c| c.path.as_deref())
        .map(track)
        .unwrap_or_default();
    let file = config.as_ref().map(|c| Source {
        name: &c.name,
        text: &c.text,
    });
    match load::load(file, args.table.clone()) {
        Ok(loaded) => generate(item, &loaded, tracked),
        Err(e) => fallback(spec_errors(&e, &args), item.into_token_stream(), tracked),
    }
}

/// The first token of an item, to point an error at (`enum`, `fn`, ...).
fn keyword_of(item: &Item) -> TokenStream {
    item.to_token_stream()
        .into_iter()
        .find(|t| {
            !matches!(
                t,
                proc_macro2::TokenTree::Punct(_) | proc_macro2::TokenTree::Group(_)
            )
        })
        .map(|t| t.into_token_stream())
        .unwrap_or_default()
}

/// The errors, the item as written and the rebuild tracker: what a rejected spec expands
/// to, so that the mistake is the only error the user sees.
fn fallback(errors: syn::Error, item: TokenStream, tracked: TokenStream) -> TokenStream {
    let errors = errors.into_compile_error();
    quote! {
        #item
        #tracked
        #errors
    }
}

/// A config layout, read.
struct Config {
    /// The name it goes by in diagnostics: the path as written, or the bundled layout's
    /// file.
    name: String,
    /// A file's path resolved against the manifest directory (`None` for a bundled
    /// layout, which is part of this crate's build).
    path: Option<PathBuf>,
    /// Its contents.
    text: String,
}

/// Reads `config = "..."`: a bundled layout's name, or a file path resolved against the
/// crate's manifest directory.
fn read_config(lit: &LitStr) -> Result<Config, String> {
    let value = lit.value();
    let name = match bundled::resolve(&value).map_err(|e| e.to_string())? {
        ConfigRef::Bundled { name, text } => {
            return Ok(Config {
                name: bundled::source_name(name),
                path: None,
                text: text.to_owned(),
            });
        }
        ConfigRef::File(name) => name,
    };
    let path = resolve(Path::new(name));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read layout file `{name}` (paths are relative to the crate's manifest directory): {e}"
        )
    })?;
    Ok(Config {
        name: name.to_owned(),
        path: Some(path),
        text,
    })
}

fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(&dir).join(path),
        None => path.to_owned(),
    }
}

/// `include_bytes!` of the config file: the compiler then tracks it, so editing the file
/// rebuilds the crate.
fn track(path: &Path) -> TokenStream {
    let Some(p) = path.to_str() else {
        return TokenStream::new();
    };
    let doc = format!(" Rebuilds this crate when `{p}` changes.");
    quote! {
        #[doc = #doc]
        const _: &[u8] = include_bytes!(#p);
    }
}

/// One error per diagnostic, each at the argument that set its key; a key set in the
/// config file (or nowhere) is reported at the `config` argument (or the attribute), with
/// the file's line and column in the message.
fn spec_errors(e: &SpecError, args: &Args) -> syn::Error {
    let mut out: Option<syn::Error> = None;
    for d in &e.diagnostics {
        let err = match d.key.as_deref().and_then(|k| args.tokens_for(k)) {
            Some(tokens) => {
                let inline = Diagnostic {
                    location: None,
                    ..d.clone()
                };
                syn::Error::new_spanned(tokens, inline.to_string())
            }
            None => match (&d.location, &args.config) {
                (Some(_), Some((_, tokens))) => syn::Error::new_spanned(tokens, d.to_string()),
                _ => syn::Error::new(Span::call_site(), d.to_string()),
            },
        };
        match &mut out {
            Some(all) => all.combine(err),
            None => out = Some(err),
        }
    }
    out.unwrap_or_else(|| syn::Error::new(Span::call_site(), e.to_string()))
}

/// The struct (with its layout documented) and every generated item.
fn generate(mut item: ItemStruct, loaded: &load::Loaded, tracked: TokenStream) -> TokenStream {
    let g = &loaded.geometry;
    let ty = item.ident.clone();
    let vis = item.vis.to_token_stream();
    let mut lines = emit_rust::type_doc(g, &ty.to_string());
    if item.attrs.iter().any(|a| a.path().is_ident("doc")) {
        lines.insert(0, String::new());
    }
    for line in lines {
        let line = if line.is_empty() {
            line
        } else {
            format!(" {line}")
        };
        item.attrs.push(syn::parse_quote!(#[doc = #line]));
    }
    let cuda = emit_cuda::cuda_source(g);
    let items = emit_rust::emit_layout(Names { ty: &ty, vis: &vis }, g, &loaded.spec_toml(), &cuda);
    quote! {
        #item
        #tracked
        #items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream) -> String {
        expand(
            args,
            quote!(
                pub struct Small;
            ),
        )
        .to_string()
    }

    const SMALL: fn() -> TokenStream = || {
        quote!(
            model = "hybrid",
            max_requests = 8,
            max_tokens = 64,
            max_seq_len = 32,
            block_size = 4,
            mamba(chunk_size = 4, conv_width = 4)
        )
    };

    #[test]
    fn a_valid_spec_expands_to_items_that_parse() {
        let out = expand(
            SMALL(),
            quote!(
                pub struct Small;
            ),
        );
        let file: syn::File = syn::parse2(out).unwrap();
        let text = file.to_token_stream().to_string();
        assert!(text.contains("SmallBuilder"));
        assert!(!text.contains("compile_error"));
    }

    #[test]
    fn one_mistake_is_one_error() {
        let out = expand_str(quote!(
            model = "hybrid",
            max_requests = 8,
            max_tokens = 64,
            max_seq_len = 32,
            block_size = 12,
            mamba(chunk_size = 4, conv_width = 4)
        ));
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(
            out.contains("`block_size`: must be a power of two"),
            "{out}"
        );
        // The fallback keeps the struct.
        assert!(out.contains("pub struct Small"));
    }

    #[test]
    fn independent_mistakes_are_all_reported() {
        let out = expand_str(quote!(
            model = "hybrid",
            max_requests = 8,
            max_tokens = "64",
            max_seq_len = 32,
            block_sise = 4,
            mamba(chunk_size = 4, conv_width = 4)
        ));
        // The misspelt key is one mistake (not also "missing `block_size`").
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }

    #[test]
    fn config_files_resolve_against_the_manifest_dir() {
        let out = expand_str(quote!(
            config = "../layouts/nemotron-h-8b.toml",
            max_requests = 128
        ));
        assert!(out.contains("include_bytes"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
        let out = expand_str(quote!(config = "../layouts/missing.toml"));
        assert!(out.contains("cannot read layout file"), "{out}");
    }

    #[test]
    fn a_bundled_name_is_read_from_the_bundled_layouts_and_untracked() {
        let out = expand_str(quote!(config = "nemotron-h-8b", max_requests = 128));
        assert!(!out.contains("compile_error"), "{out}");
        assert!(!out.contains("include_bytes"), "{out}");
        let by_path = expand_str(quote!(
            config = "../layouts/nemotron-h-8b.toml",
            max_requests = 128
        ));
        // The same items, less the file tracker.
        let items = |s: &str| s.split("const SPEC_TOML").nth(1).map(str::to_owned);
        assert_eq!(items(&out), items(&by_path));
        let out = expand_str(quote!(config = "nemotron-h8b"));
        assert!(out.contains("did you mean `nemotron-h-8b`?"), "{out}");
        // An override that breaks a rule is reported as on a file.
        let out = expand_str(quote!(config = "llama-3.1-8b", max_tokens = 100));
        assert!(out.contains("`max_tokens`: must be a multiple"), "{out}");
    }

    /// Expansion time of every bundled layout (parse the attribute, read and check the
    /// file, derive the geometry and buckets, emit the items), median of 31 runs. Run in
    /// release: `cargo test --release -p attention-layout-macros -- --ignored
    /// --nocapture expansion_time`. Recorded in BENCHMARKS.md.
    #[test]
    #[ignore = "timing; run in release"]
    fn expansion_time() {
        let mut worst = std::time::Duration::ZERO;
        for (name, _) in bundled::BUNDLED {
            let path = format!("../layouts/{name}.toml");
            let mut times = Vec::new();
            let mut size = 0;
            for _ in 0..31 {
                let args = quote!(config = #path);
                let start = std::time::Instant::now();
                let out = expand(
                    args,
                    quote!(
                        pub struct Model;
                    ),
                );
                times.push(start.elapsed());
                size = out.to_string().len();
            }
            times.sort();
            let median = times[times.len() / 2];
            worst = worst.max(median);
            println!(
                "{name:>16}: median {:>8.3} ms, min {:>8.3} ms, max {:>8.3} ms, {size} bytes of tokens",
                median.as_secs_f64() * 1e3,
                times[0].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
            );
        }
        assert!(worst.as_millis() < 100, "expansion took {worst:?}");
    }

    #[test]
    fn not_a_struct() {
        let out = expand(
            SMALL(),
            quote!(
                enum E {}
            ),
        )
        .to_string();
        assert!(out.contains("goes on a struct"), "{out}");
    }
}
