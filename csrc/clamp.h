// Projections with the reference's semantics (torch.maximum, torch.minimum, clamp) for the
// CPU and CUDA kernels: a NaN operand gives NaN. std::max, fmax and PTX max.f32 all drop a
// NaN instead, which turns a NaN input into a bound: a plausible number where the reference
// (the spec) says the input was broken.
#pragma once

#if defined(__CUDACC__)
#define FN_CLAMP_HD __host__ __device__ __forceinline__
#else
#define FN_CLAMP_HD inline __attribute__((always_inline))
#endif

namespace fastnoise {

// a if a is NaN or the larger; else b (NaN when b is). Branch-free selects: vectorizable.
template <typename T>
FN_CLAMP_HD T max_keep_nan(T a, T b) {
  return (a > b || a != a) ? a : b;
}

template <typename T>
FN_CLAMP_HD T min_keep_nan(T a, T b) {
  return (a < b || a != a) ? a : b;
}

// clamp(v, lo, hi) for bounds that are never NaN (the Python layer checks them).
template <typename T>
FN_CLAMP_HD T clamp_keep_nan(T v, T lo, T hi) {
  return min_keep_nan(max_keep_nan(v, lo), hi);
}

}  // namespace fastnoise
