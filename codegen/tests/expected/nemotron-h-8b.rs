/// Attention layout `nemotron-h-8b` (hybrid model): 256 request rows (R), 4096 tokens per step (T), longest sequence 8192 (S), KV block size 64 (B), 0 draft tokens per decode request (s), tensor parallel 1 (tp).
/// Source: <https://huggingface.co/nvidia/Nemotron-H-8B-Base-8K/blob/main/config.json>.
///
/// Metadata buffer: 347300 bytes in 32 fields; 89 CUDA-graph buckets; KV pool 24216 blocks (dummy block 24215).
/// Generated from the spec by attention-layout: the constants are in its `attention_layout::Layout` impl and its field constants; `NemotronH8bBuilder` builds the metadata of a step and `NemotronH8bMetadata` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NemotronH8b;

/// `NemotronH8b`'s metadata after a step: the coalesced buffer (347300 bytes) with one typed accessor per field at its constant offset, and the step's shapes.
///
/// Field accessors return the whole field (its capacity); `view()` gives the lengths the kernels see this step.
#[derive(Debug, Clone, Copy)]
pub struct NemotronH8bMetadata<'a> {
    host: &'a ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<NemotronH8b>,
    >,
}

/// Builds `NemotronH8b`'s metadata on the host: the runtime's fill, monomorphized with `NemotronH8b`'s constants.
///
/// A step either succeeds and replaces the metadata, or fails with a typed error and leaves it as it was.
#[derive(Debug, Clone)]
pub struct NemotronH8bBuilder {
    host: ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<NemotronH8b>,
    >,
}

/// `NemotronH8b`'s facts, buffer layout and CUDA-graph buckets, as constants (the fill kernels' CUDA C: `<NemotronH8b as Layout>::cuda_source()`).
const _: () = {
    use ::attention_layout::__private as al;
    #[automatically_derived]
    impl al::Layout for NemotronH8b {
        /// The layout's name.
        const NAME: &'static str = "nemotron-h-8b";
        /// The spec it was generated from (TOML, with inline overrides merged).
        const SPEC_TOML: &'static str = r#"block_size = 64
max_requests = 256
max_seq_len = 8192
max_tokens = 4096
model = "hybrid"
name = "nemotron-h-8b"
source = "https://huggingface.co/nvidia/Nemotron-H-8B-Base-8K/blob/main/config.json"

[graphs]
count = "auto"
distribution = "exponential"
mixed_prefill = 4

[mamba]
chunk_size = 128
conv_width = 4

[memory]
attention_layers = 4
budget_gib = 48.0
dtype_bytes = 2
head_dim = 128
kv_heads = 8
mamba_groups = 8
mamba_head_dim = 64
mamba_heads = 128
mamba_layers = 24
mamba_state_dim = 128
state_dtype_bytes = 4
"#;
        /// `hybrid`: Mamba fields present, strict bucket matching.
        const MODEL: al::ModelKind = al::ModelKind::Hybrid;
        /// Every number of the layout (docs/SEMANTICS.md, Notation):
        /// `nkv = ceil(S / B) + (s > 0)` = ceil(8192 / 64) + 0; the KV pool is what 48 GiB holds after the Mamba states, capped at `R × nkv + 1`.
        /// `Cmax = floor(T / cs) + R` = 4096 / 128 + 256; `Kmax = min(ceil(T / B), 3R)` = min(64, 768).
        const FACTS: al::Facts = al::Facts {
            max_requests: 256,
            max_tokens: 4096,
            max_seq_len: 8192,
            block_size: 64,
            speculative_tokens: 0,
            tensor_parallel: 1,
            block_table_width: 128,
            kv_pool_blocks: 24216,
            dummy_block: 24215,
            has_mamba: true,
            decode_index_i64: true,
            chunk_size: 128,
            conv_width: 4,
            max_chunks: 288,
            max_intermediate: 64,
            flashinfer: false,
            vllm: false,
            max_conv_programs: 0,
            mamba_pad: 4,
            megatron_bytes: 346520,
            total_bytes: 347300,
        };
        /// Every field, in buffer order.
        const FIELDS: &'static [al::FieldLayout] = &[
            Self::TOKEN_TO_INPUT_IDS,
            Self::TOKEN_TO_POS_IDS,
            Self::TOKEN_TO_BLOCK_IDX,
            Self::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK,
            Self::TOKEN_TO_REQUEST_IDX,
            Self::TOKEN_TO_POSITION_IN_REQUEST,
            Self::REQUEST_IN_PREFILL_STATUS,
            Self::REQUEST_QUERY_LENGTHS,
            Self::REQUEST_KV_LENGTH_OFFSETS,
            Self::TEMPERATURE,
            Self::TOP_K,
            Self::TOP_P,
            Self::ACTIVE_REQUEST_LAST_TOKEN_IDXS,
            Self::REAL_TOKEN_COUNT,
            Self::MHA_QUERY_LENGTHS,
            Self::MHA_CU_QUERY_SEQ_LENGTHS,
            Self::MHA_KV_SEQ_LENGTHS,
            Self::MHA_CU_KV_SEQ_LENGTHS,
            Self::MHA_BLOCK_TABLE,
            Self::MAMBA_BATCH_INDICES_DECODE,
            Self::MAMBA_BATCH_INDICES_PREFILL,
            Self::MAMBA_SEQ_IDX,
            Self::MAMBA_CU_SEQLENS,
            Self::MAMBA_CU_CHUNK_SEQLENS,
            Self::MAMBA_LAST_CHUNK_INDICES,
            Self::MAMBA_SEQ_IDX_FOR_VARLEN,
            Self::MAMBA_CONV_SEQ_IDX,
            Self::MAMBA_CONV_SEQ_START,
            Self::MAMBA_INTERMEDIATE_CHUNK_INDICES,
            Self::MAMBA_INTERMEDIATE_ABS_POSITIONS,
            Self::MAMBA_INTERMEDIATE_REAL_COUNT,
            Self::MAMBA_DEVICE_DECODE_PREFILL,
        ];
        /// The 89 CUDA-graph buckets `(tokens, prefill, decode)`, ascending: 9 decode-only, 68 mixed, 12 prefill-only.
        const BUCKETS: &'static [al::BatchDims] = &[
            al::BatchDims::new(1, 0, 1),
            al::BatchDims::new(2, 0, 2),
            al::BatchDims::new(2, 1, 1),
            al::BatchDims::new(2, 2, 0),
            al::BatchDims::new(4, 0, 4),
            al::BatchDims::new(4, 1, 3),
            al::BatchDims::new(4, 2, 2),
            al::BatchDims::new(4, 4, 0),
            al::BatchDims::new(8, 0, 8),
            al::BatchDims::new(8, 1, 7),
            al::BatchDims::new(8, 2, 6),
            al::BatchDims::new(8, 4, 4),
            al::BatchDims::new(8, 8, 0),
            al::BatchDims::new(16, 0, 16),
            al::BatchDims::new(16, 1, 15),
            al::BatchDims::new(16, 2, 14),
            al::BatchDims::new(16, 4, 12),
            al::BatchDims::new(16, 8, 8),
            al::BatchDims::new(16, 16, 0),
            al::BatchDims::new(32, 0, 32),
            al::BatchDims::new(32, 1, 31),
            al::BatchDims::new(32, 2, 30),
            al::BatchDims::new(32, 4, 28),
            al::BatchDims::new(32, 8, 24),
            al::BatchDims::new(32, 16, 16),
            al::BatchDims::new(32, 32, 0),
            al::BatchDims::new(64, 0, 64),
            al::BatchDims::new(64, 1, 63),
            al::BatchDims::new(64, 2, 62),
            al::BatchDims::new(64, 4, 60),
            al::BatchDims::new(64, 8, 56),
            al::BatchDims::new(64, 16, 48),
            al::BatchDims::new(64, 32, 32),
            al::BatchDims::new(64, 64, 0),
            al::BatchDims::new(128, 0, 128),
            al::BatchDims::new(128, 1, 127),
            al::BatchDims::new(128, 2, 126),
            al::BatchDims::new(128, 4, 124),
            al::BatchDims::new(128, 8, 120),
            al::BatchDims::new(128, 16, 112),
            al::BatchDims::new(128, 32, 96),
            al::BatchDims::new(128, 64, 64),
            al::BatchDims::new(128, 128, 0),
            al::BatchDims::new(256, 0, 256),
            al::BatchDims::new(256, 1, 255),
            al::BatchDims::new(256, 2, 254),
            al::BatchDims::new(256, 4, 252),
            al::BatchDims::new(256, 8, 248),
            al::BatchDims::new(256, 16, 240),
            al::BatchDims::new(256, 32, 224),
            al::BatchDims::new(256, 64, 192),
            al::BatchDims::new(256, 128, 128),
            al::BatchDims::new(256, 256, 0),
            al::BatchDims::new(512, 1, 255),
            al::BatchDims::new(512, 2, 254),
            al::BatchDims::new(512, 4, 252),
            al::BatchDims::new(512, 8, 248),
            al::BatchDims::new(512, 16, 240),
            al::BatchDims::new(512, 32, 224),
            al::BatchDims::new(512, 64, 192),
            al::BatchDims::new(512, 128, 128),
            al::BatchDims::new(512, 256, 0),
            al::BatchDims::new(1024, 1, 255),
            al::BatchDims::new(1024, 2, 254),
            al::BatchDims::new(1024, 4, 252),
            al::BatchDims::new(1024, 8, 248),
            al::BatchDims::new(1024, 16, 240),
            al::BatchDims::new(1024, 32, 224),
            al::BatchDims::new(1024, 64, 192),
            al::BatchDims::new(1024, 128, 128),
            al::BatchDims::new(1024, 256, 0),
            al::BatchDims::new(2048, 1, 255),
            al::BatchDims::new(2048, 2, 254),
            al::BatchDims::new(2048, 4, 252),
            al::BatchDims::new(2048, 8, 248),
            al::BatchDims::new(2048, 16, 240),
            al::BatchDims::new(2048, 32, 224),
            al::BatchDims::new(2048, 64, 192),
            al::BatchDims::new(2048, 128, 128),
            al::BatchDims::new(2048, 256, 0),
            al::BatchDims::new(4096, 1, 255),
            al::BatchDims::new(4096, 2, 254),
            al::BatchDims::new(4096, 4, 252),
            al::BatchDims::new(4096, 8, 248),
            al::BatchDims::new(4096, 16, 240),
            al::BatchDims::new(4096, 32, 224),
            al::BatchDims::new(4096, 64, 192),
            al::BatchDims::new(4096, 128, 128),
            al::BatchDims::new(4096, 256, 0),
        ];
    }
};

/// `NemotronH8b`'s field table, the accessors of `NemotronH8bMetadata` and the methods of `NemotronH8bBuilder`.
const _: () = {
    use ::attention_layout::__private as al;
    /// Where each of `NemotronH8b`'s 32 fields lies in its 347300-byte buffer (docs/SEMANTICS.md §9).
    impl NemotronH8b {
        /// `token_to_input_ids`: token ids of the step's tokens; 4096 × i64 (T) at bytes 0..32768.
        pub const TOKEN_TO_INPUT_IDS: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToInputIds,
            dtype: al::Dtype::I64,
            elems: 4096,
            offset: 0,
        };
        /// `token_to_pos_ids`: absolute position of each token; 4096 × i64 (T) at bytes 32768..65536.
        pub const TOKEN_TO_POS_IDS: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToPosIds,
            dtype: al::Dtype::I64,
            elems: 4096,
            offset: 32768,
        };
        /// `token_to_block_idx`: KV block of each token; 4096 × i64 (T) at bytes 65536..98304.
        pub const TOKEN_TO_BLOCK_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToBlockIdx,
            dtype: al::Dtype::I64,
            elems: 4096,
            offset: 65536,
        };
        /// `token_to_local_position_within_kv_block`: position of each token within its KV block; 4096 × i32 (T) at bytes 98304..114688.
        pub const TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToLocalPositionWithinKvBlock,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 98304,
        };
        /// `token_to_request_idx`: request row of each token; 4096 × i32 (T) at bytes 114688..131072.
        pub const TOKEN_TO_REQUEST_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToRequestIdx,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 114688,
        };
        /// `token_to_position_in_request`: position of each token in its request; 4096 × i32 (T) at bytes 131072..147456.
        pub const TOKEN_TO_POSITION_IN_REQUEST: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToPositionInRequest,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 131072,
        };
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; 256 × i32 (R) at bytes 147456..148480.
        pub const REQUEST_IN_PREFILL_STATUS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestInPrefillStatus,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 147456,
        };
        /// `request_query_lengths`: query length per active request; 256 × i32 (R) at bytes 148480..149504.
        pub const REQUEST_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestQueryLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 148480,
        };
        /// `request_kv_length_offsets`: KV offset per active request; 256 × i32 (R) at bytes 149504..150528.
        pub const REQUEST_KV_LENGTH_OFFSETS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestKvLengthOffsets,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 149504,
        };
        /// `temperature`: sampling temperature per request (padding 1.0); 256 × f32 (R) at bytes 150528..151552.
        pub const TEMPERATURE: al::FieldLayout = al::FieldLayout {
            field: al::Field::Temperature,
            dtype: al::Dtype::F32,
            elems: 256,
            offset: 150528,
        };
        /// `top_k`: sampling top-k per request; 256 × i32 (R) at bytes 151552..152576.
        pub const TOP_K: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopK,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 151552,
        };
        /// `top_p`: sampling top-p per request; 256 × f32 (R) at bytes 152576..153600.
        pub const TOP_P: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopP,
            dtype: al::Dtype::F32,
            elems: 256,
            offset: 152576,
        };
        /// `active_request_last_token_idxs`: index of each request's last token in the step; 256 × i32 (R) at bytes 153600..154624.
        pub const ACTIVE_REQUEST_LAST_TOKEN_IDXS: al::FieldLayout = al::FieldLayout {
            field: al::Field::ActiveRequestLastTokenIdxs,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 153600,
        };
        /// `real_token_count`: real token count of the step; 1 × i32 (1) at bytes 154624..154628.
        pub const REAL_TOKEN_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::RealTokenCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 154624,
        };
        /// `mha_query_lengths`: query length per padded request; 256 × i32 (R) at bytes 154628..155652.
        pub const MHA_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaQueryLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 154628,
        };
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; 257 × i32 (R + 1) at bytes 155652..156680.
        pub const MHA_CU_QUERY_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuQuerySeqLengths,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 155652,
        };
        /// `mha_kv_seq_lengths`: KV length per padded request; 256 × i32 (R) at bytes 156680..157704.
        pub const MHA_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 156680,
        };
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; 257 × i32 (R + 1) at bytes 157704..158732.
        pub const MHA_CU_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 157704,
        };
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; 32800 × i32 (R × nkv + 32) at bytes 158732..289932.
        pub const MHA_BLOCK_TABLE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaBlockTable,
            dtype: al::Dtype::I32,
            elems: 32800,
            offset: 158732,
        };
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; 256 × i64 (R) at bytes 289936..291984.
        pub const MAMBA_BATCH_INDICES_DECODE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesDecode,
            dtype: al::Dtype::I64,
            elems: 256,
            offset: 289936,
        };
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; 256 × i32 (R) at bytes 291984..293008.
        pub const MAMBA_BATCH_INDICES_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesPrefill,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 291984,
        };
        /// `mamba_seq_idx`: prefill sequence number per token; 4096 × i32 (T) at bytes 293008..309392.
        pub const MAMBA_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdx,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 293008,
        };
        /// `mamba_cu_seqlens`: cumulative prefill lengths; 257 × i32 (R + 1) at bytes 309392..310420.
        pub const MAMBA_CU_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuSeqlens,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 309392,
        };
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; 289 × i32 (Cmax + 1) at bytes 310420..311576.
        pub const MAMBA_CU_CHUNK_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuChunkSeqlens,
            dtype: al::Dtype::I32,
            elems: 289,
            offset: 310420,
        };
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; 256 × i32 (R) at bytes 311576..312600.
        pub const MAMBA_LAST_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaLastChunkIndices,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 311576,
        };
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; 288 × i32 (Cmax) at bytes 312600..313752.
        pub const MAMBA_SEQ_IDX_FOR_VARLEN: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdxForVarlen,
            dtype: al::Dtype::I32,
            elems: 288,
            offset: 312600,
        };
        /// `mamba_conv_seq_idx`: conv sequence number per token; 4096 × i32 (T) at bytes 313752..330136.
        pub const MAMBA_CONV_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqIdx,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 313752,
        };
        /// `mamba_conv_seq_start`: conv sequence start per token; 4096 × i32 (T) at bytes 330136..346520.
        pub const MAMBA_CONV_SEQ_START: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqStart,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 330136,
        };
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); 64 × i64 (Kmax) at bytes 346520..347032.
        pub const MAMBA_INTERMEDIATE_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateChunkIndices,
            dtype: al::Dtype::I64,
            elems: 64,
            offset: 346520,
        };
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); 64 × i32 (Kmax) at bytes 347032..347288.
        pub const MAMBA_INTERMEDIATE_ABS_POSITIONS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateAbsPositions,
            dtype: al::Dtype::I32,
            elems: 64,
            offset: 347032,
        };
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); 1 × i32 (1) at bytes 347288..347292.
        pub const MAMBA_INTERMEDIATE_REAL_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateRealCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 347288,
        };
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); 2 × i32 (2) at bytes 347292..347300.
        pub const MAMBA_DEVICE_DECODE_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaDeviceDecodePrefill,
            dtype: al::Dtype::I32,
            elems: 2,
            offset: 347292,
        };
    }
    impl<'a> NemotronH8bMetadata<'a> {
        /// The whole buffer (what one host-to-device copy moves).
        #[inline]
        pub fn bytes(&self) -> &'a [u8] {
            self.host.bytes()
        }
        /// The step's shapes: real, padded, bucket, `max_seqlen_*`, chunk counts.
        #[inline]
        pub fn info(&self) -> &'a al::StepInfo {
            self.host.info()
        }
        /// Typed views with exactly the lengths the kernels see this step (Mamba
        /// fields `None` when absent this step).
        #[inline]
        pub fn view(&self) -> al::MetadataView<'a> {
            self.host.view()
        }
        /// `token_to_input_ids`: token ids of the step's tokens; all 4096 × i64 at byte 0.
        #[inline]
        pub fn token_to_input_ids(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOKEN_TO_INPUT_IDS)
        }
        /// `token_to_pos_ids`: absolute position of each token; all 4096 × i64 at byte 32768.
        #[inline]
        pub fn token_to_pos_ids(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOKEN_TO_POS_IDS)
        }
        /// `token_to_block_idx`: KV block of each token; all 4096 × i64 at byte 65536.
        #[inline]
        pub fn token_to_block_idx(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOKEN_TO_BLOCK_IDX)
        }
        /// `token_to_local_position_within_kv_block`: position of each token within its KV block; all 4096 × i32 at byte 98304.
        #[inline]
        pub fn token_to_local_position_within_kv_block(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK,
            )
        }
        /// `token_to_request_idx`: request row of each token; all 4096 × i32 at byte 114688.
        #[inline]
        pub fn token_to_request_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOKEN_TO_REQUEST_IDX)
        }
        /// `token_to_position_in_request`: position of each token in its request; all 4096 × i32 at byte 131072.
        #[inline]
        pub fn token_to_position_in_request(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOKEN_TO_POSITION_IN_REQUEST)
        }
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; all 256 × i32 at byte 147456.
        #[inline]
        pub fn request_in_prefill_status(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::REQUEST_IN_PREFILL_STATUS)
        }
        /// `request_query_lengths`: query length per active request; all 256 × i32 at byte 148480.
        #[inline]
        pub fn request_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::REQUEST_QUERY_LENGTHS)
        }
        /// `request_kv_length_offsets`: KV offset per active request; all 256 × i32 at byte 149504.
        #[inline]
        pub fn request_kv_length_offsets(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::REQUEST_KV_LENGTH_OFFSETS)
        }
        /// `temperature`: sampling temperature per request (padding 1.0); all 256 × f32 at byte 150528.
        #[inline]
        pub fn temperature(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), NemotronH8b::TEMPERATURE)
        }
        /// `top_k`: sampling top-k per request; all 256 × i32 at byte 151552.
        #[inline]
        pub fn top_k(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOP_K)
        }
        /// `top_p`: sampling top-p per request; all 256 × f32 at byte 152576.
        #[inline]
        pub fn top_p(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), NemotronH8b::TOP_P)
        }
        /// `active_request_last_token_idxs`: index of each request's last token in the step; all 256 × i32 at byte 153600.
        #[inline]
        pub fn active_request_last_token_idxs(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::ACTIVE_REQUEST_LAST_TOKEN_IDXS,
            )
        }
        /// `real_token_count`: real token count of the step; all 1 × i32 at byte 154624.
        #[inline]
        pub fn real_token_count(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::REAL_TOKEN_COUNT)
        }
        /// `mha_query_lengths`: query length per padded request; all 256 × i32 at byte 154628.
        #[inline]
        pub fn mha_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_QUERY_LENGTHS)
        }
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; all 257 × i32 at byte 155652.
        #[inline]
        pub fn mha_cu_query_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_CU_QUERY_SEQ_LENGTHS)
        }
        /// `mha_kv_seq_lengths`: KV length per padded request; all 256 × i32 at byte 156680.
        #[inline]
        pub fn mha_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_KV_SEQ_LENGTHS)
        }
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; all 257 × i32 at byte 157704.
        #[inline]
        pub fn mha_cu_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_CU_KV_SEQ_LENGTHS)
        }
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; all 32800 × i32 at byte 158732.
        #[inline]
        pub fn mha_block_table(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_BLOCK_TABLE)
        }
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; all 256 × i64 at byte 289936.
        #[inline]
        pub fn mamba_batch_indices_decode(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_BATCH_INDICES_DECODE)
        }
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; all 256 × i32 at byte 291984.
        #[inline]
        pub fn mamba_batch_indices_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_BATCH_INDICES_PREFILL)
        }
        /// `mamba_seq_idx`: prefill sequence number per token; all 4096 × i32 at byte 293008.
        #[inline]
        pub fn mamba_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_SEQ_IDX)
        }
        /// `mamba_cu_seqlens`: cumulative prefill lengths; all 257 × i32 at byte 309392.
        #[inline]
        pub fn mamba_cu_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CU_SEQLENS)
        }
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; all 289 × i32 at byte 310420.
        #[inline]
        pub fn mamba_cu_chunk_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CU_CHUNK_SEQLENS)
        }
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; all 256 × i32 at byte 311576.
        #[inline]
        pub fn mamba_last_chunk_indices(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_LAST_CHUNK_INDICES)
        }
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; all 288 × i32 at byte 312600.
        #[inline]
        pub fn mamba_seq_idx_for_varlen(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_SEQ_IDX_FOR_VARLEN)
        }
        /// `mamba_conv_seq_idx`: conv sequence number per token; all 4096 × i32 at byte 313752.
        #[inline]
        pub fn mamba_conv_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CONV_SEQ_IDX)
        }
        /// `mamba_conv_seq_start`: conv sequence start per token; all 4096 × i32 at byte 330136.
        #[inline]
        pub fn mamba_conv_seq_start(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CONV_SEQ_START)
        }
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); all 64 × i64 at byte 346520.
        #[inline]
        pub fn mamba_intermediate_chunk_indices(&self) -> &'a [i64] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_CHUNK_INDICES,
            )
        }
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); all 64 × i32 at byte 347032.
        #[inline]
        pub fn mamba_intermediate_abs_positions(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_ABS_POSITIONS,
            )
        }
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); all 1 × i32 at byte 347288.
        #[inline]
        pub fn mamba_intermediate_real_count(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_REAL_COUNT,
            )
        }
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); all 2 × i32 at byte 347292.
        #[inline]
        pub fn mamba_device_decode_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_DEVICE_DECODE_PREFILL)
        }
    }
    impl NemotronH8bBuilder {
        /// A builder with its 347300-byte buffer allocated (the only allocation) and initialized: zeros, and the block table all dummy block (24215).
        pub fn new() -> Self {
            Self {
                host: al::HostMetadata::new(al::ConstDims::new()),
            }
        }
        /// Builds one step's metadata. On error nothing changes.
        #[inline]
        pub fn fill(
            &mut self,
            input: &al::StepInput<'_>,
        ) -> ::core::result::Result<NemotronH8bMetadata<'_>, al::StepError> {
            self.host.fill(input)?;
            ::core::result::Result::Ok(NemotronH8bMetadata {
                host: &self.host,
            })
        }
        /// The last step's metadata.
        #[inline]
        pub fn metadata(&self) -> NemotronH8bMetadata<'_> {
            NemotronH8bMetadata {
                host: &self.host,
            }
        }
        /// Back to the freshly built state (`HostMetadata::reset`): the next step's
        /// metadata is what a new builder would build. Allocates nothing.
        #[inline]
        pub fn reset(&mut self) {
            self.host.reset();
        }
        /// The runtime's host metadata underneath, for code generic over `Dims`.
        #[inline]
        pub fn host(&self) -> &al::HostMetadata<al::ConstDims<NemotronH8b>> {
            &self.host
        }
    }
    impl ::core::default::Default for NemotronH8bBuilder {
        /// Same as `new`.
        fn default() -> Self {
            Self::new()
        }
    }
};

/// Compile-time checks of `NemotronH8b`'s layout facts: a mistake in these constants is a compile error, not a corrupt buffer.
const _: () = {
    use ::attention_layout::__private as al;
    const F: al::Facts = <NemotronH8b as al::Layout>::FACTS;
    const FIELDS: &[al::FieldLayout] = <NemotronH8b as al::Layout>::FIELDS;
    const BUCKETS: &[al::BatchDims] = <NemotronH8b as al::Layout>::BUCKETS;
    assert!(
        F.max_requests != 0 && F.max_tokens != 0 && F.max_seq_len != 0 && F
        .tensor_parallel != 0, "capacities must be positive"
    );
    assert!(F.block_size.is_power_of_two(), "`block_size` must be a power of two");
    assert!(
        F.max_tokens.is_multiple_of(64usize.div_ceil(F.tensor_parallel) * F
        .tensor_parallel), "`max_tokens` must be a multiple of the eager token rounder"
    );
    assert!(
        F.max_tokens >= F.max_requests * (F.speculative_tokens + 1),
        "every request must be able to decode in one step"
    );
    assert!(
        F.block_table_width == F.max_seq_len.div_ceil(F.block_size) + (F
        .speculative_tokens != 0) as usize, "`nkv` must be ceil(S / B) + (s > 0)"
    );
    assert!(
        F.kv_pool_blocks >= 2 && F.dummy_block as usize == F.kv_pool_blocks - 1,
        "the dummy block must be the last block of the pool"
    );
    assert!(
        F.has_mamba == < NemotronH8b as al::Layout > ::MODEL.has_mamba(),
        "the Mamba fields exist exactly for `mamba` and `hybrid` models"
    );
    assert!(
        F.chunk_size != 0 && F.conv_width != 0,
        "Mamba layouts need a chunk size and a conv width"
    );
    assert!(F.chunk_size.is_power_of_two(), "`chunk_size` must be a power of two");
    assert!(
        F.max_conv_programs == (F.max_tokens / 8usize + F.max_requests) * F.vllm as
        usize, "`Pmax` must be floor(T / 8) + R with the vllm format, else 0"
    );
    assert!(
        F.max_chunks == F.max_tokens / F.chunk_size + F.max_requests,
        "`Cmax` must be floor(T / cs) + R"
    );
    let k = F.max_tokens.div_ceil(F.block_size);
    assert!(
        F.max_intermediate == if k < 3 * F.max_requests { k } else { 3 * F.max_requests
        }, "`Kmax` must be min(ceil(T / B), 3R)"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_INPUT_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_input_ids` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_POS_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_pos_ids` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_BLOCK_IDX, F.max_tokens, al::Dtype::I64),
        "`token_to_block_idx` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK, F.max_tokens,
        al::Dtype::I32), "`token_to_local_position_within_kv_block` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_REQUEST_IDX, F.max_tokens, al::Dtype::I32),
        "`token_to_request_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_POSITION_IN_REQUEST, F.max_tokens,
        al::Dtype::I32), "`token_to_position_in_request` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_IN_PREFILL_STATUS, F.max_requests,
        al::Dtype::I32), "`request_in_prefill_status` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`request_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_KV_LENGTH_OFFSETS, F.max_requests,
        al::Dtype::I32), "`request_kv_length_offsets` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::TEMPERATURE, F.max_requests, al::Dtype::F32),
        "`temperature` must be R × f32"
    );
    assert!(
        al::holds(NemotronH8b::TOP_K, F.max_requests, al::Dtype::I32),
        "`top_k` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOP_P, F.max_requests, al::Dtype::F32),
        "`top_p` must be R × f32"
    );
    assert!(
        al::holds(NemotronH8b::ACTIVE_REQUEST_LAST_TOKEN_IDXS, F.max_requests,
        al::Dtype::I32), "`active_request_last_token_idxs` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REAL_TOKEN_COUNT, 1, al::Dtype::I32),
        "`real_token_count` must be 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_CU_QUERY_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_query_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_KV_SEQ_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_kv_seq_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_CU_KV_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_kv_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_BLOCK_TABLE, F.max_requests * F.block_table_width +
        32, al::Dtype::I32), "`mha_block_table` must be R × nkv + 32 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_BATCH_INDICES_DECODE, F.max_requests, if F
        .decode_index_i64 { al::Dtype::I64 } else { al::Dtype::I32 }),
        "`mamba_batch_indices_decode` must be R × i64"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_BATCH_INDICES_PREFILL, F.max_requests,
        al::Dtype::I32), "`mamba_batch_indices_prefill` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_SEQ_IDX, F.max_tokens, al::Dtype::I32),
        "`mamba_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CU_SEQLENS, F.max_requests + 1, al::Dtype::I32),
        "`mamba_cu_seqlens` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CU_CHUNK_SEQLENS, F.max_chunks + 1, al::Dtype::I32),
        "`mamba_cu_chunk_seqlens` must be Cmax + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_LAST_CHUNK_INDICES, F.max_requests, al::Dtype::I32),
        "`mamba_last_chunk_indices` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_SEQ_IDX_FOR_VARLEN, F.max_chunks, al::Dtype::I32),
        "`mamba_seq_idx_for_varlen` must be Cmax × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CONV_SEQ_IDX, F.max_tokens, al::Dtype::I32),
        "`mamba_conv_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CONV_SEQ_START, F.max_tokens, al::Dtype::I32),
        "`mamba_conv_seq_start` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_INTERMEDIATE_CHUNK_INDICES, F.max_intermediate,
        al::Dtype::I64), "`mamba_intermediate_chunk_indices` must be Kmax × i64"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_INTERMEDIATE_ABS_POSITIONS, F.max_intermediate,
        al::Dtype::I32), "`mamba_intermediate_abs_positions` must be Kmax × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_INTERMEDIATE_REAL_COUNT, 1, al::Dtype::I32),
        "`mamba_intermediate_real_count` must be 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_DEVICE_DECODE_PREFILL, 2, al::Dtype::I32),
        "`mamba_device_decode_prefill` must be 2 × i32"
    );
    assert!(
        al::fields_in_buffer_order(FIELDS, & F),
        "the field table must list every field of the model, in buffer order"
    );
    assert!(
        al::fields_packed(FIELDS, F.total_bytes),
        "each field must start at the previous one's end rounded up to its alignment (docs/SEMANTICS.md §9), and the last end the buffer"
    );
    assert!(
        al::megatron_bytes(FIELDS) == F.megatron_bytes,
        "Megatron's buffer must end where the appended fields begin"
    );
    assert!(
        al::mamba_pad(FIELDS) == F.mamba_pad,
        "the Mamba pad must be the gap before the decode indices"
    );
    assert!(
        F.total_bytes <= i32::MAX as usize,
        "device kernels address the buffer with 32-bit offsets"
    );
    assert!(
        al::buckets_ascending(BUCKETS), "the bucket table must be strictly ascending"
    );
    assert!(
        al::buckets_valid(BUCKETS, F.max_requests, F.max_tokens, F.max_seq_len, F
        .speculative_tokens),
        "every bucket must be a valid batch shape within max_tokens (docs/SEMANTICS.md §2)"
    );
};
