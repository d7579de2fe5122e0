"""The QuPath GeoJSON the phantom writes: every export style, and agreement with the truth."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
from shapely.geometry import shape

from ramanseg import phantom
from ramanseg.config import (
    class_names,
)
from tests.phantom.conftest import features_of, rasterise, typed


def test_export_styles_and_geometry_kinds_all_occur(dataset):
    sheet = pd.read_csv(dataset / "samples.tsv", sep="\t", dtype=str)
    documents = [json.loads((dataset / p).read_text()) for p in sheet["annotations"]]
    assert {type(d).__name__ for d in documents} == {"dict", "list"}
    features = [f for d in documents for f in features_of(d)]
    classifications = {type(f["properties"]["classification"]).__name__ for f in features}
    assert classifications == {"dict", "str"}
    geometries = [shape(f["geometry"]) for f in features]
    assert any(g.geom_type == "MultiPolygon" for g in geometries)
    assert any(any(len(p.interiors) for p in getattr(g, "geoms", [g])) for g in geometries), (
        "no polygon with holes"
    )
    ids = [f["id"] for f in features if "id" in f and f["id"] != "PathAnnotationObject"]
    assert ids and all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids) and len(set(ids)) == len(ids)


def test_annotations_match_the_ground_truth(tiny):
    names = class_names(tiny)
    for index in range(tiny["phantom"]["samples"]):
        sample = phantom.generate_sample(typed(tiny), index)
        burnt = rasterise(sample.annotations, names, sample.class_map.shape)
        annotated = (burnt > 0) | (sample.class_map > 0)
        agreement = np.mean(burnt[annotated] == sample.class_map[annotated])
        assert agreement >= 0.95, (sample.sample_id, sample.export_style, agreement)
        # Some tissue is left unannotated, and every sample has tumour.
        assert ((sample.tissue > 0) & (sample.class_map == 0)).any()
        assert (sample.tissue == phantom.TUMOR).any()
        # The class map is the tissue map, in configuration order, where annotated.
        where = sample.class_map > 0
        expected = [names.index(phantom.TISSUE_CLASSES[t - 1]) + 1 for t in sample.tissue[where]]
        assert np.array_equal(sample.class_map[where], expected)
