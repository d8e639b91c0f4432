// Parallel loops of the CPU kernels: tiles of kTileSize elements (aligned to Philox
// counters, so a tile's noise is one normal_tile/uniform_tile call) and runs of
// consecutive features inside a tile (so per-feature parameters are read as vectors).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>

#include "random_tiles.h"

namespace fastnoise {
namespace cpu {

constexpr int64_t kGrainTiles = 16;  // ~2K elements: below this threads cost more than they save

inline int64_t tile_count(int64_t numel) { return (numel + kTileSize - 1) / kTileSize; }

// body(first_element, count) for every tile, tiles split across threads.
template <typename Body>
void parallel_tiles(int64_t numel, const Body& body) {
  at::parallel_for(0, tile_count(numel), kGrainTiles, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t first = tile * kTileSize;
      body(first, std::min(kTileSize, numel - first));
    }
  });
}

// For reductions: the tiles split into a fixed number of chunks (one partial-sum row
// each), so results do not depend on thread scheduling. body(chunk, first_tile, end_tile).
inline int64_t chunk_count(int64_t numel) {
  const int64_t tiles = tile_count(numel);
  const int64_t by_grain = std::max<int64_t>(1, tiles / kGrainTiles);
  return std::min<int64_t>(std::min<int64_t>(at::get_num_threads(), by_grain), 64);
}

// The sum of the per-chunk rows of `partial` (chunks, ...). One chunk, which every small
// call has, is its own sum: a view, no reduction kernel (its cost decides small calls).
inline at::Tensor sum_chunks(const at::Tensor& partial) {
  return partial.size(0) == 1 ? partial.select(0, 0) : partial.sum(0);
}

template <typename Body>
void parallel_chunks(int64_t numel, int64_t chunks, const Body& body) {
  const int64_t tiles = tile_count(numel);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      body(chunk, tiles * chunk / chunks, tiles * (chunk + 1) / chunks);
    }
  });
}

// fn(j, run, f): elements first + j .. first + j + run - 1 have features f .. f + run - 1.
template <typename Fn>
inline void for_feature_runs(int64_t first, int64_t count, int64_t features, const Fn& fn) {
  int64_t f = first % features;
  for (int64_t j = 0; j < count;) {
    const int64_t run = std::min(count - j, features - f);
    fn(j, run, f);
    j += run;
    f = 0;
  }
}

// fn(j, run, q, per_feature): elements first + j .. first + j + run - 1 read parameter
// entries from q on, one per feature (per_feature) or entry q for the whole run (a
// parameter broadcast along the trailing dims, see PerFeature: feature f reads f / inner).
template <typename Fn>
inline void for_param_runs(int64_t first, int64_t count, int64_t features, int64_t inner,
                           const Fn& fn) {
  for_feature_runs(first, count, features, [&](int64_t j, int64_t run, int64_t f) {
    if (inner == 1) {
      fn(j, run, f, true);
      return;
    }
    for (int64_t k = 0; k < run;) {
      const int64_t q = (f + k) / inner, sub = std::min(run - k, (q + 1) * inner - (f + k));
      fn(j + k, sub, q, false);
      k += sub;
    }
  });
}

}  // namespace cpu
}  // namespace fastnoise
