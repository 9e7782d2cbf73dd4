//! The one layout model every emitter reads: the field table and the facts.
//!
//! * [`Field`] and its [`FieldInfo`] (name, dtype rule, extent rule, presence rule,
//!   description) come from one list, `fields!` below. The geometry's capacities, the
//!   generated Rust and CUDA C capacity checks, the host views' live lengths, `inspect`'s
//!   live bytes and the generated docs are all evaluated or rendered from that list.
//! * [`Facts`] holds every number of a layout in one `const`-constructible struct, from
//!   one list, `facts!` below, which also gives each fact its C name and its symbol. The
//!   geometry holds one; generated code holds one as `Layout::FACTS`; the CUDA C facts
//!   header writes one fact per line.
//!
//! Adding a field or a fact is one edit here; `tests/emitters_agree.rs` fails when an
//! emitter disagrees with the tables.

/// Element type of a buffer field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `int32_t`.
    I32,
    /// `int64_t`.
    I64,
    /// `float`.
    F32,
    /// `uint8_t`: a flag (0 or 1) that a consumer can view as a bool tensor.
    U8,
}

impl Dtype {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Self::I32 | Self::F32 => 4,
            Self::I64 => 8,
            Self::U8 => 1,
        }
    }

    /// The Rust type name.
    pub const fn rust(self) -> &'static str {
        match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::U8 => "u8",
        }
    }

    /// The CUDA C type name.
    pub const fn cuda(self) -> &'static str {
        match self {
            Self::I32 => "int32_t",
            Self::I64 => "int64_t",
            Self::F32 => "float",
            Self::U8 => "uint8_t",
        }
    }
}

/// A kernel format a layout can add to Megatron's arrays (`formats = ["flashinfer",
/// "vllm"]`): each adds its fields to the one buffer (docs/CONSUMER-CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// FlashInfer's paged-KV CSR arrays (`BatchDecodeWithPagedKVCacheWrapper`,
    /// `BatchPrefillWithPagedKVCacheWrapper`).
    FlashInfer,
    /// vLLM's kernels: the flat slot mapping, and for Mamba layouts the state indices
    /// with a scratch slot, `has_initial_state` and the causal-conv1d program map.
    Vllm,
}

impl Format {
    /// Every format, in the order their fields lie in the buffer.
    pub const ALL: &'static [Format] = &[Format::FlashInfer, Format::Vllm];

    /// The spelling used in specs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FlashInfer => "flashinfer",
            Self::Vllm => "vllm",
        }
    }
}

/// What one element of a field is indexed by. Each axis has a capacity (a fact of the
/// layout) and a live length (a number of the step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// Tokens: capacity `T`, live `Tp` (padded tokens).
    Token,
    /// Request rows: capacity `R`, live `Np` (padded requests).
    Request,
    /// Decode request rows: capacity `R`, live `Dp` (padded decode requests).
    DecodeRequest,
    /// Prefill request rows: capacity `R`, live `Fp` (padded prefill requests).
    PrefillRequest,
    /// Mamba chunks: capacity `Cmax`, live `C` (the step's chunk slots).
    Chunk,
    /// Intermediate states: capacity `Kmax`, live `K` (the step's entries).
    Intermediate,
    /// vLLM causal-conv1d programs (one per [`VLLM_CONV_BLOCK`] tokens of a prefill
    /// sequence): capacity `Pmax`, live `floor(Tp / 8) + Fp`.
    ConvProgram,
}

/// Tokens one program of vLLM's Triton `causal_conv1d_fn` handles (its `BLOCK_M`): the
/// program map (`vllm_conv_batch_ptr`, `vllm_conv_token_chunk_offset`) has one entry per
/// such chunk of a prefill sequence.
pub const VLLM_CONV_BLOCK: usize = 8;

impl Axis {
    /// The fact that is the axis's capacity.
    pub const fn capacity_fact(self) -> Fact {
        match self {
            Self::Token => Fact::MaxTokens,
            Self::Request | Self::DecodeRequest | Self::PrefillRequest => Fact::MaxRequests,
            Self::Chunk => Fact::MaxChunks,
            Self::Intermediate => Fact::MaxIntermediate,
            Self::ConvProgram => Fact::MaxConvPrograms,
        }
    }

    /// The axis's length in a step.
    pub const fn live(self, d: &LiveDims) -> usize {
        match self {
            Self::Token => d.tokens,
            Self::Request => d.decode + d.prefill,
            Self::DecodeRequest => d.decode,
            Self::PrefillRequest => d.prefill,
            Self::Chunk => d.chunks,
            Self::Intermediate => d.intermediate,
            // Fixed by the padded shape (what a graph captures): each prefill sequence
            // takes at most `ceil(len / 8) <= len / 8 + 1` programs.
            Self::ConvProgram => d.tokens / VLLM_CONV_BLOCK + d.prefill,
        }
    }

    /// The symbol of the live length (`Tp`, `Np`, ...), for docs.
    pub const fn live_symbol(self) -> &'static str {
        match self {
            Self::Token => "Tp",
            Self::Request => "Np",
            Self::DecodeRequest => "Dp",
            Self::PrefillRequest => "Fp",
            Self::Chunk => "C",
            Self::Intermediate => "K",
            Self::ConvProgram => "floor(Tp / 8) + Fp",
        }
    }
}

/// How many elements a field has, in terms of an [`Axis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extent {
    /// One element per axis entry.
    Per(Axis),
    /// One more than the axis (cumulative sums: a leading 0).
    Cumulative(Axis),
    /// One block-table row of `nkv` entries per axis entry, then a guard of the given
    /// number of entries that no row owns (the fills keep it at the dummy block): a
    /// kernel that loads a whole tile of block ids past a row's last column stays in the
    /// buffer (docs/SEMANTICS.md §9, docs/DESIGN.md).
    Rows(Axis, usize),
    /// A fixed number of elements.
    Fixed(usize),
    /// The KV pages of the step's requests, row after row (a CSR index array): capacity
    /// `R × nkv`, live the step's page count (`Σ ceil(kv_len / B)` over its rows).
    Pages,
}

/// The lengths of one step that live lengths are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveDims {
    /// `Tp`: padded tokens.
    pub tokens: usize,
    /// `Dp`: padded decode requests.
    pub decode: usize,
    /// `Fp`: padded prefill requests.
    pub prefill: usize,
    /// `C`: Mamba chunk slots of the step.
    pub chunks: usize,
    /// `K`: intermediate-state entries of the step.
    pub intermediate: usize,
    /// KV pages of the step's rows, `Σ ceil(kv_len / B)` (the FlashInfer index array).
    pub pages: usize,
}

impl Extent {
    /// Capacity in elements for a layout's facts.
    pub const fn capacity(self, f: &Facts) -> usize {
        match self {
            Self::Per(a) => f.get(a.capacity_fact()),
            Self::Cumulative(a) => f.get(a.capacity_fact()) + 1,
            Self::Rows(a, guard) => f.get(a.capacity_fact()) * f.block_table_width + guard,
            Self::Fixed(n) => n,
            Self::Pages => f.max_requests * f.block_table_width,
        }
    }

    /// Live length in elements at a step's lengths (`width`: the block-table width).
    pub const fn live(self, d: &LiveDims, width: usize) -> usize {
        match self {
            Self::Per(a) => a.live(d),
            Self::Cumulative(a) => a.live(d) + 1,
            Self::Rows(a, _) => a.live(d) * width,
            Self::Fixed(n) => n,
            Self::Pages => d.pages,
        }
    }

    /// The capacity as an expression: `fact` names a fact, `times` is the multiplication
    /// sign and `suffix` follows every integer literal (`u` in C).
    pub fn capacity_expr(self, fact: impl Fn(Fact) -> String, times: &str, suffix: &str) -> String {
        match self {
            Self::Per(a) => fact(a.capacity_fact()),
            Self::Cumulative(a) => format!("{} + 1{suffix}", fact(a.capacity_fact())),
            Self::Rows(a, guard) => format!(
                "{}{times}{} + {guard}{suffix}",
                fact(a.capacity_fact()),
                fact(Fact::BlockTableWidth)
            ),
            Self::Fixed(n) => format!("{n}{suffix}"),
            Self::Pages => format!(
                "{}{times}{}",
                fact(Fact::MaxRequests),
                fact(Fact::BlockTableWidth)
            ),
        }
    }

    /// The capacity in the notation of the docs (`R + 1`, `R × nkv`).
    pub fn capacity_text(self) -> String {
        self.capacity_expr(|f| f.symbol().to_owned(), " × ", "")
    }

    /// The live length in the notation of the docs (`Np + 1`, `Np × nkv`).
    pub fn live_text(self) -> String {
        match self {
            Self::Per(a) => a.live_symbol().to_owned(),
            Self::Cumulative(a) => format!("{} + 1", a.live_symbol()),
            Self::Rows(a, _) => format!("{} × nkv", a.live_symbol()),
            Self::Fixed(n) => n.to_string(),
            Self::Pages => "pages".to_owned(),
        }
    }
}

/// A field's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtypeRule {
    /// Always this type.
    Fixed(Dtype),
    /// The layout's decode index type (`decode_index_dtype`: i64 or i32).
    DecodeIndex,
}

impl DtypeRule {
    /// The type in a layout with these facts.
    pub const fn resolve(self, f: &Facts) -> Dtype {
        match self {
            Self::Fixed(d) => d,
            Self::DecodeIndex if f.decode_index_i64 => Dtype::I64,
            Self::DecodeIndex => Dtype::I32,
        }
    }
}

/// When a field is part of a step's metadata (docs/SEMANTICS.md §6 presence rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    /// Every layout, every step.
    Always,
    /// Mamba layouts, steps with decode requests (`Dp > 0`).
    MambaDecode,
    /// Mamba layouts, steps with prefill requests (`Fp > 0`).
    MambaPrefill,
    /// Mamba layouts, steps with both (`Dp > 0` and `Fp > 0`).
    MambaMixed,
    /// Layouts with `formats = ["flashinfer", ...]`, every step.
    FlashInfer,
    /// Layouts with `formats = ["vllm", ...]`, every step.
    Vllm,
    /// Mamba layouts with the `vllm` format, steps with decode requests.
    VllmMambaDecode,
    /// Mamba layouts with the `vllm` format, steps with prefill requests.
    VllmMambaPrefill,
}

impl Presence {
    /// Whether a layout with these facts has a field with this rule at all.
    pub const fn exists(self, f: &Facts) -> bool {
        match self {
            Self::Always => true,
            Self::MambaDecode | Self::MambaPrefill | Self::MambaMixed => f.has_mamba,
            Self::FlashInfer => f.flashinfer,
            Self::Vllm => f.vllm,
            Self::VllmMambaDecode | Self::VllmMambaPrefill => f.vllm && f.has_mamba,
        }
    }

    /// Whether a field with this rule is present at `d` in a layout with these facts.
    pub const fn present(self, d: &LiveDims, f: &Facts) -> bool {
        self.exists(f)
            && match self {
                Self::Always | Self::FlashInfer | Self::Vllm => true,
                Self::MambaDecode | Self::VllmMambaDecode => d.decode > 0,
                Self::MambaPrefill | Self::VllmMambaPrefill => d.prefill > 0,
                Self::MambaMixed => d.prefill > 0 && d.decode > 0,
            }
    }
}

/// One row of the field table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    /// The field's name (Megatron's, with the `mha_` / `mamba_` prefixes of docs/SEMANTICS.md §9).
    pub name: &'static str,
    /// Element type.
    pub dtype: DtypeRule,
    /// Number of elements.
    pub extent: Extent,
    /// When a step has it.
    pub presence: Presence,
    /// Whether this project appends it after Megatron's layout.
    pub appended: bool,
    /// What it holds.
    pub doc: &'static str,
}

macro_rules! fields {
    ($( $variant:ident = $name:literal, $dtype:expr, $extent:expr, $presence:ident, $appended:literal, $doc:literal; )*) => {
        /// A field of the coalesced buffer, in buffer order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Field {
            $( #[doc = $doc] $variant, )*
        }

        impl Field {
            /// Every field, in buffer order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// The field's row of the field table.
            pub const fn info(self) -> &'static FieldInfo {
                match self {
                    $(Field::$variant => &FieldInfo {
                        name: $name,
                        dtype: $dtype,
                        extent: $extent,
                        presence: Presence::$presence,
                        appended: $appended,
                        doc: $doc,
                    },)*
                }
            }
        }
    };
}

use Axis::{Chunk, ConvProgram, DecodeRequest, Intermediate, PrefillRequest, Request, Token};
use DtypeRule::{DecodeIndex, Fixed as Of};
use Extent::{Cumulative, Fixed, Pages, Per, Rows};

const I32: DtypeRule = Of(Dtype::I32);

/// Entries of the block table's guard: 128 bytes of dummy-block ids after the last row
/// (`R × nkv` entries), so that a kernel loading a whole tile of block ids without a mask
/// (vLLM's Triton attention reads up to the next tile boundary past a row's last column)
/// never reads past the metadata buffer. Part of the block table's extent rule, so every
/// emitter, view and check sees it.
pub const BLOCK_TABLE_GUARD: usize = 128 / 4;
const I64: DtypeRule = Of(Dtype::I64);
const F32: DtypeRule = Of(Dtype::F32);
const U8: DtypeRule = Of(Dtype::U8);

fields! {
    TokenToInputIds = "token_to_input_ids", I64, Per(Token), Always, false,
        "token ids of the step's tokens";
    TokenToPosIds = "token_to_pos_ids", I64, Per(Token), Always, false,
        "absolute position of each token";
    TokenToBlockIdx = "token_to_block_idx", I64, Per(Token), Always, false,
        "KV block of each token";
    TokenToLocalPositionWithinKvBlock = "token_to_local_position_within_kv_block", I32, Per(Token), Always, false,
        "position of each token within its KV block";
    TokenToRequestIdx = "token_to_request_idx", I32, Per(Token), Always, false,
        "request row of each token";
    TokenToPositionInRequest = "token_to_position_in_request", I32, Per(Token), Always, false,
        "position of each token in its request";
    RequestInPrefillStatus = "request_in_prefill_status", I32, Per(Request), Always, false,
        "1 for prefill rows, 0 for decode rows";
    RequestQueryLengths = "request_query_lengths", I32, Per(Request), Always, false,
        "query length per active request";
    RequestKvLengthOffsets = "request_kv_length_offsets", I32, Per(Request), Always, false,
        "KV offset per active request";
    Temperature = "temperature", F32, Per(Request), Always, false,
        "sampling temperature per request (padding 1.0)";
    TopK = "top_k", I32, Per(Request), Always, false,
        "sampling top-k per request";
    TopP = "top_p", F32, Per(Request), Always, false,
        "sampling top-p per request";
    ActiveRequestLastTokenIdxs = "active_request_last_token_idxs", I32, Per(Request), Always, false,
        "index of each request's last token in the step";
    RealTokenCount = "real_token_count", I32, Fixed(1), Always, false,
        "real token count of the step";
    MhaQueryLengths = "mha_query_lengths", I32, Per(Request), Always, false,
        "query length per padded request";
    MhaCuQuerySeqLengths = "mha_cu_query_seq_lengths", I32, Cumulative(Request), Always, false,
        "cumulative query lengths";
    MhaKvSeqLengths = "mha_kv_seq_lengths", I32, Per(Request), Always, false,
        "KV length per padded request";
    MhaCuKvSeqLengths = "mha_cu_kv_seq_lengths", I32, Cumulative(Request), Always, false,
        "cumulative KV lengths";
    MhaBlockTable = "mha_block_table", I32, Rows(Request, BLOCK_TABLE_GUARD), Always, false,
        "block table, one row of `nkv` block ids per request, then a guard of dummy-block ids";
    MambaBatchIndicesDecode = "mamba_batch_indices_decode", DecodeIndex, Per(DecodeRequest), MambaDecode, false,
        "Mamba state slot per decode request";
    MambaBatchIndicesPrefill = "mamba_batch_indices_prefill", I32, Per(PrefillRequest), MambaPrefill, false,
        "Mamba state slot per prefill request";
    MambaSeqIdx = "mamba_seq_idx", I32, Per(Token), MambaPrefill, false,
        "prefill sequence number per token";
    MambaCuSeqlens = "mamba_cu_seqlens", I32, Cumulative(PrefillRequest), MambaPrefill, false,
        "cumulative prefill lengths";
    MambaCuChunkSeqlens = "mamba_cu_chunk_seqlens", I32, Cumulative(Chunk), MambaPrefill, false,
        "chunk boundaries";
    MambaLastChunkIndices = "mamba_last_chunk_indices", I32, Per(PrefillRequest), MambaPrefill, false,
        "last chunk of each prefill sequence";
    MambaSeqIdxForVarlen = "mamba_seq_idx_for_varlen", I32, Per(Chunk), MambaPrefill, false,
        "sequence number of each chunk";
    MambaConvSeqIdx = "mamba_conv_seq_idx", I32, Per(Token), MambaPrefill, false,
        "conv sequence number per token";
    MambaConvSeqStart = "mamba_conv_seq_start", I32, Per(Token), MambaPrefill, false,
        "conv sequence start per token";
    MambaIntermediateChunkIndices = "mamba_intermediate_chunk_indices", I64, Per(Intermediate), MambaPrefill, true,
        "intermediate-state chunk indices (appended)";
    MambaIntermediateAbsPositions = "mamba_intermediate_abs_positions", I32, Per(Intermediate), MambaPrefill, true,
        "intermediate-state absolute positions (appended)";
    MambaIntermediateRealCount = "mamba_intermediate_real_count", I32, Fixed(1), MambaPrefill, true,
        "real intermediate entries (appended)";
    MambaDeviceDecodePrefill = "mamba_device_decode_prefill", I32, Fixed(2), MambaMixed, true,
        "real decode and prefill token counts (appended)";
    FlashinferPagedKvIndptr = "flashinfer_paged_kv_indptr", I32, Cumulative(Request), FlashInfer, true,
        "FlashInfer CSR: cumulative KV pages per request, padding rows adding none (`flashinfer` format)";
    FlashinferPagedKvIndices = "flashinfer_paged_kv_indices", I32, Pages, FlashInfer, true,
        "FlashInfer CSR: every request's KV pages, row after row (`flashinfer` format)";
    FlashinferPagedKvLastPageLen = "flashinfer_paged_kv_last_page_len", I32, Per(Request), FlashInfer, true,
        "FlashInfer: tokens in each request's last page, 1 for padding rows (`flashinfer` format)";
    VllmSlotMapping = "vllm_slot_mapping", I64, Per(Token), Vllm, true,
        "vLLM: KV-cache slot `block · B + offset` per token, -1 for padding tokens (`vllm` format)";
    VllmStateIndicesDecode = "vllm_state_indices_decode", I32, Per(DecodeRequest), VllmMambaDecode, true,
        "vLLM: Mamba state slot per decode row, the scratch slot `R` for padding rows (`vllm` format)";
    VllmStateIndicesPrefill = "vllm_state_indices_prefill", I32, Per(PrefillRequest), VllmMambaPrefill, true,
        "vLLM: Mamba state slot per prefill row, the scratch slot `R` for padding rows (`vllm` format)";
    VllmHasInitialState = "vllm_has_initial_state", U8, Per(PrefillRequest), VllmMambaPrefill, true,
        "vLLM: 1 when a prefill row continues a sequence (`kv_offset > 0`), else 0 (`vllm` format)";
    VllmConvBatchPtr = "vllm_conv_batch_ptr", I32, Per(ConvProgram), VllmMambaPrefill, true,
        "vLLM causal-conv1d program map: prefill sequence of each program, -1 for padding (`vllm` format)";
    VllmConvTokenChunkOffset = "vllm_conv_token_chunk_offset", I32, Per(ConvProgram), VllmMambaPrefill, true,
        "vLLM causal-conv1d program map: 8-token chunk of each program in its sequence, -1 for padding (`vllm` format)";
}

/// A name a kernel format gives to one of Megatron's fields, which it reads as is (no
/// bytes of its own): `(format, the format's name, the field)`. Docs and `inspect` list
/// them; docs/CONSUMER-CONTRACT.md says why each is the same array.
pub const ALIASES: &[(Format, &str, Field)] = &[
    (Format::FlashInfer, "qo_indptr", Field::MhaCuQuerySeqLengths),
    (Format::Vllm, "query_start_loc", Field::MhaCuQuerySeqLengths),
    (Format::Vllm, "seqused_k", Field::MhaKvSeqLengths),
    (Format::Vllm, "block_table", Field::MhaBlockTable),
    (Format::Vllm, "query_start_loc_p", Field::MambaCuSeqlens),
];

/// Number of [`Field`] variants.
pub const FIELD_COUNT: usize = Field::ALL.len();

impl Field {
    /// The field's name (Megatron's name, with the `mha_` / `mamba_` prefixes of
    /// docs/SEMANTICS.md §9).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Position in [`Field::ALL`] (buffer order).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the field exists only in layouts with Mamba layers.
    pub const fn is_mamba(self) -> bool {
        matches!(
            self.info().presence,
            Presence::MambaDecode
                | Presence::MambaPrefill
                | Presence::MambaMixed
                | Presence::VllmMambaDecode
                | Presence::VllmMambaPrefill
        )
    }

    /// Whether a layout with these facts has the field (its model and its formats).
    pub const fn exists(self, f: &Facts) -> bool {
        self.info().presence.exists(f)
    }

    /// Whether the field is one this project appends after Megatron's layout.
    pub const fn is_appended(self) -> bool {
        self.info().appended
    }

    /// The field's element type in a layout with these facts.
    pub const fn dtype(self, f: &Facts) -> Dtype {
        self.info().dtype.resolve(f)
    }

    /// The field's capacity in elements in a layout with these facts (0 for a field the
    /// layout lacks: a Mamba field without Mamba, a format's field without the format).
    pub const fn capacity(self, f: &Facts) -> usize {
        if !self.exists(f) {
            0
        } else {
            self.info().extent.capacity(f)
        }
    }

    /// Whether the field is part of a step at `d`.
    pub const fn present(self, d: &LiveDims, f: &Facts) -> bool {
        self.info().presence.present(d, f)
    }

    /// The elements the kernels read at a step's lengths `d`: 0 when the field is absent,
    /// never more than the capacity.
    pub const fn live_elems(self, d: &LiveDims, f: &Facts) -> usize {
        if !self.present(d, f) {
            return 0;
        }
        let live = self.info().extent.live(d, f.block_table_width);
        let cap = self.capacity(f);
        if live < cap { live } else { cap }
    }

    /// The constant naming the field (`TOKEN_TO_INPUT_IDS`; in C with an `AL_OFF_` /
    /// `AL_CAP_` / `AL_SIZE_` prefix).
    pub fn const_name(self) -> String {
        self.name().to_ascii_uppercase()
    }
}

/// The type of a fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactType {
    /// A count or size (`usize` in Rust, `al_u32` in C).
    Count,
    /// A block id (`i32`, `al_i32`).
    BlockId,
    /// A switch (`bool`).
    Flag,
}

/// One row of the facts table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactInfo {
    /// The field of [`Facts`] (`max_requests`).
    pub name: &'static str,
    /// The symbol in formulas and docs (`R`), or the name again.
    pub symbol: &'static str,
    /// The type.
    pub ty: FactType,
    /// What it is.
    pub doc: &'static str,
}

/// A fact's value, for emitters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactValue {
    /// A count.
    Count(usize),
    /// A block id.
    BlockId(i32),
    /// A switch.
    Flag(bool),
}

trait FactOf {
    const TY: FactType;
    fn value(self) -> FactValue;
}
impl FactOf for usize {
    const TY: FactType = FactType::Count;
    fn value(self) -> FactValue {
        FactValue::Count(self)
    }
}
impl FactOf for i32 {
    const TY: FactType = FactType::BlockId;
    fn value(self) -> FactValue {
        FactValue::BlockId(self)
    }
}
impl FactOf for bool {
    const TY: FactType = FactType::Flag;
    fn value(self) -> FactValue {
        FactValue::Flag(self)
    }
}

macro_rules! facts {
    ($( $variant:ident $name:ident: $ty:ty = $symbol:literal, $doc:literal; )*) => {
        /// Every number of a layout: capacities, derived sizes and switches. One
        /// `const`-constructible struct: [`Geometry`](crate::Geometry) holds one, generated
        /// code holds one as `Layout::FACTS`, the CUDA C facts header writes one per line.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct Facts {
            $( #[doc = $doc] pub $name: $ty, )*
        }

        /// A fact's name, for emitters that name facts in expressions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Fact {
            $( #[doc = $doc] $variant, )*
        }

        impl Fact {
            /// Every fact, in [`Facts`] order.
            pub const ALL: &'static [Fact] = &[$(Fact::$variant),*];

            /// The fact's row of the facts table.
            pub const fn info(self) -> FactInfo {
                match self {
                    $(Fact::$variant => FactInfo {
                        name: stringify!($name),
                        symbol: $symbol,
                        ty: <$ty as FactOf>::TY,
                        doc: $doc,
                    },)*
                }
            }
        }

        impl Facts {
            /// The value of a fact as a number (a flag is 0 or 1).
            #[allow(clippy::cast_sign_loss, trivial_numeric_casts, reason = "one cast for facts of every type; block ids are at least 0 in a valid layout")]
            pub const fn get(&self, fact: Fact) -> usize {
                match fact {
                    $(Fact::$variant => self.$name as usize,)*
                }
            }

            /// Every fact with its value, in [`Facts`] order.
            pub fn entries(&self) -> Vec<(Fact, FactValue)> {
                vec![$((Fact::$variant, FactOf::value(self.$name))),*]
            }
        }
    };
}

facts! {
    MaxRequests max_requests: usize = "R", "`R`: request rows per step, paused rows included.";
    MaxTokens max_tokens: usize = "T", "`T`: tokens per step.";
    MaxSeqLen max_seq_len: usize = "S", "`S`: the longest sequence.";
    BlockSize block_size: usize = "B", "`B`: tokens per KV block (a power of two).";
    SpeculativeTokens speculative_tokens: usize = "s", "`s`: speculative (draft) tokens per decode request.";
    TensorParallel tensor_parallel: usize = "tp", "`tp`: tensor-parallel size.";
    BlockTableWidth block_table_width: usize = "nkv", "`nkv = ceil(S / B) + (s > 0)`: block-table width.";
    KvPoolBlocks kv_pool_blocks: usize = "Pk", "KV pool size in blocks, the dummy block included.";
    DummyBlock dummy_block: i32 = "dummy", "The dummy block id, `kv_pool_blocks - 1`.";
    HasMamba has_mamba: bool = "has_mamba", "Whether the Mamba fields exist (`mamba` and `hybrid` models).";
    DecodeIndexI64 decode_index_i64: bool = "decode_index_i64", "Whether `mamba_batch_indices_decode` is i64 (else i32).";
    ChunkSize chunk_size: usize = "cs", "Mamba chunk size `cs` (0 without Mamba).";
    ConvWidth conv_width: usize = "d_conv", "Causal-conv1d width `d_conv` (0 without Mamba).";
    MaxChunks max_chunks: usize = "Cmax", "`Cmax = floor(T / cs) + R`: chunk slots (0 without Mamba).";
    MaxIntermediate max_intermediate: usize = "Kmax", "`Kmax = min(ceil(T / B), 3R)`: intermediate-state capacity (0 without Mamba).";
    FlashInfer flashinfer: bool = "flashinfer", "Whether the FlashInfer fields exist (`formats` names `flashinfer`).";
    Vllm vllm: bool = "vllm", "Whether the vLLM fields exist (`formats` names `vllm`).";
    MaxConvPrograms max_conv_programs: usize = "Pmax", "`Pmax = floor(T / 8) + R`: vLLM causal-conv1d programs (0 without Mamba or without the `vllm` format).";
    MambaPad mamba_pad: usize = "mamba_pad", "Alignment pad before the Mamba fields, in bytes.";
    MegatronBytes megatron_bytes: usize = "megatron_bytes", "Bytes of Megatron's fields (docs/SEMANTICS.md §9, the block-table guard included), before the appended and format fields.";
    TotalBytes total_bytes: usize = "total_bytes", "Bytes of the whole buffer.";
}

impl Fact {
    /// The symbol in formulas and docs (`R`, `nkv`).
    pub const fn symbol(self) -> &'static str {
        self.info().symbol
    }

    /// The fact's name in C (`AL_MAX_REQUESTS`).
    pub fn c_name(self) -> String {
        format!("AL_{}", self.info().name.to_ascii_uppercase())
    }
}

impl Facts {
    /// The main numbers in one line, for docs and reports: `R = 256 requests, T = 4096
    /// tokens, S = 8192, B = 64, s = 0 speculative tokens, tensor parallel 1`.
    pub fn headline(&self) -> String {
        format!(
            "{} request rows (R), {} tokens per step (T), longest sequence {} (S), KV block size {} (B), {} draft tokens per decode request (s), tensor parallel {} (tp)",
            self.max_requests,
            self.max_tokens,
            self.max_seq_len,
            self.block_size,
            self.speculative_tokens,
            self.tensor_parallel
        )
    }

    /// Whether two facts are the same (`==` in `const` code).
    pub const fn same(&self, o: &Facts) -> bool {
        let mut i = 0;
        while i < Fact::ALL.len() {
            // `i` is in range: the loop condition.
            #[allow(clippy::indexing_slicing, reason = "in range: the loop condition")]
            let f = Fact::ALL[i];
            if self.get(f) != o.get(f) {
                return false;
            }
            i += 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fact_is_read_by_get_and_listed_by_entries() {
        let f = Facts {
            max_requests: 1,
            max_tokens: 2,
            max_seq_len: 3,
            block_size: 4,
            speculative_tokens: 5,
            tensor_parallel: 6,
            block_table_width: 7,
            kv_pool_blocks: 8,
            dummy_block: 9,
            has_mamba: true,
            decode_index_i64: true,
            chunk_size: 12,
            conv_width: 13,
            max_chunks: 14,
            max_intermediate: 15,
            flashinfer: true,
            vllm: true,
            max_conv_programs: 18,
            mamba_pad: 19,
            megatron_bytes: 20,
            total_bytes: 21,
        };
        let entries = f.entries();
        assert_eq!(entries.len(), Fact::ALL.len());
        for (i, (fact, value)) in entries.iter().enumerate() {
            assert_eq!(*fact, Fact::ALL[i]);
            let want = match value {
                FactValue::Count(n) => *n,
                FactValue::BlockId(n) => *n as usize,
                FactValue::Flag(b) => usize::from(*b),
            };
            assert_eq!(f.get(*fact), want, "{fact:?}");
            // Distinct values: `get` reads each fact from its own field.
            if !matches!(value, FactValue::Flag(_)) {
                assert_eq!(want, i + 1, "{fact:?}");
            }
        }
        assert!(f.same(&f));
        assert!(!f.same(&Facts { mamba_pad: 0, ..f }));
    }
}
