// Learn2Perturb noise injection kernels: forward y = x + sigma * z (Eq. (4)-(5)), and the
// sums of grad_y * z over the batch for grad_sigma, z regenerated from (seed, offset).
// The sums are per-block partials in a fixed order (no atomics): the same bits every run.
#include <cassert>  // __assert_fail, which CUDA also provides on the device

#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

// One Philox counter: elements 4 * counter .. + 3 (fewer at the end of x), Eq. (4)-(5).
// quad: x and y aligned (one access for the four); quad_sigma: sigma aligned and
// features % 4 == 0.
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
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    // The front door's sigma >= 0 check, here instead of three more launches (NaN fails).
    if (!(s[lane] >= opmath_t(0))) {
      __assert_fail("sigma must be non-negative and not NaN", __FILE__, __LINE__, __func__);
    }
    yv[lane] = xv[lane] + s[lane] * static_cast<opmath_t>(z[lane]);
  }
  store_elements(y + i, n, quad, yv);
}

template <typename T, typename opmath_t>
__global__ void noise_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ sigma,
                                     T* __restrict__ y, int64_t numel, int64_t features,
                                     uint64_t seed, uint64_t offset, bool quad, bool quad_sigma,
                                     const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  FeatureCursor cursor(first, stride, features);
  for (int64_t counter = first; counter < (numel + 3) / 4; counter += stride, cursor.advance()) {
    noise_forward_counter(x, sigma, y, numel, counter, cursor, seed, offset, quad, quad_sigma);
  }
}

// One row of the thread's feature quad f0 .. f0 + 3: acc += grad_y * z (the sum behind
// d loss / d sigma of Eq. (4)-(5)).
template <typename T, typename opmath_t, int kVariant>
FASTNOISE_HD void noise_grad_row(const T* grad, int64_t row, int64_t f0, int64_t features,
                                 uint64_t seed, uint64_t offset, opmath_t acc[4]) {
  constexpr bool kStartsOnCounter = kVariant >= 1, kQuad = kVariant == 2;
  const int64_t i = row * features + f0;
  const int n = kStartsOnCounter ? 4 : lanes_left(features - f0);
  float z[4];
  quad_normals<kStartsOnCounter>(i, n, seed, offset, z);
  opmath_t g[4];
  load_elements(grad + i, n, kQuad, g);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    if (lane < n) acc[lane] += g[lane] * static_cast<opmath_t>(z[lane]);
  }
}

// Grid (feature tiles, row chunks), block (feature quads, row lanes): see ReductionPlan.
// Writes the chunk's sums to out[blockIdx.y * features + f].
template <typename T, typename opmath_t, int kVariant>
__global__ void noise_backward_kernel(const T* __restrict__ grad, opmath_t* __restrict__ out,
                                      int64_t rows, int64_t features, int64_t rows_per_chunk,
                                      uint64_t seed, uint64_t offset,
                                      const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const int64_t f0 = 4 * (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x);
  const int64_t row_begin = blockIdx.y * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;
  opmath_t acc[1][4] = {{0, 0, 0, 0}};
  if (f0 < features) {
    for (int64_t row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
      noise_grad_row<T, opmath_t, kVariant>(grad, row, f0, features, seed, offset, acc[0]);
    }
  }
  block_sum_store(acc, out + blockIdx.y * features, 0, f0, features);
}

}  // namespace

void launch_noise_forward(Launch launch, Storage storage, const void* x, const void* sigma,
                          void* y, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset, const int64_t* device_state) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    const bool quad_sigma = features % 4 == 0 && quad_aligned<opmath_t>(sigma);
    noise_forward_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<const opmath_t*>(sigma), static_cast<T*>(y),
            numel, features, seed, offset, quad, quad_sigma, device_state);
  });
}

void launch_noise_backward_sigma(Launch launch, Storage storage, const void* grad, void* sums,
                                 void* partials, const ReductionPlan& plan, int64_t numel,
                                 int64_t features, uint64_t seed, uint64_t offset,
                                 const int64_t* device_state) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool starts_on_counter = features % 4 == 0;
    auto* out = static_cast<opmath_t*>(plan.chunks > 1 ? partials : sums);
    const dim3 grid(static_cast<unsigned>(plan.feature_tiles), static_cast<unsigned>(plan.chunks));
    const dim3 block(plan.quads_per_block, plan.row_lanes);
    dispatch_row_variant(starts_on_counter, quad_aligned<T>(grad), [&](auto variant) {
      noise_backward_kernel<T, opmath_t, decltype(variant)::value>
          <<<grid, block, 0, launch.stream>>>(static_cast<const T*>(grad), out,
                                              numel / features, features, plan.rows_per_chunk,
                                              seed, offset, device_state);
    });
    if (plan.chunks > 1) {
      launch_sum_partials(launch.stream, out, static_cast<opmath_t*>(sums), 1, plan.chunks,
                          features);
    }
  });
}

}  // namespace cuda
}  // namespace fastnoise
