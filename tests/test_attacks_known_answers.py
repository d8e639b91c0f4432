"""Attacks against models whose answer is known: SPSA estimates the true gradient, the
pixel attack finds the planted pixel, C&W finds the distance to a linear boundary,
APGD's checkpoints follow the paper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_attacks_support import BrightPixelModel, SmoothMLP
from torch import nn

from fastnoise.attacks import CW, SPSA, FewPixel, spsa_gradient
from fastnoise.attacks.apgd import apgd_checkpoints
from fastnoise.attacks.few_pixel import apply_pixels


def test_spsa_estimate_points_along_the_true_gradient():
    torch.manual_seed(0)
    weight = torch.randn(8, 24)

    def smooth(points):  # (B, M, 24) -> (B, M): sum sin(W x)
        return torch.sin(points @ weight.T).sum(-1)

    x = torch.rand(3, 24)
    x_req = x.clone().requires_grad_(True)
    (true_grad,) = torch.autograd.grad(smooth(x_req[:, None]).sum(), x_req)
    estimate = spsa_gradient(smooth, x, samples=4096, delta=1e-3, chunk=500)
    cosine = F.cosine_similarity(estimate, true_grad, dim=1)
    assert cosine.min() > 0.9
    few = spsa_gradient(smooth, x, samples=4, delta=1e-3)
    assert F.cosine_similarity(few, true_grad, dim=1).mean() < cosine.mean()  # can fail


def test_spsa_chunking_does_not_change_the_estimate():
    x = torch.rand(2, 10)
    objective = lambda p: (p**2).sum(-1)
    torch.manual_seed(1)
    one_pass = spsa_gradient(objective, x, samples=64, delta=0.01, chunk=64)
    torch.manual_seed(1)
    whole = spsa_gradient(objective, x, samples=64, delta=0.01, chunk=None)
    torch.testing.assert_close(one_pass, whole)
    # Quadratic: central differences are exact, the estimate is unbiased for 2x.
    torch.manual_seed(2)
    many = spsa_gradient(objective, x, samples=20000, delta=0.01, chunk=5000)
    torch.testing.assert_close(many, 2 * x, atol=0.1, rtol=0)


def test_spsa_attack_crosses_a_linear_boundary_inside_the_ball():
    model, x, y, _ = _linear_binary_problem()
    # The best L-inf attack moves eps * sign(w): it crosses for eps above this bound.
    w = model.weight[1].detach()
    needed = -(model(x)[:, 1] - model(x)[:, 0]).detach() / w.abs().sum()
    eps = float(needed.max()) * 1.5
    torch.manual_seed(3)
    x_adv = SPSA(model, eps=eps, steps=30, samples=64, lr=0.02)(x, y)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (model(x_adv).argmax(1) != y).all()


@pytest.mark.parametrize("early_stop", [True, False])
def test_pixel_attack_finds_the_planted_pixel(early_stop):
    torch.manual_seed(4)
    model = BrightPixelModel(row=5, col=2, threshold=0.6)
    x = torch.rand(6, 3, 8, 8) * 0.3  # dark: class 0 everywhere
    y = torch.zeros(6, dtype=torch.long)
    attack = FewPixel(model, pixels=1, population=100, iterations=40, early_stop=early_stop)
    x_adv = attack(x, y)
    assert (model(x_adv).argmax(1) != y).all()
    changed = (x_adv != x).any(dim=1)  # (N, H, W) changed pixels
    assert (changed.flatten(1).sum(1) == 1).all()
    assert changed[:, 5, 2].all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pixel_attack_leaves_unbreakable_images_alone():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([1.0, 0.0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 2)

    x = torch.rand(3, 1, 5, 5)
    x_adv = FewPixel(Constant(), pixels=2, population=8, iterations=3)(x, torch.zeros(3).long())
    torch.testing.assert_close(x_adv, x)


def test_apply_pixels_writes_every_channel_at_floored_coordinates():
    images = torch.zeros(2, 3, 4, 5)
    candidates = torch.tensor([[[1.7, 4.2, 0.1, 0.2, 0.3]], [[3.99, 0.0, 1.0, 1.0, 1.0]]])
    out = apply_pixels(images, candidates)
    torch.testing.assert_close(out[0, :, 1, 4], torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(out[1, :, 3, 0], torch.ones(3))
    assert out.count_nonzero() == 6 and images.count_nonzero() == 0


def _linear_binary_problem(batch=6, dims=20, seed=5):
    """A linear 2-class model, points of class 0 at known distances from its boundary
    with the closest boundary point well inside the box."""
    torch.manual_seed(seed)
    w = torch.randn(dims)
    unit = w / w.norm()
    model = nn.Linear(dims, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(dims), w]))
        model.bias.copy_(torch.tensor([0.0, -float(w @ torch.full((dims,), 0.5))]))
    along = torch.randn(batch, dims) * 0.05
    along -= (along @ unit)[:, None] * unit  # stay on the boundary plane...
    distance = torch.linspace(0.05, 0.2, batch)
    x = 0.5 + along - distance[:, None] * unit  # ...then step back to class 0
    return model, x, torch.zeros(batch, dtype=torch.long), distance


def test_cw_finds_the_minimal_l2_example_of_a_linear_model():
    model, x, y, distance = _linear_binary_problem()
    assert (model(x).argmax(1) == 0).all() and x.min() > 0 and x.max() < 1
    x_adv = CW(model, steps=300, binary_steps=6, lr=1e-2, initial_c=1.0)(x, y)
    found = (x_adv - x).norm(dim=1)
    assert (model(x_adv).argmax(1) == 1).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # Nothing closer exists; CW must land just past the boundary.
    assert (found >= distance * (1 - 1e-4)).all()
    assert (found <= distance * 1.03 + 2e-3).all(), (found, distance)


def test_cw_eps_is_a_reporting_bound():
    model, x, y, distance = _linear_binary_problem()
    bound = float(distance[2] + 0.01)
    x_adv = CW(model, eps=bound, steps=150, binary_steps=4, lr=1e-2, initial_c=1.0)(x, y)
    moved = (x_adv - x).norm(dim=1) > 0
    assert moved.tolist() == (distance < bound).tolist()


def test_cw_kappa_demands_confidence():
    model, x, y, distance = _linear_binary_problem()
    x_adv = CW(model, steps=150, binary_steps=4, lr=1e-2, initial_c=1.0, kappa=1.0)(x, y)
    logits = model(x_adv)
    assert (logits[:, 1] - logits[:, 0] >= 1.0 - 1e-4).all()
    assert ((x_adv - x).norm(dim=1) > distance).all()


def test_apgd_checkpoints_follow_croce_and_hein():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 for 100 iterations.
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < w < 10 for w in apgd_checkpoints(10))


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_apgd_runs_any_step_count_in_the_ball(steps):
    from fastnoise.attacks import APGD

    torch.manual_seed(6)
    model = SmoothMLP(16, 32, 5)
    x, y = torch.rand(5, 16), torch.randint(0, 5, (5,))
    x_adv = APGD(model, eps=0.05, steps=steps, eot=1)(x, y)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6 and not math.isnan(float(x_adv.sum()))
