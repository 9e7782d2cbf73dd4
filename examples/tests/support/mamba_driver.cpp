// Runs one step of the Mamba consumer's kernels (after the kernels' source) in the launch
// order of examples/src/gpu.rs (GpuMamba::run), on buffers read from the directory given
// as argv[1], and writes the results back there. argv[2] = "reverse" runs every launch's
// blocks last first. The vLLM path when VLLM_PATH is defined.
template <class T> static std::vector<T> rd(const std::string& dir, const char* name) {
  const std::string p = dir + "/" + name;
  FILE* f = fopen(p.c_str(), "rb");
  if (!f) { perror(p.c_str()); exit(2); }
  fseek(f, 0, SEEK_END);
  const long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  std::vector<T> v((size_t)n / sizeof(T));
  if (n > 0 && fread(v.data(), 1, (size_t)n, f) != (size_t)n) exit(3);
  fclose(f);
  return v;
}
template <class T> static void wr(const std::string& dir, const char* name, const std::vector<T>& v) {
  const std::string p = dir + "/" + name;
  FILE* f = fopen(p.c_str(), "wb");
  if (!f || (!v.empty() && fwrite(v.data(), sizeof(T), v.size(), f) != v.size())) exit(4);
  fclose(f);
}
static bool reverse_blocks = false;
template <class F> static void launch(unsigned gx, unsigned gy, F f) {
  for (unsigned i = 0; i < gx * gy; ++i) {
    const unsigned b = reverse_blocks ? gx * gy - 1u - i : i;
    blockIdx = {b % gx, b / gx, 0};
    threadIdx = {0, 0, 0};
    blockDim = {1, 1, 1};
    f();
  }
}
int main(int argc, char** argv) {
  if (argc < 2) return 5;
  const std::string d = argv[1];
  reverse_blocks = argc > 2 && std::string(argv[2]) == "reverse";
  const auto dims = rd<int>(d, "dims");
  const int dp = dims.at(0), fp = dims.at(1), tokens = dims.at(2), chunks = dims.at(3);
  const auto meta = rd<u8>(d, "meta");
  const auto xbc = rd<float>(d, "xbc"), dt = rd<float>(d, "dt"), A = rd<float>(d, "a");
  const auto Ds = rd<float>(d, "d"), cw = rd<float>(d, "conv_w"), cb = rd<float>(d, "conv_b");
  auto conv = rd<float>(d, "conv"), ssm = rd<float>(d, "ssm"), y = rd<float>(d, "y");
  auto yd = rd<float>(d, "y_d");
  // Exactly the sizes gpu.rs allocates (so AddressSanitizer sees the same bounds).
  std::vector<float> act((size_t)tokens * CONV_DIM), acum((size_t)tokens * NHEADS),
      cst((size_t)chunks * XDIM * DSTATE), cdec((size_t)chunks * NHEADS),
      cinit((size_t)chunks * XDIM * DSTATE);
  std::vector<int> err(1, 0);
#ifdef VLLM_PATH
  if (dp > 0)
    launch(dp, 1, [&] { mamba_decode_vllm(meta.data(), dp, tokens, xbc.data(), dt.data(), A.data(), Ds.data(), cw.data(), cb.data(), conv.data(), ssm.data(), yd.data(), err.data()); });
#define CONV_PREFILL mamba_conv_prefill_vllm
#define CONV_STATE_UPDATE mamba_conv_state_update_vllm
#define STATE_PASSING mamba_state_passing_vllm
#else
  if (dp > 0)
    launch(dp, 1, [&] { mamba_decode(meta.data(), dp, tokens, xbc.data(), dt.data(), A.data(), Ds.data(), cw.data(), cb.data(), conv.data(), ssm.data(), y.data(), err.data()); });
#define CONV_PREFILL mamba_conv_prefill
#define CONV_STATE_UPDATE mamba_conv_state_update
#define STATE_PASSING mamba_state_passing
#endif
  if (fp > 0 && tokens > 0) {
    launch(tokens, 1, [&] { CONV_PREFILL(meta.data(), dp, fp, tokens, xbc.data(), cw.data(), cb.data(), conv.data(), act.data(), err.data()); });
    launch(fp, 1, [&] { CONV_STATE_UPDATE(meta.data(), dp, fp, tokens, xbc.data(), conv.data(), err.data()); });
    launch(chunks, NHEADS, [&] { mamba_chunk_state(meta.data(), dp, fp, tokens, chunks, act.data(), dt.data(), A.data(), acum.data(), cst.data(), cdec.data(), err.data()); });
    launch(fp, NHEADS, [&] { STATE_PASSING(meta.data(), fp, chunks, cst.data(), cdec.data(), cinit.data(), ssm.data(), err.data()); });
    launch(chunks, NHEADS, [&] { mamba_chunk_scan(meta.data(), dp, fp, tokens, chunks, act.data(), dt.data(), Ds.data(), acum.data(), cinit.data(), y.data(), err.data()); });
  }
  wr(d, "conv.out", conv);
  wr(d, "ssm.out", ssm);
  wr(d, "y.out", y);
  wr(d, "y_d.out", yd);
  wr(d, "err.out", err);
  return 0;
}
