// The CUDA kernels' launchers, as plain C++ functions over raw pointers. The .cu files
// that define them include only CUDA's own headers and ../philox.h (no ATen), so nvcc
// stays quick; register_cuda.cpp (compiled by the host compiler) does the ATen side.
#pragma once

#include <ATen/cuda/PhiloxCudaState.h>  // a plain struct, no tensor headers
#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastnoise {
namespace cuda {

// Activation storage dtype; the compute dtype is float32, or float64 for kFloat64
// (parameter and gradient-sum buffers use the compute dtype).
enum class Storage : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

// A channels_last (N, C, H, W) activation read and written in place (channels_last.h):
// channels C and pixels H * W, a multiple of 4. The default, channels == 0, is row-major.
struct ChannelsLast {
  int64_t channels = 0;
  int64_t pixels = 0;
  bool enabled() const { return channels > 0; }
};

struct Launch {
  cudaStream_t stream;
  int sm_count;  // multiprocessors: sizes the grid of the elementwise kernels
};

// How the backward kernels sum parameter gradients over the batch without atomics, so
// the result is the same bits on every run (the summation order does not depend on the
// device either). A block of kReduceThreads threads is quads_per_block feature quads
// (4 features each, threadIdx.x) times row_lanes rows (threadIdx.y); grid (feature_tiles,
// chunks), each block summing rows_per_chunk rows of its tile into one partial row per
// feature. A second pass sums the `chunks` partial rows in a fixed order (skipped when
// chunks == 1, where the first pass writes the result directly).
struct ReductionPlan {
  int quads_per_block;    // threadIdx.x extent, a power of two
  int row_lanes;          // threadIdx.y extent: kReduceThreads / quads_per_block
  int64_t feature_tiles;  // gridDim.x
  int64_t chunks;         // gridDim.y: partial rows per summed quantity
  int64_t rows_per_chunk;
};

constexpr int kReduceThreads = 256;
// Enough blocks to fill any current GPU (an H100 holds 132 x 8 such blocks), fixed rather
// than read from the device so that the summation order, hence the result, is too.
constexpr int64_t kReduceTargetBlocks = 1024;
// Each thread sums at least this many rows, so the partial buffer stays a fraction of
// the activation.
constexpr int64_t kMinRowsPerThread = 4;

inline ReductionPlan plan_reduction(int64_t rows, int64_t features) {
  const int64_t quads = (features + 3) / 4;
  int quads_per_block = 1;
  while (quads_per_block < quads && quads_per_block < kReduceThreads) quads_per_block *= 2;
  const int row_lanes = kReduceThreads / quads_per_block;
  const int64_t feature_tiles = (quads + quads_per_block - 1) / quads_per_block;
  const int64_t rows_per_block = row_lanes * kMinRowsPerThread;
  const int64_t by_rows = (rows + rows_per_block - 1) / rows_per_block;
  const int64_t by_blocks = (kReduceTargetBlocks + feature_tiles - 1) / feature_tiles;
  int64_t chunks = by_rows < by_blocks ? by_rows : by_blocks;
  chunks = chunks < 1 ? 1 : chunks;
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;  // no empty chunk
  return {quads_per_block, row_lanes, feature_tiles, chunks, rows_per_chunk};
}

// CUDA graph capture (csrc/cuda/graph_rng.h): the launchers of the noise ops take an
// optional device_state, two int64 on the device, [seed, offset]. When it is not null the
// kernels read (seed, offset) from it on the device (so each replay of a captured graph
// reads the values that replay's launch_unpack_philox_state wrote) and ignore the seed and
// offset arguments. Outside capture it is null: the kernels take the arguments as before,
// one uniform branch at their start, and the noise is the same bits as without it.

// layout: x and y (forward) or grad_y (backward) channels_last; grad_x follows x.
void launch_noise_forward(Launch launch, Storage storage, const void* x, const void* sigma,
                          void* y, int64_t numel, int64_t features, uint64_t seed,
                          uint64_t offset, const int64_t* device_state = nullptr,
                          ChannelsLast layout = {});
// sums: `features` compute-dtype values. partials: plan.chunks x features of them, or
// null when plan.chunks == 1. plan: plan_reduction(numel / features, features).
void launch_noise_backward_sigma(Launch launch, Storage storage, const void* grad, void* sums,
                                 void* partials, const ReductionPlan& plan, int64_t numel,
                                 int64_t features, uint64_t seed, uint64_t offset,
                                 const int64_t* device_state = nullptr,
                                 ChannelsLast layout = {});
void launch_pnil_forward(Launch launch, Storage storage, const void* x, const void* weight,
                         const void* bias, void* y, int64_t numel, int64_t features,
                         uint64_t seed, uint64_t offset, const int64_t* device_state = nullptr,
                         ChannelsLast layout = {});
// sums: 2 x features (grad_w sums, then grad_b sums); partials: 2 x plan.chunks x
// features, or null when plan.chunks == 1.
void launch_pnil_backward(Launch launch, Storage storage, const void* grad, const void* x,
                          const void* weight, const void* bias, void* grad_x, void* sums,
                          void* partials, const ReductionPlan& plan, int64_t numel,
                          int64_t features, uint64_t seed, uint64_t offset,
                          const int64_t* device_state = nullptr, ChannelsLast layout = {});
void launch_pgd_step(Launch launch, Storage storage, const void* x_adv, const void* grad,
                     const void* x_orig, void* out, int64_t numel, double step_size, double eps,
                     double clip_min, double clip_max);
void launch_random_start(Launch launch, Storage storage, const void* x, void* out, int64_t numel,
                         double eps, double clip_min, double clip_max, uint64_t seed,
                         uint64_t offset, const int64_t* device_state = nullptr,
                         ChannelsLast layout = {});
// Writes [seed, offset] of the spec for one op inside CUDA graph capture into state (two
// int64 on the device), from torch's generator state `philox` (at::cuda::philox::unpack:
// the replay's values, read on the device): seed = torch's 64-bit seed with its top bit
// cleared (the spec's keys are in [0, 2**63)), offset = torch's offset (graph_rng.h).
void launch_unpack_philox_state(cudaStream_t stream, at::PhiloxCudaState philox,
                                int64_t* state);
void launch_philox_words(Launch launch, const int64_t* counters, int64_t* words, int64_t count,
                         uint64_t seed);

}  // namespace cuda
}  // namespace fastnoise
