/// Attention layout `mamba2-2.7b` (mamba model): 128 request rows (R), 8192 tokens per step (T), longest sequence 65536 (S), KV block size 256 (B), 0 draft tokens per decode request (s), tensor parallel 1 (tp).
/// Source: <https://huggingface.co/state-spaces/mamba2-2.7b/blob/main/config.json>.
///
/// Metadata buffer: 534308 bytes in 32 fields; 91 CUDA-graph buckets; KV pool 32769 blocks (dummy block 32768).
/// Generated from the spec by attention-layout: the constants are in its `attention_layout::Layout` impl and its field constants; `Mamba2_2_7bBuilder` builds the metadata of a step and `Mamba2_2_7bMetadata` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mamba2_2_7b;

/// `Mamba2_2_7b`'s metadata after a step: the coalesced buffer (534308 bytes) with one typed accessor per field at its constant offset, and the step's shapes.
///
/// Field accessors return the whole field (its capacity); `view()` gives the lengths the kernels see this step.
#[derive(Debug, Clone, Copy)]
pub struct Mamba2_2_7bMetadata<'a> {
    host: &'a ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<Mamba2_2_7b>,
    >,
}

/// Builds `Mamba2_2_7b`'s metadata on the host: the runtime's fill, monomorphized with `Mamba2_2_7b`'s constants.
///
/// A step either succeeds and replaces the metadata, or fails with a typed error and leaves it as it was.
#[derive(Debug, Clone)]
pub struct Mamba2_2_7bBuilder {
    host: ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<Mamba2_2_7b>,
    >,
}

/// `Mamba2_2_7b`'s facts, buffer layout and CUDA-graph buckets, as constants (the fill kernels' CUDA C: `<Mamba2_2_7b as Layout>::cuda_source()`).
const _: () = {
    use ::attention_layout::__private as al;
    #[automatically_derived]
    impl al::Layout for Mamba2_2_7b {
        /// The layout's name.
        const NAME: &'static str = "mamba2-2.7b";
        /// The spec it was generated from (TOML, with inline overrides merged).
        const SPEC_TOML: &'static str = r#"block_size = 256
max_requests = 128
max_seq_len = 65536
max_tokens = 8192
model = "mamba"
name = "mamba2-2.7b"
source = "https://huggingface.co/state-spaces/mamba2-2.7b/blob/main/config.json"

[graphs]
count = "auto"
mixed_prefill = 4

[mamba]
chunk_size = 256
conv_width = 4

[memory]
attention_layers = 0
budget_gib = 40.0
dtype_bytes = 2
mamba_groups = 1
mamba_head_dim = 64
mamba_heads = 80
mamba_layers = 64
mamba_state_dim = 128
state_dtype_bytes = 4
"#;
        /// `mamba`: Mamba fields present, strict bucket matching.
        const MODEL: al::ModelKind = al::ModelKind::Mamba;
        /// Every number of the layout (docs/SEMANTICS.md, Notation):
        /// `nkv = ceil(S / B) + (s > 0)` = ceil(65536 / 256) + 0; the KV pool is what 40 GiB holds after the Mamba states, capped at `R × nkv + 1`.
        /// `Cmax = floor(T / cs) + R` = 8192 / 256 + 128; `Kmax = min(ceil(T / B), 3R)` = min(32, 384).
        const FACTS: al::Facts = al::Facts {
            max_requests: 128,
            max_tokens: 8192,
            max_seq_len: 65536,
            block_size: 256,
            speculative_tokens: 0,
            tensor_parallel: 1,
            block_table_width: 256,
            kv_pool_blocks: 32769,
            dummy_block: 32768,
            has_mamba: true,
            decode_index_i64: true,
            chunk_size: 256,
            conv_width: 4,
            max_chunks: 160,
            max_intermediate: 32,
            flashinfer: false,
            vllm: false,
            max_conv_programs: 0,
            mamba_pad: 4,
            megatron_bytes: 533912,
            total_bytes: 534308,
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
        /// The 91 CUDA-graph buckets `(tokens, prefill, decode)`, ascending: 8 decode-only, 70 mixed, 13 prefill-only.
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
            al::BatchDims::new(256, 1, 127),
            al::BatchDims::new(256, 2, 126),
            al::BatchDims::new(256, 4, 124),
            al::BatchDims::new(256, 8, 120),
            al::BatchDims::new(256, 16, 112),
            al::BatchDims::new(256, 32, 96),
            al::BatchDims::new(256, 64, 64),
            al::BatchDims::new(256, 128, 0),
            al::BatchDims::new(512, 1, 127),
            al::BatchDims::new(512, 2, 126),
            al::BatchDims::new(512, 4, 124),
            al::BatchDims::new(512, 8, 120),
            al::BatchDims::new(512, 16, 112),
            al::BatchDims::new(512, 32, 96),
            al::BatchDims::new(512, 64, 64),
            al::BatchDims::new(512, 128, 0),
            al::BatchDims::new(1024, 1, 127),
            al::BatchDims::new(1024, 2, 126),
            al::BatchDims::new(1024, 4, 124),
            al::BatchDims::new(1024, 8, 120),
            al::BatchDims::new(1024, 16, 112),
            al::BatchDims::new(1024, 32, 96),
            al::BatchDims::new(1024, 64, 64),
            al::BatchDims::new(1024, 128, 0),
            al::BatchDims::new(2048, 1, 127),
            al::BatchDims::new(2048, 2, 126),
            al::BatchDims::new(2048, 4, 124),
            al::BatchDims::new(2048, 8, 120),
            al::BatchDims::new(2048, 16, 112),
            al::BatchDims::new(2048, 32, 96),
            al::BatchDims::new(2048, 64, 64),
            al::BatchDims::new(2048, 128, 0),
            al::BatchDims::new(4096, 1, 127),
            al::BatchDims::new(4096, 2, 126),
            al::BatchDims::new(4096, 4, 124),
            al::BatchDims::new(4096, 8, 120),
            al::BatchDims::new(4096, 16, 112),
            al::BatchDims::new(4096, 32, 96),
            al::BatchDims::new(4096, 64, 64),
            al::BatchDims::new(4096, 128, 0),
            al::BatchDims::new(8192, 1, 127),
            al::BatchDims::new(8192, 2, 126),
            al::BatchDims::new(8192, 4, 124),
            al::BatchDims::new(8192, 8, 120),
            al::BatchDims::new(8192, 16, 112),
            al::BatchDims::new(8192, 32, 96),
            al::BatchDims::new(8192, 64, 64),
            al::BatchDims::new(8192, 128, 0),
        ];
    }
};

/// `Mamba2_2_7b`'s field table, the accessors of `Mamba2_2_7bMetadata` and the methods of `Mamba2_2_7bBuilder`.
const _: () = {
    use ::attention_layout::__private as al;
    /// Where each of `Mamba2_2_7b`'s 32 fields lies in its 534308-byte buffer (docs/SEMANTICS.md §9).
    impl Mamba2_2_7b {
        /// `token_to_input_ids`: token ids of the step's tokens; 8192 × i64 (T) at bytes 0..65536.
        pub const TOKEN_TO_INPUT_IDS: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToInputIds,
            dtype: al::Dtype::I64,
            elems: 8192,
            offset: 0,
        };
        /// `token_to_pos_ids`: absolute position of each token; 8192 × i64 (T) at bytes 65536..131072.
        pub const TOKEN_TO_POS_IDS: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToPosIds,
            dtype: al::Dtype::I64,
            elems: 8192,
            offset: 65536,
        };
        /// `token_to_block_idx`: KV block of each token; 8192 × i64 (T) at bytes 131072..196608.
        pub const TOKEN_TO_BLOCK_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToBlockIdx,
            dtype: al::Dtype::I64,
            elems: 8192,
            offset: 131072,
        };
        /// `token_to_local_position_within_kv_block`: position of each token within its KV block; 8192 × i32 (T) at bytes 196608..229376.
        pub const TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToLocalPositionWithinKvBlock,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 196608,
        };
        /// `token_to_request_idx`: request row of each token; 8192 × i32 (T) at bytes 229376..262144.
        pub const TOKEN_TO_REQUEST_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToRequestIdx,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 229376,
        };
        /// `token_to_position_in_request`: position of each token in its request; 8192 × i32 (T) at bytes 262144..294912.
        pub const TOKEN_TO_POSITION_IN_REQUEST: al::FieldLayout = al::FieldLayout {
            field: al::Field::TokenToPositionInRequest,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 262144,
        };
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; 128 × i32 (R) at bytes 294912..295424.
        pub const REQUEST_IN_PREFILL_STATUS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestInPrefillStatus,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 294912,
        };
        /// `request_query_lengths`: query length per active request; 128 × i32 (R) at bytes 295424..295936.
        pub const REQUEST_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestQueryLengths,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 295424,
        };
        /// `request_kv_length_offsets`: KV offset per active request; 128 × i32 (R) at bytes 295936..296448.
        pub const REQUEST_KV_LENGTH_OFFSETS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestKvLengthOffsets,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 295936,
        };
        /// `temperature`: sampling temperature per request (padding 1.0); 128 × f32 (R) at bytes 296448..296960.
        pub const TEMPERATURE: al::FieldLayout = al::FieldLayout {
            field: al::Field::Temperature,
            dtype: al::Dtype::F32,
            elems: 128,
            offset: 296448,
        };
        /// `top_k`: sampling top-k per request; 128 × i32 (R) at bytes 296960..297472.
        pub const TOP_K: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopK,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 296960,
        };
        /// `top_p`: sampling top-p per request; 128 × f32 (R) at bytes 297472..297984.
        pub const TOP_P: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopP,
            dtype: al::Dtype::F32,
            elems: 128,
            offset: 297472,
        };
        /// `active_request_last_token_idxs`: index of each request's last token in the step; 128 × i32 (R) at bytes 297984..298496.
        pub const ACTIVE_REQUEST_LAST_TOKEN_IDXS: al::FieldLayout = al::FieldLayout {
            field: al::Field::ActiveRequestLastTokenIdxs,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 297984,
        };
        /// `real_token_count`: real token count of the step; 1 × i32 (1) at bytes 298496..298500.
        pub const REAL_TOKEN_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::RealTokenCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 298496,
        };
        /// `mha_query_lengths`: query length per padded request; 128 × i32 (R) at bytes 298500..299012.
        pub const MHA_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaQueryLengths,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 298500,
        };
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; 129 × i32 (R + 1) at bytes 299012..299528.
        pub const MHA_CU_QUERY_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuQuerySeqLengths,
            dtype: al::Dtype::I32,
            elems: 129,
            offset: 299012,
        };
        /// `mha_kv_seq_lengths`: KV length per padded request; 128 × i32 (R) at bytes 299528..300040.
        pub const MHA_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 299528,
        };
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; 129 × i32 (R + 1) at bytes 300040..300556.
        pub const MHA_CU_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 129,
            offset: 300040,
        };
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; 32800 × i32 (R × nkv + 32) at bytes 300556..431756.
        pub const MHA_BLOCK_TABLE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaBlockTable,
            dtype: al::Dtype::I32,
            elems: 32800,
            offset: 300556,
        };
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; 128 × i64 (R) at bytes 431760..432784.
        pub const MAMBA_BATCH_INDICES_DECODE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesDecode,
            dtype: al::Dtype::I64,
            elems: 128,
            offset: 431760,
        };
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; 128 × i32 (R) at bytes 432784..433296.
        pub const MAMBA_BATCH_INDICES_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesPrefill,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 432784,
        };
        /// `mamba_seq_idx`: prefill sequence number per token; 8192 × i32 (T) at bytes 433296..466064.
        pub const MAMBA_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdx,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 433296,
        };
        /// `mamba_cu_seqlens`: cumulative prefill lengths; 129 × i32 (R + 1) at bytes 466064..466580.
        pub const MAMBA_CU_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuSeqlens,
            dtype: al::Dtype::I32,
            elems: 129,
            offset: 466064,
        };
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; 161 × i32 (Cmax + 1) at bytes 466580..467224.
        pub const MAMBA_CU_CHUNK_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuChunkSeqlens,
            dtype: al::Dtype::I32,
            elems: 161,
            offset: 466580,
        };
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; 128 × i32 (R) at bytes 467224..467736.
        pub const MAMBA_LAST_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaLastChunkIndices,
            dtype: al::Dtype::I32,
            elems: 128,
            offset: 467224,
        };
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; 160 × i32 (Cmax) at bytes 467736..468376.
        pub const MAMBA_SEQ_IDX_FOR_VARLEN: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdxForVarlen,
            dtype: al::Dtype::I32,
            elems: 160,
            offset: 467736,
        };
        /// `mamba_conv_seq_idx`: conv sequence number per token; 8192 × i32 (T) at bytes 468376..501144.
        pub const MAMBA_CONV_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqIdx,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 468376,
        };
        /// `mamba_conv_seq_start`: conv sequence start per token; 8192 × i32 (T) at bytes 501144..533912.
        pub const MAMBA_CONV_SEQ_START: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqStart,
            dtype: al::Dtype::I32,
            elems: 8192,
            offset: 501144,
        };
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); 32 × i64 (Kmax) at bytes 533912..534168.
        pub const MAMBA_INTERMEDIATE_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateChunkIndices,
            dtype: al::Dtype::I64,
            elems: 32,
            offset: 533912,
        };
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); 32 × i32 (Kmax) at bytes 534168..534296.
        pub const MAMBA_INTERMEDIATE_ABS_POSITIONS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateAbsPositions,
            dtype: al::Dtype::I32,
            elems: 32,
            offset: 534168,
        };
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); 1 × i32 (1) at bytes 534296..534300.
        pub const MAMBA_INTERMEDIATE_REAL_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateRealCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 534296,
        };
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); 2 × i32 (2) at bytes 534300..534308.
        pub const MAMBA_DEVICE_DECODE_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaDeviceDecodePrefill,
            dtype: al::Dtype::I32,
            elems: 2,
            offset: 534300,
        };
    }
    impl<'a> Mamba2_2_7bMetadata<'a> {
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
        /// `token_to_input_ids`: token ids of the step's tokens; all 8192 × i64 at byte 0.
        #[inline]
        pub fn token_to_input_ids(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOKEN_TO_INPUT_IDS)
        }
        /// `token_to_pos_ids`: absolute position of each token; all 8192 × i64 at byte 65536.
        #[inline]
        pub fn token_to_pos_ids(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOKEN_TO_POS_IDS)
        }
        /// `token_to_block_idx`: KV block of each token; all 8192 × i64 at byte 131072.
        #[inline]
        pub fn token_to_block_idx(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOKEN_TO_BLOCK_IDX)
        }
        /// `token_to_local_position_within_kv_block`: position of each token within its KV block; all 8192 × i32 at byte 196608.
        #[inline]
        pub fn token_to_local_position_within_kv_block(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Mamba2_2_7b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK,
            )
        }
        /// `token_to_request_idx`: request row of each token; all 8192 × i32 at byte 229376.
        #[inline]
        pub fn token_to_request_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOKEN_TO_REQUEST_IDX)
        }
        /// `token_to_position_in_request`: position of each token in its request; all 8192 × i32 at byte 262144.
        #[inline]
        pub fn token_to_position_in_request(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOKEN_TO_POSITION_IN_REQUEST)
        }
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; all 128 × i32 at byte 294912.
        #[inline]
        pub fn request_in_prefill_status(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::REQUEST_IN_PREFILL_STATUS)
        }
        /// `request_query_lengths`: query length per active request; all 128 × i32 at byte 295424.
        #[inline]
        pub fn request_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::REQUEST_QUERY_LENGTHS)
        }
        /// `request_kv_length_offsets`: KV offset per active request; all 128 × i32 at byte 295936.
        #[inline]
        pub fn request_kv_length_offsets(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::REQUEST_KV_LENGTH_OFFSETS)
        }
        /// `temperature`: sampling temperature per request (padding 1.0); all 128 × f32 at byte 296448.
        #[inline]
        pub fn temperature(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TEMPERATURE)
        }
        /// `top_k`: sampling top-k per request; all 128 × i32 at byte 296960.
        #[inline]
        pub fn top_k(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOP_K)
        }
        /// `top_p`: sampling top-p per request; all 128 × f32 at byte 297472.
        #[inline]
        pub fn top_p(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::TOP_P)
        }
        /// `active_request_last_token_idxs`: index of each request's last token in the step; all 128 × i32 at byte 297984.
        #[inline]
        pub fn active_request_last_token_idxs(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Mamba2_2_7b::ACTIVE_REQUEST_LAST_TOKEN_IDXS,
            )
        }
        /// `real_token_count`: real token count of the step; all 1 × i32 at byte 298496.
        #[inline]
        pub fn real_token_count(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::REAL_TOKEN_COUNT)
        }
        /// `mha_query_lengths`: query length per padded request; all 128 × i32 at byte 298500.
        #[inline]
        pub fn mha_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MHA_QUERY_LENGTHS)
        }
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; all 129 × i32 at byte 299012.
        #[inline]
        pub fn mha_cu_query_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MHA_CU_QUERY_SEQ_LENGTHS)
        }
        /// `mha_kv_seq_lengths`: KV length per padded request; all 128 × i32 at byte 299528.
        #[inline]
        pub fn mha_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MHA_KV_SEQ_LENGTHS)
        }
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; all 129 × i32 at byte 300040.
        #[inline]
        pub fn mha_cu_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MHA_CU_KV_SEQ_LENGTHS)
        }
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; all 32800 × i32 at byte 300556.
        #[inline]
        pub fn mha_block_table(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MHA_BLOCK_TABLE)
        }
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; all 128 × i64 at byte 431760.
        #[inline]
        pub fn mamba_batch_indices_decode(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_BATCH_INDICES_DECODE)
        }
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; all 128 × i32 at byte 432784.
        #[inline]
        pub fn mamba_batch_indices_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_BATCH_INDICES_PREFILL)
        }
        /// `mamba_seq_idx`: prefill sequence number per token; all 8192 × i32 at byte 433296.
        #[inline]
        pub fn mamba_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_SEQ_IDX)
        }
        /// `mamba_cu_seqlens`: cumulative prefill lengths; all 129 × i32 at byte 466064.
        #[inline]
        pub fn mamba_cu_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_CU_SEQLENS)
        }
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; all 161 × i32 at byte 466580.
        #[inline]
        pub fn mamba_cu_chunk_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_CU_CHUNK_SEQLENS)
        }
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; all 128 × i32 at byte 467224.
        #[inline]
        pub fn mamba_last_chunk_indices(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_LAST_CHUNK_INDICES)
        }
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; all 160 × i32 at byte 467736.
        #[inline]
        pub fn mamba_seq_idx_for_varlen(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_SEQ_IDX_FOR_VARLEN)
        }
        /// `mamba_conv_seq_idx`: conv sequence number per token; all 8192 × i32 at byte 468376.
        #[inline]
        pub fn mamba_conv_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_CONV_SEQ_IDX)
        }
        /// `mamba_conv_seq_start`: conv sequence start per token; all 8192 × i32 at byte 501144.
        #[inline]
        pub fn mamba_conv_seq_start(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_CONV_SEQ_START)
        }
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); all 32 × i64 at byte 533912.
        #[inline]
        pub fn mamba_intermediate_chunk_indices(&self) -> &'a [i64] {
            al::field_slice(
                self.host.bytes(),
                Mamba2_2_7b::MAMBA_INTERMEDIATE_CHUNK_INDICES,
            )
        }
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); all 32 × i32 at byte 534168.
        #[inline]
        pub fn mamba_intermediate_abs_positions(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Mamba2_2_7b::MAMBA_INTERMEDIATE_ABS_POSITIONS,
            )
        }
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); all 1 × i32 at byte 534296.
        #[inline]
        pub fn mamba_intermediate_real_count(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Mamba2_2_7b::MAMBA_INTERMEDIATE_REAL_COUNT,
            )
        }
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); all 2 × i32 at byte 534300.
        #[inline]
        pub fn mamba_device_decode_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Mamba2_2_7b::MAMBA_DEVICE_DECODE_PREFILL)
        }
    }
    impl Mamba2_2_7bBuilder {
        /// A builder with its 534308-byte buffer allocated (the only allocation) and initialized: zeros, and the block table all dummy block (32768).
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
        ) -> ::core::result::Result<Mamba2_2_7bMetadata<'_>, al::StepError> {
            self.host.fill(input)?;
            ::core::result::Result::Ok(Mamba2_2_7bMetadata {
                host: &self.host,
            })
        }
        /// The last step's metadata.
        #[inline]
        pub fn metadata(&self) -> Mamba2_2_7bMetadata<'_> {
            Mamba2_2_7bMetadata {
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
        pub fn host(&self) -> &al::HostMetadata<al::ConstDims<Mamba2_2_7b>> {
            &self.host
        }
    }
    impl ::core::default::Default for Mamba2_2_7bBuilder {
        /// Same as `new`.
        fn default() -> Self {
            Self::new()
        }
    }
};

/// Compile-time checks of `Mamba2_2_7b`'s layout facts: a mistake in these constants is a compile error, not a corrupt buffer.
const _: () = {
    use ::attention_layout::__private as al;
    const F: al::Facts = <Mamba2_2_7b as al::Layout>::FACTS;
    const FIELDS: &[al::FieldLayout] = <Mamba2_2_7b as al::Layout>::FIELDS;
    const BUCKETS: &[al::BatchDims] = <Mamba2_2_7b as al::Layout>::BUCKETS;
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
        F.has_mamba == < Mamba2_2_7b as al::Layout > ::MODEL.has_mamba(),
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
        al::holds(Mamba2_2_7b::TOKEN_TO_INPUT_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_input_ids` must be T × i64"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOKEN_TO_POS_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_pos_ids` must be T × i64"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOKEN_TO_BLOCK_IDX, F.max_tokens, al::Dtype::I64),
        "`token_to_block_idx` must be T × i64"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK, F.max_tokens,
        al::Dtype::I32), "`token_to_local_position_within_kv_block` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOKEN_TO_REQUEST_IDX, F.max_tokens, al::Dtype::I32),
        "`token_to_request_idx` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOKEN_TO_POSITION_IN_REQUEST, F.max_tokens,
        al::Dtype::I32), "`token_to_position_in_request` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::REQUEST_IN_PREFILL_STATUS, F.max_requests,
        al::Dtype::I32), "`request_in_prefill_status` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::REQUEST_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`request_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::REQUEST_KV_LENGTH_OFFSETS, F.max_requests,
        al::Dtype::I32), "`request_kv_length_offsets` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::TEMPERATURE, F.max_requests, al::Dtype::F32),
        "`temperature` must be R × f32"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOP_K, F.max_requests, al::Dtype::I32),
        "`top_k` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::TOP_P, F.max_requests, al::Dtype::F32),
        "`top_p` must be R × f32"
    );
    assert!(
        al::holds(Mamba2_2_7b::ACTIVE_REQUEST_LAST_TOKEN_IDXS, F.max_requests,
        al::Dtype::I32), "`active_request_last_token_idxs` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::REAL_TOKEN_COUNT, 1, al::Dtype::I32),
        "`real_token_count` must be 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MHA_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MHA_CU_QUERY_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_query_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MHA_KV_SEQ_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_kv_seq_lengths` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MHA_CU_KV_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_kv_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MHA_BLOCK_TABLE, F.max_requests * F.block_table_width +
        32, al::Dtype::I32), "`mha_block_table` must be R × nkv + 32 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_BATCH_INDICES_DECODE, F.max_requests, if F
        .decode_index_i64 { al::Dtype::I64 } else { al::Dtype::I32 }),
        "`mamba_batch_indices_decode` must be R × i64"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_BATCH_INDICES_PREFILL, F.max_requests,
        al::Dtype::I32), "`mamba_batch_indices_prefill` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_SEQ_IDX, F.max_tokens, al::Dtype::I32),
        "`mamba_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_CU_SEQLENS, F.max_requests + 1, al::Dtype::I32),
        "`mamba_cu_seqlens` must be R + 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_CU_CHUNK_SEQLENS, F.max_chunks + 1, al::Dtype::I32),
        "`mamba_cu_chunk_seqlens` must be Cmax + 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_LAST_CHUNK_INDICES, F.max_requests, al::Dtype::I32),
        "`mamba_last_chunk_indices` must be R × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_SEQ_IDX_FOR_VARLEN, F.max_chunks, al::Dtype::I32),
        "`mamba_seq_idx_for_varlen` must be Cmax × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_CONV_SEQ_IDX, F.max_tokens, al::Dtype::I32),
        "`mamba_conv_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_CONV_SEQ_START, F.max_tokens, al::Dtype::I32),
        "`mamba_conv_seq_start` must be T × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_INTERMEDIATE_CHUNK_INDICES, F.max_intermediate,
        al::Dtype::I64), "`mamba_intermediate_chunk_indices` must be Kmax × i64"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_INTERMEDIATE_ABS_POSITIONS, F.max_intermediate,
        al::Dtype::I32), "`mamba_intermediate_abs_positions` must be Kmax × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_INTERMEDIATE_REAL_COUNT, 1, al::Dtype::I32),
        "`mamba_intermediate_real_count` must be 1 × i32"
    );
    assert!(
        al::holds(Mamba2_2_7b::MAMBA_DEVICE_DECODE_PREFILL, 2, al::Dtype::I32),
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
