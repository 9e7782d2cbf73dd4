//! The Rust emitter: the items `#[attention_layout]` (and the build-script entry) generate
//! for a layout, as a `proc_macro2::TokenStream`.
//!
//! A pure function of the geometry, so it is tested without a compiler: the expected-output
//! tests format its output with `prettyplease` and diff it against checked-in files.
//!
//! For a layout type `Name` it emits:
//!
//! * `impl Layout for Name`: every capacity, the field table, the bucket table, the spec
//!   and the CUDA C source of the fill kernels, as associated constants;
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
use crate::geometry::{Dtype, Field, FieldLayout, Geometry};
use crate::spec::{EAGER_TOKEN_ROUNDER, IndexDtype};

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
        "Attention layout `{name}` ({} model): R = {} requests, T = {} tokens, S = {}, \
         B = {}, s = {} speculative tokens, tensor parallel {}.",
        s.model.as_str(),
        g.max_requests,
        g.max_tokens,
        g.max_seq_len,
        g.block_size,
        g.num_spec,
        s.tensor_parallel
    )];
    if let Some(src) = &s.source {
        lines.push(format!("Source: <{src}>."));
    }
    lines.push(String::new());
    lines.push(format!(
        "Metadata buffer: {} bytes in {} fields; {} CUDA-graph buckets; KV pool {} blocks \
         (dummy block {}).",
        g.total_bytes,
        g.fields.len(),
        g.buckets.len(),
        g.kv_pool_blocks,
        g.dummy_block
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
pub fn emit_layout(names: Names<'_>, g: &Geometry, spec_toml: &str, cuda: &str) -> TokenStream {
    let layout_impl = emit_layout_impl(names, g, spec_toml, cuda);
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
        },
        Span::call_site(),
    )
}

fn rust_ty(d: Dtype) -> Ident {
    Ident::new(d.rust(), Span::call_site())
}

/// What a field holds (for its doc comment).
fn describe(f: Field) -> &'static str {
    use Field::*;
    match f {
        TokenToInputIds => "token ids of the step's tokens",
        TokenToPosIds => "absolute position of each token",
        TokenToBlockIdx => "KV block of each token",
        TokenToLocalPositionWithinKvBlock => "position of each token within its KV block",
        TokenToRequestIdx => "request row of each token",
        TokenToPositionInRequest => "position of each token in its request",
        RequestInPrefillStatus => "1 for prefill rows, 0 for decode rows",
        RequestQueryLengths => "query length per active request",
        RequestKvLengthOffsets => "KV offset per active request",
        Temperature => "sampling temperature per request (padding 1.0)",
        TopK => "sampling top-k per request",
        TopP => "sampling top-p per request",
        ActiveRequestLastTokenIdxs => "index of each request's last token in the step",
        RealTokenCount => "real token count of the step",
        MhaQueryLengths => "query length per padded request",
        MhaCuQuerySeqLengths => "cumulative query lengths",
        MhaKvSeqLengths => "KV length per padded request",
        MhaCuKvSeqLengths => "cumulative KV lengths",
        MhaBlockTable => "block table, one row of `nkv` block ids per request",
        MambaBatchIndicesDecode => "Mamba state slot per decode request",
        MambaBatchIndicesPrefill => "Mamba state slot per prefill request",
        MambaSeqIdx => "prefill sequence number per token",
        MambaCuSeqlens => "cumulative prefill lengths",
        MambaCuChunkSeqlens => "chunk boundaries",
        MambaLastChunkIndices => "last chunk of each prefill sequence",
        MambaSeqIdxForVarlen => "sequence number of each chunk",
        MambaConvSeqIdx => "conv sequence number per token",
        MambaConvSeqStart => "conv sequence start per token",
        MambaIntermediateChunkIndices => "intermediate-state chunk indices (appended)",
        MambaIntermediateAbsPositions => "intermediate-state absolute positions (appended)",
        MambaIntermediateRealCount => "real intermediate entries (appended)",
        MambaDeviceDecodePrefill => "real decode and prefill token counts (appended)",
    }
}

/// A field's capacity as an expression over the layout's constants, and as text.
fn capacity(f: Field) -> (TokenStream, &'static str) {
    use Field::*;
    match f {
        TokenToInputIds
        | TokenToPosIds
        | TokenToBlockIdx
        | TokenToLocalPositionWithinKvBlock
        | TokenToRequestIdx
        | TokenToPositionInRequest
        | MambaSeqIdx
        | MambaConvSeqIdx
        | MambaConvSeqStart => (quote!(T), "T"),
        RequestInPrefillStatus
        | RequestQueryLengths
        | RequestKvLengthOffsets
        | Temperature
        | TopK
        | TopP
        | ActiveRequestLastTokenIdxs
        | MhaQueryLengths
        | MhaKvSeqLengths
        | MambaBatchIndicesDecode
        | MambaBatchIndicesPrefill
        | MambaLastChunkIndices => (quote!(R), "R"),
        MhaCuQuerySeqLengths | MhaCuKvSeqLengths | MambaCuSeqlens => (quote!(R + 1), "R + 1"),
        MhaBlockTable => (quote!(R * NKV), "R × nkv"),
        MambaCuChunkSeqlens => (quote!(CMAX + 1), "Cmax + 1"),
        MambaSeqIdxForVarlen => (quote!(CMAX), "Cmax"),
        MambaIntermediateChunkIndices | MambaIntermediateAbsPositions => (quote!(KMAX), "Kmax"),
        RealTokenCount | MambaIntermediateRealCount => (quote!(1), "1"),
        MambaDeviceDecodePrefill => (quote!(2), "2"),
    }
}

fn field_doc(fl: &FieldLayout) -> String {
    format!(
        "`{}`: {}; {} × {} ({}) at bytes {}..{}.",
        fl.field.name(),
        describe(fl.field),
        fl.elems,
        fl.dtype.rust(),
        capacity(fl.field).1,
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

fn emit_layout_impl(names: Names<'_>, g: &Geometry, spec_toml: &str, cuda: &str) -> TokenStream {
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
    let cuda_lit = str_lit(cuda);
    let r = lit(g.max_requests);
    let t = lit(g.max_tokens);
    let seq = lit(g.max_seq_len);
    let b = lit(g.block_size);
    let ns = lit(g.num_spec);
    let tp = Literal::u32_unsuffixed(s.tensor_parallel);
    let nkv = lit(g.block_table_width);
    let nkv_doc = doc(format!(
        "Block-table width `nkv = ceil(S / B) + (s > 0)` = ceil({} / {}) + {}.",
        g.max_seq_len,
        g.block_size,
        usize::from(g.num_spec > 0)
    ));
    let pool = lit(g.kv_pool_blocks);
    let pool_doc = doc(match (s.kv_pool_blocks, &s.memory) {
        (Some(_), _) => "KV pool size in blocks, dummy included (from the spec).".to_owned(),
        (None, Some(m)) => format!(
            "KV pool size in blocks, dummy included: what {} GiB holds after the Mamba \
             states, capped at `R × nkv + 1`.",
            m.budget_gib
        ),
        (None, None) => "KV pool size in blocks, dummy included: `R × nkv + 1`.".to_owned(),
    });
    let dummy = Literal::i32_unsuffixed(g.dummy_block);
    let decode_i64 = s.decode_index_dtype == IndexDtype::I64;
    let cs = lit(g.chunk_size);
    let dconv = lit(g.conv_width);
    let cmax = lit(g.max_chunks);
    let kmax = lit(g.max_intermediate);
    let (cmax_doc, kmax_doc) = if g.has_mamba() {
        (
            doc(format!(
                "Chunk slots `Cmax = floor(T / cs) + R` = {} / {} + {}.",
                g.max_tokens, g.chunk_size, g.max_requests
            )),
            doc(format!(
                "Intermediate-state capacity `Kmax = min(ceil(T / B), 3R)` = min({}, {}).",
                g.max_tokens.div_ceil(g.block_size),
                3 * g.max_requests
            )),
        )
    } else {
        (
            doc("No Mamba fields: no chunk slots.".to_owned()),
            doc("No Mamba fields: no intermediate states.".to_owned()),
        )
    };
    let megatron = lit(g.megatron_bytes);
    let total = lit(g.total_bytes);
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
        "`{ty}`'s capacities, buffer layout, CUDA-graph buckets and fill kernels, as constants."
    ));
    let cuda_doc = doc(format!(
        "CUDA C source of the fill kernels, one entry point per bucket ({}), with these \
         constants baked in.",
        g.buckets.len()
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
                /// `R`: request rows per step.
                const MAX_REQUESTS: usize = #r;
                /// `T`: tokens per step.
                const MAX_TOKENS: usize = #t;
                /// `S`: longest sequence.
                const MAX_SEQ_LEN: usize = #seq;
                /// `B`: tokens per KV block.
                const BLOCK_SIZE: usize = #b;
                /// `s`: speculative tokens per decode request.
                const NUM_SPEC: usize = #ns;
                /// Tensor-parallel size.
                const TENSOR_PARALLEL: u32 = #tp;
                #nkv_doc
                const BLOCK_TABLE_WIDTH: usize = #nkv;
                #pool_doc
                const KV_POOL_BLOCKS: usize = #pool;
                /// The dummy block id, `KV_POOL_BLOCKS - 1`.
                const DUMMY_BLOCK: i32 = #dummy;
                /// Whether `mamba_batch_indices_decode` is i64 (else i32).
                const DECODE_INDEX_I64: bool = #decode_i64;
                /// Mamba chunk size `cs` (0 without Mamba).
                const CHUNK_SIZE: usize = #cs;
                /// Causal-conv1d width `d_conv` (0 without Mamba).
                const CONV_WIDTH: usize = #dconv;
                #cmax_doc
                const MAX_CHUNKS: usize = #cmax;
                #kmax_doc
                const MAX_INTERMEDIATE: usize = #kmax;
                /// Bytes of Megatron's coalesced buffer (SEMANTICS §9), before the appended fields.
                const MEGATRON_BYTES: usize = #megatron;
                /// Bytes of the whole buffer.
                const TOTAL_BYTES: usize = #total;
                /// Every field, in buffer order.
                const FIELDS: &'static [al::FieldLayout] = &[#(Self::#fields),*];
                #buckets_doc
                const BUCKETS: &'static [al::BatchDims] = &[#(#buckets),*];
                #cuda_doc
                const CUDA_SOURCE: &'static str = #cuda_lit;
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
            g.total_bytes
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
            describe(fl.field),
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
        "Where each of `{ty}`'s {} fields lies in its {}-byte buffer (SEMANTICS §9).",
        g.fields.len(),
        g.total_bytes
    ));
    let alloc_doc = doc(format!(
        "A builder with its {}-byte buffer allocated (the only allocation) and initialized: \
         zeros, and the block table all dummy block ({}).",
        g.total_bytes, g.dummy_block
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
        let dtype = dtype_ident(fl.dtype);
        let (cap, cap_text) = capacity(fl.field);
        let msg = format!(
            "`{}` must be {} × {}",
            fl.field.name(),
            cap_text,
            fl.dtype.rust()
        );
        quote! {
            assert!(al::holds(#ty::#c, #cap, al::Dtype::#dtype), #msg);
        }
    });
    let mamba_checks = if g.has_mamba() {
        quote! {
            const CS: usize = #ty::CHUNK_SIZE;
            assert!(CS != 0 && #ty::CONV_WIDTH != 0, "Mamba layouts need a chunk size and a conv width");
            assert!(CMAX == T / CS + R, "`Cmax` must be floor(T / cs) + R");
            let k = T.div_ceil(B);
            assert!(
                KMAX == if k < 3 * R { k } else { 3 * R },
                "`Kmax` must be min(ceil(T / B), 3R)"
            );
        }
    } else {
        quote! {
            assert!(CMAX == 0 && KMAX == 0, "attention-only layouts have no chunk slots");
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
            use ::attention_layout::__private::{self as al, Layout as _};
            const R: usize = #ty::MAX_REQUESTS;
            const T: usize = #ty::MAX_TOKENS;
            const S: usize = #ty::MAX_SEQ_LEN;
            const B: usize = #ty::BLOCK_SIZE;
            const TP: usize = #ty::TENSOR_PARALLEL as usize;
            const NKV: usize = #ty::BLOCK_TABLE_WIDTH;
            const CMAX: usize = #ty::MAX_CHUNKS;
            const KMAX: usize = #ty::MAX_INTERMEDIATE;

            assert!(R != 0 && T != 0 && S != 0 && TP != 0, "capacities must be positive");
            assert!(B.is_power_of_two(), "`block_size` must be a power of two");
            assert!(
                T.is_multiple_of(#rounder.div_ceil(TP) * TP),
                "`max_tokens` must be a multiple of the eager token rounder"
            );
            assert!(T >= R * (#ty::NUM_SPEC + 1), "every request must be able to decode in one step");
            assert!(
                NKV == S.div_ceil(B) + (#ty::NUM_SPEC != 0) as usize,
                "`nkv` must be ceil(S / B) + (s > 0)"
            );
            assert!(
                #ty::KV_POOL_BLOCKS >= 2 && #ty::DUMMY_BLOCK as usize == #ty::KV_POOL_BLOCKS - 1,
                "the dummy block must be the last block of the pool"
            );
            #mamba_checks

            #(#field_checks)*

            assert!(
                al::fields_in_buffer_order(#ty::FIELDS, #ty::MODEL.has_mamba()),
                "the field table must list every field of the model, in buffer order"
            );
            assert!(
                al::fields_packed(#ty::FIELDS, #ty::TOTAL_BYTES),
                "each field must start at the previous one's end rounded up to its alignment (SEMANTICS §9), and the last end the buffer"
            );
            assert!(
                al::megatron_bytes(#ty::FIELDS) == #ty::MEGATRON_BYTES,
                "Megatron's buffer must end where the appended fields begin"
            );
            assert!(
                #ty::TOTAL_BYTES <= i32::MAX as usize,
                "device kernels address the buffer with 32-bit offsets"
            );
            assert!(
                al::buckets_ascending(#ty::BUCKETS),
                "the bucket table must be strictly ascending"
            );
            assert!(
                al::buckets_valid(#ty::BUCKETS, R, T, S, #ty::NUM_SPEC),
                "every bucket must be a valid batch shape within max_tokens (SEMANTICS §2)"
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
    let cuda = crate::emit_cuda::cuda_source(g);
    let mut tokens = emit_struct(names, g);
    tokens.extend(emit_layout(names, g, spec_toml, &cuda));
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
