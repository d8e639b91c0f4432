"""Training plots: theta evolution (Learn2Perturb Fig. 4) and PNIL variance maps
(PNIL paper Figs. 1 and 3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["plot_theta_evolution", "plot_theta_comparison", "plot_pnil_variance"]


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def _theta_layers(metrics: list[dict[str, Any]], what: str) -> list[str]:
    layers = sorted({name for m in metrics for name in (m.get("theta_mean") or {})})
    if not layers:
        raise ValueError(f"{what} has no theta_mean entries: the model has no noise layers")
    return layers


def _theta_series(metrics: list[dict[str, Any]], layer: str) -> tuple[tuple, tuple]:
    """(epochs, mean theta) of one layer, over the epochs that logged it."""
    points = [(m["epoch"], m["theta_mean"][layer]) for m in metrics if layer in m["theta_mean"]]
    xs, ys = zip(*points, strict=True)
    return xs, ys


def _save(plt, fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_theta_evolution(metrics: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Mean theta per perturbation-injection layer against the epoch: with the harmonic
    regularizer it should grow once noise starts and then settle (Learn2Perturb Fig. 4)."""
    plt = _pyplot()
    layers = _theta_layers(metrics, "metrics")
    fig, ax = plt.subplots(figsize=(6, 4))
    cmap = plt.get_cmap("viridis")
    for i, layer in enumerate(layers):
        xs, ys = _theta_series(metrics, layer)
        ax.plot(xs, ys, color=cmap(i / max(len(layers) - 1, 1)), label=layer, marker=".")
    off = [m["epoch"] for m in metrics if m.get("noise_on") is False]
    if off:
        ax.axvspan(min(off) - 0.5, max(off) + 0.5, color="0.9", label="noise off")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean theta (noise std)")
    ax.set_title("Learned noise per layer")
    if len(layers) <= 12:
        ax.legend(fontsize=6, ncol=2)
    return _save(plt, fig, path)


def plot_theta_comparison(
    runs: dict[str, list[dict[str, Any]]],
    path: str | os.PathLike,
    lr_drops: tuple[int, ...] = (),
    title: str = "Learned noise: theta update rules",
) -> Path:
    """Learn2Perturb Fig. 4 for several runs on one axis (e.g. one per ``theta_update``):
    mean theta per layer against the epoch, one colour per run, one line style per layer;
    a dashed vertical after each of ``lr_drops`` epochs (the multistep milestones)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = plt.get_cmap("tab10")
    styles = ("-", "--", ":", "-.")
    for i, (label, metrics) in enumerate(runs.items()):
        for j, layer in enumerate(_theta_layers(metrics, f"run {label!r}")):
            xs, ys = _theta_series(metrics, layer)
            ax.plot(xs, ys, color=colours(i), linestyle=styles[j % len(styles)], marker=".",
                    label=f"{label}: {layer}")  # fmt: skip
    for epoch in lr_drops:
        ax.axvline(epoch + 0.5, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel("epoch (dashed: lr x 0.1 after it)" if lr_drops else "epoch")
    ax.set_ylabel("mean theta (noise std)")
    ax.set_title(title)
    ax.legend(fontsize=6)
    return _save(plt, fig, path)


@torch.no_grad()
def plot_pnil_variance(layer: nn.Module, images: torch.Tensor, path: str | os.PathLike) -> Path:
    """For a few inputs: the image, the learned bias B and weight W, the variance
    exp(Sigma) with Sigma = X*W + B (Eq. 2), and one noisy output (Eq. 3)."""
    plt = _pyplot()
    images = images.float().cpu()
    weight = layer.weight.detach().float().cpu()
    bias = layer.bias.detach().float().cpu()
    variance = torch.exp(images * weight + bias)  # Eq. (2), exp(Sigma)
    noisy = images + torch.randn_like(images) * variance.sqrt()  # Eq. (3), display only
    channels = images.shape[1]
    names = "RGB" if channels == 3 else [str(i) for i in range(channels)]
    # one variance map per channel, as PNIL Fig. 3 shows Sigma_R, Sigma_G, Sigma_B
    per_channel = [
        (
            f"exp(Sigma) {names[i]}" if channels > 1 else "variance exp(Sigma)",
            variance[:, i : i + 1],
            "magma",
        )
        for i in range(channels)
    ]
    columns = [
        ("input", images, "gray"),
        ("bias B", bias.expand_as(images), "coolwarm"),
        ("weight W", weight.expand_as(images), "coolwarm"),
        *per_channel,
        ("output", noisy.clamp(0, 1), "gray"),
    ]
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.2 * n), squeeze=False)
    for row in range(n):
        for col, (title, data, cmap) in enumerate(columns):
            ax = axes[row][col]
            img = data[row]
            img = img.mean(0) if title != "input" and title != "output" else img
            if img.dim() == 3:
                img = img.permute(1, 2, 0).squeeze(-1)
            shown = ax.imshow(img.numpy(), cmap=cmap)
            if title not in ("input", "output"):
                fig.colorbar(shown, ax=ax, fraction=0.046)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    return _save(plt, fig, path, dpi=110)
