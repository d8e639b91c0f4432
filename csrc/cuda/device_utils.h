// Device-side helpers shared by the .cu files: one thread per Philox counter (four
// elements, one normal4/uniform4 call), grid-stride loops with int64 indices, loads and
// stores that convert storage dtypes to the compute dtype, and the dtype switch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels.h"

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

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};

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

}  // namespace cuda
}  // namespace fastnoise
