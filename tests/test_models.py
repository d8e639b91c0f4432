"""fastnoise.models: parameter counts of the papers, shapes, where the noise sits, the
noise behaviour of whole models, and argument errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastnoise.models as M
import fastnoise.nn as fnn

NOISE_KINDS = [None, "l2p", "pni", "pni-w"]
# PNI-W draws noise for every weight at every forward: on the pure-torch reference
# backend that is seconds for the big models, so it is shape-tested on the small ones.
COMBINATIONS = [
    (name, noise)
    for name in M.MODEL_NAMES
    for noise in NOISE_KINDS
    if noise != "pni-w" or name in ("resnet20", "small_cnn")
]
# (model, noise) pairs for the behaviour tests: every noise kind, on cheap models.
BEHAVIOUR = [("resnet20", "l2p"), ("resnet20", "pni"), ("small_cnn", "pni-w")]
TINY = 8  # spatial size for the ResNets in shape tests: cheap on 2 cores


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _tiny(name: str, **kwargs) -> nn.Module:
    if name == "small_cnn":
        return M.build(name, input_size=12, **kwargs)
    return M.build(name, input_size=TINY, **kwargs)


def _input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, model.in_channels, model.input_size, model.input_size)


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        # Learn2Perturb Table 1
        ("resnet20", {}, 269_722),
        ("resnet56", {}, 853_018),
        ("resnet_v2_18", {}, 11_173_962),
        # Learn2Perturb Table 2 (depth and width)
        ("resnet32", {}, 464_154),
        ("resnet44", {}, 658_586),
        ("resnet20", {"width": 1.5}, 605_026),
        ("resnet20", {"width": 2.0}, 1_073_962),
        ("resnet20", {"width": 4.0}, 4_286_026),
    ],
)
def test_parameter_counts_match_learn2perturb_tables(name, kwargs, expected):
    assert _count(M.build(name, **kwargs)) == expected


def test_noise_adds_exactly_its_own_parameters():
    base = _count(M.resnet_v1(20))
    l2p = M.resnet_v1(20, noise="l2p")
    theta = 16 * 32 * 32 * 4 + 32 * 16 * 16 * 3 + 64 * 8 * 8 * 3  # conv1 + 9 blocks
    assert sum(p.numel() for p in M.noise_parameters(l2p)) == theta
    assert _count(l2p) == base + theta
    assert _count(M.resnet_v1(20, noise="pni")) == base + 10  # one alpha per noise layer
    assert _count(M.resnet_v1(20, pnil=True)) == base + 2 * 3 * 32 * 32


# ---------------------------------------------------------------- shapes for every combination


@pytest.mark.parametrize(("name", "noise"), COMBINATIONS)
def test_output_shape_for_every_model_and_noise(name, noise):
    pnil = noise in (None, "l2p")  # both PNIL settings covered per model
    model = _tiny(name, noise=noise, pnil=pnil, num_classes=7)
    x = _input(model, batch=3)
    logits = model(x)
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
    assert isinstance(model.pnil, fnn.PNIL) == pnil
    assert (len(fnn.noise_modules(model)) > int(pnil)) == (noise is not None)


def test_models_take_other_sizes_and_channels():
    mnist_resnet = M.resnet_v1(20, in_channels=1, input_size=28, noise="l2p")
    assert mnist_resnet(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert M.noise_modules(mnist_resnet)[-1].theta.shape == (64, 7, 7)
    cifar_cnn = M.small_cnn(in_channels=3, input_size=32, noise="l2p")
    assert cifar_cnn(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert M.build("resnet11", width=0.25, num_classes=100)(torch.rand(1, 3, 32, 32)).shape == (
        1,
        100,
    )


# ---------------------------------------------------------------- where the noise sits


def _l2p_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.theta.shape) for m in M.noise_modules(model)]


def test_resnet20_noise_after_conv1_and_at_every_block_output():
    model = M.resnet_v1(20, noise="l2p")
    names = [n for n, m in model.named_modules() if isinstance(m, fnn.NoiseLayer)]
    blocks = [f"stages.{s}.{b}.noise" for s in range(3) for b in range(3)]
    assert names == ["noise1", *blocks]
    assert _l2p_shapes(model) == [(16, 32, 32)] * 4 + [(32, 16, 16)] * 3 + [(64, 8, 8)] * 3


def test_resnet_v2_18_and_resnet11_and_small_cnn_noise_positions():
    v2 = M.resnet_v2_18(noise="l2p", input_size=16)
    assert (
        _l2p_shapes(v2)
        == [(64, 16, 16)] * 3 + [(128, 8, 8)] * 2 + [(256, 4, 4)] * 2 + [(512, 2, 2)] * 2
    )
    r11 = M.resnet11(noise="l2p")
    assert _l2p_shapes(r11) == [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    cnn = M.small_cnn(noise="l2p")
    assert _l2p_shapes(cnn) == [(16, 28, 28), (32, 14, 14)]


def _capture(module: nn.Module, key: str, store: dict, inputs: bool = False) -> None:
    def hook(m, args, out):
        store[key] = (args[0] if inputs else out).detach().clone()

    module.register_forward_hook(hook)


def test_v1_noise_is_on_the_block_sum_before_its_relu():
    model = M.resnet_v1(20, noise="l2p", input_size=TINY)
    block = model.stages[1][0]  # the down-sampling block: option-A shortcut in play
    seen = {}
    _capture(model.bn1, "bn1", seen)
    _capture(model.noise1, "noise1_in", seen, inputs=True)
    _capture(block, "block_in", seen, inputs=True)
    _capture(block.bn_b, "bn_b", seen)
    _capture(block.noise, "noise_in", seen, inputs=True)
    _capture(block.noise, "noise_out", seen)
    _capture(block, "block_out", seen)
    model(_input(model))
    assert torch.equal(seen["noise1_in"], seen["bn1"])  # right after conv1 + BN
    x = seen["block_in"]
    shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
    torch.testing.assert_close(seen["noise_in"], seen["bn_b"] + shortcut)
    assert (seen["noise_in"] < 0).any()  # before the ReLU
    torch.testing.assert_close(seen["block_out"], F.relu(seen["noise_out"]))


def test_v2_noise_is_on_the_block_output_after_the_residual_sum():
    model = M.resnet_v2_18(noise="l2p", input_size=TINY)
    block = model.stages[0][1]  # identity shortcut
    seen = {}
    _capture(block, "block_in", seen, inputs=True)
    _capture(block.conv_b, "conv_b", seen)
    _capture(block.noise, "noise_in", seen, inputs=True)
    _capture(block.noise, "noise_out", seen)
    _capture(block, "block_out", seen)
    _capture(model.conv1, "conv1", seen)
    _capture(model.noise1, "noise1_in", seen, inputs=True)
    model(_input(model))
    assert torch.equal(seen["noise1_in"], seen["conv1"])
    torch.testing.assert_close(seen["noise_in"], seen["conv_b"] + seen["block_in"])
    assert torch.equal(seen["block_out"], seen["noise_out"])


def test_pnil_is_the_very_first_layer_then_normalize():
    for name in M.MODEL_NAMES:
        model = _tiny(name, pnil=True)
        order = []
        for child_name, child in model.named_children():
            child.register_forward_pre_hook(lambda m, a, n=child_name, seen=order: seen.append(n))
        model(_input(model))
        assert order[:3] == ["pnil", "normalize", "conv1"], name


def test_normalize_inside_uses_dataset_statistics():
    cifar = M.resnet_v1(20)
    torch.testing.assert_close(cifar.normalize.mean, torch.tensor(M.CIFAR10_MEAN))
    torch.testing.assert_close(cifar.normalize.std, torch.tensor(M.CIFAR10_STD))
    mnist = M.small_cnn()
    torch.testing.assert_close(mnist.normalize.mean, torch.tensor(M.MNIST_MEAN))
    fashion = M.small_cnn(mean=[0.286], std=[0.353]).eval()
    x = torch.rand(2, 1, 28, 28)
    seen = {}
    _capture(fashion.conv1, "conv1_in", seen, inputs=True)
    fashion(x)
    torch.testing.assert_close(seen["conv1_in"], (x - 0.286) / 0.353)


# ---------------------------------------------------------------- noise behaviour of whole models


@pytest.mark.parametrize(("name", "noise"), BEHAVIOUR)
def test_model_noise_stays_on_in_eval_and_manual_seed_reproduces(name, noise):
    model = _tiny(name, noise=noise).eval()
    x = _input(model)
    torch.manual_seed(1)
    a, b = model(x), model(x)
    assert not torch.equal(a, b)
    torch.manual_seed(1)
    assert torch.equal(model(x), a)


def test_model_noise_is_independent_across_the_batch():
    model = M.small_cnn(noise="l2p", pnil=True).eval()
    x = torch.rand(1, 1, 28, 28).expand(4, -1, -1, -1)
    logits = model(x)
    for i in range(1, 4):
        assert not torch.allclose(logits[0], logits[i])


@pytest.mark.parametrize(("name", "noise"), BEHAVIOUR)
def test_noise_disabled_gives_the_deterministic_model(name, noise):
    noisy = _tiny(name, noise=noise, pnil=True).eval()
    fnn.set_noise_enabled(noisy, False)
    clean = _tiny(name).eval()
    state = {k: v for k, v in noisy.state_dict().items() if ".alpha" not in k}
    state = {k.replace("parametrizations.weight.original", "weight"): v for k, v in state.items()}
    missing, unexpected = clean.load_state_dict(state, strict=False)
    assert missing == []
    assert all(k.endswith(("theta", "pnil.weight", "pnil.bias")) for k in unexpected)
    x = _input(noisy)
    torch.testing.assert_close(noisy(x), clean(x))
    assert torch.equal(noisy(x), noisy(x))


@pytest.mark.parametrize(("name", "noise"), BEHAVIOUR)
def test_gradients_reach_every_noise_parameter(name, noise):
    model = _tiny(name, noise=noise, pnil=True)
    x = _input(model, batch=4)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    params = M.noise_parameters(model)
    assert len(params) >= 3
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0
    weights = M.weight_parameters(model)
    assert {id(p) for p in params}.isdisjoint(id(p) for p in weights)
    assert len(params) + len(weights) == len(list(model.parameters()))


# ---------------------------------------------------------------- registry and errors


def test_build_names_and_errors():
    assert set(M.MODEL_NAMES) == {
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet_v2_18",
        "resnet11",
        "small_cnn",
    }
    with pytest.raises(ValueError, match="name must be one of"):
        M.build("resnet18")
    with pytest.raises(TypeError, match="depth is fixed by the name"):
        M.build("resnet20", depth=56)


def test_model_arguments_are_validated():
    with pytest.raises(ValueError, match="depth must be 6n\\+2"):
        M.resnet_v1(depth=21)
    with pytest.raises(ValueError, match="noise must be None or one of"):
        M.resnet_v1(noise="gauss")
    with pytest.raises(TypeError, match="pnil must be a bool"):
        M.resnet_v1(pnil="yes")
    with pytest.raises(ValueError, match="mean and std must be given together"):
        M.resnet_v1(mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="pass mean and std for in_channels=2"):
        M.resnet_v1(in_channels=2)
    with pytest.raises(ValueError, match="width"):
        M.resnet_v1(width=0.0)
    with pytest.raises(TypeError, match="num_classes must be an int"):
        M.small_cnn(num_classes=10.0)
    with pytest.raises(ValueError, match="input_size must be >= 4"):
        M.small_cnn(input_size=3)


def test_model_rejects_inputs_of_the_wrong_shape():
    model = M.small_cnn()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 28, 28\)"):
        model(torch.rand(1, 28, 28))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_noisy_model_traces_under_torch_compile_without_graph_breaks():
    model = M.small_cnn(noise="l2p", pnil=True)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(4)
    y = compiled(x)
    torch.manual_seed(4)
    torch.testing.assert_close(y, model(x))
    y.sum().backward()
    assert all(p.grad is not None for p in M.noise_parameters(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("noise", ["l2p", "pni", "pni-w"])
def test_noisy_model_trains_on_cuda(noise):
    model = M.resnet_v1(20, noise=noise, pnil=True).cuda()
    x = torch.rand(8, 3, 32, 32, device="cuda")
    logits = model(x)
    assert logits.device.type == "cuda" and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.arange(8, device="cuda")).backward()
    for p in M.noise_parameters(model):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    with torch.no_grad():
        assert not torch.equal(model.eval()(x), model(x))
