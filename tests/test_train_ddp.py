"""Data-parallel training: real 2-process torchrun jobs (gloo, CPU).

Two ranks with batch B must train the same model as one process with batch 2B: the
DistributedSampler deals one permutation out to the ranks, so step s sees the same 2B images
either way, DDP averages the two ranks' mean gradients into the mean over 2B, and the epoch
metrics are sums over both ranks. ``ddp_worker.py`` saves each rank's weights and metrics.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastnoise import models
from fastnoise.train import TrainConfig, fit, load_model, model_config_for
from fastnoise.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
WORLD_SIZE = 2
PER_RANK_BATCH = 16

# Plain SGD training that draws no random numbers (standard method, small_cnn has no
# BatchNorm, no augmentation), so the per-rank noise streams cannot matter. 224 images less
# 32 held out leaves 192: 6 full steps of 2 x 16 per epoch, nothing padded by the sampler.
# Constant lr and momentum so all 12 steps move the weights well beyond float noise.
STANDARD_RUN = dict(
    method="standard", dataset="embedded", model="small_cnn", train_limit=224, holdout=32,
    epochs=2, optimizer="sgd", lr=0.05, momentum=0.9, lr_schedule="constant",
    val_pgd_steps=1, seed=0, device="cpu", plots=False, progress=False,
)  # fmt: skip

# DDP and one process compute the same sums in a different float32 order (per-rank means,
# then the all-reduce average, vs one mean over 2B; convolutions over batches of 16 vs 32).
# Over 12 momentum steps that drifts the weights by ~2e-7 (measured), while training moves
# them by ~0.2: 1e-5 leaves room for other CPUs / thread counts and is far below the error of
# a wrong shard or a missing gradient average.
WEIGHT_ATOL = 1e-5
LOSS_RTOL = 1e-5  # float32 per-step losses (~3e-7 relative apart, measured) summed in float64
# metrics that depend on the weights and data only (the PGD ones start from per-rank noise):
# accuracies are counts over the same images, so equal; losses are float sums, so close
COUNT_METRICS = ("train_acc_clean", "val_acc_clean")
LOSS_METRICS = ("clean_loss", "val_loss_clean")
PER_RANK_CLOCKS = ("time_s", "images_per_s")  # each rank times its own epoch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD_SIZE}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_ddp_worker(config: dict, out: Path) -> list[dict]:
    """Train under torchrun; return what each rank ended with (weights, metrics)."""
    out.mkdir(parents=True)
    config_path = out / "config.json"
    config_path.write_text(json.dumps({**config, "out": str(out)}))
    torchrun([str(WORKER), str(config_path)])
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    for r in ranks:  # the workers trained with this checkout's fastnoise
        assert Path(r["fastnoise_file"]).is_relative_to(REPO), r["fastnoise_file"]
    return ranks


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def without_clocks(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in PER_RANK_CLOCKS} for row in rows]


@pytest.fixture(scope="module")
def standard_runs(tmp_path_factory):
    """The same training as 2 ranks x 16 (torchrun) and as 1 process x 32 (in this one)."""
    root = tmp_path_factory.mktemp("standard")
    ranks = run_ddp_worker({**STANDARD_RUN, "batch_size": PER_RANK_BATCH}, root / "ddp")
    single_config = TrainConfig(
        **STANDARD_RUN, batch_size=WORLD_SIZE * PER_RANK_BATCH, out=str(root / "single")
    )
    single = fit(single_config)
    torch.manual_seed(single_config.seed)  # the trainer builds the model right after this
    spec = model_config_for(single_config)
    init = models.build(spec.pop("name"), **spec).state_dict()
    return {"ddp": ranks, "ddp_out": root / "ddp", "single": single, "init": init}


def test_ddp_replicas_hold_identical_weights(standard_runs):
    rank0, rank1 = (r["model"] for r in standard_runs["ddp"])
    for name in rank0:  # DDP broadcasts, then applies the same averaged gradient on both
        assert torch.equal(rank0[name], rank1[name]), name


def test_ddp_weights_match_one_process_on_the_global_batch(standard_runs):
    ddp = standard_runs["ddp"][0]["model"]
    single = standard_runs["single"].model.state_dict()
    moved = max_abs_diff(single, standard_runs["init"])
    assert moved > 100 * WEIGHT_ATOL, "training must move the weights for this to mean much"
    assert max_abs_diff(ddp, single) <= WEIGHT_ATOL


def test_ddp_metrics_match_one_process(standard_runs):
    rank0, rank1 = (r["metrics"] for r in standard_runs["ddp"])
    single = standard_runs["single"].metrics
    # both ranks were told the reduced numbers; rank 0 wrote them down
    assert without_clocks(rank0) == without_clocks(rank1)
    out = standard_runs["ddp_out"]
    assert load_checkpoint(out / "last.pt")["metrics"] == rank0
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == rank0
    assert [r["world_size"] for r in rank0] == [2, 2]
    assert len(rank0) == len(single) == STANDARD_RUN["epochs"]
    for ddp_row, single_row in zip(rank0, single, strict=True):
        for key in COUNT_METRICS:
            assert ddp_row[key] == single_row[key], key
        for key in LOSS_METRICS:
            assert math.isclose(ddp_row[key], single_row[key], rel_tol=LOSS_RTOL), key


def test_two_process_nfgsm_pnil_run(tmp_path):
    # NFGSM+PNIL draws noise on each rank from its own stream; the weights still agree
    out = tmp_path / "ddp"
    config = dict(
        method="nfgsm", pnil=True, dataset="embedded", train_limit=256, holdout=32, epochs=2,
        batch_size=16, max_steps_per_epoch=3, val_pgd_steps=1, optimizer="adam", lr=1e-3,
        lr_schedule="constant", device="cpu", progress=False,
    )  # fmt: skip
    rank0, rank1 = run_ddp_worker(config, out)
    for name in rank0["model"]:
        assert torch.equal(rank0["model"][name], rank1["model"][name]), name
    # the metrics are reduced over both ranks, so both ranks hold the same numbers
    assert without_clocks(rank0["metrics"]) == without_clocks(rank1["metrics"])

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2
    assert ckpt["metrics"] == rank0["metrics"]
    assert [m["world_size"] for m in ckpt["metrics"]] == [2, 2]
    # each rank draws its own noise: different first seeds, different RNG states
    probe = ckpt["rank_seed_probe"]
    assert len(probe) == 2 and probe[0] != probe[1]
    assert len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == rank0["metrics"]
    assert rows[-1]["images_per_s"] is not None and 0.0 <= rows[-1]["train_acc_adv"] <= 1.0
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    model = load_model(out / "last.pt")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_two_process_learn2perturb_algorithm1_keeps_the_replicas_equal(tmp_path):
    """Algorithm 1's theta pass runs outside DDP (only theta's gradient is wanted), so its
    gradient is averaged by hand; a BatchNorm ResNet with the clean and adversarial batches
    in two forwards inside one DDP call."""
    config = dict(
        method="learn2perturb", dataset="embedded", model="resnet20",
        model_kwargs={"width": 0.25}, train_limit=64, epochs=1, batch_size=8,
        max_steps_per_epoch=2, attack_steps=1, noise_off_epochs=0, device="cpu",
        progress=False, plots=False,
    )  # fmt: skip
    rank0, rank1 = run_ddp_worker(config, tmp_path / "ddp")
    init = models.build("resnet20", width=0.25, in_channels=1, input_size=28, noise="l2p")
    for name, value in rank0["model"].items():
        if "running_" in name or "num_batches" in name:
            continue  # each rank's BatchNorm statistics come from its own images
        assert torch.equal(value, rank1["model"][name]), name
        if name.endswith("theta"):
            assert not torch.equal(value, init.state_dict()[name]), "theta must have moved"


def test_two_process_learn2perturb_cli_with_noise_warmup(tmp_path):
    # theta is unused while noise is off: DDP must be told, or the first epoch fails
    out = tmp_path / "l2p"
    done = torchrun([
        "-m", "fastnoise", "train", "--method", "learn2perturb", "--dataset", "embedded",
        "--train-limit", "128", "--epochs", "2", "--noise-off-epochs", "1", "--batch-size", "16",
        "--max-steps-per-epoch", "2", "--attack-steps", "1", "--device", "cpu",
        "--no-progress", "--no-plots", "--out", str(out),
    ])  # fmt: skip
    assert done.stdout.count("trained learn2perturb") == 1, "only rank 0 reports"
    rows = load_checkpoint(out / "last.pt")["metrics"]
    assert [r["world_size"] for r in rows] == [2, 2]
    assert [r["noise_on"] for r in rows] == [False, True] and rows[1]["tau"] == 1.0
    assert all(v == 0.25 for v in rows[0]["theta_mean"].values())  # frozen while off
    assert all(v != 0.25 for v in rows[1]["theta_mean"].values())  # then learned
