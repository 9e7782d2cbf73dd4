//! `reset()` of `HostMetadata` and `BatchState`: after arbitrary use, the reset object
//! equals a freshly built one in everything observable, and the steps built after the
//! reset are exactly those a fresh object builds.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::batch::{BatchError, BatchState, RequestHandle, RequestPhase};
use attention_layout::{Dims, HostMetadata, RequestRow, RuntimeDims, StepInput};
use support::layouts;
use support::workload::{Rng, Workload};

#[test]
fn host_metadata_reset_after_arbitrary_steps_equals_a_fresh_one() {
    for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
        let dims = layouts::dims(src);
        let mut w = Workload::new(&dims, 11 + i as u64, layouts::knobs(name));
        let mut used = HostMetadata::new(dims.clone());
        let fresh_bytes = used.bytes().to_vec();
        let mut accepted = 0;
        for _ in 0..80 {
            let st = w.step();
            let rows = st.rows();
            accepted += usize::from(used.fill(&st.input(&rows)).is_ok());
        }
        assert!(accepted > 0, "{name}: no step was accepted");
        // And a rejected one last: too many rows.
        let many: Vec<_> = (0..=dims.max_requests())
            .map(|_| RequestRow::paused(0, &[], -1))
            .collect();
        assert!(
            used.fill(&StepInput {
                rows: &many,
                ..Default::default()
            })
            .is_err()
        );
        assert_ne!(
            used.bytes(),
            fresh_bytes.as_slice(),
            "{name}: nothing written"
        );

        used.reset();
        let mut fresh = HostMetadata::new(dims.clone());
        assert_eq!(used.bytes(), fresh.bytes(), "{name}: reset buffer");
        assert_eq!(used.info(), fresh.info(), "{name}: reset info");
        // The next steps: the same whole buffer and info as a fresh object's.
        for k in 0..30 {
            let st = w.step();
            let rows = st.rows();
            let input = st.input(&rows);
            let a = used.fill(&input).copied();
            let b = fresh.fill(&input).copied();
            assert_eq!(a, b, "{name}: step {k} after the reset");
            assert_eq!(
                used.bytes(),
                fresh.bytes(),
                "{name}: step {k} after the reset"
            );
        }
    }
}

/// Everything a `BatchState` lets one observe without a handle.
fn observable(b: &BatchState) -> String {
    format!(
        "live {} {:?} can_admit {} scheduled {} kv {:?} slots {:?} table {:?}",
        b.live_count(),
        b.live().map(|h| h.row()).collect::<Vec<_>>(),
        b.can_admit(),
        b.scheduled_tokens(),
        b.kv_pool(),
        b.mamba_pool(),
        b.resident_table(),
    )
}

/// The same calls on two states give the same steps and the same metadata.
fn same_steps(used: &mut BatchState, fresh: &mut BatchState, dims: &RuntimeDims) {
    let mut m_used = HostMetadata::new(dims.clone());
    let mut m_fresh = HostMetadata::new(dims.clone());
    let admitted: Vec<(RequestHandle, RequestHandle)> = [(20, 6), (7, 3), (24, 2), (3, 9)]
        .into_iter()
        .map(|(p, o)| (used.admit(p, o).unwrap(), fresh.admit(p, o).unwrap()))
        .collect();
    for step in 0..12 {
        for (k, &(hu, hf)) in admitted.iter().enumerate() {
            let Ok(info) = fresh.info(hf) else { continue };
            // Leave the third request out now and then (it waits between chunks).
            if k == 2 && step % 3 == 1 {
                continue;
            }
            let left = dims.max_tokens() as u64 - fresh.scheduled_tokens();
            let (a, b) = match info.phase {
                RequestPhase::Decode if left > dims.speculative_tokens() as u64 => {
                    (used.schedule_decode(hu), fresh.schedule_decode(hf))
                }
                RequestPhase::Prefill if left > 0 => {
                    let chunk = (info.prompt_len - info.prompt_done).min(left as u32).min(8);
                    (
                        used.schedule_prefill(hu, chunk),
                        fresh.schedule_prefill(hf, chunk),
                    )
                }
                _ => continue,
            };
            assert_eq!(a, b, "step {step}");
        }
        let input_used = used.with_step(|input| format!("{:?} {:?}", input.rows, input.residency));
        let input_fresh =
            fresh.with_step(|input| format!("{:?} {:?}", input.rows, input.residency));
        assert_eq!(input_used, input_fresh, "step {step}: input");
        let a = used.with_step(|input| m_used.fill(input).copied());
        let b = fresh.with_step(|input| m_fresh.fill(input).copied());
        assert_eq!(a, b, "step {step}: info");
        assert_eq!(m_used.bytes(), m_fresh.bytes(), "step {step}: metadata");
        let du: Vec<_> = used
            .commit_step(|_| 1)
            .unwrap()
            .iter()
            .map(|f| f.generated)
            .collect();
        let df: Vec<_> = fresh
            .commit_step(|_| 1)
            .unwrap()
            .iter()
            .map(|f| f.generated)
            .collect();
        assert_eq!(du, df, "step {step}: finished");
        assert_eq!(observable(used), observable(fresh), "step {step}: state");
    }
}

#[test]
fn batch_state_reset_after_arbitrary_use_equals_a_fresh_one() {
    for (name, src) in layouts::LAYOUTS {
        let dims = layouts::dims(src);
        let mut rng = Rng::new(5);
        let mut used = BatchState::new(&dims).unwrap();
        let mut old = Vec::new();
        // Arbitrary use: admissions, chunks, decodes, pauses, releases, commits, and at
        // the end a schedule that was built but never committed.
        for step in 0..60 {
            if used.can_admit() && rng.unit() < 0.5 {
                let p = rng.range_inclusive(1, 40);
                if let Ok(h) = used.admit(p, rng.range_inclusive(1, 20)) {
                    old.push(h);
                }
            }
            let live: Vec<_> = used.live().collect();
            for h in live {
                let x = rng.unit();
                if x < 0.05 {
                    used.release(h).unwrap();
                    continue;
                }
                if x < 0.1 {
                    used.pause(h).unwrap();
                    continue;
                }
                used.resume(h).unwrap();
                let info = used.info(h).unwrap();
                let left = dims.max_tokens() as u64 - used.scheduled_tokens();
                let _ = match info.phase {
                    RequestPhase::Decode if left > dims.speculative_tokens() as u64 => {
                        used.schedule_decode(h)
                    }
                    RequestPhase::Prefill if left > 0 => used.schedule_prefill(
                        h,
                        rng.range_inclusive(
                            1,
                            (info.prompt_len - info.prompt_done).min(left as u32),
                        ),
                    ),
                    _ => continue,
                };
            }
            used.with_step(|_| ());
            if step < 59 {
                used.commit_step(|_| rng.range_inclusive(0, 2)).unwrap();
            }
        }
        assert!(
            used.live_count() > 0,
            "{name}: nothing live before the reset"
        );

        used.reset();
        let mut fresh = BatchState::new(&dims).unwrap();
        assert_eq!(observable(&used), observable(&fresh), "{name}: reset state");
        assert_eq!(used.commit_step(|_| 0), Err(BatchError::NotBuilt));
        assert_eq!(fresh.commit_step(|_| 0), Err(BatchError::NotBuilt));
        let empty = |b: &mut BatchState| {
            b.with_step(|input| {
                let res = input.residency.unwrap();
                (input.rows.len(), res.resident_rows.len(), res.changes.len())
            })
        };
        assert_eq!(
            empty(&mut used),
            (0, 0, 0),
            "{name}: a step after the reset"
        );
        assert_eq!(empty(&mut fresh), (0, 0, 0));
        // Handles from before the reset stay stale (admission numbers continue).
        for h in &old {
            assert!(matches!(
                used.info(*h),
                Err(BatchError::UnknownRequest { .. })
            ));
        }
        same_steps(&mut used, &mut fresh, &dims);
    }
}
