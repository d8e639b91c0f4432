// The raw Philox4x32-10 words of given counters on the device: the spec test of philox.h.
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

}  // namespace

void launch_philox_words(Launch launch, const int64_t* counters, int64_t* words, int64_t count,
                         uint64_t seed) {
  philox_words_kernel<<<blocks_for(launch, count), kThreads, 0, launch.stream>>>(counters, words,
                                                                                 count, seed);
}

}  // namespace cuda
}  // namespace fastnoise
