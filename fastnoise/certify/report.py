"""The certification report: Cohen et al.'s per-image rows and the approximate certified
accuracy at each radius (their ``analyze.py``), as Markdown, JSON and TSV.

Approximate certified accuracy at radius r: the share of images that CERTIFY labels
correctly with a radius of at least r. "Approximate" because each certificate fails with
probability up to alpha (Cohen et al. Sec. 4).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastnoise.certify.bounds import max_radius
from fastnoise.certify.smooth import ABSTAIN

__all__ = ["CertifiedImage", "CertifyReport", "certified_accuracy", "radius_grid"]


@dataclass
class CertifiedImage:
    """One row of Cohen et al.'s certify output."""

    index: int  # position in the test set
    label: int
    predict: int  # ABSTAIN (-1) when p_A_lower < 1/2
    radius: float  # L2, pixel units; 0.0 when abstaining
    correct: bool
    time_s: float  # the image's share of its group's wall time


def certified_accuracy(rows: Sequence[CertifiedImage], radius: float) -> float:
    """Share of rows certified correct at L2 radius >= ``radius``."""
    if not rows:
        raise ValueError("rows must not be empty")
    return sum(r.correct and r.radius >= radius for r in rows) / len(rows)


def radius_grid(step: float, largest: float) -> list[float]:
    """0, step, 2 step, ... up to ``largest`` (the largest radius n samples can certify)."""
    return [round(k * step, 10) for k in range(int(math.floor(largest / step + 1e-9)) + 1)]


@dataclass
class CertifyReport:
    rows: list[CertifiedImage]
    sigma: float
    n0: int
    n: int
    alpha: float
    radius_step: float = 0.25
    total_s: float = 0.0  # wall time of all CERTIFY calls
    meta: dict[str, Any] = field(default_factory=dict)  # checkpoint, data set, device, ...

    @property
    def largest_radius(self) -> float:
        return max_radius(self.n, self.alpha, self.sigma)

    @property
    def radii(self) -> list[float]:
        return radius_grid(self.radius_step, self.largest_radius)

    def accuracy_at_radii(self) -> dict[float, float]:
        return {r: certified_accuracy(self.rows, r) for r in self.radii}

    @property
    def samples_per_s(self) -> float:
        """Noisy forward samples (n0 + n per image) per second of CERTIFY."""
        samples = len(self.rows) * (self.n0 + self.n)
        return samples / self.total_s if self.total_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "images": len(self.rows),
            "abstained": sum(r.predict == ABSTAIN for r in self.rows),
            "largest_certifiable_radius": self.largest_radius,
            "certified_accuracy": [
                {"radius": r, "accuracy": a} for r, a in self.accuracy_at_radii().items()
            ],
            "total_s": self.total_s,
            "samples_per_s": self.samples_per_s,
            "meta": self.meta,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_tsv(self) -> str:
        """The rows in the column layout of locuslab/smoothing's certify.py output."""
        lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
        for r in self.rows:
            lines.append(
                f"{r.index}\t{r.label}\t{r.predict}\t{r.radius:.3f}\t{int(r.correct)}"
                f"\t{r.time_s:.4f}"
            )
        return "\n".join(lines) + "\n"

    def summary_markdown(self) -> str:
        abstained = sum(r.predict == ABSTAIN for r in self.rows)
        lines = [
            "# Certified robustness (randomized smoothing)",
            "",
            f"Cohen et al. 2019, CERTIFY with sigma = {self.sigma:g}, n0 = {self.n0}, "
            f"n = {self.n}, alpha = {self.alpha:g}, on {len(self.rows)} images; "
            f"{abstained} abstained. Each certificate is an L2 radius in pixel units "
            "([0, 1] pixels) and holds with probability at least 1 - alpha. With this n "
            f"no radius can exceed {self.largest_radius:.3f}.",
            "",
            "| L2 radius | approximate certified accuracy |",
            "|---:|---:|",
        ]
        for radius, accuracy in self.accuracy_at_radii().items():
            lines.append(f"| {radius:g} | {100 * accuracy:.1f}% |")
        lines += [
            "",
            f"{self.total_s:.1f} s in all, {self.total_s / max(len(self.rows), 1):.3f} s per "
            f"image, {self.samples_per_s:,.0f} noisy samples per second.",
        ]
        settings = {k: v for k, v in self.meta.items() if v is not None}
        if settings:
            lines += ["", "| setting | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in settings.items()]
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        lines = [
            self.summary_markdown(),
            "## Per image",
            "",
            "| index | label | predict | radius | correct | time (s) |",
            "|---:|---:|---:|---:|:---:|---:|",
        ]
        for r in self.rows:
            predict = "abstain" if r.predict == ABSTAIN else str(r.predict)
            lines.append(
                f"| {r.index} | {r.label} | {predict} | {r.radius:.3f} | "
                f"{'yes' if r.correct else 'no'} | {r.time_s:.3f} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, folder: str | os.PathLike[str]) -> dict[str, str]:
        """Write certify.md, certify.json, certify.tsv and certified_accuracy.png."""
        from fastnoise.certify.plots import plot_certified_accuracy

        os.makedirs(folder, exist_ok=True)
        paths = {
            kind: os.path.join(folder, name)
            for kind, name in (
                ("markdown", "certify.md"),
                ("json", "certify.json"),
                ("tsv", "certify.tsv"),
                ("plot", "certified_accuracy.png"),
            )
        }
        with open(paths["markdown"], "w", encoding="utf-8") as f:
            f.write(self.to_markdown())
        with open(paths["json"], "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        with open(paths["tsv"], "w", encoding="utf-8") as f:
            f.write(self.to_tsv())
        plot_certified_accuracy(self, paths["plot"])
        return paths
