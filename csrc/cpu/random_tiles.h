// Tiles of spec noise for the CPU kernels: 32 Philox counters (128 elements) at a time,
// so the lane loop vectorizes. The kernels walk their tensors tile by tile.
#pragma once

#include <cstdint>

namespace fastnoise {
namespace cpu {

constexpr int64_t kTileCounters = 32;
constexpr int64_t kTileSize = 4 * kTileCounters;  // elements per tile

// z[0 .. kTileSize) = N(0, 1) of the elements whose counters are first_counter + 0 .. 31.
void normal_tile(uint64_t seed, uint64_t first_counter, float* z);

// u[0 .. kTileSize) = U[0, 1] of the same elements.
void uniform_tile(uint64_t seed, uint64_t first_counter, float* u);

// The instruction set the tile functions were picked for at load time ("avx512",
// "avx2" or "generic"; FASTNOISE_CPU_ISA=avx2|generic caps it): benchmarks print it.
const char* tile_isa();

}  // namespace cpu
}  // namespace fastnoise
