"""Sharded evaluation: ``evaluate``, ``sweep_eps`` and ``autoattack`` under a real 2-process
torchrun job (gloo, CPU), against the same runs in this one process.

One torchrun job runs every scenario (``python -m torch.distributed.run ... THIS_FILE OUT``)
and each rank saves what it returned; the tests compare the two ranks with each other and
with single-process runs. On a deterministic model with hand-made attacks every count is
known, so the sharded report must equal the single-process one exactly; 11 samples on 2
ranks leave the ranks unequal shares (and a DistributedSampler one padded duplicate).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from unittest import mock

if __name__ == "__main__":  # a torchrun rank: this checkout's fastnoise, tests/ helpers
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]

import pytest
import torch
from test_eval import Lookup, Noisy, lookup_data
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from fastnoise.eval import autoattack, evaluate, sweep_eps

N = 11  # odd: 6 samples on rank 0, 5 on rank 1
WORLD_SIZE = 2
K = 3  # classes of the lookup model (test_eval)


class ById:
    """Fools chosen sample ids (feature K carries the id), a different set per repeat; a
    repeat starts when the ids wrap around, so it works on any rank's share. Records the
    ids it was given, per repeat."""

    def __init__(self, name, fooled_per_repeat, kind="iterative", eps=8 / 255, norm="linf"):
        self.name, self.kind, self.eps, self.norm = name, kind, eps, norm
        self._fooled, self._repeat, self._last = fooled_per_repeat, -1, math.inf
        self._seen: list[list[int]] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ids = (x[:, 0, 0, K] * 100).round().long().tolist()
        if ids[0] <= self._last:
            self._repeat += 1
            self._seen.append([])
        self._last = ids[-1]
        self._seen[-1].extend(ids)
        fooled = self._fooled[self._repeat % len(self._fooled)]
        x_adv = x.clone()
        for row, i in enumerate(ids):
            if i in fooled:  # move the one-hot to the previous class (never the label)
                x_adv[row, 0, 0, :K] = x[row, 0, 0, :K].roll(-1)
        return x_adv


def lookup_attacks() -> list[ById]:
    return [
        ById("strong", [{0, 1, 6}, {0, 1, 2, 3, 10}]),
        ById("weak", [{5}, {1, 7}], kind="single-step"),
    ]


class FakeProtocol:
    """A protocol with one attack on all samples and one on a random subset of 5."""

    def build(self, model, eps):
        return [(ById("all", [{2, 3}]), None), (ById("subset", [{0, 4, 8}]), 5)]


class NoiseLog(Noisy):
    """Noisy, and a log of the first noise value of every forward (to tell ranks apart)."""

    def __init__(self) -> None:
        super().__init__(sigma=0.5)
        self.log: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        noise = self.sigma * torch.randn_like(logits)
        if len(noise):
            self.log.append(float(noise.flatten()[0]))
        return logits + noise


C = 4  # classes of the margin model (APGD-T's DLR loss needs 4)


def margin_data(n: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    """Images 0.5 everywhere but 0.5 + margin at the label's pixel: an L-inf attack of eps
    moves a margin by at most 2 eps, so at eps = 0.05 a margin of 0.02 always breaks and
    one of 0.3 never does, whatever the attacks' random starts (the even ids break)."""
    y = torch.arange(n) % C
    x = torch.full((n, 1, 1, C), 0.5)
    x[torch.arange(n), 0, 0, y] += torch.where(torch.arange(n) % 2 == 0, 0.02, 0.3)
    return x, y


def margin_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(C, C, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(10 * torch.eye(C))
    return model


class NoisyMargin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = margin_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return logits + 0.3 * torch.randn_like(logits)


AA = dict(eps=0.05, steps=5, queries=20, batch_size=4, progress=False)


# -- the scenarios: each returns what a rank (or the single process) ends with -----------------


def scenario_list() -> dict:
    """A list of batches, two attacks, two repeats, the model self-checks."""
    x, y = lookup_data(N, wrong=(9,))
    attacks = lookup_attacks()
    data = [(x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4)]
    report = evaluate(Lookup(), data, attacks, repeats=2, progress=False, seed=0)
    return {"report": report, "seen": [a._seen for a in attacks]}


def scenario_pair() -> dict:
    """An (x, y) pair in batches of 3, judged on 2 draws, without the self-checks."""
    x, y = lookup_data(N, wrong=(4,))
    attacks = lookup_attacks()
    report = evaluate(
        Lookup(), (x, y), attacks, repeats=2, progress=False, checks=False, batch_size=3,
        draws=2,
    )  # fmt: skip
    return {"report": report, "seen": [a._seen for a in attacks]}


def scenario_sampler(sharded: bool) -> dict:
    """A DataLoader over a shuffling DistributedSampler (one padded duplicate on 2 ranks);
    the single process reads the same data set in order."""
    x, y = lookup_data(N, wrong=(2,))
    dataset = TensorDataset(x, y)
    sampler = DistributedSampler(dataset, shuffle=True, seed=3) if sharded else None
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    attacks = [ById("a", [{0, 4, 7, 10}])]
    report = evaluate(Lookup(), loader, attacks, repeats=2, progress=False, checks=False)
    return {"report": report, "seen": [a._seen for a in attacks]}


def scenario_protocol() -> dict:
    """A protocol whose second attack runs on a random subset of 5 of the 11 samples."""
    x, y = lookup_data(N, wrong=(8,))
    with mock.patch("fastnoise.eval.protocols.get_protocol", return_value=FakeProtocol()):
        report = evaluate(
            Lookup(), (x, y), protocol="fake", eps=0.1, repeats=2, progress=False,
            checks=False, batch_size=4, seed=5,
        )  # fmt: skip
    return {"report": report}


def scenario_sweep() -> dict:
    x, y = lookup_data(N, wrong=())
    fooled = {1 / 255: [{0, 3}], 2 / 255: [{0, 3, 5, 9, 10}]}
    sweep = sweep_eps(
        Lookup(), (x, y), lambda e: ById("sweep", fooled[e], eps=e), [0.0, 1 / 255, 2 / 255],
        repeats=1, progress=False, batch_size=4,
    )  # fmt: skip
    return {"sweep": sweep.to_dict()}


def scenario_random(seed: int) -> dict:
    """A randomized model judged on 3 draws: noise per rank, reproducible with seed=."""
    x, y = lookup_data(N, wrong=(9,))
    model = NoiseLog()
    report = evaluate(
        model, (x, y), [ById("a", [{1, 2}])], repeats=2, progress=False, seed=seed,
        batch_size=4, draws=3, check_samples=4,
    )  # fmt: skip
    return {"report": report, "noise": model.log}


def scenario_tiny() -> dict:
    """One sample on two ranks: rank 1 holds none."""
    x, y = lookup_data(1, wrong=())
    report = evaluate(Lookup(), (x, y), [ById("a", [set()])], repeats=2, progress=False)
    aa = autoattack(margin_model(), margin_data(1), stages=["apgd-ce"], **AA)
    return {"report": report, "autoattack": aa.to_dict()}


def scenario_autoattack() -> dict:
    return {"autoattack": autoattack(margin_model(), margin_data(), **AA).to_dict()}


def scenario_autoattack_random() -> dict:
    x, y = margin_data()
    report = autoattack(NoisyMargin(), (x, y), stages=["apgd-ce"], seed=1, **AA)
    return {"autoattack": report.to_dict()}


def scenario_refusals() -> dict:
    """What sharding refuses, on every rank alike (before any collective, so no hang)."""
    from torch.nn.parallel import DistributedDataParallel

    x, y = lookup_data(N)
    shuffled = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    wrapped = DistributedDataParallel(Lookup())
    errors = []
    for model, data in ((Lookup(), shuffled), (wrapped, (x, y))):
        try:
            evaluate(model, data, [ById("a", [set()])], progress=False)
        except (TypeError, ValueError) as err:
            errors.append(str(err))
    return {"errors": errors}


def scenario_unsharded() -> dict:
    """distributed=False: every rank evaluates everything, as one process."""
    x, y = lookup_data(N, wrong=(3,))
    report = evaluate(
        Lookup(), (x, y), lookup_attacks(), repeats=2, progress=False, checks=False,
        distributed=False,
    )  # fmt: skip
    return {"report": report}


def run_all(sharded: bool) -> dict:
    return {
        "list": scenario_list(),
        "pair": scenario_pair(),
        "sampler": scenario_sampler(sharded),
        "protocol": scenario_protocol(),
        "sweep": scenario_sweep(),
        "random": scenario_random(seed=0),
        "random_again": scenario_random(seed=0),
        "tiny": scenario_tiny(),
        "unsharded": scenario_unsharded(),
        "autoattack": scenario_autoattack(),
        "autoattack_random": scenario_autoattack_random(),
        **({"refusals": scenario_refusals()} if sharded else {}),
    }


def saved(result: dict) -> dict:
    """Reports as their JSON dicts plus outcomes (which the JSON leaves out)."""
    out = {}
    for key, value in result.items():
        if key == "report":
            out["report"] = value.to_dict()
            out["outcomes"] = value.outcomes
        else:
            out[key] = value
    return out


def rank_main(out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        results = {name: saved(r) for name, r in run_all(sharded=True).items()}
        torch.save(results, Path(out) / f"rank{dist.get_rank()}.pt")
    finally:
        dist.destroy_process_group()


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from test_train_ddp import torchrun

    out = tmp_path_factory.mktemp("sharded")
    torchrun([__file__, str(out)])
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    single = {name: saved(r) for name, r in run_all(sharded=False).items()}
    return ranks, single


def counts(report: dict) -> dict:
    """What must not depend on sharding: everything but times, forward passes and the
    model checks' wording (rank 0 runs them on its own first samples)."""
    keep = {k: v for k, v in report.items() if k not in ("meta", "checks", "attacks")}
    keep["attacks"] = [
        {k: v for k, v in a.items() if k not in ("seconds", "forward_passes", "forward_rows")}
        for a in report["attacks"]
    ]
    keep["checks"] = [(c["name"], c["status"]) for c in report["checks"]]
    return keep


def same_outcomes(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["list", "pair", "sampler", "protocol", "random", "tiny"])
def test_both_ranks_return_the_same_report(runs, name):
    (rank0, rank1), _ = runs
    assert rank0[name]["report"] == rank1[name]["report"]
    assert same_outcomes(rank0[name]["outcomes"], rank1[name]["outcomes"])
    assert rank0[name]["report"]["meta"]["world_size"] == WORLD_SIZE


@pytest.mark.parametrize("name", ["list", "pair", "sampler", "protocol", "tiny", "unsharded"])
def test_sharded_counts_equal_one_process_on_a_deterministic_model(runs, name):
    (rank0, _), single = runs
    assert counts(rank0[name]["report"]) == counts(single[name]["report"])
    # per-sample outcomes, gathered in sample order (dataset order under the sampler)
    assert same_outcomes(rank0[name]["outcomes"], single[name]["outcomes"])
    n = single[name]["report"]["n_samples"]
    assert all(o.shape == (2, n) for o in rank0[name]["outcomes"].values())


def test_the_known_numbers(runs):
    (rank0, _), _ = runs
    report = rank0["list"]["report"]
    assert report["n_samples"] == N and report["clean"] == [10 / N, 10 / N]  # 9 mislabelled
    strong, weak = report["attacks"]
    assert strong["accuracies"] == [7 / N, 5 / N]  # fools {0, 1, 6}, then {0, 1, 2, 3, 10}
    assert weak["accuracies"] == [9 / N, 8 / N]
    assert report["worst_case"] == [6 / N, 4 / N]  # also loses 5, then 7
    assert [c["status"] for c in report["checks"]][:3] == ["pass"] * 3  # the model checks
    (rank0, rank1), single = runs
    sweep = rank0["sweep"]["sweep"]
    assert sweep == rank1["sweep"]["sweep"] == single["sweep"]["sweep"]
    assert sweep["accuracies"] == [[1.0], [9 / N], [6 / N]] and sweep["n_samples"] == N


@pytest.mark.parametrize("name", ["list", "pair"])
def test_every_sample_is_attacked_by_exactly_one_rank(runs, name):
    ranks, _ = runs
    for attack in range(2):
        for repeat in range(2):
            seen = [r[name]["seen"][attack][repeat] for r in ranks]
            assert sorted(seen[0] + seen[1]) == list(range(N))
            assert [len(s) for s in seen] == [6, 5]


def test_a_distributed_sampler_s_padding_is_dropped_before_the_attacks(runs):
    ranks, _ = runs
    # shuffled, so ById's repeats are meaningless: count every id attacked over 2 repeats
    seen = [[i for part in r["sampler"]["seen"][0] for i in part] for r in ranks]
    assert [len(s) for s in seen] == [12, 10]  # the sampler gives rank 1 a 6th, padded copy
    assert Counter(seen[0] + seen[1]) == dict.fromkeys(range(N), 2)
    assert ranks[0]["sampler"]["report"]["n_samples"] == N


def test_random_subset_attack_picks_the_same_samples(runs):
    (rank0, _), single = runs
    report = rank0["protocol"]["report"]
    subset = next(a for a in report["attacks"] if a["name"] == "subset")
    assert subset["n_samples"] == 5
    assert report["meta"]["subsets"] == single["protocol"]["report"]["meta"]["subsets"]


def without_times(report: dict) -> dict:
    meta = {k: v for k, v in report["meta"].items() if k != "seconds"}
    attacks = [{k: v for k, v in a.items() if k != "seconds"} for a in report["attacks"]]
    return {**report, "meta": meta, "attacks": attacks}


def test_a_randomized_model_draws_different_noise_on_each_rank_reproducibly(runs):
    (rank0, rank1), _ = runs
    for r in (rank0, rank1):  # seed= reproduces the run
        assert without_times(r["random"]["report"]) == without_times(r["random_again"]["report"])
        assert same_outcomes(r["random"]["outcomes"], r["random_again"]["outcomes"])
        assert r["random"]["noise"] == r["random_again"]["noise"]
        report = r["random"]["report"]
        assert report["n_samples"] == N and report["randomized"] is True
        assert report["clean_majority"] is not None
        assert all(o.shape == (2, N) for o in r["random"]["outcomes"].values())
    # rank 0 ran the model checks alone, so compare the judging forwards that open the run
    assert rank0["random"]["noise"][:3] != rank1["random"]["noise"][:3]


def test_autoattack_sharded_equals_one_process_on_a_deterministic_model(runs):
    (rank0, rank1), single = runs
    for name in ("autoattack", "tiny"):
        assert rank0[name]["autoattack"] == rank1[name]["autoattack"]
    sharded, alone = rank0["autoattack"]["autoattack"], single["autoattack"]["autoattack"]
    assert sharded["meta"]["world_size"] == WORLD_SIZE
    assert sharded["n_samples"] == alone["n_samples"] == 13 and sharded["draws"] == 1
    assert sharded["clean_accuracy"] == alone["clean_accuracy"] == 1.0
    assert sharded["robust_accuracy"] == alone["robust_accuracy"] == pytest.approx(6 / 13)
    fields = ("name", "robust_accuracy", "attacked", "broken", "unconfirmed")
    assert [{f: s[f] for f in fields} for s in sharded["stages"]] == [
        {f: s[f] for f in fields} for s in alone["stages"]
    ]
    assert [s["broken"] for s in sharded["stages"]] == [7, 0, 0, 0]
    assert all(s["forward_passes"] > 0 for s in sharded["stages"])
    tiny = rank0["tiny"]["autoattack"]
    assert tiny["n_samples"] == 1 and tiny["robust_accuracy"] == 0.0


def test_autoattack_on_a_randomized_model_votes_on_every_rank(runs):
    (rank0, rank1), _ = runs
    a, b = rank0["autoattack_random"]["autoattack"], rank1["autoattack_random"]["autoattack"]
    assert a == b and a["draws"] == 5 and a["n_samples"] == 13
    assert a["robust_accuracy"] <= a["clean_accuracy"]


def test_distributed_false_evaluates_everything_and_true_needs_a_process_group(runs):
    (rank0, rank1), single = runs
    for r in (rank0, rank1):
        assert "world_size" not in r["unsharded"]["report"]["meta"]
    x, y = lookup_data(N)
    with pytest.raises(ValueError, match="torchrun"):
        evaluate(Lookup(), (x, y), lookup_attacks(), progress=False, distributed=True)
    with pytest.raises(TypeError, match="distributed"):
        autoattack(margin_model(), (x, y), distributed="yes", **AA)


def test_sharding_refuses_a_shuffling_loader_and_a_ddp_wrapper(runs):
    (rank0, rank1), _ = runs
    errors = rank0["refusals"]["errors"]
    assert errors == rank1["refusals"]["errors"] and len(errors) == 2
    assert "DistributedSampler" in errors[0] and "ddp.module" in errors[1]


if __name__ == "__main__":
    rank_main(sys.argv[1])


def test_fastnoise_eval_under_torchrun_matches_one_process(tmp_path):
    """`torchrun -m fastnoise eval`: each rank attacks its share, rank 0 alone writes and
    prints, and the numbers equal a single process's (a deterministic model)."""
    from test_train_ddp import torchrun

    from fastnoise.cli import main
    from fastnoise.eval import RobustnessReport
    from fastnoise.models import build

    torch.manual_seed(0)
    config = {"name": "small_cnn", "noise": None}
    checkpoint = tmp_path / "plain.pt"
    torch.save({"model_config": config, "model": build(**config).state_dict()}, checkpoint)
    common = [
        "eval", "--checkpoint", str(checkpoint), "--dataset", "embedded", "--attacks",
        "fgsm", "--limit", "9", "--batch-size", "4", "--repeats", "1", "--no-checks",
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    done = torchrun(["-m", "fastnoise", *common, "--out", str(tmp_path / "ddp")])
    assert done.stdout.count("Report written to") == 1  # rank 0 only
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two = RobustnessReport.from_json((tmp_path / "ddp" / "report.json").read_text())
    one = RobustnessReport.from_json((tmp_path / "one" / "report.json").read_text())
    assert two.n_samples == one.n_samples == 9
    assert two.clean == one.clean and two.attacks[0].accuracies == one.attacks[0].accuracies
    assert two.meta["world_size"] == 2
