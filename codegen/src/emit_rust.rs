//! The Rust emitter: the items `#[attention_layout]` (and the build-script entry) generate
//! for a layout, as a `proc_macro2::TokenStream`.
//!
//! A pure function of the geometry, so it is tested without a compiler: the expected-output
//! tests format its output with `prettyplease` and diff it against checked-in files.
//!
//! For a layout type `Name` it emits:
//!
//! * `impl Layout for Name`: the layout's facts (one `Facts` constant), the field table,
//!   the bucket table and the spec, as associated constants (the fill kernels' CUDA C is
//!   built from them on request, `Layout::cuda_source`, not inlined here);
//! * an inherent `impl Name` with one `FieldLayout` constant per field (dtype, capacity,
//!   byte offset);
//! * `NameMetadata<'a>`: the buffer after a step, with one typed accessor per field at its
//!   constant offset;
//! * `NameBuilder`: the runtime's host fill, monomorphized with `Name`'s constants;
//! * a `const` block of assertions, one per layout fact, evaluated by the compiler.
//!
//! Generated code names the runtime as `::attention_layout` and imports its hidden support
//! path `__private` (the `layout` module's items plus the helpers only generated code
//! calls, off the public API) as `al` inside `const _: () = { ... };` blocks, so it adds no
//! names to the user's module beyond `Name`, `NameMetadata` and `NameBuilder`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::buckets::BatchDims;
use crate::geometry::{FieldLayout, Geometry};
use crate::model::{Dtype, DtypeRule, FactValue, Field, VLLM_CONV_BLOCK};
use crate::spec::EAGER_TOKEN_ROUNDER;

/// Everything the emitter needs besides the geometry.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The layout type (`NemotronH8b`).
    pub ty: &'a Ident,
    /// Its visibility, as written (`pub`, `pub(crate)` or nothing); the generated types
    /// get the same.
    pub vis: &'a TokenStream,
}

/// The type name a layout named `name` gets when none is given (`nemotron-h-8b` →
/// `NemotronH8b`, `qwen2.5-7b` → `Qwen2_5_7b`): upper camel case, with an underscore
/// only between two digits.
pub fn type_name_for(name: &str) -> String {
    let mut out = String::new();
    for part in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
    {
        let mut chars = part.chars();
        let Some(first) = chars.next() else { continue };
        if out.is_empty() && first.is_ascii_digit() {
            out.push('L');
        }
        if out.ends_with(|c: char| c.is_ascii_digit()) && first.is_ascii_digit() {
            out.push('_');
        }
        out.push(first.to_ascii_uppercase());
        out.extend(chars);
    }
    if out.is_empty() {
        out.push_str("Layout");
    }
    out
}

/// Doc lines for the layout type: what it is and its main numbers.
pub fn type_doc(g: &Geometry, ty: &str) -> Vec<String> {
    let s = &g.spec;
    let name = s.name.as_deref().unwrap_or(ty);
    let mut lines = vec![format!(
        "Attention layout `{name}` ({} model): {}.",
        s.model.as_str(),
        g.facts.headline()
    )];
    if let Some(src) = &s.source {
        lines.push(format!("Source: <{src}>."));
    }
    lines.push(String::new());
    lines.push(format!(
        "Metadata buffer: {} bytes in {} fields; {} CUDA-graph buckets; KV pool {} blocks \
         (dummy block {}).",
        g.facts.total_bytes,
        g.fields.len(),
        g.buckets.len(),
        g.facts.kv_pool_blocks,
        g.facts.dummy_block
    ));
    lines.push(format!(
        "Generated from the spec by attention-layout: the constants are in its \
         `attention_layout::Layout` impl and its field constants; `{ty}Builder` builds the \
         metadata of a step and `{ty}Metadata` reads it."
    ));
    lines
}

/// The layout type's declaration with its doc (for build scripts, which have no struct to
/// annotate).
pub fn emit_struct(names: Names<'_>, g: &Geometry) -> TokenStream {
    let docs = doc_attrs(&type_doc(g, &names.ty.to_string()));
    let Names { ty, vis } = names;
    quote! {
        #docs
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #vis struct #ty;
    }
}

/// Every item generated for the layout type `names.ty` (not the type itself).
pub fn emit_layout(names: Names<'_>, g: &Geometry, spec_toml: &str) -> TokenStream {
    let layout_impl = emit_layout_impl(names, g, spec_toml);
    let types = emit_types(names, g);
    let type_impls = emit_type_impls(names, g);
    let checks = emit_checks(names, g);
    quote! {
        #types
        #layout_impl
        #type_impls
        #checks
    }
}

fn doc_attrs(lines: &[String]) -> TokenStream {
    lines
        .iter()
        .map(|l| {
            let l = if l.is_empty() {
                String::new()
            } else {
                format!(" {l}")
            };
            quote!(#[doc = #l])
        })
        .collect()
}

fn doc(line: String) -> TokenStream {
    doc_attrs(&[line])
}

fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// A string literal, raw (`r#"..."#`) when it spans lines so expanded code stays readable.
fn str_lit(s: &str) -> Literal {
    if !s.contains('\n') || s.contains('\r') {
        return Literal::string(s);
    }
    let mut hashes = "#".to_owned();
    while s.contains(&format!("\"{hashes}")) {
        hashes.push('#');
    }
    format!("r{hashes}\"{s}\"{hashes}")
        .parse::<Literal>()
        .unwrap_or_else(|_| Literal::string(s))
}

/// The constant naming a field's place (`TOKEN_TO_INPUT_IDS`).
fn field_const(f: Field) -> Ident {
    Ident::new(&f.name().to_ascii_uppercase(), Span::call_site())
}

fn field_fn(f: Field) -> Ident {
    Ident::new(f.name(), Span::call_site())
}

fn dtype_ident(d: Dtype) -> Ident {
    Ident::new(
        match d {
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::F32 => "F32",
            Dtype::U8 => "U8",
        },
        Span::call_site(),
    )
}

fn rust_ty(d: Dtype) -> Ident {
    Ident::new(d.rust(), Span::call_site())
}

/// A field's capacity as a Rust expression over the facts `F` of the checks.
fn capacity_expr(f: Field) -> TokenStream {
    f.info()
        .extent
        .capacity_expr(|fact| format!("F.{}", fact.info().name), " * ", "")
        .parse()
        .unwrap_or_default()
}

/// A field's element type as a Rust expression over the facts `F` of the checks.
fn dtype_expr(f: Field) -> TokenStream {
    match f.info().dtype {
        DtypeRule::Fixed(d) => {
            let d = dtype_ident(d);
            quote!(al::Dtype::#d)
        }
        DtypeRule::DecodeIndex => {
            quote!(if F.decode_index_i64 {
                al::Dtype::I64
            } else {
                al::Dtype::I32
            })
        }
    }
}

fn field_doc(fl: &FieldLayout) -> String {
    format!(
        "`{}`: {}; {} × {} ({}) at bytes {}..{}.",
        fl.field.name(),
        fl.field.info().doc,
        fl.elems,
        fl.dtype.rust(),
        fl.field.info().extent.capacity_text(),
        fl.offset,
        fl.end()
    )
}

fn bucket_summary(buckets: &[BatchDims]) -> String {
    let decode = buckets.iter().filter(|b| b.prefill == 0).count();
    let prefill = buckets
        .iter()
        .filter(|b| b.decode == 0 && b.prefill > 0)
        .count();
    let mixed = buckets.len() - decode - prefill;
    if buckets.is_empty() {
        "No CUDA graphs: every step runs eagerly.".to_owned()
    } else {
        format!(
            "The {} CUDA-graph buckets `(tokens, prefill, decode)`, ascending: {decode} \
             decode-only, {mixed} mixed, {prefill} prefill-only.",
            buckets.len()
        )
    }
}

fn emit_layout_impl(names: Names<'_>, g: &Geometry, spec_toml: &str) -> TokenStream {
    let ty = names.ty;
    let s = &g.spec;
    let name = s.name.clone().unwrap_or_else(|| ty.to_string());
    let model = Ident::new(
        match s.model {
            crate::ModelKind::Mha => "Mha",
            crate::ModelKind::Mamba => "Mamba",
            crate::ModelKind::Hybrid => "Hybrid",
        },
        Span::call_site(),
    );
    let model_doc = doc(format!(
        "`{}`: {}.",
        s.model.as_str(),
        if s.model.has_mamba() {
            "Mamba fields present, strict bucket matching"
        } else {
            "attention only"
        }
    ));
    let spec_toml = str_lit(spec_toml);
    let f = &g.facts;
    let facts = f.entries().into_iter().map(|(fact, value)| {
        let name = Ident::new(fact.info().name, Span::call_site());
        let value = match value {
            FactValue::Count(n) => lit(n),
            FactValue::BlockId(n) => Literal::i32_unsuffixed(n),
            FactValue::Flag(b) => return quote!(#name: #b),
        };
        quote!(#name: #value)
    });
    let pool = match (s.kv_pool_blocks, &s.memory) {
        (Some(_), _) => "the KV pool's size is the spec's".to_owned(),
        (None, Some(m)) => format!(
            "the KV pool is what {} GiB holds after the Mamba states, capped at `R × nkv + 1`",
            m.budget_gib
        ),
        (None, None) => "the KV pool is `R × nkv + 1` blocks".to_owned(),
    };
    let mut facts_doc = vec![
        "Every number of the layout (docs/SEMANTICS.md, Notation):".to_owned(),
        format!(
            "`nkv = ceil(S / B) + (s > 0)` = ceil({} / {}) + {}; {pool}.",
            f.max_seq_len,
            f.block_size,
            usize::from(f.speculative_tokens > 0)
        ),
    ];
    if f.has_mamba {
        facts_doc.push(format!(
            "`Cmax = floor(T / cs) + R` = {} / {} + {}; `Kmax = min(ceil(T / B), 3R)` = min({}, {}).",
            f.max_tokens,
            f.chunk_size,
            f.max_requests,
            f.max_tokens.div_ceil(f.block_size),
            3 * f.max_requests
        ));
    } else {
        facts_doc.push("No Mamba fields: no chunk slots, no intermediate states.".to_owned());
    }
    let facts_doc = doc_attrs(&facts_doc);
    let fields = g.fields.iter().map(|f| field_const(f.field));
    let buckets = g.buckets.iter().map(|d| {
        let (t, p, dd) = (
            Literal::u32_unsuffixed(d.tokens),
            Literal::u32_unsuffixed(d.prefill),
            Literal::u32_unsuffixed(d.decode),
        );
        quote!(al::BatchDims::new(#t, #p, #dd))
    });
    let buckets_doc = doc(bucket_summary(&g.buckets));
    let impl_doc = doc(format!(
        "`{ty}`'s facts, buffer layout and CUDA-graph buckets, as constants (the fill kernels' \
         CUDA C: `<{ty} as Layout>::cuda_source()`)."
    ));
    quote! {
        #impl_doc
        const _: () = {
            use ::attention_layout::__private as al;

            #[automatically_derived]
            impl al::Layout for #ty {
                /// The layout's name.
                const NAME: &'static str = #name;
                /// The spec it was generated from (TOML, with inline overrides merged).
                const SPEC_TOML: &'static str = #spec_toml;
                #model_doc
                const MODEL: al::ModelKind = al::ModelKind::#model;
                #facts_doc
                const FACTS: al::Facts = al::Facts { #(#facts),* };
                /// Every field, in buffer order.
                const FIELDS: &'static [al::FieldLayout] = &[#(Self::#fields),*];
                #buckets_doc
                const BUCKETS: &'static [al::BatchDims] = &[#(#buckets),*];
            }
        };
    }
}

fn metadata_ident(ty: &Ident) -> Ident {
    format_ident!("{}Metadata", ty)
}

fn builder_ident(ty: &Ident) -> Ident {
    format_ident!("{}Builder", ty)
}

fn emit_types(names: Names<'_>, g: &Geometry) -> TokenStream {
    let Names { ty, vis } = names;
    let meta = metadata_ident(ty);
    let builder = builder_ident(ty);
    let meta_doc = doc_attrs(&[
        format!(
            "`{ty}`'s metadata after a step: the coalesced buffer ({} bytes) with one typed \
             accessor per field at its constant offset, and the step's shapes.",
            g.facts.total_bytes
        ),
        String::new(),
        "Field accessors return the whole field (its capacity); `view()` gives the lengths \
         the kernels see this step."
            .to_owned(),
    ]);
    let builder_doc = doc_attrs(&[
        format!(
            "Builds `{ty}`'s metadata on the host: the runtime's fill, monomorphized with \
             `{ty}`'s constants."
        ),
        String::new(),
        "A step either succeeds and replaces the metadata, or fails with a typed error and \
         leaves it as it was."
            .to_owned(),
    ]);
    quote! {
        #meta_doc
        #[derive(Debug, Clone, Copy)]
        #vis struct #meta<'a> {
            host: &'a ::attention_layout::HostMetadata<::attention_layout::layout::ConstDims<#ty>>,
        }

        #builder_doc
        #[derive(Debug, Clone)]
        #vis struct #builder {
            host: ::attention_layout::HostMetadata<::attention_layout::layout::ConstDims<#ty>>,
        }
    }
}

fn emit_type_impls(names: Names<'_>, g: &Geometry) -> TokenStream {
    let ty = names.ty;
    let meta = metadata_ident(ty);
    let builder = builder_ident(ty);
    let consts = g.fields.iter().map(|fl| {
        let name = field_const(fl.field);
        let variant = Ident::new(&format!("{:?}", fl.field), Span::call_site());
        let dtype = dtype_ident(fl.dtype);
        let elems = lit(fl.elems);
        let offset = lit(fl.offset);
        let d = doc(field_doc(fl));
        quote! {
            #d
            pub const #name: al::FieldLayout = al::FieldLayout {
                field: al::Field::#variant,
                dtype: al::Dtype::#dtype,
                elems: #elems,
                offset: #offset,
            };
        }
    });
    let accessors = g.fields.iter().map(|fl| {
        let f = field_fn(fl.field);
        let c = field_const(fl.field);
        let t = rust_ty(fl.dtype);
        let d = doc(format!(
            "`{}`: {}; all {} × {} at byte {}.",
            fl.field.name(),
            fl.field.info().doc,
            fl.elems,
            fl.dtype.rust(),
            fl.offset
        ));
        quote! {
            #d
            #[inline]
            pub fn #f(&self) -> &'a [#t] {
                al::field_slice(self.host.bytes(), #ty::#c)
            }
        }
    });
    let fields_doc = doc(format!(
        "Where each of `{ty}`'s {} fields lies in its {}-byte buffer (docs/SEMANTICS.md §9).",
        g.fields.len(),
        g.facts.total_bytes
    ));
    let alloc_doc = doc(format!(
        "A builder with its {}-byte buffer allocated (the only allocation) and initialized: \
         zeros, and the block table all dummy block ({}).",
        g.facts.total_bytes, g.facts.dummy_block
    ));
    let impls_doc = doc(format!(
        "`{ty}`'s field table, the accessors of `{meta}` and the methods of `{builder}`."
    ));
    quote! {
        #impls_doc
        const _: () = {
            use ::attention_layout::__private as al;

            #fields_doc
            impl #ty {
                #(#consts)*
            }

            impl<'a> #meta<'a> {
                /// The whole buffer (what one host-to-device copy moves).
                #[inline]
                pub fn bytes(&self) -> &'a [u8] {
                    self.host.bytes()
                }

                /// The step's shapes: real, padded, bucket, `max_seqlen_*`, chunk counts.
                #[inline]
                pub fn info(&self) -> &'a al::StepInfo {
                    self.host.info()
                }

                /// Typed views with exactly the lengths the kernels see this step (Mamba
                /// fields `None` when absent this step).
                #[inline]
                pub fn view(&self) -> al::MetadataView<'a> {
                    self.host.view()
                }

                #(#accessors)*
            }

            impl #builder {
                #alloc_doc
                pub fn new() -> Self {
                    Self {
                        host: al::HostMetadata::new(al::ConstDims::new()),
                    }
                }

                /// Builds one step's metadata. On error nothing changes.
                #[inline]
                pub fn fill(
                    &mut self,
                    input: &al::StepInput<'_>,
                ) -> ::core::result::Result<#meta<'_>, al::StepError> {
                    self.host.fill(input)?;
                    ::core::result::Result::Ok(#meta { host: &self.host })
                }

                /// The last step's metadata.
                #[inline]
                pub fn metadata(&self) -> #meta<'_> {
                    #meta { host: &self.host }
                }

                /// Back to the freshly built state (`HostMetadata::reset`): the next step's
                /// metadata is what a new builder would build. Allocates nothing.
                #[inline]
                pub fn reset(&mut self) {
                    self.host.reset();
                }

                /// The runtime's host metadata underneath, for code generic over `Dims`.
                #[inline]
                pub fn host(&self) -> &al::HostMetadata<al::ConstDims<#ty>> {
                    &self.host
                }
            }

            impl ::core::default::Default for #builder {
                /// Same as `new`.
                fn default() -> Self {
                    Self::new()
                }
            }
        };
    }
}

fn emit_checks(names: Names<'_>, g: &Geometry) -> TokenStream {
    let ty = names.ty;
    let field_checks = g.fields.iter().map(|fl| {
        let c = field_const(fl.field);
        let cap = capacity_expr(fl.field);
        let dtype = dtype_expr(fl.field);
        let msg = format!(
            "`{}` must be {} × {}",
            fl.field.name(),
            fl.field.info().extent.capacity_text(),
            fl.dtype.rust()
        );
        quote! {
            assert!(al::holds(#ty::#c, #cap, #dtype), #msg);
        }
    });
    let conv_block = Literal::usize_suffixed(VLLM_CONV_BLOCK);
    let mamba_checks = if g.has_mamba() {
        quote! {
            assert!(F.chunk_size != 0 && F.conv_width != 0, "Mamba layouts need a chunk size and a conv width");
            assert!(F.chunk_size.is_power_of_two(), "`chunk_size` must be a power of two");
            assert!(
                F.max_conv_programs == (F.max_tokens / #conv_block + F.max_requests) * F.vllm as usize,
                "`Pmax` must be floor(T / 8) + R with the vllm format, else 0"
            );
            assert!(F.max_chunks == F.max_tokens / F.chunk_size + F.max_requests, "`Cmax` must be floor(T / cs) + R");
            let k = F.max_tokens.div_ceil(F.block_size);
            assert!(
                F.max_intermediate == if k < 3 * F.max_requests { k } else { 3 * F.max_requests },
                "`Kmax` must be min(ceil(T / B), 3R)"
            );
        }
    } else {
        quote! {
            assert!(
                F.max_chunks == 0 && F.max_intermediate == 0 && F.max_conv_programs == 0,
                "attention-only layouts have no chunk slots or conv programs"
            );
        }
    };
    let rounder = Literal::usize_suffixed(EAGER_TOKEN_ROUNDER as usize);
    let check_doc = doc(format!(
        "Compile-time checks of `{ty}`'s layout facts: a mistake in these constants is a \
         compile error, not a corrupt buffer."
    ));
    quote! {
        #check_doc
        const _: () = {
            use ::attention_layout::__private as al;
            const F: al::Facts = <#ty as al::Layout>::FACTS;
            const FIELDS: &[al::FieldLayout] = <#ty as al::Layout>::FIELDS;
            const BUCKETS: &[al::BatchDims] = <#ty as al::Layout>::BUCKETS;

            assert!(
                F.max_requests != 0 && F.max_tokens != 0 && F.max_seq_len != 0 && F.tensor_parallel != 0,
                "capacities must be positive"
            );
            assert!(F.block_size.is_power_of_two(), "`block_size` must be a power of two");
            assert!(
                F.max_tokens.is_multiple_of(#rounder.div_ceil(F.tensor_parallel) * F.tensor_parallel),
                "`max_tokens` must be a multiple of the eager token rounder"
            );
            assert!(
                F.max_tokens >= F.max_requests * (F.speculative_tokens + 1),
                "every request must be able to decode in one step"
            );
            assert!(
                F.block_table_width == F.max_seq_len.div_ceil(F.block_size) + (F.speculative_tokens != 0) as usize,
                "`nkv` must be ceil(S / B) + (s > 0)"
            );
            assert!(
                F.kv_pool_blocks >= 2 && F.dummy_block as usize == F.kv_pool_blocks - 1,
                "the dummy block must be the last block of the pool"
            );
            assert!(
                F.has_mamba == <#ty as al::Layout>::MODEL.has_mamba(),
                "the Mamba fields exist exactly for `mamba` and `hybrid` models"
            );
            #mamba_checks

            #(#field_checks)*

            assert!(
                al::fields_in_buffer_order(FIELDS, &F),
                "the field table must list every field of the model, in buffer order"
            );
            assert!(
                al::fields_packed(FIELDS, F.total_bytes),
                "each field must start at the previous one's end rounded up to its alignment (docs/SEMANTICS.md §9), and the last end the buffer"
            );
            assert!(
                al::megatron_bytes(FIELDS) == F.megatron_bytes,
                "Megatron's buffer must end where the appended fields begin"
            );
            assert!(
                al::mamba_pad(FIELDS) == F.mamba_pad,
                "the Mamba pad must be the gap before the decode indices"
            );
            assert!(
                F.total_bytes <= i32::MAX as usize,
                "device kernels address the buffer with 32-bit offsets"
            );
            assert!(
                al::buckets_ascending(BUCKETS),
                "the bucket table must be strictly ascending"
            );
            assert!(
                al::buckets_valid(BUCKETS, F.max_requests, F.max_tokens, F.max_seq_len, F.speculative_tokens),
                "every bucket must be a valid batch shape within max_tokens (docs/SEMANTICS.md §2)"
            );
        };
    }
}

/// Formats generated items as Rust source (`prettyplease`), for build scripts, the CLI and
/// expected-output tests.
#[cfg(feature = "build")]
/// Top-level items are separated by a blank line.
pub fn format(tokens: TokenStream) -> Result<String, syn::Error> {
    let mut file: syn::File = syn::parse2(tokens)?;
    let all = std::mem::take(&mut file.items);
    let mut items = Vec::with_capacity(all.len());
    for item in all {
        file.items = vec![item];
        items.push(prettyplease::unparse(&file));
    }
    Ok(items.join("\n"))
}

/// The whole generated source for a layout with a type of its own (build scripts, the CLI):
/// the type declaration and its items, formatted, with a header naming the spec.
#[cfg(feature = "build")]
pub fn layout_source(ty: &str, g: &Geometry, spec_toml: &str) -> Result<String, syn::Error> {
    let ident: Ident = syn::parse_str(ty)?;
    let vis = quote!(pub);
    let names = Names {
        ty: &ident,
        vis: &vis,
    };
    let mut tokens = emit_struct(names, g);
    tokens.extend(emit_layout(names, g, spec_toml));
    format(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(type_name_for("nemotron-h-8b"), "NemotronH8b");
        assert_eq!(type_name_for("qwen2.5-7b"), "Qwen2_5_7b");
        assert_eq!(type_name_for("jamba-1.5-mini"), "Jamba1_5Mini");
        assert_eq!(type_name_for("8b"), "L8b");
        assert_eq!(type_name_for("--"), "Layout");
    }

    #[test]
    fn multi_line_strings_become_raw_literals() {
        assert_eq!(str_lit("a\n\"#b").to_string(), "r##\"a\n\"#b\"##");
        assert_eq!(str_lit("one line").to_string(), "\"one line\"");
    }
}
