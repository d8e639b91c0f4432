"""Fused L-inf attack steps: the PGD iterate and the uniform random start, one pass each.

Elementwise kernels take ``TAIL`` (numel % BLOCK != 0): only then is the last program
masked, in a branch of its own, so every other program's accesses carry no mask and
compile to 128-bit loads and stores whatever numel is (a mask ``index < numel`` whose
bound is not a multiple of 16 cannot be proven uniform over 4 lanes: scalar accesses).
"""

import triton
import triton.language as tl

from fastnoise.kernels.indexing import block_addresses, nhwc_tile
from fastnoise.kernels.philox import philox_key, uniform_rows, uniform_tile


@triton.jit
def _clamp_keep_nan(x, lo, hi):
    # The reference's torch.maximum/minimum/clamp keep a NaN operand; PTX max.f32 (Triton's
    # default) drops it and would turn a NaN input into a bound.
    x = tl.maximum(x, lo, propagate_nan=tl.PropagateNan.ALL)
    return tl.minimum(x, hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _pgd_step_block(
    x_adv_ptr, grad_ptr, x_orig_ptr, out_ptr, index, mask, step_size, eps, clip_min, clip_max,
    COMPUTE_DTYPE: tl.constexpr,
):  # fmt: skip
    x = tl.load(x_adv_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    grad = tl.load(grad_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    orig = tl.load(x_orig_ptr + index, mask=mask).to(COMPUTE_DTYPE)
    sign = tl.where(grad > 0, 1.0, tl.where(grad < 0, -1.0, 0.0)).to(COMPUTE_DTYPE)
    x = x + step_size * sign
    x = _clamp_keep_nan(x, orig - eps, orig + eps)
    x = _clamp_keep_nan(x, clip_min, clip_max)
    tl.store(out_ptr + index, x.to(out_ptr.dtype.element_ty), mask=mask)


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
    TAIL: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Elementwise without noise: any layout shared by all four tensors runs flat.
    # x' = clip_box(clip_{x0 +- eps}(x + step * sign(grad))): sign, step, both projections.
    pid = tl.program_id(0).to(tl.int64)
    index = pid * BLOCK + tl.arange(0, BLOCK)
    if TAIL:
        if pid * BLOCK + BLOCK > numel:
            _pgd_step_block(
                x_adv_ptr, grad_ptr, x_orig_ptr, out_ptr, index, index < numel,
                step_size, eps, clip_min, clip_max, COMPUTE_DTYPE,
            )  # fmt: skip
        else:
            _pgd_step_block(
                x_adv_ptr, grad_ptr, x_orig_ptr, out_ptr, index, None,
                step_size, eps, clip_min, clip_max, COMPUTE_DTYPE,
            )  # fmt: skip
    else:
        _pgd_step_block(
            x_adv_ptr, grad_ptr, x_orig_ptr, out_ptr, index, None,
            step_size, eps, clip_min, clip_max, COMPUTE_DTYPE,
        )  # fmt: skip


@triton.jit
def _start_bounds(eps, clip_min, clip_max, bounds_ptr, IN_MEMORY: tl.constexpr):
    """eps and the pixel box: the scalar arguments, or with IN_MEMORY the float32
    ``[eps, clip_min, clip_max]`` at ``bounds_ptr`` (a graph value: a new eps in a compiled
    graph is data, not a kernel constant)."""
    if IN_MEMORY:
        eps = tl.load(bounds_ptr)
        clip_min = tl.load(bounds_ptr + 1)
        clip_max = tl.load(bounds_ptr + 2)
    return eps, clip_min, clip_max


@triton.jit
def _random_start_block(
    x_ptr, out_ptr, block_start, numel, features, hw, channels, eps, clip_min, clip_max,
    seed_lo, seed_hi, offset,
    MASKED: tl.constexpr, PROJECT: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    counters = block_start // 4 + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    local = tl.arange(0, BLOCK // 4)[:, None] * 4 + lanes[None, :]  # int32
    mask = block_start + local < numel if MASKED else None
    _, memory = block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST)
    u = uniform_tile(seed_lo, seed_hi, offset + counters, lanes)
    x = tl.load(x_ptr + memory, mask=mask).to(COMPUTE_DTYPE)
    x = x + eps * (2.0 * u - 1.0).to(COMPUTE_DTYPE)
    if PROJECT:
        x = _clamp_keep_nan(x, clip_min, clip_max)
    tl.store(out_ptr + memory, x.to(out_ptr.dtype.element_ty), mask=mask)


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
    bounds_ptr,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    PROJECT: tl.constexpr,
    TAIL: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    eps, clip_min, clip_max = _start_bounds(eps, clip_min, clip_max, bounds_ptr, RNG_IN_MEMORY)
    # x + eps * (2u - 1), u ~ U[0, 1] from the spec (PGD's start, RFGSM, NFGSM).
    block_start = tl.program_id(0).to(tl.int64) * BLOCK
    if TAIL:
        if block_start + BLOCK > numel:
            _random_start_block(
                x_ptr, out_ptr, block_start, numel, features, hw, channels, eps, clip_min,
                clip_max, seed_lo, seed_hi, offset, True, PROJECT, CHANNELS_LAST,
                COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
        else:
            _random_start_block(
                x_ptr, out_ptr, block_start, numel, features, hw, channels, eps, clip_min,
                clip_max, seed_lo, seed_hi, offset, False, PROJECT, CHANNELS_LAST,
                COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
    else:
        _random_start_block(
            x_ptr, out_ptr, block_start, numel, features, hw, channels, eps, clip_min,
            clip_max, seed_lo, seed_hi, offset, False, PROJECT, CHANNELS_LAST,
            COMPUTE_DTYPE, BLOCK,
        )  # fmt: skip


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def random_start_nhwc_kernel(
    x_ptr,
    out_ptr,
    hw4,
    channels4,
    eps,
    clip_min,
    clip_max,
    bounds_ptr,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    PROJECT: tl.constexpr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    eps, clip_min, clip_max = _start_bounds(eps, clip_min, clip_max, bounds_ptr, RNG_IN_MEMORY)
    # channels_last tiles as fastnoise.kernels.noise_injection.noise_forward_nhwc_kernel.
    in_hw, memory, _, counters = nhwc_tile(hw4, channels4, BLOCK_HW, BLOCK_C)
    u = tl.trans(uniform_rows(seed_lo, seed_hi, offset + counters))
    x = tl.load(x_ptr + memory, mask=in_hw[:, None]).to(COMPUTE_DTYPE)
    # x + eps * (2u - 1) in the fmas of the contiguous kernel.
    step = (2.0 * u - 1.0).to(COMPUTE_DTYPE)
    x = tl.fma(step, tl.full(step.shape, eps, COMPUTE_DTYPE), x)  # eps: a float when interpreted
    if PROJECT:
        x = _clamp_keep_nan(x, clip_min, clip_max)
    tl.store(out_ptr + memory, x.to(out_ptr.dtype.element_ty), mask=in_hw[:, None])
