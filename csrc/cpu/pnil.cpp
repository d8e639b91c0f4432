// PNIL (pixelwise noise injection) on the CPU, fused. Forward Eq. (2)-(3):
// y = x + z * exp((x * w + b) / 2). Backward with z regenerated: with
// h = z * exp((x * w + b) / 2) / 2 (= dy / dSigma) and gs = grad_y * h,
// grad_x = grad_y + gs * w, grad_w = sum gs * x, grad_b = sum gs.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "../common.h"
#include "../philox.h"
#include "tile_loops.h"

namespace fastnoise {
namespace cpu {
namespace {

// exp in the compute dtype: the vectorizable polynomial for float, libm for double.
FN_HD float exp_opmath(float v) { return exp_approx(v); }
FN_HD double exp_opmath(double v) { return std::exp(v); }

// weight and bias as the kernels read them: their own entries when both broadcast the
// same way along trailing dims (see PerFeature), else both expanded to one sample.
std::pair<PerFeature, PerFeature> pnil_params(const at::Tensor& weight, const at::Tensor& bias,
                                              const at::Tensor& x) {
  PerFeature w = per_feature(weight, x, "weight"), b = per_feature(bias, x, "bias");
  if (w.inner != b.inner || w.values.numel() != b.values.numel()) {
    w = {per_sample(weight, x, "weight"), 1};
    b = {per_sample(bias, x, "bias"), 1};
  }
  return {w, b};
}

// One run of elements: weight and bias per feature, or one pair for the run (kOneParam).
template <bool kOneParam, typename scalar_t, typename opmath_t>
void pnil_forward_run(const scalar_t* __restrict x, const opmath_t* __restrict w,
                      const opmath_t* __restrict b, const float* __restrict z,
                      scalar_t* __restrict y, int64_t run) {
  for (int64_t k = 0; k < run; ++k) {
    const int64_t p = kOneParam ? 0 : k;
    const opmath_t xv = static_cast<opmath_t>(x[k]);
    const opmath_t scale = exp_opmath((xv * w[p] + b[p]) * opmath_t(0.5));
    y[k] = static_cast<scalar_t>(xv + static_cast<opmath_t>(z[k]) * scale);
  }
}

at::Tensor pnil_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                        const at::Tensor& bias_in, int64_t seed, int64_t offset) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const at::Tensor x = x_in.contiguous();
  const auto [weight, bias] = pnil_params(weight_in, bias_in, x);
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel(), features = feature_numel(x);
  if (numel == 0) return in_layout_of(y, x_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnil_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const opmath_t* wp = weight.values.const_data_ptr<opmath_t>();
    const opmath_t* bp = bias.values.const_data_ptr<opmath_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    parallel_tiles(numel, [&](int64_t first, int64_t count) {
      float z[kTileSize];
      normal_tile(seed, offset + first / 4, z);
      for_param_runs(first, count, features, weight.inner, [&](int64_t j, int64_t run, int64_t q,
                                                               bool per_feature) {
        if (per_feature) {
          pnil_forward_run<false>(xp + first + j, wp + q, bp + q, z + j, yp + first + j, run);
        } else {
          pnil_forward_run<true>(xp + first + j, wp + q, bp + q, z + j, yp + first + j, run);
        }
      });
    });
  });
  return in_layout_of(y, x_in);
}

// One run of consecutive features (weight and bias per feature, or one pair for the run:
// kOneParam). Separate, with restrict pointers, so the compiler vectorizes it without
// runtime alias checks on eight arrays.
template <bool kOneParam, typename scalar_t, typename opmath_t>
void pnil_backward_run(const scalar_t* __restrict grad, const scalar_t* __restrict x,
                       const opmath_t* __restrict w, const opmath_t* __restrict b,
                       const float* __restrict z, scalar_t* __restrict grad_x,
                       opmath_t* __restrict acc_w, opmath_t* __restrict acc_b, int64_t run) {
  for (int64_t k = 0; k < run; ++k) {
    const int64_t p = kOneParam ? 0 : k;
    const opmath_t xv = static_cast<opmath_t>(x[k]), g = static_cast<opmath_t>(grad[k]);
    const opmath_t half_noise = opmath_t(0.5) * static_cast<opmath_t>(z[k]) *
                                exp_opmath((xv * w[p] + b[p]) * opmath_t(0.5));
    const opmath_t g_sigma = g * half_noise;
    grad_x[k] = static_cast<scalar_t>(g + g_sigma * w[p]);
    acc_w[k] += g_sigma * xv;
    acc_b[k] += g_sigma;
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pnil_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor& bias_in, int64_t seed, int64_t offset) {
  check_floating(grad_in, "grad_y");
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  TORCH_CHECK_VALUE(grad_in.sizes() == x_in.sizes(), "grad_y must have the shape of x ",
                    x_in.sizes(), ", got ", grad_in.sizes());
  const at::Tensor grad = grad_in.contiguous().to(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous();
  const auto [weight, bias] = pnil_params(weight_in, bias_in, x);
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel(), features = feature_numel(x);
  if (numel == 0) {
    return {in_layout_of(grad_x, x_in), at::zeros(weight_in.sizes(), weight_in.options()),
            at::zeros(bias_in.sizes(), bias_in.options())};
  }
  const int64_t chunks = chunk_count(numel);
  // Row c of each holds chunk c's sums, zeroed by that chunk. Two buffers, not one: with
  // one chunk each row is returned as is, and the two gradients must not share memory.
  const auto opmath = x.options().dtype(opmath_type(x));
  at::Tensor partial_w = at::empty({chunks, features}, opmath);
  at::Tensor partial_b = at::empty({chunks, features}, opmath);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnil_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const opmath_t* wp = weight.values.const_data_ptr<opmath_t>();
    const opmath_t* bp = bias.values.const_data_ptr<opmath_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    opmath_t* pw = partial_w.mutable_data_ptr<opmath_t>();
    opmath_t* pb = partial_b.mutable_data_ptr<opmath_t>();
    parallel_chunks(numel, chunks, [&](int64_t chunk, int64_t tile_begin, int64_t tile_end) {
      opmath_t* acc_w = pw + chunk * features;
      opmath_t* acc_b = pb + chunk * features;
      std::fill_n(acc_w, features, opmath_t(0));
      std::fill_n(acc_b, features, opmath_t(0));
      float z[kTileSize];
      for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const int64_t first = tile * kTileSize, count = std::min(kTileSize, numel - first);
        normal_tile(seed, offset + first / 4, z);
        for_param_runs(first, count, features, weight.inner, [&](int64_t j, int64_t run,
                                                                 int64_t q, bool per_feature) {
          const int64_t f = (first + j) % features;  // the accumulators are per feature
          if (per_feature) {
            pnil_backward_run<false>(gp + first + j, xp + first + j, wp + q, bp + q, z + j,
                                     gxp + first + j, acc_w + f, acc_b + f, run);
          } else {
            pnil_backward_run<true>(gp + first + j, xp + first + j, wp + q, bp + q, z + j,
                                    gxp + first + j, acc_w + f, acc_b + f, run);
          }
        });
      }
    });
  });
  return {in_layout_of(grad_x, x_in), reduce_to_param(sum_chunks(partial_w), x, weight_in),
          reduce_to_param(sum_chunks(partial_b), x, bias_in)};
}

}  // namespace
}  // namespace cpu
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CPU, m) {
  m.impl("pnil_forward", &fastnoise::cpu::pnil_forward);
  m.impl("pnil_backward", &fastnoise::cpu::pnil_backward);
}
