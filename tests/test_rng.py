"""The noise specification: Philox4x32-10 known answers, the counter layout, the float
mappings, statistics, and seed bookkeeping."""

import math

import pytest
import torch

from fastnoise import rng

# Random123's kat_vectors for philox4x32_10: (counter, key) -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    c = [torch.tensor([w], dtype=torch.int64) for w in counter]
    out = rng.philox4x32(*c, *key)
    assert tuple(int(t) for t in out) == expected


def test_seed_is_the_key_low_word_first():
    # seed = k1 << 32 | k0; element 0..3 of offset 0 are the lanes of counter 0.
    seed = (0x299F31D0 << 32) | 0xA4093822
    words = rng.random_words(4, seed)
    zero = torch.zeros(1, dtype=torch.int64)
    expected = rng.philox4x32(zero, zero, zero, zero, 0xA4093822, 0x299F31D0)
    assert words.tolist() == [int(t) for t in expected]


def test_offset_counts_philox_counters_of_four_elements():
    seed = 987654321
    whole = rng.random_words(40, seed, offset=0)
    assert torch.equal(rng.random_words(12, seed, offset=3), whole[12:24])
    # A partial last counter still draws the leading lanes of that counter.
    assert torch.equal(rng.random_words(7, seed, offset=0), whole[:7])


def test_high_counter_word_carries_offsets_past_2_to_32():
    seed = 5
    offset = 2**32 + 7
    words = rng.random_words(4, seed, offset=offset)
    c0 = torch.tensor([7], dtype=torch.int64)
    c1 = torch.tensor([1], dtype=torch.int64)
    zero = torch.zeros(1, dtype=torch.int64)
    expected = rng.philox4x32(c0, c1, zero, zero, seed, 0)
    assert words.tolist() == [int(t) for t in expected]
    # and differs from the truncated 32-bit counter a naive layout would use
    assert not torch.equal(words, rng.random_words(4, seed, offset=7))


def test_uniform_mapping_matches_triton_rand():
    # tl.rand: bitcast to int32, fold negatives (-x - 1), times 4.6566127342e-10 in float32.
    words = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789], dtype=torch.int64)
    u = rng.words_to_uniform(words)
    signed = [0, 1, 2**31 - 1, -(2**31), -1, 123456789]
    folded = [s if s >= 0 else -s - 1 for s in signed]
    scale = torch.tensor(rng.UINT32_TO_UNIFORM_SCALE, dtype=torch.float32)
    expected = torch.tensor(folded, dtype=torch.float64).float() * scale
    assert torch.equal(u, expected)
    assert u.dtype == torch.float32 and u.min() >= 0 and u.max() <= 1


def test_normals_are_box_muller_pairs_of_lanes():
    seed, n = 42, 64
    u = rng.rand((n,), seed).reshape(-1, 4)
    z = rng.randn((n,), seed).reshape(-1, 4)
    r01 = torch.sqrt(-2 * torch.log(u[:, 0].clamp_min(1e-7)))
    r23 = torch.sqrt(-2 * torch.log(u[:, 2].clamp_min(1e-7)))
    torch.testing.assert_close(z[:, 0], r01 * torch.cos(2 * math.pi * u[:, 1]))
    torch.testing.assert_close(z[:, 1], r01 * torch.sin(2 * math.pi * u[:, 1]))
    torch.testing.assert_close(z[:, 2], r23 * torch.cos(2 * math.pi * u[:, 3]))
    torch.testing.assert_close(z[:, 3], r23 * torch.sin(2 * math.pi * u[:, 3]))


def test_shape_dtype_and_determinism():
    a = rng.randn((3, 5, 7), seed=11, offset=2, dtype=torch.float16)
    b = rng.randn((3, 5, 7), seed=11, offset=2, dtype=torch.float16)
    assert a.shape == (3, 5, 7) and a.dtype == torch.float16
    assert torch.equal(a, b)
    assert not torch.equal(a, rng.randn((3, 5, 7), seed=12, offset=2, dtype=torch.float16))
    assert rng.randn((0, 4), seed=1).shape == (0, 4)


def test_normal_statistics_on_a_million_draws():
    scipy_stats = pytest.importorskip("scipy.stats")
    n = 1_000_000
    z = rng.randn((n,), seed=2024).double()
    # Bounds are ~5 standard errors: a correct generator fails them with probability ~1e-6.
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(((z**4).mean() - 3).item()) < 5 * math.sqrt(96 / n)
    assert scipy_stats.kstest(z.numpy(), "norm").pvalue > 1e-4
    # Each lane on its own is N(0, 1) too (a layout bug shows up as a skewed lane).
    lanes = z.reshape(-1, 4)
    for lane in range(4):
        assert scipy_stats.kstest(lanes[:, lane].numpy(), "norm").pvalue > 1e-4


def test_uniform_statistics_on_a_million_draws():
    scipy_stats = pytest.importorskip("scipy.stats")
    u = rng.rand((1_000_000,), seed=7).double()
    assert scipy_stats.kstest(u.numpy(), "uniform").pvalue > 1e-4
    assert abs(u.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / 1e6)


def test_neighbouring_seeds_and_offsets_are_uncorrelated():
    a = rng.randn((200_000,), seed=1000)
    b = rng.randn((200_000,), seed=1001)
    c = rng.randn((200_000,), seed=1000, offset=50_000)
    for other in (b, c):
        corr = torch.corrcoef(torch.stack([a, other]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(200_000)


def test_draw_seed_follows_torch_manual_seed():
    torch.manual_seed(123)
    first = [rng.draw_seed() for _ in range(3)]
    torch.manual_seed(123)
    assert [rng.draw_seed() for _ in range(3)] == first
    assert len(set(first)) == 3
    assert all(0 <= s < 2**63 for s in first)
    assert rng.draw_seed(77) == 77


@pytest.mark.parametrize(
    "seed,offset,error",
    [(-1, 0, ValueError), (2**63, 0, ValueError), (1.5, 0, TypeError), (1, -3, ValueError)],
)
def test_bad_seed_or_offset_is_rejected_by_name(seed, offset, error):
    with pytest.raises(error, match="seed|offset"):
        rng.randn((4,), seed=seed, offset=offset)
