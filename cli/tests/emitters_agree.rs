//! Every emitter of the layout model agrees with every other, on every field of every
//! layout in `layouts/`: the geometry, the generated Rust (its field constants and its
//! `FACTS`), the CUDA C facts header (its `AL_*` facts and `AL_OFF_` / `AL_CAP_` /
//! `AL_SIZE_` constants, and its `static_assert`s, compiled with the host C++ compiler),
//! `inspect`'s live bytes and the host metadata view's accessors (on a step shaped like
//! each bucket).
//!
//! Each emitter reads `codegen/src/model.rs`; this test compares their outputs with each
//! other, so changing one emitter alone (a capacity rule typed into one of them, a live
//! length computed by hand) fails here.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

#[path = "../../runtime/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use attention_layout::codegen::emit_cuda;
use attention_layout::codegen::emit_rust;
use attention_layout::codegen::model::{Axis, Extent, FactValue};
use attention_layout::{Field, Geometry, HostMetadata, MetadataView, RuntimeDims};
use attention_layout_cli::inspect;
use support::shaped::ShapedStep;

/// Every layout file of `layouts/`, read at test time (a new file is covered without an
/// edit here).
fn layouts() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../layouts");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the bundled layouts are missing: {out:?}");
    out
}

/// `name = value` pairs of a `constexpr` line of the facts header (several per line).
fn c_constants(header: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in header.lines() {
        let Some(rest) = line.strip_prefix("constexpr ") else {
            continue;
        };
        let decl = rest.split(';').next().unwrap();
        let decl = decl.split_once(' ').unwrap().1; // the type
        for part in decl.split(", ") {
            let (name, value) = part.split_once(" = ").unwrap();
            out.insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
    out
}

fn c_number(v: &str) -> i64 {
    match v {
        "true" => 1,
        "false" => 0,
        _ => v.trim_end_matches('u').parse().unwrap(),
    }
}

/// (dtype, elems, offset) by field constant name.
type RustFields = BTreeMap<String, (String, usize, usize)>;

/// The generated Rust's field constants: (dtype, elems, offset) by constant name, and its
/// `FACTS` literal: value by fact name.
fn rust_tables(src: &str) -> (RustFields, BTreeMap<String, String>) {
    let mut fields = BTreeMap::new();
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub const ")
            && rest.ends_with(": al::FieldLayout = al::FieldLayout {")
        {
            let name = rest.split(':').next().unwrap().to_owned();
            let mut get = |key: &str| {
                let l = lines.next().unwrap().trim().to_owned();
                l.strip_prefix(&format!("{key}: "))
                    .unwrap_or_else(|| panic!("{name}: expected {key}, got {l}"))
                    .trim_end_matches(',')
                    .to_owned()
            };
            let _field = get("field");
            let dtype = get("dtype").trim_start_matches("al::Dtype::").to_owned();
            let elems = get("elems").parse().unwrap();
            let offset = get("offset").parse().unwrap();
            fields.insert(name, (dtype, elems, offset));
        }
    }
    let start = src.find("const FACTS: al::Facts = al::Facts {").unwrap();
    let body = &src[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    let facts = body
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    (fields, facts)
}

/// Compiles `header` with the host C++ compiler: its `static_assert`s re-derive every
/// capacity, size and offset from the facts with the field table's C rules.
fn compile_c(name: &str, header: &str) {
    let cxx = support::shim::compiler();
    let dir = std::env::temp_dir().join(format!(
        "attention-layout-facts-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(emit_cuda::FACTS_HEADER_NAME);
    std::fs::write(&file, header).unwrap();
    let main = dir.join("main.cpp");
    std::fs::write(
        &main,
        format!(
            "#include \"{}\"\n#include \"{}\"\nint main() {{ return AL_TOTAL_BYTES == 0u; }}\n",
            emit_cuda::FACTS_HEADER_NAME,
            emit_cuda::FACTS_HEADER_NAME
        ),
    )
    .unwrap();
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-fsyntax-only", "-Wall"])
        .arg(&main)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{name}: the facts header does not compile cleanly with {cxx}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The length in bytes of every typed accessor of the view, by field (`None`: absent).
fn accessor_bytes(v: &MetadataView<'_>, f: Field) -> Option<usize> {
    use Field::*;
    fn n<T>(x: &[T]) -> usize {
        std::mem::size_of_val(x)
    }
    Some(match f {
        TokenToInputIds => n(v.token_to_input_ids()),
        TokenToPosIds => n(v.token_to_pos_ids()),
        TokenToBlockIdx => n(v.token_to_block_idx()),
        TokenToLocalPositionWithinKvBlock => n(v.token_to_local_position_within_kv_block()),
        TokenToRequestIdx => n(v.token_to_request_idx()),
        TokenToPositionInRequest => n(v.token_to_position_in_request()),
        RequestInPrefillStatus => n(v.request_in_prefill_status()),
        RequestQueryLengths => n(v.request_query_lengths()),
        RequestKvLengthOffsets => n(v.request_kv_length_offsets()),
        Temperature => n(v.temperature()),
        TopK => n(v.top_k()),
        TopP => n(v.top_p()),
        ActiveRequestLastTokenIdxs => n(v.active_request_last_token_idxs()),
        RealTokenCount => 4,
        MhaQueryLengths => n(v.query_lengths()),
        MhaCuQuerySeqLengths => n(v.cu_query_seq_lengths()),
        MhaKvSeqLengths => n(v.kv_seq_lengths()),
        MhaCuKvSeqLengths => n(v.cu_kv_seq_lengths()),
        MhaBlockTable => n(v.block_table()),
        MambaBatchIndicesDecode => match v.mamba_batch_indices_decode()? {
            attention_layout::DecodeIndices::I32(x) => n(x),
            attention_layout::DecodeIndices::I64(x) => n(x),
        },
        MambaBatchIndicesPrefill => n(v.mamba_batch_indices_prefill()?),
        MambaSeqIdx => n(v.mamba_seq_idx()?),
        MambaCuSeqlens => n(v.mamba_cu_seqlens()?),
        MambaCuChunkSeqlens => n(v.mamba_cu_chunk_seqlens()?),
        MambaLastChunkIndices => n(v.mamba_last_chunk_indices()?),
        MambaSeqIdxForVarlen => n(v.mamba_seq_idx_for_varlen()?),
        MambaConvSeqIdx => n(v.mamba_conv_seq_idx()?),
        MambaConvSeqStart => n(v.mamba_conv_seq_start()?),
        MambaIntermediateChunkIndices => n(v.mamba_intermediate_chunk_indices()?),
        MambaIntermediateAbsPositions => n(v.mamba_intermediate_abs_positions()?),
        MambaIntermediateRealCount => n(v.mamba_intermediate_real_count()?),
        MambaDeviceDecodePrefill => n(v.mamba_device_decode_prefill()?),
        FlashinferPagedKvIndptr => n(v.flashinfer_paged_kv_indptr()?),
        FlashinferPagedKvIndices => n(v.flashinfer_paged_kv_indices()?),
        FlashinferPagedKvLastPageLen => n(v.flashinfer_paged_kv_last_page_len()?),
        VllmSlotMapping => n(v.vllm_slot_mapping()?),
        VllmStateIndicesDecode => n(v.vllm_state_indices_decode()?),
        VllmStateIndicesPrefill => n(v.vllm_state_indices_prefill()?),
        VllmHasInitialState => n(v.vllm_has_initial_state()?),
        VllmConvBatchPtr => n(v.vllm_conv_batch_ptr()?),
        VllmConvTokenChunkOffset => n(v.vllm_conv_token_chunk_offset()?),
    })
}

/// Whether a field's live length depends on the step's data (chunks, intermediate
/// entries), which `inspect` counts at capacity.
fn data_dependent(f: Field) -> bool {
    matches!(
        f.info().extent,
        Extent::Per(Axis::Chunk | Axis::Intermediate)
            | Extent::Cumulative(Axis::Chunk | Axis::Intermediate)
            | Extent::Pages
    )
}

fn check_static_emitters(name: &str, g: &Geometry, spec_toml: &str) {
    let header = emit_cuda::facts_header(g);
    let c = c_constants(&header);
    let rust = emit_rust::layout_source(&emit_rust::type_name_for(name), g, spec_toml).unwrap();
    let (rust_fields, rust_facts) = rust_tables(&rust);

    // Facts: the Rust FACTS literal, the C header and the geometry.
    for (fact, value) in g.facts.entries() {
        let want = match value {
            FactValue::Count(n) => n as i64,
            FactValue::BlockId(n) => i64::from(n),
            FactValue::Flag(b) => i64::from(b),
        };
        let c_value = c
            .get(&fact.c_name())
            .unwrap_or_else(|| panic!("{name}: no {} in C", fact.c_name()));
        assert_eq!(c_number(c_value), want, "{name}: C {}", fact.c_name());
        let r = &rust_facts[fact.info().name];
        assert_eq!(c_number(r), want, "{name}: Rust FACTS.{}", fact.info().name);
    }
    assert_eq!(
        rust_facts.len(),
        g.facts.entries().len(),
        "{name}: Rust FACTS"
    );

    // Fields: capacity, size and offset in the geometry, the Rust constants and the C
    // header, and the field table's own rules.
    assert_eq!(
        rust_fields.len(),
        g.fields.len(),
        "{name}: Rust field constants"
    );
    for &f in Field::ALL {
        let n = f.const_name();
        let (off, cap, size) = (
            c_number(&c[&format!("AL_OFF_{n}")]) as usize,
            c_number(&c[&format!("AL_CAP_{n}")]) as usize,
            c_number(&c[&format!("AL_SIZE_{n}")]) as usize,
        );
        assert_eq!(
            cap,
            f.capacity(&g.facts),
            "{name}: {n} capacity (C vs table)"
        );
        match g.field(f) {
            Some(l) => {
                assert_eq!(
                    (off, cap, size),
                    (l.offset, l.elems, l.dtype.size()),
                    "{name}: {n} (C vs geometry)"
                );
                assert_eq!(l.dtype, f.dtype(&g.facts), "{name}: {n} dtype");
                let (dtype, elems, offset) = &rust_fields[&n];
                assert_eq!(
                    (dtype.to_lowercase().as_str(), *elems, *offset),
                    (l.dtype.rust(), l.elems, l.offset),
                    "{name}: {n} (Rust vs geometry)"
                );
            }
            None => {
                assert_eq!(cap, 0, "{name}: {n} absent but has a C capacity");
                assert!(
                    !rust_fields.contains_key(&n),
                    "{name}: {n} absent but in Rust"
                );
            }
        }
    }
    compile_c(name, &header);
}

fn check_live_lengths(name: &str, dims: &RuntimeDims) {
    let g = dims.geometry();
    let mut checked = 0;
    for &b in &g.buckets {
        let Some(step) = ShapedStep::new(dims, b) else {
            continue;
        };
        let rows = step.rows();
        let mut m = HostMetadata::new(dims.clone());
        m.fill(&step.input(&rows)).unwrap();
        let v = m.view();
        assert_eq!(
            v.info().padded,
            b,
            "{name}: the step is not shaped like {b:?}"
        );
        let by_inspect: BTreeMap<Field, usize> =
            inspect::live_bytes_by_field(g, b).into_iter().collect();
        assert_eq!(
            by_inspect.values().sum::<usize>(),
            inspect::live_bytes(g, b),
            "{name}: {b:?}"
        );
        for &f in Field::ALL {
            let view = v.live_bytes(f).map(<[u8]>::len);
            let accessor = accessor_bytes(&v, f);
            assert_eq!(
                view,
                accessor,
                "{name} {b:?}: {} view vs accessor",
                f.name()
            );
            let inspected = by_inspect.get(&f).copied().unwrap_or(0);
            let view = view.unwrap_or(0);
            if data_dependent(f) {
                assert!(
                    view <= inspected,
                    "{name} {b:?}: {} view {view} > inspect {inspected}",
                    f.name()
                );
            } else {
                assert_eq!(
                    view,
                    inspected,
                    "{name} {b:?}: {} view vs inspect",
                    f.name()
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked > 0 || g.buckets.is_empty(),
        "{name}: no bucket-shaped step"
    );
}

#[test]
fn every_emitter_agrees_on_every_field_of_every_bundled_layout() {
    for (name, text) in layouts() {
        let loaded =
            attention_layout::codegen::load::load_file(attention_layout::codegen::load::Source {
                name: &name,
                text: &text,
            })
            .unwrap();
        check_static_emitters(&name, &loaded.geometry, &loaded.spec_toml());
        check_live_lengths(&name, &RuntimeDims::new(loaded.geometry.clone()));
    }
}
