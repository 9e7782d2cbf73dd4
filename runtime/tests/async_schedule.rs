//! Megatron's async-scheduling contract on `BatchState` (prepare / commit_sampled /
//! resolve, docs/ASYNC-SCHEDULING.md) on hand-worked examples: a block crossing, `s = 2`,
//! rows finishing in the middle (Megatron's hole-filling order), a pool that cannot serve
//! a prepare, the prefill → decode transition, and every typed precondition error, each of
//! which leaves the state as it was.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "Test code: a panic is a failed test."
)]

use attention_layout::batch::{AsyncError, BatchError, BatchState, Prepared, RequestHandle};
use attention_layout::codegen::spec::{GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{BlockChange, Geometry, Phase, RequestPhase, RuntimeDims};

/// R = 8, T = 64, S = 64, block size 4, hybrid, `pool` blocks (one is the dummy).
fn dims(s: u32, pool: u32) -> RuntimeDims {
    let spec = LayoutSpec {
        name: None,
        source: None,
        model: ModelKind::Hybrid,
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 64,
        block_size: 4,
        speculative_tokens: s,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(pool),
        mamba: Some(MambaSpec {
            chunk_size: 4,
            conv_width: 4,
        }),
        graphs: GraphSpec::default(),
        memory: None,
        formats: Vec::new(),
    };
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

/// Admits one request per prompt (max_output 20) and runs their whole prompts as one
/// committed prefill step: every request is then a decode request with `kv = prompt`.
fn decoding(b: &mut BatchState, prompts: &[u32], max_output: u32) -> Vec<RequestHandle> {
    let hs: Vec<_> = prompts
        .iter()
        .map(|&p| b.admit(p, max_output).unwrap())
        .collect();
    for (&h, &p) in hs.iter().zip(prompts) {
        b.schedule_prefill(h, p).unwrap();
    }
    b.with_step(|_| ());
    assert!(b.commit_step(|_| 0).unwrap().is_empty());
    hs
}

/// Schedules every handle for decode and builds the step; returns its rows' resident
/// rows, (kv, q) and the residency changes.
fn step(b: &mut BatchState) -> (Vec<u32>, Vec<(u32, u32)>, Vec<BlockChange>) {
    b.with_step(|input| {
        let res = input.residency.unwrap();
        (
            res.resident_rows.to_vec(),
            input
                .rows
                .iter()
                .map(|r| {
                    assert_eq!(r.phase, Phase::Decode);
                    (r.kv_offset, r.query_length)
                })
                .collect(),
            res.changes.to_vec(),
        )
    })
}

/// Everything a refused call must leave as it was (short of building a step).
fn snapshot(b: &BatchState) -> String {
    let infos: Vec<_> = b.live().map(|h| b.info(h).unwrap()).collect();
    format!(
        "{infos:?} {:?} {:?} {} {:?} {:?} {}",
        b.resident_table(),
        b.kv_pool().free_blocks(),
        b.mamba_pool().unwrap().in_use(),
        b.input_ids(),
        b.input_rows(),
        b.is_prepared(),
    )
}

#[test]
fn prepare_advances_every_row_and_gives_a_new_block_to_exactly_the_row_that_crosses() {
    let mut b = BatchState::new(&dims(0, 16)).unwrap();
    // kv 3, 4, 6 after the prompts; blocks 1, 1, 2.
    let hs = decoding(&mut b, &[3, 4, 6], 20);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    // The decode step writes positions 3, 4, 6: the second request crossed into its
    // second block when it was scheduled.
    let (rows, kq, _) = step(&mut b);
    assert_eq!(rows, vec![hs[0].row(), hs[1].row(), hs[2].row()]);
    assert_eq!(kq, vec![(3, 1), (4, 1), (6, 1)]);
    let top = *b.kv_pool().free_blocks().last().unwrap();
    assert_eq!(b.can_prepare(), Ok(()));
    let p = b.prepare().unwrap();
    // Next positions 4, 5, 7: only the first request (offset 3 + 1 = block size) crosses.
    assert_eq!(
        p,
        Prepared {
            rows: 3,
            crossed: 1,
            new_blocks: 1,
            due: 0
        }
    );
    assert!(b.is_prepared());
    assert_eq!(b.blocks(hs[0]).unwrap().len(), 2);
    assert_eq!(b.blocks(hs[0]).unwrap()[1], top);
    for (&h, kv) in hs.iter().zip([4, 5, 7]) {
        let i = b.info(h).unwrap();
        assert_eq!((i.kv_offset, i.scheduled, i.generated), (kv, 1, 2));
        assert_eq!(b.last_kv_block_offset(h).unwrap(), Some(kv % 4));
    }
    // The prepared step is the resolved one's schedule: same rows, same order.
    b.commit_sampled(&[11, 12, 13], &[]).unwrap();
    assert!(b.resolve(&[true, true, true]).unwrap().is_empty());
    let (rows2, kq, changes) = step(&mut b);
    assert_eq!(rows2, rows);
    assert_eq!(kq, vec![(4, 1), (5, 1), (7, 1)]);
    // Only the appended block is a residency change (the decode step was acknowledged).
    assert_eq!(
        changes,
        vec![BlockChange {
            resident_row: hs[0].row(),
            index: 1,
            block: top
        }]
    );
    assert_eq!(b.input_ids(), Some(&[11, 12, 13][..]));
    assert_eq!(b.input_rows(), &rows[..]);
}

#[test]
fn several_crossing_rows_take_their_blocks_from_one_allocation_in_row_order() {
    let mut b = BatchState::new(&dims(0, 16)).unwrap();
    // kv 7, 3, 11: every row's next position (8, 4, 12) starts a block.
    let hs = decoding(&mut b, &[7, 3, 11], 20);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    step(&mut b);
    let free = b.kv_pool().free_blocks().to_vec();
    let taken = &free[free.len() - 3..];
    let p = b.prepare().unwrap();
    assert_eq!((p.crossed, p.new_blocks), (3, 3));
    for (i, &h) in hs.iter().enumerate() {
        assert_eq!(*b.blocks(h).unwrap().last().unwrap(), taken[i], "row {i}");
    }
}

#[test]
fn with_two_draft_tokens_rows_advance_by_three_and_commit_takes_the_drafts_in_row_order() {
    let mut b = BatchState::new(&dims(2, 32)).unwrap();
    // Prompt 5, max_output 8: positions up to 5 + 8 - 1 + 2 = 14.
    let hs = decoding(&mut b, &[5, 2], 8);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    let (_, kq, _) = step(&mut b);
    assert_eq!(kq, vec![(5, 3), (2, 3)]);
    // kv 5 + 3 = 8 and 2 + 3 = 5; next positions 8..=10 (a new block) and 5..=7 (none:
    // the decode step 2..=4 already took block 1).
    let p = b.prepare().unwrap();
    assert_eq!((p.crossed, p.new_blocks, p.due), (1, 1, 0));
    assert_eq!(b.info(hs[0]).unwrap().generated, 4);
    assert_eq!(b.blocks(hs[0]).unwrap().len(), 3);
    assert_eq!(b.blocks(hs[1]).unwrap().len(), 2);
    assert_eq!(
        b.commit_sampled(&[100, 200], &[101, 102]),
        Err(AsyncError::DraftLength {
            got: 2,
            rows: 2,
            s: 2,
            expected: 4
        })
    );
    b.commit_sampled(&[100, 200], &[101, 102, 201, 202])
        .unwrap();
    assert_eq!(b.input_ids(), Some(&[100, 101, 102, 200, 201, 202][..]));
    b.resolve(&[true, true]).unwrap();
    let (_, kq, _) = step(&mut b);
    assert_eq!(kq, vec![(8, 3), (5, 3)]);
    // Second prepare: generated 4 + 3 = 7 < 8; kv 11 -> positions 11..=13 (block 3) and
    // kv 8 -> positions 8..=10 (block 2): both cross.
    let p = b.prepare().unwrap();
    assert_eq!((p.crossed, p.due), (2, 0));
    b.resolve(&[true, true]).unwrap();
    step(&mut b);
    // Third: generated reaches max_output 8: both rows are due, get no block, and finish
    // at resolve whatever the mask says.
    let in_use = b.kv_pool().in_use();
    let p = b.prepare().unwrap();
    assert_eq!((p.due, p.new_blocks), (2, 0));
    assert_eq!(b.kv_pool().in_use(), in_use);
    let done = b.resolve(&[true, true]).unwrap().to_vec();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].generated, 8);
    assert_eq!(b.kv_pool().in_use(), 0);
    assert_eq!(b.mamba_pool().unwrap().in_use(), 0);
}

#[test]
fn finished_rows_release_their_blocks_and_slots_and_survivors_fill_the_holes_in_megatron_order() {
    let mut b = BatchState::new(&dims(0, 64)).unwrap();
    let hs = decoding(&mut b, &[3, 5, 9, 2, 6], 20);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    step(&mut b);
    b.prepare().unwrap();
    b.commit_sampled(&[10, 11, 12, 13, 14], &[]).unwrap();
    let blocks_of_finished: usize = [hs[0], hs[2]]
        .iter()
        .map(|&h| b.blocks(h).unwrap().len())
        .sum();
    let in_use = b.kv_pool().in_use();
    // Rows 0 and 2 finish: 3 survivors; the holes before position 3 are 0 and 2, the
    // survivors at positions >= 3 are 3 and 4: row 3 moves to 0, row 4 to 2, row 1 stays.
    let done = b
        .resolve(&[false, true, false, true, true])
        .unwrap()
        .to_vec();
    let ids: Vec<_> = done.iter().map(|f| f.handle).collect();
    assert_eq!(ids, vec![hs[0], hs[2]]);
    assert_eq!(b.kv_pool().in_use(), in_use - blocks_of_finished);
    assert_eq!(b.mamba_pool().unwrap().in_use(), 3);
    assert!(b.info(hs[0]).is_err());
    let (rows, kq, changes) = step(&mut b);
    assert_eq!(rows, vec![hs[3].row(), hs[1].row(), hs[4].row()]);
    assert_eq!(kq, vec![(3, 1), (6, 1), (7, 1)]);
    assert_eq!(b.input_ids(), Some(&[13, 11, 14][..]));
    assert_eq!(b.input_rows(), &rows[..]);
    // Moved rows keep their resident rows: only the finished rows' entries changed (and
    // the blocks the prepare appended).
    for c in &changes {
        if c.block == -1 {
            assert!(c.resident_row == hs[0].row() || c.resident_row == hs[2].row());
        }
    }
    for (h, r) in [(hs[3], rows[0]), (hs[1], rows[1]), (hs[4], rows[2])] {
        let start = r as usize * b.block_table_width();
        let n = b.blocks(h).unwrap().len();
        assert_eq!(&b.resident_table()[start..start + n], b.blocks(h).unwrap());
    }
    // A freed row is reused by the next admission; the replacement is a prefill request,
    // not a row of the step until it is scheduled.
    let new = b.admit(4, 3).unwrap();
    assert_eq!(new.row(), hs[0].row());
}

#[test]
fn a_prepare_the_pool_cannot_serve_is_refused_and_changes_nothing() {
    // 4 usable blocks; prompts 3 and 7 hold 1 + 2 of them, 1 is free. The decode step
    // writes positions 3 and 7 (no new block); the prepared one would write 4 and 8: both
    // rows cross, 2 blocks for 1 free. All or nothing: neither gets one.
    let mut b = BatchState::new(&dims(0, 5)).unwrap();
    let hs = decoding(&mut b, &[3, 7], 6);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    step(&mut b);
    assert_eq!(b.kv_pool().available(), 1);
    let before = snapshot(&b);
    assert_eq!(
        b.prepare(),
        Err(AsyncError::OutOfBlocks {
            rows: 2,
            needed: 2,
            available: 1
        })
    );
    assert_eq!(snapshot(&b), before);
    // Still built: the engine can end the step the ordinary way.
    b.commit_step(|_| 0).unwrap();
    assert_eq!(b.info(hs[0]).unwrap().kv_offset, 4);
}

#[test]
fn resolve_after_a_step_with_prefill_turns_finished_prompts_into_decode_rows() {
    let mut b = BatchState::new(&dims(0, 32)).unwrap();
    let hs = decoding(&mut b, &[5], 20);
    let whole = b.admit(6, 20).unwrap();
    let chunked = b.admit(9, 20).unwrap();
    b.schedule_decode(hs[0]).unwrap();
    b.schedule_prefill(whole, 6).unwrap();
    b.schedule_prefill(chunked, 4).unwrap();
    b.with_step(|input| assert_eq!(input.rows.len(), 3));
    assert_eq!(
        b.can_prepare(),
        Err(AsyncError::NotDecodeOnly { prefill: 2 })
    );
    // Sampled tokens of the step, one per active row (the chunked one's is meaningless).
    b.commit_sampled(&[1, 2, 3], &[]).unwrap();
    assert!(b.resolve(&[true, true, true]).unwrap().is_empty());
    let w = b.info(whole).unwrap();
    assert_eq!(
        (w.phase, w.kv_offset, w.generated, w.scheduled),
        (RequestPhase::Decode, 6, 1, 1)
    );
    let c = b.info(chunked).unwrap();
    assert_eq!(
        (c.phase, c.kv_offset, c.prompt_done, c.scheduled),
        (RequestPhase::Prefill, 4, 4, 0)
    );
    // The decode survivors are scheduled in the resolved order; the chunked prefill waits
    // for the engine's next chunk (no row until then).
    let rows = b.with_step(|input| {
        input
            .rows
            .iter()
            .map(|r| (r.phase, r.kv_offset))
            .collect::<Vec<_>>()
    });
    assert_eq!(rows, vec![(Phase::Decode, 6), (Phase::Decode, 6)]);
    // That step is decode-only with no paused row: it can be prepared.
    assert_eq!(b.can_prepare(), Ok(()));
}

#[test]
fn resolve_without_prepare_leaves_a_row_the_pool_cannot_serve_paused() {
    // 4 usable blocks.
    let mut b = BatchState::new(&dims(0, 5)).unwrap();
    let hs = decoding(&mut b, &[4, 7], 6);
    // After their prompts: 1 + 2 blocks, 1 free. Decode at positions 4 and 7: the first
    // takes the last free block.
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    b.with_step(|_| ());
    assert_eq!(b.kv_pool().available(), 0);
    b.resolve(&[true, true]).unwrap();
    // Next positions 5 (block 1, held) and 8 (a third block: none free): the second row
    // stays unscheduled, a paused row of the next step, first as Megatron's paused rows.
    let rows = b.with_step(|input| input.rows.iter().map(|r| r.phase).collect::<Vec<_>>());
    assert_eq!(rows, vec![Phase::Paused, Phase::Decode]);
    assert_eq!(
        b.can_prepare(),
        Err(AsyncError::PausedRows {
            paused: 1,
            first: hs[1].id()
        })
    );
}

#[test]
fn every_precondition_has_its_typed_error_and_changes_nothing() {
    let mut b = BatchState::new(&dims(1, 32)).unwrap();
    // Nothing built.
    assert_eq!(
        b.prepare(),
        Err(AsyncError::NotBuilt {
            operation: "prepare"
        })
    );
    assert_eq!(
        b.commit_sampled(&[], &[]),
        Err(AsyncError::NotBuilt {
            operation: "commit_sampled"
        })
    );
    assert_eq!(
        b.resolve(&[]).map(<[_]>::len),
        Err(AsyncError::NotBuilt {
            operation: "resolve"
        })
    );
    // A built step with no row.
    b.with_step(|_| ());
    assert_eq!(b.prepare(), Err(AsyncError::NoRows));
    let hs = decoding(&mut b, &[3, 5], 20);
    b.schedule_decode(hs[0]).unwrap();
    b.schedule_decode(hs[1]).unwrap();
    // Built before, changed since: not built.
    let late = b.admit(2, 2).unwrap();
    let before = snapshot(&b);
    assert!(matches!(b.prepare(), Err(AsyncError::NotBuilt { .. })));
    assert_eq!(snapshot(&b), before);
    // A scheduled prefill row.
    b.schedule_prefill(late, 2).unwrap();
    b.with_step(|_| ());
    let before = snapshot(&b);
    assert_eq!(b.prepare(), Err(AsyncError::NotDecodeOnly { prefill: 1 }));
    assert_eq!(snapshot(&b), before);
    b.release(late).unwrap();
    b.with_step(|_| ());
    let before = snapshot(&b);
    // Shapes of commit and resolve.
    assert_eq!(
        b.commit_sampled(&[1], &[1, 2]),
        Err(AsyncError::SampledLength { got: 1, rows: 2 })
    );
    assert_eq!(
        b.resolve(&[true]).map(<[_]>::len),
        Err(AsyncError::MaskLength { got: 1, rows: 2 })
    );
    assert_eq!(snapshot(&b), before);
    b.prepare().unwrap();
    let before = snapshot(&b);
    assert_eq!(b.prepare(), Err(AsyncError::AlreadyPrepared));
    assert_eq!(b.can_prepare(), Err(AsyncError::AlreadyPrepared));
    assert_eq!(b.commit_step(|_| 0), Err(BatchError::PreparedPending));
    assert_eq!(
        b.resolve(&[true, true, true]).map(<[_]>::len),
        Err(AsyncError::MaskLength { got: 3, rows: 2 })
    );
    assert_eq!(snapshot(&b), before);
    b.resolve(&[true, true]).unwrap();
    // A paused row (a decode request not scheduled).
    b.with_step(|_| ());
    b.commit_step(|_| 0).unwrap();
    b.schedule_decode(hs[0]).unwrap();
    b.with_step(|_| ());
    let before = snapshot(&b);
    assert_eq!(
        b.prepare(),
        Err(AsyncError::PausedRows {
            paused: 1,
            first: hs[1].id()
        })
    );
    assert_eq!(snapshot(&b), before);
}

#[test]
fn reset_forgets_a_prepared_step_and_the_committed_ids() {
    let mut b = BatchState::new(&dims(0, 32)).unwrap();
    let hs = decoding(&mut b, &[3], 20);
    b.schedule_decode(hs[0]).unwrap();
    b.with_step(|_| ());
    b.prepare().unwrap();
    b.commit_sampled(&[5], &[]).unwrap();
    b.reset();
    assert!(!b.is_prepared());
    assert_eq!(b.input_ids(), None);
    assert!(b.input_rows().is_empty());
    assert_eq!(b.kv_pool().in_use(), 0);
}

#[test]
fn prepare_and_resolve_are_refused_with_prefix_caching_and_change_nothing() {
    use attention_layout::EvictionPolicy;
    use attention_layout::batch::PrefixOptions;
    let d = dims(0, 64);
    let mut b = BatchState::with_prefix_caching(
        &d,
        PrefixOptions {
            policy: EvictionPolicy::Lru,
            mamba_cache_slots: None,
        },
    )
    .unwrap();
    b.with_step(|_| ());
    let available = b.kv_available();
    for err in [
        b.can_prepare().unwrap_err(),
        b.prepare().map(|_| ()).unwrap_err(),
        b.resolve(&[]).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(err, AsyncError::PrefixCaching { .. }), "{err}");
        assert!(err.to_string().contains("commit_step"), "{err}");
    }
    assert_eq!(b.kv_available(), available);
    assert!(!b.is_prepared());
}

#[test]
fn a_row_released_between_prepare_and_resolve_leaves_the_step_even_when_the_mask_keeps_every_row() {
    let mut b = BatchState::new(&dims(0, 32)).unwrap();
    let hs = decoding(&mut b, &[3, 5, 9], 20);
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    step(&mut b);
    b.prepare().unwrap();
    b.commit_sampled(&[11, 12, 13], &[]).unwrap();
    // The engine aborts the middle request before the step resolves.
    b.release(hs[1]).unwrap();
    // It is not finished again; the last row fills its hole, its ids with it.
    assert!(b.resolve(&[true, true, true]).unwrap().is_empty());
    assert_eq!(b.input_ids(), Some(&[11, 13][..]));
    assert_eq!(b.input_rows(), &[hs[0].row(), hs[2].row()][..]);
    let (rows, kq, _) = step(&mut b);
    assert_eq!(rows, vec![hs[0].row(), hs[2].row()]);
    assert_eq!(kq, vec![(4, 1), (10, 1)]);
    // Every row continuing: the prepared step resolves to the same rows, in place.
    b.prepare().unwrap();
    b.commit_sampled(&[21, 23], &[]).unwrap();
    assert!(b.resolve(&[true, true]).unwrap().is_empty());
    assert_eq!(b.input_ids(), Some(&[21, 23][..]));
    assert_eq!(b.scheduled_tokens(), 2);
    let (rows, kq, _) = step(&mut b);
    assert_eq!(rows, vec![hs[0].row(), hs[2].row()]);
    assert_eq!(kq, vec![(5, 1), (11, 1)]);
}

/// The origin of a step vouches that it advances the build before only after a prepared
/// step whose rows all continued, with nothing else changed in between (what lets a
/// device backend stage it from its changes alone: `StagingBuilder::try_advance`).
#[test]
fn only_a_prepared_step_whose_rows_all_continue_advances_the_build_before() {
    let d = dims(0, 64);
    let mut b = BatchState::new(&d).unwrap();
    let hs = decoding(&mut b, &[5, 9, 3], 50);
    let advances = |b: &mut BatchState| b.with_step_origin(|_, o| o.advances());
    for &h in &hs {
        b.schedule_decode(h).unwrap();
    }
    // Scheduled by hand: nothing vouched for.
    assert!(!advances(&mut b));
    b.prepare().unwrap();
    b.resolve(&[true; 3]).unwrap();
    assert!(advances(&mut b), "every row continued");
    assert!(advances(&mut b), "built again, the schedule unchanged");
    // A row finishes: the rows move.
    b.prepare().unwrap();
    b.resolve(&[true, false, true]).unwrap();
    assert!(!advances(&mut b), "a row finished");
    b.prepare().unwrap();
    b.resolve(&[true; 2]).unwrap();
    assert!(advances(&mut b));
    // Anything that changes the schedule between prepare and resolve.
    b.prepare().unwrap();
    let late = b.admit(4, 10).unwrap();
    b.resolve(&[true; 2]).unwrap();
    assert!(!advances(&mut b), "a request was admitted");
    b.release(late).unwrap();
    assert!(!advances(&mut b), "a request was released");
    b.prepare().unwrap();
    b.resolve(&[true; 2]).unwrap();
    assert!(advances(&mut b));
    // A step ended without prepare.
    b.commit_step(|_| 0).unwrap();
    let live: Vec<_> = b.live().collect();
    for h in live {
        b.schedule_decode(h).unwrap();
    }
    assert!(!advances(&mut b), "scheduled by hand after a commit");
    b.reset();
    assert!(!advances(&mut b), "after a reset");
}
