"""Strength parity of fastnoise's APGD-CE, APGD-T and Square against an independent
implementation (torchattacks), on a small deterministic MNIST CNN.

Both sides attack the same model, the same test images, at the same eps, with the same
budget (APGD: steps per run, one run, 9 target classes for APGD-T; Square: the same
number of queries per image, p_init 0.8, margin loss). An image counts as robust when
the deterministic model still classifies the returned point correctly; every returned
point is checked to lie in the eps-ball and the pixel box. The two sides are compared
image by image with McNemar's exact test: among the images where exactly one side
broke the model, is each side equally likely to be the one? (``scipy.stats.binomtest``,
two-sided, p = 0.5). ``--null`` adds fastnoise against itself with another seed, which
shows how many discordant images randomness alone gives.

torchattacks is only a yardstick (``pip install torchattacks`` into the venv); it is not
a dependency of fastnoise and no code of it is copied into fastnoise.

    python benchmarks/parity_reference.py                # train, attack, table + JSON
    python benchmarks/parity_reference.py --sweep        # APGD-CE accuracy over eps

The model (``fastnoise.models.small_cnn()``, no noise) trains for ``--epochs`` epochs on
the 5,000-image embedded MNIST training split and is cached at ``--checkpoint``. A few
minutes on 2 CPU cores with the defaults. What it gave is in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from fastnoise.attacks import APGD, APGDT, Square
from fastnoise.data import as_tensors, load_dataset
from fastnoise.models import small_cnn


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eps", type=float, default=0.12, help="L-inf radius (MNIST pixels in [0, 1])")
    p.add_argument("--images", type=int, default=500, help="first N images of the test split")
    p.add_argument("--steps", type=int, default=100, help="APGD steps per run (both sides)")
    p.add_argument("--queries", type=int, default=1000, help="Square queries per image")
    p.add_argument("--targets", type=int, default=9, help="APGD-T target classes")
    p.add_argument("--attacks", nargs="+", default=["apgd-ce", "apgd-t", "square"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--null", action="store_true", help="also fastnoise vs fastnoise (seed + 1)")
    p.add_argument("--sweep", action="store_true", help="APGD-CE accuracy over eps, then exit")
    p.add_argument("--checkpoint", default="runs/parity_reference/small_cnn.pt")
    p.add_argument("--out", default="runs/parity_reference/results.json")
    return p.parse_args(argv)


# -- the model ----------------------------------------------------------------------------


def trained_model(args) -> torch.nn.Module:
    model = small_cnn()
    path = Path(args.checkpoint)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        print(f"loaded {path}")
        return model.eval()
    torch.manual_seed(args.seed)
    x, y = as_tensors(load_dataset("embedded", train=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(y))
        total = 0.0
        for start in range(0, len(y), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(y):.4f}", flush=True)
    print(f"trained in {time.perf_counter() - started:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


@torch.no_grad()
def correct(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i : i + 250]).argmax(1) for i in range(0, len(y), 250)]) == y


class RowCounter:
    """Forward passes and rows of the model (a forward pre-hook)."""

    def __init__(self, model):
        self.passes = self.rows = 0
        model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.passes += 1
        self.rows += args[0].shape[0]


# -- the two sides ------------------------------------------------------------------------


def fastnoise_attack(name, model, args, seed):
    torch.manual_seed(seed)
    if name == "apgd-ce":
        attack = APGD(model, args.eps, "ce", args.steps, eot=1, restarts=1)
    elif name == "apgd-t":
        attack = APGDT(model, args.eps, args.steps, eot=1, n_target_classes=args.targets)
    else:  # fastnoise counts the initial point as a query; torchattacks does not
        attack = Square(model, args.eps, queries=args.queries + 1, p_init=0.8)
    return attack


def reference_attack(name, model, args, seed):
    import torchattacks

    if name == "apgd-ce":
        return torchattacks.APGD(
            model, "Linf", args.eps, args.steps, n_restarts=1, seed=seed, loss="ce", rho=0.75
        )
    if name == "apgd-t":
        # torchattacks targets the n_classes - 1 most likely wrong classes
        return torchattacks.APGDT(
            model,
            "Linf",
            args.eps,
            args.steps,
            n_restarts=1,
            seed=seed,
            rho=0.75,
            n_classes=args.targets + 1,
        )
    return torchattacks.Square(
        model,
        "Linf",
        args.eps,
        n_queries=args.queries,
        n_restarts=1,
        p_init=0.8,
        loss="margin",
        resc_schedule=True,
        seed=seed,
    )


def run_side(make, name, model, counter, x, y, args, seed) -> dict:
    attack = make(name, model, args, seed)
    counter.passes = counter.rows = 0
    torch.manual_seed(seed)
    started = time.perf_counter()
    adv = torch.cat(
        [attack(x[i : i + 250], y[i : i + 250]).detach() for i in range(0, len(y), 250)]
    )
    seconds = time.perf_counter() - started
    passes, rows = counter.passes, counter.rows
    distance = float((adv - x).abs().amax())
    in_box = bool(((adv >= 0) & (adv <= 1)).all())
    robust = correct(model, adv, y)
    return {
        "robust": robust,
        "robust_accuracy": float(robust.float().mean()),
        "seconds": seconds,
        "forward_passes": passes,
        "forward_rows_per_image": rows / len(y),
        "max_linf": distance,
        "valid": distance <= args.eps + 1e-5 and in_box,
    }


def mcnemar(a: torch.Tensor, b: torch.Tensor) -> dict:
    """a, b: robust per image. b_only: images only side a broke; a_only: only side b."""
    a_only = int((a & ~b).sum())  # robust under a, broken by b
    b_only = int((~a & b).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else binomtest(a_only, n, 0.5).pvalue
    return {"a_robust_b_broke": a_only, "a_broke_b_robust": b_only, "p_value": p}


def sweep(model, x, y, args) -> None:
    counter = RowCounter(model)
    for eps in (0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3):
        args.eps = eps
        side = run_side(fastnoise_attack, "apgd-ce", model, counter, x, y, args, args.seed)
        accuracy = 100 * side["robust_accuracy"]
        print(
            f"eps {eps:<5} APGD-CE ({args.steps} steps) robust accuracy {accuracy:.1f}%", flush=True
        )


def print_tables(results, args, n, clean, version) -> None:
    budget = {
        "apgd-ce": f"{args.steps} steps",
        "apgd-t": f"{args.steps} steps x {args.targets} targets",
        "square": f"{args.queries} queries",
    }
    print(
        f"\nParity on {n} embedded MNIST test images, L-inf eps {args.eps:g}, clean accuracy "
        f"{100 * clean:.1f}%, torchattacks {version}, torch {torch.__version__}"
    )
    print(
        "| Attack | Budget | fastnoise robust % | torchattacks robust % | only fastnoise broke "
        "| only torchattacks broke | McNemar p | fastnoise s | torchattacks s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        a, b = r["fastnoise"], r["torchattacks"]
        cells = [
            r["attack"],
            budget[r["attack"]],
            f"{100 * a['robust_accuracy']:.1f}",
            f"{100 * b['robust_accuracy']:.1f}",
            r["a_broke_b_robust"],
            r["a_robust_b_broke"],
            f"{r['p_value']:.3g}",
            f"{a['seconds']:.1f}",
            f"{b['seconds']:.1f}",
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.null:
        print(f"\nfastnoise seed {args.seed} vs seed {args.seed + 1} (randomness alone):")
        for r in results:
            null, other = r["null"], r["fastnoise_seed2"]
            print(
                f"| {r['attack']} | {100 * r['fastnoise']['robust_accuracy']:.1f} | "
                f"{100 * other['robust_accuracy']:.1f} | only seed {args.seed} broke "
                f"{null['a_broke_b_robust']}, only seed {args.seed + 1} broke "
                f"{null['a_robust_b_broke']} | p {null['p_value']:.3g} |"
            )
    rows = ", ".join(
        f"{r['attack']} {r['fastnoise']['forward_rows_per_image']:.0f} / "
        f"{r['torchattacks']['forward_rows_per_image']:.0f}"
        for r in results
    )
    print(f"\nforward rows per image (fastnoise / torchattacks): {rows}")
    invalid = [
        (r["attack"], side)
        for r in results
        for side in ("fastnoise", "torchattacks")
        if not r[side]["valid"]
    ]
    if invalid:
        print(f"OUTSIDE the threat set: {invalid}")
    else:
        print("all returned points lie in the eps-ball and the pixel box")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torchattacks
    except ImportError:
        print("torchattacks is not installed (pip install torchattacks): nothing to compare to")
        return 1
    model = trained_model(args)
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = as_tensors(load_dataset("embedded", train=False), limit=args.images)
    clean = correct(model, x, y)
    print(f"clean accuracy on {len(y)} test images: {100 * clean.float().mean():.1f}%")
    if args.sweep:
        sweep(model, x, y, args)
        return 0

    counter = RowCounter(model)
    results = []
    for name in args.attacks:
        ours = run_side(fastnoise_attack, name, model, counter, x, y, args, args.seed)
        ref = run_side(reference_attack, name, model, counter, x, y, args, args.seed)
        row = {"attack": name, "fastnoise": ours, "torchattacks": ref}
        row.update(mcnemar(ours["robust"], ref["robust"]))
        if args.null:
            other = run_side(fastnoise_attack, name, model, counter, x, y, args, args.seed + 1)
            row["fastnoise_seed2"] = other
            row["null"] = mcnemar(ours["robust"], other["robust"])
        results.append(row)
        print(
            f"{name}: fastnoise {100 * ours['robust_accuracy']:.1f}% ({ours['seconds']:.1f} s), "
            f"torchattacks {100 * ref['robust_accuracy']:.1f}% ({ref['seconds']:.1f} s), "
            f"p = {row['p_value']:.3g}",
            flush=True,
        )
    print_tables(results, args, len(y), float(clean.float().mean()), torchattacks.__version__)

    def plain(side: dict) -> dict:
        return {
            k: (v.int().tolist() if isinstance(v, torch.Tensor) else v) for k, v in side.items()
        }

    out = {
        "settings": vars(args),
        "clean_accuracy": float(clean.float().mean()),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "threads": torch.get_num_threads(),
        },
        "results": [
            {k: (plain(v) if isinstance(v, dict) and "robust" in v else v) for k, v in r.items()}
            for r in results
        ],
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
