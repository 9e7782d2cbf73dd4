//! A Mamba2 mixer core over the metadata, on small dimensions.
//!
//! Per token the input is the pre-conv `xBC` row (`x` of `nheads·headdim` channels, then `B`
//! and `C` of `ngroups·d_state` each) and `dt` per head (already positive, i.e. after the
//! softplus). Per Mamba slot the state is the conv state (the last `d_conv − 1` inputs of
//! each channel, oldest first) and the SSM state `[nheads, headdim, d_state]`. The model:
//!
//! ```text
//! conv:  u_t[c] = silu(bias[c] + Σ_w weight[c][w] · in[t − (d_conv−1) + w][c])
//!        (inputs before the sequence's first token come from the slot's conv state)
//! ssm:   h_t = exp(dt_t·A) · h_{t−1} + dt_t · x_t ⊗ B_t,     y_t = h_t · C_t + D · x_t
//! ```
//!
//! Decode rows update their slot through `batch_indices_decode` (padded entries are `-1` and
//! touch nothing). Prefill runs, as Mamba2's SSD kernels do: a causal conv over
//! `conv_seq_idx` / `conv_seq_start` (the window never crosses into another sequence; it
//! reads the slot's conv state instead), then per chunk of `cu_chunk_seqlens` the chunk's
//! own state (`ssd_chunk_state`), then per sequence the state passing over its chunks up to
//! `last_chunk_indices` starting from its slot's state and writing the final state back
//! through `batch_indices_prefill` (`ssd_state_passing`), then per chunk the output in the
//! quadratic (attention-like) form plus the carried-in state (`ssd_chunk_scan`). Chunks
//! find their sequence through `seq_idx_for_varlen`; tokens are checked against `seq_idx`.
//!
//! A fresh request's slot is zeroed by the engine before its first chunk (Megatron zeroes
//! the slot when it allocates it); a continuing chunk (`kv_off > 0`) starts from the state
//! its slot holds.

// Dense arrays here are allocated in this module with sizes from the same layout and model
// dims as the loops that index them. Every index that comes from the metadata is range-
// checked before it is used, as the kernels do, and counted as a kernel error when it is
// out of range, so bad metadata fails the batch instead of panicking. The emulation's loops
// index as the kernels do (one loop per grid or thread dimension), on purpose.
#![allow(
    clippy::indexing_slicing,
    clippy::needless_range_loop,
    reason = "the emulation indexes as the kernels do; indices are checked first (above)"
)]

use attention_layout::{Dims, Field, HostMetadata, Phase, RuntimeDims, StepInfo};

use crate::batch::{Batch, Kind};
use crate::check::{BatchReport, Errors, Summary};
use crate::layouts::{Layout, MambaModel};
use crate::meta::{MetaBytes, cuda_header};
use crate::rng::Rng;
use crate::{Result, RunArgs};

/// Tolerance on the row-wise relative error of `y` and of the final SSM states (f32 against
/// the f64 recurrence).
///
/// Why this bound: every output is a sum of at most `chunk_size · (d_state + 1) + d_state`
/// products (≤ 16·9 + 8 = 152 here) of values within a few units, each with a relative
/// rounding error of a few f32 ulps (2⁻²⁴ ≈ 6·10⁻⁸; `expf` is within 2 ulps); a state is
/// carried through at most `T / chunk_size + 1 = 9` chunk steps, each contracting by
/// `exp(dt·A) < 1`. A worst-case bound is below 10⁻⁴ relative, observed errors are around
/// 10⁻⁶ (see the CPU emulation test); 10⁻³ leaves room for the GPU's fused multiply-adds and
/// `expf`, while a wrong slot, chunk, window or sequence boundary gives errors of order 1.
pub const TOLERANCE: f64 = 1e-3;

/// Bits of the sentinel in untouched output rows.
pub const SENTINEL_BITS: u32 = 0x7FC0_BA5E;

/// Threads per block of every Mamba kernel.
pub const THREADS: u32 = 64;

/// The sentinel value.
pub fn sentinel() -> f32 {
    f32::from_bits(SENTINEL_BITS)
}

/// Layer parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `A` per head (negative).
    pub a: Vec<f32>,
    /// `D` (skip) per head.
    pub d: Vec<f32>,
    /// Conv weights `[conv_dim, d_conv]`.
    pub conv_w: Vec<f32>,
    /// Conv bias `[conv_dim]`.
    pub conv_b: Vec<f32>,
}

/// Whether a layout has the `vllm` format: its consumer takes the vLLM kernel path (state
/// slots from `vllm_state_indices_*`, no padding check, a state pool of `R + 1` slots).
pub fn uses_vllm(dims: &RuntimeDims) -> bool {
    dims.facts().vllm
}

/// Slots of the state pool the consumer allocates: `R`, plus the scratch slot `R` that the
/// `vllm` format's padding rows point at (docs/CONSUMER-CONTRACT.md, "The scratch state
/// slot").
pub fn state_slots(dims: &RuntimeDims) -> usize {
    dims.max_requests() + usize::from(uses_vllm(dims))
}

/// Per-slot states, [`state_slots`] slots.
#[derive(Debug, Clone, PartialEq)]
pub struct States {
    /// Conv states `[R, conv_dim, d_conv − 1]`.
    pub conv: Vec<f32>,
    /// SSM states `[R, nheads, headdim, d_state]`.
    pub ssm: Vec<f32>,
}

/// One step's data.
#[derive(Debug, Clone)]
pub struct MambaCase {
    /// Model dims.
    pub model: MambaModel,
    /// `d_conv`.
    pub d_conv: usize,
    /// Slots of the state pool ([`state_slots`]: `R`, or `R + 1` with the scratch slot).
    pub slots: usize,
    /// Slots real rows may own: `R` (the scratch slot, when there is one, is slot `R`).
    pub real_slots: usize,
    /// The `vllm` kernel path: fresh prefills' slots are not zeroed (the kernels read
    /// `vllm_has_initial_state` instead), padding rows use the scratch slot.
    pub vllm: bool,
    /// The rows.
    pub batch: Batch,
    /// `Tp`.
    pub padded_tokens: usize,
    /// Real tokens.
    pub real_tokens: usize,
    /// Parameters.
    pub params: Params,
    /// Pre-conv inputs `[Tp, conv_dim]` in step-token order.
    pub xbc: Vec<f32>,
    /// `dt` `[Tp, nheads]`.
    pub dt: Vec<f32>,
    /// States before the step.
    pub states: States,
}

fn silu32(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn silu64(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// One step of the SSM for one (head, p) in f64: `h ← exp(dt·A)·h + dt·B·x`,
/// returns `y = C·h + D·x`.
pub fn ssm_step(h: &mut [f64], dt: f64, a: f64, b: &[f64], c: &[f64], x: f64, d: f64) -> f64 {
    let da = (dt * a).exp();
    let mut y = 0.0;
    for ((hn, &bn), &cn) in h.iter_mut().zip(b).zip(c) {
        *hn = da * *hn + dt * bn * x;
        y += cn * *hn;
    }
    y + d * x
}

/// One causal-conv output in f64 before the activation: `bias + Σ_w weight[w]·window[w]`,
/// where `window` is the conv state (oldest first) followed by the new input; then shifts
/// the new input into `state`.
pub fn conv_step(state: &mut [f64], weight: &[f64], bias: f64, input: f64) -> f64 {
    let mut acc = bias;
    for (w, s) in weight.iter().zip(state.iter()) {
        acc += w * s;
    }
    acc += weight.get(state.len()).copied().unwrap_or(0.0) * input;
    if !state.is_empty() {
        state.rotate_left(1);
        if let Some(last) = state.last_mut() {
            *last = input;
        }
    }
    acc
}

/// The sequential f64 reference: per active row, token after token from its slot's state.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `y` `[real_tokens, nheads·headdim]`.
    pub y: Vec<f64>,
    /// Final states of the active rows: `(slot, conv state, SSM state)`.
    pub finals: Vec<(usize, Vec<f64>, Vec<f64>)>,
}

impl MambaCase {
    /// Random inputs and states for `batch`. Every slot gets a random state (other requests'
    /// states, or stale ones, and the scratch slot's garbage); fresh prefills
    /// (`kv_off == 0`) get theirs zeroed, except on the `vllm` path, where the kernels must
    /// start them from zero by `vllm_has_initial_state` and so get a stale state to ignore.
    pub fn new(layout: &Layout<MambaModel>, batch: Batch, info: &StepInfo, rng: &mut Rng) -> Self {
        let m = layout.model;
        let d_conv = layout.dims.conv_width();
        let slots = state_slots(&layout.dims);
        let vllm = uses_vllm(&layout.dims);
        let padded_tokens = info.padded.tokens as usize;
        let cd = m.conv_dim();
        let xd = m.nheads * m.headdim;
        let params = Params {
            a: rng.fill(m.nheads, -1.5, -0.5),
            d: rng.fill(m.nheads, 0.5, 1.5),
            conv_w: rng.fill(cd * d_conv, -0.5, 0.5),
            conv_b: rng.fill(cd, -0.1, 0.1),
        };
        let mut states = States {
            conv: rng.fill(slots * cd * (d_conv - 1), -1.0, 1.0),
            ssm: rng.fill(slots * xd * m.d_state, -0.5, 0.5),
        };
        for r in &batch.rows {
            if !vllm && r.phase == Phase::Prefill && r.kv_off == 0 {
                let s = r.slot as usize;
                let c = cd * (d_conv - 1);
                states.conv[s * c..(s + 1) * c].fill(0.0);
                let n = xd * m.d_state;
                states.ssm[s * n..(s + 1) * n].fill(0.0);
            }
        }
        Self {
            model: m,
            d_conv,
            slots,
            real_slots: layout.dims.max_requests(),
            vllm,
            real_tokens: batch.real_tokens(),
            batch,
            padded_tokens,
            params,
            xbc: rng.fill(padded_tokens * cd, -1.0, 1.0),
            dt: rng.fill(padded_tokens * m.nheads, 0.05, 0.5),
            states,
        }
    }

    fn conv_len(&self) -> usize {
        self.model.conv_dim() * (self.d_conv - 1)
    }

    fn ssm_len(&self) -> usize {
        self.model.nheads * self.model.headdim * self.model.d_state
    }

    /// The f64 reference, from the rows alone (no metadata). A fresh prefill (`kv_off == 0`)
    /// starts from zero states whatever its slot holds.
    pub fn reference(&self) -> Reference {
        let m = self.model;
        let (cd, xd, ds, hd) = (m.conv_dim(), m.nheads * m.headdim, m.d_state, m.headdim);
        let dc1 = self.d_conv - 1;
        let p = &self.params;
        let w64: Vec<f64> = p.conv_w.iter().map(|&x| f64::from(x)).collect();
        let mut y = vec![0.0; self.real_tokens * xd];
        let mut finals = Vec::new();
        for act in self.batch.active() {
            let s = act.row.slot as usize;
            let fresh = act.row.phase == Phase::Prefill && act.row.kv_off == 0;
            let start = |v: &[f32]| -> Vec<f64> {
                v.iter()
                    .map(|&x| if fresh { 0.0 } else { f64::from(x) })
                    .collect()
            };
            let mut conv = start(&self.states.conv[s * self.conv_len()..(s + 1) * self.conv_len()]);
            let mut ssm = start(&self.states.ssm[s * self.ssm_len()..(s + 1) * self.ssm_len()]);
            for j in 0..act.row.q as usize {
                let t = act.t0 + j;
                let u: Vec<f64> = (0..cd)
                    .map(|c| {
                        silu64(conv_step(
                            &mut conv[c * dc1..(c + 1) * dc1],
                            &w64[c * self.d_conv..(c + 1) * self.d_conv],
                            f64::from(p.conv_b[c]),
                            f64::from(self.xbc[t * cd + c]),
                        ))
                    })
                    .collect();
                for h in 0..m.nheads {
                    let g = h / m.heads_per_group();
                    let b = &u[xd + g * ds..xd + (g + 1) * ds];
                    let c = &u[xd + m.ngroups * ds + g * ds..xd + m.ngroups * ds + (g + 1) * ds];
                    for pp in 0..hd {
                        let hp = h * hd + pp;
                        y[t * xd + hp] = ssm_step(
                            &mut ssm[hp * ds..(hp + 1) * ds],
                            f64::from(self.dt[t * m.nheads + h]),
                            f64::from(p.a[h]),
                            b,
                            c,
                            u[hp],
                            f64::from(p.d[h]),
                        );
                    }
                }
            }
            finals.push((s, conv, ssm));
        }
        Reference { y, finals }
    }

    /// Compares a step's results with the reference and the guards.
    pub fn check(&self, after: &States, y: &[f32]) -> MambaOutcome {
        let m = self.model;
        let xd = m.nheads * m.headdim;
        let (cl, sl, ds) = (self.conv_len(), self.ssm_len(), m.d_state);
        let mut o = MambaOutcome::default();
        let r = self.reference();
        if after.conv.len() != self.states.conv.len()
            || after.ssm.len() != self.states.ssm.len()
            || y.len() != self.padded_tokens * xd
        {
            o.guard_violations = usize::MAX;
            return o;
        }
        let bits_differ = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count()
        };
        // The scratch slot (`real_slots`, with `vllm`) holds padding rows' garbage by design;
        // a real row that read it would show in its own state and outputs.
        for s in 0..self.real_slots {
            let conv = &after.conv[s * cl..(s + 1) * cl];
            let ssm = &after.ssm[s * sl..(s + 1) * sl];
            if let Some((_, c, h)) = r.finals.iter().find(|f| f.0 == s) {
                // Conv states are copies of f32 inputs: exact.
                let want: Vec<f32> = c.iter().map(|&x| x as f32).collect();
                o.guard_violations += bits_differ(conv, &want);
                for row in 0..xd {
                    o.state
                        .add_row(&ssm[row * ds..(row + 1) * ds], &h[row * ds..(row + 1) * ds]);
                }
            } else {
                o.guard_violations += bits_differ(conv, &self.states.conv[s * cl..(s + 1) * cl]);
                o.guard_violations += bits_differ(ssm, &self.states.ssm[s * sl..(s + 1) * sl]);
            }
        }
        for t in 0..self.padded_tokens {
            for h in 0..m.nheads {
                let rg = t * xd + h * m.headdim..t * xd + (h + 1) * m.headdim;
                if t < self.real_tokens {
                    o.output.add_row(&y[rg.clone()], &r.y[rg]);
                } else if y[rg].iter().any(|x| x.to_bits() != SENTINEL_BITS) {
                    o.padding_writes += 1;
                }
            }
        }
        o
    }
}

/// What [`MambaCase::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MambaOutcome {
    /// `y` errors of the real tokens.
    pub output: Errors,
    /// Final SSM state errors of the active slots.
    pub state: Errors,
    /// State elements that changed in slots no active row owns, plus conv-state elements of
    /// active slots that differ from the exact expected values.
    pub guard_violations: usize,
    /// Output rows of padding tokens that were written.
    pub padding_writes: usize,
}

/// What a step execution returns.
#[derive(Debug, Clone)]
pub struct MambaRun {
    /// States after the step.
    pub states: States,
    /// `y` `[Tp, nheads·headdim]` (sentinel before the step).
    pub y: Vec<f32>,
    /// Inconsistencies the kernels counted.
    pub kernel_errors: u32,
}

/// Something that runs the Mamba kernels of a step: the CPU emulation or the GPU.
pub trait Executor {
    /// What it is.
    fn describe(&self) -> String;
    /// Runs one step (decode, then the prefill pipeline).
    fn run(
        &mut self,
        layout_index: usize,
        layout: &Layout<MambaModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &MambaCase,
    ) -> Result<MambaRun>;
}

/// The kernels' index math on the CPU in f32, reading the metadata bytes by offset; one
/// loop nest per kernel, in launch order.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuEmulation;

impl Executor for CpuEmulation {
    fn describe(&self) -> String {
        "CPU emulation of the kernels (f32)".to_owned()
    }

    fn run(
        &mut self,
        _layout_index: usize,
        layout: &Layout<MambaModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &MambaCase,
    ) -> Result<MambaRun> {
        emulate(
            &MetaBytes::new(meta, &layout.dims),
            &layout.dims,
            info,
            case,
        )
    }
}

/// Emulates the six kernels of one step; on a layout with the `vllm` format, the vLLM path
/// (see [`KERNELS_VLLM`]): state slots from `vllm_state_indices_*` with no padding check (a
/// slot outside the pool of [`state_slots`] is counted as a kernel error: on the GPU it would
/// be an out-of-bounds access), fresh states from `vllm_has_initial_state`, decode rows'
/// inputs and outputs by decode row (see [`merge_decode_outputs`]).
pub fn emulate(
    m: &MetaBytes<'_>,
    dims: &RuntimeDims,
    info: &StepInfo,
    case: &MambaCase,
) -> Result<MambaRun> {
    let md = case.model;
    let (nh, hd, ds, cd) = (md.nheads, md.headdim, md.d_state, md.conv_dim());
    let xd = nh * hd;
    let (b_off, c_off, hpg) = (xd, xd + md.ngroups * ds, md.heads_per_group());
    let dconv = dims.conv_width();
    let dc1 = dconv - 1;
    let slots = state_slots(dims) as i64;
    let vllm = uses_vllm(dims);
    let p = &case.params;
    let tokens = info.padded.tokens as i64;
    let dp = info.padded.decode as usize;
    let mut st = case.states.clone();
    let mut y = vec![sentinel(); case.padded_tokens * xd];
    let mut errs = 0u32;
    // The vLLM path's decode output, by decode row.
    let mut y_d = vec![sentinel(); if vllm { dp * xd } else { 0 }];

    // mamba_decode (mamba_decode_vllm): grid Dp.
    for i in 0..dp {
        let (slot, t) = if vllm {
            // No padding check: a padding row runs on the scratch slot, with the input of
            // token i (its own decode token for a real row).
            (
                i64::from(m.i32(Field::VllmStateIndicesDecode, i)?),
                i as i64,
            )
        } else {
            let slot = m.decode_index(i)?;
            if slot < 0 {
                continue;
            }
            (slot, i64::from(m.i32(Field::MhaCuQuerySeqLengths, i)?))
        };
        if slot < 0 || slot >= slots || t < 0 || t >= tokens {
            errs += 1;
            continue;
        }
        let (slot, t) = (slot as usize, t as usize);
        let mut act = vec![0.0f32; cd];
        for (c, a) in act.iter_mut().enumerate() {
            let s = &mut st.conv[(slot * cd + c) * dc1..(slot * cd + c + 1) * dc1];
            let w = &p.conv_w[c * dconv..(c + 1) * dconv];
            let xin = case.xbc[t * cd + c];
            let mut acc = p.conv_b[c];
            for k in 0..dc1 {
                acc += w[k] * s[k];
            }
            acc += w[dc1] * xin;
            for k in 0..dc1.saturating_sub(1) {
                s[k] = s[k + 1];
            }
            s[dc1 - 1] = xin;
            *a = silu32(acc);
        }
        for hp in 0..xd {
            let (h, g) = (hp / hd, hp / hd / hpg);
            let x = act[hp];
            let d = case.dt[t * nh + h];
            let da = (d * p.a[h]).exp();
            let s = &mut st.ssm[(slot * xd + hp) * ds..(slot * xd + hp + 1) * ds];
            let mut acc = 0.0f32;
            for n in 0..ds {
                let v = da * s[n] + d * act[b_off + g * ds + n] * x;
                s[n] = v;
                acc += act[c_off + g * ds + n] * v;
            }
            let out = if vllm {
                &mut y_d[i * xd..]
            } else {
                &mut y[t * xd..]
            };
            out[hp] = acc + p.d[h] * x;
        }
    }
    let mut run = emulate_prefill(m, dims, info, case, st, y, errs)?;
    if vllm {
        run.kernel_errors += merge_decode_outputs(&mut run.y, &y_d, info.real.decode as usize, xd);
    }
    Ok(run)
}

/// The vLLM path's decode outputs, `[Dp, nheads·headdim]` by decode row (rows `Dr .. Dp` are
/// padding rows' garbage), placed into the step-token output `y`: real decode row `i`'s
/// token is token `i` (decode tokens come first, one per row). Returns how many of those
/// rows of `y` were not the sentinel before (some other kernel wrote a decode token's
/// output), which the caller counts as kernel errors.
pub fn merge_decode_outputs(y: &mut [f32], y_d: &[f32], real_decode: usize, xd: usize) -> u32 {
    let mut conflicts = 0;
    if xd == 0 {
        return conflicts;
    }
    for (dst, src) in y.chunks_mut(xd).zip(y_d.chunks(xd)).take(real_decode) {
        if dst.iter().any(|x| x.to_bits() != SENTINEL_BITS) {
            conflicts += 1;
        }
        dst.copy_from_slice(src);
    }
    conflicts
}

/// The prefill kernels of [`emulate`], after the decode kernel.
fn emulate_prefill(
    m: &MetaBytes<'_>,
    dims: &RuntimeDims,
    info: &StepInfo,
    case: &MambaCase,
    mut st: States,
    mut y: Vec<f32>,
    mut errs: u32,
) -> Result<MambaRun> {
    let md = case.model;
    let (nh, hd, ds, cd) = (md.nheads, md.headdim, md.d_state, md.conv_dim());
    let xd = nh * hd;
    let (b_off, c_off, hpg) = (xd, xd + md.ngroups * ds, md.heads_per_group());
    let dconv = dims.conv_width();
    let dc1 = dconv - 1;
    let slots = state_slots(dims) as i64;
    let vllm = uses_vllm(dims);
    let p = &case.params;
    let tokens = info.padded.tokens as i64;
    let (dp, fp) = (info.padded.decode as usize, info.padded.prefill as usize);
    let chunks = info.mamba_chunks as usize;
    let cs = dims.chunk_size() as i32;
    if fp == 0 {
        return Ok(MambaRun {
            states: st,
            y,
            kernel_errors: errs,
        });
    }
    // The slot of prefill sequence f, and whether the kernels read its state (Megatron's
    // path: always, the engine zeroed a fresh slot; vLLM's: by `vllm_has_initial_state`).
    let prefill_slot = |f: usize| -> Result<i32> {
        if vllm {
            m.i32(Field::VllmStateIndicesPrefill, f)
        } else {
            m.i32(Field::MambaBatchIndicesPrefill, f)
        }
    };
    let has_init =
        |f: usize| -> Result<bool> { Ok(!vllm || m.u8(Field::VllmHasInitialState, f)? != 0) };

    let l = m.i32(Field::MambaCuSeqlens, fp)?;
    let off = if dp > 0 {
        m.i32(Field::MambaDeviceDecodePrefill, 0)?
    } else {
        0
    };
    if l < 0 || off < 0 || i64::from(off + l) > tokens {
        return Ok(MambaRun {
            states: st,
            y,
            kernel_errors: errs + 1,
        });
    }
    let (l, off) = (l as usize, off as usize);
    let mut act = vec![0.0f32; case.padded_tokens * cd];

    // mamba_conv_prefill: grid Tp; reads the conv states before they are updated.
    for k in 0..case.padded_tokens.min(l) {
        let f = m.i32(Field::MambaConvSeqIdx, k)?;
        let start = m.i32(Field::MambaConvSeqStart, k)?;
        let sidx = m.i32(Field::MambaSeqIdx, k)?;
        if f < 0 || f as usize >= fp || sidx != f || start < 0 || start as usize > k {
            errs += 1;
            continue;
        }
        let slot = prefill_slot(f as usize)?;
        if slot < 0 || i64::from(slot) >= slots {
            errs += 1;
            continue;
        }
        let init = has_init(f as usize)?;
        let (slot, start) = (slot as usize, start as i64);
        for c in 0..cd {
            let w = &p.conv_w[c * dconv..(c + 1) * dconv];
            let mut acc = p.conv_b[c];
            for (wi, &wv) in w.iter().enumerate() {
                let j = k as i64 - dc1 as i64 + wi as i64;
                let v = if j >= start {
                    case.xbc[(off + j as usize) * cd + c]
                } else if init {
                    st.conv[(slot * cd + c) * dc1 + dc1 - (start - j) as usize]
                } else {
                    0.0
                };
                acc += wv * v;
            }
            act[k * cd + c] = silu32(acc);
        }
    }

    // mamba_conv_state_update: grid Fp. The vLLM path has no padding check: a padded
    // sequence (length 0, no initial state) writes a zero conv state to the scratch slot.
    for f in 0..fp {
        let slot = prefill_slot(f)?;
        if slot < 0 && !vllm {
            continue;
        }
        let s0 = m.i32(Field::MambaCuSeqlens, f)?;
        let len = m.i32(Field::MambaCuSeqlens, f + 1)? - s0;
        let min_len = if vllm { 0 } else { 1 };
        if slot < 0
            || i64::from(slot) >= slots
            || s0 < 0
            || len < min_len
            || (off as i32 + s0 + len) as i64 > tokens
        {
            errs += 1;
            continue;
        }
        let init = has_init(f)?;
        let (slot, s0, len) = (slot as usize, s0 as usize, len as usize);
        for c in 0..cd {
            let s = &mut st.conv[(slot * cd + c) * dc1..(slot * cd + c + 1) * dc1];
            let nw: Vec<f32> = (0..dc1)
                .map(|i| {
                    let r = len as i64 - dc1 as i64 + i as i64;
                    if r >= 0 {
                        case.xbc[(off + s0 + r as usize) * cd + c]
                    } else if init {
                        s[len + i]
                    } else {
                        0.0
                    }
                })
                .collect();
            s.copy_from_slice(&nw);
        }
    }

    // mamba_chunk_state: grid (C, nheads).
    let mut acum = vec![0.0f32; case.padded_tokens * nh];
    let mut chunk_states = vec![0.0f32; chunks * xd * ds];
    let mut chunk_decay = vec![1.0f32; chunks * nh];
    let mut chunk_ok = vec![false; chunks];
    for c in 0..chunks {
        let s0 = m.i32(Field::MambaCuChunkSeqlens, c)?;
        let en = m.i32(Field::MambaCuChunkSeqlens, c + 1)?;
        let f = m.i32(Field::MambaSeqIdxForVarlen, c)?;
        if s0 < 0 || en < s0 || en as usize > l || en - s0 > cs {
            errs += 1;
            continue;
        }
        chunk_ok[c] = true;
        let (s0, en) = (s0 as usize, en as usize);
        for h in 0..nh {
            let mut cum = 0.0f32;
            for k in s0..en {
                if m.i32(Field::MambaSeqIdx, k)? != f {
                    errs += 1;
                }
                cum += case.dt[(off + k) * nh + h] * p.a[h];
                acum[k * nh + h] = cum;
            }
            chunk_decay[c * nh + h] = cum.exp();
            let total = if en > s0 {
                acum[(en - 1) * nh + h]
            } else {
                0.0
            };
            let g = h / hpg;
            for pn in 0..hd * ds {
                let (pp, n) = (pn / ds, pn % ds);
                let mut s = 0.0f32;
                for k in s0..en {
                    let a = &act[k * cd..(k + 1) * cd];
                    s += (total - acum[k * nh + h]).exp()
                        * case.dt[(off + k) * nh + h]
                        * a[b_off + g * ds + n]
                        * a[h * hd + pp];
                }
                chunk_states[(c * nh + h) * hd * ds + pn] = s;
            }
        }
    }

    // mamba_state_passing: grid (Fp, nheads).
    let mut chunk_init = vec![0.0f32; chunks * xd * ds];
    for f in 0..fp {
        let slot = prefill_slot(f)?;
        if slot < 0 && !vllm {
            continue;
        }
        let first = if f == 0 {
            0
        } else {
            m.i32(Field::MambaLastChunkIndices, f - 1)? + 1
        };
        let last = m.i32(Field::MambaLastChunkIndices, f)?;
        if slot < 0
            || i64::from(slot) >= slots
            || first < 0
            || last < first
            || last as usize >= chunks
        {
            errs += 1;
            continue;
        }
        let init = has_init(f)?;
        let (slot, first, last) = (slot as usize, first as usize, last as usize);
        for c in first..=last {
            if m.i32(Field::MambaSeqIdxForVarlen, c)? != f as i32 || !chunk_ok[c] {
                errs += 1;
            }
        }
        for h in 0..nh {
            for pn in 0..hd * ds {
                let si = (slot * nh + h) * hd * ds + pn;
                // The vLLM path writes the final state back with no padding check: a padded
                // sequence leaves a zero state in the scratch slot.
                let mut s = if init { st.ssm[si] } else { 0.0 };
                for c in first..=last {
                    let ci = (c * nh + h) * hd * ds + pn;
                    chunk_init[ci] = s;
                    s = chunk_decay[c * nh + h] * s + chunk_states[ci];
                }
                st.ssm[si] = s;
            }
        }
    }

    // mamba_chunk_scan: grid (C, nheads).
    for c in 0..chunks {
        if !chunk_ok[c] {
            continue;
        }
        let s0 = m.i32(Field::MambaCuChunkSeqlens, c)? as usize;
        let en = m.i32(Field::MambaCuChunkSeqlens, c + 1)? as usize;
        if en <= s0 {
            continue;
        }
        let f = m.i32(Field::MambaSeqIdxForVarlen, c)?;
        if f < 0
            || f as usize >= fp
            || (!vllm && m.i32(Field::MambaBatchIndicesPrefill, f as usize)? < 0)
        {
            errs += 1;
            continue;
        }
        for h in 0..nh {
            let g = h / hpg;
            for idx in 0..(en - s0) * hd {
                let (k, pp) = (s0 + idx / hd, idx % hd);
                let ak = &act[k * cd..(k + 1) * cd];
                let init = &chunk_init[(c * nh + h) * hd * ds + pp * ds..][..ds];
                let mut ch = 0.0f32;
                for n in 0..ds {
                    ch += ak[c_off + g * ds + n] * init[n];
                }
                let mut acc = acum[k * nh + h].exp() * ch;
                for s in s0..=k {
                    let as_ = &act[s * cd..(s + 1) * cd];
                    let mut cb = 0.0f32;
                    for n in 0..ds {
                        cb += ak[c_off + g * ds + n] * as_[b_off + g * ds + n];
                    }
                    acc += cb
                        * (acum[k * nh + h] - acum[s * nh + h]).exp()
                        * case.dt[(off + s) * nh + h]
                        * as_[h * hd + pp];
                }
                y[(off + k) * xd + h * hd + pp] = acc + p.d[h] * ak[h * hd + pp];
            }
        }
    }
    Ok(MambaRun {
        states: st,
        y,
        kernel_errors: errs,
    })
}

/// The kernels a layout's step launches, in launch order: [`KERNELS`]' six, or on a layout
/// with the `vllm` format the vLLM path's ([`KERNELS_VLLM`], with the shared chunk kernels).
pub fn kernel_names(dims: &RuntimeDims) -> [&'static str; 6] {
    if uses_vllm(dims) {
        [
            "mamba_decode_vllm",
            "mamba_conv_prefill_vllm",
            "mamba_conv_state_update_vllm",
            "mamba_chunk_state",
            "mamba_state_passing_vllm",
            "mamba_chunk_scan",
        ]
    } else {
        [
            "mamba_decode",
            "mamba_conv_prefill",
            "mamba_conv_state_update",
            "mamba_chunk_state",
            "mamba_state_passing",
            "mamba_chunk_scan",
        ]
    }
}

/// The CUDA C source of the kernels for one layout ([`KERNELS`], plus [`KERNELS_VLLM`] on a
/// layout with the `vllm` format).
pub fn cuda_source(layout: &Layout<MambaModel>) -> String {
    let m = layout.model;
    format!(
        "{}#define NHEADS {}\n#define HEADDIM {}\n#define DSTATE {}\n#define NGROUPS {}\n#define CONV_DIM {}\n{KERNELS}{}",
        cuda_header(&layout.dims),
        m.nheads,
        m.headdim,
        m.d_state,
        m.ngroups,
        m.conv_dim(),
        if uses_vllm(&layout.dims) {
            KERNELS_VLLM
        } else {
            ""
        }
    )
}

/// The kernels. Scalar arguments are bucket constants (`Dp`, `Fp`, `Tp`, `C`).
pub const KERNELS: &str = r#"
#define XDIM (NHEADS * HEADDIM)
#define B_OFF XDIM
#define C_OFF (XDIM + NGROUPS * DSTATE)
#define HPG (NHEADS / NGROUPS)
#define DC1 ((int)AL_CONV_WIDTH - 1)
static_assert((int)AL_CONV_WIDTH >= 2, "the consumer keeps a conv state of d_conv - 1 inputs");
static_assert(NHEADS % NGROUPS == 0, "heads split evenly over groups");

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// First prefill token in the step's token stream: the real decode tokens come first.
__device__ __forceinline__ int prefill_offset(const u8* meta, int dp) {
  return dp > 0 ? field_i32(meta, AL_OFF_MAMBA_DEVICE_DECODE_PREFILL)[0] : 0;
}

// Grid (Dp): decode entry i updates slot batch_indices_decode[i] with its one token
// (cu_query_seq_lengths[i]); padded entries (-1) read and write nothing.
extern "C" __global__ void mamba_decode(const u8* meta, int dp, int tokens, const float* xbc,
                                        const float* dt, const float* A, const float* Dskip,
                                        const float* conv_w, const float* conv_b,
                                        float* conv_state, float* ssm_state, float* y, int* err) {
  __shared__ float act[CONV_DIM];
  const int i = blockIdx.x;
  if (i >= dp) return;
  const i64 slot = AL_DECODE_INDEX_I64 ? field_i64(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[i]
                                    : (i64)field_i32(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[i];
  if (slot < 0) return;
  const int t = field_i32(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[i];
  if (slot >= (int)AL_MAX_REQUESTS || t < 0 || t >= tokens) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    float* s = conv_state + (slot * CONV_DIM + c) * DC1;
    const float* w = conv_w + c * (int)AL_CONV_WIDTH;
    const float xin = xbc[(i64)t * CONV_DIM + c];
    float acc = conv_b[c];
    for (int k = 0; k < DC1; ++k) acc += w[k] * s[k];
    acc += w[DC1] * xin;
    for (int k = 0; k + 1 < DC1; ++k) s[k] = s[k + 1];
    s[DC1 - 1] = xin;
    act[c] = silu(acc);
  }
  __syncthreads();
  for (int hp = threadIdx.x; hp < XDIM; hp += blockDim.x) {
    const int h = hp / HEADDIM, g = h / HPG;
    const float x = act[hp];
    const float d = dt[(i64)t * NHEADS + h];
    const float da = expf(d * A[h]);
    float* s = ssm_state + (slot * XDIM + hp) * DSTATE;
    float acc = 0.0f;
    for (int n = 0; n < DSTATE; ++n) {
      const float v = da * s[n] + d * act[B_OFF + g * DSTATE + n] * x;
      s[n] = v;
      acc += act[C_OFF + g * DSTATE + n] * v;
    }
    y[(i64)t * XDIM + hp] = acc + Dskip[h] * x;
  }
}

// Grid (Tp): prefill token k (prefill-relative) convolves its window, clipped at its
// sequence start conv_seq_start[k]; older inputs come from the conv state of the slot of
// sequence conv_seq_idx[k]. Tokens past cu_seqlens[Fp] are padding.
extern "C" __global__ void mamba_conv_prefill(const u8* meta, int dp, int fp, int tokens,
                                              const float* xbc, const float* conv_w,
                                              const float* conv_b, const float* conv_state,
                                              float* act, int* err) {
  const int k = blockIdx.x;
  if (k >= tokens) return;
  const int L = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS)[fp];
  if (k >= L) return;
  const int off = prefill_offset(meta, dp);
  const int f = field_i32(meta, AL_OFF_MAMBA_CONV_SEQ_IDX)[k];
  const int start = field_i32(meta, AL_OFF_MAMBA_CONV_SEQ_START)[k];
  const int sidx = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX)[k];
  if (L < 0 || off < 0 || off + L > tokens || f < 0 || f >= fp || sidx != f || start < 0 ||
      start > k) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  const int slot = field_i32(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f];
  if (slot < 0 || slot >= (int)AL_MAX_REQUESTS) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    const float* w = conv_w + c * (int)AL_CONV_WIDTH;
    float acc = conv_b[c];
    for (int wi = 0; wi < (int)AL_CONV_WIDTH; ++wi) {
      const int j = k - DC1 + wi;
      const float v = j >= start
                          ? xbc[(i64)(off + j) * CONV_DIM + c]
                          : conv_state[((i64)slot * CONV_DIM + c) * DC1 + DC1 - (start - j)];
      acc += w[wi] * v;
    }
    act[(i64)k * CONV_DIM + c] = silu(acc);
  }
}

// Grid (Fp): each real sequence leaves its last d_conv - 1 inputs in its slot's conv state.
extern "C" __global__ void mamba_conv_state_update(const u8* meta, int dp, int fp, int tokens,
                                                   const float* xbc, float* conv_state,
                                                   int* err) {
  const int f = blockIdx.x;
  if (f >= fp) return;
  const int slot = field_i32(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f];
  if (slot < 0) return;
  const i32* cu = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS);
  const int s0 = cu[f], len = cu[f + 1] - cu[f];
  const int off = prefill_offset(meta, dp);
  if (slot >= (int)AL_MAX_REQUESTS || s0 < 0 || len <= 0 || off + s0 + len > tokens) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    float* s = conv_state + ((i64)slot * CONV_DIM + c) * DC1;
    float nw[DC1];
    for (int i = 0; i < DC1; ++i) {
      const int r = len - DC1 + i;
      nw[i] = r >= 0 ? xbc[(i64)(off + s0 + r) * CONV_DIM + c] : s[len + i];
    }
    for (int i = 0; i < DC1; ++i) s[i] = nw[i];
  }
}

// Grid (C, NHEADS): chunk c's own state from a zero start, its decay, and the cumulative
// dt*A of its tokens. Chunks past the real ones are empty.
extern "C" __global__ void mamba_chunk_state(const u8* meta, int dp, int fp, int tokens,
                                             int chunks, const float* act, const float* dt,
                                             const float* A, float* acum, float* chunk_states,
                                             float* chunk_decay, int* err) {
  const int c = blockIdx.x, h = blockIdx.y;
  if (c >= chunks) return;
  const i32* cu = field_i32(meta, AL_OFF_MAMBA_CU_CHUNK_SEQLENS);
  const int s0 = cu[c], en = cu[c + 1];
  const int L = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS)[fp];
  const int off = prefill_offset(meta, dp);
  const int f = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN)[c];
  if (s0 < 0 || en < s0 || en > L || en - s0 > (int)AL_CHUNK_SIZE || off < 0 || off + L > tokens) {
    if (threadIdx.x == 0 && h == 0) atomicAdd(err, 1);
    return;
  }
  if (threadIdx.x == 0) {
    const i32* seq_idx = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX);
    float cum = 0.0f;
    for (int k = s0; k < en; ++k) {
      if (seq_idx[k] != f) atomicAdd(err, 1);
      cum += dt[(i64)(off + k) * NHEADS + h] * A[h];
      acum[(i64)k * NHEADS + h] = cum;
    }
    chunk_decay[c * NHEADS + h] = expf(cum);
  }
  __syncthreads();
  const float total = en > s0 ? acum[(i64)(en - 1) * NHEADS + h] : 0.0f;
  const int g = h / HPG;
  for (int pn = threadIdx.x; pn < HEADDIM * DSTATE; pn += blockDim.x) {
    const int p = pn / DSTATE, n = pn % DSTATE;
    float s = 0.0f;
    for (int k = s0; k < en; ++k) {
      const float* a = act + (i64)k * CONV_DIM;
      s += expf(total - acum[(i64)k * NHEADS + h]) * dt[(i64)(off + k) * NHEADS + h] *
           a[B_OFF + g * DSTATE + n] * a[h * HEADDIM + p];
    }
    chunk_states[((i64)c * NHEADS + h) * HEADDIM * DSTATE + pn] = s;
  }
}

// Grid (Fp, NHEADS): sequence f walks its chunks (after the previous sequence's last chunk,
// up to last_chunk_indices[f]) from its slot's state, records each chunk's incoming state,
// and writes the final state back to the slot. Padded sequences (slot -1) do nothing.
extern "C" __global__ void mamba_state_passing(const u8* meta, int fp, int chunks,
                                               const float* chunk_states,
                                               const float* chunk_decay, float* chunk_init,
                                               float* ssm_state, int* err) {
  const int f = blockIdx.x, h = blockIdx.y;
  if (f >= fp) return;
  const int slot = field_i32(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f];
  if (slot < 0) return;
  const i32* last = field_i32(meta, AL_OFF_MAMBA_LAST_CHUNK_INDICES);
  const int first = f == 0 ? 0 : last[f - 1] + 1;
  const int lc = last[f];
  if (slot >= (int)AL_MAX_REQUESTS || first < 0 || lc < first || lc >= chunks) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  if (threadIdx.x == 0) {
    const i32* seq = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN);
    for (int c = first; c <= lc; ++c)
      if (seq[c] != f) atomicAdd(err, 1);
  }
  for (int pn = threadIdx.x; pn < HEADDIM * DSTATE; pn += blockDim.x) {
    const i64 si = ((i64)slot * NHEADS + h) * HEADDIM * DSTATE + pn;
    float s = ssm_state[si];
    for (int c = first; c <= lc; ++c) {
      const i64 ci = ((i64)c * NHEADS + h) * HEADDIM * DSTATE + pn;
      chunk_init[ci] = s;
      s = chunk_decay[c * NHEADS + h] * s + chunk_states[ci];
    }
    ssm_state[si] = s;
  }
}

// Grid (C, NHEADS): the outputs of chunk c: the intra-chunk part in the quadratic form
// (C_k . B_s) * exp(acum_k - acum_s) * dt_s * x_s, plus the incoming state, plus D * x.
extern "C" __global__ void mamba_chunk_scan(const u8* meta, int dp, int fp, int tokens,
                                            int chunks, const float* act, const float* dt,
                                            const float* Dskip, const float* acum,
                                            const float* chunk_init, float* y, int* err) {
  const int c = blockIdx.x, h = blockIdx.y;
  if (c >= chunks) return;
  const i32* cu = field_i32(meta, AL_OFF_MAMBA_CU_CHUNK_SEQLENS);
  const int s0 = cu[c], en = cu[c + 1];
  const int L = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS)[fp];
  if (s0 < 0 || en < s0 || en > L || en - s0 > (int)AL_CHUNK_SIZE) return;  // counted by chunk_state
  if (en == s0) return;
  const int off = prefill_offset(meta, dp);
  const int f = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN)[c];
  // (The vLLM path has no padding check; a chunk with tokens belongs to a real sequence.)
  if (f < 0 || f >= fp || (!AL_VLLM && field_i32(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f] < 0)) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  const int g = h / HPG;
  for (int idx = threadIdx.x; idx < (en - s0) * HEADDIM; idx += blockDim.x) {
    const int k = s0 + idx / HEADDIM, p = idx % HEADDIM;
    const float* ak = act + (i64)k * CONV_DIM;
    const float* init = chunk_init + ((i64)c * NHEADS + h) * HEADDIM * DSTATE + p * DSTATE;
    float ch = 0.0f;
    for (int n = 0; n < DSTATE; ++n) ch += ak[C_OFF + g * DSTATE + n] * init[n];
    const float ak_cum = acum[(i64)k * NHEADS + h];
    float acc = expf(ak_cum) * ch;
    for (int s = s0; s <= k; ++s) {
      const float* as = act + (i64)s * CONV_DIM;
      float cb = 0.0f;
      for (int n = 0; n < DSTATE; ++n) cb += ak[C_OFF + g * DSTATE + n] * as[B_OFF + g * DSTATE + n];
      acc += cb * expf(ak_cum - acum[(i64)s * NHEADS + h]) * dt[(i64)(off + s) * NHEADS + h] *
             as[h * HEADDIM + p];
    }
    y[(i64)(off + k) * XDIM + h * HEADDIM + p] = acc + Dskip[h] * ak[h * HEADDIM + p];
  }
}
"#;

/// The vLLM path's kernels (layouts with the `vllm` format), after [`KERNELS`], whose
/// `mamba_chunk_state` and `mamba_chunk_scan` it shares. As vLLM's Mamba2 kernels do, they
/// take every state slot from `vllm_state_indices_decode` / `vllm_state_indices_prefill`
/// with no padding check and no range check: a padding row reads and writes the scratch
/// slot `R`, so the state pool has `R + 1` slots and compute-sanitizer's memcheck is what
/// shows that no index leaves it. A fresh sequence's states start from zero by
/// `vllm_has_initial_state` (the engine need not zero its slot). Decode row `i` takes the
/// input of token `i` (decode tokens come first, one per row: the example's Mamba layouts
/// have no speculative tokens) and writes its output to row
/// `i` of a separate decode output `y_d [Dp, XDIM]`: a padding row writes only its own row
/// there, never a token's output (docs/CONSUMER-CONTRACT.md, "Outputs of padding rows").
pub const KERNELS_VLLM: &str = r#"
__device__ __forceinline__ const u8* field_u8(const u8* meta, al_u32 off) { return meta + off; }

// Grid (Dp): decode row i, token i, slot vllm_state_indices_decode[i] (a padding row: the
// scratch slot R); the output goes to y_d row i.
extern "C" __global__ void mamba_decode_vllm(const u8* meta, int dp, int tokens, const float* xbc,
                                             const float* dt, const float* A, const float* Dskip,
                                             const float* conv_w, const float* conv_b,
                                             float* conv_state, float* ssm_state, float* y_d,
                                             int* err) {
  __shared__ float act[CONV_DIM];
  const int i = blockIdx.x;
  if (i >= dp) return;
  const i64 slot = field_i32(meta, AL_OFF_VLLM_STATE_INDICES_DECODE)[i];
  const int t = i;
  if (t >= tokens) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    float* s = conv_state + (slot * CONV_DIM + c) * DC1;
    const float* w = conv_w + c * (int)AL_CONV_WIDTH;
    const float xin = xbc[(i64)t * CONV_DIM + c];
    float acc = conv_b[c];
    for (int k = 0; k < DC1; ++k) acc += w[k] * s[k];
    acc += w[DC1] * xin;
    for (int k = 0; k + 1 < DC1; ++k) s[k] = s[k + 1];
    s[DC1 - 1] = xin;
    act[c] = silu(acc);
  }
  __syncthreads();
  for (int hp = threadIdx.x; hp < XDIM; hp += blockDim.x) {
    const int h = hp / HEADDIM, g = h / HPG;
    const float x = act[hp];
    const float d = dt[(i64)t * NHEADS + h];
    const float da = expf(d * A[h]);
    float* s = ssm_state + (slot * XDIM + hp) * DSTATE;
    float acc = 0.0f;
    for (int n = 0; n < DSTATE; ++n) {
      const float v = da * s[n] + d * act[B_OFF + g * DSTATE + n] * x;
      s[n] = v;
      acc += act[C_OFF + g * DSTATE + n] * v;
    }
    y_d[(i64)i * XDIM + hp] = acc + Dskip[h] * x;
  }
}

// Grid (Tp): as mamba_conv_prefill, with the slot from vllm_state_indices_prefill and the
// inputs before the sequence from its conv state only when it has an initial state.
extern "C" __global__ void mamba_conv_prefill_vllm(const u8* meta, int dp, int fp, int tokens,
                                                   const float* xbc, const float* conv_w,
                                                   const float* conv_b, const float* conv_state,
                                                   float* act, int* err) {
  const int k = blockIdx.x;
  if (k >= tokens) return;
  const int L = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS)[fp];
  if (k >= L) return;
  const int off = prefill_offset(meta, dp);
  const int f = field_i32(meta, AL_OFF_MAMBA_CONV_SEQ_IDX)[k];
  const int start = field_i32(meta, AL_OFF_MAMBA_CONV_SEQ_START)[k];
  const int sidx = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX)[k];
  if (L < 0 || off < 0 || off + L > tokens || f < 0 || f >= fp || sidx != f || start < 0 ||
      start > k) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  const i64 slot = field_i32(meta, AL_OFF_VLLM_STATE_INDICES_PREFILL)[f];
  const bool init = field_u8(meta, AL_OFF_VLLM_HAS_INITIAL_STATE)[f] != 0;
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    const float* w = conv_w + c * (int)AL_CONV_WIDTH;
    float acc = conv_b[c];
    for (int wi = 0; wi < (int)AL_CONV_WIDTH; ++wi) {
      const int j = k - DC1 + wi;
      const float v = j >= start ? xbc[(i64)(off + j) * CONV_DIM + c]
                      : init     ? conv_state[(slot * CONV_DIM + c) * DC1 + DC1 - (start - j)]
                                 : 0.0f;
      acc += w[wi] * v;
    }
    act[(i64)k * CONV_DIM + c] = silu(acc);
  }
}

// Grid (Fp): every sequence, padded ones included (no padding check), leaves its last
// d_conv - 1 inputs in its slot's conv state; a padded sequence (length 0, no initial
// state) leaves zeros in the scratch slot.
extern "C" __global__ void mamba_conv_state_update_vllm(const u8* meta, int dp, int fp,
                                                        int tokens, const float* xbc,
                                                        float* conv_state, int* err) {
  const int f = blockIdx.x;
  if (f >= fp) return;
  const i64 slot = field_i32(meta, AL_OFF_VLLM_STATE_INDICES_PREFILL)[f];
  const bool init = field_u8(meta, AL_OFF_VLLM_HAS_INITIAL_STATE)[f] != 0;
  const i32* cu = field_i32(meta, AL_OFF_MAMBA_CU_SEQLENS);
  const int s0 = cu[f], len = cu[f + 1] - cu[f];
  const int off = prefill_offset(meta, dp);
  if (s0 < 0 || len < 0 || off + s0 + len > tokens) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  for (int c = threadIdx.x; c < CONV_DIM; c += blockDim.x) {
    float* s = conv_state + (slot * CONV_DIM + c) * DC1;
    float nw[DC1];
    for (int i = 0; i < DC1; ++i) {
      const int r = len - DC1 + i;
      nw[i] = r >= 0 ? xbc[(i64)(off + s0 + r) * CONV_DIM + c] : init ? s[len + i] : 0.0f;
    }
    for (int i = 0; i < DC1; ++i) s[i] = nw[i];
  }
}

// Grid (Fp, NHEADS): as mamba_state_passing, from the slot's state only when the sequence
// has an initial state, and the final state written back with no padding check (a padded
// sequence's one empty chunk leaves a zero state in the scratch slot).
extern "C" __global__ void mamba_state_passing_vllm(const u8* meta, int fp, int chunks,
                                                    const float* chunk_states,
                                                    const float* chunk_decay, float* chunk_init,
                                                    float* ssm_state, int* err) {
  const int f = blockIdx.x, h = blockIdx.y;
  if (f >= fp) return;
  const i64 slot = field_i32(meta, AL_OFF_VLLM_STATE_INDICES_PREFILL)[f];
  const bool init = field_u8(meta, AL_OFF_VLLM_HAS_INITIAL_STATE)[f] != 0;
  const i32* last = field_i32(meta, AL_OFF_MAMBA_LAST_CHUNK_INDICES);
  const int first = f == 0 ? 0 : last[f - 1] + 1;
  const int lc = last[f];
  if (first < 0 || lc < first || lc >= chunks) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  if (threadIdx.x == 0) {
    const i32* seq = field_i32(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN);
    for (int c = first; c <= lc; ++c)
      if (seq[c] != f) atomicAdd(err, 1);
  }
  for (int pn = threadIdx.x; pn < HEADDIM * DSTATE; pn += blockDim.x) {
    const i64 si = (slot * NHEADS + h) * HEADDIM * DSTATE + pn;
    float s = init ? ssm_state[si] : 0.0f;
    for (int c = first; c <= lc; ++c) {
      const i64 ci = ((i64)c * NHEADS + h) * HEADDIM * DSTATE + pn;
      chunk_init[ci] = s;
      s = chunk_decay[c * NHEADS + h] * s + chunk_states[ci];
    }
    ssm_state[si] = s;
  }
}
"#;

/// Runs `args.batches` random steps over `layouts`, printing one line per batch, and returns
/// the summary (see [`crate::attention::run_batches`]).
pub fn run_batches(
    layouts: &[Layout<MambaModel>],
    args: RunArgs,
    exec: &mut dyn Executor,
    print: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let mut metas: Vec<HostMetadata<RuntimeDims>> = layouts
        .iter()
        .map(|l| HostMetadata::new(l.dims.clone()))
        .collect();
    let mut summary = Summary::default();
    print(&format!("mamba2 consumer on {}", exec.describe()));
    for l in layouts {
        print(&format!(
            "layout {}: R={} T={} chunk_size={} d_conv={} decode_indices={} buckets={} nheads={} headdim={} d_state={} ngroups={}",
            l.label,
            l.dims.max_requests(),
            l.dims.max_tokens(),
            l.dims.chunk_size(),
            l.dims.conv_width(),
            if l.dims.decode_index_i64() {
                "i64"
            } else {
                "i32"
            },
            l.dims.buckets().len(),
            l.model.nheads,
            l.model.headdim,
            l.model.d_state,
            l.model.ngroups
        ));
    }
    if layouts.is_empty() {
        return Err("no layouts to run".into());
    }
    for i in 0..args.batches {
        let li = i % layouts.len();
        let layout = &layouts[li];
        let seed = args.seed.wrapping_add(i as u64);
        let mut rng = Rng::new(seed);
        let kind = Kind::schedule(i);
        let batch = Batch::random(&layout.dims, kind, &mut rng);
        let info = *batch.fill(&mut metas[li])?;
        let paused = batch
            .rows
            .iter()
            .filter(|r| r.phase == Phase::Paused)
            .count();
        let case = MambaCase::new(layout, batch, &info, &mut rng);
        let run = exec.run(li, layout, metas[li].bytes(), &info, &case)?;
        let o = case.check(&run.states, &run.y);
        let report = BatchReport {
            index: i,
            seed,
            layout: layout.label,
            kind,
            info,
            paused,
            output: o.output,
            state: Some(o.state),
            tol: TOLERANCE,
            guard_violations: o.guard_violations,
            padding_writes: o.padding_writes,
            kernel_errors: run.kernel_errors,
        };
        print(&report.line());
        summary.add(&report);
    }
    print(&summary.lines("mamba2 consumer", TOLERANCE));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts;

    /// decay exp(dt·A) = 1/2 with dt = 1, A = −ln 2: h = 2, y = 3·2 + 0.5 = 6.5; then
    /// h = 1, y = 3.
    #[test]
    fn ssm_step_by_hand() {
        let mut h = [0.0];
        let a = -(2f64.ln());
        let y = ssm_step(&mut h, 1.0, a, &[2.0], &[3.0], 1.0, 0.5);
        assert!((h[0] - 2.0).abs() < 1e-12 && (y - 6.5).abs() < 1e-12);
        let y = ssm_step(&mut h, 1.0, a, &[2.0], &[3.0], 0.0, 0.5);
        assert!((h[0] - 1.0).abs() < 1e-12 && (y - 3.0).abs() < 1e-12);
    }

    /// Window [a, b, new] with weights [1, 10, 100] and bias 0.5; the state shifts.
    #[test]
    fn conv_step_by_hand() {
        let mut s = [2.0, 3.0];
        let out = conv_step(&mut s, &[1.0, 10.0, 100.0], 0.5, 4.0);
        assert_eq!(out, 0.5 + 2.0 + 30.0 + 400.0);
        assert_eq!(s, [3.0, 4.0]);
        assert!((silu64(0.0)).abs() < 1e-15);
        assert!((silu64(1.0) - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-15);
    }

    /// The CPU emulation of the six kernels, reading only the metadata, reproduces the
    /// sequential f64 recurrence on random batches of every layout, guards clean.
    #[test]
    fn emulation_matches_reference() {
        let layouts = layouts::mamba().unwrap();
        let mut lines = Vec::new();
        let s = run_batches(
            &layouts,
            RunArgs {
                batches: 36,
                seed: 3,
            },
            &mut CpuEmulation,
            &mut |l| lines.push(l.to_owned()),
        )
        .unwrap();
        let text = lines.join("\n");
        println!("{text}");
        assert_eq!(s.failed, 0, "{text}");
        assert!(s.graphed_padded >= 6 && s.eager >= 6, "{text}");
        assert!(s.output.max_rel < 1e-4 && s.state.max_rel < 1e-4, "{text}");
        assert!(lines.last().unwrap().ends_with("36 passed, 0 failed"));
    }

    /// Breaking the chunk metadata is caught (by the kernels' checks or the comparison).
    #[test]
    fn wrong_last_chunk_is_caught() {
        let layout = &layouts::mamba().unwrap()[0];
        let mut meta = HostMetadata::new(layout.dims.clone());
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let batch = Batch::random(&layout.dims, Kind::Prefill, &mut rng);
            let info = *batch.fill(&mut meta).unwrap();
            if info.real.prefill < 2 {
                continue;
            }
            let case = MambaCase::new(layout, batch, &info, &mut rng);
            let mut bytes = meta.bytes().to_vec();
            let off = layout.dims.field_offset(Field::MambaLastChunkIndices);
            let v = i32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap());
            bytes[off..off + 4].copy_from_slice(&(v + 1).to_ne_bytes());
            let run = CpuEmulation.run(0, layout, &bytes, &info, &case).unwrap();
            let o = case.check(&run.states, &run.y);
            assert!(
                run.kernel_errors > 0 || !o.output.within(TOLERANCE) || !o.state.within(TOLERANCE),
                "seed {seed}: {o:?}"
            );
            return;
        }
        panic!("no batch with two prefills");
    }

    fn vllm_layout() -> Layout<MambaModel> {
        layouts::mamba()
            .unwrap()
            .into_iter()
            .find(|l| uses_vllm(&l.dims))
            .unwrap()
    }

    /// The vLLM path (state slots from `vllm_state_indices_*`, no padding check, decode
    /// outputs by decode row) reproduces the f64 recurrence on every real row, leaves every
    /// slot no real row owns bit-identical, and its padding rows do write: the scratch
    /// slot changes on the steps that have padding rows (and only there), so the write-back
    /// really runs without a padding check and still touches no real row.
    #[test]
    fn the_vllm_path_puts_padding_rows_on_the_scratch_slot_and_real_rows_stay_exact() {
        let layout = vllm_layout();
        let dims = &layout.dims;
        assert_eq!(state_slots(dims), dims.max_requests() + 1);
        let r = dims.max_requests();
        let mut meta = HostMetadata::new(dims.clone());
        let (mut padded_steps, mut fresh_prefills) = (0, 0);
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let kind = Kind::schedule(seed as usize);
            let batch = Batch::random(dims, kind, &mut rng);
            let info = *batch.fill(&mut meta).unwrap();
            fresh_prefills += batch
                .rows
                .iter()
                .filter(|r| r.phase == Phase::Prefill && r.kv_off == 0)
                .count();
            let case = MambaCase::new(&layout, batch, &info, &mut rng);
            assert_eq!(case.states.conv.len(), (r + 1) * case.conv_len());
            let run = CpuEmulation
                .run(0, &layout, meta.bytes(), &info, &case)
                .unwrap();
            let o = case.check(&run.states, &run.y);
            assert_eq!(run.kernel_errors, 0, "seed {seed}");
            assert_eq!(
                (o.guard_violations, o.padding_writes),
                (0, 0),
                "seed {seed}: {o:?}"
            );
            assert!(
                o.output.within(1e-4) && o.state.within(1e-4),
                "seed {seed}: {o:?}"
            );
            let padding_rows =
                info.padded.decode > info.real.decode || info.padded.prefill > info.real.prefill;
            let scratch = |st: &States| {
                (
                    st.conv[r * case.conv_len()..].to_vec(),
                    st.ssm[r * case.ssm_len()..].to_vec(),
                )
            };
            assert_eq!(
                scratch(&run.states) != scratch(&case.states),
                padding_rows,
                "seed {seed}: the scratch slot changes exactly when the step has padding rows"
            );
            padded_steps += usize::from(padding_rows);
        }
        assert!(padded_steps >= 50, "{padded_steps} steps with padding rows");
        assert!(fresh_prefills >= 50, "{fresh_prefills} fresh prefills");
    }

    /// On the vLLM path a fresh prefill's slot holds a stale state: a kernel that read it
    /// (ignoring `vllm_has_initial_state`) would be caught by the comparison.
    #[test]
    fn ignoring_has_initial_state_is_caught() {
        let layout = vllm_layout();
        let mut meta = HostMetadata::new(layout.dims.clone());
        let off = layout.dims.field_offset(Field::VllmHasInitialState);
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let batch = Batch::random(&layout.dims, Kind::Prefill, &mut rng);
            let info = *batch.fill(&mut meta).unwrap();
            let case = MambaCase::new(&layout, batch, &info, &mut rng);
            let mut bytes = meta.bytes().to_vec();
            let Some(f) = (0..info.real.prefill as usize).find(|&f| bytes[off + f] == 0) else {
                continue;
            };
            bytes[off + f] = 1;
            let run = CpuEmulation.run(0, &layout, &bytes, &info, &case).unwrap();
            let o = case.check(&run.states, &run.y);
            assert!(
                !o.output.within(TOLERANCE) || !o.state.within(TOLERANCE),
                "seed {seed}: {o:?}"
            );
            return;
        }
        panic!("no batch with a fresh prefill");
    }

    /// A prefill kernel that wrote a decode token's output (the hazard of indexing padded
    /// decode rows' outputs by `cu_query_seq_lengths`) is counted when the decode outputs
    /// are placed.
    #[test]
    fn a_write_into_a_decode_tokens_output_is_counted() {
        let xd = 2;
        let mut y = vec![sentinel(); 4 * xd];
        let y_d = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(merge_decode_outputs(&mut y, &y_d, 2, xd), 0);
        assert_eq!(&y[..4], &[1.0, 2.0, 3.0, 4.0]);
        assert!(y[4..].iter().all(|x| x.to_bits() == SENTINEL_BITS));
        let mut y = vec![sentinel(); 4 * xd];
        y[3] = 0.5;
        assert_eq!(merge_decode_outputs(&mut y, &y_d, 2, xd), 1);
    }

    #[test]
    fn source_has_layout_constants() {
        let l = &layouts::mamba().unwrap()[2];
        let s = cuda_source(l);
        assert!(!s.contains("mamba_decode_vllm"));
        assert!(s.contains("constexpr bool AL_DECODE_INDEX_I64 = false;"));
        assert!(s.contains("constexpr al_u32 AL_CONV_WIDTH = 3u;"));
        assert!(s.contains("constexpr al_u32 AL_CHUNK_SIZE = 16u;"));
        for k in [
            "mamba_decode",
            "mamba_conv_prefill",
            "mamba_conv_state_update",
            "mamba_chunk_state",
            "mamba_state_passing",
            "mamba_chunk_scan",
        ] {
            assert!(s.contains(k), "{k}");
        }
        let v = vllm_layout();
        let s = cuda_source(&v);
        assert!(s.contains("constexpr bool AL_VLLM = true;"));
        for k in kernel_names(&v.dims) {
            assert!(s.contains(&format!("void {k}(")), "{k}");
        }
    }
}
