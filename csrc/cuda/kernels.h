// The CUDA kernels' launchers, as plain C++ functions over raw pointers. The .cu files
// that define them include only CUDA's own headers and ../philox.h (no ATen), so nvcc
// stays quick; register_cuda.cpp (compiled by the host compiler) does the ATen side.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastnoise {
namespace cuda {

// Activation storage dtype; the compute dtype is float32, or float64 for kFloat64
// (parameter and gradient-sum buffers use the compute dtype).
enum class Storage : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

struct Launch {
  cudaStream_t stream;
  int sm_count;  // multiprocessors: sizes the grid
};

void launch_noise_forward(Launch launch, Storage storage, const void* x, const void* sigma,
                          void* y, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset);
void launch_noise_backward_sigma(Launch launch, Storage storage, const void* grad, void* sums,
                                 int64_t numel, int64_t features, uint64_t seed, uint64_t offset);
void launch_pnil_forward(Launch launch, Storage storage, const void* x, const void* weight,
                         const void* bias, void* y, int64_t numel, int64_t features,
                         uint64_t seed, uint64_t offset);
void launch_pnil_backward(Launch launch, Storage storage, const void* grad, const void* x,
                          const void* weight, const void* bias, void* grad_x, void* sums_w,
                          void* sums_b, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset);
void launch_pgd_step(Launch launch, Storage storage, const void* x_adv, const void* grad,
                     const void* x_orig, void* out, int64_t numel, double step_size, double eps,
                     double clip_min, double clip_max);
void launch_random_start(Launch launch, Storage storage, const void* x, void* out, int64_t numel,
                         double eps, double clip_min, double clip_max, uint64_t seed,
                         uint64_t offset);
void launch_philox_words(Launch launch, const int64_t* counters, int64_t* words, int64_t count,
                         uint64_t seed);

}  // namespace cuda
}  // namespace fastnoise
