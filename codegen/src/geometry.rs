//! Derived geometry: capacities and the byte layout of the one coalesced metadata buffer
//! (SEMANTICS §9), plus the bucket list. Everything the fill, the kernels and the
//! generated code need to know about a layout is computed here, once.

use crate::buckets::{self, BatchDims, BucketParams};
use crate::spec::{IndexDtype, LayoutSpec, SpecError};

/// Element type of a buffer field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `int32_t`.
    I32,
    /// `int64_t`.
    I64,
    /// `float`.
    F32,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::I32 | Self::F32 => 4,
            Self::I64 => 8,
        }
    }

    /// The Rust type name.
    pub const fn rust(self) -> &'static str {
        match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F32 => "f32",
        }
    }

    /// The CUDA C type name.
    pub const fn cuda(self) -> &'static str {
        match self {
            Self::I32 => "int32_t",
            Self::I64 => "int64_t",
            Self::F32 => "float",
        }
    }
}

macro_rules! fields {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal ),* $(,)?) => {
        /// A field of the coalesced buffer, in buffer order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $( $(#[$doc])* $variant, )*
        }

        impl Field {
            /// Every field, in buffer order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// The field's name (Megatron's name, with the `mha_` / `mamba_` prefixes of
            /// SEMANTICS §9).
            pub const fn name(self) -> &'static str {
                match self { $(Field::$variant => $name,)* }
            }
        }
    };
}

fields! {
    /// Token ids of the step's tokens (i64, `T`).
    TokenToInputIds = "token_to_input_ids",
    /// Absolute position of each token (i64, `T`).
    TokenToPosIds = "token_to_pos_ids",
    /// KV block of each token (i64, `T`).
    TokenToBlockIdx = "token_to_block_idx",
    /// Position of each token within its KV block (i32, `T`).
    TokenToLocalPositionWithinKvBlock = "token_to_local_position_within_kv_block",
    /// Absolute request row of each token (i32, `T`).
    TokenToRequestIdx = "token_to_request_idx",
    /// Position of each token in its request (i32, `T`).
    TokenToPositionInRequest = "token_to_position_in_request",
    /// 1 for prefill rows, 0 for decode rows (i32, `R`).
    RequestInPrefillStatus = "request_in_prefill_status",
    /// Query length per active request (i32, `R`).
    RequestQueryLengths = "request_query_lengths",
    /// KV offset per active request (i32, `R`).
    RequestKvLengthOffsets = "request_kv_length_offsets",
    /// Sampling temperature (f32, `R`, pad 1.0).
    Temperature = "temperature",
    /// Sampling top-k (i32, `R`).
    TopK = "top_k",
    /// Sampling top-p (f32, `R`).
    TopP = "top_p",
    /// Index of each request's last token in the step (i32, `R`).
    ActiveRequestLastTokenIdxs = "active_request_last_token_idxs",
    /// Real token count of the step (i32, 1).
    RealTokenCount = "real_token_count",
    /// Query length per padded request (i32, `R`).
    MhaQueryLengths = "mha_query_lengths",
    /// Cumulative query lengths (i32, `R+1`).
    MhaCuQuerySeqLengths = "mha_cu_query_seq_lengths",
    /// KV length per padded request (i32, `R`).
    MhaKvSeqLengths = "mha_kv_seq_lengths",
    /// Cumulative KV lengths (i32, `R+1`).
    MhaCuKvSeqLengths = "mha_cu_kv_seq_lengths",
    /// Block table (i32, `R * nkv`).
    MhaBlockTable = "mha_block_table",
    /// Mamba state slot per decode request (i64 or i32, `R`).
    MambaBatchIndicesDecode = "mamba_batch_indices_decode",
    /// Mamba state slot per prefill request (i32, `R`).
    MambaBatchIndicesPrefill = "mamba_batch_indices_prefill",
    /// Prefill sequence number per token (i32, `T`).
    MambaSeqIdx = "mamba_seq_idx",
    /// Cumulative prefill lengths (i32, `R+1`).
    MambaCuSeqlens = "mamba_cu_seqlens",
    /// Chunk boundaries (i32, `Cmax+1`).
    MambaCuChunkSeqlens = "mamba_cu_chunk_seqlens",
    /// Last chunk of each prefill sequence (i32, `R`).
    MambaLastChunkIndices = "mamba_last_chunk_indices",
    /// Sequence number of each chunk (i32, `Cmax`).
    MambaSeqIdxForVarlen = "mamba_seq_idx_for_varlen",
    /// Conv sequence number per token (i32, `T`).
    MambaConvSeqIdx = "mamba_conv_seq_idx",
    /// Conv sequence start per token (i32, `T`).
    MambaConvSeqStart = "mamba_conv_seq_start",
    /// Intermediate-state chunk indices (i64, `Kmax`). Appended after SEMANTICS §9's
    /// layout: Megatron computes these on the device after the copy.
    MambaIntermediateChunkIndices = "mamba_intermediate_chunk_indices",
    /// Intermediate-state absolute positions (i32, `Kmax`). Appended.
    MambaIntermediateAbsPositions = "mamba_intermediate_abs_positions",
    /// Real intermediate entries (i32, 1). Appended.
    MambaIntermediateRealCount = "mamba_intermediate_real_count",
    /// Real decode tokens and real prefill tokens (i32, 2). Appended.
    MambaDeviceDecodePrefill = "mamba_device_decode_prefill",
}

/// Number of [`Field`] variants.
pub const FIELD_COUNT: usize = Field::ALL.len();

impl Field {
    /// Position in [`Field::ALL`] (buffer order).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the field exists only in layouts with Mamba layers.
    pub const fn is_mamba(self) -> bool {
        (self as usize) >= (Field::MambaBatchIndicesDecode as usize)
    }

    /// Whether the field is one this project appends after Megatron's layout.
    pub const fn is_appended(self) -> bool {
        (self as usize) >= (Field::MambaIntermediateChunkIndices as usize)
    }
}

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
    /// `R`.
    pub max_requests: usize,
    /// `T`.
    pub max_tokens: usize,
    /// `S`.
    pub max_seq_len: usize,
    /// `B`.
    pub block_size: usize,
    /// `s`.
    pub num_spec: usize,
    /// Block-table width `nkv = ceil(S / B) + (s > 0)`.
    pub block_table_width: usize,
    /// KV pool size in blocks, dummy included.
    pub kv_pool_blocks: usize,
    /// The dummy block id, `kv_pool_blocks - 1`.
    pub dummy_block: i32,
    /// Mamba chunk size (0 without Mamba).
    pub chunk_size: usize,
    /// Conv width `d_conv` (0 without Mamba).
    pub conv_width: usize,
    /// Chunk slots `Cmax = floor(T / cs) + R` (0 without Mamba).
    pub max_chunks: usize,
    /// Intermediate-state capacity `Kmax = min(ceil(T / B), 3R)` (0 without Mamba).
    pub max_intermediate: usize,
    /// Alignment pad before the Mamba fields (bytes).
    pub mamba_pad: usize,
    /// Every field, in buffer order.
    pub fields: Vec<FieldLayout>,
    /// Bytes of Megatron's coalesced buffer (SEMANTICS §9), before the appended fields.
    pub megatron_bytes: usize,
    /// Bytes of the whole buffer.
    pub total_bytes: usize,
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
        let spec_tokens = spec.speculative_tokens as usize;
        let nkv = s.div_ceil(b) + usize::from(spec_tokens > 0);
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

        let mut fields = Vec::with_capacity(Field::ALL.len());
        let mut offset = 0usize;
        let mut mamba_pad = 0;
        let mut megatron_bytes = 0;
        for &field in Field::ALL {
            use Field::*;
            if field.is_mamba() && !has_mamba {
                break;
            }
            let (dtype, elems) = match field {
                TokenToInputIds | TokenToPosIds | TokenToBlockIdx => (Dtype::I64, t),
                TokenToLocalPositionWithinKvBlock
                | TokenToRequestIdx
                | TokenToPositionInRequest => (Dtype::I32, t),
                Temperature | TopP => (Dtype::F32, r),
                RequestInPrefillStatus
                | RequestQueryLengths
                | RequestKvLengthOffsets
                | TopK
                | ActiveRequestLastTokenIdxs => (Dtype::I32, r),
                RealTokenCount => (Dtype::I32, 1),
                MhaQueryLengths | MhaKvSeqLengths => (Dtype::I32, r),
                MhaCuQuerySeqLengths | MhaCuKvSeqLengths => (Dtype::I32, r + 1),
                MhaBlockTable => (Dtype::I32, r * nkv),
                MambaBatchIndicesDecode => match spec.decode_index_dtype {
                    IndexDtype::I64 => (Dtype::I64, r),
                    IndexDtype::I32 => (Dtype::I32, r),
                },
                MambaBatchIndicesPrefill | MambaLastChunkIndices => (Dtype::I32, r),
                MambaSeqIdx | MambaConvSeqIdx | MambaConvSeqStart => (Dtype::I32, t),
                MambaCuSeqlens => (Dtype::I32, r + 1),
                MambaCuChunkSeqlens => (Dtype::I32, max_chunks + 1),
                MambaSeqIdxForVarlen => (Dtype::I32, max_chunks),
                MambaIntermediateChunkIndices => (Dtype::I64, max_intermediate),
                MambaIntermediateAbsPositions => (Dtype::I32, max_intermediate),
                MambaIntermediateRealCount => (Dtype::I32, 1),
                MambaDeviceDecodePrefill => (Dtype::I32, 2),
            };
            if field == MambaBatchIndicesDecode && dtype == Dtype::I64 {
                // SEMANTICS §9: the one alignment pad, before the i64 decode indices.
                mamba_pad = (8 - offset % 8) % 8;
                offset += mamba_pad;
            }
            if field == MambaIntermediateChunkIndices {
                megatron_bytes = offset;
                offset = offset.next_multiple_of(8);
            }
            let fl = FieldLayout {
                field,
                dtype,
                elems,
                offset,
            };
            offset = fl.end();
            fields.push(fl);
        }
        if !has_mamba {
            megatron_bytes = offset;
        }
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
            max_requests: r,
            max_tokens: t,
            max_seq_len: s,
            block_size: b,
            num_spec: spec_tokens,
            block_table_width: nkv,
            kv_pool_blocks,
            dummy_block: (kv_pool_blocks - 1) as i32,
            chunk_size: cs,
            conv_width: dconv,
            max_chunks,
            max_intermediate,
            mamba_pad,
            fields,
            megatron_bytes,
            total_bytes: offset,
            buckets,
        })
    }

    /// The bucket-generation parameters this layout uses.
    pub fn bucket_params(&self) -> BucketParams {
        self.spec.bucket_params()
    }

    /// Whether the layout has Mamba fields.
    pub fn has_mamba(&self) -> bool {
        self.spec.model.has_mamba()
    }

    /// The layout of one field, if the layout has it.
    pub fn field(&self, f: Field) -> Option<&FieldLayout> {
        self.fields.iter().find(|l| l.field == f)
    }

    /// The largest bucket's padded request count (`R` when no graphs).
    pub fn tp(&self) -> u32 {
        self.spec.tensor_parallel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid_spec() -> LayoutSpec {
        LayoutSpec::from_toml_str(
            r#"
model = "hybrid"
max_requests = 8
max_tokens = 64
max_seq_len = 32
block_size = 4
[mamba]
chunk_size = 4
conv_width = 4
"#,
            "t.toml",
        )
        .unwrap()
    }

    /// SEMANTICS §9's checked offsets, byte for byte.
    #[test]
    fn semantics_9_offsets() {
        let g = Geometry::new(&hybrid_spec()).unwrap();
        assert_eq!(g.block_table_width, 8);
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
        assert_eq!(g.mamba_pad, 4);
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
            [2928, 2992, 3024, 3280, 3316, 3416, 3448, 3544, 3800]
        );
        assert_eq!(g.megatron_bytes, 4056);
        assert_eq!(g.max_chunks, 24);
        assert_eq!(g.max_intermediate, 16);
        assert_eq!(g.kv_pool_blocks, 65);
        assert_eq!(g.dummy_block, 64);
        // Appended fields follow, 8-aligned, and every field is aligned to its dtype.
        assert_eq!(off(MambaIntermediateChunkIndices), 4056);
        for f in &g.fields {
            assert_eq!(f.offset % f.dtype.size(), 0, "{:?}", f.field);
        }
        assert_eq!(g.total_bytes, 4056 + 16 * 8 + 16 * 4 + 4 + 8);
    }

    #[test]
    fn i32_decode_indices_have_no_pad_and_mha_has_no_mamba() {
        let mut s = hybrid_spec();
        s.decode_index_dtype = IndexDtype::I32;
        let g = Geometry::new(&s).unwrap();
        assert_eq!(g.mamba_pad, 0);
        assert_eq!(
            g.field(Field::MambaBatchIndicesDecode).unwrap().offset,
            2924
        );
        s.model = crate::spec::ModelKind::Mha;
        s.mamba = None;
        let g = Geometry::new(&s).unwrap();
        assert_eq!(g.total_bytes, 2924);
        assert_eq!(g.megatron_bytes, 2924);
        assert!(g.field(Field::MambaSeqIdx).is_none());
    }

    #[test]
    fn speculative_tokens_widen_the_block_table() {
        let mut s = hybrid_spec();
        s.speculative_tokens = 1;
        s.max_tokens = 64;
        assert_eq!(Geometry::new(&s).unwrap().block_table_width, 9);
    }
}
