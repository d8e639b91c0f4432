// The raw Philox4x32-10 words of given counters on the device: the spec test of philox.h.
// Also the one kernel of CUDA graph capture that reads torch's generator state (see
// launch_unpack_philox_state in kernels.h).
#include <tuple>  // before PhiloxUtils: torch 2.11's UnpackRaw.cuh uses std::tuple unincluded

#include <ATen/cuda/PhiloxUtils.cuh>  // at::cuda::philox::unpack: header-only, no tensors

#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

__global__ void philox_words_kernel(const int64_t* __restrict__ counters,
                                    int64_t* __restrict__ words, int64_t count, uint64_t seed) {
  FASTNOISE_GRID_STRIDE(i, count) {
    uint32_t w[4];
    philox4x32_10(static_cast<uint64_t>(counters[i]), seed, w);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) words[4 * i + lane] = w[lane];
  }
}

// One thread: torch's (seed, offset) of this replay (read through the pointers that
// torch's graph replay fills) mapped onto the spec's key and counter offset.
__global__ void unpack_philox_state_kernel(at::PhiloxCudaState philox,
                                           int64_t* __restrict__ state) {
  const auto unpacked = at::cuda::philox::unpack(philox);
  constexpr uint64_t kLow63 = 0x7FFFFFFFFFFFFFFFull;  // the spec's range, [0, 2**63)
  state[0] = static_cast<int64_t>(std::get<0>(unpacked) & kLow63);
  state[1] = static_cast<int64_t>(std::get<1>(unpacked) & kLow63);
}

}  // namespace

void launch_unpack_philox_state(cudaStream_t stream, at::PhiloxCudaState philox,
                                int64_t* state) {
  unpack_philox_state_kernel<<<1, 1, 0, stream>>>(philox, state);
}

void launch_philox_words(Launch launch, const int64_t* counters, int64_t* words, int64_t count,
                         uint64_t seed) {
  philox_words_kernel<<<blocks_for(launch, count), kThreads, 0, launch.stream>>>(counters, words,
                                                                                 count, seed);
}

}  // namespace cuda
}  // namespace fastnoise
