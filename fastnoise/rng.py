"""The one noise specification every fastnoise backend reproduces.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011),
with the rounds, key schedule, integer-to-float mapping and Box-Muller transform of
Triton's ``triton/language/random.py`` (``randint4x``, ``rand4x``, ``randn4x``).

Layout (shared by the Triton, C++, CUDA and reference backends):

* the key is the 64-bit ``seed``: ``k0 = seed & 0xffffffff``, ``k1 = seed >> 32``;
* element ``i`` (row-major logical index, whatever the memory format) of a call with
  ``offset`` uses Philox counter ``c = offset + i // 4`` and lane ``i % 4``;
  ``c0 = c & 0xffffffff``, ``c1 = c >> 32``, ``c2 = c3 = 0``. For ``c < 2**32`` this is
  exactly ``tl.randint4x(seed, c)``; the high word lets offsets pass 2**32 counters;
* ``offset`` counts Philox counters (blocks of four elements), so a call that draws
  ``n`` values consumes ``ceil(n / 4)`` counters;
* lanes map to U[0,1) as ``tl.rand`` does (bitcast to int32, fold negatives, times
  4.6566127342e-10) and to N(0,1) as ``tl.randn4x`` does: lanes (0, 1) and (2, 3) are
  Box-Muller pairs, lane 0 and 2 take the cosine, 1 and 3 the sine.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "PHILOX_KEY_A",
    "PHILOX_KEY_B",
    "PHILOX_ROUND_A",
    "PHILOX_ROUND_B",
    "SEED_LIMIT",
    "UINT32_TO_UNIFORM_SCALE",
    "philox4x32",
    "random_words",
    "words_to_uniform",
    "uniform_to_normal",
    "rand",
    "randn",
    "draw_seed",
    "counters_for",
]

PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_ROUNDS = 10
UINT32_TO_UNIFORM_SCALE = 4.6566127342e-10  # tl.rand: ~2**-31
MIN_UNIFORM_FOR_LOG = 1.0e-7  # tl.randn clamps u1 before log
TWO_PI = 6.283185307179586

_MASK32 = 0xFFFFFFFF
SEED_LIMIT = 2**63  # seeds are non-negative int64 so every backend can take them


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * b`` for a 32-bit constant ``a``.

    ``b`` holds uint32 values in int64. The full product needs 64 unsigned bits, which
    int64 cannot hold, so ``b`` is split into 16-bit halves (each partial product fits).
    """
    b_hi = b >> 16
    b_lo = b & 0xFFFF
    p_hi = a * b_hi
    p_lo = a * b_lo
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = ((p_hi << 16) + p_lo) & _MASK32
    return hi, lo


def philox4x32(
    c0: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    c3: torch.Tensor,
    k0: int,
    k1: int,
    rounds: int = PHILOX_ROUNDS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 on int64 tensors holding uint32 values, as ``tl.philox_impl``."""
    k0 &= _MASK32
    k1 &= _MASK32
    for _ in range(rounds):
        hi_b, lo_b = _mulhilo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & _MASK32
        k1 = (k1 + PHILOX_KEY_B) & _MASK32
    return c0, c1, c2, c3


def _check_seed_offset(seed: int, offset: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be a Python int, got {type(seed).__name__}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be a Python int, got {type(offset).__name__}")
    if not 0 <= offset < SEED_LIMIT:  # int64 on every backend
        raise ValueError(f"offset must be in [0, 2**63), got {offset}")


def counters_for(numel: int) -> int:
    """Philox counters consumed by a call that draws ``numel`` values."""
    return (numel + 3) // 4


def random_words(
    numel: int, seed: int, offset: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The uint32 words (as int64) of elements ``0 .. numel-1``: ``tl.randint4x`` lanes."""
    _check_seed_offset(seed, offset)
    device = torch.device(device) if device is not None else torch.device("cpu")
    n_counters = counters_for(numel)
    counter = torch.arange(n_counters, dtype=torch.int64, device=device) + offset
    c0 = counter & _MASK32
    c1 = counter >> 32
    zero = torch.zeros_like(c0)
    lanes = philox4x32(c0, c1, zero, zero, seed & _MASK32, seed >> 32)
    return torch.stack(lanes, dim=1).reshape(-1)[:numel]


def words_to_uniform(words: torch.Tensor) -> torch.Tensor:
    """uint32 words (int64) to float32 in [0, 1] exactly as ``tl.rand``.

    Like Triton, the top word maps to 1.0 after float32 rounding (probability ~2**-25).
    """
    signed = torch.where(words >= 2**31, words - 2**32, words)
    folded = torch.where(signed < 0, -signed - 1, signed)
    return folded.to(torch.float32) * torch.tensor(UINT32_TO_UNIFORM_SCALE, dtype=torch.float32)


def uniform_to_normal(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-Muller in float32, as ``tl.pair_uniform_to_normal``."""
    u1 = torch.clamp_min(u1, MIN_UNIFORM_FOR_LOG)
    theta = torch.tensor(TWO_PI, dtype=torch.float32) * u2
    radius = torch.sqrt(-2.0 * torch.log(u1))
    return radius * torch.cos(theta), radius * torch.sin(theta)


def _normal_from_words(words: torch.Tensor, numel: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(words, (0, -words.numel() % 4))
    u = words_to_uniform(padded).reshape(-1, 4)
    n0, n1 = uniform_to_normal(u[:, 0], u[:, 1])
    n2, n3 = uniform_to_normal(u[:, 2], u[:, 3])
    return torch.stack((n0, n1, n2, n3), dim=1).reshape(-1)[:numel]


def _numel(shape: torch.Size | tuple[int, ...] | list[int]) -> int:
    return math.prod(shape)


def rand(
    shape: torch.Size | tuple[int, ...] | list[int],
    seed: int,
    offset: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """U[0,1) noise of ``shape`` from (seed, offset): the reference for every backend."""
    numel = _numel(shape)
    u = words_to_uniform(random_words(numel, seed, offset, device))
    return u.reshape(shape).to(dtype)


def randn(
    shape: torch.Size | tuple[int, ...] | list[int],
    seed: int,
    offset: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0,1) noise of ``shape`` from (seed, offset): the reference for every backend."""
    numel = _numel(shape)
    # Whole counters: a trailing Box-Muller pair needs its partner lane's real word.
    words = random_words(4 * counters_for(numel), seed, offset, device)
    z = _normal_from_words(words, numel)
    return z.reshape(shape).to(dtype)


def draw_seed(seed: int | None = None, generator: torch.Generator | None = None) -> int:
    """A fresh 63-bit seed for one stochastic call, unless the caller fixed one.

    Drawn from torch's default CPU generator, so ``torch.manual_seed(s)`` makes a whole
    run reproducible. The draw touches only the CPU generator: no device sync.
    """
    if seed is not None:
        _check_seed_offset(seed, 0)
        return seed
    return int(torch.randint(0, SEED_LIMIT - 1, (), generator=generator, dtype=torch.int64))
