"""The Triton backend's kernel launches, recorded and compiled for a GPU, without a GPU.

``recording()`` replaces each kernel's launch by a recorder, so the backend's own host code
(``fastnoise._backends.triton``) runs on CPU tensors and says which kernels, constants and
arguments it would launch. ``specialize()`` puts a recorded launch through Triton's own
argument specialization (the one ``JITFunction.run`` uses to key its compile cache), and
``compile_launch()`` compiles it for sm_90 with ``triton.compile``: frontend, LLVM, ptxas.

Kernels must be real ``JITFunction``s here, not the interpreter's: ``compiled_kernels()``
unsets ``TRITON_INTERPRET`` and re-imports the kernel modules for as long as it is open.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

KERNEL_MODULES = [
    "fastnoise.kernels.philox",
    "fastnoise.kernels.indexing",  # before the kernels that import its helpers
    "fastnoise.kernels.launch",
    "fastnoise.kernels.noise_injection",
    "fastnoise.kernels.pnil",
    "fastnoise.kernels.attack_step",
]
SM90 = GPUTarget("cuda", 90, 32)
H100_SMS = 132


def reload_kernel_modules() -> None:
    for name in KERNEL_MODULES:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
        else:
            importlib.import_module(name)


def kernels() -> list[JITFunction]:
    """Every ``@triton.jit`` kernel (a ``*_kernel`` function) the modules define; the
    other jitted functions are helpers the kernels inline."""
    found = []
    for name in KERNEL_MODULES:
        for value in vars(sys.modules[name]).values():
            if (
                isinstance(value, JITFunction)
                and value.fn.__module__ == name
                and value.fn.__name__.endswith("_kernel")
            ):
                found.append(value)
    return found


@contextlib.contextmanager
def compiled_kernels():
    """The kernel modules as compiled-mode ``JITFunction``s while open."""
    previous = os.environ.pop("TRITON_INTERPRET", None)
    reload_kernel_modules()
    try:
        yield
    finally:
        if previous is not None:
            os.environ["TRITON_INTERPRET"] = previous
            reload_kernel_modules()


@dataclasses.dataclass
class Launch:
    kernel: JITFunction
    grid: tuple
    args: tuple
    kwargs: dict

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def bound(self) -> dict:
        """Argument name -> value, constexprs included."""
        return dict(zip(self.kernel.arg_names, self.args, strict=False)) | self.kwargs


@contextlib.contextmanager
def recording(sm_count: int = H100_SMS):
    """Launches of every kernel are appended to the yielded list instead of running.

    The backend sizes its reduction grid from the GPU's SM count: ``sm_count`` stands in.
    """
    from fastnoise.kernels import launch

    launches: list[Launch] = []
    patched = kernels()

    def recorder(kernel):
        def run(*args, grid, warmup, **kwargs):
            launches.append(Launch(kernel, tuple(grid), args, kwargs))

        return run

    saved_sm_count = launch._sm_count
    launch._sm_count = lambda index: sm_count
    for kernel in patched:
        kernel.run = recorder(kernel)  # an instance attribute shadows JITFunction.run
    try:
        yield launches
    finally:
        launch._sm_count = saved_sm_count
        for kernel in patched:
            del kernel.run


def specialize(launch: Launch, target: GPUTarget = SM90):
    """Triton's specialization of the launch: (signature types + attributes, options).

    The first element is what ``JITFunction.run`` keys its compile cache on: two launches
    with equal keys share one compiled kernel.
    """
    backend = make_backend(target)
    binder = create_function_from_signature(launch.kernel.signature, launch.kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.kwargs)
    return bound_args, specialization, options


def cache_key(launch: Launch, target: GPUTarget = SM90) -> str:
    _, specialization, options = specialize(launch, target)
    return f"{launch.name}:{specialization}:{sorted(options.items())}"


def compile_launch(launch: Launch, target: GPUTarget = SM90):
    """``triton.compile`` of the launch exactly as ``JITFunction.run`` would (no GPU needed)."""
    backend = make_backend(target)
    bound_args, specialization, options = specialize(launch, target)
    kwargs = dict(launch.kwargs)
    options, signature, constexprs, attrs = launch.kernel._pack_args(
        backend, kwargs, bound_args, specialization, options
    )
    source = ASTSource(launch.kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def global_accesses(compiled) -> dict[str, int]:
    """Count of each global load/store instruction in the PTX, e.g. ``ld.global.v4.b32``."""
    counts: dict[str, int] = {}
    for op in re.findall(r"\b((?:ld|st)\.global[.\w]*)", compiled.asm["ptx"]):
        counts[op] = counts.get(op, 0) + 1
    return counts


def resource_usage(compiled) -> dict[str, int]:
    """Registers, local memory (spills) and stack per thread, read from the cubin."""
    tool = knobs.nvidia.cuobjdump.path
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        out = subprocess.run(
            [tool, "--dump-resource-usage", cubin.name], capture_output=True, text=True, check=True
        ).stdout
    return {key.lower(): int(value) for key, value in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", out)}


def _table_registers(ptx: str) -> set[str]:
    """Registers holding addresses in libdevice's constant tables (``__cudart_i2opi_f``,
    read by sin/cos's slow argument reduction), followed through mov/add/cvta."""
    tainted: set[str] = set()
    for line in ptx.splitlines():
        match = re.match(r"\s*(?:@!?%\w+\s+)?(mov|add|cvta)[.\w]*\s+(%\w+),\s*(.*);", line)
        if not match:
            continue
        dest, sources = match.group(2), match.group(3)
        if "__cudart_" in sources or any(r in tainted for r in re.findall(r"%\w+", sources)):
            tainted.add(dest)
    return tainted


def tensor_accesses(compiled) -> list[str]:
    """The global loads/stores of the kernel's own tensors (libdevice table reads left out)."""
    ptx = compiled.asm["ptx"]
    tables = _table_registers(ptx)
    found = []
    for line in ptx.splitlines():
        match = re.search(r"\b((?:ld|st)\.global[.\w]*)\s.*\[\s*(%\w+)", line)
        if match and match.group(2) not in tables:
            found.append(match.group(1))
    return found
