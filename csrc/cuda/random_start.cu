// PGD / RFGSM / NFGSM random start on CUDA: x + eps * (2u - 1), u from the spec,
// optionally clipped to the pixel box; one thread per Philox counter.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"
#include "../philox.h"
#include "launch.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename scalar_t, typename opmath_t>
__global__ void random_start_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                    int64_t numel, opmath_t eps, opmath_t lo, opmath_t hi,
                                    uint64_t seed, uint64_t offset) {
  FASTNOISE_GRID_STRIDE(counter, (numel + 3) / 4) {
    float u[4];
    uniform4(offset + counter, seed, u);
#pragma unroll
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t i = 4 * counter + lane;
      if (i < numel) {
        const opmath_t v = static_cast<opmath_t>(x[i]) +
                           eps * (opmath_t(2) * static_cast<opmath_t>(u[lane]) - opmath_t(1));
        out[i] = static_cast<scalar_t>(fmin(fmax(v, lo), hi));
      }
    }
  }
}

at::Tensor random_start(const at::Tensor& x_in, double eps, int64_t seed, int64_t offset,
                        double clip_min, double clip_max, bool project) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "random_start", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    // Without projection the box is the whole line, so one kernel serves both.
    const opmath_t lo = project ? static_cast<opmath_t>(clip_min) : -INFINITY;
    const opmath_t hi = project ? static_cast<opmath_t>(clip_max) : INFINITY;
    random_start_kernel<scalar_t, opmath_t><<<blocks_for((numel + 3) / 4), kThreads, 0, stream()>>>(
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), numel,
        static_cast<opmath_t>(eps), lo, hi, seed, offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) {
  m.impl("random_start", &fastnoise::cuda::random_start);
}
