//! Derived geometry: capacities and the byte layout of the one coalesced metadata buffer
//! (docs/SEMANTICS.md §9), plus the bucket list. Everything the fill, the kernels and the
//! generated code need to know about a layout is computed here, once.

use crate::buckets::{self, BatchDims, BucketParams};
use crate::model::{Format, VLLM_CONV_BLOCK};
use crate::spec::{IndexDtype, LayoutSpec, SpecError};

pub use crate::model::{Dtype, FIELD_COUNT, Facts, Field};

/// One field's place in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLayout {
    /// Which field.
    pub field: Field,
    /// Element type.
    pub dtype: Dtype,
    /// Capacity in elements.
    pub elems: usize,
    /// Byte offset from the start of the buffer.
    pub offset: usize,
}

impl FieldLayout {
    /// Size in bytes.
    pub const fn bytes(&self) -> usize {
        self.elems * self.dtype.size()
    }

    /// One past the last byte.
    pub const fn end(&self) -> usize {
        self.offset + self.bytes()
    }
}

/// Everything derived from a validated spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// The spec it was derived from.
    pub spec: LayoutSpec,
    /// Every number of the layout.
    pub facts: Facts,
    /// Every field, in buffer order.
    pub fields: Vec<FieldLayout>,
    /// The CUDA-graph buckets, ascending.
    pub buckets: Vec<BatchDims>,
}

/// Intermediate offsets per prefill request (Megatron's fixed 3).
pub const MAX_INTERMEDIATE_PER_REQUEST: usize = 3;

/// Most candidate buckets a layout's graph policy may enumerate (see
/// [`buckets::build_buckets_bounded`]); far above any real policy (an exponential ladder
/// gives at most about a thousand), far below what takes noticeable time to build.
pub const MAX_BUCKET_CANDIDATES: u64 = 1 << 16;

/// Largest buffer a layout may have: device kernels use 32-bit offsets.
pub const MAX_BUFFER_BYTES: usize = i32::MAX as usize;

impl Geometry {
    /// Validates `spec` and derives its geometry.
    pub fn new(spec: &LayoutSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let r = spec.max_requests as usize;
        let t = spec.max_tokens as usize;
        let s = spec.max_seq_len as usize;
        let b = spec.block_size as usize;
        let speculative_tokens = spec.speculative_tokens as usize;
        let nkv = s.div_ceil(b) + usize::from(speculative_tokens > 0);
        let default_pool = r
            .checked_mul(nkv)
            .and_then(|x| x.checked_add(1))
            .ok_or_else(|| SpecError::general("max_requests * block table width overflows"))?;
        let kv_pool_blocks = match spec.kv_pool_blocks {
            Some(p) => p as usize,
            None => match &spec.memory {
                Some(m) => crate::memory::derived_kv_pool_blocks(spec, m, nkv)?,
                None => default_pool,
            },
        };
        if let Some(m) = &spec.memory {
            crate::memory::prefix_mamba_cache_slots(spec, m)?;
        }
        if kv_pool_blocks > i32::MAX as usize {
            return Err(SpecError::key(
                "kv_pool_blocks",
                format!("{kv_pool_blocks} blocks do not fit the i32 block ids"),
            ));
        }
        let (cs, dconv) = spec
            .mamba
            .as_ref()
            .map_or((0, 0), |m| (m.chunk_size as usize, m.conv_width as usize));
        let has_mamba = spec.model.has_mamba();
        let (max_chunks, max_intermediate) = if has_mamba {
            (
                t / cs + r,
                t.div_ceil(b).min(MAX_INTERMEDIATE_PER_REQUEST * r),
            )
        } else {
            (0, 0)
        };

        let mut facts = Facts {
            max_requests: r,
            max_tokens: t,
            max_seq_len: s,
            block_size: b,
            speculative_tokens,
            tensor_parallel: spec.tensor_parallel as usize,
            block_table_width: nkv,
            kv_pool_blocks,
            dummy_block: (kv_pool_blocks - 1) as i32,
            has_mamba,
            decode_index_i64: spec.decode_index_dtype == IndexDtype::I64,
            chunk_size: cs,
            conv_width: dconv,
            max_chunks,
            max_intermediate,
            flashinfer: spec.has_format(Format::FlashInfer),
            vllm: spec.has_format(Format::Vllm),
            max_conv_programs: if has_mamba && spec.has_format(Format::Vllm) {
                t / VLLM_CONV_BLOCK + r
            } else {
                0
            },
            mamba_pad: 0,
            megatron_bytes: 0,
            total_bytes: 0,
        };

        // docs/SEMANTICS.md §9: each field starts at the previous one's end rounded up to its own
        // alignment. The only pads this makes are §9's one before the i64 decode indices
        // and the one before the appended (i64) fields.
        let mut fields = Vec::with_capacity(Field::ALL.len());
        let mut offset = 0usize;
        for &field in Field::ALL {
            if !field.exists(&facts) {
                continue;
            }
            let dtype = field.dtype(&facts);
            let start = offset.next_multiple_of(dtype.size());
            if field == Field::MambaBatchIndicesDecode {
                facts.mamba_pad = start - offset;
            }
            if field.is_appended() && facts.megatron_bytes == 0 {
                facts.megatron_bytes = offset;
            }
            let fl = FieldLayout {
                field,
                dtype,
                elems: field.capacity(&facts),
                offset: start,
            };
            offset = fl.end();
            fields.push(fl);
        }
        if facts.megatron_bytes == 0 {
            facts.megatron_bytes = offset;
        }
        facts.total_bytes = offset;
        if offset > MAX_BUFFER_BYTES {
            return Err(SpecError::general(format!(
                "the metadata buffer would take {offset} bytes, over the {MAX_BUFFER_BYTES}-byte limit of 32-bit device offsets"
            )));
        }

        let bucket_params = spec.bucket_params();
        let buckets = match spec.explicit_buckets() {
            // An explicit table (`graphs.buckets`) is the bucket list; everything below
            // reads `buckets` alone, whichever way it came.
            Some(table) => table?,
            None => buckets::build_buckets_bounded(&bucket_params, MAX_BUCKET_CANDIDATES)
            .map_err(|n| {
                SpecError::key(
                    "graphs.count",
                    format!(
                        "the graph policy would enumerate {n} candidate CUDA-graph buckets, over the limit of {MAX_BUCKET_CANDIDATES} (use fewer graphs, the exponential distribution, or a smaller graphs.token_budget)"
                    ),
                )
            })?,
        };

        Ok(Self {
            spec: spec.clone(),
            facts,
            fields,
            buckets,
        })
    }

    /// The bucket-generation parameters this layout uses.
    pub fn bucket_params(&self) -> BucketParams {
        self.spec.bucket_params()
    }

    /// Slots of the durable Mamba state cache for prefix caching, from
    /// `memory.prefix_caching_mamba_gb` (`None` without it; checked by [`Geometry::new`]).
    pub fn prefix_mamba_cache_slots(&self) -> Option<usize> {
        let m = self.spec.memory.as_ref()?;
        crate::memory::prefix_mamba_cache_slots(&self.spec, m)
            .ok()
            .flatten()
            .and_then(|s| usize::try_from(s).ok())
    }

    /// Whether the layout has Mamba fields.
    pub fn has_mamba(&self) -> bool {
        self.facts.has_mamba
    }

    /// The layout of one field, if the layout has it.
    pub fn field(&self, f: Field) -> Option<&FieldLayout> {
        self.fields.iter().find(|l| l.field == f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid_spec() -> LayoutSpec {
        LayoutSpec::from_toml_str(crate::test_layouts::HYBRID, "t.toml").unwrap()
    }

    /// docs/SEMANTICS.md §9's checked offsets, byte for byte.
    #[test]
    fn semantics_9_offsets() {
        let g = Geometry::new(&hybrid_spec()).unwrap();
        assert_eq!(g.facts.block_table_width, 8);
        let off = |f| g.field(f).unwrap().offset;
        use Field::*;
        let tokens = [
            TokenToInputIds,
            TokenToPosIds,
            TokenToBlockIdx,
            TokenToLocalPositionWithinKvBlock,
            TokenToRequestIdx,
            TokenToPositionInRequest,
        ];
        assert_eq!(tokens.map(off), [0, 512, 1024, 1536, 1792, 2048]);
        let req = [
            RequestInPrefillStatus,
            RequestQueryLengths,
            RequestKvLengthOffsets,
            Temperature,
            TopK,
            TopP,
            ActiveRequestLastTokenIdxs,
        ];
        assert_eq!(req.map(off), [2304, 2336, 2368, 2400, 2432, 2464, 2496]);
        assert_eq!(off(RealTokenCount), 2528);
        let mha = [
            MhaQueryLengths,
            MhaCuQuerySeqLengths,
            MhaKvSeqLengths,
            MhaCuKvSeqLengths,
            MhaBlockTable,
        ];
        assert_eq!(mha.map(off), [2532, 2564, 2600, 2632, 2668]);
        // The block table's R × nkv entries, then the 32-entry (128-byte) guard.
        assert_eq!(g.field(MhaBlockTable).unwrap().elems, 8 * 8 + 32);
        assert_eq!(g.field(MhaBlockTable).unwrap().end(), 2668 + 64 * 4 + 128);
        assert_eq!(g.facts.mamba_pad, 4);
        let mamba = [
            MambaBatchIndicesDecode,
            MambaBatchIndicesPrefill,
            MambaSeqIdx,
            MambaCuSeqlens,
            MambaCuChunkSeqlens,
            MambaLastChunkIndices,
            MambaSeqIdxForVarlen,
            MambaConvSeqIdx,
            MambaConvSeqStart,
        ];
        assert_eq!(
            mamba.map(off),
            [3056, 3120, 3152, 3408, 3444, 3544, 3576, 3672, 3928]
        );
        assert_eq!(g.facts.megatron_bytes, 4184);
        assert_eq!(g.facts.max_chunks, 24);
        assert_eq!(g.facts.max_intermediate, 16);
        assert_eq!(g.facts.kv_pool_blocks, 65);
        assert_eq!(g.facts.dummy_block, 64);
        // Appended fields follow, 8-aligned, and every field is aligned to its dtype.
        assert_eq!(off(MambaIntermediateChunkIndices), 4184);
        for f in &g.fields {
            assert_eq!(f.offset % f.dtype.size(), 0, "{:?}", f.field);
        }
        assert_eq!(g.facts.total_bytes, 4184 + 16 * 8 + 16 * 4 + 4 + 8);
    }

    #[test]
    fn i32_decode_indices_have_no_pad_and_mha_has_no_mamba() {
        let mut s = hybrid_spec();
        s.decode_index_dtype = IndexDtype::I32;
        let g = Geometry::new(&s).unwrap();
        assert_eq!(g.facts.mamba_pad, 0);
        assert_eq!(
            g.field(Field::MambaBatchIndicesDecode).unwrap().offset,
            3052
        );
        s.model = crate::spec::ModelKind::Mha;
        s.mamba = None;
        let g = Geometry::new(&s).unwrap();
        assert_eq!(g.facts.total_bytes, 3052);
        assert_eq!(g.facts.megatron_bytes, 3052);
        assert!(g.field(Field::MambaSeqIdx).is_none());
    }

    #[test]
    fn speculative_tokens_widen_the_block_table() {
        let mut s = hybrid_spec();
        s.speculative_tokens = 1;
        s.max_tokens = 64;
        assert_eq!(Geometry::new(&s).unwrap().facts.block_table_width, 9);
    }
}
