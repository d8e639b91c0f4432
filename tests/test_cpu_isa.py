"""Every CPU instruction-set path of the C++ noise tiles against the spec.

The extension picks its tile code once per process (csrc/cpu/random_tiles.cpp): AVX-512
where the CPU has it, else AVX2+FMA, else portable C++; ``FASTNOISE_CPU_ISA=avx2|generic``
caps the choice. So each path runs in a subprocess of its own:

- natively, for every path this CPU has; the others are reported as skipped with the
  reason (an AVX2-only CI machine skips ``avx512`` visibly, never silently);
- emulated, for the AVX2 and AVX-512 tiles on any CPU: tests/isa_emulation compiles the
  same header code through SIMDe's portable intrinsics, so lane-order, key and counter
  bugs in the SIMD paths are caught on machines that cannot run them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnoise import _extension, rng
from fastnoise._backends import reference as ref

from conftest import REPO_ROOT, SEED_OFFSETS

ISAS = ["avx512", "avx2", "generic"]
Z_ATOL = 2e-6  # spec normals: float32 log/sin/cos may differ by an ulp or two
NUMEL = 50_001  # no multiple of a tile (128 elements) or of a 16-counter vector
OP_SHAPE = (5, 3, 7, 9)  # odd sizes for the fused ops

_NATIVE_SCRIPT = r"""
import json, sys, torch
from fastnoise import _extension
from fastnoise._backends import cpp
args = json.loads(sys.argv[2])
cases, shape, numel = args["cases"], args["shape"], args["numel"]
out = {"isa": _extension.cpu_isa(), "cases": {}}
g = torch.Generator().manual_seed(0)
x, grad = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
sigma = torch.rand(shape[1:], generator=g)
w, b = 0.3 * torch.randn(shape[1:], generator=g), 0.3 * torch.randn(shape[-1:], generator=g)
for name, (seed, offset) in cases.items():
    zeros = torch.zeros(1, numel)
    out["cases"][name] = {
        "normal": cpp.noise_forward(zeros, torch.ones(()), seed, offset),
        "uniform": cpp.random_start(zeros, 1.0, seed, offset, 0.0, 1.0, False),
        "noise_backward": cpp.noise_backward_sigma(grad, sigma, seed, offset),
        "pnil_forward": cpp.pnil_forward(x, w, b, seed, offset),
        "pnil_backward": cpp.pnil_backward(grad, x, w, b, seed, offset),
    }
torch.save({"inputs": (x, grad, sigma, w, b), **out}, sys.argv[1])
"""


def _run_native(isa: str, path: Path) -> dict:
    """The extension's outputs with its tile code capped at ``isa``, in a fresh process."""
    env = {**os.environ, "FASTNOISE_CPU_ISA": isa}
    args = json.dumps({"cases": SEED_OFFSETS, "shape": OP_SHAPE, "numel": NUMEL})
    done = subprocess.run(
        [sys.executable, "-c", _NATIVE_SCRIPT, str(path), args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    reason = _extension.unavailable_reason()
    assert reason is None, f"the C++ extension must build on this machine: {reason}"
    folder = tmp_path_factory.mktemp("isa")
    return {isa: _run_native(isa, folder / f"{isa}.pt") for isa in ISAS}


@pytest.mark.parametrize("isa", ISAS)
def test_native_path_matches_spec(native, isa):
    result = native[isa]
    if result["isa"] != isa:
        pytest.skip(f"this CPU lacks {isa}: its widest tile path is {native['avx512']['isa']}")
    x, grad, sigma, w, b = result["inputs"]
    for name, (seed, offset) in SEED_OFFSETS.items():
        got = result["cases"][name]
        z = rng.randn((1, NUMEL), seed, offset)
        assert (got["normal"] - z).abs().max().item() <= Z_ATOL, name
        u = 2.0 * rng.rand((1, NUMEL), seed, offset) - 1.0
        torch.testing.assert_close(got["uniform"], u, rtol=0, atol=2e-7, msg=name)
        want_sigma = ref.noise_backward_sigma(grad, sigma, seed, offset)
        torch.testing.assert_close(got["noise_backward"], want_sigma, rtol=1e-4, atol=1e-4)
        want = ref.pnil_forward(x, w, b, seed, offset)
        torch.testing.assert_close(got["pnil_forward"], want, rtol=1e-5, atol=1e-5)
        wants = ref.pnil_backward(grad, x, w, b, seed, offset)
        for g, want in zip(got["pnil_backward"], wants, strict=True):
            torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_native_path_agrees_with_generic(native, isa):
    """Same words and the same uniforms bit for bit; normals within FMA rounding."""
    result, generic = native[isa], native["generic"]
    if result["isa"] != isa:
        pytest.skip(f"this CPU lacks {isa}: its widest tile path is {native['avx512']['isa']}")
    assert generic["isa"] == "generic"
    for name in SEED_OFFSETS:
        got, want = result["cases"][name], generic["cases"][name]
        assert torch.equal(got["uniform"], want["uniform"]), name
        assert (got["normal"] - want["normal"]).abs().max().item() <= 1e-6, name


# --- the SIMD tiles through SIMDe, on any CPU ---------------------------------------------

EMULATION_SOURCE = REPO_ROOT / "tests" / "isa_emulation" / "tiles_main.cpp"
SIMDE_HEADER = Path("/usr/include/simde/x86/avx512.h")
EMULATED_TILES = 40  # 5,120 elements a case: every lane of every vector, many times over


@pytest.fixture(scope="module")
def emulated_tiles(tmp_path_factory) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    missing = None
    if compiler is None:
        missing = "no C++ compiler"
    elif not SIMDE_HEADER.is_file() and not _simde_on_include_path(compiler):
        missing = "SIMDe headers not found (Debian/Ubuntu: apt-get install libsimde-dev)"
    if missing:
        if os.environ.get("FASTNOISE_REQUIRE_SIMDE") == "1":  # CI installs it: never skip
            pytest.fail(missing)
        pytest.skip(missing)
    binary = tmp_path_factory.mktemp("emulation") / "tiles_main"
    cmd = [
        compiler, "-O2", "-std=c++17", "-Wno-psabi", f"-I{REPO_ROOT / 'csrc' / 'cpu'}",
        str(EMULATION_SOURCE), "-o", str(binary),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return binary


def _simde_on_include_path(compiler: str) -> bool:
    probe = subprocess.run(
        [compiler, "-x", "c++", "-fsyntax-only", "-"],
        input="#include <simde/x86/avx512.h>\n", capture_output=True, text=True,
    )  # fmt: skip
    return probe.returncode == 0


def _emulated(binary: Path, isa: str, kind: str, seed: int, counter: int) -> torch.Tensor:
    done = subprocess.run(
        [str(binary), isa, kind, str(seed), str(counter), str(EMULATED_TILES)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return torch.from_numpy(np.frombuffer(done.stdout, dtype=np.float32).copy())


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_emulated_simd_tiles_match_spec(emulated_tiles, isa, seed_offset):
    seed, counter = seed_offset
    numel = EMULATED_TILES * 128
    z = _emulated(emulated_tiles, isa, "normal", seed, counter)
    assert z.numel() == numel
    assert (z - rng.randn((numel,), seed, counter)).abs().max().item() <= Z_ATOL
    u = _emulated(emulated_tiles, isa, "uniform", seed, counter)
    assert torch.equal(u, rng.rand((numel,), seed, counter))  # same float32 ops as the spec
