"""Eager calls on the backends without the C++ front door (``triton``, ``torch``): the
backend's primitives behind a plain ``torch.autograd.Function``.

The custom ops of :mod:`fastnoise._ops` are what torch.compile traces; called eagerly, their
Python dispatch (schema checks, the autograd wrapper, the CPU ``[seed, offset]`` tensor and
its ``.tolist()``) cost about 50 us per forward on the dev CPU, several times the backend's
own host path. Here the seed and offset stay Python ints, saved on the autograd node, and
the backward regenerates the noise from them, exactly as the custom ops do. Outputs go
through ``_ops.fresh_output``: the same layout and no-aliasing contract.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from fastnoise._ops import fresh_output, fresh_pnil_grads


class NoiseInjection(torch.autograd.Function):
    """Learn2Perturb Eq. (4)-(5), y = x + sigma * z; dy/dx = 1, dy/dsigma = z (summed)."""

    @staticmethod
    def forward(ctx, x, sigma, backend, seed: int, offset: int):
        ctx.backend, ctx.seed, ctx.offset = backend, seed, offset
        ctx.save_for_backward(sigma)  # parameter-sized: z is regenerated, not saved
        return fresh_output(backend.noise_forward(x, sigma, seed, offset), x, sigma)

    @staticmethod
    @once_differentiable  # the backward's kernels record no graph: refuse double backward
    def backward(ctx, grad_y):
        (sigma,) = ctx.saved_tensors
        grad_sigma = None
        if ctx.needs_input_grad[1]:
            raw = ctx.backend.noise_backward_sigma(grad_y, sigma, ctx.seed, ctx.offset)
            grad_sigma = fresh_output(raw, sigma, grad_y)
        return grad_y, grad_sigma, None, None, None


class Pnil(torch.autograd.Function):
    """PNIL Eq. (2)-(3), y = x + z * exp((x * W + B) / 2)."""

    @staticmethod
    def forward(ctx, x, weight, bias, backend, seed: int, offset: int):
        ctx.backend, ctx.seed, ctx.offset = backend, seed, offset
        ctx.save_for_backward(x, weight, bias)  # x, not z: z is regenerated
        return fresh_output(backend.pnil_forward(x, weight, bias, seed, offset), x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, bias = ctx.saved_tensors
        grads = ctx.backend.pnil_backward(grad_y, x, weight, bias, ctx.seed, ctx.offset)
        return (*fresh_pnil_grads(grads, grad_y, x, weight, bias), None, None, None)
