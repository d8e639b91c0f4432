"""The training loop: data on the device, one method per batch, metrics, checkpoints.

``Trainer(config).fit()`` (or ``fit(config)``) trains, writes ``last.pt`` every epoch
(atomically), ``best.pt`` when a held-out set picks one, ``metrics.jsonl`` and plots to
``config.out``, and returns a :class:`TrainResult` holding the best epoch's model when
there is a held-out set, else the last epoch's. It seeds torch, numpy and ``random``
globally from ``config.seed`` (rank r's noise stream from ``seed + r * 1000003``).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from fastnoise import rng
from fastnoise.train import adversarial as adv
from fastnoise.train import distributed as D
from fastnoise.train.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    capture_rng_state,
    interrupts_deferred,
    load_checkpoint,
    restore_rng_state,
)
from fastnoise.train.config import TrainConfig
from fastnoise.train.forwards import TrainForward
from fastnoise.train.methods import TrainingMethod
from fastnoise.train.noise_params import pnil_layer, theta_means
from fastnoise.train.registry import build_method
from fastnoise.train.run_folder import (
    BEST,
    LAST,
    METRICS,
    claim_output_folder,
    read_resume_point,
)

__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "fit", "model_config_for"]

_NONFINITE_CHECK_EVERY = 20  # steps between host syncs for the NaN check and the bar
_RANK_SEED_STRIDE = 1_000_003  # rank r draws its noise from torch.manual_seed(seed + r*stride)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the model to test: with a holdout, the epoch with
    the lowest adversarial validation loss (PNIL Sec. 4.4; the weights of ``best_checkpoint``),
    else the last epoch (``checkpoint``, last.pt). ``model_source`` says which ("best" or
    "last") and ``model_epoch`` which epoch; ``load_model(result.checkpoint)`` gives the
    last epoch's weights either way."""

    model: nn.Module
    metrics: list[dict[str, Any]]
    out_dir: Path
    checkpoint: Path | None
    best_checkpoint: Path | None = None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    model_source: str = "last"
    model_epoch: int | None = None


def model_config_for(config: TrainConfig) -> dict[str, Any]:
    """``{"name": ..., **kwargs}`` for ``fastnoise.models.build``: what eval needs to rebuild."""
    from fastnoise.data import dataset_info

    info = dataset_info(config.dataset)
    model_config: dict[str, Any] = {
        "name": config.model,
        "in_channels": info.in_channels,
        "num_classes": info.num_classes,
        "input_size": info.image_size,
        "noise": config.noise_kind,
        "pnil": bool(config.pnil),
        "mean": list(info.mean),  # the model normalizes [0, 1] pixels itself
        "std": list(info.std),
    }
    if config.noise_kind is not None:
        model_config.update(noise_init=config.theta_init, theta_min=config.theta_min)
    return {**model_config, **config.model_kwargs}


def _build_model(model_config: dict[str, Any]) -> nn.Module:
    from fastnoise import models

    kwargs = dict(model_config)
    return models.build(kwargs.pop("name"), **kwargs)


def _load_tensors(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from fastnoise.data import as_tensors, load_dataset

    dataset = load_dataset(
        config.dataset, root=config.data_root, train=True, download=config.download
    )
    return as_tensors(dataset, limit=config.train_limit)


def _random_crop_flip(x: torch.Tensor) -> torch.Tensor:
    """CIFAR augmentation on a device batch: zero-pad 4, random 32x32 crop, random flip."""
    n, c, h, w = x.shape
    pad = 4
    padded = F.pad(x, (pad, pad, pad, pad))
    di = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    dj = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    rows = (di + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dj + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class Trainer:
    """One training run. ``data`` (optional): ``(X, Y)`` tensors instead of the data set."""

    def __init__(
        self,
        config: TrainConfig,
        data: tuple[torch.Tensor, torch.Tensor] | None = None,
        model_config: dict[str, Any] | None = None,
    ):
        config.validate()
        if config.method == "rfgsm" and config.holdout == 0:
            warnings.warn(
                "rfgsm with holdout=0 has no held-out batch, so no catastrophic-overfitting "
                "stop; pass holdout (e.g. 512)",
                stacklevel=2,
            )
        self.config = config
        self._data = data
        self.model_config = model_config or model_config_for(config)
        self.out_dir = Path(config.out)
        self._config_changes: list[dict[str, Any]] = []  # filled by a resume

    # -- setup ------------------------------------------------------------------------
    def _precision(self, device: torch.device):
        amp = self.config.amp
        if amp == "off":
            return contextlib.nullcontext, None
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        return (lambda: torch.autocast(device.type, dtype=dtype)), scaler

    def _split(self, X: torch.Tensor, Y: torch.Tensor):
        """Hold out ``config.holdout`` images, chosen by the seed, for validation."""
        k = self.config.holdout
        if k == 0:
            return (X, Y), None
        if k >= len(X):
            raise ValueError(f"holdout ({k}) must be smaller than the training set ({len(X)})")
        perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(self.config.seed))
        train, held = perm[k:].sort().values, perm[:k].sort().values
        return (X[train], Y[train]), (X[held], Y[held])

    # -- validation -------------------------------------------------------------------
    def _validate(self, method: TrainingMethod, data, dist_info) -> dict[str, float]:
        """Clean and PGD accuracy / loss on this rank's shard of the held-out images."""
        c = self.config
        X, Y = (
            data[0][dist_info.rank :: dist_info.world_size],
            data[1][dist_info.rank :: dist_info.world_size],
        )
        model = method.model
        model.eval()
        sums = {"n": torch.zeros((), device=X.device, dtype=torch.float64)}
        for k in ("clean_correct", "adv_correct", "clean_loss", "adv_loss"):
            sums[k] = torch.zeros((), device=X.device, dtype=torch.float64)
        step = 2.5 * c.eps / c.val_pgd_steps  # can reach every point of the eps-ball
        for xb, yb in zip(X.split(c.batch_size), Y.split(c.batch_size), strict=True):
            x_adv = adv.pgd_examples(model, xb, yb, c.eps, step, c.val_pgd_steps, method._forward)
            with torch.no_grad():
                for tag, inp in (("clean", xb), ("adv", x_adv)):
                    logits = method._forward(model, inp).float()
                    sums[f"{tag}_correct"] += (logits.argmax(1) == yb).sum()
                    sums[f"{tag}_loss"] += F.cross_entropy(logits, yb, reduction="sum")
            sums["n"] += yb.numel()
        model.train()
        sums = D.all_reduce_sum(sums, dist_info)
        n = max(float(sums["n"]), 1.0)
        return {
            "val_acc_clean": float(sums["clean_correct"]) / n,
            "val_acc_pgd": float(sums["adv_correct"]) / n,
            "val_loss_clean": float(sums["clean_loss"]) / n,
            "val_loss_pgd": float(sums["adv_loss"]) / n,
        }

    # -- checkpoints ------------------------------------------------------------------
    def _checkpoint(self, model, method, epoch, step, metrics, best, rng_states, stopped):
        return {
            "format": CHECKPOINT_FORMAT,
            **self._identity(),
            "epoch": epoch,  # completed epochs
            "global_step": step,
            "model_config": dict(self.model_config),
            "model": model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in method.optimizers.items()},
            "scaler": method.scaler.state_dict() if method.scaler is not None else None,
            "rng": rng_states,  # one entry per rank
            "metrics": metrics,
            "best": best,
            "stopped_early": stopped,
            "config": self.config.to_dict(),
            "config_changes": self._config_changes,  # what a resume changed, and when
            "rank_seed_probe": self._rank_probe,  # first noise seed of each rank
        }

    def _identity(self) -> dict[str, Any]:
        """What `fastnoise eval` reads to pick defaults (data set, budget)."""
        c = self.config
        return {"dataset": c.dataset, "method": c.method, "eps": c.eps}

    def _write_metrics(self, metrics: list[dict[str, Any]]) -> None:
        path = self.out_dir / METRICS
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(m) + "\n" for m in metrics))
        tmp.replace(path)

    # -- the run ----------------------------------------------------------------------
    def fit(self) -> TrainResult:
        c = self.config
        dist_info, device = D.setup(c.device)
        try:
            return self._fit(dist_info, device)
        finally:
            D.cleanup(dist_info)

    def _fit(self, dist_info: D.DistInfo, device: torch.device) -> TrainResult:
        c = self.config
        autocast, scaler = self._precision(device)  # before any work: a bad pair fails fast
        last_path = self.out_dir / LAST
        claim_output_folder(c, self.out_dir, dist_info.is_main)
        say = tqdm.write if dist_info.is_main else (lambda _message: None)
        ckpt, self._config_changes = read_resume_point(c, last_path, say)
        torch.manual_seed(c.seed)
        np.random.seed(c.seed)
        random.seed(c.seed)
        X, Y = self._data if self._data is not None else _load_tensors(c)
        (X, Y), held = self._split(X, Y)
        X, Y = X.to(device), Y.to(device)
        held = None if held is None else (held[0].to(device), held[1].to(device))

        model = _build_model(self.model_config)  # same init on every rank (same seed)
        model = model.to(device)
        if c.channels_last:
            model = model.to(memory_format=torch.channels_last)
        # independent noise per rank: the functional ops draw seeds from this generator
        torch.manual_seed(c.seed + _RANK_SEED_STRIDE * dist_info.rank)
        probe = torch.Generator().set_state(torch.get_rng_state())
        rank_probe = D.all_gather_objects(rng.draw_seed(generator=probe), dist_info)
        self._rank_probe = rank_probe

        # clean and adversarial batches in one call of the module DDP wraps (forwards.py)
        train_forward: nn.Module = TrainForward(model, concatenate=c.mixed_bn)
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            # noise parameters sit unused while noise is off (Learn2Perturb warm-up)
            unused = c.noise_kind == "l2p" and c.noise_off_epochs > 0
            train_forward = nn.parallel.DistributedDataParallel(
                train_forward, device_ids=ids, find_unused_parameters=unused
            )
        if c.compile:
            train_forward = torch.compile(train_forward)
        method = build_method(
            c, model, train_forward=train_forward, autocast=autocast, scaler=scaler
        )

        metrics: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        start_epoch, global_step, stopped = 0, 0, False
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            for k, opt in method.optimizers.items():
                _load_optimizer_state(opt, ckpt["optimizers"][k])
            if scaler is not None and ckpt["scaler"] is not None:
                scaler.load_state_dict(ckpt["scaler"])
            states = ckpt["rng"]
            if len(states) == dist_info.world_size:
                restore_rng_state(_cpu_rng(states[dist_info.rank]))
            else:  # another world size: a fresh, still rank-distinct stream
                torch.manual_seed(c.seed + _RANK_SEED_STRIDE * dist_info.rank + ckpt["epoch"])
            metrics, best = list(ckpt["metrics"]), ckpt["best"]
            start_epoch, global_step, stopped = (
                ckpt["epoch"],
                ckpt["global_step"],
                ckpt["stopped_early"],
            )
        if dist_info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._write_metrics(metrics)  # drops lines of an epoch that never finished

        sampler = DistributedSampler(
            range(len(X)), num_replicas=dist_info.world_size, rank=dist_info.rank,
            shuffle=True, seed=c.seed,
        )  # fmt: skip
        steps = math.ceil(len(sampler) / c.batch_size)
        if c.max_steps_per_epoch is not None:
            steps = min(steps, c.max_steps_per_epoch)
        model.train()
        for epoch in range(start_epoch, c.epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            logged = method.begin_epoch(epoch)
            sampler.set_epoch(epoch)  # the data order is a function of (seed, epoch)
            order = torch.tensor(list(sampler), dtype=torch.long, device=device)
            sums: dict[str, torch.Tensor] = {}
            bad_step = torch.full((), -1, dtype=torch.long, device=device)
            bar = tqdm(
                range(steps), desc=f"{c.method} epoch {epoch + 1}/{c.epochs}", leave=False,
                disable=not (c.progress and dist_info.is_main), dynamic_ncols=True,
            )  # fmt: skip
            lrs: dict[str, float] = {}
            with bar:  # closed (and cleared) on Ctrl-C too, before the CLI reports it
                for step in bar:
                    idx = order[step * c.batch_size : (step + 1) * c.batch_size]
                    xb, yb = X[idx], Y[idx]
                    if c.augment:
                        xb = _random_crop_flip(xb)
                    if c.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    lrs = method.set_learning_rate(epoch, step, steps)
                    try:
                        stats = method.train_step(xb, yb, epoch)
                    except ValueError as error:
                        # A NaN image or NaN weights reach a noise layer's sigma check
                        # before the deferred loss check: report the NaN, not the sigma.
                        if _all_finite([xb, *model.parameters()]):
                            raise
                        self._raise_if_nonfinite(step, epoch, last_path, cause=error)
                    loss = stats.pop("loss")
                    bad = ~torch.isfinite(loss) & (bad_step < 0)
                    bad_step = torch.where(bad, torch.full_like(bad_step, step), bad_step)
                    for k, val in stats.items():
                        sums[k] = sums.get(k, 0) + val.detach().double()
                    global_step += 1
                    if (step + 1) % _NONFINITE_CHECK_EVERY == 0 or step + 1 == steps:
                        self._raise_if_nonfinite(int(bad_step), epoch, last_path)
                        bar.set_postfix(loss=f"{float(loss):.3f}")
            self._raise_if_nonfinite(int(bad_step), epoch, last_path)
            sums = D.all_reduce_sum(sums, dist_info)
            row = self._epoch_row(epoch, sums, lrs, logged, model, time.perf_counter() - t0)
            if row["reg"] is not None:  # summed over steps and ranks: report the mean
                row["reg"] /= steps * dist_info.world_size
            row["world_size"] = dist_info.world_size
            if held is not None:
                row.update(self._validate(method, held, dist_info))
                best, stopped = self._track_best(row, model, best, dist_info)
            metrics.append(row)
            rng_states = D.all_gather_objects(capture_rng_state(), dist_info)
            if dist_info.is_main:
                state = self._checkpoint(
                    model, method, epoch + 1, global_step, metrics, best, rng_states, stopped
                )
                with interrupts_deferred():  # last.pt and metrics.jsonl agree
                    atomic_save(state, last_path)
                    self._write_metrics(metrics)
                tqdm.write(_summary(row))  # also without bars: batch logs need one line an epoch
            D.barrier(dist_info)

        best_path = self.out_dir / BEST
        model_source, model_epoch = "last", (metrics[-1]["epoch"] if metrics else None)
        if best is not None and best_path.is_file():  # a holdout picked the model to test
            if best["epoch"] != model_epoch:
                model.load_state_dict(load_checkpoint(best_path, map_location=device)["model"])
            model_source, model_epoch = "best", best["epoch"]
        if dist_info.is_main and c.plots:
            self._plots(metrics, model, held if held is not None else (X[:8], Y[:8]))
        return TrainResult(
            model=model,
            metrics=metrics,
            out_dir=self.out_dir,
            checkpoint=last_path if last_path.exists() else None,
            best_checkpoint=best_path if best is not None else None,
            stopped_early=stopped,
            extra={"rank_seed_probe": rank_probe},
            model_source=model_source,
            model_epoch=model_epoch,
        )

    def _raise_if_nonfinite(
        self, bad_step: int, epoch: int, last_path: Path, cause: Exception | None = None
    ) -> None:
        if bad_step < 0:
            return
        kept = (
            f"the last good checkpoint {last_path} is untouched"
            if last_path.exists()
            else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"the training loss became NaN or infinite at epoch {epoch + 1}, step {bad_step + 1} "
            f"(method {self.config.method}, lr {self.config.lr}); {kept}. Lower the lr, "
            "check the data for NaNs, or use amp='off'."
        ) from cause

    def _epoch_row(self, epoch, sums, lrs, logged, model, seconds) -> dict[str, Any]:
        n = max(float(sums.get("n", 0.0)), 1.0)
        row: dict[str, Any] = {"epoch": epoch + 1}
        for key in ("clean_loss", "adv_loss"):
            row[key] = float(sums[key]) / n if key in sums else None
        row["train_acc_clean"] = (
            float(sums["clean_correct"]) / n if "clean_correct" in sums else None
        )
        row["train_acc_adv"] = float(sums["adv_correct"]) / n if "adv_correct" in sums else None
        row["reg"] = float(sums["reg"]) if "reg" in sums else None  # gamma * g(theta)
        row["lr"] = lrs
        row.update({k: v for k, v in logged.items()})
        row["theta_mean"] = theta_means(model)
        layer = pnil_layer(model)
        if layer is not None:
            row["pnil_weight_mean"] = float(layer.weight.detach().float().mean())
            row["pnil_bias_mean"] = float(layer.bias.detach().float().mean())
        row["time_s"] = round(seconds, 3)
        row["images_per_s"] = round(n / seconds, 1) if seconds > 0 else None
        return row

    def _track_best(self, row, model, best, dist_info):
        """PNIL Sec. 4.4: keep the epoch with the lowest adversarial validation loss.
        RFGSM (Wong et al. 2020): a sharp drop of validation PGD accuracy is catastrophic
        overfitting: stop and keep the previous best. ``patience``: stop once the loss has
        not improved for that many epochs (PNIL Sec. 4.4, "optimized till convergence")."""
        c = self.config
        stopped = False
        if c.method == "rfgsm" and best is not None:
            if row["val_acc_pgd"] < best["val_acc_pgd"] - c.overfit_drop:
                row["catastrophic_overfitting"] = True
                return best, True
        if best is None or row["val_loss_pgd"] < best["val_loss_pgd"]:
            best = {
                "epoch": row["epoch"],
                "val_loss_pgd": row["val_loss_pgd"],
                "val_acc_pgd": row["val_acc_pgd"],
            }
            if dist_info.is_main:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    **self._identity(),
                    "model_config": dict(self.model_config),
                    "model": model.state_dict(),
                    "epoch": row["epoch"],
                    "metrics": dict(best),
                }
                atomic_save(state, self.out_dir / BEST)
        if c.patience is not None and row["epoch"] - best["epoch"] >= c.patience:
            row["converged"] = True  # no lower validation loss for `patience` epochs
            stopped = True
        return best, stopped

    def _plots(self, metrics, model, sample) -> None:
        from fastnoise.train import plots

        if any(m.get("theta_mean") for m in metrics):
            plots.plot_theta_evolution(metrics, self.out_dir / "theta_evolution.png")
        layer = pnil_layer(model)
        if layer is not None:
            plots.plot_pnil_variance(
                layer, sample[0][:4].detach().cpu(), self.out_dir / "pnil_variance.png"
            )


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore momentum buffers and Adam moments but keep the hyperparameters this run
    configured: a resume with a new lr or weight decay must train with them."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, settings in zip(opt.param_groups, configured, strict=True):
        group.update(settings)


def _all_finite(tensors) -> bool:
    """One host sync (called on the error path only)."""
    return bool(torch.stack([torch.isfinite(t.detach()).all() for t in tensors]).all())


def _cpu_rng(state: dict[str, Any]) -> dict[str, Any]:
    """RNG states must be CPU ByteTensors whatever map_location did."""
    out = dict(state)
    out["torch"] = state["torch"].cpu()
    out["cuda"] = [s.cpu() for s in state["cuda"]]
    return out


def _summary(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}"]
    for key in (
        "clean_loss",
        "adv_loss",
        "train_acc_clean",
        "train_acc_adv",
        "val_acc_clean",
        "val_acc_pgd",
        "tau",
    ):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"{row['time_s']:.1f}s")
    return " | ".join(parts)


def fit(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train with ``config``; see :class:`Trainer`."""
    return Trainer(config, **kwargs).fit()
