"""Logical-to-physical element offsets, so kernels read channels_last tensors in place.

Noise element ``i`` is the row-major logical index of an (N, C, H, W) tensor, whatever
its memory format; a channels_last tensor stores logical (n, c, h, w) at
``n*C*H*W + (h*W + w)*C + c``.
"""

import triton
import triton.language as tl


@triton.jit
def physical_offset(index, features, hw, channels, CHANNELS_LAST: tl.constexpr):
    """Memory offset of logical int64 ``index`` (``features = C*H*W``, ``hw = H*W``)."""
    if CHANNELS_LAST:
        n = index // features
        f = index - n * features
        c = f // hw
        return n * features + (f - c * hw) * channels + c
    else:
        return index


@triton.jit
def feature_offset(feature, hw, channels, CHANNELS_LAST: tl.constexpr):
    """Offset of feature ``f = c*H*W + h*W + w`` within one sample (the row start excluded)."""
    if CHANNELS_LAST:
        c = feature // hw
        return (feature - c * hw) * channels + c
    else:
        return feature
