// The noise spec of fastnoise/rng.py in C++: Philox4x32-10 with Triton's rounds and key
// schedule, tl.rand's word-to-uniform map and tl.randn4x's Box-Muller pairs.
//
// Every function here is __host__ __device__ so the CPU and CUDA kernels run the same
// arithmetic. log/sin/cos/exp are branch-free Cephes-style polynomials (about 1 ulp):
// branch-free so the CPU compiler vectorizes a loop over counters, and shared with the
// GPU so the CPU tests against the reference also cover the device math.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FN_HD __host__ __device__ __forceinline__
#else
#define FN_HD inline __attribute__((always_inline))
#endif

namespace fastnoise {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr float kUint32ToUniform = 4.6566127342e-10f;  // tl.rand: ~2**-31
constexpr float kMinUniformForLog = 1.0e-7f;           // tl.randn clamps u1 before log
constexpr float kTwoPi = 6.283185307179586f;

FN_HD float bits_to_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

FN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}

// One Philox round pair product: high and low words of a 32x32-bit multiply.
FN_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

// Philox4x32-10 of counter (c0 = low word, c1 = high word, c2 = c3 = 0) under key seed
// (k0 = low word, k1 = high word), exactly as tl.philox_impl.
FN_HD void philox4x32_10(uint64_t counter, uint64_t seed, uint32_t out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#else
#pragma GCC unroll 10
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi_a, lo_a, hi_b, lo_b;
    mulhilo(kPhiloxRoundA, c0, hi_a, lo_a);
    mulhilo(kPhiloxRoundB, c2, hi_b, lo_b);
    c0 = hi_b ^ c1 ^ k0;
    c1 = lo_b;
    c2 = hi_a ^ c3 ^ k1;
    c3 = lo_a;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// tl.rand: the word as int32, negatives folded (-s - 1 == ~s), scaled by ~2**-31.
FN_HD float word_to_uniform(uint32_t word) {
  const int32_t s = static_cast<int32_t>(word);
  const int32_t folded = s ^ (s >> 31);
  return static_cast<float>(folded) * kUint32ToUniform;
}

// Natural log for normal positive floats (Cephes logf): split x = m * 2**e with m in
// [sqrt(1/2), sqrt(2)), then a degree-9 polynomial in m - 1.
FN_HD float log_positive(float x) {
  uint32_t bits = float_to_bits(x) + (0x3f800000u - 0x3f3504f3u);
  const float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  const float m = bits_to_float((bits & 0x007fffffu) + 0x3f3504f3u) - 1.0f;
  const float m2 = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float y = m * m2 * p;
  y += -2.12194440e-4f * e;
  y += -0.5f * m2;
  return (m + y) + 0.693359375f * e;
}

// sin and cos of theta in [0, 2*pi] (Cephes sinf/cosf): quadrant q = round(theta / (pi/2)),
// r = theta - q * pi/2 in three exact parts, then the quadrant picks and signs the pair.
FN_HD void sincos_0_2pi(float theta, float& sin_out, float& cos_out) {
  const int32_t q = static_cast<int32_t>(theta * 0.63661977236758134f + 0.5f);
  const float qf = static_cast<float>(q);
  float r = theta - qf * 1.5703125f;
  r -= qf * 4.837512969970703125e-4f;
  r -= qf * 7.54978995489188216e-8f;
  const float r2 = r * r;
  float s = -1.9515295891e-4f;
  s = s * r2 + 8.3321608736e-3f;
  s = s * r2 - 1.6666654611e-1f;
  s = r + r * r2 * s;
  float c = 2.443315711809948e-5f;
  c = c * r2 - 1.388731625493765e-3f;
  c = c * r2 + 4.166664568298827e-2f;
  c = 1.0f - 0.5f * r2 + r2 * r2 * c;
  const bool swap = (q & 1) != 0;
  const float sin_abs = swap ? c : s;
  const float cos_abs = swap ? s : c;
  const uint32_t sin_sign = static_cast<uint32_t>(q & 2) << 30;        // q in {2, 3}
  const uint32_t cos_sign = static_cast<uint32_t>((q + 1) & 2) << 30;  // q in {1, 2}
  sin_out = bits_to_float(float_to_bits(sin_abs) ^ sin_sign);
  cos_out = bits_to_float(float_to_bits(cos_abs) ^ cos_sign);
}

// exp (Cephes expf): x = n * ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial, then 2**n
// built in the exponent bits (as 2**(n-1) * 2 so n = 128 still fits). Overflows to inf
// like expf, flushes results below ~1e-38 to 0; NaN passes through.
FN_HD float exp_approx(float x) {
  const float xc = x > 88.72f ? 88.72f : (x < -87.3f ? -87.3f : x);
  const float t = xc * 1.44269504088896341f;
  const int32_t n = static_cast<int32_t>(t + (t < 0.0f ? -0.5f : 0.5f));
  const float nf = static_cast<float>(n);
  float r = xc - nf * 0.693359375f;
  r -= nf * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  float y = p * bits_to_float(static_cast<uint32_t>(n + 126) << 23) * 2.0f;
  y = x > 88.7228391f ? bits_to_float(0x7f800000u) : y;
  return x != x ? x : y;
}

// tl.pair_uniform_to_normal: Box-Muller in float32.
FN_HD void box_muller(float u1, float u2, float& z0, float& z1) {
  u1 = u1 < kMinUniformForLog ? kMinUniformForLog : u1;
  const float theta = kTwoPi * u2;
  const float radius = sqrtf(-2.0f * log_positive(u1));
  float s, c;
  sincos_0_2pi(theta, s, c);
  z0 = radius * c;
  z1 = radius * s;
}

// The four N(0, 1) values of one Philox counter: elements 4k .. 4k+3 of a call whose
// offset + k == counter (tl.randn4x).
FN_HD void normal4(uint64_t counter, uint64_t seed, float z[4]) {
  uint32_t w[4];
  philox4x32_10(counter, seed, w);
  box_muller(word_to_uniform(w[0]), word_to_uniform(w[1]), z[0], z[1]);
  box_muller(word_to_uniform(w[2]), word_to_uniform(w[3]), z[2], z[3]);
}

// The four U[0, 1] values of one Philox counter (tl.rand4x).
FN_HD void uniform4(uint64_t counter, uint64_t seed, float u[4]) {
  uint32_t w[4];
  philox4x32_10(counter, seed, w);
  for (int lane = 0; lane < 4; ++lane) u[lane] = word_to_uniform(w[lane]);
}

}  // namespace fastnoise
