"""The Triton kernels as a GPU would run them, checked without a GPU.

The backend's host code runs on CPU tensors with each kernel's launch replaced by a
recorder (``triton_launches``): the recorded launches are the variants it would compile
on a GPU, found by its own code, so a new variant cannot be left out. Each distinct one
is put through Triton's own specialization (the key of its compile cache) and compiled
for sm_90 with ``triton.compile`` (frontend, LLVM and the ptxas Triton ships). The PTX
then says whether the contiguous fp32 paths move 128 bits per access.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import textwrap
from typing import NamedTuple

import pytest
import torch

pytest.importorskip("triton")

import triton_launches as tl  # noqa: E402
from conftest import SEED_OFFSETS  # noqa: E402

# Rows of 1024 features (divisible by 16: 16-byte aligned rows, vector accesses possible)
# and of 105 (odd: every row starts mid-counter, the backward's per-element Philox path).
SHAPES = {"aligned": (8, 16, 8, 8), "unaligned": (3, 3, 5, 7)}
LAYOUTS = ["contiguous", "channels_last"]
# (dtype, layout, alignment) to run every op with. Lean (each compile takes 0.3-1.5 s):
# fp32 in all four combinations; fp16 and bf16 share them, so each half dtype sees both
# layouts and both alignments; fp64 (gradcheck's) once.
KINDS = [
    *[(torch.float32, layout, alignment) for alignment in SHAPES for layout in LAYOUTS],
    (torch.float16, "contiguous", "aligned"),
    (torch.float16, "channels_last", "unaligned"),
    (torch.bfloat16, "channels_last", "aligned"),
    (torch.bfloat16, "contiguous", "unaligned"),
    (torch.float64, "contiguous", "aligned"),
]
DEVICE_RNG = "device-rng"  # the kind suffix of the triton ops' launches
# The noise kernels' seeds and offsets, each side of 2**31, 2**32 and 2**63 - 1.
EXTREME_SEED_OFFSETS = [(5, 0), (2**31, 2**31), (2**40 + 1, 2**40 + 1), (2**63 - 1, 2**62)]


def _tensor(shape, dtype, layout):
    x = torch.randn(shape).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _call_every_op(tb, shape, dtype, layout, seed=5, offset=0, projects=(True, False)):
    """One call of every public op of the backend on CPU tensors of this kind."""
    x, grad = _tensor(shape, dtype, layout), _tensor(shape, dtype, layout)
    sigma = torch.rand(shape[1:])
    weight, bias = torch.randn(shape[1:]), torch.randn(shape[-1])
    tb.noise_forward(x, sigma, seed, offset)
    tb.noise_backward_sigma(grad, sigma, seed, offset)
    tb.pnil_forward(x, weight, bias, seed, offset)
    tb.pnil_backward(grad, x, weight, bias, seed, offset)
    tb.pgd_step(x, grad, x, 0.01, 0.03, 0.0, 1.0)
    for project in projects:
        tb.random_start(x, 0.03, seed, offset, 0.0, 1.0, project)


def _call_every_device_rng_op(tb, shape, dtype, layout):
    """The launches of fastnoise._triton_ops (torch.compile on CUDA): the random state in
    memory (RNG_IN_MEMORY), as the ops pass it."""
    x, grad = _tensor(shape, dtype, layout), _tensor(shape, dtype, layout)
    sigma = torch.rand(shape[1:])
    weight, bias = torch.randn(shape[1:]), torch.randn(shape[-1])
    rng = tb.device_rng(torch.tensor([5, 0]))
    tb.noise_forward_rng(x, sigma, rng)
    tb.noise_backward_sigma_rng(grad, sigma, rng)
    tb.pnil_forward_rng(x, weight, bias, rng)
    tb.pnil_backward_rng(grad, x, weight, bias, rng)
    tb.random_start_rng(x, tb.device_bounds(torch.tensor([0.03, 0.0, 1.0])), True, rng)


class Variant(NamedTuple):
    kernel: str  # the kernel's name
    kind: str  # "dtype/layout/alignment" of the call that launched it first
    launch: tl.Launch
    compiled: object  # the CompiledKernel, or the exception its compile raised

    def __str__(self) -> str:
        flags = [f"{k}={v}" for k, v in self.launch.kwargs.items() if isinstance(v, bool)]
        return f"{self.kernel}[{self.kind}; {', '.join(flags)}]"


def _variants():
    """(kind, launch) of every distinct compile the backend asks for, first seen first."""
    from fastnoise._backends import triton as tb

    labelled = []
    with tl.recording() as launches:
        for i, (dtype, layout, alignment) in enumerate(KINDS):
            start = len(launches)
            # random_start's PROJECT=False differs only in skipping a clamp: compiled once.
            projects = (True, False) if i == 0 else (True,)
            _call_every_op(tb, SHAPES[alignment], dtype, layout, projects=projects)
            name = str(dtype).removeprefix("torch.")
            labelled += [(f"{name}/{layout}/{alignment}", x) for x in launches[start:]]
        tb.random_words(1000, 5, 0, torch.device("cpu"))  # the bit-exactness check's
        labelled.append(("int64/contiguous/unaligned", launches[-1]))
        for layout in LAYOUTS:
            start = len(launches)
            _call_every_device_rng_op(tb, SHAPES["aligned"], torch.float32, layout)
            labelled += [(f"float32/{layout}/aligned/{DEVICE_RNG}", x) for x in launches[start:]]
    unique = {}
    for kind, launch in labelled:
        unique.setdefault(tl.cache_key(launch), (kind, launch))
    return list(unique.values())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[Variant]:
    """Every variant, compiled once."""
    cache = tmp_path_factory.mktemp("triton-cache")
    with pytest.MonkeyPatch.context() as mp, tl.compiled_kernels():
        mp.setenv("TRITON_CACHE_DIR", str(cache))  # a real compile, not a cache hit
        results = []
        for kind, launch in _variants():
            try:
                result = tl.compile_launch(launch)
            except Exception as exc:  # reported by the test, with its variant
                result = exc
            results.append(Variant(launch.name, kind, launch, result))
        yield results


def _ok(compiled: list[Variant]) -> list[Variant]:
    return [v for v in compiled if not isinstance(v.compiled, Exception)]


def test_every_launched_variant_compiles_for_sm90(compiled):
    failed = {
        str(v): f"{type(v.compiled).__name__}: {v.compiled}"[:2000]
        for v in compiled
        if isinstance(v.compiled, Exception)
    }
    assert not failed, failed
    # The recording saw every kernel, in every dtype, layout and row alignment it is
    # launched with: a variant missing here would be a backend path never compiled.
    assert {v.kernel for v in compiled} == {k.fn.__name__ for k in tl.kernels()}
    for name in ("noise_forward_kernel", "pnil_backward_kernel", "random_start_kernel"):
        kinds = {v.kind for v in compiled if v.kernel == name}
        for dtype in ("float32", "float16", "bfloat16", "float64"):
            assert any(k.startswith(dtype) for k in kinds), (name, dtype)
        assert any("channels_last" in k for k in kinds) and any("unaligned" in k for k in kinds)


def test_contiguous_fp32_paths_use_128_bit_accesses(compiled):
    # Aligned rows with 16-byte aligned pointers: every load and store of a tensor is one
    # ld/st.global.v4.b32 (4 floats), never a scalar one.
    checked = [v for v in _ok(compiled) if v.kind == "float32/contiguous/aligned"]
    names = {k.fn.__name__ for k in tl.kernels()} - {"random_words_kernel"}  # int64, a test aid
    names = {n for n in names if "_nhwc_" not in n}  # channels_last only: checked below
    assert {v.kernel for v in checked} == names
    for variant in checked:
        accesses = collections.Counter(tl.tensor_accesses(variant.compiled))
        scalar = {op: n for op, n in accesses.items() if ".v4." not in op}
        assert not scalar, (str(variant), dict(accesses))
        assert accesses["ld.global.v4.b32"] and accesses["st.global.v4.b32"], (
            str(variant),
            accesses,
        )


# Activation tensors each elementwise kernel loads; the others (sigma, weight, bias) are
# per-feature parameters, gathered element by element when rows are not 16-byte aligned.
ACTIVATION_LOADS = {
    "noise_forward_kernel": 1,
    "pnil_forward_kernel": 1,
    "pgd_step_kernel": 3,
    "random_start_kernel": 1,
}


def test_unaligned_numel_keeps_128_bit_accesses_outside_the_tail(compiled):
    # numel = 315 (3x3x5x7, not a multiple of 16): a mask `index < numel` on every access
    # made them all scalar. Only the last program may be masked: the others must move x
    # and y in as many ld/st.global.v4.b32 as the aligned variant does.
    first = {}
    for v in _ok(compiled):
        first.setdefault((v.kernel, v.kind), v)
    for kernel, loads in ACTIVATION_LOADS.items():
        aligned, unaligned = (
            collections.Counter(tl.tensor_accesses(first[(kernel, kind)].compiled))
            for kind in ("float32/contiguous/aligned", "float32/contiguous/unaligned")
        )
        per_tensor = aligned["st.global.v4.b32"]  # y, the one tensor each kernel stores
        assert per_tensor, (kernel, aligned)
        assert unaligned["st.global.v4.b32"] == per_tensor, (kernel, dict(unaligned))
        assert unaligned["ld.global.v4.b32"] >= loads * per_tensor, (kernel, dict(unaligned))


def test_channels_last_fp32_paths_use_128_bit_accesses(compiled):
    # channels_last with H*W % 4 == C % 4 == 0 (8x16x8x8): the kernels read and write
    # pixels' channel vectors, and transpose the logical noise tile on chip. Strided
    # logical-order access made every x/y access scalar (and took 61-72 registers).
    first = {}
    for v in _ok(compiled):
        first.setdefault((v.kernel, v.kind), v)
    pairs = {
        "noise_forward_nhwc_kernel": "noise_forward_kernel",
        "pnil_forward_nhwc_kernel": "pnil_forward_kernel",
        "random_start_nhwc_kernel": "random_start_kernel",
        # The backward reductions: grad_y, x and grad_x in channel vectors (the strided
        # logical-order kernels were scalar, with 163-165 registers).
        "noise_backward_sigma_nhwc_kernel": "noise_backward_sigma_kernel",
        "pnil_backward_nhwc_kernel": "pnil_backward_kernel",
    }
    for nhwc, contiguous in pairs.items():
        variant = first[(nhwc, "float32/channels_last/aligned")]
        accesses = collections.Counter(tl.tensor_accesses(variant.compiled))
        scalar = {op: n for op, n in accesses.items() if ".v4." not in op}
        assert not scalar, (str(variant), dict(accesses))
        assert accesses["ld.global.v4.b32"] and accesses["st.global.v4.b32"], str(variant)
        registers = tl.resource_usage(variant.compiled)["reg"]
        baseline = tl.resource_usage(first[(contiguous, "float32/contiguous/aligned")].compiled)
        assert registers <= baseline["reg"] + 8, (str(variant), registers, baseline)


def test_device_rng_variants_access_memory_as_the_scalar_seed_ones(compiled):
    # The triton ops (torch.compile on CUDA) read [seed, offset] (and the random start its
    # [eps, min, max]) from device memory: scalar loads per program, nothing else changed:
    # the same 128-bit accesses of the tensors, about the same registers.
    first = {}
    for v in _ok(compiled):
        first.setdefault((v.kernel, v.kind), v)
    device_rng = [v for v in _ok(compiled) if v.kind.endswith(DEVICE_RNG)]
    launched = {k.fn.__name__ for k in tl.kernels()} - {"random_words_kernel", "pgd_step_kernel"}
    assert {v.kernel for v in device_rng} == launched
    for variant in device_rng:
        assert variant.launch.kwargs["RNG_IN_MEMORY"] is True, str(variant)
        scalar = first[(variant.kernel, variant.kind.removesuffix("/" + DEVICE_RNG))]
        assert scalar.launch.kwargs["RNG_IN_MEMORY"] is False, str(scalar)
        accesses = collections.Counter(tl.tensor_accesses(variant.compiled))
        expected = collections.Counter(tl.tensor_accesses(scalar.compiled))
        expected["ld.global.b64"] += 2  # the seed and the offset
        if variant.kernel.startswith("random_start"):
            expected["ld.global.b32"] += 3  # eps and the box
        assert accesses == expected, (str(variant), dict(accesses), dict(expected))
        registers = tl.resource_usage(variant.compiled)["reg"]
        assert registers <= tl.resource_usage(scalar.compiled)["reg"] + 8, str(variant)


def test_inductor_rebuilds_the_device_rng_kernels_from_their_source(compiled, tmp_path):
    # Inductor does not launch a triton_op's JITFunction: it copies the kernel's source and
    # everything it calls (helpers in other modules, tl.constexpr globals) into its output
    # code under its own @triton.jit. That rebuilt kernel must compile to the same code.
    from torch._inductor.codegen.wrapper import (
        user_defined_triton_kernel_transitive_closure_source_code as closure,
    )

    device_rng = [v for v in _ok(compiled) if v.kind.endswith(DEVICE_RNG)]
    assert device_rng
    for i, variant in enumerate(device_rng):
        source = closure(variant.launch.kernel)
        module = tmp_path / f"inductor_rebuilt_{i}.py"
        module.write_text(f"import triton\nimport triton.language as tl\n\n@triton.jit\n{source}")
        sys.path.insert(0, str(tmp_path))
        try:
            rebuilt = getattr(__import__(module.stem), variant.kernel)
        finally:
            sys.path.remove(str(tmp_path))
        launch = tl.Launch(rebuilt, variant.launch.grid, variant.launch.args, variant.launch.kwargs)
        again = tl.compile_launch(launch)
        assert tl.tensor_accesses(again) == tl.tensor_accesses(variant.compiled), str(variant)
        assert tl.resource_usage(again)["reg"] == tl.resource_usage(variant.compiled)["reg"]


def test_unaligned_backward_rows_cost_one_philox_call_per_four_elements(compiled):
    # Rows of 105 features start mid-counter. Drawing each element's noise on its own
    # (one Philox call per element) did 4x the aligned rows' Philox work; rows grouped by
    # row % 4 read whole counters: as many Philox multiplies per counter as aligned rows.
    def mulhi_per_counter(variant):
        per_thread = (
            variant.launch.kwargs["BLOCK_F"] // 4 // (32 * variant.launch.kwargs["num_warps"])
        )
        return variant.compiled.asm["ptx"].count("mul.hi") / max(1, per_thread)

    first = {}
    for v in _ok(compiled):
        first.setdefault((v.kernel, v.kind), v)
    for kernel in ("noise_backward_sigma_kernel", "pnil_backward_kernel"):
        aligned = mulhi_per_counter(first[(kernel, "float32/contiguous/aligned")])
        unaligned = mulhi_per_counter(first[(kernel, "float32/contiguous/unaligned")])
        assert aligned > 0 and unaligned <= 1.1 * aligned, (kernel, aligned, unaligned)


def test_no_variant_spills_registers(compiled):
    # Local memory per thread beyond the stack frame libdevice's sin/cos keep for their
    # slow path would be spills: each noise element would then round-trip through memory.
    usage = {str(v): tl.resource_usage(v.compiled) for v in _ok(compiled)}
    spilled = {label: u for label, u in usage.items() if u.get("local", 0)}
    assert not spilled, spilled


_SCALAR_STRIDE_KERNEL = """
import triton
import triton.language as tl


@triton.jit
def strided_copy(x_ptr, y_ptr, numel, stride, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = index < numel
    tl.store(y_ptr + index, tl.load(x_ptr + index * stride, mask=mask), mask=mask)
"""


def test_the_v4_check_fails_a_strided_load(tmp_path, monkeypatch):
    # The check above can fail: a load through a runtime stride cannot be vectorised.
    (tmp_path / "strided_kernel.py").write_text(textwrap.dedent(_SCALAR_STRIDE_KERNEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    sys.modules.pop("strided_kernel", None)
    import strided_kernel

    x, y = torch.zeros(4096), torch.zeros(4096)
    launch = tl.Launch(strided_kernel.strided_copy, (4,), (x, y, 4096, 3), {"BLOCK": 1024})
    accesses = collections.Counter(tl.tensor_accesses(tl.compile_launch(launch)))
    assert accesses["st.global.v4.b32"]  # the contiguous store is still vectorised
    assert any(".v4." not in op for op in accesses if op.startswith("ld.")), accesses


# ---- one compiled kernel for every seed and offset -------------------------------------


def test_one_compiled_kernel_serves_every_seed_and_offset():
    # Triton types an int argument by its value (i32 below 2**31, i64 above, u64 from
    # 2**63): unless the kernel fixes the type, a seed word or offset of 2**31 or more is
    # a new cache key, so a new compile (~1 s on the GPU machine) in the middle of training.
    from fastnoise._backends import triton as tb

    with tl.compiled_kernels():
        keys = collections.defaultdict(set)
        for seed, offset in EXTREME_SEED_OFFSETS + list(SEED_OFFSETS.values()):
            with tl.recording() as launches:
                _call_every_op(tb, (2, 4, 4, 4), torch.float32, "contiguous", seed, offset)
                tb.random_words(64, seed, offset, torch.device("cpu"))
            for position, launch in enumerate(launches):
                keys[(position, launch.name)].add(tl.cache_key(launch))
        assert len(keys) == 8  # every op launched, and the pgd step had no seed to vary
        varying = {name: len(k) for (_, name), k in keys.items() if len(k) > 1}
        assert not varying, varying


# ---- the device in force at each launch ------------------------------------------------


def test_every_launch_enters_the_tensors_device(monkeypatch):
    # Triton launches on the current CUDA device: each launch must happen inside the
    # guard for its tensors' device (a DDP rank's cuda:1 would otherwise run on GPU 0).
    from fastnoise._backends import triton as tb

    entered = []

    @contextlib.contextmanager
    def guard(device):
        entered.append(device)
        yield
        entered.remove(device)

    with tl.compiled_kernels():
        monkeypatch.setattr(tb, "_device_guard", guard)
        seen = []
        with tl.recording() as launches:
            real_run = {launch_kernel: launch_kernel.run for launch_kernel in tl.kernels()}
            for kernel, run in real_run.items():

                def run_in_guard(*args, run=run, **kwargs):
                    seen.append(list(entered))
                    return run(*args, **kwargs)

                kernel.run = run_in_guard
            _call_every_op(tb, (2, 4, 4, 4), torch.float32, "channels_last")
            tb.random_words(64, 5, 0, torch.device("cpu"))
        assert len(launches) == len(seen) == 8
        assert all(devices == [torch.device("cpu")] for devices in seen), seen


def test_device_guard_is_entered_only_for_another_device(monkeypatch):
    from fastnoise._backends import triton as tb

    switched = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda index: switched.append(index) or "guard")
    assert tb._device_guard(torch.device("cuda", 1)) == "guard" and switched == [1]
    for same in (torch.device("cuda", 0), torch.device("cpu")):
        assert tb._device_guard(same) != "guard"
    assert switched == [1]
