//! # attention-layout-macros
//!
//! `#[attention_layout(...)]`: generates a layout's constants, metadata type and builder
//! from a spec written inline or in a TOML file.
//!
//! A thin shell over `attention-layout-codegen`: `args` reads the attribute into a TOML
//! table (remembering where each key was written), `expand` hands it to the codegen
//! library and turns its diagnostics into errors at the offending argument's span.
//! Use it through the runtime crate (`attention-layout`, feature `macros`), whose paths the
//! generated code names.

mod args;
mod expand;

use proc_macro::TokenStream;

/// Generates a layout from a spec: `impl attention_layout::Layout` with every capacity,
/// field offset, the bucket table and the CUDA C source as constants; `NameMetadata`
/// (typed accessors at constant offsets) and `NameBuilder` (the host fill specialized to
/// those constants); and compile-time assertions of every layout fact.
///
/// ```ignore
/// #[attention_layout(
///     model = "hybrid", max_requests = 256, max_tokens = 4096, max_seq_len = 8192,
///     block_size = 64, mamba(chunk_size = 128, conv_width = 4),
///     graphs(distribution = "exponential", mixed_prefill = 4),
/// )]
/// pub struct NemotronH8b;
///
/// // Or from a per-model file (relative to the crate's manifest directory), with inline
/// // keys overriding the file's:
/// #[attention_layout(config = "layouts/my-model.toml", max_requests = 128)]
/// pub struct MyModelSmall;
///
/// // Or from a layout bundled with attention-layout, by name (a `config` value with no
/// // `/` that does not end in `.toml`; an unknown name is an error listing them):
/// #[attention_layout(config = "nemotron-h-8b")]
/// pub struct NemotronH8bBundled;
/// ```
#[proc_macro_attribute]
pub fn attention_layout(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
