// Launch helpers shared by the CUDA kernels: one thread per Philox counter (four
// elements, one normal4/uniform4 call), grid-stride loops with int64 indices, launches
// on the current stream.
#pragma once

// Only c10/cuda headers (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS/cuSPARSE
// headers that a minimal toolkit lacks): the kernels need a stream, a guard and errors.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace fastnoise {
namespace cuda {

constexpr int kThreads = 256;

// Enough blocks to fill the GPU a few times over; the grid-stride loop does the rest.
inline int blocks_for(int64_t work_items) {
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  const int64_t cap = 8LL * sm_count;
  return static_cast<int>(std::max<int64_t>(1, std::min(needed, cap)));
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

#define FASTNOISE_GRID_STRIDE(index, count)                                          \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       index < (count); index += static_cast<int64_t>(gridDim.x) * blockDim.x)

}  // namespace cuda
}  // namespace fastnoise
