//! Random steps: request rows (paused, decode, prefill) with KV blocks drawn from a shuffled
//! pool and Mamba slots from a shuffled slot list, built into metadata with the runtime's
//! host fill.

use attention_layout::{
    BatchDims, Dims, HostMetadata, Phase, RequestRow, RuntimeDims, StepInfo, StepInput,
};

use crate::Result;
use crate::rng::Rng;

/// What kind of step to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No active request (paused rows only, maybe none): a graphed layout still pads it to
    /// its smallest decode bucket, whose one padding token writes to the dummy block.
    Empty,
    /// Decode rows only.
    Decode,
    /// Prefill rows only (first chunks and continuing chunks).
    Prefill,
    /// Decode and prefill rows.
    Mixed,
}

impl Kind {
    /// Lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Decode => "decode",
            Self::Prefill => "prefill",
            Self::Mixed => "mixed",
        }
    }

    /// The kind of batch `i` of a run: one empty step first, then decode, prefill and mixed
    /// steps in turn (mixed twice as often).
    pub const fn schedule(i: usize) -> Self {
        if i == 0 {
            return Self::Empty;
        }
        match i % 4 {
            0 => Self::Decode,
            1 => Self::Prefill,
            _ => Self::Mixed,
        }
    }
}

/// One request row, owning its block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Paused, decode or prefill.
    pub phase: Phase,
    /// Tokens this step (0 for paused rows).
    pub q: u32,
    /// Tokens already in the KV cache / already folded into the Mamba state.
    pub kv_off: u32,
    /// KV block ids (block `j` holds positions `j·B .. j·B+B−1`).
    pub blocks: Vec<i32>,
    /// Mamba state slot.
    pub slot: i32,
}

/// One step's rows, in context order (paused, decode, prefill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The kind it was drawn as.
    pub kind: Kind,
    /// The rows.
    pub rows: Vec<Row>,
}

/// An active row of a batch with its place in the step's token stream.
#[derive(Debug, Clone, Copy)]
pub struct Active<'a> {
    /// Index among the active rows (`a` in docs/SEMANTICS.md §4).
    pub a: usize,
    /// First token of the row in the step's token stream.
    pub t0: usize,
    /// The row.
    pub row: &'a Row,
}

impl Batch {
    /// Draws a random step of `kind` that fits `dims` (rows, tokens, sequence length, blocks).
    pub fn random(dims: &RuntimeDims, kind: Kind, rng: &mut Rng) -> Self {
        let r = dims.max_requests() as u32;
        let t = dims.max_tokens() as u32;
        let s = dims.max_seq_len() as u32;
        let b = dims.block_size() as u32;
        let s1 = dims.speculative_tokens() as u32 + 1;
        let nkv = dims.block_table_width() as u32;
        let paused = rng.range(0, 2).min(r.saturating_sub(2));
        let room = r - paused;
        let (decode, prefill) = match kind {
            Kind::Empty => (0, 0),
            Kind::Decode => (rng.range(1, room.min(t / s1)), 0),
            Kind::Prefill => (0, rng.range(1, room.min(4))),
            Kind::Mixed => {
                let f = rng.range(1, (room - 1).min(3));
                (rng.range(1, (room - f).min((t - f) / s1)), f)
            }
        };

        let mut pool: Vec<i32> = (0..dims.dummy_block()).collect();
        rng.shuffle(&mut pool);
        let mut slots: Vec<i32> = (0..r as i32).collect();
        rng.shuffle(&mut slots);
        let mut rows = Vec::new();
        let mut push = |phase: Phase, q: u32, kv_off: u32, rng: &mut Rng| {
            let mut need = (kv_off + q).div_ceil(b);
            // A decode row may already own one more (pre-allocated) block; any row may own a
            // block past its last position.
            if need < nkv && rng.chance(1, 3) {
                need += 1;
            }
            let blocks = (0..need).filter_map(|_| pool.pop()).collect();
            let slot = slots.pop().unwrap_or(-1);
            rows.push(Row {
                phase,
                q,
                kv_off,
                blocks,
                slot,
            });
        };
        for _ in 0..paused {
            let kv = rng.range(1, s - s1);
            push(Phase::Paused, 0, kv, rng);
        }
        for _ in 0..decode {
            let kv = rng.range(1, s - s1);
            push(Phase::Decode, s1, kv, rng);
        }
        let mut budget = t - decode * s1;
        for i in 0..prefill {
            let others = prefill - i - 1;
            let max_q = (budget - others).min(s);
            let q = if rng.chance(1, 4) {
                max_q
            } else {
                rng.range(1, max_q.min(40))
            };
            let kv = if rng.chance(1, 2) {
                0
            } else {
                rng.range(0, s - q)
            };
            budget -= q;
            push(Phase::Prefill, q, kv, rng);
        }
        Self { kind, rows }
    }

    /// The rows as step-input rows.
    pub fn request_rows(&self) -> Vec<RequestRow<'_>> {
        self.rows
            .iter()
            .map(|r| match r.phase {
                Phase::Paused => RequestRow::paused(r.kv_off, &r.blocks, r.slot),
                Phase::Decode => RequestRow::decode(r.q, r.kv_off, &r.blocks, r.slot),
                Phase::Prefill => RequestRow::prefill(r.q, r.kv_off, &r.blocks, r.slot),
            })
            .collect()
    }

    /// The active rows, in order, with their first token.
    pub fn active(&self) -> Vec<Active<'_>> {
        let mut t0 = 0;
        self.rows
            .iter()
            .filter(|r| r.phase != Phase::Paused)
            .enumerate()
            .map(|(a, row)| {
                let x = Active { a, t0, row };
                t0 += row.q as usize;
                x
            })
            .collect()
    }

    /// Real tokens of the step.
    pub fn real_tokens(&self) -> usize {
        self.rows.iter().map(|r| r.q as usize).sum()
    }

    /// Builds the step's metadata into `meta` with the host fill.
    pub fn fill<'m>(&self, meta: &'m mut HostMetadata<RuntimeDims>) -> Result<&'m StepInfo> {
        let rows = self.request_rows();
        let ids: Vec<i64> = (0..self.real_tokens() as i64).map(|i| 100 + i).collect();
        let input = StepInput {
            rows: &rows,
            token_ids: Some(&ids),
            intermediate: None,
            residency: None,
        };
        Ok(meta
            .fill(&input)
            .map_err(|e| format!("host fill rejected a {} batch: {e}", self.kind.as_str()))?)
    }
}

/// `(t,p,d)`.
pub fn shape(d: BatchDims) -> String {
    format!("({},{},{})", d.tokens, d.prefill, d.decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts;

    /// Every kind of batch fills on every layout, and the schedule reaches padded graphed
    /// steps and eager steps.
    #[test]
    fn random_batches_fill() {
        let mut graphed_padded = 0;
        let mut eager = 0;
        let all: Vec<RuntimeDims> = layouts::attention()
            .unwrap()
            .into_iter()
            .map(|l| l.dims)
            .chain(layouts::mamba().unwrap().into_iter().map(|l| l.dims))
            .collect();
        for dims in &all {
            let mut meta = HostMetadata::new(dims.clone());
            for i in 0..200 {
                let mut rng = Rng::new(i);
                let batch = Batch::random(dims, Kind::schedule(i as usize), &mut rng);
                let info = *batch.fill(&mut meta).unwrap();
                assert_eq!(info.real.tokens as usize, batch.real_tokens());
                if info.graphed() && info.real != info.padded {
                    graphed_padded += 1;
                }
                if !info.graphed() {
                    eager += 1;
                }
            }
        }
        assert!(graphed_padded > 100, "{graphed_padded}");
        assert!(eager > 100, "{eager}");
    }
}
