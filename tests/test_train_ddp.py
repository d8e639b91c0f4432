"""Data-parallel training: a real 2-process torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch

from fastnoise.train import load_model
from fastnoise.train.checkpoint import load_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "fastnoise", "train", "--method", "nfgsm", "--pnil", "--dataset", "embedded",
        "--train-limit", "256", "--holdout", "32", "--epochs", "2", "--batch-size", "16",
        "--max-steps-per-epoch", "3", "--val-pgd-steps", "1", "--optimizer", "adam",
        "--lr", "1e-3", "--lr-schedule", "constant", "--device", "cpu", "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("trained nfgsm") == 1, "only rank 0 reports"

    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2
    assert [m["world_size"] for m in ckpt["metrics"]] == [2, 2]
    # each rank draws its own noise: different first seeds, different RNG states
    probe = ckpt["rank_seed_probe"]
    assert len(probe) == 2 and probe[0] != probe[1]
    assert len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    # metrics were reduced over both ranks' shards: 2 ranks x 3 steps x 16 images
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["images_per_s"] is not None and 0.0 <= rows[-1]["train_acc_adv"] <= 1.0
    counts = {round(r["train_acc_adv"] * 96, 6) % 1 for r in rows}
    assert counts == {0.0}, "accuracy must be a count over 96 images (both ranks)"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    model = load_model(out / "last.pt")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_two_process_learn2perturb_with_noise_warmup(tmp_path):
    # theta is unused while noise is off: DDP must be told, or the first epoch fails
    out = tmp_path / "l2p"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "fastnoise", "train", "--method", "learn2perturb", "--dataset", "embedded",
        "--train-limit", "128", "--epochs", "2", "--noise-off-epochs", "1", "--batch-size", "16",
        "--max-steps-per-epoch", "2", "--attack-steps", "1", "--device", "cpu",
        "--no-progress", "--no-plots", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = load_checkpoint(out / "last.pt")["metrics"]
    assert [r["noise_on"] for r in rows] == [False, True] and rows[1]["tau"] == 1.0
    assert all(v == 0.25 for v in rows[0]["theta_mean"].values())  # frozen while off
    assert all(v != 0.25 for v in rows[1]["theta_mean"].values())  # then learned
