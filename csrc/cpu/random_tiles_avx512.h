// AVX-512 versions of the spec noise tiles: random_tiles_avx2.h with 16 lanes (sixteen
// Philox counters per vector). Same operations in the same order as ../philox.h.
#pragma once

#include "random_tiles_avx2.h"

#if defined(FASTNOISE_HAVE_AVX2_TILES)
#define FASTNOISE_HAVE_AVX512_TILES 1

#define FN_AVX512 static inline FN_TARGET_AVX512 __attribute__((always_inline))

namespace fastnoise {
namespace cpu {
namespace avx512 {

FN_AVX512 void mulhilo16(__m512i a, __m512i c, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(c, a);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), a);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Philox4x32-10 of counters first .. first + 15 (philox4x32_10 in philox.h).
FN_AVX512 void philox16(uint64_t first, uint64_t seed, __m512i words[4]) {
  alignas(64) uint32_t low[16], high[16];
  for (int lane = 0; lane < 16; ++lane) {
    const uint64_t counter = first + static_cast<uint64_t>(lane);
    low[lane] = static_cast<uint32_t>(counter);
    high[lane] = static_cast<uint32_t>(counter >> 32);
  }
  __m512i c0 = _mm512_load_si512(low), c1 = _mm512_load_si512(high);
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i round_a = _mm512_set1_epi32(static_cast<int32_t>(kPhiloxRoundA));
  const __m512i round_b = _mm512_set1_epi32(static_cast<int32_t>(kPhiloxRoundB));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    __m512i hi_a, lo_a, hi_b, lo_b;
    mulhilo16(round_a, c0, hi_a, lo_a);
    mulhilo16(round_b, c2, hi_b, lo_b);
    c0 = _mm512_ternarylogic_epi32(hi_b, c1, _mm512_set1_epi32(static_cast<int32_t>(k0)), 0x96);
    c1 = lo_b;
    c2 = _mm512_ternarylogic_epi32(hi_a, c3, _mm512_set1_epi32(static_cast<int32_t>(k1)), 0x96);
    c3 = lo_a;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

FN_AVX512 __m512 word_to_uniform16(__m512i w) {
  const __m512i folded = _mm512_xor_si512(w, _mm512_srai_epi32(w, 31));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_set1_ps(kUint32ToUniform));
}

FN_AVX512 __m512 poly(__m512 p, __m512 x, float coefficient) {
  return _mm512_fmadd_ps(p, x, _mm512_set1_ps(coefficient));
}

FN_AVX512 __m512 log_positive16(__m512 x) {
  const __m512i bits = _mm512_add_epi32(_mm512_castps_si512(x),
                                        _mm512_set1_epi32(0x3f800000 - 0x3f3504f3));
  const __m512 e = _mm512_cvtepi32_ps(
      _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(127)));
  const __m512i mantissa = _mm512_add_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)),
                                            _mm512_set1_epi32(0x3f3504f3));
  const __m512 m = _mm512_sub_ps(_mm512_castsi512_ps(mantissa), _mm512_set1_ps(1.0f));
  const __m512 m2 = _mm512_mul_ps(m, m);
  __m512 p = _mm512_set1_ps(7.0376836292e-2f);
  p = poly(p, m, -1.1514610310e-1f);
  p = poly(p, m, 1.1676998740e-1f);
  p = poly(p, m, -1.2420140846e-1f);
  p = poly(p, m, 1.4249322787e-1f);
  p = poly(p, m, -1.6668057665e-1f);
  p = poly(p, m, 2.0000714765e-1f);
  p = poly(p, m, -2.4999993993e-1f);
  p = poly(p, m, 3.3333331174e-1f);
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(m, m2), p);
  y = _mm512_fmadd_ps(_mm512_set1_ps(-2.12194440e-4f), e, y);
  y = _mm512_fmadd_ps(_mm512_set1_ps(-0.5f), m2, y);
  return _mm512_fmadd_ps(_mm512_set1_ps(0.693359375f), e, _mm512_add_ps(m, y));
}

FN_AVX512 void sincos16(__m512 theta, __m512& sin_out, __m512& cos_out) {
  const __m512i q = _mm512_cvttps_epi32(
      _mm512_fmadd_ps(theta, _mm512_set1_ps(0.63661977236758134f), _mm512_set1_ps(0.5f)));
  const __m512 qf = _mm512_cvtepi32_ps(q);
  __m512 r = _mm512_fnmadd_ps(qf, _mm512_set1_ps(1.5703125f), theta);
  r = _mm512_fnmadd_ps(qf, _mm512_set1_ps(4.837512969970703125e-4f), r);
  r = _mm512_fnmadd_ps(qf, _mm512_set1_ps(7.54978995489188216e-8f), r);
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 s = _mm512_set1_ps(-1.9515295891e-4f);
  s = poly(s, r2, 8.3321608736e-3f);
  s = poly(s, r2, -1.6666654611e-1f);
  s = _mm512_fmadd_ps(_mm512_mul_ps(r, r2), s, r);
  __m512 c = _mm512_set1_ps(2.443315711809948e-5f);
  c = poly(c, r2, -1.388731625493765e-3f);
  c = poly(c, r2, 4.166664568298827e-2f);
  c = _mm512_fmadd_ps(_mm512_mul_ps(r2, r2), c,
                      _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), r2, _mm512_set1_ps(1.0f)));
  const __mmask16 swap = _mm512_test_epi32_mask(q, _mm512_set1_epi32(1));
  const __m512 sin_abs = _mm512_mask_blend_ps(swap, s, c);
  const __m512 cos_abs = _mm512_mask_blend_ps(swap, c, s);
  const __m512i two = _mm512_set1_epi32(2);
  const __m512i sin_sign = _mm512_slli_epi32(_mm512_and_si512(q, two), 30);
  const __m512i cos_sign =
      _mm512_slli_epi32(_mm512_and_si512(_mm512_add_epi32(q, _mm512_set1_epi32(1)), two), 30);
  sin_out = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(sin_abs), sin_sign));
  cos_out = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(cos_abs), cos_sign));
}

FN_AVX512 void box_muller16(__m512 u1, __m512 u2, __m512& z0, __m512& z1) {
  u1 = _mm512_max_ps(u1, _mm512_set1_ps(kMinUniformForLog));
  const __m512 theta = _mm512_mul_ps(_mm512_set1_ps(kTwoPi), u2);
  const __m512 radius =
      _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), log_positive16(u1)));
  __m512 s, c;
  sincos16(theta, s, c);
  z0 = _mm512_mul_ps(radius, c);
  z1 = _mm512_mul_ps(radius, s);
}

FN_AVX512 __m256 low_half(__m512 v) { return _mm512_castps512_ps256(v); }
FN_AVX512 __m256 high_half(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

// Sixteen counters' lanes as 64 consecutive elements: two 8-counter halves.
FN_AVX512 void store_interleaved(float* out, __m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  avx2::store_interleaved(out, low_half(v0), low_half(v1), low_half(v2), low_half(v3));
  avx2::store_interleaved(out + 32, high_half(v0), high_half(v1), high_half(v2), high_half(v3));
}

FN_TARGET_AVX512 inline void normal_tile(uint64_t seed, uint64_t first_counter, float* z) {
  for (int64_t block = 0; block < kTileCounters; block += 16) {
    __m512i w[4];
    philox16(first_counter + static_cast<uint64_t>(block), seed, w);
    __m512 z0, z1, z2, z3;
    box_muller16(word_to_uniform16(w[0]), word_to_uniform16(w[1]), z0, z1);
    box_muller16(word_to_uniform16(w[2]), word_to_uniform16(w[3]), z2, z3);
    store_interleaved(z + 4 * block, z0, z1, z2, z3);
  }
}

FN_TARGET_AVX512 inline void uniform_tile(uint64_t seed, uint64_t first_counter, float* u) {
  for (int64_t block = 0; block < kTileCounters; block += 16) {
    __m512i w[4];
    philox16(first_counter + static_cast<uint64_t>(block), seed, w);
    store_interleaved(u + 4 * block, word_to_uniform16(w[0]), word_to_uniform16(w[1]),
                      word_to_uniform16(w[2]), word_to_uniform16(w[3]));
  }
}

}  // namespace avx512
}  // namespace cpu
}  // namespace fastnoise

#undef FN_AVX512
#endif
