"""Build a model by name, as the CLI and the training presets do."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from fastnoise.models.resnet11 import resnet11
from fastnoise.models.resnet_v1 import resnet_v1
from fastnoise.models.resnet_v2 import resnet_v2_18
from fastnoise.models.small_cnn import small_cnn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": partial(resnet_v1, depth=20),
    "resnet32": partial(resnet_v1, depth=32),
    "resnet44": partial(resnet_v1, depth=44),
    "resnet56": partial(resnet_v1, depth=56),
    "resnet_v2_18": resnet_v2_18,
    "resnet11": resnet11,
    "small_cnn": small_cnn,
}
MODEL_NAMES = tuple(_BUILDERS)


def build(name: str, **kwargs) -> nn.Module:
    """The model ``name`` (one of :data:`MODEL_NAMES`) built with ``kwargs``, e.g.
    ``build("resnet20", noise="l2p", width=2.0)``."""
    if name not in _BUILDERS:
        raise ValueError(f"name must be one of {MODEL_NAMES}, got {name!r}")
    if name.startswith("resnet") and name[6:].isdigit() and "depth" in kwargs:
        raise TypeError(f"depth is fixed by the name {name!r}; use resnet_v1(depth=...)")
    return _BUILDERS[name](**kwargs)
