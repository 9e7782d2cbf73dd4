//! `BatchState` driven by a random engine: the residency changes, applied in order to a
//! mirror table (what the CUDA backend does with its device-resident block table),
//! reproduce every step's block lists (and those of the prefill requests the step leaves
//! out); paused rows are exactly the unscheduled decode requests; every step input passes
//! the host fill, whose block table agrees with the mirror; pools never leak.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::batch::{BatchError, BatchState, RequestPhase};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{BlockChange, Dims, Geometry, HostMetadata, Phase, RuntimeDims, StepInput};
use support::workload::Rng;

fn dims(model: ModelKind, s: u32, pool: u32) -> RuntimeDims {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: 12,
        max_tokens: 128,
        max_seq_len: 256,
        block_size: 8,
        speculative_tokens: s,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(pool),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 16,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

/// The consumer's resident block table.
struct Mirror {
    nkv: usize,
    table: Vec<i32>,
}

impl Mirror {
    fn apply(&mut self, changes: &[BlockChange]) {
        for c in changes {
            assert!((c.index as usize) < self.nkv, "{c:?}");
            self.table[c.resident_row as usize * self.nkv + c.index as usize] = c.block;
        }
    }

    fn row(&self, r: u32) -> &[i32] {
        &self.table[r as usize * self.nkv..(r as usize + 1) * self.nkv]
    }
}

/// Live requests the step has no row for: prefill requests that are not scheduled (a
/// chunked prefill between chunks, or one not started), by resident row, with their
/// blocks. Megatron keeps its in-flight chunked request hidden, not paused.
type Hidden = Vec<(u32, Vec<i32>)>;

/// The live prefill requests that are not scheduled this step.
fn hidden(state: &BatchState) -> Hidden {
    state
        .live()
        .filter(|&h| {
            let i = state.info(h).unwrap();
            i.phase == RequestPhase::Prefill && i.scheduled == 0
        })
        .map(|h| (h.row(), state.blocks(h).unwrap().to_vec()))
        .collect()
}

/// Checks one step input against the mirror (after its changes were applied) and runs
/// it through the host fill.
fn check_step(
    input: &StepInput<'_>,
    hidden: &Hidden,
    mirror: &Mirror,
    meta: &mut HostMetadata<RuntimeDims>,
) {
    let res = input
        .residency
        .expect("the batch state always gives residency");
    assert_eq!(res.resident_rows.len(), input.rows.len());
    let mut seen = vec![false; mirror.table.len() / mirror.nkv];
    for (row, &r) in input.rows.iter().zip(res.resident_rows) {
        assert!(!seen[r as usize], "resident row {r} twice");
        seen[r as usize] = true;
        let m = mirror.row(r);
        assert_eq!(&m[..row.blocks.len()], row.blocks, "row {r}");
        assert!(
            m[row.blocks.len()..].iter().all(|&b| b == -1),
            "row {r} tail"
        );
    }
    for &(r, ref blocks) in hidden {
        assert!(!seen[r as usize], "hidden request in row {r} is a step row");
        seen[r as usize] = true;
        let m = mirror.row(r);
        assert_eq!(&m[..blocks.len()], blocks.as_slice(), "hidden row {r}");
        assert!(
            m[blocks.len()..].iter().all(|&b| b == -1),
            "hidden row {r} tail"
        );
    }
    for (r, used) in seen.iter().enumerate() {
        if !used {
            assert!(
                mirror.row(r as u32).iter().all(|&b| b == -1),
                "free row {r}"
            );
        }
    }
    let info = *meta
        .fill(input)
        .unwrap_or_else(|e| panic!("host fill rejected the step: {e}"));
    // The fill's block table (active rows, step order) is the mirror's rows, -1 as dummy.
    let view = meta.view();
    let nkv = view.block_table_width();
    let dummy = meta.dims().dummy_block();
    let paused = info.paused as usize;
    let bs = meta.dims().block_size() as u32;
    for (a, &r) in res.resident_rows[paused..].iter().enumerate() {
        let got = &view.block_table()[a * nkv..(a + 1) * nkv];
        let want: Vec<i32> = mirror
            .row(r)
            .iter()
            .map(|&b| if b == -1 { dummy } else { b })
            .collect();
        assert_eq!(got, &want[..], "active row {a} (resident {r})");
        // A scheduled request holds exactly the blocks of its positions, and the view's
        // per-row KV bookkeeping names its last one.
        let row = &input.rows[paused + a];
        let end = row.kv_offset + row.query_length;
        assert_eq!(row.blocks.len() as u32, end.div_ceil(bs), "active row {a}");
        assert_eq!(view.kv_block_count(a), Some(end.div_ceil(bs)));
        assert_eq!(view.last_kv_block_offset(a), Some((end - 1) % bs));
        assert_eq!(view.last_kv_block_id(a), row.blocks.last().copied());
    }
    // Megatron order.
    let rank = |p: Phase| match p {
        Phase::Paused => 0,
        Phase::Decode => 1,
        Phase::Prefill => 2,
    };
    assert!(
        input
            .rows
            .windows(2)
            .all(|w| rank(w[0].phase) <= rank(w[1].phase))
    );
}

fn drive(d: &RuntimeDims, seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let mut state = BatchState::new(d).unwrap();
    let nkv = d.block_table_width();
    let mut mirror = Mirror {
        nkv,
        table: vec![-1; d.max_requests() * nkv],
    };
    let mut meta = HostMetadata::new(d.clone());
    let s = d.speculative_tokens() as u32;
    let max_tokens = d.max_tokens() as u64;
    let (mut failed_steps, mut out_of_blocks, mut finished, mut paused_rows) = (0, 0, 0, 0);
    let mut chunked_hidden = 0;
    for step in 0..steps {
        // Arrivals.
        for _ in 0..rng.range_inclusive(0, 2) {
            if state.can_admit() {
                let p = rng.range_inclusive(1, 90);
                let o = rng.range_inclusive(1, 40);
                match state.admit(p, o) {
                    Ok(_) | Err(BatchError::ExceedsPool { .. }) => {}
                    Err(e) => panic!("admit: {e}"),
                }
            }
        }
        // Aborts, pauses, resumes, schedules.
        let live: Vec<_> = state.live().collect();
        for h in live {
            let x = rng.unit();
            if x < 0.02 {
                state.release(h).unwrap();
                continue;
            }
            if x < 0.08 {
                state.pause(h).unwrap();
                continue;
            }
            if x < 0.2 {
                state.resume(h).unwrap();
            }
            let info = state.info(h).unwrap();
            if info.paused {
                continue;
            }
            let left = max_tokens - state.scheduled_tokens();
            let avail = state.kv_pool().available();
            let r = match info.phase {
                RequestPhase::Decode if left > u64::from(s) => state.schedule_decode(h),
                RequestPhase::Prefill if left > 0 => {
                    let rem = info.prompt_len - info.prompt_done;
                    let q = rng.range_inclusive(1, rem.min(left as u32));
                    state.schedule_prefill(h, q)
                }
                _ => continue,
            };
            match r {
                Ok(()) => {}
                Err(BatchError::OutOfBlocks { .. }) => {
                    out_of_blocks += 1;
                    assert_eq!(
                        state.kv_pool().available(),
                        avail,
                        "a failed schedule took blocks"
                    );
                    assert_eq!(state.info(h).unwrap().scheduled, 0);
                }
                Err(e) => panic!("schedule: {e}"),
            }
        }
        // Sometimes the backend fails the step: it applies nothing, the engine builds the
        // step again and gets the same changes (and, here, a partial application before
        // the full one, which the absolute stores make harmless).
        if rng.unit() < 0.15 {
            failed_steps += 1;
            let first: Vec<BlockChange> =
                state.with_step(|input| input.residency.unwrap().changes.to_vec());
            let again: Vec<BlockChange> =
                state.with_step(|input| input.residency.unwrap().changes.to_vec());
            assert_eq!(first, again, "step {step}: changes not redelivered");
            mirror.apply(&first[..first.len() / 2]);
        }
        let hid = hidden(&state);
        // Paused rows are exactly the unscheduled decode requests, oldest first.
        let paused: Vec<u32> = state
            .live()
            .filter(|&h| {
                let i = state.info(h).unwrap();
                i.phase == RequestPhase::Decode && i.scheduled == 0
            })
            .map(|h| h.row())
            .collect();
        chunked_hidden += hid.iter().filter(|(_, b)| !b.is_empty()).count();
        state.with_step(|input| {
            mirror.apply(input.residency.unwrap().changes);
            let n = input
                .rows
                .iter()
                .filter(|r| r.phase == Phase::Paused)
                .count();
            assert_eq!(&input.residency.unwrap().resident_rows[..n], &paused[..]);
            paused_rows += n;
            check_step(input, &hid, &mirror, &mut meta);
        });
        // The consumer's table now equals the state's own copy (a commit's clears reach
        // it with the next step).
        assert_eq!(state.resident_table(), &mirror.table[..]);
        let done = state
            .commit_step(|_| rng.range_inclusive(0, s))
            .unwrap()
            .len();
        finished += done;
        let held: u32 = state.live().map(|h| state.info(h).unwrap().blocks).sum();
        assert_eq!(
            state.kv_pool().in_use(),
            held as usize,
            "step {step}: block leak"
        );
        if let Some(p) = state.mamba_pool() {
            assert_eq!(p.in_use(), state.live_count());
        }
    }
    // Release everything: the clears reach the mirror with the next step.
    let live: Vec<_> = state.live().collect();
    for h in live {
        state.release(h).unwrap();
    }
    assert_eq!(state.kv_pool().in_use(), 0);
    assert_eq!(state.mamba_pool().map_or(0, |p| p.in_use()), 0);
    state.with_step(|input| {
        assert!(input.rows.is_empty());
        mirror.apply(input.residency.unwrap().changes);
        check_step(input, &Vec::new(), &mirror, &mut meta);
    });
    assert!(mirror.table.iter().all(|&b| b == -1));
    // The run exercised what it is meant to.
    assert!(finished > 20, "{finished} finished");
    assert!(out_of_blocks > 0, "the pool never ran out");
    assert!(failed_steps > 0 && paused_rows > 0);
    assert!(
        chunked_hidden > 0,
        "no chunked prefill was left out of a step"
    );
}

#[test]
fn residency_changes_rebuild_the_block_lists_hybrid_speculative() {
    // 40 usable blocks of 8 positions for 12 requests of up to 130 positions.
    drive(&dims(ModelKind::Hybrid, 2, 41), 1, 400);
}

#[test]
fn residency_changes_rebuild_the_block_lists_mha() {
    // 32 usable blocks keep most requests waiting for the pool: a longer run than the
    // hybrid one finishes enough of them (over 20 for every seed from 1 to 11).
    drive(&dims(ModelKind::Mha, 0, 33), 2, 1200);
}

#[test]
fn stale_handles_are_rejected_after_row_reuse() {
    let d = dims(ModelKind::Mha, 0, 33);
    let mut state = BatchState::new(&d).unwrap();
    let a = state.admit(4, 1).unwrap();
    state.schedule_prefill(a, 4).unwrap();
    state.with_step(|_| ());
    assert_eq!(state.commit_step(|_| 0).unwrap().len(), 1);
    let b = state.admit(4, 1).unwrap();
    assert_eq!(a.row(), b.row());
    assert_ne!(a.id(), b.id());
    assert!(matches!(
        state.info(a),
        Err(BatchError::UnknownRequest { .. })
    ));
    assert!(matches!(
        state.release(a),
        Err(BatchError::UnknownRequest { .. })
    ));
    // The clears of `a` come before the sets of `b` in the next step's changes.
    state.schedule_prefill(b, 4).unwrap();
    state.with_step(|input| {
        let c = input.residency.unwrap().changes;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].block, -1);
        assert_ne!(c[1].block, -1);
        assert_eq!(
            (c[0].resident_row, c[0].index),
            (c[1].resident_row, c[1].index)
        );
    });
}

/// Megatron's per-request KV bookkeeping through one request's life, worked by hand:
/// B = 8, s = 2, a 41-block pool handing out 39, 38, ... from the top.
#[test]
fn per_request_kv_block_bookkeeping_follows_the_last_position() {
    let d = dims(ModelKind::Mha, 2, 41);
    let mut state = BatchState::new(&d).unwrap();
    let h = state.admit(14, 10).unwrap();
    let book = |state: &BatchState| {
        (
            state.kv_block_count(h).unwrap(),
            state.last_kv_block_offset(h).unwrap(),
            state.last_kv_block_id(h).unwrap(),
        )
    };
    // Admitted, nothing scheduled: no position yet.
    assert_eq!(book(&state), (0, None, None));
    // Prefill of 14: positions 0..=13 in blocks [38, 39], the last at offset 5 of 39.
    state.schedule_prefill(h, 14).unwrap();
    assert_eq!(state.blocks(h).unwrap(), [38, 39]);
    assert_eq!(book(&state), (2, Some(5), Some(39)));
    state.with_step(|_| ());
    state.commit_step(|_| 0).unwrap();
    // Between steps: its last cached token, position 13.
    assert_eq!(book(&state), (2, Some(5), Some(39)));
    // Decode (q = 3 at kv = 14): positions 14..=16, the last at offset 0 of a third block.
    state.schedule_decode(h).unwrap();
    assert_eq!(state.blocks(h).unwrap(), [38, 39, 37]);
    assert_eq!(book(&state), (3, Some(0), Some(37)));
    state.with_step(|_| ());
    // No draft accepted: kv = 15, its last cached token is position 14 (offset 6 of 39),
    // while it keeps the third block the rejected draft was written to.
    state.commit_step(|_| 0).unwrap();
    assert_eq!(book(&state), (3, Some(6), Some(39)));
    // Next decode: positions 15..=17, the last at offset 1 of 37, no new block.
    state.schedule_decode(h).unwrap();
    assert_eq!(book(&state), (3, Some(1), Some(37)));
    // A stale handle is refused.
    state.release(h).unwrap();
    assert!(matches!(
        state.kv_block_count(h),
        Err(BatchError::UnknownRequest { .. })
    ));
}
