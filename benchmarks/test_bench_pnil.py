"""PNIL: fused backends vs eager ``x + randn_like(x) * exp((x * w + b) / 2)``, forward
and forward+backward, on ResNet-20's activation shapes."""

from __future__ import annotations

import contextlib

import pytest
import torch
from eager import eager_pnil

import fastnoise

from conftest import RESNET20_SHAPES, cases, saved_bytes


def _setup(shape, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g).to(device).requires_grad_()
    weight = (torch.randn(shape[1:], generator=g) * 0.1).to(device).requires_grad_()
    bias = (torch.randn(shape[1:], generator=g) * 0.1 - 3).to(device).requires_grad_()
    grad = torch.randn(shape, generator=g).to(device)
    return x, weight, bias, grad


def _forward(backend):
    if backend == "eager":
        return eager_pnil, contextlib.nullcontext
    return fastnoise.pnil, lambda: fastnoise.use_backend(backend)


@pytest.mark.parametrize("shape", RESNET20_SHAPES, ids=str)
@pytest.mark.parametrize("device,backend", cases())
def test_pnil_forward(record, shape, device, backend):
    x, weight, bias, _ = _setup(shape, device)
    forward, context = _forward(backend)
    with context(), torch.no_grad():
        record(
            lambda: forward(x, weight, bias),
            op="pnil",
            mode="fwd",
            shape=shape,
            device=device,
            backend=backend,
            bytes_moved=2 * x.numel() * x.element_size(),  # read x, write y
        )


@pytest.mark.parametrize("shape", RESNET20_SHAPES, ids=str)
@pytest.mark.parametrize("device,backend", cases())
def test_pnil_forward_backward(record, shape, device, backend):
    x, weight, bias, grad = _setup(shape, device)
    forward, context = _forward(backend)
    params = (x, weight, bias)

    def step():
        torch.autograd.grad(forward(*params), params, grad)

    with context():
        record(
            step,
            op="pnil",
            mode="fwd+bwd",
            shape=shape,
            device=device,
            backend=backend,
            bytes_moved=5 * x.numel() * x.element_size(),  # fwd x, y; bwd grad_y, x, grad_x
            saved=saved_bytes(lambda: forward(*params)),
        )
