// Launch helpers shared by the CUDA kernels: one thread per Philox counter (four
// elements, one normal4/uniform4 call), grid-stride loops with int64 indices, launches
// on the current stream.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

namespace fastnoise {
namespace cuda {

constexpr int kThreads = 256;

// Enough blocks to fill the GPU a few times over; the grid-stride loop does the rest.
inline int blocks_for(int64_t work_items) {
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  const int64_t cap = 8LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::max<int64_t>(1, std::min(needed, cap)));
}

inline cudaStream_t stream() { return at::cuda::getCurrentCUDAStream(); }

#define FASTNOISE_GRID_STRIDE(index, count)                                          \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       index < (count); index += static_cast<int64_t>(gridDim.x) * blockDim.x)

}  // namespace cuda
}  // namespace fastnoise
