// One L-inf PGD iterate on CUDA in a single pass:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"
#include "launch.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename scalar_t, typename opmath_t>
__global__ void pgd_step_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ grad,
                                const scalar_t* __restrict__ x_orig, scalar_t* __restrict__ out,
                                int64_t numel, opmath_t step, opmath_t eps, opmath_t lo,
                                opmath_t hi) {
  FASTNOISE_GRID_STRIDE(i, numel) {
    const opmath_t g = static_cast<opmath_t>(grad[i]), x0 = static_cast<opmath_t>(x_orig[i]);
    const opmath_t sign = static_cast<opmath_t>(g > 0) - static_cast<opmath_t>(g < 0);
    opmath_t v = static_cast<opmath_t>(x[i]) + step * sign;
    v = fmin(fmax(v, x0 - eps), x0 + eps);
    out[i] = static_cast<scalar_t>(fmin(fmax(v, lo), hi));
  }
}

at::Tensor pgd_step(const at::Tensor& x_adv_in, const at::Tensor& grad_in,
                    const at::Tensor& x_orig_in, double step_size, double eps, double clip_min,
                    double clip_max) {
  check_floating(x_adv_in, "x_adv");
  TORCH_CHECK_VALUE(grad_in.sizes() == x_adv_in.sizes() && x_orig_in.sizes() == x_adv_in.sizes(),
              "grad and x_orig must have the shape of x_adv ", x_adv_in.sizes());
  const c10::cuda::CUDAGuard guard(x_adv_in.device());
  const at::Tensor x_adv = x_adv_in.contiguous();
  const at::Tensor grad = grad_in.contiguous().to(x_adv.scalar_type());
  const at::Tensor x_orig = x_orig_in.contiguous().to(x_adv.scalar_type());
  at::Tensor out = at::empty(x_adv.sizes(), x_adv.options());
  const int64_t numel = x_adv.numel();
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "pgd_step", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    pgd_step_kernel<scalar_t, opmath_t><<<blocks_for(numel), kThreads, 0, stream()>>>(
        x_adv.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
        x_orig.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), numel,
        static_cast<opmath_t>(step_size), static_cast<opmath_t>(eps),
        static_cast<opmath_t>(clip_min), static_cast<opmath_t>(clip_max));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) { m.impl("pgd_step", &fastnoise::cuda::pgd_step); }
