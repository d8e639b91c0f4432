// PGD / RFGSM / NFGSM random start kernels (bodies in random_start_body.h): one thread per
// Philox counter; channels_last tensors are read in place (channels_last.h).
#include "random_start_body.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void random_start_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t numel,
                                    opmath_t eps, opmath_t lo, opmath_t hi, uint64_t seed,
                                    uint64_t offset, bool quad,
                                    const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  random_start_thread(x, out, numel, blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                      static_cast<int64_t>(gridDim.x) * blockDim.x, eps, lo, hi, seed, offset,
                      quad);
}

template <typename T, typename opmath_t>
__global__ void random_start_nhwc_kernel(const T* __restrict__ x, T* __restrict__ out,
                                         int64_t numel, ChannelsLast layout, opmath_t eps,
                                         opmath_t lo, opmath_t hi, uint64_t seed, uint64_t offset,
                                         const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  random_start_nhwc_thread(x, out, numel, layout,
                           blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                           static_cast<int64_t>(gridDim.x) * blockDim.x, eps, lo, hi, seed,
                           offset);
}

}  // namespace

void launch_random_start(Launch launch, Storage storage, const void* x, void* out, int64_t numel,
                         double eps, double clip_min, double clip_max, uint64_t seed,
                         uint64_t offset, const int64_t* device_state, ChannelsLast layout) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const int blocks = blocks_for(launch, (numel + 3) / 4);
    const auto e = static_cast<opmath_t>(eps), lo = static_cast<opmath_t>(clip_min),
               hi = static_cast<opmath_t>(clip_max);
    if (layout.enabled()) {
      random_start_nhwc_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
          static_cast<const T*>(x), static_cast<T*>(out), numel, layout, e, lo, hi, seed, offset,
          device_state);
      return;
    }
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(out);
    random_start_kernel<T, opmath_t><<<blocks, kThreads, 0, launch.stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), numel, e, lo, hi, seed, offset, quad,
        device_state);
  });
}

}  // namespace cuda
}  // namespace fastnoise
