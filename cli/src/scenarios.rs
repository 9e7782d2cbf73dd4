//! The benchmark scenarios of the core issue, shared by the criterion benchmark and
//! `attention-layout bench`: R=256, T=4096, block size 64, S=8192, Mamba chunk 128,
//! d_conv 4, graphs auto / exponential, mixed prefill count 4.

use attention_layout_codegen::spec::{GraphCount, GraphSpec, LayoutSpec, MambaSpec, ModelKind};

use attention_layout::step::{RequestRow, StepInput};

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

impl Scenario {
    /// The step input (borrows the scenario).
    pub fn rows(&self) -> Vec<RequestRow<'_>> {
        self.rows
            .iter()
            .zip(&self.blocks)
            .map(|(&(prefill, q, kv, slot), b)| {
                if prefill {
                    RequestRow::prefill(q, kv, b, slot)
                } else {
                    RequestRow::decode(q, kv, b, slot)
                }
            })
            .collect()
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
        build(
            "hybrid-240-decode-4-prefill",
            spec(ModelKind::Hybrid, true),
            240,
            &mix,
        ),
        build(
            "hybrid-240-decode-4-prefill-no-graphs",
            spec(ModelKind::Hybrid, false),
            240,
            &mix,
        ),
    ]
}

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
        name: "long-context-1024-decode",
        spec,
        rows,
        blocks,
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
