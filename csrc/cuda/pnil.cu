// PNIL kernels (bodies in pnil_body.h). Forward Eq. (2)-(3): y = x + z * exp((x * w + b) / 2).
// Backward with z regenerated: grad_x, and grad_w, grad_b summed over the batch as
// per-block partials in a fixed order (no atomics): the same bits every run.
// channels_last tensors are read in place (channels_last.h).
#include "pnil_body.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void pnil_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ w,
                                    const opmath_t* __restrict__ b, T* __restrict__ y,
                                    int64_t numel, int64_t features, uint64_t seed,
                                    uint64_t offset, bool quad, bool quad_params,
                                    const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  pnil_forward_thread(x, w, b, y, numel, features,
                      blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                      static_cast<int64_t>(gridDim.x) * blockDim.x, seed, offset, quad,
                      quad_params);
}

template <typename T, typename opmath_t>
__global__ void pnil_forward_nhwc_kernel(const T* __restrict__ x, const opmath_t* __restrict__ w,
                                         const opmath_t* __restrict__ b, T* __restrict__ y,
                                         int64_t numel, ChannelsLast layout, uint64_t seed,
                                         uint64_t offset, bool quad_params,
                                         const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  pnil_forward_nhwc_thread(x, w, b, y, numel, layout,
                           blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                           static_cast<int64_t>(gridDim.x) * blockDim.x, seed, offset,
                           quad_params);
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
    pnil_grad_rows<T, opmath_t, kVariant>(grad, x, w, b, grad_x, f0, features,
                                          row_begin + threadIdx.y, row_end, blockDim.y, seed,
                                          offset, acc[0], acc[1]);
  }
  block_sum_store(acc, out + blockIdx.y * features, static_cast<int64_t>(gridDim.y) * features,
                  f0, features);
}

// The same over channels_last grad_y, x and grad_x: feature quads channel-fastest
// (nhwc_feature_quad), so a warp reads neighbouring channels of each row's pixels.
template <typename T, typename opmath_t>
__global__ void pnil_backward_nhwc_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                                          const opmath_t* __restrict__ weight,
                                          const opmath_t* __restrict__ bias,
                                          T* __restrict__ grad_x, opmath_t* __restrict__ out,
                                          int64_t rows, int64_t features, ChannelsLast layout,
                                          int64_t rows_per_chunk, uint64_t seed, uint64_t offset,
                                          const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const NhwcReductionThread t = nhwc_reduction_thread(rows, features, layout, rows_per_chunk);
  opmath_t acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  if (t.active) {
    opmath_t w[4], b[4];  // the same for every row: loaded once
    load_elements(weight + t.at.feature, 4, false, w);
    load_elements(bias + t.at.feature, 4, false, b);
    pnil_grad_nhwc_rows<T, opmath_t>(grad, x, w, b, grad_x, t.at, features, layout.channels,
                                     t.row_begin + threadIdx.y, t.row_end, blockDim.y, seed,
                                     offset, acc[0], acc[1]);
  }
  block_sum_store(acc, out + blockIdx.y * features, static_cast<int64_t>(gridDim.y) * features,
                  t.active ? t.at.feature : features, features);
}

}  // namespace

void launch_pnil_forward(Launch launch, Storage storage, const void* x, const void* weight,
                         const void* bias, void* y, int64_t numel, int64_t features,
                         uint64_t seed, uint64_t offset, const int64_t* device_state,
                         ChannelsLast layout) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    const bool quad_params = features % 4 == 0 && quad_aligned<opmath_t>(weight) &&
                             quad_aligned<opmath_t>(bias);
    const int blocks = blocks_for(launch, (numel + 3) / 4);
    if (layout.enabled()) {
      pnil_forward_nhwc_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
          static_cast<const T*>(x), static_cast<const opmath_t*>(weight),
          static_cast<const opmath_t*>(bias), static_cast<T*>(y), numel, layout, seed, offset,
          quad_params, device_state);
      return;
    }
    pnil_forward_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<const opmath_t*>(weight),
            static_cast<const opmath_t*>(bias), static_cast<T*>(y), numel, features, seed, offset,
            quad, quad_params, device_state);
  });
}

void launch_pnil_backward(Launch launch, Storage storage, const void* grad, const void* x,
                          const void* weight, const void* bias, void* grad_x, void* sums,
                          void* partials, const ReductionPlan& plan, int64_t numel,
                          int64_t features, uint64_t seed, uint64_t offset,
                          const int64_t* device_state, ChannelsLast layout) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool starts_on_counter = features % 4 == 0;
    const bool quad = quad_aligned<T>(grad) && quad_aligned<T>(x) && quad_aligned<T>(grad_x);
    auto* out = static_cast<opmath_t*>(plan.chunks > 1 ? partials : sums);
    const dim3 grid(static_cast<unsigned>(plan.feature_tiles), static_cast<unsigned>(plan.chunks));
    const dim3 block(plan.quads_per_block, plan.row_lanes);
    if (layout.enabled()) {
      pnil_backward_nhwc_kernel<T, opmath_t><<<grid, block, 0, launch.stream>>>(
          static_cast<const T*>(grad), static_cast<const T*>(x),
          static_cast<const opmath_t*>(weight), static_cast<const opmath_t*>(bias),
          static_cast<T*>(grad_x), out, numel / features, features, layout, plan.rows_per_chunk,
          seed, offset, device_state);
    } else {
      dispatch_row_variant(starts_on_counter, quad, [&](auto variant) {
        pnil_backward_kernel<T, opmath_t, decltype(variant)::value>
            <<<grid, block, 0, launch.stream>>>(
                static_cast<const T*>(grad), static_cast<const T*>(x),
                static_cast<const opmath_t*>(weight), static_cast<const opmath_t*>(bias),
                static_cast<T*>(grad_x), out, numel / features, features, plan.rows_per_chunk,
                seed, offset, device_state);
      });
    }
    if (plan.chunks > 1) {
      launch_sum_partials(launch.stream, out, static_cast<opmath_t*>(sums), 2, plan.chunks,
                          features);
    }
  });
}

}  // namespace cuda
}  // namespace fastnoise
