// AVX2 + FMA versions of the spec noise tiles: the arithmetic of ../philox.h written
// with 8-lane intrinsics (eight Philox counters per vector), because the compiler does
// not vectorize the scalar lane loop well (the 32x32->64-bit products turn into
// shuffles). Same operations in the same order as philox.h, so the results agree to
// rounding (FMA) with the portable path and with the reference.
//
// FASTNOISE_EMULATE_SIMD (tests/isa_emulation only, never the extension): the includer has
// already included SIMDe with native aliases, so these same lines compile to portable code
// and the tile logic is tested on any CPU; the target attributes are then dropped.
#pragma once

#if defined(FASTNOISE_EMULATE_SIMD)
#define FASTNOISE_HAVE_AVX2_TILES 1
#define FN_TARGET_AVX2
#define FN_TARGET_AVX512
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTNOISE_HAVE_AVX2_TILES 1
#define FN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define FN_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
#include <immintrin.h>
#endif

#if defined(FASTNOISE_HAVE_AVX2_TILES)

#include <cstdint>

#include "../philox.h"
#include "random_tiles.h"

#define FN_AVX2 static inline FN_TARGET_AVX2 __attribute__((always_inline))

namespace fastnoise {
namespace cpu {
namespace avx2 {

// High and low words of a * c for eight uint32 lanes (mul_epu32 takes even lanes).
FN_AVX2 void mulhilo8(__m256i a, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(c, a);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), a);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// Philox4x32-10 of counters first .. first + 7 (philox4x32_10 in philox.h).
FN_AVX2 void philox8(uint64_t first, uint64_t seed, __m256i words[4]) {
  alignas(32) uint32_t low[8], high[8];
  for (int lane = 0; lane < 8; ++lane) {
    const uint64_t counter = first + static_cast<uint64_t>(lane);
    low[lane] = static_cast<uint32_t>(counter);
    high[lane] = static_cast<uint32_t>(counter >> 32);
  }
  __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(low));
  __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(high));
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  const __m256i round_a = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundA));
  const __m256i round_b = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundB));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    __m256i hi_a, lo_a, hi_b, lo_b;
    mulhilo8(round_a, c0, hi_a, lo_a);
    mulhilo8(round_b, c2, hi_b, lo_b);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32(static_cast<int32_t>(k0)));
    c1 = lo_b;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32(static_cast<int32_t>(k1)));
    c3 = lo_a;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

// word_to_uniform: fold negatives (s ^ (s >> 31)), convert, scale by ~2**-31.
FN_AVX2 __m256 word_to_uniform8(__m256i w) {
  const __m256i folded = _mm256_xor_si256(w, _mm256_srai_epi32(w, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(kUint32ToUniform));
}

FN_AVX2 __m256 poly(__m256 p, __m256 x, float coefficient) {
  return _mm256_fmadd_ps(p, x, _mm256_set1_ps(coefficient));
}

// log_positive in philox.h.
FN_AVX2 __m256 log_positive8(__m256 x) {
  const __m256i bits = _mm256_add_epi32(_mm256_castps_si256(x),
                                        _mm256_set1_epi32(0x3f800000 - 0x3f3504f3));
  const __m256 e = _mm256_cvtepi32_ps(
      _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  const __m256i mantissa = _mm256_add_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)),
                                            _mm256_set1_epi32(0x3f3504f3));
  const __m256 m = _mm256_sub_ps(_mm256_castsi256_ps(mantissa), _mm256_set1_ps(1.0f));
  const __m256 m2 = _mm256_mul_ps(m, m);
  __m256 p = _mm256_set1_ps(7.0376836292e-2f);
  p = poly(p, m, -1.1514610310e-1f);
  p = poly(p, m, 1.1676998740e-1f);
  p = poly(p, m, -1.2420140846e-1f);
  p = poly(p, m, 1.4249322787e-1f);
  p = poly(p, m, -1.6668057665e-1f);
  p = poly(p, m, 2.0000714765e-1f);
  p = poly(p, m, -2.4999993993e-1f);
  p = poly(p, m, 3.3333331174e-1f);
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(m, m2), p);
  y = _mm256_fmadd_ps(_mm256_set1_ps(-2.12194440e-4f), e, y);
  y = _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), m2, y);
  return _mm256_fmadd_ps(_mm256_set1_ps(0.693359375f), e, _mm256_add_ps(m, y));
}

// sincos_0_2pi in philox.h.
FN_AVX2 void sincos8(__m256 theta, __m256& sin_out, __m256& cos_out) {
  const __m256i q = _mm256_cvttps_epi32(
      _mm256_fmadd_ps(theta, _mm256_set1_ps(0.63661977236758134f), _mm256_set1_ps(0.5f)));
  const __m256 qf = _mm256_cvtepi32_ps(q);
  __m256 r = _mm256_fnmadd_ps(qf, _mm256_set1_ps(1.5703125f), theta);
  r = _mm256_fnmadd_ps(qf, _mm256_set1_ps(4.837512969970703125e-4f), r);
  r = _mm256_fnmadd_ps(qf, _mm256_set1_ps(7.54978995489188216e-8f), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 s = _mm256_set1_ps(-1.9515295891e-4f);
  s = poly(s, r2, 8.3321608736e-3f);
  s = poly(s, r2, -1.6666654611e-1f);
  s = _mm256_fmadd_ps(_mm256_mul_ps(r, r2), s, r);
  __m256 c = _mm256_set1_ps(2.443315711809948e-5f);
  c = poly(c, r2, -1.388731625493765e-3f);
  c = poly(c, r2, 4.166664568298827e-2f);
  c = _mm256_fmadd_ps(_mm256_mul_ps(r2, r2), c,
                      _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), r2, _mm256_set1_ps(1.0f)));
  const __m256 swap = _mm256_castsi256_ps(
      _mm256_cmpeq_epi32(_mm256_and_si256(q, _mm256_set1_epi32(1)), _mm256_set1_epi32(1)));
  const __m256 sin_abs = _mm256_blendv_ps(s, c, swap);
  const __m256 cos_abs = _mm256_blendv_ps(c, s, swap);
  const __m256i two = _mm256_set1_epi32(2);
  const __m256i sin_sign = _mm256_slli_epi32(_mm256_and_si256(q, two), 30);
  const __m256i cos_sign =
      _mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(q, _mm256_set1_epi32(1)), two), 30);
  sin_out = _mm256_xor_ps(sin_abs, _mm256_castsi256_ps(sin_sign));
  cos_out = _mm256_xor_ps(cos_abs, _mm256_castsi256_ps(cos_sign));
}

// box_muller in philox.h.
FN_AVX2 void box_muller8(__m256 u1, __m256 u2, __m256& z0, __m256& z1) {
  u1 = _mm256_max_ps(u1, _mm256_set1_ps(kMinUniformForLog));
  const __m256 theta = _mm256_mul_ps(_mm256_set1_ps(kTwoPi), u2);
  const __m256 radius =
      _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_positive8(u1)));
  __m256 s, c;
  sincos8(theta, s, c);
  z0 = _mm256_mul_ps(radius, c);
  z1 = _mm256_mul_ps(radius, s);
}

// Store lanes (v0[k], v1[k], v2[k], v3[k]) of eight counters as 32 consecutive elements.
FN_AVX2 void store_interleaved(float* out, __m256 v0, __m256 v1, __m256 v2, __m256 v3) {
  const __m256d t0 = _mm256_castps_pd(_mm256_unpacklo_ps(v0, v1));  // counters 0 1 | 4 5
  const __m256d t1 = _mm256_castps_pd(_mm256_unpackhi_ps(v0, v1));  // counters 2 3 | 6 7
  const __m256d t2 = _mm256_castps_pd(_mm256_unpacklo_ps(v2, v3));
  const __m256d t3 = _mm256_castps_pd(_mm256_unpackhi_ps(v2, v3));
  const __m256 a0 = _mm256_castpd_ps(_mm256_unpacklo_pd(t0, t2));  // counter 0 | 4
  const __m256 a1 = _mm256_castpd_ps(_mm256_unpackhi_pd(t0, t2));  // counter 1 | 5
  const __m256 a2 = _mm256_castpd_ps(_mm256_unpacklo_pd(t1, t3));  // counter 2 | 6
  const __m256 a3 = _mm256_castpd_ps(_mm256_unpackhi_pd(t1, t3));  // counter 3 | 7
  _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(a0, a1, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(a2, a3, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(a0, a1, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(a2, a3, 0x31));
}

FN_TARGET_AVX2 inline void normal_tile(uint64_t seed, uint64_t first_counter, float* z) {
  for (int64_t block = 0; block < kTileCounters; block += 8) {
    __m256i w[4];
    philox8(first_counter + static_cast<uint64_t>(block), seed, w);
    __m256 z0, z1, z2, z3;
    box_muller8(word_to_uniform8(w[0]), word_to_uniform8(w[1]), z0, z1);
    box_muller8(word_to_uniform8(w[2]), word_to_uniform8(w[3]), z2, z3);
    store_interleaved(z + 4 * block, z0, z1, z2, z3);
  }
}

FN_TARGET_AVX2 inline void uniform_tile(uint64_t seed, uint64_t first_counter, float* u) {
  for (int64_t block = 0; block < kTileCounters; block += 8) {
    __m256i w[4];
    philox8(first_counter + static_cast<uint64_t>(block), seed, w);
    store_interleaved(u + 4 * block, word_to_uniform8(w[0]), word_to_uniform8(w[1]),
                      word_to_uniform8(w[2]), word_to_uniform8(w[3]));
  }
}

}  // namespace avx2
}  // namespace cpu
}  // namespace fastnoise

#undef FN_AVX2
#endif
