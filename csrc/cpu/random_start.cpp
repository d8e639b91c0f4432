// PGD / RFGSM / NFGSM random start on the CPU: x + eps * (2u - 1), u from the spec,
// optionally clipped to the pixel box, in one pass.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>


#include "../clamp.h"
#include "../common.h"
#include "tile_loops.h"

namespace fastnoise {
namespace cpu {
namespace {

at::Tensor random_start(const at::Tensor& x_in, double eps, int64_t seed, int64_t offset,
                        double clip_min, double clip_max, bool project) {
  check_floating(x_in, "x");
  check_seed_offset(seed, offset);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t numel = x.numel();
  if (numel == 0) return in_layout_of(out, x_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "random_start", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    const opmath_t e = static_cast<opmath_t>(eps);
    // Without projection the box is the whole line, so one branch-free loop serves both.
    const opmath_t lo = project ? static_cast<opmath_t>(clip_min) : -INFINITY;
    const opmath_t hi = project ? static_cast<opmath_t>(clip_max) : INFINITY;
    parallel_tiles(numel, [&](int64_t first, int64_t count) {
      float u[kTileSize];
      uniform_tile(seed, offset + first / 4, u);
      for (int64_t k = 0; k < count; ++k) {
        const opmath_t v = static_cast<opmath_t>(xp[first + k]) +
                           e * (opmath_t(2) * static_cast<opmath_t>(u[k]) - opmath_t(1));
        outp[first + k] = static_cast<scalar_t>(clamp_keep_nan(v, lo, hi));
      }
    });
  });
  return in_layout_of(out, x_in);
}

}  // namespace
}  // namespace cpu
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CPU, m) { m.impl("random_start", &fastnoise::cpu::random_start); }
