"""Fused Gaussian noise injection: Learn2Perturb Eq. (4)-(5), y = x + sigma * z.

Forward: one read of x, one write of y; sigma (F floats) stays in cache.
Backward: grad_x = grad_y needs no kernel; grad_sigma[f] = sum_n grad_y[n, f] * z[n, f]
with z regenerated from (seed, offset), so nothing activation-sized is saved.
"""

import triton
import triton.language as tl

from fastnoise.kernels.indexing import (
    block_addresses,
    nhwc_feature_tile,
    nhwc_tile,
    reduction_tile,
)
from fastnoise.kernels.philox import normal_rows, normal_tile, philox_key


@triton.jit
def _noise_forward_block(
    x_ptr, sigma_ptr, y_ptr, block_start, numel, features, hw, channels,
    seed_lo, seed_hi, offset,
    MASKED: tl.constexpr, CHANNELS_LAST: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # BLOCK // 4 Philox counters x 4 lanes = BLOCK consecutive elements from block_start.
    counters = block_start // 4 + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    local = tl.arange(0, BLOCK // 4)[:, None] * 4 + lanes[None, :]  # int32
    mask = block_start + local < numel if MASKED else None
    feature, memory = block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST)
    z = normal_tile(seed_lo, seed_hi, offset + counters, lanes)
    # x and y share one layout; the noise follows the logical index either way.
    x = tl.load(x_ptr + memory, mask=mask).to(COMPUTE_DTYPE)
    sigma = tl.load(sigma_ptr + feature, mask=mask)
    y = x + sigma * z.to(COMPUTE_DTYPE)
    tl.store(y_ptr + memory, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def noise_forward_kernel(
    x_ptr,
    sigma_ptr,
    y_ptr,
    numel,
    features,
    hw,
    channels,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    TAIL: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    # Only the last program is masked, and only when numel % BLOCK != 0 (TAIL): see
    # fastnoise.kernels.attack_step.
    block_start = tl.program_id(0).to(tl.int64) * BLOCK
    if TAIL:
        if block_start + BLOCK > numel:
            _noise_forward_block(
                x_ptr, sigma_ptr, y_ptr, block_start, numel, features, hw, channels,
                seed_lo, seed_hi, offset, True, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
        else:
            _noise_forward_block(
                x_ptr, sigma_ptr, y_ptr, block_start, numel, features, hw, channels,
                seed_lo, seed_hi, offset, False, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
    else:
        _noise_forward_block(
            x_ptr, sigma_ptr, y_ptr, block_start, numel, features, hw, channels,
            seed_lo, seed_hi, offset, False, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
        )  # fmt: skip


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def noise_forward_nhwc_kernel(
    x_ptr,
    sigma_ptr,
    y_ptr,
    hw4,
    channels4,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    # channels_last with H*W % 4 == C % 4 == 0: z and sigma in a logical (c, hw) tile (4
    # lanes of a counter side by side, sigma contiguous), x and y in the transposed memory
    # (hw, c) tile, channels contiguous. tl.trans is a shared-memory transpose on the GPU.
    in_hw, memory, logical, counters = nhwc_tile(hw4, channels4, BLOCK_HW, BLOCK_C)
    z = tl.trans(normal_rows(seed_lo, seed_hi, offset + counters)).to(COMPUTE_DTYPE)
    sigma = tl.trans(tl.load(sigma_ptr + logical, mask=in_hw[None, :]))
    x = tl.load(x_ptr + memory, mask=in_hw[:, None]).to(COMPUTE_DTYPE)
    # x + sigma * z as the contiguous kernel compiles it (one fma): the transposes would
    # otherwise split the multiply from the add, a 1-ulp difference between layouts.
    y = tl.fma(sigma, z, x)
    tl.store(y_ptr + memory, y.to(y_ptr.dtype.element_ty), mask=in_hw[:, None])


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def noise_backward_sigma_kernel(
    grad_y_ptr,
    partial_ptr,
    rows,
    features,
    hw,
    channels,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    # A constant, not an argument: triton 3.6's interpreter cannot range() over a scalar arg.
    ROWS_PER_PROGRAM: tl.constexpr,
    CLASSES: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    # Grid (feature blocks, row chunks x CLASSES): each program sums grad_y * z over its
    # rows (see reduction_rows) for BLOCK_F features and writes one partial row; the host
    # sums the partial rows, so the result does not depend on scheduling (no atomics).
    chunk_start, first_row, block_start, feature, feature_mask, in_row = reduction_tile(
        features, hw, channels, ROWS_PER_PROGRAM, CLASSES, CHANNELS_LAST, BLOCK_F
    )
    lanes = tl.arange(0, 4)
    acc = tl.full((BLOCK_F // 4, 4), 0.0, COMPUTE_DTYPE)
    for r in range(0, (ROWS_PER_PROGRAM + CLASSES - 1) // CLASSES):
        row = first_row + r * CLASSES
        mask = feature_mask & (row < rows) & (row < chunk_start + ROWS_PER_PROGRAM)
        counters = (row * features + block_start) // 4 + tl.arange(0, BLOCK_F // 4)
        z = normal_tile(seed_lo, seed_hi, offset + counters, lanes)
        g = tl.load(grad_y_ptr + row * features + in_row, mask=mask, other=0.0)
        g = g.to(COMPUTE_DTYPE)
        acc += g * z.to(COMPUTE_DTYPE)
    tl.store(partial_ptr + tl.program_id(1) * features + feature, acc, mask=feature_mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def noise_backward_sigma_nhwc_kernel(
    grad_y_ptr,
    partial_ptr,
    rows,
    hw4,
    channels4,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    rng_state_ptr,
    ROWS_PER_PROGRAM: tl.constexpr,
    RNG_IN_MEMORY: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    seed_lo, seed_hi, offset = philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY)
    # channels_last with H*W % 4 == C % 4 == 0: grad_y in (hw, c) tiles, channels
    # contiguous (vector loads); z from the logical (c, hw) tile, transposed on chip. The
    # partial row is stored transposed back, in logical feature order, as the other kernel.
    features, in_hw, in_row, logical, counters = nhwc_feature_tile(
        hw4, channels4, BLOCK_HW, BLOCK_C
    )
    acc = tl.full((BLOCK_HW, BLOCK_C), 0.0, COMPUTE_DTYPE)
    pid_n = tl.program_id(2).to(tl.int64)
    for r in range(0, ROWS_PER_PROGRAM):
        row = pid_n * ROWS_PER_PROGRAM + r
        z = tl.trans(normal_rows(seed_lo, seed_hi, offset + row * (features // 4) + counters))
        mask = in_hw[:, None] & (row < rows)
        g = tl.load(grad_y_ptr + row * features + in_row, mask=mask, other=0.0)
        acc += g.to(COMPUTE_DTYPE) * z.to(COMPUTE_DTYPE)
    partial = partial_ptr + pid_n * features + logical
    tl.store(partial, tl.trans(acc), mask=in_hw[None, :])
