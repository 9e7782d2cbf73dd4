// ---- Staging records (the one host-to-device copy of a step) ---------------------
// Written by the host (attention_layout::devfill), read here. The header (`AlHeader`)
// and every number of the format (AL_ABI_VERSION, record sizes, flags, source kinds)
// come before this file, emitted from `emit_cuda::abi`; the records are checked against
// them.

// One active request. `src` says where its block-table row is read from: the top bits
// (from AL_SRC_SHIFT) are the kind (AL_SRC_META / _RESIDENT / _UPLOAD / _NONE), the low
// bits (AL_SRC_INDEX_MASK) an index. Records (and edits, tails) are 16-byte aligned
// wherever they are (the image's sections, the head, the resident allocation), so each
// is one 16-byte load.
struct __align__(16) AlRequest { al_u32 q; al_u32 kv; al_u32 src; al_i32 slot; };
static_assert(sizeof(AlRequest) == AL_REQUEST_BYTES, "request record");

// Sampling parameters as raw bits (the kernels copy them; no float arithmetic).
struct AlSampling { al_u32 temperature_bits; al_i32 top_k; al_u32 top_p_bits; };
static_assert(sizeof(AlSampling) == AL_SAMPLING_BYTES, "sampling record");

// Intermediate offsets of one real prefill request: first entry index | count <<
// AL_INTER_COUNT_SHIFT, then the offsets.
struct AlInter { al_u32 base_count; al_u32 offsets[AL_INTER_OFFSETS]; };
static_assert(sizeof(AlInter) == AL_INTER_BYTES, "intermediate record");

// Edit of a delta step (AL_FLAG_DELTA): active row `row` takes this record and sampling
// instead of advancing the device's record of the step before.
struct __align__(16) AlEdit { al_u32 row; al_u32 q; al_u32 kv; al_u32 src; al_i32 slot; al_u32 temperature_bits; al_i32 top_k; al_u32 top_p_bits; };
static_assert(sizeof(AlEdit) == AL_EDIT_BYTES, "edit record");

struct __align__(8) AlWrite { al_u32 index; al_i32 value; };
static_assert(sizeof(AlWrite) == AL_WRITE_BYTES, "patch / change");

// Rewrite block-table row `row` over [0, width): entries [0, len) from `src` (-1 becomes
// the dummy block), the rest dummy. `writeback` != AL_NO_ROW also stores the raw ids of
// [0, len) into that resident row.
struct AlJob { al_u32 row; al_u32 len; al_u32 width; al_u32 src; al_u32 writeback; };
static_assert(sizeof(AlJob) == AL_JOB_BYTES, "job");

// The device's resident allocation (offsets emitted before this file): the resident block
// table (R x nkv ids), the request table (one AlRequest per active row of the last step:
// what delta steps advance), and the rows' tails.
//
// A row's tail: what the last fill wrote of the row's block-table row in the metadata.
// `at` = 1 + j (0: nothing known): entry j holds `id`, and entry j + 1 holds `next` when
// `has_next`. Every fill writes the tail of every active row (j: the block of the row's
// last token); a delta step's rows in place take their tokens' blocks from it, updated by
// the step's patches, instead of gathering them from the block table after the scan. The
// allocation starts zeroed: nothing known.
struct __align__(16) AlTail { al_u32 at; al_i32 id; al_i32 next; al_u32 has_next; };
static_assert(sizeof(AlTail) == AL_TAIL_BYTES, "tail");

// ---- Launch shape ----------------------------------------------------------------
constexpr al_u32 AL_WARPS = AL_THREADS / 32u;
static_assert(AL_THREADS % 32u == 0u && AL_WARPS >= 1u && AL_WARPS <= 32u, "whole warps, at most 32");
// Requests (and prefill sequences) per thread in the block-wide scans.
constexpr al_u32 AL_PER_THREAD = (AL_MAX_REQUESTS + AL_THREADS - 1u) / AL_THREADS;
// The image's head (AL_HEAD_BYTES, from emit_cuda::abi): every block loads it into shared
// memory in its first round trip (8 bytes per thread), beside block 0's rows of the request
// table.
constexpr al_u32 AL_HEAD_WORDS = AL_HEAD_BYTES / 8u;
static_assert(AL_HEAD_BYTES >= AL_HEADER_BYTES && AL_HEAD_BYTES % 16u == 0u, "the head holds the header, in whole 16-byte units");

// Static shared memory: s_cu_q (and s_chunk with Mamba) of R + 1 words, s_warp of two
// words per warp, the image's head; the limit is emitted from Rust
// (emit_cuda::STATIC_SHARED_LIMIT, checked there with emit_cuda::shared_bytes).
static_assert((AL_HAS_MAMBA ? 2u : 1u) * (AL_MAX_REQUESTS + 1u) * 4u + 2u * AL_WARPS * 4u + AL_HEAD_BYTES <= AL_STATIC_SHARED_LIMIT, "static shared memory fits the block's limit");

// Rows of at most this many tokens (decode rows: s + 1) have their tokens written by the
// thread that holds the row's record; longer rows one token per thread. At most B, so such
// a row's tokens span at most two block-table entries. (The host reads the same bound for
// AL_FLAG_KEPT_ROWS: abi::OWNED_TOKENS_MAX.)
constexpr al_u32 AL_OWNED_TOKENS = AL_BLOCK_SIZE < AL_OWNED_TOKENS_MAX ? AL_BLOCK_SIZE : AL_OWNED_TOKENS_MAX;
// Delta steps with at most this many edits: every thread reads them all, beside its own
// records; more go through a shared row map (two barriers).
constexpr al_u32 AL_EDITS_BROADCAST = 8u;
// Loops over a thread's own rows (or the broadcast edits) are unrolled: their records stay
// in registers. (The CPU build of the tests has no such pragma.)
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define AL_UNROLL _Pragma("unroll")
#define AL_NO_UNROLL _Pragma("unroll 1")
#else
#define AL_UNROLL
#define AL_NO_UNROLL
#endif

// log2(B): block positions are split with shifts (B is a power of two).
__host__ __device__ constexpr al_u32 al_log2(al_u32 x) { return x <= 1u ? 0u : 1u + al_log2(x >> 1); }
constexpr al_u32 AL_BLOCK_SHIFT = al_log2(AL_BLOCK_SIZE);
static_assert((1u << AL_BLOCK_SHIFT) == AL_BLOCK_SIZE, "B is a power of two");
// The chunk size as a divisor: layouts without Mamba have none (and run no Mamba code).
constexpr al_u32 AL_CHUNK = AL_CHUNK_SIZE > 0u ? AL_CHUNK_SIZE : 1u;

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

// Where section [off, off + bytes) of the image is read: from the head when it lies inside
// it, else from the staging.
__device__ __forceinline__ const al_u8* al_section(const al_u8* staging, const al_u8* head, al_u32 off, al_u64 bytes) {
  return (al_u64)off + bytes <= (al_u64)AL_HEAD_BYTES ? head + off : staging + off;
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
// Returns whether `any` was true on some thread of the block (the scan's one barrier
// carries the vote). The scan reads s_warp after its barrier: the caller passes another
// barrier before s_warp is written again (every caller has one before its next scan).
__device__ __forceinline__ bool al_block_scan2(al_u32& a, al_u32& b, al_u32& ta, al_u32& tb, al_u32* s_warp,
                                               bool any = false) {
  const al_u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
  al_u32 ia = a, ib = b;
  al_warp_scan2(ia, ib);
  if (lane == 31u) { s_warp[warp] = ia; s_warp[AL_WARPS + warp] = ib; }
  const bool voted = __syncthreads_or(any ? 1 : 0) != 0;
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
  return voted;
}

// ---- Blocks 1.. (or block 0 alone): resident table and row gathers -------------------
// The host guarantees, per launch: changes target resident rows that no job reads, and
// distinct elements; a job writes one block-table row that no patch touches and no token
// of block 0 reads (tokens of moved rows read the job's source, not the row). So these
// writes race with nothing.
__device__ __forceinline__ void al_worker(al_u8* meta, const al_u8* staging, const al_u8* head, al_i32* resident,
                                          const AlHeader& h, al_u32 worker, al_u32 workers) {
  const AlWrite* changes = reinterpret_cast<const AlWrite*>(al_section(staging, head, h.off_changes, (al_u64)h.n_changes * AL_WRITE_BYTES));
  for (al_u32 i = worker * AL_THREADS + threadIdx.x; i < h.n_changes; i += workers * AL_THREADS) {
    const AlWrite c = changes[i];
    resident[c.index] = c.value;
  }
  const AlJob* jobs = reinterpret_cast<const AlJob*>(al_section(staging, head, h.off_jobs, (al_u64)h.n_jobs * AL_JOB_BYTES));
  const al_i32* uploaded = reinterpret_cast<const al_i32*>(staging + h.off_blocks);
  al_i32* bt = al_field<al_i32>(meta, AL_OFF_MHA_BLOCK_TABLE);
  const al_u32 lane = threadIdx.x & 31u;
  // One warp per row: consecutive lanes, consecutive entries.
  for (al_u32 g = worker * AL_WARPS + (threadIdx.x >> 5); g < h.n_jobs; g += workers * AL_WARPS) {
    const AlJob job = jobs[g];
    al_i32* row = bt + job.row * AL_BLOCK_TABLE_WIDTH;
    const al_u32 index = job.src & AL_SRC_INDEX_MASK;
    const al_i32* from = (job.src >> AL_SRC_SHIFT) == AL_SRC_RESIDENT ? resident + index * AL_BLOCK_TABLE_WIDTH : uploaded + index;
    al_i32* back = job.writeback != AL_NO_ROW ? resident + job.writeback * AL_BLOCK_TABLE_WIDTH : nullptr;
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

// ---- Block 0: request, token and Mamba fields (docs/SEMANTICS.md sections 4-6) ------------------------
__device__ __forceinline__ void al_write_sampling(al_u8* meta, al_u32 a, al_u32 temperature_bits, al_i32 top_k, al_u32 top_p_bits) {
  al_field<al_u32>(meta, AL_OFF_TEMPERATURE)[a] = temperature_bits;
  al_field<al_i32>(meta, AL_OFF_TOP_K)[a] = top_k;
  al_field<al_u32>(meta, AL_OFF_TOP_P)[a] = top_p_bits;
}

// Row a's request fields (its sampling is written apart: from the staging in a full step,
// from its edit in a delta step, left as it is otherwise).
__device__ __forceinline__ void al_write_request(al_u8* meta, const AlHeader& h, al_u32 a, const AlRequest& r, al_u32 cu_q, al_u32 cu_kv) {
  al_field<al_i32>(meta, AL_OFF_REQUEST_IN_PREFILL_STATUS)[a] = a >= h.real_decode ? 1 : 0;
  al_field<al_u32>(meta, AL_OFF_REQUEST_QUERY_LENGTHS)[a] = r.q;
  al_field<al_u32>(meta, AL_OFF_REQUEST_KV_LENGTH_OFFSETS)[a] = r.kv;
  al_field<al_u32>(meta, AL_OFF_ACTIVE_REQUEST_LAST_TOKEN_IDXS)[a] = cu_q - 1u;
  al_field<al_u32>(meta, AL_OFF_MHA_QUERY_LENGTHS)[a] = r.q;
  al_field<al_u32>(meta, AL_OFF_MHA_KV_SEQ_LENGTHS)[a] = r.kv + r.q;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[a + 1u] = cu_q;
  al_field<al_u32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[a + 1u] = cu_kv;
}

// Entry j of active row a's block list as its source holds it (raw: -1 stays -1 for
// resident and uploaded rows; the metadata row holds mapped ids).
__device__ __forceinline__ al_i32 al_row_block(const al_i32* bt, const al_i32* resident, const al_i32* uploaded,
                                               const AlRequest& r, al_u32 a, al_u32 j) {
  const al_u32 index = r.src & AL_SRC_INDEX_MASK;
  switch (r.src >> AL_SRC_SHIFT) {
    case AL_SRC_META: return bt[a * AL_BLOCK_TABLE_WIDTH + j];
    case AL_SRC_RESIDENT: return resident[index * AL_BLOCK_TABLE_WIDTH + j];
    default: return uploaded[index + j];
  }
}

// The token arrays of token t (all but its input id): position `pos` in its request, KV
// block `block`, request index `request` (paused rows first); with vLLM's formats also its
// slot mapping (`real`: block * B + offset, else -1), written here from the same values
// rather than read back from these arrays after a barrier.
__device__ __forceinline__ void al_write_token(al_u8* meta, al_u32 t, al_u32 pos, al_i32 block, al_u32 request, bool real) {
  al_field<al_i64>(meta, AL_OFF_TOKEN_TO_POS_IDS)[t] = (al_i64)pos;
  al_field<al_i64>(meta, AL_OFF_TOKEN_TO_BLOCK_IDX)[t] = (al_i64)block;
  al_field<al_i32>(meta, AL_OFF_TOKEN_TO_LOCAL_POSITION_WITHIN_KV_BLOCK)[t] = (al_i32)(pos & (AL_BLOCK_SIZE - 1u));
  al_field<al_u32>(meta, AL_OFF_TOKEN_TO_REQUEST_IDX)[t] = request;
  al_field<al_u32>(meta, AL_OFF_TOKEN_TO_POSITION_IN_REQUEST)[t] = pos;
  if constexpr (AL_VLLM) {
    al_field<al_i64>(meta, AL_OFF_VLLM_SLOT_MAPPING)[t] =
        real ? (al_i64)block * (al_i64)AL_BLOCK_SIZE + (al_i64)(pos & (AL_BLOCK_SIZE - 1u)) : (al_i64)-1;
  }
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

// ---- Kernel formats (docs/CONSUMER-CONTRACT.md) -----------------------------------
// FlashInfer's paged-KV CSR arrays and vLLM's causal-conv1d program map, from this step's
// request records. Kept apart from the Megatron fill: al_fill_body calls it last, with
// every thread of block 0. (vLLM's slot mapping and state indices need no scan: the body
// writes them with the tokens and the rows' Mamba slots, from the values in registers.)

// Entry j < ceil(kv_len / B) of active request a's block list, as the block table holds it
// (-1 mapped to the dummy block), read from the row's source like the token loop does.
__device__ __forceinline__ al_i32 al_format_block(const al_i32* bt, const al_i32* resident, const al_i32* uploaded,
                                                  const AlRequest& r, al_u32 a, al_u32 j) {
  return al_map_block(al_row_block(bt, resident, uploaded, r, a, j));
}

// `req`: this step's request records (the device request table in a delta step, which the
// body has written by now; the staging otherwise). `s_scratch` (R + 1 entries) and `s_warp`
// are the body's shared arrays, free by now. The header's values come as arguments: the
// body read it once (`n` active rows, `dr` / `fr` attention decode / prefill rows).
__device__ __noinline__ void al_fill_formats(al_u8* meta, const al_i32* uploaded, const al_i32* resident, const AlRequest* req,
                                             al_u32* s_scratch, al_u32* s_warp, al_u32 padded_tokens, al_u32 fp, al_u32 dp,
                                             al_u32 n, al_u32 dr, al_u32 fr) {
  const al_u32 tid = threadIdx.x, first = tid * AL_PER_THREAD, np = fp + dp;
  // Each name is read by one format or both.
  (void)req; (void)first; (void)n; (void)np; (void)resident; (void)uploaded; (void)s_scratch; (void)s_warp;
  (void)dr; (void)fr;
  __syncthreads();  // every Megatron field written; s_scratch and s_warp free

  if constexpr (AL_FLASHINFER) {
    const al_i32* bt = al_field<al_i32>(meta, AL_OFF_MHA_BLOCK_TABLE);
    al_u32* indptr = al_field<al_u32>(meta, AL_OFF_FLASHINFER_PAGED_KV_INDPTR);
    al_i32* indices = al_field<al_i32>(meta, AL_OFF_FLASHINFER_PAGED_KV_INDICES);
    al_u32* last = al_field<al_u32>(meta, AL_OFF_FLASHINFER_PAGED_KV_LAST_PAGE_LEN);
    // Pages per request, ceil(kv_len / B), scanned into each row's first page.
    al_u32 pre = 0u, unused = 0u;
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      const al_u32 a = first + i;
      if (a < n) { const AlRequest r = req[a]; pre += (r.kv + r.q + AL_BLOCK_SIZE - 1u) >> AL_BLOCK_SHIFT; }
    }
    al_u32 total, unused_total;
    al_block_scan2(pre, unused, total, unused_total, s_warp);
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      const al_u32 a = first + i;
      if (a < n) {
        const AlRequest r = req[a];
        const al_u32 kv_len = r.kv + r.q, pages = (kv_len + AL_BLOCK_SIZE - 1u) >> AL_BLOCK_SHIFT;
        s_scratch[a] = pre;
        pre += pages;
        indptr[a + 1u] = pre;
        last[a] = kv_len - ((pages - 1u) << AL_BLOCK_SHIFT);
      }
    }
    if (tid == 0u) indptr[0] = 0u;
    // Padding rows: no pages, and a last-page length of 1 (FlashInfer reads 0 as full).
    for (al_u32 a = n + tid; a < np; a += AL_THREADS) { indptr[a + 1u] = total; last[a] = 1u; }
    __syncthreads();  // s_scratch: every row's first page
    // One warp per row: consecutive lanes, consecutive pages.
    const al_u32 lane = tid & 31u;
    for (al_u32 a = tid >> 5; a < n; a += AL_WARPS) {
      const AlRequest r = req[a];
      const al_u32 pages = (r.kv + r.q + AL_BLOCK_SIZE - 1u) >> AL_BLOCK_SHIFT, at = s_scratch[a];
      for (al_u32 j = lane; j < pages; j += 32u) indices[at + j] = al_format_block(bt, resident, uploaded, r, a, j);
    }
    __syncthreads();  // s_scratch is reused below
  }

  if constexpr (AL_VLLM) {
    // The slot mapping and the state indices were written with the tokens and the rows.
    if constexpr (AL_HAS_MAMBA) {
      if (fp > 0u) {
        // Causal-conv1d programs: ceil(q / AL_VLLM_CONV_BLOCK) per real prefill sequence,
        // scanned into each sequence's first program; the rest are padding (-1).
        al_u32 pre = 0u, unused = 0u;
        for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
          const al_u32 f = first + i;
          if (f < fr) pre += (req[dr + f].q + AL_VLLM_CONV_BLOCK - 1u) / AL_VLLM_CONV_BLOCK;
        }
        al_u32 total, unused_total;
        al_block_scan2(pre, unused, total, unused_total, s_warp);
        for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
          const al_u32 f = first + i;
          if (f < fr) { s_scratch[f] = pre; pre += (req[dr + f].q + AL_VLLM_CONV_BLOCK - 1u) / AL_VLLM_CONV_BLOCK; }
        }
        if (tid == 0u) s_scratch[fr] = total;
        __syncthreads();  // s_scratch: every sequence's first program
        al_i32* batch = al_field<al_i32>(meta, AL_OFF_VLLM_CONV_BATCH_PTR);
        al_i32* chunk = al_field<al_i32>(meta, AL_OFF_VLLM_CONV_TOKEN_CHUNK_OFFSET);
        const al_u32 programs = padded_tokens / AL_VLLM_CONV_BLOCK + fp;
        for (al_u32 k = tid; k < programs; k += AL_THREADS) {
          if (k < total) {
            const al_u32 f = al_search(s_scratch, fr, k);
            batch[k] = (al_i32)f;
            chunk[k] = (al_i32)(k - s_scratch[f]);
          } else {
            batch[k] = -1;
            chunk[k] = -1;
          }
        }
      }
    }
  }
}

// Whether a delta step's patches lie in the head (a steady step's few).
__device__ __forceinline__ bool al_patches_in_head(const AlHeader& h) {
  return (al_u64)h.off_patches + (al_u64)h.n_patches * AL_WRITE_BYTES <= (al_u64)AL_HEAD_BYTES;
}

// The rows' part of the fill (after the head's barrier; block 0 only), instantiated twice:
// KEPT for a steady step with kept rows (AL_FLAG_KEPT_ROWS, checked by al_fill_body), whose
// instantiation is only the code such a step runs, laid out in one piece; and the general
// one for every other step. Inline: the thread's records stay in registers. The shared
// arrays come from the body (an array declared here would exist once per instantiation).
template <bool KEPT>
__device__ __forceinline__ void al_fill_rows(al_u8* __restrict__ meta, const al_u8* __restrict__ staging,
                                             al_i32* __restrict__ resident, const al_u8* head, const AlHeader& h,
                                             al_u32 padded_tokens, al_u32 fp, al_u32 dp, AlRequest (&tab)[AL_PER_THREAD],
                                             AlTail (&tl)[AL_PER_THREAD], al_u32 last_cu_q, al_u32 last_cu_kv,
                                             al_u32* s_cu_q, al_u32* s_warp, al_u32* s_chunk) {
  (void)s_chunk; (void)last_cu_q; (void)last_cu_kv;
  const al_u32 tid = threadIdx.x;
  const al_u32 first = tid * AL_PER_THREAD;
  AlRequest* table = reinterpret_cast<AlRequest*>(resident + AL_RESIDENT_REQUESTS_WORD);
  AlTail* tails = reinterpret_cast<AlTail*>(resident + AL_RESIDENT_TAILS_WORD);
  const al_u32 np = fp + dp;
  const al_u32 n = h.active;
  // KEPT (al_fill_body checked the flag) is a delta step without edits whose patches lie in
  // the head: the compiler drops every other kind's code from that instantiation.
  constexpr bool kept = KEPT;
  const bool delta = KEPT || (h.flags & AL_FLAG_DELTA) != 0u;
  const bool patches_in_head = KEPT || al_patches_in_head(h);
  const AlRequest* req = delta ? table : reinterpret_cast<const AlRequest*>(al_section(staging, head, h.off_requests, (al_u64)n * AL_REQUEST_BYTES));
  const al_i32* uploaded = reinterpret_cast<const al_i32*>(staging + h.off_blocks);
  al_i32* bt = al_field<al_i32>(meta, AL_OFF_MHA_BLOCK_TABLE);

  // (1) This step's records of the rows the thread owns, read once. A full step reads them
  // (and the sampling) from the staging; a delta step from the request table, advanced here
  // (kv += q, the row stays in place) and then edited. Only this thread reads or writes
  // table[a] for its rows a until the barrier of the scan, except for edited rows in the
  // shared-map path below, which orders its accesses with its own two barriers.
  AlRequest rec[AL_PER_THREAD];
  bool edited[AL_PER_THREAD];  // the record was written to the table by an edit's thread
  // Entry j + 2 of a row whose tail is at j, when one of the step's patches writes it (the
  // row's next tail, if its tokens cross into j + 1 in this step).
  al_i32 far[AL_PER_THREAD];
  bool has_far[AL_PER_THREAD];
  AL_UNROLL
  for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
    const al_u32 a = first + i;
    rec[i] = a >= n ? AlRequest{0u, 0u, 0u, 0} : delta ? tab[i] : req[a];
    edited[i] = false;
    far[i] = 0;
    has_far[i] = false;
  }
  if (!delta) {
    // A full step gathers every row's blocks (its rows' tails are rewritten below).
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) tl[i].at = 0u;
    const bool per_request = (h.flags & AL_FLAG_PER_REQUEST_SAMPLING) != 0u;
    const AlSampling* sampling = reinterpret_cast<const AlSampling*>(
        al_section(staging, head, h.off_sampling, (al_u64)(per_request ? n : 1u) * AL_SAMPLING_BYTES));
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      const al_u32 a = first + i;
      if (a < n) {
        const AlSampling x = sampling[per_request ? a : 0u];
        al_write_sampling(meta, a, x.temperature_bits, x.top_k, x.top_p_bits);
      }
    }
  } else {
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      rec[i].kv += rec[i].q;
      rec[i].src = AL_SRC_META << AL_SRC_SHIFT;
    }
    const al_u32 n_edits = KEPT ? 0u : h.n_edits;
    const AlEdit* edits = reinterpret_cast<const AlEdit*>(al_section(staging, head, h.off_requests, (al_u64)n_edits * AL_EDIT_BYTES));
    if (n_edits == 0u) {
      // A steady step: no edit (the broadcast below runs its unrolled slots whatever their
      // count, on every warp).
    } else if (n_edits <= AL_EDITS_BROADCAST) {
      // Few edits (the usual case): every thread reads all of them (the same addresses for
      // the whole block, issued together with its records: no extra round trip) and takes
      // those of its own rows. One thread per edit writes the row's sampling; no other
      // thread writes an active row's sampling in a delta step.
      al_u32 xrow[AL_EDITS_BROADCAST];
      AlRequest xrec[AL_EDITS_BROADCAST];
      AL_UNROLL
      for (al_u32 e = 0u; e < AL_EDITS_BROADCAST; ++e) {
        xrow[e] = AL_NO_ROW;
        xrec[e] = AlRequest{0u, 0u, 0u, 0};
        if (e < n_edits) {
          const AlEdit* x = edits + e;
          xrow[e] = x->row;
          xrec[e] = AlRequest{x->q, x->kv, x->src, x->slot};
        }
      }
      AL_UNROLL
      for (al_u32 e = 0u; e < AL_EDITS_BROADCAST; ++e) {
        AL_UNROLL
        for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
          if (xrow[e] == first + i && xrow[e] < n) { rec[i] = xrec[e]; tl[i].at = 0u; }
        }
      }
      for (al_u32 e = tid; e < n_edits; e += AL_THREADS) {
        const AlEdit x = edits[e];
        if (x.row < n) al_write_sampling(meta, x.row, x.temperature_bits, x.top_k, x.top_p_bits);
      }
    } else {
      // Many edits: s_cu_q (not written before the scan) is a map row -> edited. Each owner
      // clears its rows; after a barrier one thread per edit writes the edit's record into
      // the table, its sampling, and marks the row; after a second barrier each owner
      // reloads its edited rows from the table. Rows are distinct across edits (the host
      // writes one edit per row), so each table row has one writer.
      AL_UNROLL
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        if (first + i < n) s_cu_q[first + i] = 0u;
      }
      __syncthreads();  // the map is clear (and every owner has read its table rows)
      for (al_u32 e = tid; e < n_edits; e += AL_THREADS) {
        const AlEdit x = edits[e];
        if (x.row < n) {
          table[x.row] = AlRequest{x.q, x.kv, x.src, x.slot};
          al_write_sampling(meta, x.row, x.temperature_bits, x.top_k, x.top_p_bits);
          s_cu_q[x.row] = 1u;
        }
      }
      __syncthreads();  // edited rows marked, their records in the table
      AL_UNROLL
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 a = first + i;
        if (a < n && s_cu_q[a] != 0u) { rec[i] = table[a]; edited[i] = true; tl[i].at = 0u; }
      }
    }
    // The step's patches (appended blocks of rows in place) update the tails they touch:
    // when they lie in the head (a steady step's few), every thread that owns a row reads
    // them all from shared memory, one per iteration (no round trip; the loop runs as many
    // times as there are patches; warps without rows skip it); otherwise every row gathers
    // its blocks (the tails are not used). With kept rows the owner of an active row also
    // writes the row's patches into the block table: no barrier follows before its tokens
    // (see (3)), and a row whose tokens gather from the block table then reads its own
    // writes.
    const AlWrite* head_patches = reinterpret_cast<const AlWrite*>(head + (patches_in_head ? h.off_patches : 0u));
    const al_u32 tail_patches = patches_in_head && first < n ? h.n_patches : 0u;
    AL_NO_UNROLL
    for (al_u32 p = 0u; p < tail_patches; ++p) {
      const AlWrite w = head_patches[p];
      const al_u32 row = w.index / AL_BLOCK_TABLE_WIDTH, j = w.index - row * AL_BLOCK_TABLE_WIDTH;
      AL_UNROLL
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        if (kept && row == first + i && row < n) bt[w.index] = w.value;
        if (row == first + i && tl[i].at != 0u) {
          if (j + 1u == tl[i].at) tl[i].id = w.value;
          else if (j == tl[i].at) { tl[i].next = w.value; tl[i].has_next = 1u; }
          else if (j == tl[i].at + 1u) { far[i] = w.value; has_far[i] = true; }
        }
      }
    }
    if (!patches_in_head) {
      AL_UNROLL
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) tl[i].at = 0u;
    }
  }
  // The device's request table holds this step's records from here on (the next delta step
  // advances them; the long-row token loop and the formats read them after a barrier).
  AL_UNROLL
  for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
    if (first + i < n && !edited[i]) table[first + i] = rec[i];
  }

  // (2) Work that needs no other thread's result, issued before the scan's barrier.
  // Block-table rows that stayed in place: only the entries that changed. Tokens of such
  // rows read these entries after the scan's barrier, which orders them (with kept rows,
  // which have no scan, the rows' owners wrote the patches of active rows above).
  const AlWrite* patches = reinterpret_cast<const AlWrite*>(al_section(staging, head, h.off_patches, (al_u64)h.n_patches * AL_WRITE_BYTES));
  const al_u32 owners_patched = kept ? n * AL_BLOCK_TABLE_WIDTH : 0u;
  for (al_u32 i = tid; i < h.n_patches; i += AL_THREADS) {
    const AlWrite p = patches[i];
    if (p.index >= owners_patched) bt[p.index] = p.value;
  }
  // The block table's guard after its last row (no row owns it): dummy ids, every step.
  for (al_u32 i = AL_MAX_REQUESTS * AL_BLOCK_TABLE_WIDTH + tid; i < AL_CAP_MHA_BLOCK_TABLE; i += AL_THREADS) bt[i] = AL_DUMMY_BLOCK;
  // Padding tokens write to the dummy block's slot 0.
  for (al_u32 t = h.real_tokens + tid; t < padded_tokens; t += AL_THREADS) {
    al_field<al_i64>(meta, AL_OFF_TOKEN_TO_INPUT_IDS)[t] = 0;
    al_write_token(meta, t, 0u, AL_DUMMY_BLOCK, 0u, false);
  }
  // Mamba state slots (present when the padded count is > 0): the owner of each real row
  // writes its slot, padding entries are -1. Rows [0, Dr) are decode rows, [Dr, Dr + Fr)
  // prefill rows (Dr + Fr = N).
  if constexpr (AL_HAS_MAMBA) {
    const al_u32 dr = h.attn_decode, fr = h.attn_prefill;
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      const al_u32 a = first + i;
      if (a < n && a < dr && a < dp) {
        if constexpr (AL_DECODE_INDEX_I64) al_field<al_i64>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = rec[i].slot;
        else al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = rec[i].slot;
      } else if (a < n && a >= dr && a - dr < fr && a - dr < fp) {
        al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[a - dr] = rec[i].slot;
      }
    }
    for (al_u32 a = dr + tid; a < dp; a += AL_THREADS) {
      if constexpr (AL_DECODE_INDEX_I64) al_field<al_i64>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = -1;
      else al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_DECODE)[a] = -1;
    }
    for (al_u32 f = fr + tid; f < fp; f += AL_THREADS) al_field<al_i32>(meta, AL_OFF_MAMBA_BATCH_INDICES_PREFILL)[f] = -1;
    if constexpr (AL_VLLM) {
      // vLLM's state indices (padding rows on the scratch slot R, one past the rows'
      // slots) and whether each prefill sequence starts from a state (kv > 0).
      const al_i32 scratch = (al_i32)AL_MAX_REQUESTS;
      al_i32* decode = al_field<al_i32>(meta, AL_OFF_VLLM_STATE_INDICES_DECODE);
      al_i32* prefill = al_field<al_i32>(meta, AL_OFF_VLLM_STATE_INDICES_PREFILL);
      al_u8* init = al_field<al_u8>(meta, AL_OFF_VLLM_HAS_INITIAL_STATE);
      AL_UNROLL
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 a = first + i;
        if (a < n && a < dr && a < dp) {
          decode[a] = rec[i].slot;
        } else if (a < n && a >= dr && a - dr < fr && a - dr < fp) {
          prefill[a - dr] = rec[i].slot;
          init[a - dr] = rec[i].kv > 0u ? (al_u8)1 : (al_u8)0;
        }
      }
      for (al_u32 a = dr + tid; a < dp; a += AL_THREADS) decode[a] = scratch;
      for (al_u32 f = fr + tid; f < fp; f += AL_THREADS) { prefill[f] = scratch; init[f] = (al_u8)0; }
    }
  }

  // (3) Cumulative query and KV lengths over the owned rows: each thread's exclusive
  // prefixes. The scan's barrier also orders the patches above before the token loads
  // below, and votes whether any row is long (more than AL_OWNED_TOKENS tokens: its tokens
  // are written one per thread in (5)).
  //
  // A step with kept rows has no scan: every row a < n is the last step's row a with the
  // same q and kv advanced by q, so cu_q[a + 1] is the last one and cu_kv[a + 1] the last
  // one plus cu_q[a + 1]; padding rows (a >= n, np at most the last step's) held the last
  // totals, which move the same way. The thread's prefixes are its first row's values
  // less that row's own lengths (the last step's: kv - q, q). No row is long.
  al_u32 pre_q = 0u, pre_kv = 0u;
  bool any_long = false;
  if (kept) {
    // (rec[0] is all zero for a padding owner.)
    pre_q = last_cu_q - rec[0].q;
    pre_kv = last_cu_kv - rec[0].kv + pre_q;
  } else {
    bool long_rows = false;
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      if (first + i < n) {
        pre_q += rec[i].q;
        pre_kv += rec[i].kv + rec[i].q;
        long_rows = long_rows || rec[i].q > AL_OWNED_TOKENS;
      }
    }
    al_u32 total_q, total_kv;
    // s_warp is next written by a scan after the barrier before (5) or the formats' first one.
    any_long = al_block_scan2(pre_q, pre_kv, total_q, total_kv, s_warp, long_rows);
  }

  // (4) Request fields, and the tokens of short rows (decode rows: s + 1 tokens each)
  // written by the row's owner: no search and no reload. Such a row's tokens span at most
  // two block-table entries (q <= B), loaded together.
  {
    const al_i64* ids = reinterpret_cast<const al_i64*>(al_section(staging, head, h.off_token_ids, (al_u64)h.real_tokens * 8u));
    const bool has_ids = (h.flags & AL_FLAG_TOKEN_IDS) != 0u;
    al_i64* input_ids = al_field<al_i64>(meta, AL_OFF_TOKEN_TO_INPUT_IDS);
    AL_UNROLL
    for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
      const al_u32 a = first + i;
      if (a < n) {
        const AlRequest r = rec[i];
        const al_u32 t0 = pre_q;
        pre_q += r.q;
        pre_kv += r.kv + r.q;
        s_cu_q[a + 1u] = pre_q;
        al_write_request(meta, h, a, r, pre_q, pre_kv);
        AlTail after{0u, 0, 0, 0u};  // the row's tail after this step (long rows: none)
        if (r.q <= AL_OWNED_TOKENS && r.q > 0u) {
          // A step the host staged never reaches past its row (the plan checks every
          // token's block); the clamp keeps a misused replay (a delta step applied twice,
          // see cuda::StreamFill) inside the row.
          const al_u32 j0 = al_min(r.kv >> AL_BLOCK_SHIFT, AL_BLOCK_TABLE_WIDTH - 1u);
          const al_u32 j1 = al_min((r.kv + r.q - 1u) >> AL_BLOCK_SHIFT, AL_BLOCK_TABLE_WIDTH - 1u);
          // A row in place in a delta step knows its blocks from its tail (j1 <= j0 + 1:
          // q <= B); any other row gathers them, and entry j1 + 1 with them when the row is
          // in place in the metadata (no job writes it), for its next tail.
          const AlTail c = tl[i];
          const al_u32 jt = c.at - 1u;
          const bool known0 = c.at != 0u && (j0 == jt || (j0 == jt + 1u && c.has_next != 0u));
          const bool known1 = c.at != 0u && (j1 == jt || (j1 == jt + 1u && c.has_next != 0u));
          al_i32 b0, b1;
          if (known0 && known1) {
            b0 = j0 == jt ? c.id : c.next;
            b1 = j1 == jt ? c.id : c.next;
            after = j1 == jt ? AlTail{j1 + 1u, b1, c.next, c.has_next} : AlTail{j1 + 1u, b1, far[i], has_far[i] ? 1u : 0u};
          } else {
            b0 = al_row_block(bt, resident, uploaded, r, a, j0);
            b1 = j1 != j0 ? al_row_block(bt, resident, uploaded, r, a, j1) : b0;
            const bool in_place = (r.src >> AL_SRC_SHIFT) == AL_SRC_META && j1 + 1u < AL_BLOCK_TABLE_WIDTH;
            const al_i32 next = in_place ? bt[a * AL_BLOCK_TABLE_WIDTH + j1 + 1u] : 0;
            after = AlTail{j1 + 1u, al_map_block(b1), next, in_place ? 1u : 0u};
          }
          // As many iterations as the row has tokens (a decode row: s + 1), not unrolled:
          // the unrolled slots each cost their branch, on every row.
          const al_u32 owned = al_min(r.q, h.real_tokens > t0 ? h.real_tokens - t0 : 0u);
          AL_NO_UNROLL
          for (al_u32 k = 0u; k < owned; ++k) {
            const al_u32 t = t0 + k;
            const al_u32 pos = r.kv + k;
            if (has_ids) input_ids[t] = ids[t];
            al_write_token(meta, t, pos, al_min(pos >> AL_BLOCK_SHIFT, AL_BLOCK_TABLE_WIDTH - 1u) == j0 ? b0 : b1, h.paused + a, true);
          }
        }
        tails[a] = after;
      } else if (a < np) {
        // A padding row: its cumulative lengths are the totals, the thread's prefixes now.
        al_write_padding_request(meta, a, pre_q, pre_kv);
      }
    }
  }
  if (tid == 0u) {
    s_cu_q[0] = 0u;
    al_field<al_i32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[0] = 0;
    al_field<al_i32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[0] = 0;
    al_field<al_u32>(meta, AL_OFF_REAL_TOKEN_COUNT)[0] = h.real_tokens;
  }

  // s_cu_q is read by other threads only by the token loop (5) and the Mamba prefill
  // arrays; the formats begin with a barrier of their own. Both conditions are the same
  // on every thread, so the barrier is taken by all or none.
  const bool mamba_prefill = AL_HAS_MAMBA && fp > 0u;
  if (any_long || mamba_prefill) __syncthreads();  // s_cu_q complete; the table is this step's

  // (5) Per-token work that needs the scan: the tokens of long rows (prefill), one thread
  // per token, and the Mamba entries of every prefill token (present when Fp > 0), whose
  // index k = t - q0 counts the prefill tokens (rows [Dr, N), from token q0 = s_cu_q[Dr]).
  // Tokens of short rows were written in (4); Mamba's padding entries are written in (6).
  // Without long rows only the prefill tokens are visited.
  if (any_long || mamba_prefill) {
    const al_i64* ids = reinterpret_cast<const al_i64*>(al_section(staging, head, h.off_token_ids, (al_u64)h.real_tokens * 8u));
    const bool has_ids = (h.flags & AL_FLAG_TOKEN_IDS) != 0u;
    al_i64* input_ids = al_field<al_i64>(meta, AL_OFF_TOKEN_TO_INPUT_IDS);
    const al_u32 dr = h.attn_decode;
    const al_u32 q0 = mamba_prefill ? s_cu_q[dr] : 0u;
    al_i32* seq_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_SEQ_IDX);
    al_i32* conv_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_CONV_SEQ_IDX);
    al_u32* conv_start = al_field<al_u32>(meta, AL_OFF_MAMBA_CONV_SEQ_START);
    // A thread's tokens grow, and so do their rows: each search starts past the row of the
    // thread's previous token, and none is needed while the token stays in that row (a long
    // row spans many of a thread's tokens). Invariant: s_cu_q[a] <= t (s_cu_q[Dr] = q0).
    // The row's record is loaded once per row the thread meets, not once per token (a store
    // to the metadata may alias the table, so the compiler cannot keep it): `ra` is the row
    // `r` holds.
    al_u32 a = any_long ? 0u : dr, ra = AL_NO_ROW;
    AlRequest r{0u, 0u, 0u, 0};
    for (al_u32 t = (any_long ? 0u : q0) + tid; t < h.real_tokens; t += AL_THREADS) {
      // Here s_cu_q[a + 1] <= t < s_cu_q[n], so a + 1 < n and the search's bounds hold.
      if (s_cu_q[a + 1u] <= t) a += 1u + al_search(s_cu_q + a + 1u, n - a - 1u, t);
      const al_u32 start = s_cu_q[a];
      if constexpr (AL_HAS_MAMBA) {
        if (mamba_prefill && a >= dr) {
          seq_idx[t - q0] = (al_i32)(a - dr);
          conv_idx[t - q0] = (al_i32)(a - dr);
          conv_start[t - q0] = start - q0;
        }
      }
      if (s_cu_q[a + 1u] - start <= AL_OWNED_TOKENS) continue;
      if (a != ra) { r = req[a]; ra = a; }
      const al_u32 pos = r.kv + (t - start);
      const al_u32 j = al_min(pos >> AL_BLOCK_SHIFT, AL_BLOCK_TABLE_WIDTH - 1u);  // see (4)
      // Both loads before any store of this token: a store to the metadata may alias the
      // block table, so a store between them would hold the block id's load behind the
      // input id's (two serial round trips per token; run 19's profile).
      const al_i32 block = al_row_block(bt, resident, uploaded, r, a, j);
      const al_i64 id = has_ids ? ids[t] : 0;
      if (has_ids) input_ids[t] = id;
      al_write_token(meta, t, pos, block, h.paused + a, true);
    }
  }

  // (6) Mamba prefill arrays (present when Fp > 0): chunks, sequence starts, padding entries.
  if constexpr (AL_HAS_MAMBA) {
    if (fp > 0u) {
      const al_u32 dr = h.attn_decode, fr = h.attn_prefill;
      const al_u32 q0 = s_cu_q[dr];
      const al_u32 l = s_cu_q[dr + fr] - q0;
      // Start of prefill sequence f in [0, fp] (padded sequences are empty, at l).
#define AL_SEQ_START(f) ((f) <= fr ? s_cu_q[dr + (f)] - q0 : l)
      // Chunks per sequence: max(1, ceil(len / cs)); scanned into s_chunk.
      al_u32 pre_c = 0u, unused = 0u;
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 f = first + i;
        if (f < fp) pre_c += al_max(1u, (AL_SEQ_START(f + 1u) - AL_SEQ_START(f) + AL_CHUNK - 1u) / AL_CHUNK);
      }
      al_u32 total_chunks, unused_total;
      al_block_scan2(pre_c, unused, total_chunks, unused_total, s_warp);
      al_i32* last_chunk = al_field<al_i32>(meta, AL_OFF_MAMBA_LAST_CHUNK_INDICES);
      for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
        const al_u32 f = first + i;
        if (f < fp) {
          pre_c += al_max(1u, (AL_SEQ_START(f + 1u) - AL_SEQ_START(f) + AL_CHUNK - 1u) / AL_CHUNK);
          s_chunk[f + 1u] = pre_c;
          last_chunk[f] = (al_i32)pre_c - 1;
        }
      }
      if (tid == 0u) s_chunk[0] = 0u;
      al_u32* cu_seqlens = al_field<al_u32>(meta, AL_OFF_MAMBA_CU_SEQLENS);
      for (al_u32 f = tid; f <= fp; f += AL_THREADS) cu_seqlens[f] = AL_SEQ_START(f);
      // The prefill tokens' entries were written in (5); the padding entries [l, Tp) here.
      al_i32* seq_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_SEQ_IDX);
      al_i32* conv_idx = al_field<al_i32>(meta, AL_OFF_MAMBA_CONV_SEQ_IDX);
      al_u32* conv_start = al_field<al_u32>(meta, AL_OFF_MAMBA_CONV_SEQ_START);
      for (al_u32 k = l + tid; k < padded_tokens; k += AL_THREADS) {
        seq_idx[k] = -1;
        conv_idx[k] = 0;
        conv_start[k] = 0u;
      }
      if (tid == 0u && dp > 0u) {
        al_field<al_u32>(meta, AL_OFF_MAMBA_DEVICE_DECODE_PREFILL)[0] = q0;
        al_field<al_u32>(meta, AL_OFF_MAMBA_DEVICE_DECODE_PREFILL)[1] = l;
      }
      __syncthreads();  // s_chunk complete

      // Chunk boundaries: chunks restart at every sequence start; padding repeats the end.
      const al_u32 chunks = padded_tokens / AL_CHUNK + fp;
      al_u32* cu_chunk = al_field<al_u32>(meta, AL_OFF_MAMBA_CU_CHUNK_SEQLENS);
      al_i32* varlen = al_field<al_i32>(meta, AL_OFF_MAMBA_SEQ_IDX_FOR_VARLEN);
      if (tid == 0u) cu_chunk[0] = 0u;
      for (al_u32 k = tid; k < chunks; k += AL_THREADS) {
        if (k < total_chunks) {
          const al_u32 f = al_search(s_chunk, fp, k);
          const al_u32 start = AL_SEQ_START(f), end = AL_SEQ_START(f + 1u);
          cu_chunk[k + 1u] = al_min(start + (k - s_chunk[f] + 1u) * AL_CHUNK, end);
          varlen[k] = (al_i32)f;
        } else {
          cu_chunk[k + 1u] = l;
          varlen[k] = 0;
        }
      }

      // Intermediate-state extraction: K = min(3 Fp, Kmax) entries, the real ones first.
      const al_u32 kk = al_min(AL_INTER_OFFSETS * fp, AL_MAX_INTERMEDIATE);
      const bool has_inter = (h.flags & AL_FLAG_INTERMEDIATE) != 0u;
      const al_u32 emitted = has_inter ? h.inter_count : 0u;
      al_i64* inter_chunk = al_field<al_i64>(meta, AL_OFF_MAMBA_INTERMEDIATE_CHUNK_INDICES);
      al_u32* inter_abs = al_field<al_u32>(meta, AL_OFF_MAMBA_INTERMEDIATE_ABS_POSITIONS);
      if (has_inter) {
        const AlInter* inter = reinterpret_cast<const AlInter*>(al_section(staging, head, h.off_inter, (al_u64)fr * AL_INTER_BYTES));
        for (al_u32 f = tid; f < fr; f += AL_THREADS) {
          const AlInter rec = inter[f];
          const al_u32 base = rec.base_count & ((1u << AL_INTER_COUNT_SHIFT) - 1u), count = rec.base_count >> AL_INTER_COUNT_SHIFT;
          for (al_u32 j = 0u; j < count && j < AL_INTER_OFFSETS; ++j) {
            const al_u32 off = rec.offsets[j];
            inter_chunk[base + j] = (al_i64)(s_chunk[f] + off / AL_CHUNK) - 1;
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

  if constexpr (AL_FLASHINFER || AL_VLLM) {
    al_fill_formats(meta, uploaded, resident, req, s_cu_q, s_warp, padded_tokens, fp, dp, n, h.attn_decode, h.attn_prefill);
  }
}

// The fill of one step; its padded dims come from the image's header. Inline: the two
// entries (staging, parameters) each compile it once.
//
// Block 0 is latency-bound: what costs is the chain of dependent global-memory round trips
// and block barriers, not bandwidth. So each thread reads its own rows' records once, into
// registers, and every phase takes them from there; loads that do not depend on each other
// are issued together; and the only barrier of a step without long rows, Mamba prefill or
// a kernel format is the one of the request scan (besides the head's, at the start). A
// steady decode step (a delta step without edits, AL_FLAG_KEPT_ROWS) has no scan: it runs
// the image's head, own table rows, tails and cumulative lengths (one round trip) -> the
// head's barrier -> patches and records from registers and shared memory, the rows' block
// ids from their tails, their cumulative lengths from the last step's -> stores.
__device__ __forceinline__ void al_fill_body(al_u8* __restrict__ meta, const al_u8* __restrict__ staging,
                                             al_i32* __restrict__ resident) {
  const al_u32 tid = threadIdx.x;
  const al_u32 first = tid * AL_PER_THREAD;  // thread tid owns requests [first, first + AL_PER_THREAD)
  // The request table on the device: the records of the last step's active rows.
  AlRequest* table = reinterpret_cast<AlRequest*>(resident + AL_RESIDENT_REQUESTS_WORD);
  AlTail* tails = reinterpret_cast<AlTail*>(resident + AL_RESIDENT_TAILS_WORD);
  // (0) One round trip for what everything below needs: the image's head (the header, and
  // a steady step's edits and patches) and block 0's rows of the request table and their
  // tails (what a delta step advances; the last kernel wrote them), issued together. The
  // header is then read from shared memory into registers.
  __align__(16) __shared__ al_u64 s_head[AL_HEAD_WORDS];
  for (al_u32 i = tid; i < AL_HEAD_WORDS; i += AL_THREADS) s_head[i] = reinterpret_cast<const al_u64*>(staging)[i];
  AlRequest tab[AL_PER_THREAD];
  AlTail tl[AL_PER_THREAD];
  AL_UNROLL
  for (al_u32 i = 0u; i < AL_PER_THREAD; ++i) {
    const bool mine = blockIdx.x == 0u && first + i < AL_MAX_REQUESTS;
    tab[i] = mine ? table[first + i] : AlRequest{0u, 0u, 0u, 0};
    tl[i] = mine ? tails[first + i] : AlTail{0u, 0, 0, 0u};
  }
  // The cumulative lengths the last fill wrote after the thread's first row: what a step
  // with AL_FLAG_KEPT_ROWS derives its prefixes from instead of the scan. This thread wrote
  // them (it owns the row, active or padding, in every launch) and rewrites them in (4).
  const bool owns = blockIdx.x == 0u && first < AL_MAX_REQUESTS;
  const al_u32 last_cu_q = owns ? al_field<al_u32>(meta, AL_OFF_MHA_CU_QUERY_SEQ_LENGTHS)[first + 1u] : 0u;
  const al_u32 last_cu_kv = owns ? al_field<al_u32>(meta, AL_OFF_MHA_CU_KV_SEQ_LENGTHS)[first + 1u] : 0u;
  __syncthreads();  // the head is loaded
  const al_u8* head = reinterpret_cast<const al_u8*>(s_head);
  const AlHeader h = *reinterpret_cast<const AlHeader*>(head);
  const al_u32 padded_tokens = h.pad_tokens, fp = h.pad_prefill, dp = h.pad_decode;
  const al_u32 np = fp + dp;
  const al_u32 n = h.active;
  // The host never sends a step that does not fit; such a launch writes nothing.
  if (padded_tokens > AL_MAX_TOKENS || np > AL_MAX_REQUESTS || n > np || h.real_tokens > padded_tokens) return;

  const al_u32 workers = gridDim.x - 1u;
  // Block 0 alone does the workers' part too, when there is one (a steady step has none:
  // it skips the part's setup).
  if (blockIdx.x != 0u || (workers == 0u && (h.n_changes != 0u || h.n_jobs != 0u))) {
    al_worker(meta, staging, head, resident, h, workers == 0u ? 0u : blockIdx.x - 1u, workers == 0u ? 1u : workers);
  }
  if (blockIdx.x != 0u) return;

  // The rows of the last step, kept (see (3) in al_fill_rows); the host sets the flag only
  // on a delta step without edits, checked again here, with its patches in the head (so
  // every row's tokens find their blocks in its tail or the patches, or in block-table
  // entries no patch of this step writes: no barrier orders the patches before them).
  const bool kept = (h.flags & AL_FLAG_DELTA) != 0u && (h.flags & AL_FLAG_KEPT_ROWS) != 0u && h.n_edits == 0u &&
                    al_patches_in_head(h);
  __shared__ al_u32 s_cu_q[AL_MAX_REQUESTS + 1u];
  __shared__ al_u32 s_warp[2u * AL_WARPS];
  // The Mamba chunk scan's (one word without Mamba: no code reads it).
  __shared__ al_u32 s_chunk[AL_HAS_MAMBA ? AL_MAX_REQUESTS + 1u : 1u];
  if (kept) {
    al_fill_rows<true>(meta, staging, resident, head, h, padded_tokens, fp, dp, tab, tl, last_cu_q, last_cu_kv, s_cu_q,
                       s_warp, s_chunk);
  } else {
    al_fill_rows<false>(meta, staging, resident, head, h, padded_tokens, fp, dp, tab, tl, last_cu_q, last_cu_kv, s_cu_q,
                        s_warp, s_chunk);
  }
}

