// One L-inf PGD iterate in a single pass:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi).
#include "../clamp.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void pgd_step_kernel(const T* __restrict__ x, const T* __restrict__ grad,
                                const T* __restrict__ x_orig, T* __restrict__ out, int64_t numel,
                                opmath_t step, opmath_t eps, opmath_t lo, opmath_t hi) {
  FASTNOISE_GRID_STRIDE(i, numel) {
    const opmath_t g = load(grad + i), x0 = load(x_orig + i);
    const opmath_t sign = static_cast<opmath_t>(g > 0) - static_cast<opmath_t>(g < 0);
    opmath_t v = load(x + i) + step * sign;
    v = clamp_keep_nan(v, x0 - eps, x0 + eps);  // x0 may be NaN: then so is the result
    store(out + i, clamp_keep_nan(v, lo, hi));
  }
}

}  // namespace

void launch_pgd_step(Launch launch, Storage storage, const void* x_adv, const void* grad,
                     const void* x_orig, void* out, int64_t numel, double step_size, double eps,
                     double clip_min, double clip_max) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    pgd_step_kernel<T, opmath_t><<<blocks_for(launch, numel), kThreads, 0, launch.stream>>>(
        static_cast<const T*>(x_adv), static_cast<const T*>(grad), static_cast<const T*>(x_orig),
        static_cast<T*>(out), numel, static_cast<opmath_t>(step_size),
        static_cast<opmath_t>(eps), static_cast<opmath_t>(clip_min),
        static_cast<opmath_t>(clip_max));
  });
}

}  // namespace cuda
}  // namespace fastnoise
