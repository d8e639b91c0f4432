"""Certified accuracy against L2 radius (Cohen et al. 2019, Figures 6-7), on the Agg canvas."""

from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fastnoise.certify.report import CertifyReport, certified_accuracy

__all__ = ["plot_certified_accuracy"]

_POINTS = 200  # the curve is a step function of the radii: sample it finely


def plot_certified_accuracy(
    report: CertifyReport, path: str | os.PathLike[str] | None = None, title: str | None = None
) -> Figure:
    """The approximate certified accuracy as a function of the radius, from 0 to the
    largest radius that n samples can certify; the grid values are marked."""
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    largest = report.largest_radius
    xs = [largest * k / _POINTS for k in range(_POINTS + 1)]
    ax.plot(xs, [100 * certified_accuracy(report.rows, r) for r in xs], label="certified")
    grid = report.accuracy_at_radii()
    ax.plot(list(grid), [100 * a for a in grid.values()], "o", color="tab:blue")
    ax.set_xlabel("L2 radius (pixels in [0, 1])")
    ax.set_ylabel("Approximate certified accuracy (%)")
    ax.set_xlim(0, largest * 1.02)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(
        title
        or f"σ = {report.sigma:g}, n = {report.n}, α = {report.alpha:g}, {len(report.rows)} images"
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
