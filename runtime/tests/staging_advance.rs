//! `StagingBuilder::try_advance`: a step that advances the batch-state build staged last
//! (an async-scheduling engine's steady decode step, `StepOrigin`) is staged from its
//! changes alone, and the image, the step info and the builder's state after it are
//! exactly what the general build gives for the same step — on every test layout, over
//! thousands of steps of an engine that prepares, resolves with rows finishing, admits
//! and crosses into new blocks at random. What the origin cannot vouch for is refused:
//! another input with the same origin, full verification, a builder that staged some
//! other step last.
//!
//! (The general build's images are run through the emitted kernels on the CPU in
//! `devfill_kernels_cpu.rs` and on the GPU in `cuda_equivalence.rs`.)

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "Test code: a panic is a failed test."
)]

mod support;

use attention_layout::devfill::{Staged, StagingBuilder};
use attention_layout::fill::{self, BlockCheck, FillState};
use attention_layout::{Dims, RequestRow, Residency, RuntimeDims, StepInput};
use support::layouts;
use support::prepared::PreparedDriver;

/// A 16-byte aligned staging buffer of `len` bytes.
fn buffer(len: usize) -> Vec<u128> {
    vec![0u128; len.div_ceil(16)]
}

fn bytes(b: &mut [u128]) -> &mut [u8] {
    bytemuck::cast_slice_mut(b)
}

/// Stages every step of `steps` steps of a prepared-step engine twice: with
/// `try_advance` where the origin allows (else the general build with the origin), and
/// with the general build alone; both must agree byte for byte. Returns the steps the
/// origin vouched for and those `try_advance` staged.
fn run(name: &str, dims: &RuntimeDims, seed: u64, steps: usize) -> (usize, usize) {
    let mut drv = PreparedDriver::new(dims, seed);
    let mut fast = StagingBuilder::new(dims);
    let mut slow = StagingBuilder::new(dims);
    let (mut fast_plan, mut slow_plan) = (FillState::new(dims), FillState::new(dims));
    let cap = fast.capacity();
    let (mut a, mut b) = (buffer(cap), buffer(cap));
    let (mut vouched, mut advanced) = (0usize, 0usize);
    for k in 0..steps {
        drv.schedule();
        let what = format!("{name} step {k}");
        let done = advanced;
        let ran = drv.state.with_step_origin(|input, origin| {
            vouched += usize::from(origin.advances());
            let got = match fast.try_advance(dims, input, origin, bytes(&mut a)) {
                Some(staged) => {
                    advanced += 1;
                    staged
                }
                None => {
                    let plan =
                        fill::plan_step_checking(dims, input, &mut fast_plan, BlockCheck::Needed)
                            .unwrap();
                    fast.build_with_origin(&plan, bytes(&mut a), origin)
                        .unwrap()
                }
            };
            let plan =
                fill::plan_step_checking(dims, input, &mut slow_plan, BlockCheck::Needed).unwrap();
            let want = slow.build(&plan, bytes(&mut b)).unwrap();
            assert_eq!(got.advanced, advanced > done, "{what}: advanced");
            assert_eq!(
                Staged {
                    advanced: false,
                    ..got
                },
                want,
                "{what}: staged"
            );
            assert!(
                bytes(&mut a)[..got.bytes] == bytes(&mut b)[..want.bytes],
                "{what}: the images differ"
            );
            assert!(fast == slow, "{what}: the builders' knowledge differs");
            PreparedDriver::active_rows(input)
        });
        drv.end_step(&ran, &what);
    }
    (vouched, advanced)
}

#[test]
fn an_advanced_step_stages_exactly_what_the_general_build_stages() {
    let mut total = 0;
    for (i, (name, src)) in layouts::LAYOUTS.iter().enumerate() {
        let dims = layouts::dims(src);
        let (vouched, advanced) = run(name, &dims, 0xad7a + i as u64, 3000);
        eprintln!("{name}: {vouched} steps vouched for, {advanced} advanced");
        assert!(
            advanced <= vouched,
            "{name}: advanced a step not vouched for"
        );
        // Graphed layouts advance nearly every vouched step (what falls back: a step
        // whose rows land in a block allocated before, an image too large).
        if dims.buckets().is_empty() {
            assert_eq!(advanced, 0, "{name}: eager steps are not advanced");
        } else {
            assert!(
                advanced * 10 >= vouched * 9 && advanced > 0,
                "{name}: only {advanced} of {vouched} vouched steps advanced"
            );
        }
        total += advanced;
    }
    assert!(
        total > 1000,
        "only {total} steps advanced over every layout"
    );
}

/// Runs an engine until the builder stages a step whose origin it can advance, and calls
/// `check` with the builder and that step instead of staging it the fast way.
fn at_an_advanceable_step(
    dims: &RuntimeDims,
    check: impl FnOnce(&mut StagingBuilder, &StepInput<'_>, &attention_layout::StepOrigin, &mut [u8]),
) {
    let mut drv = PreparedDriver::new(dims, 0x0a1);
    let mut builder = StagingBuilder::new(dims);
    let mut plan_state = FillState::new(dims);
    let mut buf = buffer(builder.capacity());
    let mut check = Some(check);
    for k in 0..2000 {
        drv.schedule();
        let ran = drv.state.with_step_origin(|input, origin| {
            let mut probe = builder.clone();
            let mut scratch = buffer(builder.capacity());
            if origin.advances()
                && probe
                    .try_advance(dims, input, origin, bytes(&mut scratch))
                    .is_some()
                && let Some(check) = check.take()
            {
                // `check` may stage the step: nothing more is staged after it.
                check(&mut builder, input, origin, bytes(&mut buf));
                return Vec::new();
            }
            let plan =
                fill::plan_step_checking(dims, input, &mut plan_state, BlockCheck::Needed).unwrap();
            builder
                .build_with_origin(&plan, bytes(&mut buf), origin)
                .unwrap();
            PreparedDriver::active_rows(input)
        });
        if check.is_none() {
            return;
        }
        drv.end_step(&ran, &format!("step {k}"));
    }
    panic!("no advanceable step in 2000 steps");
}

fn graphed_dims() -> RuntimeDims {
    let (_, src) = layouts::LAYOUTS
        .iter()
        .find(|(_, src)| !layouts::dims(src).buckets().is_empty())
        .unwrap();
    layouts::dims(src)
}

#[test]
fn another_input_with_the_same_origin_is_not_advanced() {
    let dims = graphed_dims();
    at_an_advanceable_step(&dims, |builder, input, origin, out| {
        let before = builder.clone();
        // The same rows, copied: the origin vouches for the state's slices only.
        let rows: Vec<RequestRow<'_>> = input.rows.to_vec();
        let copied = StepInput {
            rows: &rows,
            ..*input
        };
        assert!(builder.try_advance(&dims, &copied, origin, out).is_none());
        let res = input.residency.unwrap();
        let resident: Vec<u32> = res.resident_rows.to_vec();
        let other_rows = StepInput {
            residency: Some(Residency {
                resident_rows: &resident,
                ..res
            }),
            ..*input
        };
        assert!(
            builder
                .try_advance(&dims, &other_rows, origin, out)
                .is_none()
        );
        let ids = vec![0i64; input.rows.len() * 4];
        let with_ids = StepInput {
            token_ids: Some(&ids),
            ..*input
        };
        assert!(builder.try_advance(&dims, &with_ids, origin, out).is_none());
        assert!(*builder == before, "a refused advance changed the builder");
        // The state's own input is advanced.
        assert!(builder.try_advance(&dims, input, origin, out).is_some());
    });
}

#[test]
fn full_verification_and_a_step_staged_without_origin_turn_the_advance_off() {
    let dims = graphed_dims();
    at_an_advanceable_step(&dims, |builder, input, origin, out| {
        builder.set_verify(true);
        assert!(builder.try_advance(&dims, input, origin, out).is_none());
        builder.set_verify(false);
        builder.set_delta_steps(false);
        assert!(builder.try_advance(&dims, input, origin, out).is_none());
        builder.set_delta_steps(true);
        let mut other = builder.clone();
        other.forget_residency();
        assert!(other.try_advance(&dims, input, origin, out).is_none());
        let mut fresh = StagingBuilder::new(&dims);
        assert!(fresh.try_advance(&dims, input, origin, out).is_none());
        assert!(builder.try_advance(&dims, input, origin, out).is_some());
    });
}
