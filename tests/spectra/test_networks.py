"""The 1D-CNN against the paper's Table 1, and the 1D ResNet's fine-tuning groups."""

from __future__ import annotations

import torch

from ramanseg.spectra.networks import ResNet1d, SpectraCNN

#: Output shapes of the paper's Table 1 (channels, length) after each block, for 1200 points.
TABLE1_SHAPES = [(16, 600), (32, 300), (64, 150), (128, 75), (256, 37)]


def test_layer_shapes_on_a_1200_point_input_match_table_1():
    model = SpectraCNN(1200).eval()
    x = torch.zeros(2, 1, 1200)
    shapes = []
    for block in model.blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == TABLE1_SHAPES
    assert [block[0].kernel_size[0] for block in model.blocks] == [31, 15, 7, 5, 3]
    assert model.hidden.out_features == 128 and model.dropout.p == 0.5
    assert model(torch.zeros(2, 1, 1200)).shape == (2, 1)


def test_short_spectra_keep_positions_and_multiclass_has_one_output_per_class():
    model = SpectraCNN(21, n_classes=3).eval()
    x = torch.zeros(2, 1, 21)
    for block in model.blocks:
        x = block(x)
    assert x.shape[-1] == 2
    assert model(torch.zeros(2, 1, 21)).shape == (2, 3)


def test_resnet_fine_tuning_updates_only_the_last_two_stages_and_the_head():
    model = ResNet1d(n_classes=3)
    model.replace_head(2)
    backbone, head = model.fine_tune_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in backbone + head}
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert model(torch.zeros(2, 1, 300)).shape == (2, 1)
