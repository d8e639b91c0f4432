// The CUDA kernels' thread bodies (csrc/cuda/*_body.h), run on the CPU by
// the host compiler. Each exported function emulates one launch: the forward calls the
// thread body for each of `threads` grid-stride threads; the backward calls the row body
// of each feature quad for each of `row_lanes` row lanes and adds the lanes' sums (what
// block_sum_store does on the GPU, there in a fixed pairwise order). channels == 0 runs the
// row-major bodies, channels > 0 the channels_last ones on (N, C, pixels / W, W) memory.
// dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16 (torch's storage bits).
#include <cstdint>

#include "noise_body.h"
#include "pgd_step_body.h"
#include "pnil_body.h"
#include "random_start_body.h"

namespace fastnoise {
namespace cuda {
namespace {

template <typename Body>
void with_dtype(int dtype, const Body& body) {
  const Storage storage[] = {Storage::kFloat32, Storage::kFloat64, Storage::kFloat16,
                             Storage::kBFloat16};
  dispatch_storage(storage[dtype], body);
}

// Per-row sums of feature quad f0 over every row lane, written to sums[f0 .. f0 + n).
template <typename opmath_t, typename RowBody>
void reduce_quad(int64_t f0, int64_t features, int64_t rows, int64_t row_lanes,
                 opmath_t* sums, int planes, const RowBody& rows_body) {
  opmath_t total[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
  for (int64_t lane = 0; lane < row_lanes; ++lane) {
    opmath_t acc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    rows_body(lane, rows, row_lanes, acc);
    for (int p = 0; p < planes; ++p) {
      for (int k = 0; k < 4; ++k) total[p][k] += acc[p][k];
    }
  }
  const int n = lanes_left(features - f0);
  for (int p = 0; p < planes; ++p) {
    for (int k = 0; k < n; ++k) sums[p * features + f0 + k] = total[p][k];
  }
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

using namespace fastnoise::cuda;

extern "C" {

void noise_forward(int dtype, const void* x, const void* sigma, void* y, int64_t numel,
                   int64_t features, int64_t channels, int64_t pixels, uint64_t seed,
                   uint64_t offset, int64_t threads) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const auto* xs = static_cast<const T*>(x);
    const auto* s = static_cast<const O*>(sigma);
    auto* ys = static_cast<T*>(y);
    const bool quad_sigma = features % 4 == 0 && quad_aligned<O>(sigma);
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    for (int64_t t = 0; t < threads; ++t) {
      if (channels > 0) {
        noise_forward_nhwc_thread<T, O>(xs, s, ys, numel, ChannelsLast{channels, pixels}, t,
                                        threads, seed, offset, quad_sigma);
      } else {
        noise_forward_thread<T, O>(xs, s, ys, numel, features, t, threads, seed, offset, quad,
                                   quad_sigma);
      }
    }
  });
}

// sums: `features` values of the compute dtype (float64 for dtype 1, else float32).
void noise_backward_sigma(int dtype, const void* grad, void* sums, int64_t rows,
                          int64_t features, int64_t channels, int64_t pixels, uint64_t seed,
                          uint64_t offset, int64_t row_lanes) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const auto* g = static_cast<const T*>(grad);
    auto* out = static_cast<O*>(sums);
    for (int64_t fq = 0; fq < (features + 3) / 4; ++fq) {
      if (channels > 0) {
        const NhwcFeatureQuad at = nhwc_feature_quad(fq, channels, pixels);
        reduce_quad<O>(at.feature, features, rows, row_lanes, out, 1,
                       [&](int64_t lane, int64_t end, int64_t step, O (&acc)[2][4]) {
                         noise_grad_nhwc_rows<T, O>(g, at, features, channels, lane, end, step,
                                                    seed, offset, acc[0]);
                       });
        continue;
      }
      dispatch_row_variant(features % 4 == 0, quad_aligned<T>(grad), [&](auto variant) {
        reduce_quad<O>(4 * fq, features, rows, row_lanes, out, 1,
                       [&](int64_t lane, int64_t end, int64_t step, O (&acc)[2][4]) {
                         noise_grad_rows<T, O, decltype(variant)::value>(
                             g, 4 * fq, features, lane, end, step, seed, offset, acc[0]);
                       });
      });
    }
  });
}

void pnil_forward(int dtype, const void* x, const void* w, const void* b, void* y,
                  int64_t numel, int64_t features, int64_t channels, int64_t pixels,
                  uint64_t seed, uint64_t offset, int64_t threads) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const auto* xs = static_cast<const T*>(x);
    const auto *ws = static_cast<const O*>(w), *bs = static_cast<const O*>(b);
    auto* ys = static_cast<T*>(y);
    const bool quad_params =
        features % 4 == 0 && quad_aligned<O>(w) && quad_aligned<O>(b);
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(y);
    for (int64_t t = 0; t < threads; ++t) {
      if (channels > 0) {
        pnil_forward_nhwc_thread<T, O>(xs, ws, bs, ys, numel, ChannelsLast{channels, pixels}, t,
                                       threads, seed, offset, quad_params);
      } else {
        pnil_forward_thread<T, O>(xs, ws, bs, ys, numel, features, t, threads, seed, offset,
                                  quad, quad_params);
      }
    }
  });
}

// sums: 2 x features of the compute dtype (grad_w's, then grad_b's).
void pnil_backward(int dtype, const void* grad, const void* x, const void* w, const void* b,
                   void* grad_x, void* sums, int64_t rows, int64_t features, int64_t channels,
                   int64_t pixels, uint64_t seed, uint64_t offset, int64_t row_lanes) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const auto *g = static_cast<const T*>(grad), *xs = static_cast<const T*>(x);
    const auto *ws = static_cast<const O*>(w), *bs = static_cast<const O*>(b);
    auto* gx = static_cast<T*>(grad_x);
    auto* out = static_cast<O*>(sums);
    for (int64_t fq = 0; fq < (features + 3) / 4; ++fq) {
      O wq[4], bq[4];
      if (channels > 0) {
        const NhwcFeatureQuad at = nhwc_feature_quad(fq, channels, pixels);
        load_elements(ws + at.feature, 4, false, wq);
        load_elements(bs + at.feature, 4, false, bq);
        reduce_quad<O>(at.feature, features, rows, row_lanes, out, 2,
                       [&](int64_t lane, int64_t end, int64_t step, O (&acc)[2][4]) {
                         pnil_grad_nhwc_rows<T, O>(g, xs, wq, bq, gx, at, features, channels,
                                                   lane, end, step, seed, offset, acc[0],
                                                   acc[1]);
                       });
        continue;
      }
      const int64_t f0 = 4 * fq;
      load_elements(ws + f0, lanes_left(features - f0), false, wq);
      load_elements(bs + f0, lanes_left(features - f0), false, bq);
      const bool quad =
          quad_aligned<T>(grad) && quad_aligned<T>(x) && quad_aligned<T>(grad_x);
      dispatch_row_variant(features % 4 == 0, quad, [&](auto variant) {
        reduce_quad<O>(f0, features, rows, row_lanes, out, 2,
                       [&](int64_t lane, int64_t end, int64_t step, O (&acc)[2][4]) {
                         pnil_grad_rows<T, O, decltype(variant)::value>(
                             g, xs, wq, bq, gx, f0, features, lane, end, step, seed, offset,
                             acc[0], acc[1]);
                       });
      });
    }
  });
}

// lo, hi: the box (pass -inf, inf for project=False, as register_cuda.cpp does).
void random_start(int dtype, const void* x, void* out, int64_t numel, int64_t channels,
                  int64_t pixels, double eps, double lo, double hi, uint64_t seed,
                  uint64_t offset, int64_t threads) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const auto* xs = static_cast<const T*>(x);
    auto* os = static_cast<T*>(out);
    const O e = static_cast<O>(eps), l = static_cast<O>(lo), h = static_cast<O>(hi);
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(out);
    for (int64_t t = 0; t < threads; ++t) {
      if (channels > 0) {
        random_start_nhwc_thread<T, O>(xs, os, numel, ChannelsLast{channels, pixels}, t, threads,
                                       e, l, h, seed, offset);
      } else {
        random_start_thread<T, O>(xs, os, numel, t, threads, e, l, h, seed, offset, quad);
      }
    }
  });
}

// Flat over memory, as register_cuda.cpp runs three tensors of one layout.
void pgd_step(int dtype, const void* x, const void* grad, const void* x_orig, void* out,
              int64_t numel, double step, double eps, double lo, double hi, int64_t threads) {
  with_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    using O = typename OpMath<T>::type;
    const bool quad = quad_aligned<T>(x) && quad_aligned<T>(grad) && quad_aligned<T>(x_orig) &&
                      quad_aligned<T>(out);
    for (int64_t t = 0; t < threads; ++t) {
      pgd_step_thread<T, O>(static_cast<const T*>(x), static_cast<const T*>(grad),
                            static_cast<const T*>(x_orig), static_cast<T*>(out), numel, t,
                            threads, static_cast<O>(step), static_cast<O>(eps),
                            static_cast<O>(lo), static_cast<O>(hi), quad);
    }
  });
}

}  // extern "C"
