// Host-side helpers shared by the CPU and CUDA implementations: argument checks, the
// compute ("opmath") dtype, per-feature parameter layout and the final parameter-gradient
// reduction. Device code never includes this file's ATen calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace fastnoise {

// Compute dtype: float32 for float16/bfloat16/float32 activations, float64 for float64
// (so gradcheck is exact); noise itself is always the float32 spec.
inline at::ScalarType opmath_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating tensor, got ",
              t.scalar_type());
}

inline void check_seed_offset(int64_t seed, int64_t offset) {
  TORCH_CHECK_VALUE(seed >= 0, "seed must be in [0, 2**63), got ", seed);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be in [0, 2**63), got ", offset);
}

// The layout rule of every backend's outputs and of the fake kernels (fastnoise/_ops.py):
// channels_last when x is (4-D, channels_last and not also row-major), else row-major.
inline bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::Tensor in_layout_of(const at::Tensor& out, const at::Tensor& x) {
  return is_channels_last(x) ? out.contiguous(at::MemoryFormat::ChannelsLast) : out;
}

// Elements per sample: parameters are laid out as one contiguous sample, x[0].
inline int64_t feature_numel(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1, "x must have a batch dimension (at least 1-D)");
  return x.size(0) == 0 ? 0 : x.numel() / x.size(0);
}

inline void check_per_feature(const at::Tensor& param, const at::Tensor& x, const char* name) {
  check_floating(param, name);
  TORCH_CHECK_VALUE(param.device() == x.device(), name, " is on ", param.device(), " but x is on ",
              x.device());
  const auto sample = x.sizes().slice(1);
  TORCH_CHECK_VALUE(param.dim() <= static_cast<int64_t>(sample.size()), name, " of shape ",
              param.sizes(), " has more dims than one sample of x ", sample);
  for (int64_t d = 1; d <= param.dim(); ++d) {
    const int64_t p = param.size(-d), s = sample[sample.size() - d];
    TORCH_CHECK_VALUE(p == 1 || p == s, name, " of shape ", param.sizes(),
                      " does not broadcast to one sample of x ", sample);
  }
}

// A per-feature parameter broadcast to one sample of x, contiguous, in the compute dtype:
// element i of x then reads entry i % feature_numel(x).
inline at::Tensor per_sample(const at::Tensor& param, const at::Tensor& x, const char* name) {
  check_per_feature(param, x, name);
  const auto sample = x.sizes().slice(1);
  if (param.sizes() == sample && param.scalar_type() == opmath_type(x) && param.is_contiguous()) {
    return param;  // already one sample: skip the expand (per-call cost on small tensors)
  }
  return param.to(opmath_type(x)).expand(sample).contiguous();
}

// A per-feature parameter as the CPU kernels read it: feature f reads values[f / inner].
// When the parameter's non-1 dims lead (one sample (C, H, W): inner 1; per channel
// (C, 1, 1): inner H * W; a scalar: inner = features) that is its own entries, with no
// full-size copy per call; other broadcasts, e.g. (1, H, W), are expanded (inner 1).
struct PerFeature {
  at::Tensor values;
  int64_t inner;
};

inline PerFeature per_feature(const at::Tensor& param, const at::Tensor& x, const char* name) {
  check_per_feature(param, x, name);
  const auto sample = x.sizes().slice(1);
  const int64_t dims = static_cast<int64_t>(sample.size()), pad = dims - param.dim();
  int64_t last = -1;  // last non-1 dim of param, counted in sample dims
  for (int64_t d = 0; d < param.dim(); ++d) {
    if (param.size(d) != 1) last = pad + d;
  }
  bool leading = true;
  for (int64_t d = 0; d <= last; ++d) {
    leading &= (d < pad ? 1 : param.size(d - pad)) == sample[d];
  }
  if (!leading) return {per_sample(param, x, name), 1};
  int64_t inner = 1;
  for (int64_t d = last + 1; d < dims; ++d) inner *= sample[d];
  return {param.to(opmath_type(x)).contiguous(), inner};
}

// Turn per-sample sums (shape x[0], compute dtype) into the gradient of param: sum over
// the dims param broadcasts along, and cast to param's dtype.
inline at::Tensor reduce_to_param(const at::Tensor& per_sample_sum, const at::Tensor& x,
                                  const at::Tensor& param) {
  const at::Tensor sums = per_sample_sum.view(x.sizes().slice(1));
  return at::sum_to(sums, param.sizes()).to(param.scalar_type()).contiguous();
}

}  // namespace fastnoise
