//! The benchmark scenarios of the core issue, shared by the criterion benchmark and
//! `attention-layout bench`: R=256, T=4096, block size 64, S=8192, Mamba chunk 128,
//! d_conv 4, graphs auto / exponential, mixed prefill count 4.

use attention_layout_codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};

use attention_layout::batch::{BatchState, RequestPhase};
use attention_layout::dims::{Dims, RuntimeDims};
use attention_layout::step::{BlockChange, Phase, RequestRow, Residency, StepInput, StepOrigin};
use attention_layout_codegen::Geometry;

/// One benchmark scenario: a layout and the rows of one step.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short name.
    pub name: &'static str,
    /// The layout.
    pub spec: LayoutSpec,
    /// `(phase is prefill, query length, kv offset, mamba slot)` per row.
    rows: Vec<(bool, u32, u32, i32)>,
    /// Block ids per row.
    blocks: Vec<Vec<i32>>,
}

/// Request rows from `(phase is prefill, query length, kv offset, mamba slot)` and the
/// block ids of each row (the scenarios' compact form, also the CUDA benchmark's).
pub(crate) fn request_rows<'a>(
    rows: &[(bool, u32, u32, i32)],
    blocks: &'a [Vec<i32>],
) -> Vec<RequestRow<'a>> {
    rows.iter()
        .zip(blocks)
        .map(|(&(prefill, q, kv, slot), b)| {
            if prefill {
                RequestRow::prefill(q, kv, b, slot)
            } else {
                RequestRow::decode(q, kv, b, slot)
            }
        })
        .collect()
}

impl Scenario {
    /// The step input (borrows the scenario).
    pub fn rows(&self) -> Vec<RequestRow<'_>> {
        request_rows(&self.rows, &self.blocks)
    }

    /// Token ids for the step.
    pub fn token_ids(&self) -> Vec<i64> {
        let n: u32 = self.rows.iter().map(|r| r.1).sum();
        (0..i64::from(n)).map(|i| 1000 + i).collect()
    }

    /// A step input over `rows` and `ids`.
    pub fn input<'a>(rows: &'a [RequestRow<'a>], ids: &'a [i64]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: Some(ids),
            intermediate: None,
            residency: None,
        }
    }

    /// Tokens in the step.
    pub fn tokens(&self) -> u32 {
        self.rows.iter().map(|r| r.1).sum()
    }
}

/// The shared layout of the scenarios.
pub fn spec(model: ModelKind, graphs: bool) -> LayoutSpec {
    LayoutSpec {
        name: Some(format!("bench-{}", model.as_str())),
        source: None,
        model,
        max_requests: 256,
        max_tokens: 4096,
        max_seq_len: 8192,
        block_size: 64,
        speculative_tokens: 0,
        tensor_parallel: 1,
        decode_index_dtype: Default::default(),
        kv_pool_blocks: None,
        mamba: model.has_mamba().then_some(MambaSpec {
            chunk_size: 128,
            conv_width: 4,
        }),
        graphs: GraphSpec {
            count: if graphs {
                GraphCount::Auto
            } else {
                GraphCount::Off
            },
            mixed_prefill: 4,
            ..GraphSpec::default()
        },
        memory: None,
        formats: Vec::new(),
    }
}

/// A deterministic spread of context lengths in `[256, 6144)`.
fn context_len(i: u32) -> u32 {
    256 + (i.wrapping_mul(2_654_435_761) >> 8) % 5888
}

fn build(name: &'static str, spec: LayoutSpec, decode: u32, prefills: &[u32]) -> Scenario {
    let bs = spec.block_size;
    let mut rows = Vec::new();
    let mut blocks = Vec::new();
    let mut next_block = 0i32;
    let mut slot = 0i32;
    let mut push = |prefill: bool, q: u32, kv: u32| {
        let n = (kv + q).div_ceil(bs) as i32;
        blocks.push((next_block..next_block + n).collect::<Vec<_>>());
        next_block += n;
        rows.push((prefill, q, kv, slot));
        slot += 1;
    };
    for i in 0..decode {
        push(false, 1, context_len(i));
    }
    for &q in prefills {
        push(true, q, 0);
    }
    Scenario {
        name,
        spec,
        rows,
        blocks,
    }
}

/// The hybrid mix scenario's name (the largest layout of [`all`]).
pub const HYBRID_MIX: &str = "hybrid-240-decode-4-prefill";

/// The five scenarios, in the order of BENCHMARKS.md.
pub fn all() -> Vec<Scenario> {
    let mix = [512, 512, 256, 128];
    vec![
        build("mha-256-decode", spec(ModelKind::Mha, true), 256, &[]),
        build(
            "mha-240-decode-4-prefill",
            spec(ModelKind::Mha, true),
            240,
            &mix,
        ),
        build("hybrid-256-decode", spec(ModelKind::Hybrid, true), 256, &[]),
        build(HYBRID_MIX, spec(ModelKind::Hybrid, true), 240, &mix),
        build(
            "hybrid-240-decode-4-prefill-no-graphs",
            spec(ModelKind::Hybrid, false),
            240,
            &mix,
        ),
    ]
}

/// The GPU benchmark's long-context rows (on [`long_context`]): name, new blocks per step,
/// requests replaced per step.
pub const LONG_CONTEXT_ROWS: [(&str, usize, usize); 4] = [
    ("long-context: steady decode", 0, 0),
    ("long-context: 32 new blocks / step", 32, 0),
    ("long-context: 1024 new blocks / step", 1024, 0),
    ("long-context: 4 requests replaced / step", 0, 4),
];

/// The scenarios whose layouts the GPU benchmark compiles and times: the hybrid mix and
/// the long-context one.
pub const COMPILED: [&str; 2] = [HYBRID_MIX, LONG_CONTEXT];

/// The name of the GPU benchmark's compile row for `scenario`.
pub fn compile_row(scenario: &str) -> String {
    format!("compile {scenario}")
}

/// The names of the rows only the GPU benchmark has: [`LONG_CONTEXT_ROWS`] and the
/// compile rows of [`COMPILED`] (a `bench --scenario` filter may select them). Names
/// only: no scenario is built.
pub fn gpu_only_rows() -> Vec<String> {
    LONG_CONTEXT_ROWS
        .iter()
        .map(|r| r.0.to_owned())
        .chain(COMPILED.iter().map(|s| compile_row(s)))
        .collect()
}

/// [`long_context`]'s name.
pub const LONG_CONTEXT: &str = "long-context-1024-decode";

/// The long-context scenario: R=1024, T=16384, S=131072, block size 64 — a 1024 × 2048
/// block table (8 MB), which Megatron's design copies to the device every step. 1024
/// decode requests with contexts spread over `[16384, 131072)` tokens (about 1.1 M block
/// ids in use). MHA, graphs auto.
pub fn long_context() -> Scenario {
    let spec = LayoutSpec {
        name: Some("long-context".to_owned()),
        max_requests: 1024,
        max_tokens: 16384,
        max_seq_len: 131_072,
        ..spec(ModelKind::Mha, true)
    };
    let bs = spec.block_size;
    let mut rows = Vec::new();
    let mut blocks = Vec::new();
    let mut next_block = 0i32;
    for i in 0..1024u32 {
        let kv = 16_384 + (i.wrapping_mul(2_654_435_761) >> 8) % (131_072 - 16_384 - 64);
        let n = (kv + 1).div_ceil(bs) as i32;
        blocks.push((next_block..next_block + n).collect::<Vec<_>>());
        next_block += n;
        rows.push((false, 1, kv, -1));
    }
    Scenario {
        name: LONG_CONTEXT,
        spec,
        rows,
        blocks,
    }
}

/// A steady-decode scenario: `rows` requests of a [`BatchState`] decoding step after step
/// through Megatron's async-scheduling contract (prepare / commit_sampled / resolve), on the
/// shared layout. Contexts start spread over `[256, 6144)` tokens, so about one row in
/// `block_size` crosses into a new KV block per step. With `replace_per_mille > 0` that
/// share of the rows finishes per step (spread over the steps, chosen pseudo-randomly) and
/// as many new requests are admitted, their whole prompt (64 to 1023 tokens) a prefill row
/// of the next step: such steps are not decode-only, so they end with a resolve without
/// prepare (docs/ASYNC-SCHEDULING.md).
///
/// [`steady`] lists them; the CPU benchmark ([`crate::bench::time_steady`]) and the GPU
/// benchmark both drive them with a [`SteadyEngine`].
#[derive(Debug, Clone)]
pub struct SteadyScenario {
    /// Short name.
    pub name: &'static str,
    /// The layout.
    pub spec: LayoutSpec,
    /// Requests decoding (the layout's `max_requests` at most).
    pub rows: u32,
    /// Rows that finish and are replaced per step, in thousandths of `rows`.
    pub replace_per_mille: u32,
}

/// The steady-decode scenarios, in the order of BENCHMARKS.md.
pub fn steady() -> Vec<SteadyScenario> {
    let sc = |name, model, replace_per_mille| SteadyScenario {
        name,
        spec: spec(model, true),
        rows: 256,
        replace_per_mille,
    };
    vec![
        sc("mha-256-decode-steady", ModelKind::Mha, 0),
        sc("mha-256-decode-steady-replace1", ModelKind::Mha, 10),
        sc("hybrid-256-decode-steady", ModelKind::Hybrid, 0),
        sc("hybrid-256-decode-steady-replace1", ModelKind::Hybrid, 10),
    ]
}

/// What [`SteadyEngine::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advance {
    /// The step took the prepared path ([`BatchState::prepare`] succeeded).
    pub prepared: bool,
    /// Rows that finished (and were replaced).
    pub finished: usize,
    /// The engine started over (every request near `max_seq_len`): a fresh table whose
    /// residency starts over, so the backend must be told
    /// ([`MetadataBackend::reset_residency`](attention_layout::MetadataBackend::reset_residency)).
    pub reseeded: bool,
}

/// The engine of a [`SteadyScenario`]: builds each step ([`with_step`](Self::with_step))
/// and ends it the way an async-scheduling engine would ([`advance`](Self::advance)).
#[derive(Debug)]
pub struct SteadyEngine {
    scenario: SteadyScenario,
    state: BatchState,
    /// Active rows of the step built last.
    active: usize,
    /// Steps ended so far.
    step: u64,
    /// Pseudo-random state for the finishing rows and prompt lengths.
    seed: u64,
    ids: Vec<i64>,
    /// The draft tokens committed with `ids` (zeros).
    drafts: Vec<i64>,
    mask: Vec<bool>,
    /// A lower bound on `max_output − generated` over the live requests (exact after
    /// [`scan_near_end`](Self::scan_near_end)): a step adds at most `s + 1` to a request's
    /// `generated`, so the per-request scan for one about to finish runs only once the
    /// bound comes within reach.
    min_left: u64,
}

impl SteadyEngine {
    /// A new engine, its requests admitted and their prompts processed (untimed set-up),
    /// every one scheduled for its first decode step.
    pub fn new(scenario: &SteadyScenario) -> Result<Self, String> {
        let geometry = Geometry::new(&scenario.spec).map_err(|e| e.to_string())?;
        let dims = RuntimeDims::new(geometry);
        let state = BatchState::new(&dims).map_err(|e| e.to_string())?;
        let rows = scenario.rows as usize;
        let mut me = Self {
            scenario: scenario.clone(),
            state,
            active: 0,
            step: 0,
            seed: 0x2545_F491_4F6C_DD1D,
            ids: Vec::with_capacity(rows * (dims.speculative_tokens() + 1)),
            drafts: Vec::with_capacity(rows * dims.speculative_tokens()),
            mask: Vec::with_capacity(rows),
            min_left: 0,
        };
        me.seed_requests()?;
        Ok(me)
    }

    /// The layout's dims.
    pub fn dims(&self) -> Result<RuntimeDims, String> {
        Geometry::new(&self.scenario.spec)
            .map(RuntimeDims::new)
            .map_err(|e| e.to_string())
    }

    /// The batch state (read only).
    pub fn state(&self) -> &BatchState {
        &self.state
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Admits `rows` requests with contexts spread over `[256, 6144)` and runs their
    /// prompts in prefill steps of at most `max_tokens` tokens.
    fn seed_requests(&mut self) -> Result<(), String> {
        let s = self.scenario.spec.max_seq_len;
        let budget = self.scenario.spec.max_tokens;
        let mut pending = std::collections::VecDeque::new();
        for i in 0..self.scenario.rows {
            let prompt = context_len(i);
            let h = self
                .state
                .admit(prompt, s - prompt)
                .map_err(|e| e.to_string())?;
            pending.push_back((h, prompt));
        }
        while !pending.is_empty() {
            let mut left = budget;
            while let Some((h, remaining)) = pending.front_mut() {
                let chunk = (*remaining).min(left);
                self.state
                    .schedule_prefill(*h, chunk)
                    .map_err(|e| e.to_string())?;
                *remaining -= chunk;
                left -= chunk;
                if *remaining == 0 {
                    pending.pop_front();
                }
                if left == 0 {
                    break;
                }
            }
            self.state.with_step(|_| ());
            self.state.commit_step(|_| 0).map_err(|e| e.to_string())?;
        }
        let live: Vec<_> = self.state.live().collect();
        for h in live {
            self.state.schedule_decode(h).map_err(|e| e.to_string())?;
        }
        self.scan_near_end();
        Ok(())
    }

    /// Whether a live decode request has at most 2 output tokens left; sets `min_left` to
    /// the exact minimum of `max_output − generated` over the live requests.
    fn scan_near_end(&mut self) -> bool {
        let (near_end, min_left) = self.near_end_and_min_left();
        self.min_left = min_left;
        near_end
    }

    /// Whether a live decode request has at most 2 output tokens left, and the minimum of
    /// `max_output − generated` over the live requests (one look at each).
    fn near_end_and_min_left(&self) -> (bool, u64) {
        let mut near_end = false;
        let mut min_left = u64::MAX;
        for h in self.state.live() {
            if let Ok(i) = self.state.info(h) {
                let left = i.max_output.saturating_sub(i.generated);
                near_end |= i.phase == RequestPhase::Decode && left <= 2;
                min_left = min_left.min(u64::from(left));
            }
        }
        (near_end, min_left)
    }

    /// Builds the current step and calls `f` with it (typically a backend's `step`).
    pub fn with_step<R>(&mut self, f: impl FnOnce(&StepInput<'_>) -> R) -> R {
        self.with_step_origin(|input, _| f(input))
    }

    /// [`with_step`](Self::with_step) with the step's origin (typically a backend's
    /// `step_with_origin`: a steady step is then staged from its changes alone).
    pub fn with_step_origin<R>(&mut self, f: impl FnOnce(&StepInput<'_>, &StepOrigin) -> R) -> R {
        let mut active = 0;
        let out = self.state.with_step_origin(|input, origin| {
            active = input
                .rows
                .iter()
                .filter(|r| r.phase != Phase::Paused)
                .count();
            f(input, origin)
        });
        self.active = active;
        out
    }

    /// Ends the step built last as an async-scheduling engine does: prepare the next one
    /// when the step is decode-only ([`BatchState::prepare`]), commit the sampled tokens,
    /// resolve with the scenario's finishing rows, admit their replacements and schedule
    /// their prompts. Starts over (untimed set-up again) when a request is about to reach
    /// `max_seq_len`, and says so.
    pub fn advance(&mut self) -> Result<Advance, String> {
        let mut out = Advance {
            prepared: self.state.can_prepare().is_ok() && self.state.prepare().is_ok(),
            ..Advance::default()
        };
        let per_row = self.state.speculative_tokens() as usize + 1;
        self.ids.clear();
        let n = self.active;
        self.ids
            .extend((0..n).map(|i| (self.step as i64) * 1000 + i as i64));
        self.drafts.clear();
        self.drafts.resize(self.ids.len() * (per_row - 1), 0);
        self.state
            .commit_sampled(&self.ids, &self.drafts)
            .map_err(|e| e.to_string())?;
        // Rows finishing this step: floor((t + 1)·r·p) − floor(t·r·p), p in thousandths.
        let rate = u64::from(self.scenario.rows) * u64::from(self.scenario.replace_per_mille);
        let finishing = (((self.step + 1) * rate) / 1000 - (self.step * rate) / 1000) as usize;
        self.mask.clear();
        self.mask.resize(n, true);
        for _ in 0..finishing.min(n) {
            let mut i = (self.next_random() % n as u64) as usize;
            while self.mask.get(i) == Some(&false) {
                i = (i + 1) % n;
            }
            if let Some(m) = self.mask.get_mut(i) {
                *m = false;
            }
        }
        out.finished = self
            .state
            .resolve(&self.mask)
            .map_err(|e| e.to_string())?
            .len();
        // Every request generated at most `s + 1` tokens.
        self.min_left = self.min_left.saturating_sub(per_row as u64);
        let s = self.scenario.spec.max_seq_len;
        for _ in 0..out.finished {
            let prompt = 64 + (self.next_random() % 960) as u32;
            let h = self
                .state
                .admit(prompt, s - prompt)
                .map_err(|e| e.to_string())?;
            self.state
                .schedule_prefill(h, prompt)
                .map_err(|e| e.to_string())?;
            self.min_left = self.min_left.min(u64::from(s - prompt));
        }
        self.step += 1;
        // Start over before any request could finish on its own: a decode request with at
        // most 2 tokens left, which only the scan can find once the bound allows one.
        let near_end = self.min_left <= 2 && self.scan_near_end();
        debug_assert_eq!(near_end, self.near_end_and_min_left().0);
        if near_end {
            self.state.reset();
            self.seed_requests()?;
            out.reseeded = true;
        }
        Ok(out)
    }
}

// ---- The resident-table driver of the five scenarios and the long-context ones ----

/// An engine-like driver of one benchmark scenario (the GPU benchmark's, and the device
/// fill's host-cost breakdown): owns the rows and produces each step, with stable resident
/// rows and the block-table changes since the previous step (the first step carries every
/// block). The five scenarios alternate a step with its decode rows one token later; the
/// long-context ones grow rows or replace requests every step.
pub struct Driver {
    /// Per row: (prefill?, q, kv, slot).
    rows: Vec<(bool, u32, u32, i32)>,
    blocks: Vec<Vec<i32>>,
    resident: Vec<u32>,
    ids: Vec<i64>,
    changes: Vec<BlockChange>,
    /// Five-scenario mode: decode rows alternate between `kv` and `kv + 1`.
    alternate: bool,
    /// Long-context churn: rows that get a new block per step, requests replaced per step.
    grow: usize,
    replace: usize,
    cursor: usize,
    initial_len: Vec<usize>,
    base_kv: Vec<u32>,
    free: Vec<i32>,
    block_size: u32,
    width: usize,
    step: usize,
}

// The driver indexes its per-row vectors (rows, blocks, initial lengths: all one entry per
// row) with `cursor % rows`, which is always in range.
#[allow(
    clippy::indexing_slicing,
    reason = "per-row vectors indexed with `cursor % rows`, always in range"
)]
impl Driver {
    /// A driver of `s` on `dims`; `grow` rows get a new block and `replace` requests are
    /// replaced per step (both 0: the alternating five-scenario mode).
    pub fn new(s: &Scenario, dims: &RuntimeDims, grow: usize, replace: usize) -> Self {
        let rows: Vec<(bool, u32, u32, i32)> = s
            .rows()
            .iter()
            .map(|r| {
                (
                    r.phase == Phase::Prefill,
                    r.query_length,
                    r.kv_offset,
                    r.mamba_slot,
                )
            })
            .collect();
        let blocks: Vec<Vec<i32>> = s.rows().iter().map(|r| r.blocks.to_vec()).collect();
        let used: i32 = blocks.iter().map(|b| b.len() as i32).sum();
        let mut changes = Vec::new();
        for (r, b) in blocks.iter().enumerate() {
            for (j, &id) in b.iter().enumerate() {
                changes.push(BlockChange {
                    resident_row: r as u32,
                    index: j as u32,
                    block: id,
                });
            }
        }
        Self {
            resident: (0..rows.len() as u32).collect(),
            ids: s.token_ids(),
            initial_len: blocks.iter().map(Vec::len).collect(),
            base_kv: rows.iter().map(|r| r.2).collect(),
            rows,
            blocks,
            changes,
            alternate: grow == 0 && replace == 0,
            grow,
            replace,
            cursor: 0,
            free: (used..dims.dummy_block()).rev().collect(),
            block_size: dims.block_size() as u32,
            width: dims.block_table_width(),
            step: 0,
        }
    }

    fn set(&mut self, r: usize, j: usize, id: i32) {
        self.changes.push(BlockChange {
            resident_row: r as u32,
            index: j as u32,
            block: id,
        });
    }

    /// Advances to the next step.
    pub fn advance(&mut self) {
        self.step += 1;
        if self.step > 1 {
            self.changes.clear();
        }
        let n = self.rows.len();
        if self.alternate {
            // Odd steps: decode rows one token later, where their blocks allow.
            let later = self.step % 2 == 1;
            for ((row, b), &kv) in self.rows.iter_mut().zip(&self.blocks).zip(&self.base_kv) {
                if !row.0 {
                    let fits = kv + 1 + row.1 <= (b.len() as u32) * self.block_size;
                    row.2 = kv + u32::from(later && fits);
                }
            }
            return;
        }
        for _ in 0..self.grow {
            let r = self.cursor % n.max(1);
            self.cursor += 1;
            if self.blocks[r].len() + 1 >= self.width {
                self.reset_row(r);
            }
            let Some(id) = self.free.pop() else { continue };
            let j = self.blocks[r].len();
            self.blocks[r].push(id);
            self.set(r, j, id);
            self.rows[r].2 = (j as u32 + 1) * self.block_size - 1;
        }
        for _ in 0..self.replace {
            let r = self.cursor % n.max(1);
            self.cursor += 1;
            // The request finishes; a new one with as many blocks takes its row.
            let len = self.blocks[r].len();
            let old = std::mem::take(&mut self.blocks[r]);
            self.free.extend(old.iter().rev());
            for j in 0..len {
                let Some(id) = self.free.pop() else { break };
                self.blocks[r].push(id);
                self.set(r, j, id);
            }
        }
    }

    /// Shrinks row `r` back to its initial length (releasing the rest).
    fn reset_row(&mut self, r: usize) {
        let keep = self.initial_len[r];
        while self.blocks[r].len() > keep {
            let j = self.blocks[r].len() - 1;
            if let Some(id) = self.blocks[r].pop() {
                self.free.push(id);
            }
            self.set(r, j, -1);
        }
        self.rows[r].2 = (keep as u32) * self.block_size - 1;
    }

    /// The step's rows.
    pub fn rows(&self) -> Vec<RequestRow<'_>> {
        request_rows(&self.rows, &self.blocks)
    }

    /// The step over `rows` (from [`rows`](Self::rows)), with token ids and residency.
    pub fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: Some(&self.ids),
            intermediate: None,
            residency: Some(Residency {
                resident_rows: &self.resident,
                changes: &self.changes,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "Test code: a panic is a failed test.")]

    use super::*;
    use attention_layout::dims::RuntimeDims;
    use attention_layout::metadata::HostMetadata;
    use attention_layout_codegen::Geometry;

    #[test]
    fn the_gpu_benchmark_compiles_the_hybrid_mix_and_the_long_context_layouts() {
        // Each compiled scenario is one the benchmark builds.
        assert!(all().iter().any(|s| s.name == HYBRID_MIX));
        assert_eq!(long_context().name, LONG_CONTEXT);
        let rows: Vec<String> = COMPILED.iter().map(|s| compile_row(s)).collect();
        assert_eq!(
            rows,
            [
                "compile hybrid-240-decode-4-prefill",
                "compile long-context-1024-decode"
            ]
        );
        // Every GPU-only row is named apart from the scenarios the CPU benchmark has.
        let gpu = gpu_only_rows();
        assert_eq!(gpu.len(), LONG_CONTEXT_ROWS.len() + rows.len());
        for s in all() {
            assert!(!gpu.iter().any(|r| r == s.name), "{}", s.name);
        }
    }

    #[test]
    fn a_steady_scenario_decodes_through_prepared_steps_and_replaces_its_share_of_rows() {
        for sc in steady() {
            let mut engine = SteadyEngine::new(&sc).unwrap();
            let mut prepared = 0;
            let mut finished = 0;
            for _ in 0..200 {
                let rows = engine.with_step(|input| input.rows.len());
                assert_eq!(rows, 256, "{}", sc.name);
                let a = engine.advance().unwrap();
                prepared += usize::from(a.prepared);
                finished += a.finished;
                assert!(!a.reseeded);
            }
            if sc.replace_per_mille == 0 {
                assert_eq!((prepared, finished), (200, 0), "{}", sc.name);
            } else {
                // 1 % of 256 rows over 200 steps: 512 rows.
                assert_eq!(finished, 512, "{}", sc.name);
            }
        }
    }

    #[test]
    fn a_steady_engine_starts_over_exactly_when_a_decode_request_is_about_to_finish() {
        for sc in steady() {
            let mut engine = SteadyEngine::new(&sc).unwrap();
            let mut reseeds = 0;
            for _ in 0..2_500 {
                engine.with_step(|_| ());
                let a = engine.advance().unwrap();
                reseeds += usize::from(a.reseeded);
                // The bound never hides a request about to finish, and stays a bound.
                let (near_end, min_left) = engine.near_end_and_min_left();
                assert!(!near_end, "{}", sc.name);
                assert!(engine.min_left <= min_left, "{}", sc.name);
            }
            // Without replacements the longest context reaches max_seq_len within about
            // 2,000 steps (with them, that request may be replaced first).
            if sc.replace_per_mille == 0 {
                assert_eq!(reseeds, 1, "{}", sc.name);
            }
        }
    }

    #[test]
    fn the_long_context_scenario_has_an_8_mb_block_table_and_fills() {
        let s = long_context();
        let g = Geometry::new(&s.spec).unwrap();
        assert_eq!(g.facts.block_table_width, 2048);
        let bt = g
            .field(attention_layout_codegen::Field::MhaBlockTable)
            .unwrap();
        // 8 MiB of rows, then the 128-byte guard.
        assert_eq!(
            bt.bytes(),
            (8 << 20) + attention_layout_codegen::BLOCK_TABLE_GUARD * 4
        );
        let mut meta = HostMetadata::new(RuntimeDims::new(g));
        let rows = s.rows();
        let ids = s.token_ids();
        let info = *meta.fill(&Scenario::input(&rows, &ids)).unwrap();
        assert_eq!((info.real.decode, info.real.tokens), (1024, 1024));
    }
}
