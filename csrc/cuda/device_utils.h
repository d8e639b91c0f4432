// Device-side helpers shared by the .cu files: one thread per Philox counter (four
// elements, one normal4/uniform4 call), grid-stride loops with int64 indices, loads and
// stores that convert storage dtypes to the compute dtype (one 16- or 8-byte access per
// four elements where the data allows), the feature index kept per counter, and the
// fixed-order block and partial-row sums of the backward kernels.
//
// The per-counter and per-row bodies are __host__ __device__, and everything that needs
// nvcc (kernels, shared memory, launches) sits in one __CUDACC__ block at the end, so the
// host compiler builds this header too: tests/cuda_host runs the kernels' thread bodies on
// the CPU against the reference. Only the block reductions need a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../philox.h"
#include "kernels.h"

#define FASTNOISE_HD __host__ __device__ __forceinline__

namespace fastnoise {
namespace cuda {

constexpr int kThreads = 256;

// Enough blocks to fill the GPU a few times over; the grid-stride loop does the rest.
inline int blocks_for(const Launch& launch, int64_t work_items) {
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  const int64_t cap = 8LL * (launch.sm_count > 0 ? launch.sm_count : 1);
  return static_cast<int>(needed < 1 ? 1 : (needed < cap ? needed : cap));
}

#define FASTNOISE_GRID_STRIDE(index, count)                                          \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       index < (count); index += static_cast<int64_t>(gridDim.x) * blockDim.x)

FASTNOISE_HD float load(const float* p) { return *p; }
FASTNOISE_HD double load(const double* p) { return *p; }
FASTNOISE_HD float load(const __half* p) { return __half2float(*p); }
FASTNOISE_HD float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

FASTNOISE_HD void store(float* p, float v) { *p = v; }
FASTNOISE_HD void store(double* p, double v) { *p = v; }
FASTNOISE_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
FASTNOISE_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};

// --- four consecutive elements in one access ---------------------------------------------
// float4 (16 bytes), two double2 (2 x 16 bytes), or one uint2 (8 bytes) of four half or
// bfloat16 values. Element 4k of an array is then aligned when the array's base is, so
// the host checks base pointers once (quad_aligned) and the kernels need no more checks.
// The values are converted exactly as load()/store() do, so results do not depend on
// which path ran.

template <typename T>
constexpr uintptr_t kQuadAlignment = 4 * sizeof(T) < 16 ? 4 * sizeof(T) : 16;

template <typename T>
inline bool quad_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kQuadAlignment<T> == 0;
}

FASTNOISE_HD void load_quad(const float* p, float v[4]) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
}
FASTNOISE_HD void load_quad(const double* p, double v[4]) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
FASTNOISE_HD void load_quad(const __half* p, float v[4]) {
  const uint2 q = *reinterpret_cast<const uint2*>(p);  // little-endian: element 0 is low
  v[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(q.x)));
  v[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(q.x >> 16)));
  v[2] = __half2float(__ushort_as_half(static_cast<unsigned short>(q.y)));
  v[3] = __half2float(__ushort_as_half(static_cast<unsigned short>(q.y >> 16)));
}
FASTNOISE_HD void load_quad(const __nv_bfloat16* p, float v[4]) {
  const uint2 q = *reinterpret_cast<const uint2*>(p);
  v[0] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(q.x)));
  v[1] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(q.x >> 16)));
  v[2] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(q.y)));
  v[3] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(q.y >> 16)));
}

FASTNOISE_HD void store_quad(float* p, const float v[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
FASTNOISE_HD void store_quad(double* p, const double v[4]) {
  reinterpret_cast<double2*>(p)[0] = make_double2(v[0], v[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(v[2], v[3]);
}
FASTNOISE_HD uint32_t pack_pair(unsigned short lo, unsigned short hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}
FASTNOISE_HD void store_quad(__half* p, const float v[4]) {
  unsigned short h[4];
  for (int lane = 0; lane < 4; ++lane) h[lane] = __half_as_ushort(__float2half_rn(v[lane]));
  *reinterpret_cast<uint2*>(p) = make_uint2(pack_pair(h[0], h[1]), pack_pair(h[2], h[3]));
}
FASTNOISE_HD void store_quad(__nv_bfloat16* p, const float v[4]) {
  unsigned short h[4];
  for (int lane = 0; lane < 4; ++lane) {
    h[lane] = __bfloat16_as_ushort(__float2bfloat16_rn(v[lane]));
  }
  *reinterpret_cast<uint2*>(p) = make_uint2(pack_pair(h[0], h[1]), pack_pair(h[2], h[3]));
}

// The first n (<= 4) elements at p: one access when `quad` (p aligned, n == 4), else n
// scalar ones; lanes past n read 0 and are never stored.
template <typename T, typename opmath_t>
FASTNOISE_HD void load_elements(const T* p, int n, bool quad, opmath_t v[4]) {
  if (quad && n == 4) {
    load_quad(p, v);
    return;
  }
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) v[lane] = lane < n ? load(p + lane) : opmath_t(0);
}

template <typename T, typename opmath_t>
FASTNOISE_HD void store_elements(T* p, int n, bool quad, const opmath_t v[4]) {
  if (quad && n == 4) {
    store_quad(p, v);
    return;
  }
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    if (lane < n) store(p + lane, v[lane]);
  }
}

FASTNOISE_HD int lanes_left(int64_t remaining) {
  return remaining < 4 ? static_cast<int>(remaining) : 4;
}

// --- feature index per counter ----------------------------------------------------------
// Element i reads parameter entry i % features. A thread's counters advance by a fixed
// stride, so the entry of a counter's first element advances by a fixed step mod
// features: one modulo per thread instead of one int64 modulo per element.
struct FeatureCursor {
  int64_t feature;   // (4 * counter) % features
  int64_t step;      // (4 * counter stride) % features
  int64_t features;

  FASTNOISE_HD FeatureCursor(int64_t first_counter, int64_t counter_stride, int64_t count)
      : feature((4 * first_counter) % count), step((4 * counter_stride) % count), features(count) {}

  FASTNOISE_HD void advance() {
    feature += step;
    if (feature >= features) feature -= features;
  }

  // The entries of the counter's four elements; wraps onto the next sample (any
  // features >= 1, so also fewer than four).
  FASTNOISE_HD void lanes(int64_t f[4]) const {
    f[0] = feature;
#pragma unroll
    for (int lane = 1; lane < 4; ++lane) {
      f[lane] = f[lane - 1] + 1 == features ? 0 : f[lane - 1] + 1;
    }
  }

  // Per-feature parameter values of the counter's four elements: one aligned access when
  // `quad` (features % 4 == 0, so the four never wrap, and the parameter is aligned).
  template <typename opmath_t>
  FASTNOISE_HD void gather(const opmath_t* param, bool quad, opmath_t v[4]) const {
    if (quad) {
      load_quad(param + feature, v);
      return;
    }
    int64_t f[4];
    lanes(f);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) v[lane] = param[f[lane]];
  }
};

// --- noise of four consecutive elements that need not start on a counter ----------------
FASTNOISE_HD float pick_lane(const float a[4], const float b[4], int index) {
  // Selects, not a[index]: a dynamically indexed register array would go to local memory.
  return index == 0   ? a[0]
         : index == 1 ? a[1]
         : index == 2 ? a[2]
         : index == 3 ? a[3]
         : index == 4 ? b[0]
         : index == 5 ? b[1]
                      : b[2];
}

// z of elements i .. i + n - 1 (n <= 4) of a call at `offset`: element e is lane e % 4 of
// counter offset + e / 4. kStartsOnCounter: i % 4 == 0 (rows of a multiple of four
// features), one normal4. Else lanes k = i % 4 .. 3 of one counter and, when the n
// elements reach past it, the first lanes of the next.
template <bool kStartsOnCounter>
FASTNOISE_HD void quad_normals(int64_t i, int n, uint64_t seed, uint64_t offset, float z[4]) {
  const uint64_t counter = offset + static_cast<uint64_t>(i >> 2);
  if (kStartsOnCounter) {
    normal4(counter, seed, z);
    return;
  }
  const int k = static_cast<int>(i & 3);
  float a[4], b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  normal4(counter, seed, a);
  if (k + n > 4) normal4(counter + 1, seed, b);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) z[lane] = pick_lane(a, b, k + lane);
}

// Calls body(tag) with a std::integral_constant<int, variant>: 0 rows start mid-counter
// (features % 4 != 0), 1 rows start on a counter, 2 also with quad loads and stores.
template <typename Body>
void dispatch_row_variant(bool starts_on_counter, bool quad, const Body& body) {
  if (starts_on_counter && quad) {
    body(std::integral_constant<int, 2>());
  } else if (starts_on_counter) {
    body(std::integral_constant<int, 1>());
  } else {
    body(std::integral_constant<int, 0>());
  }
}

// Calls body.template operator()<storage_t>() for the storage dtype.
template <typename Body>
void dispatch_storage(Storage storage, const Body& body) {
  switch (storage) {
    case Storage::kFloat32:
      body(static_cast<float*>(nullptr));
      break;
    case Storage::kFloat64:
      body(static_cast<double*>(nullptr));
      break;
    case Storage::kFloat16:
      body(static_cast<__half*>(nullptr));
      break;
    case Storage::kBFloat16:
      body(static_cast<__nv_bfloat16*>(nullptr));
      break;
  }
}

// ---- device only: kernels' shared pieces (the host test harness never sees these) ----
#if defined(__CUDACC__)

// CUDA graph capture (kernels.h): (seed, offset) from the device state when there is one,
// else the kernel's arguments are kept. Null outside capture, so that path is unchanged.
__device__ __forceinline__ void read_device_state(const int64_t* state, uint64_t& seed,
                                                  uint64_t& offset) {
  if (state != nullptr) {
    seed = static_cast<uint64_t>(state[0]);
    offset = static_cast<uint64_t>(state[1]);
  }
}

// --- deterministic sums over the batch --------------------------------------------------

// Sums acc over the block's row lanes (threadIdx.y) pairwise in a fixed order, then row
// lane 0 stores plane p's lanes at out[p * plane_stride + f0 + lane] for f0 + lane <
// features. Every block must call it (it synchronizes).
template <typename opmath_t, int kPlanes>
__device__ __forceinline__ void block_sum_store(opmath_t (&acc)[kPlanes][4], opmath_t* out,
                                                int64_t plane_stride, int64_t f0,
                                                int64_t features) {
  __shared__ opmath_t partial[kPlanes][4][kReduceThreads];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
#pragma unroll
  for (int p = 0; p < kPlanes; ++p) {
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) partial[p][lane][tid] = acc[p][lane];
  }
  __syncthreads();
  for (int half = blockDim.y / 2; half > 0; half /= 2) {  // blockDim.y: a power of two
    if (static_cast<int>(threadIdx.y) < half) {
      const int other = tid + half * blockDim.x;
#pragma unroll
      for (int p = 0; p < kPlanes; ++p) {
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) partial[p][lane][tid] += partial[p][lane][other];
      }
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && f0 < features) {
    const int n = lanes_left(features - f0);
#pragma unroll
    for (int p = 0; p < kPlanes; ++p) {
#pragma unroll
      for (int lane = 0; lane < 4; ++lane) {
        if (lane < n) out[p * plane_stride + f0 + lane] = partial[p][lane][tid];
      }
    }
  }
}

constexpr int kSumFeatures = 32;  // block (kSumFeatures, kSumChunkLanes) of the second pass
constexpr int kSumChunkLanes = kReduceThreads / kSumFeatures;

// Second pass: sums[plane][f] = the sum of partials[plane][c][f] over chunks c, each
// thread over every kSumChunkLanes-th chunk in order, then pairwise across the block.
// Grid (ceil(features / kSumFeatures), planes).
template <typename opmath_t>
__global__ void sum_partials_kernel(const opmath_t* __restrict__ partials,
                                    opmath_t* __restrict__ sums, int64_t chunks,
                                    int64_t features) {
  __shared__ opmath_t partial[kSumChunkLanes][kSumFeatures];
  const int64_t f = blockIdx.x * static_cast<int64_t>(kSumFeatures) + threadIdx.x;
  const opmath_t* plane = partials + blockIdx.y * chunks * features;
  opmath_t acc = 0;
  if (f < features) {
    for (int64_t c = threadIdx.y; c < chunks; c += kSumChunkLanes) acc += plane[c * features + f];
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  for (int half = kSumChunkLanes / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.y) < half) {
      partial[threadIdx.y][threadIdx.x] += partial[threadIdx.y + half][threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && f < features) sums[blockIdx.y * features + f] = partial[0][threadIdx.x];
}

template <typename opmath_t>
void launch_sum_partials(cudaStream_t stream, const opmath_t* partials, opmath_t* sums,
                         int planes, int64_t chunks, int64_t features) {
  const dim3 grid(static_cast<unsigned>((features + kSumFeatures - 1) / kSumFeatures), planes);
  sum_partials_kernel<opmath_t>
      <<<grid, dim3(kSumFeatures, kSumChunkLanes), 0, stream>>>(partials, sums, chunks, features);
}

#endif  // __CUDACC__

}  // namespace cuda
}  // namespace fastnoise
