"""Matplotlib figures for the report, drawn on the Agg canvas.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), never pyplot,
so saving plots neither needs a display nor changes the user's matplotlib backend.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fastnoise.eval.report import RobustnessReport, SweepResult, format_eps, mean_std, on_255_grid

__all__ = ["plot_accuracy_vs_eps", "plot_attack_accuracy"]


def _new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy_vs_eps(
    sweeps: Sequence[SweepResult],
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """One line per sweep (attack or model) with ±std error bars, like Learn2Perturb
    Figures 2-3. L-inf budgets on the 1/255 grid are drawn in units of 1/255."""
    if len(sweeps) == 0:
        raise ValueError("sweeps must not be empty")
    fig = _new_figure()
    ax = fig.add_subplot()
    in_255 = all(
        s.norm == "linf" and all(e == 0 or on_255_grid(e) for e in s.eps_values) for s in sweeps
    )
    scale = 255.0 if in_255 else 1.0
    for s in sweeps:
        xs = [e * scale for e in s.eps_values]
        ax.errorbar(
            xs,
            [100 * m for m in s.means],
            yerr=[100 * d for d in s.stds],
            marker="o",
            capsize=3,
            label=s.label,
        )
    ax.set_xlabel("ε (×1/255)" if in_255 else "ε")
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_attack_accuracy(
    report: RobustnessReport,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Bar chart: clean, each attack, and the per-sample worst case, with ±std error bars."""
    labels = ["clean"] + [f"{a.name}\n{format_eps(a.eps, a.norm)}" for a in report.attacks]
    series = [report.clean] + [a.accuracies for a in report.attacks]
    colors = ["tab:green"] + ["tab:blue"] * len(report.attacks)
    if report.attacks:
        labels.append("worst\ncase")
        series.append(report.worst_case)
        colors.append("tab:red")
    stats = [mean_std(s) for s in series]
    fig = _new_figure(max(4.0, 1.0 + 0.9 * len(labels)), 4.0)
    ax = fig.add_subplot()
    positions = list(range(len(labels)))
    ax.bar(
        positions,
        [100 * m for m, _ in stats],
        yerr=[100 * s for _, s in stats],
        capsize=3,
        color=colors,
    )
    for x, (m, s) in zip(positions, stats, strict=True):
        ax.text(x, 100 * (m + s) + 1.5, f"{100 * m:.1f}", ha="center", fontsize=8)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel("Accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"Robust accuracy ({report.repeats} repeats, {report.n_samples} samples)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
