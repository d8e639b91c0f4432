"""One Learn2Perturb training epoch of ResNet-V1(20): fused fastnoise ops vs eager PyTorch.

The same algorithm (``fastnoise.train`` Learn2Perturb: PGD-7 examples, the Eq. (11) mixed
loss, the W half then the theta half) runs twice from the same weights on generated
CIFAR-shaped data: once with the fused ops, once with the noise layers and the attack step
swapped for the eager code a user would write (``x + theta * torch.randn_like(x)``,
``torch.min(torch.max(...))``). Prints seconds per epoch and the speed-up.

    python benchmarks/l2p_epoch.py                     # CPU: 256 images
    python benchmarks/l2p_epoch.py --images 10000      # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from unittest import mock

import torch

from fastnoise import models
from fastnoise.train import TrainConfig, build_method


def eager_inject_noise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x + sigma * torch.randn_like(x)


def eager_inject_noise_abs(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The layer's op eagerly: ``x + |theta| * z``, as Learn2Perturb's code with abs."""
    return eager_inject_noise(x, sigma.abs())


def eager_random_start(x, eps, project=True, clip=(0.0, 1.0), **_):
    x = x + torch.empty_like(x).uniform_(-eps, eps)
    return x.clamp(*clip) if project else x


def eager_pgd_step(x_adv, grad, x_orig, step_size, eps, clip=(0.0, 1.0)):
    x = x_adv + step_size * grad.sign()
    return torch.min(torch.max(x, x_orig - eps), x_orig + eps).clamp(*clip)


@contextlib.contextmanager
def eager_ops():
    """Swap the fused ops for eager PyTorch where the layer and the trainer call them."""
    with (
        mock.patch("fastnoise.nn.perturbation.inject_noise_abs", eager_inject_noise_abs),
        mock.patch("fastnoise.train.adversarial.random_start", eager_random_start),
        mock.patch("fastnoise.train.adversarial.pgd_step", eager_pgd_step),
    ):
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(model, config, images, labels, batch_size, device) -> float:
    method = build_method(config, model)
    method.begin_epoch(config.noise_off_epochs)  # a noise epoch: both halves do work
    batches = list(zip(images.split(batch_size), labels.split(batch_size), strict=True))
    method.train_step(*batches[0], config.noise_off_epochs)  # warm-up (builds, caches)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        method.train_step(x, y, config.noise_off_epochs)
    synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="generated CIFAR-shaped images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--host-bound",
        action="store_true",
        help="32 images in batches of 2: tiny activations, so the Python and dispatch "
        "around each op decide the time (per-call cost, as on a GPU)",
    )
    args = parser.parse_args(argv)
    if args.host_bound:
        args.images, args.batch_size = 32, 2
    device = torch.device(args.device)

    torch.manual_seed(args.seed)
    config = TrainConfig.from_preset("l2p-cifar10-resnet20", device=args.device)
    model = models.resnet_v1(depth=20, noise="l2p").to(device)
    images = torch.rand(args.images, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.images,), device=device)

    fused = epoch_seconds(copy.deepcopy(model), config, images, labels, args.batch_size, device)
    with eager_ops():
        eager = epoch_seconds(copy.deepcopy(model), config, images, labels, args.batch_size, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"Learn2Perturb epoch, ResNet-V1(20), {args.images} images, batch {args.batch_size}, "
        f"PGD-{config.attack_steps}, {name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'ops':<8}{'s/epoch':>10}{'images/s':>10}")
    for label, seconds in (("eager", eager), ("fastnoise", fused)):
        print(f"{label:<8}{seconds:>10.2f}{args.images / seconds:>10.1f}")
    print(f"speed-up: {eager / fused:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
