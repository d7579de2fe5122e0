"""The RamanSeg network: shapes, gradients, phases, config, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ramanseg.models.prototypes import RamanSegLoss
from ramanseg.models.ramanseg import (
    PHASES,
    FeatureExtractor,
    PrototypeHead,
    RamanSeg,
    parameter_groups,
    phase_param_groups,
    phase_parameters,
    set_phase,
)

TINY = dict(
    in_channels=3,
    prototypes_per_class=3,
    prototype_channels=6,
    addon_channels=8,
    stride=4,
    base_channels=4,
    max_channels=8,
)
LEARNING_RATES = {"features": 1e-4, "addon": 3e-3, "prototypes": 3e-3, "last_layer": 1e-4}


def tiny(**kwargs) -> RamanSeg:
    return RamanSeg(**{**TINY, **kwargs})


@pytest.fixture()
def deterministic():
    """Deterministic algorithms for one test, restoring the previous setting afterwards."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize(
    ("stride", "size", "latent"),
    [(8, (64, 64), (8, 8)), (4, (32, 32), (8, 8)), (4, (37, 50), (10, 13)), (1, (9, 7), (9, 7))],
)
def test_output_has_input_size_and_latent_has_strided_size(stride, size, latent):
    torch.manual_seed(0)
    model = tiny(stride=stride, prototype_size=3).eval()
    output = model(torch.rand(2, 3, *size))
    assert output.logits.shape == (2, 2, *size)
    assert output.latent_logits.shape == (2, 2, *latent)
    assert output.similarities.shape == output.distances.shape == (2, 6, *latent)
    assert output.latent.shape == (2, 6, *latent)
    assert model.latent_size(size) == latent


def test_output_is_the_upsampled_latent_probability_map():
    torch.manual_seed(0)
    model = tiny().eval()
    x = torch.rand(1, 3, 16, 16)
    output = model(x)
    expected = F.interpolate(
        output.latent_logits.softmax(1), size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(output.logits.softmax(1), expected)
    model.upsample = "logits"
    logits = model(x).logits
    torch.testing.assert_close(
        logits, F.interpolate(output.latent_logits, size=(16, 16), mode="bilinear")
    )


def test_head_starts_as_identity_and_readout_as_protopnet():
    torch.manual_seed(0)
    model = tiny().eval()
    output = model(torch.rand(2, 3, 16, 16))
    # Identity head in eval mode: the logits are the +1 / -0.5 readout of the similarities.
    torch.testing.assert_close(output.latent_logits, model.readout(output.similarities))
    weight = model.readout.weight[:, :, 0, 0]
    assert weight.tolist() == [[1, 1, 1, -0.5, -0.5, -0.5], [-0.5, -0.5, -0.5, 1, 1, 1]]
    assert model.readout.bias is None
    # Two convolutions with spatial dropout between them (one Dropout2d), the last at zero.
    assert model.head.layers == 2
    dropouts = [m for m in model.head.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(dropouts) == 1 and dropouts[0].p == 0.2
    assert not model.head.convs[-1].weight.any()


def test_head_keeps_every_prototype_on_the_path_to_the_readout():
    # The residual head: whatever its convolutions learn (here: a dead ReLU, all outputs
    # negative), each prototype's similarity still reaches the readout.
    torch.manual_seed(0)
    head = PrototypeHead(channels=4, layers=2, dropout=0.5).eval()
    with torch.no_grad():
        head.convs[0].bias.fill_(-100.0)
    similarities = torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(head(similarities), similarities)
    assert PrototypeHead(4, 0)(similarities) is similarities
    with pytest.raises(ValueError, match="odd"):
        PrototypeHead(4, 1, kernel_size=2)
    with pytest.raises(ValueError, match=">= 0"):
        PrototypeHead(4, -1)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = tiny(prototype_size=3).train()
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 8:] = 1
    loss = RamanSegLoss({"cross_entropy": 1.0, "dice": 1.0, "diversity": 0.1, "l1": 1e-3})
    # The head's last convolution starts at zero, which blocks the gradient of the ones
    # before it until it has moved: move it.
    with torch.no_grad():
        model.head.convs[-1].weight.normal_(0.0, 0.1)
    loss(model(torch.rand(2, 3, 16, 16)), target, model).total.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("phase", "trained"),
    [
        ("warmup", {"addon", "prototypes", "head"}),
        ("joint", {"features", "addon", "prototypes", "head"}),
        ("last_layer", {"head", "last_layer"}),
    ],
)
def test_set_phase_freezes_the_right_parameters(phase, trained):
    model = tiny()
    set_phase(model, phase)
    assert model.phase == phase
    for group, parameters in parameter_groups(model).items():
        for parameter in parameters:
            assert parameter.requires_grad == (group in trained), (phase, group)
    assert set(phase_parameters(model, phase)) == trained
    groups = phase_param_groups(model, phase, LEARNING_RATES, weight_decay=1e-3)
    assert {g["name"] for g in groups} == trained
    for group in groups:
        expected_lr = LEARNING_RATES["addon" if group["name"] == "head" else group["name"]]
        assert group["lr"] == expected_lr
        decayed = group["name"] in ("features", "addon", "head")
        assert group["weight_decay"] == (1e-3 if decayed else 0.0)
    # The groups partition the parameters: every parameter in exactly one group.
    everything = [id(p) for params in parameter_groups(model).values() for p in params]
    assert sorted(everything) == sorted(id(p) for p in model.parameters())


def test_frozen_parameters_get_no_gradient():
    torch.manual_seed(0)
    model = tiny()
    set_phase(model, "last_layer")
    output = model(torch.rand(1, 3, 8, 8))
    RamanSegLoss({"l1": 1.0})(
        output, torch.zeros(1, 8, 8, dtype=torch.long), model
    ).total.backward()
    assert model.readout.weight.grad is not None
    assert all(p.grad is None for p in model.features.parameters())
    assert model.prototype_layer.prototypes.grad is None


def test_phase_errors():
    model = tiny()
    with pytest.raises(ValueError, match="phase must be one of"):
        set_phase(model, "push")
    with pytest.raises(ValueError, match="lacks 'features'"):
        phase_param_groups(model, "joint", {"addon": 1e-3, "prototypes": 1e-3})
    with pytest.raises(ValueError, match="> 0"):
        phase_param_groups(model, "last_layer", {"addon": 1e-3, "last_layer": 0.0})
    assert PHASES == ("warmup", "joint", "last_layer")
    # Without head layers there is no (empty) head group.
    assert "head" not in phase_parameters(tiny(head_layers=0), "joint")


@pytest.mark.parametrize("variant", ["ramanseg", "ramanseg_noproj"])
def test_from_config(demo_config, variant):
    entry = demo_config["models"][variant]
    channels = len(demo_config["channels"])
    model = RamanSeg.from_config(entry, channels, base_channels=4, max_channels=8)
    per_class, k = entry["prototypes_per_class"], entry["prototype_size"]
    assert model.prototype_layer.prototypes.shape == (2 * per_class, 64, k, k)
    assert model.addon[0].out_channels == entry["addon_channels"]
    assert model.head.layers == entry.get("head_layers", 2)
    for module in model.head.modules():
        if isinstance(module, torch.nn.Dropout2d):
            assert module.p == entry["dropout"]
    assert model.in_channels == 24 and model.stride == entry.get("stride", 8)
    output = model.eval()(torch.rand(1, 24, 16, 16))
    assert output.logits.shape == (1, 2, 16, 16)


def test_from_config_and_constructor_errors():
    with pytest.raises(ValueError, match="lacks"):
        RamanSeg.from_config({"prototypes_per_class": 15}, 24)
    with pytest.raises(ValueError, match="prototype_size must be odd"):
        tiny(prototype_size=2)
    with pytest.raises(ValueError, match="dropout"):
        tiny(dropout=1.0)
    with pytest.raises(ValueError, match="power of two"):
        tiny(stride=6)
    with pytest.raises(ValueError, match="upsample"):
        tiny(upsample="nearest")
    with pytest.raises(ValueError, match=r"input must have shape \(B, 3, H, W\)"):
        tiny()(torch.rand(1, 4, 8, 8))
    assert FeatureExtractor(3, stride=8).output_size((64, 256)) == (8, 32)


def test_two_seeded_runs_give_identical_losses(deterministic):
    def run() -> tuple[list[float], list[torch.Tensor]]:
        torch.manual_seed(123)
        model = tiny(prototype_size=3).train()
        criterion = RamanSegLoss(
            {"cross_entropy": 1.0, "dice": 1.0, "diversity": 0.01, "l1": 1e-4},
            diversity_loss="kld",
        )
        set_phase(model, "joint")
        optimiser = torch.optim.Adam(phase_param_groups(model, "joint", LEARNING_RATES))
        x = torch.rand(2, 3, 16, 16)
        target = (torch.rand(2, 16, 16) > 0.5).long()
        losses = []
        for _ in range(2):
            optimiser.zero_grad()
            terms = criterion(model(x), target, model)
            terms.total.backward()
            optimiser.step()
            losses.append(terms.total.item())
        return losses, [p.detach().clone() for p in model.parameters()]

    losses_a, params_a = run()
    losses_b, params_b = run()
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
