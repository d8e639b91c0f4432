// Learn2Perturb noise injection on CUDA: forward y = x + sigma * z (Eq. (4)-(5)) and
// grad_sigma = sum grad_y * z with z regenerated (fp32/fp64 atomics per feature).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common.h"
#include "../philox.h"
#include "launch.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename scalar_t, typename opmath_t>
__global__ void noise_forward_kernel(const scalar_t* __restrict__ x,
                                     const opmath_t* __restrict__ sigma, scalar_t* __restrict__ y,
                                     int64_t numel, int64_t features, uint64_t seed,
                                     uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        y[i] = static_cast<scalar_t>(static_cast<opmath_t>(x[i]) +
                                     sigma[i % features] * static_cast<opmath_t>(z[lane]));
      }
    }
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void noise_backward_kernel(const scalar_t* __restrict__ grad, opmath_t* __restrict__ sums,
                                      int64_t numel, int64_t features, uint64_t seed,
                                      uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float z[4];
    normal4(offset + counter, seed, z);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        atomicAdd(sums + i % features, static_cast<opmath_t>(grad[i]) * static_cast<opmath_t>(z[lane]));
      }
    }
  }
}

at::Tensor noise_forward(const at::Tensor& x_in, const at::Tensor& sigma_in, int64_t seed,
                         int64_t offset) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor sigma = per_sample(sigma_in, x, "sigma");
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    noise_forward_kernel<scalar_t, opmath_t><<<blocks_for((numel + 3) / 4), kThreads, 0, stream()>>>(
        x.const_data_ptr<scalar_t>(), sigma.const_data_ptr<opmath_t>(),
        y.mutable_data_ptr<scalar_t>(), numel, feature_numel(x), seed, offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor noise_backward_sigma(const at::Tensor& grad_in, const at::Tensor& sigma, int64_t seed,
                                int64_t offset) {
  check_floating(grad_in, "grad_y");
  check_seed_offset(seed, offset);
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  per_sample(sigma, grad, "sigma");  // validates sigma against one sample
  const int64_t numel = grad.numel(), features = feature_numel(grad);
  if (numel == 0) return at::zeros(sigma.sizes(), sigma.options());
  at::Tensor sums = at::zeros({features}, grad.options().dtype(opmath_type(grad)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "noise_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    noise_backward_kernel<scalar_t, opmath_t><<<blocks_for((numel + 3) / 4), kThreads, 0, stream()>>>(
        grad.const_data_ptr<scalar_t>(), sums.mutable_data_ptr<opmath_t>(), numel, features, seed,
        offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return reduce_to_param(sums, grad, sigma);
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) {
  m.impl("noise_forward", &fastnoise::cuda::noise_forward);
  m.impl("noise_backward_sigma", &fastnoise::cuda::noise_backward_sigma);
}
