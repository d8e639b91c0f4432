"""fastnoise.nn layers: values against the functional spec, noise statistics, the eval and
enabled switches, gradients, argument errors and add_perturbation_modules."""

import copy
import math

import pytest
import torch
from torch import nn

import fastnoise.nn as fnn
from fastnoise import functional as F
from fastnoise import rng


def _stat_tol(n: int) -> float:
    """Five standard errors of a sample std ratio over n normal draws."""
    return 5 * math.sqrt(1 / (2 * n))


def _same_seed_as_module(seed: int) -> int:
    """The seed a module's forward draws right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return rng.draw_seed()


# ---------------------------------------------------------------- PerturbationInjection


def test_perturbation_injection_is_x_plus_theta_times_spec_noise():
    layer = fnn.PerturbationInjection((3, 4, 5), init=0.3)
    with torch.no_grad():
        layer.theta.uniform_(0.1, 1.0)
    x = torch.rand(6, 3, 4, 5)
    torch.manual_seed(7)
    y = layer(x)
    expected = F.inject_noise(x, layer.theta.detach(), seed=_same_seed_as_module(7))
    torch.testing.assert_close(y, expected)


def test_perturbation_injection_theta_is_one_sample_parameter_at_init():
    layer = fnn.PerturbationInjection((2, 3, 3), init=0.25)
    assert isinstance(layer.theta, nn.Parameter)
    assert layer.theta.shape == (2, 3, 3)
    assert torch.all(layer.theta == 0.25)
    assert "shape=(2, 3, 3)" in repr(layer) and "theta_min=0.01" in repr(layer)
    assert list(layer.state_dict()) == ["theta"]


def test_perturbation_injection_injects_in_eval_mode_and_manual_seed_reproduces():
    layer = fnn.PerturbationInjection((3, 4, 4)).eval()
    x = torch.rand(2, 3, 4, 4)
    torch.manual_seed(0)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    assert not torch.equal(a, x)
    torch.manual_seed(0)
    assert torch.equal(layer(x), a)


def test_perturbation_injection_noise_is_independent_across_the_batch():
    layer = fnn.PerturbationInjection((3, 4, 4))
    y = layer(torch.ones(8, 3, 4, 4))
    # identical samples must not share a draw (the released Learn2Perturb code did)
    for i in range(1, 8):
        assert (y[0] != y[i]).all()


def test_perturbation_injection_disabled_is_identity():
    layer = fnn.PerturbationInjection((3, 4, 4))
    layer.enabled = False
    x = torch.rand(2, 3, 4, 4)
    assert layer(x) is x
    assert "enabled=False" in repr(layer)


def test_perturbation_injection_noise_std_matches_theta_per_feature_and_per_sample():
    theta = torch.linspace(0.05, 2.0, 18).reshape(2, 3, 3)
    layer = fnn.PerturbationInjection((2, 3, 3))
    with torch.no_grad():
        layer.theta.copy_(theta)
    n = 4096
    x = torch.rand(n, 2, 3, 3)
    noise = (layer(x) - x).detach()
    # per feature, over the batch
    ratio = noise.std(dim=0) / theta
    assert (ratio - 1).abs().max() < _stat_tol(n)
    assert noise.mean(dim=0).abs().div(theta).max() < 5 / math.sqrt(n)
    # per sample, over its features (uniform theta)
    flat = fnn.PerturbationInjection((1024,), init=0.5)
    per_sample = (flat(torch.zeros(64, 1024)) - 0).detach().std(dim=1) / 0.5
    assert (per_sample - 1).abs().max() < _stat_tol(1024)


def test_perturbation_injection_gradient_reaches_theta_and_x():
    layer = fnn.PerturbationInjection((3, 2, 2), init=0.5)
    x = torch.rand(5, 3, 2, 2, requires_grad=True)
    y = layer(x)
    upstream = torch.randn_like(y)
    y.backward(upstream)
    z = (y.detach() - x.detach()) / 0.5
    torch.testing.assert_close(layer.theta.grad, (upstream * z).sum(0))
    torch.testing.assert_close(x.grad, upstream)


def test_perturbation_injection_clamp_projects_onto_theta_min_in_place():
    layer = fnn.PerturbationInjection((4,), init=0.5, theta_min=0.1)
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([-1.0, 0.05, 0.1, 0.7]))
    param = layer.theta
    assert layer.clamp_() is layer
    assert layer.theta is param
    torch.testing.assert_close(layer.theta.detach(), torch.tensor([0.1, 0.1, 0.1, 0.7]))
    assert layer.theta.grad is None


def test_perturbation_injection_negative_theta_acts_as_its_magnitude():
    # Between an optimizer step and clamp_() theta may dip below 0: same law, no error.
    layer = fnn.PerturbationInjection((4,), init=0.5)
    with torch.no_grad():
        layer.theta.fill_(-0.5)
    x = torch.zeros(20000, 4)
    std = layer(x).detach().std()
    assert abs(std / 0.5 - 1) < _stat_tol(80000)


def test_perturbation_injection_keeps_low_precision_dtypes():
    layer = fnn.PerturbationInjection((3, 4))
    for dtype in (torch.float16, torch.bfloat16):
        assert layer(torch.rand(2, 3, 4, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("bad_shape", [(2, 3, 4, 6), (3, 4, 5), (2, 1, 3, 4, 5)])
def test_perturbation_injection_rejects_wrong_input_shape(bad_shape):
    layer = fnn.PerturbationInjection((3, 4, 5))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, 4, 5\)"):
        layer(torch.rand(bad_shape))


def test_perturbation_injection_rejects_bad_arguments():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fnn.PerturbationInjection((3,))([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        fnn.PerturbationInjection((3,))(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="shape"):
        fnn.PerturbationInjection("abc")
    with pytest.raises(ValueError, match="shape entries"):
        fnn.PerturbationInjection((3, 0))
    with pytest.raises(ValueError, match="init must be >= theta_min"):
        fnn.PerturbationInjection((3,), init=0.001, theta_min=0.01)
    with pytest.raises(ValueError, match="init"):
        fnn.PerturbationInjection((3,), init=-1.0)
    with pytest.raises(ValueError, match="theta_min"):
        fnn.PerturbationInjection((3,), theta_min=float("nan"))


# ---------------------------------------------------------------- PNI on activations


def test_pni_is_alpha_times_each_samples_detached_std_times_z():
    layer = fnn.ParametricNoiseInjection(init=0.3)
    x = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1) + 1
    torch.manual_seed(3)
    y = layer(x)
    z = F.inject_noise(torch.zeros_like(x), torch.tensor(0.3), seed=_same_seed_as_module(3))
    std = x.flatten(1).std(dim=1, correction=0).view(4, 1, 1, 1)
    torch.testing.assert_close(y, x + std * z)
    # A batch of one (and PNI-W's weight, one "sample") keeps one sigma: inject_noise.
    torch.manual_seed(3)
    one = layer(x[:1])
    sigma = 0.3 * x[:1].std(correction=0)
    torch.testing.assert_close(one, F.inject_noise(x[:1], sigma, seed=_same_seed_as_module(3)))


def test_pni_sample_output_does_not_depend_on_the_other_rows():
    """Per-sample std: a sample's noisy output is the same whatever else is in the batch
    (PNI's batch-wide std let the other rows, e.g. EOT copies, scale a sample's noise)."""
    layer = fnn.ParametricNoiseInjection("channel", channels=3, init=0.4)
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    torch.manual_seed(21)
    first = layer(torch.cat([a, b]))[0]
    torch.manual_seed(21)
    second = layer(torch.cat([a, 10 * b + 5]))[0]
    torch.testing.assert_close(first, second)


def test_pni_noise_std_is_alpha_times_std_of_x_statistically():
    layer = fnn.ParametricNoiseInjection(init=0.5)
    x = torch.randn(256, 16, 8) * 3.0
    noise = (layer(x) - x).detach()
    expected = 0.5 * float(x.std())
    assert abs(float(noise.std()) / expected - 1) < _stat_tol(x.numel())


def test_pni_channel_mode_has_one_alpha_per_channel():
    layer = fnn.ParametricNoiseInjection("channel", channels=4, init=0.25)
    assert layer.alpha.shape == (4,)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0]))
    x = torch.randn(512, 4, 6, 6)
    noise = (layer(x) - x).detach()
    per_channel = noise.transpose(0, 1).reshape(4, -1).std(dim=1)
    expected = layer.alpha.detach() * x.std(correction=0)
    assert ((per_channel / expected) - 1).abs().max() < _stat_tol(512 * 36)
    # also on (N, C) features, as after a linear layer
    assert layer(torch.randn(3, 4)).shape == (3, 4)


def test_pni_negative_alpha_is_its_magnitude_with_mirrored_gradient():
    x = torch.randn(4, 3, 4, 4)
    outputs, grads = [], []
    for alpha in (0.3, -0.3):
        layer = fnn.ParametricNoiseInjection(init=0.3)
        with torch.no_grad():
            layer.alpha.fill_(alpha)
        torch.manual_seed(11)
        y = layer(x)
        y.sum().backward()
        outputs.append(y.detach())
        grads.append(layer.alpha.grad)
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[1], -grads[0])
    assert grads[0].abs() > 0


def test_pni_treats_std_as_constant_so_grad_x_is_identity():
    layer = fnn.ParametricNoiseInjection(init=0.5)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    upstream = torch.randn(3, 2, 4, 4)
    layer(x).backward(upstream)
    torch.testing.assert_close(x.grad, upstream)
    assert layer.alpha.grad is not None and layer.alpha.grad.abs() > 0


def test_pni_forward_has_no_host_sync():
    # Meta tensors carry no data: any .item()/bool() on them raises, so a forward that
    # completes on the meta device reads nothing back from the device.
    layer = fnn.ParametricNoiseInjection("channel", channels=3).to("meta")
    x = torch.empty(2, 3, 4, 4, device="meta")
    assert layer(x).shape == (2, 3, 4, 4)
    with pytest.raises(RuntimeError):
        x.std().item()
    sigma = fnn.ParametricNoiseInjection(init=0.5).noise_std(torch.randn(2, 3))
    assert isinstance(sigma, torch.Tensor) and sigma.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pni_noise_std_does_not_synchronize_cuda():
    layer = fnn.ParametricNoiseInjection("channel", channels=3).cuda()
    x = torch.randn(4, 3, 8, 8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sigma = layer.noise_std(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    std = x.flatten(1).std(dim=1, correction=0).view(4, 1, 1, 1)
    torch.testing.assert_close(sigma, (0.25 * std).expand(4, 3, 1, 1))


def test_pni_injects_in_eval_mode_and_can_be_disabled():
    layer = fnn.ParametricNoiseInjection().eval()
    x = torch.randn(2, 3, 4, 4)
    assert not torch.equal(layer(x), layer(x))
    layer.enabled = False
    assert layer(x) is x


def test_pni_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        fnn.ParametricNoiseInjection("element")
    with pytest.raises(ValueError, match="channels is required"):
        fnn.ParametricNoiseInjection("channel")
    with pytest.raises(ValueError, match="channels is only used"):
        fnn.ParametricNoiseInjection("layer", channels=3)
    with pytest.raises(ValueError, match="init"):
        fnn.ParametricNoiseInjection(init=-0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, ...\)"):
        fnn.ParametricNoiseInjection("channel", channels=3)(torch.randn(2, 4, 5))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        fnn.ParametricNoiseInjection()(1.0)


# ---------------------------------------------------------------- PNI on weights


def test_pni_weight_draws_fresh_weight_noise_and_keeps_the_clean_weight():
    layer = fnn.pni_weight(nn.Linear(256, 128), init=0.5)
    clean = layer.parametrizations.weight.original
    w1, w2 = layer.weight, layer.weight
    assert not torch.equal(w1, w2)
    noise = (w1 - clean).detach()
    expected = 0.5 * float(clean.detach().std(correction=0))
    assert abs(float(noise.std()) / expected - 1) < _stat_tol(noise.numel())
    x = torch.randn(4, 256)
    assert not torch.equal(layer(x), layer(x))


def test_pni_weight_gradients_and_disable():
    conv = fnn.pni_weight(nn.Conv2d(3, 8, 3), mode="channel")
    noise = conv.parametrizations.weight[0]
    assert isinstance(noise, fnn.ParametricNoiseInjection)
    assert noise.alpha.shape == (8,)
    conv(torch.randn(2, 3, 6, 6)).square().sum().backward()
    assert (noise.alpha.grad != 0).all()
    assert conv.parametrizations.weight.original.grad is not None
    assert fnn.noise_parameters(conv) == [noise.alpha]
    noise.enabled = False
    assert torch.equal(conv.weight, conv.parametrizations.weight.original)


def test_pni_weight_rejects_modules_without_weight():
    with pytest.raises(ValueError, match="'weight'"):
        fnn.pni_weight(nn.ReLU())
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        fnn.pni_weight(torch.ones(3))


# ---------------------------------------------------------------- PNIL


def test_pnil_is_the_functional_pnil_with_its_parameters():
    layer = fnn.PNIL((1, 4, 4), weight_init=0.5, bias_init=-1.0)
    x = torch.rand(3, 1, 4, 4)
    torch.manual_seed(5)
    y = layer(x)
    expected = F.pnil(x, layer.weight.detach(), layer.bias.detach(), seed=_same_seed_as_module(5))
    torch.testing.assert_close(y, expected)


def test_pnil_default_noise_std_is_exp_of_half_bias_init():
    layer = fnn.PNIL((2, 8, 8))
    assert torch.all(layer.weight == 0)
    x = torch.rand(1024, 2, 8, 8)
    noise = (layer(x) - x).detach()
    expected = math.exp(fnn.pnil.DEFAULT_BIAS_INIT / 2)
    assert abs(float(noise.std()) / expected - 1) < _stat_tol(noise.numel())


def test_pnil_gradients_reach_weight_bias_and_x():
    layer = fnn.PNIL((3, 4, 4), weight_init=0.1)
    x = torch.rand(4, 3, 4, 4, requires_grad=True)
    layer(x).square().sum().backward()
    for grad in (layer.weight.grad, layer.bias.grad, x.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_pnil_variance_map_is_exp_sigma():
    layer = fnn.PNIL((1, 3, 3))
    with torch.no_grad():
        layer.weight.uniform_(-1, 1)
        layer.bias.uniform_(-3, 0)
    torch.testing.assert_close(layer.variance_map(), layer.bias.detach().exp())
    x = torch.rand(2, 1, 3, 3)
    expected = torch.exp(x * layer.weight.detach() + layer.bias.detach())
    assert not layer.variance_map(x).requires_grad
    torch.testing.assert_close(layer.variance_map(x), expected)
    torch.testing.assert_close(layer.variance_map(x[0]), expected[0])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 3, 3\)"):
        layer.variance_map(torch.rand(2, 3, 3, 3))


def test_pnil_eval_injects_disable_and_errors():
    layer = fnn.PNIL((1, 3, 3)).eval()
    x = torch.rand(2, 1, 3, 3)
    assert not torch.equal(layer(x), layer(x))
    layer.enabled = False
    assert layer(x) is x
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 3, 3\)"):
        layer(torch.rand(2, 3, 3, 3))
    with pytest.raises(TypeError, match="bias_init must be a number"):
        fnn.PNIL((3,), bias_init="low")


# ---------------------------------------------------------------- Normalize


def test_normalize_is_per_channel_affine_with_buffers():
    layer = fnn.Normalize([0.5, 0.25], [0.5, 2.0])
    assert list(layer.parameters()) == []
    assert set(layer.state_dict()) == {"mean", "std"}
    x = torch.rand(3, 2, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], dim=1)
    torch.testing.assert_close(layer(x), expected)
    assert layer(x.half()).dtype == torch.float16
    assert layer(torch.rand(3, 2)).shape == (3, 2)


def test_normalize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="std must have one entry per channel"):
        fnn.Normalize([0.5, 0.5], [0.2])
    with pytest.raises(ValueError, match="std must be positive"):
        fnn.Normalize([0.5], [0.0])
    with pytest.raises(TypeError, match="mean must be a sequence"):
        fnn.Normalize(0.5, [0.2])
    with pytest.raises(ValueError, match="mean entries must be finite"):
        fnn.Normalize([float("nan")], [0.2])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3, ...\)"):
        fnn.Normalize([0.5] * 3, [0.2] * 3)(torch.rand(2, 1, 4, 4))


# ---------------------------------------------------------------- groups and factory


def _user_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3),
    )


def test_noise_and_weight_parameters_split_the_model():
    model = nn.Sequential(fnn.PNIL((1, 8, 8)), _user_model())
    fnn.add_perturbation_modules(model, "l2p", example_input=torch.rand(2, 1, 8, 8))
    noise = fnn.noise_parameters(model)
    weights = fnn.weight_parameters(model)
    assert len(noise) == 4  # PNIL weight, bias and two thetas
    assert {id(p) for p in noise}.isdisjoint(id(p) for p in weights)
    assert len(noise) + len(weights) == len(list(model.parameters()))
    assert len(fnn.noise_modules(model)) == 3


def test_set_noise_enabled_and_clamp_noise_reach_every_layer():
    model = nn.Sequential(fnn.PerturbationInjection((3,), theta_min=0.2), fnn.PNIL((3,)))
    fnn.set_noise_enabled(model, False)
    x = torch.rand(2, 3)
    assert torch.equal(model(x), x)
    fnn.set_noise_enabled(model, True)
    assert not torch.equal(model(x), x)
    with torch.no_grad():
        model[0].theta.fill_(-1.0)
    fnn.clamp_noise_(model)
    assert torch.all(model[0].theta == 0.2)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        fnn.set_noise_enabled(model, 1)


def test_noise_layer_factory():
    assert isinstance(fnn.noise_layer("l2p", (3, 4, 4)), fnn.PerturbationInjection)
    pni = fnn.noise_layer("pni", (3, 4, 4), pni_mode="channel")
    assert isinstance(pni, fnn.ParametricNoiseInjection) and pni.alpha.shape == (3,)
    assert isinstance(fnn.noise_layer(None, (3,)), nn.Identity)
    with pytest.raises(ValueError, match="noise must be None or one of"):
        fnn.noise_layer("gaussian", (3,))


# ---------------------------------------------------------------- add_perturbation_modules


def test_add_perturbation_modules_after_convolutions_of_a_user_model():
    model = _user_model().eval()
    x = torch.rand(5, 1, 8, 8)
    clean = model(x)
    keys = set(model.state_dict())
    assert fnn.add_perturbation_modules(model, "l2p", example_input=x[:2]) is model
    layers = fnn.noise_modules(model)
    assert [m.theta.shape for m in layers] == [(4, 8, 8), (6, 4, 4)]
    assert model[0].perturbation is layers[0] and model[2].perturbation is layers[1]
    assert keys < set(model.state_dict())  # the model's own names are unchanged
    assert not model.training  # the shape probe restored the mode
    torch.manual_seed(0)
    noisy = model(x)
    assert not torch.allclose(noisy, clean)
    torch.manual_seed(0)
    assert torch.equal(model(x), noisy)
    fnn.set_noise_enabled(model, False)
    torch.testing.assert_close(model(x), clean)


def test_add_perturbation_modules_noise_sits_on_the_selected_output():
    model = _user_model()
    fnn.add_perturbation_modules(model, "l2p", after=["2"], example_input=torch.rand(1, 1, 8, 8))
    seen = {}
    model[3].register_forward_hook(lambda m, args, out: seen.setdefault("relu_in", args[0]))
    model[2].perturbation.register_forward_hook(lambda m, args, out: seen.setdefault("noisy", out))
    model(torch.rand(2, 1, 8, 8))
    assert torch.equal(seen["relu_in"], seen["noisy"])
    assert len(fnn.noise_modules(model)) == 1


def test_add_perturbation_modules_pni_kind_and_deepcopy():
    model = fnn.add_perturbation_modules(
        _user_model(), "pni", after=(nn.Conv2d, nn.Linear), example_input=torch.rand(1, 1, 8, 8)
    )
    assert len(fnn.noise_modules(model)) == 3
    twin = copy.deepcopy(model)
    for layer in fnn.noise_modules(twin):
        with torch.no_grad():
            layer.alpha.zero_()
    x = torch.rand(2, 1, 8, 8)
    # the copy's hooks use the copy's layers: zero alpha there means no noise there
    assert torch.equal(twin(x), twin(x))
    assert not torch.equal(model(x), model(x))


def test_add_perturbation_modules_rejects_bad_arguments():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="example_input is required"):
        fnn.add_perturbation_modules(_user_model())
    with pytest.raises(ValueError, match="kind must be"):
        fnn.add_perturbation_modules(_user_model(), "pni-w", example_input=x)
    with pytest.raises(ValueError, match="does not have"):
        fnn.add_perturbation_modules(_user_model(), after=["conv9"], example_input=x)
    with pytest.raises(ValueError, match="selects no module"):
        fnn.add_perturbation_modules(_user_model(), after=(nn.BatchNorm2d,), example_input=x)
    with pytest.raises(ValueError, match="nn.Sequential"):
        nested = nn.Sequential(_user_model())
        fnn.add_perturbation_modules(nested, after=["0"], example_input=x)
    with pytest.raises(TypeError, match="after must be"):
        fnn.add_perturbation_modules(_user_model(), after="0", example_input=x)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        fnn.add_perturbation_modules(lambda t: t, example_input=x)
    model = fnn.add_perturbation_modules(_user_model(), example_input=x)
    with pytest.raises(ValueError, match="already has"):
        fnn.add_perturbation_modules(model, example_input=x)
