// A CPU stand-in for the few CUDA features the emitted fill kernels use, so that a host
// C++20 compiler can build them and run them: one OS thread per CUDA thread, the blocks
// of a launch one after another. Barriers and warp shuffles are block-wide barriers (the
// kernels call every shuffle from all threads of the block, so this is faithful).
//
// Include the standard headers first: the macros below rename CUDA keywords.
#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

struct al_dim3 { unsigned x, y, z; };
inline thread_local al_dim3 threadIdx;
inline al_dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* al_shim_barrier = nullptr;
inline unsigned al_shim_exchange[1024];

inline void __syncthreads() { al_shim_barrier->arrive_and_wait(); }

// A barrier that also returns whether `pred` was non-zero on any thread of the block.
inline int __syncthreads_or(int pred) {
  const unsigned t = threadIdx.x;
  al_shim_exchange[t] = pred != 0 ? 1u : 0u;
  __syncthreads();
  int any = 0;
  for (unsigned i = 0; i < blockDim.x; ++i) any |= al_shim_exchange[i] != 0u ? 1 : 0;
  __syncthreads();
  return any;
}

inline unsigned __shfl_up_sync(unsigned, unsigned v, unsigned d) {
  const unsigned t = threadIdx.x;
  al_shim_exchange[t] = v;
  __syncthreads();
  const unsigned r = (t & 31u) >= d ? al_shim_exchange[t - d] : v;
  __syncthreads();
  return r;
}

inline unsigned __shfl_sync(unsigned, unsigned v, unsigned src) {
  const unsigned t = threadIdx.x;
  al_shim_exchange[t] = v;
  __syncthreads();
  const unsigned r = al_shim_exchange[(t & ~31u) + (src & 31u)];
  __syncthreads();
  return r;
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define __shared__ static

typedef void (*al_shim_entry)(unsigned char*, const unsigned char*, int*);

// A pool of `threads` OS threads standing in for the threads of one block; blocks run one
// after another, in either order (on a GPU they run concurrently, so a launch whose
// result depends on the order has a race). Created once per harness run.
struct al_shim_pool {
  unsigned threads;
  std::barrier<> block_barrier;  // __syncthreads
  std::barrier<> start, finish;  // the pool and the launching thread
  std::vector<std::thread> workers;
  al_shim_entry entry = nullptr;
  unsigned char* meta = nullptr;
  const unsigned char* staging = nullptr;
  int* resident = nullptr;
  bool quit = false;

  explicit al_shim_pool(unsigned n) : threads(n), block_barrier(n), start(n + 1), finish(n + 1) {
    al_shim_barrier = &block_barrier;
    for (unsigned t = 0; t < n; ++t) {
      workers.emplace_back([this, t] {
        threadIdx = {t, 0, 0};
        for (;;) {
          start.arrive_and_wait();
          if (quit) return;
          entry(meta, staging, resident);
          finish.arrive_and_wait();
        }
      });
    }
  }
  ~al_shim_pool() {
    quit = true;
    start.arrive_and_wait();
    for (auto& w : workers) w.join();
  }
  // One launch: `grid` blocks, one after another (the last first if `reverse`).
  void launch(al_shim_entry e, unsigned grid, bool reverse, unsigned char* m, const unsigned char* s, int* r) {
    entry = e; meta = m; staging = s; resident = r;
    gridDim = {grid, 1, 1};
    blockDim = {threads, 1, 1};
    for (unsigned i = 0; i < grid; ++i) {
      const unsigned b = reverse ? grid - 1u - i : i;
      blockIdx = {b, 0, 0};
      start.arrive_and_wait();
      finish.arrive_and_wait();
    }
  }
};
