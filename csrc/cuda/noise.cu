// Learn2Perturb noise injection kernels: forward y = x + sigma * z (Eq. (4)-(5)) and
// grad_sigma sums of grad_y * z with z regenerated (atomics per feature).
#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void noise_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ sigma,
                                     T* __restrict__ y, int64_t numel, int64_t features,
                                     uint64_t seed, uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        store(y + i, load(x + i) + sigma[i % features] * static_cast<opmath_t>(z[lane]));
      }
    }
  }
}

template <typename T, typename opmath_t>
__global__ void noise_backward_kernel(const T* __restrict__ grad, opmath_t* __restrict__ sums,
                                      int64_t numel, int64_t features, uint64_t seed,
                                      uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        atomicAdd(sums + i % features, load(grad + i) * static_cast<opmath_t>(z[lane]));
      }
    }
  }
}

}  // namespace

void launch_noise_forward(Launch launch, Storage storage, const void* x, const void* sigma,
                          void* y, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    noise_forward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<const opmath_t*>(sigma), static_cast<T*>(y),
            numel, features, seed, offset);
  });
}

void launch_noise_backward_sigma(Launch launch, Storage storage, const void* grad, void* sums,
                                 int64_t numel, int64_t features, uint64_t seed,
                                 uint64_t offset) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    noise_backward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(grad), static_cast<opmath_t*>(sums), numel, features, seed,
            offset);
  });
}

}  // namespace cuda
}  // namespace fastnoise
