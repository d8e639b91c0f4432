// Learn2Perturb noise injection, the kernels' thread bodies: forward y = x + sigma * z
// (Eq. (4)-(5)), and the per-feature sums of grad_y * z behind d loss / d sigma, z
// regenerated from (seed, offset). Row-major and channels_last (channels_last.h) bodies
// share the arithmetic. Host-compilable: tests/cuda_host runs them on the CPU.
#pragma once

#include <cassert>  // __assert_fail, which CUDA also provides on the device

#include "../philox.h"
#include "channels_last.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {

// y = x + sigma * z for one quad, Eq. (4)-(5).
template <typename opmath_t>
FASTNOISE_HD void inject_quad(const opmath_t x[4], const opmath_t s[4], const float z[4],
                              opmath_t y[4]) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    // The front door's sigma >= 0 check, here instead of three more launches (NaN fails).
    if (!(s[lane] >= opmath_t(0))) {
      __assert_fail("sigma must be non-negative and not NaN", __FILE__, __LINE__, __func__);
    }
    y[lane] = x[lane] + s[lane] * static_cast<opmath_t>(z[lane]);
  }
}

// One Philox counter: elements 4 * counter .. + 3 (fewer at the end of x). quad: x and y
// aligned (one access for the four); quad_sigma: sigma aligned and features % 4 == 0.
template <typename T, typename opmath_t>
FASTNOISE_HD void noise_forward_counter(const T* x, const opmath_t* sigma, T* y, int64_t numel,
                                        int64_t counter, const FeatureCursor& cursor,
                                        uint64_t seed, uint64_t offset, bool quad,
                                        bool quad_sigma) {
  float z[4];
  normal4(offset + static_cast<uint64_t>(counter), seed, z);
  const int64_t i = 4 * counter;
  const int n = lanes_left(numel - i);
  opmath_t xv[4], s[4], yv[4];
  load_elements(x + i, n, quad, xv);
  cursor.gather(sigma, quad_sigma, s);
  inject_quad(xv, s, z, yv);
  store_elements(y + i, n, quad, yv);
}

// A thread of the row-major forward: counters first, first + stride, ...
template <typename T, typename opmath_t>
FASTNOISE_HD void noise_forward_thread(const T* x, const opmath_t* sigma, T* y, int64_t numel,
                                       int64_t features, int64_t first, int64_t stride,
                                       uint64_t seed, uint64_t offset, bool quad,
                                       bool quad_sigma) {
  FeatureCursor cursor(first, stride, features);
  for (int64_t counter = first; counter < (numel + 3) / 4; counter += stride, cursor.advance()) {
    noise_forward_counter(x, sigma, y, numel, counter, cursor, seed, offset, quad, quad_sigma);
  }
}

// A thread of the channels_last forward: quads first, first + stride, ... of NhwcCursor.
// numel % 4 == 0; quad_sigma: sigma aligned (features % 4 == 0 always holds here).
template <typename T, typename opmath_t>
FASTNOISE_HD void noise_forward_nhwc_thread(const T* x, const opmath_t* sigma, T* y,
                                            int64_t numel, ChannelsLast layout, int64_t first,
                                            int64_t stride, uint64_t seed, uint64_t offset,
                                            bool quad_sigma) {
  NhwcCursor at(first, stride, layout.channels, layout.pixels);
  for (int64_t q = first; q < numel / 4; q += stride, at.advance()) {
    float z[4];
    normal4(offset + static_cast<uint64_t>(at.logical() / 4), seed, z);
    opmath_t xv[4], s[4], yv[4];
    load_strided(x + at.memory(), layout.channels, xv);
    load_elements(sigma + at.feature(), 4, quad_sigma, s);
    inject_quad(xv, s, z, yv);
    store_strided(y + at.memory(), layout.channels, yv);
  }
}

// Rows row, row + row_step, ... < row_end of the feature quad f0 .. f0 + 3 (row-major):
// acc += grad_y * z. kVariant (dispatch_row_variant): 0 rows start mid-counter, 1 on a
// counter, 2 also with quad loads.
template <typename T, typename opmath_t, int kVariant>
FASTNOISE_HD void noise_grad_rows(const T* grad, int64_t f0, int64_t features, int64_t row,
                                  int64_t row_end, int64_t row_step, uint64_t seed,
                                  uint64_t offset, opmath_t acc[4]) {
  constexpr bool kStartsOnCounter = kVariant >= 1, kQuad = kVariant == 2;
  const int n = kStartsOnCounter ? 4 : lanes_left(features - f0);
  for (; row < row_end; row += row_step) {
    const int64_t i = row * features + f0;
    float z[4];
    quad_normals<kStartsOnCounter>(i, n, seed, offset, z);
    opmath_t g[4];
    load_elements(grad + i, n, kQuad, g);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      if (lane < n) acc[lane] += g[lane] * static_cast<opmath_t>(z[lane]);
    }
  }
}

// The same rows of a channels_last grad_y: feature quad `at` (nhwc_feature_quad).
template <typename T, typename opmath_t>
FASTNOISE_HD void noise_grad_nhwc_rows(const T* grad, NhwcFeatureQuad at, int64_t features,
                                       int64_t channels, int64_t row, int64_t row_end,
                                       int64_t row_step, uint64_t seed, uint64_t offset,
                                       opmath_t acc[4]) {
  for (; row < row_end; row += row_step) {
    float z[4];
    normal4(offset + static_cast<uint64_t>((row * features + at.feature) / 4), seed, z);
    opmath_t g[4];
    load_strided(grad + row * features + at.memory, channels, g);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) acc[lane] += g[lane] * static_cast<opmath_t>(z[lane]);
  }
}

}  // namespace cuda
}  // namespace fastnoise
