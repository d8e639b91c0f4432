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
