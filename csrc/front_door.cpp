// The public ops' front door: one dispatcher call from Python does the argument checks,
// draws the seed, runs the fused kernel and records autograd (a C++ autograd::Function
// on the Autograd key, as torchvision does for its ops). The kernels are the backend
// ops of ops.cpp (noise_forward, pnil_forward, ...), reached through the dispatcher so
// the CPU and CUDA implementations both serve it.
//
// seed=None draws a 63-bit seed from torch's default CPU generator exactly as
// fastnoise.rng.draw_seed() does (torch.randint(0, 2**63 - 1)), so torch.manual_seed
// gives the same noise on this path and the Python one. The backward regenerates the
// noise from the (seed, offset) saved here: nothing activation-sized is kept for it.
//
// CUDA graph capture with seed=None (cuda/graph_rng.h): a seed drawn on the host would be
// baked into the graph and every replay would draw the same noise. While x's current
// stream is capturing, the seed and offset instead come from torch's CUDA generator on
// the device, in a two-int64 device tensor that the captured graph refills on every
// replay; the Captured* autograd Functions below save that tensor for the backward. Every
// other call (an explicit seed, a CPU tensor, no capture) takes the path it always took,
// with the same numbers.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/_assert_async.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/sgn.h>
#include <ATen/ops/all.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>

#include "common.h"
#include "cuda/graph_rng.h"

namespace fastnoise {
namespace graph_rng {
namespace {
// Constant-initialized, so register_cuda.cpp may set it from its own static initializer
// whatever the order of the two translation units.
std::atomic<CapturedStateFn> captured_state_fn{nullptr};
}  // namespace

void set_captured_state_fn(CapturedStateFn fn) {
  captured_state_fn.store(fn, std::memory_order_release);
}
}  // namespace graph_rng

namespace front {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- the backend ops, looked up once ------------------------------------------------
// Their activation-shaped outputs come back in x's layout (in_layout_of, common.h), so the
// front door passes them on as they are.

template <typename Signature>
c10::TypedOperatorHandle<Signature> backend_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

Tensor noise_forward(const Tensor& x, const Tensor& sigma, int64_t seed, int64_t offset) {
  static const auto op = backend_op<Tensor(const Tensor&, const Tensor&, int64_t, int64_t)>(
      "fastnoise_C::noise_forward");
  return op.call(x, sigma, seed, offset);
}

Tensor noise_backward_sigma(const Tensor& grad_y, const Tensor& sigma, int64_t seed,
                            int64_t offset) {
  static const auto op = backend_op<Tensor(const Tensor&, const Tensor&, int64_t, int64_t)>(
      "fastnoise_C::noise_backward_sigma");
  return op.call(grad_y, sigma, seed, offset);
}

Tensor pnil_forward(const Tensor& x, const Tensor& w, const Tensor& b, int64_t seed,
                    int64_t offset) {
  static const auto op =
      backend_op<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t)>(
          "fastnoise_C::pnil_forward");
  return op.call(x, w, b, seed, offset);
}

bool share_memory(const Tensor& a, const Tensor& b) {
  return a.numel() > 0 && b.numel() > 0 && a.storage().is_alias_of(b.storage());
}

// The kernels may hand back grad_w and grad_b as two rows of one buffer; the schema
// promises separate tensors (opcheck and the compiler rely on it), so copy if they share.
std::tuple<Tensor, Tensor, Tensor> pnil_backward(const Tensor& grad_y, const Tensor& x,
                                                 const Tensor& w, const Tensor& b, int64_t seed,
                                                 int64_t offset) {
  static const auto op = backend_op<std::tuple<Tensor, Tensor, Tensor>(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t)>(
      "fastnoise_C::pnil_backward");
  auto [gx, gw, gb] = op.call(grad_y, x, w, b, seed, offset);
  if (share_memory(gw, gx)) gw = gw.clone();
  if (share_memory(gb, gw) || share_memory(gb, gx)) gb = gb.clone();
  return {gx, gw, gb};
}

// ---- the .device_state overloads: CUDA graph capture only (cuda/graph_rng.h) ---------

template <typename Signature>
c10::TypedOperatorHandle<Signature> backend_overload(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "device_state").typed<Signature>();
}

Tensor noise_forward_dev(const Tensor& x, const Tensor& sigma, const Tensor& state) {
  static const auto op = backend_overload<Tensor(const Tensor&, const Tensor&, const Tensor&)>(
      "fastnoise_C::noise_forward");
  return op.call(x, sigma, state);
}

Tensor noise_backward_sigma_dev(const Tensor& grad_y, const Tensor& sigma, const Tensor& state) {
  static const auto op = backend_overload<Tensor(const Tensor&, const Tensor&, const Tensor&)>(
      "fastnoise_C::noise_backward_sigma");
  return op.call(grad_y, sigma, state);
}

Tensor pnil_forward_dev(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& state) {
  static const auto op =
      backend_overload<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
          "fastnoise_C::pnil_forward");
  return op.call(x, w, b, state);
}

std::tuple<Tensor, Tensor, Tensor> pnil_backward_dev(const Tensor& grad_y, const Tensor& x,
                                                     const Tensor& w, const Tensor& b,
                                                     const Tensor& state) {
  static const auto op = backend_overload<std::tuple<Tensor, Tensor, Tensor>(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
      "fastnoise_C::pnil_backward");
  auto [gx, gw, gb] = op.call(grad_y, x, w, b, state);
  if (share_memory(gw, gx)) gw = gw.clone();
  if (share_memory(gb, gw) || share_memory(gb, gx)) gb = gb.clone();
  return {gx, gw, gb};
}

// seed=None on a CUDA tensor while its stream is capturing: the [seed, offset] device
// state (one per call, reserving ceil(numel / 4) Philox counters); else an undefined
// tensor, and the caller draws on the host as it always has. The capture query is the
// only thing outside capture this adds, and only for CUDA tensors with seed=None. The
// offset argument is checked, then unused: see the mapping in cuda/graph_rng.h.
Tensor captured_state(const Tensor& x, const std::optional<int64_t>& seed, int64_t offset) {
  if (seed.has_value() || !x.is_cuda()) return Tensor();
  const auto fn = graph_rng::captured_state_fn.load(std::memory_order_acquire);
  if (fn == nullptr) return Tensor();
  TORCH_CHECK_VALUE(offset >= 0, "offset must be in [0, 2**63), got ", offset);
  return fn(x, (x.numel() + 3) / 4, /*any_time=*/false);
}

// ---- checks: the messages of fastnoise/_validation.py ----------------------------------

void check_input(const Tensor& x) {
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()),
                   "x must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1,
                    "x must have a batch dimension (at least 1-D), got a 0-d tensor");
}

// Device and broadcast; the kernels check the broadcast again where they expand.
void check_param(const Tensor& p, const char* name, const Tensor& x) {
  TORCH_CHECK_TYPE(at::isFloatingType(p.scalar_type()), name,
                   " must be a floating tensor (float16, bfloat16, float32 or float64), got ",
                   p.scalar_type());
  TORCH_CHECK_VALUE(p.device() == x.device(), name, " is on ", p.device(), " but x is on ",
                    x.device(), "; move them to the same device");
  const auto sample = x.sizes().slice(1);
  TORCH_CHECK_VALUE(p.dim() <= static_cast<int64_t>(sample.size()), name,
                    " must broadcast to one sample of x (shape ", sample, "); got ", p.sizes(),
                    " with more dims than a sample");
  for (int64_t d = 1; d <= p.dim(); ++d) {
    const int64_t have = p.size(-d), want = sample[sample.size() - d];
    TORCH_CHECK_VALUE(have == 1 || have == want, name, " of shape ", p.sizes(),
                      " does not broadcast to one sample of x (shape ", sample, ")");
  }
}

// A tensor whose values cannot be read on the host: a FakeTensor (torch.compile's tracing,
// opcheck) or another Python subclass. Data-dependent checks and shortcuts skip it.
bool has_no_data(const Tensor& t) { return t.key_set().has(c10::DispatchKey::Python); }

template <typename T>
bool all_above_zero(const T* p, int64_t n, bool strict) {
  bool ok = true;  // NaN compares false either way
  if (strict) {
    for (int64_t i = 0; i < n; ++i) ok &= p[i] > T(0);
  } else {
    for (int64_t i = 0; i < n; ++i) ok &= p[i] >= T(0);
  }
  return ok;
}

// Whether every entry of t is >= 0 (> 0 when `strict`), read in place on the host: for a
// contiguous float32/float64 CPU tensor (parameters), else nullopt (the caller decides).
std::optional<bool> read_all_above_zero(const Tensor& t, bool strict) {
  if (!t.is_cpu() || !t.is_contiguous() || has_no_data(t)) return std::nullopt;
  if (t.scalar_type() == at::kFloat) {
    return all_above_zero(t.const_data_ptr<float>(), t.numel(), strict);
  }
  if (t.scalar_type() == at::kDouble) {
    return all_above_zero(t.const_data_ptr<double>(), t.numel(), strict);
  }
  return std::nullopt;
}

// On the CPU a parameter-sized loop raises at once. On CUDA the forward kernel asserts it
// on the device as it reads sigma (cuda/noise.cu), so the call waits on nothing and
// launches nothing more (a separate ge/all/_assert_async was three more launches, most of
// a small call's cost); another accelerator gets an async assert.
void check_non_negative(const Tensor& t, const char* name) {
  if (t.numel() == 0 || t.is_meta() || t.is_cuda() || has_no_data(t)) return;
  if (t.is_cpu()) {
    const std::optional<bool> read = read_all_above_zero(t, /*strict=*/false);
    const bool ok = read.has_value() ? *read : at::all(t.ge(0)).item<bool>();
    TORCH_CHECK_VALUE(ok, name, " must be non-negative and not NaN (min ",
                      t.min().item<double>(), ")");
  } else {
    at::_assert_async(at::all(t.ge(0)), std::string(name) + " must be non-negative and not NaN");
  }
}

int64_t seed_or_draw(std::optional<int64_t> seed, int64_t offset) {
  TORCH_CHECK_VALUE(offset >= 0, "offset must be in [0, 2**63), got ", offset);
  if (seed.has_value()) {
    TORCH_CHECK_VALUE(*seed >= 0, "seed must be in [0, 2**63), got ", *seed);
    return *seed;
  }
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  const uint64_t word = at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
  // torch.randint(0, 2**63 - 1) on the CPU: one random64() modulo the range.
  return static_cast<int64_t>(word % static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
}

// ---- noise injection, Learn2Perturb Eq. (4)-(5): y = x + sigma * z --------------------

// |sigma| for inject_noise.abs: the same law as sigma * z (z is symmetric), for layers whose
// learnable std may dip below 0 between an optimizer step and its clamp. Only a NaN can
// fail the check: it is reported as inject_noise reports it.
Tensor magnitude_of(const Tensor& sigma) {
  const Tensor magnitude = sigma.abs();
  check_non_negative(magnitude, "sigma");
  return magnitude;
}

// Whether |sigma| == sigma with d|sigma|/dsigma == 1 everywhere (every entry > 0), known
// cheaply: a CPU parameter, read in place. The usual case, since the layers clamp theta
// to theta_min > 0 after each step; inject_noise.abs then skips the abs copy and the
// backward's sign product, a third of a small call's cost. Zero entries keep the abs
// path, where sgn(0) = 0 makes their gradient 0.
bool known_positive(const Tensor& sigma) {
  return sigma.numel() > 0 && read_all_above_zero(sigma, /*strict=*/true).value_or(false);
}

// y = x + s * z with s = sigma, or |sigma| when `magnitude` (inject_noise.abs; then
// grad_sigma = sign(sigma) * sum grad_y * z). z is regenerated in the backward from
// (seed, offset); only sigma, parameter-sized, is saved.
class NoiseInjection : public torch::autograd::Function<NoiseInjection> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& sigma, int64_t seed,
                        int64_t offset, bool magnitude) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({sigma});
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["magnitude"] = magnitude;
    return noise_forward(x, magnitude ? magnitude_of(sigma) : sigma, seed, offset);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_sigma;
    if (ctx->needs_input_grad(1)) {  // false for a number sigma (a filled 0-d tensor)
      const Tensor sigma = ctx->get_saved_variables()[0];
      grad_sigma = noise_backward_sigma(grads[0], sigma, ctx->saved_data["seed"].toInt(),
                                        ctx->saved_data["offset"].toInt());
      if (ctx->saved_data["magnitude"].toBool()) grad_sigma.mul_(sigma.sgn());
    }
    return {grads[0], grad_sigma, Tensor(), Tensor(), Tensor()};  // dy/dx = 1
  }
};

// NoiseInjection inside CUDA graph capture: (seed, offset) read on the device from
// `state`, which is saved for the backward in place of the two integers.
class CapturedNoiseInjection : public torch::autograd::Function<CapturedNoiseInjection> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& sigma,
                        const Tensor& state, bool magnitude) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({sigma, state});
    ctx->saved_data["magnitude"] = magnitude;
    return noise_forward_dev(x, magnitude ? magnitude_of(sigma) : sigma, state);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Tensor grad_sigma;
    if (ctx->needs_input_grad(1)) {
      const auto saved = ctx->get_saved_variables();
      grad_sigma = noise_backward_sigma_dev(grads[0], saved[0], saved[1]);
      if (ctx->saved_data["magnitude"].toBool()) grad_sigma.mul_(saved[0].sgn());
    }
    return {grads[0], grad_sigma, Tensor(), Tensor()};
  }
};

// The Autograd-key kernels: the capture state when capturing, else the host's seed.
Tensor inject_with_autograd(const Tensor& x, const Tensor& sigma, std::optional<int64_t> seed,
                            int64_t offset, bool magnitude) {
  if (const Tensor state = captured_state(x, seed, offset); state.defined()) {
    return CapturedNoiseInjection::apply(x, sigma, state, magnitude);
  }
  return NoiseInjection::apply(x, sigma, seed_or_draw(seed, offset), offset, magnitude);
}

// Below autograd (inference_mode): the kernel alone, with the same choice of (seed, offset).
Tensor inject_below_autograd(const Tensor& x, const Tensor& scale, std::optional<int64_t> seed,
                             int64_t offset) {
  if (const Tensor state = captured_state(x, seed, offset); state.defined()) {
    return noise_forward_dev(x, scale, state);
  }
  return noise_forward(x, scale, seed_or_draw(seed, offset), offset);
}

void check_inject(const Tensor& x, const Tensor& sigma) {
  check_input(x);
  check_param(sigma, "sigma", x);
}

// A float sigma becomes a 0-d tensor on x's device with a fill, not a host-to-device copy:
// no stream sync, and a CUDA graph can capture it.
Tensor filled_sigma(const Tensor& x, double sigma) {
  check_input(x);
  // !(sigma >= 0) also rejects NaN
  TORCH_CHECK_VALUE(sigma >= 0, "sigma must be a non-negative number, got ", sigma);
  const auto opmath = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return at::full({}, sigma, x.options().dtype(opmath));
}

Tensor inject_noise_autograd(const Tensor& x, const Tensor& sigma, std::optional<int64_t> seed,
                             int64_t offset) {
  check_inject(x, sigma);
  check_non_negative(sigma, "sigma");
  return inject_with_autograd(x, sigma, seed, offset, false);
}

Tensor inject_noise_plain(const Tensor& x, const Tensor& sigma, std::optional<int64_t> seed,
                          int64_t offset) {
  check_inject(x, sigma);
  check_non_negative(sigma, "sigma");
  return inject_below_autograd(x, sigma, seed, offset);
}

Tensor inject_noise_abs_autograd(const Tensor& x, const Tensor& sigma,
                                 std::optional<int64_t> seed, int64_t offset) {
  check_inject(x, sigma);
  return inject_with_autograd(x, sigma, seed, offset, !known_positive(sigma));
}

Tensor inject_noise_abs_plain(const Tensor& x, const Tensor& sigma, std::optional<int64_t> seed,
                              int64_t offset) {
  check_inject(x, sigma);
  return inject_below_autograd(x, known_positive(sigma) ? sigma : magnitude_of(sigma), seed,
                               offset);
}

Tensor inject_noise_scalar_autograd(const Tensor& x, double sigma, std::optional<int64_t> seed,
                                    int64_t offset) {
  return inject_with_autograd(x, filled_sigma(x, sigma), seed, offset, false);
}

Tensor inject_noise_scalar_plain(const Tensor& x, double sigma, std::optional<int64_t> seed,
                                 int64_t offset) {
  return inject_below_autograd(x, filled_sigma(x, sigma), seed, offset);
}

// ---- PNIL, Eq. (2)-(3): y = x + z * exp((x * W + B) / 2) -------------------------------

class Pnil : public torch::autograd::Function<Pnil> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, int64_t seed, int64_t offset) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight, bias});  // x, not z: z is regenerated
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["offset"] = offset;
    return pnil_forward(x, weight, bias, seed, offset);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [gx, gw, gb] = pnil_backward(grads[0], saved[0], saved[1], saved[2],
                                      ctx->saved_data["seed"].toInt(),
                                      ctx->saved_data["offset"].toInt());
    return {gx, gw, gb, Tensor(), Tensor()};
  }
};

// PNIL inside CUDA graph capture: Pnil with (seed, offset) read on the device from
// `state`, saved for the backward in place of the two integers.
class CapturedPnil : public torch::autograd::Function<CapturedPnil> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, const Tensor& state) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight, bias, state});
    return pnil_forward_dev(x, weight, bias, state);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [gx, gw, gb] = pnil_backward_dev(grads[0], saved[0], saved[1], saved[2], saved[3]);
    return {gx, gw, gb, Tensor()};
  }
};

void check_pnil(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_input(x);
  check_param(weight, "weight", x);
  check_param(bias, "bias", x);
}

Tensor pnil_autograd(const Tensor& x, const Tensor& weight, const Tensor& bias,
                     std::optional<int64_t> seed, int64_t offset) {
  check_pnil(x, weight, bias);
  if (const Tensor state = captured_state(x, seed, offset); state.defined()) {
    return CapturedPnil::apply(x, weight, bias, state);
  }
  return Pnil::apply(x, weight, bias, seed_or_draw(seed, offset), offset);
}

Tensor pnil_plain(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  std::optional<int64_t> seed, int64_t offset) {
  check_pnil(x, weight, bias);
  if (const Tensor state = captured_state(x, seed, offset); state.defined()) {
    return pnil_forward_dev(x, weight, bias, state);
  }
  return pnil_forward(x, weight, bias, seed_or_draw(seed, offset), offset);
}

}  // namespace
}  // namespace front
}  // namespace fastnoise

// The schemas of these ops are in ops.cpp, with the others: one library definition
// (a FRAGMENT here made the process abort at exit, deregistering the defs out of order).

namespace fastnoise {
namespace front {
namespace {

// The attack steps are not differentiable: run them below autograd, so the result has no
// graph even when x_adv requires grad (the Python callers need no torch.no_grad()).
Tensor pgd_step_no_graph(const Tensor& x_adv, const Tensor& grad, const Tensor& x_orig,
                         double step_size, double eps, double clip_min, double clip_max) {
  static const auto op = backend_op<Tensor(const Tensor&, const Tensor&, const Tensor&, double,
                                           double, double, double)>("fastnoise_C::pgd_step");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x_adv, grad, x_orig, step_size, eps, clip_min, clip_max);
}

Tensor random_start_no_graph(const Tensor& x, double eps, int64_t seed, int64_t offset,
                             double clip_min, double clip_max, bool project) {
  static const auto op =
      backend_op<Tensor(const Tensor&, double, int64_t, int64_t, double, double, bool)>(
          "fastnoise_C::random_start");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, eps, seed, offset, clip_min, clip_max, project);
}

// The random start with (seed, offset) read on the device from `state`.
Tensor random_start_dev(const Tensor& x, double eps, const Tensor& state, double clip_min,
                        double clip_max, bool project) {
  static const auto op = backend_overload<Tensor(const Tensor&, double, const Tensor&, double,
                                                 double, bool)>("fastnoise_C::random_start");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, eps, state, clip_min, clip_max, project);
}

// PGD's random start with the seed drawn here when None (the public random_start).
Tensor random_start_draw(const Tensor& x, double eps, std::optional<int64_t> seed,
                         int64_t offset, double clip_min, double clip_max, bool project) {
  // !(eps >= 0) also rejects NaN
  TORCH_CHECK_VALUE(eps >= 0, "eps must be a non-negative number, got ", eps);
  if (const Tensor state = captured_state(x, seed, offset); state.defined()) {
    return random_start_dev(x, eps, state, clip_min, clip_max, project);
  }
  return random_start_no_graph(x, eps, seed_or_draw(seed, offset), offset, clip_min, clip_max,
                               project);
}

// ---- the torch.compile path: (seed, offset) and the attack bounds as small CPU tensors --
// A compiled graph takes them as inputs, not constants, so new seeds and eps values do
// not recompile (the contract of fastnoise/_ops.py, whose custom ops these replace on the
// extension's devices: the graph then calls C++ with no Python in between).

// A state on x's device (fresh_rng_state's on CUDA) is read there by the .device_state
// kernels, which check it; a CPU one is read here.
bool on_device(const Tensor& rng_state) { return !rng_state.is_cpu(); }

std::pair<int64_t, int64_t> unpack_rng_state(const Tensor& rng_state) {
  TORCH_CHECK_VALUE(rng_state.is_cpu() && rng_state.scalar_type() == at::kLong &&
                        rng_state.numel() == 2,
                    "rng_state must be [seed, offset], two int64 on the CPU or x's device, got ",
                    rng_state.scalar_type(), " of shape ", rng_state.sizes(), " on ",
                    rng_state.device());
  const Tensor values = rng_state.contiguous();
  const int64_t seed = values.const_data_ptr<int64_t>()[0];
  const int64_t offset = values.const_data_ptr<int64_t>()[1];
  seed_or_draw(seed, offset);  // range checks
  return {seed, offset};
}

struct Bounds {
  double step_size, eps, clip_min, clip_max;
};

Bounds unpack_bounds(const Tensor& bounds) {
  TORCH_CHECK_VALUE(bounds.is_cpu() && bounds.scalar_type() == at::kDouble && bounds.numel() == 4,
                    "bounds must be [step_size, eps, clip_min, clip_max], four float64 on the "
                    "CPU, got ", bounds.scalar_type(), " of shape ", bounds.sizes());
  const Tensor values = bounds.contiguous();
  const double* p = values.const_data_ptr<double>();
  return {p[0], p[1], p[2], p[3]};
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> overload(const char* name, const char* overload_name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload_name).typed<Signature>();
}

// A fresh [seed, offset] for the .fresh ops of a compiled graph, drawn as seed=None draws
// it. On the CPU (fake tensors under tracing reach the fake kernels) it is a CPU tensor.
// On CUDA it is the device state of capture
// (cuda/graph_rng.h), at any time: a compiled graph then holds no CPU tensor, so inductor
// can capture it with CUDA graphs, and each replay draws fresh noise; as in capture, the
// offset is checked and otherwise unused.
Tensor fresh_rng_state(const Tensor& x, int64_t offset) {
  if (x.is_cuda()) {
    const auto fn = graph_rng::captured_state_fn.load(std::memory_order_acquire);
    TORCH_CHECK(fn != nullptr, "seed=None on CUDA: this fastnoise_C build has no CUDA kernels");
    TORCH_CHECK_VALUE(offset >= 0, "offset must be in [0, 2**63), got ", offset);
    return fn(x, (x.numel() + 3) / 4, /*any_time=*/true);
  }
  const int64_t seed = seed_or_draw(std::nullopt, offset);
  Tensor state = at::empty({2}, at::TensorOptions().dtype(at::kLong));
  state.mutable_data_ptr<int64_t>()[0] = seed;
  state.mutable_data_ptr<int64_t>()[1] = offset;
  return state;
}

Tensor inject_noise_state_plain(const Tensor& x, const Tensor& sigma, const Tensor& rng_state) {
  check_non_negative(sigma, "sigma");
  if (on_device(rng_state)) return noise_forward_dev(x, sigma, rng_state);
  const auto [seed, offset] = unpack_rng_state(rng_state);
  return noise_forward(x, sigma, seed, offset);
}

Tensor noise_backward_sigma_state(const Tensor& grad_y, const Tensor& sigma,
                                  const Tensor& rng_state) {
  if (on_device(rng_state)) return noise_backward_sigma_dev(grad_y, sigma, rng_state);
  const auto [seed, offset] = unpack_rng_state(rng_state);
  return noise_backward_sigma(grad_y, sigma, seed, offset);
}

// x + |sigma| * z (PerturbationInjection's op under torch.compile): the abs, and the
// backward's sign product, inside the ops, skipped where every entry is known > 0.
Tensor inject_noise_abs_state_plain(const Tensor& x, const Tensor& sigma,
                                    const Tensor& rng_state) {
  return inject_noise_state_plain(x, known_positive(sigma) ? sigma : magnitude_of(sigma),
                                  rng_state);
}

Tensor noise_backward_sigma_abs_state(const Tensor& grad_y, const Tensor& sigma,
                                      const Tensor& rng_state) {
  Tensor grad_sigma = noise_backward_sigma_state(grad_y, sigma, rng_state);
  if (!known_positive(sigma)) grad_sigma.mul_(sigma.sgn());  // d|sigma|/dsigma, 0 at 0
  return grad_sigma;
}

// The autograd of inject_noise.state, or of inject_noise.abs_state when `absolute`: each
// pass is one op below autograd, so a compiled graph holds it as one opaque call.
class NoiseInjectionState : public torch::autograd::Function<NoiseInjectionState> {
 public:
  using StateOp = Tensor(const Tensor&, const Tensor&, const Tensor&);

  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& sigma,
                        const Tensor& rng_state, bool absolute) {
    static const auto plain = overload<StateOp>("fastnoise_C::inject_noise", "state");
    static const auto magnitude = overload<StateOp>("fastnoise_C::inject_noise", "abs_state");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({sigma, rng_state});
    ctx->saved_data["absolute"] = absolute;
    return (absolute ? magnitude : plain).call(x, sigma, rng_state);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0], sigma_grad(ctx, grads[0]), Tensor(), Tensor()};
  }

  // d loss / d sigma from the saved {sigma, rng_state} (also NoiseInjectionFresh's).
  static Tensor sigma_grad(AutogradContext* ctx, const Tensor& grad_y) {
    static const auto plain = overload<StateOp>("fastnoise_C::noise_backward_sigma", "state");
    static const auto magnitude =
        overload<StateOp>("fastnoise_C::noise_backward_sigma", "abs_state");
    if (!ctx->needs_input_grad(1)) return Tensor();
    const auto saved = ctx->get_saved_variables();
    const auto& op = ctx->saved_data["absolute"].toBool() ? magnitude : plain;
    return op.call(grad_y, saved[0], saved[1]);
  }
};

Tensor inject_noise_state_autograd(const Tensor& x, const Tensor& sigma,
                                   const Tensor& rng_state) {
  return NoiseInjectionState::apply(x, sigma, rng_state, false);
}

Tensor inject_noise_abs_state_autograd(const Tensor& x, const Tensor& sigma,
                                       const Tensor& rng_state) {
  return NoiseInjectionState::apply(x, sigma, rng_state, true);
}

Tensor pnil_state_plain(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const Tensor& rng_state) {
  if (on_device(rng_state)) return pnil_forward_dev(x, weight, bias, rng_state);
  const auto [seed, offset] = unpack_rng_state(rng_state);
  return pnil_forward(x, weight, bias, seed, offset);
}

std::tuple<Tensor, Tensor, Tensor> pnil_backward_state(const Tensor& grad_y, const Tensor& x,
                                                       const Tensor& weight, const Tensor& bias,
                                                       const Tensor& rng_state) {
  if (on_device(rng_state)) return pnil_backward_dev(grad_y, x, weight, bias, rng_state);
  const auto [seed, offset] = unpack_rng_state(rng_state);
  return pnil_backward(grad_y, x, weight, bias, seed, offset);
}

class PnilState : public torch::autograd::Function<PnilState> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, const Tensor& rng_state) {
    static const auto op =
        overload<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
            "fastnoise_C::pnil", "state");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight, bias, rng_state});
    return op.call(x, weight, bias, rng_state);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [gx, gw, gb] = grads_from_saved(ctx, grads[0]);
    return {gx, gw, gb, Tensor()};
  }

  // The gradients from the saved {x, weight, bias, rng_state} (also PnilFresh's).
  static std::tuple<Tensor, Tensor, Tensor> grads_from_saved(AutogradContext* ctx,
                                                             const Tensor& grad_y) {
    static const auto op = overload<std::tuple<Tensor, Tensor, Tensor>(
        const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
        "fastnoise_C::pnil_backward", "state");
    const auto saved = ctx->get_saved_variables();
    return op.call(grad_y, saved[0], saved[1], saved[2], saved[3]);
  }
};

Tensor pnil_state_autograd(const Tensor& x, const Tensor& weight, const Tensor& bias,
                           const Tensor& rng_state) {
  return PnilState::apply(x, weight, bias, rng_state);
}

// ---- seed=None under torch.compile: the draw inside the forward op ----------------------
// inject_noise.fresh, .abs_fresh and pnil.fresh draw [seed, offset] (fresh_rng_state) and
// return it beside y, for the backward to regenerate the noise from: one op call (a
// compiled graph calls each op from Python), where a separate draw op made two.
// The state is an output, not a hidden tensor, so AOT autograd hands it to the backward.
using Fresh = std::tuple<Tensor, Tensor>;

Fresh inject_noise_fresh_plain(const Tensor& x, const Tensor& sigma, int64_t offset) {
  const Tensor state = fresh_rng_state(x, offset);
  return {inject_noise_state_plain(x, sigma, state), state};
}

Fresh inject_noise_abs_fresh_plain(const Tensor& x, const Tensor& sigma, int64_t offset) {
  const Tensor state = fresh_rng_state(x, offset);
  return {inject_noise_abs_state_plain(x, sigma, state), state};
}

Fresh pnil_fresh_plain(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       int64_t offset) {
  const Tensor state = fresh_rng_state(x, offset);
  return {pnil_state_plain(x, weight, bias, state), state};
}

// NoiseInjectionState with the state drawn by the forward op (saved as an output).
class NoiseInjectionFresh : public torch::autograd::Function<NoiseInjectionFresh> {
 public:
  using FreshOp = Fresh(const Tensor&, const Tensor&, int64_t);

  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& sigma,
                               int64_t offset, bool absolute) {
    static const auto plain = overload<FreshOp>("fastnoise_C::inject_noise", "fresh");
    static const auto magnitude = overload<FreshOp>("fastnoise_C::inject_noise", "abs_fresh");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, state] = (absolute ? magnitude : plain).call(x, sigma, offset);
    ctx->mark_non_differentiable({state});
    ctx->save_for_backward({sigma, state});
    ctx->saved_data["absolute"] = absolute;
    return {y, state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {grads[0], NoiseInjectionState::sigma_grad(ctx, grads[0]), Tensor(), Tensor()};
  }
};

Fresh inject_noise_fresh_autograd(const Tensor& x, const Tensor& sigma, int64_t offset) {
  const auto out = NoiseInjectionFresh::apply(x, sigma, offset, false);
  return {out[0], out[1]};
}

Fresh inject_noise_abs_fresh_autograd(const Tensor& x, const Tensor& sigma, int64_t offset) {
  const auto out = NoiseInjectionFresh::apply(x, sigma, offset, true);
  return {out[0], out[1]};
}

// PnilState with the state drawn by the forward op (saved as an output).
class PnilFresh : public torch::autograd::Function<PnilFresh> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                               const Tensor& bias, int64_t offset) {
    static const auto op =
        overload<Fresh(const Tensor&, const Tensor&, const Tensor&, int64_t)>("fastnoise_C::pnil",
                                                                              "fresh");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, state] = op.call(x, weight, bias, offset);
    ctx->mark_non_differentiable({state});
    ctx->save_for_backward({x, weight, bias, state});
    return {y, state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [gx, gw, gb] = PnilState::grads_from_saved(ctx, grads[0]);
    return {gx, gw, gb, Tensor()};
  }
};

Fresh pnil_fresh_autograd(const Tensor& x, const Tensor& weight, const Tensor& bias,
                          int64_t offset) {
  const auto out = PnilFresh::apply(x, weight, bias, offset);
  return {out[0], out[1]};
}

Tensor pgd_step_state(const Tensor& x_adv, const Tensor& grad, const Tensor& x_orig,
                      const Tensor& bounds) {
  const Bounds b = unpack_bounds(bounds);
  return pgd_step_no_graph(x_adv, grad, x_orig, b.step_size, b.eps, b.clip_min, b.clip_max);
}

Tensor random_start_state(const Tensor& x, const Tensor& rng_state, const Tensor& bounds,
                          bool project) {
  const Bounds b = unpack_bounds(bounds);
  if (on_device(rng_state)) {
    return random_start_dev(x, b.eps, rng_state, b.clip_min, b.clip_max, project);
  }
  const auto [seed, offset] = unpack_rng_state(rng_state);
  return random_start_no_graph(x, b.eps, seed, offset, b.clip_min, b.clip_max, project);
}

// random_start.state with fresh_rng_state's draw made inside: one op call (a compiled graph
// calls each op from Python) instead of two. On the CPU the drawn seed goes straight to the
// kernel, with no state tensor; on CUDA it is the device state, as fresh_rng_state's.
Tensor random_start_fresh(const Tensor& x, int64_t offset, const Tensor& bounds, bool project) {
  const Bounds b = unpack_bounds(bounds);
  if (x.is_cuda()) {
    return random_start_dev(x, b.eps, fresh_rng_state(x, offset), b.clip_min, b.clip_max,
                            project);
  }
  return random_start_no_graph(x, b.eps, seed_or_draw(std::nullopt, offset), offset, b.clip_min,
                               b.clip_max, project);
}

// Autograd kernels of the attack steps' .state overloads: the same op below autograd, so
// under torch.compile the fake kernels (not the data-reading ones above) see fake tensors.
Tensor pgd_step_state_no_graph(const Tensor& x_adv, const Tensor& grad, const Tensor& x_orig,
                               const Tensor& bounds) {
  static const auto op =
      overload<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>(
          "fastnoise_C::pgd_step", "state");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x_adv, grad, x_orig, bounds);
}

Tensor random_start_state_no_graph(const Tensor& x, const Tensor& rng_state, const Tensor& bounds,
                                   bool project) {
  static const auto op = overload<Tensor(const Tensor&, const Tensor&, const Tensor&, bool)>(
      "fastnoise_C::random_start", "state");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, rng_state, bounds, project);
}

Tensor random_start_fresh_no_graph(const Tensor& x, int64_t offset, const Tensor& bounds,
                                   bool project) {
  static const auto op = overload<Tensor(const Tensor&, int64_t, const Tensor&, bool)>(
      "fastnoise_C::random_start", "fresh");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, offset, bounds, project);
}

}  // namespace
}  // namespace front
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, Autograd, m) {
  m.impl("inject_noise.state", &fastnoise::front::inject_noise_state_autograd);
  m.impl("inject_noise.abs_state", &fastnoise::front::inject_noise_abs_state_autograd);
  m.impl("pnil.state", &fastnoise::front::pnil_state_autograd);
  m.impl("inject_noise.fresh", &fastnoise::front::inject_noise_fresh_autograd);
  m.impl("inject_noise.abs_fresh", &fastnoise::front::inject_noise_abs_fresh_autograd);
  m.impl("pnil.fresh", &fastnoise::front::pnil_fresh_autograd);
  m.impl("pgd_step.state", &fastnoise::front::pgd_step_state_no_graph);
  m.impl("random_start.state", &fastnoise::front::random_start_state_no_graph);
  m.impl("random_start.fresh", &fastnoise::front::random_start_fresh_no_graph);
  m.impl("random_start.draw", &fastnoise::front::random_start_draw);
  m.impl("pgd_step", &fastnoise::front::pgd_step_no_graph);
  m.impl("random_start", &fastnoise::front::random_start_no_graph);
  m.impl("inject_noise", &fastnoise::front::inject_noise_autograd);
  m.impl("inject_noise.scalar", &fastnoise::front::inject_noise_scalar_autograd);
  m.impl("inject_noise.abs", &fastnoise::front::inject_noise_abs_autograd);
  m.impl("pnil", &fastnoise::front::pnil_autograd);
}

// Below autograd (inference_mode, or a caller that already handled autograd): the same
// checks and kernels without the autograd record.
TORCH_LIBRARY_IMPL(fastnoise_C, CompositeExplicitAutograd, m) {
  m.impl("inject_noise", &fastnoise::front::inject_noise_plain);
  m.impl("inject_noise.scalar", &fastnoise::front::inject_noise_scalar_plain);
  m.impl("inject_noise.abs", &fastnoise::front::inject_noise_abs_plain);
  m.impl("pnil", &fastnoise::front::pnil_plain);
  m.impl("random_start.draw", &fastnoise::front::random_start_draw);
  m.impl("inject_noise.state", &fastnoise::front::inject_noise_state_plain);
  m.impl("noise_backward_sigma.state", &fastnoise::front::noise_backward_sigma_state);
  m.impl("inject_noise.abs_state", &fastnoise::front::inject_noise_abs_state_plain);
  m.impl("noise_backward_sigma.abs_state", &fastnoise::front::noise_backward_sigma_abs_state);
  m.impl("pnil.state", &fastnoise::front::pnil_state_plain);
  m.impl("pnil_backward.state", &fastnoise::front::pnil_backward_state);
  m.impl("inject_noise.fresh", &fastnoise::front::inject_noise_fresh_plain);
  m.impl("inject_noise.abs_fresh", &fastnoise::front::inject_noise_abs_fresh_plain);
  m.impl("pnil.fresh", &fastnoise::front::pnil_fresh_plain);
  m.impl("pgd_step.state", &fastnoise::front::pgd_step_state);
  m.impl("random_start.state", &fastnoise::front::random_start_state);
  m.impl("random_start.fresh", &fastnoise::front::random_start_fresh);
}
