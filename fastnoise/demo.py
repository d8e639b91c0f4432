"""``fastnoise demo``: the whole pipeline, offline, in about two minutes on two CPU cores.

Trains two small CNNs on the embedded MNIST subset that ships with the package, one with
PNIL + NFGSM (PNIL paper) and one with Learn2Perturb (short schedule, one noise-free
warm-up epoch instead of 20), evaluates both against FGSM, PGD, EOT-PGD and the
gradient-free SPSA on a test subset, prints the robustness table and writes the plots
and a report. Short schedules and small subsets: the numbers show the pipeline works and
how the defenses compare, not the papers' results (see benchmarks/ for those).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["add_arguments", "run", "demo_configs"]

EPS = 8 / 255  # PNIL paper's MNIST budget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", default="runs/demo", help="output folder, replaced on a rerun (default runs/demo)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per model")
    parser.add_argument("--train-limit", type=int, default=5000, help="training images used")
    parser.add_argument("--eval-samples", type=int, default=160, help="test images attacked")
    parser.add_argument("--repeats", type=int, default=2, help="evaluation repeats (noise)")
    parser.add_argument("--spsa-steps", type=int, default=10, help="SPSA iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm bars"
    )


def demo_configs(args: argparse.Namespace) -> dict[str, object]:
    """The two training runs, as TrainConfigs (printed into the report)."""
    from fastnoise.train import TrainConfig

    out = Path(args.out)
    common = dict(
        dataset="embedded", model="small_cnn", epochs=args.epochs, train_limit=args.train_limit,
        eps=EPS, seed=args.seed, device=args.device, progress=args.progress,
        holdout=min(100, args.train_limit // 5),
        val_pgd_steps=3,
        overwrite=True,  # the demo's folders are its own: a rerun replaces them
    )  # fmt: skip
    pnil = TrainConfig(
        method="nfgsm", pnil=True, out=str(out / "pnil-nfgsm"), batch_size=100,
        optimizer="adam", lr=2e-3, lr_min=1e-4, weight_decay=0.0, lr_schedule="triangle",
        **common,
    )  # fmt: skip
    l2p = TrainConfig(
        method="learn2perturb", out=str(out / "learn2perturb"), batch_size=100, lr=0.05,
        lr_schedule="multistep", milestones=(max(args.epochs - 1, 1),), noise_off_epochs=1,
        attack_steps=2, attack_step_size=1.25 * EPS, **common,
    )  # fmt: skip
    return {"PNIL + NFGSM": pnil, "Learn2Perturb": l2p}


def _attacks(model, spsa_steps: int):
    from fastnoise import attacks

    return [
        attacks.build("fgsm", model, EPS),
        attacks.build("pgd", model, EPS, alpha=2.5 * EPS / 10, steps=10),
        attacks.build("eot-pgd", model, EPS, alpha=2.5 * EPS / 10, steps=10, eot=4),
        attacks.build("spsa", model, EPS, steps=spsa_steps, samples=32, lr=0.01),
    ]


def _table(reports: dict[str, object]) -> str:
    names = ["fgsm", "pgd", "eot-pgd", "spsa"]
    head = "| Model | Clean | FGSM | PGD-10 | EOT-PGD-10 | SPSA | Effective (min) |"
    lines = [head, "|---" * 7 + "|"]
    for label, rep in reports.items():
        cells = [_pct(rep.clean)] + [_pct(rep.attack(n).accuracies) for n in names]
        eff = rep.effective
        cells.append(f"{_pct(eff.accuracies)} ({eff.name})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(values) -> str:
    t = torch.tensor(values, dtype=torch.float64) * 100
    std = float(t.std()) if len(values) > 1 else 0.0
    return f"{float(t.mean()):.1f} ± {std:.1f}"


def run(args: argparse.Namespace) -> int:
    from fastnoise import attacks
    from fastnoise.data import as_tensors, load_dataset
    from fastnoise.eval import evaluate, plot_attack_accuracy
    from fastnoise.train import fit

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    X_test, Y_test = as_tensors(load_dataset("embedded", train=False), limit=args.eval_samples)
    loader = DataLoader(TensorDataset(X_test, Y_test), batch_size=100)

    reports, timings, configs = {}, {}, demo_configs(args)
    for label, config in configs.items():
        print(f"== training {label} ({config.method}, {config.epochs} epochs) ==", flush=True)
        t0 = time.perf_counter()
        result = fit(config)
        timings[f"train {label}"] = time.perf_counter() - t0
        model = result.model.eval()  # the best epoch's (PNIL Sec. 4.4: holdout in `common`)
        print(f"== evaluating {label} ==", flush=True)
        t0 = time.perf_counter()
        report = evaluate(
            model, loader, _attacks(model, args.spsa_steps), repeats=args.repeats,
            progress=args.progress, seed=args.seed, check_samples=16,
            unbounded_attack=attacks.build("pgd", model, 1.0, alpha=0.25, steps=8),
        )  # fmt: skip
        timings[f"evaluate {label}"] = time.perf_counter() - t0
        report.save(out / f"eval-{config.method}")
        plot_attack_accuracy(report, out / f"eval-{config.method}.png", title=label)
        reports[label] = report

    total = time.perf_counter() - started
    table = _table(reports)
    (out / "report.md").write_text(_report(args, configs, reports, table, timings, total))
    (out / "timings.json").write_text(json.dumps({**timings, "total": total}, indent=2))
    print()
    print(f"Robust accuracy (%) at eps = 8/255 on {len(X_test)} embedded MNIST test images, "
          f"mean ± std over {args.repeats} repeats:")  # fmt: skip
    print(table)
    print(f"\nfinished in {total:.0f} s. Written to {out.resolve()}:")
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix in (".md", ".png", ".json", ".jsonl", ".pt"):
            print(f"  {path}")
    return 0


def _report(args, configs, reports, table, timings, total) -> str:
    lines = [
        "# fastnoise demo",
        "",
        f"Embedded MNIST subset ({args.train_limit} training images, {args.eval_samples} test "
        f"images), eps = 8/255, {args.epochs} epochs per model, evaluation repeated "
        f"{args.repeats} times with fresh noise. torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads.",
        "",
        "These are short schedules on small subsets: they show that the pipeline runs end "
        "to end and how the defenses behave, not the papers' accuracies. "
        f"SPSA runs {args.spsa_steps} steps x 32 samples here, against the PNIL paper's "
        "100 x 2048: at this budget it is far weaker than PGD, so SPSA accuracy above PGD's "
        "cannot rule out obfuscated gradients (only SPSA well below PGD would be a finding); "
        "the paper's test is `fastnoise eval --protocol pnil`, which takes hours on a CPU. "
        "Training is a few epochs, so Learn2Perturb's theta has barely left its initial "
        "0.25 (its regularizer is gamma = 1e-4). The checkpoints (`*/last.pt`, `*/best.pt`) "
        "load with `fastnoise.train.load_model` for further evaluation.",
        "",
        table,
        "",
        "## Time",
        "",
        *[f"- {k}: {v:.1f} s" for k, v in timings.items()],
        f"- total: {total:.1f} s",
        "",
    ]
    for label, rep in reports.items():
        cfg = configs[label]
        lines += [
            f"## {label}",
            "",
            rep.to_markdown(),
            "Training config: `" + json.dumps(dataclasses.asdict(cfg)) + "`",
            "",
        ]
    return "\n".join(lines)
