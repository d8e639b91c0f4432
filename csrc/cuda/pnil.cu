// PNIL kernels. Forward Eq. (2)-(3): y = x + z * exp((x * w + b) / 2). Backward with z
// regenerated: gs = grad_y * z * exp((x * w + b) / 2) / 2, grad_x = grad_y + gs * w,
// grad_w = sum gs * x and grad_b = sum gs over the batch, as per-block partials in a
// fixed order (no atomics): the same bits every run.
#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

FASTNOISE_HD float exp_opmath(float v) { return exp_approx(v); }
FASTNOISE_HD double exp_opmath(double v) { return exp(v); }

// One Philox counter: elements 4 * counter .. + 3 (fewer at the end of x), Eq. (2)-(3).
template <typename T, typename opmath_t>
FASTNOISE_HD void pnil_forward_counter(const T* x, const opmath_t* w, const opmath_t* b, T* y,
                                       int64_t numel, int64_t counter,
                                       const FeatureCursor& cursor, uint64_t seed,
                                       uint64_t offset, bool quad, bool quad_params) {
  float z[4];
  normal4(offset + static_cast<uint64_t>(counter), seed, z);
  const int64_t i = 4 * counter;
  const int n = lanes_left(numel - i);
  opmath_t xv[4], wv[4], bv[4], yv[4];
  load_elements(x + i, n, quad, xv);
  cursor.gather(w, quad_params, wv);
  cursor.gather(b, quad_params, bv);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const opmath_t scale = exp_opmath((xv[lane] * wv[lane] + bv[lane]) * opmath_t(0.5));
    yv[lane] = xv[lane] + static_cast<opmath_t>(z[lane]) * scale;
  }
  store_elements(y + i, n, quad, yv);
}

template <typename T, typename opmath_t>
__global__ void pnil_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ w,
                                    const opmath_t* __restrict__ b, T* __restrict__ y,
                                    int64_t numel, int64_t features, uint64_t seed,
                                    uint64_t offset, bool quad, bool quad_params,
                                    const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  FeatureCursor cursor(first, stride, features);
  for (int64_t counter = first; counter < (numel + 3) / 4; counter += stride, cursor.advance()) {
    pnil_forward_counter(x, w, b, y, numel, counter, cursor, seed, offset, quad, quad_params);
  }
}

// One row of the thread's feature quad f0 .. f0 + 3 (w, b: its parameters): grad_x, and
// acc_w += gs * x, acc_b += gs.
template <typename T, typename opmath_t, int kVariant>
FASTNOISE_HD void pnil_grad_row(const T* grad, const T* x, const opmath_t w[4],
                                const opmath_t b[4], T* grad_x, int64_t row, int64_t f0,
                                int64_t features, uint64_t seed, uint64_t offset,
                                opmath_t acc_w[4], opmath_t acc_b[4]) {
  constexpr bool kStartsOnCounter = kVariant >= 1, kQuad = kVariant == 2;
  const int64_t i = row * features + f0;
  const int n = kStartsOnCounter ? 4 : lanes_left(features - f0);
  float z[4];
  quad_normals<kStartsOnCounter>(i, n, seed, offset, z);
  opmath_t xv[4], g[4], gx[4];
  load_elements(x + i, n, kQuad, xv);
  load_elements(grad + i, n, kQuad, g);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    const opmath_t half_noise = opmath_t(0.5) * static_cast<opmath_t>(z[lane]) *
                                exp_opmath((xv[lane] * w[lane] + b[lane]) * opmath_t(0.5));
    const opmath_t g_sigma = g[lane] * half_noise;
    gx[lane] = g[lane] + g_sigma * w[lane];
    if (lane < n) {
      acc_w[lane] += g_sigma * xv[lane];
      acc_b[lane] += g_sigma;
    }
  }
  store_elements(grad_x + i, n, kQuad, gx);
}

// Grid (feature tiles, row chunks), block (feature quads, row lanes): see ReductionPlan.
// Writes grad_x and the chunk's sums: grad_w's at out[blockIdx.y * features + f], grad_b's
// one plane (gridDim.y * features) further.
template <typename T, typename opmath_t, int kVariant>
__global__ void pnil_backward_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                     const opmath_t* __restrict__ weight,
                                     const opmath_t* __restrict__ bias, T* __restrict__ grad_x,
                                     opmath_t* __restrict__ out, int64_t rows, int64_t features,
                                     int64_t rows_per_chunk, uint64_t seed, uint64_t offset,
                                     const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const int64_t f0 = 4 * (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x);
  const int64_t row_begin = blockIdx.y * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;
  opmath_t acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  if (f0 < features) {
    opmath_t w[4], b[4];  // the same for every row: loaded once
    load_elements(weight + f0, lanes_left(features - f0), false, w);
    load_elements(bias + f0, lanes_left(features - f0), false, b);
    for (int64_t row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
      pnil_grad_row<T, opmath_t, kVariant>(grad, x, w, b, grad_x, row, f0, features, seed,
                                           offset, acc[0], acc[1]);
    }
  }
  block_sum_store(acc, out + blockIdx.y * features, static_cast<int64_t>(gridDim.y) * features,
                  f0, features);
}

}  // namespace

void launch_pnil_forward(Launch launch, Storage storage, const void* x, const void* weight,
                         const void* bias, void* y, int64_t numel, int64_t features,
                         uint64_t seed, uint64_t offset, const int64_t* device_state) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    const bool quad_params = features % 4 == 0 && quad_aligned<opmath_t>(weight) &&
                             quad_aligned<opmath_t>(bias);
    pnil_forward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<const opmath_t*>(weight),
            static_cast<const opmath_t*>(bias), static_cast<T*>(y), numel, features, seed, offset,
            quad, quad_params, device_state);
  });
}

void launch_pnil_backward(Launch launch, Storage storage, const void* grad, const void* x,
                          const void* weight, const void* bias, void* grad_x, void* sums,
                          void* partials, const ReductionPlan& plan, int64_t numel,
                          int64_t features, uint64_t seed, uint64_t offset,
                          const int64_t* device_state) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool starts_on_counter = features % 4 == 0;
    const bool quad = quad_aligned<T>(grad) && quad_aligned<T>(x) && quad_aligned<T>(grad_x);
    auto* out = static_cast<opmath_t*>(plan.chunks > 1 ? partials : sums);
    const dim3 grid(static_cast<unsigned>(plan.feature_tiles), static_cast<unsigned>(plan.chunks));
    const dim3 block(plan.quads_per_block, plan.row_lanes);
    dispatch_row_variant(starts_on_counter, quad, [&](auto variant) {
      pnil_backward_kernel<T, opmath_t, decltype(variant)::value>
          <<<grid, block, 0, launch.stream>>>(
              static_cast<const T*>(grad), static_cast<const T*>(x),
              static_cast<const opmath_t*>(weight), static_cast<const opmath_t*>(bias),
              static_cast<T*>(grad_x), out, numel / features, features, plan.rows_per_chunk,
              seed, offset, device_state);
    });
    if (plan.chunks > 1) {
      launch_sum_partials(launch.stream, out, static_cast<opmath_t*>(sums), 2, plan.chunks,
                          features);
    }
  });
}

}  // namespace cuda
}  // namespace fastnoise
