"""Which GPU archs the CUDA sources are compiled for (``_extension.cuda_arch_list``), on a
CPU: ``TORCH_CUDA_ARCH_LIST`` when set; the ahead-of-time build (setup.py) the common
archs plus PTX, so an install also runs on GPUs other than the one it was built beside;
the just-in-time build the visible GPUs (mocked here), else 9.0."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
from pathlib import Path

import pytest
import setuptools
import torch

from fastnoise import _extension

REPO = Path(__file__).resolve().parents[1]
ENV = "TORCH_CUDA_ARCH_LIST"


@pytest.fixture
def no_arch_env(monkeypatch):
    # setenv first so that monkeypatch records the original state, whatever setup.py or
    # _jit_build set meanwhile: delenv alone records nothing when the variable is unset.
    monkeypatch.setenv(ENV, "")
    monkeypatch.delenv(ENV)


def _visible_gpus(monkeypatch, capabilities: list[tuple[int, int]]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(capabilities))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capabilities[i])


@pytest.mark.parametrize("ahead_of_time", [True, False])
def test_the_variable_wins_over_defaults_and_visible_gpus(monkeypatch, no_arch_env, ahead_of_time):
    _visible_gpus(monkeypatch, [(8, 0)])
    monkeypatch.setenv(ENV, "8.6+PTX")
    assert _extension.cuda_arch_list(ahead_of_time=ahead_of_time) == "8.6+PTX"
    monkeypatch.setenv(ENV, "  ")  # blank counts as unset
    default = _extension.AOT_CUDA_ARCHS if ahead_of_time else "8.0"
    assert _extension.cuda_arch_list(ahead_of_time=ahead_of_time) == default


@pytest.mark.parametrize("gpus", [[], [(9, 0)], [(7, 5), (12, 0)]], ids=["none", "h100", "two"])
def test_ahead_of_time_targets_the_common_archs_whatever_gpu_is_here(
    monkeypatch, no_arch_env, gpus
):
    _visible_gpus(monkeypatch, gpus)
    archs = _extension.cuda_arch_list(ahead_of_time=True)
    assert archs == _extension.AOT_CUDA_ARCHS
    # sm_80 and sm_86 (A100, consumer Ampere) were missing from the sm_90-only build
    assert {"8.0", "8.6", "9.0+PTX"} <= set(archs.split(";"))
    assert archs.endswith("+PTX")  # later GPUs run the PTX


def test_just_in_time_takes_the_visible_gpus(monkeypatch, no_arch_env):
    _visible_gpus(monkeypatch, [(9, 0), (8, 6), (9, 0)])
    assert _extension.cuda_arch_list() == "8.6;9.0"  # each once, in order
    _visible_gpus(monkeypatch, [(12, 0)])
    assert _extension.cuda_arch_list() == "12.0"
    _visible_gpus(monkeypatch, [])
    assert _extension.cuda_arch_list() == _extension.JIT_CUDA_ARCH_WITHOUT_GPU == "9.0"


def test_default_archs_are_accepted_by_torch(monkeypatch):
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    monkeypatch.setenv(ENV, _extension.AOT_CUDA_ARCHS)
    flags = _get_cuda_arch_flags()  # raises on an arch torch does not know
    for sm in ("75", "80", "86", "89", "90"):
        assert f"-gencode=arch=compute_{sm},code=sm_{sm}" in flags
    assert "-gencode=arch=compute_90,code=compute_90" in flags  # the PTX


@pytest.mark.skipif(
    _extension._cuda_home() is None, reason="needs nvcc (CUDA_HOME or /usr/local/cuda)"
)
def test_default_archs_are_supported_by_this_nvcc():
    """nvcc 13 dropped sm_50 to sm_72: a default that names one fails the whole build."""
    nvcc = _extension._cuda_home() / "bin" / "nvcc"
    listed = subprocess.run(
        [str(nvcc), "--list-gpu-arch"], capture_output=True, text=True, timeout=60
    ).stdout
    supported = set(re.findall(r"compute_(\d+)", listed))
    if not supported:
        pytest.skip(f"{nvcc} does not list its archs (older than CUDA 11.4?)")
    for arch in _extension.AOT_CUDA_ARCHS.split(";"):
        assert arch.removesuffix("+PTX").replace(".", "") in supported, arch


def test_just_in_time_build_compiles_for_the_visible_gpu(monkeypatch, no_arch_env, tmp_path):
    """_jit_build hands cpp_extension the visible GPU's arch, and restores the variable."""
    from torch.utils import cpp_extension

    seen = {}

    def fake_load(**kwargs):
        seen["arch"] = os.environ.get(ENV)
        seen["with_cuda"] = kwargs["with_cuda"]

    _visible_gpus(monkeypatch, [(8, 6)])
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)  # _jit_build sets it
    monkeypatch.setenv("FASTNOISE_EXT_DIR", str(tmp_path))
    monkeypatch.setenv("FASTNOISE_BUILD_CUDA", "1")
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert _extension._jit_build().startswith("jit:")
    assert seen == {"arch": "8.6", "with_cuda": True}
    assert ENV not in os.environ
    # the arch is part of the build's cache key: another GPU gets its own build
    on_a10 = _extension.build_dir(True)
    _visible_gpus(monkeypatch, [(8, 0)])
    assert _extension.build_dir(True) != on_a10


@pytest.mark.skipif(
    torch.version.cuda is None or _extension._cuda_home() is None,
    reason="setup.py builds the CUDA sources only with a CUDA build of torch and nvcc",
)
@pytest.mark.parametrize("preset", [None, "8.0"])
def test_setup_py_builds_for_the_common_archs_unless_told(monkeypatch, no_arch_env, preset):
    """What ``FASTNOISE_BUILD_EXT=1 pip install`` would compile, without compiling."""
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.setenv("FASTNOISE_BUILD_EXT", "1")
    monkeypatch.setenv("FASTNOISE_BUILD_CUDA", "1")
    monkeypatch.setenv("CUDA_HOME", os.environ.get("CUDA_HOME", str(_extension._cuda_home())))
    if preset is not None:
        monkeypatch.setenv(ENV, preset)
    _visible_gpus(monkeypatch, [(9, 0)])  # the build machine's GPU must not narrow the list
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    (extension,) = captured["ext_modules"]
    assert any(str(s).endswith(".cu") for s in extension.sources)
    assert os.environ[ENV] == (preset or _extension.AOT_CUDA_ARCHS)
