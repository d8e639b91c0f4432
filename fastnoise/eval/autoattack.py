"""AutoAttack for randomized defenses: the cascade, confirmed successes, RobustBench output.

``standard`` (Croce & Hein, 2020): APGD-CE, APGD-T (targeted DLR, top-9 classes), a
targeted minimum-margin stage, then Square (5000 queries). fastnoise has no FAB, so the
third stage is a substitute: multi-targeted PGD on the margin (CW) loss over the same
top-9 classes (Gowal et al., 2019, "An alternative surrogate loss for PGD-based
adversarial testing"), 100 steps of 2 * eps / 100. ``rand``: APGD-CE and APGD-DLR with
EOT over 20 draws, as AutoAttack's version for randomized defenses.

Each stage attacks only the points still robust. AutoAttack decides success from one
draw's logits, so on a randomized model a lucky draw counts as a break; here every
prediction is a majority vote over ``draws`` noise draws (default 5 on a randomized
model, 1 on a deterministic one): a point is clean-correct when the vote is right, and
broken when the vote on its adversarial example is wrong. ``unconfirmed`` counts the
examples some draw misclassified but the vote did not.

Under ``torchrun`` the samples are sharded over the ranks (:mod:`fastnoise.eval.distributed`):
each rank runs the cascade on its own, and the clean, robust, attacked, broken and
unconfirmed counts, forward passes, rows and stage seconds (device-seconds) are summed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from fastnoise import _validation as v
from fastnoise.eval import distributed as D
from fastnoise.eval.report import format_eps

__all__ = ["AutoAttackReport", "StageResult", "autoattack", "VERSIONS"]

VERSIONS = ("standard", "rand")
NORMS = {"linf": "Linf", "l2": "L2"}
RANDOMIZED_DRAWS = 5  # votes per prediction on a randomized model
TOP_TARGETS = 9  # AutoAttack's targeted stages: the 9 most likely wrong classes


@dataclass
class StageResult:
    name: str
    robust_accuracy: float  # after this stage, over all samples
    attacked: int  # points still robust when it started
    broken: int  # points it broke (vote wrong on its example)
    unconfirmed: int  # examples some draw misclassified, the vote did not
    forward_passes: int
    forward_rows: int
    seconds: float


@dataclass
class AutoAttackReport:
    version: str
    norm: str  # "Linf" or "L2"
    eps: float
    n_samples: int
    draws: int  # votes per prediction
    clean_accuracy: float
    robust_accuracy: float
    stages: list[StageResult] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def forward_passes(self) -> int:
        """Forward passes of the model the attacks spent (the votes not counted)."""
        return sum(s.forward_passes for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "forward_passes": self.forward_passes}

    def to_robustbench_json(self, path: str | os.PathLike[str] | None = None, **fields) -> dict:
        """The result fields of a RobustBench model entry (accuracies in percent, two
        decimals, as strings). ``fields`` fills the ones fastnoise cannot know (name, link,
        authors, venue, architecture, dataset, additional_data, footnote). Written to
        ``path`` as JSON when given."""
        entry = {
            "link": "",
            "name": "",
            "authors": "",
            "additional_data": False,
            "number_forward_passes": self.draws,  # per prediction, as RobustBench counts
            "dataset": "",
            "venue": "",
            "architecture": "",
            "eps": format_eps(self.eps, "linf") if self.norm == "Linf" else f"{self.eps:g}",
            "threat_model": self.norm,
            "norm": self.norm,
            "clean_acc": f"{100 * self.clean_accuracy:.2f}",
            "reported": "",
            "autoattack_acc": f"{100 * self.robust_accuracy:.2f}",
            "footnote": (
                f"fastnoise autoattack version={self.version}, {self.n_samples} samples, "
                f"majority vote over {self.draws} noise draw(s) per prediction"
            ),
            **fields,
        }
        if path is not None:
            with open(path, "w") as handle:
                json.dump(entry, handle, indent=2)
        return entry

    def to_markdown(self) -> str:
        lines = [
            f"AutoAttack ({self.version}, {self.norm}, eps = {format_eps(self.eps)}) on "
            f"{self.n_samples} samples, each prediction a majority vote over {self.draws} "
            "noise draw(s).",
            "",
            "| Stage | Attacked | Broken | Unconfirmed | Robust accuracy (%) | Forward passes "
            "| Seconds |",
            "|---|---|---|---|---|---|---|",
            f"| clean | – | – | – | {100 * self.clean_accuracy:.2f} | – | – |",
        ]
        for s in self.stages:
            lines.append(
                f"| {s.name} | {s.attacked} | {s.broken} | {s.unconfirmed} | "
                f"{100 * s.robust_accuracy:.2f} | {s.forward_passes} | {s.seconds:.1f} |"
            )
        lines.append(f"| **AutoAttack** | | | | **{100 * self.robust_accuracy:.2f}** | "
                     f"{self.forward_passes} | |")  # fmt: skip
        return "\n".join(lines) + "\n"


def _stages(
    model: nn.Module, eps: float, norm: str, version: str, steps: int, queries: int
) -> list[tuple[str, Any]]:
    """(name, attack factory taking (x, y) -> attack) for each stage."""
    from fastnoise.attacks import APGD, Square
    from fastnoise.attacks.apgd import APGDT

    if version == "rand":
        return [
            ("apgd-ce", lambda x, y: APGD(model, eps, "ce", steps, eot=20, norm=norm)),
            ("apgd-dlr", lambda x, y: APGD(model, eps, "dlr", steps, eot=20, norm=norm)),
        ]
    return [
        ("apgd-ce", lambda x, y: APGD(model, eps, "ce", steps, eot=1, norm=norm)),
        ("apgd-t", lambda x, y: APGDT(model, eps, steps, eot=1, norm=norm)),
        ("mt-pgd", lambda x, y: _MultiTargetedPGD(model, eps, norm, steps)),
        ("square", lambda x, y: Square(model, eps, norm=norm, queries=queries)),
    ]


class _MultiTargetedPGD:
    """Targeted PGD on the margin loss toward each of the top-9 wrong classes in turn; a
    point keeps its first success (the FAB-T substitute, see the module docstring)."""

    def __init__(self, model: nn.Module, eps: float, norm: str, steps: int = 100) -> None:
        self.model, self.eps, self.norm, self.steps = model, eps, norm, steps

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from fastnoise.attacks import PGD

        with torch.no_grad():
            logits = self.model(x)
        logits = logits.scatter(1, y[:, None], -math.inf)  # never target the true class
        order = logits.argsort(dim=1, descending=True)
        x_adv, done = x.clone(), torch.zeros(len(y), dtype=torch.bool, device=x.device)
        for k in range(min(TOP_TARGETS, logits.shape[1] - 1)):
            rows = (~done).nonzero().flatten()
            if rows.numel() == 0:
                break
            target = order[rows, k]
            attack = PGD(
                self.model, self.eps, alpha=2 * self.eps / self.steps, steps=self.steps,
                norm=self.norm, loss="margin", targeted=True, target=target,
            )  # fmt: skip
            found = attack(x[rows], y[rows])
            with torch.no_grad():
                hit = self.model(found).argmax(1) != y[rows]
            x_adv[rows[hit]] = found[hit]
            done[rows[hit]] = True
        return x_adv


class _Votes:
    """Majority-vote predictions over ``draws`` forwards (one per draw)."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        self.model, self.draws = model, draws

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vote correct, every draw correct) per sample."""
        preds = torch.stack([self.model(x).argmax(1) for _ in range(self.draws)])
        return preds.mode(dim=0).values == y, (preds == y).all(dim=0)


def autoattack(
    model: nn.Module,
    loader: Iterable[Any],
    eps: float,
    norm: str = "Linf",
    version: str = "standard",
    *,
    draws: int | None = None,
    stages: Sequence[str] | None = None,
    steps: int = 100,
    queries: int = 5000,
    seed: int | None = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    batch_size: int = 128,
    distributed: bool | None = None,
    state_file: str | os.PathLike[str] | None = None,
    save_adv: str | os.PathLike[str] | None = None,
) -> AutoAttackReport:
    """Run the AutoAttack cascade (see the module docstring) on ``loader`` (``(x, y)``
    batches of [0, 1] pixels, or one ``(x, y)`` pair of tensors) at budget ``eps``.

    ``draws``: votes per prediction (None: 5 on a randomized model, 1 otherwise).
    ``stages`` runs only the named stages, in the version's order; ``steps`` (gradient
    stages) and ``queries`` (Square) default to AutoAttack's 100 and 5000.

    Under ``torchrun`` (``distributed`` as for :func:`~fastnoise.eval.evaluate`) every rank
    attacks its share of the samples with its own noise (``seed`` + rank * stride) and
    returns the same report: the counts summed over the ranks (the stages' seconds too, as
    device-seconds), ``draws=None`` voting 5 times if the model is randomized on any rank,
    ``meta`` with rank 0's device and time and the world size. On a deterministic model
    whose outcomes do not hang on the attacks' random starts, the accuracies equal a
    single process's.

    ``state_file`` makes the run resumable (:mod:`fastnoise.eval.state`): after every batch
    of every stage the robust mask, the finished stages, the current stage's counts and
    torch's RNG state are written there, and a rerun with the same arguments continues
    from there with the same random stream (the report equals an uninterrupted run's but
    for the seconds); a file of other settings is refused, and the file is deleted at the
    end. With ``save_adv`` (a folder) the broken points' examples are kept in the state
    too, and ``<save_adv>/autoattack.pt`` receives the final adversarial set: ``x_adv``
    (the input's dtype; a broken point's example, else the clean image), ``y``, ``index``
    and the ``broken`` mask. Sharded runs refuse both.
    """
    from fastnoise.eval import state as S
    from fastnoise.eval.checks import is_randomized
    from fastnoise.eval.evaluate import (
        _as_loader,
        _batches,
        _ForwardCounter,
        _frozen_eval,
        _resolve_device,
        _seeded,
    )

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    key = str(norm).lower()
    if key not in NORMS:
        raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    eps = v.check_non_negative_number("eps", eps)
    if not math.isfinite(eps):
        raise ValueError(f"eps must be finite, got {eps}")
    if draws is not None:
        v.check_positive_int("draws", draws)
    v.check_positive_int("steps", steps)
    v.check_positive_int("queries", queries)
    plan = _stages(model, eps, key, version, steps, queries)
    if stages is not None:
        known = [name for name, _ in plan]
        unknown = [s for s in stages if s not in known]
        if unknown or not stages:
            raise ValueError(f"stages must name stages of {version!r}: {known}, got {stages}")
        plan = [(name, make) for name, make in plan if name in stages]
    shard = D.resolve(distributed)
    if shard.enabled:
        D.refuse_ddp(model)
        progress = progress and shard.is_main
        if state_file is not None or save_adv is not None:
            raise ValueError(
                "state_file and save_adv are not supported in a sharded (torchrun) run; "
                "run in one process to resume or save adversarial examples"
            )
    device = _resolve_device(model, device)
    loader = _as_loader(loader, batch_size, shard)
    started = time.perf_counter()
    with _frozen_eval(model), _seeded(seed, device, shard):
        if shard.enabled:
            x, y, n, draws = _local_share(model, loader, device, draws, shard)
        else:
            x, y = (torch.cat(parts) for parts in zip(*_batches(loader, device), strict=True))
            if len(y) == 0:
                raise ValueError("loader yielded no samples")
            n = len(y)
        fingerprint = {
            "version": version, "eps": eps, "norm": NORMS[key], "stages": [s for s, _ in plan],
            "steps": steps, "queries": queries, "draws": draws, "seed": seed,
            "batch_size": batch_size, "n_samples": n, "save_adv": save_adv is not None,
        }  # fmt: skip
        saved = None if state_file is None else S.load_state(state_file, fingerprint, "autoattack")
        if saved is not None:
            draws = int(saved["draws"])
        elif draws is None and not shard.enabled:
            draws = RANDOMIZED_DRAWS if is_randomized(model, x[: min(len(x), 16)]) else 1
        votes = _Votes(model, draws)
        if saved is not None:
            clean_robust = saved["clean_robust"].to(device)
            robust = saved["robust"].to(device)
        else:
            chunks = [votes(xb, yb)[0] for xb, yb in _chunks(x, y, batch_size)]
            empty = torch.zeros(0, dtype=torch.bool, device=device)
            clean_robust = torch.cat(chunks) if chunks else empty
            robust = clean_robust.clone()
        adv = x.clone() if save_adv is not None else None
        if saved is not None and adv is not None:
            adv[saved["adv_index"].to(device)] = saved["adv_x"].to(device=device, dtype=x.dtype)
        report = AutoAttackReport(
            version=version, norm=NORMS[key], eps=eps, n_samples=n, draws=draws,
            clean_accuracy=float(clean_robust.float().mean()), robust_accuracy=0.0,
        )  # fmt: skip
        if saved is not None:
            report.stages = [StageResult(**stage) for stage in saved["stages"]]
            S.restore_rng(saved["rng"], device)
        done = len(report.stages)
        partial = saved["partial"] if saved is not None and saved["partial"] else None

        def save(partial: dict[str, Any] | None) -> None:
            if state_file is None:
                return
            fields: dict[str, Any] = {}
            if adv is not None:
                index = (clean_robust & ~robust).nonzero().flatten()
                fields = {"adv_index": index.cpu(), "adv_x": adv[index].cpu()}
            S.save_state(
                state_file, fingerprint, "autoattack", draws=draws,
                clean_robust=clean_robust.cpu(), robust=robust.cpu(),
                stages=[asdict(stage) for stage in report.stages], partial=partial or {},
                rng=S.rng_state(device), **fields,
            )  # fmt: skip

        # sharded: this rank's robust points after the clean votes and after each stage
        counts = [int(robust.sum())] if shard.enabled else []
        counter = _ForwardCounter(model, 1)  # evaluate's, one slot: the stage running
        try:
            for k, (name, make) in enumerate(tqdm(plan, desc="autoattack", disable=not progress)):
                if k < done:
                    continue
                report.stages.append(
                    _run_stage(
                        name, make, x, y, robust, votes, counter, batch_size, device,
                        partial if k == done else None, save, adv,
                    )
                )  # fmt: skip
                save(None)
                if shard.enabled:
                    counts.append(int(robust.sum()))
        finally:
            counter.handle.remove()
        report.robust_accuracy = float(robust.float().mean())
        if shard.enabled:
            _reduce_report(report, counts, shard)
        if save_adv is not None and adv is not None:
            from fastnoise.train.checkpoint import atomic_save

            atomic_save(
                {
                    "x_adv": adv.cpu(), "y": y.cpu(), "index": torch.arange(n),
                    "broken": (clean_robust & ~robust).cpu(),
                },
                os.path.join(os.fspath(save_adv), "autoattack.pt"),
            )  # fmt: skip
    where, seconds = str(device), round(time.perf_counter() - started, 3)
    if shard.enabled:
        where, seconds = shard.broadcast((where, seconds))
        report.meta["world_size"] = shard.world_size
    report.meta.update(seed=seed, device=where, torch=torch.__version__, seconds=seconds)
    if state_file is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_file)
    return report


def _local_share(model, loader, device, draws, shard):
    """This rank's samples (possibly none), the run's sample count and the votes per
    prediction (randomized if any rank finds the model randomized)."""
    from fastnoise.eval.checks import is_randomized
    from fastnoise.eval.evaluate import _local_samples

    mine = _local_samples(loader, device)
    if mine is None:
        x = torch.zeros(0, device=device)
        y = torch.zeros(0, dtype=torch.long, device=device)
    else:
        x, y, _ = mine
    randomized = draws is None and len(y) > 0 and is_randomized(model, x[: min(len(x), 16)])
    n, randomized = shard.all_reduce(torch.tensor([len(y), int(randomized)])).tolist()
    if n == 0:
        raise ValueError("loader yielded no samples")
    if draws is None:
        draws = RANDOMIZED_DRAWS if randomized else 1
    return x, y, n, draws


def _fraction(count: int, n: int) -> float:
    """count / n as a single process's ``robust.float().mean()`` gives it (float32)."""
    return float(torch.tensor(count, dtype=torch.float32) / n)


def _reduce_report(report: AutoAttackReport, counts: list[int], shard: D.Shard) -> None:
    """Sharded: the report's counts summed over the ranks, in place. ``counts``: this
    rank's robust points after the clean votes and after each stage."""
    rows = [
        [s.attacked, s.broken, s.unconfirmed, s.forward_passes, s.forward_rows, s.seconds]
        for s in report.stages
    ]
    flat = torch.tensor([*counts, *(v for row in rows for v in row)], dtype=torch.float64)
    flat = shard.all_reduce(flat).tolist()  # counts < 2**53: exact in float64
    n, width = report.n_samples, 6
    report.clean_accuracy = _fraction(int(flat[0]), n)
    for k, stage in enumerate(report.stages):
        row = flat[len(counts) + k * width : len(counts) + (k + 1) * width]
        stage.attacked, stage.broken, stage.unconfirmed = (int(v) for v in row[:3])
        stage.forward_passes, stage.forward_rows = int(row[3]), int(row[4])
        stage.seconds = round(row[5], 3)  # device-seconds over all ranks
        stage.robust_accuracy = _fraction(int(flat[1 + k]), n)
    report.robust_accuracy = _fraction(int(flat[len(counts) - 1]), n)


def _chunks(x: torch.Tensor, y: torch.Tensor, size: int):
    for start in range(0, len(y), size):
        yield x[start : start + size], y[start : start + size]


def _run_stage(
    name, make, x, y, robust, votes, counter, batch_size, device, partial=None, save=None, adv=None
) -> StageResult:
    """Attack the still-robust points with one stage; update ``robust`` in place.
    ``partial``: the saved progress of an interrupted run in this stage; ``save`` is
    called with the progress after every batch; ``adv`` receives the broken examples."""
    if partial:
        rows, begin = partial["rows"].to(device), int(partial["next"])
        broken, unconfirmed = int(partial["broken"]), int(partial["unconfirmed"])
        passes0, rows0, seconds0 = (
            int(partial["passes"]), int(partial["forward_rows"]), float(partial["seconds"])
        )  # fmt: skip
    else:
        rows, begin = robust.nonzero().flatten(), 0
        broken = unconfirmed = passes0 = rows0 = 0
        seconds0 = 0.0
    before_passes, before_rows = counter.passes[0], counter.rows[0]
    started = time.perf_counter()
    for start in range(begin, rows.numel(), batch_size):
        idx = rows[start : start + batch_size]
        attack = make(x[idx], y[idx])
        with counter.attack(0, device), torch.enable_grad():
            x_adv = attack(x[idx], y[idx]).detach()
        vote_right, all_right = votes(x_adv, y[idx])
        robust[idx[~vote_right]] = False
        if adv is not None:
            adv[idx[~vote_right]] = x_adv[~vote_right].to(adv.dtype)
        broken += int((~vote_right).sum())
        unconfirmed += int((vote_right & ~all_right).sum())
        if save is not None:
            save({
                "rows": rows.cpu(), "next": start + batch_size, "broken": broken,
                "unconfirmed": unconfirmed, "passes": passes0 + counter.passes[0] - before_passes,
                "forward_rows": rows0 + counter.rows[0] - before_rows,
                "seconds": seconds0 + time.perf_counter() - started,
            })  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return StageResult(
        name=name,
        robust_accuracy=float(robust.float().mean()),
        attacked=int(rows.numel()),
        broken=broken,
        unconfirmed=unconfirmed,
        forward_passes=passes0 + counter.passes[0] - before_passes,
        forward_rows=rows0 + counter.rows[0] - before_rows,
        seconds=round(seconds0 + time.perf_counter() - started, 3),
    )
