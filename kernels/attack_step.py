"""Fused L-inf attack steps: the PGD iterate and the uniform random start, one pass each."""

import triton
import triton.language as tl

from fastnoise.kernels.indexing import block_addresses
from fastnoise.kernels.philox import uniform_tile


@triton.jit
def _clamp_keep_nan(x, lo, hi):
    # The reference's torch.maximum/minimum/clamp keep a NaN operand; PTX max.f32 (Triton's
    # default) drops it and would turn a NaN input into a bound.
    x = tl.maximum(x, lo, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(x, hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def pgd_step_kernel(
    x_adv_ptr,
    grad_ptr,
    x_orig_ptr,
    out_ptr,
    numel,
    step_size,
    eps,
    clip_min,
    clip_max,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Elementwise without noise: any layout shared by all four tensors runs flat.
    # x' = clip_box(clip_{x0 +- eps}(x + step * sign(grad))): sign, step, both projections.
    pid = tl.program_id(0).to(tl.int64)
    index = pid * BLOCK + tl.arange(0, BLOCK)
    mask = index < numel
    x = tl.load(x_adv_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    grad = tl.load(grad_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    orig = tl.load(x_orig_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    sign = tl.where(grad > 0, 1.0, tl.where(grad < 0, -1.0, 0.0)).to(COMPUTE_DTYPE)
    x = x + step_size * sign
    x = _clamp_keep_nan(x, orig - eps, orig + eps)
    x = _clamp_keep_nan(x, clip_min, clip_max)
    tl.store(out_ptr + index, x.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def random_start_kernel(
    x_ptr,
    out_ptr,
    numel,
    features,
    hw,
    channels,
    eps,
    clip_min,
    clip_max,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    PROJECT: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # x + eps * (2u - 1), u ~ U[0, 1] from the spec (PGD's start, RFGSM, NFGSM).
    block_start = tl.program_id(0).to(tl.int64) * BLOCK
    counters = block_start // 4 + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    local = tl.arange(0, BLOCK // 4)[:, None] * 4 + lanes[None, :]  # int32
    mask = block_start + local < numel
    _, memory = block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST)
    u = uniform_tile(seed_lo, seed_hi, offset + counters, lanes)
    x = tl.load(x_ptr + memory, mask=mask).to(COMPUTE_DTYPE)
    x = x + eps * (2.0 * u - 1.0).to(COMPUTE_DTYPE)
    if PROJECT:
        x = _clamp_keep_nan(x, clip_min, clip_max)
    tl.store(out_ptr + memory, x.to(out_ptr.dtype.element_ty), mask=mask)
