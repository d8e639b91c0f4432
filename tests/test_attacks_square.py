"""The Square attack (Andriushchenko et al., 2020): the paper's p schedule, update shapes
and initializations, the eps-ball and the box, strength on an undefended model, and on
randomized models EOT-averaged acceptance in one batched forward per iteration, and
early stops that need fresh draws (issue 11, item 1)."""

from __future__ import annotations

import math

import pytest
import torch
from test_attacks_support import NoisyMLP, SharedDrawMLP
from torch import nn

from fastnoise.attacks.square import (
    SCHEDULE_BREAKPOINTS,
    Square,
    _nested_rectangles,
    meta_pattern,
    p_schedule,
    side_length,
)

IMAGE = (1, 6, 6)
FEATURES = 36


def _batch(n=4, shape=IMAGE, seed=0):
    torch.manual_seed(seed)
    return torch.rand(n, *shape), torch.randint(0, 5, (n,))


# -- the schedule and the shapes ------------------------------------------------------------


def test_p_schedule_halves_at_the_papers_breakpoints():
    assert SCHEDULE_BREAKPOINTS == (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
    p0 = 0.8
    # A 10,000-query budget: p_init up to iteration 10, then halved after each breakpoint.
    assert p_schedule(p0, 1, 10_000) == p_schedule(p0, 10, 10_000) == p0
    for k, b in enumerate(SCHEDULE_BREAKPOINTS):
        assert p_schedule(p0, b, 10_000) == p0 / 2**k
        assert p_schedule(p0, b + 1, 10_000) == p0 / 2 ** (k + 1)
    assert p_schedule(p0, 9_999, 10_000) == p0 / 2**9
    # Other budgets rescale the breakpoints linearly: 1,000 queries halve after 1, 5, 20...
    assert p_schedule(p0, 1, 1_000) == p0
    assert p_schedule(p0, 2, 1_000) == p0 / 2
    assert p_schedule(p0, 5, 1_000) == p0 / 2
    assert p_schedule(p0, 6, 1_000) == p0 / 4
    assert p_schedule(p0, 801, 1_000) == p0 / 2**9
    assert [p_schedule(p0, i, 100) for i in (1, 5, 6, 51, 99)] == [
        p0 / 4,  # iteration 1 of 100 is iteration 100 of 10,000
        p0 / 8,
        p0 / 16,
        p0 / 2**7,
        p0 / 2**9,
    ]


def test_side_length_is_the_closest_integer_to_sqrt_p_hw():
    assert side_length(0.8, 32, 32) == 29  # sqrt(819.2) = 28.6
    assert side_length(0.05, 224, 224) == 50  # sqrt(2508.8) = 50.09
    assert side_length(0.8 / 2**9, 32, 32) == 1
    assert side_length(1e-6, 32, 32, minimum=3) == 3
    assert side_length(1.0, 6, 9) == 6  # never past the image


def test_nested_squares_follow_the_papers_formula():
    # eta^(r,s) = sum_{k=0}^{M(r,s)} 1/(n+1-k)^2, M = n - max(|r - h//2 - 1|, |s - h//2 - 1|),
    # n = h // 2, with 1-based r, s (an odd h x h square).
    for h in (1, 3, 5, 7):
        n = h // 2
        expected = torch.zeros(h, h, dtype=torch.float64)
        for r in range(1, h + 1):
            for s in range(1, h + 1):
                m = n - max(abs(r - n - 1), abs(s - n - 1))
                expected[r - 1, s - 1] = sum(1 / (n + 1 - k) ** 2 for k in range(m + 1))
        torch.testing.assert_close(_nested_rectangles(h, h), expected)


@pytest.mark.parametrize("side", [1, 2, 3, 6, 7])
def test_meta_pattern_has_two_opposite_halves_of_unit_norm(side):
    pattern = meta_pattern(side)
    assert pattern.shape == (side, side)
    assert pattern.norm().item() == pytest.approx(1.0)
    top, bottom = pattern[: side // 2], pattern[side // 2 :]
    assert (top >= 0).all() and (bottom < 0).all()
    if side >= 2:
        assert top.norm().item() == pytest.approx(bottom.norm().item())
        # Each half peaks at its centre and decays outwards.
        assert top.abs().argmax().item() == (side // 2 // 2) * side + side // 2


def test_linf_update_is_one_square_of_one_sign_per_channel():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 10, 10) * 0.5 + 0.25
    attack = Square(nn.Flatten(), 0.1, clip=(0.0, 1.0))
    x_best = attack._init_linf(x)
    # Start: vertical stripes, every pixel at x +- eps, constant down each column.
    delta = x_best - x
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, 0.1))
    assert (delta.sign() == delta.sign()[:, :, :1]).all()
    # A window covering the image: every channel moves to one vertex, +eps or -eps.
    moved = attack._candidate_linf(x_best, x, 10) - x
    torch.testing.assert_close(moved.abs(), torch.full_like(moved, 0.1))
    assert (moved.sign().flatten(2).std(2) == 0).all()
    # A 4 x 4 window: the change stays inside one 4 x 4 square.
    for _ in range(20):
        changed = (attack._candidate_linf(x_best, x, 4) != x_best).any(1)
        for image in changed:
            rows, cols = image.nonzero().unbind(1)
            if rows.numel():
                assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4


def test_l2_update_moves_the_mass_into_the_meta_pattern():
    torch.manual_seed(0)
    channels, eps = 3, 0.5
    x = torch.rand(6, channels, 7, 7) * 0.5 + 0.25
    attack = Square(nn.Flatten(), eps, norm="L2", clip=(-10.0, 10.0))
    # From x itself (no perturbation yet) the whole budget goes to W1, eps / sqrt(C) per
    # channel along +-eta (the pattern or its transpose when W1 is the whole image).
    moved = attack._candidate_l2(x, x, 7) - x
    pattern = meta_pattern(7).float()
    for image in moved:
        for channel in image:
            scaled = channel.abs() / (eps / math.sqrt(channels))
            assert torch.allclose(scaled, pattern.abs(), atol=1e-5) or torch.allclose(
                scaled, pattern.t().abs(), atol=1e-5
            )
    # From the start, an update keeps the norm at exactly eps (no box in the way) and
    # changes only pixels of the two windows.
    x_best = attack._init_l2(x)
    torch.testing.assert_close((x_best - x).flatten(1).norm(dim=1), torch.full((6,), eps))
    for _ in range(10):
        trial = attack._candidate_l2(x_best, x, 3)
        torch.testing.assert_close((trial - x).flatten(1).norm(dim=1), torch.full((6,), eps))
        assert ((trial != x_best).any(1).flatten(1).sum(1) <= 2 * 9).all()


# -- ball, box, strength ----------------------------------------------------------------------


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 0.5), ("linf", 0.3), ("l2", 2.0)])
@pytest.mark.parametrize("clip", [(0.0, 1.0), (0.2, 0.9)])
def test_stays_in_the_ball_and_the_box(norm, eps, clip):
    x, y = _batch(6, (2, 6, 6))
    x = x * (clip[1] - clip[0]) + clip[0]
    model = NoisyMLP(72, 16, 5)
    attack = Square(model, eps, norm=norm, queries=40, eot=2, clip=clip)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1]
    delta = (x_adv - x).flatten(1)
    if attack.norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5
    assert attack.last_queries.shape == (6,) and (attack.last_queries >= 2).all()
    # Candidates x eot, plus stop_draws (= eot) rows per confirmation.
    assert (attack.last_queries[~attack.last_fooled] >= 40 * 2).all()
    assert (attack.last_queries % 2 == 0).all()


def _separable_data(n, seed=0):
    """Images (n, 3, 8, 8) of 4 classes: a class template at contrast 0.25 plus noise."""
    templates = torch.randint(0, 2, (4, 3, 8, 8), generator=torch.Generator().manual_seed(99))
    templates = templates.float() * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 + 0.25 * templates[y] + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 4),
    )
    x, y = _separable_data(256)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    x_test, y_test = _separable_data(32, seed=1)
    with torch.no_grad():
        assert (model(x_test).argmax(1) == y_test).float().mean() == 1.0
    return model, x_test, y_test


@pytest.mark.parametrize("norm, eps, queries", [("Linf", 0.25, 300), ("L2", 3.0, 1000)])
def test_fools_an_undefended_model_at_a_large_eps(trained_cnn, norm, eps, queries):
    model, x, y = trained_cnn
    torch.manual_seed(0)
    start = Square(model, eps, norm=norm, queries=1)(x, y)  # the initialization alone
    with torch.no_grad():
        assert (model(start).argmax(1) == y).float().mean() > 0.5
    attack = Square(model, eps, norm=norm, queries=queries)
    x_adv = attack(x, y)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) == y).float().mean() == 0.0
    assert attack.last_fooled.all()
    # Deterministic model, eot = 1: each image ran candidates until its hit, plus one
    # confirmation draw; early stop keeps most images well below the budget.
    assert (attack.last_queries <= queries + 1).all()
    assert attack.last_queries.float().median() < queries / 2


# -- randomized models: EOT in one batched forward, acceptance on the average ------------------


class CountingModel(nn.Module):
    """Wraps a model and records each forward's batch size."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


def _record_passes(attack, model):
    """Wrap ``attack._margins``: log (draws, sizes of the forwards it made) per call."""
    calls = []
    margins = attack._margins

    def recorded(points, y, draws, separate):
        before = len(model.sizes)
        out = margins(points, y, draws, separate)
        calls.append((draws, points.shape[0], model.sizes[before:]))
        return out

    attack._margins = recorded
    return calls


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_batched_forward_per_iteration_with_eot(norm):
    x, y = _batch(3)
    model = CountingModel(NoisyMLP(FEATURES, 16, 5))
    queries, eot, stop_draws = 25, 4, 5
    attack = Square(
        model, 0.2, norm=norm, queries=queries, eot=eot, stop_draws=stop_draws, early_stop=False
    )
    calls = _record_passes(attack, model)
    attack(x, y)
    candidates = [c for c in calls if c[0] == eot]
    # The initial point and each of the queries - 1 iterations (no early stop: every image
    # every iteration): one forward of all 3 images x 4 copies.
    assert len(candidates) == queries
    assert all(sizes == [3 * eot] for _, _, sizes in candidates)
    # Confirmations of hits: one forward of stop_draws rows per flagged image.
    for draws, flagged, sizes in calls:
        assert draws in (eot, stop_draws)
        if draws == stop_draws:
            assert sizes == [flagged * stop_draws]
    assert attack.last_queries.sum() == sum(sum(sizes) for _, _, sizes in calls)
    assert (attack.last_queries >= queries * eot).all()


def test_noise_drawn_once_per_pass_runs_the_copies_as_separate_passes():
    x, y = _batch(3)
    model = CountingModel(SharedDrawMLP(FEATURES, 16, 5))
    attack = Square(model, 0.2, queries=6, eot=3, stop_draws=4, early_stop=False)
    calls = _record_passes(attack, model)
    with pytest.warns(UserWarning, match="separate passes"):
        attack(x, y)
    # Each evaluation: one pass of the batch per draw, each pass its own draw.
    assert [sizes for draws, _, sizes in calls if draws == 3] == [[3, 3, 3]] * 6
    for draws, flagged, sizes in calls:
        if draws == 4:
            assert sizes == [flagged] * 4
    assert attack.last_queries.sum() == sum(sum(sizes) for _, _, sizes in calls)


class CopyZeroDisagrees(nn.Module):
    """Two classes, label 0, margin ``-u - 100`` with ``u`` the sum of the pixels, except on
    copy 0 of each group of ``eot`` rows, where it is ``u - 100``. Averaged over the eot
    copies the margin ``-u (eot - 2) / eot - 100`` improves only when ``u`` falls, yet
    copy 0 improves only when ``u`` rises. Never misclassified. Logs candidate rows."""

    def __init__(self, eot: int):
        super().__init__()
        self.eot = eot
        self.rows: list[torch.Tensor] = []

    def forward(self, x):
        if x.shape[0] != 2:  # separate_passes's probe: two identical rows
            self.rows.append(x[:: self.eot].clone())
        u = x.flatten(1).sum(1)
        copy = torch.arange(x.shape[0]) % self.eot
        margin = torch.where(copy == 0, u, -u) - 100.0
        return torch.stack([torch.zeros_like(margin), margin], dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_candidate_better_on_one_draw_but_worse_on_average_is_rejected(norm):
    torch.manual_seed(3)
    x, y = torch.rand(1, 1, 6, 6), torch.zeros(1, dtype=torch.long)
    model = CopyZeroDisagrees(eot=4)
    attack = Square(model, 0.3 if norm == "linf" else 1.0, norm=norm, queries=60, eot=4)
    x_adv = attack(x, y)
    u = torch.cat(model.rows).flatten(1).sum(1)  # start, then every candidate
    assert u.numel() == 60
    # The result is the candidate of lowest u (best average): each lower u was accepted,
    # every candidate that raised u (better on copy 0 alone) was rejected.
    assert x_adv.sum().item() == pytest.approx(u.min().item(), abs=1e-4)
    assert u.min() < u[0]
    # Candidates above the current best's u: better on copy 0 alone, all of them rejected.
    assert sum(u[i] > u[:i].min() for i in range(1, u.numel())) > 10


class Lucky(nn.Module):
    """Ignores its input: each row is misclassified (class 1 for label 0) with probability
    ``p`` on each draw, independently."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        score = torch.where(torch.rand(x.shape[0]) < self.p, 1.0, -1.0)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_early_stop_needs_the_hit_on_fresh_draws():
    x, y = torch.rand(5, 1, 4, 4) * 0.5 + 0.25, torch.zeros(5, dtype=torch.long)
    torch.manual_seed(7)
    attack = Square(Lucky(0.3), 0.1, queries=20, stop_draws=10)
    attack(x, y)
    assert not attack.last_fooled.any()  # lucky draws are never confirmed
    assert (attack.last_queries >= 20).all()  # so no image stopped early
    # A real hit (every draw misclassifies) stops at the start: one query, 10 confirmations.
    attack = Square(Lucky(1.0), 0.1, queries=20, stop_draws=10)
    x_adv = attack(x, y)
    assert attack.last_fooled.all()
    assert (attack.last_queries == 1 + 10).all()
    assert ((x_adv - x).abs() - 0.1).abs().max() < 1e-6  # the L-inf start point
    assert Square(Lucky(0.5), 0.1, eot=3).stop_draws == 3
    assert Square(Lucky(0.5), 0.1).stop_draws == 1


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_manual_seed_reproduces_the_attack(norm):
    x, y = _batch(4)
    model = NoisyMLP(FEATURES, 16, 5)
    runs = []
    for _ in range(2):
        torch.manual_seed(11)
        attack = Square(model, 0.3, norm=norm, queries=30, eot=2)
        runs.append((attack(x, y), attack.last_queries.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    torch.manual_seed(12)
    assert not torch.equal(Square(model, 0.3, norm=norm, queries=30, eot=2)(x, y), runs[0][0])


def test_eval_mode_and_modes_restored():
    model = nn.Sequential(nn.Flatten(), nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, 5))
    model.train()
    stats = model[2].running_mean.clone()
    Square(model, 0.1, queries=10)(*_batch())
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(model[2].running_mean, stats)


# -- the interface -----------------------------------------------------------------------------


def test_names_kind_and_norm_spelling():
    model = nn.Flatten()
    attack = Square(model, 0.1, norm="Linf")
    assert (attack.name, attack.kind, attack.norm) == ("square", "gradient-free", "linf")
    assert Square(model, 0.5, norm="L2").norm == "l2"
    assert (attack.queries, attack.p_init, attack.eot) == (5000, 0.8, 1)
    assert "Square" in repr(attack) and "queries=5000" in repr(attack)


@pytest.mark.parametrize(
    "kw, error, pattern",
    [
        (dict(norm="L1"), ValueError, "norm"),
        (dict(norm=2), ValueError, "norm"),
        (dict(queries=0), ValueError, "queries"),
        (dict(queries=10.0), TypeError, "queries"),
        (dict(p_init=0.0), ValueError, "p_init"),
        (dict(p_init=1.5), ValueError, "p_init"),
        (dict(p_init="big"), TypeError, "p_init"),
        (dict(eps=math.inf), ValueError, "eps"),
        (dict(eps=-0.1), ValueError, "eps"),
        (dict(eot=0), ValueError, "eot"),
        (dict(stop_draws=0), ValueError, "stop_draws"),
        (dict(early_stop="yes"), TypeError, "early_stop"),
    ],
)
def test_bad_arguments_name_the_argument(kw, error, pattern):
    kw = {"eps": 0.1, **kw}
    with pytest.raises(error, match=pattern):
        Square(nn.Flatten(), **kw)


def test_needs_images():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Square(nn.Linear(5, 2), 0.1)(torch.rand(2, 5), torch.zeros(2, dtype=torch.long))


def test_empty_batch():
    x = torch.rand(0, *IMAGE)
    assert Square(NoisyMLP(FEATURES, 16, 5), 0.1)(x, torch.zeros(0, dtype=torch.long)).shape == (
        0,
        *IMAGE,
    )
