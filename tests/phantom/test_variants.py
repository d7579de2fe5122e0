"""The input contract's variants in the phantom: each is really in what it writes, the
pipeline's readers read them as the truth, and the default output is unchanged."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from ramanseg import phantom
from ramanseg.annotations import rasterize_annotations, read_qupath_geojson
from ramanseg.config import ConfigError, class_names, load_config_files
from ramanseg.io import read_he, read_srs
from ramanseg.phantom.design import VARIANTS, sample_variants, variant_count
from tests.conftest import DEMO_CONFIG, REPO
from tests.phantom.conftest import features_of, file_hashes, rasterise, typed

VARIANTS_CONFIG = REPO / "config" / "variants.yaml"

#: Content digests (pixels, truth maps, annotation JSON) of the tiny default dataset,
#: computed with the phantom before it could write variants: the default must not move.
DEFAULT_DIGESTS = [
    "785936874701c417280bb4eb5dbb49531806a5d811ce086c33b1fda6af7b4388",
    "0d47fe8dcffc1c4d41d1f9b593905479450601408a62cf2ec9445af7071f6c70",
    "480e896b5fbf61449ab7915e70aaa79ec9bd515a6d281cbb3598f035abc3e387",
    "76995a9deebab981cf3d3badad905dd4cdf5678dd2a5fa23068c117d28e53002",
]


@pytest.fixture(scope="module")
def variants() -> dict:
    """config/variants.yaml over the demo, at the tiny size: 6 samples, 48 x 64 px."""
    config = load_config_files([DEMO_CONFIG, VARIANTS_CONFIG])
    config["phantom"].update(patients=3, samples=6, height=48, width=64, seed=3)
    return config


@pytest.fixture(scope="module")
def written(variants, tmp_path_factory) -> tuple[Path, pd.DataFrame, list]:
    """The variant dataset, its sample sheet and the truth of each sample."""
    outdir = tmp_path_factory.mktemp("variants") / "data"
    phantom.write_phantom(typed(variants), outdir, threads=2)
    sheet = pd.read_csv(outdir / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    truth = [phantom.generate_sample(typed(variants), i) for i in range(len(sheet))]
    return outdir, sheet, truth


def _digest(sample: phantom.PhantomSample) -> str:
    digest = hashlib.sha256()
    for array in (sample.srs, sample.he, sample.tissue, sample.class_map):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps(sample.annotations, sort_keys=True).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------- default


def test_the_default_output_is_unchanged(tiny):
    assert all(value == 0 for value in tiny["phantom"]["variants"].values())
    assert [_digest(phantom.generate_sample(typed(tiny), i)) for i in range(4)] == DEFAULT_DIGESTS


def test_variants_all_zero_write_the_same_bytes_as_no_variants_key(tiny, dataset, tmp_path):
    config = copy.deepcopy(tiny)
    del config["phantom"]["variants"]
    phantom.write_phantom(typed(config), tmp_path / "data")
    assert file_hashes(tmp_path / "data") == file_hashes(dataset)


# ------------------------------------------------------------------------- each variant


def test_variant_counts_round_up_to_whole_samples():
    assert [variant_count(f, 6) for f in (0.0, 0.01, 0.25, 0.5, 1.0)] == [0, 1, 2, 3, 6]
    assert variant_count(0.1, 30) == 3  # not 4 from 0.1 x 30 = 3.0000000000000004


def test_every_variant_falls_on_some_samples_and_they_mix(variants):
    chosen = sample_variants(typed(variants))
    assert sum(not v.he for v in chosen) == 2  # 0.25 of 6, rounded up
    assert [v.srs_format for v in chosen].count("plain_tiff") == 2
    assert [v.srs_format for v in chosen].count("channels_last") == 2
    assert sum(v.transposed for v in chosen) == sum(v.immune_cells for v in chosen) == 3
    assert sum(v.unclassified for v in chosen) == 3
    # Some sample takes several variants at once.
    assert (
        max(
            (not v.he) + (v.srs_format != "ome") + v.transposed + v.immune_cells + v.unclassified
            for v in chosen
        )
        >= 3
    )


def test_samples_without_he_have_an_empty_he_column_and_no_file(variants, written):
    outdir, sheet, truth = written
    without = [s.sample_id for s in truth if not s.variant.he]
    assert len(without) == 2
    assert list(sheet.loc[sheet["he"] == "", "sample_id"]) == without
    assert {p.stem for p in (outdir / "he").iterdir()} == {
        s.sample_id for s in truth if s.variant.he
    }
    # The workflow plans the same sheet before the data exist.
    planned = phantom.phantom_samplesheet(variants, outdir)
    assert list(planned.loc[planned["he"] == "", "sample_id"]) == without
    for column in ("srs", "he", "annotations"):
        expected = [str(outdir / p) if p else "" for p in sheet[column]]
        assert list(planned[column]) == expected


def test_plain_tiff_is_a_multi_page_uint16_tiff_without_metadata(written):
    outdir, sheet, truth = written
    plain = [s for s in truth if s.variant.srs_format == "plain_tiff"]
    assert len(plain) == 2
    for sample in plain:
        path = outdir / sheet.set_index("sample_id").loc[sample.sample_id, "srs"]
        assert path.name == f"{sample.sample_id}.tif"
        with tifffile.TiffFile(path) as tif:
            assert not tif.is_ome and not tif.is_imagej and not tif.is_shaped
            assert len(tif.pages) == 24
            assert all(page.dtype == np.uint16 and page.description == "" for page in tif.pages)
            stack = tif.asarray()
        assert np.array_equal(stack, sample.srs)


def test_channels_last_stack_names_its_axes(written):
    outdir, sheet, truth = written
    last = [s for s in truth if s.variant.srs_format == "channels_last"]
    assert len(last) == 2
    for sample in last:
        path = outdir / sheet.set_index("sample_id").loc[sample.sample_id, "srs"]
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            assert series.axes == "YXC" and series.dtype == np.uint16
            stack = series.asarray()
        assert stack.shape == (*sample.srs.shape[1:], 24)
        assert np.array_equal(np.moveaxis(stack, -1, 0), sample.srs)
    ome = [s for s in truth if s.variant.srs_format == "ome"]
    assert ome and all((outdir / f"srs/{s.sample_id}.ome.tif").is_file() for s in ome)


def test_portrait_and_landscape_images_mix(written):
    outdir, _, truth = written
    shapes = {s.sample_id: s.srs.shape[1:] for s in truth}
    assert set(shapes.values()) == {(48, 64), (64, 48)}
    for sample in truth:
        expected = (64, 48) if sample.variant.transposed else (48, 64)
        assert sample.tissue.shape == sample.class_map.shape == expected
        if sample.variant.he:
            assert tifffile.imread(outdir / f"he/{sample.sample_id}.tif").shape == (*expected, 3)


def test_every_qupath_export_style_occurs(written):
    outdir, sheet, truth = written
    assert {s.export_style for s in truth} == set(phantom.EXPORT_STYLES)
    documents = [json.loads((outdir / p).read_text()) for p in sheet["annotations"]]
    assert {type(d).__name__ for d in documents} == {"dict", "list"}  # collection, bare list
    forms = set()
    for feature in (f for d in documents for f in features_of(d)):
        classification = feature["properties"].get("classification")
        if isinstance(classification, str):
            forms.add("string")
        elif classification is not None:
            forms.add(tuple(sorted(classification)))
    assert forms == {"string", ("color", "name"), ("colorRGB", "name")}


def test_unclassified_features_are_written_and_the_truth_skips_them(variants, written):
    outdir, _, truth = written
    names = class_names(variants)
    for sample in truth:
        features = features_of(sample.annotations)
        unclassified = [f for f in features if "classification" not in f["properties"]]
        assert len(unclassified) == (1 if sample.variant.unclassified else 0), sample.sample_id
        on_disk = json.loads((outdir / f"annotations/{sample.sample_id}.geojson").read_text())
        assert on_disk == sample.annotations
        classified = [f for f in features if "classification" in f["properties"]]
        burnt = rasterise(classified, names, sample.class_map.shape)
        assert np.array_equal(burnt, sample.class_map), sample.sample_id
    assert sum(s.variant.unclassified for s in truth) == 3


def test_immune_cells_are_an_extra_class_in_the_truth_and_the_annotations(variants, written):
    truth = written[2]
    immune_value = class_names(variants).index("Immune cells") + 1
    for sample in truth:
        in_tissue = (sample.tissue == phantom.IMMUNE).any()
        in_classes = (sample.class_map == immune_value).any()
        names = {
            f["properties"]["classification"]["name"]
            if isinstance(f["properties"].get("classification"), dict)
            else f["properties"].get("classification")
            for f in features_of(sample.annotations)
        }
        assert in_tissue == in_classes == ("Immune cells" in names) == sample.variant.immune_cells
        # Immune aggregates lie in the stroma: nothing else lost its place.
        if in_tissue:
            assert phantom.TUMOR in sample.tissue and phantom.STROMA in sample.tissue


def test_the_pipelines_readers_read_every_variant_as_the_truth(variants, written):
    outdir, sheet, truth = written
    settings = typed(variants)
    for row, sample in zip(sheet.itertuples(), truth, strict=True):
        stack = read_srs(outdir / row.srs, settings.channels, row.sample_id, nonfinite="reject")
        assert np.array_equal(stack.data, sample.srs.astype(np.float32)), row.sample_id
        if row.he:
            he = read_he(outdir / row.he, row.sample_id, sample.srs.shape[1:])
            assert np.array_equal(he, sample.he)
        annotations = read_qupath_geojson(outdir / row.annotations, row.sample_id)
        class_map, _ = rasterize_annotations(
            annotations, sample.class_map.shape, settings.annotations, row.sample_id
        )
        assert np.array_equal(class_map, sample.class_map), row.sample_id


# ------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": {"plain_tiff": 0.6, "channels_last": 0.5}}, "together"),
        ({"variants": {"without_he": 1.5}}, r"phantom\.variants\.without_he"),
        ({"variants": {"no_he": 0.5}}, r"phantom\.variants: .*'no_he' was unexpected"),
    ],
)
def test_bad_variant_settings_are_config_errors(variants, tmp_path, change, message):
    config = copy.deepcopy(variants)
    config["phantom"]["variants"].update(change["variants"])
    with pytest.raises(ConfigError, match=message):
        phantom.write_phantom(typed(config), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_immune_cells_need_their_class_in_the_configuration(variants, tmp_path):
    config = copy.deepcopy(variants)
    del config["annotations"]["classes"]["Immune cells"]
    with pytest.raises(ConfigError, match="Immune cells"):
        phantom.write_phantom(typed(config), tmp_path / "out")
    config["annotations"]["ignore"] = ["Immune cells"]  # or the reader must skip it
    phantom.write_phantom(typed(config), tmp_path / "out")


def test_unclassified_features_need_the_reader_to_ignore_them(variants, tmp_path):
    config = copy.deepcopy(variants)
    config["annotations"]["unclassified"] = "error"
    with pytest.raises(ConfigError, match=r"annotations\.unclassified: ignore"):
        phantom.write_phantom(typed(config), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_variant_keys_match_the_schema():
    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["phantom"]["properties"]["variants"]["properties"]
    assert tuple(keys) == VARIANTS
