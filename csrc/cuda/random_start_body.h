// PGD / RFGSM / NFGSM random start, the kernels' thread bodies: x + eps * (2u - 1), u from
// the spec, clipped to the box (an infinite box when not projecting). Row-major and
// channels_last (channels_last.h) bodies share the arithmetic. Host-compilable:
// tests/cuda_host runs them on the CPU.
#pragma once

#include "../clamp.h"
#include "../philox.h"
#include "channels_last.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {

template <typename opmath_t>
FASTNOISE_HD void random_start_quad(opmath_t v[4], const float u[4], opmath_t eps, opmath_t lo,
                                    opmath_t hi) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    v[lane] = clamp_keep_nan(
        v[lane] + eps * (opmath_t(2) * static_cast<opmath_t>(u[lane]) - opmath_t(1)), lo, hi);
  }
}

// A thread of the row-major kernel: counters first, first + stride, ... (elements
// 4 * counter .. + 3, fewer at the end of x); quad: x and out aligned.
template <typename T, typename opmath_t>
FASTNOISE_HD void random_start_thread(const T* x, T* out, int64_t numel, int64_t first,
                                      int64_t stride, opmath_t eps, opmath_t lo, opmath_t hi,
                                      uint64_t seed, uint64_t offset, bool quad) {
  for (int64_t counter = first; counter < (numel + 3) / 4; counter += stride) {
    float u[4];
    uniform4(offset + static_cast<uint64_t>(counter), seed, u);
    const int64_t i = 4 * counter;
    const int n = lanes_left(numel - i);
    opmath_t v[4];
    load_elements(x + i, n, quad, v);
    random_start_quad(v, u, eps, lo, hi);
    store_elements(out + i, n, quad, v);
  }
}

// A thread of the channels_last kernel: quads first, first + stride, ... of NhwcCursor.
template <typename T, typename opmath_t>
FASTNOISE_HD void random_start_nhwc_thread(const T* x, T* out, int64_t numel,
                                           ChannelsLast layout, int64_t first, int64_t stride,
                                           opmath_t eps, opmath_t lo, opmath_t hi, uint64_t seed,
                                           uint64_t offset) {
  NhwcCursor at(first, stride, layout.channels, layout.pixels);
  for (int64_t q = first; q < numel / 4; q += stride, at.advance()) {
    float u[4];
    uniform4(offset + static_cast<uint64_t>(at.logical() / 4), seed, u);
    opmath_t v[4];
    load_strided(x + at.memory(), layout.channels, v);
    random_start_quad(v, u, eps, lo, hi);
    store_strided(out + at.memory(), layout.channels, v);
  }
}

}  // namespace cuda
}  // namespace fastnoise
