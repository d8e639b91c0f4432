"""Gaussian training (``fastnoise train --method gaussian``) and ``fastnoise certify`` end
to end on the embedded data set, offline: tiny runs, checked for what they write."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fastnoise.cli import main
from fastnoise.train import PRESETS, TrainConfig, build_method, load_checkpoint

TINY = [
    "--dataset", "embedded", "--train-limit", "64", "--batch-size", "16",
    "--max-steps-per-epoch", "2", "--no-progress", "--no-plots",
]  # fmt: skip
CERTIFY = ["--n0", "10", "--n", "60", "--limit", "5", "--batch-size", "128", "--no-progress"]


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gaussian") / "run"
    argv = ["train", *TINY, "--method", "gaussian", "--sigma", "0.5", "--epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_gaussian_training_checkpoints_its_sigma_and_resumes(gaussian_run, tmp_path):
    ckpt = load_checkpoint(gaussian_run / "last.pt")
    assert ckpt["method"] == "gaussian" and ckpt["config"]["sigma"] == 0.5
    out = tmp_path / "run"
    shutil.copytree(gaussian_run, out)
    argv = ["train", *TINY, "--method", "gaussian", "--sigma", "0.5", "--epochs", "2"]
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


class InputRecorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(16, 3)
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.linear(x.flatten(1))


def test_the_gaussian_method_trains_on_noise_of_std_sigma_and_scores_clean_images():
    model = InputRecorder()
    method = build_method(TrainConfig(method="gaussian", sigma=0.3), model)
    x, y = torch.rand(256, 1, 4, 4), torch.randint(0, 3, (256,))
    weights = model.linear.weight.detach().clone()
    stats = method.train_step(x, y, epoch=0)
    (train_mode, noisy), (eval_mode, clean) = model.seen
    assert train_mode and not eval_mode
    assert (noisy - x).std().item() == pytest.approx(0.3, rel=0.05)
    assert torch.equal(clean, x)
    assert not torch.equal(model.linear.weight, weights)  # it took a step
    assert int(stats["n"]) == 256 and torch.isfinite(stats["loss"])


def test_the_gaussian_presets():
    for name, dataset in (
        ("gaussian-mnist", "mnist"),
        ("gaussian-fashion-mnist", "fashion-mnist"),
        ("gaussian-cifar10", "cifar10"),
    ):
        config = TrainConfig.from_preset(name)
        assert (config.method, config.dataset, config.sigma) == ("gaussian", dataset, 0.25)
    cifar = PRESETS["gaussian-cifar10"]
    assert cifar["epochs"] == 90 and cifar["milestones"] == (30, 60) and cifar["augment"]
    with pytest.raises(ValueError, match="sigma must be > 0"):
        TrainConfig(method="gaussian", sigma=0.0)


def test_certify_writes_the_report_and_reads_sigma_from_the_checkpoint(gaussian_run, tmp_path):
    out = tmp_path / "certify"
    argv = ["certify", "--checkpoint", str(gaussian_run / "last.pt"), *CERTIFY]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "certify.json").read_text())
    assert report["sigma"] == 0.5 and report["n"] == 60 and report["images"] == 5
    assert [row["index"] for row in report["rows"]] == [0, 1, 2, 3, 4]
    for row in report["rows"]:
        assert set(row) == {"index", "label", "predict", "radius", "correct", "time_s"}
        assert row["correct"] == (row["predict"] == row["label"])
        assert 0 <= row["radius"] <= report["largest_certifiable_radius"] + 1e-12
    assert [p["radius"] for p in report["certified_accuracy"]][:2] == [0.0, 0.25]
    tsv = (out / "certify.tsv").read_text().splitlines()
    assert tsv[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime" and len(tsv) == 6
    assert "approximate certified accuracy" in (out / "certify.md").read_text()
    assert (out / "certified_accuracy.png").stat().st_size > 1000

    again = tmp_path / "again"
    assert main([*argv, "--out", str(again)]) == 0  # the same --seed: the same certificates
    rerun = json.loads((again / "certify.json").read_text())
    keys = ("predict", "radius")
    assert [[r[k] for k in keys] for r in rerun["rows"]] == [
        [r[k] for k in keys] for r in report["rows"]
    ]


def test_certify_groups_of_different_seeds_share_no_draws(gaussian_run, tmp_path, monkeypatch):
    """Each group's noise seed comes from a generator seeded with --seed: the same --seed
    gives the same seeds, and --seed 0 and --seed 1 share none (seed + k would)."""
    from fastnoise.certify import Smooth

    seen: list[int] = []
    real = Smooth.certify

    def recording(self, images, *args, seed=None, **kwargs):
        seen.append(seed)
        return real(self, images, *args, seed=seed, **kwargs)

    monkeypatch.setattr(Smooth, "certify", recording)
    argv = ["certify", "--checkpoint", str(gaussian_run / "last.pt"), *CERTIFY]
    argv += ["--batch-size", "60"]  # one image per group: five groups
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        seen.clear()
        assert main([*argv, "--seed", str(seed), "--out", str(tmp_path / name)]) == 0
        runs[name] = list(seen)
    assert len(runs["a"]) == 5 and len(set(runs["a"])) == 5
    assert runs["a"] == runs["b"]
    assert not set(runs["a"]) & set(runs["c"])


def test_certify_skip_picks_every_kth_image(gaussian_run, tmp_path):
    argv = ["certify", "--checkpoint", str(gaussian_run / "last.pt"), *CERTIFY, "--skip", "3"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "certify.json").read_text())["rows"]
    assert [row["index"] for row in rows] == [0, 3, 6, 9, 12]


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("standard") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "flags, needle",
    [
        ([], "--sigma is required"),
        (["--sigma", "0"], "--sigma must be > 0"),
        (["--sigma", "0.25", "--n0", "100", "--n", "50"], "--n0 (100) must be <= n (50)"),
        (["--sigma", "0.25", "--alpha", "1.5"], "--alpha must be in (0, 1)"),
        (["--sigma", "0.25", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--sigma", "0.25", "--device", "gpu"], "--device"),
    ],
)
def test_bad_certify_requests_are_one_line_with_status_2(standard_run, flags, needle, capsys):
    argv = ["certify", "--checkpoint", str(standard_run / "last.pt"), "--no-progress"]
    assert main([*argv, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
