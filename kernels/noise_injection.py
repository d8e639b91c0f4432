"""Fused Gaussian noise injection: Learn2Perturb Eq. (4)-(5), y = x + sigma * z.

Forward: one read of x, one write of y; sigma (F floats) stays in cache.
Backward: grad_x = grad_y needs no kernel; grad_sigma[f] = sum_n grad_y[n, f] * z[n, f]
with z regenerated from (seed, offset), so nothing activation-sized is saved.
"""

import triton
import triton.language as tl

from fastnoise.kernels.indexing import block_addresses, feature_offset
from fastnoise.kernels.philox import normal_at, normal_tile


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
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Each program owns BLOCK // 4 Philox counters x 4 lanes = BLOCK consecutive elements.
    block_start = tl.program_id(0).to(tl.int64) * BLOCK
    counters = block_start // 4 + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    local = tl.arange(0, BLOCK // 4)[:, None] * 4 + lanes[None, :]  # int32
    mask = block_start + local < numel
    feature, memory = block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST)
    z = normal_tile(seed_lo, seed_hi, offset + counters, lanes)
    # x and y share one layout; the noise follows the logical index either way.
    x = tl.load(x_ptr + memory, mask=mask).to(COMPUTE_DTYPE)
    sigma = tl.load(sigma_ptr + feature, mask=mask)
    y = x + sigma * z.to(COMPUTE_DTYPE)
    tl.store(y_ptr + memory, y.to(y_ptr.dtype.element_ty), mask=mask)


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
    # A constant, not an argument: triton 3.6's interpreter cannot range() over a scalar arg.
    ROWS_PER_PROGRAM: tl.constexpr,
    ROWS_ALIGNED: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    # Grid (feature blocks, row chunks): each program sums grad_y * z over its rows for
    # BLOCK_F features and writes one partial row; the host sums the partial rows, so the
    # result does not depend on scheduling (no atomics).
    pid_f = tl.program_id(0).to(tl.int64)
    pid_n = tl.program_id(1).to(tl.int64)
    lanes = tl.arange(0, 4)
    feature_counters = pid_f * (BLOCK_F // 4) + tl.arange(0, BLOCK_F // 4)
    feature = feature_counters[:, None] * 4 + lanes[None, :]
    feature_mask = feature < features
    in_row = feature_offset(feature, hw, channels, CHANNELS_LAST)
    acc = tl.full((BLOCK_F // 4, 4), 0.0, COMPUTE_DTYPE)
    first_row = pid_n * ROWS_PER_PROGRAM
    for r in range(0, ROWS_PER_PROGRAM):
        row = first_row + r
        index = row * features + feature
        mask = feature_mask & (row < rows)
        if ROWS_ALIGNED:
            # features % 4 == 0: every row starts on a counter, one Philox call per 4 lanes.
            z = normal_tile(
                seed_lo, seed_hi, offset + row * (features // 4) + feature_counters, lanes
            )
        else:
            z = normal_at(seed_lo, seed_hi, offset, index)
        g = tl.load(grad_y_ptr + row * features + in_row, mask=mask, other=0.0)
        g = g.to(COMPUTE_DTYPE)
        acc += g * z.to(COMPUTE_DTYPE)
    tl.store(partial_ptr + pid_n * features + feature, acc, mask=feature_mask)
