//! Random engines driving `BatchState` through Megatron's async-scheduling contract
//! (prepare / commit_sampled / resolve, docs/ASYNC-SCHEDULING.md), mixed with the ordinary
//! path (commit_step), admissions of replacements, releases, pauses, failed backend steps
//! and resets. Every step:
//!
//! * the `CpuBackend` buffer (the fill that writes only what changed, driven by the step's
//!   residency) is byte for byte the buffer of a `HostMetadata` given the same steps with
//!   the full fill, and its live metadata equals a fresh full fill of the step;
//! * after a resolve, the next step's decode rows are the survivors in Megatron's
//!   hole-filling order, computed here independently, and the committed input ids moved
//!   with their rows;
//! * the pools hold exactly the blocks and slots of the live requests.
//!
//! Cases: 64 random layouts × 150 steps by default; `PROPTEST_CASES=N` changes the number
//! of layouts (e.g. `PROPTEST_CASES=2000 cargo test --release -p attention-layout --test
//! prop_async`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::backend::{CpuBackend, MetadataBackend};
use attention_layout::batch::{AsyncError, BatchState, RequestHandle};
use attention_layout::codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};
use attention_layout::{
    Geometry, HostMetadata, Phase, RequestPhase, RequestRow, RuntimeDims, StepInput,
};
use support::workload::Rng;

fn cases() -> u64 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn layout(rng: &mut Rng) -> RuntimeDims {
    let model = [ModelKind::Mha, ModelKind::Hybrid][rng.below(2) as usize];
    let block_size = [1u32, 2, 4, 8][rng.below(4) as usize];
    let s = rng.below(3) as u32;
    let r = 2 + rng.below(10) as u32;
    let spec = LayoutSpec {
        name: None,
        source: None,
        model,
        max_requests: r,
        max_tokens: 128,
        max_seq_len: 64,
        block_size,
        speculative_tokens: s,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: Some(8 + rng.below(120) as u32),
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 8,
            conv_width: 4,
        }),
        graphs: GraphSpec {
            count: if rng.chance(0.5) {
                GraphCount::Auto
            } else {
                GraphCount::Off
            },
            ..GraphSpec::default()
        },
        memory: None,
        formats: Vec::new(),
    };
    RuntimeDims::new(Geometry::new(&spec).unwrap())
}

/// Megatron's hole filling, written from docs/ASYNC-SCHEDULING.md: with `k` survivors,
/// the survivors at positions `>= k` move, in order, into the holes at positions `< k`.
fn megatron_order<T: Copy>(rows: &[T], alive: &[bool]) -> Vec<T> {
    let k = alive.iter().filter(|&&a| a).count();
    let mut out: Vec<Option<T>> = rows[..k]
        .iter()
        .zip(alive)
        .map(|(&r, &a)| a.then_some(r))
        .collect();
    let mut movers = (k..rows.len()).filter(|&i| alive[i]).map(|i| rows[i]);
    for slot in out.iter_mut() {
        if slot.is_none() {
            *slot = movers.next();
        }
    }
    out.into_iter().map(Option::unwrap).collect()
}

struct Engine {
    rng: Rng,
    state: BatchState,
    cpu: CpuBackend<RuntimeDims>,
    full: HostMetadata<RuntimeDims>,
    dims: RuntimeDims,
    steps: usize,
    prepared_steps: usize,
}

impl Engine {
    /// Builds the step, runs it through both fills (sometimes after a corrupted copy that
    /// the backend must refuse) and compares them. Returns the step's active resident rows
    /// and whether it was decode-only.
    fn run_step(&mut self) -> Vec<u32> {
        let Self {
            rng,
            state,
            cpu,
            full,
            dims,
            ..
        } = self;
        let corrupt = rng.chance(0.05);
        state.with_step(|input| {
            if corrupt && !input.rows.is_empty() {
                let mut bad: Vec<RequestRow<'_>> = input.rows.to_vec();
                let last = bad.len() - 1;
                bad[last].query_length = 0;
                bad[last].phase = Phase::Decode;
                let bad_input = StepInput {
                    rows: &bad,
                    ..*input
                };
                assert!(cpu.step(&bad_input).is_err());
            }
            let got = cpu.step(input).unwrap();
            let want = *full.fill(input).unwrap();
            assert_eq!(got, want);
            let (a, b) = (cpu.metadata().bytes(), full.bytes());
            assert!(
                a == b,
                "the incremental and full fills differ first at byte {:?}",
                a.iter().zip(b).position(|(x, y)| x != y)
            );
            let mut fresh = HostMetadata::new(dims.clone());
            fresh.fill(input).unwrap();
            assert_eq!(fresh.view().first_difference(&cpu.view()), None);
            let res = input.residency.unwrap();
            res.resident_rows[got.paused as usize..].to_vec()
        })
    }

    fn check_pools(&self) {
        let blocks: usize = self
            .state
            .live()
            .map(|h| self.state.blocks(h).unwrap().len())
            .sum();
        assert_eq!(self.state.kv_pool().in_use(), blocks);
        if let Some(pool) = self.state.mamba_pool() {
            assert_eq!(pool.in_use(), self.state.live_count());
        }
    }

    /// Admits and schedules some new requests (prefill chunks).
    fn admit_some(&mut self, n: usize) {
        for _ in 0..n {
            if !self.state.can_admit() {
                break;
            }
            let prompt = 1 + self.rng.below(16) as u32;
            let out = 1 + self.rng.below(47) as u32;
            let Ok(h) = self.state.admit(prompt, out) else {
                continue;
            };
            let chunk = if self.rng.chance(0.7) {
                prompt
            } else {
                1 + self.rng.below(u64::from(prompt)) as u32
            };
            let _ = self.state.schedule_prefill(h, chunk);
        }
    }

    /// Schedules the live requests for an ordinary step: most decode requests, prefill
    /// requests a chunk.
    fn schedule_ordinary(&mut self) {
        let live: Vec<RequestHandle> = self.state.live().collect();
        for h in live {
            let info = self.state.info(h).unwrap();
            if info.scheduled > 0 || info.paused {
                continue;
            }
            match info.phase {
                RequestPhase::Decode if self.rng.chance(0.97) => {
                    let _ = self.state.schedule_decode(h);
                }
                RequestPhase::Prefill if self.rng.chance(0.8) => {
                    let left = info.prompt_len - info.prompt_done;
                    let chunk = 1 + self.rng.below(u64::from(left)) as u32;
                    let _ = self.state.schedule_prefill(h, chunk);
                }
                _ => {}
            }
        }
    }

    fn step(&mut self) {
        self.steps += 1;
        let ran = self.run_step();
        self.check_pools();
        let s1 = self.state.speculative_tokens() as usize + 1;
        let prepared = self.state.can_prepare().is_ok()
            && self.rng.chance(0.85)
            && match self.state.prepare() {
                Ok(p) => {
                    assert_eq!(p.rows, ran.len());
                    true
                }
                Err(AsyncError::OutOfBlocks { .. }) => false,
                Err(e) => panic!("prepare refused a preparable step: {e}"),
            };
        if prepared {
            self.prepared_steps += 1;
        }
        let ordinary = !prepared && self.rng.chance(0.4);
        if ordinary {
            self.state.commit_step(|_| 0).unwrap();
        } else {
            // Commit sampled ids (id = 1000 × resident row + step, drafts after it), then
            // resolve with a random mask.
            let commit = self.rng.chance(0.8);
            let mut ids = Vec::new();
            if commit {
                let stamp = self.steps as i64;
                let sampled: Vec<i64> = ran.iter().map(|&r| i64::from(r) * 1000 + stamp).collect();
                let drafts: Vec<i64> = ran
                    .iter()
                    .flat_map(|&r| (1..s1).map(move |d| i64::from(r) * 1000 + stamp + d as i64))
                    .collect();
                self.state.commit_sampled(&sampled, &drafts).unwrap();
                ids = ran
                    .iter()
                    .flat_map(|&r| (0..s1).map(move |d| i64::from(r) * 1000 + stamp + d as i64))
                    .collect();
            }
            let p_finish = [0.0, 0.02, 0.1][self.rng.below(3) as usize];
            let mask: Vec<bool> = ran.iter().map(|_| !self.rng.chance(p_finish)).collect();
            let done: Vec<_> = self.state.resolve(&mask).unwrap().to_vec();
            // Survivors: rows the mask keeps that are still live.
            let alive: Vec<bool> = ran
                .iter()
                .zip(&mask)
                .map(|(&r, &m)| {
                    m && !done.iter().any(|f| f.handle.row() == r)
                        && self.state.live().any(|h| h.row() == r)
                })
                .collect();
            let order = megatron_order(&ran, &alive);
            if commit {
                let per_row: Vec<&[i64]> = ids.chunks(s1).collect();
                let want: Vec<i64> = megatron_order(&per_row, &alive).concat();
                assert_eq!(self.state.input_ids(), Some(&want[..]));
                assert_eq!(self.state.input_rows(), &order[..]);
            }
            // The next step's decode rows: the survivors in that order (after a resolve
            // without prepare, those the pool could schedule).
            let scheduled: Vec<u32> = order
                .iter()
                .copied()
                .filter(|&r| {
                    self.state
                        .live()
                        .find(|h| h.row() == r)
                        .is_some_and(|h| self.state.info(h).unwrap().scheduled > 0)
                })
                .collect();
            if prepared {
                assert_eq!(scheduled, order);
            }
            let next = self.state.with_step(|input| {
                let res = input.residency.unwrap();
                input
                    .rows
                    .iter()
                    .zip(res.resident_rows)
                    .filter(|(r, _)| r.phase == Phase::Decode)
                    .map(|(_, &r)| r)
                    .collect::<Vec<_>>()
            });
            assert_eq!(next, scheduled, "decode rows after resolve");
        }
        self.check_pools();
        // Replacements, releases, pauses and resets.
        let finished_room = self.state.max_requests() - self.state.live_count();
        if finished_room > 0 && self.rng.chance(0.25) {
            let n = 1 + self.rng.below(finished_room as u64) as usize;
            self.admit_some(n.min(2));
        }
        let first = self.state.live().next();
        if self.rng.chance(0.03)
            && let Some(h) = first
        {
            self.state.release(h).unwrap();
        }
        if !self.state.is_prepared() {
            self.schedule_ordinary();
        }
        if self.rng.chance(0.01) {
            self.state.reset();
            self.cpu.reset_residency();
        }
    }
}

#[test]
fn random_prepare_commit_resolve_sequences_fill_every_step_exactly_as_the_full_fill() {
    let mut total = 0;
    let mut prepared = 0;
    for case in 0..cases() {
        let mut rng = Rng::new(0x5EED_0000 + case);
        let dims = layout(&mut rng);
        let mut engine = Engine {
            state: BatchState::new(&dims).unwrap(),
            cpu: CpuBackend::new(dims.clone()),
            full: HostMetadata::new(dims.clone()),
            dims,
            rng,
            steps: 0,
            prepared_steps: 0,
        };
        engine.admit_some(engine.state.max_requests());
        for _ in 0..150 {
            engine.step();
        }
        total += engine.steps;
        prepared += engine.prepared_steps;
    }
    // The property is about prepared steps: most decode-only steps must take that path.
    eprintln!("{prepared} of {total} steps prepared");
    // About a third of the steps are prepared (decode-only, no paused row, pool enough).
    assert!(
        prepared * 4 > total,
        "only {prepared} of {total} steps were prepared"
    );
}
