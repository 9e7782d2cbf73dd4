/// Attention layout `llama-3.1-8b` (mha model): 256 request rows (R), 8192 tokens per step (T), longest sequence 131072 (S), KV block size 64 (B), 0 draft tokens per decode request (s), tensor parallel 1 (tp).
/// Source: <https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json>.
///
/// Metadata buffer: 2403468 bytes in 19 fields; 98 CUDA-graph buckets; KV pool 7168 blocks (dummy block 7167).
/// Generated from the spec by attention-layout: the constants are in its `attention_layout::Layout` impl and its field constants; `Llama3_1_8bBuilder` builds the metadata of a step and `Llama3_1_8bMetadata` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Llama3_1_8b;

/// `Llama3_1_8b`'s metadata after a step: the coalesced buffer (2403468 bytes) with one typed accessor per field at its constant offset, and the step's shapes.
///
/// Field accessors return the whole field (its capacity); `view()` gives the lengths the kernels see this step.
#[derive(Debug, Clone, Copy)]
pub struct Llama3_1_8bMetadata<'a> {
    host: &'a ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<Llama3_1_8b>,
    >,
}

/// Builds `Llama3_1_8b`'s metadata on the host: the runtime's fill, monomorphized with `Llama3_1_8b`'s constants.
///
/// A step either succeeds and replaces the metadata, or fails with a typed error and leaves it as it was.
#[derive(Debug, Clone)]
pub struct Llama3_1_8bBuilder {
    host: ::attention_layout::HostMetadata<
        ::attention_layout::layout::ConstDims<Llama3_1_8b>,
    >,
}

/// `Llama3_1_8b`'s facts, buffer layout and CUDA-graph buckets, as constants (the fill kernels' CUDA C: `<Llama3_1_8b as Layout>::cuda_source()`).
const _: () = {
    use ::attention_layout::__private as al;
    #[automatically_derived]
    impl al::Layout for Llama3_1_8b {
        /// The layout's name.
        const NAME: &'static str = "llama-3.1-8b";
        /// The spec it was generated from (TOML, with inline overrides merged).
        const SPEC_TOML: &'static str = r#"block_size = 64
max_requests = 256
max_seq_len = 131072
max_tokens = 8192
model = "mha"
name = "llama-3.1-8b"
source = "https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json"

[graphs]
count = "auto"
distribution = "exponential"
mixed_prefill = 4

[memory]
attention_layers = 32
budget_gib = 56.0
dtype_bytes = 2
head_dim = 128
kv_heads = 8
"#;
        /// `mha`: attention only.
        const MODEL: al::ModelKind = al::ModelKind::Mha;
        /// Every number of the layout (docs/SEMANTICS.md, Notation):
        /// `nkv = ceil(S / B) + (s > 0)` = ceil(131072 / 64) + 0; the KV pool is what 56 GiB holds after the Mamba states, capped at `R × nkv + 1`.
        /// No Mamba fields: no chunk slots, no intermediate states.
        const FACTS: al::Facts = al::Facts {
            max_requests: 256,
            max_tokens: 8192,
            max_seq_len: 131072,
            block_size: 64,
            speculative_tokens: 0,
            tensor_parallel: 1,
            block_table_width: 2048,
            kv_pool_blocks: 7168,
            dummy_block: 7167,
            has_mamba: false,
            decode_index_i64: true,
            chunk_size: 0,
            conv_width: 0,
            max_chunks: 0,
            max_intermediate: 0,
            flashinfer: false,
            vllm: false,
            max_conv_programs: 0,
            mamba_pad: 0,
            megatron_bytes: 2403468,
            total_bytes: 2403468,
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
        ];
        /// The 98 CUDA-graph buckets `(tokens, prefill, decode)`, ascending: 9 decode-only, 76 mixed, 13 prefill-only.
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
            al::BatchDims::new(8192, 1, 255),
            al::BatchDims::new(8192, 2, 254),
            al::BatchDims::new(8192, 4, 252),
            al::BatchDims::new(8192, 8, 248),
            al::BatchDims::new(8192, 16, 240),
            al::BatchDims::new(8192, 32, 224),
            al::BatchDims::new(8192, 64, 192),
            al::BatchDims::new(8192, 128, 128),
            al::BatchDims::new(8192, 256, 0),
        ];
    }
};

/// `Llama3_1_8b`'s field table, the accessors of `Llama3_1_8bMetadata` and the methods of `Llama3_1_8bBuilder`.
const _: () = {
    use ::attention_layout::__private as al;
    /// Where each of `Llama3_1_8b`'s 19 fields lies in its 2403468-byte buffer (docs/SEMANTICS.md §9).
    impl Llama3_1_8b {
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
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; 256 × i32 (R) at bytes 294912..295936.
        pub const REQUEST_IN_PREFILL_STATUS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestInPrefillStatus,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 294912,
        };
        /// `request_query_lengths`: query length per active request; 256 × i32 (R) at bytes 295936..296960.
        pub const REQUEST_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestQueryLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 295936,
        };
        /// `request_kv_length_offsets`: KV offset per active request; 256 × i32 (R) at bytes 296960..297984.
        pub const REQUEST_KV_LENGTH_OFFSETS: al::FieldLayout = al::FieldLayout {
            field: al::Field::RequestKvLengthOffsets,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 296960,
        };
        /// `temperature`: sampling temperature per request (padding 1.0); 256 × f32 (R) at bytes 297984..299008.
        pub const TEMPERATURE: al::FieldLayout = al::FieldLayout {
            field: al::Field::Temperature,
            dtype: al::Dtype::F32,
            elems: 256,
            offset: 297984,
        };
        /// `top_k`: sampling top-k per request; 256 × i32 (R) at bytes 299008..300032.
        pub const TOP_K: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopK,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 299008,
        };
        /// `top_p`: sampling top-p per request; 256 × f32 (R) at bytes 300032..301056.
        pub const TOP_P: al::FieldLayout = al::FieldLayout {
            field: al::Field::TopP,
            dtype: al::Dtype::F32,
            elems: 256,
            offset: 300032,
        };
        /// `active_request_last_token_idxs`: index of each request's last token in the step; 256 × i32 (R) at bytes 301056..302080.
        pub const ACTIVE_REQUEST_LAST_TOKEN_IDXS: al::FieldLayout = al::FieldLayout {
            field: al::Field::ActiveRequestLastTokenIdxs,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 301056,
        };
        /// `real_token_count`: real token count of the step; 1 × i32 (1) at bytes 302080..302084.
        pub const REAL_TOKEN_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::RealTokenCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 302080,
        };
        /// `mha_query_lengths`: query length per padded request; 256 × i32 (R) at bytes 302084..303108.
        pub const MHA_QUERY_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaQueryLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 302084,
        };
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; 257 × i32 (R + 1) at bytes 303108..304136.
        pub const MHA_CU_QUERY_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuQuerySeqLengths,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 303108,
        };
        /// `mha_kv_seq_lengths`: KV length per padded request; 256 × i32 (R) at bytes 304136..305160.
        pub const MHA_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 304136,
        };
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; 257 × i32 (R + 1) at bytes 305160..306188.
        pub const MHA_CU_KV_SEQ_LENGTHS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaCuKvSeqLengths,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 305160,
        };
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; 524320 × i32 (R × nkv + 32) at bytes 306188..2403468.
        pub const MHA_BLOCK_TABLE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaBlockTable,
            dtype: al::Dtype::I32,
            elems: 524320,
            offset: 306188,
        };
    }
    impl<'a> Llama3_1_8bMetadata<'a> {
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
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOKEN_TO_INPUT_IDS)
        }
        /// `token_to_pos_ids`: absolute position of each token; all 8192 × i64 at byte 65536.
        #[inline]
        pub fn token_to_pos_ids(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOKEN_TO_POS_IDS)
        }
        /// `token_to_block_idx`: KV block of each token; all 8192 × i64 at byte 131072.
        #[inline]
        pub fn token_to_block_idx(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOKEN_TO_BLOCK_IDX)
        }
        /// `token_to_local_position_within_kv_block`: position of each token within its KV block; all 8192 × i32 at byte 196608.
        #[inline]
        pub fn token_to_local_position_within_kv_block(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Llama3_1_8b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK,
            )
        }
        /// `token_to_request_idx`: request row of each token; all 8192 × i32 at byte 229376.
        #[inline]
        pub fn token_to_request_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOKEN_TO_REQUEST_IDX)
        }
        /// `token_to_position_in_request`: position of each token in its request; all 8192 × i32 at byte 262144.
        #[inline]
        pub fn token_to_position_in_request(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOKEN_TO_POSITION_IN_REQUEST)
        }
        /// `request_in_prefill_status`: 1 for prefill rows, 0 for decode rows; all 256 × i32 at byte 294912.
        #[inline]
        pub fn request_in_prefill_status(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::REQUEST_IN_PREFILL_STATUS)
        }
        /// `request_query_lengths`: query length per active request; all 256 × i32 at byte 295936.
        #[inline]
        pub fn request_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::REQUEST_QUERY_LENGTHS)
        }
        /// `request_kv_length_offsets`: KV offset per active request; all 256 × i32 at byte 296960.
        #[inline]
        pub fn request_kv_length_offsets(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::REQUEST_KV_LENGTH_OFFSETS)
        }
        /// `temperature`: sampling temperature per request (padding 1.0); all 256 × f32 at byte 297984.
        #[inline]
        pub fn temperature(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TEMPERATURE)
        }
        /// `top_k`: sampling top-k per request; all 256 × i32 at byte 299008.
        #[inline]
        pub fn top_k(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOP_K)
        }
        /// `top_p`: sampling top-p per request; all 256 × f32 at byte 300032.
        #[inline]
        pub fn top_p(&self) -> &'a [f32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::TOP_P)
        }
        /// `active_request_last_token_idxs`: index of each request's last token in the step; all 256 × i32 at byte 301056.
        #[inline]
        pub fn active_request_last_token_idxs(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                Llama3_1_8b::ACTIVE_REQUEST_LAST_TOKEN_IDXS,
            )
        }
        /// `real_token_count`: real token count of the step; all 1 × i32 at byte 302080.
        #[inline]
        pub fn real_token_count(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::REAL_TOKEN_COUNT)
        }
        /// `mha_query_lengths`: query length per padded request; all 256 × i32 at byte 302084.
        #[inline]
        pub fn mha_query_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::MHA_QUERY_LENGTHS)
        }
        /// `mha_cu_query_seq_lengths`: cumulative query lengths; all 257 × i32 at byte 303108.
        #[inline]
        pub fn mha_cu_query_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::MHA_CU_QUERY_SEQ_LENGTHS)
        }
        /// `mha_kv_seq_lengths`: KV length per padded request; all 256 × i32 at byte 304136.
        #[inline]
        pub fn mha_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::MHA_KV_SEQ_LENGTHS)
        }
        /// `mha_cu_kv_seq_lengths`: cumulative KV lengths; all 257 × i32 at byte 305160.
        #[inline]
        pub fn mha_cu_kv_seq_lengths(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::MHA_CU_KV_SEQ_LENGTHS)
        }
        /// `mha_block_table`: block table, one row of `nkv` block ids per request, then a guard of dummy-block ids; all 524320 × i32 at byte 306188.
        #[inline]
        pub fn mha_block_table(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), Llama3_1_8b::MHA_BLOCK_TABLE)
        }
    }
    impl Llama3_1_8bBuilder {
        /// A builder with its 2403468-byte buffer allocated (the only allocation) and initialized: zeros, and the block table all dummy block (7167).
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
        ) -> ::core::result::Result<Llama3_1_8bMetadata<'_>, al::StepError> {
            self.host.fill(input)?;
            ::core::result::Result::Ok(Llama3_1_8bMetadata {
                host: &self.host,
            })
        }
        /// The last step's metadata.
        #[inline]
        pub fn metadata(&self) -> Llama3_1_8bMetadata<'_> {
            Llama3_1_8bMetadata {
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
        pub fn host(&self) -> &al::HostMetadata<al::ConstDims<Llama3_1_8b>> {
            &self.host
        }
    }
    impl ::core::default::Default for Llama3_1_8bBuilder {
        /// Same as `new`.
        fn default() -> Self {
            Self::new()
        }
    }
};

/// Compile-time checks of `Llama3_1_8b`'s layout facts: a mistake in these constants is a compile error, not a corrupt buffer.
const _: () = {
    use ::attention_layout::__private as al;
    const F: al::Facts = <Llama3_1_8b as al::Layout>::FACTS;
    const FIELDS: &[al::FieldLayout] = <Llama3_1_8b as al::Layout>::FIELDS;
    const BUCKETS: &[al::BatchDims] = <Llama3_1_8b as al::Layout>::BUCKETS;
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
        F.has_mamba == < Llama3_1_8b as al::Layout > ::MODEL.has_mamba(),
        "the Mamba fields exist exactly for `mamba` and `hybrid` models"
    );
    assert!(
        F.max_chunks == 0 && F.max_intermediate == 0 && F.max_conv_programs == 0,
        "attention-only layouts have no chunk slots or conv programs"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_INPUT_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_input_ids` must be T × i64"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_POS_IDS, F.max_tokens, al::Dtype::I64),
        "`token_to_pos_ids` must be T × i64"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_BLOCK_IDX, F.max_tokens, al::Dtype::I64),
        "`token_to_block_idx` must be T × i64"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK, F.max_tokens,
        al::Dtype::I32), "`token_to_local_position_within_kv_block` must be T × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_REQUEST_IDX, F.max_tokens, al::Dtype::I32),
        "`token_to_request_idx` must be T × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::TOKEN_TO_POSITION_IN_REQUEST, F.max_tokens,
        al::Dtype::I32), "`token_to_position_in_request` must be T × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::REQUEST_IN_PREFILL_STATUS, F.max_requests,
        al::Dtype::I32), "`request_in_prefill_status` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::REQUEST_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`request_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::REQUEST_KV_LENGTH_OFFSETS, F.max_requests,
        al::Dtype::I32), "`request_kv_length_offsets` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::TEMPERATURE, F.max_requests, al::Dtype::F32),
        "`temperature` must be R × f32"
    );
    assert!(
        al::holds(Llama3_1_8b::TOP_K, F.max_requests, al::Dtype::I32),
        "`top_k` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::TOP_P, F.max_requests, al::Dtype::F32),
        "`top_p` must be R × f32"
    );
    assert!(
        al::holds(Llama3_1_8b::ACTIVE_REQUEST_LAST_TOKEN_IDXS, F.max_requests,
        al::Dtype::I32), "`active_request_last_token_idxs` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::REAL_TOKEN_COUNT, 1, al::Dtype::I32),
        "`real_token_count` must be 1 × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::MHA_QUERY_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::MHA_CU_QUERY_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_query_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::MHA_KV_SEQ_LENGTHS, F.max_requests, al::Dtype::I32),
        "`mha_kv_seq_lengths` must be R × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::MHA_CU_KV_SEQ_LENGTHS, F.max_requests + 1,
        al::Dtype::I32), "`mha_cu_kv_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(Llama3_1_8b::MHA_BLOCK_TABLE, F.max_requests * F.block_table_width +
        32, al::Dtype::I32), "`mha_block_table` must be R × nkv + 32 × i32"
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
