"""Host-side launch choices shared by every fastnoise Triton kernel: one place for
block sizes, grids and the interpreter switch."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton.language as tl

# Elementwise kernels: 1024 elements (256 Philox counters) per program, 4 warps.
GPU_BLOCK = 1024
GPU_NUM_WARPS = 4
# channels_last tiles (noise kernels): at most 64 channels (256 bytes fp32) per pixel row.
NHWC_MAX_BLOCK_C = 64
# Reductions over the batch: up to 1024 features per program, about 4 programs per SM.
GPU_BLOCK_F = 1024
MIN_BLOCK_F = 16
ELEMENTS_PER_THREAD = 4  # one 128-bit fp32 access per thread at least
PROGRAMS_PER_SM = 4
MIN_ROWS_PER_PROGRAM = 8  # keeps the fp32 partial sums at most 1/8 of the activation
# The interpreter runs each program as numpy code: few, large programs are fastest.
INTERPRETER_MAX_BLOCK = 1 << 16
# The kernels index within a sample in int32 up to features + BLOCK - 1 (see indexing.py).
MAX_BLOCK = max(GPU_BLOCK, GPU_BLOCK_F, INTERPRETER_MAX_BLOCK)
MAX_FEATURES = 2**31 - MAX_BLOCK

_COMPUTE_DTYPES = {torch.float64: tl.float64}


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for a >= 0, b > 0: ``triton.cdiv`` without its wrapper. Triton 3.8 makes
    that a ConstexprFunction, whose call from Python costs microseconds, and a backward's
    grid takes nine such calls."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The least power of 2 >= n (n >= 1), as ``triton.next_power_of_2``, in bit operations
    that also take symbolic sizes (a torch.compile'd batch)."""
    n -= 1
    for shift in (1, 2, 4, 8, 16, 32):
        n |= n >> shift
    return n + 1


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """float32 math for every activation dtype, float64 for float64 (so gradcheck works)."""
    return _COMPUTE_DTYPES.get(dtype, tl.float32)


def elementwise_block(numel: int) -> int:
    if interpreting():
        return max(16, min(INTERPRETER_MAX_BLOCK, next_power_of_2(numel)))
    return GPU_BLOCK


def num_warps() -> int:
    return GPU_NUM_WARPS


@functools.lru_cache(maxsize=8)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


class ReductionGrid(NamedTuple):
    block_f: int
    feature_blocks: int
    chunks: int
    rows_per_chunk: int
    classes: int  # rows per chunk split by row % classes (see indexing.reduction_rows)
    num_warps: int

    @property
    def grid(self) -> tuple[int, int]:
        return self.feature_blocks, self.partial_rows

    @property
    def partial_rows(self) -> int:
        """Rows of the partial-sum buffer: one per program along the rows."""
        return self.chunks * self.classes


def reduction_grid(rows: int, features: int, device: torch.device) -> ReductionGrid:
    """Block, grid and rows of the batch reductions of the backward.

    Enough programs to fill the GPU, but each one loops over several rows so the partial
    buffer (partial rows x features, fp32) stays much smaller than the activation. Rows
    that do not start on a Philox counter (features % 4 != 0) go in 4 classes, each read
    through a tile shifted back by up to 3 features: the span to cover is features + 3.
    """
    classes = 1 if features % 4 == 0 else 4
    span = features + (classes > 1) * 3
    if interpreting():
        block_f = max(MIN_BLOCK_F, min(INTERPRETER_MAX_BLOCK, next_power_of_2(span)))
        return ReductionGrid(block_f, cdiv(span, block_f), 1, rows, classes, GPU_NUM_WARPS)
    # Below 1024 features a block of next_power_of_2(span) covers the row: no Philox work
    # for masked-off features. Row chunking is unchanged (one feature block either way), so
    # the partial sums, and the result, are bit-identical to BLOCK_F = 1024.
    block_f = max(MIN_BLOCK_F, min(GPU_BLOCK_F, next_power_of_2(span)))
    warps = max(1, min(GPU_NUM_WARPS, block_f // (32 * ELEMENTS_PER_THREAD)))
    feature_blocks = cdiv(span, block_f)
    # Chunked as rows // classes rows of one class, each program then loops over as many.
    chunks, per_class = row_chunks(cdiv(rows, classes), feature_blocks * classes, device)
    rows_per_chunk = per_class * classes
    return ReductionGrid(
        block_f, feature_blocks, cdiv(rows, rows_per_chunk), rows_per_chunk, classes, warps
    )


def row_chunks(rows: int, feature_programs: int, device: torch.device) -> tuple[int, int]:
    """(row chunks, rows per chunk) of a batch reduction whose features take
    ``feature_programs`` programs: enough programs to fill the GPU, at least
    MIN_ROWS_PER_PROGRAM rows each. One chunk of every row under the interpreter."""
    if interpreting():
        return 1, rows
    target = PROGRAMS_PER_SM * _sm_count(device.index or 0)
    chunks = max(
        1,
        min(rows, cdiv(target, feature_programs), cdiv(rows, MIN_ROWS_PER_PROGRAM)),
    )
    # A power of two: rows per program is a kernel constant, so few variants get compiled.
    rows_per_chunk = next_power_of_2(cdiv(rows, chunks))
    return cdiv(rows, rows_per_chunk), rows_per_chunk


def split_seed(seed: int) -> tuple[int, int]:
    """The Philox key words (k0, k1) of a 64-bit seed."""
    return seed & 0xFFFFFFFF, seed >> 32
