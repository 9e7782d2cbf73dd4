//! Step input -> `HostMetadata::fill`, several steps on one metadata object.
//!
//! The bytes choose a small layout (any of the spec's knobs, possibly invalid: then
//! `Geometry::new` must say so without panicking) and a short sequence of steps whose
//! fields are drawn from ranges just around the valid ones (block ids from -2 to the dummy
//! block, slots from -2 to R, lengths up to S + 2, ...; a decode row may reach S + s). A step's `repair` bit turns it
//! into a valid step first, so that both the rejection and the write paths are reached.
//!
//! Checked: no panic; a rejected step leaves the buffer and the step info byte for byte as
//! they were; an accepted step has consistent cumulative arrays, a block table inside the
//! pool, token slots in the row's blocks (padding in the dummy block); and the last
//! accepted step gives the same live metadata as the same step filled into fresh metadata
//! (the block-table dirty tracking must not leak state from earlier steps).

#![no_main]

use arbitrary::Arbitrary;
use attention_layout::codegen::Distribution;
use attention_layout::codegen::spec::{
    GraphCount, GraphSpec, IndexDtype, LayoutSpec, MambaSpec, ModelKind,
};
use attention_layout::{
    Dims, Geometry, HostMetadata, IntermediateOffsets, MetadataView, Phase, RequestRow,
    RuntimeDims, Sampling, StepInput,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Layout {
    model: u8,
    r: u8,
    t_mult: u8,
    b_log: u8,
    s: u16,
    spec: u8,
    tp: u8,
    graphs: u8,
    count_n: u8,
    linear: bool,
    budget: Option<u16>,
    mixed: u8,
    non_decode: bool,
    i32_idx: bool,
    pool: Option<u16>,
    cs: u8,
    dconv: u8,
}

#[derive(Arbitrary, Debug)]
struct RowIn {
    phase: u8,
    q: u16,
    kv: u16,
    blocks: Vec<i16>,
    slot: i8,
    temp: u8,
}

#[derive(Arbitrary, Debug)]
struct StepIn {
    rows: Vec<RowIn>,
    ids: Option<u8>,
    inter: Option<Vec<(u8, [u16; 3])>>,
    repair: bool,
}

#[derive(Arbitrary, Debug)]
struct Case {
    layout: Layout,
    steps: Vec<StepIn>,
}

fn spec_of(l: &Layout) -> LayoutSpec {
    let model = [ModelKind::Mha, ModelKind::Hybrid, ModelKind::Mamba][usize::from(l.model % 3)];
    let tp = u32::from(l.tp % 5); // 0 is invalid on purpose
    let rounder = 64u32.div_ceil(tp.max(1)) * tp.max(1);
    let t = rounder * u32::from(l.t_mult % 5);
    // A multiple of tp (a spec rule), so that tp > 1 layouts stay reachable.
    let r = u32::from(l.r % 40) / tp.max(1) * tp.max(1);
    LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: r,
        max_tokens: t,
        max_seq_len: u32::from(l.s % 1100),
        block_size: 1 << (l.b_log % 7),
        speculative_tokens: u32::from(l.spec % 5),
        tensor_parallel: tp,
        decode_index_dtype: if l.i32_idx {
            IndexDtype::I32
        } else {
            IndexDtype::I64
        },
        kv_pool_blocks: l.pool.map(u32::from),
        mamba: (model.has_mamba() || l.cs == 255).then_some(MambaSpec {
            chunk_size: u32::from(l.cs % 130),
            conv_width: u32::from(l.dconv % 10),
        }),
        graphs: GraphSpec {
            count: match l.graphs % 3 {
                0 => GraphCount::Auto,
                1 => GraphCount::Off,
                _ => GraphCount::Count(u32::from(l.count_n)),
            },
            distribution: if l.linear {
                Distribution::Linear
            } else {
                Distribution::Exponential
            },
            token_budget: l.budget.map(|b| u32::from(b % 1100)),
            mixed_prefill: u32::from(l.mixed % 8),
            non_decode: l.non_decode,
            buckets: None,
            graph_memory_mib: None,
        },
        memory: None,
        formats: Vec::new(),
    }
}

struct Row {
    phase: Phase,
    q: u32,
    kv: u32,
    blocks: Vec<i32>,
    slot: i32,
    sampling: Sampling,
}

struct Step {
    rows: Vec<Row>,
    ids: Option<Vec<i64>>,
    inter: Option<Vec<IntermediateOffsets>>,
}

fn modulo(raw: i64, n: i64) -> i64 {
    raw.rem_euclid(n.max(1))
}

/// `decode_reach`: the most KV positions a decode row may reach
/// ([`Dims::decode_kv_limit`]: its draft tokens may run past max_seq_len).
fn step_of(g: &Geometry, s: &StepIn, decode_reach: u32) -> Step {
    let r = g.facts.max_requests as i64;
    let seq = g.facts.max_seq_len as u32;
    let b = g.facts.block_size as u32;
    let nkv = g.facts.block_table_width;
    let dummy = i64::from(g.facts.dummy_block);
    let s1 = g.facts.speculative_tokens as u32 + 1;
    let mut rows: Vec<Row> = s
        .rows
        .iter()
        .map(|x| Row {
            phase: [Phase::Paused, Phase::Decode, Phase::Prefill][usize::from(x.phase % 3)],
            q: u32::from(x.q) % (seq + 3),
            kv: u32::from(x.kv) % (seq + 3),
            blocks: x
                .blocks
                .iter()
                .take(nkv + 2)
                .map(|&id| (modulo(i64::from(id), dummy + 3) - 2) as i32)
                .collect(),
            slot: (modulo(i64::from(x.slot), r + 3) - 2) as i32,
            sampling: Sampling {
                temperature: f32::from(x.temp) / 100.0,
                top_k: i32::from(x.temp),
                top_p: 0.5,
            },
        })
        .collect();
    if s.repair {
        rows.truncate(g.facts.max_requests);
        rows.sort_by_key(|x| x.phase as u8);
        let mut left = g.facts.max_tokens as u32;
        for (i, row) in rows.iter_mut().enumerate() {
            match row.phase {
                Phase::Decode if s1 <= seq && s1 <= left => {
                    row.q = s1;
                    row.kv = row.kv.min(decode_reach - s1);
                }
                Phase::Prefill if left > 0 && seq > 0 => {
                    row.kv = row.kv.min(seq - 1);
                    row.q = row.q.clamp(1, seq - row.kv).min(left);
                }
                _ => {
                    row.phase = Phase::Paused;
                    row.q = 0;
                    row.kv = row.kv.min(seq);
                }
            }
            left -= row.q;
            let need = (row.kv + row.q).div_ceil(b) as usize;
            row.blocks.truncate(nkv);
            if row.blocks.len() < need {
                row.blocks.resize(need, 0);
            }
            for id in &mut row.blocks {
                *id = modulo(i64::from(*id), dummy) as i32;
            }
            row.slot = if g.has_mamba() { i as i32 } else { -1 };
        }
        rows.sort_by_key(|x| x.phase as u8);
    }
    let tokens: u64 = rows
        .iter()
        .filter(|x| x.phase != Phase::Paused)
        .map(|x| u64::from(x.q))
        .sum();
    let ids = s.ids.map(|x| {
        let len = if x % 8 == 7 && !s.repair {
            tokens + 1
        } else {
            tokens
        };
        (0..len.min(1 << 16) as i64).collect()
    });
    let inter = if s.repair {
        None
    } else {
        s.inter.as_ref().map(|v| {
            v.iter()
                .take(64)
                .map(|&(count, offsets)| IntermediateOffsets {
                    count: count % 5,
                    offsets: offsets.map(u32::from),
                })
                .collect()
        })
    };
    Step { rows, ids, inter }
}

/// Cheap invariants of an accepted step.
fn check(g: &Geometry, v: &MetadataView<'_>) {
    let info = v.info();
    let np = info.padded.requests() as usize;
    let n = v.active_requests();
    assert!(np >= n && info.padded.tokens >= info.real.tokens);
    for cu in [v.cu_query_seq_lengths(), v.cu_kv_seq_lengths()] {
        assert_eq!(cu.len(), np + 1);
        assert_eq!(cu.first(), Some(&0));
        assert!(cu.windows(2).all(|w| w[0] <= w[1]));
    }
    assert_eq!(
        v.cu_query_seq_lengths().last().copied(),
        Some(info.real.tokens as i32)
    );
    let dummy = g.facts.dummy_block;
    assert!(v.block_table().iter().all(|&id| (0..=dummy).contains(&id)));
    let real = info.real.tokens as usize;
    let blocks = v.token_to_block_idx();
    assert!(
        blocks[..real]
            .iter()
            .all(|&id| (0..i64::from(dummy)).contains(&id))
    );
    assert!(blocks[real..].iter().all(|&id| id == i64::from(dummy)));
    if let Some(chunks) = v.mamba_cu_chunk_seqlens() {
        assert!(chunks.windows(2).all(|w| w[0] <= w[1]));
    }
}

/// The live fields an accepted step defines (token ids left out: a step without them
/// keeps the previous ones).
fn live(v: &MetadataView<'_>) -> Vec<Vec<i64>> {
    fn w<T: Copy + Into<i64>>(x: &[T]) -> Vec<i64> {
        x.iter().map(|&v| v.into()).collect()
    }
    let mut out = vec![
        w(v.token_to_pos_ids()),
        w(v.token_to_block_idx()),
        w(v.token_to_local_position_within_kv_block()),
        w(v.token_to_request_idx()),
        w(v.query_lengths()),
        w(v.cu_query_seq_lengths()),
        w(v.kv_seq_lengths()),
        w(v.cu_kv_seq_lengths()),
        w(v.block_table()),
        w(v.active_request_last_token_idxs()),
    ];
    out.extend(v.mamba_batch_indices_decode().map(|d| d.to_vec()));
    for f in [
        v.mamba_batch_indices_prefill(),
        v.mamba_seq_idx(),
        v.mamba_cu_seqlens(),
        v.mamba_cu_chunk_seqlens(),
        v.mamba_last_chunk_indices(),
        v.mamba_seq_idx_for_varlen(),
        v.mamba_conv_seq_idx(),
        v.mamba_conv_seq_start(),
        v.mamba_device_decode_prefill(),
        v.mamba_intermediate_abs_positions(),
    ]
    .into_iter()
    .flatten()
    {
        out.push(w(f));
    }
    out.extend(v.mamba_intermediate_chunk_indices().map(<[i64]>::to_vec));
    out
}

fuzz_target!(|case: Case| {
    let spec = spec_of(&case.layout);
    let Ok(g) = Geometry::new(&spec) else {
        return;
    };
    if g.facts.total_bytes > 4 << 20 {
        return;
    }
    let dims = RuntimeDims::new(g.clone());
    let decode_reach = dims.decode_kv_limit() as u32;
    let mut meta = HostMetadata::new(dims);
    for s in case.steps.iter().take(6) {
        let step = step_of(&g, s, decode_reach);
        let rows: Vec<RequestRow<'_>> = step
            .rows
            .iter()
            .map(|x| RequestRow {
                phase: x.phase,
                query_length: x.q,
                kv_offset: x.kv,
                blocks: &x.blocks,
                mamba_slot: x.slot,
                sampling: x.sampling,
            })
            .collect();
        let input = StepInput {
            rows: &rows,
            token_ids: step.ids.as_deref(),
            intermediate: step.inter.as_deref(),
            residency: None,
        };
        let before = meta.bytes().to_vec();
        let info_before = *meta.info();
        match meta.fill(&input) {
            Ok(_) => {
                check(&g, &meta.view());
                let mut fresh = HostMetadata::new(RuntimeDims::new(g.clone()));
                fresh
                    .fill(&input)
                    .unwrap_or_else(|e| panic!("fresh refill failed: {e}"));
                assert_eq!(fresh.info(), meta.info());
                assert_eq!(live(&fresh.view()), live(&meta.view()), "history leaked");
            }
            Err(e) => {
                assert!(!s.repair, "a repaired (valid) step was rejected: {e}");
                assert!(meta.bytes() == before.as_slice(), "rejected step wrote");
                assert_eq!(*meta.info(), info_before);
            }
        }
    }
});
