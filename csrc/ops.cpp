// Schemas of the fastnoise_C operators: the primitives of fastnoise/_backends/reference.py
// and the public front door of front_door.cpp.
// Implementations register per device in cpu/*.cpp and cuda/*.cu; fake (meta) kernels
// are registered from Python in fastnoise/_extension.py. Seeds are int64 (the Philox key),
// offsets int64 Philox counters (blocks of four elements).
#include <torch/library.h>

#include <string>

#include "cpu/random_tiles.h"

namespace {

void define_ops(torch::Library& m) {
  // Learn2Perturb Eq. (4)-(5): y = x + sigma * z.
  m.def("noise_forward(Tensor x, Tensor sigma, int seed, int offset) -> Tensor");
  // d loss / d sigma = sum over batch and broadcast dims of grad_y * z (z regenerated).
  m.def("noise_backward_sigma(Tensor grad_y, Tensor sigma, int seed, int offset) -> Tensor");
  // PNIL Eq. (2)-(3): y = x + z * exp((x * weight + bias) / 2).
  m.def("pnil_forward(Tensor x, Tensor weight, Tensor bias, int seed, int offset) -> Tensor");
  m.def(
      "pnil_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, int seed, int offset)"
      " -> (Tensor, Tensor, Tensor)");
  // One L-inf PGD iterate: sign step, eps-ball projection, pixel box.
  m.def(
      "pgd_step(Tensor x_adv, Tensor grad, Tensor x_orig, float step_size, float eps,"
      " float clip_min, float clip_max) -> Tensor");
  // x + eps * (2u - 1), u ~ U[0, 1] from the spec, optionally clipped to the box.
  m.def(
      "random_start(Tensor x, float eps, int seed, int offset, float clip_min, float clip_max,"
      " bool project) -> Tensor");
  // CUDA graph capture with seed=None (csrc/cuda/graph_rng.h), CUDA kernels only: the
  // same ops with (seed, offset) read on the device from device_state, two int64 on x's
  // device that a kernel of the captured graph rewrites on every replay.
  m.def("noise_forward.device_state(Tensor x, Tensor sigma, Tensor device_state) -> Tensor");
  m.def(
      "noise_backward_sigma.device_state(Tensor grad_y, Tensor sigma, Tensor device_state)"
      " -> Tensor");
  m.def(
      "pnil_forward.device_state(Tensor x, Tensor weight, Tensor bias, Tensor device_state)"
      " -> Tensor");
  m.def(
      "pnil_backward.device_state(Tensor grad_y, Tensor x, Tensor weight, Tensor bias,"
      " Tensor device_state) -> (Tensor, Tensor, Tensor)");
  m.def(
      "random_start.device_state(Tensor x, float eps, Tensor device_state, float clip_min,"
      " float clip_max, bool project) -> Tensor");
  // The raw spec: Philox4x32-10 words (uint32 in int64) of each int64 counter, shape (M, 4).
  m.def("philox_words(Tensor counters, int seed) -> Tensor");
  // ---- the public ops' front door (csrc/front_door.cpp) ----
  // Learn2Perturb Eq. (4)-(5) with checks, seed drawing and autograd in one call.
  m.def("inject_noise(Tensor x, Tensor sigma, int? seed, int offset) -> Tensor");
  m.def("inject_noise.scalar(Tensor x, float sigma, int? seed, int offset) -> Tensor");
  // x + |sigma| * z: PerturbationInjection's theta, which an optimizer step may push below 0.
  m.def("inject_noise.abs(Tensor x, Tensor sigma, int? seed, int offset) -> Tensor");
  // PNIL Eq. (2)-(3), likewise.
  m.def("pnil(Tensor x, Tensor weight, Tensor bias, int? seed, int offset) -> Tensor");
  // random_start that draws its seed when None; it records no graph.
  m.def(
      "random_start.draw(Tensor x, float eps, int? seed, int offset, float clip_min,"
      " float clip_max, bool project) -> Tensor");
  // The torch.compile path with a given seed: rng_state = [seed, offset] (int64) and
  // bounds = [step_size, eps, clip_min, clip_max] (float64) are CPU tensors, graph inputs
  // rather than constants.
  m.def("inject_noise.state(Tensor x, Tensor sigma, Tensor rng_state) -> Tensor");
  m.def("noise_backward_sigma.state(Tensor grad_y, Tensor sigma, Tensor rng_state) -> Tensor");
  // inject_noise.abs's compiled form: |sigma| taken inside the op, so a compiled graph has
  // no separate abs (or, backward, sign-product) kernel around it.
  m.def("inject_noise.abs_state(Tensor x, Tensor sigma, Tensor rng_state) -> Tensor");
  m.def(
      "noise_backward_sigma.abs_state(Tensor grad_y, Tensor sigma, Tensor rng_state) -> Tensor");
  m.def("pnil.state(Tensor x, Tensor weight, Tensor bias, Tensor rng_state) -> Tensor");
  m.def(
      "pnil_backward.state(Tensor grad_y, Tensor x, Tensor weight, Tensor bias,"
      " Tensor rng_state) -> (Tensor, Tensor, Tensor)");
  m.def("pgd_step.state(Tensor x_adv, Tensor grad, Tensor x_orig, Tensor bounds) -> Tensor");
  m.def("random_start.state(Tensor x, Tensor rng_state, Tensor bounds, bool project) -> Tensor");
  // seed=None under torch.compile: [seed, offset] drawn inside the forward op (in C++, as
  // eager seed=None draws it; a device tensor on CUDA) and returned beside y for the
  // backward. Tagged so inductor neither constant-folds nor deduplicates the draw.
  m.def("inject_noise.fresh(Tensor x, Tensor sigma, int offset) -> (Tensor, Tensor)",
        {at::Tag::nondeterministic_seeded});
  m.def("inject_noise.abs_fresh(Tensor x, Tensor sigma, int offset) -> (Tensor, Tensor)",
        {at::Tag::nondeterministic_seeded});
  m.def("pnil.fresh(Tensor x, Tensor weight, Tensor bias, int offset) -> (Tensor, Tensor)",
        {at::Tag::nondeterministic_seeded});
  // A compiled seed=None random start: the same draw inside the op (the start has no
  // backward, so its state never needs to leave it).
  m.def("random_start.fresh(Tensor x, int offset, Tensor bounds, bool project) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  // Which CPU tile code runs here ("avx512", "avx2" or "generic"), for benchmark headers.
  m.def("cpu_isa() -> str", [] { return std::string(fastnoise::cpu::tile_isa()); });
}

// The schemas live as long as the process: a static TORCH_LIBRARY object would
// deregister them in the exit handlers while other registrations on these ops still
// exist (torch.library keeps Python's fake kernels alive forever), and with the front
// door's overloads that aborted every process at exit ("Tried to access the schema").
const bool kOpsDefined = [] {
  auto* library =
      new torch::Library(torch::Library::DEF, "fastnoise_C", std::nullopt, __FILE__, __LINE__);
  define_ops(*library);
  return true;
}();

}  // namespace
