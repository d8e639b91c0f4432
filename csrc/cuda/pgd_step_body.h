// One L-inf PGD iterate, the kernel's thread body:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi), a NaN kept as NaN.
// Host-compilable: tests/cuda_host runs it on the CPU.
#pragma once

#include "../clamp.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {

// A thread's quads first, first + stride, ...: elements 4 * quad .. + 3 (fewer at the end);
// quad: every pointer aligned.
template <typename T, typename opmath_t>
FASTNOISE_HD void pgd_step_thread(const T* x, const T* grad, const T* x_orig, T* out,
                                  int64_t numel, int64_t first, int64_t stride, opmath_t step,
                                  opmath_t eps, opmath_t lo, opmath_t hi, bool quad) {
  for (int64_t q = first; q < (numel + 3) / 4; q += stride) {
    const int64_t i = 4 * q;
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
}

}  // namespace cuda
}  // namespace fastnoise
