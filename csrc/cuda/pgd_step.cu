// One L-inf PGD iterate in a single pass:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi).
// Four elements per thread, one access each for x, grad, x0 and out where aligned
// (body in pgd_step_body.h). channels_last tensors run flat: the step draws no noise.
#include "pgd_step_body.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename T, typename opmath_t>
__global__ void pgd_step_kernel(const T* __restrict__ x, const T* __restrict__ grad,
                                const T* __restrict__ x_orig, T* __restrict__ out, int64_t numel,
                                opmath_t step, opmath_t eps, opmath_t lo, opmath_t hi,
                                bool quad) {
  pgd_step_thread(x, grad, x_orig, out, numel,
                  blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x,
                  static_cast<int64_t>(gridDim.x) * blockDim.x, step, eps, lo, hi, quad);
}

}  // namespace

void launch_pgd_step(Launch launch, Storage storage, const void* x_adv, const void* grad,
                     const void* x_orig, void* out, int64_t numel, double step_size, double eps,
                     double clip_min, double clip_max) {
  dispatch_storage(storage, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using opmath_t = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x_adv) && quad_aligned<T>(grad) &&
                      quad_aligned<T>(x_orig) && quad_aligned<T>(out);
    pgd_step_kernel<T, opmath_t>
        <<<blocks_for(launch, (numel + 3) / 4), kThreads, 0, launch.stream>>>(
            static_cast<const T*>(x_adv), static_cast<const T*>(grad),
            static_cast<const T*>(x_orig), static_cast<T*>(out), numel,
            static_cast<opmath_t>(step_size), static_cast<opmath_t>(eps),
            static_cast<opmath_t>(clip_min), static_cast<opmath_t>(clip_max), quad);
  });
}

}  // namespace cuda
}  // namespace fastnoise
