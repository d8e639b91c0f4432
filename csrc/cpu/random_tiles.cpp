// Spec noise tiles: a portable path (plain C++, -O3) and AVX2+FMA and AVX-512 paths
// (intrinsics in functions with the target attribute), chosen once by CPU feature
// detection. A build without -march flags runs on any x86-64 and still uses wide
// vectors where the CPU has them.

// GCC 12 flags the _mm512_undefined_*() placeholders inside its own AVX-512 intrinsics
// as uninitialized (a known false positive; the values are never read). Set before the
// intrinsic headers are included so it also covers their inlined bodies.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "random_tiles.h"

#include <cstdlib>
#include <cstring>

#include "../philox.h"
#include "random_tiles_avx2.h"
#include "random_tiles_avx512.h"

namespace fastnoise {
namespace cpu {
namespace {

// The lane loop is straight-line code (rounds unrolled, polynomials branch-free), so
// the compiler vectorizes it across counters.
FN_HD void normal_tile_body(uint64_t seed, uint64_t first_counter, float* __restrict z) {
  float z0[kTileCounters], z1[kTileCounters], z2[kTileCounters], z3[kTileCounters];
  for (int64_t lane = 0; lane < kTileCounters; ++lane) {
    float v[4];
    normal4(first_counter + static_cast<uint64_t>(lane), seed, v);
    z0[lane] = v[0];
    z1[lane] = v[1];
    z2[lane] = v[2];
    z3[lane] = v[3];
  }
  for (int64_t lane = 0; lane < kTileCounters; ++lane) {
    z[4 * lane + 0] = z0[lane];
    z[4 * lane + 1] = z1[lane];
    z[4 * lane + 2] = z2[lane];
    z[4 * lane + 3] = z3[lane];
  }
}

FN_HD void uniform_tile_body(uint64_t seed, uint64_t first_counter, float* __restrict u) {
  float u0[kTileCounters], u1[kTileCounters], u2[kTileCounters], u3[kTileCounters];
  for (int64_t lane = 0; lane < kTileCounters; ++lane) {
    float v[4];
    uniform4(first_counter + static_cast<uint64_t>(lane), seed, v);
    u0[lane] = v[0];
    u1[lane] = v[1];
    u2[lane] = v[2];
    u3[lane] = v[3];
  }
  for (int64_t lane = 0; lane < kTileCounters; ++lane) {
    u[4 * lane + 0] = u0[lane];
    u[4 * lane + 1] = u1[lane];
    u[4 * lane + 2] = u2[lane];
    u[4 * lane + 3] = u3[lane];
  }
}

void normal_tile_generic(uint64_t seed, uint64_t first_counter, float* z) {
  normal_tile_body(seed, first_counter, z);
}
void uniform_tile_generic(uint64_t seed, uint64_t first_counter, float* u) {
  uniform_tile_body(seed, first_counter, u);
}

#if defined(FASTNOISE_HAVE_AVX2_TILES)
bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
}
#endif

using TileFn = void (*)(uint64_t, uint64_t, float*);

struct TileFunctions {
  TileFn normal = normal_tile_generic;
  TileFn uniform = uniform_tile_generic;
  const char* isa = "generic";
  TileFunctions() {
    // FASTNOISE_CPU_ISA=generic|avx2 caps the path taken (tests check every path).
    const char* cap = std::getenv("FASTNOISE_CPU_ISA");
    const bool allow_avx2 = cap == nullptr || std::strcmp(cap, "generic") != 0;
    const bool allow_avx512 = allow_avx2 && (cap == nullptr || std::strcmp(cap, "avx2") != 0);
    (void)allow_avx512;
#if defined(FASTNOISE_HAVE_AVX512_TILES)
    if (allow_avx512 && cpu_has_avx512()) {
      normal = avx512::normal_tile;
      uniform = avx512::uniform_tile;
      isa = "avx512";
      return;
    }
#endif
#if defined(FASTNOISE_HAVE_AVX2_TILES)
    if (allow_avx2 && cpu_has_avx2()) {
      normal = avx2::normal_tile;
      uniform = avx2::uniform_tile;
      isa = "avx2";
    }
#endif
  }
};

const TileFunctions& tile_functions() {
  static const TileFunctions functions;
  return functions;
}

}  // namespace

void normal_tile(uint64_t seed, uint64_t first_counter, float* z) {
  tile_functions().normal(seed, first_counter, z);
}

void uniform_tile(uint64_t seed, uint64_t first_counter, float* u) {
  tile_functions().uniform(seed, first_counter, u);
}

const char* tile_isa() { return tile_functions().isa; }

}  // namespace cpu
}  // namespace fastnoise
