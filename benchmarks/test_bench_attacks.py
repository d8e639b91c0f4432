"""Attack throughput: batched EOT vs the Python loop of draws, and SPSA / the pixel
attack on a whole batch vs image by image, on the CPU. The back-to-back EOT pairs
(``test_eot_speedup_paired``) also run on CUDA when there is a GPU, where the loop's
launches per draw are expected to cost more than on the CPU (not yet measured).

The model is the PNIL paper's small MNIST CNN with Learn2Perturb noise after each
convolution (``fastnoise.models.small_cnn(noise="l2p")``), so every forward draws
fresh noise: the workload EOT exists for. Both sides of each comparison run the same
number of model rows; only the batching differs. The EOT rows also run a PNI-W model
(``noise="pni-w"``), whose weight noise is drawn once per forward: there "batched" detects
it and falls back to separate passes (independent draws), so it should match the loop,
while the per-row model must stay well ahead (issue 10: at least 1.5x).

Run: ``pytest benchmarks/test_bench_attacks.py --benchmark-only`` (a few minutes on
2 CPU cores; ``-k "paired and cuda"`` for the GPU pairs alone, as benchmarks/gpu_check.py
does). A readable table is printed at the end.
"""

from __future__ import annotations

import os
import statistics
import warnings

import pytest
import torch

from fastnoise.attacks import SPSA, FewPixel, eot_gradient, sequential_eot_gradient
from fastnoise.attacks._losses import cross_entropy

from conftest import devices, paired_ratios, synchronize

BATCH = 8  # images per EOT gradient
SPSA_CONFIG = dict(eps=0.1, steps=2, samples=64, early_stop=False)
PIXEL_CONFIG = dict(pixels=1, population=64, iterations=3, early_stop=False)
GRADIENT_FREE_IMAGES = 8

# workload, approach, size, best s, median s, rate (at the best time)
_ROWS: list[tuple[str, str, str, float, float, float]] = []
ROUNDS = 5
_PAIRED: list[tuple[str, str, float, float, float]] = []  # workload, device, median, min, max


def _model(noise: str = "l2p") -> torch.nn.Module:
    from fastnoise.models import small_cnn

    torch.manual_seed(0)
    return small_cnn(noise=noise).eval()


EOT_CASES = [("l2p", 16), ("l2p", 80), ("pni-w", 16)]  # (noise, copies)


def _images(n: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)  # drawn on the CPU: the same images on every device
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return x.to(device), y.to(device)


def _time(benchmark, fn) -> tuple[float, float]:
    """(best, median) seconds. The table ranks by the best round: on a shared CPU the
    other rounds mostly measure the neighbours."""
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    return benchmark.stats.stats.min, benchmark.stats.stats.median


@pytest.fixture(scope="module", autouse=True)
def summary_table(request):
    yield
    if not _ROWS and not _PAIRED:
        return
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    lines = [
        "",
        f"attack benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs{gpu}",
        f"{'workload':<22}{'approach':<16}{'size':<16}"
        f"{'best ms':>10}{'median ms':>11}{'rate':>10}{'speed-up':>10}",
    ]
    lines.append("-" * len(lines[-1]))
    baselines = ("sequential", "image-by-image")
    baseline = {w: t for w, a, _, t, _, _ in _ROWS if a in baselines}
    for workload, approach, size, best, median, rate in _ROWS:
        base = baseline.get(workload)
        speedup = f"{base / best:.2f}x" if base and approach not in baselines else "-"
        lines.append(
            f"{workload:<22}{approach:<16}{size:<16}{best * 1e3:>10.1f}{median * 1e3:>11.1f}"
            f"{rate:>10.1f}{speedup:>10}"
        )
    lines.append(
        f"best of {ROUNDS} rounds; rate (at best): EOT copies (image x draw) or images per "
        "second; speed-up: batched over the loop, best vs best."
    )
    for workload, device, median, low, high in _PAIRED:
        lines.append(
            f"{workload:<22}{device:<6}batched vs loop, back-to-back pairs: median speed-up "
            f"{median:.2f}x (range {low:.2f}x to {high:.2f}x)"
        )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("noise,copies", EOT_CASES)
@pytest.mark.parametrize("approach", ["sequential", "batched"])
def test_eot_gradient(benchmark, approach, noise, copies):
    model = _model(noise)
    x, y = _images(BATCH)
    if approach == "batched":  # as users call it: probes for a shared draw on every call
        fn = lambda: eot_gradient(model, cross_entropy, x, y, copies)
    else:
        fn = lambda: sequential_eot_gradient(model, cross_entropy, x, y, copies)
    benchmark.group = f"EOT gradient {noise} L={copies}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pni-w's fallback warning, once per call
        best, median = _time(benchmark, fn)
    rate = BATCH * copies / best
    _ROWS.append((f"EOT grad {noise} L={copies}", approach, f"B={BATCH}", best, median, rate))


def _gradient_free(benchmark, name, make, approach):
    model = _model()
    x, y = _images(GRADIENT_FREE_IMAGES)
    attack = make(model)
    if approach == "batched":
        fn = lambda: attack(x, y)
    else:
        fn = lambda: [attack(x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]
    benchmark.group = name
    best, median = _time(benchmark, fn)
    _ROWS.append((name, approach, f"N={x.shape[0]}", best, median, x.shape[0] / best))


@pytest.mark.parametrize("approach", ["image-by-image", "batched"])
def test_spsa_throughput(benchmark, approach):
    make = lambda model: SPSA(model, **SPSA_CONFIG)
    _gradient_free(benchmark, "SPSA 2x64 samples", make, approach)


@pytest.mark.parametrize("approach", ["image-by-image", "batched"])
def test_pixel_throughput(benchmark, approach):
    make = lambda model: FewPixel(model, **PIXEL_CONFIG)
    _gradient_free(benchmark, "pixel DE 64x3 gens", make, approach)


@pytest.mark.parametrize("noise,copies", EOT_CASES)
@pytest.mark.parametrize("device", devices())
def test_eot_speedup_paired(benchmark, device, noise, copies):
    model = _model(noise).to(device)
    x, y = _images(BATCH, device)
    batched = lambda: eot_gradient(model, cross_entropy, x, y, copies)
    looped = lambda: sequential_eot_gradient(model, cross_entropy, x, y, copies)
    sync = lambda: synchronize(device)  # CUDA runs asynchronously: time completed work
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        looped(), batched()  # warm-up: first kernel loads and allocations
        ratios = paired_ratios(looped, batched, pairs=7, sync=sync)
        benchmark.pedantic(lambda: (batched(), sync()), rounds=1, iterations=1)
    benchmark.group = f"EOT gradient {noise} L={copies} {device}"
    benchmark.extra_info.update(device=device, paired_speedups=ratios)
    label = f"EOT grad {noise} L={copies}"
    _PAIRED.append((label, device, statistics.median(ratios), min(ratios), max(ratios)))
