"""AutoAttack's attacks on the CPU: batched EOT against the sequential way of running them.

Two workloads, each run both ways on the same model and images:

* **EOT Square**: ``fastnoise.attacks.Square`` with ``eot > 1`` scores all candidates of
  all images, with all their noise copies, in one batched forward per step. The baseline
  (:class:`SequentialEOTSquare`) is the same attack with each EOT draw as its own forward
  pass, as a reference implementation loops over the draws one at a time.
* **AutoAttack "rand"**: ``fastnoise.eval.autoattack(version="rand")`` (APGD-CE then
  APGD-DLR, EOT over 20 draws, every prediction a vote over 5 draws). The baseline runs
  the same cascade with APGD's EOT gradient computed as a Python loop of 20
  forward/backward passes (:func:`fastnoise.attacks.sequential_eot_gradient`, patched in
  for ``APGD.gradient`` while the baseline runs).

The model is the small MNIST CNN with Learn2Perturb noise after each convolution
(``small_cnn(noise="l2p")``, eval mode, so every row of a forward draws its own noise),
trained for one quick epoch so that the images are classified as on a real run. The
images are the first test images of the embedded MNIST split that the model gets right
on every draw. eps is small (see ``EPS``) so that no image is broken: Square then runs
every query and the cascade's second stage attacks every image on both sides, so the
two sides do the same attack work (APGD runs all its steps either way). Budgets are
scaled down from AutoAttack's (100 steps, 5000 queries) to keep the file near 3 minutes
on 2 CPU cores; the table states them.

A forward pre-hook on the model counts forward passes and rows (all of them: the
attacks, the votes and the randomness probe). Times are per image.

Run: ``pytest benchmarks/test_bench_autoattack.py --benchmark-only``. A readable table
is printed at the end.
"""

from __future__ import annotations

import contextlib
import os
import statistics

import pytest
import torch
import torch.nn.functional as F

from fastnoise.attacks import APGD, Square, _losses, sequential_eot_gradient

from conftest import paired_ratios

IMAGES = 8  # per call; 8 x 20 copies = 160 rows, one forward on the CPU (chunk 167 rows)
EPS = 0.02  # L-inf; small enough that no image is broken (equal work on both sides)
EOT = 20  # AutoAttack "rand"'s EOT draws; Square uses the same
SQUARE_QUERIES = 25  # AutoAttack: 5000
AA_STEPS = 10  # per APGD stage; AutoAttack: 100
ROUNDS = 3
PAIRS = 5

# workload, approach, passes per call, rows per image, best s/image, median s/image, note
_ROWS: list[tuple[str, str, int, float, float, float, str]] = []
_PAIRED: list[tuple[str, float, float, float]] = []  # workload, median, min, max


class SequentialEOTSquare(Square):
    """Square with each EOT draw scored by its own forward pass of the candidates (the
    loop over draws of a reference implementation). Same search, same query count."""

    @torch.no_grad()
    def _margins(self, points, y, draws, separate):
        return torch.stack([_losses.margin(self.forward(points), y) for _ in range(draws)], 1)


def _sequential_gradient(self, loss_fn, x, y):
    return sequential_eot_gradient(self.forward, loss_fn, x, y, self.eot)


@contextlib.contextmanager
def sequential_apgd():
    """APGD's EOT gradient as a Python loop of ``eot`` forward/backward passes."""
    own = APGD.__dict__.get("gradient")
    APGD.gradient = _sequential_gradient
    try:
        yield
    finally:
        if own is None:
            del APGD.gradient
        else:
            APGD.gradient = own


class Counter:
    """Forward passes and rows of the model, from a forward pre-hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.passes = self.rows = 0
        model.register_forward_pre_hook(self._count)

    def _count(self, module, args) -> None:
        self.passes += 1
        self.rows += args[0].shape[0]

    def reset(self) -> None:
        self.passes = self.rows = 0


@pytest.fixture(scope="module")
def setup():
    return build_setup()


def build_setup():
    """(model, counter, x, y): the L2P small CNN after one epoch on 1000 embedded MNIST
    training images, and the first IMAGES test images it gets right on 20 draws."""
    from fastnoise.data import as_tensors, load_dataset
    from fastnoise.models import small_cnn

    torch.manual_seed(0)
    model = small_cnn(noise="l2p")
    x_train, y_train = as_tensors(load_dataset("embedded", train=True), limit=1000)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for start in range(0, len(y_train), 50):
        loss = F.cross_entropy(model(x_train[start : start + 50]), y_train[start : start + 50])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_test, y_test = as_tensors(load_dataset("embedded", train=False), limit=100)
    with torch.no_grad():
        right = torch.stack([model(x_test).argmax(1) == y_test for _ in range(20)]).all(0)
    keep = right.nonzero().flatten()[:IMAGES]
    assert len(keep) == IMAGES, "the quick model classifies too few test images"
    return model, Counter(model), x_test[keep], y_test[keep]


def _square(model, approach: str):
    cls = SequentialEOTSquare if approach == "sequential" else Square
    return cls(model, EPS, queries=SQUARE_QUERIES, eot=EOT, early_stop=False)


def _square_fn(setup, approach: str):
    model, _, x, y = setup
    attack = _square(model, approach)

    def fn():
        torch.manual_seed(0)
        return attack(x, y)

    return fn


def _autoattack_fn(setup, approach: str, reports: list | None = None):
    from fastnoise.eval import autoattack

    model, _, x, y = setup

    def run():
        report = autoattack(model, (x, y), EPS, "Linf", "rand", steps=AA_STEPS, seed=0,
                            progress=False)  # fmt: skip
        if reports is not None:
            reports.append(report)
        return report

    if approach == "batched":
        return run

    def fn():
        with sequential_apgd():
            return run()

    return fn


WORKLOADS = {
    "Square EOT": (_square_fn, f"L-inf eps {EPS}, {SQUARE_QUERIES} queries, eot {EOT}"),
    "AutoAttack rand": (
        _autoattack_fn,
        f"L-inf eps {EPS}, APGD-CE + APGD-DLR x {AA_STEPS} steps, eot {EOT}, 5 votes",
    ),
}


def _timed(benchmark, setup, fn):
    """(best, median) seconds per call, and the last call's passes and rows."""
    counter = setup[1]
    counts = {}

    def counted():
        counter.reset()
        fn()
        counts["passes"], counts["rows"] = counter.passes, counter.rows

    benchmark.pedantic(counted, rounds=ROUNDS, iterations=1)
    return benchmark.stats.stats.min, benchmark.stats.stats.median, counts


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    yield
    if not _ROWS and not _PAIRED:
        return
    lines = [
        "",
        f"AutoAttack benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, {IMAGES} images "
        "per call, small CNN + L2P",
        f"{'workload':<18}{'approach':<12}{'passes/call':>12}{'rows/image':>12}"
        f"{'best s/img':>12}{'median s/img':>14}{'speed-up':>10}  notes",
    ]
    lines.append("-" * len(lines[-1]))
    baseline = {w: best for w, a, _, _, best, _, _ in _ROWS if a == "sequential"}
    for workload, approach, passes, rows, best, median, note in _ROWS:
        base = baseline.get(workload)
        speedup = f"{base / best:.2f}x" if base and approach != "sequential" else "-"
        lines.append(
            f"{workload:<18}{approach:<12}{passes:>12}{rows:>12.0f}{best:>12.3f}{median:>14.3f}"
            f"{speedup:>10}  {note}"
        )
    lines.append(f"best and median of {ROUNDS} rounds; speed-up: sequential over batched, best "
                 "vs best.")  # fmt: skip
    for workload, (_, config) in WORKLOADS.items():
        lines.append(f"{workload}: {config}")
    for workload, median, low, high in _PAIRED:
        lines.append(
            f"{workload:<18}batched vs sequential, {PAIRS} back-to-back pairs: median speed-up "
            f"{median:.2f}x (range {low:.2f}x to {high:.2f}x)"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("approach", ["sequential", "batched"])
def test_square_eot(benchmark, setup, approach):
    benchmark.group = "Square EOT"
    best, median, counts = _timed(benchmark, setup, _square_fn(setup, approach))
    rows = counts["rows"] / IMAGES
    note = f"{SQUARE_QUERIES} queries x {EOT} draws = {SQUARE_QUERIES * EOT} rows/image planned"
    _ROWS.append(("Square EOT", approach, counts["passes"], rows, best / IMAGES, median / IMAGES,
                  note))  # fmt: skip


@pytest.mark.parametrize("approach", ["sequential", "batched"])
def test_autoattack_rand(benchmark, setup, approach):
    benchmark.group = "AutoAttack rand"
    reports: list = []
    fn = _autoattack_fn(setup, approach, reports)
    best, median, counts = _timed(benchmark, setup, fn)
    report = reports[-1]
    attacked = "/".join(str(s.attacked) for s in report.stages)
    note = (f"attacked per stage {attacked}, robust {100 * report.robust_accuracy:.0f}%, "
            f"attack passes {report.forward_passes}")  # fmt: skip
    _ROWS.append(("AutoAttack rand", approach, counts["passes"], counts["rows"] / IMAGES,
                  best / IMAGES, median / IMAGES, note))  # fmt: skip
    assert report.stages[-1].attacked == IMAGES, "an image was broken: the sides' work differs"


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_speedup_paired(benchmark, setup, workload):
    make, _ = WORKLOADS[workload]
    sequential, batched = make(setup, "sequential"), make(setup, "batched")
    # No warm-up: the timed rounds above ran both sides first.
    ratios = paired_ratios(sequential, batched, PAIRS)
    benchmark.pedantic(batched, rounds=1, iterations=1)
    benchmark.group = workload
    benchmark.extra_info["paired_speedups"] = ratios
    _PAIRED.append((workload, statistics.median(ratios), min(ratios), max(ratios)))
