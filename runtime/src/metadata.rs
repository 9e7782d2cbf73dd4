//! Host metadata: one coalesced buffer, the fill that writes it, and typed read-only
//! views of exactly what the kernels see after a step.

use attention_layout_codegen::{Facts, Field, LiveDims};

use crate::agree::AgreedShape;
use crate::dims::Dims;
use crate::error::StepError;
use crate::fill::{self, FillState, StepInfo};
use crate::step::StepInput;

/// A layout's metadata on the host: the buffer, the fill state and the last step's info.
///
/// `fill` either succeeds and replaces the metadata, or fails and leaves it untouched.
#[derive(Debug, Clone)]
pub struct HostMetadata<D: Dims> {
    dims: D,
    /// The buffer, as u64 words so every field is aligned.
    words: Vec<u64>,
    state: FillState,
    info: StepInfo,
}

impl<D: Dims> HostMetadata<D> {
    /// Allocates and initializes the buffer for `dims` (the only allocation).
    pub fn new(dims: D) -> Self {
        let words = vec![0u64; dims.total_bytes().div_ceil(8)];
        let mut me = Self {
            state: FillState::new(&dims),
            dims,
            words,
            info: StepInfo::default(),
        };
        me.reset();
        me
    }

    /// Back to the freshly built state, whatever was filled before: the buffer zeroed with
    /// the block table all dummy block, the fill's block-table tracking and slot scratch
    /// cleared, the step info the default one. The next step's metadata is then exactly
    /// what a new `HostMetadata` would build. Allocates nothing.
    pub fn reset(&mut self) {
        self.words.fill(0);
        // The buffer was allocated with the layout's size: carving cannot fail.
        let _ = fill::init_buffer(&self.dims, bytemuck::cast_slice_mut(&mut self.words));
        self.state.reset();
        self.info = StepInfo::default();
    }

    /// The layout's dims.
    pub fn dims(&self) -> &D {
        &self.dims
    }

    /// Builds the metadata of one step. On error nothing changes.
    pub fn fill(&mut self, input: &StepInput<'_>) -> Result<&StepInfo, StepError> {
        let mut plan = fill::plan_step(&self.dims, input, &mut self.state)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        self.info = fill::write_step(&mut plan, bytes)?;
        Ok(&self.info)
    }

    /// Builds the metadata of one step writing only what changed since the last one, as
    /// far as the step's residency says ([`fill::plan_step_resident`]); a step without
    /// usable residency is filled in full. The bytes equal [`fill`](Self::fill)'s while
    /// the residency keeps its contract. On error nothing changes.
    pub fn fill_resident(&mut self, input: &StepInput<'_>) -> Result<&StepInfo, StepError> {
        let mut plan = fill::plan_step_resident(&self.dims, input, &mut self.state)?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        self.info = fill::write_step(&mut plan, bytes)?;
        Ok(&self.info)
    }

    /// Forgets which request each block-table row holds: the next
    /// [`fill_resident`](Self::fill_resident) copies every row (for an engine whose
    /// residency view starts over).
    pub fn forget_residency(&mut self) {
        self.state.forget_residency();
    }

    /// Builds the metadata of one step of an expert-parallel rank: the padded shape is the
    /// one the group agreed ([`fill::plan_step_agreed`]). On error nothing changes.
    pub fn fill_agreed(
        &mut self,
        input: &StepInput<'_>,
        agreed: &AgreedShape,
    ) -> Result<&StepInfo, StepError> {
        let mut plan = fill::plan_step_agreed(
            &self.dims,
            input,
            &mut self.state,
            fill::BlockCheck::Full,
            agreed,
        )?;
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        self.info = fill::write_step(&mut plan, bytes)?;
        Ok(&self.info)
    }

    /// The last step's info.
    pub fn info(&self) -> &StepInfo {
        &self.info
    }

    /// The whole buffer (what one host-to-device copy moves).
    pub fn bytes(&self) -> &[u8] {
        let b: &[u8] = bytemuck::cast_slice(&self.words);
        b.get(..self.dims.total_bytes()).unwrap_or(b)
    }

    /// Typed views of the last step's metadata.
    pub fn view(&self) -> MetadataView<'_> {
        MetadataView {
            bytes: self.bytes(),
            info: &self.info,
            offsets: FieldOffsets::of(&self.dims),
        }
    }
}

/// Offsets and facts, copied out of a [`Dims`] for a view.
#[derive(Debug, Clone, Copy)]
struct FieldOffsets {
    offsets: [usize; attention_layout_codegen::FIELD_COUNT],
    facts: Facts,
    /// `B`, at least 1 (a divisor).
    block_size: usize,
}

impl FieldOffsets {
    fn of<D: Dims>(d: &D) -> Self {
        let mut offsets = [0; attention_layout_codegen::FIELD_COUNT];
        for (o, f) in offsets.iter_mut().zip(Field::ALL) {
            *o = d.field_offset(*f);
        }
        Self {
            offsets,
            facts: *d.facts(),
            block_size: d.block_size().max(1),
        }
    }
}

/// Read-only views of one step's metadata, with exactly the lengths the kernels see.
/// Mamba fields are `None` when absent this step (docs/SEMANTICS.md §6 presence rules).
#[derive(Debug, Clone, Copy)]
pub struct MetadataView<'a> {
    bytes: &'a [u8],
    info: &'a StepInfo,
    offsets: FieldOffsets,
}

/// `mamba_batch_indices_decode` in the layout's index type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeIndices<'a> {
    /// i32 indices.
    I32(&'a [i32]),
    /// i64 indices.
    I64(&'a [i64]),
}

impl DecodeIndices<'_> {
    /// The indices widened to i64.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            Self::I32(x) => x.iter().map(|&v| i64::from(v)).collect(),
            Self::I64(x) => x.to_vec(),
        }
    }
}

/// The first difference between two steps' metadata (see [`MetadataView::first_difference`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The field (`None`: the step info differs).
    pub field: Option<Field>,
    /// Element index of the first differing element (0 for info or length differences).
    pub index: usize,
    /// The value on the left (expected) side.
    pub expected: String,
    /// The value on the right side.
    pub got: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(field) => write!(
                f,
                "{}[{}]: expected {}, got {}",
                field.name(),
                self.index,
                self.expected,
                self.got
            ),
            None => write!(f, "step info: expected {}, got {}", self.expected, self.got),
        }
    }
}

impl<'a> MetadataView<'a> {
    /// A view of a buffer filled elsewhere (for example a device buffer copied back to the
    /// host): `bytes` is the layout's whole buffer, `info` the step that filled it.
    pub fn from_parts<D: Dims>(dims: &D, bytes: &'a [u8], info: &'a StepInfo) -> Self {
        Self {
            bytes,
            info,
            offsets: FieldOffsets::of(dims),
        }
    }

    /// The live bytes of one field: exactly the elements the kernels see this step
    /// (padding included), or `None` when the field is absent this step or in this layout.
    pub fn live_bytes(&self, f: Field) -> Option<&'a [u8]> {
        self.field::<u8>(f, f.dtype(&self.offsets.facts).size())
    }

    /// The first difference from `other`: the step info, then every field's live bytes
    /// in buffer order. `None` when the two steps' metadata is identical.
    pub fn first_difference(&self, other: &MetadataView<'_>) -> Option<Difference> {
        self.first_difference_with(other, false)
    }

    /// [`first_difference`](Self::first_difference), optionally leaving out the real
    /// entries of `token_to_input_ids`: after a step without token ids the engine owns
    /// them (it writes sampled ids on the device), so their contents are the engine's
    /// history, which a backend with its own buffers need not share.
    pub fn first_difference_with(
        &self,
        other: &MetadataView<'_>,
        engine_token_ids: bool,
    ) -> Option<Difference> {
        if self.info != other.info {
            return Some(Difference {
                field: None,
                index: 0,
                expected: format!("{:?}", self.info),
                got: format!("{:?}", other.info),
            });
        }
        for &f in Field::ALL {
            let (mut a, mut b) = (self.live_bytes(f), other.live_bytes(f));
            let skip = if engine_token_ids && f == Field::TokenToInputIds {
                self.info.real.tokens as usize * 8
            } else {
                0
            };
            if skip > 0 {
                a = a.map(|x| x.get(skip..).unwrap_or(&[]));
                b = b.map(|x| x.get(skip..).unwrap_or(&[]));
            }
            if a == b {
                continue;
            }
            let size = f.dtype(&self.offsets.facts).size();
            let (a, b) = (a.unwrap_or(&[]), b.unwrap_or(&[]));
            if a.len() != b.len() {
                return Some(Difference {
                    field: Some(f),
                    index: 0,
                    expected: format!("{} elements", a.len() / size),
                    got: format!("{} elements", b.len() / size),
                });
            }
            let i = a
                .chunks(size)
                .zip(b.chunks(size))
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            let value = |x: &[u8]| -> String {
                let x = x.get(i * size..(i + 1) * size).unwrap_or(&[]);
                match (size, f) {
                    (1, _) => x.first().map_or_else(|| "?".to_owned(), u8::to_string),
                    (8, _) => bytemuck::try_pod_read_unaligned::<i64>(x)
                        .map_or_else(|_| "?".to_owned(), |v| v.to_string()),
                    (_, Field::Temperature | Field::TopP) => {
                        bytemuck::try_pod_read_unaligned::<f32>(x)
                            .map_or_else(|_| "?".to_owned(), |v| format!("{v:?}"))
                    }
                    _ => bytemuck::try_pod_read_unaligned::<i32>(x)
                        .map_or_else(|_| "?".to_owned(), |v| v.to_string()),
                }
            };
            return Some(Difference {
                field: Some(f),
                index: i + skip / size,
                expected: value(a),
                got: value(b),
            });
        }
        None
    }

    /// The step's lengths, in the field table's terms.
    fn live(&self) -> LiveDims {
        LiveDims {
            tokens: self.info.padded.tokens as usize,
            decode: self.info.padded.decode as usize,
            prefill: self.info.padded.prefill as usize,
            chunks: self.info.mamba_chunks as usize,
            intermediate: self.info.intermediate_len as usize,
            pages: self.info.kv_pages as usize,
        }
    }

    /// Field `f` as `T`s, `per` of them per element, when it is part of this step: its
    /// live length from the field table (`Field::live_elems`).
    fn field<T: bytemuck::Pod>(&self, f: Field, per: usize) -> Option<&'a [T]> {
        let facts = &self.offsets.facts;
        let live = self.live();
        f.present(&live, facts).then(|| {
            let off = self.offsets.offsets.get(f.index()).copied().unwrap_or(0);
            let len = f.live_elems(&live, facts) * per * std::mem::size_of::<T>();
            self.bytes
                .get(off..off + len)
                .and_then(|b| bytemuck::try_cast_slice(b).ok())
                .unwrap_or(&[])
        })
    }

    /// A field every step has, at its live length.
    fn slice<T: bytemuck::Pod>(&self, f: Field) -> &'a [T] {
        self.field(f, 1).unwrap_or(&[])
    }

    /// The step's info.
    pub fn info(&self) -> &'a StepInfo {
        self.info
    }
    fn n(&self) -> usize {
        (self.info.real.prefill + self.info.real.decode) as usize
    }

    /// `token_to_input_ids[Tp]`.
    pub fn token_to_input_ids(&self) -> &'a [i64] {
        self.slice(Field::TokenToInputIds)
    }
    /// `token_to_pos_ids[Tp]` (padding: 0 here, stale in Megatron).
    pub fn token_to_pos_ids(&self) -> &'a [i64] {
        self.slice(Field::TokenToPosIds)
    }
    /// `token_to_block_idx[Tp]`.
    pub fn token_to_block_idx(&self) -> &'a [i64] {
        self.slice(Field::TokenToBlockIdx)
    }
    /// `token_to_local_position_within_kv_block[Tp]`.
    pub fn token_to_local_position_within_kv_block(&self) -> &'a [i32] {
        self.slice(Field::TokenToLocalPositionWithinKvBlock)
    }
    /// `token_to_request_idx[Tp]` (padding: 0 here, stale in Megatron).
    pub fn token_to_request_idx(&self) -> &'a [i32] {
        self.slice(Field::TokenToRequestIdx)
    }
    /// `token_to_position_in_request[Tp]`.
    pub fn token_to_position_in_request(&self) -> &'a [i32] {
        self.slice(Field::TokenToPositionInRequest)
    }
    /// `request_in_prefill_status[Np]`.
    pub fn request_in_prefill_status(&self) -> &'a [i32] {
        self.slice(Field::RequestInPrefillStatus)
    }
    /// `request_query_lengths[Np]`.
    pub fn request_query_lengths(&self) -> &'a [i32] {
        self.slice(Field::RequestQueryLengths)
    }
    /// `request_kv_length_offsets[Np]`.
    pub fn request_kv_length_offsets(&self) -> &'a [i32] {
        self.slice(Field::RequestKvLengthOffsets)
    }
    /// `temperature[Np]`.
    pub fn temperature(&self) -> &'a [f32] {
        self.slice(Field::Temperature)
    }
    /// `top_k[Np]`.
    pub fn top_k(&self) -> &'a [i32] {
        self.slice(Field::TopK)
    }
    /// `top_p[Np]`.
    pub fn top_p(&self) -> &'a [f32] {
        self.slice(Field::TopP)
    }
    /// `active_request_last_token_idxs[Np]`.
    pub fn active_request_last_token_idxs(&self) -> &'a [i32] {
        self.slice(Field::ActiveRequestLastTokenIdxs)
    }
    /// `real_token_count`.
    pub fn real_token_count(&self) -> i32 {
        self.slice::<i32>(Field::RealTokenCount)
            .first()
            .copied()
            .unwrap_or(0)
    }
    /// `query_lengths[Np]`.
    pub fn query_lengths(&self) -> &'a [i32] {
        self.slice(Field::MhaQueryLengths)
    }
    /// `cu_query_seq_lengths[Np+1]`.
    pub fn cu_query_seq_lengths(&self) -> &'a [i32] {
        self.slice(Field::MhaCuQuerySeqLengths)
    }
    /// `kv_seq_lengths[Np]`.
    pub fn kv_seq_lengths(&self) -> &'a [i32] {
        self.slice(Field::MhaKvSeqLengths)
    }
    /// `cu_kv_seq_lengths[Np+1]`.
    pub fn cu_kv_seq_lengths(&self) -> &'a [i32] {
        self.slice(Field::MhaCuKvSeqLengths)
    }
    /// `block_table[Np, nkv]`, row-major.
    pub fn block_table(&self) -> &'a [i32] {
        self.slice(Field::MhaBlockTable)
    }
    /// Block-table width `nkv`.
    pub fn block_table_width(&self) -> usize {
        self.offsets.facts.block_table_width
    }

    /// The last KV position of active row `a` (`kv_offset + q − 1`), from its
    /// `kv_seq_lengths` entry; `None` for a padded or missing row.
    fn last_position(&self, a: usize) -> Option<usize> {
        if a >= self.n() {
            return None;
        }
        let len = *self.kv_seq_lengths().get(a)?;
        usize::try_from(len).ok()?.checked_sub(1)
    }

    /// Megatron's `request_kv_block_counts` of active row `a` (`0 ≤ a < N`, step order):
    /// the KV blocks covering its positions `0 .. kv_offset + q`, i.e.
    /// `ceil((kv_offset + q) / B)`. `None` for a padded row. (A row given more blocks than
    /// its positions need counts only those.)
    pub fn kv_block_count(&self, a: usize) -> Option<u32> {
        let last = self.last_position(a)?;
        u32::try_from(last / self.offsets.block_size + 1).ok()
    }

    /// Megatron's `request_last_kv_block_offset` of active row `a`: where in its block the
    /// step's last token lands, `(kv_offset + q − 1) mod B`. `None` for a padded row.
    pub fn last_kv_block_offset(&self, a: usize) -> Option<u32> {
        let last = self.last_position(a)?;
        u32::try_from(last % self.offsets.block_size).ok()
    }

    /// Megatron's `request_last_kv_block_id` of active row `a`: the block the step's last
    /// token lands in (entry `kv_block_count − 1` of its block-table row). `None` for a
    /// padded row.
    pub fn last_kv_block_id(&self, a: usize) -> Option<i32> {
        let last = self.last_position(a)?;
        let j = last / self.offsets.block_size;
        if j >= self.offsets.facts.block_table_width {
            return None;
        }
        self.block_table()
            .get(a * self.offsets.facts.block_table_width + j)
            .copied()
    }
    /// `max_seqlen_q`.
    pub fn max_seqlen_q(&self) -> u32 {
        self.info.max_seqlen_q
    }
    /// `max_seqlen_k`.
    pub fn max_seqlen_k(&self) -> u32 {
        self.info.max_seqlen_k
    }

    /// `batch_indices_decode[Dp]`, present when `Dp > 0`.
    pub fn mamba_batch_indices_decode(&self) -> Option<DecodeIndices<'a>> {
        let f = Field::MambaBatchIndicesDecode;
        if self.offsets.facts.decode_index_i64 {
            self.field(f, 1).map(DecodeIndices::I64)
        } else {
            self.field(f, 1).map(DecodeIndices::I32)
        }
    }
    /// `batch_indices_prefill[Fp]`.
    pub fn mamba_batch_indices_prefill(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaBatchIndicesPrefill, 1)
    }
    /// `seq_idx[1, Tp]`.
    pub fn mamba_seq_idx(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaSeqIdx, 1)
    }
    /// `cu_seqlens[Fp+1]`.
    pub fn mamba_cu_seqlens(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaCuSeqlens, 1)
    }
    /// `cu_chunk_seqlens[C+1]`.
    pub fn mamba_cu_chunk_seqlens(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaCuChunkSeqlens, 1)
    }
    /// `last_chunk_indices[Fp]`.
    pub fn mamba_last_chunk_indices(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaLastChunkIndices, 1)
    }
    /// `seq_idx_for_varlen[C]`.
    pub fn mamba_seq_idx_for_varlen(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaSeqIdxForVarlen, 1)
    }
    /// `conv_seq_idx[Tp]`.
    pub fn mamba_conv_seq_idx(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaConvSeqIdx, 1)
    }
    /// `conv_seq_start[Tp]`.
    pub fn mamba_conv_seq_start(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaConvSeqStart, 1)
    }
    /// `device_decode_prefill[2]`, present when `Dp > 0` and `Fp > 0`.
    pub fn mamba_device_decode_prefill(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaDeviceDecodePrefill, 1)
    }
    /// `intermediate_chunk_indices[K]`.
    pub fn mamba_intermediate_chunk_indices(&self) -> Option<&'a [i64]> {
        self.field(Field::MambaIntermediateChunkIndices, 1)
    }
    /// `intermediate_abs_positions[K]`.
    pub fn mamba_intermediate_abs_positions(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaIntermediateAbsPositions, 1)
    }
    /// `intermediate_real_count[1]`.
    pub fn mamba_intermediate_real_count(&self) -> Option<&'a [i32]> {
        self.field(Field::MambaIntermediateRealCount, 1)
    }
    /// FlashInfer's `paged_kv_indptr[Np+1]` (`formats` names `flashinfer`).
    pub fn flashinfer_paged_kv_indptr(&self) -> Option<&'a [i32]> {
        self.field(Field::FlashinferPagedKvIndptr, 1)
    }
    /// FlashInfer's `paged_kv_indices[pages]`: the step's pages, row after row.
    pub fn flashinfer_paged_kv_indices(&self) -> Option<&'a [i32]> {
        self.field(Field::FlashinferPagedKvIndices, 1)
    }
    /// FlashInfer's `paged_kv_last_page_len[Np]`.
    pub fn flashinfer_paged_kv_last_page_len(&self) -> Option<&'a [i32]> {
        self.field(Field::FlashinferPagedKvLastPageLen, 1)
    }
    /// vLLM's `slot_mapping[Tp]` (`formats` names `vllm`).
    pub fn vllm_slot_mapping(&self) -> Option<&'a [i64]> {
        self.field(Field::VllmSlotMapping, 1)
    }
    /// vLLM's decode state indices `[Dp]` (Mamba layouts, `Dp > 0`).
    pub fn vllm_state_indices_decode(&self) -> Option<&'a [i32]> {
        self.field(Field::VllmStateIndicesDecode, 1)
    }
    /// vLLM's prefill state indices `[Fp]` (Mamba layouts, `Fp > 0`).
    pub fn vllm_state_indices_prefill(&self) -> Option<&'a [i32]> {
        self.field(Field::VllmStateIndicesPrefill, 1)
    }
    /// vLLM's `has_initial_state[Fp]`, one byte per prefill row.
    pub fn vllm_has_initial_state(&self) -> Option<&'a [u8]> {
        self.field(Field::VllmHasInitialState, 1)
    }
    /// vLLM's causal-conv1d `batch_ptr[floor(Tp / 8) + Fp]`.
    pub fn vllm_conv_batch_ptr(&self) -> Option<&'a [i32]> {
        self.field(Field::VllmConvBatchPtr, 1)
    }
    /// vLLM's causal-conv1d `token_chunk_offset_ptr[floor(Tp / 8) + Fp]`.
    pub fn vllm_conv_token_chunk_offset(&self) -> Option<&'a [i32]> {
        self.field(Field::VllmConvTokenChunkOffset, 1)
    }
    /// Real active requests `N`.
    pub fn active_requests(&self) -> usize {
        self.n()
    }
}
