// PNIL, the kernels' thread bodies. Forward Eq. (2)-(3): y = x + z * exp((x * w + b) / 2).
// Backward with z regenerated: gs = grad_y * z * exp((x * w + b) / 2) / 2,
// grad_x = grad_y + gs * w, and the per-feature sums of gs * x (grad_w) and gs (grad_b).
// Row-major and channels_last (channels_last.h) bodies share the arithmetic.
// Host-compilable: tests/cuda_host runs them on the CPU.
#pragma once

#include "../philox.h"
#include "channels_last.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {

FASTNOISE_HD float exp_opmath(float v) { return exp_approx(v); }
FASTNOISE_HD double exp_opmath(double v) { return exp(v); }

// Eq. (2)-(3) for one quad.
template <typename opmath_t>
FASTNOISE_HD void pnil_quad(const opmath_t x[4], const opmath_t w[4], const opmath_t b[4],
                            const float z[4], opmath_t y[4]) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const opmath_t scale = exp_opmath((x[lane] * w[lane] + b[lane]) * opmath_t(0.5));
    y[lane] = x[lane] + static_cast<opmath_t>(z[lane]) * scale;
  }
}

// The backward of Eq. (2)-(3) for the first n lanes of one quad: grad_x, and the sums.
template <typename opmath_t>
FASTNOISE_HD void pnil_grad_quad(const opmath_t g[4], const opmath_t x[4], const opmath_t w[4],
                                 const opmath_t b[4], const float z[4], int n, opmath_t gx[4],
                                 opmath_t acc_w[4], opmath_t acc_b[4]) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const opmath_t half_noise = opmath_t(0.5) * static_cast<opmath_t>(z[lane]) *
                                exp_opmath((x[lane] * w[lane] + b[lane]) * opmath_t(0.5));
    const opmath_t g_sigma = g[lane] * half_noise;
    gx[lane] = g[lane] + g_sigma * w[lane];
    if (lane < n) {
      acc_w[lane] += g_sigma * x[lane];
      acc_b[lane] += g_sigma;
    }
  }
}

// A thread of the row-major forward: counters first, first + stride, ... (elements
// 4 * counter .. + 3, fewer at the end of x). quad: x and y aligned; quad_params: w and b
// aligned and features % 4 == 0.
template <typename T, typename opmath_t>
FASTNOISE_HD void pnil_forward_thread(const T* x, const opmath_t* w, const opmath_t* b, T* y,
                                      int64_t numel, int64_t features, int64_t first,
                                      int64_t stride, uint64_t seed, uint64_t offset, bool quad,
                                      bool quad_params) {
  FeatureCursor cursor(first, stride, features);
  for (int64_t counter = first; counter < (numel + 3) / 4; counter += stride, cursor.advance()) {
    float z[4];
    normal4(offset + static_cast<uint64_t>(counter), seed, z);
    const int64_t i = 4 * counter;
    const int n = lanes_left(numel - i);
    opmath_t xv[4], wv[4], bv[4], yv[4];
    load_elements(x + i, n, quad, xv);
    cursor.gather(w, quad_params, wv);
    cursor.gather(b, quad_params, bv);
    pnil_quad(xv, wv, bv, z, yv);
    store_elements(y + i, n, quad, yv);
  }
}

// A thread of the channels_last forward: quads first, first + stride, ... of NhwcCursor.
template <typename T, typename opmath_t>
FASTNOISE_HD void pnil_forward_nhwc_thread(const T* x, const opmath_t* w, const opmath_t* b,
                                           T* y, int64_t numel, ChannelsLast layout,
                                           int64_t first, int64_t stride, uint64_t seed,
                                           uint64_t offset, bool quad_params) {
  NhwcCursor at(first, stride, layout.channels, layout.pixels);
  for (int64_t q = first; q < numel / 4; q += stride, at.advance()) {
    float z[4];
    normal4(offset + static_cast<uint64_t>(at.logical() / 4), seed, z);
    opmath_t xv[4], wv[4], bv[4], yv[4];
    load_strided(x + at.memory(), layout.channels, xv);
    load_elements(w + at.feature(), 4, quad_params, wv);
    load_elements(b + at.feature(), 4, quad_params, bv);
    pnil_quad(xv, wv, bv, z, yv);
    store_strided(y + at.memory(), layout.channels, yv);
  }
}

// Rows row, row + row_step, ... < row_end of the feature quad f0 .. f0 + 3 (row-major;
// w, b: its parameters): grad_x, acc_w += gs * x, acc_b += gs. kVariant as noise_grad_rows.
template <typename T, typename opmath_t, int kVariant>
FASTNOISE_HD void pnil_grad_rows(const T* grad, const T* x, const opmath_t w[4],
                                 const opmath_t b[4], T* grad_x, int64_t f0, int64_t features,
                                 int64_t row, int64_t row_end, int64_t row_step, uint64_t seed,
                                 uint64_t offset, opmath_t acc_w[4], opmath_t acc_b[4]) {
  constexpr bool kStartsOnCounter = kVariant >= 1, kQuad = kVariant == 2;
  const int n = kStartsOnCounter ? 4 : lanes_left(features - f0);
  for (; row < row_end; row += row_step) {
    const int64_t i = row * features + f0;
    float z[4];
    quad_normals<kStartsOnCounter>(i, n, seed, offset, z);
    opmath_t xv[4], g[4], gx[4];
    load_elements(x + i, n, kQuad, xv);
    load_elements(grad + i, n, kQuad, g);
    pnil_grad_quad(g, xv, w, b, z, n, gx, acc_w, acc_b);
    store_elements(grad_x + i, n, kQuad, gx);
  }
}

// The same rows of channels_last grad_y, x and grad_x: feature quad `at`.
template <typename T, typename opmath_t>
FASTNOISE_HD void pnil_grad_nhwc_rows(const T* grad, const T* x, const opmath_t w[4],
                                      const opmath_t b[4], T* grad_x, NhwcFeatureQuad at,
                                      int64_t features, int64_t channels, int64_t row,
                                      int64_t row_end, int64_t row_step, uint64_t seed,
                                      uint64_t offset, opmath_t acc_w[4], opmath_t acc_b[4]) {
  for (; row < row_end; row += row_step) {
    const int64_t m = row * features + at.memory;
    float z[4];
    normal4(offset + static_cast<uint64_t>((row * features + at.feature) / 4), seed, z);
    opmath_t xv[4], g[4], gx[4];
    load_strided(x + m, channels, xv);
    load_strided(grad + m, channels, g);
    pnil_grad_quad(g, xv, w, b, z, 4, gx, acc_w, acc_b);
    store_strided(grad_x + m, channels, gx);
  }
}

}  // namespace cuda
}  // namespace fastnoise
