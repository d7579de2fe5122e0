"""RamanSeg prototype analyses: class proportions, k-means inertia and the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.interpret.prototypes import (
    class_proportions,
    kmeans_inertia,
    prototype_summary,
    read_prototype_vectors,
    run_caption_files,
)
from ramanseg.models.folder import write_metadata
from ramanseg.models.prototypes import (
    PrototypeRecord,
    projection_metadata,
    read_projection,
)
from tests.interpret import register_commands

NAMES = ["Tumor", "Necrosis", "Epithelium", "Stroma", "Other"]


def record(prototype, prototype_class, sample, bbox, size=(8, 8), where=None):
    """A record; its source patch is its own (latent y = prototype) unless ``where`` given."""
    latent_y, latent_x = where if where is not None else (prototype, 0)
    return PrototypeRecord(
        prototype=prototype,
        prototype_class=prototype_class,
        sample_id=sample,
        sample_index=0,
        latent_y=latent_y,
        latent_x=latent_x,
        image_y=bbox[0],
        image_x=bbox[2],
        distance=0.0,
        bbox=bbox,
        patch_box=bbox,
        image_size=size,
        latent_size=(8, 8),
    )


def class_map() -> np.ndarray:
    """8 x 8: rows 0-3 Tumor (1), rows 4-5 Epithelium (3), rows 6-7 unannotated; column 7
    of rows 0-3 Stroma (4)."""
    classes = np.zeros((8, 8), np.uint8)
    classes[:4] = 1
    classes[:4, 7] = 4
    classes[4:6] = 3
    return classes


def test_class_proportions_are_exact_fractions_grouped_by_prototype_class():
    records = [
        record(0, 1, "S", (0, 4, 4, 8)),  # 4 x 4: 12 Tumor, 4 Stroma
        record(1, 0, "S", (2, 6, 0, 2)),  # 4 x 2: 4 Tumor, 4 Epithelium
        record(2, 0, "S", (4, 8, 0, 4)),  # 4 x 4: 8 Epithelium, 8 unannotated
    ]
    table = class_proportions(records, {"S": class_map()}, NAMES)
    assert table["prototype"].tolist() == [1, 2, 0]  # non-tumour prototypes first
    assert table["prototype_class_name"].tolist() == ["non-tumour", "non-tumour", "tumour"]
    by = table.set_index("prototype")
    assert by.loc[0, ["Tumor", "Stroma", "Epithelium", "unannotated"]].tolist() == [
        0.75,
        0.25,
        0.0,
        0.0,
    ]
    assert by.loc[1, ["Tumor", "Epithelium"]].tolist() == [0.5, 0.5]
    assert by.loc[2, ["Epithelium", "unannotated"]].tolist() == [0.5, 0.5]
    assert by.loc[[0, 1, 2], "pixels"].tolist() == [16, 8, 16]
    np.testing.assert_allclose(table[[*NAMES, "unannotated"]].sum(axis=1), 1.0)


def test_class_proportions_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        class_proportions([record(0, 0, "S", (0, 2, 0, 2), size=(9, 9))], {"S": class_map()}, NAMES)
    with pytest.raises(ValueError, match="outside"):
        class_proportions([record(0, 0, "S", (0, 9, 0, 2))], {"S": class_map()}, NAMES)
    with pytest.raises(ValueError, match="no class map"):
        class_proportions([record(0, 0, "T", (0, 2, 0, 2))], {"S": class_map()}, NAMES)


def test_kmeans_inertia_decreases_to_zero_for_distinct_vectors():
    vectors = np.random.default_rng(0).normal(size=(7, 4, 1, 1))
    table = kmeans_inertia(vectors, seed=0, n_init=4)
    assert table["k"].tolist() == list(range(1, 8))
    assert set(table["distinct"]) == {7} and set(table["prototypes"]) == {7}
    inertia = table["inertia"].to_numpy()
    centred = vectors.reshape(7, -1) - vectors.reshape(7, -1).mean(axis=0)
    assert inertia[0] == pytest.approx((centred**2).sum())  # k = 1: the total scatter
    assert np.all(np.diff(inertia) <= 1e-9)
    assert inertia[-1] == pytest.approx(0.0, abs=1e-12)


def test_kmeans_inertia_of_duplicates_runs_on_the_distinct_vectors_only():
    """The issue's collapse: 30 prototypes, 10 distinct; no curve from duplicates."""
    rng = np.random.default_rng(1)
    distinct = rng.normal(size=(10, 16))
    vectors = distinct[rng.integers(0, 10, size=30)]
    vectors[:10] = distinct  # every distinct vector present
    table = kmeans_inertia(vectors, seed=0, n_init=2)
    assert table["k"].tolist() == list(range(1, 11))  # k only up to the distinct count
    assert set(table["distinct"]) == {10} and set(table["prototypes"]) == {30}
    inertia = table["inertia"].to_numpy()
    assert np.all(np.diff(inertia) <= 0) and inertia[-1] == pytest.approx(0.0, abs=1e-9)
    # The same curve as k-means on the 10 distinct vectors alone.
    alone = kmeans_inertia(distinct, seed=0, n_init=2)["inertia"].to_numpy()
    np.testing.assert_allclose(inertia, alone)


def test_kmeans_inertia_repairs_an_increase(monkeypatch):
    """A k whose k-means restarts end worse than k - 1 is refitted and flagged."""
    import sklearn.cluster

    real = sklearn.cluster.KMeans

    class Unlucky(real):  # the k = 3 restarts all land in a poor local optimum
        def fit(self, data, *args, **kwargs):
            fitted = super().fit(data, *args, **kwargs)
            if self.n_clusters == 3 and not isinstance(self.init, np.ndarray):
                fitted.inertia_ = 1e6
            return fitted

    monkeypatch.setattr(sklearn.cluster, "KMeans", Unlucky)
    vectors = np.random.default_rng(2).normal(size=(5, 3))
    table = kmeans_inertia(vectors, seed=0, n_init=2)
    assert table["repaired"].tolist() == [False, False, True, False, False]
    assert np.all(np.diff(table["inertia"].to_numpy()) <= 0)


def write_projection_model(folder: Path, records) -> None:
    """A RamanSeg model folder's model.json with a projection record."""
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"model": "ramanseg", "architecture": {}, **projection_metadata(records)}
    write_metadata(folder / "model.json", metadata)


def test_reading_records_and_vectors(tmp_path):
    records = [record(0, 0, "S", (0, 2, 0, 2)), record(1, 1, "S", (2, 4, 2, 4))]
    write_projection_model(tmp_path / "model", records)
    assert read_projection(tmp_path / "model")[0] == records
    assert read_projection(tmp_path / "model" / "model.json")[0] == records
    torch.save({"prototype_layer.prototypes": torch.ones(2, 3, 1, 1)}, tmp_path / "model.pt")
    assert read_prototype_vectors(tmp_path / "model.pt").shape == (2, 3, 1, 1)
    torch.save({"readout.weight": torch.ones(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"prototype_layer\.prototypes"):
        read_prototype_vectors(tmp_path / "other.pt")
    with pytest.raises(InputError, match="train RamanSeg"):
        read_projection(tmp_path / "missing")
    write_metadata(tmp_path / "noproj" / "model.json", {"model": "unet", "architecture": {}})
    with pytest.raises(InputError, match="'unet' was trained without prototype projection"):
        read_projection(tmp_path / "noproj")
    write_projection_model(tmp_path / "empty", [])
    with pytest.raises(InputError, match="empty"):
        read_projection(tmp_path / "empty")


def test_interpret_prototypes_command(tmp_path, monkeypatch, demo_config):
    register_commands(monkeypatch, "ramanseg.interpret")
    model_dir, preprocessed = tmp_path / "model", tmp_path / "preprocessed"
    records = [
        record(0, 0, "S", (4, 8, 0, 4)),
        record(1, 0, "S", (2, 6, 0, 2)),
        record(2, 1, "S", (0, 4, 4, 8)),
        record(3, 1, "S", (0, 2, 0, 2)),
    ]
    write_projection_model(model_dir, records)
    prototypes = torch.arange(4 * 3, dtype=torch.float32).view(4, 3, 1, 1)
    torch.save({"prototype_layer.prototypes": prototypes}, model_dir / "model.pt")
    (preprocessed / "S").mkdir(parents=True)
    tifffile.imwrite(preprocessed / "S" / "classes.tif", class_map())
    rng = np.random.default_rng(0)
    channels = len(demo_config["channels"])
    tifffile.imwrite(
        preprocessed / "S" / "stack.ome.tif", rng.random((channels, 8, 8), dtype=np.float32)
    )
    settings = {key: demo_config[key] for key in ("seed", "channels", "annotations")}
    settings["interpret"] = {"kmeans_n_init": 2}
    outdir = tmp_path / "out"
    argv = [
        "interpret-prototypes",
        "--model-dir",
        str(model_dir),
        "--stacks",
        str(preprocessed / "S" / "stack.ome.tif"),
        "--classes",
        str(preprocessed / "S" / "classes.tif"),
        "--outdir",
        str(outdir),
        "--settings",
        json.dumps(settings),
    ]
    assert main(argv) == 0
    proportions = pd.read_csv(outdir / "class_proportions.csv")
    assert proportions["prototype"].tolist() == [0, 1, 2, 3]
    assert proportions.loc[2, "Tumor"] == 0.75 and proportions.loc[3, "Tumor"] == 1.0
    # Purity: the classes mapped to the prototype's label (Tumor, Necrosis: 1; unannotated: 0).
    assert proportions["purity"].tolist() == [1.0, 0.5, 0.75, 1.0]
    summary = pd.read_csv(outdir / "prototype_summary.csv")
    assert summary["distinct_patches"].tolist() == [2, 2]
    assert summary["mean_purity"].tolist() == [0.75, 0.875]
    assert not summary["collapsed"].any()
    inertia = pd.read_csv(outdir / "kmeans_inertia.csv")
    assert inertia["k"].tolist() == [1, 2, 3, 4] and inertia["inertia"].iloc[-1] == 0.0
    first = {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}
    assert sorted(first) == [
        "class_proportions.csv",
        "class_proportions.pdf",
        "class_proportions.png",
        "kmeans_inertia.csv",
        "kmeans_inertia.pdf",
        "kmeans_inertia.png",
        "prototype_gallery.png",
        "prototype_summary.csv",
    ]
    assert main(argv) == 0
    assert {p.name: p.read_bytes() for p in sorted(outdir.iterdir())} == first


def test_report_captions_start_with_what_the_run_measured(tmp_path):
    template = tmp_path / "kmeans_inertia.rst"
    template.write_text("The k-means inertia of {{ snakemake.config['seed'] }}.\n")
    distinct = [record(p, p // 2, "S", (0, 4, 0, 4)) for p in range(4)]
    collapsed = [record(p, p // 2, "S", (0, 4, 0, 4), where=(p // 2, 0)) for p in range(4)]
    vectors = np.arange(4 * 3, dtype=np.float64).reshape(4, 3)
    texts = {}
    for name, records in (("distinct", distinct), ("collapsed", collapsed)):
        proportions = class_proportions(records, {"S": class_map()}, NAMES, {"Tumor": 1})
        summary = prototype_summary(proportions, vectors)
        files = run_caption_files([template], tmp_path / name, summary)
        assert list(files) == [tmp_path / name / "kmeans_inertia.rst"]
        texts[name] = files[tmp_path / name / "kmeans_inertia.rst"].decode()
        # The template follows unchanged (its Jinja is the report's to render).
        assert texts[name].endswith("\n\nThe k-means inertia of {{ snakemake.config['seed'] }}.\n")
    assert texts["distinct"].startswith("**This run:** ")
    assert "2 distinct source patches of 2 prototypes" in texts["distinct"]
    assert texts["collapsed"].startswith("**PROTOTYPE COLLAPSE (")
    assert "1 distinct source patches of 2 prototypes" in texts["collapsed"]
    with pytest.raises(InputError, match="caption template does not exist"):
        run_caption_files([tmp_path / "missing.rst"], tmp_path / "out", summary)


def test_file_names_match_ramanseg_training():
    from ramanseg.interpret import prototypes
    from ramanseg.models import ramanseg_training

    assert prototypes.PROTOTYPES_KEY == ramanseg_training.PROTOTYPES_KEY


def test_interpret_prototypes_warns_loudly_of_a_collapsed_model(tmp_path, monkeypatch, caplog):
    """Prototypes projected onto one patch: log warning, summary, and the figure titles."""
    from ramanseg.interpret import prototypes as module

    records = [
        record(0, 0, "S", (4, 8, 0, 4), where=(5, 1)),
        record(1, 0, "S", (2, 6, 0, 2), where=(3, 0)),
        record(2, 1, "S", (0, 4, 4, 8), where=(1, 6)),
        record(3, 1, "S", (0, 4, 4, 8), where=(1, 6)),  # the same patch as 2
    ]
    vectors = np.arange(4 * 3, dtype=float).reshape(4, 3, 1, 1)
    vectors[3] = vectors[2]
    table = class_proportions(records, {"S": class_map()}, NAMES, {"Tumor": 1, "Stroma": 0})
    assert table.set_index("prototype").loc[[2, 3], "shared_by"].tolist() == [2, 2]
    summary = module.prototype_summary(table, vectors)
    assert summary["collapsed"].tolist() == [False, True]
    warning = module.collapse_warning(summary)
    assert warning == "PROTOTYPE COLLAPSE (tumour: 1 distinct of 2)"
    titles = []
    monkeypatch.setattr(module, "_title", lambda figure, title, warn: titles.append((title, warn)))
    module.proportions_figure(table, NAMES, summary)
    assert titles[-1][1] == warning
    figure = module.inertia_figure(module.kmeans_inertia(vectors, 0, 2), 0, 2, warning)
    assert figure._suptitle.get_text().replace("\n", " ") == warning
    assert "3 distinct of 4" in figure.axes[0].get_title()
