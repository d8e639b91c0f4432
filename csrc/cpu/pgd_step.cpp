// One L-inf PGD iterate on the CPU in a single pass over three tensors:
// x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>


#include "../clamp.h"
#include "../common.h"

namespace fastnoise {
namespace cpu {
namespace {

constexpr int64_t kGrainElements = 32768;

at::Tensor pgd_step(const at::Tensor& x_adv_in, const at::Tensor& grad_in,
                    const at::Tensor& x_orig_in, double step_size, double eps, double clip_min,
                    double clip_max) {
  check_floating(x_adv_in, "x_adv");
  TORCH_CHECK_VALUE(grad_in.sizes() == x_adv_in.sizes() && x_orig_in.sizes() == x_adv_in.sizes(),
              "grad and x_orig must have the shape of x_adv ", x_adv_in.sizes());
  const at::Tensor x_adv = x_adv_in.contiguous();
  const at::Tensor grad = grad_in.contiguous().to(x_adv.scalar_type());
  const at::Tensor x_orig = x_orig_in.contiguous().to(x_adv.scalar_type());
  at::Tensor out = at::empty(x_adv.sizes(), x_adv.options());
  const int64_t numel = x_adv.numel();
  if (numel == 0) return in_layout_of(out, x_adv_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "pgd_step", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x_adv.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* op = x_orig.const_data_ptr<scalar_t>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    const opmath_t step = static_cast<opmath_t>(step_size), e = static_cast<opmath_t>(eps);
    const opmath_t lo = static_cast<opmath_t>(clip_min), hi = static_cast<opmath_t>(clip_max);
    at::parallel_for(0, numel, kGrainElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const opmath_t g = static_cast<opmath_t>(gp[i]), x0 = static_cast<opmath_t>(op[i]);
        const opmath_t sign = static_cast<opmath_t>(g > 0) - static_cast<opmath_t>(g < 0);
        opmath_t v = static_cast<opmath_t>(xp[i]) + step * sign;
        v = clamp_keep_nan(v, x0 - e, x0 + e);  // x0 may be NaN: then so is the result
        outp[i] = static_cast<scalar_t>(clamp_keep_nan(v, lo, hi));
      }
    });
  });
  return in_layout_of(out, x_adv_in);
}

}  // namespace
}  // namespace cpu
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CPU, m) { m.impl("pgd_step", &fastnoise::cpu::pgd_step); }
