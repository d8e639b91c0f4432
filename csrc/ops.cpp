// Schemas of the fastnoise_C operators: the primitives of fastnoise/_backends/reference.py.
// Implementations register per device in cpu/*.cpp and cuda/*.cu; fake (meta) kernels
// are registered from Python in fastnoise/_extension.py. Seeds are int64 (the Philox key),
// offsets int64 Philox counters (blocks of four elements).
#include <torch/library.h>

#include <string>

#include "cpu/random_tiles.h"

TORCH_LIBRARY(fastnoise_C, m) {
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
  // The raw spec: Philox4x32-10 words (uint32 in int64) of each int64 counter, shape (M, 4).
  m.def("philox_words(Tensor counters, int seed) -> Tensor");
  // Which CPU tile code runs here ("avx512", "avx2" or "generic"), for benchmark headers.
  m.def("cpu_isa() -> str", [] { return std::string(fastnoise::cpu::tile_isa()); });
}
