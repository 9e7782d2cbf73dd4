//! Where the host time of the device fill's step goes: the planning pass the CUDA backend
//! and `StreamFill::prepare` run (`fill::plan_step_checking` with `BlockCheck::Needed`) and
//! the staging (`devfill::StagingBuilder::build`), timed apart over the steady scenarios
//! without replacements (delta steps), then over the five fixed scenarios as the GPU
//! benchmark drives them (`scenarios::Driver`: resident rows, decode rows alternating
//! between two positions, so full steps). Device-free: the image is built into host
//! memory, as it is into the pinned or mapped staging on a GPU.
//!
//! `cargo run --release -p attention-layout-cli --example devfill_breakdown`

#![allow(
    clippy::print_stdout,
    reason = "an example that prints its measurements"
)]

use std::time::Instant;

use attention_layout::devfill::StagingBuilder;
use attention_layout::dims::RuntimeDims;
use attention_layout::fill::{self, BlockCheck, FillState};
use attention_layout_cli::scenarios::{self, Driver, SteadyEngine, steady};
use attention_layout_codegen::Geometry;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), String> {
    for sc in steady().into_iter().filter(|s| s.replace_per_mille == 0) {
        let mut engine = SteadyEngine::new(&sc)?;
        let d = engine.dims()?;
        let mut builder = StagingBuilder::new(&d);
        // 16-byte aligned, as the pinned staging is.
        let mut words = vec![0u128; builder.capacity().div_ceil(16)];
        let mut state = FillState::new(&d);
        let (mut plan, mut build, mut bytes, mut deltas) = (vec![], vec![], vec![], 0usize);
        let steps = 12_000;
        for i in 0..steps {
            engine.with_step(|input| {
                let t0 = Instant::now();
                let p = fill::plan_step_checking(&d, input, &mut state, BlockCheck::Needed)
                    .map_err(|e| e.to_string())?;
                let t1 = Instant::now();
                let staged = builder
                    .build(&p, bytemuck::cast_slice_mut(&mut words))
                    .map_err(|e| e.to_string())?;
                let t2 = Instant::now();
                if i >= 2000 {
                    plan.push((t1 - t0).as_secs_f64() * 1e6);
                    build.push((t2 - t1).as_secs_f64() * 1e6);
                    bytes.push(staged.bytes as f64);
                    deltas += usize::from(staged.delta);
                }
                Ok::<_, String>(())
            })?;
            if engine.advance()?.reseeded {
                builder.forget_residency();
            }
        }
        println!(
            "{}: plan {:.2} µs + build {:.2} µs (medians); {} B staged (median), {} of {} steps delta",
            sc.name,
            median(plan),
            median(build),
            median(bytes),
            deltas,
            steps - 2000
        );
    }
    for sc in scenarios::all() {
        let d = RuntimeDims::new(Geometry::new(&sc.spec).map_err(|e| e.to_string())?);
        let mut driver = Driver::new(&sc, &d, 0, 0);
        let mut builder = StagingBuilder::new(&d);
        let mut words = vec![0u128; builder.capacity().div_ceil(16)];
        let mut state = FillState::new(&d);
        let (mut plan, mut build, mut bytes) = (vec![], vec![], vec![]);
        let steps = 12_000;
        for i in 0..steps {
            driver.advance();
            let rows = driver.rows();
            let input = driver.input(&rows);
            let t0 = Instant::now();
            let p = fill::plan_step_checking(&d, &input, &mut state, BlockCheck::Needed)
                .map_err(|e| e.to_string())?;
            let t1 = Instant::now();
            let staged = builder
                .build(&p, bytemuck::cast_slice_mut(&mut words))
                .map_err(|e| e.to_string())?;
            let t2 = Instant::now();
            if i >= 2000 {
                plan.push((t1 - t0).as_secs_f64() * 1e6);
                build.push((t2 - t1).as_secs_f64() * 1e6);
                bytes.push(staged.bytes as f64);
            }
        }
        println!(
            "{} (GPU bench driver): plan {:.2} µs + build {:.2} µs (medians); {} B staged (median)",
            sc.name,
            median(plan),
            median(build),
            median(bytes)
        );
    }
    Ok(())
}
