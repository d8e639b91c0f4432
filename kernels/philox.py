"""Philox4x32-10 and its float mappings, written out for Triton kernels.

The rounds are spelled out here (not ``tl.randint4x``) so the stream is the same on
every Triton version and so the 64-bit counter (``c1`` = high word) works: Triton's
``randint4x`` only fills ``c1`` for 64-bit offsets and its semantics have changed
between releases. The layout is :mod:`fastnoise.rng`'s: element ``i`` uses counter
``offset + i // 4`` and lane ``i % 4``.
"""

import triton
import triton.language as tl

# Kernels may only read globals that are tl.constexpr instances (not annotations).
_KEY_A = tl.constexpr(0x9E3779B9)
_KEY_B = tl.constexpr(0xBB67AE85)
_ROUND_A = tl.constexpr(0xD2511F53)
_ROUND_B = tl.constexpr(0xCD9E8D57)
_UINT32_TO_UNIFORM_SCALE = tl.constexpr(4.6566127342e-10)  # tl.rand's scale, ~2**-31
_MIN_UNIFORM_FOR_LOG = tl.constexpr(1.0e-7)  # Box-Muller clamps u1 before log
_TWO_PI = tl.constexpr(6.283185307179586)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 blocks (Salmon et al. 2011, as ``tl.philox_impl``)."""
    round_a = tl.full(c0.shape, _ROUND_A, tl.uint32)
    round_b = tl.full(c0.shape, _ROUND_B, tl.uint32)
    for _ in tl.static_range(10):
        prev_c0 = c0
        prev_c2 = c2
        c0 = tl.umulhi(round_b, prev_c2) ^ c1 ^ k0
        c2 = tl.umulhi(round_a, prev_c0) ^ c3 ^ k1
        c1 = round_b * prev_c2  # uint32: wraps modulo 2**32, the low word of the product
        c3 = round_a * prev_c0
        k0 = k0 + _KEY_A
        k1 = k1 + _KEY_B
    return c0, c1, c2, c3


@triton.jit
def random_words4(seed_lo, seed_hi, counter):
    """The four uint32 lanes of int64 Philox counters ``counter`` under key (seed_lo, seed_hi)."""
    c0 = (counter & 0xFFFFFFFF).to(tl.uint32)
    c1 = (counter >> 32).to(tl.uint32)
    zero = tl.full(c0.shape, 0, tl.uint32)  # builtins only: see fastnoise.kernels docs
    k0 = seed_lo.to(tl.uint32)
    k1 = seed_hi.to(tl.uint32)
    return philox4x32_10(c0, c1, zero, zero, k0, k1)


@triton.jit
def word_to_uniform(word):
    """uint32 -> float32 in [0, 1] exactly as ``tl.rand``: fold the sign bit, scale by ~2**-31."""
    signed = word.to(tl.int32, bitcast=True)
    folded = tl.where(signed < 0, ~signed, signed)
    return folded.to(tl.float32) * _UINT32_TO_UNIFORM_SCALE


@triton.jit
def box_muller(u1, u2):
    """A pair of N(0, 1) from a pair of uniforms, as ``tl.pair_uniform_to_normal``."""
    u1 = tl.maximum(u1, _MIN_UNIFORM_FOR_LOG)
    theta = _TWO_PI * u2
    radius = tl.sqrt(-2.0 * tl.log(u1))
    return radius * tl.cos(theta), radius * tl.sin(theta)


@triton.jit
def _pick_lane(lanes, v0, v1, v2, v3):
    """(COUNTERS, 4) tile whose column ``l`` is ``v_l``: the spec's lane order, no shuffles."""
    lanes = lanes[None, :]
    low = tl.where(lanes == 0, v0[:, None], v1[:, None])
    high = tl.where(lanes == 2, v2[:, None], v3[:, None])
    return tl.where(lanes < 2, low, high)


@triton.jit
def uniform_tile(seed_lo, seed_hi, counter, lanes):
    """U[0, 1] for a (COUNTERS, 4) tile: one Philox call per row gives its four lanes."""
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, counter)
    return _pick_lane(
        lanes, word_to_uniform(w0), word_to_uniform(w1), word_to_uniform(w2), word_to_uniform(w3)
    )


@triton.jit
def normal_tile(seed_lo, seed_hi, counter, lanes):
    """N(0, 1) for a (COUNTERS, 4) tile: one Philox call and two Box-Muller pairs per row."""
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, counter)
    n0, n1 = box_muller(word_to_uniform(w0), word_to_uniform(w1))
    n2, n3 = box_muller(word_to_uniform(w2), word_to_uniform(w3))
    return _pick_lane(lanes, n0, n1, n2, n3)


@triton.jit
def normal_at(seed_lo, seed_hi, offset, index):
    """N(0, 1) of arbitrary int64 element indices (one Philox call per element).

    For tiles whose rows do not start on a counter boundary; ``normal_tile`` is 4x cheaper.
    """
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, offset + index // 4)
    lane = index % 4
    first_pair = lane < 2
    u1 = word_to_uniform(tl.where(first_pair, w0, w2))
    u2 = word_to_uniform(tl.where(first_pair, w1, w3))
    cos_part, sin_part = box_muller(u1, u2)
    return tl.where(lane % 2 == 0, cos_part, sin_part)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "offset"])
def random_words_kernel(
    out_ptr,
    numel,
    seed_lo: tl.uint32,
    seed_hi: tl.uint32,
    offset: tl.int64,
    BLOCK: tl.constexpr,
):
    """The raw uint32 words of elements 0 .. numel-1 (as int64): checks the spec bit for bit."""
    pid = tl.program_id(0).to(tl.int64)
    counters = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)
    index = counters[:, None] * 4 + lanes[None, :]
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, offset + counters)
    words = _pick_lane(lanes, w0, w1, w2, w3)
    tl.store(out_ptr + index, words.to(tl.int64), mask=index < numel)


@triton.jit
def normal_rows(seed_lo, seed_hi, counter):
    """N(0, 1) of a (ROWS, COUNTERS) tile of counters as (ROWS, 4 * COUNTERS): lane ``l`` of
    counter ``j`` at column ``4j + l``, the spec's order (for tiles whose rows are logical)."""
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, counter)
    n0, n1 = box_muller(word_to_uniform(w0), word_to_uniform(w1))
    n2, n3 = box_muller(word_to_uniform(w2), word_to_uniform(w3))
    # join stacks on a new last axis: [..., j, i] = (n0, n2)[j] if i == 0 else (n1, n3)[j],
    # so row-major position 2j + i holds lane 2j + i.
    z = tl.join(tl.join(n0, n2), tl.join(n1, n3))
    return tl.reshape(z, (counter.shape[0], counter.shape[1] * 4))


@triton.jit
def uniform_rows(seed_lo, seed_hi, counter):
    """U[0, 1] of a (ROWS, COUNTERS) tile of counters as (ROWS, 4 * COUNTERS), as normal_rows."""
    w0, w1, w2, w3 = random_words4(seed_lo, seed_hi, counter)
    u = tl.join(  # lane order as in normal_rows
        tl.join(word_to_uniform(w0), word_to_uniform(w2)),
        tl.join(word_to_uniform(w1), word_to_uniform(w3)),
    )
    return tl.reshape(u, (counter.shape[0], counter.shape[1] * 4))


@triton.jit
def philox_key(seed_lo, seed_hi, offset, rng_state_ptr, RNG_IN_MEMORY: tl.constexpr):
    """The kernel's Philox key words and counter offset: its scalar arguments, or, with
    RNG_IN_MEMORY, the int64 ``[seed, offset]`` at ``rng_state_ptr`` (a device tensor, so a
    torch.compile'd or CUDA-graph-captured launch takes a seed drawn on the device)."""
    if RNG_IN_MEMORY:
        seed = tl.load(rng_state_ptr)
        seed_lo = (seed & 0xFFFFFFFF).to(tl.uint32)  # as launch.split_seed
        seed_hi = (seed >> 32).to(tl.uint32)
        offset = tl.load(rng_state_ptr + 1)
    return seed_lo, seed_hi, offset
