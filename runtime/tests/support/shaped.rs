//! Steps shaped exactly like a bucket: `b.decode` decode rows and `b.prefill` prefill rows
//! sharing the remaining tokens, each row in resident row `i` (its step index) with every
//! block of every row listed as a change. Used to launch every bucket's fill entry.
//!
//! The blocks of each step are numbered from 0 and the resident rows reused from 0, with
//! no clears in between: a run of such steps is *not* one engine's history under the
//! residency contract (`batch.rs`). A backend that runs another workload after them must be
//! told the engine's residency view was reset.

use attention_layout::{BatchDims, BlockChange, Dims, RequestRow, Residency, StepInput};

/// One row: (prefill?, query length, KV offset, blocks).
pub type Row = (bool, u32, u32, Vec<i32>);

/// A step whose real shape is exactly one bucket's.
#[derive(Debug, Clone)]
pub struct ShapedStep {
    pub rows: Vec<Row>,
    pub resident: Vec<u32>,
    pub changes: Vec<BlockChange>,
    pub token_ids: Vec<i64>,
    pub has_mamba: bool,
}

impl ShapedStep {
    /// The step shaped like `b`, or None if no such step exists.
    pub fn new<D: Dims>(dims: &D, b: BatchDims) -> Option<Self> {
        let s1 = dims.speculative_tokens() as u32 + 1;
        let bs = dims.block_size() as u32;
        let left = b.tokens.checked_sub(b.decode * s1)?;
        if (b.prefill == 0) != (left == 0) {
            return None;
        }
        let mut rows = Vec::new();
        let mut next = 0i32;
        let mut take = |n: u32| {
            let v: Vec<i32> = (next..next + n as i32).collect();
            next += n as i32;
            v
        };
        for i in 0..b.decode {
            let kv = (i * 7) % (dims.max_seq_len() as u32 - s1 + 1);
            rows.push((false, s1, kv, take((kv + s1).div_ceil(bs))));
        }
        for f in 0..b.prefill {
            let q = left / b.prefill + u32::from(f < left % b.prefill);
            if q == 0 || q > dims.max_seq_len() as u32 {
                return None;
            }
            rows.push((true, q, 0, take(q.div_ceil(bs))));
        }
        if next >= dims.dummy_block() {
            return None;
        }
        let resident: Vec<u32> = (0..rows.len() as u32).collect();
        let changes = rows
            .iter()
            .enumerate()
            .flat_map(|(r, (_, _, _, blocks))| {
                blocks.iter().enumerate().map(move |(j, &id)| BlockChange {
                    resident_row: r as u32,
                    index: j as u32,
                    block: id,
                })
            })
            .collect();
        let token_ids = (0..i64::from(b.tokens)).collect();
        Some(Self {
            rows,
            resident,
            changes,
            token_ids,
            has_mamba: dims.has_mamba(),
        })
    }

    /// The borrowed rows.
    pub fn rows(&self) -> Vec<RequestRow<'_>> {
        self.rows
            .iter()
            .enumerate()
            .map(|(k, (prefill, q, kv, blocks))| {
                let slot = if self.has_mamba { k as i32 } else { -1 };
                if *prefill {
                    RequestRow::prefill(*q, *kv, blocks, slot)
                } else {
                    RequestRow::decode(*q, *kv, blocks, slot)
                }
            })
            .collect()
    }

    /// The step input over `rows` (from [`ShapedStep::rows`]).
    pub fn input<'a>(&'a self, rows: &'a [RequestRow<'a>]) -> StepInput<'a> {
        StepInput {
            rows,
            token_ids: Some(&self.token_ids),
            intermediate: None,
            residency: Some(Residency {
                resident_rows: &self.resident,
                changes: &self.changes,
            }),
        }
    }
}
