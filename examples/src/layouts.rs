//! The small layouts the consumers run on, built in code: for each consumer a graphed
//! layout (Megatron's automatic bucket ladder, mixed and prefill graphs on), an eager one
//! (no graphs: every step is padded by the eager rules) and variants (speculative decoding
//! and both kernel formats for attention; i32 decode indices, another chunk size and conv
//! width for Mamba).

use attention_layout::codegen::spec::{
    Format, GraphCount, GraphSpec, IndexDtype, LayoutSpec, MambaSpec, ModelKind,
};
use attention_layout::{Dims, Geometry, RuntimeDims};

use crate::Result;

/// One layout and the model dimensions its consumer runs with.
#[derive(Debug, Clone)]
pub struct Layout<M> {
    /// Short label for the per-batch lines.
    pub label: &'static str,
    /// The layout's dims (geometry, offsets, buckets).
    pub dims: RuntimeDims,
    /// The consumer's model dimensions.
    pub model: M,
}

impl<M> Layout<M> {
    /// Whether the layout has CUDA-graph buckets.
    pub fn graphs_on(&self) -> bool {
        !self.dims.buckets().is_empty()
    }
}

/// Attention model dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnModel {
    /// KV heads (= query heads here).
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// Mamba2 model dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MambaModel {
    /// SSM heads.
    pub nheads: usize,
    /// Head dimension (`headdim`).
    pub headdim: usize,
    /// State size (`d_state`).
    pub d_state: usize,
    /// B/C groups (`ngroups`).
    pub ngroups: usize,
}

impl MambaModel {
    /// Channels of the causal conv: `x`, then `B`, then `C` (`nheads·headdim + 2·ngroups·d_state`).
    pub const fn conv_dim(&self) -> usize {
        self.nheads * self.headdim + 2 * self.ngroups * self.d_state
    }
    /// Heads per B/C group.
    pub const fn heads_per_group(&self) -> usize {
        self.nheads / self.ngroups
    }
}

fn spec(
    name: &str,
    model: ModelKind,
    graphs: bool,
    speculative_tokens: u32,
    mamba: Option<MambaSpec>,
) -> LayoutSpec {
    spec_with(name, model, graphs, speculative_tokens, mamba, Vec::new())
}

fn spec_with(
    name: &str,
    model: ModelKind,
    graphs: bool,
    speculative_tokens: u32,
    mamba: Option<MambaSpec>,
    formats: Vec<Format>,
) -> LayoutSpec {
    LayoutSpec {
        name: Some(name.to_owned()),
        source: None,
        model,
        max_requests: 8,
        max_tokens: 64,
        max_seq_len: 128,
        block_size: 16,
        speculative_tokens,
        tensor_parallel: 1,
        decode_index_dtype: IndexDtype::I64,
        kv_pool_blocks: None,
        mamba,
        graphs: GraphSpec {
            count: if graphs {
                GraphCount::Auto
            } else {
                GraphCount::Off
            },
            mixed_prefill: 4,
            non_decode: true,
            ..GraphSpec::default()
        },
        memory: None,
        formats,
    }
}

fn dims(spec: &LayoutSpec) -> Result<RuntimeDims> {
    let g = Geometry::new(spec).map_err(|e| format!("layout {:?}: {e}", spec.name))?;
    Ok(RuntimeDims::new(g))
}

/// The attention layouts: `R=8, T=64, S=128, B=16` (block table width 8, KV pool 65 blocks,
/// dummy block 64); graphed, eager, graphed with two speculative tokens (width 9), and
/// graphed with both kernel formats (the slot-mapping and FlashInfer CSR path).
pub fn attention() -> Result<Vec<Layout<AttnModel>>> {
    Ok(vec![
        Layout {
            label: "mha-graphs",
            dims: dims(&spec("mha-graphs", ModelKind::Mha, true, 0, None))?,
            model: AttnModel {
                heads: 2,
                head_dim: 32,
            },
        },
        Layout {
            label: "mha-eager",
            dims: dims(&spec("mha-eager", ModelKind::Mha, false, 0, None))?,
            model: AttnModel {
                heads: 2,
                head_dim: 64,
            },
        },
        Layout {
            label: "mha-spec2-graphs",
            dims: dims(&spec("mha-spec2-graphs", ModelKind::Mha, true, 2, None))?,
            model: AttnModel {
                heads: 2,
                head_dim: 32,
            },
        },
        Layout {
            label: "mha-formats-graphs",
            dims: dims(&spec_with(
                "mha-formats-graphs",
                ModelKind::Mha,
                true,
                0,
                None,
                vec![Format::FlashInfer, Format::Vllm],
            ))?,
            model: AttnModel {
                heads: 2,
                head_dim: 32,
            },
        },
    ])
}

/// The Mamba layouts (hybrid: strict bucket matching): `R=8, T=64`; graphed with chunk size
/// 8 and `d_conv = 4`, eager with the same, graphed with i32 decode indices, chunk size
/// 16 and `d_conv = 3`, and graphed with the `vllm` format (chunk size 8, `d_conv = 4`:
/// the kernel path on vLLM's state indices, padding rows on the scratch slot `R`).
pub fn mamba() -> Result<Vec<Layout<MambaModel>>> {
    let model = MambaModel {
        nheads: 2,
        headdim: 8,
        d_state: 8,
        ngroups: 1,
    };
    let m = |chunk_size, conv_width| {
        Some(MambaSpec {
            chunk_size,
            conv_width,
        })
    };
    let mut i32_spec = spec("hybrid-i32-cs16", ModelKind::Hybrid, true, 0, m(16, 3));
    i32_spec.decode_index_dtype = IndexDtype::I32;
    Ok(vec![
        Layout {
            label: "hybrid-graphs",
            dims: dims(&spec("hybrid-graphs", ModelKind::Hybrid, true, 0, m(8, 4)))?,
            model,
        },
        Layout {
            label: "hybrid-eager",
            dims: dims(&spec("hybrid-eager", ModelKind::Hybrid, false, 0, m(8, 4)))?,
            model: MambaModel {
                nheads: 4,
                ngroups: 2,
                ..model
            },
        },
        Layout {
            label: "hybrid-i32-cs16",
            dims: dims(&i32_spec)?,
            model,
        },
        Layout {
            label: "hybrid-vllm-graphs",
            dims: dims(&spec_with(
                "hybrid-vllm-graphs",
                ModelKind::Hybrid,
                true,
                0,
                m(8, 4),
                vec![Format::Vllm],
            ))?,
            model,
        },
    ])
}
