// A CPU stand-in for the few CUDA features the Mamba consumer's kernels use, so the host
// C++ compiler can build their CUDA C and run it: one thread per block (blockDim.x = 1:
// every kernel strides its thread loops by blockDim.x, and a __syncthreads between two
// such loops is then a no-op), the blocks of a launch one after another, in either order
// (on a GPU they run concurrently: a result that depended on the order would be a race).
// Built with AddressSanitizer, an index outside a buffer (the state pool above all) fails
// the run, as compute-sanitizer's memcheck fails it on a GPU.
//
// Include the standard headers first: the macros below rename CUDA keywords.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

struct al_dim3 { unsigned x, y, z; };
inline al_dim3 blockIdx, threadIdx, blockDim;
inline int atomicAdd(int* p, int v) { const int o = *p; *p += v; return o; }
inline void __syncthreads() {}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
