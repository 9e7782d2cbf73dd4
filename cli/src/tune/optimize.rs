//! Choosing a bucket table for recorded step shapes.
//!
//! **Problem.** Steps have real shapes `(t, p, d)` (with multiplicities). A table is a set
//! of buckets; a step lands in the smallest bucket that can host it (docs/SEMANTICS.md §3.3:
//! decode-only steps in decode-only buckets; strict matching for Mamba layouts), costing
//! `W · (T − t)` for its `T − t` padded tokens, or, when none can, runs eagerly, costing
//! `W · (eager padding − t) + E`. Choose at most `N` buckets, the full decode bucket
//! `(R · (s + 1), 0, R)` among them, minimizing the total cost.
//!
//! **Candidates.** Padding depends only on a bucket's token count, and more request slots
//! never hurt coverage, so a candidate takes the most decode slots its `(T, P)` allows:
//! `D = min(R − P, ⌊(T − P) / (s + 1)⌋)` (decode-only: `D = T / (s + 1)`). Candidates come
//! in *classes*, by how their prefill count is chosen:
//!
//! * **decode-only** (`P = 0`), the only buckets decode-only steps use;
//! * with strict matching, **one class per observed prefill count** `P`: a mixed step of
//!   `p` prefills and `d` decodes needs `p ≤ P` and `d ≤ D`, and the largest observed
//!   `p' ≤ P` hosts at least what `P` does;
//! * without strict matching, **one mixed class** `P = min(R, T)`: it needs `p ≤ P` and
//!   `p + d ≤ P + D`, and no other `P` hosts more (`P + D` grows with `P`); it hosts every
//!   mixed step of at most `T` tokens.
//!
//! Within a class a step becomes hostable at one token count `τ` and stays so above it, so
//! the token counts worth a bucket are the steps' `τ`, rounded up to a multiple of
//! `tensor_parallel`.
//!
//! **Search.** (1) Greedy: from the full decode bucket, repeatedly add the candidate that
//! lowers the cost most, until `N` buckets or no gain; one sweep over `T` per class prices
//! every candidate (a step gains `c − W · (T − t)` from a bucket of `T ≥ τ` tokens, `c` its
//! cost so far; a step already in a bucket keeps the cheaper one, an eager step has no
//! choice). (2) Swaps: take each bucket out and put the best candidate in, when that
//! lowers the total. (3) Re-placement: with every step assigned to the class of the bucket
//! it lands in, an exact dynamic programme places each class's token counts and shares the
//! `N` buckets among the classes (a class may leave its largest steps eager); kept when
//! the total drops. (2) and (3) repeat until neither helps. Integer arithmetic and fixed
//! tie-breaks (smaller bucket first) make the result a function of the input alone.

use attention_layout_codegen::BatchDims;
use attention_layout_codegen::bucket_table::{TableRules, invalid_reason};
use attention_layout_codegen::buckets::{eager_padding, match_bucket};

/// The price of a step: per padded token and per eager step, in nanoseconds of device time
/// (integers, so the search is exact and deterministic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// Cost of one padded token (the simulated clock's per-token time: a padded token
    /// costs what a real one does).
    pub token_ns: u64,
    /// Extra cost of a step that finds no bucket and runs eagerly.
    pub eager_ns: u64,
}

/// The layout facts the search needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutFacts {
    /// Bucket legality (docs/SEMANTICS.md §2) and tensor parallelism.
    pub rules: TableRules,
    /// Strict matching (Mamba layouts).
    pub strict: bool,
}

/// A family of candidate buckets (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// `(T, 0, T / (s + 1))`.
    Decode,
    /// Strict matching: `(T, P, D)` for this `P`.
    Prefill(u64),
    /// Without strict matching: `(T, min(R, T), D)`.
    Mixed,
}

impl LayoutFacts {
    fn r(&self) -> u64 {
        u64::from(self.rules.max_requests)
    }

    fn s1(&self) -> u64 {
        u64::from(self.rules.speculative_tokens) + 1
    }

    fn tp(&self) -> u64 {
        u64::from(self.rules.tensor_parallel.max(1))
    }

    /// Whether `b` can be a bucket of the layout.
    fn legal(&self, b: BatchDims) -> bool {
        invalid_reason(b, &self.rules).is_none() && u64::from(b.tokens).is_multiple_of(self.tp())
    }

    /// The candidate of `class` at `t` tokens, if legal.
    fn bucket(&self, class: Class, t: u64) -> Option<BatchDims> {
        let (s1, r) = (self.s1(), self.r());
        let (p, d) = match class {
            Class::Decode => {
                if !t.is_multiple_of(s1) {
                    return None;
                }
                (0, t / s1)
            }
            Class::Prefill(p) => (p, (r.checked_sub(p)?).min(t.checked_sub(p)? / s1)),
            Class::Mixed => {
                let p = r.min(t);
                (p, (r.checked_sub(p)?).min(t.checked_sub(p)? / s1))
            }
        };
        let b = BatchDims::new(
            u32::try_from(t).ok()?,
            u32::try_from(p).ok()?,
            u32::try_from(d).ok()?,
        );
        self.legal(b).then_some(b)
    }

    /// The class a bucket belongs to.
    fn class_of(&self, b: BatchDims) -> Class {
        if b.prefill == 0 {
            Class::Decode
        } else if self.strict {
            Class::Prefill(u64::from(b.prefill))
        } else {
            Class::Mixed
        }
    }

    /// The token count from which a bucket of `class` hosts `real` (rounded up to a
    /// multiple of `tensor_parallel`), if any does.
    fn threshold(&self, class: Class, real: BatchDims) -> Option<u64> {
        let (t, rp, rd) = (
            u64::from(real.tokens),
            u64::from(real.prefill),
            u64::from(real.decode),
        );
        let tau = match class {
            Class::Decode => (rp == 0).then_some(t)?,
            // (T, min(R, T), D) hosts every mixed step of at most T tokens.
            Class::Mixed => (rp > 0).then_some(t)?,
            Class::Prefill(p) => {
                if rp == 0 || rp > p || rd > self.r().saturating_sub(p) {
                    return None;
                }
                t.max(p.saturating_add(rd.saturating_mul(self.s1())))
            }
        };
        Some(tau.div_ceil(self.tp()).saturating_mul(self.tp()))
    }

    /// The eager padding of `real`.
    fn eager(&self, real: BatchDims) -> BatchDims {
        eager_padding(
            real,
            self.rules.max_requests,
            self.rules.max_tokens,
            self.rules.tensor_parallel,
            self.rules.speculative_tokens,
        )
    }
}

/// A distinct real shape and how many steps had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The real shape.
    pub real: BatchDims,
    /// Steps with it.
    pub steps: u64,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The buckets, ascending.
    pub buckets: Vec<BatchDims>,
    /// The cost model's total for the shapes it was chosen for.
    pub cost: u128,
}

/// Why no table could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptimizeError {
    /// `max_graphs` is 0: the full decode bucket is always needed.
    #[error(
        "at most {0} graphs leaves no room for the full decode bucket every table holds: allow at least 1"
    )]
    NoRoom(usize),
    /// The full decode bucket is not legal (tokens not a multiple of `tensor_parallel`).
    #[error("the full decode step {0:?} cannot be a bucket of this layout")]
    NoFullDecode(BatchDims),
    /// A number past the range the search computes exactly in 128 bits.
    #[error("{what} is {value}, above the {limit} the search allows")]
    TooLarge {
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u128,
        /// The limit.
        limit: u128,
    },
}

/// Largest cost of a padded token, ns (about 18 minutes): with [`MAX_EAGER_NS`] and
/// [`MAX_STEPS`], every sum the search forms stays below 2^115.
pub const MAX_TOKEN_NS: u64 = 1 << 40;
/// Largest eager penalty, ns (about 13 days).
pub const MAX_EAGER_NS: u64 = 1 << 50;
/// Most steps the shapes may count in all.
pub const MAX_STEPS: u64 = 1 << 40;

/// Per-shape cost of one step under a table, and the bucket that hosts it.
struct Costs {
    cost: Vec<u128>,
    hosted: Vec<Option<BatchDims>>,
}

/// One class's steps at one `τ`: steps, steps · t, steps · eager cost.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    tau: u64,
    steps: u128,
    tokens: u128,
    eager: u128,
}

/// A class's cost with `k` token counts, and the counts.
type Curve = Vec<Option<(u128, Vec<u64>)>>;

/// The search state: shapes, what each costs eagerly, the classes searched.
struct Search<'a> {
    facts: LayoutFacts,
    cost: CostModel,
    shapes: &'a [Shape],
    /// Per shape: the cost of one step run eagerly.
    eager: Vec<u128>,
    /// Classes to consider.
    classes: Vec<Class>,
    /// The full decode bucket, in every table.
    full: BatchDims,
}

/// `x` as an `i128` (saturating; the costs here stay far below).
fn wide(x: u128) -> i128 {
    i128::try_from(x).unwrap_or(i128::MAX / 4)
}

impl Search<'_> {
    /// Cost of one step of `real` padded to `b`.
    fn padded_cost(&self, b: BatchDims, real: BatchDims) -> u128 {
        u128::from(b.tokens.saturating_sub(real.tokens)) * u128::from(self.cost.token_ns)
    }

    /// Per-shape cost under `chosen` (sorted ascending).
    fn costs(&self, chosen: &[BatchDims]) -> Costs {
        let mut out = Costs {
            cost: Vec::with_capacity(self.shapes.len()),
            hosted: Vec::with_capacity(self.shapes.len()),
        };
        for (s, &e) in self.shapes.iter().zip(&self.eager) {
            let m = match_bucket(s.real, chosen, self.facts.strict);
            out.cost.push(m.map_or(e, |b| self.padded_cost(b, s.real)));
            out.hosted.push(m);
        }
        out
    }

    fn total(&self, costs: &Costs) -> u128 {
        self.shapes
            .iter()
            .zip(&costs.cost)
            .map(|(s, &c)| c.saturating_mul(u128::from(s.steps)))
            .fold(0, u128::saturating_add)
    }

    /// The best candidate to add given the current costs: `(gain, bucket)`, gain > 0.
    ///
    /// A step a new bucket of `T` tokens hosts pays `w · (T − t)` afterwards. One already
    /// in a bucket keeps the cheaper of the two (matching takes the smallest bucket); an
    /// eager one has no choice, so its gain may be negative. Per class, a sweep over `T`
    /// keeps the sum over the steps the candidate changes.
    fn best_addition(&self, costs: &Costs, chosen: &[BatchDims]) -> Option<(u128, BatchDims)> {
        let w = i128::from(self.cost.token_ns);
        let n = self.shapes.len();
        // Per shape: steps and `c + t · w` (a step's gain at T is that less T · w).
        let weight: Vec<(i128, i128)> = self
            .shapes
            .iter()
            .zip(&costs.cost)
            .map(|(s, &c)| (i128::from(s.steps), wide(c) + i128::from(s.real.tokens) * w))
            .collect();
        let mut best: Option<(u128, BatchDims)> = None;
        let mut active = vec![false; n];
        let mut gone = vec![false; n];
        for &class in &self.classes {
            // A step changes for T in [start, stop): a hosted step stops gaining once
            // T · w >= c + t · w; an eager one never stops.
            let mut starts: Vec<(u64, usize)> = Vec::new();
            let mut stops: Vec<(i128, usize)> = Vec::new();
            for (i, s) in self.shapes.iter().enumerate() {
                let Some(tau) = self.facts.threshold(class, s.real) else {
                    continue;
                };
                starts.push((tau, i));
                if costs.hosted.get(i).is_some_and(Option::is_some)
                    && let Some(&(_, a)) = weight.get(i)
                {
                    let stop = if w == 0 {
                        i128::MAX
                    } else {
                        a.div_euclid(w) + i128::from(a.rem_euclid(w) != 0)
                    };
                    stops.push((stop, i));
                }
            }
            if starts.is_empty() {
                continue;
            }
            let mut candidates: Vec<u64> = starts.iter().map(|&(t, _)| t).collect();
            candidates.sort_unstable();
            candidates.dedup();
            starts.sort_unstable();
            stops.sort_unstable();
            active.iter_mut().for_each(|a| *a = false);
            gone.iter_mut().for_each(|g| *g = false);
            // Running sums over the steps in [start, stop): Σ steps · (c + t · w), Σ steps.
            let (mut sum_a, mut sum_n) = (0i128, 0i128);
            let (mut si, mut ei) = (0usize, 0usize);
            for &t in &candidates {
                while let Some(&(tau, i)) = starts.get(si) {
                    if tau > t {
                        break;
                    }
                    si += 1;
                    if !gone.get(i).copied().unwrap_or(true)
                        && let (Some(&(k, a)), Some(on)) = (weight.get(i), active.get_mut(i))
                    {
                        *on = true;
                        sum_a += k * a;
                        sum_n += k;
                    }
                }
                while let Some(&(z, i)) = stops.get(ei) {
                    if z > i128::from(t) {
                        break;
                    }
                    ei += 1;
                    if let Some(g) = gone.get_mut(i) {
                        *g = true;
                    }
                    if let (Some(&(k, a)), Some(on)) = (weight.get(i), active.get_mut(i))
                        && *on
                    {
                        *on = false;
                        sum_a -= k * a;
                        sum_n -= k;
                    }
                }
                let Ok(gain) = u128::try_from(sum_a - i128::from(t) * w * sum_n) else {
                    continue;
                };
                if gain == 0 {
                    continue;
                }
                let Some(b) = self.facts.bucket(class, t) else {
                    continue;
                };
                if chosen.binary_search(&b).is_ok() {
                    continue;
                }
                if best.is_none_or(|(g, bb)| gain > g || (gain == g && b < bb)) {
                    best = Some((gain, b));
                }
            }
        }
        best
    }

    /// Greedy additions until `max_graphs` buckets or no gain.
    fn fill(&self, mut chosen: Vec<BatchDims>, max_graphs: usize) -> Vec<BatchDims> {
        let mut costs = self.costs(&chosen);
        while chosen.len() < max_graphs {
            let Some((_, b)) = self.best_addition(&costs, &chosen) else {
                break;
            };
            chosen.push(b);
            chosen.sort_unstable();
            costs = self.costs(&chosen);
        }
        chosen
    }

    /// One round of swaps: the new table and its total if it is cheaper.
    fn swap_round(
        &self,
        mut chosen: Vec<BatchDims>,
        mut total: u128,
    ) -> Option<(Vec<BatchDims>, u128)> {
        let mut changed = false;
        let mut i = 0;
        while let Some(&out) = chosen.get(i) {
            i += 1;
            if out == self.full {
                continue;
            }
            let rest: Vec<BatchDims> = chosen.iter().copied().filter(|&b| b != out).collect();
            let rest_costs = self.costs(&rest);
            let rest_total = self.total(&rest_costs);
            let (new_total, new_set) = match self.best_addition(&rest_costs, &rest) {
                Some((gain, b)) => {
                    let mut set = rest;
                    set.push(b);
                    set.sort_unstable();
                    (rest_total.saturating_sub(gain), set)
                }
                None => (rest_total, rest),
            };
            if new_total < total {
                chosen = new_set;
                total = new_total;
                changed = true;
            }
        }
        changed.then_some((chosen, total))
    }

    /// Re-places every class's token counts by dynamic programming, with each step
    /// assigned to the class of the bucket it lands in under `chosen` (an eager one to
    /// the first class that could host it), and shares `max_graphs` among the classes.
    /// Returns the new table (ascending); the caller keeps it if it is cheaper.
    fn replace(&self, chosen: &[BatchDims], max_graphs: usize) -> Vec<BatchDims> {
        let costs = self.costs(chosen);
        let mut classes: Vec<Class> = chosen.iter().map(|&b| self.facts.class_of(b)).collect();
        classes.sort_unstable();
        classes.dedup();
        let mut groups: Vec<Vec<Group>> = vec![Vec::new(); classes.len()];
        for (i, s) in self.shapes.iter().enumerate() {
            let class = match costs.hosted.get(i).copied().flatten() {
                Some(b) => Some(self.facts.class_of(b)),
                None => classes
                    .iter()
                    .copied()
                    .find(|&c| self.facts.threshold(c, s.real).is_some()),
            };
            let Some(class) = class else { continue };
            let (Some(k), Some(tau)) = (
                classes.iter().position(|&x| x == class),
                self.facts.threshold(class, s.real),
            ) else {
                continue;
            };
            let n = u128::from(s.steps);
            if let Some(g) = groups.get_mut(k) {
                g.push(Group {
                    tau,
                    steps: n,
                    tokens: n * u128::from(s.real.tokens),
                    eager: n * self.eager.get(i).copied().unwrap_or(0),
                });
            }
        }
        let curves: Vec<Curve> = classes
            .iter()
            .zip(groups)
            .map(|(&class, g)| self.class_curve(class, g, max_graphs))
            .collect();
        // Share the graphs among the classes: a knapsack over the curves.
        let mut best: Vec<Option<(u128, Vec<usize>)>> = vec![None; max_graphs + 1];
        if let Some(b) = best.get_mut(0) {
            *b = Some((0, Vec::new()));
        }
        for curve in &curves {
            let mut next: Vec<Option<(u128, Vec<usize>)>> = vec![None; max_graphs + 1];
            for (used, entry) in best.iter().enumerate() {
                let Some((cost, ks)) = entry else { continue };
                for (k, point) in curve.iter().enumerate() {
                    let Some((c, _)) = point else { continue };
                    let Some(slot) = next.get_mut(used + k) else {
                        break;
                    };
                    let total = cost.saturating_add(*c);
                    if slot.as_ref().is_none_or(|(t, _)| total < *t) {
                        let mut ks = ks.clone();
                        ks.push(k);
                        *slot = Some((total, ks));
                    }
                }
            }
            best = next;
        }
        let Some((_, ks)) = best.iter().flatten().min_by_key(|(c, _)| *c) else {
            return chosen.to_vec();
        };
        let mut out: Vec<BatchDims> = vec![self.full];
        for ((&class, curve), &k) in classes.iter().zip(&curves).zip(ks) {
            if let Some(Some((_, ts))) = curve.get(k) {
                out.extend(ts.iter().filter_map(|&t| self.facts.bucket(class, t)));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A class's cost with 0..=`max_k` token counts (`None`: not possible) and the counts,
    /// by dynamic programming over its steps sorted by `τ`: a count at a step's `τ` hosts
    /// it and every step since the previous count; steps above the largest count run
    /// eagerly (the decode-only class must end at the full decode bucket).
    fn class_curve(&self, class: Class, mut groups: Vec<Group>, max_k: usize) -> Curve {
        let w = u128::from(self.cost.token_ns);
        let must_end = class == Class::Decode;
        if must_end {
            groups.push(Group {
                tau: u64::from(self.full.tokens),
                ..Group::default()
            });
        }
        groups.sort_unstable_by_key(|g| g.tau);
        let mut v: Vec<Group> = Vec::with_capacity(groups.len());
        for g in groups {
            match v.last_mut() {
                Some(last) if last.tau == g.tau => {
                    last.steps += g.steps;
                    last.tokens += g.tokens;
                    last.eager += g.eager;
                }
                _ => v.push(g),
            }
        }
        let m = v.len();
        // Prefix sums: steps, steps · t, eager cost.
        let mut pre = vec![Group::default(); m + 1];
        for (j, g) in v.iter().enumerate() {
            let prev = pre.get(j).copied().unwrap_or_default();
            if let Some(p) = pre.get_mut(j + 1) {
                p.steps = prev.steps.saturating_add(g.steps);
                p.tokens = prev.tokens.saturating_add(g.tokens);
                p.eager = prev.eager.saturating_add(g.eager);
            }
        }
        let at = |j: usize| pre.get(j).copied().unwrap_or_default();
        let legal: Vec<bool> = v
            .iter()
            .map(|g| self.facts.bucket(class, g.tau).is_some())
            .collect();
        let is_legal = |j: usize| legal.get(j).copied().unwrap_or(false);
        // Hosting the steps of groups i..=j at the count v[j].tau.
        let span = |i: usize, j: usize| -> u128 {
            let tau = u128::from(v.get(j).map_or(0, |g| g.tau));
            let (hi, lo) = (at(j + 1), at(i));
            tau.saturating_mul(hi.steps.saturating_sub(lo.steps))
                .saturating_sub(hi.tokens.saturating_sub(lo.tokens))
                .saturating_mul(w)
        };
        let eager_from = |j: usize| at(m).eager.saturating_sub(at(j).eager);
        let none = u128::MAX;
        let mut out: Curve = vec![None; max_k + 1];
        if !must_end && let Some(o) = out.get_mut(0) {
            *o = Some((eager_from(0), Vec::new()));
        }
        // f[j]: best cost of groups 0..=j with k counts, the last at j; back[k][j]: the
        // count before it.
        let mut f: Vec<u128> = (0..m)
            .map(|j| if is_legal(j) { span(0, j) } else { none })
            .collect();
        let mut back: Vec<Vec<usize>> = vec![vec![usize::MAX; m]];
        for k in 1..=max_k {
            if k > 1 {
                let mut g = vec![none; m];
                let mut b = vec![usize::MAX; m];
                for j in 0..m {
                    if !is_legal(j) {
                        continue;
                    }
                    let (mut gj, mut bj) = (none, usize::MAX);
                    for (i, &fi) in f.iter().enumerate().take(j) {
                        if fi == none {
                            continue;
                        }
                        let c = fi.saturating_add(span(i + 1, j));
                        if c < gj {
                            (gj, bj) = (c, i);
                        }
                    }
                    if let (Some(x), Some(y)) = (g.get_mut(j), b.get_mut(j)) {
                        (*x, *y) = (gj, bj);
                    }
                }
                f = g;
                back.push(b);
            }
            // Close: the last count at j and the rest eager (decode-only: j = m - 1).
            let mut best: Option<(u128, usize)> = None;
            for (j, &fj) in f.iter().enumerate() {
                if fj == none || (must_end && j + 1 != m) {
                    continue;
                }
                let c = fj.saturating_add(eager_from(j + 1));
                if best.is_none_or(|(b, _)| c < b) {
                    best = Some((c, j));
                }
            }
            let (Some((c, mut j)), Some(o)) = (best, out.get_mut(k)) else {
                continue;
            };
            let mut ts = Vec::with_capacity(k);
            for level in (0..k).rev() {
                ts.push(v.get(j).map_or(0, |g| g.tau));
                if level == 0 {
                    break;
                }
                j = back
                    .get(level)
                    .and_then(|b| b.get(j))
                    .copied()
                    .unwrap_or(usize::MAX);
            }
            *o = Some((c, ts));
        }
        out
    }
}

/// The classes worth candidates for `shapes` (see the module docs).
fn classes(facts: &LayoutFacts, shapes: &[Shape]) -> Vec<Class> {
    let mut classes: Vec<Class> = vec![Class::Decode];
    if facts.strict {
        classes.extend(
            shapes
                .iter()
                .map(|s| u64::from(s.real.prefill))
                .filter(|&p| p > 0)
                .map(Class::Prefill),
        );
    } else if shapes.iter().any(|s| s.real.prefill > 0) {
        classes.push(Class::Mixed);
    }
    classes.sort_unstable();
    classes.dedup();
    classes
}

/// The eager cost of one step of each shape.
fn eager_costs(facts: &LayoutFacts, cost: CostModel, shapes: &[Shape]) -> Vec<u128> {
    shapes
        .iter()
        .map(|s| {
            let pad = facts.eager(s.real);
            u128::from(pad.tokens.saturating_sub(s.real.tokens)) * u128::from(cost.token_ns)
                + u128::from(cost.eager_ns)
        })
        .collect()
}

/// Chooses at most `max_graphs` buckets for `shapes` (see the module docs).
///
/// # Errors
///
/// [`OptimizeError`] when no table can hold the full decode bucket.
pub fn optimize(
    facts: LayoutFacts,
    cost: CostModel,
    shapes: &[Shape],
    max_graphs: usize,
) -> Result<Choice, OptimizeError> {
    if max_graphs == 0 {
        return Err(OptimizeError::NoRoom(max_graphs));
    }
    let full = facts.rules.full_decode();
    if !facts.legal(full) {
        return Err(OptimizeError::NoFullDecode(full));
    }
    let steps = shapes
        .iter()
        .map(|s| u128::from(s.steps))
        .fold(0, u128::saturating_add);
    for (what, value, limit) in [
        (
            "the cost of a padded token (ns)",
            u128::from(cost.token_ns),
            MAX_TOKEN_NS,
        ),
        (
            "the eager penalty (ns)",
            u128::from(cost.eager_ns),
            MAX_EAGER_NS,
        ),
        ("the number of steps", steps, MAX_STEPS),
    ] {
        if value > u128::from(limit) {
            return Err(OptimizeError::TooLarge {
                what,
                value,
                limit: u128::from(limit),
            });
        }
    }
    let search = Search {
        facts,
        cost,
        shapes,
        eager: eager_costs(&facts, cost, shapes),
        classes: classes(&facts, shapes),
        full,
    };
    let mut chosen = search.fill(vec![full], max_graphs);
    let mut total = search.total(&search.costs(&chosen));
    // Swaps and re-placements until neither lowers the total (bounded, for time).
    for _ in 0..32 {
        let mut improved = false;
        if let Some((set, t)) = search.swap_round(chosen.clone(), total) {
            chosen = set;
            total = t;
            improved = true;
        }
        let placed = search.fill(search.replace(&chosen, max_graphs), max_graphs);
        let t = search.total(&search.costs(&placed));
        if t < total {
            chosen = placed;
            total = t;
            improved = true;
        }
        if !improved {
            break;
        }
    }
    // Buckets no step lands in cost a graph and save nothing.
    let costs = search.costs(&chosen);
    let used: Vec<BatchDims> = chosen
        .iter()
        .copied()
        .filter(|&b| b == full || costs.hosted.contains(&Some(b)))
        .collect();
    Ok(Choice {
        cost: search.total(&search.costs(&used)),
        buckets: used,
    })
}

/// The cost model's total for `shapes` under a table (`buckets` ascending).
pub fn table_cost(
    facts: LayoutFacts,
    cost: CostModel,
    shapes: &[Shape],
    buckets: &[BatchDims],
) -> u128 {
    let search = Search {
        facts,
        cost,
        shapes,
        eager: eager_costs(&facts, cost, shapes),
        classes: Vec::new(),
        full: facts.rules.full_decode(),
    };
    search.total(&search.costs(buckets))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "Test code: a panic is a failed test."
    )]

    use super::*;
    use crate::simulate::rng::Rng;

    fn b(t: u32, p: u32, d: u32) -> BatchDims {
        BatchDims::new(t, p, d)
    }

    fn facts(strict: bool, r: u32, t: u32, s: u32, tp: u32) -> LayoutFacts {
        LayoutFacts {
            rules: TableRules {
                max_requests: r,
                max_tokens: t,
                max_seq_len: 4096,
                speculative_tokens: s,
                tensor_parallel: tp,
            },
            strict,
        }
    }

    const COST: CostModel = CostModel {
        token_ns: 1000,
        eager_ns: 50_000,
    };

    /// Random step shapes as an engine makes them: decode-only or mixed, within R and T.
    fn shapes(f: &LayoutFacts, seed: u64, n: usize) -> Vec<Shape> {
        let mut rng = Rng::new(seed);
        let (r, t, s1) = (
            f.rules.max_requests,
            f.rules.max_tokens,
            f.rules.speculative_tokens + 1,
        );
        let mut v: Vec<Shape> = Vec::new();
        for _ in 0..n {
            let d = rng.range_inclusive(0, r);
            let real = if rng.range_inclusive(0, 1) == 0 || d == r {
                b(d.max(1) * s1, 0, d.max(1))
            } else {
                let p = rng.range_inclusive(1, (r - d).min(4));
                let lo = p + d * s1;
                if lo > t {
                    continue;
                }
                b(rng.range_inclusive(lo, t), p, d)
            };
            v.push(Shape {
                real,
                steps: u64::from(rng.range_inclusive(1, 5)),
            });
        }
        v
    }

    /// The sweep's best gain equals adding its bucket and recounting, and no legal bucket
    /// of any prefill count (not only the classes searched) gains more.
    #[test]
    fn sweep_gains_equal_recounted_gains() {
        for (strict, s, tp) in [(true, 0, 1), (false, 0, 1), (true, 2, 1), (false, 1, 2)] {
            let f = facts(strict, 16, 256, s, tp);
            let sh = shapes(&f, 7 + u64::from(s), 300);
            for n in [1, 3, 6] {
                let choice = optimize(f, COST, &sh, n).unwrap();
                let search = Search {
                    facts: f,
                    cost: COST,
                    shapes: &sh,
                    eager: eager_costs(&f, COST, &sh),
                    classes: classes(&f, &sh),
                    full: f.rules.full_decode(),
                };
                let costs = search.costs(&choice.buckets);
                let before = search.total(&costs);
                let best = search.best_addition(&costs, &choice.buckets);
                let gain_of = |c: BatchDims| {
                    let mut set = choice.buckets.clone();
                    set.push(c);
                    set.sort_unstable();
                    i128::try_from(before).unwrap()
                        - i128::try_from(search.total(&search.costs(&set))).unwrap()
                };
                if let Some((gain, add)) = best {
                    assert_eq!(
                        gain_of(add),
                        i128::try_from(gain).unwrap(),
                        "{strict} {s} {tp}"
                    );
                }
                let top = best.map_or(0, |(g, _)| i128::try_from(g).unwrap());
                for t in 1..=256u64 {
                    for p in 0..=16u64 {
                        // Every legal (T, P) with the most decode slots, any P.
                        let d = if p == 0 {
                            t / (u64::from(s) + 1)
                        } else {
                            (16 - p.min(16)).min(t.saturating_sub(p) / (u64::from(s) + 1))
                        };
                        let c = b(t as u32, p as u32, d as u32);
                        if !f.legal(c) {
                            continue;
                        }
                        if choice.buckets.contains(&c) {
                            continue;
                        }
                        let g = gain_of(c);
                        assert!(
                            g <= top,
                            "{strict} {s} {tp}: {c:?} gains {g} > {top} ({best:?})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tables_are_legal_bounded_and_hold_the_full_decode_step() {
        for (strict, s, tp) in [(true, 0, 1), (false, 0, 1), (true, 2, 1), (false, 0, 4)] {
            let f = facts(strict, 32, 512, s, tp);
            let sh = shapes(&f, 3, 500);
            for n in [1, 2, 5, 12] {
                let c = optimize(f, COST, &sh, n).unwrap();
                assert!(c.buckets.len() <= n);
                assert!(c.buckets.contains(&f.rules.full_decode()));
                assert!(c.buckets.windows(2).all(|w| w[0] < w[1]));
                let checked =
                    attention_layout_codegen::bucket_table::check_table(&c.buckets, &f.rules);
                assert_eq!(checked.as_deref(), Ok(&c.buckets[..]));
                assert_eq!(c.cost, table_cost(f, COST, &sh, &c.buckets));
            }
            // More graphs never cost more; the search is deterministic.
            let costs: Vec<u128> = (1..10)
                .map(|n| optimize(f, COST, &sh, n).unwrap().cost)
                .collect();
            assert!(costs.windows(2).all(|w| w[1] <= w[0]), "{costs:?}");
            assert_eq!(optimize(f, COST, &sh, 7), optimize(f, COST, &sh, 7));
        }
    }

    #[test]
    fn exact_shapes_get_exact_buckets() {
        // Three shapes, four graphs: no padding at all.
        let f = facts(true, 8, 64, 0, 1);
        let sh = [
            Shape {
                real: b(8, 0, 8),
                steps: 10,
            },
            Shape {
                real: b(5, 0, 5),
                steps: 3,
            },
            Shape {
                real: b(40, 2, 6),
                steps: 4,
            },
            Shape {
                real: b(33, 1, 7),
                steps: 2,
            },
        ];
        let c = optimize(f, COST, &sh, 4).unwrap();
        assert_eq!(
            c.buckets,
            [b(5, 0, 5), b(8, 0, 8), b(33, 1, 7), b(40, 2, 6)]
        );
        assert_eq!(c.cost, 0);
        // With strict matching (33, 1, 7) cannot share (40, 2, 6): at 3 graphs one of them
        // pays. Without, the prefill class covers both.
        let c3 = optimize(f, COST, &sh, 3).unwrap();
        assert!(c3.cost > 0);
        // Without strict matching one prefill-class bucket at 40 tokens could host both
        // mixed shapes, but two exact ones at the price of the 5-decode step's padding
        // (3 steps of 3 tokens) beat that (2 steps of 7 tokens).
        let loose = facts(false, 8, 64, 0, 1);
        let c3 = optimize(loose, COST, &sh, 3).unwrap();
        assert_eq!(c3.buckets, [b(8, 0, 8), b(33, 8, 0), b(40, 8, 0)]);
        assert_eq!(c3.cost, 3 * 3 * 1000);
        let c2 = optimize(loose, COST, &sh, 2).unwrap();
        assert_eq!(c2.buckets, [b(8, 0, 8), b(40, 8, 0)]);
        assert_eq!(optimize(f, COST, &sh, 0), Err(OptimizeError::NoRoom(0)));
    }

    #[test]
    fn the_eager_penalty_decides_whether_a_rare_shape_gets_a_graph() {
        // One graph besides the full decode one: either the 3-decode steps (2 steps of 5
        // padded tokens) or the rare mixed step (eager: 4 padded tokens plus the penalty).
        let f = facts(true, 8, 64, 0, 1);
        let sh = [
            Shape {
                real: b(3, 0, 3),
                steps: 2,
            },
            Shape {
                real: b(60, 3, 1),
                steps: 1,
            },
        ];
        let cheap = CostModel {
            token_ns: 1000,
            eager_ns: 0,
        };
        assert_eq!(
            optimize(f, cheap, &sh, 2).unwrap().buckets,
            [b(3, 0, 3), b(8, 0, 8)]
        );
        let dear = CostModel {
            token_ns: 1000,
            eager_ns: 10_000,
        };
        assert_eq!(
            optimize(f, dear, &sh, 2).unwrap().buckets,
            [b(8, 0, 8), b(60, 3, 5)]
        );
        // With room for both, both.
        assert_eq!(optimize(f, cheap, &sh, 3).unwrap().cost, 0);
    }

    /// The exact optimum of a one-dimensional problem: `vals` (ascending, with weights)
    /// hosted by `k` thresholds among the values, the largest value among them; the cost
    /// of a value is the distance up to the next threshold.
    fn exact_1d(vals: &[(u64, u64)], k: usize) -> Option<u64> {
        let m = vals.len();
        if m == 0 {
            return Some(0);
        }
        let cost = |i: usize, j: usize| -> u64 {
            vals[i..=j].iter().map(|&(v, w)| (vals[j].0 - v) * w).sum()
        };
        // f[j]: groups 0..=j with the last threshold at j.
        let mut f: Vec<Option<u64>> = (0..m).map(|j| Some(cost(0, j))).collect();
        for _ in 1..k {
            let g: Vec<Option<u64>> = (0..m)
                .map(|j| {
                    (0..j)
                        .filter_map(|i| f[i].map(|c| c + cost(i + 1, j)))
                        .chain(f[j])
                        .min()
                })
                .collect();
            f = g;
        }
        if k == 0 { None } else { f[m - 1] }
    }

    /// Without strict matching and with eager steps priced out, decode-only and mixed
    /// steps are two one-dimensional problems; the search finds their exact optimum.
    #[test]
    fn without_strict_matching_the_search_is_exact() {
        let dear = CostModel {
            token_ns: 1,
            eager_ns: 1 << 40,
        };
        for (s, seed) in [(0, 1), (0, 2), (2, 3), (0, 4), (1, 5)] {
            let f = facts(false, 16, 256, s, 1);
            let sh = shapes(&f, seed, 120);
            let (mut dec, mut mix) = (
                std::collections::BTreeMap::<u64, u64>::new(),
                std::collections::BTreeMap::<u64, u64>::new(),
            );
            for x in &sh {
                let m = if x.real.prefill == 0 {
                    &mut dec
                } else {
                    &mut mix
                };
                *m.entry(u64::from(x.real.tokens)).or_default() += x.steps;
            }
            dec.entry(u64::from(f.rules.full_decode().tokens))
                .or_default();
            let dec: Vec<(u64, u64)> = dec.into_iter().collect();
            let mix: Vec<(u64, u64)> = mix.into_iter().collect();
            for n in 2..=10 {
                let best = (1..n)
                    .filter_map(|kd| Some(exact_1d(&dec, kd)? + exact_1d(&mix, n - kd)?))
                    .min()
                    .unwrap();
                let got = optimize(f, dear, &sh, n).unwrap();
                assert_eq!(got.cost, u128::from(best), "s {s} seed {seed} n {n}");
            }
        }
    }

    #[test]
    fn numbers_past_the_exact_range_are_refused() {
        let f = facts(true, 8, 64, 0, 1);
        let sh = [Shape {
            real: b(8, 0, 8),
            steps: 1,
        }];
        let too = CostModel {
            token_ns: MAX_TOKEN_NS + 1,
            eager_ns: 0,
        };
        assert!(matches!(
            optimize(f, too, &sh, 4),
            Err(OptimizeError::TooLarge { .. })
        ));
        let many = [Shape {
            real: b(8, 0, 8),
            steps: MAX_STEPS + 1,
        }];
        assert!(optimize(f, COST, &many, 4).is_err());
        // The price of a table never overflows, whatever the numbers.
        let huge = CostModel {
            token_ns: u64::MAX,
            eager_ns: u64::MAX,
        };
        let shapes = [Shape {
            real: b(1, 1, 0),
            steps: u64::MAX,
        }];
        assert_eq!(table_cost(f, huge, &shapes, &[b(8, 0, 8)]), u128::MAX);
    }
}
