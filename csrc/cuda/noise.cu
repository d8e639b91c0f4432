// Learn2Perturb noise injection kernels (bodies in noise_body.h): forward y = x + sigma * z
// (Eq. (4)-(5)), and the sums of grad_y * z over the batch for grad_sigma, z regenerated
// from (seed, offset). The sums are per-block partials in a fixed order (no atomics): the
// same bits every run. channels_last tensors are read in place (channels_last.h).
#include "noise_body.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void noise_forward_kernel(const T* __restrict__ x, const opmath_t* __restrict__ sigma,
                                     T* __restrict__ y, int64_t numel, int64_t features,
                                     uint64_t seed, uint64_t offset, bool quad, bool quad_sigma,
                                     const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  noise_forward_thread(x, sigma, y, numel, features,
                       blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                       static_cast<int64_t>(gridDim.x) * blockDim.x, seed, offset, quad,
                       quad_sigma);
}

template <typename T, typename opmath_t>
__global__ void noise_forward_nhwc_kernel(const T* __restrict__ x,
                                          const opmath_t* __restrict__ sigma, T* __restrict__ y,
                                          int64_t numel, ChannelsLast layout, uint64_t seed,
                                          uint64_t offset, bool quad_sigma,
                                          const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  noise_forward_nhwc_thread(x, sigma, y, numel, layout,
                            blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                            static_cast<int64_t>(gridDim.x) * blockDim.x, seed, offset,
                            quad_sigma);
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
    noise_grad_rows<T, opmath_t, kVariant>(grad, f0, features, row_begin + threadIdx.y,
                                           row_end, blockDim.y, seed, offset, acc[0]);
  }
  block_sum_store(acc, out + blockIdx.y * features, 0, f0, features);
}

// The same reduction over a channels_last grad_y: feature quads channel-fastest
// (nhwc_feature_quad), so a warp reads neighbouring channels of each row's pixels.
template <typename T, typename opmath_t>
__global__ void noise_backward_nhwc_kernel(const T* __restrict__ grad,
                                           opmath_t* __restrict__ out, int64_t rows,
                                           int64_t features, ChannelsLast layout,
                                           int64_t rows_per_chunk, uint64_t seed,
                                           uint64_t offset,
                                           const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  const NhwcReductionThread t = nhwc_reduction_thread(rows, features, layout, rows_per_chunk);
  opmath_t acc[1][4] = {{0, 0, 0, 0}};
  if (t.active) {
    noise_grad_nhwc_rows<T, opmath_t>(grad, t.at, features, layout.channels,
                                      t.row_begin + threadIdx.y, t.row_end, blockDim.y, seed,
                                      offset, acc[0]);
  }
  block_sum_store(acc, out + blockIdx.y * features, 0, t.active ? t.at.feature : features,
                  features);
}

}  // namespace

void launch_noise_forward(Launch launch, Storage storage, const void* x, const void* sigma,
                          void* y, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset, const int64_t* device_state, ChannelsLast layout) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad_sigma = features % 4 == 0 && quad_aligned<opmath_t>(sigma);
    const int blocks = blocks_for(launch, (numel + 3) / 4);
    if (layout.enabled()) {
      noise_forward_nhwc_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
          static_cast<const T*>(x), static_cast<const opmath_t*>(sigma), static_cast<T*>(y),
          numel, layout, seed, offset, quad_sigma, device_state);
      return;
    }
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    noise_forward_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
        static_cast<const T*>(x), static_cast<const opmath_t*>(sigma), static_cast<T*>(y), numel,
        features, seed, offset, quad, quad_sigma, device_state);
  });
}

void launch_noise_backward_sigma(Launch launch, Storage storage, const void* grad, void* sums,
                                 void* partials, const ReductionPlan& plan, int64_t numel,
                                 int64_t features, uint64_t seed, uint64_t offset,
                                 const int64_t* device_state, ChannelsLast layout) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    auto* out = static_cast<opmath_t*>(plan.chunks > 1 ? partials : sums);
    const dim3 grid(static_cast<unsigned>(plan.feature_tiles), static_cast<unsigned>(plan.chunks));
    const dim3 block(plan.quads_per_block, plan.row_lanes);
    if (layout.enabled()) {
      noise_backward_nhwc_kernel<T, opmath_t><<<grid, block, 0, launch.stream>>>(
          static_cast<const T*>(grad), out, numel / features, features, layout,
          plan.rows_per_chunk, seed, offset, device_state);
    } else {
      dispatch_row_variant(features % 4 == 0, quad_aligned<T>(grad), [&](auto variant) {
        noise_backward_kernel<T, opmath_t, decltype(variant)::value>
            <<<grid, block, 0, launch.stream>>>(static_cast<const T*>(grad), out,
                                                numel / features, features, plan.rows_per_chunk,
                                                seed, offset, device_state);
      });
    }
    if (plan.chunks > 1) {
      launch_sum_partials(launch.stream, out, static_cast<opmath_t*>(sums), 1, plan.chunks,
                          features);
    }
  });
}

}  // namespace cuda
}  // namespace fastnoise
