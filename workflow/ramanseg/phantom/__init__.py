"""A synthetic stimulated-Raman (SRS) dataset in exactly the workflow's input contract.

The phantom is the demo data and the main test bed of the pipeline: every image is drawn
from a known tissue map, so each later stage can be checked against ground truth. For each
sample it writes

* ``srs/<id>.ome.tif``: an OME-TIFF ``(C, Y, X)`` uint16 stack with one plane per
  configured channel (names in the OME metadata). Raman bands are rendered from per-class
  spectra (:data:`RAMAN_SPECTRA`) at the configured wavenumbers; transmission, TPEF and
  SHG planes from the tissue morphology;
* ``he/<id>.tif``: an RGB uint8 H&E image on the same pixel grid;
* ``annotations/<id>.geojson``: the pathologist's annotations as QuPath exports them;

plus ``samples.tsv`` (the sample sheet) and ``preview.png`` (one sample at a glance).

Variants
    ``phantom.variants`` (all 0 by default; ``config/variants.yaml`` switches every one
    on) makes a fraction of the samples take the input contract's other legitimate forms
    (:data:`VARIANTS`, chosen per sample by :func:`sample_variants`): no H&E (an empty
    ``he`` column, no file); the SRS stack as ``srs/<id>.tif``, either a plain multi-page
    uint16 TIFF without metadata or channels last ``(Y, X, C)`` with the axes in
    tifffile's metadata; the image drawn ``width x height`` (portrait and landscape
    mixed); lymphocyte aggregates in the stroma annotated as the extra class ``Immune
    cells`` (which ``annotations.classes`` or ``annotations.ignore`` must name); one
    annotation without a class (a region-of-interest box, first in the file; needs
    ``annotations.unclassified: ignore``). The ground truth (:class:`PhantomSample`'s
    tissue map and class map) covers every variant.

Difficulty
    ``phantom.difficulty`` (all 0 by default; ``config/hard.yaml`` switches every knob
    on) makes the data harder in the ways real data are (:class:`Difficulty`):
    annotations drawn on the H&E, smoothed and offset by a few pixels (the truth stays
    on :attr:`PhantomSample.true_class_map`); the H&E shifted against the SRS stack
    (:attr:`PhantomSample.he_offset`), the annotations with it; a wider per-patient
    spectral shift and gain; tumour spectra partly epithelial; a smaller tumour share.

Tissue model
    Each sample is a tissue section (an irregular blob; the rest is glass slide) made of
    Stroma, with fat (Other), a surface band of squamous Epithelium (most samples), one or
    more Tumor nests (5-50 % of the tissue; in about half of the samples with epithelium
    they grow from it, so tumour and epithelium touch) and, in about half of the samples,
    Necrosis in the centre of the nests (so tumour polygons get holes). Epithelium also
    lines glass holes inside the section, as around a duct. Regions are thresholded multi-scale
    Gaussian noise fields; cells are rendered as nuclei (dots, densest in tumour and
    epithelium), collagen fibres (wavy lines, stroma) and adipocytes (Voronoi membranes,
    fat).

Acquisition model
    Per patient: a spectral shift of the peak positions (uniform, +-4 cm-1) and a gain.
    Per sample: a gain, a smooth multiplicative drift along the scan direction (x, the
    columns; common to all channels with a small per-channel slope), shot noise (Poisson;
    its normal approximation above 100 photo-electrons), read noise (Gaussian), a
    detector offset, and a few saturated pixels (65535 in every Raman band, as a bright
    particle would give). Per channel a fixed detector gain (a smooth responsivity curve).

Informative channels
    Class information lives in the Raman bands on and around the C-H peaks and in two of
    the other channels. Fisher scores (squared mean difference over summed variances,
    per pixel, demo configuration, 32 samples) of tumour vs stroma: 2904-2963 cm-1 (CH3,
    protein; 2919 and 2933 highest, ~4-5), 2846-2890 (CH2, lipid; ~1.1-1.9, and the
    main separation of fat from everything else), SHG (~1.0, collagen: stroma only),
    Transmission (~0.3, morphology: nuclei, density, edges). Tumour vs epithelium is
    deliberately hard: Transmission alike (means within ~4 %), the Raman bands differ by
    a few per cent (3006 / 3021 the most, Fisher ~0.05), TPEF the clearest (~1.3,
    keratinised surface layer brighter). The far-wing bands below ~2820 and above
    ~3070 cm-1 (2802, 2817, 3079, 3094 in the demo configuration) carry a flat baseline,
    Lorentzian tails a few per cent of a peak and noise: they separate tissue from glass
    but barely classes (tumour vs stroma Fisher 0.08-0.28, tumour vs rest < 0.1).

Annotations
    Traced from the ground-truth class map (pixel-corner polygons from
    ``rasterio.features.shapes``, simplified by half a pixel), in pixel coordinates
    (x = column, y = row, origin at the top-left image corner), so rasterising them by
    pixel centres reproduces the ground-truth class map (exactly in every sample we
    checked; the tests demand 95 % of annotated pixels). Stroma and fat in a
    margin band along one image edge are left unannotated, as is the glass. Tumour
    polygons have holes where necrosis is; stroma polygons where nests are. The export
    style rotates with the sample's index (``index % 4``) so that a small dataset holds
    all of them:

    0. QuPath 0.4/0.5: a FeatureCollection, one Feature per class (a MultiPolygon when
       the class has several regions), ``id`` a UUID, ``properties.objectType`` and
       ``properties.classification = {"name", "color"}``;
    1. the same, but one Feature per connected region (Polygons only);
    2. QuPath 0.2: a bare list of Features, ``id`` ``"PathAnnotationObject"``,
       ``classification = {"name", "colorRGB"}`` (packed signed ARGB);
    3. older scripts: a bare list of Features with ``classification`` a plain string.

Determinism
    Everything derives from ``phantom.seed``: the design from ``SeedSequence([seed, 0])``,
    the instrument from ``[seed, 1]``, patient ``p`` from ``[seed, 2, p]`` and sample
    ``i`` (its row in the sample sheet) from ``[seed, 3, i]``, so the output does not
    depend on the number of threads. The variants draw from streams of their own (which
    samples take variant ``k``: ``[seed, 5, k]``; sample ``i``'s immune aggregates and
    unclassified feature: ``[seed, 6, i]``), so with every variant off the output is the
    same as before variants existed; so do the difficulty knobs (sample ``i``: ``[seed,
    7, i]``, patient ``p``: ``[seed, 8, p]``). TIFFs carry no timestamps and a UUID derived from
    the seed; the preview PNG carries no software tag: two runs are byte-identical.

Modules
    :mod:`~ramanseg.phantom.design` (settings, samples and patients),
    :mod:`~ramanseg.phantom.tissue` (the tissue map and what is annotated),
    :mod:`~ramanseg.phantom.spectra` (class spectra),
    :mod:`~ramanseg.phantom.difficulty` (the harder phantom),
    :mod:`~ramanseg.phantom.imaging` (cells, detector model, H&E),
    :mod:`~ramanseg.phantom.export` (QuPath GeoJSON),
    :mod:`~ramanseg.phantom.sample` (one sample and its ground truth),
    :mod:`~ramanseg.phantom.write` (the files) and :mod:`~ramanseg.phantom.cli`
    (``ramanseg phantom``). The names below are importable from ``ramanseg.phantom``.
"""

from ramanseg.phantom.cli import add_commands
from ramanseg.phantom.design import (
    VARIANTS,
    PhantomSettings,
    SampleVariant,
    phantom_design,
    phantom_problems,
    sample_variants,
)
from ramanseg.phantom.difficulty import DIFFICULTY_KNOBS, Difficulty
from ramanseg.phantom.export import EXPORT_STYLES, annotation_geojson
from ramanseg.phantom.sample import PhantomSample, generate_sample
from ramanseg.phantom.spectra import RAMAN_SPECTRA, class_spectrum, lorentzian
from ramanseg.phantom.tissue import (
    CLASS_COLORS,
    CODE_CLASSES,
    EPITHELIUM,
    EXTRA_CLASSES,
    IMMUNE,
    NECROSIS,
    OTHER,
    SLIDE,
    STROMA,
    TISSUE_CLASSES,
    TUMOR,
)
from ramanseg.phantom.write import (
    phantom_file_names,
    phantom_samplesheet,
    write_phantom,
    write_preview,
)

__all__ = [
    "CLASS_COLORS",
    "CODE_CLASSES",
    "DIFFICULTY_KNOBS",
    "EPITHELIUM",
    "EXPORT_STYLES",
    "EXTRA_CLASSES",
    "IMMUNE",
    "NECROSIS",
    "OTHER",
    "RAMAN_SPECTRA",
    "SLIDE",
    "STROMA",
    "TISSUE_CLASSES",
    "TUMOR",
    "VARIANTS",
    "Difficulty",
    "PhantomSample",
    "PhantomSettings",
    "SampleVariant",
    "add_commands",
    "annotation_geojson",
    "class_spectrum",
    "generate_sample",
    "lorentzian",
    "phantom_design",
    "phantom_file_names",
    "phantom_problems",
    "phantom_samplesheet",
    "sample_variants",
    "write_phantom",
    "write_preview",
]
