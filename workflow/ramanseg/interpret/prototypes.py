"""Interpretability of RamanSeg's prototypes (paper section 4.1.2).

* **Class proportions.** Each projected prototype has a source region: the bounding box
  ``(y0, y1, x0, x1)`` (half-open, image pixels) of ProtoPNet's high-activation region in its
  source sample, recorded in ``model.json`` (key ``projection``) by the projection
  (:class:`ramanseg.models.prototypes.PrototypeRecord`). Indexing the source sample's class
  map (``classes.tif``) with it gives the proportion of each annotation class inside, plus
  the unannotated share, so the proportions of a prototype sum to 1. Prototypes are grouped
  by the class they represent (RamanSeg's two: non-tumour, then tumour; the paper's figure
  has the tumour prototypes last), in prototype order inside a group.
  The *purity* of a prototype is the share of its region whose annotation class maps
  (``annotations.classes``) to the prototype's class (unannotated pixels count as
  background, label 0, as in the training mask).
* **Self-check.** Per prototype class, the number of prototypes, of distinct source patches
  and of distinct vectors, and the mean purity (``prototype_summary.csv``). Prototypes that
  share a source patch or a vector (the paper's projection lets them) are a *collapse*: a
  warning in the log and on every figure.
* **k-means inertia.** The *distinct* prototype vectors (``prototype_layer.prototypes`` in
  ``model.pt``, shape ``(P, D, k, k)``, flattened; duplicates counted once) are clustered
  with scikit-learn's k-means (k-means++, ``n_init = interpret.kmeans_n_init`` restarts,
  ``random_state = seed``) for every ``k`` from 1 to their count ``n``, where the inertia
  reaches 0. The curve must not increase with ``k``; a ``k`` whose best restart is worse than
  ``k - 1`` is refitted from the ``k - 1`` centres plus the point farthest from them (Lloyd's
  iterations from there cannot end higher) and flagged ``repaired``. A curve that keeps
  falling steeply means the prototypes are diverse.
* **Gallery.** The prototypes' source regions (``prototype_gallery.png``), one tile per
  distinct source patch with the number of prototypes sharing it, copied from the training
  folder, where the projection writes it; drawn here with
  :func:`ramanseg.models.prototypes.prototype_gallery` on the display channel if that
  folder has none.

Projection-free RamanSeg has no source regions (its prototypes are never projected), so the
class proportions apply to RamanSeg with projection only; the inertia curve does not need
them.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ramanseg.config import channel_names, class_names, require
from ramanseg.errors import InputError
from ramanseg.figures import class_colour, figure_bytes, new_figure, table_bytes
from ramanseg.fileio import prefixed, write_files
from ramanseg.interpret import (
    display_channel_index,
    interpret_settings,
    read_class_map,
    read_stack,
)
from ramanseg.models.folder import METADATA_NAME
from ramanseg.models.prototypes.projection import read_projection

log = logging.getLogger(__name__)

#: The state-dict key of the prototype vectors in RamanSeg's ``model.pt``.
PROTOTYPES_KEY = "prototype_layer.prototypes"
#: The projection records and the gallery in RamanSeg's training folder (and our outdir).
GALLERY_NAME = "prototype_gallery.png"
#: Names of RamanSeg's prototype classes (its binary labels).
PROTOTYPE_CLASS_NAMES = ("non-tumour", "tumour")
UNANNOTATED = "unannotated"
#: The per-class self-check table written next to the figures.
SUMMARY_NAME = "prototype_summary.csv"
#: Relative slack of the monotonicity check of the inertia curve (float rounding).
MONOTONE_RTOL = 1e-9


def class_proportions(
    records: Sequence[Any],
    class_maps: Mapping[str, np.ndarray],
    names: Sequence[str],
    labels: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """The proportion of each annotation class inside each prototype's source region.

    Args:
        records: ``PrototypeRecord``-like objects (``prototype``, ``prototype_class``,
            ``sample_id``, ``bbox``, ``image_size``).
        class_maps: the class map (0 = unannotated, ``1 + index`` into ``names``) of every
            source sample.
        names: the annotation classes in configuration order.
        labels: the label of each annotation class (``annotations.classes``), for the
            purity; without it the purity column is left out.

    Returns:
        One row per prototype, grouped by prototype class, then by prototype index:
        ``prototype``, ``prototype_class``, ``prototype_class_name``, ``sample_id``,
        ``y0``, ``y1``, ``x0``, ``x1``, ``pixels``, one column per class and
        ``unannotated`` (fractions summing to 1), ``purity`` (the summed fractions of the
        classes whose label is the prototype's class; unannotated pixels count as label 0,
        as in the training mask), ``shared_by`` (how many prototypes
        have this prototype's source patch) and ``first_sharing`` (the lowest of them).

    Raises:
        ValueError: a missing class map, a class map whose size differs from the record's
            image size, or an empty or out-of-image box.
    """
    sharing: dict[tuple[Any, ...], list[int]] = {}
    for record in records:
        sharing.setdefault(_source(record), []).append(int(record.prototype))
    rows = []
    for record in sorted(records, key=lambda r: (r.prototype_class, r.prototype)):
        if record.sample_id not in class_maps:
            raise ValueError(f"prototype {record.prototype}: no class map of {record.sample_id!r}")
        classes = np.asarray(class_maps[record.sample_id])
        if tuple(classes.shape) != tuple(record.image_size):
            raise ValueError(
                f"prototype {record.prototype}: class map of {record.sample_id!r} has shape "
                f"{classes.shape}, the projection saw {tuple(record.image_size)}"
            )
        y0, y1, x0, x1 = (int(v) for v in record.bbox)
        if not (0 <= y0 < y1 <= classes.shape[0] and 0 <= x0 < x1 <= classes.shape[1]):
            raise ValueError(
                f"prototype {record.prototype}: bounding box {record.bbox} is empty or outside "
                f"the image {classes.shape}"
            )
        region = classes[y0:y1, x0:x1]
        counts = np.bincount(region.ravel().astype(np.int64), minlength=len(names) + 1)
        if counts.size > len(names) + 1:
            raise ValueError(
                f"class map of {record.sample_id!r} holds value {counts.size - 1}, "
                f"but only {len(names)} classes are configured"
            )
        fractions = counts / region.size
        label = int(record.prototype_class)
        rows.append(
            {
                "prototype": int(record.prototype),
                "prototype_class": label,
                "prototype_class_name": (
                    PROTOTYPE_CLASS_NAMES[label]
                    if label < len(PROTOTYPE_CLASS_NAMES)
                    else f"class {label}"
                ),
                "sample_id": record.sample_id,
                "y0": y0,
                "y1": y1,
                "x0": x0,
                "x1": x1,
                "pixels": int(region.size),
                **{name: float(fractions[i + 1]) for i, name in enumerate(names)},
                UNANNOTATED: float(fractions[0]),
                **(
                    {
                        # Unannotated pixels are background (label 0) in the training
                        # mask, so they count as such here too.
                        "purity": float(
                            sum(
                                fractions[i + 1]
                                for i, name in enumerate(names)
                                if int(labels.get(name, -1)) == label
                            )
                            + (fractions[0] if label == 0 else 0.0)
                        )
                    }
                    if labels is not None
                    else {}
                ),
                "shared_by": len(sharing[_source(record)]),
                "first_sharing": min(sharing[_source(record)]),
            }
        )
    return pd.DataFrame(rows)


def _source(record: Any) -> tuple[Any, ...]:
    """A record's source patch: sample and latent position."""
    return (record.sample_id, int(record.latent_y), int(record.latent_x))


def prototype_summary(proportions: pd.DataFrame, vectors: np.ndarray) -> pd.DataFrame:
    """Per prototype class: prototypes, distinct source patches and vectors, mean purity.

    Args:
        proportions: the table of :func:`class_proportions` (with ``purity``).
        vectors: the prototype vectors ``(P, ...)`` in prototype order.

    Returns:
        One row per prototype class: ``prototype_class``, ``prototype_class_name``,
        ``prototypes``, ``distinct_patches``, ``distinct_vectors``, ``mean_purity`` (mean
        over the prototypes), ``collapsed`` (some prototypes share a patch or a vector).
    """
    from ramanseg.models.prototypes.diagnostics import distinct_groups

    groups = distinct_groups(vectors)
    rows = []
    for label, block in proportions.groupby("prototype_class", sort=True):
        patches = int(block["first_sharing"].nunique())
        distinct = len({int(groups[p]) for p in block["prototype"]})
        rows.append(
            {
                "prototype_class": int(label),
                "prototype_class_name": block["prototype_class_name"].iloc[0],
                "prototypes": len(block),
                "distinct_patches": patches,
                "distinct_vectors": distinct,
                "mean_purity": float(block["purity"].mean()),
                "collapsed": bool(min(patches, distinct) < len(block)),
            }
        )
    return pd.DataFrame(rows)


def collapse_warning(summary: pd.DataFrame) -> str | None:
    """One line naming every collapsed class of :func:`prototype_summary`, or None."""
    parts = [
        f"{row.prototype_class_name}: {min(row.distinct_patches, row.distinct_vectors)} "
        f"distinct of {row.prototypes}"
        for row in summary.itertuples()
        if row.collapsed
    ]
    return "PROTOTYPE COLLAPSE (" + "; ".join(parts) + ")" if parts else None


def run_caption(summary: pd.DataFrame, warning: str | None) -> str:
    """What this run measured, in reStructuredText: the first paragraph of the report
    captions of the prototype figures, so that a collapse is in the caption itself.

    Args:
        summary: :func:`prototype_summary`.
        warning: :func:`collapse_warning` of it.
    """
    classes = "; ".join(
        f"{row.prototype_class_name}: {row.distinct_patches} distinct source patches of "
        f"{row.prototypes} prototypes, mean purity {row.mean_purity:.0%}"
        for row in summary.itertuples()
    )
    if warning:
        return (
            f"**{warning} in this run.** {classes}. Prototypes that share a source patch "
            "are drawn once; the figures describe fewer prototypes than the model has.\n"
        )
    return f"**This run:** {classes}; no prototypes share a source patch.\n"


def run_caption_files(
    templates: Sequence[str | Path], outdir: str | Path, summary: pd.DataFrame
) -> dict[Path, bytes]:
    """Each caption template, under its own name in ``outdir``, after this run's
    :func:`run_caption` (the templates' Jinja is left for the report to render).

    Args:
        templates: the caption files of the prototype figures (``workflow/report``).
        outdir: the folder of the run's captions.
        summary: :func:`prototype_summary`.
    """
    first = run_caption(summary, collapse_warning(summary))
    files = {}
    for template in map(Path, templates):
        if not template.is_file():
            raise InputError(
                "the report caption template does not exist",
                path=template,
                fix="run the workflow from a complete checkout",
            )
        files[Path(outdir) / template.name] = (first + "\n" + template.read_text()).encode()
    return files


def kmeans_inertia(vectors: np.ndarray, seed: int = 0, n_init: int = 10) -> pd.DataFrame:
    """k-means inertia of the distinct prototype vectors for every ``k`` from 1 to their count.

    Duplicates (:func:`~ramanseg.models.prototypes.diagnostics.distinct_groups`) are counted
    once: k-means cannot make more clusters than there are distinct points, and a curve over
    duplicates is an artefact. Each ``k`` keeps the best of ``n_init`` k-means++ restarts; a
    ``k`` whose inertia exceeds that of ``k - 1`` is refitted from the ``k - 1`` centres plus
    the point farthest from them (which starts at or below the ``k - 1`` inertia, and Lloyd's
    iterations do not increase it) and flagged in ``repaired``.

    Args:
        vectors: ``(P, ...)``, flattened to ``(P, features)``.
        seed: k-means' ``random_state``.
        n_init: restarts per ``k`` (the best inertia is kept).

    Returns:
        ``k``, ``inertia`` (float64, non-increasing in ``k``), ``repaired`` (bool), and
        ``distinct`` and ``prototypes`` (the counts, the same on every row).

    Raises:
        ValueError: fewer than one vector or a non-finite value.
        RuntimeError: the curve still increases after the repair (a bug).
    """
    from sklearn.cluster import KMeans

    from ramanseg.models.prototypes.diagnostics import distinct_groups

    data = np.asarray(vectors, dtype=np.float64)
    data = data.reshape(data.shape[0], -1) if data.ndim else data
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"need at least one prototype vector, got shape {np.shape(vectors)}")
    if not np.isfinite(data).all():
        raise ValueError("the prototype vectors hold NaN or infinite values")
    groups = distinct_groups(data)
    distinct = data[np.unique(groups)]
    count = distinct.shape[0]
    inertias: list[float] = []
    repaired: list[bool] = []
    centres = None
    for k in range(1, count + 1):
        model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
        model.fit(distinct)
        inertia, fixed = float(model.inertia_), False
        if inertias and inertia > inertias[-1] * (1 + MONOTONE_RTOL):
            nearest = ((distinct[:, None, :] - centres[None]) ** 2).sum(axis=2).min(axis=1)
            start = np.vstack([centres, distinct[int(np.argmax(nearest))]])
            model = KMeans(n_clusters=k, init=start, n_init=1).fit(distinct)
            inertia, fixed = min(float(model.inertia_), inertias[-1]), True
            log.warning("k-means inertia at k = %d exceeded k = %d: refitted", k, k - 1)
        centres = model.cluster_centers_
        inertias.append(inertia)
        repaired.append(fixed)
    steps = np.diff(inertias)
    if not np.all(steps <= MONOTONE_RTOL * np.abs(inertias[:-1]) + 1e-12):
        raise RuntimeError(f"the k-means inertia increases with k after the repair: {inertias}")
    return pd.DataFrame(
        {
            "k": np.arange(1, count + 1),
            "inertia": inertias,
            "repaired": repaired,
            "distinct": count,
            "prototypes": data.shape[0],
        }
    )


def read_prototype_vectors(path: str | Path) -> np.ndarray:
    """The prototype vectors ``(P, D, k, k)`` from RamanSeg's ``model.pt`` (a state dict).

    Raises:
        InputError: a missing or unreadable file, or no ``prototype_layer.prototypes`` entry.
    """
    import torch

    path = Path(path)
    fix = "train RamanSeg first (rule train_model)"
    if not path.is_file():
        raise InputError("the RamanSeg weights do not exist", path=path, fix=fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise InputError(
            f"the weights cannot be read ({type(error).__name__}: {error})", path=path, fix=fix
        ) from error
    if not isinstance(state, Mapping) or PROTOTYPES_KEY not in state:
        keys = [k for k in state if "prototype" in k] if isinstance(state, Mapping) else []
        raise InputError(
            f"the weights hold no {PROTOTYPES_KEY!r} (prototype-like keys: {keys})",
            path=path,
            fix="give the folder of a RamanSeg model",
        )
    return state[PROTOTYPES_KEY].detach().cpu().double().numpy()


def proportions_figure(
    table: pd.DataFrame, names: Sequence[str], summary: pd.DataFrame | None = None
):
    """Stacked bars of the class proportions per prototype, grouped by prototype class,
    each group labelled with its distinct count and mean purity; a collapse in the title."""
    from matplotlib.patches import Patch

    categories = [*names, UNANNOTATED]
    figure = new_figure(max(6.0, 0.22 * len(table) + 2.5), 4.2)
    axis = figure.subplots()
    positions = np.arange(len(table))
    bottom = np.zeros(len(table))
    for index, name in enumerate(categories):
        values = table[name].to_numpy(dtype=float)
        axis.bar(
            positions, values, 0.85, bottom=bottom, color=class_colour(name, index), label=name
        )
        bottom += values
    groups = table["prototype_class_name"].to_numpy()
    edges = [i for i in range(1, len(table)) if groups[i] != groups[i - 1]]
    for edge in edges:
        axis.axvline(edge - 0.5, color="black", linewidth=1.0)
    starts = [0, *edges]
    ends = [*edges, len(table)]
    checks = {} if summary is None else summary.set_index("prototype_class_name")
    for start, end in zip(starts, ends, strict=True):
        label = f"{groups[start]} prototypes ({end - start})"
        if groups[start] in getattr(checks, "index", ()):
            row = checks.loc[groups[start]]
            label += f"\n{row['distinct_patches']} distinct, purity {row['mean_purity']:.2f}"
        axis.text(
            (start + end - 1) / 2,
            1.03,
            label,
            ha="center",
            va="bottom",
            fontsize=8,
            transform=axis.get_xaxis_transform(),
        )
    axis.set_xticks(positions)
    axis.set_xticklabels(table["prototype"].astype(str), rotation=90, fontsize=6)
    axis.set_xlim(-0.6, len(table) - 0.4)
    axis.set_ylim(0, 1)
    axis.set_xlabel("prototype")
    axis.set_ylabel("class proportion in the source region")
    handles = [Patch(color=class_colour(n, i), label=n) for i, n in enumerate(categories)]
    axis.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = "Annotation classes inside each prototype's source region"
    _title(figure, title, None if summary is None else collapse_warning(summary))
    return figure


def _title(figure: Any, title: str, warning: str | None) -> None:
    """The figure's title, with a collapse warning in red above it."""
    if warning:
        figure.suptitle(f"{warning}\n{title}", fontsize=10, color="red", fontweight="bold")
    else:
        figure.suptitle(title, fontsize=10)


def inertia_figure(table: pd.DataFrame, seed: int, n_init: int, warning: str | None = None):
    """The k-means inertia of the distinct prototypes against k."""
    figure = new_figure(5.5, 3.8)
    axis = figure.subplots()
    axis.plot(table["k"], table["inertia"], marker="o", markersize=3)
    axis.set_xlabel("number of clusters k")
    axis.set_ylabel("k-means inertia (sum of squared distances)")
    axis.grid(True, alpha=0.3)
    repaired = table["repaired"].to_numpy(dtype=bool)
    if repaired.any():
        axis.plot(table["k"][repaired], table["inertia"][repaired], "rx", label="refitted")
        axis.legend(fontsize=7)
    distinct, total = int(table["distinct"].iloc[0]), int(table["prototypes"].iloc[0])
    axis.set_title(
        f"k-means of the {distinct} distinct of {total} prototype vectors "
        f"(seed {seed}, n_init {n_init})",
        fontsize=9,
    )
    if warning:  # wrapped: the figure is narrow
        figure.suptitle(textwrap.fill(warning, 60), fontsize=10, color="red", fontweight="bold")
    return figure


def run_interpret_prototypes(
    model_dir: str | Path,
    preprocessed: str | Path,
    outdir: str | Path,
    config: Mapping[str, Any],
    caption_templates: Sequence[str | Path] = (),
    captions_dir: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Class proportions, the k-means inertia curve and the gallery of a RamanSeg model.

    Reads the projection record of ``model_dir/model.json`` and the prototype vectors of
    ``model_dir/model.pt``; writes into ``outdir``
    ``class_proportions.png/.pdf/.csv``, ``kmeans_inertia.png/.pdf/.csv``,
    ``prototype_summary.csv`` and ``prototype_gallery.png``.

    Args:
        model_dir: ``results/models/ramanseg``.
        preprocessed: ``results/preprocessed``.
        outdir: ``results/interpret/ramanseg``.
        config: the configuration (``channels``, ``annotations``, ``interpret``, ``seed``).
        caption_templates: report captions to write to ``captions_dir`` after this run's
            measurements (:func:`run_caption_files`).
        captions_dir: where; required with ``caption_templates``.

    Returns:
        ``{"class_proportions": ..., "kmeans_inertia": ..., "prototype_summary": ...}``.

    Raises:
        InputError: missing or unreadable inputs.
    """
    from ramanseg.models.prototypes import prototype_gallery

    settings = interpret_settings(config)
    names = class_names(config)
    channels = channel_names(config)
    display = display_channel_index(config, settings.display_channel)
    model_dir = Path(model_dir)
    records, _ = read_projection(model_dir)
    vectors = read_prototype_vectors(model_dir / "model.pt")
    if vectors.shape[0] != len(records):
        raise InputError(
            f"model.pt holds {vectors.shape[0]} prototypes, model.json {len(records)}",
            path=model_dir,
            fix="retrain RamanSeg so both come from the same run",
        )
    sources = sorted({record.sample_id for record in records})
    class_maps = {s: read_class_map(preprocessed, s, names) for s in sources}
    labels = {str(k): int(v) for k, v in require(config, "annotations.classes").items()}
    try:
        proportions = class_proportions(records, class_maps, names, labels)
    except ValueError as error:
        raise InputError(
            str(error),
            path=model_dir / METADATA_NAME,
            fix="retrain RamanSeg on the current preprocessing",
        ) from None
    summary = prototype_summary(proportions, vectors)
    warning = collapse_warning(summary)
    for row in summary.itertuples():
        log.info(
            "%s prototypes: %d, distinct source patches %d, distinct vectors %d, mean purity %.2f",
            row.prototype_class_name,
            row.prototypes,
            row.distinct_patches,
            row.distinct_vectors,
            row.mean_purity,
        )
    if warning:
        log.warning("%s: the figures are drawn from duplicated prototypes", warning)
    inertia = kmeans_inertia(vectors, settings.seed, settings.kmeans_n_init)

    outdir = Path(outdir)
    files = {
        outdir / "class_proportions.csv": table_bytes(proportions)[".csv"],
        outdir / "kmeans_inertia.csv": table_bytes(inertia)[".csv"],
        outdir / SUMMARY_NAME: table_bytes(summary)[".csv"],
        **prefixed(
            outdir / "class_proportions",
            figure_bytes(proportions_figure(proportions, names, summary)),
        ),
        **prefixed(
            outdir / "kmeans_inertia",
            figure_bytes(inertia_figure(inertia, settings.seed, settings.kmeans_n_init, warning)),
        ),
    }
    stacks: dict[str, np.ndarray] = {}

    def load(sample: str) -> np.ndarray:
        if sample not in stacks:
            stacks[sample] = read_stack(preprocessed, sample, len(channels))
        return stacks[sample]

    files[outdir / GALLERY_NAME] = lambda path: prototype_gallery(
        records,
        load,
        path,
        channel=display,
        channel_name=channels[display],
        class_names=list(PROTOTYPE_CLASS_NAMES),
    )
    if caption_templates:
        if captions_dir is None:
            raise ValueError("caption_templates need a captions_dir")
        files.update(run_caption_files(caption_templates, captions_dir, summary))
    write_files(files)
    log.info("prototype analyses of %d prototypes written to %s", len(records), outdir)
    return {
        "class_proportions": proportions,
        "kmeans_inertia": inertia,
        "prototype_summary": summary,
    }
