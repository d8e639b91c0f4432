"""Fused kernels vs eager PyTorch on the GPU: median time, speed-up and achieved bandwidth.

    python benchmarks/gpu_bandwidth.py [--backend triton] [--dtype float32]

Shapes are ResNet-V1(20)'s activations at batch 128 plus one large tensor, two of them
also channels_last ("cl" rows), and one whose rows start mid-counter. GB/s counts
the bytes each op must move at minimum (reads + writes of activation-sized tensors) and
is compared with a device-to-device copy, the practical ceiling. Needs CUDA.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable

import torch

SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8), (256, 64, 64, 64)]
# (shape, layout) rows: the contiguous shapes, two channels_last ResNet-20 activations (the
# channel-vector tile kernels) and rows of 3*33*33 features, which start mid-counter.
CASES = [
    *((shape, "contiguous") for shape in SHAPES),
    ((128, 16, 32, 32), "channels_last"),
    ((128, 64, 8, 8), "channels_last"),
    ((128, 3, 33, 33), "contiguous"),
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---- eager baselines: what a plain PyTorch implementation does ------------------------


def eager_inject(x, sigma):
    return x + sigma * torch.randn_like(x)


def eager_pnil(x, weight, bias):
    return x + torch.randn_like(x) * torch.exp((x * weight + bias) * 0.5)


def eager_pgd_step(x_adv, grad, x_orig, step_size, eps):
    x = x_adv + step_size * grad.sign()
    return torch.minimum(torch.maximum(x, x_orig - eps), x_orig + eps).clamp(0.0, 1.0)


def _forward_backward(fn: Callable, x: torch.Tensor, *params: torch.Tensor) -> Callable:
    grad_out = torch.randn_like(x)

    def run():
        y = fn(x, *params)
        torch.autograd.grad(y, (x, *params), grad_out)

    return run


def _median_ms(fn: Callable) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def _rows(shape, dtype, backend, layout="contiguous"):
    import fastnoise

    x = torch.rand(shape, device="cuda", dtype=dtype)
    suffix = ""
    if layout == "channels_last":
        x, suffix = x.contiguous(memory_format=torch.channels_last), " cl"
    x_req = x.clone().requires_grad_()
    n_bytes = x.numel() * x.element_size()
    sigma = torch.full(shape[1:2] + (1, 1), 0.1, device="cuda", requires_grad=True)
    weight = torch.full(shape[1:], 0.1, device="cuda", requires_grad=True)
    bias = torch.zeros(shape[1:], device="cuda", requires_grad=True)
    grad, x_orig = torch.randn_like(x), torch.rand_like(x)
    out = torch.empty_like(x)
    copy_ms = _median_ms(lambda: out.copy_(x))

    def fused(fn):
        def run():
            with fastnoise.use_backend(backend):
                return fn()

        return run

    cases = [
        # (name, fused, eager, activation-sized tensors moved by the fused op)
        (
            "inject fwd",
            fused(lambda: fastnoise.inject_noise(x, sigma.detach())),
            lambda: eager_inject(x, sigma.detach()),
            2,
        ),
        (
            "inject fwd+bwd",
            fused(_forward_backward(fastnoise.inject_noise, x_req, sigma)),
            _forward_backward(eager_inject, x_req, sigma),
            3,  # fwd: read x, write y; bwd: read grad_y (grad_x is grad_y itself)
        ),
        (
            "pnil fwd",
            fused(lambda: fastnoise.pnil(x, weight.detach(), bias.detach())),
            lambda: eager_pnil(x, weight.detach(), bias.detach()),
            2,
        ),
        (
            "pnil fwd+bwd",
            fused(_forward_backward(fastnoise.pnil, x_req, weight, bias)),
            _forward_backward(eager_pnil, x_req, weight, bias),
            5,  # fwd: x, y; bwd: grad_y, x, grad_x
        ),
        (
            "pgd_step",
            fused(lambda: fastnoise.pgd_step(x, grad, x_orig, 0.01, 8 / 255)),
            lambda: eager_pgd_step(x, grad, x_orig, 0.01, 8 / 255),
            4,
        ),
    ]
    yield ("d2d copy", copy_ms, copy_ms, 2 * n_bytes / copy_ms / 1e6, 100.0)
    copy_gbs = 2 * n_bytes / copy_ms / 1e6
    for name, fused_fn, eager_fn, tensors in cases:
        fused_ms, eager_ms = _median_ms(fused_fn), _median_ms(eager_fn)
        gbs = tensors * n_bytes / fused_ms / 1e6
        yield (name + suffix, fused_ms, eager_ms, gbs, 100.0 * gbs / copy_gbs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="triton", help="fastnoise backend to time")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_bandwidth.py needs a CUDA device: torch.cuda.is_available() is False here. "
            "Run it on a GPU machine.",
            file=sys.stderr,
        )
        return 2
    import triton

    print(
        f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | "
        f"triton {triton.__version__} | python {platform.python_version()} | "
        f"backend {args.backend} | {args.dtype}"
    )
    header = f"{'shape':<22}{'op':<16}{'fused ms':>10}{'eager ms':>10}{'speed-up':>10}"
    print(header + f"{'GB/s':>9}{'% copy':>8}")
    for shape, layout in CASES:
        rows = _rows(shape, DTYPES[args.dtype], args.backend, layout)
        for name, fused_ms, eager_ms, gbs, pct in rows:
            print(
                f"{str(shape):<22}{name:<16}{fused_ms:>10.4f}{eager_ms:>10.4f}"
                f"{eager_ms / fused_ms:>9.2f}x{gbs:>9.0f}{pct:>7.0f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
