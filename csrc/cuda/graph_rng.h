// CUDA graph capture with seed=None: the link between the front door (front_door.cpp,
// built with or without CUDA) and the CUDA side (register_cuda.cpp). Host-only and free
// of CUDA headers, so the CPU-only build includes it too.
//
// Outside capture the front door draws a 63-bit seed on the host, as it always has. A
// graph captured that way would bake that one seed into every replay, so while the
// current stream of x's device is capturing, the front door asks the CUDA side instead
// for a device state: a fresh two-int64 tensor on x's device, [seed, offset], that a
// one-thread kernel in the graph fills on each replay from torch's CUDA generator
// (CUDAGeneratorImpl::philox_cuda_state, read with at::cuda::philox::unpack), as
// torch's own dropout does. The noise kernels then read (seed, offset) from that tensor
// on the device; the autograd Functions save it, so the backward regenerates the same
// noise. The mapping onto the spec, fixed and the same for every op:
//   seed   = torch's 64-bit generator seed with its top bit cleared (keys are < 2**63);
//   offset = torch's philox offset (its counting unit becomes one Philox counter),
// with `counters` = ceil(numel / 4) Philox counters reserved per call (torch rounds the
// increment up to a multiple of 4). torch hands each call in a graph, and each replay,
// its own offset range of that length, so no two calls' counters overlap. The call's
// offset argument is checked and otherwise unused here: it picks counters under a known
// seed, and a captured seed=None call has none (adding it would let a call's counters run
// into the next call's range). An eager call with the (seed, offset) read back from the
// tensor draws the same noise.
//
// torch.compile on CUDA uses the same device state outside capture too (the .fresh ops of
// front_door.cpp): a compiled graph then has no CPU tensor among its ops' inputs or
// outputs, so mode="reduce-overhead" can capture it, and each replay draws fresh noise.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace fastnoise {
namespace graph_rng {

// [seed, offset] on x's device, reserving `counters` Philox counters of its CUDA
// generator: while x's current stream is capturing, or at any time when `any_time` (the
// torch.compile path, whose graphs inductor may capture with CUDA graphs itself); else an
// undefined tensor.
using CapturedStateFn = at::Tensor (*)(const at::Tensor& x, int64_t counters, bool any_time);

// Set once by the CUDA build at load time (register_cuda.cpp); null in a CPU-only build.
// Defined in front_door.cpp.
void set_captured_state_fn(CapturedStateFn fn);

}  // namespace graph_rng
}  // namespace fastnoise
