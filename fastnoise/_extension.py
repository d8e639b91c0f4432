"""Build, cache and load the ``fastnoise_C`` C++/CUDA extension (``csrc/``).

Order of preference:

1. an ahead-of-time build, ``fastnoise/_C*.so`` (``FASTNOISE_BUILD_EXT=1 pip install
   --no-build-isolation -e .``);
2. a just-in-time build with ninja (``torch.utils.cpp_extension.load``) on first use,
   cached in ``~/.cache/fastnoise/ext-<hash>`` (``FASTNOISE_EXT_DIR`` overrides the
   cache root). The hash covers the sources, torch's version, the flags and the CUDA
   arch list, so a change to any of them rebuilds.

The just-in-time build compiles the CUDA sources when a GPU is visible, torch is a CUDA
build and nvcc is found (``CUDA_HOME`` or ``/usr/local/cuda``): on a CPU-only machine
nvcc would only add minutes to the first call. ``FASTNOISE_BUILD_CUDA=0/1`` forces either
way (CI sets 1 to prove the CUDA sources compile); the ahead-of-time build in setup.py
compiles them whenever torch has CUDA and nvcc is found. The arch list
(:func:`cuda_arch_list`) is ``TORCH_CUDA_ARCH_LIST`` when set; else the ahead-of-time
build targets the common GPUs plus PTX for later ones (``AOT_CUDA_ARCHS``), since it may
run on any of them, and the just-in-time build the visible GPUs (``9.0``, H100/H200,
when none is visible: then it only checks that the sources compile).

A failed build does not raise at import: it warns once with the log path, and
:func:`unavailable_reason` says why, so the reference backend keeps working.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import torch

__all__ = [
    "ExtensionUnavailable",
    "load",
    "ops",
    "unavailable_reason",
    "has_cuda_kernels",
    "cpu_isa",
    "build_dir",
    "source_files",
    "cuda_arch_list",
]

LIBRARY = "fastnoise_C"
# The ahead-of-time build's default: SASS for T4 (7.5), A100 (8.0), A10 and RTX 30 (8.6),
# L4 and RTX 40 (8.9), H100/H200 (9.0), and compute_90 PTX that the driver compiles on
# first use for later GPUs (Blackwell). nvcc 13 dropped every arch before 7.5; CUDA 11.8
# and later know all five, so any toolkit that builds for torch 2.11+ accepts the list.
AOT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"
# The just-in-time build with no GPU visible (FASTNOISE_BUILD_CUDA=1 as a compile check):
# one arch keeps it quick; a GPU seen later changes the arch list, hence the build hash,
# so that GPU gets its own build.
JIT_CUDA_ARCH_WITHOUT_GPU = "9.0"
# -fno-math-errno / -fno-trapping-math let the compiler vectorize sqrt and the branch-free
# selects of the polynomials; neither permits reassociation, so results stay as written.
CPU_CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
CUDA_CFLAGS = ["-O3"]
LDFLAGS = ["-fopenmp"]

_CSRC = Path(__file__).resolve().parent.parent / "csrc"
_PACKAGE_DIR = Path(__file__).resolve().parent

_state: dict[str, object] = {"loaded": False, "error": None, "origin": None}


class ExtensionUnavailable(RuntimeError):
    """The fastnoise_C extension could not be built or loaded here."""


def _csrc_dir() -> Path:
    """Sources: the repo's ``csrc/`` in a checkout, the ``fastnoise.csrc`` package data
    in an installed wheel."""
    if _CSRC.is_dir():
        return _CSRC
    import fastnoise.csrc

    return Path(next(iter(fastnoise.csrc.__path__)))


def source_files(with_cuda: bool) -> list[Path]:
    """The translation units to compile: the schemas, the CPU kernels and, with CUDA,
    the CUDA kernels."""
    root = _csrc_dir()
    sources = [root / "ops.cpp", root / "front_door.cpp", *sorted((root / "cpu").glob("*.cpp"))]
    if with_cuda:  # kernels (.cu, nvcc) and their ATen-side registration (.cpp, host compiler)
        sources += sorted((root / "cuda").glob("*.cu")) + sorted((root / "cuda").glob("*.cpp"))
    return sources


def _cuda_home() -> Path | None:
    """The CUDA toolkit to build with: ``CUDA_HOME``/``CUDA_PATH``, else /usr/local/cuda,
    else the toolkit around an ``nvcc`` on PATH (one with headers, not a wrapper script)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            if (Path(candidate) / "include" / "cuda_runtime.h").is_file():
                return Path(candidate)
    return None


def _want_cuda() -> bool:
    forced = os.environ.get("FASTNOISE_BUILD_CUDA")
    if forced is not None and forced.strip() != "":
        return forced.strip() not in ("0", "false", "False", "no")
    return torch.version.cuda is not None and _cuda_home() is not None and torch.cuda.is_available()


def cuda_arch_list(ahead_of_time: bool = False) -> str:
    """The ``TORCH_CUDA_ARCH_LIST`` a CUDA build compiles for: the variable when set;
    else :data:`AOT_CUDA_ARCHS` for the ahead-of-time build (setup.py), which may be used
    on any GPU; else, for the just-in-time build, the visible GPUs' capabilities, or
    :data:`JIT_CUDA_ARCH_WITHOUT_GPU` when none is visible. Never torch's every-arch
    default, which would take many minutes to build."""
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if arch:
        return arch
    if ahead_of_time:
        return AOT_CUDA_ARCHS
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ";".join(f"{major}.{minor}" for major, minor in sorted(caps))
    return JIT_CUDA_ARCH_WITHOUT_GPU


def _loaded_libstdcxx() -> str | None:
    """The shared libstdc++ this process runs (torch loaded it), from /proc/self/maps;
    None where there is no such file (not Linux, or a static build)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "/libstdc++.so" in fields[5]:
                    path = fields[5].strip()
                    if os.path.isfile(path):
                        return path
    except OSError:
        pass
    return None


def link_flags() -> list[str]:
    """:data:`LDFLAGS` plus the process's own libstdc++.so, named on the link line.

    Why: a compiler whose library directory has only a static libstdc++.a (the GPU
    machine's /opt/gcc, whose libstdc++.so is a dangling link) otherwise links a private
    copy of libstdc++ into the extension. That copy's locale is never initialised, so a
    number formatted into an error message is dropped, or segfaults (GPU run 3, H200).
    Named first, the shared library resolves every std:: symbol, so nothing is copied."""
    libstdcxx = _loaded_libstdcxx()
    return LDFLAGS + ([libstdcxx] if libstdcxx else [])


def _build_hash(sources: list[Path], with_cuda: bool) -> str:
    digest = hashlib.sha256()
    digest.update(torch.__version__.encode())
    digest.update(repr((CPU_CFLAGS, CUDA_CFLAGS, link_flags(), with_cuda)).encode())
    if with_cuda:
        digest.update(cuda_arch_list().encode())
    root = _csrc_dir()
    headers = sorted(root.glob("*.h")) + sorted(root.glob("*/*.h"))
    for path in sorted(set(sources) | set(headers)):
        name = path.relative_to(root) if path.is_relative_to(root) else path
        digest.update(str(name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_dir(with_cuda: bool | None = None) -> Path:
    """Where the JIT build for this source tree, torch and configuration lives."""
    with_cuda = _want_cuda() if with_cuda is None else with_cuda
    root = os.environ.get("FASTNOISE_EXT_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "fastnoise"
    )
    return Path(root) / f"ext-{_build_hash(source_files(with_cuda), with_cuda)}"


def _aot_library() -> Path | None:
    found = sorted(glob.glob(str(_PACKAGE_DIR / "_C*.so"))) + sorted(
        glob.glob(str(_PACKAGE_DIR / "_C*.pyd"))
    )
    return Path(found[0]) if found else None


def _finished_library(directory: Path) -> Path | None:
    library, log = directory / f"{LIBRARY}.so", directory / ".ninja_log"
    if library.is_file() and log.is_file() and f"\t{LIBRARY}.so\t" in log.read_text():
        return library
    return None


def _jit_build() -> str:
    with_cuda = _want_cuda()
    sources = source_files(with_cuda)
    directory = build_dir(with_cuda)
    # The directory name hashes sources, flags and torch, so a library there that ninja
    # finished linking (it logs the link once done) is current: load it without ninja or
    # torch's cpp_extension import (which warns on machines without a GPU).
    if _finished_library(directory) is not None:
        try:
            torch.ops.load_library(str(_finished_library(directory)))
            return f"jit-cached:{directory}"
        except OSError:  # unreadable or foreign: let the full build path sort it out
            pass

    from torch.utils import cpp_extension

    directory.mkdir(parents=True, exist_ok=True)
    saved_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        # torch guesses the toolkit once at import (from nvcc on PATH, which may be a
        # wrapper script): point it at the one with headers.
        home = _cuda_home()
        if home is not None:
            cpp_extension.CUDA_HOME = str(home)
    try:
        cpp_extension.load(
            name=LIBRARY,
            sources=[str(s) for s in sources],
            extra_cflags=CPU_CFLAGS,
            extra_cuda_cflags=CUDA_CFLAGS,
            extra_ldflags=link_flags(),
            build_directory=str(directory),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=False,
        )
    except Exception as error:  # the compiler's output is in the exception text
        log = directory / "build_error.log"
        log.write_text(f"{type(error).__name__}: {error}\n")
        raise ExtensionUnavailable(
            f"the fastnoise C++ extension failed to build ({type(error).__name__}); "
            f"compiler log: {log}"
        ) from error
    finally:
        if with_cuda:
            if saved_arch is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch
    return f"jit:{directory}"


def _register_fakes() -> None:
    """Shape-only (meta) kernels, so the ops run under FakeTensor, torch.compile and
    torch.library.opcheck. As the real kernels on every device: activation-shaped outputs
    in x's layout (channels_last stays channels_last), parameter-shaped ones contiguous."""
    from fastnoise._ops import _empty_like as like_input

    def like(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    def noise_forward(x, sigma, seed, offset):
        return like_input(x)

    def noise_backward_sigma(grad_y, sigma, seed, offset):
        return like(sigma)

    def pnil_forward(x, weight, bias, seed, offset):
        return like_input(x)

    def pnil_backward(grad_y, x, weight, bias, seed, offset):
        return like_input(x), like(weight), like(bias)

    def pgd_step(x_adv, grad, x_orig, step_size, eps, clip_min, clip_max):
        return like_input(x_adv)

    def random_start(x, eps, seed, offset, clip_min, clip_max, project):
        return like_input(x)

    def philox_words(counters, seed):
        return counters.new_empty((counters.numel(), 4))

    for fake in (
        noise_forward,
        noise_backward_sigma,
        pnil_forward,
        pnil_backward,
        pgd_step,
        random_start,
        philox_words,
    ):
        torch.library.register_fake(f"{LIBRARY}::{fake.__name__}", fake)
    _register_compile_path_fakes()


def _register_compile_path_fakes() -> None:
    """The front door's ops (csrc/front_door.cpp): the ``.state`` overloads compiled graphs
    call, and the eager ones for anyone who traces them. Outputs in the input's layout
    (channels_last stays channels_last), as the real kernels'."""
    from fastnoise._ops import _empty_like as like_input

    def like(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    def state_on(x: torch.Tensor) -> torch.device:
        """Where a .fresh op's [seed, offset] lives: x's device on CUDA, else the CPU."""
        return x.device if x.device.type == "cuda" else torch.device("cpu")

    def fresh_state(x: torch.Tensor) -> torch.Tensor:
        return torch.empty(2, dtype=torch.int64, device=state_on(x))

    fakes = {
        "inject_noise": lambda x, sigma, seed, offset: like_input(x),
        "inject_noise.scalar": lambda x, sigma, seed, offset: like_input(x),
        "inject_noise.abs": lambda x, sigma, seed, offset: like_input(x),
        "pnil": lambda x, weight, bias, seed, offset: like_input(x),
        "random_start.draw": lambda x, eps, seed, offset, lo, hi, project: like_input(x),
        "inject_noise.state": lambda x, sigma, rng_state: like_input(x),
        "noise_backward_sigma.state": lambda grad_y, sigma, rng_state: like(sigma),
        "inject_noise.abs_state": lambda x, sigma, rng_state: like_input(x),
        "noise_backward_sigma.abs_state": lambda grad_y, sigma, rng_state: like(sigma),
        "pnil.state": lambda x, weight, bias, rng_state: like_input(x),
        "pnil_backward.state": lambda grad_y, x, weight, bias, rng_state: (
            like_input(x),
            like(weight),
            like(bias),
        ),
        "pgd_step.state": lambda x_adv, grad, x_orig, bounds: like_input(x_adv),
        "random_start.state": lambda x, rng_state, bounds, project: like_input(x),
        "random_start.fresh": lambda x, offset, bounds, project: like_input(x),
        "inject_noise.fresh": lambda x, sigma, offset: (like_input(x), fresh_state(x)),
        "inject_noise.abs_fresh": lambda x, sigma, offset: (like_input(x), fresh_state(x)),
        "pnil.fresh": lambda x, weight, bias, offset: (like_input(x), fresh_state(x)),
        # CUDA graph capture (csrc/cuda/graph_rng.h): (seed, offset) in a device tensor.
        "noise_forward.device_state": lambda x, sigma, state: like_input(x),
        "noise_backward_sigma.device_state": lambda grad_y, sigma, state: like(sigma),
        "pnil_forward.device_state": lambda x, weight, bias, state: like_input(x),
        "pnil_backward.device_state": lambda grad_y, x, weight, bias, state: (
            like_input(x),
            like(weight),
            like(bias),
        ),
        "random_start.device_state": lambda x, eps, state, lo, hi, project: like_input(x),
    }
    for name, fake in fakes.items():
        torch.library.register_fake(f"{LIBRARY}::{name}", fake)


def load() -> object:
    """Load the extension (AOT build, else JIT-build it) once; return ``torch.ops.fastnoise_C``.

    Raises :class:`ExtensionUnavailable` (with the compiler log path) when it cannot.
    """
    if _state["loaded"]:
        return torch.ops.fastnoise_C
    if _state["error"] is not None:
        raise ExtensionUnavailable(str(_state["error"]))
    try:
        aot = None if os.environ.get("FASTNOISE_FORCE_JIT") == "1" else _aot_library()
        if aot is not None:
            torch.ops.load_library(str(aot))
            _state["origin"] = f"aot:{aot}"
        else:
            _state["origin"] = _jit_build()
        _register_fakes()
    except Exception as error:
        _state["error"] = str(error)
        warnings.warn(
            f"fastnoise: C++/CUDA backends disabled: {error}", RuntimeWarning, stacklevel=2
        )
        raise ExtensionUnavailable(str(error)) from error
    _state["loaded"] = True
    return torch.ops.fastnoise_C


def ops() -> object:
    """``torch.ops.fastnoise_C``, building the extension on first use."""
    return load()


def unavailable_reason() -> str | None:
    """None when the extension loads here, else why not (builds it on first call)."""
    try:
        load()
    except ExtensionUnavailable as error:
        return str(error)
    return None


def has_cuda_kernels() -> bool:
    """Whether the loaded extension registered CUDA kernels (compiled with nvcc)."""
    if unavailable_reason() is not None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"{LIBRARY}::noise_forward", "CUDA")


def cpu_isa() -> str:
    """The CPU code path the tile kernels picked at load time: ``"avx512"``, ``"avx2"`` or
    ``"generic"`` (``FASTNOISE_CPU_ISA=avx2|generic`` caps it)."""
    return str(ops().cpu_isa())


def origin() -> str | None:
    """``"aot:<path>"``, ``"jit:<build dir>"`` (built now) or ``"jit-cached:<build dir>"``
    once loaded, else None."""
    return _state["origin"]  # type: ignore[return-value]
