"""Eager calls on the backends without the C++ front door (``fastnoise._eager``).

They skip the custom ops of ``fastnoise._ops`` (what torch.compile traces) and call the
backend's primitives directly, behind a plain autograd.Function: the same values and
gradients as the custom ops for the same seed, the same seed draws, and no custom-op
dispatch on the way.
"""

from __future__ import annotations

import pytest
import torch

from fastnoise import _ops, functional, use_backend


@pytest.fixture
def reference_backend():
    with use_backend("torch"):
        yield


@pytest.fixture
def no_custom_ops(monkeypatch):
    """Every custom op raises if called: what runs must be the eager path."""

    def refuse(*args, **kwargs):
        raise AssertionError("an eager call went through a custom op")

    for name in ("noise_injection", "noise_injection_backward", "pnil", "pnil_backward"):
        monkeypatch.setattr(_ops, name, refuse)
    for name in ("pgd_step", "random_start"):
        monkeypatch.setattr(_ops, name, refuse)


def _inputs(dtype=torch.float32, layout="contiguous"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 5, generator=g, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    sigma = torch.rand(4, 1, 1, generator=g, dtype=dtype)
    weight = 0.3 * torch.randn(4, 6, 5, generator=g, dtype=dtype)
    bias = 0.3 * torch.randn(5, generator=g, dtype=dtype)
    return x, sigma, weight, bias


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_noise_ops_match_the_custom_ops(reference_backend, layout, seed_offset):
    seed, offset = seed_offset
    state = _ops.make_rng_state(seed, offset)
    x, sigma, weight, bias = _inputs(layout=layout)
    grad_y = torch.randn(x.shape)
    cases = [
        (lambda *a: functional.inject_noise(*a, seed=seed, offset=offset), (x, sigma)),
        (lambda *a: _ops.noise_injection(*a, state), (x, sigma)),
        (lambda *a: functional.pnil(*a, seed=seed, offset=offset), (x, weight, bias)),
        (lambda *a: _ops.pnil(*a, state), (x, weight, bias)),
    ]
    results = []
    for fn, args in cases:
        args = [a.clone().requires_grad_() for a in args]
        y = fn(*args)
        results.append((y, *torch.autograd.grad(y, args, grad_y)))
    for eager, custom in (results[0:2], results[2:4]):
        assert eager[0].stride() == custom[0].stride()  # the same layout contract
        for a, b in zip(eager, custom, strict=True):
            assert torch.equal(a, b)


def test_attack_steps_match_the_custom_ops(reference_backend, seed_offset):
    seed, offset = seed_offset
    x = torch.rand(2, 3, 4, 4)
    grad = torch.randn(x.shape)
    got = functional.random_start(x, 0.1, seed=seed, offset=offset)
    bounds = _ops.make_bounds(0.0, 0.1, 0.0, 1.0)
    expected = _ops.random_start(x, _ops.make_rng_state(seed, offset), bounds, True)
    assert torch.equal(got, expected)
    step = functional.pgd_step(got, grad, x, 0.01, 0.03)
    bounds = _ops.make_bounds(0.01, 0.03, 0.0, 1.0)
    assert torch.equal(step, _ops.pgd_step(got, grad, x, bounds))


def test_eager_calls_dispatch_no_custom_op(reference_backend, no_custom_ops):
    x, sigma, weight, bias = (t.requires_grad_() for t in _inputs())
    y = functional.pnil(functional.inject_noise(x, sigma), weight, bias)
    y.sum().backward()
    assert x.grad is not None and sigma.grad is not None and weight.grad is not None
    start = functional.random_start(x.detach().clamp(0, 1), 0.1)
    functional.pgd_step(start, torch.randn(start.shape), x.detach(), 0.01, 0.03)


def test_seed_none_draws_as_before_and_manual_seed_reproduces(reference_backend):
    # The same draw as the custom ops' path (rng.draw_seed from torch's generator).
    x, sigma, weight, bias = _inputs()
    torch.manual_seed(3)
    first = functional.inject_noise(x, sigma), functional.pnil(x, weight, bias)
    second = functional.random_start(x.clamp(0, 1), 0.1)
    torch.manual_seed(3)
    again = functional.inject_noise(x, sigma), functional.pnil(x, weight, bias)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(functional.random_start(x.clamp(0, 1), 0.1), second)
    assert not torch.equal(functional.random_start(x.clamp(0, 1), 0.1), second)  # a new draw
    torch.manual_seed(3)
    state = _ops.make_rng_state(None, 0)
    assert torch.equal(first[0], _ops.noise_injection(x, sigma, state))


def test_gradcheck_float64(reference_backend):
    x, sigma, weight, bias = (t.requires_grad_() for t in _inputs(torch.float64))
    assert torch.autograd.gradcheck(
        lambda a, s: functional.inject_noise(a, s, seed=7, offset=1), (x, sigma)
    )
    assert torch.autograd.gradcheck(
        lambda a, w, b: functional.pnil(a, w, b, seed=7, offset=1), (x, weight, bias)
    )


def test_double_backward_is_refused_not_silently_wrong(reference_backend):
    # The backward's kernels record no graph: a second derivative would be zero, silently.
    x, sigma, weight, bias = (t.requires_grad_() for t in _inputs())
    for y, wrt in (
        (functional.inject_noise(x, sigma, seed=1), sigma),
        (functional.pnil(x, weight, bias, seed=1), weight),
    ):
        (grad,) = torch.autograd.grad((y**2).sum(), wrt, create_graph=True)
        with pytest.raises(RuntimeError):  # no path back: an error, never a wrong number
            torch.autograd.grad(grad.sum(), wrt)


def test_outputs_never_alias_inputs(reference_backend):
    x, sigma, weight, bias = _inputs()
    zero = torch.zeros_like(sigma)
    for y, inputs in (
        (functional.inject_noise(x, zero, seed=1), (x, zero)),
        (functional.pnil(x, weight, bias, seed=1), (x, weight, bias)),
        (functional.random_start(x, 0.0, seed=1, project=False), (x,)),
        (functional.pgd_step(x, x, x, 0.0, 0.0, clip=None), (x,)),
    ):
        ptr = y.untyped_storage().data_ptr()
        assert all(ptr != t.untyped_storage().data_ptr() for t in inputs)
