"""Insert perturbation modules into a user's own model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastnoise import _validation as v
from fastnoise.nn.base import NoiseLayer
from fastnoise.nn.factory import noise_layer

ATTRIBUTE = "perturbation"


def add_perturbation_modules(
    model: nn.Module,
    kind: str = "l2p",
    after: type[nn.Module] | tuple[type[nn.Module], ...] | Sequence[str] = (nn.Conv2d,),
    example_input: torch.Tensor | None = None,
    *,
    init: float = 0.25,
    theta_min: float = 0.01,
    pni_mode: str = "layer",
) -> nn.Module:
    """Add a noise layer on the output of each selected module of ``model``, in place.

    ``after`` selects modules by type (every instance) or by name (as in
    ``model.named_modules()``). ``example_input`` (one batch) is run once in eval mode
    to learn each output's shape: L2P's theta has one sample's shape. Each noise layer
    becomes the child ``perturbation`` of its module and a forward hook applies it, so the
    model's own parameter names and forward code stay unchanged. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if kind not in ("l2p", "pni"):
        raise ValueError(f"kind must be 'l2p' or 'pni', got {kind!r}")
    if example_input is None:
        raise ValueError("example_input is required: a batch the model accepts, to infer shapes")
    v.check_tensor("example_input", example_input)
    targets = _select(model, after)
    shapes = _output_shapes(model, targets, example_input)
    for name, module in targets.items():
        layer = noise_layer(
            kind, shapes[name], init=init, theta_min=theta_min, pni_mode=pni_mode
        ).to(example_input.device)
        module.add_module(ATTRIBUTE, layer)
        module.register_forward_hook(_perturb_output)
    return model


def _perturb_output(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    # Reads the layer from the module (not a closure) so deepcopy/pickle stay correct.
    return getattr(module, ATTRIBUTE)(output)


def _select(model: nn.Module, after) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if isinstance(after, type):
        after = (after,)
    if isinstance(after, str) or not isinstance(after, Sequence) or len(after) == 0:
        raise TypeError(f"after must be module types or module names, got {after!r}")
    if all(isinstance(a, type) and issubclass(a, nn.Module) for a in after):
        targets = {
            n: m
            for n, m in named.items()
            if n and isinstance(m, tuple(after)) and not isinstance(m, NoiseLayer)
        }
    elif all(isinstance(a, str) for a in after):
        unknown = [a for a in after if a not in named or not a]
        if unknown:
            raise ValueError(f"after names modules the model does not have: {unknown}")
        targets = {a: named[a] for a in after}
    else:
        raise TypeError(f"after must be all module types or all module names, got {after!r}")
    if not targets:
        raise ValueError(f"after={after!r} selects no module of the model")
    for name, module in targets.items():
        if isinstance(module, nn.Sequential):
            # A Sequential would also run the added child as one more stage.
            raise ValueError(f"after selects nn.Sequential {name!r}; select a layer inside it")
        if hasattr(module, ATTRIBUTE):
            raise ValueError(f"module {name!r} already has a {ATTRIBUTE!r} attribute")
    return targets


def _output_shapes(
    model: nn.Module, targets: dict[str, nn.Module], example_input: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                raise ValueError(f"module {name!r} must output a batched tensor to get noise")
            shape = tuple(output.shape[1:])
            if shapes.setdefault(name, shape) != shape:
                raise ValueError(f"module {name!r} runs with different output shapes")

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in targets.items()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [n for n in targets if n not in shapes]
    if missing:
        raise ValueError(f"modules {missing} did not run on example_input")
    return shapes
