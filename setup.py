"""Build script.

The repository keeps Triton kernels in ``kernels/`` and C++/CUDA sources in ``csrc/``
(the design card's layout), but installs them under the ``fastnoise`` namespace as
``fastnoise.kernels`` and ``fastnoise.csrc``: a top-level ``kernels`` package would
collide with an existing PyPI project.

``FASTNOISE_BUILD_EXT=1 pip install --no-build-isolation -e .`` also builds the C++
(and, with nvcc and a CUDA torch, CUDA) extension ahead of time into
``fastnoise/_C*.so``; without it the extension is built just in time on first use
(``fastnoise/_extension.py``), so a plain install needs no compiler at install time.
"""

import os
from pathlib import Path

from setuptools import find_packages, setup

packages = find_packages(include=["fastnoise", "fastnoise.*"])
packages += ["fastnoise.kernels", "fastnoise.csrc"]


def _build_rules():
    """fastnoise/_extension.py, loaded on its own (it needs only torch), so the
    ahead-of-time build uses the JIT build's sources, flags and CUDA toolkit lookup."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fastnoise_build", "fastnoise/_extension.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _extension_modules() -> dict:
    """ext_modules and cmdclass for the optional ahead-of-time build."""
    if os.environ.get("FASTNOISE_BUILD_EXT") != "1":
        return {}
    import torch

    rules = _build_rules()
    cuda_home = rules._cuda_home()
    if cuda_home is not None and not os.environ.get("CUDA_HOME"):
        # torch guesses the toolkit from nvcc on PATH, which may be a wrapper script
        # without headers beside it; point it at the real toolkit before it looks.
        os.environ["CUDA_HOME"] = str(cuda_home)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    forced = os.environ.get("FASTNOISE_BUILD_CUDA", "").strip()
    if forced:
        with_cuda = forced not in ("0", "false", "False", "no")
    else:  # unlike the JIT build, no GPU is needed: "pip install with a CUDA build"
        with_cuda = torch.version.cuda is not None and cuda_home is not None
    here = Path(__file__).resolve().parent
    sources = [str(p.relative_to(here)) for p in rules.source_files(with_cuda)]
    kind = CUDAExtension if with_cuda else CppExtension
    compile_args = {"cxx": rules.CPU_CFLAGS}
    if with_cuda:
        # TORCH_CUDA_ARCH_LIST, else the common archs plus PTX (not only this machine's
        # GPU): an installed build may run on any GPU.
        os.environ["TORCH_CUDA_ARCH_LIST"] = rules.cuda_arch_list(ahead_of_time=True)
        compile_args["nvcc"] = rules.CUDA_CFLAGS
    extension = kind(
        "fastnoise._C", sources, extra_compile_args=compile_args, extra_link_args=rules.link_flags()
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


setup(
    packages=packages,
    package_dir={"fastnoise.kernels": "kernels", "fastnoise.csrc": "csrc"},
    package_data={
        "fastnoise.csrc": ["*.h", "*.cpp", "*.cu", "**/*.h", "**/*.cpp", "**/*.cu"],
        "fastnoise.data": ["embedded/*"],
    },
    include_package_data=True,
    **_extension_modules(),
)
