// Learn2Perturb noise injection on the CPU, fused: one pass over memory forward
// (y = x + sigma * z) and one backward (grad_sigma = sum grad_y * z), z regenerated.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "tile_loops.h"

namespace fastnoise {
namespace cpu {
namespace {

// One run of elements: sigma per feature, or one sigma for the run (kOneSigma).
template <bool kOneSigma, typename scalar_t, typename opmath_t>
void noise_run(const scalar_t* __restrict x, const opmath_t* __restrict sigma,
               const float* __restrict z, scalar_t* __restrict y, int64_t run) {
  for (int64_t k = 0; k < run; ++k) {
    const opmath_t s = sigma[kOneSigma ? 0 : k];
    y[k] = static_cast<scalar_t>(static_cast<opmath_t>(x[k]) + s * static_cast<opmath_t>(z[k]));
  }
}

// Eq. (4)-(5): y = x + sigma * z.
at::Tensor noise_forward(const at::Tensor& x_in, const at::Tensor& sigma_in, int64_t seed,
                         int64_t offset) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const at::Tensor x = x_in.contiguous();  // noise follows the logical (row-major) order
  const PerFeature sigma = per_feature(sigma_in, x, "sigma");
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel(), features = feature_numel(x);
  if (numel == 0) return in_layout_of(y, x_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_forward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const opmath_t* sp = sigma.values.const_data_ptr<opmath_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    parallel_tiles(numel, [&](int64_t first, int64_t count) {
      float z[kTileSize];
      normal_tile(seed, offset + first / 4, z);
      for_param_runs(first, count, features, sigma.inner, [&](int64_t j, int64_t run, int64_t q,
                                                              bool per_feature) {
        if (per_feature) {
          noise_run<false>(xp + first + j, sp + q, z + j, yp + first + j, run);
        } else {
          noise_run<true>(xp + first + j, sp + q, z + j, yp + first + j, run);
        }
      });
    });
  });
  return in_layout_of(y, x_in);
}

// d loss / d sigma: per-chunk sums of grad_y * z per feature, then the broadcast reduction.
at::Tensor noise_backward_sigma(const at::Tensor& grad_in, const at::Tensor& sigma,
                                int64_t seed, int64_t offset) {
  check_floating(grad_in, "grad_y");
  check_seed_offset(seed, offset);
  const at::Tensor grad = grad_in.contiguous();
  check_per_feature(sigma, grad, "sigma");
  const int64_t numel = grad.numel(), features = feature_numel(grad);
  const auto opmath = opmath_type(grad);
  if (numel == 0) return at::zeros(sigma.sizes(), sigma.options());
  const int64_t chunks = chunk_count(numel);
  // Each chunk zeroes its own row: no separate fill call.
  at::Tensor partial = at::empty({chunks, features}, grad.options().dtype(opmath));
  const auto dtype = grad.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "noise_backward", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    opmath_t* pp = partial.mutable_data_ptr<opmath_t>();
    parallel_chunks(numel, chunks, [&](int64_t chunk, int64_t tile_begin, int64_t tile_end) {
      opmath_t* acc = pp + chunk * features;
      std::fill_n(acc, features, opmath_t(0));
      float z[kTileSize];
      for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const int64_t first = tile * kTileSize, count = std::min(kTileSize, numel - first);
        normal_tile(seed, offset + first / 4, z);
        for_feature_runs(first, count, features, [&](int64_t j, int64_t run, int64_t f) {
          for (int64_t k = 0; k < run; ++k) {
            const opmath_t g = static_cast<opmath_t>(gp[first + j + k]);
            acc[f + k] += g * static_cast<opmath_t>(z[j + k]);
          }
        });
      }
    });
  });
  return reduce_to_param(sum_chunks(partial), grad, sigma);
}

}  // namespace
}  // namespace cpu
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CPU, m) {
  m.impl("noise_forward", &fastnoise::cpu::noise_forward);
  m.impl("noise_backward_sigma", &fastnoise::cpu::noise_backward_sigma);
}
