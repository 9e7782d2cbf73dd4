/// Attention layout `nemotron-h-8b` (hybrid model): R = 256 requests, T = 4096 tokens, S = 8192, B = 64, s = 0 speculative tokens, tensor parallel 1.
/// Source: <https://huggingface.co/nvidia/Nemotron-H-8B-Base-8K/blob/main/config.json>.
///
/// Metadata buffer: 347172 bytes in 32 fields; 89 CUDA-graph buckets; KV pool 24216 blocks (dummy block 24215).
/// Generated from the spec by attention-layout: the constants are in its `attention_layout::Layout` impl and its field constants; `NemotronH8bBuilder` builds the metadata of a step and `NemotronH8bMetadata` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NemotronH8b;

/// `NemotronH8b`'s metadata after a step: the coalesced buffer (347172 bytes) with one typed accessor per field at its constant offset, and the step's shapes.
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

/// `NemotronH8b`'s capacities, buffer layout, CUDA-graph buckets and fill kernels, as constants.
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
        /// `R`: request rows per step.
        const MAX_REQUESTS: usize = 256;
        /// `T`: tokens per step.
        const MAX_TOKENS: usize = 4096;
        /// `S`: longest sequence.
        const MAX_SEQ_LEN: usize = 8192;
        /// `B`: tokens per KV block.
        const BLOCK_SIZE: usize = 64;
        /// `s`: speculative tokens per decode request.
        const NUM_SPEC: usize = 0;
        /// Tensor-parallel size.
        const TENSOR_PARALLEL: u32 = 1;
        /// Block-table width `nkv = ceil(S / B) + (s > 0)` = ceil(8192 / 64) + 0.
        const BLOCK_TABLE_WIDTH: usize = 128;
        /// KV pool size in blocks, dummy included: what 48 GiB holds after the Mamba states, capped at `R × nkv + 1`.
        const KV_POOL_BLOCKS: usize = 24216;
        /// The dummy block id, `KV_POOL_BLOCKS - 1`.
        const DUMMY_BLOCK: i32 = 24215;
        /// Whether `mamba_batch_indices_decode` is i64 (else i32).
        const DECODE_INDEX_I64: bool = true;
        /// Mamba chunk size `cs` (0 without Mamba).
        const CHUNK_SIZE: usize = 128;
        /// Causal-conv1d width `d_conv` (0 without Mamba).
        const CONV_WIDTH: usize = 4;
        /// Chunk slots `Cmax = floor(T / cs) + R` = 4096 / 128 + 256.
        const MAX_CHUNKS: usize = 288;
        /// Intermediate-state capacity `Kmax = min(ceil(T / B), 3R)` = min(64, 768).
        const MAX_INTERMEDIATE: usize = 64;
        /// Bytes of Megatron's coalesced buffer (SEMANTICS §9), before the appended fields.
        const MEGATRON_BYTES: usize = 346392;
        /// Bytes of the whole buffer.
        const TOTAL_BYTES: usize = 347172;
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
        /// CUDA C source of the fill kernels, one entry point per bucket (89), with these constants baked in.
        const CUDA_SOURCE: &'static str = r#"// attention-layout fill kernels for layout `nemotron-h-8b` (hybrid).
// Generated by attention-layout-codegen 0.1.0 (staging ABI 1); do not edit:
// regenerate from the layout spec. Every number below is a fact of the layout, and
// the static_asserts re-derive each one from the others.
//
// R = 256 requests, T = 4096 tokens, S = 8192 max sequence length, B = 64 tokens per
// KV block, 0 speculative tokens, block table 256 x 128, 89 CUDA-graph buckets,
// 347172 bytes of metadata.

typedef unsigned char al_u8;
typedef int al_i32;
typedef unsigned int al_u32;
typedef long long al_i64;
typedef unsigned long long al_u64;
static_assert(sizeof(al_i32) == 4 && sizeof(al_u32) == 4, "32-bit integers");
static_assert(sizeof(al_i64) == 8 && sizeof(al_u64) == 8, "64-bit integers");

// ---- Layout facts -----------------------------------------------------------
constexpr al_u32 AL_MAX_REQUESTS = 256u;          // R
constexpr al_u32 AL_MAX_TOKENS = 4096u;            // T
constexpr al_u32 AL_MAX_SEQ_LEN = 8192u;           // S
constexpr al_u32 AL_BLOCK_SIZE = 64u;            // B (a power of two)
constexpr al_u32 AL_BLOCK_SHIFT = 6u;           // log2(B)
constexpr al_u32 AL_SPECULATIVE_TOKENS = 0u;     // s
constexpr al_u32 AL_BT_WIDTH = 128u;             // nkv = ceil(S / B) + (s > 0)
constexpr al_u32 AL_KV_POOL_BLOCKS = 24216u;      // KV pool, dummy included
constexpr al_i32 AL_DUMMY_BLOCK = 24215;          // pool - 1
constexpr bool AL_HAS_MAMBA = true;
constexpr bool AL_DECODE_INDEX_I64 = true;  // mamba_batch_indices_decode dtype
constexpr al_u32 AL_CHUNK_SIZE = 128u;            // Mamba chunk size (1 without Mamba: unused)
constexpr al_u32 AL_CONV_WIDTH = 4u;            // d_conv
constexpr al_u32 AL_MAX_CHUNKS = 288u;           // Cmax = T / cs + R
constexpr al_u32 AL_MAX_INTERMEDIATE = 64u;     // Kmax = min(ceil(T / B), 3R)
constexpr al_u32 AL_MAMBA_PAD = 4u;             // alignment pad before the Mamba fields
constexpr al_u32 AL_TOTAL_BYTES = 347172u;

// Fields of the coalesced buffer, in buffer order: byte offset, capacity in elements,
// element size. Fields the layout lacks have capacity 0.
constexpr al_u32 AL_OFF_TOKEN_TO_INPUT_IDS = 0u, AL_CAP_TOKEN_TO_INPUT_IDS = 4096u, AL_SIZE_TOKEN_TO_INPUT_IDS = 8u; // int64_t
constexpr al_u32 AL_OFF_TOKEN_TO_POS_IDS = 32768u, AL_CAP_TOKEN_TO_POS_IDS = 4096u, AL_SIZE_TOKEN_TO_POS_IDS = 8u; // int64_t
constexpr al_u32 AL_OFF_TOKEN_TO_BLOCK_IDX = 65536u, AL_CAP_TOKEN_TO_BLOCK_IDX = 4096u, AL_SIZE_TOKEN_TO_BLOCK_IDX = 8u; // int64_t
constexpr al_u32 AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK = 98304u, AL_CAP_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK = 4096u, AL_SIZE_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK = 4u; // int32_t
constexpr al_u32 AL_OFF_TOKEN_TO_REQUEST_IDX = 114688u, AL_CAP_TOKEN_TO_REQUEST_IDX = 4096u, AL_SIZE_TOKEN_TO_REQUEST_IDX = 4u; // int32_t
constexpr al_u32 AL_OFF_TOKEN_TO_POSITION_IN_REQUEST = 131072u, AL_CAP_TOKEN_TO_POSITION_IN_REQUEST = 4096u, AL_SIZE_TOKEN_TO_POSITION_IN_REQUEST = 4u; // int32_t
constexpr al_u32 AL_OFF_REQUEST_IN_PREFILL_STATUS = 147456u, AL_CAP_REQUEST_IN_PREFILL_STATUS = 256u, AL_SIZE_REQUEST_IN_PREFILL_STATUS = 4u; // int32_t
constexpr al_u32 AL_OFF_REQUEST_QUERY_LENGTHS = 148480u, AL_CAP_REQUEST_QUERY_LENGTHS = 256u, AL_SIZE_REQUEST_QUERY_LENGTHS = 4u; // int32_t
constexpr al_u32 AL_OFF_REQUEST_KV_LENGTH_OFFSETS = 149504u, AL_CAP_REQUEST_KV_LENGTH_OFFSETS = 256u, AL_SIZE_REQUEST_KV_LENGTH_OFFSETS = 4u; // int32_t
constexpr al_u32 AL_OFF_TEMPERATURE = 150528u, AL_CAP_TEMPERATURE = 256u, AL_SIZE_TEMPERATURE = 4u; // float
constexpr al_u32 AL_OFF_TOP_K = 151552u, AL_CAP_TOP_K = 256u, AL_SIZE_TOP_K = 4u; // int32_t
constexpr al_u32 AL_OFF_TOP_P = 152576u, AL_CAP_TOP_P = 256u, AL_SIZE_TOP_P = 4u; // float
constexpr al_u32 AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS = 153600u, AL_CAP_ACTIVE_REQUEST_LAST_TOKEN_IDXS = 256u, AL_SIZE_ACTIVE_REQUEST_LAST_TOKEN_IDXS = 4u; // int32_t
constexpr al_u32 AL_OFF_REAL_TOKEN_COUNT = 154624u, AL_CAP_REAL_TOKEN_COUNT = 1u, AL_SIZE_REAL_TOKEN_COUNT = 4u; // int32_t
constexpr al_u32 AL_OFF_MHA_QUERY_LENGTHS = 154628u, AL_CAP_MHA_QUERY_LENGTHS = 256u, AL_SIZE_MHA_QUERY_LENGTHS = 4u; // int32_t
constexpr al_u32 AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS = 155652u, AL_CAP_MHA_CU_QUERY_SEQ_LENGTHS = 257u, AL_SIZE_MHA_CU_QUERY_SEQ_LENGTHS = 4u; // int32_t
constexpr al_u32 AL_OFF_MHA_KV_SEQ_LENGTHS = 156680u, AL_CAP_MHA_KV_SEQ_LENGTHS = 256u, AL_SIZE_MHA_KV_SEQ_LENGTHS = 4u; // int32_t
constexpr al_u32 AL_OFF_MHA_CU_KV_SEQ_LENGTHS = 157704u, AL_CAP_MHA_CU_KV_SEQ_LENGTHS = 257u, AL_SIZE_MHA_CU_KV_SEQ_LENGTHS = 4u; // int32_t
constexpr al_u32 AL_OFF_MHA_BLOCK_TABLE = 158732u, AL_CAP_MHA_BLOCK_TABLE = 32768u, AL_SIZE_MHA_BLOCK_TABLE = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_BATCH_INDICES_DECODE = 289808u, AL_CAP_MAMBA_BATCH_INDICES_DECODE = 256u, AL_SIZE_MAMBA_BATCH_INDICES_DECODE = 8u; // int64_t
constexpr al_u32 AL_OFF_MAMBA_BATCH_INDICES_PREFILL = 291856u, AL_CAP_MAMBA_BATCH_INDICES_PREFILL = 256u, AL_SIZE_MAMBA_BATCH_INDICES_PREFILL = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_SEQ_IDX = 292880u, AL_CAP_MAMBA_SEQ_IDX = 4096u, AL_SIZE_MAMBA_SEQ_IDX = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_CU_SEQLENS = 309264u, AL_CAP_MAMBA_CU_SEQLENS = 257u, AL_SIZE_MAMBA_CU_SEQLENS = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_CU_CHUNK_SEQLENS = 310292u, AL_CAP_MAMBA_CU_CHUNK_SEQLENS = 289u, AL_SIZE_MAMBA_CU_CHUNK_SEQLENS = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_LAST_CHUNK_INDICES = 311448u, AL_CAP_MAMBA_LAST_CHUNK_INDICES = 256u, AL_SIZE_MAMBA_LAST_CHUNK_INDICES = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN = 312472u, AL_CAP_MAMBA_SEQ_IDX_FOR_VARLEN = 288u, AL_SIZE_MAMBA_SEQ_IDX_FOR_VARLEN = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_CONV_SEQ_IDX = 313624u, AL_CAP_MAMBA_CONV_SEQ_IDX = 4096u, AL_SIZE_MAMBA_CONV_SEQ_IDX = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_CONV_SEQ_START = 330008u, AL_CAP_MAMBA_CONV_SEQ_START = 4096u, AL_SIZE_MAMBA_CONV_SEQ_START = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES = 346392u, AL_CAP_MAMBA_INTERMEDIATE_CHUNK_INDICES = 64u, AL_SIZE_MAMBA_INTERMEDIATE_CHUNK_INDICES = 8u; // int64_t
constexpr al_u32 AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS = 346904u, AL_CAP_MAMBA_INTERMEDIATE_ABS_POSITIONS = 64u, AL_SIZE_MAMBA_INTERMEDIATE_ABS_POSITIONS = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_INTERMEDIATE_REAL_COUNT = 347160u, AL_CAP_MAMBA_INTERMEDIATE_REAL_COUNT = 1u, AL_SIZE_MAMBA_INTERMEDIATE_REAL_COUNT = 4u; // int32_t
constexpr al_u32 AL_OFF_MAMBA_DEVICE_DECODE_PREFILL = 347164u, AL_CAP_MAMBA_DEVICE_DECODE_PREFILL = 2u, AL_SIZE_MAMBA_DEVICE_DECODE_PREFILL = 4u; // int32_t

// ---- Checks: every fact above follows from the others -------------------------
static_assert((1u << AL_BLOCK_SHIFT) == AL_BLOCK_SIZE, "B is 2^shift");
static_assert(AL_BT_WIDTH == (AL_MAX_SEQ_LEN + AL_BLOCK_SIZE - 1u) / AL_BLOCK_SIZE + (AL_SPECULATIVE_TOKENS > 0u ? 1u : 0u), "nkv = ceil(S / B) + (s > 0)");
static_assert(AL_DUMMY_BLOCK == (al_i32)(AL_KV_POOL_BLOCKS - 1u), "dummy = pool - 1");
static_assert(!AL_HAS_MAMBA || AL_MAX_CHUNKS == AL_MAX_TOKENS / AL_CHUNK_SIZE + AL_MAX_REQUESTS, "Cmax = T / cs + R");
static_assert(!AL_HAS_MAMBA || AL_MAX_INTERMEDIATE == ((AL_MAX_TOKENS + AL_BLOCK_SIZE - 1u) / AL_BLOCK_SIZE < 3u * AL_MAX_REQUESTS ? (AL_MAX_TOKENS + AL_BLOCK_SIZE - 1u) / AL_BLOCK_SIZE : 3u * AL_MAX_REQUESTS), "Kmax = min(ceil(T / B), 3R)");
static_assert((al_u64)AL_MAX_REQUESTS * AL_BT_WIDTH < (1ull << 30), "block-table indices fit 30 bits");
static_assert(AL_CAP_TOKEN_TO_INPUT_IDS == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_INPUT_IDS == 8u && AL_OFF_TOKEN_TO_INPUT_IDS % AL_SIZE_TOKEN_TO_INPUT_IDS == 0u, "token_to_input_ids: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_INPUT_IDS + AL_CAP_TOKEN_TO_INPUT_IDS * AL_SIZE_TOKEN_TO_INPUT_IDS == AL_OFF_TOKEN_TO_POS_IDS, "token_to_pos_ids follows token_to_input_ids");
static_assert(AL_CAP_TOKEN_TO_POS_IDS == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_POS_IDS == 8u && AL_OFF_TOKEN_TO_POS_IDS % AL_SIZE_TOKEN_TO_POS_IDS == 0u, "token_to_pos_ids: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_POS_IDS + AL_CAP_TOKEN_TO_POS_IDS * AL_SIZE_TOKEN_TO_POS_IDS == AL_OFF_TOKEN_TO_BLOCK_IDX, "token_to_block_idx follows token_to_pos_ids");
static_assert(AL_CAP_TOKEN_TO_BLOCK_IDX == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_BLOCK_IDX == 8u && AL_OFF_TOKEN_TO_BLOCK_IDX % AL_SIZE_TOKEN_TO_BLOCK_IDX == 0u, "token_to_block_idx: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_BLOCK_IDX + AL_CAP_TOKEN_TO_BLOCK_IDX * AL_SIZE_TOKEN_TO_BLOCK_IDX == AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK, "token_to_local_position_within_kv_block follows token_to_block_idx");
static_assert(AL_CAP_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK == 4u && AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK % AL_SIZE_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK == 0u, "token_to_local_position_within_kv_block: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK + AL_CAP_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK * AL_SIZE_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK == AL_OFF_TOKEN_TO_REQUEST_IDX, "token_to_request_idx follows token_to_local_position_within_kv_block");
static_assert(AL_CAP_TOKEN_TO_REQUEST_IDX == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_REQUEST_IDX == 4u && AL_OFF_TOKEN_TO_REQUEST_IDX % AL_SIZE_TOKEN_TO_REQUEST_IDX == 0u, "token_to_request_idx: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_REQUEST_IDX + AL_CAP_TOKEN_TO_REQUEST_IDX * AL_SIZE_TOKEN_TO_REQUEST_IDX == AL_OFF_TOKEN_TO_POSITION_IN_REQUEST, "token_to_position_in_request follows token_to_request_idx");
static_assert(AL_CAP_TOKEN_TO_POSITION_IN_REQUEST == AL_MAX_TOKENS && AL_SIZE_TOKEN_TO_POSITION_IN_REQUEST == 4u && AL_OFF_TOKEN_TO_POSITION_IN_REQUEST % AL_SIZE_TOKEN_TO_POSITION_IN_REQUEST == 0u, "token_to_position_in_request: capacity, size, alignment");
static_assert(AL_OFF_TOKEN_TO_POSITION_IN_REQUEST + AL_CAP_TOKEN_TO_POSITION_IN_REQUEST * AL_SIZE_TOKEN_TO_POSITION_IN_REQUEST == AL_OFF_REQUEST_IN_PREFILL_STATUS, "request_in_prefill_status follows token_to_position_in_request");
static_assert(AL_CAP_REQUEST_IN_PREFILL_STATUS == AL_MAX_REQUESTS && AL_SIZE_REQUEST_IN_PREFILL_STATUS == 4u && AL_OFF_REQUEST_IN_PREFILL_STATUS % AL_SIZE_REQUEST_IN_PREFILL_STATUS == 0u, "request_in_prefill_status: capacity, size, alignment");
static_assert(AL_OFF_REQUEST_IN_PREFILL_STATUS + AL_CAP_REQUEST_IN_PREFILL_STATUS * AL_SIZE_REQUEST_IN_PREFILL_STATUS == AL_OFF_REQUEST_QUERY_LENGTHS, "request_query_lengths follows request_in_prefill_status");
static_assert(AL_CAP_REQUEST_QUERY_LENGTHS == AL_MAX_REQUESTS && AL_SIZE_REQUEST_QUERY_LENGTHS == 4u && AL_OFF_REQUEST_QUERY_LENGTHS % AL_SIZE_REQUEST_QUERY_LENGTHS == 0u, "request_query_lengths: capacity, size, alignment");
static_assert(AL_OFF_REQUEST_QUERY_LENGTHS + AL_CAP_REQUEST_QUERY_LENGTHS * AL_SIZE_REQUEST_QUERY_LENGTHS == AL_OFF_REQUEST_KV_LENGTH_OFFSETS, "request_kv_length_offsets follows request_query_lengths");
static_assert(AL_CAP_REQUEST_KV_LENGTH_OFFSETS == AL_MAX_REQUESTS && AL_SIZE_REQUEST_KV_LENGTH_OFFSETS == 4u && AL_OFF_REQUEST_KV_LENGTH_OFFSETS % AL_SIZE_REQUEST_KV_LENGTH_OFFSETS == 0u, "request_kv_length_offsets: capacity, size, alignment");
static_assert(AL_OFF_REQUEST_KV_LENGTH_OFFSETS + AL_CAP_REQUEST_KV_LENGTH_OFFSETS * AL_SIZE_REQUEST_KV_LENGTH_OFFSETS == AL_OFF_TEMPERATURE, "temperature follows request_kv_length_offsets");
static_assert(AL_CAP_TEMPERATURE == AL_MAX_REQUESTS && AL_SIZE_TEMPERATURE == 4u && AL_OFF_TEMPERATURE % AL_SIZE_TEMPERATURE == 0u, "temperature: capacity, size, alignment");
static_assert(AL_OFF_TEMPERATURE + AL_CAP_TEMPERATURE * AL_SIZE_TEMPERATURE == AL_OFF_TOP_K, "top_k follows temperature");
static_assert(AL_CAP_TOP_K == AL_MAX_REQUESTS && AL_SIZE_TOP_K == 4u && AL_OFF_TOP_K % AL_SIZE_TOP_K == 0u, "top_k: capacity, size, alignment");
static_assert(AL_OFF_TOP_K + AL_CAP_TOP_K * AL_SIZE_TOP_K == AL_OFF_TOP_P, "top_p follows top_k");
static_assert(AL_CAP_TOP_P == AL_MAX_REQUESTS && AL_SIZE_TOP_P == 4u && AL_OFF_TOP_P % AL_SIZE_TOP_P == 0u, "top_p: capacity, size, alignment");
static_assert(AL_OFF_TOP_P + AL_CAP_TOP_P * AL_SIZE_TOP_P == AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS, "active_request_last_token_idxs follows top_p");
static_assert(AL_CAP_ACTIVE_REQUEST_LAST_TOKEN_IDXS == AL_MAX_REQUESTS && AL_SIZE_ACTIVE_REQUEST_LAST_TOKEN_IDXS == 4u && AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS % AL_SIZE_ACTIVE_REQUEST_LAST_TOKEN_IDXS == 0u, "active_request_last_token_idxs: capacity, size, alignment");
static_assert(AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS + AL_CAP_ACTIVE_REQUEST_LAST_TOKEN_IDXS * AL_SIZE_ACTIVE_REQUEST_LAST_TOKEN_IDXS == AL_OFF_REAL_TOKEN_COUNT, "real_token_count follows active_request_last_token_idxs");
static_assert(AL_CAP_REAL_TOKEN_COUNT == 1u && AL_SIZE_REAL_TOKEN_COUNT == 4u && AL_OFF_REAL_TOKEN_COUNT % AL_SIZE_REAL_TOKEN_COUNT == 0u, "real_token_count: capacity, size, alignment");
static_assert(AL_OFF_REAL_TOKEN_COUNT + AL_CAP_REAL_TOKEN_COUNT * AL_SIZE_REAL_TOKEN_COUNT == AL_OFF_MHA_QUERY_LENGTHS, "mha_query_lengths follows real_token_count");
static_assert(AL_CAP_MHA_QUERY_LENGTHS == AL_MAX_REQUESTS && AL_SIZE_MHA_QUERY_LENGTHS == 4u && AL_OFF_MHA_QUERY_LENGTHS % AL_SIZE_MHA_QUERY_LENGTHS == 0u, "mha_query_lengths: capacity, size, alignment");
static_assert(AL_OFF_MHA_QUERY_LENGTHS + AL_CAP_MHA_QUERY_LENGTHS * AL_SIZE_MHA_QUERY_LENGTHS == AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS, "mha_cu_query_seq_lengths follows mha_query_lengths");
static_assert(AL_CAP_MHA_CU_QUERY_SEQ_LENGTHS == AL_MAX_REQUESTS + 1u && AL_SIZE_MHA_CU_QUERY_SEQ_LENGTHS == 4u && AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS % AL_SIZE_MHA_CU_QUERY_SEQ_LENGTHS == 0u, "mha_cu_query_seq_lengths: capacity, size, alignment");
static_assert(AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS + AL_CAP_MHA_CU_QUERY_SEQ_LENGTHS * AL_SIZE_MHA_CU_QUERY_SEQ_LENGTHS == AL_OFF_MHA_KV_SEQ_LENGTHS, "mha_kv_seq_lengths follows mha_cu_query_seq_lengths");
static_assert(AL_CAP_MHA_KV_SEQ_LENGTHS == AL_MAX_REQUESTS && AL_SIZE_MHA_KV_SEQ_LENGTHS == 4u && AL_OFF_MHA_KV_SEQ_LENGTHS % AL_SIZE_MHA_KV_SEQ_LENGTHS == 0u, "mha_kv_seq_lengths: capacity, size, alignment");
static_assert(AL_OFF_MHA_KV_SEQ_LENGTHS + AL_CAP_MHA_KV_SEQ_LENGTHS * AL_SIZE_MHA_KV_SEQ_LENGTHS == AL_OFF_MHA_CU_KV_SEQ_LENGTHS, "mha_cu_kv_seq_lengths follows mha_kv_seq_lengths");
static_assert(AL_CAP_MHA_CU_KV_SEQ_LENGTHS == AL_MAX_REQUESTS + 1u && AL_SIZE_MHA_CU_KV_SEQ_LENGTHS == 4u && AL_OFF_MHA_CU_KV_SEQ_LENGTHS % AL_SIZE_MHA_CU_KV_SEQ_LENGTHS == 0u, "mha_cu_kv_seq_lengths: capacity, size, alignment");
static_assert(AL_OFF_MHA_CU_KV_SEQ_LENGTHS + AL_CAP_MHA_CU_KV_SEQ_LENGTHS * AL_SIZE_MHA_CU_KV_SEQ_LENGTHS == AL_OFF_MHA_BLOCK_TABLE, "mha_block_table follows mha_cu_kv_seq_lengths");
static_assert(AL_CAP_MHA_BLOCK_TABLE == AL_MAX_REQUESTS * AL_BT_WIDTH && AL_SIZE_MHA_BLOCK_TABLE == 4u && AL_OFF_MHA_BLOCK_TABLE % AL_SIZE_MHA_BLOCK_TABLE == 0u, "mha_block_table: capacity, size, alignment");
static_assert(AL_OFF_MHA_BLOCK_TABLE + AL_CAP_MHA_BLOCK_TABLE * AL_SIZE_MHA_BLOCK_TABLE + AL_MAMBA_PAD == AL_OFF_MAMBA_BATCH_INDICES_DECODE, "mamba_batch_indices_decode follows mha_block_table");
static_assert(AL_CAP_MAMBA_BATCH_INDICES_DECODE == AL_MAX_REQUESTS && AL_SIZE_MAMBA_BATCH_INDICES_DECODE == (AL_DECODE_INDEX_I64 ? 8u : 4u) && AL_OFF_MAMBA_BATCH_INDICES_DECODE % AL_SIZE_MAMBA_BATCH_INDICES_DECODE == 0u, "mamba_batch_indices_decode: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_BATCH_INDICES_DECODE + AL_CAP_MAMBA_BATCH_INDICES_DECODE * AL_SIZE_MAMBA_BATCH_INDICES_DECODE == AL_OFF_MAMBA_BATCH_INDICES_PREFILL, "mamba_batch_indices_prefill follows mamba_batch_indices_decode");
static_assert(AL_CAP_MAMBA_BATCH_INDICES_PREFILL == AL_MAX_REQUESTS && AL_SIZE_MAMBA_BATCH_INDICES_PREFILL == 4u && AL_OFF_MAMBA_BATCH_INDICES_PREFILL % AL_SIZE_MAMBA_BATCH_INDICES_PREFILL == 0u, "mamba_batch_indices_prefill: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_BATCH_INDICES_PREFILL + AL_CAP_MAMBA_BATCH_INDICES_PREFILL * AL_SIZE_MAMBA_BATCH_INDICES_PREFILL == AL_OFF_MAMBA_SEQ_IDX, "mamba_seq_idx follows mamba_batch_indices_prefill");
static_assert(AL_CAP_MAMBA_SEQ_IDX == AL_MAX_TOKENS && AL_SIZE_MAMBA_SEQ_IDX == 4u && AL_OFF_MAMBA_SEQ_IDX % AL_SIZE_MAMBA_SEQ_IDX == 0u, "mamba_seq_idx: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_SEQ_IDX + AL_CAP_MAMBA_SEQ_IDX * AL_SIZE_MAMBA_SEQ_IDX == AL_OFF_MAMBA_CU_SEQLENS, "mamba_cu_seqlens follows mamba_seq_idx");
static_assert(AL_CAP_MAMBA_CU_SEQLENS == AL_MAX_REQUESTS + 1u && AL_SIZE_MAMBA_CU_SEQLENS == 4u && AL_OFF_MAMBA_CU_SEQLENS % AL_SIZE_MAMBA_CU_SEQLENS == 0u, "mamba_cu_seqlens: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_CU_SEQLENS + AL_CAP_MAMBA_CU_SEQLENS * AL_SIZE_MAMBA_CU_SEQLENS == AL_OFF_MAMBA_CU_CHUNK_SEQLENS, "mamba_cu_chunk_seqlens follows mamba_cu_seqlens");
static_assert(AL_CAP_MAMBA_CU_CHUNK_SEQLENS == AL_MAX_CHUNKS + 1u && AL_SIZE_MAMBA_CU_CHUNK_SEQLENS == 4u && AL_OFF_MAMBA_CU_CHUNK_SEQLENS % AL_SIZE_MAMBA_CU_CHUNK_SEQLENS == 0u, "mamba_cu_chunk_seqlens: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_CU_CHUNK_SEQLENS + AL_CAP_MAMBA_CU_CHUNK_SEQLENS * AL_SIZE_MAMBA_CU_CHUNK_SEQLENS == AL_OFF_MAMBA_LAST_CHUNK_INDICES, "mamba_last_chunk_indices follows mamba_cu_chunk_seqlens");
static_assert(AL_CAP_MAMBA_LAST_CHUNK_INDICES == AL_MAX_REQUESTS && AL_SIZE_MAMBA_LAST_CHUNK_INDICES == 4u && AL_OFF_MAMBA_LAST_CHUNK_INDICES % AL_SIZE_MAMBA_LAST_CHUNK_INDICES == 0u, "mamba_last_chunk_indices: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_LAST_CHUNK_INDICES + AL_CAP_MAMBA_LAST_CHUNK_INDICES * AL_SIZE_MAMBA_LAST_CHUNK_INDICES == AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN, "mamba_seq_idx_for_varlen follows mamba_last_chunk_indices");
static_assert(AL_CAP_MAMBA_SEQ_IDX_FOR_VARLEN == AL_MAX_CHUNKS && AL_SIZE_MAMBA_SEQ_IDX_FOR_VARLEN == 4u && AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN % AL_SIZE_MAMBA_SEQ_IDX_FOR_VARLEN == 0u, "mamba_seq_idx_for_varlen: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN + AL_CAP_MAMBA_SEQ_IDX_FOR_VARLEN * AL_SIZE_MAMBA_SEQ_IDX_FOR_VARLEN == AL_OFF_MAMBA_CONV_SEQ_IDX, "mamba_conv_seq_idx follows mamba_seq_idx_for_varlen");
static_assert(AL_CAP_MAMBA_CONV_SEQ_IDX == AL_MAX_TOKENS && AL_SIZE_MAMBA_CONV_SEQ_IDX == 4u && AL_OFF_MAMBA_CONV_SEQ_IDX % AL_SIZE_MAMBA_CONV_SEQ_IDX == 0u, "mamba_conv_seq_idx: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_CONV_SEQ_IDX + AL_CAP_MAMBA_CONV_SEQ_IDX * AL_SIZE_MAMBA_CONV_SEQ_IDX == AL_OFF_MAMBA_CONV_SEQ_START, "mamba_conv_seq_start follows mamba_conv_seq_idx");
static_assert(AL_CAP_MAMBA_CONV_SEQ_START == AL_MAX_TOKENS && AL_SIZE_MAMBA_CONV_SEQ_START == 4u && AL_OFF_MAMBA_CONV_SEQ_START % AL_SIZE_MAMBA_CONV_SEQ_START == 0u, "mamba_conv_seq_start: capacity, size, alignment");
static_assert((AL_OFF_MAMBA_CONV_SEQ_START + AL_CAP_MAMBA_CONV_SEQ_START * AL_SIZE_MAMBA_CONV_SEQ_START + 7u) / 8u * 8u == AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES, "mamba_intermediate_chunk_indices follows mamba_conv_seq_start");
static_assert(AL_CAP_MAMBA_INTERMEDIATE_CHUNK_INDICES == AL_MAX_INTERMEDIATE && AL_SIZE_MAMBA_INTERMEDIATE_CHUNK_INDICES == 8u && AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES % AL_SIZE_MAMBA_INTERMEDIATE_CHUNK_INDICES == 0u, "mamba_intermediate_chunk_indices: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES + AL_CAP_MAMBA_INTERMEDIATE_CHUNK_INDICES * AL_SIZE_MAMBA_INTERMEDIATE_CHUNK_INDICES == AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS, "mamba_intermediate_abs_positions follows mamba_intermediate_chunk_indices");
static_assert(AL_CAP_MAMBA_INTERMEDIATE_ABS_POSITIONS == AL_MAX_INTERMEDIATE && AL_SIZE_MAMBA_INTERMEDIATE_ABS_POSITIONS == 4u && AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS % AL_SIZE_MAMBA_INTERMEDIATE_ABS_POSITIONS == 0u, "mamba_intermediate_abs_positions: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS + AL_CAP_MAMBA_INTERMEDIATE_ABS_POSITIONS * AL_SIZE_MAMBA_INTERMEDIATE_ABS_POSITIONS == AL_OFF_MAMBA_INTERMEDIATE_REAL_COUNT, "mamba_intermediate_real_count follows mamba_intermediate_abs_positions");
static_assert(AL_CAP_MAMBA_INTERMEDIATE_REAL_COUNT == 1u && AL_SIZE_MAMBA_INTERMEDIATE_REAL_COUNT == 4u && AL_OFF_MAMBA_INTERMEDIATE_REAL_COUNT % AL_SIZE_MAMBA_INTERMEDIATE_REAL_COUNT == 0u, "mamba_intermediate_real_count: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_INTERMEDIATE_REAL_COUNT + AL_CAP_MAMBA_INTERMEDIATE_REAL_COUNT * AL_SIZE_MAMBA_INTERMEDIATE_REAL_COUNT == AL_OFF_MAMBA_DEVICE_DECODE_PREFILL, "mamba_device_decode_prefill follows mamba_intermediate_real_count");
static_assert(AL_CAP_MAMBA_DEVICE_DECODE_PREFILL == 2u && AL_SIZE_MAMBA_DEVICE_DECODE_PREFILL == 4u && AL_OFF_MAMBA_DEVICE_DECODE_PREFILL % AL_SIZE_MAMBA_DEVICE_DECODE_PREFILL == 0u, "mamba_device_decode_prefill: capacity, size, alignment");
static_assert(AL_OFF_MAMBA_DEVICE_DECODE_PREFILL + AL_CAP_MAMBA_DEVICE_DECODE_PREFILL * AL_SIZE_MAMBA_DEVICE_DECODE_PREFILL == AL_TOTAL_BYTES, "mamba_device_decode_prefill ends the buffer");
static_assert(AL_MAMBA_PAD == (8u - (AL_OFF_MHA_BLOCK_TABLE + AL_CAP_MHA_BLOCK_TABLE * 4u) % 8u) % 8u, "the SEMANTICS 9 pad before i64 decode indices");

// ---- Staging image (the one host-to-device copy of a step) -------------------------
// Written by the host (attention_layout::devfill), read here. Offsets are bytes from the
// start of the image; every section is 16-byte aligned.
constexpr al_u32 AL_ABI_VERSION = 1u;
struct AlHeader {
  al_u32 abi;            // AL_ABI_VERSION
  al_u32 active;         // N: real active requests
  al_u32 paused;         // P: paused rows before them
  al_u32 real_tokens;    // real token count
  al_u32 real_decode;    // D: active rows [0, D) decode, [D, N) prefill
  al_u32 attn_decode;    // Dr (SEMANTICS 3.3)
  al_u32 attn_prefill;   // Fr
  al_u32 pad_tokens;     // Tp (the eager entry reads these three)
  al_u32 pad_prefill;    // Fp
  al_u32 pad_decode;     // Dp
  al_u32 flags;          // AL_FLAG_*
  al_u32 inter_count;    // intermediate entries emitted
  al_u32 n_patches;      // block-table patches (rows that stayed in place)
  al_u32 n_changes;      // resident block-table changes
  al_u32 n_jobs;         // block-table rows to (re)write: moved and padding rows
  al_u32 off_requests;   // AlRequest[N]
  al_u32 off_token_ids;  // al_i64[real_tokens]
  al_u32 off_sampling;   // AlSampling[N] or [1]
  al_u32 off_inter;      // AlInter[Fr]
  al_u32 off_patches;    // AlWrite[n_patches]: block-table element -> id (already mapped)
  al_u32 off_changes;    // AlWrite[n_changes]: resident element -> raw id
  al_u32 off_jobs;       // AlJob[n_jobs]
  al_u32 off_blocks;     // al_i32[]: uploaded rows' raw block ids
  al_u32 reserved;
};
static_assert(sizeof(AlHeader) == 96, "staging header: 24 words");
constexpr al_u32 AL_FLAG_TOKEN_IDS = 1u;
constexpr al_u32 AL_FLAG_INTERMEDIATE = 2u;
constexpr al_u32 AL_FLAG_PER_REQUEST_SAMPLING = 4u;

// One active request. `src` says where its block-table row is read from: the top two bits
// are the kind, the low 30 bits an index.
struct AlRequest { al_u32 q; al_u32 kv; al_u32 src; al_i32 slot; };
static_assert(sizeof(AlRequest) == 16, "request record: 4 words");
constexpr al_u32 AL_SRC_META = 0u;      // the row is already in place in the metadata block table
constexpr al_u32 AL_SRC_RESIDENT = 1u;  // resident block table, row = index
constexpr al_u32 AL_SRC_UPLOAD = 2u;    // uploaded ids, first = index
constexpr al_u32 AL_SRC_NONE = 3u;      // padding row
constexpr al_u32 AL_SRC_INDEX_MASK = (1u << 30) - 1u;
constexpr al_u32 AL_NO_ROW = 0xffffffffu;

// Sampling parameters as raw bits (the kernels copy them; no float arithmetic).
struct AlSampling { al_u32 temperature_bits; al_i32 top_k; al_u32 top_p_bits; };
static_assert(sizeof(AlSampling) == 12, "sampling record: 3 words");
constexpr al_u32 AL_PAD_TEMPERATURE_BITS = 0x3f800000u;  // 1.0f

// Intermediate offsets of one real prefill request: first entry index | count << 28.
struct AlInter { al_u32 base_count; al_u32 offsets[3]; };
static_assert(sizeof(AlInter) == 16, "intermediate record: 4 words");

struct AlWrite { al_u32 index; al_i32 value; };
static_assert(sizeof(AlWrite) == 8, "patch / change: 2 words");

// Rewrite block-table row `row` over [0, width): entries [0, len) from `src` (-1 becomes
// the dummy block), the rest dummy. `writeback` != AL_NO_ROW also stores the raw ids of
// [0, len) into that resident row.
struct AlJob { al_u32 row; al_u32 len; al_u32 width; al_u32 src; al_u32 writeback; };
static_assert(sizeof(AlJob) == 20, "job: 5 words");

// ---- Launch shape ----------------------------------------------------------------
#ifndef AL_THREADS
#define AL_THREADS 512u
#endif
constexpr al_u32 AL_WARPS = AL_THREADS / 32u;
static_assert(AL_THREADS % 32u == 0u && AL_WARPS >= 1u && AL_WARPS <= 32u, "whole warps, at most 32");
// Requests (and prefill sequences) per thread in the block-wide scans.
constexpr al_u32 AL_PER_THREAD = (AL_MAX_REQUESTS + AL_THREADS - 1u) / AL_THREADS;
static_assert((AL_HAS_MAMBA ? 2u : 1u) * (AL_MAX_REQUESTS + 1u) * 4u + 2u * AL_WARPS * 4u <= 48u * 1024u, "static shared memory fits 48 KB");

// ---- Helpers -----------------------------------------------------------------------
__device__ __forceinline__ al_u32 al_min(al_u32 a, al_u32 b) { return a < b ? a : b; }
__device__ __forceinline__ al_u32 al_max(al_u32 a, al_u32 b) { return a > b ? a : b; }

// Every block-table entry a kernel sees is a real block or the dummy block, never -1.
__device__ __forceinline__ al_i32 al_map_block(al_i32 id) { return id == -1 ? AL_DUMMY_BLOCK : id; }

template <typename T>
__device__ __forceinline__ T* al_field(al_u8* meta, al_u32 offset) {
  return reinterpret_cast<T*>(meta + offset);
}

// Largest i in [0, n) with s[i] <= x, given s[0] <= x < s[n] and s increasing.
__device__ __forceinline__ al_u32 al_search(const al_u32* s, al_u32 n, al_u32 x) {
  al_u32 lo = 0u, hi = n;
  while (hi - lo > 1u) {
    const al_u32 mid = (lo + hi) >> 1;
    if (s[mid] <= x) lo = mid; else hi = mid;
  }
  return lo;
}

// Inclusive scan of two sums across a warp. Every lane of every warp calls it.
__device__ __forceinline__ void al_warp_scan2(al_u32& a, al_u32& b) {
  const al_u32 lane = threadIdx.x & 31u;
  for (al_u32 d = 1u; d < 32u; d <<= 1) {
    const al_u32 x = __shfl_up_sync(0xffffffffu, a, d);
    const al_u32 y = __shfl_up_sync(0xffffffffu, b, d);
    if (lane >= d) { a += x; b += y; }
  }
}

// Block-wide scan of two per-thread sums. Every thread of the block calls it. On return
// (a, b) hold the exclusive prefixes and (ta, tb) the block totals. s_warp: 2 * AL_WARPS.
__device__ __forceinline__ void al_block_scan2(al_u32& a, al_u32& b, al_u32& ta, al_u32& tb, al_u32* s_warp) {
  const al_u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  al_u32 ia = a, ib = b;
  al_warp_scan2(ia, ib);
  if (lane == 31u) { s_warp[warp] = ia; s_warp[AL_WARPS + warp] = ib; }
  __syncthreads();
  // Every warp scans the warp totals itself: no second barrier before reading them.
  al_u32 wa = lane < AL_WARPS ? s_warp[lane] : 0u;
  al_u32 wb = lane < AL_WARPS ? s_warp[AL_WARPS + lane] : 0u;
  al_warp_scan2(wa, wb);
  ta = __shfl_sync(0xffffffffu, wa, AL_WARPS - 1u);
  tb = __shfl_sync(0xffffffffu, wb, AL_WARPS - 1u);
  const al_u32 pa = __shfl_sync(0xffffffffu, wa, (warp + 31u) & 31u);  // warp - 1
  const al_u32 pb = __shfl_sync(0xffffffffu, wb, (warp + 31u) & 31u);
  a = (warp > 0u ? pa : 0u) + ia - a;
  b = (warp > 0u ? pb : 0u) + ib - b;
  __syncthreads();  // s_warp is reused by the next scan
}

// ---- Blocks 1.. (or block 0 alone): resident table and row gathers -------------------
// The host guarantees, per launch: changes target resident rows that no job reads, and
// distinct elements; a job writes one block-table row that no patch touches and no token
// of block 0 reads (tokens of moved rows read the job's source, not the row). So these
// writes race with nothing.
__device__ __forceinline__ void al_worker(al_u8* meta, const al_u8* staging, al_i32* resident,
                                          const AlHeader& h, al_u32 worker, al_u32 workers) {
  const AlWrite* changes = reinterpret_cast<const AlWrite*>(staging + h.off_changes);
  for (al_u32 i = worker * AL_THREADS + threadIdx.x; i < h.n_changes; i += workers * AL_THREADS) {
    const AlWrite c = changes[i];
    resident[c.index] = c.value;
  }
  const AlJob* jobs = reinterpret_cast<const AlJob*>(staging + h.off_jobs);
  const al_i32* uploaded = reinterpret_cast<const al_i32*>(staging + h.off_blocks);
  al_i32* bt = al_field<al_i32>(meta, AL_OFF_MHA_BLOCK_TABLE);
  const al_u32 lane = threadIdx.x & 31u;
  // One warp per row: consecutive lanes, consecutive entries.
  for (al_u32 g = worker * AL_WARPS + (threadIdx.x >> 5); g < h.n_jobs; g += workers * AL_WARPS) {
    const AlJob job = jobs[g];
    al_i32* row = bt + job.row * AL_BT_WIDTH;
    const al_u32 index = job.src & AL_SRC_INDEX_MASK;
    const al_i32* from = (job.src >> 30) == AL_SRC_RESIDENT ? resident + index * AL_BT_WIDTH : uploaded + index;
    al_i32* back = job.writeback != AL_NO_ROW ? resident + job.writeback * AL_BT_WIDTH : nullptr;
    for (al_u32 j = lane; j < job.width; j += 32u) {
      if (j < job.len) {
        const al_i32 id = from[j];
        row[j] = al_map_block(id);
        if (back != nullptr) back[j] = id;
      } else {
        row[j] = AL_DUMMY_BLOCK;
      }
    }
  }
}

// ---- Block 0: request, token and Mamba fields (SEMANTICS 4-6) ------------------------
__device__ __forceinline__ void al_write_request(al_u8* meta, const AlHeader& h, const AlSampling* sampling,
                                                 al_u32 a, const AlRequest& r, al_u32 cu_q, al_u32 cu_kv) {
  const AlSampling s = sampling[(h.flags & AL_FLAG_PER_REQUEST_SAMPLING) != 0u ? a : 0u];
  al_field<al_i32>(meta, AL_OFF_REQUEST_IN_PREFILL_STATUS)[a] = a >= h.real_decode ? 1 : 0;
  al_field<al_u32>(meta, AL_OFF_REQUEST_QUERY_LENGTHS)[a] = r.q;
  al_field<al_u32>(meta, AL_OFF_REQUEST_KV_LENGTH_OFFSETS)[a] = r.kv;
  al_field<al_u32>(meta, AL_OFF_TEMPERATURE)[a] = s.temperature_bits;
  al_field<al_i32>(meta, AL_OFF_TOP_K)[a] = s.top_k;
  al_field<al_u32>(meta, AL_OFF_TOP_P)[a] = s.top_p_bits;
  al_field<al_u32>(meta, AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS)[a] = cu_q - 1u;
  al_field<al_u32>(meta, AL_OFF_MHA_QUERY_LENGTHS)[a] = r.q;
  al_field<al_u32>(meta, AL_OFF_MHA_KV_SEQ_LENGTHS)[a] = r.kv + r.q;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[a + 1u] = cu_q;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[a + 1u] = cu_kv;
}

__device__ __forceinline__ void al_write_padding_request(al_u8* meta, al_u32 a, al_u32 total_q, al_u32 total_kv) {
  al_field<al_i32>(meta, AL_OFF_REQUEST_IN_PREFILL_STATUS)[a] = 0;
  al_field<al_i32>(meta, AL_OFF_REQUEST_QUERY_LENGTHS)[a] = 0;
  al_field<al_i32>(meta, AL_OFF_REQUEST_KV_LENGTH_OFFSETS)[a] = 0;
  al_field<al_u32>(meta, AL_OFF_TEMPERATURE)[a] = AL_PAD_TEMPERATURE_BITS;
  al_field<al_i32>(meta, AL_OFF_TOP_K)[a] = 0;
  al_field<al_u32>(meta, AL_OFF_TOP_P)[a] = 0u;
  al_field<al_i32>(meta, AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS)[a] = 0;
  al_field<al_i32>(meta, AL_OFF_MHA_QUERY_LENGTHS)[a] = 0;
  al_field<al_i32>(meta, AL_OFF_MHA_KV_SEQ_LENGTHS)[a] = 0;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[a + 1u] = total_q;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[a + 1u] = total_kv;
}

// The fill of one step. `tp`, `fp`, `dp`: the padded dims (ignored when `eager`: read
// from the header). Out of line: every entry shares this one body.
__device__ __noinline__ void al_fill_body(al_u8* __restrict__ meta, const al_u8* __restrict__ staging,
                                          al_i32* __restrict__ resident, al_u32 tp, al_u32 fp, al_u32 dp,
                                          bool eager) {
  const AlHeader& h = *reinterpret_cast<const AlHeader*>(staging);
  if (eager) { tp = h.pad_tokens; fp = h.pad_prefill; dp = h.pad_decode; }
  const al_u32 np = fp + dp;
  const al_u32 n = h.active;
  // The host never sends a step that does not fit; such a launch writes nothing.
  if (tp > AL_MAX_TOKENS || np > AL_MAX_REQUESTS || n > np || h.real_tokens > tp) return;

  const al_u32 workers = gridDim.x - 1u;
  if (blockIdx.x != 0u || workers == 0u) {
    al_worker(meta, staging, resident, h, workers == 0u ? 0u : blockIdx.x - 1u, workers == 0u ? 1u : workers);
    if (blockIdx.x != 0u) return;
  }

  const al_u32 tid = threadIdx.x;
  const AlRequest* req = reinterpret_cast<const AlRequest*>(staging + h.off_requests);
  const AlSampling* sampling = reinterpret_cast<const AlSampling*>(staging + h.off_sampling);
  al_i32* bt = al_field<al_i32>(meta, AL_OFF_MHA_BLOCK_TABLE);

  // (1) Block-table rows that stayed in place: only the entries that changed.
  const AlWrite* patches = reinterpret_cast<const AlWrite*>(staging + h.off_patches);
  for (al_u32 i = tid; i < h.n_patches; i += AL_THREADS) {
    const AlWrite p = patches[i];
    bt[p.index] = p.value;
  }

  // (2) Cumulative query and KV lengths: thread tid owns requests [tid * k, tid * k + k).
  __shared__ al_u32 s_cu_q[AL_MAX_REQUESTS + 1u];
  __shared__ al_u32 s_warp[2u * AL_WARPS];
  const al_u32 first = tid * AL_PER_THREAD;
  al_u32 pre_q = 0u, pre_kv = 0u;
  for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
    const al_u32 a = first + i;
    if (a < n) { const AlRequest r = req[a]; pre_q += r.q; pre_kv += r.kv + r.q; }
  }
  al_u32 total_q, total_kv;
  al_block_scan2(pre_q, pre_kv, total_q, total_kv, s_warp);
  for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
    const al_u32 a = first + i;
    if (a < n) {
      const AlRequest r = req[a];
      pre_q += r.q;
      pre_kv += r.kv + r.q;
      s_cu_q[a + 1u] = pre_q;
      al_write_request(meta, h, sampling, a, r, pre_q, pre_kv);
    }
  }
  if (tid == 0u) {
    s_cu_q[0] = 0u;
    al_field<al_i32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[0] = 0;
    al_field<al_i32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[0] = 0;
    al_field<al_u32>(meta, AL_OFF_REAL_TOKEN_COUNT)[0] = h.real_tokens;
  }
  for (al_u32 a = n + tid; a < np; a += AL_THREADS) al_write_padding_request(meta, a, total_q, total_kv);

  // Mamba state slots (present when the padded count is > 0).
  if constexpr (AL_HAS_MAMBA) {
    for (al_u32 a = tid; a < dp; a += AL_THREADS) {
      const al_i32 slot = a < h.attn_decode ? req[a].slot : -1;
      if constexpr (AL_DECODE_INDEX_I64) al_field<al_i64>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = slot;
      else al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = slot;
    }
    for (al_u32 f = tid; f < fp; f += AL_THREADS) {
      al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f] = f < h.attn_prefill ? req[h.attn_decode + f].slot : -1;
    }
  }
  __syncthreads();  // s_cu_q complete; patched rows final

  // (3) Token arrays: a binary search finds each token's request.
  {
    const al_i64* ids = reinterpret_cast<const al_i64*>(staging + h.off_token_ids);
    const al_i32* uploaded = reinterpret_cast<const al_i32*>(staging + h.off_blocks);
    const bool has_ids = (h.flags & AL_FLAG_TOKEN_IDS) != 0u;
    al_i64* input_ids = al_field<al_i64>(meta, AL_OFF_TOKEN_TO_INPUT_IDS);
    al_i64* pos_ids = al_field<al_i64>(meta, AL_OFF_TOKEN_TO_POS_IDS);
    al_i64* block_idx = al_field<al_i64>(meta, AL_OFF_TOKEN_TO_BLOCK_IDX);
    al_i32* local = al_field<al_i32>(meta, AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK);
    al_u32* request_idx = al_field<al_u32>(meta, AL_OFF_TOKEN_TO_REQUEST_IDX);
    al_u32* position = al_field<al_u32>(meta, AL_OFF_TOKEN_TO_POSITION_IN_REQUEST);
    for (al_u32 t = tid; t < tp; t += AL_THREADS) {
      if (t < h.real_tokens) {
        const al_u32 a = al_search(s_cu_q, n, t);
        const AlRequest r = req[a];
        const al_u32 pos = r.kv + (t - s_cu_q[a]);
        const al_u32 j = pos >> AL_BLOCK_SHIFT;
        const al_u32 index = r.src & AL_SRC_INDEX_MASK;
        al_i32 block;
        switch (r.src >> 30) {
          case AL_SRC_META: block = bt[a * AL_BT_WIDTH + j]; break;
          case AL_SRC_RESIDENT: block = resident[index * AL_BT_WIDTH + j]; break;
          default: block = uploaded[index + j]; break;
        }
        if (has_ids) input_ids[t] = ids[t];
        pos_ids[t] = (al_i64)pos;
        block_idx[t] = (al_i64)block;
        local[t] = (al_i32)(pos & (AL_BLOCK_SIZE - 1u));
        request_idx[t] = h.paused + a;
        position[t] = pos;
      } else {
        // Padding tokens write to the dummy block's slot 0.
        input_ids[t] = 0;
        pos_ids[t] = 0;
        block_idx[t] = (al_i64)AL_DUMMY_BLOCK;
        local[t] = 0;
        request_idx[t] = 0u;
        position[t] = 0u;
      }
    }
  }

  // (4) Mamba prefill arrays (present when Fp > 0), over the prefill token sub-stream.
  if constexpr (AL_HAS_MAMBA) {
    if (fp > 0u) {
      __shared__ al_u32 s_chunk[AL_MAX_REQUESTS + 1u];
      const al_u32 dr = h.attn_decode, fr = h.attn_prefill;
      const al_u32 q0 = s_cu_q[dr];
      const al_u32 l = s_cu_q[dr + fr] - q0;
      // Start of prefill sequence f in [0, fp] (padded sequences are empty, at l).
#define AL_SEQ_START(f) ((f) <= fr ? s_cu_q[dr + (f)] - q0 : l)
      // Chunks per sequence: max(1, ceil(len / cs)); scanned into s_chunk.
      al_u32 pre_c = 0u, unused = 0u;
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 f = first + i;
        if (f < fp) pre_c += al_max(1u, (AL_SEQ_START(f + 1u) - AL_SEQ_START(f) + AL_CHUNK_SIZE - 1u) / AL_CHUNK_SIZE);
      }
      al_u32 total_chunks, unused_total;
      al_block_scan2(pre_c, unused, total_chunks, unused_total, s_warp);
      al_i32* last_chunk = al_field<al_i32>(meta, AL_OFF_MAMBA_LAST_CHUNK_INDICES);
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 f = first + i;
        if (f < fp) {
          pre_c += al_max(1u, (AL_SEQ_START(f + 1u) - AL_SEQ_START(f) + AL_CHUNK_SIZE - 1u) / AL_CHUNK_SIZE);
          s_chunk[f + 1u] = pre_c;
          last_chunk[f] = (al_i32)pre_c - 1;
        }
      }
      if (tid == 0u) s_chunk[0] = 0u;
      al_u32* cu_seqlens = al_field<al_u32>(meta, AL_OFF_MAMBA_CU_SEQLENS);
      for (al_u32 f = tid; f <= fp; f += AL_THREADS) cu_seqlens[f] = AL_SEQ_START(f);
      al_i32* seq_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_SEQ_IDX);
      al_i32* conv_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_CONV_SEQ_IDX);
      al_u32* conv_start = al_field<al_u32>(meta, AL_OFF_MAMBA_CONV_SEQ_START);
      for (al_u32 k = tid; k < tp; k += AL_THREADS) {
        if (k < l) {
          const al_u32 a = al_search(s_cu_q, n, q0 + k);
          seq_idx[k] = (al_i32)(a - dr);
          conv_idx[k] = (al_i32)(a - dr);
          conv_start[k] = s_cu_q[a] - q0;
        } else {
          seq_idx[k] = -1;
          conv_idx[k] = 0;
          conv_start[k] = 0u;
        }
      }
      if (tid == 0u && dp > 0u) {
        al_field<al_u32>(meta, AL_OFF_MAMBA_DEVICE_DECODE_PREFILL)[0] = q0;
        al_field<al_u32>(meta, AL_OFF_MAMBA_DEVICE_DECODE_PREFILL)[1] = l;
      }
      __syncthreads();  // s_chunk complete

      // Chunk boundaries: chunks restart at every sequence start; padding repeats the end.
      const al_u32 chunks = tp / AL_CHUNK_SIZE + fp;
      al_u32* cu_chunk = al_field<al_u32>(meta, AL_OFF_MAMBA_CU_CHUNK_SEQLENS);
      al_i32* varlen = al_field<al_i32>(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN);
      if (tid == 0u) cu_chunk[0] = 0u;
      for (al_u32 k = tid; k < chunks; k += AL_THREADS) {
        if (k < total_chunks) {
          const al_u32 f = al_search(s_chunk, fp, k);
          const al_u32 start = AL_SEQ_START(f), end = AL_SEQ_START(f + 1u);
          cu_chunk[k + 1u] = al_min(start + (k - s_chunk[f] + 1u) * AL_CHUNK_SIZE, end);
          varlen[k] = (al_i32)f;
        } else {
          cu_chunk[k + 1u] = l;
          varlen[k] = 0;
        }
      }

      // Intermediate-state extraction: K = min(3 Fp, Kmax) entries, the real ones first.
      const al_u32 kk = al_min(3u * fp, AL_MAX_INTERMEDIATE);
      const bool has_inter = (h.flags & AL_FLAG_INTERMEDIATE) != 0u;
      const al_u32 emitted = has_inter ? h.inter_count : 0u;
      al_i64* inter_chunk = al_field<al_i64>(meta, AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES);
      al_u32* inter_abs = al_field<al_u32>(meta, AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS);
      if (has_inter) {
        const AlInter* inter = reinterpret_cast<const AlInter*>(staging + h.off_inter);
        for (al_u32 f = tid; f < fr; f += AL_THREADS) {
          const AlInter rec = inter[f];
          const al_u32 base = rec.base_count & ((1u << 28) - 1u), count = rec.base_count >> 28;
          for (al_u32 j = 0u; j < count && j < 3u; ++j) {
            const al_u32 off = rec.offsets[j];
            inter_chunk[base + j] = (al_i64)(s_chunk[f] + off / AL_CHUNK_SIZE) - 1;
            inter_abs[base + j] = AL_SEQ_START(f) + off;
          }
        }
      }
      for (al_u32 i = emitted + tid; i < kk; i += AL_THREADS) {
        inter_chunk[i] = 0;
        inter_abs[i] = AL_CONV_WIDTH;
      }
      if (tid == 0u) al_field<al_u32>(meta, AL_OFF_MAMBA_INTERMEDIATE_REAL_COUNT)[0] = emitted;
#undef AL_SEQ_START
    }
  }
}

// ---- Entry points ------------------------------------------------------------
// Launch with AL_THREADS threads per block and at least one block; block 0 fills the
// metadata, blocks 1.. apply block-table changes and gather rows.

/// Eager steps (no bucket matched): padded dims from the staging header.
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_eager(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 0u, 0u, 0u, true);
}

/// Bucket 0: 1 tokens, 0 prefill + 1 decode requests.
static_assert(1u <= AL_MAX_TOKENS && 0u + 1u <= AL_MAX_REQUESTS && 1u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 0 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_0(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1u, 0u, 1u, false);
}

/// Bucket 1: 2 tokens, 0 prefill + 2 decode requests.
static_assert(2u <= AL_MAX_TOKENS && 0u + 2u <= AL_MAX_REQUESTS && 2u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 1 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_1(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2u, 0u, 2u, false);
}

/// Bucket 2: 2 tokens, 1 prefill + 1 decode requests.
static_assert(2u <= AL_MAX_TOKENS && 1u + 1u <= AL_MAX_REQUESTS && 2u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 2 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_2(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2u, 1u, 1u, false);
}

/// Bucket 3: 2 tokens, 2 prefill + 0 decode requests.
static_assert(2u <= AL_MAX_TOKENS && 2u + 0u <= AL_MAX_REQUESTS && 2u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 3 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_3(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2u, 2u, 0u, false);
}

/// Bucket 4: 4 tokens, 0 prefill + 4 decode requests.
static_assert(4u <= AL_MAX_TOKENS && 0u + 4u <= AL_MAX_REQUESTS && 4u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 4 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_4(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4u, 0u, 4u, false);
}

/// Bucket 5: 4 tokens, 1 prefill + 3 decode requests.
static_assert(4u <= AL_MAX_TOKENS && 1u + 3u <= AL_MAX_REQUESTS && 4u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 5 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_5(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4u, 1u, 3u, false);
}

/// Bucket 6: 4 tokens, 2 prefill + 2 decode requests.
static_assert(4u <= AL_MAX_TOKENS && 2u + 2u <= AL_MAX_REQUESTS && 4u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 6 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_6(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4u, 2u, 2u, false);
}

/// Bucket 7: 4 tokens, 4 prefill + 0 decode requests.
static_assert(4u <= AL_MAX_TOKENS && 4u + 0u <= AL_MAX_REQUESTS && 4u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 7 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_7(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4u, 4u, 0u, false);
}

/// Bucket 8: 8 tokens, 0 prefill + 8 decode requests.
static_assert(8u <= AL_MAX_TOKENS && 0u + 8u <= AL_MAX_REQUESTS && 8u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 8 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_8(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 8u, 0u, 8u, false);
}

/// Bucket 9: 8 tokens, 1 prefill + 7 decode requests.
static_assert(8u <= AL_MAX_TOKENS && 1u + 7u <= AL_MAX_REQUESTS && 8u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 9 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_9(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 8u, 1u, 7u, false);
}

/// Bucket 10: 8 tokens, 2 prefill + 6 decode requests.
static_assert(8u <= AL_MAX_TOKENS && 2u + 6u <= AL_MAX_REQUESTS && 8u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 10 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_10(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 8u, 2u, 6u, false);
}

/// Bucket 11: 8 tokens, 4 prefill + 4 decode requests.
static_assert(8u <= AL_MAX_TOKENS && 4u + 4u <= AL_MAX_REQUESTS && 8u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 11 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_11(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 8u, 4u, 4u, false);
}

/// Bucket 12: 8 tokens, 8 prefill + 0 decode requests.
static_assert(8u <= AL_MAX_TOKENS && 8u + 0u <= AL_MAX_REQUESTS && 8u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 12 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_12(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 8u, 8u, 0u, false);
}

/// Bucket 13: 16 tokens, 0 prefill + 16 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 0u + 16u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 13 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_13(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 0u, 16u, false);
}

/// Bucket 14: 16 tokens, 1 prefill + 15 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 1u + 15u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 14 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_14(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 1u, 15u, false);
}

/// Bucket 15: 16 tokens, 2 prefill + 14 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 2u + 14u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 15 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_15(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 2u, 14u, false);
}

/// Bucket 16: 16 tokens, 4 prefill + 12 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 4u + 12u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 16 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_16(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 4u, 12u, false);
}

/// Bucket 17: 16 tokens, 8 prefill + 8 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 8u + 8u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 17 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_17(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 8u, 8u, false);
}

/// Bucket 18: 16 tokens, 16 prefill + 0 decode requests.
static_assert(16u <= AL_MAX_TOKENS && 16u + 0u <= AL_MAX_REQUESTS && 16u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 18 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_18(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 16u, 16u, 0u, false);
}

/// Bucket 19: 32 tokens, 0 prefill + 32 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 0u + 32u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 19 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_19(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 0u, 32u, false);
}

/// Bucket 20: 32 tokens, 1 prefill + 31 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 1u + 31u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 20 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_20(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 1u, 31u, false);
}

/// Bucket 21: 32 tokens, 2 prefill + 30 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 2u + 30u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 21 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_21(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 2u, 30u, false);
}

/// Bucket 22: 32 tokens, 4 prefill + 28 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 4u + 28u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 22 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_22(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 4u, 28u, false);
}

/// Bucket 23: 32 tokens, 8 prefill + 24 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 8u + 24u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 23 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_23(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 8u, 24u, false);
}

/// Bucket 24: 32 tokens, 16 prefill + 16 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 16u + 16u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 24 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_24(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 16u, 16u, false);
}

/// Bucket 25: 32 tokens, 32 prefill + 0 decode requests.
static_assert(32u <= AL_MAX_TOKENS && 32u + 0u <= AL_MAX_REQUESTS && 32u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 25 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_25(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 32u, 32u, 0u, false);
}

/// Bucket 26: 64 tokens, 0 prefill + 64 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 0u + 64u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 26 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_26(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 0u, 64u, false);
}

/// Bucket 27: 64 tokens, 1 prefill + 63 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 1u + 63u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 27 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_27(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 1u, 63u, false);
}

/// Bucket 28: 64 tokens, 2 prefill + 62 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 2u + 62u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 28 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_28(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 2u, 62u, false);
}

/// Bucket 29: 64 tokens, 4 prefill + 60 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 4u + 60u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 29 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_29(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 4u, 60u, false);
}

/// Bucket 30: 64 tokens, 8 prefill + 56 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 8u + 56u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 30 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_30(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 8u, 56u, false);
}

/// Bucket 31: 64 tokens, 16 prefill + 48 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 16u + 48u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 31 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_31(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 16u, 48u, false);
}

/// Bucket 32: 64 tokens, 32 prefill + 32 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 32u + 32u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 32 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_32(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 32u, 32u, false);
}

/// Bucket 33: 64 tokens, 64 prefill + 0 decode requests.
static_assert(64u <= AL_MAX_TOKENS && 64u + 0u <= AL_MAX_REQUESTS && 64u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 33 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_33(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 64u, 64u, 0u, false);
}

/// Bucket 34: 128 tokens, 0 prefill + 128 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 0u + 128u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 34 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_34(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 0u, 128u, false);
}

/// Bucket 35: 128 tokens, 1 prefill + 127 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 1u + 127u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 35 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_35(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 1u, 127u, false);
}

/// Bucket 36: 128 tokens, 2 prefill + 126 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 2u + 126u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 36 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_36(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 2u, 126u, false);
}

/// Bucket 37: 128 tokens, 4 prefill + 124 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 4u + 124u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 37 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_37(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 4u, 124u, false);
}

/// Bucket 38: 128 tokens, 8 prefill + 120 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 8u + 120u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 38 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_38(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 8u, 120u, false);
}

/// Bucket 39: 128 tokens, 16 prefill + 112 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 16u + 112u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 39 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_39(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 16u, 112u, false);
}

/// Bucket 40: 128 tokens, 32 prefill + 96 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 32u + 96u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 40 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_40(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 32u, 96u, false);
}

/// Bucket 41: 128 tokens, 64 prefill + 64 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 64u + 64u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 41 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_41(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 64u, 64u, false);
}

/// Bucket 42: 128 tokens, 128 prefill + 0 decode requests.
static_assert(128u <= AL_MAX_TOKENS && 128u + 0u <= AL_MAX_REQUESTS && 128u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 42 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_42(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 128u, 128u, 0u, false);
}

/// Bucket 43: 256 tokens, 0 prefill + 256 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 0u + 256u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 0u <= AL_MAX_CHUNKS, "bucket 43 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_43(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 0u, 256u, false);
}

/// Bucket 44: 256 tokens, 1 prefill + 255 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 1u + 255u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 44 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_44(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 1u, 255u, false);
}

/// Bucket 45: 256 tokens, 2 prefill + 254 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 2u + 254u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 45 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_45(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 2u, 254u, false);
}

/// Bucket 46: 256 tokens, 4 prefill + 252 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 4u + 252u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 46 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_46(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 4u, 252u, false);
}

/// Bucket 47: 256 tokens, 8 prefill + 248 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 8u + 248u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 47 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_47(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 8u, 248u, false);
}

/// Bucket 48: 256 tokens, 16 prefill + 240 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 16u + 240u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 48 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_48(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 16u, 240u, false);
}

/// Bucket 49: 256 tokens, 32 prefill + 224 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 32u + 224u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 49 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_49(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 32u, 224u, false);
}

/// Bucket 50: 256 tokens, 64 prefill + 192 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 64u + 192u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 50 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_50(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 64u, 192u, false);
}

/// Bucket 51: 256 tokens, 128 prefill + 128 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 128u + 128u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 51 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_51(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 128u, 128u, false);
}

/// Bucket 52: 256 tokens, 256 prefill + 0 decode requests.
static_assert(256u <= AL_MAX_TOKENS && 256u + 0u <= AL_MAX_REQUESTS && 256u / AL_CHUNK_SIZE + 256u <= AL_MAX_CHUNKS, "bucket 52 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_52(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 256u, 256u, 0u, false);
}

/// Bucket 53: 512 tokens, 1 prefill + 255 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 1u + 255u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 53 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_53(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 1u, 255u, false);
}

/// Bucket 54: 512 tokens, 2 prefill + 254 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 2u + 254u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 54 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_54(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 2u, 254u, false);
}

/// Bucket 55: 512 tokens, 4 prefill + 252 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 4u + 252u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 55 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_55(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 4u, 252u, false);
}

/// Bucket 56: 512 tokens, 8 prefill + 248 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 8u + 248u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 56 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_56(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 8u, 248u, false);
}

/// Bucket 57: 512 tokens, 16 prefill + 240 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 16u + 240u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 57 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_57(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 16u, 240u, false);
}

/// Bucket 58: 512 tokens, 32 prefill + 224 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 32u + 224u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 58 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_58(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 32u, 224u, false);
}

/// Bucket 59: 512 tokens, 64 prefill + 192 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 64u + 192u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 59 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_59(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 64u, 192u, false);
}

/// Bucket 60: 512 tokens, 128 prefill + 128 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 128u + 128u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 60 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_60(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 128u, 128u, false);
}

/// Bucket 61: 512 tokens, 256 prefill + 0 decode requests.
static_assert(512u <= AL_MAX_TOKENS && 256u + 0u <= AL_MAX_REQUESTS && 512u / AL_CHUNK_SIZE + 256u <= AL_MAX_CHUNKS, "bucket 61 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_61(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 512u, 256u, 0u, false);
}

/// Bucket 62: 1024 tokens, 1 prefill + 255 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 1u + 255u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 62 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_62(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 1u, 255u, false);
}

/// Bucket 63: 1024 tokens, 2 prefill + 254 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 2u + 254u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 63 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_63(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 2u, 254u, false);
}

/// Bucket 64: 1024 tokens, 4 prefill + 252 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 4u + 252u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 64 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_64(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 4u, 252u, false);
}

/// Bucket 65: 1024 tokens, 8 prefill + 248 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 8u + 248u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 65 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_65(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 8u, 248u, false);
}

/// Bucket 66: 1024 tokens, 16 prefill + 240 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 16u + 240u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 66 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_66(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 16u, 240u, false);
}

/// Bucket 67: 1024 tokens, 32 prefill + 224 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 32u + 224u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 67 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_67(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 32u, 224u, false);
}

/// Bucket 68: 1024 tokens, 64 prefill + 192 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 64u + 192u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 68 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_68(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 64u, 192u, false);
}

/// Bucket 69: 1024 tokens, 128 prefill + 128 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 128u + 128u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 69 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_69(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 128u, 128u, false);
}

/// Bucket 70: 1024 tokens, 256 prefill + 0 decode requests.
static_assert(1024u <= AL_MAX_TOKENS && 256u + 0u <= AL_MAX_REQUESTS && 1024u / AL_CHUNK_SIZE + 256u <= AL_MAX_CHUNKS, "bucket 70 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_70(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 1024u, 256u, 0u, false);
}

/// Bucket 71: 2048 tokens, 1 prefill + 255 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 1u + 255u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 71 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_71(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 1u, 255u, false);
}

/// Bucket 72: 2048 tokens, 2 prefill + 254 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 2u + 254u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 72 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_72(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 2u, 254u, false);
}

/// Bucket 73: 2048 tokens, 4 prefill + 252 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 4u + 252u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 73 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_73(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 4u, 252u, false);
}

/// Bucket 74: 2048 tokens, 8 prefill + 248 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 8u + 248u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 74 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_74(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 8u, 248u, false);
}

/// Bucket 75: 2048 tokens, 16 prefill + 240 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 16u + 240u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 75 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_75(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 16u, 240u, false);
}

/// Bucket 76: 2048 tokens, 32 prefill + 224 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 32u + 224u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 76 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_76(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 32u, 224u, false);
}

/// Bucket 77: 2048 tokens, 64 prefill + 192 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 64u + 192u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 77 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_77(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 64u, 192u, false);
}

/// Bucket 78: 2048 tokens, 128 prefill + 128 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 128u + 128u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 78 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_78(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 128u, 128u, false);
}

/// Bucket 79: 2048 tokens, 256 prefill + 0 decode requests.
static_assert(2048u <= AL_MAX_TOKENS && 256u + 0u <= AL_MAX_REQUESTS && 2048u / AL_CHUNK_SIZE + 256u <= AL_MAX_CHUNKS, "bucket 79 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_79(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 2048u, 256u, 0u, false);
}

/// Bucket 80: 4096 tokens, 1 prefill + 255 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 1u + 255u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 1u <= AL_MAX_CHUNKS, "bucket 80 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_80(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 1u, 255u, false);
}

/// Bucket 81: 4096 tokens, 2 prefill + 254 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 2u + 254u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 2u <= AL_MAX_CHUNKS, "bucket 81 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_81(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 2u, 254u, false);
}

/// Bucket 82: 4096 tokens, 4 prefill + 252 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 4u + 252u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 4u <= AL_MAX_CHUNKS, "bucket 82 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_82(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 4u, 252u, false);
}

/// Bucket 83: 4096 tokens, 8 prefill + 248 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 8u + 248u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 8u <= AL_MAX_CHUNKS, "bucket 83 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_83(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 8u, 248u, false);
}

/// Bucket 84: 4096 tokens, 16 prefill + 240 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 16u + 240u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 16u <= AL_MAX_CHUNKS, "bucket 84 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_84(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 16u, 240u, false);
}

/// Bucket 85: 4096 tokens, 32 prefill + 224 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 32u + 224u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 32u <= AL_MAX_CHUNKS, "bucket 85 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_85(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 32u, 224u, false);
}

/// Bucket 86: 4096 tokens, 64 prefill + 192 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 64u + 192u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 64u <= AL_MAX_CHUNKS, "bucket 86 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_86(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 64u, 192u, false);
}

/// Bucket 87: 4096 tokens, 128 prefill + 128 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 128u + 128u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 128u <= AL_MAX_CHUNKS, "bucket 87 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_87(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 128u, 128u, false);
}

/// Bucket 88: 4096 tokens, 256 prefill + 0 decode requests.
static_assert(4096u <= AL_MAX_TOKENS && 256u + 0u <= AL_MAX_REQUESTS && 4096u / AL_CHUNK_SIZE + 256u <= AL_MAX_CHUNKS, "bucket 88 fits the buffer");
extern "C" __global__ void __launch_bounds__(AL_THREADS)
al_fill_bucket_88(al_u8* meta, const al_u8* staging, al_i32* resident) {
  al_fill_body(meta, staging, resident, 4096u, 256u, 0u, false);
}
"#;
    }
};

/// `NemotronH8b`'s field table, the accessors of `NemotronH8bMetadata` and the methods of `NemotronH8bBuilder`.
const _: () = {
    use ::attention_layout::__private as al;
    /// Where each of `NemotronH8b`'s 32 fields lies in its 347172-byte buffer (SEMANTICS §9).
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
        /// `mha_block_table`: block table, one row of `nkv` block ids per request; 32768 × i32 (R × nkv) at bytes 158732..289804.
        pub const MHA_BLOCK_TABLE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MhaBlockTable,
            dtype: al::Dtype::I32,
            elems: 32768,
            offset: 158732,
        };
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; 256 × i64 (R) at bytes 289808..291856.
        pub const MAMBA_BATCH_INDICES_DECODE: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesDecode,
            dtype: al::Dtype::I64,
            elems: 256,
            offset: 289808,
        };
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; 256 × i32 (R) at bytes 291856..292880.
        pub const MAMBA_BATCH_INDICES_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaBatchIndicesPrefill,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 291856,
        };
        /// `mamba_seq_idx`: prefill sequence number per token; 4096 × i32 (T) at bytes 292880..309264.
        pub const MAMBA_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdx,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 292880,
        };
        /// `mamba_cu_seqlens`: cumulative prefill lengths; 257 × i32 (R + 1) at bytes 309264..310292.
        pub const MAMBA_CU_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuSeqlens,
            dtype: al::Dtype::I32,
            elems: 257,
            offset: 309264,
        };
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; 289 × i32 (Cmax + 1) at bytes 310292..311448.
        pub const MAMBA_CU_CHUNK_SEQLENS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaCuChunkSeqlens,
            dtype: al::Dtype::I32,
            elems: 289,
            offset: 310292,
        };
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; 256 × i32 (R) at bytes 311448..312472.
        pub const MAMBA_LAST_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaLastChunkIndices,
            dtype: al::Dtype::I32,
            elems: 256,
            offset: 311448,
        };
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; 288 × i32 (Cmax) at bytes 312472..313624.
        pub const MAMBA_SEQ_IDX_FOR_VARLEN: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaSeqIdxForVarlen,
            dtype: al::Dtype::I32,
            elems: 288,
            offset: 312472,
        };
        /// `mamba_conv_seq_idx`: conv sequence number per token; 4096 × i32 (T) at bytes 313624..330008.
        pub const MAMBA_CONV_SEQ_IDX: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqIdx,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 313624,
        };
        /// `mamba_conv_seq_start`: conv sequence start per token; 4096 × i32 (T) at bytes 330008..346392.
        pub const MAMBA_CONV_SEQ_START: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaConvSeqStart,
            dtype: al::Dtype::I32,
            elems: 4096,
            offset: 330008,
        };
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); 64 × i64 (Kmax) at bytes 346392..346904.
        pub const MAMBA_INTERMEDIATE_CHUNK_INDICES: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateChunkIndices,
            dtype: al::Dtype::I64,
            elems: 64,
            offset: 346392,
        };
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); 64 × i32 (Kmax) at bytes 346904..347160.
        pub const MAMBA_INTERMEDIATE_ABS_POSITIONS: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateAbsPositions,
            dtype: al::Dtype::I32,
            elems: 64,
            offset: 346904,
        };
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); 1 × i32 (1) at bytes 347160..347164.
        pub const MAMBA_INTERMEDIATE_REAL_COUNT: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaIntermediateRealCount,
            dtype: al::Dtype::I32,
            elems: 1,
            offset: 347160,
        };
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); 2 × i32 (2) at bytes 347164..347172.
        pub const MAMBA_DEVICE_DECODE_PREFILL: al::FieldLayout = al::FieldLayout {
            field: al::Field::MambaDeviceDecodePrefill,
            dtype: al::Dtype::I32,
            elems: 2,
            offset: 347164,
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
        /// `mha_block_table`: block table, one row of `nkv` block ids per request; all 32768 × i32 at byte 158732.
        #[inline]
        pub fn mha_block_table(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MHA_BLOCK_TABLE)
        }
        /// `mamba_batch_indices_decode`: Mamba state slot per decode request; all 256 × i64 at byte 289808.
        #[inline]
        pub fn mamba_batch_indices_decode(&self) -> &'a [i64] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_BATCH_INDICES_DECODE)
        }
        /// `mamba_batch_indices_prefill`: Mamba state slot per prefill request; all 256 × i32 at byte 291856.
        #[inline]
        pub fn mamba_batch_indices_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_BATCH_INDICES_PREFILL)
        }
        /// `mamba_seq_idx`: prefill sequence number per token; all 4096 × i32 at byte 292880.
        #[inline]
        pub fn mamba_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_SEQ_IDX)
        }
        /// `mamba_cu_seqlens`: cumulative prefill lengths; all 257 × i32 at byte 309264.
        #[inline]
        pub fn mamba_cu_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CU_SEQLENS)
        }
        /// `mamba_cu_chunk_seqlens`: chunk boundaries; all 289 × i32 at byte 310292.
        #[inline]
        pub fn mamba_cu_chunk_seqlens(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CU_CHUNK_SEQLENS)
        }
        /// `mamba_last_chunk_indices`: last chunk of each prefill sequence; all 256 × i32 at byte 311448.
        #[inline]
        pub fn mamba_last_chunk_indices(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_LAST_CHUNK_INDICES)
        }
        /// `mamba_seq_idx_for_varlen`: sequence number of each chunk; all 288 × i32 at byte 312472.
        #[inline]
        pub fn mamba_seq_idx_for_varlen(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_SEQ_IDX_FOR_VARLEN)
        }
        /// `mamba_conv_seq_idx`: conv sequence number per token; all 4096 × i32 at byte 313624.
        #[inline]
        pub fn mamba_conv_seq_idx(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CONV_SEQ_IDX)
        }
        /// `mamba_conv_seq_start`: conv sequence start per token; all 4096 × i32 at byte 330008.
        #[inline]
        pub fn mamba_conv_seq_start(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_CONV_SEQ_START)
        }
        /// `mamba_intermediate_chunk_indices`: intermediate-state chunk indices (appended); all 64 × i64 at byte 346392.
        #[inline]
        pub fn mamba_intermediate_chunk_indices(&self) -> &'a [i64] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_CHUNK_INDICES,
            )
        }
        /// `mamba_intermediate_abs_positions`: intermediate-state absolute positions (appended); all 64 × i32 at byte 346904.
        #[inline]
        pub fn mamba_intermediate_abs_positions(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_ABS_POSITIONS,
            )
        }
        /// `mamba_intermediate_real_count`: real intermediate entries (appended); all 1 × i32 at byte 347160.
        #[inline]
        pub fn mamba_intermediate_real_count(&self) -> &'a [i32] {
            al::field_slice(
                self.host.bytes(),
                NemotronH8b::MAMBA_INTERMEDIATE_REAL_COUNT,
            )
        }
        /// `mamba_device_decode_prefill`: real decode and prefill token counts (appended); all 2 × i32 at byte 347164.
        #[inline]
        pub fn mamba_device_decode_prefill(&self) -> &'a [i32] {
            al::field_slice(self.host.bytes(), NemotronH8b::MAMBA_DEVICE_DECODE_PREFILL)
        }
    }
    impl NemotronH8bBuilder {
        /// A builder with its 347172-byte buffer allocated (the only allocation) and initialized: zeros, and the block table all dummy block (24215).
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
    use ::attention_layout::__private::{self as al, Layout as _};
    const R: usize = NemotronH8b::MAX_REQUESTS;
    const T: usize = NemotronH8b::MAX_TOKENS;
    const S: usize = NemotronH8b::MAX_SEQ_LEN;
    const B: usize = NemotronH8b::BLOCK_SIZE;
    const TP: usize = NemotronH8b::TENSOR_PARALLEL as usize;
    const NKV: usize = NemotronH8b::BLOCK_TABLE_WIDTH;
    const CMAX: usize = NemotronH8b::MAX_CHUNKS;
    const KMAX: usize = NemotronH8b::MAX_INTERMEDIATE;
    assert!(R != 0 && T != 0 && S != 0 && TP != 0, "capacities must be positive");
    assert!(B.is_power_of_two(), "`block_size` must be a power of two");
    assert!(
        T.is_multiple_of(64usize.div_ceil(TP) * TP),
        "`max_tokens` must be a multiple of the eager token rounder"
    );
    assert!(
        T >= R * (NemotronH8b::NUM_SPEC + 1),
        "every request must be able to decode in one step"
    );
    assert!(
        NKV == S.div_ceil(B) + (NemotronH8b::NUM_SPEC != 0) as usize,
        "`nkv` must be ceil(S / B) + (s > 0)"
    );
    assert!(
        NemotronH8b::KV_POOL_BLOCKS >= 2 && NemotronH8b::DUMMY_BLOCK as usize ==
        NemotronH8b::KV_POOL_BLOCKS - 1,
        "the dummy block must be the last block of the pool"
    );
    const CS: usize = NemotronH8b::CHUNK_SIZE;
    assert!(
        CS != 0 && NemotronH8b::CONV_WIDTH != 0,
        "Mamba layouts need a chunk size and a conv width"
    );
    assert!(CMAX == T / CS + R, "`Cmax` must be floor(T / cs) + R");
    let k = T.div_ceil(B);
    assert!(
        KMAX == if k < 3 * R { k } else { 3 * R }, "`Kmax` must be min(ceil(T / B), 3R)"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_INPUT_IDS, T, al::Dtype::I64),
        "`token_to_input_ids` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_POS_IDS, T, al::Dtype::I64),
        "`token_to_pos_ids` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_BLOCK_IDX, T, al::Dtype::I64),
        "`token_to_block_idx` must be T × i64"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK, T,
        al::Dtype::I32), "`token_to_local_position_within_kv_block` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_REQUEST_IDX, T, al::Dtype::I32),
        "`token_to_request_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOKEN_TO_POSITION_IN_REQUEST, T, al::Dtype::I32),
        "`token_to_position_in_request` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_IN_PREFILL_STATUS, R, al::Dtype::I32),
        "`request_in_prefill_status` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_QUERY_LENGTHS, R, al::Dtype::I32),
        "`request_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REQUEST_KV_LENGTH_OFFSETS, R, al::Dtype::I32),
        "`request_kv_length_offsets` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::TEMPERATURE, R, al::Dtype::F32),
        "`temperature` must be R × f32"
    );
    assert!(
        al::holds(NemotronH8b::TOP_K, R, al::Dtype::I32), "`top_k` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::TOP_P, R, al::Dtype::F32), "`top_p` must be R × f32"
    );
    assert!(
        al::holds(NemotronH8b::ACTIVE_REQUEST_LAST_TOKEN_IDXS, R, al::Dtype::I32),
        "`active_request_last_token_idxs` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::REAL_TOKEN_COUNT, 1, al::Dtype::I32),
        "`real_token_count` must be 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_QUERY_LENGTHS, R, al::Dtype::I32),
        "`mha_query_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_CU_QUERY_SEQ_LENGTHS, R + 1, al::Dtype::I32),
        "`mha_cu_query_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_KV_SEQ_LENGTHS, R, al::Dtype::I32),
        "`mha_kv_seq_lengths` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_CU_KV_SEQ_LENGTHS, R + 1, al::Dtype::I32),
        "`mha_cu_kv_seq_lengths` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MHA_BLOCK_TABLE, R * NKV, al::Dtype::I32),
        "`mha_block_table` must be R × nkv × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_BATCH_INDICES_DECODE, R, al::Dtype::I64),
        "`mamba_batch_indices_decode` must be R × i64"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_BATCH_INDICES_PREFILL, R, al::Dtype::I32),
        "`mamba_batch_indices_prefill` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_SEQ_IDX, T, al::Dtype::I32),
        "`mamba_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CU_SEQLENS, R + 1, al::Dtype::I32),
        "`mamba_cu_seqlens` must be R + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CU_CHUNK_SEQLENS, CMAX + 1, al::Dtype::I32),
        "`mamba_cu_chunk_seqlens` must be Cmax + 1 × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_LAST_CHUNK_INDICES, R, al::Dtype::I32),
        "`mamba_last_chunk_indices` must be R × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_SEQ_IDX_FOR_VARLEN, CMAX, al::Dtype::I32),
        "`mamba_seq_idx_for_varlen` must be Cmax × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CONV_SEQ_IDX, T, al::Dtype::I32),
        "`mamba_conv_seq_idx` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_CONV_SEQ_START, T, al::Dtype::I32),
        "`mamba_conv_seq_start` must be T × i32"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_INTERMEDIATE_CHUNK_INDICES, KMAX, al::Dtype::I64),
        "`mamba_intermediate_chunk_indices` must be Kmax × i64"
    );
    assert!(
        al::holds(NemotronH8b::MAMBA_INTERMEDIATE_ABS_POSITIONS, KMAX, al::Dtype::I32),
        "`mamba_intermediate_abs_positions` must be Kmax × i32"
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
        al::fields_in_buffer_order(NemotronH8b::FIELDS, NemotronH8b::MODEL.has_mamba()),
        "the field table must list every field of the model, in buffer order"
    );
    assert!(
        al::fields_packed(NemotronH8b::FIELDS, NemotronH8b::TOTAL_BYTES),
        "each field must start at the previous one's end rounded up to its alignment (SEMANTICS §9), and the last end the buffer"
    );
    assert!(
        al::megatron_bytes(NemotronH8b::FIELDS) == NemotronH8b::MEGATRON_BYTES,
        "Megatron's buffer must end where the appended fields begin"
    );
    assert!(
        NemotronH8b::TOTAL_BYTES <= i32::MAX as usize,
        "device kernels address the buffer with 32-bit offsets"
    );
    assert!(
        al::buckets_ascending(NemotronH8b::BUCKETS),
        "the bucket table must be strictly ascending"
    );
    assert!(
        al::buckets_valid(NemotronH8b::BUCKETS, R, T, S, NemotronH8b::NUM_SPEC),
        "every bucket must be a valid batch shape within max_tokens (SEMANTICS §2)"
    );
};
