// The raw Philox4x32-10 words of given counters on CUDA: the spec test of philox.h on
// the device.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"
#include "../philox.h"
#include "launch.h"

namespace fastnoise {
namespace cuda {
namespace {

__global__ void philox_words_kernel(const int64_t* __restrict__ counters, int64_t* __restrict__ words,
                                    int64_t count, uint64_t seed) {
  FASTNOISE_GRID_STRIDE(i, count) {
    uint32_t w[4];
    philox4x32_10(static_cast<uint64_t>(counters[i]), seed, w);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) words[4 * i + lane] = w[lane];
  }
}

at::Tensor philox_words(const at::Tensor& counters_in, int64_t seed) {
  TORCH_CHECK_TYPE(counters_in.scalar_type() == at::kLong, "counters must be int64, got ",
              counters_in.scalar_type());
  check_seed_offset(seed, 0);
  const c10::cuda::CUDAGuard guard(counters_in.device());
  const at::Tensor counters = counters_in.contiguous().view(-1);
  at::Tensor words = at::empty({counters.numel(), 4}, counters.options());
  const int64_t count = counters.numel();
  if (count == 0) return words;
  philox_words_kernel<<<blocks_for(count), kThreads, 0, stream()>>>(
      counters.const_data_ptr<int64_t>(), words.mutable_data_ptr<int64_t>(), count, seed);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return words;
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) { m.impl("philox_words", &fastnoise::cuda::philox_words); }
