"""Learn2Perturb's three theta steps (``theta_update``) against steps computed by hand.

A tiny model whose noise is a fixed draw z (theta * z) and an attack with eps 0 make a
training step deterministic, so each rule's new W and theta can be written out from the
gradients of a reference copy: SGD with Nesterov momentum 0.9 moves a parameter by
lr * (1 + m) * grad on its first step, lr * (grad + m * (m * previous + grad)) on its second.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastnoise.nn import PerturbationInjection
from fastnoise.train import TrainConfig, build_method

LR, MOMENTUM, GAMMA, THETA_MIN = 0.1, 0.9, 0.05, 0.01


class FixedDrawInjection(PerturbationInjection):
    """``x + theta * z`` with one fixed z: the loss is a plain function of theta."""

    def __init__(self, z: torch.Tensor, init: float, theta_min: float) -> None:
        super().__init__(z.shape, init, theta_min)
        self.register_buffer("z", z)

    def forward(self, x):
        return x + self.theta * self.z if self.enabled else x


def tiny_model(theta_init: float = 0.25) -> nn.Sequential:
    torch.manual_seed(0)
    z = torch.randn(3)
    return nn.Sequential(
        nn.Linear(4, 3), FixedDrawInjection(z, theta_init, THETA_MIN), nn.Tanh(), nn.Linear(3, 3)
    )


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def one_step(rule: str, theta_init: float = 0.25, lr: float = LR):
    """The model before and after one training step of ``rule`` (noise on, tau = 1)."""
    model = tiny_model(theta_init)
    before = copy.deepcopy(model)
    config = TrainConfig(
        method="learn2perturb", dataset="embedded", theta_update=rule, noise_off_epochs=0,
        eps=0.0, attack_steps=1, attack_step_size=0.0, lr=lr, momentum=MOMENTUM,
        nesterov=True, weight_decay=0.0, gamma=GAMMA, theta_init=theta_init,
        theta_min=THETA_MIN,
    )  # fmt: skip
    method = build_method(config, model)
    method.begin_epoch(0)
    x, y = batch()
    method.train_step(x, y, 0)
    return before, model


def weights(model):
    return [model[0].weight, model[0].bias, model[3].weight, model[3].bias]


def gradients(model):
    """grad_W L and grad_theta L; L = 0.5 CE(clean) + 0.5 CE(adversarial), the same batch
    twice at eps 0."""
    model.zero_grad()
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    return [w.grad.clone() for w in weights(model)], model[1].theta.grad.clone()


def gamma_grad_g(theta):  # gamma * d/dtheta of Eq. (8) -sqrt(theta) / tau, tau = 1
    return -GAMMA / (2 * theta.sqrt())


def set_(params, values):
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def assert_step(model, expected_weights, expected_theta):
    for got, want in zip(weights(model), expected_weights, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(model[1].theta.detach(), expected_theta, rtol=0, atol=1e-6)


def test_algorithm1_steps_theta_at_the_new_w_without_momentum():
    ref, model = one_step("algorithm1")
    w0, theta0 = [w.detach().clone() for w in weights(ref)], ref[1].theta.detach().clone()
    g_w, _ = gradients(ref)
    w1 = [w - LR * (1 + MOMENTUM) * g for w, g in zip(w0, g_w, strict=True)]
    set_(weights(ref), w1)  # W fixed at its new value for the theta half
    _, g_theta_at_w1 = gradients(ref)
    theta1 = (theta0 - LR * g_theta_at_w1 - gamma_grad_g(theta0)).clamp(min=THETA_MIN)
    assert_step(model, w1, theta1)


def test_joint_steps_theta_with_momentum_on_the_old_gradient():
    ref, model = one_step("joint")
    w0, theta0 = [w.detach().clone() for w in weights(ref)], ref[1].theta.detach().clone()
    g_w, g_theta = gradients(ref)
    w1 = [w - LR * (1 + MOMENTUM) * g for w, g in zip(w0, g_w, strict=True)]
    theta1 = (theta0 - LR * (1 + MOMENTUM) * (g_theta + gamma_grad_g(theta0))).clamp(min=THETA_MIN)
    assert_step(model, w1, theta1)


def test_released_code_steps_the_regularizer_first_then_w_and_theta_together():
    ref, model = one_step("released-code")
    w0, theta0 = [w.detach().clone() for w in weights(ref)], ref[1].theta.detach().clone()
    d1 = gamma_grad_g(theta0)
    theta_half = theta0 - LR * (1 + MOMENTUM) * d1  # optimizer2 on the regularizer alone
    set_([ref[1].theta], [theta_half])
    g_w, g_theta = gradients(ref)  # one forward at (W0, theta_half)
    w1 = [w - LR * (1 + MOMENTUM) * g for w, g in zip(w0, g_w, strict=True)]
    buffer = MOMENTUM * d1 + g_theta  # the same momentum buffer, second step
    theta1 = (theta_half - LR * (g_theta + MOMENTUM * buffer)).clamp(min=THETA_MIN)
    assert_step(model, w1, theta1)


def test_the_three_rules_give_three_different_steps():
    rules = ("algorithm1", "joint", "released-code")
    thetas = [one_step(rule)[1][1].theta.detach() for rule in rules]
    for i in range(3):
        assert not torch.allclose(thetas[i], thetas[(i + 1) % 3], rtol=0, atol=1e-4)


def test_algorithm1_regularizer_step_does_not_shrink_with_the_lr():
    """The issue's point: after the lr drops (epochs 150, 250) the joint rule's regularizer
    step shrinks with it, Algorithm 1's does not. At lr 0 only gamma * grad g moves theta."""
    for rule, expected_step in (("algorithm1", GAMMA / (2 * math.sqrt(0.25))), ("joint", 0.0)):
        _, model = one_step(rule, lr=0.0)
        step = model[1].theta.detach() - 0.25
        torch.testing.assert_close(step, torch.full_like(step, expected_step), rtol=0, atol=1e-7)


def test_theta_comparison_plot_draws_every_run(tmp_path):
    from fastnoise.train.plots import plot_theta_comparison

    def rows(growth):
        return [{"epoch": e, "theta_mean": {"noise1": 0.25 + growth * e}} for e in (1, 2, 3)]

    path = plot_theta_comparison(
        {"algorithm1": rows(0.2), "joint": rows(0.1)}, tmp_path / "theta.png", lr_drops=(2,)
    )
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="no theta_mean"):
        plot_theta_comparison({"standard": [{"epoch": 1, "theta_mean": {}}]}, tmp_path / "x.png")
