"""APGD in L-inf, L2 and L1 (Croce & Hein 2020; l1-APGD, Croce & Hein 2021): exact
projections onto the ball intersected with the box, the sparse L1 step, restarts, EOT,
strength against PGD on a deterministic model, and argument errors.

The model is a tiny tanh MLP trained for a moment on well separated synthetic classes:
clean accuracy 100%, and every budget below was checked to leave a clear margin.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from test_attacks_support import NoisyMLP, SmoothMLP
from torch import nn

from fastnoise.attacks._losses import cross_entropy, margin
from fastnoise.attacks.apgd import APGD, APGDT, project_l1_box, project_l2_box
from fastnoise.attacks.pgd import PGD

CLASSES, FEATURES, SAMPLES = 5, 20, 200


@functools.lru_cache(maxsize=1)
def separable_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model, x, y): 200 points around 5 random centers in [0, 1]^20 and a SmoothMLP
    trained on them (200 Adam steps, well under a second); parameters frozen."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.rand(CLASSES, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    x = (centers[y] + 0.05 * torch.randn(SAMPLES, FEATURES, generator=generator)).clamp(0, 1)
    torch.manual_seed(0)
    model = SmoothMLP(FEATURES, 32, CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x, y


def _fooled(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    # In float64 from the returned points: the budget must hold for what the caller gets.
    flat = delta.double().flatten(1)
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(dim=1)
    return flat.abs().sum(1)


# -- projections: exact, checked against a bisection on the multiplier ---------------------


def _bisect_l1(z, x, eps):
    w = z - x
    room = torch.where(w > 0, 1 - x, x)
    cap = torch.minimum(w.abs(), room)
    lo = torch.zeros(w.shape[0], 1, dtype=w.dtype)
    hi = w.abs().amax(1, keepdim=True)
    for _ in range(100):
        mid = (lo + hi) / 2
        outside = torch.minimum((w.abs() - mid).clamp_min(0), cap).sum(1, keepdim=True) > eps
        lo, hi = torch.where(outside, mid, lo), torch.where(outside, hi, mid)
    lam = torch.where(cap.sum(1, keepdim=True) > eps, hi, torch.zeros_like(hi))
    return x + w.sign() * torch.minimum((w.abs() - lam).clamp_min(0), cap)


def _bisect_l2(z, x, eps):
    w = z - x
    room = torch.where(w > 0, 1 - x, x)
    size = lambda t: torch.minimum(t * w.abs(), room).norm(dim=1, keepdim=True)
    lo, hi = torch.zeros(w.shape[0], 1, dtype=w.dtype), torch.ones(w.shape[0], 1, dtype=w.dtype)
    for _ in range(100):
        mid = (lo + hi) / 2
        outside = size(mid) > eps
        lo, hi = torch.where(outside, lo, mid), torch.where(outside, mid, hi)
    t = torch.where(size(torch.ones_like(lo)) <= eps, torch.ones_like(lo), lo)
    return x + w.sign() * torch.minimum(t * w.abs(), room)


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_projection_is_the_exact_nearest_point_of_ball_and_box(norm):
    project, bisect = (project_l1_box, _bisect_l1) if norm == "l1" else (project_l2_box, _bisect_l2)
    generator = torch.Generator().manual_seed(3)
    for trial in range(12):
        dims = 1 + 37 * trial
        x = torch.rand(6, dims, generator=generator, dtype=torch.float64)
        if trial % 3 == 0:
            x = (x > 0.5).double()  # pixels on the box's faces, pushed outward half the time
        z = x + 2 * torch.randn(6, dims, generator=generator, dtype=torch.float64)
        eps = [0.0, 0.3, 2.0, 50.0][trial % 4]
        got = project(z.float(), x.float(), eps, (0.0, 1.0)).double()
        assert got.min() >= 0 and got.max() <= 1
        assert (_norm(got - x.float().double(), norm) <= eps + 1e-5).all()
        torch.testing.assert_close(got, bisect(z, x, eps), atol=5e-5, rtol=0)


def test_projection_keeps_points_already_inside():
    x = torch.rand(4, 30)
    z = (x + 0.001 * torch.randn(4, 30)).clamp(0, 1)
    torch.testing.assert_close(project_l1_box(z, x, 10.0, (0.0, 1.0)), z)
    torch.testing.assert_close(project_l2_box(z, x, 10.0, (0.0, 1.0)), z)


# -- the attack ----------------------------------------------------------------------


@pytest.mark.parametrize("norm, eps", [("L1", 1.5), ("L2", 0.4), ("Linf", 0.1), ("l1", 40.0)])
def test_apgd_stays_in_its_ball_and_the_box(norm, eps):
    torch.manual_seed(0)
    model = NoisyMLP(36, 16, 5)
    x = torch.rand(6, 1, 6, 6)
    x[:, :, :2] = (x[:, :, :2] > 0.5).float()  # some pixels on the box's faces
    y = torch.randint(0, 5, (6,))
    for restarts in (1, 2):
        x_adv = APGD(model, eps, steps=6, eot=2, norm=norm, restarts=restarts)(x, y)
        assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (_norm(x_adv - x, norm.lower()) <= eps + 1e-5).all()
        assert (x_adv != x).any()


@pytest.mark.parametrize("norm, eps", [("L2", 1.5), ("L1", 4.0), ("Linf", 0.4)])
def test_apgd_fools_an_undefended_model_at_a_large_budget(norm, eps):
    model, x, y = separable_mlp()
    torch.manual_seed(0)
    x_adv = APGD(model, eps, steps=20, eot=1, norm=norm)(x, y)
    assert _fooled(model, x, y).float().mean() == 0
    assert _fooled(model, x_adv, y).float().mean() >= 0.98


def _paired(pgd_fooled: torch.Tensor, apgd_fooled: torch.Tensor) -> tuple[int, int]:
    """Discordant pairs: (PGD fooled and APGD not, APGD fooled and PGD not)."""
    return int((pgd_fooled & ~apgd_fooled).sum()), int((apgd_fooled & ~pgd_fooled).sum())


def test_apgd_l2_at_least_as_strong_as_pgd_l2_with_the_same_budget():
    # Same eps and iterations; PGD gets the usual step 2.5 eps / steps. Per sample the two
    # can land in different local maxima (the L-inf pair does too), so compare pairs.
    model, x, y = separable_mlp()
    eps, steps = 0.9, 20
    torch.manual_seed(1)
    pgd = _fooled(model, PGD(model, eps, alpha=2.5 * eps / steps, steps=steps, norm="l2")(x, y), y)
    apgd = _fooled(model, APGD(model, eps, steps=steps, eot=1, norm="L2")(x, y), y)
    pgd_only, apgd_only = _paired(pgd, apgd)
    assert 0.3 < pgd.float().mean() < 0.9  # a budget where the attacks differ
    assert apgd_only >= pgd_only + 10, (pgd_only, apgd_only)
    assert apgd.float().mean() >= pgd.float().mean()


def test_apgd_l1_at_least_as_strong_as_pgd_l2_inside_its_ball():
    # ||d||_1 <= sqrt(n) ||d||_2: PGD-L2 at eps is a point of the L1 ball of radius
    # sqrt(n) eps, so l1-APGD with that budget must find at least what PGD-L2 finds.
    model, x, y = separable_mlp()
    eps, steps = 0.8, 20
    torch.manual_seed(1)
    pgd_adv = PGD(model, eps, alpha=2.5 * eps / steps, steps=steps, norm="l2")(x, y)
    apgd_adv = APGD(model, eps * math.sqrt(FEATURES), steps=steps, eot=1, norm="L1")(x, y)
    pgd, apgd = _fooled(model, pgd_adv, y), _fooled(model, apgd_adv, y)
    pgd_only, apgd_only = _paired(pgd, apgd)
    assert 0.1 < pgd.float().mean() < 0.9
    assert pgd_only <= 2 and apgd_only > pgd_only
    # ... and sparser: l1-APGD moves few coordinates, PGD-L2 moves nearly all of them.
    support = lambda adv: (adv != x).sum(1).float().median()
    assert support(apgd_adv) < 0.5 * support(pgd_adv)


def test_l1_first_step_moves_the_top_fifth_of_coordinates():
    # No random start, one step: eta = eps spread evenly over the ceil(0.2 d) coordinates
    # with the largest |grad|, in the gradient's signs (Croce & Hein 2021, Sec. 3).
    torch.manual_seed(4)
    model = SmoothMLP(40, 16, 5)
    x = 0.25 + 0.5 * torch.rand(3, 40)  # far from the box: the step is not clipped
    y = torch.randint(0, 5, (3,))
    eps = 0.4
    x_adv = APGD(model, eps, steps=1, eot=1, norm="l1", random_start=False)(x, y)
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy(model(x_req), y).sum(), x_req)
    top = grad.abs().topk(8, dim=1).indices  # ceil(0.2 * 40) = 8
    expected = x.clone()
    expected.scatter_add_(1, top, eps / 8 * grad.gather(1, top).sign())
    torch.testing.assert_close(x_adv, expected)


def test_restarts_keep_each_samples_best_point():
    # Same seed, so the first restart of the 3-restart run is the 1-restart run: every
    # sample fooled once stays fooled, the others keep a point with loss at least as high.
    model, x, y = separable_mlp()
    for norm, eps in (("L2", 0.8), ("L1", 2.3), ("Linf", 0.22)):
        torch.manual_seed(2)
        one = APGD(model, eps, steps=8, eot=1, norm=norm)(x, y)
        torch.manual_seed(2)
        three = APGD(model, eps, steps=8, eot=1, norm=norm, restarts=3)(x, y)
        fooled_one, fooled_three = _fooled(model, one, y), _fooled(model, three, y)
        assert (fooled_three | ~fooled_one).all()
        assert fooled_three.sum() > fooled_one.sum(), norm  # the restarts found more
        with torch.no_grad():
            loss_one, loss_three = cross_entropy(model(one), y), cross_entropy(model(three), y)
        still = ~fooled_three
        assert (loss_three[still] >= loss_one[still] - 1e-5).all(), norm


def test_restarts_only_rerun_samples_not_yet_fooled():
    model, x, y = separable_mlp()
    rows = []
    hook = model.register_forward_pre_hook(lambda m, inputs: rows.append(inputs[0].shape[0]))
    try:
        torch.manual_seed(0)
        APGD(model, 0.8, steps=4, eot=1, norm="L2", restarts=2)(x, y)
    finally:
        hook.remove()
    first, second = rows[:5], rows[5:]  # start + 4 steps per run
    assert first == [SAMPLES] * 5
    assert len(second) == 5 and 0 < second[0] < SAMPLES and len(set(second)) == 1


@pytest.mark.parametrize("norm, eps", [("L2", 2.0), ("L1", 6.0)])
def test_eot_with_the_new_norms_is_one_batched_pass_and_still_works(norm, eps):
    torch.manual_seed(0)
    model = NoisyMLP(FEATURES, 32, CLASSES, sigma=0.05)
    _, x, y = separable_mlp()
    x, y = x[:32], y[:32]
    # Give the noisy model the trained weights: a randomized version of the same classifier.
    trained, _, _ = separable_mlp()
    model.fc1.load_state_dict(trained.net[1].state_dict())
    model.fc2.load_state_dict(trained.net[3].state_dict())
    rows = []
    model.register_forward_pre_hook(lambda m, inputs: rows.append(inputs[0].shape[0]))
    x_adv = APGD(model, eps, steps=10, eot=4, norm=norm)(x, y)
    assert (_norm(x_adv - x, norm.lower()) <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # One probe of 2 rows for shared draws, then each gradient is one pass of 32 x 4 rows.
    assert rows.count(32 * 4) == 11 and set(rows) <= {2, 32 * 4}
    with torch.no_grad():
        clean = (model(x.repeat(20, 1)).argmax(1) == y.repeat(20)).float().mean()
        attacked = (model(x_adv.repeat(20, 1)).argmax(1) == y.repeat(20)).float().mean()
    assert clean > 0.9 and attacked < 0.1


@pytest.mark.parametrize("norm", ["L2", "L1", "Linf"])
def test_apgdt_fools_the_undefended_model(norm):
    model, x, y = separable_mlp()
    eps = {"L2": 1.5, "L1": 4.0, "Linf": 0.4}[norm]
    torch.manual_seed(0)
    attack = APGDT(model, eps, steps=10, eot=1, norm=norm, n_target_classes=3)
    assert attack.name == "apgd-t" and attack.norm == norm.lower()
    x_adv = attack(x[:50], y[:50])
    assert _fooled(model, x_adv, y[:50]).all()
    assert (_norm(x_adv - x[:50], norm.lower()) <= eps + 1e-5).all()


def test_apgd_t_keeps_a_samples_first_success():
    # At a large budget every sample falls to the first target, so the second and third
    # targets have nothing left to run on: one clean pass plus 1 + steps gradient passes.
    model, x, y = separable_mlp()
    rows = []
    hook = model.register_forward_pre_hook(lambda m, inputs: rows.append(inputs[0].shape[0]))
    try:
        torch.manual_seed(0)
        x_adv = APGDT(model, 3.0, steps=5, eot=1, norm="L2", n_target_classes=3)(x, y)
    finally:
        hook.remove()
    assert _fooled(model, x_adv, y).all()
    assert rows == [SAMPLES] * 7


def test_apgd_t_targets_the_most_likely_wrong_classes_in_order():
    # A linear model whose logits rank the classes 3 > 1 > 4 > 0 > 2 for every input; the
    # true class is 1, so the targets are 3, then 4, then 0.
    model = nn.Linear(4, 5)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, 4.0, 0.0, 5.0, 2.0]))
    attack = APGDT(model, 0.1, steps=2, eot=1, n_target_classes=9)
    seen = []
    original = attack._restarts

    def spy(x, labels, loss_fn, success_fn, best):
        seen.append(labels[0, 1].item())
        return original(x, labels, loss_fn, success_fn, best)

    attack._restarts = spy
    attack(torch.rand(2, 4), torch.tensor([1, 1]))
    assert seen == [3, 4, 0, 2]  # n_target_classes capped at K - 1 = 4


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda m: APGD(m, 0.1, norm="l3"), ValueError, "norm"),
        (lambda m: APGD(m, 0.1, norm=2), TypeError, "norm"),
        (lambda m: APGD(m, 0.1, norm="l0"), ValueError, "norm"),
        (lambda m: APGD(m, 0.1, restarts=0), ValueError, "restarts"),
        (lambda m: APGD(m, 0.1, restarts=1.5), TypeError, "restarts"),
        (lambda m: PGD(m, 0.1, norm="L1"), ValueError, "norm"),
        (lambda m: APGDT(m, 0.1, n_target_classes=0), ValueError, "n_target_classes"),
        (lambda m: APGDT(m, 0.1, norm="L5"), ValueError, "norm"),
        (lambda m: APGDT(m, 0.1, loss="ce"), TypeError, "loss"),
    ],
)
def test_bad_arguments_name_the_argument(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make(SmoothMLP(16, 8, 5))


def test_norm_names_in_any_case():
    model = SmoothMLP(16, 8, 5)
    assert [APGD(model, 0.1, norm=n).norm for n in ("Linf", "L2", "L1", "linf", "l2", "l1")] == [
        "linf",
        "l2",
        "l1",
        "linf",
        "l2",
        "l1",
    ]
    assert PGD(model, 0.1, norm="L2").norm == "l2"


def test_apgd_t_needs_four_classes():
    model = SmoothMLP(16, 8, 3)
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGDT(model, 0.1, steps=2, eot=1)(torch.rand(2, 16), torch.tensor([0, 1]))


def test_margin_sign_convention_used_above():
    # The tests read "fooled" as argmax != y, which is margin > 0.
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert (margin(logits, torch.tensor([0, 0])) > 0).tolist() == [False, True]
