"""Randomized smoothing (fastnoise.certify.Smooth) against the one case with a closed form.

A linear two-class model f(x) = [w.x + b > 0] has p_A = Phi(d / sigma) at signed distance d
from its boundary, so Cohen et al.'s radius sigma * Phi^-1(p_A) is exactly |d|: a sound
certificate is at most |d| (but for probability alpha), a tight one approaches |d| as n
grows, and a point on the boundary (p_A = 1/2) must abstain. The images are 16 pixels, so
10^5 samples cost little.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from scipy.stats import binomtest, norm
from torch import nn

from fastnoise.certify import (
    ABSTAIN,
    Smooth,
    certified_radius,
    lower_confidence_bound,
    max_radius,
)

SIGMA = 0.25
SHAPE = (1, 4, 4)


class LinearTwoClass(nn.Module):
    """Logits (0, w.x + b): class 1 exactly when w.x + b > 0."""

    def __init__(self, w: torch.Tensor, b: float = 0.0):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


@pytest.fixture
def linear():
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    return LinearTwoClass(w)


def at_distance(model: LinearTwoClass, d: torch.Tensor) -> torch.Tensor:
    """Images at signed L2 distances ``d`` from the boundary (b = 0: through the origin)."""
    unit = model.w / model.w.norm()
    return (d[:, None] * unit).view(-1, *SHAPE)


def test_certificates_are_sound_beyond_alpha(linear):
    """200 images at distances up to 2 sigma, one batched call: certificates larger than
    the true distance happen with probability <= alpha each, so their count must not be
    significantly above alpha * 200 (binomial test at level 1e-4)."""
    alpha = 0.05  # large, so that a wrong bound would show up on 200 images
    d = torch.linspace(-2 * SIGMA, 2 * SIGMA, 200)
    predictions, radii = Smooth(linear, 2, SIGMA).certify(
        at_distance(linear, d), n0=50, n=2000, alpha=alpha, batch_size=4096, seed=1
    )
    truth = (d > 0).long()
    certified = predictions != ABSTAIN
    wrong = (certified & (predictions != truth)) | (certified & (radii > d.abs().double()))
    test = binomtest(int(wrong.sum()), len(d), alpha, alternative="greater")
    assert test.pvalue > 1e-4, f"{int(wrong.sum())} unsound certificates of {len(d)}"
    assert certified.float().mean() > 0.8  # most of them certify at all


def test_certificates_are_tight_for_large_n(linear):
    """n = 10^5: the radius falls short of the distance only by the Clopper-Pearson margin
    (about 3.1 std of p_A-hat at alpha = 0.001) plus sampling error (allowed: 4 std)."""
    n, alpha = 100_000, 0.001
    d = torch.tensor([1.2816 * SIGMA, -0.8 * SIGMA])  # p_A = 0.90 and 0.79
    predictions, radii = Smooth(linear, 2, SIGMA).certify(
        at_distance(linear, d), n0=100, n=n, alpha=alpha, batch_size=8192, seed=2
    )
    assert predictions.tolist() == [1, 0]
    for radius, distance in zip(radii.tolist(), d.abs().tolist(), strict=True):
        p_a = norm.cdf(distance / SIGMA)
        std = (p_a * (1 - p_a) / n) ** 0.5
        loosest = SIGMA * norm.ppf(p_a - (norm.ppf(1 - alpha) + 4) * std)
        assert loosest < radius <= distance
        assert radius > 0.96 * distance


def test_a_point_on_the_boundary_abstains(linear):
    x = at_distance(linear, torch.zeros(1))[0]
    smooth = Smooth(linear, 2, SIGMA)
    assert smooth.certify(x, 100, 10_000, 0.001, 4096, seed=3) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 10_000, 0.001, 4096, seed=4) == ABSTAIN


def test_predict_returns_the_class_away_from_the_boundary(linear):
    x = at_distance(linear, torch.tensor([0.5, -0.5]))
    assert Smooth(linear, 2, SIGMA).predict(x, 1000, 0.001, 512, seed=5).tolist() == [1, 0]


def test_a_seeded_run_is_reproducible_and_seeds_differ(linear):
    x = at_distance(linear, torch.linspace(-0.2, 0.2, 7))
    smooth = Smooth(linear, 2, SIGMA)
    first = smooth.certify(x, 20, 500, 0.01, 256, seed=7)
    again = smooth.certify(x, 20, 500, 0.01, 256, seed=7)
    other = smooth.certify(x, 20, 500, 0.01, 256, seed=8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    torch.manual_seed(3)  # seed=None draws from torch's generator
    unseeded = smooth.certify(x, 20, 500, 0.01, 256)
    torch.manual_seed(3)
    assert torch.equal(unseeded[1], smooth.certify(x, 20, 500, 0.01, 256)[1])


class Recorder(nn.Module):
    """Keeps every batch it sees: the noise each pass drew."""

    def __init__(self):
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def forward(self, x):
        self.batches.append(x.clone())
        return torch.zeros(len(x), 2)


def test_images_share_a_pass_and_no_draw_is_reused():
    """3 images x 4 samples in batches of 5: passes of 5, 5, 2 rows, each row the image
    it belongs to plus noise of std sigma, and no two rows with the same noise."""
    model = Recorder()
    images = torch.rand(3, *SHAPE)
    Smooth(model, 2, SIGMA).predict(images, n=4, alpha=0.01, batch_size=5, seed=11)
    assert [len(b) for b in model.batches] == [5, 5, 2]
    rows = torch.cat(model.batches)
    noise = rows - images.repeat_interleave(4, 0)
    assert 0.2 < noise.std() < 0.3
    flat = noise.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(12)).min() > 1e-3  # all rows differ


def test_batch_size_does_not_change_the_counts_when_rows_fill_whole_counters(linear):
    """With 16 pixels a row is 4 Philox counters, so the noise of sample k of image j is
    the same whatever the batching: so are the certificates."""
    x = at_distance(linear, torch.linspace(-0.1, 0.1, 5))
    smooth = Smooth(linear, 2, SIGMA)
    a = smooth.certify(x, 30, 300, 0.01, 64, seed=9)
    b = smooth.certify(x, 30, 300, 0.01, 1000, seed=9)
    assert torch.equal(a[1], b[1])


def load_reference():
    """benchmarks/certify_reference.py: the eager baseline the speed-ups are quoted against."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "certify_reference.py"
    spec = importlib.util.spec_from_file_location("fastnoise_certify_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_certify


def test_smooth_agrees_with_the_eager_reference_algorithm(linear):
    """The same images through fastnoise's batched Smooth and the benchmarks' eager
    reference (one image at a time, repeat + randn_like): same classes, and radii within
    sampling error (std of a radius here ~0.003 at n = 20000; allowed 0.03)."""
    reference_certify = load_reference()
    d = torch.tensor([0.3, -0.2, 0.1])
    x = at_distance(linear, d)
    predictions, radii = Smooth(linear, 2, SIGMA).certify(x, 100, 20_000, 0.001, 4096, seed=0)
    torch.manual_seed(0)
    for image, predict, radius in zip(x, predictions.tolist(), radii.tolist(), strict=True):
        expected = reference_certify(linear, image, 100, 20_000, 0.001, 4096, SIGMA, 2)
        assert predict == expected[0]
        assert radius == pytest.approx(expected[1], abs=0.03)


def test_statistics_match_scipy_and_the_paper():
    from scipy.stats import beta

    # one-sided Clopper-Pearson: the alpha quantile of Beta(k, n - k + 1)
    assert lower_confidence_bound(990, 1000, 0.001) == pytest.approx(beta.ppf(0.001, 990, 11))
    assert certified_radius(norm.cdf(2.0), 0.5) == pytest.approx(1.0)
    assert max_radius(100, 0.001, 1.0) == pytest.approx(norm.ppf(0.001 ** (1 / 100)))


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda s, x: s.certify(x, 200, 100, 0.001, 10), r"n0 \(200\) must be <= n \(100\)"),
        (lambda s, x: s.certify(x, 10, 100, 0.0, 10), "alpha must be in"),
        (lambda s, x: s.certify(x, 10, 100, 1.0, 10), "alpha must be in"),
        (lambda s, x: s.predict(x, 100, 1.5, 10), "alpha must be in"),
        (lambda s, x: s.predict(x, 0, 0.01, 10), "n must be >= 1"),
        (lambda s, x: s.certify(x, 10, 100, 0.01, 0), "batch_size must be >= 1"),
        (lambda s, x: s.certify(x[0, 0], 10, 100, 0.01, 10), r"x must be one image"),
    ],
)
def test_bad_arguments_are_named(linear, call, needle):
    with pytest.raises(ValueError, match=needle):
        call(Smooth(linear, 2, SIGMA), torch.rand(2, *SHAPE))


@pytest.mark.parametrize("sigma", [0.0, -0.25, float("nan"), float("inf")])
def test_sigma_must_be_positive(linear, sigma):
    with pytest.raises(ValueError, match="sigma must be > 0"):
        Smooth(linear, 2, sigma)


def test_a_model_returning_probabilities_is_warned_about(linear):
    probabilities = nn.Sequential(linear, nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="probabilities .* not logits"):
        Smooth(probabilities, 2, SIGMA).predict(torch.rand(1, *SHAPE), 10, 0.01, 10, seed=0)


def test_logits_are_not_warned_about(linear, recwarn):
    Smooth(linear, 2, SIGMA).predict(torch.rand(1, *SHAPE) + 1, 10, 0.01, 10, seed=0)
    assert not [w for w in recwarn if "probabilities" in str(w.message)]


def test_a_model_with_the_wrong_number_of_classes_is_refused(linear):
    with pytest.raises(ValueError, match=r"\(batch, num_classes\) = \(10, 3\)"):
        Smooth(linear, 3, SIGMA).predict(torch.rand(1, *SHAPE), 10, 0.01, 10, seed=0)


def test_amp_bf16_certifies_the_same_classes(linear):
    x = at_distance(linear, torch.tensor([0.5, -0.5]))
    predictions, _ = Smooth(linear, 2, SIGMA, amp="bf16").certify(x, 20, 200, 0.01, 512, seed=1)
    assert predictions.tolist() == [1, 0]
    with pytest.raises(ValueError, match="amp must be"):
        Smooth(linear, 2, SIGMA, amp="fp8")
