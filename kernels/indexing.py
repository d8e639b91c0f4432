"""Logical-to-physical element offsets, so kernels read channels_last tensors in place.

Noise element ``i`` is the row-major logical index of an (N, C, H, W) tensor, whatever
its memory format; a channels_last tensor stores logical (n, c, h, w) at
``n*C*H*W + (h*W + w)*C + c``.
"""

import triton
import triton.language as tl


@triton.jit
def block_addresses(block_start, local, features, hw, channels, CHANNELS_LAST: tl.constexpr):
    """(feature index, memory offset) of logical elements ``block_start + local``.

    ``block_start`` is the program's int64 first index; ``local`` (int32) < BLOCK. The
    one int64 division is per program; per element the math stays in int32 (a 64-bit
    division costs dozens of GPU instructions). Needs ``features = C*H*W < 2**31``.
    """
    first_row = block_start // features
    shifted = (block_start - first_row * features).to(tl.int32) + local
    row_step = shifted // features
    feature = shifted - row_step * features
    if CHANNELS_LAST:
        c = feature // hw
        memory = (first_row + row_step) * features + ((feature - c * hw) * channels + c)
    else:
        memory = block_start + local
    return feature, memory


@triton.jit
def feature_offset(feature, hw, channels, CHANNELS_LAST: tl.constexpr):
    """Offset of feature ``f = c*H*W + h*W + w`` within one sample (the row start excluded)."""
    if CHANNELS_LAST:
        c = feature // hw
        return (feature - c * hw) * channels + c
    else:
        return feature


@triton.jit
def nhwc_tile(hw4, channels4, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program's tile of a channels_last (N, C, H, W) tensor with H*W % 4 == C % 4 == 0.

    Grid (N * cdiv(H*W, BLOCK_HW), C // BLOCK_C). ``hw4 = H*W // 4`` and ``channels4 =
    C // 4`` are passed divided so the compiler knows both are multiples of 4: each pixel's
    BLOCK_C channels are then 16-byte aligned (fp32) and move in vector accesses.
    Returns ``in_hw`` (BLOCK_HW,) masking the pixels past H*W (only the last hw block of a
    sample has any), ``memory`` (BLOCK_HW, BLOCK_C) the tile's element offsets (channels
    contiguous), ``logical`` (BLOCK_C, BLOCK_HW) the same features' offsets within one
    sample in logical (c, hw) order (the per-feature parameters), and the Philox counters
    of the logical tile (BLOCK_C, BLOCK_HW // 4) relative to the call's offset (logical
    element (n, c, hw) is n*C*HW + c*HW + hw, so hw .. hw + 3 share a counter).
    """
    hw_blocks = (hw4 * 4 + BLOCK_HW - 1) // BLOCK_HW  # not tl.cdiv: see fastnoise.kernels
    pid = tl.program_id(0)
    n = (pid // hw_blocks).to(tl.int64)
    hw_start = (pid - (pid // hw_blocks) * hw_blocks) * BLOCK_HW
    hw = hw_start + tl.arange(0, BLOCK_HW)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    sample_counter = n * channels4 * hw4 * 4  # (n * C * H * W) // 4
    quads = hw_start // 4 + tl.arange(0, BLOCK_HW // 4)
    counters = sample_counter + (c[:, None] * hw4 + quads[None, :])
    memory = sample_counter * 4 + (hw[:, None] * (channels4 * 4) + c[None, :])
    logical = c[:, None] * (hw4 * 4) + hw[None, :]
    return hw < hw4 * 4, memory, logical, counters


@triton.jit
def nhwc_feature_tile(hw4, channels4, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program's features of a channels_last sample, for the batch reductions.

    Grid (cdiv(H*W, BLOCK_HW), C // BLOCK_C, row chunks); the program loops over rows.
    Returns ``features`` (C*H*W), ``in_hw`` (BLOCK_HW,) masking the tile's pixels past
    H*W, ``in_row`` (BLOCK_HW, BLOCK_C) the tile's offsets within one row in memory
    (channels contiguous), ``logical`` (BLOCK_C, BLOCK_HW) the same features' offsets in
    logical (c, hw) order (parameters and partial rows), and the Philox counters of the
    logical (BLOCK_C, BLOCK_HW // 4) tile within one row (add ``row * C*H*W // 4``): as
    :func:`nhwc_tile`, without the sample.
    """
    hw_start = tl.program_id(0) * BLOCK_HW
    hw = hw_start + tl.arange(0, BLOCK_HW)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    quads = hw_start // 4 + tl.arange(0, BLOCK_HW // 4)
    hw_size = hw4 * 4
    in_row = hw[:, None] * (channels4 * 4) + c[None, :]
    logical = c[:, None] * hw_size + hw[None, :]
    counters = c[:, None] * hw4 + quads[None, :]
    return hw_size * channels4 * 4, hw < hw_size, in_row, logical, counters


@triton.jit
def reduction_rows(features, ROWS_PER_PROGRAM: tl.constexpr, CLASSES: tl.constexpr):
    """(chunk start, first row, shift) of a batch-reduction program.

    Grid axis 1 is (row chunk, class). CLASSES = 1 when rows are whole Philox counters
    (features % 4 == 0): the program takes every row of its chunk. Else CLASSES = 4: the
    rows of the chunk that are k (mod 4), whose elements all sit ``shift`` = (k * features)
    % 4 lanes after a counter boundary, so a tile shifted back by ``shift`` features is
    made of whole counters: one Philox call per 4 elements, as in aligned rows. Rows
    first, first + CLASSES, ... below chunk start + ROWS_PER_PROGRAM.
    """
    pid = tl.program_id(1).to(tl.int64)
    chunk_start = (pid // CLASSES) * ROWS_PER_PROGRAM
    k = pid % CLASSES  # no branch (one return type): with CLASSES = 1 all of it folds to 0
    first = chunk_start + (k - chunk_start % CLASSES + CLASSES) % CLASSES
    return chunk_start, first, (k * features) % 4


@triton.jit
def reduction_tile(
    features,
    hw,
    channels,
    ROWS_PER_PROGRAM: tl.constexpr,
    CLASSES: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    """The rows and the (BLOCK_F // 4, 4) feature tile of a contiguous batch-reduction
    program (grid: feature blocks, row chunks x CLASSES; rows as :func:`reduction_rows`).

    Returns (chunk start, first row, block start, feature, feature mask, offset in a row).
    The block starts ``shift`` features early, on a counter boundary, so its tile may
    begin before feature 0: the mask drops those lanes.
    """
    chunk_start, first_row, shift = reduction_rows(features, ROWS_PER_PROGRAM, CLASSES)
    lanes = tl.arange(0, 4)
    block_start = tl.program_id(0).to(tl.int64) * BLOCK_F - shift
    feature = block_start + (tl.arange(0, BLOCK_F // 4)[:, None] * 4 + lanes[None, :])
    if CLASSES == 1:
        feature_mask = feature < features
    else:  # the shifted tile starts up to 3 features before the block
        feature_mask = (feature >= 0) & (feature < features)
    in_row = feature_offset(feature, hw, channels, CHANNELS_LAST)
    return chunk_start, first_row, block_start, feature, feature_mask, in_row
