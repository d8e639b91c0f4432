// PNIL on CUDA. Forward Eq. (2)-(3): y = x + z * exp((x * w + b) / 2). Backward with z
// regenerated: gs = grad_y * z * exp((x * w + b) / 2) / 2, grad_x = grad_y + gs * w,
// grad_w = sum gs * x and grad_b = sum gs (atomics per feature).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>

#include "../common.h"
#include "../philox.h"
#include "launch.h"

namespace fastnoise {
namespace cuda {
namespace {

__device__ __forceinline__ float exp_opmath(float v) { return exp_approx(v); }
__device__ __forceinline__ double exp_opmath(double v) { return exp(v); }

template <typename scalar_t, typename opmath_t>
__global__ void pnil_forward_kernel(const scalar_t* __restrict__ x, const opmath_t* __restrict__ w,
                                    const opmath_t* __restrict__ b, scalar_t* __restrict__ y,
                                    int64_t numel, int64_t features, uint64_t seed,
                                    uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const int64_t f = i % features;
        const opmath_t xv = static_cast<opmath_t>(x[i]);
        const opmath_t scale = exp_opmath((xv * w[f] + b[f]) * opmath_t(0.5));
        y[i] = static_cast<scalar_t>(xv + static_cast<opmath_t>(z[lane]) * scale);
      }
    }
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void pnil_backward_kernel(const scalar_t* __restrict__ grad,
                                     const scalar_t* __restrict__ x, const opmath_t* __restrict__ w,
                                     const opmath_t* __restrict__ b, scalar_t* __restrict__ grad_x,
                                     opmath_t* __restrict__ sums_w, opmath_t* __restrict__ sums_b,
                                     int64_t numel, int64_t features, uint64_t seed,
                                     uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const int64_t f = i % features;
        const opmath_t xv = static_cast<opmath_t>(x[i]), g = static_cast<opmath_t>(grad[i]);
        const opmath_t half_noise = opmath_t(0.5) * static_cast<opmath_t>(z[lane]) *
                                    exp_opmath((xv * w[f] + b[f]) * opmath_t(0.5));
        const opmath_t g_sigma = g * half_noise;
        grad_x[i] = static_cast<scalar_t>(g + g_sigma * w[f]);
        atomicAdd(sums_w + f, g_sigma * xv);
        atomicAdd(sums_b + f, g_sigma);
      }
    }
  }
}

at::Tensor pnil_forward(const at::Tensor& x_in, const at::Tensor& weight_in,
                        const at::Tensor& bias_in, int64_t seed, int64_t offset) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = per_sample(weight_in, x, "weight");
  const at::Tensor bias = per_sample(bias_in, x, "bias");
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnil_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    pnil_forward_kernel<scalar_t, opmath_t><<<blocks_for((numel + 3) / 4), kThreads, 0, stream()>>>(
        x.const_data_ptr<scalar_t>(), weight.const_data_ptr<opmath_t>(),
        bias.const_data_ptr<opmath_t>(), y.mutable_data_ptr<scalar_t>(), numel, feature_numel(x),
        seed, offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pnil_backward(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor& bias_in, int64_t seed, int64_t offset) {
  check_floating(grad_in, "grad_y");
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  TORCH_CHECK_VALUE(grad_in.sizes() == x_in.sizes(), "grad_y must have the shape of x ", x_in.sizes(),
              ", got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor grad = grad_in.contiguous().to(x_in.scalar_type());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor weight = per_sample(weight_in, x, "weight");
  const at::Tensor bias = per_sample(bias_in, x, "bias");
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel(), features = feature_numel(x);
  if (numel == 0) {
    return {grad_x, at::zeros(weight_in.sizes(), weight_in.options()),
            at::zeros(bias_in.sizes(), bias_in.options())};
  }
  at::Tensor sums = at::zeros({2, features}, x.options().dtype(opmath_type(x)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pnil_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    opmath_t* sums_w = sums.mutable_data_ptr<opmath_t>();
    pnil_backward_kernel<scalar_t, opmath_t><<<blocks_for((numel + 3) / 4), kThreads, 0, stream()>>>(
        grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        weight.const_data_ptr<opmath_t>(), bias.const_data_ptr<opmath_t>(),
        grad_x.mutable_data_ptr<scalar_t>(), sums_w, sums_w + features, numel, features, seed,
        offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, reduce_to_param(sums[0], x, weight_in), reduce_to_param(sums[1], x, bias_in)};
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) {
  m.impl("pnil_forward", &fastnoise::cuda::pnil_forward);
  m.impl("pnil_backward", &fastnoise::cuda::pnil_backward);
}
