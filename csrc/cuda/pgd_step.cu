// One L-inf PGD iterate in a single pass:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi).
// Four elements per thread, one access each for x, grad, x0 and out where aligned.
#include "../clamp.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

// Elements 4 * quad_index .. + 3 (fewer at the end); quad: every pointer aligned.
template <typename T, typename opmath_t>
FASTNOISE_HD void pgd_step_quad(const T* x, const T* grad, const T* x_orig, T* out,
                                int64_t numel, int64_t quad_index, opmath_t step, opmath_t eps,
                                opmath_t lo, opmath_t hi, bool quad) {
  const int64_t i = 4 * quad_index;
  const int n = lanes_left(numel - i);
  opmath_t v[4], g[4], x0[4];
  load_elements(x + i, n, quad, v);
  load_elements(grad + i, n, quad, g);
  load_elements(x_orig + i, n, quad, x0);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const opmath_t sign =
        static_cast<opmath_t>(g[lane] > 0) - static_cast<opmath_t>(g[lane] < 0);
    const opmath_t moved = v[lane] + step * sign;
    // x0 may be NaN: then so is the result
    v[lane] = clamp_keep_nan(clamp_keep_nan(moved, x0[lane] - eps, x0[lane] + eps), lo, hi);
  }
  store_elements(out + i, n, quad, v);
}

template <typename T, typename opmath_t>
__global__ void pgd_step_kernel(const T* __restrict__ x, const T* __restrict__ grad,
                                const T* __restrict__ x_orig, T* __restrict__ out, int64_t numel,
                                opmath_t step, opmath_t eps, opmath_t lo, opmath_t hi,
                                bool quad) {
  FASTNOISE_GRID_STRIDE(quad_index, (numel + 3) / 4) {
    pgd_step_quad(x, grad, x_orig, out, numel, quad_index, step, eps, lo, hi, quad);
  }
}

}  // namespace

void launch_pgd_step(Launch launch, Storage storage, const void* x_adv, const void* grad,
                     const void* x_orig, void* out, int64_t numel, double step_size, double eps,
                     double clip_min, double clip_max) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x_adv) && quad_aligned<T>(grad) &&
                      quad_aligned<T>(x_orig) && quad_aligned<T>(out);
    pgd_step_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x_adv), static_cast<const T*>(grad),
            static_cast<const T*>(x_orig), static_cast<T*>(out), numel,
            static_cast<opmath_t>(step_size), static_cast<opmath_t>(eps),
            static_cast<opmath_t>(clip_min), static_cast<opmath_t>(clip_max), quad);
  });
}

}  // namespace cuda
}  // namespace fastnoise
