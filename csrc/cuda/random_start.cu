// PGD / RFGSM / NFGSM random start: x + eps * (2u - 1), u from the spec, clipped to the
// box (an infinite box when not projecting); one thread per Philox counter.
#include "../clamp.h"
#include "../philox.h"
#include "device_utils.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void random_start_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t numel,
                                    opmath_t eps, opmath_t lo, opmath_t hi, uint64_t seed,
                                    uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float u[4];
    uniform4(offset + counter, seed, u);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const opmath_t v =
            load(x + i) + eps * (opmath_t(2) * static_cast<opmath_t>(u[lane]) - opmath_t(1));
        store(out + i, clamp_keep_nan(v, lo, hi));
      }
    }
  }
}

}  // namespace

void launch_random_start(Launch launch, Storage storage, const void* x, void* out, int64_t numel,
                         double eps, double clip_min, double clip_max, uint64_t seed,
                         uint64_t offset) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    random_start_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x), static_cast<T*>(out), numel, static_cast<opmath_t>(eps),
            static_cast<opmath_t>(clip_min), static_cast<opmath_t>(clip_max), seed, offset);
  });
}

}  // namespace cuda
}  // namespace fastnoise
