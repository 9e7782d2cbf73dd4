//! Where the host time of a steady engine step goes, apart from any backend: the
//! `BatchState` building the step (`with_step`, the step input handed to a no-op backend)
//! and the engine ending it (`SteadyEngine::advance`: prepare, commit_sampled, resolve and
//! the scenario's own book-keeping), timed apart over the steady scenarios. A profiler
//! (`perf record`) on this example sees the engine alone.
//!
//! `cargo run --release -p attention-layout-cli --example engine_breakdown [STEPS [SCENARIO]]`

use std::io::Write as _;
use std::time::Instant;

use attention_layout_cli::bench::median;
use attention_layout_cli::console;

use attention_layout_cli::scenarios::{SteadyEngine, steady};

fn main() -> Result<(), String> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().map_err(|e| format!("steps: {e}")))
        .transpose()?
        .unwrap_or(20_000);
    let only = std::env::args().nth(2);
    for sc in steady()
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.name == o))
    {
        let mut engine = SteadyEngine::new(&sc)?;
        let (mut build, mut end) = (vec![], vec![]);
        for i in 0..2000 + steps {
            let t0 = Instant::now();
            let rows = engine.with_step(|input| std::hint::black_box(input).rows.len());
            let t1 = Instant::now();
            let a = engine.advance()?;
            let t2 = Instant::now();
            std::hint::black_box(rows);
            if i >= 2000 && !a.reseeded {
                build.push((t1 - t0).as_secs_f64() * 1e6);
                end.push((t2 - t1).as_secs_f64() * 1e6);
            }
        }
        writeln!(
            console::stdout(),
            "{}: with_step {:.2} µs + advance {:.2} µs (medians)",
            sc.name,
            median(build),
            median(end)
        )
        .map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}
