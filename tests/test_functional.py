"""The public functional API against the reference semantics: values, gradients
(gradcheck in float64), noise regeneration, statistics and argument errors."""

import math

import pytest
import torch

import fastnoise
from fastnoise import functional as F
from fastnoise import rng

SIGMA_SHAPES = [(3, 5, 7), (3, 1, 1), (), (5, 7), (1, 7)]


def _x(shape=(4, 3, 5, 7), dtype=torch.float32):
    return torch.rand(shape, dtype=dtype)


@pytest.mark.parametrize("sigma_shape", SIGMA_SHAPES)
def test_inject_noise_is_x_plus_sigma_times_spec_noise(sigma_shape):
    x = _x()
    sigma = torch.rand(sigma_shape) + 0.1
    y = F.inject_noise(x, sigma, seed=99, offset=5)
    z = rng.randn(x.shape, 99, 5)
    torch.testing.assert_close(y, x + sigma * z)


def test_inject_noise_accepts_a_float_sigma_and_keeps_dtype():
    x = _x(dtype=torch.bfloat16)
    y = F.inject_noise(x, 0.5, seed=1)
    assert y.dtype == torch.bfloat16
    expected = (x.float() + 0.5 * rng.randn(x.shape, 1)).bfloat16()
    torch.testing.assert_close(y, expected)


def test_noise_is_independent_per_sample_and_per_feature():
    x = torch.zeros(64, 3, 4, 4)
    y = F.inject_noise(x, torch.ones(3, 4, 4), seed=3)
    # identical samples must not share a draw (the released Learn2Perturb code did)
    assert (y[0] != y[1]).all()
    # per-feature std over the batch matches sigma statistically
    sigma = torch.linspace(0.1, 2.0, 48).reshape(3, 4, 4)
    y = F.inject_noise(torch.zeros(4096, 3, 4, 4), sigma, seed=4)
    ratio = y.std(dim=0) / sigma
    assert (ratio - 1).abs().max() < 5 * math.sqrt(1 / (2 * 4096))


def test_fresh_seed_per_call_and_manual_seed_reproduces():
    x = _x()
    torch.manual_seed(0)
    a = F.inject_noise(x, 1.0)
    b = F.inject_noise(x, 1.0)
    torch.manual_seed(0)
    assert torch.equal(F.inject_noise(x, 1.0), a)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("sigma_shape", [(3, 5, 7), (3, 1, 1), ()])
def test_inject_noise_gradcheck_float64(sigma_shape, seed_offset):
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    sigma = (torch.rand(sigma_shape, dtype=torch.float64) + 0.1).requires_grad_()
    seed, offset = seed_offset
    assert torch.autograd.gradcheck(
        lambda a, s: F.inject_noise(a, s, seed=seed, offset=offset), (x, sigma)
    )


def test_pnil_matches_equations_2_and_3():
    x = _x()
    w = torch.randn(3, 5, 7) * 0.5
    b = torch.randn(3, 5, 7) - 2
    y = F.pnil(x, w, b, seed=8)
    z = rng.randn(x.shape, 8)
    torch.testing.assert_close(y, x + z * torch.exp((x * w + b) / 2))


@pytest.mark.parametrize("param_shape", [(3, 5, 7), (3, 1, 1)])
def test_pnil_gradcheck_float64(param_shape, seed_offset):
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    w = (torch.randn(param_shape, dtype=torch.float64) * 0.3).requires_grad_()
    b = (torch.randn(param_shape, dtype=torch.float64) * 0.3 - 1).requires_grad_()
    seed, offset = seed_offset
    assert torch.autograd.gradcheck(
        lambda a, c, d: F.pnil(a, c, d, seed=seed, offset=offset), (x, w, b)
    )


def test_backward_regenerates_noise_instead_of_saving_it():
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    sigma = torch.full((3, 16, 16), 0.5, requires_grad=True)
    w = torch.zeros(3, 16, 16, requires_grad=True)
    b = torch.zeros(3, 16, 16, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.inject_noise(x, sigma).sum().backward()
    assert all(t.numel() <= sigma.numel() for t in saved), [t.shape for t in saved]
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.pnil(x, w, b).sum().backward()
    # PNIL needs its input x (shared with the producer); nothing else activation-sized.
    big = [t for t in saved if t.numel() > w.numel()]
    assert all(t.data_ptr() == x.data_ptr() for t in big), [t.shape for t in big]


def test_pgd_step_steps_projects_and_clips():
    x_orig = torch.rand(4, 3, 8, 8)
    x_adv = (x_orig + (torch.rand_like(x_orig) - 0.5) * 0.1).clamp(0, 1)
    grad = torch.randn_like(x_orig)
    out = F.pgd_step(x_adv, grad, x_orig, step_size=0.01, eps=0.03)
    expected = torch.min(torch.max(x_adv + 0.01 * grad.sign(), x_orig - 0.03), x_orig + 0.03)
    torch.testing.assert_close(out, expected.clamp(0, 1))
    assert (out - x_orig).abs().max() <= 0.03 + 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_random_start_is_uniform_in_the_eps_ball():
    x = torch.full((256, 3, 8, 8), 0.5)
    out = F.random_start(x, 0.1, seed=5)
    u = rng.rand(x.shape, 5)
    torch.testing.assert_close(out, x + 0.1 * (2 * u - 1))
    delta = (out - x).flatten()
    assert delta.abs().max() <= 0.1 + 1e-6
    assert abs(delta.mean().item()) < 0.005
    assert abs(delta.var().item() - 0.01 / 3) < 2e-4
    # projection onto the pixel box only when asked
    edge = torch.zeros(2, 10)
    assert F.random_start(edge, 0.5, seed=1).min() >= 0
    assert F.random_start(edge, 0.5, seed=1, project=False).min() < 0


def test_top_level_reexports():
    assert fastnoise.inject_noise is F.inject_noise
    assert fastnoise.pnil is F.pnil


@pytest.mark.parametrize(
    "call,error,name",
    [
        (lambda: F.inject_noise(torch.rand(2, 3), -0.1), ValueError, "sigma"),
        (
            lambda: F.inject_noise(torch.rand(2, 3), torch.tensor([0.1, -1.0, 0.2])),
            ValueError,
            "sigma",
        ),
        (
            lambda: F.inject_noise(torch.rand(2, 3), torch.tensor([0.1, float("nan"), 0.2])),
            ValueError,
            "sigma",
        ),
        (lambda: F.inject_noise(torch.rand(2, 3), torch.ones(4)), ValueError, "sigma"),
        (lambda: F.inject_noise(torch.rand(2, 3), torch.ones(2, 3)), ValueError, "sigma"),
        (lambda: F.inject_noise([1.0, 2.0], 0.1), TypeError, "x"),
        (lambda: F.inject_noise(torch.ones(2, 3, dtype=torch.int64), 0.1), TypeError, "x"),
        (lambda: F.inject_noise(torch.tensor(1.0), 0.1), ValueError, "x"),
        (
            lambda: F.inject_noise(torch.rand(2, 3), torch.ones(3, device="meta")),
            ValueError,
            "sigma",
        ),
        (lambda: F.pnil(torch.rand(2, 3), torch.ones(4), torch.ones(3)), ValueError, "weight"),
        (lambda: F.pnil(torch.rand(2, 3), torch.ones(3), "b"), TypeError, "bias"),
        (
            lambda: F.pgd_step(torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3), 0.1, -1),
            ValueError,
            "eps",
        ),
        (
            lambda: F.pgd_step(torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3), -0.1, 1),
            ValueError,
            "step_size",
        ),
        (
            lambda: F.pgd_step(torch.rand(2, 3), torch.rand(3, 2), torch.rand(2, 3), 0.1, 1),
            ValueError,
            "grad",
        ),
        (
            lambda: F.pgd_step(
                torch.rand(2, 3), torch.rand(2, 3), torch.rand(2, 3), 0.1, 1, clip=(1, 0)
            ),
            ValueError,
            "clip",
        ),
        (lambda: F.random_start(torch.rand(2, 3), -0.5), ValueError, "eps"),
        (lambda: F.random_start(torch.rand(2, 3), float("nan")), ValueError, "eps"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
