"""Learn2Perturb's theta update rules side by side on MNIST-shaped data (issue 13).

Trains the small CNN with Learn2Perturb on the embedded MNIST subset (5,000 training
images, shipped with fastnoise) once per ``--theta-update`` rule and seed, then prints the
mean theta after every epoch, the clean accuracy and the PGD / EOT-PGD accuracy on the
1,000 embedded test images, and draws the theta curves of all runs into one figure.

The schedule is the paper's compressed into 10 epochs: noise off for the first epoch
(20 of 350 in the paper), lr x 0.1 after epochs 4 and 7 (150 and 250 of 350), SGD with
Nesterov momentum 0.9, weight decay 1e-4, alpha = beta = 0.5, PGD-3 training attack.
gamma is 1e-2 instead of 1e-4 so that Algorithm 1's regularizer pushes theta as far in
450 steps as the paper's does in 350 epochs of 391 steps: gamma * steps per epoch *
sum over the noise epochs of 1/tau is 2.5 there, 2.3 here. lr 0.05, not 0.1: SGD at 0.1
collapsed adversarial small-CNN runs here (tests/test_train_learns.py).

    python benchmarks/l2p_theta_update.py                    # ~10 min, 1 thread, loaded box
    python benchmarks/l2p_theta_update.py --seeds 0 --rules algorithm1 joint --epochs 4
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from fastnoise import attacks
from fastnoise.data import as_tensors, load_dataset
from fastnoise.train import TrainConfig, fit
from fastnoise.train.plots import plot_theta_comparison

HERE = Path(__file__).resolve().parent
EPS = 0.1  # MNIST-scale budget: 8/255 leaves an MNIST CNN almost as accurate as clean
EVAL_STEPS = 10
EOT = 8


def config_for(rule: str, seed: int, epochs: int, out: Path) -> TrainConfig:
    milestones = tuple(
        sorted({max(1, round(epochs * 150 / 350)), max(2, round(epochs * 250 / 350))})
    )
    return TrainConfig(
        method="learn2perturb", theta_update=rule, dataset="embedded", model="small_cnn",
        epochs=epochs, batch_size=100, optimizer="sgd", lr=0.05, momentum=0.9,
        nesterov=True, weight_decay=1e-4, lr_schedule="multistep", milestones=milestones,
        eps=EPS, attack_steps=3, attack_step_size=2.5 * EPS / 3, clean_weight=0.5,
        gamma=1e-2, theta_init=0.25, theta_min=0.01, noise_off_epochs=1, seed=seed,
        out=str(out / f"{rule}-seed{seed}"), overwrite=True, plots=False, progress=False,
    )  # fmt: skip


def accuracies(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """Clean, PGD-10 and EOT-PGD-10 (8 draws per gradient) accuracy, noise on."""
    model.eval()
    torch.manual_seed(seed)
    alpha = 2.5 * EPS / EVAL_STEPS
    out = {}
    with torch.no_grad():
        out["clean"] = float((model(x).argmax(1) == y).float().mean())
    for name, kw in (("pgd", {}), ("eot-pgd", {"eot": EOT})):
        attack = attacks.build(name, model, EPS, alpha=alpha, steps=EVAL_STEPS, **kw)
        x_adv = attack(x, y)
        with torch.no_grad():
            out[name] = float((model(x_adv).argmax(1) == y).float().mean())
    return out


def mean_theta(row: dict) -> float:
    values = list(row["theta_mean"].values())
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", nargs="+", default=["algorithm1", "joint", "released-code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fair on shared cores)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/l2p_theta_update"))
    parser.add_argument("--figure", type=Path, default=HERE / "figures" / "l2p_theta_update.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x_test, y_test = as_tensors(load_dataset("embedded", train=False))

    runs, rows = {}, []
    started = time.perf_counter()
    for seed in args.seeds:
        for rule in args.rules:
            config = config_for(rule, seed, args.epochs, args.out)
            t0 = time.perf_counter()
            result = fit(config)
            seconds = time.perf_counter() - t0
            acc = accuracies(result.model, x_test, y_test, seed)
            thetas = [round(mean_theta(m), 4) for m in result.metrics]
            row = {"rule": rule, "seed": seed, "train_s": round(seconds, 1), **acc}
            rows.append({**row, "theta_by_epoch": thetas})
            runs[f"{rule} (seed {seed})"] = result.metrics
            print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - started

    plot_theta_comparison(
        runs, args.figure, lr_drops=config.milestones,
        title="Learn2Perturb theta, embedded MNIST, small CNN: update rules",
    )  # fmt: skip
    args.figure.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    machine = platform.processor() or platform.machine()
    print(f"\n{machine}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{total / 60:.1f} min in all; figure: {args.figure}")  # fmt: skip
    print("\n| rule | seed | clean | PGD-10 | EOT-PGD-10 | mean theta after each epoch | train s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['rule']} | {r['seed']} | {r['clean']:.3f} | {r['pgd']:.3f} | "
              f"{r['eot-pgd']:.3f} | {' '.join(f'{t:.3f}' for t in r['theta_by_epoch'])} | "
              f"{r['train_s']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
