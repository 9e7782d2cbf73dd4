//! Where the time of a steady decode step goes in the CPU backend's residency-aware fill:
//! the planning pass (`fill::plan_step_resident`: every check) and the writing pass
//! (`fill::write_step`), timed apart over the steady scenarios without replacements, next
//! to the full fill's planning pass of the same steps (which, run right after, also keeps
//! the block lists in cache as the bench's full fill does).
//!
//! `cargo run --release -p attention-layout-cli --example steady_breakdown`

use std::io::Write as _;
use std::time::Instant;

use attention_layout_cli::bench::median;
use attention_layout_cli::console;

use attention_layout::dims::Dims;
use attention_layout::fill::{self, FillState};
use attention_layout_cli::scenarios::{SteadyEngine, steady};

fn main() -> Result<(), String> {
    for sc in steady().into_iter().filter(|s| s.replace_per_mille == 0) {
        let mut engine = SteadyEngine::new(&sc)?;
        let d = engine.dims()?;
        let mut words = vec![0u64; d.total_bytes().div_ceil(8)];
        fill::init_buffer(&d, bytemuck::cast_slice_mut(&mut words)).map_err(|e| e.to_string())?;
        let mut state = FillState::new(&d);
        let mut full_state = FillState::new(&d);
        let (mut plan, mut write, mut full_plan) = (vec![], vec![], vec![]);
        for i in 0..12_000 {
            engine.with_step(|input| {
                let t0 = Instant::now();
                let mut p =
                    fill::plan_step_resident(&d, input, &mut state).map_err(|e| e.to_string())?;
                let t1 = Instant::now();
                fill::write_step(&mut p, bytemuck::cast_slice_mut(&mut words))
                    .map_err(|e| e.to_string())?;
                let t2 = Instant::now();
                fill::plan_step(&d, input, &mut full_state).map_err(|e| e.to_string())?;
                let t3 = Instant::now();
                if i >= 2000 {
                    plan.push((t1 - t0).as_secs_f64() * 1e6);
                    write.push((t2 - t1).as_secs_f64() * 1e6);
                    full_plan.push((t3 - t2).as_secs_f64() * 1e6);
                }
                Ok::<_, String>(())
            })?;
            engine.advance()?;
        }
        writeln!(
            console::stdout(),
            "{}: plan {:.2} µs + write {:.2} µs (medians); the full fill's plan {:.2} µs",
            sc.name,
            median(plan),
            median(write),
            median(full_plan)
        )
        .map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}
