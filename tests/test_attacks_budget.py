"""Every attack returns examples inside its budget exactly, in every float dtype.

Before fastnoise.attacks.budget, bfloat16 PGD/FGSM/Square left pixels 1.8e-3 past
x +/- 8/255 (6% of eps): rounding the float32 projection to the dtype.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastnoise import attacks
from fastnoise.attacks.budget import fit_to_budget

EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 5.0}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = [  # (name, norm, settings): short runs, the budget is what is checked
    ("fgsm", "linf", {}),
    ("pgd", "linf", {"steps": 3}),
    ("pgd", "l2", {"steps": 3}),
    ("square", "linf", {"queries": 20}),
    ("square", "l2", {"queries": 20}),
    ("apgd", "linf", {"steps": 3, "eot": 1}),
    ("apgd", "l2", {"steps": 3, "eot": 1}),
    ("apgd", "l1", {"steps": 3, "eot": 1}),
    ("spsa", "linf", {"steps": 2, "samples": 8}),
]


def _model(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).to(dtype)


def _distance(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv.double() - x.double()).flatten(1)
    ord = {"linf": math.inf, "l2": 2, "l1": 1}[norm]
    return torch.linalg.vector_norm(delta, ord=ord, dim=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, norm, settings", CASES, ids=[f"{n}-{m}" for n, m, _ in CASES])
def test_attacks_stay_inside_the_budget_exactly(name, norm, settings, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 8, 8, generator=g).to(dtype)
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 0.5, 0.25])  # the box's faces and exact values
    y = torch.randint(0, 10, (6,), generator=g)
    kwargs = dict(settings)
    if name != "spsa" and name != "fgsm":
        kwargs["norm"] = norm
    attack = attacks.build(name, _model(dtype), EPS[norm], **kwargs)
    x_adv = attack(x, y)
    assert x_adv.dtype == dtype
    assert (_distance(x_adv, x, norm) <= EPS[norm]).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fit_to_budget_moves_only_what_rounding_left_outside(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 50, generator=g).to(dtype)
    eps = 8 / 255
    # The float32 projection onto the ball's faces, rounded to the dtype: what PGD returns.
    x_adv = (x.float() + eps * torch.randn(8, 50, generator=g).sign()).to(dtype)
    fitted = fit_to_budget(x_adv, x, eps, "linf")
    assert (_distance(fitted, x, "linf") <= eps).all()
    moved = fitted != x_adv
    outside = (x_adv.double() - x.double()).abs() > eps
    assert torch.equal(moved, outside)
    # Each moved entry sits on the face, rounded inward: one unit in the last place
    # further out (away from x) it would be outside again.
    outward = torch.nextafter(fitted, torch.where(fitted > x, 2.0, -2.0).to(dtype))
    assert ((outward.double() - x.double()).abs() > eps)[moved].all()


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fit_to_budget_shrinks_only_the_rows_outside(norm, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 4, 4, generator=g).to(dtype)
    eps = EPS[norm]
    delta = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    ord = 2 if norm == "l2" else 1
    delta *= eps / torch.linalg.vector_norm(delta.flatten(1), ord=ord, dim=1).view(-1, 1, 1, 1)
    delta[:4] *= 0.5  # well inside: left alone
    x_adv = (x.double() + delta).to(dtype)  # on the sphere, then rounded: some rows outside
    fitted = fit_to_budget(x_adv, x, eps, norm)
    distance = _distance(fitted, x, norm)
    assert (distance <= eps).all()
    assert torch.equal(fitted[:4], x_adv[:4])
    assert (distance[4:] > eps * (1 - 64 * torch.finfo(dtype).eps)).all()  # barely moved


def test_unbounded_and_l0_budgets_are_left_alone():
    x = torch.rand(2, 5)
    x_adv = x + 1.0
    assert fit_to_budget(x_adv, x, math.inf, "linf") is x_adv
    assert fit_to_budget(x_adv, x, 3.0, "l0") is x_adv
