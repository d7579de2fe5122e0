"""The hybrid 3D/2D U-Net: shapes, the ablation switches, configuration, training, reloading."""

from __future__ import annotations

import pytest
import torch

from ramanseg.config import ConfigError
from ramanseg.models.hybrid_unet import (
    MODULES,
    HybridUNet,
    MultiScaleResidual3d,
    SpectralAttentionPooling,
    SpectralMeanPooling,
    hybrid_unet_architecture,
)
from ramanseg.models.registry import get_model_entry, load_trained_model
from ramanseg.models.training import TrainingSettings, configure_reproducibility, train
from tests.models.test_training import CHANNELS, single_thread  # noqa: F401 (fixture)

#: A small model: 5 bands, 2 other channels (7 in all), 2 levels.
SMALL = {
    "in_channels": 7,
    "spectral_channels": [0, 1, 2, 3, 4],
    "levels": 2,
    "spectral_features": 3,
    "spectral_kernel_sizes": [3, 5],
    "compressed_features": 2,
    "context_features": 4,
}


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_config() -> dict:
    """A configuration of the 4-channel tiny task (2 Raman bands, TPEF, SHG)."""
    roles = ["raman", "raman", "tpef", "shg"]
    return {
        "seed": 0,
        "deterministic": True,
        "device": "cpu",
        "channels": [
            {"name": name, "role": role, **({"wavenumber": 2800.0 + i} if role == "raman" else {})}
            for i, (name, role) in enumerate(zip(CHANNELS, roles, strict=True))
        ],
        "models": {
            "training": {"patch_size": 32, "batch_size": 4, "patches_per_epoch": 16},
            "hybrid_unet": {
                "epochs": 1,
                "levels": 2,
                "spectral_features": 2,
                "spectral_kernel_sizes": [1, 3],
                "compressed_features": 1,
                "context_features": 2,
                "band_position": True,
                "modules": dict.fromkeys(MODULES, True),
                "learning_rate": 1e-2,
                "weight_decay": 1e-3,
            },
        },
    }


@pytest.mark.parametrize("size", [(32, 32), (19, 26)])
@pytest.mark.parametrize("off", [None, *MODULES])
def test_output_has_the_input_size_and_one_logit_per_class(size, off):
    switches = {off: False} if off else {}
    model = HybridUNet(**SMALL, out_channels=4, **switches).eval()
    with torch.no_grad():
        output = model(torch.rand(2, 7, *size))
    assert output.shape == (2, 4, *size)


def test_a_stack_of_raman_bands_only_needs_no_2d_branch():
    model = HybridUNet(in_channels=6, spectral_channels=range(6), levels=2, spectral_features=2)
    assert len(model.context) == 0
    assert model(torch.rand(1, 6, 16, 16)).shape == (1, 1, 16, 16)


def test_bands_are_taken_from_their_positions_in_the_stack():
    # Bands at the end of the stack: the 2-D channels first (any layout of `channels`).
    model = HybridUNet(in_channels=4, spectral_channels=[2, 3], levels=1, spectral_features=2)
    model.eval()
    x = torch.rand(1, 4, 8, 8)
    changed_band, changed_context = x.clone(), x.clone()
    changed_band[:, 3] += 1.0
    changed_context[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x), model(changed_band))
        assert not torch.allclose(model(x), model(changed_context))


def test_pooling_attends_over_the_bands():
    pooling = SpectralAttentionPooling(features=2, bands=5)
    x = torch.rand(3, 2, 5, 4, 4)
    weights = pooling.weights(x)
    assert torch.allclose(weights.sum(dim=2), torch.ones(3, 1, 4, 4))
    assert torch.allclose(pooling(x), (x * weights).sum(dim=2))
    # Equal scores everywhere: the attention is the band mean, the ablation's replacement.
    torch.nn.init.zeros_(pooling.score.weight)
    assert torch.allclose(pooling(x), SpectralMeanPooling()(x), atol=1e-6)
    # The per-band score lets the pooling pick a band wherever the spectra peak.
    with torch.no_grad():
        pooling.band_score[3] = 50.0
    assert torch.allclose(pooling(x), x[:, :, 3], atol=1e-4)


def test_multiscale_module_keeps_the_input_through_its_shortcut():
    block = MultiScaleResidual3d(2, 2, [1, 3]).eval()
    for parameter in block.fuse.parameters():
        torch.nn.init.zeros_(parameter)  # the branches contribute nothing
    x = torch.rand(1, 2, 5, 6, 6)
    assert torch.allclose(block(x), torch.relu(x))


def widths(levels: int = SMALL["levels"]) -> list[int]:
    return [SMALL["spectral_features"] * 2**i for i in range(levels + 1)]


def test_switching_off_the_multiscale_module_leaves_one_plain_3d_conv_per_level():
    kernels = SMALL["spectral_kernel_sizes"]
    inputs = [2, *widths()[:-1]]  # the intensity and the band position enter the first level
    difference = 0
    for w_in, w_out in zip(inputs, widths(), strict=True):
        branches = sum(w_in * w_out * k * 3 * 3 + 2 * w_out for k in kernels)  # conv + BN
        fuse = w_out * len(kernels) * w_out + 2 * w_out
        shortcut = w_in * w_out + 2 * w_out if w_in != w_out else 0
        plain = w_in * w_out * 3 * 3 * 3 + 2 * w_out
        difference += branches + fuse + shortcut - plain
    on = parameters(HybridUNet(**SMALL))
    off = parameters(HybridUNet(**SMALL, multiscale_3d=False))
    assert on - off == difference


def test_switching_off_the_spectral_compression_folds_all_features():
    deepest, bands = widths()[-1], len(SMALL["spectral_channels"])
    compressed = SMALL["compressed_features"]
    reduce = deepest * compressed + 2 * compressed  # 1 x 1 x 1 conv + BN
    fold_compressed = compressed * bands * deepest + 2 * deepest
    fold_all = deepest * bands * deepest + 2 * deepest
    on = parameters(HybridUNet(**SMALL))
    off = parameters(HybridUNet(**SMALL, spectral_compression=False))
    assert off - on == fold_all - (reduce + fold_compressed)
    assert off > on


def test_switching_off_attention_pooling_removes_one_band_scorer_per_skip():
    bands = len(SMALL["spectral_channels"])
    # A 1 x 1 x 1 conv to one score (weights and bias) and a score per band.
    scorers = sum(width + 1 + bands for width in widths()[:-1])
    on = parameters(HybridUNet(**SMALL))
    off = parameters(HybridUNet(**SMALL, attention_pooling=False))
    assert on - off == scorers


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="odd positive"):
        HybridUNet(**{**SMALL, "spectral_kernel_sizes": [3, 4]})
    with pytest.raises(ValueError, match="at least one Raman band"):
        HybridUNet(**{**SMALL, "spectral_channels": []})
    with pytest.raises(ValueError, match="distinct positions"):
        HybridUNet(**{**SMALL, "spectral_channels": [0, 7]})
    with pytest.raises(ValueError, match="levels must be a positive integer"):
        HybridUNet(**{**SMALL, "levels": 0})


def test_architecture_takes_the_bands_from_the_channel_layout():
    config = tiny_config()
    config["models"]["hybrid_unet"]["modules"]["attention_pooling"] = False
    architecture = hybrid_unet_architecture(config, "hybrid_unet", 4)
    assert architecture["spectral_channels"] == [0, 1]
    assert architecture["out_channels"] == 1
    assert architecture["attention_pooling"] is False
    assert architecture["multiscale_3d"] is True
    assert isinstance(get_model_entry("hybrid_unet").build(**architecture), HybridUNet)


def test_architecture_rejects_a_layout_that_does_not_fit():
    config = tiny_config()
    with pytest.raises(ConfigError, match="lists 4 channels but the stacks have 5"):
        hybrid_unet_architecture(config, "hybrid_unet", 5)
    for channel in config["channels"]:
        channel["role"] = "tpef"
    with pytest.raises(ConfigError, match="no channel in `channels` has role raman"):
        hybrid_unet_architecture(config, "hybrid_unet", 4)
    config = tiny_config()
    del config["models"]["hybrid_unet"]["modules"]["multiscale_3d"]
    with pytest.raises(ConfigError, match=r"models\.hybrid_unet\.modules\.multiscale_3d"):
        hybrid_unet_architecture(config, "hybrid_unet", 4)


def test_learns_a_spectral_task():
    # Foreground pixels have the band peak at band 1, background at band 3: the same
    # total intensity, told apart by the spectrum only.
    torch.manual_seed(0)
    blocks = (torch.rand(8, 1, 4, 4) > 0.5).float()
    labels = torch.nn.functional.interpolate(blocks, scale_factor=4)  # 4 x 4 pixel blocks
    spectra = torch.zeros(8, 5, 16, 16)
    spectra[:, 1] = labels[:, 0]
    spectra[:, 3] = 1 - labels[:, 0]
    x = torch.cat([spectra + 0.1 * torch.rand_like(spectra), torch.rand(8, 2, 16, 16)], dim=1)
    model = HybridUNet(**SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_trains_through_the_harness_and_loads_back_through_the_registry(tmp_path, samples):
    config = tiny_config()
    entry = get_model_entry("hybrid_unet")
    settings = TrainingSettings.from_config(config)
    configure_reproducibility(settings.seed, settings.deterministic, torch.device("cpu"))
    architecture = entry.architecture(config, "hybrid_unet", 4)
    model = entry.build(**architecture)
    result = train(
        model,
        entry.strategy(config, "hybrid_unet", model),
        *samples,
        settings,
        tmp_path,
        model_name="hybrid_unet",
        architecture=architecture,
        progress=False,
    )
    assert result.selected_epoch == 1
    loaded, metadata = load_trained_model(tmp_path)  # torch.load(weights_only=True)
    assert isinstance(loaded, HybridUNet) and metadata["architecture"] == architecture
    x = torch.rand(1, 4, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_the_band_position_is_a_second_input_feature_of_the_first_level():
    with_position = HybridUNet(**SMALL, multiscale_3d=False)
    without = HybridUNet(**SMALL, multiscale_3d=False, band_position=False)
    first_width = widths()[0]
    # The first level's plain 3 x 3 x 3 convolution: one more input feature.
    assert parameters(with_position) - parameters(without) == first_width * 27
    x = torch.rand(1, 7, 8, 8)
    assert without.eval()(x).shape == with_position.eval()(x).shape == (1, 1, 8, 8)
