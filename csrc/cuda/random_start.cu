// PGD / RFGSM / NFGSM random start: x + eps * (2u - 1), u from the spec, clipped to the
// box (an infinite box when not projecting); one thread per Philox counter.
#include "../clamp.h"
#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

// Elements 4 * counter .. + 3 (fewer at the end of x); quad: x and out aligned.
template <typename T, typename opmath_t>
FASTNOISE_HD void random_start_counter(const T* x, T* out, int64_t numel, int64_t counter,
                                       opmath_t eps, opmath_t lo, opmath_t hi, uint64_t seed,
                                       uint64_t offset, bool quad) {
  float u[4];
  uniform4(offset + static_cast<uint64_t>(counter), seed, u);
  const int64_t i = 4 * counter;
  const int n = lanes_left(numel - i);
  opmath_t v[4];
  load_elements(x + i, n, quad, v);
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) {
    v[lane] = clamp_keep_nan(
        v[lane] + eps * (opmath_t(2) * static_cast<opmath_t>(u[lane]) - opmath_t(1)), lo, hi);
  }
  store_elements(out + i, n, quad, v);
}

template <typename T, typename opmath_t>
__global__ void random_start_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t numel,
                                    opmath_t eps, opmath_t lo, opmath_t hi, uint64_t seed,
                                    uint64_t offset, bool quad,
                                    const int64_t* __restrict__ device_state) {
  read_device_state(device_state, seed, offset);
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    random_start_counter(x, out, numel, counter, eps, lo, hi, seed, offset, quad);
  }
}

}  // namespace

void launch_random_start(Launch launch, Storage storage, const void* x, void* out, int64_t numel,
                         double eps, double clip_min, double clip_max, uint64_t seed,
                         uint64_t offset, const int64_t* device_state) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(out);
    random_start_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<T*>(out), numel, static_cast<opmath_t>(eps),
            static_cast<opmath_t>(clip_min), static_cast<opmath_t>(clip_max), seed, offset, quad,
            device_state);
  });
}

}  // namespace cuda
}  // namespace fastnoise
