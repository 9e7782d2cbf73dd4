//! Paged attention over the metadata: KV append through the token slot arrays, then
//! attention through `cu_query_seq_lengths`, `cu_kv_seq_lengths` and the block table, for
//! decode and varlen prefill in one launch (causal within each request).
//!
//! On a layout with both kernel formats (`formats = ["flashinfer", "vllm"]`) the second
//! path runs instead: KV append through vLLM's `slot_mapping` (padding tokens, `-1`, write
//! nothing) and attention through FlashInfer's CSR arrays (`qo_indptr`,
//! `paged_kv_indptr`, `paged_kv_indices`, `paged_kv_last_page_len`). The block-table path
//! loads block ids a whole tile ([`TILE_BLOCKS`]) at a time as tiling kernels do, so on a
//! full last row it reads the block table's guard.
//!
//! The KV cache is `[num_blocks, block_size, heads, head_dim]` f32; queries, new keys and
//! values and the output are `[Tp, heads, head_dim]` in step-token order (FlashAttention
//! varlen's `[total_q, heads, d]`). Before a step every cache element holds a NaN sentinel
//! except the history (positions `< kv_off`) of every row, paused rows included; so a
//! kernel that reads a slot it should not gets a NaN into its output, and one that writes
//! a slot it should not changes a bit the guard check compares.

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
use crate::layouts::{AttnModel, Layout};
use crate::meta::{MetaBytes, cuda_header};
use crate::rng::Rng;
use crate::{Result, RunArgs};

/// Tolerance on the row-wise relative error of the f32 output against the f64 reference.
pub const TOLERANCE: f64 = 1e-3;

/// Bits of the sentinel in untouched cache slots and output rows: a quiet NaN with a payload.
pub const SENTINEL_BITS: u32 = 0x7FC0_A11E;

/// Threads per block of the attention kernel.
pub const ATTENTION_THREADS: u32 = 64;

/// Block ids per tile of the block-table path: it reads the last id of the tile holding a
/// row's last needed column without a mask, which past a row's end is the next row's or,
/// for the table's last row, the guard's (at most 15 entries past any row: inside the
/// 32-entry guard).
pub const TILE_BLOCKS: usize = 16;

/// Whether a layout runs the second path (slot mapping and FlashInfer CSR arrays).
pub fn uses_formats(dims: &RuntimeDims) -> bool {
    dims.facts().flashinfer && dims.facts().vllm
}

/// The sentinel value.
pub fn sentinel() -> f32 {
    f32::from_bits(SENTINEL_BITS)
}

/// A paged KV cache, `[num_blocks, block_size, heads, head_dim]` each.
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// One step's data: the batch, the random tensors and the cache before the step.
#[derive(Debug, Clone)]
pub struct AttnCase {
    /// Model dimensions.
    pub model: AttnModel,
    /// `B`.
    pub block_size: usize,
    /// KV pool size, dummy block included.
    pub num_blocks: usize,
    /// The dummy block.
    pub dummy: usize,
    /// The rows.
    pub batch: Batch,
    /// Padded token count `Tp` (length of the token-major tensors).
    pub padded_tokens: usize,
    /// Real tokens.
    pub real_tokens: usize,
    /// Queries `[Tp, H, D]` (padding tokens random too).
    pub q: Vec<f32>,
    /// New keys `[Tp, H, D]`.
    pub k_new: Vec<f32>,
    /// New values `[Tp, H, D]`.
    pub v_new: Vec<f32>,
    /// The cache before the step.
    pub cache: Cache,
    /// Per row of `batch.rows`: keys of positions `< kv_off`, `[kv_off, H, D]`.
    pub hist_k: Vec<Vec<f32>>,
    /// Per row: values of positions `< kv_off`.
    pub hist_v: Vec<Vec<f32>>,
}

impl AttnCase {
    /// Random tensors for `batch` (already filled into metadata with shapes `info`), and the
    /// cache with every row's history written through its own block list.
    pub fn new(layout: &Layout<AttnModel>, batch: Batch, info: &StepInfo, rng: &mut Rng) -> Self {
        let m = layout.model;
        let d = &layout.dims;
        let row = m.heads * m.head_dim;
        let b = d.block_size();
        let num_blocks = d.geometry().facts.kv_pool_blocks;
        let padded_tokens = info.padded.tokens as usize;
        let mut cache = Cache {
            k: vec![sentinel(); num_blocks * b * row],
            v: vec![sentinel(); num_blocks * b * row],
        };
        let mut hist_k = Vec::new();
        let mut hist_v = Vec::new();
        for r in &batch.rows {
            let n = r.kv_off as usize;
            let hk = rng.fill(n * row, -1.0, 1.0);
            let hv = rng.fill(n * row, -1.0, 1.0);
            for pos in 0..n {
                let slot = r.blocks[pos / b] as usize * b + pos % b;
                cache.k[slot * row..(slot + 1) * row]
                    .copy_from_slice(&hk[pos * row..(pos + 1) * row]);
                cache.v[slot * row..(slot + 1) * row]
                    .copy_from_slice(&hv[pos * row..(pos + 1) * row]);
            }
            hist_k.push(hk);
            hist_v.push(hv);
        }
        Self {
            model: m,
            block_size: b,
            num_blocks,
            dummy: d.dummy_block() as usize,
            real_tokens: batch.real_tokens(),
            batch,
            padded_tokens,
            q: rng.fill(padded_tokens * row, -1.0, 1.0),
            k_new: rng.fill(padded_tokens * row, -1.0, 1.0),
            v_new: rng.fill(padded_tokens * row, -1.0, 1.0),
            cache,
            hist_k,
            hist_v,
        }
    }

    fn row(&self) -> usize {
        self.model.heads * self.model.head_dim
    }

    /// `1 / sqrt(head_dim)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.model.head_dim as f32).sqrt()
    }

    /// Dense causal attention in f64 for every real token, `[real_tokens, H, D]`, from the
    /// rows' own history and new tensors: no metadata, no block table.
    pub fn reference(&self) -> Vec<f64> {
        let (h_n, dim) = (self.model.heads, self.model.head_dim);
        let row = self.row();
        let scale = 1.0 / (dim as f64).sqrt();
        let mut out = vec![0.0f64; self.real_tokens * row];
        let rows: Vec<usize> = (0..self.batch.rows.len())
            .filter(|&i| self.batch.rows[i].phase != Phase::Paused)
            .collect();
        for (act, &ri) in self.batch.active().iter().zip(&rows) {
            let r = act.row;
            let kv = r.kv_off as usize;
            let len = kv + r.q as usize;
            let key = |pos: usize, h: usize, x: usize, v: bool| -> f64 {
                let (hist, new) = if v {
                    (&self.hist_v[ri], &self.v_new)
                } else {
                    (&self.hist_k[ri], &self.k_new)
                };
                f64::from(if pos < kv {
                    hist[pos * row + h * dim + x]
                } else {
                    new[(act.t0 + pos - kv) * row + h * dim + x]
                })
            };
            for j in 0..r.q as usize {
                let t = act.t0 + j;
                let n = kv + j + 1;
                debug_assert!(n <= len);
                for h in 0..h_n {
                    let qv = &self.q[t * row + h * dim..t * row + (h + 1) * dim];
                    let s: Vec<f64> = (0..n)
                        .map(|p| {
                            (0..dim)
                                .map(|x| f64::from(qv[x]) * key(p, h, x, false))
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for x in 0..dim {
                        out[t * row + h * dim + x] =
                            (0..n).map(|p| w[p] * key(p, h, x, true)).sum::<f64>() / sum;
                    }
                }
            }
        }
        out
    }

    /// The cache after a correct step: the cache before, with each real token's K/V at
    /// `blocks[pos / B]`, `pos % B` of its own row. (The dummy block is not predicted.)
    pub fn expected_cache(&self) -> Cache {
        let row = self.row();
        let b = self.block_size;
        let mut c = self.cache.clone();
        for act in self.batch.active() {
            let r = act.row;
            for j in 0..r.q as usize {
                let pos = r.kv_off as usize + j;
                let slot = r.blocks[pos / b] as usize * b + pos % b;
                let t = act.t0 + j;
                c.k[slot * row..(slot + 1) * row]
                    .copy_from_slice(&self.k_new[t * row..(t + 1) * row]);
                c.v[slot * row..(slot + 1) * row]
                    .copy_from_slice(&self.v_new[t * row..(t + 1) * row]);
            }
        }
        c
    }

    /// Compares a step's results with the reference and the guards.
    pub fn check(&self, after: &Cache, out: &[f32]) -> Outcome {
        let row = self.row();
        let dim = self.model.head_dim;
        let mut o = Outcome::default();
        // Guard: every cache element outside the dummy block is exactly as expected.
        let want = self.expected_cache();
        let dummy = self.dummy * self.block_size * row..(self.dummy + 1) * self.block_size * row;
        if after.k.len() != want.k.len() || after.v.len() != want.v.len() {
            o.guard_violations = usize::MAX;
        } else {
            for (i, ((gk, wk), (gv, wv))) in after
                .k
                .iter()
                .zip(&want.k)
                .zip(after.v.iter().zip(&want.v))
                .enumerate()
            {
                if dummy.contains(&i) {
                    continue;
                }
                o.guard_violations += usize::from(gk.to_bits() != wk.to_bits());
                o.guard_violations += usize::from(gv.to_bits() != wv.to_bits());
            }
        }
        // Output: real rows against the reference; padding rows must keep the sentinel.
        let reference = self.reference();
        if out.len() != self.padded_tokens * row {
            o.output.nonfinite += 1;
            o.output.max_rel = f64::INFINITY;
            return o;
        }
        for t in 0..self.padded_tokens {
            for h in 0..self.model.heads {
                let r = t * row + h * dim..t * row + (h + 1) * dim;
                if t < self.real_tokens {
                    o.output.add_row(&out[r.clone()], &reference[r]);
                } else if out[r].iter().any(|x| x.to_bits() != SENTINEL_BITS) {
                    o.padding_writes += 1;
                }
            }
        }
        o
    }
}

/// What [`AttnCase::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    /// Output errors of the real tokens.
    pub output: Errors,
    /// Cache elements outside the dummy block that differ from the expected cache.
    pub guard_violations: usize,
    /// Output rows of padding tokens that were written.
    pub padding_writes: usize,
}

/// What a step execution returns.
#[derive(Debug, Clone)]
pub struct StepRun {
    /// The cache after the step.
    pub cache: Cache,
    /// The output `[Tp, H, D]` (initialised to the sentinel before the step).
    pub out: Vec<f32>,
    /// Inconsistencies the kernels counted.
    pub kernel_errors: u32,
}

/// Something that runs the two kernels of a step: the CPU emulation or the GPU.
pub trait Executor {
    /// What it is, for the first line of a run.
    fn describe(&self) -> String;
    /// Runs KV append and attention for one step. `layout_index` identifies the layout
    /// (executors cache per-layout state such as compiled modules); `meta` is the whole
    /// coalesced buffer.
    fn run(
        &mut self,
        layout_index: usize,
        layout: &Layout<AttnModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &AttnCase,
    ) -> Result<StepRun>;
}

/// The kernels' index math on the CPU, in f32, reading the metadata bytes by offset as the
/// kernels do (one loop nest per kernel: grid, then threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuEmulation;

impl Executor for CpuEmulation {
    fn describe(&self) -> String {
        "CPU emulation of the kernels (f32)".to_owned()
    }

    fn run(
        &mut self,
        _layout_index: usize,
        layout: &Layout<AttnModel>,
        meta: &[u8],
        info: &StepInfo,
        case: &AttnCase,
    ) -> Result<StepRun> {
        let mut cache = case.cache.clone();
        let mut out = vec![sentinel(); case.q.len()];
        let m = MetaBytes::new(meta, &layout.dims);
        let errs = if uses_formats(&layout.dims) {
            emulate_kv_append_slots(&m, info, case, &mut cache)?
                + emulate_attention_csr(&m, &layout.dims, info, case, &cache, &mut out)?
        } else {
            emulate_kv_append(&m, &layout.dims, info, case, &mut cache)?
                + emulate_attention(&m, &layout.dims, info, case, &cache, &mut out)?
        };
        Ok(StepRun {
            cache,
            out,
            kernel_errors: errs,
        })
    }
}

/// `kv_append` on the CPU: token `t < Tp` writes its K/V at
/// `(token_to_block_idx[t], token_to_local_position_within_kv_block[t])`.
pub fn emulate_kv_append(
    m: &MetaBytes<'_>,
    dims: &RuntimeDims,
    info: &StepInfo,
    case: &AttnCase,
    cache: &mut Cache,
) -> Result<u32> {
    let row = case.model.heads * case.model.head_dim;
    let b = dims.block_size() as i64;
    let mut errs = 0;
    for t in 0..info.padded.tokens as usize {
        let blk = m.i64(Field::TokenToBlockIdx, t)?;
        let loc = i64::from(m.i32(Field::TokenToLocalPositionWithinKvBlock, t)?);
        if blk < 0 || blk >= case.num_blocks as i64 || loc < 0 || loc >= b {
            errs += 1;
            continue;
        }
        let slot = (blk * b + loc) as usize;
        cache.k[slot * row..(slot + 1) * row].copy_from_slice(&case.k_new[t * row..(t + 1) * row]);
        cache.v[slot * row..(slot + 1) * row].copy_from_slice(&case.v_new[t * row..(t + 1) * row]);
    }
    Ok(errs)
}

/// `paged_attention` on the CPU: one "block" per (padded request `a`, head, query `j`).
pub fn emulate_attention(
    m: &MetaBytes<'_>,
    dims: &RuntimeDims,
    info: &StepInfo,
    case: &AttnCase,
    cache: &Cache,
    out: &mut [f32],
) -> Result<u32> {
    let heads = case.model.heads;
    let b = dims.block_size();
    let nkv = dims.block_table_width();
    let tokens = info.padded.tokens as i64;
    let max_k = info.max_seqlen_k as i64;
    let mut errs = 0;
    for a in 0..info.padded.requests() as usize {
        let q0 = m.i32(Field::MhaCuQuerySeqLengths, a)?;
        let qlen = m.i32(Field::MhaCuQuerySeqLengths, a + 1)? - q0;
        let kvlen = m.i32(Field::MhaCuKvSeqLengths, a + 1)? - m.i32(Field::MhaCuKvSeqLengths, a)?;
        for h in 0..heads {
            for j in 0..info.max_seqlen_q as i32 {
                if j >= qlen {
                    continue;
                }
                let n = i64::from(kvlen - qlen + j + 1);
                let t = i64::from(q0 + j);
                if n <= 0 || n > max_k || n > (nkv * b) as i64 || t < 0 || t >= tokens {
                    errs += 1;
                    continue;
                }
                let (n, t) = (n as usize, t as usize);
                // A tiled load: the last id of the tile holding the last needed column.
                let tile_end = ((n - 1) / b / TILE_BLOCKS + 1) * TILE_BLOCKS - 1;
                let id = m.i32(Field::MhaBlockTable, a * nkv + tile_end)?;
                if id < 0 || id as usize >= case.num_blocks {
                    errs += 1;
                }
                let mut blocks = Vec::with_capacity(n.div_ceil(b));
                for i in 0..n.div_ceil(b) {
                    let blk = m.i32(Field::MhaBlockTable, a * nkv + i)?;
                    blocks.push(
                        (blk >= 0 && (blk as usize) < case.num_blocks).then_some(blk as usize),
                    );
                }
                errs += attend(case, cache, t, h, n, &blocks, out);
            }
        }
    }
    Ok(errs)
}

/// One query row `t` of head `h` over its first `n` keys, whose blocks are `blocks` (None:
/// an id out of the pool, counted as an error per key): softmax in f32 as the kernels do.
fn attend(
    case: &AttnCase,
    cache: &Cache,
    t: usize,
    h: usize,
    n: usize,
    blocks: &[Option<usize>],
    out: &mut [f32],
) -> u32 {
    let (heads, dim) = (case.model.heads, case.model.head_dim);
    let row = heads * dim;
    let b = case.block_size;
    let scale = case.scale();
    let mut errs = 0;
    let qv = &case.q[t * row + h * dim..t * row + (h + 1) * dim];
    let mut p = vec![0.0f32; n];
    for (i, pi) in p.iter_mut().enumerate() {
        let Some(blk) = blocks[i / b] else {
            errs += 1;
            continue;
        };
        let at = (blk * b + i % b) * row + h * dim;
        let mut s = 0.0f32;
        for x in 0..dim {
            s += qv[x] * cache.k[at + x];
        }
        *pi = s * scale;
    }
    let mut mx = p[0];
    for &x in &p[1..] {
        mx = mx.max(x);
    }
    for x in &mut p {
        *x = (*x - mx).exp();
    }
    let mut sum = 0.0f32;
    for &x in &p {
        sum += x;
    }
    for x in 0..dim {
        let mut acc = 0.0f32;
        for (i, &pi) in p.iter().enumerate() {
            if let Some(blk) = blocks[i / b] {
                acc += pi * cache.v[(blk * b + i % b) * row + h * dim + x];
            }
        }
        out[t * row + h * dim + x] = acc / sum;
    }
    errs
}

/// `kv_append_slots` on the CPU: token `t < Tp` writes its K/V at slot
/// `vllm_slot_mapping[t]` (`block · B + offset`); a padding token (`-1`) writes nothing.
pub fn emulate_kv_append_slots(
    m: &MetaBytes<'_>,
    info: &StepInfo,
    case: &AttnCase,
    cache: &mut Cache,
) -> Result<u32> {
    let row = case.model.heads * case.model.head_dim;
    let slots = (case.num_blocks * case.block_size) as i64;
    let mut errs = 0;
    for t in 0..info.padded.tokens as usize {
        let slot = m.i64(Field::VllmSlotMapping, t)?;
        if slot == -1 {
            continue;
        }
        if slot < 0 || slot >= slots {
            errs += 1;
            continue;
        }
        let slot = slot as usize;
        cache.k[slot * row..(slot + 1) * row].copy_from_slice(&case.k_new[t * row..(t + 1) * row]);
        cache.v[slot * row..(slot + 1) * row].copy_from_slice(&case.v_new[t * row..(t + 1) * row]);
    }
    Ok(errs)
}

/// `paged_attention_csr` on the CPU: FlashInfer's arrays instead of the block table and the
/// KV lengths (`kv_len = (pages − 1)·B + last_page_len`).
pub fn emulate_attention_csr(
    m: &MetaBytes<'_>,
    dims: &RuntimeDims,
    info: &StepInfo,
    case: &AttnCase,
    cache: &Cache,
    out: &mut [f32],
) -> Result<u32> {
    let b = dims.block_size() as i64;
    let nkv = dims.block_table_width() as i64;
    let tokens = info.padded.tokens as i64;
    let max_k = info.max_seqlen_k as i64;
    let mut errs = 0;
    for a in 0..info.padded.requests() as usize {
        // FlashInfer's qo_indptr is Megatron's cumulative query lengths.
        let q0 = i64::from(m.i32(Field::MhaCuQuerySeqLengths, a)?);
        let qlen = i64::from(m.i32(Field::MhaCuQuerySeqLengths, a + 1)?) - q0;
        let first = i64::from(m.i32(Field::FlashinferPagedKvIndptr, a)?);
        let pages = i64::from(m.i32(Field::FlashinferPagedKvIndptr, a + 1)?) - first;
        let last = i64::from(m.i32(Field::FlashinferPagedKvLastPageLen, a)?);
        let kvlen = if pages > 0 { (pages - 1) * b + last } else { 0 };
        for h in 0..case.model.heads {
            for j in 0..i64::from(info.max_seqlen_q) {
                if j >= qlen {
                    continue;
                }
                let n = kvlen - qlen + j + 1;
                let t = q0 + j;
                if n <= 0 || n > max_k || n > nkv * b || t < 0 || t >= tokens || first < 0 {
                    errs += 1;
                    continue;
                }
                let (n, t) = (n as usize, t as usize);
                let mut blocks = Vec::with_capacity(n.div_ceil(b as usize));
                for i in 0..n.div_ceil(b as usize) {
                    let blk = m.i32(Field::FlashinferPagedKvIndices, first as usize + i)?;
                    blocks.push(
                        (blk >= 0 && (blk as usize) < case.num_blocks).then_some(blk as usize),
                    );
                }
                errs += attend(case, cache, t, h, n, &blocks, out);
            }
        }
    }
    Ok(errs)
}

/// The CUDA C source of the two kernels for one layout: the generated header (field
/// offsets, capacities), the model dims, then `kv_append` and `paged_attention`.
pub fn cuda_source(layout: &Layout<AttnModel>) -> String {
    format!(
        "{}#define HEADS {}\n#define HEAD_DIM {}\n#define TILE_BLOCKS {TILE_BLOCKS}\n{KERNELS}",
        cuda_header(&layout.dims),
        layout.model.heads,
        layout.model.head_dim
    )
}

/// The kernels. Scalar arguments are bucket constants (padded shapes, `max_seqlen_*` of a
/// graphed step), so the launches could be captured in a CUDA graph per bucket.
pub const KERNELS: &str = r#"
// Grid (Tp, HEADS), any block size: token t writes its new K/V into its slot. Padding tokens
// carry the dummy block and local position 0, so they all write there.
extern "C" __global__ void kv_append(const u8* meta, int tokens, const float* k_new,
                                     const float* v_new, float* k_cache, float* v_cache,
                                     int* err) {
  const int t = blockIdx.x, h = blockIdx.y;
  if (t >= tokens) return;
  const i64 blk = field_i64(meta, AL_OFF_TOKEN_TO_BLOCK_IDX)[t];
  const i32 loc = field_i32(meta, AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK)[t];
  if (blk < 0 || blk >= (int)AL_KV_POOL_BLOCKS || loc < 0 || loc >= (int)AL_BLOCK_SIZE) {
    if (threadIdx.x == 0 && h == 0) atomicAdd(err, 1);
    return;
  }
  const i64 dst = ((blk * (int)AL_BLOCK_SIZE + loc) * HEADS + h) * HEAD_DIM;
  const i64 src = ((i64)t * HEADS + h) * HEAD_DIM;
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    k_cache[dst + d] = k_new[src + d];
    v_cache[dst + d] = v_new[src + d];
  }
}

// One query (token t, head h) over its first n keys, whose blocks are blocks[0 ..
// ceil(n / B)); p: n floats of shared memory. Every thread of the block calls it.
__device__ void attend_row(const i32* blocks, int n, int t, int h, float scale, const float* q,
                           const float* k_cache, const float* v_cache, float* out, int* err,
                           float* p) {
  const float* qv = q + ((i64)t * HEADS + h) * HEAD_DIM;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int blk = blocks[i / (int)AL_BLOCK_SIZE];
    if (blk < 0 || blk >= (int)AL_KV_POOL_BLOCKS) {
      atomicAdd(err, 1);
      p[i] = 0.0f;
      continue;
    }
    const float* kr = k_cache + (((i64)blk * (int)AL_BLOCK_SIZE + i % (int)AL_BLOCK_SIZE) * HEADS + h) * HEAD_DIM;
    float s = 0.0f;
    for (int d = 0; d < HEAD_DIM; ++d) s += qv[d] * kr[d];
    p[i] = s * scale;
  }
  __syncthreads();
  float m = p[0];
  for (int i = 1; i < n; ++i) m = fmaxf(m, p[i]);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) p[i] = expf(p[i] - m);
  __syncthreads();
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += p[i];
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int blk = blocks[i / (int)AL_BLOCK_SIZE];
      if (blk < 0 || blk >= (int)AL_KV_POOL_BLOCKS) continue;
      acc += p[i] * v_cache[(((i64)blk * (int)AL_BLOCK_SIZE + i % (int)AL_BLOCK_SIZE) * HEADS + h) * HEAD_DIM + d];
    }
    out[((i64)t * HEADS + h) * HEAD_DIM + d] = acc / sum;
  }
}

// Grid (Np, HEADS, max_seqlen_q), dynamic shared memory max_seqlen_k floats: query j of padded
// request a attends to its request's keys at positions <= kv_off + j, found through the block
// table. Everything comes from cu_query_seq_lengths, cu_kv_seq_lengths and the block table.
// Like a tiling kernel it loads the block ids of a whole tile of TILE_BLOCKS columns without a
// mask: the tile holding the row's last column may run past it (into the next row, or past the
// last row into the block table's guard).
extern "C" __global__ void paged_attention(const u8* meta, int requests, int tokens,
                                           int max_seqlen_k, float scale, const float* q,
                                           const float* k_cache, const float* v_cache,
                                           float* out, int* err) {
  extern __shared__ float p[];
  const int a = blockIdx.x, h = blockIdx.y, j = blockIdx.z;
  if (a >= requests) return;
  const i32* cu_q = field_i32(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS);
  const i32* cu_k = field_i32(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS);
  const i32* table = field_i32(meta, AL_OFF_MHA_BLOCK_TABLE) + (i64)a * (int)AL_BLOCK_TABLE_WIDTH;
  const int q0 = cu_q[a];
  const int qlen = cu_q[a + 1] - q0;
  if (j >= qlen) return;  // padded requests have qlen == 0 and do nothing
  const int kvlen = cu_k[a + 1] - cu_k[a];
  const int n = kvlen - qlen + j + 1;  // causal: kv_off + j + 1 keys
  const int t = q0 + j;
  if (n <= 0 || n > max_seqlen_k || n > (int)AL_BLOCK_TABLE_WIDTH * (int)AL_BLOCK_SIZE || t < 0 || t >= tokens) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  if (threadIdx.x == 0) {
    // The unmasked tile load: the last id of the tile holding the last needed column.
    const int tile_end = ((n - 1) / (int)AL_BLOCK_SIZE / TILE_BLOCKS + 1) * TILE_BLOCKS - 1;
    const i32 id = table[tile_end];
    if (id < 0 || id >= (int)AL_KV_POOL_BLOCKS) atomicAdd(err, 1);
  }
  attend_row(table, n, t, h, scale, q, k_cache, v_cache, out, err, p);
}

// Grid (Tp, HEADS), any block size: token t writes its new K/V at vLLM's slot mapping,
// block * B + offset; padding tokens carry -1 and write nothing.
extern "C" __global__ void kv_append_slots(const u8* meta, int tokens, const float* k_new,
                                           const float* v_new, float* k_cache, float* v_cache,
                                           int* err) {
  const int t = blockIdx.x, h = blockIdx.y;
  if (t >= tokens) return;
  const i64 slot = field_i64(meta, AL_OFF_VLLM_SLOT_MAPPING)[t];
  if (slot == -1) return;
  if (slot < 0 || slot >= (i64)AL_KV_POOL_BLOCKS * (int)AL_BLOCK_SIZE) {
    if (threadIdx.x == 0 && h == 0) atomicAdd(err, 1);
    return;
  }
  const i64 dst = (slot * HEADS + h) * HEAD_DIM;
  const i64 src = ((i64)t * HEADS + h) * HEAD_DIM;
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    k_cache[dst + d] = k_new[src + d];
    v_cache[dst + d] = v_new[src + d];
  }
}

// Grid (Np, HEADS, max_seqlen_q), as paged_attention, through FlashInfer's CSR arrays:
// qo_indptr (Megatron's cu_query_seq_lengths), paged_kv_indptr, paged_kv_indices and
// paged_kv_last_page_len (kv_len = (pages - 1) * B + last_page_len).
extern "C" __global__ void paged_attention_csr(const u8* meta, int requests, int tokens,
                                               int max_seqlen_k, float scale, const float* q,
                                               const float* k_cache, const float* v_cache,
                                               float* out, int* err) {
  extern __shared__ float p[];
  const int a = blockIdx.x, h = blockIdx.y, j = blockIdx.z;
  if (a >= requests) return;
  const i32* qo = field_i32(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS);
  const i32* indptr = field_i32(meta, AL_OFF_FLASHINFER_PAGED_KV_INDPTR);
  const i32* indices = field_i32(meta, AL_OFF_FLASHINFER_PAGED_KV_INDICES);
  const i32* last = field_i32(meta, AL_OFF_FLASHINFER_PAGED_KV_LAST_PAGE_LEN);
  const int q0 = qo[a];
  const int qlen = qo[a + 1] - q0;
  if (j >= qlen) return;
  const int first = indptr[a], pages = indptr[a + 1] - first;
  const int kvlen = pages > 0 ? (pages - 1) * (int)AL_BLOCK_SIZE + last[a] : 0;
  const int n = kvlen - qlen + j + 1;
  const int t = q0 + j;
  if (n <= 0 || n > max_seqlen_k || n > (int)AL_BLOCK_TABLE_WIDTH * (int)AL_BLOCK_SIZE || t < 0 || t >= tokens || first < 0) {
    if (threadIdx.x == 0) atomicAdd(err, 1);
    return;
  }
  attend_row(indices + first, n, t, h, scale, q, k_cache, v_cache, out, err, p);
}
"#;

/// Runs `args.batches` random steps over `layouts` (batch `i` on layout `i mod len`, kind
/// [`Kind::schedule`]), printing one line per batch through `print`, and returns the
/// summary. Each layout keeps one [`HostMetadata`] across its steps, so stale tails of
/// earlier steps travel in the buffer as they do in an engine.
pub fn run_batches(
    layouts: &[Layout<AttnModel>],
    args: RunArgs,
    exec: &mut dyn Executor,
    print: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let mut metas: Vec<HostMetadata<RuntimeDims>> = layouts
        .iter()
        .map(|l| HostMetadata::new(l.dims.clone()))
        .collect();
    let mut summary = Summary::default();
    print(&format!("paged attention on {}", exec.describe()));
    for l in layouts {
        print(&format!(
            "layout {}: R={} T={} S={} B={} s={} nkv={} blocks={} dummy={} buckets={} heads={} head_dim={}",
            l.label,
            l.dims.max_requests(),
            l.dims.max_tokens(),
            l.dims.max_seq_len(),
            l.dims.block_size(),
            l.dims.speculative_tokens(),
            l.dims.block_table_width(),
            l.dims.geometry().facts.kv_pool_blocks,
            l.dims.dummy_block(),
            l.dims.buckets().len(),
            l.model.heads,
            l.model.head_dim
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
        let case = AttnCase::new(layout, batch, &info, &mut rng);
        let run = exec.run(li, layout, metas[li].bytes(), &info, &case)?;
        let o = case.check(&run.cache, &run.out);
        let report = BatchReport {
            index: i,
            seed,
            layout: layout.label,
            kind,
            info,
            paused,
            output: o.output,
            state: None,
            tol: TOLERANCE,
            guard_violations: o.guard_violations,
            padding_writes: o.padding_writes,
            kernel_errors: run.kernel_errors,
        };
        print(&report.line());
        summary.add(&report);
    }
    print(&summary.lines("paged attention", TOLERANCE));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts;

    fn tiny_case(q: Vec<f32>, k: Vec<f32>, v: Vec<f32>, kv_off: u32, qlen: u32) -> AttnCase {
        use crate::batch::Row;
        let model = AttnModel {
            heads: 1,
            head_dim: 2,
        };
        let n = kv_off as usize;
        AttnCase {
            model,
            block_size: 4,
            num_blocks: 3,
            dummy: 2,
            batch: Batch {
                kind: Kind::Prefill,
                rows: vec![Row {
                    phase: Phase::Prefill,
                    q: qlen,
                    kv_off,
                    blocks: vec![0, 1],
                    slot: 0,
                }],
            },
            padded_tokens: qlen as usize,
            real_tokens: qlen as usize,
            q,
            k_new: k[n * 2..].to_vec(),
            v_new: v[n * 2..].to_vec(),
            cache: Cache {
                k: vec![0.0; 24],
                v: vec![0.0; 24],
            },
            hist_k: vec![k[..n * 2].to_vec()],
            hist_v: vec![v[..n * 2].to_vec()],
        }
    }

    /// Scores 0 and ln 3 give weights 1/4 and 3/4; the first query sees only its own key.
    #[test]
    fn reference_by_hand() {
        let s2 = 2f32.sqrt();
        let ln3 = 3f32.ln();
        // Two prefill tokens, no history: query 0 sees key 0 only, query 1 sees both.
        let c = tiny_case(
            vec![1.0, 0.0, 1.0, 0.0],
            vec![0.0, 0.0, s2 * ln3, 0.0],
            vec![1.0, 0.0, 0.0, 1.0],
            0,
            2,
        );
        let r = c.reference();
        assert!((r[0] - 1.0).abs() < 1e-12 && r[1].abs() < 1e-12, "{r:?}");
        assert!(
            (r[2] - 0.25).abs() < 1e-6 && (r[3] - 0.75).abs() < 1e-6,
            "{r:?}"
        );
        // The same keys as history plus one decode token with a zero key.
        let c = tiny_case(
            vec![1.0, 0.0],
            vec![0.0, 0.0, s2 * ln3, 0.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0, 1.0, 2.0, 2.0],
            2,
            1,
        );
        let r = c.reference();
        // Weights 1:3:1 over values (1,0), (0,1), (2,2).
        assert!(
            (r[0] - 3.0 / 5.0).abs() < 1e-6 && (r[1] - 5.0 / 5.0).abs() < 1e-6,
            "{r:?}"
        );
    }

    /// The CPU emulation, reading only the metadata, reproduces the dense f64 reference on
    /// random batches of every layout, with the guards clean.
    #[test]
    fn emulation_matches_reference() {
        let layouts = layouts::attention().unwrap();
        let mut lines = Vec::new();
        let s = run_batches(
            &layouts,
            RunArgs {
                batches: 36,
                seed: 11,
            },
            &mut CpuEmulation,
            &mut |l| lines.push(l.to_owned()),
        )
        .unwrap();
        let text = lines.join("\n");
        println!("{text}");
        assert_eq!(s.failed, 0, "{text}");
        assert_eq!(s.passed, 36);
        assert!(s.graphed_padded >= 6 && s.eager >= 6, "{text}");
        assert!(s.output.max_rel < 1e-5, "{text}");
        assert!(lines.last().unwrap().ends_with("36 passed, 0 failed"));
    }

    /// A block table that points a real row at the wrong block is caught: the output goes
    /// wrong (or NaN from a sentinel slot).
    #[test]
    fn wrong_block_table_is_caught() {
        let layout = &layouts::attention().unwrap()[1];
        let mut meta = HostMetadata::new(layout.dims.clone());
        let mut rng = Rng::new(5);
        let batch = Batch::random(&layout.dims, Kind::Mixed, &mut rng);
        let info = *batch.fill(&mut meta).unwrap();
        let case = AttnCase::new(layout, batch, &info, &mut rng);
        let mut bytes = meta.bytes().to_vec();
        let off = layout.dims.field_offset(Field::MhaBlockTable);
        // Swap the first two entries of row 0's block table.
        let (x, y) = (
            i32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()),
            i32::from_ne_bytes(bytes[off + 4..off + 8].try_into().unwrap()),
        );
        bytes[off..off + 4].copy_from_slice(&y.to_ne_bytes());
        bytes[off + 4..off + 8].copy_from_slice(&x.to_ne_bytes());
        let run = CpuEmulation.run(1, layout, &bytes, &info, &case).unwrap();
        let o = case.check(&run.cache, &run.out);
        assert!(!o.output.within(TOLERANCE), "{o:?}");
    }

    /// A full table: the unmasked tile load of the last row runs past its last column, into
    /// the block table's guard, which lies inside the buffer (the emulation's reads are
    /// bounds-checked against each field's capacity) and holds the dummy block: no error,
    /// and the output is right.
    #[test]
    fn the_tiled_load_of_the_last_row_reads_the_guard() {
        use crate::batch::Row;
        let layout = &layouts::attention().unwrap()[0];
        let d = &layout.dims;
        let (r, nkv, b) = (d.max_requests(), d.block_table_width(), d.block_size());
        assert!(nkv % TILE_BLOCKS != 0, "the tile must overrun a row");
        let rows: Vec<Row> = (0..r)
            .map(|i| Row {
                phase: Phase::Decode,
                q: 1,
                kv_off: (nkv * b - 1) as u32,
                blocks: (0..nkv).map(|j| (i * nkv + j) as i32).collect(),
                slot: -1,
            })
            .collect();
        let batch = Batch {
            kind: Kind::Decode,
            rows,
        };
        let mut meta = HostMetadata::new(d.clone());
        let info = *batch.fill(&mut meta).unwrap();
        assert_eq!(info.real.requests() as usize, r);
        // The last row's tile ends past the table's R × nkv entries.
        let tile_end = ((nkv * b - 1) / b / TILE_BLOCKS + 1) * TILE_BLOCKS - 1;
        assert!((r - 1) * nkv + tile_end >= r * nkv);
        let mut rng = Rng::new(3);
        let case = AttnCase::new(layout, batch, &info, &mut rng);
        let run = CpuEmulation
            .run(0, layout, meta.bytes(), &info, &case)
            .unwrap();
        assert_eq!(run.kernel_errors, 0);
        let o = case.check(&run.cache, &run.out);
        assert!(o.output.within(TOLERANCE), "{o:?}");
    }

    /// The formats path reads FlashInfer's page indices: a wrong one breaks the output,
    /// while the block table is left as it was.
    #[test]
    fn the_csr_path_reads_the_flashinfer_indices() {
        let layout = &layouts::attention().unwrap()[3];
        assert!(uses_formats(&layout.dims));
        let mut meta = HostMetadata::new(layout.dims.clone());
        let mut rng = Rng::new(9);
        let batch = Batch::random(&layout.dims, Kind::Mixed, &mut rng);
        let info = *batch.fill(&mut meta).unwrap();
        let case = AttnCase::new(layout, batch, &info, &mut rng);
        let run = CpuEmulation
            .run(3, layout, meta.bytes(), &info, &case)
            .unwrap();
        let o = case.check(&run.cache, &run.out);
        assert!(
            o.output.within(TOLERANCE) && run.kernel_errors == 0,
            "{o:?}"
        );
        // Point the first request's first page at the dummy block (attention over a whole
        // row does not see a swap of two of its pages: keys and values move together).
        let mut bytes = meta.bytes().to_vec();
        let off = layout.dims.field_offset(Field::FlashinferPagedKvIndices);
        bytes[off..off + 4].copy_from_slice(&layout.dims.dummy_block().to_ne_bytes());
        let run = CpuEmulation.run(3, layout, &bytes, &info, &case).unwrap();
        let o = case.check(&run.cache, &run.out);
        assert!(!o.output.within(TOLERANCE), "{o:?}");
    }

    #[test]
    fn source_names_both_kernels() {
        let l = &layouts::attention().unwrap()[2];
        let s = cuda_source(l);
        assert!(s.contains("kv_append") && s.contains("paged_attention"));
        assert!(s.contains("kv_append_slots") && s.contains("paged_attention_csr"));
        assert!(s.contains("#define TILE_BLOCKS 16\n"));
        assert!(s.contains("constexpr al_u32 AL_BLOCK_TABLE_WIDTH = 9u;"));
        assert!(s.contains("#define HEAD_DIM 32\n"));
    }
}
