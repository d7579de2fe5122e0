"""The prototype machinery: distances, losses, initialisation, projection, gallery."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ramanseg.models.prototypes import (
    DEFAULT_LOSS_WEIGHTS,
    PROJECTION_KEY,
    PrototypeLayer,
    RamanSegLoss,
    activation_overlap_loss,
    cluster_separation_costs,
    downsample_labels,
    high_activation_bbox,
    init_last_layer_,
    init_prototypes_from_latents_,
    kld_diversity_loss,
    l2_distance_map,
    last_layer_l1,
    log_similarity,
    project_prototypes,
    projection_metadata,
    prototype_gallery,
    soft_dice_loss,
    xavier_prototype_bound,
)
from ramanseg.models.ramanseg import RamanSeg

# ------------------------------------------------------------------------------------------
# Naive reference implementations (loops, float64), independent of the code under test.


def brute_force_distances(latent: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    k = prototypes.shape[-1]
    r = k // 2
    padded = F.pad(latent, (r, r, r, r))
    batch, _, height, width = latent.shape
    out = torch.empty(batch, prototypes.shape[0], height, width, dtype=latent.dtype)
    for b in range(batch):
        for j in range(prototypes.shape[0]):
            for y in range(height):
                for x in range(width):
                    window = padded[b, :, y : y + k, x : x + k]
                    out[b, j, y, x] = ((window - prototypes[j]) ** 2).sum()
    return out


def naive_overlap(similarities: torch.Tensor, prototype_class: list[int]) -> float:
    batch, _, height, width = similarities.shape
    flat = similarities.reshape(batch, len(prototype_class), -1).tolist()
    total = 0.0
    for cls in sorted(set(prototype_class)):
        members = [j for j, c in enumerate(prototype_class) if c == cls]
        pairs = [(i, j) for a, i in enumerate(members) for j in members[a + 1 :]]
        if not pairs:
            continue
        acc = 0.0
        for b in range(batch):
            for i, j in pairs:
                acc += sum(u * v for u, v in zip(flat[b][i], flat[b][j], strict=True))
        total += acc / (len(pairs) * batch * height * width)
    return total


def naive_kld(distances: torch.Tensor, target: torch.Tensor, prototype_class: list[int]) -> float:
    batch = distances.shape[0]
    flat = distances.reshape(batch, len(prototype_class), -1).tolist()
    labels = target.reshape(batch, -1).tolist()
    terms = []
    for b in range(batch):
        for cls in sorted(set(prototype_class)):
            members = [j for j, c in enumerate(prototype_class) if c == cls]
            where = [n for n, lab in enumerate(labels[b]) if lab == cls]
            if len(members) < 2 or len(where) < 2:
                continue
            dists = {}
            for j in members:
                values = [flat[b][j][n] for n in where]
                top = max(values)
                norm = sum(math.exp(v - top) for v in values)
                dists[j] = [math.exp(v - top) / norm for v in values]
            for a, i in enumerate(members):
                for j in members[a + 1 :]:
                    p, q = dists[i], dists[j]
                    kl_pq = sum(u * math.log(u / v) for u, v in zip(p, q, strict=True))
                    kl_qp = sum(v * math.log(v / u) for u, v in zip(p, q, strict=True))
                    terms.append(math.exp(-0.5 * (kl_pq + kl_qp)))
    return sum(terms) / len(terms) if terms else 0.0


def tiny_model(prototype_size: int = 1, **kwargs) -> RamanSeg:
    settings = dict(
        in_channels=3,
        prototypes_per_class=3,
        prototype_channels=6,
        prototype_size=prototype_size,
        addon_channels=8,
        dropout=0.2,
        stride=4,
        base_channels=4,
        max_channels=8,
    )
    settings.update(kwargs)
    return RamanSeg(**settings)


# ------------------------------------------------------------------------------------------
# Distances, similarities, initialisation.


@pytest.mark.parametrize("k", [1, 3])
def test_convolution_distance_equals_brute_force(k):
    generator = torch.Generator().manual_seed(k)
    latent = torch.rand(2, 5, 6, 7, generator=generator, dtype=torch.float64)
    prototypes = torch.randn(4, 5, k, k, generator=generator, dtype=torch.float64)
    # One prototype equal to a latent window: its distance there must be (clamped to) ~0.
    prototypes[0] = F.pad(latent, (k // 2,) * 4)[1, :, 2 : 2 + k, 3 : 3 + k]
    got = l2_distance_map(latent, prototypes)
    expected = brute_force_distances(latent, prototypes)
    assert got.shape == (2, 4, 6, 7)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert got[1, 0, 2, 3] <= 1e-12
    assert (got >= 0).all()


def test_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="depth"):
        l2_distance_map(torch.rand(1, 4, 5, 5), torch.rand(2, 3, 1, 1))
    with pytest.raises(ValueError, match="odd"):
        l2_distance_map(torch.rand(1, 4, 5, 5), torch.rand(2, 4, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        l2_distance_map(torch.rand(4, 5, 5), torch.rand(2, 4, 1, 1))


def test_log_similarity_is_protopnets():
    d = torch.tensor([0.0, 1e-3, 0.5, 3.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(log_similarity(d, 1e-4), torch.log((d + 1) / (d + 1e-4)))
    with pytest.raises(ValueError, match="epsilon"):
        log_similarity(d, 0.0)


def test_prototype_layer_distances_stay_float32_under_autocast():
    layer = PrototypeLayer(2, 2, 4, size=3)
    latent = torch.rand(1, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distances, similarities = layer(latent)
    assert distances.dtype == torch.float32 and similarities.dtype == torch.float32
    torch.testing.assert_close(distances, l2_distance_map(latent, layer.prototypes.detach()))


def test_xavier_bound_and_prototype_init():
    shape = (120, 64, 3, 3)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert (fan_in, fan_out) == (64 * 9, 120 * 9)
    assert xavier_prototype_bound(shape) == pytest.approx(math.sqrt(6 / (fan_in + fan_out)))
    assert xavier_prototype_bound((30, 64, 1, 1)) == pytest.approx(math.sqrt(6 / 94))
    torch.manual_seed(0)
    layer = PrototypeLayer(2, 60, 64, size=3)
    bound = xavier_prototype_bound(layer.prototypes.shape)
    values = layer.prototypes.detach()
    assert values.abs().max() <= bound
    assert values.abs().max() > 0.99 * bound  # uses the whole range, not a narrower one
    assert abs(float(values.mean())) < 0.01 * bound
    assert layer.prototype_class.tolist() == [0] * 60 + [1] * 60
    with pytest.raises(ValueError, match="four positive"):
        xavier_prototype_bound((3, 4, 1))


def test_prototype_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        PrototypeLayer(2, 3, 4, size=2)
    with pytest.raises(ValueError, match="num_classes"):
        PrototypeLayer(1, 3, 4)
    with pytest.raises(ValueError, match="prototypes_per_class"):
        PrototypeLayer(2, 0, 4)


def test_last_layer_init_and_l1():
    prototype_class = torch.tensor([0, 0, 1, 1, 1])
    weight = torch.empty(2, 5, 1, 1)
    init_last_layer_(weight, prototype_class)
    expected = torch.tensor([[1.0, 1.0, -0.5, -0.5, -0.5], [-0.5, -0.5, 1.0, 1.0, 1.0]])
    assert torch.equal(weight[:, :, 0, 0], expected)
    assert float(last_layer_l1(weight, prototype_class)) == pytest.approx(2.5)
    weight[0, 0] = 7.0  # an own-class connection: not penalised
    assert float(last_layer_l1(weight, prototype_class)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="does not map"):
        init_last_layer_(torch.empty(2, 4), prototype_class)


# ------------------------------------------------------------------------------------------
# Losses.


def test_activation_overlap_equals_naive_loops():
    generator = torch.Generator().manual_seed(1)
    similarities = torch.rand(3, 7, 4, 5, generator=generator, dtype=torch.float64)
    # Unsorted, unequal classes, and a class with a single prototype (no pairs).
    prototype_class = [1, 0, 2, 1, 0, 1, 0]
    got = activation_overlap_loss(similarities, torch.tensor(prototype_class))
    assert float(got) == pytest.approx(naive_overlap(similarities, prototype_class), rel=1e-12)


@pytest.mark.parametrize(
    "prototype_class",
    [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], [1, 0, 1, 2]],
    ids=["unequal-classes", "equal-classes", "unsorted-with-single"],
)
def test_activation_overlap_gradient(prototype_class):
    generator = torch.Generator().manual_seed(2)
    similarities = torch.rand(2, len(prototype_class), 3, 3, generator=generator)
    similarities = similarities.double().requires_grad_()
    classes = torch.tensor(prototype_class)
    assert torch.autograd.gradcheck(lambda s: activation_overlap_loss(s, classes), (similarities,))


def test_activation_overlap_gradient_in_float32_matches_autograd():
    # The hand-written backward against autograd on the plain pairwise formula.
    generator = torch.Generator().manual_seed(3)
    similarities = torch.rand(4, 10, 8, 8, generator=generator, requires_grad=True)
    prototype_class = torch.tensor([0] * 6 + [1] * 4)
    activation_overlap_loss(similarities, prototype_class).backward()
    reference = similarities.detach().clone().requires_grad_()
    flat = reference.reshape(4, 10, -1)
    expected = 0.0
    for members in (range(6), range(6, 10)):
        members = list(members)
        gram = torch.einsum("bin,bjn->ij", flat[:, members], flat[:, members])
        pairs = len(members) * (len(members) - 1) / 2
        expected = expected + torch.triu(gram, diagonal=1).sum() / (pairs * 4 * 64)
    expected.backward()
    torch.testing.assert_close(similarities.grad, reference.grad)


def test_activation_overlap_is_zero_for_disjoint_supports():
    # Each class's prototypes fire on disjoint sets of positions, while prototypes of
    # different classes overlap freely. In float32 the two sums of the loss hold the same
    # squares added in different orders, so "zero" is zero up to rounding: far below the
    # loss of a single shared position.
    generator = torch.Generator().manual_seed(4)
    similarities = torch.zeros(2, 6, 4, 4)
    for j in range(3):  # class 0: rows 0, 1, 2; class 1: columns 0, 1, 2
        similarities[:, j, j, :] = torch.rand(2, 4, generator=generator) + 0.5
        similarities[:, 3 + j, :, j] = torch.rand(2, 4, generator=generator) + 0.5
    prototype_class = torch.tensor([0, 0, 0, 1, 1, 1])
    disjoint = float(activation_overlap_loss(similarities, prototype_class))
    similarities[:, 1, 0, 0] = 1.0  # prototypes 0 and 1 now share a position
    shared = float(activation_overlap_loss(similarities, prototype_class))
    assert shared > 0.0
    assert abs(disjoint) < 1e-5 * shared


def test_activation_overlap_single_prototype_per_class_is_zero():
    similarities = torch.rand(2, 2, 3, 3, requires_grad=True)
    loss = activation_overlap_loss(similarities, torch.tensor([0, 1]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(similarities.grad, torch.zeros_like(similarities))


def kld_case() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(3)
    distances = 3.0 * torch.rand(3, 6, 4, 4, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 2, (3, 4, 4), generator=generator)
    target[1] = 0  # image 1 has no class-1 position
    target[2] = 255  # image 2: ignored, except one class-0 and one class-1 position
    target[2, 0, 0], target[2, 1, 1] = 0, 1
    return distances, target, [0, 1, 0, 1, 0, 1]


def test_kld_equals_naive_loops():
    distances, target, prototype_class = kld_case()
    got = kld_diversity_loss(distances, target, torch.tensor(prototype_class))
    assert float(got) == pytest.approx(naive_kld(distances, target, prototype_class), rel=1e-12)


def test_kld_gradient_is_finite():
    distances, target, prototype_class = kld_case()
    distances.requires_grad_()
    kld_diversity_loss(distances, target, torch.tensor(prototype_class)).backward()
    assert torch.isfinite(distances.grad).all()


def test_kld_extremes():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    prototype_class = torch.tensor([0, 0, 1, 1])
    # Identical distance maps: identical distributions, the maximum penalty exp(0) = 1.
    same = torch.rand(1, 1, 4, 4).repeat(1, 4, 1, 1)
    assert float(kld_diversity_loss(same, target, prototype_class)) == pytest.approx(1.0)
    # Prototypes peaked on different positions: the penalty vanishes.
    apart = torch.zeros(1, 4, 4, 4)
    apart[0, 0, 0, 0] = apart[0, 1, 3, 3] = 50.0
    assert float(kld_diversity_loss(apart, target, prototype_class)) < 1e-12
    # One prototype per class, or no position of any class: nothing to compare.
    assert float(kld_diversity_loss(same[:, :2], target, torch.tensor([0, 1]))) == 0.0
    assert float(kld_diversity_loss(same, torch.full((1, 4, 4), 9), prototype_class)) == 0.0


def test_downsample_labels_majority_vote():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :4, :3] = 1  # top-left 4 x 4 block: 12 of 16 pixels foreground
    labels[0, 4:, 4:6] = 1  # bottom-right block: exactly half -> background (tie)
    labels[0, :4, 4:] = 5  # top-right block: ignored
    got = downsample_labels(labels, (2, 2), num_classes=2, ignore_index=5)
    assert got.tolist() == [[[1, 5], [0, 0]]]
    assert (
        downsample_labels(labels.clamp(max=1), (8, 8), 2).tolist() == labels.clamp(max=1).tolist()
    )
    with pytest.raises(ValueError, match="label value 5"):
        downsample_labels(labels, (2, 2), num_classes=2)


def test_soft_dice():
    target = torch.tensor([[[0, 1], [1, 1]]])
    perfect = 100.0 * F.one_hot(target, 2).permute(0, 3, 1, 2).double()
    assert float(soft_dice_loss(perfect, target, smooth=1e-6)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    p = logits.softmax(1)[0, 1]
    g = target[0].double()
    expected = 1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(float(expected))


def test_ramanseg_loss_combines_weighted_terms():
    torch.manual_seed(0)
    model = tiny_model().eval().requires_grad_(False)
    output = model(torch.rand(2, 3, 16, 16))
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, :, 8:] = 1
    weights = {"cross_entropy": 1.0, "dice": 0.5, "diversity": 0.25, "l1": 1e-2}
    terms = RamanSegLoss(weights)(output, target, model)
    small = downsample_labels(target, (4, 4), 2)
    assert float(terms.cross_entropy) == pytest.approx(
        float(F.cross_entropy(output.latent_logits, small))
    )
    assert float(terms.dice) == pytest.approx(float(soft_dice_loss(output.latent_logits, small)))
    assert float(terms.diversity) == pytest.approx(
        float(activation_overlap_loss(output.similarities, model.prototype_class))
    )
    assert float(terms.l1) == pytest.approx(0.5 * 6)  # six wrong-class weights of -0.5
    expected = sum(weights[name] * float(getattr(terms, name)) for name in weights)
    assert float(terms.total) == pytest.approx(expected)
    kld = RamanSegLoss({"cross_entropy": 0.0, "diversity": 1.0}, diversity_loss="kld")
    terms = kld(output, target, model)
    assert terms.cross_entropy is None and terms.dice is None and terms.l1 is None
    assert float(terms.total) == pytest.approx(
        float(kld_diversity_loss(output.distances, small, model.prototype_class))
    )
    assert set(terms.as_floats()) == {"total", "diversity"}


def test_ramanseg_loss_from_config_and_errors(demo_config):
    entry = demo_config["models"]["ramanseg_noproj"]
    loss = RamanSegLoss.from_config(entry)
    assert loss.weights == {
        "cross_entropy": 1.0,
        "dice": 1.0,
        "diversity": 0.01,
        "l1": 1e-4,
        "cluster": 0.0,
        "separation": 0.0,
    }
    assert loss.diversity_loss == "activation_overlap"
    with pytest.raises(ValueError, match="unknown loss weight 'clst'"):
        RamanSegLoss({"clst": 0.8})
    with pytest.raises(ValueError, match=">= 0"):
        RamanSegLoss({"l1": -1.0})
    with pytest.raises(ValueError, match="diversity_loss"):
        RamanSegLoss(diversity_loss="jeffreys")


# ------------------------------------------------------------------------------------------
# Projection and gallery.


def projection_set(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    generator = torch.Generator().manual_seed(seed)
    images, masks = [], []
    for size in ((16, 16), (20, 24), (16, 20)):
        images.append(torch.rand(3, *size, generator=generator))
        mask = torch.zeros(size, dtype=torch.long)
        mask[size[0] // 2 :, : size[1] // 2] = 1
        masks.append(mask)
    return images, masks, ["s0", "s1", "s2"]


@pytest.mark.parametrize("k", [1, 3])
def test_projection_puts_each_prototype_on_a_latent_patch_of_its_class(k):
    torch.manual_seed(0)
    model = tiny_model(prototype_size=k)
    images, masks, ids = projection_set()
    old = model.prototype_layer.prototypes.detach().clone()
    records = project_prototypes(model, iter(images), iter(masks), ids)
    new = model.prototype_layer.prototypes.detach()
    assert [r.prototype for r in records] == list(range(6))
    r = k // 2
    for record in records:
        image, mask = images[record.sample_index], masks[record.sample_index]
        assert record.sample_id == ids[record.sample_index]
        with torch.no_grad():
            latent = model.eval().latent(image[None])
        h, w = latent.shape[2:]
        assert record.latent_size == (h, w) and record.image_size == tuple(image.shape[1:])
        y, x = record.latent_y, record.latent_x
        assert r <= y < h - r and r <= x < w - r  # inside: no padding in the prototype
        patch = latent[0, :, y - r : y + r + 1, x - r : x + r + 1]
        assert torch.equal(new[record.prototype], patch)
        assert record.prototype_class == int(model.prototype_class[record.prototype])
        labels = downsample_labels(mask[None], (h, w), 2)[0]
        assert int(labels[y, x]) == record.prototype_class
        # The chosen patch is the nearest own-class window over all images.
        best = math.inf
        for other_image, other_mask in zip(images, masks, strict=True):
            with torch.no_grad():
                z = model.latent(other_image[None])
            d = l2_distance_map(z, old[record.prototype][None])[0, 0]
            lab = downsample_labels(other_mask[None], tuple(z.shape[2:]), 2)[0]
            ok = lab == record.prototype_class
            inside = torch.zeros_like(ok)
            inside[r : ok.shape[0] - r, r : ok.shape[1] - r] = True
            best = min(best, float(d[ok & inside].min()))
        assert record.distance == pytest.approx(best, rel=1e-5)
        y0, y1, x0, x1 = record.bbox
        assert 0 <= y0 <= record.image_y < y1 <= image.shape[1]
        assert 0 <= x0 <= record.image_x < x1 <= image.shape[2]
    json.dumps([record.to_dict() for record in records])


def test_projection_with_border_windows_and_float64():
    torch.manual_seed(1)
    model = tiny_model(prototype_size=3).double()
    images, masks, ids = projection_set()
    images = [image.double().numpy() for image in images]  # arrays are accepted too
    records = project_prototypes(model, images, masks, ids, include_border=True)
    for record in records:
        with torch.no_grad():
            latent = model.latent(torch.from_numpy(images[record.sample_index])[None])
        padded = F.pad(latent, (1, 1, 1, 1))
        y, x = record.latent_y, record.latent_x
        patch = padded[0, :, y : y + 3, x : x + 3]
        assert torch.equal(model.prototype_layer.prototypes[record.prototype].detach(), patch)


def test_projection_errors():
    model = tiny_model()
    images, masks, ids = projection_set()
    with pytest.raises(ValueError, match="class"):
        project_prototypes(model, images, [torch.zeros_like(m) for m in masks], ids)
    with pytest.raises(ValueError, match="sample 's1'"):
        project_prototypes(model, images, [masks[0], masks[0], masks[2]], ids)
    with pytest.raises(ValueError, match="sample ids"):
        project_prototypes(model, images, masks, ids[:2])
    before = model.prototype_layer.prototypes.detach().clone()
    with pytest.raises(ValueError, match="percentile"):
        project_prototypes(model, images, masks, ids, percentile=120.0)
    assert torch.equal(model.prototype_layer.prototypes, before)


def test_high_activation_bbox_protopnet_boxes_every_high_pixel_peak_component_one():
    activation = np.zeros((20, 20))
    activation[2:5, 3:7] = 5.0
    activation[3, 4] = 6.0  # the maximum
    activation[15:18, 15:19] = 4.0  # another high region, not connected
    # ProtoPNet's region: the box around every pixel at or above the percentile.
    assert high_activation_bbox(activation, percentile=95) == (2, 18, 3, 19)
    assert high_activation_bbox(activation, 95, "peak_component") == (2, 5, 3, 7)
    # A low threshold admits the zeros: one component, the whole map.
    assert high_activation_bbox(activation, 50, "peak_component") == (0, 20, 0, 20)
    with pytest.raises(ValueError, match="percentile"):
        high_activation_bbox(activation, percentile=101)
    with pytest.raises(ValueError, match="region"):
        high_activation_bbox(activation, region="crop")


def collapsed_model(k: int = 1) -> RamanSeg:
    """A tiny model whose prototypes of each class are one and the same vector."""
    torch.manual_seed(0)
    model = tiny_model(prototype_size=k)
    with torch.no_grad():
        prototypes = model.prototype_layer.prototypes
        classes = model.prototype_layer.prototype_class
        for c in classes.unique():
            members = torch.nonzero(classes == c).flatten()
            prototypes[members] = prototypes[members[0]].clone()
    return model


def own_class_distances(model, prototype, images, masks, k=1):
    """Every own-class candidate window's squared distance to ``prototype`` (brute force)."""
    r = k // 2
    found = {}
    for index, (image, mask) in enumerate(zip(images, masks, strict=True)):
        with torch.no_grad():
            z = model.eval().latent(image[None])
        d = l2_distance_map(z, prototype[None])[0, 0]
        labels = downsample_labels(mask[None], tuple(z.shape[2:]), 2)
        truth = labels[0]
        for y in range(r, z.shape[2] - r):
            for x in range(r, z.shape[3] - r):
                found[(index, y, x)] = (int(truth[y, x]), float(d[y, x]))
    return found


@pytest.mark.parametrize("k", [1, 3])
def test_paper_assignment_gives_collapsed_prototypes_one_and_the_same_patch(k):
    model = collapsed_model(k)
    images, masks, ids = projection_set()
    records = project_prototypes(model, images, masks, ids, assignment="paper")
    for c in (0, 1):
        sources = {r.source for r in records if r.prototype_class == c}
        assert len(sources) == 1  # the paper: each prototype takes its own nearest patch


@pytest.mark.parametrize("k", [1, 3])
def test_distinct_assignment_gives_every_prototype_its_own_patch_with_least_total(k):
    model = collapsed_model(k)
    old = model.prototype_layer.prototypes.detach().clone()
    images, masks, ids = projection_set()
    records = project_prototypes(model, images, masks, ids, assignment="distinct")
    new = model.prototype_layer.prototypes.detach()
    for c in (0, 1):
        members = [r for r in records if r.prototype_class == c]
        assert len({r.source for r in members}) == len(members)  # no two share a patch
        # Identical prototypes: the optimum is the class's len(members) nearest patches.
        found = own_class_distances(model, old[members[0].prototype], images, masks, k)
        nearest = sorted(d for cls, d in found.values() if cls == c)[: len(members)]
        assert sum(r.distance for r in members) == pytest.approx(sum(nearest), rel=1e-4)
        for r in members:
            assert found[(r.sample_index, r.latent_y, r.latent_x)][0] == c
            assert r.distance == pytest.approx(
                float((new[r.prototype] - old[r.prototype]).pow(2).sum()), rel=1e-5
            )


def test_distinct_assignment_is_optimal_for_different_prototypes():
    """Against brute force over every injective assignment of the candidate patches."""
    import itertools

    torch.manual_seed(3)
    model = tiny_model()
    images, masks, ids = projection_set()
    old = model.prototype_layer.prototypes.detach().clone()
    with torch.no_grad():  # make the class-1 prototypes near-collapsed: they compete
        old[4:] = old[3] + 1e-3 * torch.randn_like(old[4:])
        model.prototype_layer.prototypes.copy_(old)
    records = project_prototypes(model, images, masks, ids, assignment="distinct")
    members = [r for r in records if r.prototype_class == 1]
    tables = [own_class_distances(model, old[r.prototype], images, masks) for r in members]
    keys = [key for key, (cls, _) in tables[0].items() if cls == 1]
    # Each prototype's 3 nearest patches suffice (see _distinct_assignment).
    pools = set()
    for table in tables:
        pools.update(sorted(keys, key=lambda key: table[key][1])[:3])
    best = min(
        sum(table[key][1] for table, key in zip(tables, chosen, strict=True))
        for chosen in itertools.permutations(sorted(pools), len(members))
    )
    assert sum(r.distance for r in members) == pytest.approx(best, rel=1e-4)


def test_region_window_draws_the_box_on_the_training_patch_around_the_source():
    torch.manual_seed(0)
    model = tiny_model()
    images, masks, ids = projection_set()

    def project(window):
        return project_prototypes(
            copy.deepcopy(model), images, masks, ids, assignment="distinct", region_window=window
        )

    whole, windowed, larger = project(None), project(8), project(64)
    for full, local in zip(whole, windowed, strict=True):
        assert (full.sample_id, full.latent_y, full.latent_x) == (
            local.sample_id,
            local.latent_y,
            local.latent_x,
        )
        height, width = local.image_size
        top = min(max(0, local.image_y - 4), height - 8)
        left = min(max(0, local.image_x - 4), width - 8)
        y0, y1, x0, x1 = local.bbox
        assert top <= y0 < y1 <= top + 8 and left <= x0 < x1 <= left + 8
        region = masks[local.sample_index][y0:y1, x0:x1]
        assert local.purity == pytest.approx(
            float((region == local.prototype_class).float().mean())
        )
    # A window at least as large as the image is the whole image.
    assert [r.bbox for r in larger] == [r.bbox for r in whole]
    with pytest.raises(ValueError, match="region_window"):
        project(0)


def test_projection_records_purity_of_the_source_region():
    torch.manual_seed(0)
    model = tiny_model()
    images, masks, ids = projection_set()
    records = project_prototypes(model, images, masks, ids, assignment="distinct")
    for r in records:
        y0, y1, x0, x1 = r.bbox
        region = masks[r.sample_index][y0:y1, x0:x1]
        assert r.purity == pytest.approx(float((region == r.prototype_class).float().mean()))
    with pytest.raises(ValueError, match="assignment"):
        project_prototypes(model, images, masks, ids, assignment="greedy")


def test_records_json_and_gallery(tmp_path):
    torch.manual_seed(0)
    model = tiny_model()
    images, masks, ids = projection_set()
    records = project_prototypes(model, images, masks, ids)
    loaded = projection_metadata(records)[PROJECTION_KEY]["prototypes"]
    assert loaded[0] == records[0].to_dict() and len(loaded) == 6
    out = tmp_path / "gallery.png"

    def render() -> bytes:
        prototype_gallery(
            records,
            dict(zip(ids, images, strict=True)),
            out,
            channel=1,
            channel_name="Raman 2846",
            class_names=["background", "tumour"],
            columns=3,
        )
        return out.read_bytes()

    first = render()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in first  # no matplotlib version: byte-identical across installs
    assert render() == first
    with pytest.raises(ValueError, match="channel 7"):
        prototype_gallery(records, dict(zip(ids, images, strict=True)), out, channel=7)


# ------------------------------------------------------------------------------------------
# Initialisation from latent windows and ProtoPNet's cluster / separation costs.


@pytest.mark.parametrize("k", [1, 3])
def test_init_from_latents_puts_prototypes_on_distinct_windows_of_their_class(k):
    model = tiny_model(prototype_size=k)
    images, masks, _ = projection_set()
    first = init_prototypes_from_latents_(model, images, masks, torch.Generator().manual_seed(5))
    prototypes = model.prototype_layer.prototypes.detach().clone()
    r = k // 2
    for j, (index, y, x) in enumerate(first):
        with torch.no_grad():
            latent = model.eval().latent(images[index][None])
        h, w = latent.shape[2:]
        assert r <= y < h - r and r <= x < w - r
        assert torch.equal(prototypes[j], latent[0, :, y - r : y + r + 1, x - r : x + r + 1])
        label = downsample_labels(masks[index][None], (h, w), 2)[0, y, x]
        assert int(label) == int(model.prototype_class[j])
    assert len(set(first)) == len(first)  # pairwise different windows
    again = init_prototypes_from_latents_(model, images, masks, torch.Generator().manual_seed(5))
    assert again == first  # the seed decides


def test_cluster_and_separation_costs_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    distances = torch.rand(2, 4, 3, 5, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 3, 5), generator=generator)
    target[0, 0, 0] = 7  # no prototype's class: left out
    classes = torch.tensor([0, 0, 1, 1])
    own, other = [], []
    for b in range(2):
        for y in range(3):
            for x in range(5):
                c = int(target[b, y, x])
                if c not in (0, 1):
                    continue
                own.append(min(float(distances[b, j, y, x]) for j in range(4) if classes[j] == c))
                other.append(min(float(distances[b, j, y, x]) for j in range(4) if classes[j] != c))
    cluster, separation = cluster_separation_costs(distances, target, classes)
    assert float(cluster) == pytest.approx(np.mean(own))
    assert float(separation) == pytest.approx(np.mean(other))
    # In the objective: + w_clst Clst - w_sep Sep.
    loss = RamanSegLoss({"cross_entropy": 0.0, "cluster": 0.8, "separation": 0.08})
    assert set(DEFAULT_LOSS_WEIGHTS) >= {"cluster", "separation"}
    model = tiny_model()
    images, masks, _ = projection_set()
    output = model(images[0][None])
    terms = loss(output, masks[0][None], model)
    values = terms.as_floats()
    assert values["total"] == pytest.approx(
        0.8 * values["cluster"] - 0.08 * values["separation"], rel=1e-6
    )
