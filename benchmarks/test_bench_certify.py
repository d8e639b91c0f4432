"""Randomized smoothing's CERTIFY on the CPU: fastnoise.certify.Smooth against the
reference algorithm in eager PyTorch (issue 14).

The reference (``certify_reference.reference_certify``) is Cohen et al.'s Algorithm 1 as
their released code runs it: one image at a time, each batch made with ``x.repeat`` plus
``torch.randn_like`` noise, the batch's predicted classes counted on the host. Smooth runs
the same algorithm with the same n0, n and batch size on the same model, but draws the noise
with fastnoise's fused kernel into the copy of the images, packs several images into one
pass when their samples fit (here the n0 = 100 selection samples of up to 10 images share
a pass of 1000), and keeps the counts on the device until the end of the call.

Three base classifiers: two small MLPs, 784-128-10 and 784-32-10, where drawing the noise
is a large share of the work (in the reference, about half with 128 hidden units and most of
it with 32), and fastnoise's small MNIST CNN, where the forward pass dominates. Weights are
random (seeded): the work per sample does not depend on them. Throughput is noisy samples
(n0 + n per image) per second. The opt-in ``compile=True`` and ``amp="bf16"`` rows are
timed against Smooth without them.

Run: ``pytest benchmarks/test_bench_certify.py --benchmark-only``. A readable table is
printed at the end.
"""

from __future__ import annotations

import os
import statistics

import pytest
import torch
from certify_reference import reference_certify
from torch import nn

from fastnoise.certify import Smooth

from conftest import paired_ratios

SIGMA = 0.25
N0 = 100
ALPHA = 0.001
BATCH = 1000
ROUNDS = 3
PAIRS = 5
# model -> (images per call, n): each call a few seconds on 2 loaded cores
WORKLOADS = {"mlp128": (4, 10_000), "mlp32": (4, 10_000), "small_cnn": (2, 2_000)}
APPROACHES = ("reference", "fastnoise", "fastnoise+compile", "fastnoise+bf16")

_ROWS: list[tuple[str, str, int, float, float]] = []  # model, approach, samples, best, median
_PAIRED: list[tuple[str, str, float, float, float]] = []  # model, vs, median, min, max


def build_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("mlp"):
        hidden = int(name[3:])
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )
    else:
        from fastnoise.models import small_cnn

        model = small_cnn()
    return model.eval()


def certify_fn(name: str, approach: str):
    """A no-argument call that certifies the workload's images once."""
    images, n = WORKLOADS[name]
    model = build_model(name)
    x = torch.rand(images, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    if approach == "reference":

        def run():
            torch.manual_seed(0)
            return [reference_certify(model, image, N0, n, ALPHA, BATCH, SIGMA, 10) for image in x]

    else:
        smooth = Smooth(
            model,
            10,
            SIGMA,
            compile="compile" in approach,
            amp="bf16" if "bf16" in approach else None,
        )

        def run():
            return smooth.certify(x, N0, n, ALPHA, BATCH, seed=0)

    run()  # warm-up: compilation, first-call checks, allocator
    return run


def samples_per_call(name: str) -> int:
    images, n = WORKLOADS[name]
    return images * (N0 + n)


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    yield
    if not _ROWS and not _PAIRED:
        return
    lines = [
        "",
        f"CERTIFY throughput: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, n0 {N0}, batch "
        f"{BATCH}, sigma {SIGMA}",
        f"{'model':<11}{'approach':<20}{'images x (n0+n)':>16}{'best samples/s':>16}"
        f"{'median samples/s':>18}{'vs reference':>14}",
    ]
    lines.append("-" * len(lines[-1]))
    reference = {m: best for m, a, _, best, _ in _ROWS if a == "reference"}
    for model, approach, samples, best, median in _ROWS:
        base = reference.get(model)
        ratio = f"{base / best:.2f}x" if base and approach != "reference" else "-"
        images, n = WORKLOADS[model]
        shape = f"{images} x {N0 + n}"
        lines.append(
            f"{model:<11}{approach:<20}{shape:>16}{samples / best:>16,.0f}"
            f"{samples / median:>18,.0f}{ratio:>14}"
        )
    lines.append(f"best and median of {ROUNDS} rounds; ratio: reference time over this time.")
    for model, versus, median, low, high in _PAIRED:
        lines.append(
            f"{model:<11}{versus}, {PAIRS} back-to-back pairs: median {median:.2f}x "
            f"(range {low:.2f}x to {high:.2f}x)"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("approach", APPROACHES)
@pytest.mark.parametrize("model", list(WORKLOADS))
def test_certify_throughput(benchmark, model, approach):
    benchmark.group = f"certify {model}"
    fn = certify_fn(model, approach)
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1)
    stats = benchmark.stats.stats
    benchmark.extra_info["samples_per_call"] = samples_per_call(model)
    _ROWS.append((model, approach, samples_per_call(model), stats.min, stats.median))


PAIRINGS = {
    "fastnoise vs reference": ("reference", "fastnoise"),
    "compile vs fastnoise": ("fastnoise", "fastnoise+compile"),
    "bf16 vs fastnoise": ("fastnoise", "fastnoise+bf16"),
}


@pytest.mark.parametrize("pairing", list(PAIRINGS))
@pytest.mark.parametrize("model", list(WORKLOADS))
def test_speedup_paired(benchmark, model, pairing):
    slow_name, fast_name = PAIRINGS[pairing]
    slow, fast = certify_fn(model, slow_name), certify_fn(model, fast_name)
    ratios = paired_ratios(slow, fast, PAIRS)  # certify_fn warmed both up
    benchmark.pedantic(fast, rounds=1, iterations=1)
    benchmark.group = f"certify {model}"
    benchmark.extra_info["paired_speedups"] = ratios
    _PAIRED.append((model, pairing, statistics.median(ratios), min(ratios), max(ratios)))
