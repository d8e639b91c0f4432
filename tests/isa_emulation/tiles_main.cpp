// The AVX2 and AVX-512 noise tiles of csrc/cpu, compiled through SIMDe's portable
// intrinsics (https://github.com/simd-everywhere/simde) so their lane order, key and
// counter handling are tested on a CPU that lacks the instructions. Not part of the
// extension; tests/test_cpu_isa.py builds and runs it.
//
//   tiles_main ISA KIND SEED FIRST_COUNTER TILES > out.f32
//   ISA: avx2 | avx512, KIND: normal | uniform; writes TILES * 128 float32 values.
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/fma.h>

#include <cstdint>
#include <cstring>

// Three AVX-512 intrinsics that SIMDe 0.7.4 (Debian 12's libsimde-dev) lacks, lane by lane
// as Intel's guide defines them.
namespace emulated {
// out[i] = f(in[i]) over the 16 lanes, reading them as From and writing them as To.
template <typename From, typename To, typename OutVector, typename InVector, typename F>
OutVector lanewise(InVector in, F f) {
  From lanes[16];
  To results[16];
  std::memcpy(lanes, &in, sizeof lanes);
  for (int i = 0; i < 16; ++i) results[i] = f(lanes[i]);
  OutVector out;
  std::memcpy(&out, results, sizeof results);
  return out;
}
inline simde__m512i srai_epi32(simde__m512i a, int shift) {
  const int s = shift > 31 ? 31 : shift;  // arithmetic shift (C++20, and GCC before it)
  return lanewise<int32_t, int32_t, simde__m512i>(a, [s](int32_t x) { return x >> s; });
}
inline simde__m512 cvtepi32_ps(simde__m512i a) {
  return lanewise<int32_t, float, simde__m512>(a, [](int32_t x) { return static_cast<float>(x); });
}
inline simde__m512i cvttps_epi32(simde__m512 a) {
  return lanewise<float, int32_t, simde__m512i>(a, [](float x) {
    // out of range or NaN: the "integer indefinite" INT32_MIN
    const bool fits = x > -2147483904.0f && x < 2147483648.0f;
    return fits ? static_cast<int32_t>(x) : INT32_MIN;
  });
}
}  // namespace emulated
#define _mm512_srai_epi32(a, n) emulated::srai_epi32(a, n)
#define _mm512_cvtepi32_ps(a) emulated::cvtepi32_ps(a)
#define _mm512_cvttps_epi32(a) emulated::cvttps_epi32(a)
#define __mmask16 simde__mmask16  // SIMDe aliases the vector types but not this mask type

#define FASTNOISE_EMULATE_SIMD 1
#include "random_tiles_avx512.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

using fastnoise::cpu::kTileCounters;
using fastnoise::cpu::kTileSize;
using TileFn = void (*)(uint64_t, uint64_t, float*);

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s avx2|avx512 normal|uniform SEED FIRST_COUNTER TILES\n",
                 argv[0]);
    return 2;
  }
  const bool avx512 = std::strcmp(argv[1], "avx512") == 0;
  const bool normal = std::strcmp(argv[2], "normal") == 0;
  TileFn tile = avx512 ? (normal ? fastnoise::cpu::avx512::normal_tile
                                 : fastnoise::cpu::avx512::uniform_tile)
                       : (normal ? fastnoise::cpu::avx2::normal_tile
                                 : fastnoise::cpu::avx2::uniform_tile);
  const uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  const uint64_t first = std::strtoull(argv[4], nullptr, 10);
  const long tiles = std::strtol(argv[5], nullptr, 10);
  std::vector<float> out(static_cast<size_t>(tiles * kTileSize));
  for (long t = 0; t < tiles; ++t) {
    tile(seed, first + static_cast<uint64_t>(t * kTileCounters), out.data() + t * kTileSize);
  }
  std::fwrite(out.data(), sizeof(float), out.size(), stdout);
  return 0;
}
