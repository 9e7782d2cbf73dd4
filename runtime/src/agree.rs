//! Expert-parallel shape agreement: every rank of an expert-parallel (EP) group must replay
//! the same CUDA graph, or the collectives inside the MoE layers wait for a partner that
//! runs another shape and the group hangs.
//!
//! Before matching, each rank contributes its step's local shape; the group reduces two
//! numbers with MAX — the token count and a "this rank has a prefill request" flag — and
//! every rank applies the same rule to the result ([`AgreedShape::match_bucket`],
//! Megatron-LM's `adjust_batch_dims_for_expert_parallelism` followed by
//! `match_graph_config`):
//!
//! * one rank only: the step is matched on its own, as without expert parallelism;
//! * some rank has a prefill request: no rank uses a graph (each pads its own step
//!   eagerly, docs/SEMANTICS.md §3.4);
//! * otherwise every rank matches `(max tokens, 0, its own decode count)` against the
//!   bucket list. Decode-only buckets have exactly `decode · (s + 1)` tokens, so that is the
//!   smallest decode bucket holding the largest step, the same on every rank.
//!
//! A rank without any request contributes `(0, 0, 0)` and runs the agreed shape with no
//! real request (the zero-request step of docs/SEMANTICS.md §11 E, padded to the agreed bucket).
//!
//! [`ShapeAgreement`] is the one operation a group offers. Implementations: [`Solo`] (no
//! expert parallelism), [`InProcessRank`] (threads of one process, the CPU-side agreement:
//! no device is involved), [`AgreedShape::reduce`] (a host that already knows every rank's
//! shape, as the simulator does) and, with the `nccl` feature, an all-reduce over NCCL
//! (`cuda::nccl::NcclAgreement`). The agreed shape goes to the fill through
//! [`MetadataBackend::step_agreed`]; the rest of the
//! fill is unchanged. `docs/DESIGN.md` ("Expert-parallel shape agreement") has the rule
//! with a worked example and what it costs.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use attention_layout_codegen::{BatchDims, buckets};
use serde::Serialize;

use crate::backend::{BackendError, MetadataBackend};
use crate::fill::StepInfo;
use crate::step::{Phase, StepInput};

/// What an expert-parallel group agreed on for one step: the MAX-reduction of every rank's
/// token count and prefill flag, and the group's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct AgreedShape {
    /// Ranks in the group. With one rank there is nothing to agree on: the step is matched
    /// on its own (Megatron returns the local shape unchanged when the EP size is 1).
    pub ranks: u32,
    /// The largest real token count of any rank's step.
    pub max_tokens: u32,
    /// Whether any rank's step has a prefill request.
    pub any_prefill: bool,
}

impl AgreedShape {
    /// What one rank contributes: its own token count and prefill flag, as a group of one.
    pub const fn solo(local: BatchDims) -> Self {
        Self {
            ranks: 1,
            max_tokens: local.tokens,
            any_prefill: local.prefill > 0,
        }
    }

    /// Combines the reductions of two disjoint sets of ranks (MAX of the token counts, OR
    /// of the flags, sum of the rank counts).
    pub const fn combine(self, other: Self) -> Self {
        Self {
            ranks: self.ranks.saturating_add(other.ranks),
            max_tokens: if self.max_tokens > other.max_tokens {
                self.max_tokens
            } else {
                other.max_tokens
            },
            any_prefill: self.any_prefill || other.any_prefill,
        }
    }

    /// The CPU-side agreement of a host that knows every rank's local shape (rank order
    /// does not matter). `None` for an empty group.
    pub fn reduce(locals: &[BatchDims]) -> Option<Self> {
        locals.iter().map(|&l| Self::solo(l)).reduce(Self::combine)
    }

    /// Whether `local` can be one of the shapes this agreement reduced: its tokens do not
    /// exceed the maximum, and a prefill request sets the flag. A rank whose step is not
    /// covered agreed on another step than the one it builds.
    pub const fn covers(&self, local: BatchDims) -> bool {
        local.tokens <= self.max_tokens && (local.prefill == 0 || self.any_prefill)
    }

    /// The shape a rank matches against the bucket list under this agreement (Megatron's
    /// adjusted batch dimensions): `None` when the group runs eagerly (some rank has a
    /// prefill request), `local` itself for a group of one, else `(max tokens, local
    /// prefill, local decode)`.
    pub const fn adjusted(&self, local: BatchDims) -> Option<BatchDims> {
        if self.ranks <= 1 {
            Some(local)
        } else if self.any_prefill {
            None
        } else {
            Some(BatchDims::new(self.max_tokens, local.prefill, local.decode))
        }
    }

    /// The bucket a rank with step shape `local` replays under this agreement (`None`:
    /// eager), from the ascending bucket list; `strict` as for
    /// [`buckets::match_bucket`] (hybrid models match strictly). Every rank of a group
    /// with the same bucket list gets the same answer.
    pub fn match_bucket(
        &self,
        local: BatchDims,
        buckets_sorted_ascending: &[BatchDims],
        strict: bool,
    ) -> Option<BatchDims> {
        let adjusted = self.adjusted(local)?;
        buckets::match_bucket(adjusted, buckets_sorted_ascending, strict)
    }
}

/// The real shape `(Σ q, prefill rows, decode rows)` of a step, as the fill will compute
/// it (paused rows contribute nothing). What a rank contributes to the agreement before
/// it builds the step; the fill checks the step against the agreement
/// ([`StepError::NotAgreed`](crate::StepError::NotAgreed)). Saturates at `u32::MAX`.
pub fn step_shape(input: &StepInput<'_>) -> BatchDims {
    let mut shape = BatchDims::default();
    for row in input.rows {
        match row.phase {
            Phase::Paused => continue,
            Phase::Decode => shape.decode = shape.decode.saturating_add(1),
            Phase::Prefill => shape.prefill = shape.prefill.saturating_add(1),
        }
        shape.tokens = shape.tokens.saturating_add(row.query_length);
    }
    shape
}

/// One step of an expert-parallel rank: contributes the step's shape ([`step_shape`]) to
/// the group, waits for the agreement and builds the step's metadata with it. A rank with
/// no request passes a step without rows (the dummy step). Returns the agreement and the
/// step's info.
///
/// # Errors
///
/// [`BackendError::Agree`] when the group fails (nothing was built); the backend's errors
/// otherwise (nothing changed, but the group has agreed on this step: every rank must
/// still run a step of the agreed shape, or the group falls out of step).
pub fn agreed_step(
    backend: &mut (impl MetadataBackend + ?Sized),
    group: &mut (impl ShapeAgreement + ?Sized),
    input: &StepInput<'_>,
) -> Result<(AgreedShape, StepInfo), BackendError> {
    let agreed = group.agree(step_shape(input))?;
    let info = backend.step_agreed(input, &agreed)?;
    Ok((agreed, info))
}

/// Why an agreement failed. A failed agreement leaves the group unusable (its ranks may
/// disagree about which step they are in); set the group up again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgreeError {
    /// A group needs at least one rank, and at most `u32::MAX`.
    #[error("an expert-parallel group needs 1 to {limit} ranks, got {ranks}")]
    GroupSize {
        /// Ranks asked for.
        ranks: usize,
        /// The largest group.
        limit: u32,
    },
    /// Another rank left the group, timed out or failed: this rank cannot agree any more.
    #[error("rank {rank}: the expert-parallel group is broken: {why}")]
    Broken {
        /// This rank.
        rank: u32,
        /// What broke it.
        why: String,
    },
    /// Not every rank arrived within the group's timeout.
    #[error("rank {rank}: {arrived} of {ranks} ranks agreed within {waited_ms} ms; giving up")]
    Timeout {
        /// This rank.
        rank: u32,
        /// Ranks that had arrived.
        arrived: u32,
        /// Ranks in the group.
        ranks: u32,
        /// How long this rank waited.
        waited_ms: u64,
    },
    /// The NCCL library cannot be loaded (or this build has no NCCL support).
    #[error("NCCL unavailable: {0}")]
    NcclUnavailable(String),
    /// An NCCL call failed.
    #[error("NCCL error in {what}: {code}")]
    Nccl {
        /// The call.
        what: &'static str,
        /// NCCL's result code.
        code: String,
    },
    /// A CUDA call around the all-reduce failed.
    #[error("CUDA error in {what}: {why}")]
    Cuda {
        /// The call.
        what: &'static str,
        /// The driver's error.
        why: String,
    },
}

/// An expert-parallel group, seen from one rank.
pub trait ShapeAgreement {
    /// Reduces this rank's local step shape over the group and returns what the group
    /// agreed. Every rank of the group calls it once per step, in the same order of steps,
    /// and every rank gets the same answer. A rank with no request passes `(0, 0, 0)`.
    ///
    /// # Errors
    ///
    /// [`AgreeError`]; afterwards the group is unusable.
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError>;
}

/// A group of one rank (no expert parallelism): agrees with itself at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Solo;

impl ShapeAgreement for Solo {
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError> {
        Ok(AgreedShape::solo(local))
    }
}

impl<T: ShapeAgreement + ?Sized> ShapeAgreement for &mut T {
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError> {
        (**self).agree(local)
    }
}

impl<T: ShapeAgreement + ?Sized> ShapeAgreement for Box<T> {
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError> {
        (**self).agree(local)
    }
}

/// The state of an in-process group's current round.
#[derive(Debug)]
struct Round {
    ranks: u32,
    /// Ranks that contributed to the current round.
    arrived: u32,
    /// The reduction of their contributions.
    partial: Option<AgreedShape>,
    /// Rounds completed.
    generation: u64,
    /// The result of the last completed round.
    result: AgreedShape,
    /// Set when the group can no longer agree.
    broken: Option<String>,
}

#[derive(Debug)]
struct Shared {
    round: Mutex<Round>,
    done: Condvar,
    timeout: Option<Duration>,
}

/// One rank of an in-process group ([`in_process_group`]): each rank on its own thread
/// (ranks are `Send`), all sharing one host-side reduction — the CPU-side agreement. No
/// device and no host-device copy is involved; the cost is a mutex and a condition
/// variable per step (`BENCHMARKS.md`).
#[derive(Debug)]
pub struct InProcessRank {
    shared: Arc<Shared>,
    rank: u32,
    ranks: u32,
}

/// An in-process group of `ranks` ranks; `timeout` bounds how long a rank waits for the
/// others in one round (`None`: forever, as a collective does). Rank `i` is element `i`.
///
/// # Errors
///
/// [`AgreeError::GroupSize`] for 0 ranks or more than `u32::MAX`.
pub fn in_process_group(
    ranks: usize,
    timeout: Option<Duration>,
) -> Result<Vec<InProcessRank>, AgreeError> {
    let n = u32::try_from(ranks)
        .ok()
        .filter(|&n| n >= 1)
        .ok_or(AgreeError::GroupSize {
            ranks,
            limit: u32::MAX,
        })?;
    let shared = Arc::new(Shared {
        round: Mutex::new(Round {
            ranks: n,
            arrived: 0,
            partial: None,
            generation: 0,
            result: AgreedShape::default(),
            broken: None,
        }),
        done: Condvar::new(),
        timeout,
    });
    Ok((0..n)
        .map(|rank| InProcessRank {
            shared: Arc::clone(&shared),
            rank,
            ranks: n,
        })
        .collect())
}

impl InProcessRank {
    /// This rank's index in the group.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Ranks in the group.
    pub fn ranks(&self) -> u32 {
        self.ranks
    }

    fn lock(&self) -> Result<MutexGuard<'_, Round>, AgreeError> {
        self.shared.round.lock().map_err(|_| AgreeError::Broken {
            rank: self.rank,
            why: "a rank panicked while agreeing".to_owned(),
        })
    }

    fn broken(&self, why: &str) -> AgreeError {
        AgreeError::Broken {
            rank: self.rank,
            why: why.to_owned(),
        }
    }
}

impl ShapeAgreement for InProcessRank {
    fn agree(&mut self, local: BatchDims) -> Result<AgreedShape, AgreeError> {
        let start = Instant::now();
        let mut round = self.lock()?;
        if let Some(why) = &round.broken {
            return Err(self.broken(why));
        }
        let mine = AgreedShape::solo(local);
        round.partial = Some(round.partial.map_or(mine, |p| p.combine(mine)));
        round.arrived += 1;
        if round.arrived >= round.ranks {
            // The last rank of the round publishes the result and wakes the others.
            let result = round.partial.take().unwrap_or(mine);
            round.result = result;
            round.arrived = 0;
            round.generation = round.generation.wrapping_add(1);
            drop(round);
            self.shared.done.notify_all();
            return Ok(result);
        }
        let generation = round.generation;
        loop {
            // A completed round counts even if a rank left right after completing it.
            if round.generation != generation {
                return Ok(round.result);
            }
            if let Some(why) = &round.broken {
                return Err(self.broken(why));
            }
            round = match self.shared.timeout {
                None => self
                    .shared
                    .done
                    .wait(round)
                    .map_err(|_| self.broken("a rank panicked while agreeing"))?,
                Some(limit) => {
                    let waited = start.elapsed();
                    if waited >= limit {
                        let e = AgreeError::Timeout {
                            rank: self.rank,
                            arrived: round.arrived,
                            ranks: round.ranks,
                            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                        };
                        round.broken = Some(e.to_string());
                        drop(round);
                        self.shared.done.notify_all();
                        return Err(e);
                    }
                    self.shared
                        .done
                        .wait_timeout(round, limit - waited)
                        .map_err(|_| self.broken("a rank panicked while agreeing"))?
                        .0
                }
            };
        }
    }
}

impl Drop for InProcessRank {
    /// A rank that leaves breaks the group: ranks waiting for it (now or later) fail
    /// instead of waiting forever.
    fn drop(&mut self) {
        if let Ok(mut round) = self.shared.round.lock()
            && round.broken.is_none()
        {
            round.broken = Some(format!("rank {} left the group", self.rank));
        }
        self.shared.done.notify_all();
    }
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

    fn b(t: u32, p: u32, d: u32) -> BatchDims {
        BatchDims::new(t, p, d)
    }

    #[test]
    fn the_reduction_is_a_max_and_an_or_over_ranks() {
        let r = AgreedShape::reduce(&[b(5, 0, 5), b(0, 0, 0), b(12, 0, 12)]).unwrap();
        assert_eq!(
            r,
            AgreedShape {
                ranks: 3,
                max_tokens: 12,
                any_prefill: false
            }
        );
        let r = AgreedShape::reduce(&[b(5, 0, 5), b(3, 1, 2)]).unwrap();
        assert!(r.any_prefill);
        assert_eq!(r.max_tokens, 5);
        assert_eq!(AgreedShape::reduce(&[]), None);
        assert!(r.covers(b(3, 1, 2)) && r.covers(b(5, 0, 5)) && r.covers(b(0, 0, 0)));
        assert!(!r.covers(b(6, 0, 6)));
        let decode_only = AgreedShape::reduce(&[b(5, 0, 5)]).unwrap();
        assert!(!decode_only.covers(b(2, 1, 1)));
    }

    #[test]
    fn a_dropped_rank_breaks_the_group_instead_of_hanging_it() {
        let mut group = in_process_group(2, None).unwrap();
        let second = group.pop().unwrap();
        drop(second);
        let e = group[0].agree(b(1, 0, 1)).unwrap_err();
        assert!(matches!(e, AgreeError::Broken { rank: 0, .. }), "{e}");
    }

    #[test]
    fn a_missing_rank_times_out_and_breaks_the_group() {
        let mut group = in_process_group(2, Some(Duration::from_millis(20))).unwrap();
        let e = group[0].agree(b(1, 0, 1)).unwrap_err();
        assert!(
            matches!(
                e,
                AgreeError::Timeout {
                    rank: 0,
                    arrived: 1,
                    ranks: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = group[1].agree(b(1, 0, 1)).unwrap_err();
        assert!(matches!(e, AgreeError::Broken { rank: 1, .. }), "{e}");
    }

    #[test]
    fn groups_of_no_ranks_are_refused() {
        assert!(matches!(
            in_process_group(0, None),
            Err(AgreeError::GroupSize { ranks: 0, .. })
        ));
    }
}
