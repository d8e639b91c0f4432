"""Fused PNIL (pixelwise noise injection layer), Eq. (2)-(3):

    Sigma = x * W + B,    y = x + z * exp(Sigma / 2),    z ~ N(0, 1).

Forward reads x once and writes y once. Backward regenerates z and produces grad_x
plus per-program partial sums for grad_W and grad_B in the same pass.
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
def _pnil_forward_block(
    x_ptr, weight_ptr, bias_ptr, y_ptr, block_start, numel, features, hw, channels,
    seed_lo, seed_hi, offset,
    MASKED: tl.constexpr, CHANNELS_LAST: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    counters = block_start // 4 + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    local = tl.arange(0, BLOCK // 4)[:, None] * 4 + lanes[None, :]  # int32
    mask = block_start + local < numel if MASKED else None
    feature, memory = block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST)
    z = normal_tile(seed_lo, seed_hi, offset + counters, lanes).to(COMPUTE_DTYPE)
    x = tl.load(x_ptr + memory, mask=mask).to(COMPUTE_DTYPE)
    weight = tl.load(weight_ptr + feature, mask=mask)
    bias = tl.load(bias_ptr + feature, mask=mask)
    y = x + z * tl.exp((x * weight + bias) * 0.5)  # Eq. (2)-(3)
    tl.store(y_ptr + memory, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def pnil_forward_kernel(
    x_ptr,
    weight_ptr,
    bias_ptr,
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
    # Only the last program is masked, and only when numel % BLOCK != 0 (TAIL).
    block_start = tl.program_id(0).to(tl.int64) * BLOCK
    if TAIL:
        if block_start + BLOCK > numel:
            _pnil_forward_block(
                x_ptr, weight_ptr, bias_ptr, y_ptr, block_start, numel, features, hw,
                channels, seed_lo, seed_hi, offset, True, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
        else:
            _pnil_forward_block(
                x_ptr, weight_ptr, bias_ptr, y_ptr, block_start, numel, features, hw,
                channels, seed_lo, seed_hi, offset, False, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
            )  # fmt: skip
    else:
        _pnil_forward_block(
            x_ptr, weight_ptr, bias_ptr, y_ptr, block_start, numel, features, hw,
            channels, seed_lo, seed_hi, offset, False, CHANNELS_LAST, COMPUTE_DTYPE, BLOCK,
        )  # fmt: skip


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def pnil_forward_nhwc_kernel(
    x_ptr,
    weight_ptr,
    bias_ptr,
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
    # channels_last tiles as noise_forward_nhwc_kernel: z, W and B transposed from logical
    # (c, hw) tiles, x and y in (hw, c) tiles with the channels contiguous.
    in_hw, memory, logical, counters = nhwc_tile(hw4, channels4, BLOCK_HW, BLOCK_C)
    z = tl.trans(normal_rows(seed_lo, seed_hi, offset + counters)).to(COMPUTE_DTYPE)
    weight = tl.trans(tl.load(weight_ptr + logical, mask=in_hw[None, :]))
    bias = tl.trans(tl.load(bias_ptr + logical, mask=in_hw[None, :]))
    x = tl.load(x_ptr + memory, mask=in_hw[:, None]).to(COMPUTE_DTYPE)
    # Eq. (2)-(3) in the fmas the contiguous kernel compiles to (same bits either layout).
    y = tl.fma(z, tl.exp(tl.fma(x, weight, bias) * 0.5), x)
    tl.store(y_ptr + memory, y.to(y_ptr.dtype.element_ty), mask=in_hw[:, None])


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def pnil_backward_kernel(
    grad_y_ptr,
    x_ptr,
    weight_ptr,
    bias_ptr,
    grad_x_ptr,
    partial_w_ptr,
    partial_b_ptr,
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
    # Same grid and rows as noise_backward_sigma_kernel.
    chunk_start, first_row, block_start, feature, feature_mask, in_row = reduction_tile(
        features, hw, channels, ROWS_PER_PROGRAM, CLASSES, CHANNELS_LAST, BLOCK_F
    )
    lanes = tl.arange(0, 4)
    weight = tl.load(weight_ptr + feature, mask=feature_mask, other=0.0)
    bias = tl.load(bias_ptr + feature, mask=feature_mask, other=0.0)
    acc_w = tl.full((BLOCK_F // 4, 4), 0.0, COMPUTE_DTYPE)
    acc_b = tl.full((BLOCK_F // 4, 4), 0.0, COMPUTE_DTYPE)
    for r in range(0, (ROWS_PER_PROGRAM + CLASSES - 1) // CLASSES):
        row = first_row + r * CLASSES
        mask = feature_mask & (row < rows) & (row < chunk_start + ROWS_PER_PROGRAM)
        counters = (row * features + block_start) // 4 + tl.arange(0, BLOCK_F // 4)
        z = normal_tile(seed_lo, seed_hi, offset + counters, lanes)
        memory = row * features + in_row  # grad_y, x and grad_x share one layout
        g = tl.load(grad_y_ptr + memory, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + memory, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        # dy/dSigma = z * exp(Sigma / 2) / 2; dSigma/dx = W, dSigma/dW = x, dSigma/dB = 1.
        g_sigma = g * (0.5 * z.to(COMPUTE_DTYPE) * tl.exp((x * weight + bias) * 0.5))
        grad_x = (g + g_sigma * weight).to(grad_x_ptr.dtype.element_ty)
        tl.store(grad_x_ptr + memory, grad_x, mask=mask)
        acc_w += g_sigma * x
        acc_b += g_sigma
    partial = tl.program_id(1) * features + feature
    tl.store(partial_w_ptr + partial, acc_w, mask=feature_mask)
    tl.store(partial_b_ptr + partial, acc_b, mask=feature_mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def pnil_backward_nhwc_kernel(
    grad_y_ptr,
    x_ptr,
    weight_ptr,
    bias_ptr,
    grad_x_ptr,
    partial_w_ptr,
    partial_b_ptr,
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
    # channels_last tiles as noise_backward_sigma_nhwc_kernel: grad_y, x and grad_x in
    # (hw, c) tiles (vector accesses), z, W and B transposed from logical (c, hw) tiles.
    features, in_hw, in_row, logical, counters = nhwc_feature_tile(
        hw4, channels4, BLOCK_HW, BLOCK_C
    )
    weight = tl.trans(tl.load(weight_ptr + logical, mask=in_hw[None, :]))
    bias = tl.trans(tl.load(bias_ptr + logical, mask=in_hw[None, :]))
    acc_w = tl.full((BLOCK_HW, BLOCK_C), 0.0, COMPUTE_DTYPE)
    acc_b = tl.full((BLOCK_HW, BLOCK_C), 0.0, COMPUTE_DTYPE)
    pid_n = tl.program_id(2).to(tl.int64)
    for r in range(0, ROWS_PER_PROGRAM):
        row = pid_n * ROWS_PER_PROGRAM + r
        z = tl.trans(normal_rows(seed_lo, seed_hi, offset + row * (features // 4) + counters))
        mask = in_hw[:, None] & (row < rows)
        memory = row * features + in_row
        g = tl.load(grad_y_ptr + memory, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        x = tl.load(x_ptr + memory, mask=mask, other=0.0).to(COMPUTE_DTYPE)
        # As pnil_backward_kernel: dy/dSigma = z * exp(Sigma / 2) / 2, Sigma = x * W + B.
        g_sigma = g * (0.5 * z.to(COMPUTE_DTYPE) * tl.exp(tl.fma(x, weight, bias) * 0.5))
        grad_x = tl.fma(g_sigma, weight, g).to(grad_x_ptr.dtype.element_ty)
        tl.store(grad_x_ptr + memory, grad_x, mask=mask)
        acc_w += g_sigma * x
        acc_b += g_sigma
    partial = pid_n * features + logical
    tl.store(partial_w_ptr + partial, tl.trans(acc_w), mask=in_hw[None, :])
    tl.store(partial_b_ptr + partial, tl.trans(acc_b), mask=in_hw[None, :])
