//! Where the host time of the device fill's step goes: the planning pass the CUDA backend
//! and `StreamFill::prepare` run (`fill::plan_step_checking` with `BlockCheck::Needed`) and
//! the staging (`devfill::StagingBuilder::build`), timed apart over the steady scenarios
//! without replacements (delta steps), then over the five fixed scenarios as the GPU
//! benchmark drives them (`scenarios::Driver`: resident rows, decode rows alternating
//! between two positions, so full steps). The steady scenarios are then run again with
//! their steps' origins (`BatchState::with_step_origin`), as `step_with_origin` and
//! `StreamFill::prepare_with_origin` stage them: the steps that advance the one before
//! take `StagingBuilder::try_advance` (no plan), timed on its own. Device-free: the image
//! is built into host memory, as it is into the pinned or mapped staging on a GPU.
//!
//! `cargo run --release -p attention-layout-cli --example devfill_breakdown`
//!
//! `AL_ONLY=text` runs only the scenarios whose name contains `text` (to profile one).

use std::io::Write as _;
use std::time::Instant;

use attention_layout_cli::bench::median;
use attention_layout_cli::console;

use attention_layout::devfill::StagingBuilder;
use attention_layout::dims::RuntimeDims;
use attention_layout::fill::{self, BlockCheck, FillState};
use attention_layout::step::{StepInput, StepOrigin};
use attention_layout_cli::scenarios::{self, Driver, SteadyEngine, steady};
use attention_layout_codegen::Geometry;

/// Steps timed after this many of warm-up, of `STEPS` in all.
const WARMUP: usize = 2000;
const STEPS: usize = 12_000;

/// One layout's planning state and staging builder, and the timings of the steps it
/// planned and staged.
struct Timed {
    d: RuntimeDims,
    builder: StagingBuilder,
    // 16-byte aligned, as the pinned staging is.
    words: Vec<u128>,
    state: FillState,
    plan: Vec<f64>,
    build: Vec<f64>,
    /// `try_advance` of the steps it staged.
    advance: Vec<f64>,
    bytes: Vec<f64>,
    deltas: usize,
}

impl Timed {
    fn new(d: RuntimeDims) -> Self {
        let builder = StagingBuilder::new(&d);
        Self {
            words: vec![0u128; builder.capacity().div_ceil(16)],
            state: FillState::new(&d),
            builder,
            d,
            plan: vec![],
            build: vec![],
            advance: vec![],
            bytes: vec![],
            deltas: 0,
        }
    }

    /// Plans and stages step `i`, timing both apart after the warm-up.
    fn step(&mut self, i: usize, input: &StepInput<'_>) -> Result<(), String> {
        let t0 = Instant::now();
        let p = fill::plan_step_checking(&self.d, input, &mut self.state, BlockCheck::Needed)
            .map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        let staged = self
            .builder
            .build(&p, bytemuck::cast_slice_mut(&mut self.words))
            .map_err(|e| e.to_string())?;
        let t2 = Instant::now();
        if i >= WARMUP {
            self.plan.push((t1 - t0).as_secs_f64() * 1e6);
            self.build.push((t2 - t1).as_secs_f64() * 1e6);
            self.bytes.push(staged.bytes as f64);
            self.deltas += usize::from(staged.delta);
        }
        Ok(())
    }

    /// Stages step `i` as a device backend does with the step's origin: `try_advance`
    /// when it applies (timed as `advance`), else plan and build.
    fn step_origin(
        &mut self,
        i: usize,
        input: &StepInput<'_>,
        origin: &StepOrigin,
    ) -> Result<(), String> {
        let t0 = Instant::now();
        let advanced = self.builder.try_advance(
            &self.d,
            input,
            origin,
            bytemuck::cast_slice_mut(&mut self.words),
        );
        let t1 = Instant::now();
        let staged = match advanced {
            Some(staged) => {
                if i >= WARMUP {
                    self.advance.push((t1 - t0).as_secs_f64() * 1e6);
                }
                staged
            }
            None => {
                let p =
                    fill::plan_step_checking(&self.d, input, &mut self.state, BlockCheck::Needed)
                        .map_err(|e| e.to_string())?;
                self.builder
                    .build_with_origin(&p, bytemuck::cast_slice_mut(&mut self.words), origin)
                    .map_err(|e| e.to_string())?
            }
        };
        if i >= WARMUP {
            self.bytes.push(staged.bytes as f64);
            self.deltas += usize::from(staged.delta);
        }
        Ok(())
    }

    fn report_advance(self, name: &str) -> Result<(), String> {
        writeln!(
            console::stdout(),
            "{name} (with origins): try_advance {:.2} µs (median of the {} steps it staged, of {}); {} B staged (median)",
            median(self.advance.clone()),
            self.advance.len(),
            STEPS - WARMUP,
            median(self.bytes),
        )
        .map_err(|e| format!("stdout: {e}"))
    }

    fn report(self, name: &str) -> Result<(), String> {
        writeln!(
            console::stdout(),
            "{name}: plan {:.2} µs + build {:.2} µs (medians); {} B staged (median), {} of {} steps delta",
            median(self.plan),
            median(self.build),
            median(self.bytes),
            self.deltas,
            STEPS - WARMUP
        )
        .map_err(|e| format!("stdout: {e}"))
    }
}

/// Writes every byte of `buffer` (between steps: see `AL_THRASH_KB`).
fn thrash(buffer: &mut [u8]) {
    for (k, b) in buffer.iter_mut().enumerate() {
        *b = b.wrapping_add(k as u8);
    }
    std::hint::black_box(buffer);
}

fn main() -> Result<(), String> {
    // `AL_THRASH_KB=N`: write N KiB between the steady steps (untimed), as a forward pass
    // and the driver's calls would, so the builder's state is not in the caches.
    let thrash_kb: usize = std::env::var("AL_THRASH_KB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut buffer = vec![0u8; thrash_kb * 1024];
    let only = std::env::var("AL_ONLY").unwrap_or_default();
    let chosen = |name: &str| name.contains(only.as_str());
    let label = |name: &str| {
        if thrash_kb > 0 {
            format!("{name} ({thrash_kb} KiB written between steps)")
        } else {
            name.to_owned()
        }
    };
    for sc in steady()
        .into_iter()
        .filter(|s| s.replace_per_mille == 0 && chosen(s.name))
    {
        let mut engine = SteadyEngine::new(&sc)?;
        let mut t = Timed::new(engine.dims()?);
        for i in 0..STEPS {
            engine.with_step(|input| t.step(i, input))?;
            if engine.advance()?.reseeded {
                t.builder.forget_residency();
            }
            thrash(&mut buffer);
        }
        t.report(&label(sc.name))?;
    }
    for sc in scenarios::all().into_iter().filter(|s| chosen(s.name)) {
        let d = RuntimeDims::new(Geometry::new(&sc.spec).map_err(|e| e.to_string())?);
        let mut driver = Driver::new(&sc, &d, 0, 0);
        let mut t = Timed::new(d);
        for i in 0..STEPS {
            driver.advance();
            let rows = driver.rows();
            t.step(i, &driver.input(&rows))?;
        }
        t.report(&format!("{} (GPU bench driver)", sc.name))?;
    }
    for sc in steady()
        .into_iter()
        .filter(|s| s.replace_per_mille == 0 && chosen(s.name))
    {
        let mut engine = SteadyEngine::new(&sc)?;
        let mut t = Timed::new(engine.dims()?);
        for i in 0..STEPS {
            engine.with_step_origin(|input, origin| t.step_origin(i, input, origin))?;
            if engine.advance()?.reseeded {
                t.builder.forget_residency();
            }
            thrash(&mut buffer);
        }
        t.report_advance(&label(sc.name))?;
    }
    Ok(())
}
