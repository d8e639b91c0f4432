"""Build script.

The repository keeps Triton kernels in ``kernels/`` and C++/CUDA sources in ``csrc/``
(the design card's layout), but installs them under the ``fastnoise`` namespace as
``fastnoise.kernels`` and ``fastnoise.csrc``: a top-level ``kernels`` package would
collide with an existing PyPI project.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["fastnoise", "fastnoise.*"])
packages += ["fastnoise.kernels", "fastnoise.csrc"]

setup(
    packages=packages,
    package_dir={"fastnoise.kernels": "kernels", "fastnoise.csrc": "csrc"},
    package_data={
        "fastnoise.csrc": ["*.h", "*.cpp", "*.cu", "**/*.h", "**/*.cpp", "**/*.cu"],
        "fastnoise.data": ["embedded/*"],
    },
    include_package_data=True,
)
