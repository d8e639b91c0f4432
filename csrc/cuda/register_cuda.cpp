// The CUDA implementations of the fastnoise_C ops, host side: argument checks, logical
// (contiguous) layout, per-feature parameters and output allocation with ATen, then the
// raw-pointer launchers of kernels.h. Compiled by the host compiler, so nvcc never
// parses ATen's headers.
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <mutex>
#include <tuple>

#include "../common.h"
#include "graph_rng.h"
#include "kernels.h"

namespace fastnoise {
namespace cuda {
namespace {

Storage storage_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return Storage::kFloat32;
    case at::kDouble:
      return Storage::kFloat64;
    case at::kHalf:
      return Storage::kFloat16;
    case at::kBFloat16:
      return Storage::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "fastnoise CUDA kernels take float16, bfloat16, float32 or "
                              "float64 tensors, got ", t.scalar_type());
  }
}

void* data_or_null(at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

Launch current_launch() {
  int sm_count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  return {c10::cuda::getCurrentCUDAStream(), sm_count};
}

// ---- CUDA graph capture (graph_rng.h) ------------------------------------------------

// The [seed, offset] device state of a captured call: a pointer the kernels read on the
// device. The ops' plain (seed, offset) overloads pass null instead (see kernels.h).
const int64_t* device_state_ptr(const at::Tensor& state, const at::Tensor& x) {
  TORCH_CHECK_VALUE(state.scalar_type() == at::kLong && state.numel() == 2 &&
                        state.is_contiguous() && state.device() == x.device(),
                    "device_state must be [seed, offset], two contiguous int64 on ", x.device(),
                    ", got ", state.scalar_type(), " of shape ", state.sizes(), " on ",
                    state.device());
  return state.const_data_ptr<int64_t>();
}

// graph_rng::CapturedStateFn: undefined outside capture unless `any_time` (one
// cudaStreamIsCapturing query, as torch's philox_cuda_state makes); else reserves `counters` Philox counters of the
// CUDA generator of x's device (the one torch.cuda.graph registers with the graph, so each
// replay moves its offset on) and launches the kernel that writes this replay's
// [seed, offset] into a new tensor on x's device.
at::Tensor captured_state(const at::Tensor& x, int64_t counters, bool any_time) {
  const c10::cuda::CUDAGuard guard(x.device());
  if (!any_time &&
      c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None) {
    return at::Tensor();
  }
  TORCH_CHECK_VALUE(counters >= 0, "counters must be non-negative, got ", counters);
  auto gen = at::cuda::detail::getDefaultCUDAGenerator(x.device().index());
  at::PhiloxCudaState philox;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    philox = at::check_generator<at::CUDAGeneratorImpl>(gen)->philox_cuda_state(
        static_cast<uint64_t>(counters));
  }
  at::Tensor state = at::empty({2}, x.options().dtype(at::kLong));
  launch_unpack_philox_state(c10::cuda::getCurrentCUDAStream(), philox,
                             state.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return state;
}

const bool kCapturedStateSet = [] {
  graph_rng::set_captured_state_fn(&captured_state);
  return true;
}();

// ---- layouts -----------------------------------------------------------------------------

// A channels_last x whose H * W is a multiple of 4 is read and written in place
// (channels_last.h); any other layout is copied to row-major order, the spec's element
// order, and the outputs are then put in x's layout (in_layout_of, common.h).
ChannelsLast channels_last_layout(const at::Tensor& x) {
  if (is_channels_last(x) && (x.size(2) * x.size(3)) % 4 == 0) {
    return {x.size(1), x.size(2) * x.size(3)};
  }
  return {};
}

at::Tensor in_kernel_layout(const at::Tensor& x, ChannelsLast layout) {
  return layout.enabled() ? x : x.contiguous();
}

at::Tensor empty_in_layout(const at::Tensor& x, ChannelsLast layout) {
  return at::empty(x.sizes(), x.options().memory_format(layout.enabled()
                                                            ? at::MemoryFormat::ChannelsLast
                                                            : at::MemoryFormat::Contiguous));
}

// ---- the ops -----------------------------------------------------------------------------
// Each noise op has one body taking (seed, offset) and an optional device_state pointer:
// the plain overload passes its checked (seed, offset) and null, the .device_state one
// (capture only) the tensor's pointer, whose values the kernels read instead.

at::Tensor noise_forward_impl(const at::Tensor& x_in, const at::Tensor& sigma_in, int64_t seed,
                              int64_t offset, const int64_t* device_state) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const ChannelsLast layout = channels_last_layout(x_in);
  const at::Tensor x = in_kernel_layout(x_in, layout);
  const at::Tensor sigma = per_sample(sigma_in, x, "sigma");
  at::Tensor y = empty_in_layout(x, layout);
  if (x.numel() == 0) return in_layout_of(y, x_in);
  launch_noise_forward(current_launch(), storage_of(x), x.const_data_ptr(),
                       sigma.const_data_ptr(), y.mutable_data_ptr(), x.numel(), feature_numel(x),
                       seed, offset, device_state, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return in_layout_of(y, x_in);
}

at::Tensor noise_forward(const at::Tensor& x, const at::Tensor& sigma, int64_t seed,
                         int64_t offset) {
  check_floating(x, "x");
  check_seed_offset(seed, offset);
  return noise_forward_impl(x, sigma, seed, offset, nullptr);
}

at::Tensor noise_forward_device(const at::Tensor& x, const at::Tensor& sigma,
                                const at::Tensor& state) {
  check_floating(x, "x");
  return noise_forward_impl(x, sigma, 0, 0, device_state_ptr(state, x));
}

at::Tensor noise_backward_sigma_impl(const at::Tensor& grad_in, const at::Tensor& sigma,
                                     int64_t seed, int64_t offset,
                                     const int64_t* device_state) {
  const c10::cuda::CUDAGuard guard(grad_in.device());
  const ChannelsLast layout = channels_last_layout(grad_in);
  const at::Tensor grad = in_kernel_layout(grad_in, layout);
  check_per_feature(sigma, grad, "sigma");  // validates; the backward never reads sigma
  if (grad.numel() == 0) return at::zeros(sigma.sizes(), sigma.options());
  const int64_t features = feature_numel(grad);
  // Per-chunk partial sums, then their sum in a fixed order: no atomics, so the same bits
  // every run (use_deterministic_algorithms holds trivially).
  const ReductionPlan plan = plan_reduction(grad.numel() / features, features);
  const auto opmath = grad.options().dtype(opmath_type(grad));
  at::Tensor sums = at::empty({features}, opmath);
  at::Tensor partials =
      plan.chunks > 1 ? at::empty({plan.chunks, features}, opmath) : at::Tensor();
  launch_noise_backward_sigma(current_launch(), storage_of(grad), grad.const_data_ptr(),
                              sums.mutable_data_ptr(), data_or_null(partials), plan, grad.numel(),
                              features, seed, offset, device_state, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return reduce_to_param(sums, grad, sigma);
}

at::Tensor noise_backward_sigma(const at::Tensor& grad_y, const at::Tensor& sigma, int64_t seed,
                                int64_t offset) {
  check_floating(grad_y, "grad_y");
  check_seed_offset(seed, offset);
  return noise_backward_sigma_impl(grad_y, sigma, seed, offset, nullptr);
}

at::Tensor noise_backward_sigma_device(const at::Tensor& grad_y, const at::Tensor& sigma,
                                       const at::Tensor& state) {
  check_floating(grad_y, "grad_y");
  return noise_backward_sigma_impl(grad_y, sigma, 0, 0, device_state_ptr(state, grad_y));
}

at::Tensor pnil_forward_impl(const at::Tensor& x_in, const at::Tensor& weight_in,
                             const at::Tensor& bias_in, int64_t seed, int64_t offset,
                             const int64_t* device_state) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const ChannelsLast layout = channels_last_layout(x_in);
  const at::Tensor x = in_kernel_layout(x_in, layout);
  const at::Tensor weight = per_sample(weight_in, x, "weight");
  const at::Tensor bias = per_sample(bias_in, x, "bias");
  at::Tensor y = empty_in_layout(x, layout);
  if (x.numel() == 0) return in_layout_of(y, x_in);
  launch_pnil_forward(current_launch(), storage_of(x), x.const_data_ptr(),
                      weight.const_data_ptr(), bias.const_data_ptr(), y.mutable_data_ptr(),
                      x.numel(), feature_numel(x), seed, offset, device_state, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return in_layout_of(y, x_in);
}

at::Tensor pnil_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                        int64_t seed, int64_t offset) {
  check_floating(x, "x");
  check_seed_offset(seed, offset);
  return pnil_forward_impl(x, weight, bias, seed, offset, nullptr);
}

at::Tensor pnil_forward_device(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& state) {
  check_floating(x, "x");
  return pnil_forward_impl(x, weight, bias, 0, 0, device_state_ptr(state, x));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pnil_backward_impl(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& weight_in,
    const at::Tensor& bias_in, int64_t seed, int64_t offset, const int64_t* device_state) {
  TORCH_CHECK_VALUE(grad_in.sizes() == x_in.sizes(), "grad_y must have the shape of x ",
                    x_in.sizes(), ", got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  // In place only when grad_y and x are both channels_last (grad_x then is too).
  const ChannelsLast x_layout = channels_last_layout(x_in);
  const ChannelsLast layout =
      channels_last_layout(grad_in).enabled() ? x_layout : ChannelsLast{};
  const at::Tensor grad = in_kernel_layout(grad_in, layout).to(x_in.scalar_type());
  const at::Tensor x = in_kernel_layout(x_in, layout);
  const at::Tensor weight = per_sample(weight_in, x, "weight");
  const at::Tensor bias = per_sample(bias_in, x, "bias");
  at::Tensor grad_x = empty_in_layout(x, layout);
  if (x.numel() == 0) {
    return {in_layout_of(grad_x, x_in), at::zeros(weight_in.sizes(), weight_in.options()),
            at::zeros(bias_in.sizes(), bias_in.options())};
  }
  const int64_t features = feature_numel(x);
  const ReductionPlan plan = plan_reduction(x.numel() / features, features);
  const auto opmath = x.options().dtype(opmath_type(x));
  at::Tensor sums = at::empty({2, features}, opmath);  // grad_w sums, grad_b sums
  at::Tensor partials =
      plan.chunks > 1 ? at::empty({2, plan.chunks, features}, opmath) : at::Tensor();
  launch_pnil_backward(current_launch(), storage_of(x), grad.const_data_ptr(), x.const_data_ptr(),
                       weight.const_data_ptr(), bias.const_data_ptr(), grad_x.mutable_data_ptr(),
                       sums.mutable_data_ptr(), data_or_null(partials), plan, x.numel(), features,
                       seed, offset, device_state, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {in_layout_of(grad_x, x_in), reduce_to_param(sums[0], x, weight_in),
          reduce_to_param(sums[1], x, bias_in)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pnil_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, int64_t seed, int64_t offset) {
  check_floating(grad_y, "grad_y");
  check_floating(x, "x");
  check_seed_offset(seed, offset);
  return pnil_backward_impl(grad_y, x, weight, bias, seed, offset, nullptr);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pnil_backward_device(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& bias, const at::Tensor& state) {
  check_floating(grad_y, "grad_y");
  check_floating(x, "x");
  return pnil_backward_impl(grad_y, x, weight, bias, 0, 0, device_state_ptr(state, x));
}

at::Tensor pgd_step(const at::Tensor& x_adv_in, const at::Tensor& grad_in,
                    const at::Tensor& x_orig_in, double step_size, double eps, double clip_min,
                    double clip_max) {
  check_floating(x_adv_in, "x_adv");
  TORCH_CHECK_VALUE(
      grad_in.sizes() == x_adv_in.sizes() && x_orig_in.sizes() == x_adv_in.sizes(),
      "grad and x_orig must have the shape of x_adv ", x_adv_in.sizes());
  const c10::cuda::CUDAGuard guard(x_adv_in.device());
  // The step draws no noise, so element order does not matter: three channels_last tensors
  // run flat over memory (any H * W), with no copies in or out.
  const ChannelsLast layout =
      is_channels_last(x_adv_in) && is_channels_last(grad_in) && is_channels_last(x_orig_in)
          ? ChannelsLast{x_adv_in.size(1), x_adv_in.size(2) * x_adv_in.size(3)}
          : ChannelsLast{};
  const at::Tensor x_adv = in_kernel_layout(x_adv_in, layout);
  const at::Tensor grad = in_kernel_layout(grad_in, layout).to(x_adv.scalar_type());
  const at::Tensor x_orig = in_kernel_layout(x_orig_in, layout).to(x_adv.scalar_type());
  at::Tensor out = empty_in_layout(x_adv, layout);
  if (x_adv.numel() == 0) return in_layout_of(out, x_adv_in);
  launch_pgd_step(current_launch(), storage_of(x_adv), x_adv.const_data_ptr(),
                  grad.const_data_ptr(), x_orig.const_data_ptr(), out.mutable_data_ptr(),
                  x_adv.numel(), step_size, eps, clip_min, clip_max);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return in_layout_of(out, x_adv_in);
}

at::Tensor random_start_impl(const at::Tensor& x_in, double eps, int64_t seed, int64_t offset,
                             double clip_min, double clip_max, bool project,
                             const int64_t* device_state) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const ChannelsLast layout = channels_last_layout(x_in);
  const at::Tensor x = in_kernel_layout(x_in, layout);
  at::Tensor out = empty_in_layout(x, layout);
  if (x.numel() == 0) return in_layout_of(out, x_in);
  const double inf = std::numeric_limits<double>::infinity();
  launch_random_start(current_launch(), storage_of(x), x.const_data_ptr(), out.mutable_data_ptr(),
                      x.numel(), eps, project ? clip_min : -inf, project ? clip_max : inf, seed,
                      offset, device_state, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return in_layout_of(out, x_in);
}

at::Tensor random_start(const at::Tensor& x, double eps, int64_t seed, int64_t offset,
                        double clip_min, double clip_max, bool project) {
  check_floating(x, "x");
  check_seed_offset(seed, offset);
  return random_start_impl(x, eps, seed, offset, clip_min, clip_max, project, nullptr);
}

at::Tensor random_start_device(const at::Tensor& x, double eps, const at::Tensor& state,
                               double clip_min, double clip_max, bool project) {
  check_floating(x, "x");
  return random_start_impl(x, eps, 0, 0, clip_min, clip_max, project,
                           device_state_ptr(state, x));
}

at::Tensor philox_words(const at::Tensor& counters_in, int64_t seed) {
  TORCH_CHECK_TYPE(counters_in.scalar_type() == at::kLong, "counters must be int64, got ",
                   counters_in.scalar_type());
  check_seed_offset(seed, 0);
  const c10::cuda::CUDAGuard guard(counters_in.device());
  const at::Tensor counters = counters_in.contiguous().view(-1);
  at::Tensor words = at::empty({counters.numel(), 4}, counters.options());
  if (counters.numel() == 0) return words;
  launch_philox_words(current_launch(), counters.const_data_ptr<int64_t>(),
                      words.mutable_data_ptr<int64_t>(), counters.numel(), seed);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return words;
}

}  // namespace
}  // namespace cuda
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CUDA, m) {
  m.impl("noise_forward", &fastnoise::cuda::noise_forward);
  m.impl("noise_backward_sigma", &fastnoise::cuda::noise_backward_sigma);
  m.impl("pnil_forward", &fastnoise::cuda::pnil_forward);
  m.impl("pnil_backward", &fastnoise::cuda::pnil_backward);
  m.impl("pgd_step", &fastnoise::cuda::pgd_step);
  m.impl("random_start", &fastnoise::cuda::random_start);
  m.impl("philox_words", &fastnoise::cuda::philox_words);
  // CUDA graph capture only (graph_rng.h): (seed, offset) read on the device.
  m.impl("noise_forward.device_state", &fastnoise::cuda::noise_forward_device);
  m.impl("noise_backward_sigma.device_state", &fastnoise::cuda::noise_backward_sigma_device);
  m.impl("pnil_forward.device_state", &fastnoise::cuda::pnil_forward_device);
  m.impl("pnil_backward.device_state", &fastnoise::cuda::pnil_backward_device);
  m.impl("random_start.device_state", &fastnoise::cuda::random_start_device);
}
