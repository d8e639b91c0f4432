"""Learn2Perturb noise injection: fused backends vs eager ``x + sigma * randn_like(x)``,
forward and forward+backward, on ResNet-20's activation shapes."""

from __future__ import annotations

import contextlib

import pytest
import torch
from eager import eager_inject_noise

import fastnoise

from conftest import RESNET20_SHAPES, cases, saved_bytes


def _setup(shape, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device).requires_grad_()
    sigma = (torch.rand(shape[1], 1, 1, generator=g) * 0.2).to(device).requires_grad_()
    grad = torch.randn(shape, generator=g).to(device)
    return x, sigma, grad


def _forward(backend):
    if backend == "eager":
        return eager_inject_noise, contextlib.nullcontext
    return fastnoise.inject_noise, lambda: fastnoise.use_backend(backend)


@pytest.mark.parametrize("shape", RESNET20_SHAPES, ids=str)
@pytest.mark.parametrize("device,backend", cases())
def test_noise_forward(record, shape, device, backend):
    x, sigma, _ = _setup(shape, device)
    forward, context = _forward(backend)
    with context(), torch.no_grad():
        record(
            lambda: forward(x, sigma),
            op="inject_noise",
            mode="fwd",
            shape=shape,
            device=device,
            backend=backend,
            bytes_moved=2 * x.numel() * x.element_size(),  # read x, write y
        )


@pytest.mark.parametrize("shape", RESNET20_SHAPES, ids=str)
@pytest.mark.parametrize("device,backend", cases())
def test_noise_forward_backward(record, shape, device, backend):
    x, sigma, grad = _setup(shape, device)
    forward, context = _forward(backend)

    def step():
        torch.autograd.grad(forward(x, sigma), (x, sigma), grad)

    with context():
        record(
            step,
            op="inject_noise",
            mode="fwd+bwd",
            shape=shape,
            device=device,
            backend=backend,
            bytes_moved=3 * x.numel() * x.element_size(),  # x, y; grad_y (grad_x is grad_y)
            saved=saved_bytes(lambda: forward(x, sigma)),
        )
