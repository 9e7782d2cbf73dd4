//! The kernel formats' fields (`formats = ["flashinfer", "vllm"]`, docs/CONSUMER-CONTRACT.md)
//! against an independent construction from each step's rows, on random workloads of
//! random layouts (attention-only, hybrid and pure Mamba; one format or both; draft tokens;
//! tensor parallelism; graphs or none): requests arrive, grow, pause, get holes and finish,
//! as in the device-fill tests. The construction below reads only the step input and the
//! step's shapes (`StepInfo`), never the fill's other fields, and is written from the
//! contract: FlashInfer's CSR arrays with padding rows of no pages and a last-page length of
//! 1, vLLM's slot mapping with -1 padding tokens, state indices with padding rows on the
//! scratch slot `R`, `has_initial_state` and the causal-conv1d program map.
//!
//! Also here: the block table's guard after every step, the empty step, a hole inside a
//! row's attended range, and the spec rules of the formats.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::codegen::VLLM_CONV_BLOCK;
use attention_layout::{
    Dims, Field, HostMetadata, LayoutSpec, MetadataView, Phase, RequestRow, RuntimeDims, Sampling,
    StepInfo, StepInput,
};

fn input<'a>(rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
    StepInput {
        rows,
        token_ids: None,
        intermediate: None,
        residency: None,
    }
}
use support::layouts;
use support::workload::{Knobs, Rng, Workload};

/// What the contract says the format fields hold after a step, built from the rows.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    indptr: Option<Vec<i32>>,
    indices: Option<Vec<i32>>,
    last_page_len: Option<Vec<i32>>,
    slot_mapping: Option<Vec<i64>>,
    state_decode: Option<Vec<i32>>,
    state_prefill: Option<Vec<i32>>,
    has_initial_state: Option<Vec<u8>>,
    conv_batch: Option<Vec<i32>>,
    conv_chunk: Option<Vec<i32>>,
}

fn construct(d: &RuntimeDims, rows: &[RequestRow<'_>], info: &StepInfo) -> Expected {
    let f = d.facts();
    let b = d.block_size();
    let dummy = d.dummy_block();
    let p = info.paused as usize;
    let active = &rows[p..p + info.real.requests() as usize];
    let np = info.padded.requests() as usize;
    let tp = info.padded.tokens as usize;
    let (dp, fp) = (info.padded.decode as usize, info.padded.prefill as usize);
    let (dr, fr) = (info.attn.decode as usize, info.attn.prefill as usize);
    let block_of = |r: &RequestRow<'_>, j: usize| match r.blocks[j] {
        -1 => dummy,
        id => id,
    };

    let (mut indptr, mut indices, mut last) = (vec![0], Vec::new(), Vec::new());
    for r in active {
        let kv_len = (r.kv_offset + r.query_length) as usize;
        let pages = kv_len.div_ceil(b);
        indices.extend((0..pages).map(|j| block_of(r, j)));
        indptr.push(indices.len() as i32);
        last.push((kv_len - (pages - 1) * b) as i32);
    }
    while last.len() < np {
        indptr.push(indices.len() as i32);
        last.push(1);
    }

    let mut slots = Vec::new();
    for r in active {
        for pos in r.kv_offset as usize..(r.kv_offset + r.query_length) as usize {
            slots.push(i64::from(block_of(r, pos / b)) * b as i64 + (pos % b) as i64);
        }
    }
    slots.resize(tp, -1);

    let scratch = f.max_requests as i32;
    let mamba = f.vllm && f.has_mamba;
    let state_decode = (mamba && dp > 0).then(|| {
        let mut v: Vec<i32> = active[..dr].iter().map(|r| r.mamba_slot).collect();
        v.resize(dp, scratch);
        v
    });
    let prefill = &active[dr..dr + fr];
    let state_prefill = (mamba && fp > 0).then(|| {
        let mut v: Vec<i32> = prefill.iter().map(|r| r.mamba_slot).collect();
        v.resize(fp, scratch);
        v
    });
    let has_initial_state = (mamba && fp > 0).then(|| {
        let mut v: Vec<u8> = prefill.iter().map(|r| u8::from(r.kv_offset > 0)).collect();
        v.resize(fp, 0);
        v
    });
    let (mut batch, mut chunk) = (Vec::new(), Vec::new());
    for (s, r) in prefill.iter().enumerate() {
        for c in 0..(r.query_length as usize).div_ceil(VLLM_CONV_BLOCK) {
            batch.push(s as i32);
            chunk.push(c as i32);
        }
    }
    let programs = tp / VLLM_CONV_BLOCK + fp;
    batch.resize(programs, -1);
    chunk.resize(programs, -1);
    let conv = mamba && fp > 0;

    Expected {
        indptr: f.flashinfer.then_some(indptr),
        indices: f.flashinfer.then_some(indices),
        last_page_len: f.flashinfer.then_some(last),
        slot_mapping: f.vllm.then_some(slots),
        state_decode,
        state_prefill,
        has_initial_state,
        conv_batch: conv.then_some(batch),
        conv_chunk: conv.then_some(chunk),
    }
}

fn read(v: &MetadataView<'_>) -> Expected {
    Expected {
        indptr: v.flashinfer_paged_kv_indptr().map(<[i32]>::to_vec),
        indices: v.flashinfer_paged_kv_indices().map(<[i32]>::to_vec),
        last_page_len: v.flashinfer_paged_kv_last_page_len().map(<[i32]>::to_vec),
        slot_mapping: v.vllm_slot_mapping().map(<[i64]>::to_vec),
        state_decode: v.vllm_state_indices_decode().map(<[i32]>::to_vec),
        state_prefill: v.vllm_state_indices_prefill().map(<[i32]>::to_vec),
        has_initial_state: v.vllm_has_initial_state().map(<[u8]>::to_vec),
        conv_batch: v.vllm_conv_batch_ptr().map(<[i32]>::to_vec),
        conv_chunk: v.vllm_conv_token_chunk_offset().map(<[i32]>::to_vec),
    }
}

/// The guard's entries after the block table's last row.
fn guard(d: &RuntimeDims, bytes: &[u8]) -> Vec<i32> {
    let start = d.field_offset(Field::MhaBlockTable) + d.max_requests() * d.block_table_width() * 4;
    let end = d.field_offset(Field::MhaBlockTable) + d.field_elems(Field::MhaBlockTable) * 4;
    bytes[start..end]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A random layout with at least one format.
fn random_layout(rng: &mut Rng) -> String {
    let model = ["mha", "hybrid", "mamba"][rng.below(3) as usize];
    let formats = [
        "[\"flashinfer\"]",
        "[\"vllm\"]",
        "[\"flashinfer\", \"vllm\"]",
    ][rng.below(3) as usize];
    let tp = [1u32, 2][rng.below(2) as usize];
    let r = tp * rng.range_inclusive(2, 8);
    let spec = rng.below(3) as u32;
    let b = [16u32, 32][rng.below(2) as usize];
    let s = rng.range_inclusive(2, 24) * b - [0, b / 2, 1][rng.below(3) as usize];
    let rounder = 64u32.div_ceil(tp) * tp;
    let t = rounder
        * (r * (spec + 1))
            .div_ceil(rounder)
            .max(rng.range_inclusive(1, 3));
    let graphs = [
        "",
        "[graphs]\ncount = \"off\"\n",
        "[graphs]\nmixed_prefill = 2\n",
    ][rng.below(3) as usize];
    let mamba = if model == "mha" {
        String::new()
    } else {
        format!(
            "[mamba]\nchunk_size = {}\nconv_width = 4\n",
            [8, 16, 64][rng.below(3) as usize]
        )
    };
    format!(
        "model = \"{model}\"\nmax_requests = {r}\nmax_tokens = {t}\nmax_seq_len = {s}\nblock_size = {b}\n\
         speculative_tokens = {spec}\ntensor_parallel = {tp}\nformats = {formats}\n{mamba}{graphs}"
    )
}

/// Random layouts and workloads: the fill's format fields equal the construction from the
/// rows on every step, the guard stays dummy, and each step's fields do not depend on
/// the history (a fresh fill of the same step agrees).
#[test]
fn the_format_fields_equal_an_independent_construction_from_the_rows() {
    let layouts: usize = std::env::var("AL_FORMAT_LAYOUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let steps = 120;
    let mut rng = Rng::new(0xf0_4ad5);
    let (mut checked, mut prefill, mut padded_rows, mut holes) = (0u32, 0u32, 0u32, 0u32);
    for l in 0..layouts {
        let src = random_layout(&mut rng);
        let d = layouts::dims(&src);
        let mut host = HostMetadata::new(d.clone());
        let knobs = Knobs {
            hole: 0.05,
            ..Knobs::default()
        };
        let mut w = Workload::new(&d, 0xabc + l as u64, knobs);
        for step in 0..steps {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let info = *host
                .fill(&input)
                .unwrap_or_else(|e| panic!("layout {l} step {step}: {e}\n{src}"));
            let want = construct(&d, &rows, &info);
            let got = read(&host.view());
            assert_eq!(got, want, "layout {l} step {step} {info:?}\n{src}");
            assert!(
                guard(&d, host.bytes())
                    .iter()
                    .all(|&id| id == d.dummy_block()),
                "layout {l} step {step}: guard"
            );
            let mut fresh = HostMetadata::new(d.clone());
            fresh.fill(&input).unwrap();
            assert_eq!(read(&fresh.view()), got, "layout {l} step {step}: history");
            checked += 1;
            prefill += u32::from(info.padded.prefill > 0);
            padded_rows += u32::from(info.padded.requests() > info.real.requests());
            holes += u32::from(rows.iter().any(|r| r.blocks.contains(&-1)));
        }
    }
    // The workloads reach the cases the contract distinguishes.
    assert!(
        prefill > checked / 4,
        "{prefill} of {checked} steps had prefill rows"
    );
    assert!(
        padded_rows > checked / 4,
        "{padded_rows} of {checked} steps had padding rows"
    );
    assert!(holes > 0, "no step had a hole");
}

/// The guard is dummy ids from the start, whatever the layout, and a step rewrites it
/// even when something else wrote there.
#[test]
fn the_block_table_guard_is_dummy_after_every_step() {
    for (name, src) in layouts::LAYOUTS {
        let d = layouts::dims(src);
        let mut host = HostMetadata::new(d.clone());
        let g = guard(&d, host.bytes());
        assert_eq!(g.len() * 4, 128, "{name}: a 128-byte guard");
        assert!(
            g.iter().all(|&id| id == d.dummy_block()),
            "{name}: initial guard"
        );
        let mut w = Workload::new(&d, 7, Knobs::default());
        for step in 0..20 {
            let st = w.step();
            let rows = st.rows();
            host.fill(&st.input(&rows)).unwrap();
            assert!(
                guard(&d, host.bytes())
                    .iter()
                    .all(|&id| id == d.dummy_block()),
                "{name} step {step}"
            );
        }
    }
    // The write itself: a buffer whose guard was overwritten gets it back on the next step.
    let d = layouts::dims(layouts::LAYOUTS[0].1);
    let mut bytes = vec![0u64; d.total_bytes().div_ceil(8)];
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut bytes);
    attention_layout::fill::init_buffer(&d, buf).unwrap();
    let start = d.field_offset(Field::MhaBlockTable) + d.max_requests() * d.block_table_width() * 4;
    buf[start..start + 128].fill(0x5a);
    let mut state = attention_layout::fill::FillState::new(&d);
    let input = input(&[]);
    let mut plan = attention_layout::fill::plan_step(&d, &input, &mut state).unwrap();
    attention_layout::fill::write_step(&mut plan, buf).unwrap();
    assert!(guard(&d, buf).iter().all(|&id| id == d.dummy_block()));
}

const BOTH: &str = r#"
model = "hybrid"
max_requests = 4
max_tokens = 64
max_seq_len = 64
block_size = 16
formats = ["flashinfer", "vllm"]
[mamba]
chunk_size = 16
conv_width = 4
"#;

/// An empty step (no rows) replays the smallest graph: the padded shape's rows are all
/// padding rows and its tokens all padding tokens.
#[test]
fn an_empty_step_gives_padding_rows_and_padding_tokens_in_every_format() {
    let d = layouts::dims(BOTH);
    let mut host = HostMetadata::new(d.clone());
    let info = *host.fill(&input(&[])).unwrap();
    let v = host.view();
    let np = info.padded.requests() as usize;
    let tp = info.padded.tokens as usize;
    assert!(np > 0 && tp > 0, "{info:?}");
    assert_eq!(v.flashinfer_paged_kv_indptr().unwrap(), vec![0; np + 1]);
    assert_eq!(v.flashinfer_paged_kv_indices().unwrap(), &[] as &[i32]);
    assert_eq!(v.flashinfer_paged_kv_last_page_len().unwrap(), vec![1; np]);
    assert_eq!(v.vllm_slot_mapping().unwrap(), vec![-1; tp]);
    let scratch = d.max_requests() as i32;
    assert_eq!(
        v.vllm_state_indices_decode().unwrap(),
        vec![scratch; info.padded.decode as usize]
    );
    assert_eq!(info.kv_pages, 0);
    assert_eq!(read(&v), construct(&d, &[], &info));
}

/// A prefill row whose blocks list a hole (`-1`) before its KV offset, inside the range
/// attention reads: the step is accepted (Megatron's rule), and every format shows the
/// dummy block there, as the block table does; the tokens' own slots are real blocks.
#[test]
fn a_hole_inside_the_attended_range_is_the_dummy_block_in_every_format() {
    let d = layouts::dims(BOTH);
    let dummy = d.dummy_block();
    let mut host = HostMetadata::new(d.clone());
    let blocks = [-1, 3, 5];
    let rows = [RequestRow {
        phase: Phase::Prefill,
        query_length: 8,
        kv_offset: 20,
        blocks: &blocks,
        mamba_slot: 2,
        sampling: Sampling::PAD,
    }];
    host.fill(&input(&rows)).unwrap();
    let v = host.view();
    assert_eq!(&v.block_table()[..3], &[dummy, 3, 5]);
    assert_eq!(v.flashinfer_paged_kv_indices().unwrap(), &[dummy, 3]);
    assert_eq!(v.flashinfer_paged_kv_indptr().unwrap()[..2], [0, 2]);
    // kv_len 28 = one full page of 16 and 12 tokens.
    assert_eq!(v.flashinfer_paged_kv_last_page_len().unwrap()[0], 12);
    let slots: Vec<i64> = (20..28).map(|p| 3 * 16 + p % 16).collect();
    assert_eq!(&v.vllm_slot_mapping().unwrap()[..8], slots.as_slice());
    assert_eq!(v.vllm_has_initial_state().unwrap()[0], 1);
    assert_eq!(v.vllm_state_indices_prefill().unwrap()[0], 2);
    assert_eq!(v.vllm_conv_batch_ptr().unwrap()[..2], [0, -1]);
    assert_eq!(v.vllm_conv_token_chunk_offset().unwrap()[..2], [0, -1]);
}

/// The host-side values FlashInfer's `plan()` takes equal the device arrays, without
/// reading the buffer.
#[test]
fn the_host_plan_arrays_equal_the_buffers_flashinfer_fields() {
    for (name, src) in layouts::LAYOUTS {
        let d = layouts::dims(src);
        if !d.facts().flashinfer {
            continue;
        }
        let mut host = HostMetadata::new(d.clone());
        let mut state = attention_layout::fill::FillState::new(&d);
        let mut w = Workload::new(&d, 11, Knobs::default());
        let mut plan_arrays = attention_layout::FlashInferPlan::default();
        for step in 0..60 {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let plan = attention_layout::fill::plan_step(&d, &input, &mut state).unwrap();
            plan.flashinfer_plan(&mut plan_arrays);
            host.fill(&input).unwrap();
            let v = host.view();
            assert_eq!(
                plan_arrays.qo_indptr,
                v.cu_query_seq_lengths(),
                "{name} step {step}"
            );
            assert_eq!(
                plan_arrays.paged_kv_indptr,
                v.flashinfer_paged_kv_indptr().unwrap(),
                "{name} step {step}"
            );
            assert_eq!(
                plan_arrays.paged_kv_last_page_len,
                v.flashinfer_paged_kv_last_page_len().unwrap(),
                "{name} step {step}"
            );
        }
    }
}

fn spec_error(src: &str) -> String {
    LayoutSpec::from_toml_str(src, "f.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn the_vllm_format_needs_a_block_size_that_is_a_multiple_of_16_and_says_so() {
    let e = spec_error(&BOTH.replace("block_size = 16", "block_size = 8"));
    assert!(
        e.contains("`block_size`: must be a multiple of 16 with formats = [\"vllm\"]"),
        "{e}"
    );
    // FlashInfer alone takes any page size.
    let ok = BOTH.replace("block_size = 16", "block_size = 8").replace(
        "formats = [\"flashinfer\", \"vllm\"]",
        "formats = [\"flashinfer\"]",
    );
    LayoutSpec::from_toml_str(&ok, "f.toml").unwrap();
}

#[test]
fn unknown_and_repeated_formats_are_refused_naming_the_key() {
    for (formats, want) in [
        (
            "[\"flashattention\"]",
            "`formats`: entry 0: unknown name \"flashattention\": expected \"flashinfer\" or \"vllm\"",
        ),
        (
            "[\"vllm\", \"vllm\"]",
            "`formats`: entry 1: \"vllm\" is named twice",
        ),
        (
            "\"vllm\"",
            "`formats`: invalid type: string \"vllm\", expected a list of names",
        ),
    ] {
        let src = BOTH.replace("[\"flashinfer\", \"vllm\"]", formats);
        let e = LayoutSpec::from_toml_str(&src, "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{formats}: {e}");
    }
}

/// With the `vllm` format a `[memory]`-sized Mamba state pool holds the scratch slot too.
#[test]
fn the_vllm_state_pool_counts_the_scratch_slot() {
    let with_memory = |formats: &str| {
        let src = format!(
            "{}\n[memory]\nattention_layers = 1\nmamba_layers = 1\nkv_heads = 1\nhead_dim = 8\nmamba_heads = 1\nmamba_head_dim = 8\nmamba_state_dim = 8\nbudget_gib = 1.0\n",
            BOTH.replace("[\"flashinfer\", \"vllm\"]", formats)
        );
        let spec = LayoutSpec::from_toml_str(&src, "f.toml").unwrap();
        let memory = spec.memory.clone().unwrap();
        attention_layout::codegen::memory::plan(&spec, &memory)
            .unwrap()
            .mamba_slots
    };
    assert_eq!(with_memory("[\"flashinfer\"]"), 4);
    assert_eq!(with_memory("[\"vllm\"]"), 5);
}

/// The device fill computes the format fields from the records it already receives: a
/// layout with both formats stages exactly the bytes the same layout without them stages,
/// step after step (so the bytes uploaded per step do not grow).
#[test]
fn the_device_fill_stages_the_same_bytes_with_or_without_formats() {
    use attention_layout::devfill::StagingBuilder;
    let with = layouts::dims(BOTH);
    let without = layouts::dims(&BOTH.replace("formats = [\"flashinfer\", \"vllm\"]\n", ""));
    assert!(!without.facts().flashinfer && !without.facts().vllm);
    let mut w = Workload::new(&with, 5, Knobs::default());
    let (mut b1, mut b2) = (StagingBuilder::new(&with), StagingBuilder::new(&without));
    let (mut s1, mut s2) = (
        attention_layout::fill::FillState::new(&with),
        attention_layout::fill::FillState::new(&without),
    );
    let mut o1 = vec![0u128; b1.capacity() / 16 + 1];
    let mut o2 = vec![0u128; b2.capacity() / 16 + 1];
    for step in 0..200 {
        let st = w.step();
        let rows = st.rows();
        let input = st.input(&rows);
        let p1 = attention_layout::fill::plan_step(&with, &input, &mut s1).unwrap();
        let p2 = attention_layout::fill::plan_step(&without, &input, &mut s2).unwrap();
        let x1 = b1.build(&p1, bytemuck::cast_slice_mut(&mut o1)).unwrap();
        let x2 = b2.build(&p2, bytemuck::cast_slice_mut(&mut o2)).unwrap();
        assert_eq!(x1.bytes, x2.bytes, "step {step}");
        let n = x1.bytes;
        assert_eq!(
            bytemuck::cast_slice::<u128, u8>(&o1)[..n],
            bytemuck::cast_slice::<u128, u8>(&o2)[..n],
            "step {step}"
        );
    }
}
