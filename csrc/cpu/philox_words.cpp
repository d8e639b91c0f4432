// The raw Philox4x32-10 words of given counters on the CPU: the spec test of philox.h.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"
#include "../philox.h"

namespace fastnoise {
namespace cpu {
namespace {

at::Tensor philox_words(const at::Tensor& counters_in, int64_t seed) {
  TORCH_CHECK_TYPE(counters_in.scalar_type() == at::kLong, "counters must be int64, got ",
              counters_in.scalar_type());
  check_seed_offset(seed, 0);
  const at::Tensor counters = counters_in.contiguous().view(-1);
  at::Tensor words = at::empty({counters.numel(), 4}, counters.options());
  const int64_t* cp = counters.const_data_ptr<int64_t>();
  int64_t* wp = words.mutable_data_ptr<int64_t>();
  at::parallel_for(0, counters.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      uint32_t w[4];
      philox4x32_10(static_cast<uint64_t>(cp[i]), static_cast<uint64_t>(seed), w);
      for (int lane = 0; lane < 4; ++lane) wp[4 * i + lane] = w[lane];
    }
  });
  return words;
}

}  // namespace
}  // namespace cpu
}  // namespace fastnoise

TORCH_LIBRARY_IMPL(fastnoise_C, CPU, m) { m.impl("philox_words", &fastnoise::cpu::philox_words); }
