"""Backend choice: explicit names, the environment variable, the context manager, auto."""

from __future__ import annotations

import types
import warnings

import pytest
import torch

import fastnoise
from fastnoise import _dispatch
from fastnoise._backends import BACKEND_MODULES, reference


@pytest.fixture(autouse=True)
def fresh_dispatch(monkeypatch):
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(_dispatch, "_selected", None)
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(_dispatch, "_status_cache", {})
    monkeypatch.setattr(_dispatch, "_resolved", {})
    monkeypatch.setattr(_dispatch, "_front_doors", {})


def _fake_backend(name, devices, reason=None):
    module = types.SimpleNamespace(
        NAME=name,
        unavailable_reason=lambda: reason,
        supports=lambda device: device.type in devices,
    )
    return module


def _fake_status(monkeypatch, fakes):
    real = _dispatch._status

    def status(name):
        if name in fakes:
            module = fakes[name]
            return module, None if module is None else module.unavailable_reason()
        return real(name)

    monkeypatch.setattr(_dispatch, "_status", status)


def test_backends_lists_registry_in_order():
    rows = _dispatch.backends()
    assert [r.name for r in rows] == list(BACKEND_MODULES) == ["cuda", "triton", "cpp", "torch"]
    torch_row = rows[-1]
    assert torch_row.available and torch_row.reason is None
    assert set(torch_row.devices) == {"cpu", "cuda"}
    for row in rows:
        assert row.available == (row.reason is None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="triton is available with CUDA")
def test_triton_unavailable_without_cuda_says_why():
    (row,) = [r for r in _dispatch.backends() if r.name == "triton"]
    assert not row.available
    assert "CUDA" in row.reason or "triton" in row.reason
    with pytest.raises(_dispatch.BackendUnavailableError, match="'triton' is not available"):
        fastnoise.set_backend("triton")
    assert _dispatch.get_backend() == "auto"  # a failed request changes nothing


def test_unknown_backend_names_the_argument():
    with pytest.raises(ValueError, match="backend must be one of .*'auto'.*got 'nope'"):
        fastnoise.set_backend("nope")
    with pytest.raises(TypeError, match="backend must be a backend name"):
        fastnoise.set_backend(3)


def test_set_backend_and_reset():
    fastnoise.set_backend("torch")
    assert _dispatch.get_backend() == "torch"
    assert _dispatch.backend_for(torch.device("cpu")) is reference
    fastnoise.set_backend(None)
    assert _dispatch.get_backend() == "auto"


def test_use_backend_restores_even_after_an_error():
    fastnoise.set_backend("auto")
    with pytest.raises(RuntimeError, match="boom"):
        with fastnoise.use_backend("torch"):
            assert _dispatch.get_backend() == "torch"
            raise RuntimeError("boom")
    assert _dispatch.get_backend() == "auto"
    with fastnoise.use_backend("torch"):
        with fastnoise.use_backend("auto"):
            assert _dispatch.get_backend() == "auto"
        assert _dispatch.get_backend() == "torch"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_VAR, "torch")
    assert _dispatch.get_backend() == "torch"
    fastnoise.set_backend("auto")  # code wins over the environment
    assert _dispatch.get_backend() == "auto"
    fastnoise.set_backend(None)
    monkeypatch.setenv(_dispatch.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="FASTNOISE_BACKEND must be one of"):
        fastnoise.inject_noise(torch.zeros(2, 3), 0.1, seed=1)


def test_auto_takes_first_available_backend_for_the_device(monkeypatch):
    gpu_only = _fake_backend("triton", {"cuda"})
    cpu_fast = _fake_backend("cpp", {"cpu"})
    _fake_status(monkeypatch, {"triton": gpu_only, "cuda": None, "cpp": cpu_fast})
    assert _dispatch.backend_for(torch.device("cpu")) is cpu_fast
    assert _dispatch.backend_for(torch.device("cuda")) is gpu_only


def test_auto_warns_once_when_a_faster_backend_failed(monkeypatch):
    broken_cpp = _fake_backend("cpp", {"cpu"}, reason="extension failed to build: no compiler")
    no_gpu = _fake_backend("triton", {"cuda"}, reason="no CUDA device")
    _fake_status(monkeypatch, {"triton": no_gpu, "cuda": None, "cpp": broken_cpp})
    with pytest.warns(RuntimeWarning, match="cpp \\(extension failed to build: no compiler\\)"):
        assert _dispatch.backend_for(torch.device("cpu")) is reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only, and never about triton on the CPU
        assert _dispatch.backend_for(torch.device("cpu")) is reference


def test_auto_is_silent_when_nothing_faster_was_expected(monkeypatch):
    no_gpu = _fake_backend("triton", {"cuda"}, reason="no CUDA device")
    _fake_status(monkeypatch, {"triton": no_gpu, "cuda": None, "cpp": None})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.backend_for(torch.device("cpu")) is reference


def test_explicit_backend_must_run_the_device(monkeypatch):
    gpu_only = _fake_backend("cuda", {"cuda"})
    _fake_status(monkeypatch, {"cuda": gpu_only})
    fastnoise.set_backend("cuda")
    with pytest.raises(_dispatch.BackendUnavailableError, match="'cuda' does not run .* cpu"):
        fastnoise.inject_noise(torch.zeros(2, 3), 0.1, seed=1)


def test_import_failure_is_reported_not_raised(monkeypatch):
    def broken_load(name):
        raise ImportError("libfoo.so: cannot open shared object file")

    monkeypatch.setattr(_dispatch, "load", broken_load)
    rows = _dispatch.backends()
    assert not any(r.available for r in rows)
    assert all("libfoo.so" in r.reason for r in rows)


def test_every_backend_gives_the_same_noise():
    x = torch.randn(3, 4, 5)
    results = {}
    for row in _dispatch.backends():
        if row.available and "cpu" in row.devices:
            with fastnoise.use_backend(row.name):
                results[row.name] = fastnoise.inject_noise(x, 0.5, seed=42, offset=7)
    assert "torch" in results
    for y in results.values():
        torch.testing.assert_close(y, results["torch"], atol=2e-6, rtol=1e-6)


def test_backends_prints_a_table_with_what_auto_picks_per_device(monkeypatch):
    gpu_fast = _fake_backend("triton", {"cuda"})
    no_kernels = _fake_backend("cuda", {"cuda"}, reason="built without its CUDA sources")
    broken_cpp = _fake_backend("cpp", {"cpu"}, reason="extension failed to build: no compiler")
    _fake_status(monkeypatch, {"triton": gpu_fast, "cuda": no_kernels, "cpp": broken_cpp})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU "present"
    report = fastnoise.backends()
    lines = str(report).splitlines()
    assert repr(report) == str(report)  # the REPL shows the table as well
    row = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert row["triton"].split()[1:3] == ["yes", "cuda"]
    assert row["cpp"].split()[1:3] == ["no", "cpu"]
    assert row["cpp"].endswith("extension failed to build: no compiler")  # why not, in full
    assert row["cuda"].split()[1:3] == ["no", "cuda"]
    assert row["cuda"].endswith("built without its CUDA sources")
    assert row["torch"].split()[1:] == ["yes", "cpu,", "cuda"]
    assert "auto picks: cpu -> torch, cuda -> triton" in lines
    assert "in force: auto" in lines
    assert [p.backend for p in report.auto] == ["torch", "triton"]
    compiled = "torch.compile graphs call: cpu -> the custom ops, cuda -> the Triton kernels"
    assert lines[-1].startswith(compiled)


def test_backends_lists_cuda_picks_only_with_a_gpu_and_shows_the_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fastnoise.set_backend("torch")
    text = str(fastnoise.backends())
    assert "auto picks: cpu -> " in text and "cuda ->" not in text
    assert "in force: torch" in text
    assert text.endswith("torch.compile graphs call: cpu -> the custom ops")  # torch's
