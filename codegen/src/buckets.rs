//! CUDA-graph buckets: token ladders, bucket lists, matching and eager padding
//! (docs/SEMANTICS.md §2–§3).
//!
//! Everything here is a pure function of its arguments and never panics: intermediate
//! arithmetic is done in `u64`/`u128` (or saturates), and a tensor-parallel size of `0` is
//! treated as `1` (callers validate `tp >= 1`). Batch-invariant mode is not modelled (it is
//! always off).
//!
//! Typical use: [`build_buckets`] once at start-up, then per step [`match_bucket`] against
//! that (ascending, deduplicated) list, and [`eager_padding`] when nothing matched.

use std::collections::BTreeSet;

/// A batch shape `(token_count, prefill_req_count, decode_req_count)`.
///
/// The derived order is lexicographic by `(tokens, prefill, decode)`, which is the order
/// "smallest bucket" refers to (docs/SEMANTICS.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BatchDims {
    /// Tokens in the step (padded or real).
    pub tokens: u32,
    /// Prefill requests.
    pub prefill: u32,
    /// Decode requests.
    pub decode: u32,
}

impl BatchDims {
    /// A shape from its three counts.
    pub const fn new(tokens: u32, prefill: u32, decode: u32) -> Self {
        Self {
            tokens,
            prefill,
            decode,
        }
    }

    /// `prefill + decode` (saturating at `u32::MAX`, so it never overflows).
    pub const fn requests(&self) -> u32 {
        self.prefill.saturating_add(self.decode)
    }
}

/// How the token ladder is spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Distribution {
    /// Halving ladder (Megatron's default).
    #[default]
    Exponential,
    /// Evenly spaced ladder.
    Linear,
}

/// Everything bucket generation needs (docs/SEMANTICS.md §3.2 inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketParams {
    /// Tensor-parallel size.
    pub tensor_parallel: u32,
    /// `None`: no graphs; `Some(-1)`: automatic count; `Some(n)`: `n` graphs.
    pub num_cuda_graphs: Option<i64>,
    /// CUDA-graph token budget as the context passes it (`cg_max`).
    pub cg_max: u32,
    /// Mixed prefill count.
    pub mixed_prefill_count: u32,
    /// `R`.
    pub max_requests: u32,
    /// `T`.
    pub max_tokens: u32,
    /// `S`.
    pub max_seq_len: u32,
    /// Whether mixed / prefill steps get graphs.
    pub non_decode_graphs: bool,
    /// Speculative tokens `s`.
    pub speculative_tokens: u32,
    /// Ladder spacing.
    pub distribution: Distribution,
}

// ---------------------------------------------------------------------------------------
// Small arithmetic helpers (all total: no division by zero, no overflow).

/// `tp` as a divisor: `0` is treated as `1`.
fn tp_divisor(tp: u32) -> u64 {
    u64::from(tp.max(1))
}

/// `ceil(a / b)` for `b >= 1` (a `b` of `0` is treated as `1`).
fn ceil_div(a: u64, b: u64) -> u64 {
    let b = b.max(1);
    a / b + u64::from(!a.is_multiple_of(b))
}

/// `k · ceil(v / k)`, saturating at `u64::MAX` (`k` of `0` is treated as `1`).
fn round_up(v: u64, k: u64) -> u64 {
    let k = k.max(1);
    ceil_div(v, k).saturating_mul(k)
}

/// `u64 → u32`, saturating at `u32::MAX`.
fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Greatest common divisor (`gcd(0, b) = b`).
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Least common multiple of two positive numbers, saturating.
fn lcm(a: u64, b: u64) -> u64 {
    let (a, b) = (a.max(1), b.max(1));
    (a / gcd(a, b)).saturating_mul(b)
}

// ---------------------------------------------------------------------------------------
// §3.1 Token-count ladders

/// The token-count ladder of docs/SEMANTICS.md §3.1: a **descending** list of CUDA-graph token
/// counts for `n` requested graphs (`n == -1`: choose the count automatically) and a
/// maximum `max`.
///
/// * [`Distribution::Exponential`]: a halving ladder `max, max/2, …` rounded to multiples
///   of `tp` (halving steps floored at 2), plus `max` and `tp` themselves, trimmed to
///   `n` entries by repeatedly deleting the second-smallest entry. `n == -1` means
///   `n = max(4, floor(log2(max(2, max))) + 2)`.
/// * [`Distribution::Linear`]: `n == -1` gives the fixed grid `1, 2, 4, 8..=248 step 8,
///   256..=max step 16` rounded up to multiples of `tp` and capped at `max` (with `max`
///   itself, unrounded, always on top); `n >= 1` gives evenly spaced multiples of a step of
///   about `max / n`.
///
/// Any `n < 1` other than `-1` is treated as `1` (that is what [`build_buckets`] clamps it
/// to). `tp == 0` is treated as `1`. Batch-invariant mode is not modelled.
///
/// Size: exponential ladders have at most ~34 entries; linear ones have about
/// `min(n, max/tp)` entries, or `max/16` for the automatic grid, so `max` should be a
/// realistic token budget.
///
/// ```
/// use attention_layout_codegen::buckets::{ladder, Distribution};
/// assert_eq!(ladder(1, -1, 64, Distribution::Exponential), [64, 32, 16, 8, 4, 2, 1]);
/// assert_eq!(ladder(2, 3, 64, Distribution::Linear), [64, 44, 22]);
/// ```
pub fn ladder(tp: u32, n: i64, max: u32, dist: Distribution) -> Vec<u32> {
    match dist {
        Distribution::Exponential => exponential_ladder(tp, n, max),
        Distribution::Linear => linear_ladder(tp, n, max),
    }
}

/// §3.1, exponential spacing.
fn exponential_ladder(tp: u32, n: i64, max: u32) -> Vec<u32> {
    let tp = tp_divisor(tp);
    let max = u64::from(max);
    // Step 1: automatic count. `max(2, M)` >= 2, so ilog2 is defined.
    let n: u64 = if n == -1 {
        u64::from(max.max(2).ilog2() + 2).max(4)
    } else {
        u64::try_from(n.max(1)).unwrap_or(1)
    };
    // Step 3 (rounder r = 2 outside batch-invariant mode).
    let m = max / tp * tp;
    if n == 1 {
        return vec![sat_u32(m)];
    }
    // Step 4: halving; at most ~34 iterations whatever `n` is (stops once v < 1).
    let mut set = BTreeSet::new();
    let mut v = m;
    let mut i = 0_u64;
    while i < n {
        set.insert(round_up((v / 2 * 2).max(2), tp));
        v /= 2;
        i += 1;
        if v < 1 {
            break;
        }
    }
    // Step 5.
    set.insert(m);
    set.insert(tp);
    // Step 6: descending; drop the second-smallest until at most n remain (n >= 2 here,
    // so `len - 2` is a valid index whenever `len > n`).
    let mut out: Vec<u32> = set.into_iter().rev().map(sat_u32).collect();
    while out.len() as u64 > n {
        out.remove(out.len() - 2);
    }
    out
}

/// The smallest value above `x` of the automatic linear grid
/// `1, 2, 4, 8, 16, …, 248, 256, 272, …` (unbounded above; the caller stops at `M`).
fn next_linear_grid_value(x: u64) -> u64 {
    match x {
        0 => 1,
        1 => 2,
        2 | 3 => 4,
        4..248 => (x / 8 + 1) * 8,
        248..256 => 256,
        _ => ((x - 256) / 16 + 1).saturating_mul(16).saturating_add(256),
    }
}

/// §3.1, linear spacing.
fn linear_ladder(tp: u32, n: i64, max: u32) -> Vec<u32> {
    let tp = tp_divisor(tp);
    let max = u64::from(max);
    if n == -1 {
        // The grid is increasing and rounding up is monotone, so the rounded values are
        // non-decreasing: "drop duplicates keeping the first occurrence" is a consecutive
        // dedup and "keep values <= M" keeps a prefix. Every grid value in `(v, r]`
        // rounds to the same `r`, so jump straight to the first grid value above `r`.
        let mut out: Vec<u64> = linear_auto_grid(tp, max).collect();
        if out.last() != Some(&max) {
            out.push(max);
        }
        return out.into_iter().rev().map(sat_u32).collect();
    }
    let n = u64::try_from(n.max(1)).unwrap_or(1);
    let step = round_up(2 * ceil_div(max / n, 2), tp).max(tp);
    let m = max / tp * tp;
    if n == 1 {
        return vec![sat_u32(m)];
    }
    // `step >= 1`, so this terminates; every value is < m <= u32::MAX.
    let mut out: Vec<u32> = Vec::new();
    let mut v = step;
    while v < m {
        out.push(sat_u32(v));
        v = v.saturating_add(step);
    }
    out.push(sat_u32(m));
    out.reverse();
    out
}

/// The automatic linear grid rounded up to multiples of `tp` (a divisor, `>= 1`),
/// deduplicated and capped at `max`, ascending (`linear_ladder` with `n == -1` before
/// `max` is appended). The grid is increasing and rounding up is monotone, so every grid
/// value in `(v, r]` rounds to the same `r`: jump straight to the first one above `r`.
fn linear_auto_grid(tp: u64, max: u64) -> impl Iterator<Item = u64> {
    let mut value = 1_u64;
    std::iter::from_fn(move || {
        let rounded = round_up(value, tp);
        if rounded > max {
            return None;
        }
        value = next_linear_grid_value(rounded);
        Some(rounded)
    })
}

/// The length of `linear_ladder(tp, n, max)` for `n >= 1`, in O(1) (the ladder is
/// `step, 2·step, … < m` and `m`).
fn linear_ladder_len(tp: u32, n: i64, max: u32) -> u64 {
    let tp = tp_divisor(tp);
    let max = u64::from(max);
    let n = u64::try_from(n.max(1)).unwrap_or(1);
    if n == 1 {
        return 1;
    }
    let step = round_up(2 * ceil_div(max / n, 2), tp).max(tp);
    let m = max / tp * tp;
    m.saturating_sub(1) / step + 1
}

// ---------------------------------------------------------------------------------------
// §2 Validity and §3.2 bucket lists

/// Whether `d = (t, p, d)` is a valid bucket for `max_requests = R`, `max_seq_len = S` and
/// `speculative_tokens = s` (docs/SEMANTICS.md §2):
/// `t > 0`, `p + d <= R`, `t >= p + d·(s+1)` and `t <= p·S + d·(s+1)`.
/// (Non-negativity is implied by the unsigned fields.) Exact for all `u32` inputs.
///
/// ```
/// use attention_layout_codegen::buckets::{is_valid, BatchDims};
/// assert!(!is_valid(BatchDims::new(49, 0, 10), 16, 64, 4));
/// assert!(is_valid(BatchDims::new(50, 0, 10), 16, 64, 4));
/// ```
pub fn is_valid(
    d: BatchDims,
    max_requests: u32,
    max_seq_len: u32,
    speculative_tokens: u32,
) -> bool {
    let (t, p, dec) = (
        u128::from(d.tokens),
        u128::from(d.prefill),
        u128::from(d.decode),
    );
    let per_decode = u128::from(speculative_tokens) + 1;
    let decode_tokens = dec * per_decode;
    t > 0
        && p + dec <= u128::from(max_requests)
        && t >= p + decode_tokens
        && t <= p * u128::from(max_seq_len) + decode_tokens
}

/// The CUDA-graph bucket list of docs/SEMANTICS.md §3.2, **sorted ascending** (lexicographic
/// order of [`BatchDims`]) and deduplicated — ready for [`match_bucket`].
///
/// Empty when `num_cuda_graphs` is `None`. `p.cg_max` is the budget as the context
/// passes it (`min(max(configured, R·(s+1)), T)`, or `T` when all prefills are graphed);
/// a `cg_max` of `0` or above `T` is replaced by `T`. Megatron's requirement
/// `cg_max >= R·(s+1)` is not checked here. Megatron's own list order (by
/// `(t − d·(s+1), d)` descending, ties in set-iteration order) is not reproduced: only
/// the set matters for matching.
///
/// Decode-only buckets `(d·(s+1), 0, d)` come from the decode ladder (capped at
/// `R·(s+1)` tokens); mixed and prefill-only buckets from the prefill ladder are added
/// only when `mixed_prefill_count > 0` and `non_decode_graphs` is set. Every candidate
/// must pass [`is_valid`]. (Because ladder entries are at least 2, a `cg_max` of 1 can
/// still yield a 2-token bucket, as in Megatron.)
pub fn build_buckets(p: &BucketParams) -> Vec<BatchDims> {
    build_buckets_bounded(p, u64::MAX).unwrap_or_default()
}

/// [`build_buckets`], unless it would examine more than `max_candidates` candidate
/// buckets: then `Err` with that number, after only the ladders were built (O(their
/// length), at most about `T / 2` entries). The candidate count bounds both the list's
/// length and the work (one set insertion each): a linear ladder with a huge graph count
/// or token budget asks for millions of CUDA graphs, which takes seconds and gigabytes
/// to enumerate and could never be captured.
pub fn build_buckets_bounded(p: &BucketParams, max_candidates: u64) -> Result<Vec<BatchDims>, u64> {
    let Some(num_graphs) = p.num_cuda_graphs else {
        return Ok(Vec::new());
    };
    let r = u64::from(p.max_requests);
    let s1 = u64::from(p.speculative_tokens) + 1;
    let tp = tp_divisor(p.tensor_parallel);

    // Step 2.
    let cg_max = if p.cg_max == 0 || p.cg_max > p.max_tokens {
        p.max_tokens
    } else {
        p.cg_max
    };
    let n = if num_graphs == -1 {
        -1
    } else {
        num_graphs.max(1).min(i64::from(cg_max))
    };

    // Step 3.
    let decode_max = sat_u32(u64::from(cg_max).min(r.saturating_mul(s1)));
    let non_decode = p.mixed_prefill_count > 0 && p.non_decode_graphs;
    if p.distribution == Distribution::Linear {
        // A linear ladder can be as long as cg_max / 2 (explicit count) or cg_max / 16
        // (automatic): count the candidates before building anything. With an explicit
        // count the count is exact; the automatic one is counted up to the bound, a lower
        // bound on the exact count below (M may be appended, and the decode extras). The
        // linear prefill-count grid has one entry.
        let cap = max_candidates.saturating_add(1);
        let len = |m: u32| {
            if n >= 1 {
                linear_ladder_len(p.tensor_parallel, n, m)
            } else {
                let capped = usize::try_from(cap).unwrap_or(usize::MAX);
                linear_auto_grid(tp, u64::from(m)).take(capped).count() as u64
            }
        };
        let candidates = len(decode_max).saturating_add(if non_decode {
            len(cg_max).saturating_mul(2)
        } else {
            0
        });
        if candidates > max_candidates {
            return Err(candidates);
        }
    }
    let prefill_ladder = ladder(p.tensor_parallel, n, cg_max, p.distribution);
    let mut decode_ladder = ladder(p.tensor_parallel, n, decode_max, p.distribution);
    if n == -1 {
        let u = lcm(s1, tp);
        for extra in [u, u.saturating_mul(2)] {
            if extra <= u64::from(decode_max) {
                decode_ladder.push(sat_u32(extra));
            }
        }
        // (Order and duplicates of the decode ladder do not affect the final set.)
    }
    let (grid, prefill_floor): (Vec<u64>, u64) = match p.distribution {
        _ if !non_decode => (Vec::new(), 0),
        Distribution::Exponential => {
            let mut grid = Vec::new();
            let mut v = 1_u64;
            while v < r {
                grid.push(v);
                v *= 2;
            }
            grid.push(r);
            (grid, 1)
        }
        Distribution::Linear => (
            vec![u64::from(p.mixed_prefill_count).min(r)],
            u64::from(p.mixed_prefill_count),
        ),
    };
    let candidates = (decode_ladder.len() as u64).saturating_add(if non_decode {
        (prefill_ladder.len() as u64).saturating_mul(grid.len() as u64 + 1)
    } else {
        0
    });
    if candidates > max_candidates {
        return Err(candidates);
    }

    // Step 4.
    let mut out = BTreeSet::new();
    let mut add = |b: BatchDims| {
        if is_valid(b, p.max_requests, p.max_seq_len, p.speculative_tokens) {
            out.insert(b);
        }
    };
    for &x in &decode_ladder {
        let d = (u64::from(x) / s1).min(r);
        let t = d * s1 / tp * tp; // <= x
        add(BatchDims::new(sat_u32(t), 0, sat_u32(d)));
    }
    if non_decode {
        let seq_div = u64::from(p.max_seq_len).saturating_sub(1).max(1);
        for &x in prefill_ladder.iter().filter(|&&x| x >= 2) {
            let x64 = u64::from(x);
            for &pc in &grid {
                // Python: max(0, min((x - p) // (s+1), R - p)); pc <= R always.
                let d = x64
                    .checked_sub(pc)
                    .map_or(0, |rest| (rest / s1).min(r - pc));
                add(BatchDims::new(x, sat_u32(pc), sat_u32(d)));
            }
            let m = prefill_floor.max(ceil_div(x64, seq_div));
            if m < r {
                add(BatchDims::new(x, sat_u32(m.max(r.min(x64))), 0));
            }
        }
    }
    // Step 5: BTreeSet iteration is ascending and duplicate-free.
    Ok(out.into_iter().collect())
}

/// The distinct token counts of `buckets`, descending (docs/SEMANTICS.md §3.2 step 6; Megatron
/// returns `None` where this returns an empty list).
pub fn token_counts(buckets: &[BatchDims]) -> Vec<u32> {
    let set: BTreeSet<u32> = buckets.iter().map(|b| b.tokens).collect();
    set.into_iter().rev().collect()
}

// ---------------------------------------------------------------------------------------
// §3.3 Matching

/// Whether bucket `b` can host `real` (docs/SEMANTICS.md §3.3), given `b.tokens >= real.tokens`.
#[inline]
fn applicable(real: BatchDims, b: BatchDims, strict: bool) -> bool {
    if real.prefill == 0 {
        // Decode-only steps only ever use decode-only buckets.
        b.prefill == 0 && b.decode >= real.decode
    } else if strict {
        b.prefill >= real.prefill && b.decode >= real.decode
    } else {
        b.prefill >= real.prefill
            && u64::from(b.prefill) + u64::from(b.decode)
                >= u64::from(real.prefill) + u64::from(real.decode)
    }
}

/// The smallest bucket (lexicographic order) that can host `real`, or `None` (run
/// eagerly), per docs/SEMANTICS.md §3.3.
///
/// `buckets_sorted_ascending` must be sorted ascending, as [`build_buckets`] returns it;
/// the first applicable bucket is then the smallest. A binary search skips every bucket
/// with too few tokens, so a step costs `O(log n)` plus a short scan. (An unsorted slice
/// gives an unspecified result, never a panic.)
///
/// Applicability: decode-only real batches (`prefill == 0`, including `(0,0,0)`) need a
/// decode-only bucket with `tokens >=` and `decode >=`; otherwise `tokens >=`,
/// `prefill >=` and, if `strict` (hybrid / Mamba models), `decode >=`, else
/// `prefill + decode >=` (spare prefill slots may host decodes).
#[inline]
pub fn match_bucket(
    real: BatchDims,
    buckets_sorted_ascending: &[BatchDims],
    strict: bool,
) -> Option<BatchDims> {
    let start = buckets_sorted_ascending.partition_point(|b| b.tokens < real.tokens);
    buckets_sorted_ascending
        .get(start..)
        .unwrap_or_default()
        .iter()
        .copied()
        .find(|&b| b.tokens >= real.tokens && applicable(real, b, strict))
}

/// The shape the attention metadata is built for (docs/SEMANTICS.md §3.3, "Attention
/// dimensions"): when a bucket matched and `real.decode > bucket.decode` (only possible
/// with non-strict matching) the surplus decodes are re-labelled as prefill,
/// `(real.tokens, real.requests() − bucket.decode, bucket.decode)`; otherwise `real`.
pub fn attention_dims(real: BatchDims, matched: Option<BatchDims>) -> BatchDims {
    match matched {
        Some(b) if real.decode > b.decode => BatchDims::new(
            real.tokens,
            real.requests().saturating_sub(b.decode),
            b.decode,
        ),
        _ => real,
    }
}

// ---------------------------------------------------------------------------------------
// §3.4 Eager padding

/// The padded shape of an eager (unmatched) step, docs/SEMANTICS.md §3.4.
///
/// Token counts round up to multiples of `ceil(64/tp)·tp`, request counts to multiples of
/// `ceil(4/tp)·tp`:
/// * decode-only, `s > 0`: `pd = min(R, round_req(D))` → `(pd·(s+1), 0, pd)`;
/// * decode-only, `s == 0`: `pt = min(T, R, round_tok(tokens))` → `(pt, 0, pt)`;
/// * otherwise `(round_tok(tokens), min(R, round_req(D+F)) − D, D)` — the token count is
///   **not** capped at `T` (Megatron behaviour).
///
/// Results saturate at `u32::MAX` (and `pr − D` at `0`) for out-of-range inputs.
pub fn eager_padding(
    real: BatchDims,
    max_requests: u32,
    max_tokens: u32,
    tp: u32,
    speculative_tokens: u32,
) -> BatchDims {
    let tp = tp_divisor(tp);
    let token_rounder = ceil_div(64, tp) * tp;
    let request_rounder = ceil_div(4, tp) * tp;
    let r = u64::from(max_requests);
    let d = u64::from(real.decode);
    if real.prefill == 0 {
        if speculative_tokens > 0 {
            let pd = r.min(round_up(d, request_rounder));
            let tokens = pd.saturating_mul(u64::from(speculative_tokens) + 1);
            BatchDims::new(sat_u32(tokens), 0, sat_u32(pd))
        } else {
            let pt = u64::from(max_tokens)
                .min(r)
                .min(round_up(u64::from(real.tokens), token_rounder));
            BatchDims::new(sat_u32(pt), 0, sat_u32(pt))
        }
    } else {
        let pr = r.min(round_up(d + u64::from(real.prefill), request_rounder));
        BatchDims::new(
            sat_u32(round_up(u64::from(real.tokens), token_rounder)),
            sat_u32(pr.saturating_sub(d)),
            real.decode,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXP: Distribution = Distribution::Exponential;
    const LIN: Distribution = Distribution::Linear;

    fn b(t: u32, p: u32, d: u32) -> BatchDims {
        BatchDims::new(t, p, d)
    }

    fn dims(list: &[(u32, u32, u32)]) -> Vec<BatchDims> {
        list.iter().map(|&(t, p, d)| b(t, p, d)).collect()
    }

    /// The worked configuration of docs/SEMANTICS.md §3.2.
    fn worked() -> BucketParams {
        BucketParams {
            tensor_parallel: 1,
            num_cuda_graphs: Some(-1),
            cg_max: 64,
            mixed_prefill_count: 4,
            max_requests: 8,
            max_tokens: 64,
            max_seq_len: 32,
            non_decode_graphs: true,
            speculative_tokens: 0,
            distribution: EXP,
        }
    }

    const WORKED_LIST: [(u32, u32, u32); 24] = [
        (1, 0, 1),
        (2, 0, 2),
        (2, 1, 1),
        (2, 2, 0),
        (4, 0, 4),
        (4, 1, 3),
        (4, 2, 2),
        (4, 4, 0),
        (8, 0, 8),
        (8, 1, 7),
        (8, 2, 6),
        (8, 4, 4),
        (8, 8, 0),
        (16, 1, 7),
        (16, 2, 6),
        (16, 4, 4),
        (16, 8, 0),
        (32, 1, 7),
        (32, 2, 6),
        (32, 4, 4),
        (32, 8, 0),
        (64, 2, 6),
        (64, 4, 4),
        (64, 8, 0),
    ];

    #[test]
    fn exponential_ladder_examples() {
        assert_eq!(ladder(1, -1, 64, EXP), [64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(ladder(1, -1, 8, EXP), [8, 4, 2, 1]);
        assert_eq!(ladder(1, 4, 64, EXP), [64, 32, 16, 1]);
        assert_eq!(ladder(1, 3, 100, EXP), [100, 50, 1]);
        assert_eq!(ladder(2, -1, 64, EXP), [64, 32, 16, 8, 4, 2]);
        assert_eq!(ladder(4, -1, 16, EXP), [16, 8, 4]);
        assert_eq!(ladder(1, 16, 10, EXP), [10, 4, 2, 1]);
        assert_eq!(ladder(8, 64, 8, EXP), [8]);
    }

    #[test]
    fn linear_ladder_len_is_exact() {
        for tp in 1..=5 {
            for n in 1..=40 {
                for max in (0..300).chain([1000, 4096, 4099, 65_536]) {
                    assert_eq!(
                        linear_ladder_len(tp, n, max),
                        ladder(tp, n, max, LIN).len() as u64,
                        "tp {tp} n {n} max {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn linear_ladder_examples() {
        assert_eq!(
            ladder(1, -1, 64, LIN),
            [64, 56, 48, 40, 32, 24, 16, 8, 4, 2, 1]
        );
        assert_eq!(ladder(2, -1, 40, LIN), [40, 32, 24, 16, 8, 4, 2]);
        assert_eq!(ladder(1, 4, 64, LIN), [64, 48, 32, 16]);
        assert_eq!(ladder(2, 3, 64, LIN), [64, 44, 22]);
    }

    #[test]
    fn ladder_single_graph_and_auto_linear_tail() {
        // n == 1 is just the tp-rounded maximum, in both spacings.
        assert_eq!(ladder(4, 1, 30, EXP), [28]);
        assert_eq!(ladder(4, 1, 30, LIN), [28]);
        // Above 256 the automatic linear grid steps by 16; an off-grid max is appended.
        let l = ladder(1, -1, 300, LIN);
        assert_eq!(l.get(..5), Some(&[300, 288, 272, 256, 248][..]));
        assert_eq!(l.last(), Some(&1));
        // Ladders are strictly descending.
        for dist in [EXP, LIN] {
            for tp in [1, 2, 3, 4, 8] {
                for n in [-1, 1, 2, 3, 5, 16] {
                    for max in [1, 2, 7, 16, 63, 64, 100, 256, 300] {
                        let l = ladder(tp, n, max, dist);
                        assert!(!l.is_empty());
                        assert!(l.windows(2).all(|w| w[0] > w[1]), "{tp} {n} {max} {l:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn worked_bucket_list() {
        assert_eq!(build_buckets(&worked()), dims(&WORKED_LIST));
        // The ladders behind it.
        assert_eq!(ladder(1, -1, 64, EXP), [64, 32, 16, 8, 4, 2, 1]);
        assert_eq!(ladder(1, -1, 8, EXP), [8, 4, 2, 1]);
        // Rules 5 and 4 exclude these.
        assert!(!is_valid(b(64, 1, 7), 8, 32, 0));
        assert!(!is_valid(b(4, 8, 0), 8, 32, 0));
        assert_eq!(
            token_counts(&build_buckets(&worked())),
            [64, 32, 16, 8, 4, 2, 1]
        );
    }

    #[test]
    fn worked_list_without_non_decode_graphs() {
        let p = BucketParams {
            non_decode_graphs: false,
            ..worked()
        };
        assert_eq!(
            build_buckets(&p),
            dims(&[(1, 0, 1), (2, 0, 2), (4, 0, 4), (8, 0, 8)])
        );
        // mixed_prefill_count == 0 also gives a decode-only list.
        let p = BucketParams {
            mixed_prefill_count: 0,
            ..worked()
        };
        assert_eq!(
            build_buckets(&p),
            dims(&[(1, 0, 1), (2, 0, 2), (4, 0, 4), (8, 0, 8)])
        );
    }

    #[test]
    fn worked_list_with_speculative_tokens() {
        let p = BucketParams {
            speculative_tokens: 2,
            max_tokens: 128,
            cg_max: 128,
            ..worked()
        };
        let list = build_buckets(&p);
        let decode: Vec<BatchDims> = list.iter().copied().filter(|x| x.prefill == 0).collect();
        assert_eq!(
            decode,
            dims(&[(3, 0, 1), (6, 0, 2), (12, 0, 4), (24, 0, 8)])
        );
        // Same with non-decode graphs off: only those.
        let p = BucketParams {
            non_decode_graphs: false,
            ..p
        };
        assert_eq!(build_buckets(&p), decode);
    }

    #[test]
    fn no_graphs_means_no_buckets() {
        let p = BucketParams {
            num_cuda_graphs: None,
            ..worked()
        };
        assert!(build_buckets(&p).is_empty());
        assert!(token_counts(&[]).is_empty());
        assert_eq!(match_bucket(b(0, 0, 0), &[], false), None);
        assert_eq!(match_bucket(b(1, 0, 1), &[], true), None);
    }

    #[test]
    fn build_buckets_is_sorted_and_deduplicated() {
        for dist in [EXP, LIN] {
            for n in [Some(-1), Some(1), Some(3), Some(8), Some(100)] {
                let p = BucketParams {
                    num_cuda_graphs: n,
                    distribution: dist,
                    max_requests: 16,
                    max_tokens: 256,
                    cg_max: 128,
                    speculative_tokens: 1,
                    ..worked()
                };
                let list = build_buckets(&p);
                assert!(list.windows(2).all(|w| w[0] < w[1]), "{p:?}");
                assert!(list.iter().all(|&x| is_valid(x, 16, 32, 1)), "{p:?}");
            }
        }
    }

    #[test]
    fn match_table_of_the_spec() {
        let list = build_buckets(&worked());
        // (real, non-strict, strict)
        #[allow(clippy::type_complexity, reason = "a literal table of test cases")]
        let table: [(
            (u32, u32, u32),
            Option<(u32, u32, u32)>,
            Option<(u32, u32, u32)>,
        ); 12] = [
            ((12, 2, 3), Some((16, 2, 6)), Some((16, 2, 6))),
            ((8, 3, 5), Some((8, 4, 4)), None),
            ((40, 7, 1), Some((64, 8, 0)), None),
            ((7, 0, 7), Some((8, 0, 8)), Some((8, 0, 8))),
            ((5, 0, 3), Some((8, 0, 8)), Some((8, 0, 8))),
            ((30, 1, 0), Some((32, 1, 7)), Some((32, 1, 7))),
            ((3, 3, 0), Some((4, 4, 0)), Some((4, 4, 0))),
            ((2, 1, 0), Some((2, 1, 1)), Some((2, 1, 1))),
            ((17, 1, 7), Some((32, 1, 7)), Some((32, 1, 7))),
            ((65, 1, 0), None, None),
            ((9, 0, 9), None, None),
            ((0, 0, 0), Some((1, 0, 1)), Some((1, 0, 1))),
        ];
        let tup = |x: Option<(u32, u32, u32)>| x.map(|(t, p, d)| b(t, p, d));
        for ((t, p, d), loose, strict) in table {
            let real = b(t, p, d);
            assert_eq!(
                match_bucket(real, &list, false),
                tup(loose),
                "non-strict {real:?}"
            );
            assert_eq!(
                match_bucket(real, &list, true),
                tup(strict),
                "strict {real:?}"
            );
        }
        // A prefill-only batch can land in a bucket with (padding) decode slots.
        assert_eq!(match_bucket(b(29, 3, 0), &list, false), Some(b(32, 4, 4)));
        assert_eq!(match_bucket(b(29, 3, 0), &list, true), Some(b(32, 4, 4)));
    }

    /// `match_bucket` agrees with a plain "minimum over all applicable buckets" scan.
    #[test]
    fn match_is_the_smallest_applicable_bucket() {
        let list = build_buckets(&worked());
        for t in 0..70 {
            for p in 0..10 {
                for d in 0..10 {
                    let real = b(t, p, d);
                    for strict in [false, true] {
                        let slow = list
                            .iter()
                            .copied()
                            .filter(|&x| x.tokens >= t && applicable(real, x, strict))
                            .min();
                        assert_eq!(match_bucket(real, &list, strict), slow, "{real:?} {strict}");
                    }
                }
            }
        }
    }

    #[test]
    fn attention_dims_relabels_surplus_decodes() {
        let list = build_buckets(&worked());
        // (8,3,5) → (8,4,4) non-strict: one decode becomes prefill.
        let real = b(8, 3, 5);
        let m = match_bucket(real, &list, false);
        assert_eq!(m, Some(b(8, 4, 4)));
        assert_eq!(attention_dims(real, m), b(8, 4, 4));
        assert_eq!(attention_dims(real, m).requests(), real.requests());
        // Otherwise unchanged.
        let real = b(12, 2, 3);
        assert_eq!(attention_dims(real, match_bucket(real, &list, false)), real);
        assert_eq!(attention_dims(real, None), real);
        assert_eq!(attention_dims(b(40, 7, 1), Some(b(64, 8, 0))), b(40, 8, 0));
    }

    #[test]
    fn eager_padding_examples() {
        assert_eq!(eager_padding(b(7, 0, 7), 8, 64, 1, 0), b(8, 0, 8));
        assert_eq!(eager_padding(b(0, 0, 0), 8, 64, 1, 0), b(0, 0, 0));
        assert_eq!(eager_padding(b(61, 4, 0), 8, 64, 1, 0), b(64, 4, 0));
        assert_eq!(eager_padding(b(6, 1, 3), 8, 64, 1, 0), b(64, 1, 3));
        assert_eq!(eager_padding(b(9, 1, 2), 8, 64, 1, 1), b(64, 2, 2));
        assert_eq!(eager_padding(b(7, 1, 1), 4, 64, 1, 2), b(64, 3, 1));
        assert_eq!(eager_padding(b(64, 10, 0), 16, 64, 1, 0), b(64, 12, 0));
    }

    #[test]
    fn eager_padding_rounders() {
        // Speculative decode-only: requests round to 4, tokens follow.
        assert_eq!(eager_padding(b(6, 0, 3), 16, 64, 1, 1), b(8, 0, 4));
        assert_eq!(eager_padding(b(30, 0, 15), 16, 64, 1, 1), b(32, 0, 16));
        // tp = 3: token rounder 66, request rounder 6.
        assert_eq!(eager_padding(b(5, 1, 2), 16, 128, 3, 0), b(66, 4, 2));
        // Mixed token counts are not capped at T (Megatron behaviour).
        assert_eq!(eager_padding(b(70, 1, 0), 8, 100, 1, 0), b(128, 4, 0));
        // Decode-only s == 0 is capped at min(T, R).
        assert_eq!(eager_padding(b(5, 0, 5), 6, 64, 1, 0), b(6, 0, 6));
    }

    #[test]
    fn bucket_facts_from_megatron_tests() {
        // (49,0,10) invalid and (50,0,10) valid for s = 4.
        assert!(!is_valid(b(49, 0, 10), 16, 64, 4));
        assert!(is_valid(b(50, 0, 10), 16, 64, 4));
        assert!(!is_valid(b(0, 0, 0), 16, 64, 4));
        assert!(!is_valid(b(60, 0, 12), 10, 64, 4)); // more than R requests
        for dist in [EXP, LIN] {
            for tp in [1, 2, 4, 8] {
                for s in [0, 1, 2, 4] {
                    for r in [1, 3, 4, 8, 16] {
                        for t in [16, 64, 128, 256] {
                            for configured in [1, 8, 16, 64, 1000] {
                                for n in [Some(-1), Some(1), Some(4), Some(16)] {
                                    for non_decode in [false, true] {
                                        let s1 = s + 1;
                                        let cg_max = configured.max(r * s1).min(t);
                                        let p = BucketParams {
                                            tensor_parallel: tp,
                                            num_cuda_graphs: n,
                                            cg_max,
                                            mixed_prefill_count: 2,
                                            max_requests: r,
                                            max_tokens: t,
                                            max_seq_len: 32,
                                            non_decode_graphs: non_decode,
                                            speculative_tokens: s,
                                            distribution: dist,
                                        };
                                        check_facts(&p, cg_max);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn check_facts(p: &BucketParams, cg_max: u32) {
        let s1 = p.speculative_tokens + 1;
        let list = build_buckets(p);
        for x in &list {
            assert!(
                is_valid(*x, p.max_requests, p.max_seq_len, p.speculative_tokens),
                "{p:?} {x:?}"
            );
            if x.prefill == 0 {
                // Decode buckets: t = d·(s+1) <= R·(s+1).
                assert_eq!(x.tokens, x.decode * s1, "{p:?} {x:?}");
                assert!(x.tokens <= p.max_requests * s1, "{p:?} {x:?}");
            }
            // Multiples of tp (the automatic linear grid appends an unrounded maximum,
            // so only when that maximum is itself a multiple of tp).
            let aligned = p.distribution == EXP
                || p.num_cuda_graphs != Some(-1)
                || cg_max.is_multiple_of(p.tensor_parallel);
            if aligned {
                assert_eq!(x.tokens % p.tensor_parallel, 0, "{p:?} {x:?}");
            }
        }
        // Oversized batches match nothing. (The largest token count can exceed a tiny
        // cg_max: the ladder's `max(2, …)` floor puts 2 into `ladder(1, -1, 1)`.)
        let top = list.iter().map(|x| x.tokens).max().unwrap_or(0);
        assert!(top <= cg_max.max(2 * p.tensor_parallel), "{p:?}");
        let big = b(top + 1, 1, 0);
        assert_eq!(match_bucket(big, &list, false), None);
        assert_eq!(
            match_bucket(b(0, 0, p.max_requests + 1), &list, false),
            None
        );
        // Zero requests match the smallest decode bucket, when there is one.
        let smallest_decode = list.iter().copied().find(|x| x.prefill == 0);
        assert_eq!(match_bucket(b(0, 0, 0), &list, true), smallest_decode);
    }

    #[test]
    fn tiny_cg_max_with_tp() {
        // cg_max below tp: buckets (if any) are still multiples of tp.
        for tp in [2, 4, 8] {
            for cg_max in 1..=8 {
                let p = BucketParams {
                    tensor_parallel: tp,
                    cg_max,
                    max_requests: 1,
                    ..worked()
                };
                for x in build_buckets(&p) {
                    assert_eq!(x.tokens % tp, 0, "{p:?} {x:?}");
                }
            }
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let m = u32::MAX;
        for tp in [0, 1, 3, m - 1, m] {
            for n in [i64::MIN, -2, -1, 0, 1, 2, 40, i64::MAX] {
                for max in [0, 1, 2, 1000, m] {
                    let l = ladder(tp, n, max, EXP);
                    assert!(!l.is_empty());
                    // Linear ladders are O(max / step) long; only bounded ones here.
                    if max <= 100_000 || tp > 1000 {
                        assert!(!ladder(tp, n, max, LIN).is_empty());
                    }
                }
            }
            for spec in [0, 1, m] {
                let real = b(m, m, m);
                let _ = eager_padding(real, m, m, tp, spec);
                let _ = eager_padding(b(m, 0, m), m, m, tp, spec);
                let _ = eager_padding(b(0, 1, m), 0, 0, tp, spec);
                let _ = is_valid(real, m, m, spec);
                let _ = attention_dims(real, Some(b(0, 0, 0)));
                for non_decode in [false, true] {
                    for dist in [EXP, LIN] {
                        let p = BucketParams {
                            tensor_parallel: tp,
                            num_cuda_graphs: Some(-1),
                            cg_max: 0,
                            mixed_prefill_count: m,
                            max_requests: m,
                            max_tokens: if dist == EXP { m } else { 4096 },
                            max_seq_len: if spec == 0 { 0 } else { m },
                            non_decode_graphs: non_decode,
                            speculative_tokens: spec,
                            distribution: dist,
                        };
                        let list = build_buckets(&p);
                        let _ = token_counts(&list);
                        let _ = match_bucket(real, &list, false);
                        let _ = match_bucket(b(0, 0, 0), &list, true);
                        let p = BucketParams {
                            num_cuda_graphs: Some(i64::MIN),
                            ..p
                        };
                        let _ = build_buckets(&p);
                        let p = BucketParams {
                            num_cuda_graphs: Some(64),
                            ..p
                        };
                        let _ = build_buckets(&p);
                    }
                }
            }
        }
        assert_eq!(b(m, m, m).requests(), m);
    }
}
