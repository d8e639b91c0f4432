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

from setuptools import find_packages, setup

packages = find_packages(include=["fastnoise", "fastnoise.*"])
packages += ["fastnoise.kernels", "fastnoise.csrc"]


def _extension_modules() -> dict:
    """ext_modules and cmdclass for the optional ahead-of-time build."""
    if os.environ.get("FASTNOISE_BUILD_EXT") != "1":
        return {}
    import glob

    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    # Same flags as the JIT build (fastnoise/_extension.py).
    cxx_flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp"]
    sources = ["csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    with_cuda = os.environ.get("FASTNOISE_BUILD_CUDA")
    if with_cuda is None or with_cuda == "":
        with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    else:
        with_cuda = with_cuda not in ("0", "false", "False", "no")
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")  # see _extension.DEFAULT_CUDA_ARCH
        extension = CUDAExtension(
            "fastnoise._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")),
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
            extra_link_args=["-fopenmp"],
        )
    else:
        extension = CppExtension(
            "fastnoise._C",
            sources,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
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
