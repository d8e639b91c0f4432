"""One L-inf PGD step: fused backends vs the eager sign/max/min/clamp chain, on
ResNet-20's activation shapes (the attack runs on inputs, but the shapes give a range
of sizes)."""

from __future__ import annotations

import pytest
import torch
from eager import eager_pgd_step

import fastnoise

from conftest import RESNET20_SHAPES, cases


@pytest.mark.parametrize("shape", RESNET20_SHAPES, ids=str)
@pytest.mark.parametrize("device,backend", cases())
def test_pgd_step(record, shape, device, backend):
    g = torch.Generator().manual_seed(2)
    x_orig = torch.rand(shape, generator=g).to(device)
    x_adv = (x_orig + 0.01 * torch.randn(shape, generator=g).to(device)).clamp(0, 1)
    grad = torch.randn(shape, generator=g).to(device)
    args = (x_adv, grad, x_orig, 2 / 255, 8 / 255)
    if backend == "eager":
        fn = lambda: eager_pgd_step(*args)
    else:

        def fn():
            with fastnoise.use_backend(backend):
                return fastnoise.pgd_step(*args)

    record(
        fn,
        op="pgd_step",
        mode="step",
        shape=shape,
        device=device,
        backend=backend,
        bytes_moved=4 * x_adv.numel() * x_adv.element_size(),  # read 3 tensors, write 1
    )
