// PNIL kernels. Forward Eq. (2)-(3): y = x + z * exp((x * w + b) / 2). Backward with z
// regenerated: gs = grad_y * z * exp((x * w + b) / 2) / 2, grad_x = grad_y + gs * w,
// grad_w = sum gs * x and grad_b = sum gs (atomics per feature).
#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

__device__ __forceinline__ float exp_opmath(float v) { return exp_approx(v); }
__device__ __forceinline__ double exp_opmath(double v) { return exp(v); }

template <typename T, typename opmath_t>
__global__ void pnil_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ w,
                                    const opmath_t* __restrict__ b, T* __restrict__ y,
                                    int64_t numel, int64_t features, uint64_t seed,
                                    uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const int64_t f = i % features;
        const opmath_t xv = load(x + i);
        const opmath_t scale = exp_opmath((xv * w[f] + b[f]) * opmath_t(0.5));
        store(y + i, xv + static_cast<opmath_t>(z[lane]) * scale);
      }
    }
  }
}

template <typename T, typename opmath_t>
__global__ void pnil_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                     const opmath_t* __restrict__ w,
                                     const opmath_t* __restrict__ b, T* __restrict__ grad_x,
                                     opmath_t* __restrict__ sums_w, opmath_t* __restrict__ sums_b,
                                     int64_t numel, int64_t features, uint64_t seed,
                                     uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const int64_t f = i % features;
        const opmath_t xv = load(x + i), g = load(grad + i);
        const opmath_t half_noise = opmath_t(0.5) * static_cast<opmath_t>(z[lane]) *
                                    exp_opmath((xv * w[f] + b[f]) * opmath_t(0.5));
        const opmath_t g_sigma = g * half_noise;
        store(grad_x + i, g + g_sigma * w[f]);
        atomicAdd(sums_w + f, g_sigma * xv);
        atomicAdd(sums_b + f, g_sigma);
      }
    }
  }
}

}  // namespace

void launch_pnil_forward(Launch launch, Storage storage, const void* x, const void* weight,
                         const void* bias, void* y, int64_t numel, int64_t features,
                         uint64_t seed, uint64_t offset) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    pnil_forward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<const opmath_t*>(weight),
            static_cast<const opmath_t*>(bias), static_cast<T*>(y), numel, features, seed, offset);
  });
}

void launch_pnil_backward(Launch launch, Storage storage, const void* grad, const void* x,
                          const void* weight, const void* bias, void* grad_x, void* sums_w,
                          void* sums_b, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    pnil_backward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(grad), static_cast<const T*>(x),
            static_cast<const opmath_t*>(weight), static_cast<const opmath_t*>(bias),
            static_cast<T*>(grad_x), static_cast<opmath_t*>(sums_w),
            static_cast<opmath_t*>(sums_b), numel, features, seed, offset);
  });
}

}  // namespace cuda
}  // namespace fastnoise
