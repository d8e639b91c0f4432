// channels_last (N, C, H, W) tensors read and written in place, for H * W % 4 == 0.
//
// The spec numbers elements in logical (row-major NCHW) order, so one Philox counter
// covers logical elements 4k .. 4k + 3. With H * W % 4 == 0 those are four neighbouring
// pixels of one channel, which channels_last stores `channels` apart. Threads take these
// quads channel-fastest: a warp's 32 threads hold 32 neighbouring channels of the same
// pixels, so each of a thread's four scalar accesses is one coalesced warp access, and no
// copy to row-major order (and back) is needed. Host-compilable (tests/cuda_host).
#pragma once

#include <cstdint>

#include "device_utils.h"

namespace fastnoise {
namespace cuda {

// Quad q of a channels_last launch as the digits (n, pixel quad p, channel c), c fastest.
// A thread's quads advance by a fixed stride, so the digits advance by fixed steps with
// one carry each: three int64 divisions per thread instead of per quad.
struct NhwcCursor {
  int64_t c, p, n;
  int64_t step_c, step_p, step_n;
  int64_t channels, pixel_quads, pixels;

  FASTNOISE_HD NhwcCursor(int64_t first, int64_t stride, int64_t channel_count,
                          int64_t pixel_count)
      : channels(channel_count), pixel_quads(pixel_count / 4), pixels(pixel_count) {
    c = first % channels;
    p = (first / channels) % pixel_quads;
    n = first / channels / pixel_quads;
    step_c = stride % channels;
    step_p = (stride / channels) % pixel_quads;
    step_n = stride / channels / pixel_quads;
  }

  FASTNOISE_HD void advance() {
    c += step_c;
    const int64_t carry_c = c >= channels ? 1 : 0;
    c -= carry_c * channels;
    p += step_p + carry_c;
    const int64_t carry_p = p >= pixel_quads ? 1 : 0;
    p -= carry_p * pixel_quads;
    n += step_n + carry_p;
  }

  // The quad's first feature (c, 4p) in one sample's logical order: parameters' index.
  FASTNOISE_HD int64_t feature() const { return c * pixels + 4 * p; }
  // Its first element in logical order (a multiple of 4: counter logical() / 4).
  FASTNOISE_HD int64_t logical() const { return n * channels * pixels + feature(); }
  // Its first element in memory; lane k lives `channels` further on per lane.
  FASTNOISE_HD int64_t memory() const { return (n * pixels + 4 * p) * channels + c; }
};

// The feature quad fq of a backward thread, channel-fastest as NhwcCursor: its first
// feature in logical order and its first element's memory offset within a sample.
struct NhwcFeatureQuad {
  int64_t feature;
  int64_t memory;
};

FASTNOISE_HD NhwcFeatureQuad nhwc_feature_quad(int64_t fq, int64_t channels, int64_t pixels) {
  const int64_t c = fq % channels, p = fq / channels;
  return {c * pixels + 4 * p, 4 * p * channels + c};
}

template <typename T, typename opmath_t>
FASTNOISE_HD void load_strided(const T* p, int64_t stride, opmath_t v[4]) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) v[lane] = load(p + lane * stride);
}

template <typename T, typename opmath_t>
FASTNOISE_HD void store_strided(T* p, int64_t stride, const opmath_t v[4]) {
#pragma unroll
  for (int lane = 0; lane < 4; ++lane) store(p + lane * stride, v[lane]);
}

#if defined(__CUDACC__)
// A thread of a channels_last backward kernel (grid and block as ReductionPlan): its
// feature quad, channel-fastest, and its chunk's rows [row_begin, row_end). Threads past
// the last quad are inactive; they still take part in the block's sums.
struct NhwcReductionThread {
  bool active;
  NhwcFeatureQuad at;
  int64_t row_begin, row_end;
};

__device__ __forceinline__ NhwcReductionThread nhwc_reduction_thread(int64_t rows,
                                                                      int64_t features,
                                                                      ChannelsLast layout,
                                                                      int64_t rows_per_chunk) {
  const int64_t fq = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool active = fq < features / 4;
  const int64_t row_begin = blockIdx.y * rows_per_chunk;
  const int64_t row_end = row_begin + rows_per_chunk < rows ? row_begin + rows_per_chunk : rows;
  return {active, nhwc_feature_quad(active ? fq : 0, layout.channels, layout.pixels), row_begin,
          row_end};
}
#endif  // __CUDACC__

}  // namespace cuda
}  // namespace fastnoise
