"""SPSA and the pixel attack on randomized models: EOT averaging, common random numbers
for the +/- evaluations of each SPSA direction, and early stops that need the hit to
hold over several independent noise draws (issue 10, item 3)."""

from __future__ import annotations

import math

import pytest
import torch
from test_attacks_support import NoisyMLP
from torch import nn

from fastnoise.attacks import SPSA, Attack, FewPixel, _losses, spsa_gradient
from fastnoise.functional import inject_noise

# -- models whose noise is known --------------------------------------------------------


class Recorder(nn.Module):
    """Margin ``w . x + sigma * z`` for class 1 against 0, with ``z`` one fastnoise draw
    per row per forward (inject_noise on zeros, seed from torch's default generator).
    Logs every forward's input and noise."""

    def __init__(self, features: int, sigma: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, features))
        self.sigma = sigma
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        z = inject_noise(torch.zeros(flat.shape[0], device=x.device), 1.0)
        self.calls.append((flat.clone(), z.clone()))
        score = flat @ self.w + self.sigma * z
        return torch.stack([torch.zeros_like(score), score], dim=1)


class ScaledNoise(nn.Module):
    """1-D input, margin ``w x (1 + sigma z)``, ``z ~ N(0, 1)`` per row per forward from
    torch's default generator. Common noise cannot cancel it: with one input dimension
    the SPSA direction is +-1 and the estimate is exactly ``w (1 + sigma mean(z))``, so
    its variance is ``(w sigma)**2 / eot``."""

    def __init__(self, w: float = 2.0, sigma: float = 0.5):
        super().__init__()
        self.w, self.sigma = w, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(x.shape[0], device=x.device)
        score = self.w * x[:, 0] * (1 + self.sigma * z)
        return torch.stack([torch.zeros_like(score), score], dim=1)


class Lucky(nn.Module):
    """Ignores its input; each row is misclassified (class 1 for label 0) with probability
    ``p`` on every draw, independently: only lucky draws fool it. Logs its batch sizes;
    :attr:`rows` leaves out passes of two rows (Attack.separate_passes's probe), which the
    tests' batches never make."""

    def __init__(self, p: float):
        super().__init__()
        # P(shift + z > 0) = p for z ~ N(0, 1).
        self.shift = math.sqrt(2) * torch.erfinv(torch.tensor(2 * p - 1)).item()
        self.bias = nn.Parameter(torch.zeros(()))
        self.sizes: list[int] = []

    @property
    def rows(self) -> int:
        return sum(size for size in self.sizes if size != 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        z = inject_noise(torch.zeros(x.shape[0], device=x.device), 1.0)
        score = self.shift + z + self.bias
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _objective(model: nn.Module, y: torch.Tensor):
    def margin(points: torch.Tensor) -> torch.Tensor:  # (B, M, *sample) -> (B, M)
        b, m = points.shape[:2]
        return _losses.margin(model(points.flatten(0, 1)), y.repeat_interleave(m)).view(b, m)

    return margin


def _spread(objective, x: torch.Tensor, repeats: int = 30, **kw) -> float:
    """Mean per-coordinate variance of repeated SPSA estimates at x."""
    estimates = [spsa_gradient(objective, x, **kw) for _ in range(repeats)]
    return torch.stack(estimates).var(0).mean().item()


# -- (a) common random numbers ------------------------------------------------------------


def test_plus_and_minus_evaluations_see_identical_noise_and_pairs_fresh_noise():
    torch.manual_seed(0)
    model = Recorder(6)
    x, y = torch.rand(2, 6), torch.zeros(2, dtype=torch.long)
    eot, chunk, delta = 3, 2, 0.01
    spsa_gradient(_objective(model, y), x, samples=4, delta=delta, chunk=chunk, eot=eot)
    calls = model.calls
    assert len(calls) == 4  # 2 chunks, each a + pass and a - pass of B * chunk * eot rows
    noises = []
    for (plus, z_plus), (minus, z_minus) in zip(calls[0::2], calls[1::2], strict=True):
        assert plus.shape[0] == 2 * chunk * eot
        # The two passes evaluate x + delta v and x - delta v ...
        torch.testing.assert_close((plus - minus).abs(), torch.full_like(plus, 2 * delta))
        # ... under exactly the same noise, row by row (common random numbers).
        assert torch.equal(z_plus, z_minus)
        # The EOT copies of one direction (rows j * eot + l) get different draws.
        copies = z_plus.view(2 * chunk, eot)
        assert (copies[:, 1:] != copies[:, :1]).all()
        noises.append(z_plus)
    # The next pair got fresh noise: the generator moved on.
    assert not torch.equal(noises[0], noises[1])
    # And nothing was rewound: noise drawn after the estimate is new.
    after = inject_noise(torch.zeros(noises[0].shape), 1.0)
    assert all(not torch.equal(after, seen) for seen in noises)


def test_common_noise_cancels_additive_noise_exactly():
    """Additive noise shared by the + and - points drops out of their difference: the
    estimate on the noisy model equals the one on the same model without noise."""
    x, y = torch.rand(3, 6), torch.zeros(3, dtype=torch.long)
    noisy, clean = Recorder(6, sigma=5.0), Recorder(6, sigma=0.0)
    estimates = []
    for model in (noisy, clean):
        torch.manual_seed(1)
        estimates.append(spsa_gradient(_objective(model, y), x, 64, 0.01, eot=2))
    torch.testing.assert_close(estimates[0], estimates[1], atol=1e-3, rtol=0)
    torch.manual_seed(1)
    independent = spsa_gradient(_objective(noisy, y), x, 64, 0.01, eot=2, common_noise=False)
    assert (independent - estimates[1]).abs().max() > 10  # noise / (2 delta) swamps it


def test_common_noise_lowers_the_variance_of_the_estimate_on_a_fastnoise_model():
    torch.manual_seed(2)
    model = NoisyMLP(8, 16, 3, sigma=0.3).eval()  # fastnoise inject_noise on two layers
    x, y = torch.rand(2, 8), torch.tensor([0, 1])
    kw = dict(samples=32, delta=0.01, eot=4)
    common = _spread(_objective(model, y), x, common_noise=True, **kw)
    independent = _spread(_objective(model, y), x, common_noise=False, **kw)
    assert independent > 100 * common  # measured: about 900x


# -- (b) EOT averaging ---------------------------------------------------------------------


def test_eot_shrinks_the_variance_left_by_common_noise():
    torch.manual_seed(3)
    objective = _objective(ScaledNoise(w=2.0, sigma=0.5), torch.zeros(4, dtype=torch.long))
    x = torch.full((4, 1), 0.5)
    kw = dict(samples=1, delta=0.01, repeats=200)
    one = _spread(objective, x, eot=1, **kw)
    sixteen = _spread(objective, x, eot=16, **kw)
    assert one == pytest.approx(1.0, rel=0.3)  # (w sigma)**2
    assert one > 8 * sixteen  # 16x in expectation


def test_eot_shrinks_the_variance_of_independent_noise():
    torch.manual_seed(4)
    model = NoisyMLP(8, 16, 3, sigma=0.3).eval()
    x, y = torch.rand(2, 8), torch.tensor([0, 1])
    kw = dict(samples=32, delta=0.01, common_noise=False)
    one = _spread(_objective(model, y), x, eot=1, **kw)
    sixteen = _spread(_objective(model, y), x, eot=16, **kw)
    assert one > 6 * sixteen  # 16x in expectation: the copies are independent draws


def test_separate_passes_give_each_copy_its_own_draw():
    """Noise drawn once per call (shared by all rows, like PNI-W): one call per copy,
    each + / - pair of calls under one seed."""
    seen = []

    def shared_draw(points):  # (B, M, 1) -> (B, M); one scalar draw per call
        z = torch.randn(())
        seen.append(z)
        return points[..., 0] + z

    x = torch.rand(2, 1)
    spsa_gradient(shared_draw, x, samples=4, delta=0.01, eot=3, separate_passes=True)
    assert len(seen) == 6  # one chunk, 3 copies, a + and a - call each
    plus, minus = torch.stack(seen[0::2]), torch.stack(seen[1::2])
    assert torch.equal(plus, minus)
    assert plus.unique().numel() == 3


# -- (c) early stop needs the hit on stop_draws independent draws ----------------------------


def _spsa_rows(steps, batch, samples, eot, stop_draws):
    """Rows a run without any stop sends through the model."""
    return steps * (batch * stop_draws + 2 * batch * samples * eot)


def test_spsa_does_not_stop_on_one_lucky_draw():
    x, y = torch.rand(3, 5), torch.zeros(3, dtype=torch.long)
    kw = dict(eps=0.1, steps=6, samples=4, random_start=False)
    torch.manual_seed(5)
    model = Lucky(p=0.3)
    SPSA(model, eot=2, stop_draws=8, **kw)(x, y)
    assert model.rows == _spsa_rows(6, 3, 4, 2, 8)  # every image ran every step
    # One draw (the old rule) stops images on lucky draws: less work.
    torch.manual_seed(5)
    model = Lucky(p=0.3)
    SPSA(model, eot=2, stop_draws=1, **kw)(x, y)
    assert model.rows < _spsa_rows(6, 3, 4, 2, 1)
    # A real hit (every draw misclassifies) stops at the first check.
    model = Lucky(p=0.999999)
    SPSA(model, eot=2, stop_draws=8, **kw)(x, y)
    assert model.rows == 3 * 8


def test_pixel_attack_does_not_stop_on_one_lucky_draw():
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    kw = dict(pixels=1, population=8, iterations=4)
    torch.manual_seed(6)
    x_adv = FewPixel(Lucky(p=0.3), stop_draws=10, **kw)(x, y)
    torch.testing.assert_close(x_adv, x)  # no lucky candidate was accepted
    torch.manual_seed(6)
    x_adv = FewPixel(Lucky(p=0.3), stop_draws=1, **kw)(x, y)
    assert (x_adv != x).flatten(1).any(1).all()  # one draw: lucky candidates everywhere
    # A real hit is kept: one changed pixel, found before any generation ran.
    model = Lucky(p=0.999999)
    x_adv = FewPixel(model, stop_draws=10, **kw)(x, y)
    assert ((x_adv != x).flatten(1).sum(1) == 1).all()
    assert model.rows == 4 * 8 + 4 * 8 * 10  # initial population, then confirmation


def test_stop_draws_defaults_to_eot():
    model = Lucky(0.5)
    assert SPSA(model, eot=5).stop_draws == 5 and SPSA(model).stop_draws == 1
    assert FewPixel(model, eot=3).stop_draws == 3 and FewPixel(model).stop_draws == 1
    assert SPSA(model, eot=5, stop_draws=2).stop_draws == 2
    assert SPSA(model).common_noise is True


# -- (d) argument validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda m: SPSA(m, stop_draws=0), ValueError, "stop_draws"),
        (lambda m: SPSA(m, stop_draws=2.0), TypeError, "stop_draws"),
        (lambda m: SPSA(m, eot=0), ValueError, "eot"),
        (lambda m: SPSA(m, eot=True), TypeError, "eot"),
        (lambda m: SPSA(m, common_noise="yes"), TypeError, "common_noise"),
        (lambda m: FewPixel(m, stop_draws=0), ValueError, "stop_draws"),
        (lambda m: FewPixel(m, stop_draws="3"), TypeError, "stop_draws"),
        (lambda m: FewPixel(m, eot=0), ValueError, "eot"),
        (lambda m: spsa_gradient(torch.sum, torch.rand(1, 2), 4, 0.1, eot=0), ValueError, "eot"),
        (lambda m: spsa_gradient(torch.sum, torch.rand(1, 2), 0, 0.1), ValueError, "samples"),
    ],
)
def test_bad_arguments_name_the_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(Lucky(0.5))


# -- (e) reproducibility ---------------------------------------------------------------------


def test_spsa_with_eot_is_reproducible_under_manual_seed():
    model = NoisyMLP(16, 16, 3, sigma=0.3)
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(SPSA(model, eps=0.1, steps=3, samples=8, eot=2)(x, y))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_pixel_attack_with_eot_is_reproducible_under_manual_seed():
    x, y = torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)
    runs = []
    for _ in range(2):
        torch.manual_seed(9)
        attack = FewPixel(Lucky(0.3), pixels=1, population=8, iterations=3, eot=2)
        runs.append(attack(x, y))
    assert torch.equal(runs[0], runs[1])


# -- models that draw once per forward --------------------------------------------------------


@pytest.mark.skipif(
    not hasattr(Attack, "separate_passes"), reason="Attack.separate_passes not available"
)
def test_spsa_stop_check_on_a_shared_draw_model_uses_separate_draws():
    """A model whose rows share one draw per forward: the stop check's draws must be
    separate passes, or the k "independent" draws would be one draw repeated."""

    class SharedLucky(Lucky):
        def forward(self, x):
            self.sizes.append(x.shape[0])
            score = (self.shift + torch.randn(()) + self.bias).expand(x.shape[0])
            return torch.stack([torch.zeros_like(score), score], dim=1)

    x, y = torch.rand(3, 5), torch.zeros(3, dtype=torch.long)
    torch.manual_seed(10)
    model = SharedLucky(p=0.3)
    with pytest.warns(UserWarning, match="separate passes"):
        SPSA(model, eps=0.1, steps=6, samples=2, eot=2, stop_draws=8, random_start=False)(x, y)
    assert model.rows == _spsa_rows(6, 3, 2, 2, 8)  # no image stopped
    # Stop checks: 8 passes of the 3 images per step; gradients: a pass per copy and sign.
    assert model.sizes.count(3) == 6 * 8 and model.sizes.count(3 * 2) == 6 * 2 * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_common_noise_on_cuda():
    torch.manual_seed(11)
    model = Recorder(6).cuda()
    x, y = torch.rand(2, 6, device="cuda"), torch.zeros(2, dtype=torch.long, device="cuda")
    spsa_gradient(_objective(model, y), x, samples=4, delta=0.01, chunk=4, eot=2)
    (_, z_plus), (_, z_minus) = model.calls
    assert torch.equal(z_plus, z_minus)
    assert z_plus.view(-1, 2).diff(dim=1).abs().min() > 0
