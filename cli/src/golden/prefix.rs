//! Replay of the prefix-caching record kinds (`prefix_kv`, `prefix_hash`, `mamba_cache`,
//! `mamba_offsets`; `testdata/GOLDEN-README.md`) against [`attention_layout::prefix`].
//!
//! Every op's result (or error) and the full state after it are compared. Where this
//! crate deliberately differs from Megatron (`docs/DESIGN.md`, "Prefix caching"), the op
//! is reported as a deviation instead of a mismatch; when the difference leaves a state
//! that legitimately differs from Megatron's, that state is not compared again until the
//! trace resets it (`reset` for the KV allocator, `mamba_reset` for the Mamba cache).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Cmp, Unused, spelled};
use attention_layout::prefix::{
    BlockHash, DeregistrationObserver, EvictionPolicy, MambaMode, MambaStateCache, MatchQuery,
    OffsetsQuery, PrefixError, PrefixKvAllocator, block_hashes, compute_intermediate_offsets,
    compute_prefix_match,
};

// ---- records ---------------------------------------------------------------------------

type Pairs = Vec<(BlockHash, i32)>;
type Calls = Vec<(Vec<i32>, Vec<BlockHash>)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvState {
    avail: usize,
    free: Vec<i32>,
    #[serde(rename = "ref")]
    refs: Vec<u32>,
    hash: Vec<BlockHash>,
    map: Pairs,
    evictable: usize,
    allocatable: usize,
    ts: Option<Vec<u64>>,
    parent: Option<Vec<i32>>,
    children: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MambaState {
    free_count: usize,
    free: Vec<i32>,
    block_to_slot: Vec<i32>,
    slot_to_block: Vec<i32>,
    map: Pairs,
}

/// The state after an op: a bare KV state (`prefix_kv`) or both (`mamba_cache`).
pub(super) trait TraceState {
    fn kv(&self) -> &KvState;
    fn mamba(&self) -> Option<&MambaState>;
}

impl TraceState for KvState {
    fn kv(&self) -> &KvState {
        self
    }
    fn mamba(&self) -> Option<&MambaState> {
        None
    }
}

/// A `mamba_cache` op's state after it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheState {
    kv: KvState,
    mamba: MambaState,
}

impl TraceState for CacheState {
    fn kv(&self) -> &KvState {
        &self.kv
    }
    fn mamba(&self) -> Option<&MambaState> {
        Some(&self.mamba)
    }
}

/// An op with its arguments.
enum Op {
    Tick {
        clock: u64,
    },
    Allocate {
        n: usize,
        result: Option<Vec<i32>>,
    },
    Release {
        block_ids: Vec<i32>,
    },
    Retain {
        block_ids: Vec<i32>,
    },
    Register {
        block_ids: Vec<i32>,
        hashes: Vec<BlockHash>,
        parent_hashes: Option<Vec<BlockHash>>,
    },
    Evict {
        n: usize,
        result: Option<bool>,
    },
    IsMemoryAvailable {
        n: usize,
        potential_matched_count: usize,
        result: Option<bool>,
    },
    Reset,
    AllocateSlots {
        block_ids: Vec<i32>,
        result: Option<Vec<i32>>,
        required: Option<usize>,
        available: Option<usize>,
        evicted_blocks: Vec<i32>,
        evicted_own_block: bool,
        order_unspecified: bool,
    },
    RegisterMambaHashes {
        block_ids: Vec<i32>,
        hashes: Vec<BlockHash>,
    },
    Query {
        block_id: i32,
        result: Option<(i32, bool)>,
    },
    Invalidate {
        block_id: i32,
    },
    MambaReset,
}

/// An op's name as the record spells it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum OpName {
    Tick,
    Allocate,
    Release,
    Retain,
    Register,
    Evict,
    IsMemoryAvailable,
    Reset,
    AllocateSlots,
    RegisterMambaHashes,
    Query,
    Invalidate,
    MambaReset,
}

impl OpName {
    /// Whether the op acts on the Mamba state cache.
    fn on_mamba_cache(self) -> bool {
        matches!(
            self,
            Self::AllocateSlots
                | Self::RegisterMambaHashes
                | Self::Query
                | Self::Invalidate
                | Self::MambaReset
        )
    }
}

/// An op's `result`: blocks or slots, a flag, or a Mamba cache query's `[slot, has_state]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OpResult {
    Ids(Vec<i32>),
    Flag(bool),
    Query((i32, bool)),
}

/// One op of a trace as the record writes it: the op's name, the arguments of every op
/// (each op takes its own), what it returned or raised, and the state after it. Flat, so a
/// bad field is reported by its name (`ops[3].n`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpFields<S> {
    op: OpName,
    clock: Option<u64>,
    n: Option<usize>,
    block_ids: Option<Vec<i32>>,
    hashes: Option<Vec<BlockHash>>,
    /// `register`: `null` for no parents.
    parent_hashes: Option<Vec<BlockHash>>,
    potential_matched_count: Option<usize>,
    block_id: Option<i32>,
    result: Option<OpResult>,
    /// `allocate_slots` refused: Megatron's `MambaSlotCapacityError`.
    required: Option<usize>,
    available: Option<usize>,
    #[serde(default)]
    evicted_blocks: Vec<i32>,
    #[serde(default)]
    evicted_own_block: bool,
    #[serde(default)]
    order_unspecified: bool,
    error: Option<String>,
    state: Option<S>,
    #[serde(default)]
    deregistered: Calls,
}

/// One op of a trace, read from [`OpFields`]: an op that lacks one of its arguments, or has
/// a result of another op's type, is an error naming it.
#[derive(Deserialize)]
#[serde(try_from = "OpFields<S>", bound = "S: Deserialize<'de>")]
struct OpRecord<S> {
    name: OpName,
    op: Op,
    error: Option<String>,
    state: Option<S>,
    deregistered: Calls,
}

impl<S> TryFrom<OpFields<S>> for OpRecord<S> {
    type Error = String;

    fn try_from(f: OpFields<S>) -> Result<Self, String> {
        let name = f.op;
        let lacks = |key: &str| format!("{} lacks `{key}`", spelled(name));
        let result_type = || format!("{}: `result` of another op's type", spelled(name));
        let ids = |r: Option<OpResult>| match r {
            None => Ok(None),
            Some(OpResult::Ids(v)) => Ok(Some(v)),
            Some(_) => Err(result_type()),
        };
        let flag = |r: Option<OpResult>| match r {
            None => Ok(None),
            Some(OpResult::Flag(b)) => Ok(Some(b)),
            Some(_) => Err(result_type()),
        };
        let n = || f.n.ok_or_else(|| lacks("n"));
        let block_ids = || f.block_ids.clone().ok_or_else(|| lacks("block_ids"));
        let hashes = || f.hashes.clone().ok_or_else(|| lacks("hashes"));
        let block_id = || f.block_id.ok_or_else(|| lacks("block_id"));
        let op = match name {
            OpName::Tick => Op::Tick {
                clock: f.clock.ok_or_else(|| lacks("clock"))?,
            },
            OpName::Allocate => Op::Allocate {
                n: n()?,
                result: ids(f.result)?,
            },
            OpName::Release => Op::Release {
                block_ids: block_ids()?,
            },
            OpName::Retain => Op::Retain {
                block_ids: block_ids()?,
            },
            OpName::Register => Op::Register {
                block_ids: block_ids()?,
                hashes: hashes()?,
                parent_hashes: f.parent_hashes,
            },
            OpName::Evict => Op::Evict {
                n: n()?,
                result: flag(f.result)?,
            },
            OpName::IsMemoryAvailable => Op::IsMemoryAvailable {
                n: n()?,
                potential_matched_count: f
                    .potential_matched_count
                    .ok_or_else(|| lacks("potential_matched_count"))?,
                result: flag(f.result)?,
            },
            OpName::Reset => Op::Reset,
            OpName::AllocateSlots => Op::AllocateSlots {
                block_ids: block_ids()?,
                result: ids(f.result)?,
                required: f.required,
                available: f.available,
                evicted_blocks: f.evicted_blocks,
                evicted_own_block: f.evicted_own_block,
                order_unspecified: f.order_unspecified,
            },
            OpName::RegisterMambaHashes => Op::RegisterMambaHashes {
                block_ids: block_ids()?,
                hashes: hashes()?,
            },
            OpName::Query => Op::Query {
                block_id: block_id()?,
                result: match f.result {
                    None => None,
                    Some(OpResult::Query(q)) => Some(q),
                    Some(_) => return Err(result_type()),
                },
            },
            OpName::Invalidate => Op::Invalidate {
                block_id: block_id()?,
            },
            OpName::MambaReset => Op::MambaReset,
        };
        Ok(Self {
            name,
            op,
            error: f.error,
            state: f.state,
            deregistered: f.deregistered,
        })
    }
}

/// A `prefix_kv` or `mamba_cache` record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TraceRecord<S> {
    policy: String,
    pool_size: usize,
    dummy_block_idx: i32,
    #[serde(default)]
    initial_clock: u64,
    /// `mamba_cache` only.
    max_slots: Option<usize>,
    #[serde(bound = "S: Deserialize<'de>")]
    ops: Vec<OpRecord<S>>,
    /// What a fixed scenario shows.
    #[serde(rename = "note")]
    _note: Unused,
}

/// A `prefix_hash` record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HashRecord {
    block_size: u32,
    tokens: Vec<i64>,
    hashes: Vec<BlockHash>,
    lookups: Vec<Lookup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lookup {
    registered: Pairs,
    mamba_registered: Vec<BlockHash>,
    hybrid: bool,
    mamba_cache: bool,
    finished: u32,
    chunk: u32,
    invariant_holds: bool,
    result: Option<LookupResult>,
    error: Option<String>,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct LookupResult {
    matched_block_ids: Vec<i32>,
    num_blocks_from_pool: u32,
    already_allocated_blocks: u32,
    overall_required_blocks: u32,
    prefix_skip_tokens: u32,
    effective_prefill_chunk_length: u32,
    mamba_num_matched_blocks: Option<u32>,
}

/// A `mamba_offsets` record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OffsetsRecord {
    inputs: OffsetsInputs,
    output: OffsetsOutput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsInputs {
    block_size: u32,
    ssm_chunk_alignment: u32,
    mamba_chunk_size: u32,
    prompt_len: u32,
    finished_chunk_token_count: u32,
    skip_tokens: u32,
    prefill_chunk_length: u32,
    num_matched_blocks: u32,
    overall_required_blocks: u32,
    block_row: Vec<i32>,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct OffsetsOutput {
    count: u8,
    offsets: Vec<u32>,
    block_ids: Vec<i32>,
    eos_block_id: i32,
    has_intermediates: bool,
}

// ---- comparison helpers ----------------------------------------------------------------

fn compare_kv(cmp: &mut Cmp, at: &str, want: &KvState, kv: &PrefixKvAllocator) {
    let f = |name: &str| format!("{at}: kv.{name}");
    cmp.same(&f("avail"), &want.avail, &kv.available());
    cmp.seq(&f("free"), &want.free, kv.free_blocks());
    cmp.seq(&f("ref"), &want.refs, kv.ref_counts());
    cmp.seq(&f("hash"), &want.hash, kv.hashes());
    cmp.seq(&f("map"), &want.map, &kv.index_entries());
    // Megatron's `evictable` counts every cached block.
    cmp.same(&f("evictable"), &want.evictable, &kv.cached_count());
    cmp.same(&f("allocatable"), &want.allocatable, &kv.allocatable());
    if let Some(ts) = &want.ts {
        cmp.seq(&f("ts"), ts, kv.timestamps());
    }
    if let Some(p) = &want.parent {
        cmp.seq(&f("parent"), p, kv.parents());
    }
    if let Some(c) = &want.children {
        cmp.seq(&f("children"), c, kv.children());
    }
}

fn compare_mamba(cmp: &mut Cmp, at: &str, want: &MambaState, m: &MambaStateCache) {
    let f = |name: &str| format!("{at}: mamba.{name}");
    cmp.same(&f("free_count"), &want.free_count, &m.free_count());
    cmp.seq(&f("free"), &want.free, m.free_slots());
    cmp.seq(&f("block_to_slot"), &want.block_to_slot, m.block_to_slot());
    cmp.seq(&f("slot_to_block"), &want.slot_to_block, m.slot_to_block());
    cmp.seq(&f("map"), &want.map, &m.index_entries());
}

/// What an op order-insensitive allocation must agree on with Megatron (`docs/DESIGN.md`, difference D5).
fn compare_as_sets(
    cmp: &mut Cmp,
    at: &str,
    want_result: &[i32],
    got_result: &[i32],
    want: &MambaState,
    m: &MambaStateCache,
) {
    let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
    let holders = |b2s: &[i32]| {
        (0..)
            .zip(b2s)
            .filter(|&(_, &s)| s >= 0)
            .map(|(b, _)| b)
            .collect::<BTreeSet<i32>>()
    };
    cmp.same(
        &format!("{at}: slots handed out (as a set)"),
        &set(want_result),
        &set(got_result),
    );
    cmp.same(
        &format!("{at}: blocks holding slots"),
        &holders(&want.block_to_slot),
        &holders(m.block_to_slot()),
    );
    cmp.same(
        &format!("{at}: free slots (as a set)"),
        &set(&want.free),
        &set(m.free_slots()),
    );
    cmp.seq(&format!("{at}: mamba.map"), &want.map, &m.index_entries());
}

// ---- trace replay ----------------------------------------------------------------------

/// Records the KV allocator's deregistration calls and forwards them to the Mamba cache.
struct Hook<'a> {
    calls: Calls,
    mamba: Option<&'a mut MambaStateCache>,
}

impl DeregistrationObserver for Hook<'_> {
    fn deregistered(&mut self, blocks: &[i32], hashes: &[BlockHash]) {
        self.calls.push((blocks.to_vec(), hashes.to_vec()));
        if let Some(m) = self.mamba.as_deref_mut() {
            m.deregistered(blocks, hashes);
        }
    }
}

/// Where our state legitimately left Megatron's (a documented deviation).
#[derive(Default)]
struct Diverged {
    kv: bool,
    mamba: bool,
    /// Ops whose state was not compared since.
    skipped: usize,
}

impl Diverged {
    /// Reports the ops left uncompared, once the divergence ends (or the trace does).
    fn flush(&mut self, deviations: &mut Vec<String>, line: usize) {
        if self.skipped > 0 && !self.kv && !self.mamba {
            deviations.push(format!(
                "record {line}: state not compared for {} ops from the deviation on (until the trace reset it)",
                self.skipped
            ));
            self.skipped = 0;
        }
    }
}

/// Replays a `prefix_kv` or `mamba_cache` record.
pub(super) fn replay_trace<S: TraceState>(
    rec: &TraceRecord<S>,
    cmp: &mut Cmp,
    deviations: &mut Vec<String>,
) -> Result<(), String> {
    let line = cmp.line;
    let policy = EvictionPolicy::from_name(&rec.policy)
        .ok_or_else(|| format!("unknown policy `{}`", rec.policy))?;
    let mut kv = PrefixKvAllocator::new(rec.pool_size, policy).map_err(|e| e.to_string())?;
    kv.set_clock(rec.initial_clock);
    cmp.same("dummy_block_idx", &rec.dummy_block_idx, &kv.dummy_block());
    let mut mamba = match rec.max_slots {
        Some(s) => Some(MambaStateCache::new(s, rec.pool_size).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut div = Diverged::default();
    for (j, o) in rec.ops.iter().enumerate() {
        let at = format!("ops[{j}] {}", spelled(o.name));
        let mut note = |what: &str| deviations.push(format!("record {line} {at}: {what}"));
        // Megatron's map deletion of a hash held by a live other block (`docs/DESIGN.md`, difference D3).
        if !div.kv && d3_event(&kv, &o.deregistered) {
            note(
                "deregistration keeps the index entry of another block with the same hash (Megatron deletes it)",
            );
            div.kv = true;
            div.mamba |= mamba.is_some();
        }
        let mut hook = Hook {
            calls: Vec::new(),
            mamba: mamba.as_mut(),
        };
        let outcome: Result<Outcome, PrefixError> = match &o.op {
            Op::Tick { clock } => {
                kv.set_clock(*clock);
                continue;
            }
            Op::Allocate { n, result } => {
                let got = kv.allocate(*n, &mut hook);
                let ok = got == *result;
                Ok(Outcome::Compared(
                    ok,
                    format!("{result:?}"),
                    format!("{got:?}"),
                ))
            }
            Op::Release { block_ids } => kv.release(block_ids, &mut hook).map(|()| Outcome::Done),
            Op::Retain { block_ids } => kv.retain(block_ids).map(|()| Outcome::Done),
            Op::Register {
                block_ids,
                hashes,
                parent_hashes,
            } => kv
                .register(block_ids, hashes, parent_hashes.as_deref())
                .map(|()| Outcome::Done),
            Op::Evict { n, result } => kv.evict(*n, &mut hook).map(|got| {
                Outcome::Compared(
                    Some(got) == *result,
                    format!("{result:?}"),
                    format!("{got:?}"),
                )
            }),
            Op::IsMemoryAvailable {
                n,
                potential_matched_count,
                result,
            } => {
                let got = kv.is_memory_available(*n, *potential_matched_count);
                if Some(got) != *result && !got && kv.evictable_count() < kv.cached_count() {
                    note(
                        "admission counts only evictable cached blocks (Megatron counts all cached blocks)",
                    );
                    Ok(Outcome::Done)
                } else {
                    Ok(Outcome::Compared(
                        Some(got) == *result,
                        format!("{result:?}"),
                        format!("{got:?}"),
                    ))
                }
            }
            Op::Reset => {
                kv.reset();
                div.kv = false;
                Ok(Outcome::Done)
            }
            Op::AllocateSlots {
                block_ids,
                result,
                required,
                available,
                evicted_blocks,
                evicted_own_block,
                order_unspecified,
            } => {
                let m = hook
                    .mamba
                    .as_deref_mut()
                    .ok_or("allocate_slots without a Mamba cache")?;
                let own_candidates = block_ids
                    .iter()
                    .filter(|&&b| {
                        m.has_state(b)
                            && kv
                                .ref_counts()
                                .get(usize::try_from(b).unwrap_or(usize::MAX))
                                == Some(&0)
                    })
                    .collect::<BTreeSet<_>>()
                    .len();
                match m.allocate_slots(&kv, block_ids) {
                    Ok(got) if *evicted_own_block => {
                        let _ = got;
                        note(
                            "the batch's own blocks are not eviction candidates (Megatron evicted one and handed its slot to two blocks)",
                        );
                        div.mamba = true;
                        Ok(Outcome::Done)
                    }
                    Ok(got) => {
                        let want = result.clone().unwrap_or_default();
                        if *order_unspecified {
                            Ok(Outcome::Unordered(
                                want,
                                got.slots,
                                evicted_blocks.clone(),
                                got.evicted,
                            ))
                        } else {
                            cmp.seq(
                                &format!("{at}: evicted_blocks"),
                                evicted_blocks,
                                &got.evicted,
                            );
                            Ok(Outcome::Compared(
                                Some(&got.slots) == result.as_ref(),
                                format!("{result:?}"),
                                format!("{:?}", got.slots),
                            ))
                        }
                    }
                    Err(PrefixError::MambaSlotCapacity {
                        required: r,
                        available: a,
                    }) => {
                        if o.error.is_some() {
                            cmp.same(&format!("{at}: required"), required, &Some(r));
                            let megatron = available.unwrap_or(0);
                            if megatron != a {
                                if megatron == a + own_candidates {
                                    note("the batch's own blocks are not counted as evictable");
                                } else {
                                    cmp.same(&format!("{at}: available"), available, &Some(a));
                                }
                            }
                        } else if *evicted_own_block || own_candidates > 0 {
                            note(
                                "refused: only the batch's own blocks could have been evicted (Megatron evicts one and hands its slot to two blocks)",
                            );
                            div.mamba = true;
                        }
                        Err(PrefixError::MambaSlotCapacity {
                            required: r,
                            available: a,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            Op::RegisterMambaHashes { block_ids, hashes } => {
                let m = hook
                    .mamba
                    .as_deref_mut()
                    .ok_or("register_mamba_hashes without a Mamba cache")?;
                m.register_hashes(&kv, block_ids, hashes)
                    .map(|()| Outcome::Done)
            }
            Op::Query { block_id, result } => {
                let m = hook.mamba.as_deref().ok_or("query without a Mamba cache")?;
                let got = (m.slot(*block_id).unwrap_or(-1), m.has_state(*block_id));
                Ok(Outcome::Compared(
                    Some(got) == *result,
                    format!("{result:?}"),
                    format!("{got:?}"),
                ))
            }
            Op::Invalidate { block_id } => {
                let m = hook
                    .mamba
                    .as_deref_mut()
                    .ok_or("invalidate without a Mamba cache")?;
                m.invalidate(*block_id);
                Ok(Outcome::Done)
            }
            Op::MambaReset => {
                let m = hook
                    .mamba
                    .as_deref_mut()
                    .ok_or("mamba_reset without a Mamba cache")?;
                m.reset();
                div.mamba = false;
                Ok(Outcome::Done)
            }
        };
        let calls = std::mem::take(&mut hook.calls);
        let quiet = div.kv || (o.name.on_mamba_cache() && div.mamba);
        if !quiet {
            match (&o.error, outcome) {
                (Some(_), Err(_)) => {}
                (Some(e), Ok(_)) => {
                    cmp.miss(&format!("{at}: error"), None, e.clone(), "accepted".into())
                }
                (None, Err(e)) => cmp.miss(
                    &format!("{at}: result"),
                    None,
                    "success".into(),
                    format!("error: {e}"),
                ),
                (None, Ok(Outcome::Compared(false, want, got))) => {
                    cmp.miss(&format!("{at}: result"), None, want, got)
                }
                (None, Ok(Outcome::Unordered(want, got, want_ev, got_ev))) => {
                    if let Some(ms) = o.state.as_ref().and_then(S::mamba)
                        && let Some(m) = mamba.as_ref()
                    {
                        compare_as_sets(cmp, &at, &want, &got, ms, m);
                    }
                    let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
                    cmp.same(
                        &format!("{at}: evicted_blocks (as a set)"),
                        &set(&want_ev),
                        &set(&got_ev),
                    );
                    deviations.push(format!(
                        "record {line} {at}: Megatron's slot order is unspecified; compared as sets"
                    ));
                    // The exact assignment may differ from here on.
                    div.mamba = true;
                }
                (None, Ok(_)) => {}
            }
            cmp.seq(&format!("{at}: deregistered"), &o.deregistered, &calls);
        }
        if div.kv || div.mamba {
            div.skipped += 1;
        }
        div.flush(deviations, line);
        if let Some(s) = &o.state
            && !div.kv
        {
            compare_kv(cmp, &at, s.kv(), &kv);
            if !div.mamba
                && let Some(ms) = s.mamba()
                && let Some(m) = mamba.as_ref()
            {
                compare_mamba(cmp, &at, ms, m);
            }
        }
    }
    if div.skipped > 0 {
        deviations.push(format!(
            "record {line}: state not compared for {} ops from the deviation on (to the end of the trace)",
            div.skipped
        ));
    }
    Ok(())
}

/// The outcome of one op, for comparison.
enum Outcome {
    /// Nothing to compare beyond success.
    Done,
    /// (equal, Megatron's, ours).
    Compared(bool, String, String),
    /// Slots and evicted blocks to compare as sets (Megatron's, ours, each).
    Unordered(Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>),
}

/// Whether one of Megatron's deregistration calls removed the index entry of a block it
/// did not deregister (a duplicate hash).
fn d3_event(kv: &PrefixKvAllocator, calls: &Calls) -> bool {
    calls.iter().any(|(ids, hashes)| {
        hashes
            .iter()
            .any(|&h| kv.lookup(h).is_some_and(|b| !ids.contains(&b)))
    })
}

// ---- hashes and lookups ----------------------------------------------------------------

/// Replays a `prefix_hash` record: the block hashes, then every lookup.
pub(super) fn replay_hash(
    rec: &HashRecord,
    cmp: &mut Cmp,
    deviations: &mut Vec<String>,
) -> Result<(), String> {
    let line = cmp.line;
    let hashes = block_hashes(&rec.tokens, rec.block_size).map_err(|e| e.to_string())?;
    cmp.seq("hashes", &rec.hashes, &hashes);
    for (j, l) in rec.lookups.iter().enumerate() {
        let at = format!("lookups[{j}]");
        let index: std::collections::HashMap<BlockHash, i32> =
            l.registered.iter().copied().collect();
        let mamba: BTreeSet<BlockHash> = l.mamba_registered.iter().copied().collect();
        let mode = match (l.hybrid, l.mamba_cache) {
            (false, _) => MambaMode::NotHybrid,
            (true, false) => MambaMode::MemoryOnly,
            (true, true) => MambaMode::Cache,
        };
        let query = MatchQuery {
            hashes: &rec.hashes,
            block_size: rec.block_size,
            finished: l.finished,
            chunk: l.chunk,
            mamba: mode,
        };
        let got = compute_prefix_match(
            &query,
            |h| index.get(&h).copied(),
            |h, _| mamba.contains(&h),
        );
        match (&l.result, &l.error, got) {
            (_, Some(e), Ok(_)) if !l.invariant_holds => deviations.push(format!(
                "record {line} {at}: broken prefix chain matched forward up to the first miss (Megatron raises {e})"
            )),
            (_, Some(_), Err(_)) => {}
            (_, Some(e), Ok(g)) => cmp.miss(&at, None, e.clone(), format!("{g:?}")),
            (Some(want), None, Ok(g)) => {
                let got = LookupResult {
                    matched_block_ids: g.matched_blocks,
                    num_blocks_from_pool: g.blocks_from_pool,
                    already_allocated_blocks: g.already_allocated_blocks,
                    overall_required_blocks: g.overall_required_blocks,
                    prefix_skip_tokens: g.skip_tokens,
                    effective_prefill_chunk_length: g.effective_chunk_length,
                    mamba_num_matched_blocks: g.mamba_matched_blocks,
                };
                cmp.same(&at, want, &got);
            }
            (None, None, _) => return Err(format!("{at} has neither result nor error")),
            (Some(want), None, Err(e)) => cmp.miss(&at, None, format!("{want:?}"), format!("error: {e}")),
        }
    }
    Ok(())
}

// ---- intermediate offsets --------------------------------------------------------------

/// Replays a `mamba_offsets` record.
pub(super) fn replay_offsets(rec: &OffsetsRecord, cmp: &mut Cmp) -> Result<(), String> {
    let i = &rec.inputs;
    let got = compute_intermediate_offsets(&OffsetsQuery {
        block_size: i.block_size,
        ssm_chunk_alignment: i.ssm_chunk_alignment,
        mamba_chunk_size: i.mamba_chunk_size,
        prompt_len: i.prompt_len,
        finished: i.finished_chunk_token_count,
        skip_tokens: i.skip_tokens,
        chunk: i.prefill_chunk_length,
        matched_blocks: i.num_matched_blocks,
        overall_blocks: i.overall_required_blocks,
        block_row: &i.block_row,
    });
    match got {
        Ok(s) => {
            let got = OffsetsOutput {
                count: s.offsets.count,
                offsets: s.offsets().to_vec(),
                block_ids: s.block_ids().to_vec(),
                eos_block_id: s.eos_block.unwrap_or(-1),
                has_intermediates: s.has_intermediates(),
            };
            cmp.same("output", &rec.output, &got);
        }
        Err(e) => cmp.miss(
            "output",
            None,
            format!("{:?}", rec.output),
            format!("error: {e}"),
        ),
    }
    Ok(())
}
