"""Shared benchmark machinery: the shapes, the backends to time, a memcpy-bandwidth
probe (the bytes floor) and the summary table printed at the end of the run.

Run: ``pytest benchmarks/ --benchmark-only`` (not collected by the plain ``pytest`` run:
pyproject's testpaths is ``tests``).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import eager`

import fastnoise  # noqa: E402

# Activations of ResNet-V1(20) on CIFAR-10 at batch 128: one per stage.
RESNET20_SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fused_backends(device: str) -> list[str]:
    """Available fastnoise backends that run ``device``, skipping the pure-torch
    reference (the spec: correct, not fast, and minutes per round at these shapes)."""
    return [
        b.name
        for b in fastnoise.backends()
        if b.available and device in b.devices and b.name != "torch"
    ]


def cases() -> list[tuple[str, str]]:
    """(device, backend) pairs, the eager baseline first on each device."""
    out = []
    for device in devices():
        out.append((device, "eager"))
        out += [(device, name) for name in fused_backends(device)]
    return out


def per_call_info(device: str, backend: str, op: str, passes: str, shape) -> dict:
    """The ``extra_info`` of a per-call row, as ``ratio_table.py`` reads it."""
    return dict(
        device=device,
        device_name=torch.cuda.get_device_name() if device == "cuda" else None,
        backend=backend,
        op=op,
        passes=passes,
        shape=list(shape),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
    )


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def paired_ratios(slow, fast, pairs: int, sync=None) -> list[float]:
    """slow/fast time ratios of ``pairs`` back-to-back runs: neighbours on a shared CPU
    slow both halves of a pair alike, so the ratio is steadier than either time. No
    warm-up here: callers warm up as their workload needs.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock starts and at the end
    of each half, so each half's time covers the device work it queued.
    """
    sync = sync or (lambda: None)
    ratios = []
    for _ in range(pairs):
        sync()
        start = time.perf_counter()
        slow()
        sync()
        middle = time.perf_counter()
        fast()
        sync()
        ratios.append((middle - start) / (time.perf_counter() - middle))
    return ratios


def saved_bytes(fn) -> int:
    """Bytes autograd saves for backward while ``fn`` runs its forward (distinct storages)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@dataclass
class Row:
    op: str
    mode: str
    shape: tuple[int, ...]
    device: str
    backend: str
    median_s: float
    bytes_moved: int  # the minimum traffic of the op: what a perfect fused kernel moves
    saved: int | None  # bytes saved for backward, None when not applicable


_ROWS: list[Row] = []
_BANDWIDTH: dict[str, float] = {}


def memcpy_bandwidth(device: str) -> float:
    """Bytes per second of a large tensor copy (read + write) on ``device``, best of 10.

    On the CPU the copy is also timed by CPU time (``time.process_time``), which a busy
    shared machine inflates less than wall time; the higher (stricter) figure is used.
    """
    if device not in _BANDWIDTH:
        n = 1 << 25  # 128 MiB of float32
        src = torch.ones(n, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)
        best_wall = best_cpu = float("inf")
        for _ in range(10):
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            dst.copy_(src)
            synchronize(device)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        best = best_wall if device != "cpu" or torch.get_num_threads() > 1 else best_cpu
        best = min(best, best_wall)
        _BANDWIDTH[device] = 2 * src.numel() * src.element_size() / max(best, 1e-9)
    return _BANDWIDTH[device]


@pytest.fixture
def record(benchmark):
    """Time ``fn`` with pytest-benchmark and keep a row for the summary table."""

    def run(fn, *, op, mode, shape, device, backend, bytes_moved, saved=None, rounds=10):
        def timed():
            fn()
            synchronize(device)

        benchmark.group = f"{op} {mode} {shape}"
        benchmark.extra_info.update(backend=backend, device=device, bytes_moved=bytes_moved)
        benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1, iterations=1)
        median = benchmark.stats.stats.median
        _ROWS.append(Row(op, mode, tuple(shape), device, backend, median, bytes_moved, saved))

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ROWS:
        return
    write = terminalreporter.write_line
    write("")
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    write(
        f"fastnoise benchmarks: torch {torch.__version__}, {cpu}, "
        f"{torch.get_num_threads()} threads{gpu}, load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    try:
        from fastnoise import _extension

        write(f"cpp tiles: {_extension.cpu_isa()}")
    except Exception:  # no extension: the cpp rows are absent anyway
        pass
    for device in sorted({r.device for r in _ROWS}):
        bw = memcpy_bandwidth(device)
        write(f"{device} memcpy bandwidth: {bw / 1e9:.1f} GB/s (read + write, 128 MiB copy)")
    header = (
        f"{'op':<14}{'mode':<9}{'shape':<19}{'dev':<5}{'backend':<8}{'median ms':>10}"
        f"{'speed-up':>9}{'GB/s':>7}{'floor ms':>9}{'saved MB':>9}"
    )
    write(header)
    write("-" * len(header))
    eager = {(r.op, r.mode, r.shape, r.device): r.median_s for r in _ROWS if r.backend == "eager"}
    for r in sorted(_ROWS, key=lambda r: (r.op, r.mode, r.device, r.shape, r.backend != "eager")):
        base = eager.get((r.op, r.mode, r.shape, r.device))
        speedup = f"{base / r.median_s:.2f}x" if base else "-"
        floor_ms = r.bytes_moved / memcpy_bandwidth(r.device) * 1e3
        saved = f"{r.saved / 2**20:.1f}" if r.saved is not None else "-"
        write(
            f"{r.op:<14}{r.mode:<9}{str(r.shape):<19}{r.device:<5}{r.backend:<8}"
            f"{r.median_s * 1e3:>10.2f}{speedup:>9}{r.bytes_moved / r.median_s / 1e9:>7.1f}"
            f"{floor_ms:>9.2f}{saved:>9}"
        )
    write("GB/s and floor use the op's minimum traffic (fused: each tensor read/written once).")
