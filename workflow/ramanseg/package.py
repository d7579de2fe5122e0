"""The model package, ``models.zip``: trained models with everything needed to use them
elsewhere; the one owner of its format.

``snakemake package`` writes ``results/package/models.zip``; ``snakemake predict`` reads it
(``--config model_package=ZIP``). Layout::

    manifest.json                   format version, software versions, channels, models
    settings.json                   the configuration the models were trained with:
                                    channels, annotations (class mapping), preprocess,
                                    seed, nnunet, models (training and each model's section)
    models/<model>/model.pt         our PyTorch models: the state dict (ramanseg.models.folder)
    models/<model>/model.json       ... what the weights are, validation Dice
    models/ramanseg/prototype_patches.npz  RamanSeg: its prototypes' source patches
    models/nnunet/plans.json        nnU-Net: a trained model folder nnU-Net's predictor reads
    models/nnunet/dataset.json
    models/nnunet/fold_<k>/checkpoint_final.pth   the network weights, no training state
    models/nnunet/fold_<k>/validation/summary.json

Every checkpoint in a package loads with ``torch.load(weights_only=True)``; reading checks
that before anything else touches the files. A package from another format version, with
a file its manifest lists missing, with models trained on channels other than its own
list, or a damaged zip is refused with an :class:`~ramanseg.errors.InputError`, and
:func:`read_package` then leaves nothing behind. This module imports torch only where it
loads or writes weights, so that Snakemake can read a manifest while it plans.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any

from ramanseg import __version__
from ramanseg.errors import InputError
from ramanseg.fileio import atomic_path
from ramanseg.models.folder import METADATA_NAME, WEIGHTS_NAME, read_metadata, weights_path
from ramanseg.settings import AnnotationSettings, ChannelLayout, PreprocessSettings

#: The package format this ramanseg writes and reads; raised when the layout or the
#: meaning of a file changes, so that an older reader refuses a newer package.
FORMAT_VERSION = 1
FORMAT_NAME = "ramanseg-model-package"
MANIFEST_NAME = "manifest.json"
SETTINGS_NAME = "settings.json"
MODELS_FOLDER = "models"
#: The configuration sections a package carries (what preprocessing and the models need).
SETTINGS_KEYS = ("channels", "annotations", "preprocess", "seed", "nnunet")
#: Files beside a PyTorch model's weights that travel with it where they exist: the source
#: patches RamanSeg's per-slide explanation shows (their owner,
#: ``ramanseg.models.prototypes.patches``, imports torch).
MODEL_EXTRA_FILES = ("prototype_patches.npz",)
NNUNET_MODEL = "nnunet"
NNUNET_CHECKPOINT = "checkpoint_final.pth"
NNUNET_FOLDER_FILES = ("plans.json", "dataset.json")
#: The checkpoint entries nnU-Net's predictor reads. The rest (training logs holding NumPy
#: scalars, EMA state) is dropped: it would not load with ``weights_only=True``.
NNUNET_CHECKPOINT_KEYS = (
    "network_weights",
    "init_args",
    "trainer_name",
    "inference_allowed_mirroring_axes",
    "current_epoch",
)
#: Software whose versions a package records.
SOFTWARE = ("torch", "nnunetv2", "numpy", "monai")
REPACKAGE = "export the package again with this ramanseg (`snakemake package`)"


@dataclass(frozen=True)
class PackagedModel:
    """One model of a package, as extracted.

    Attributes:
        name: the model (``unet``, ``ramanseg``, ``nnunet``, ...).
        kind: ``torch`` (our PyTorch models) or ``nnunet`` (an nnU-Net fold ensemble).
        folder: its extracted folder: a model folder (:mod:`ramanseg.models.folder`) or an
            nnU-Net trained model folder.
        validation_dice: its validation Dice when trained (nnU-Net: mean over the folds).
        folds: nnU-Net's folds (empty for the PyTorch models).
    """

    name: str
    kind: str
    folder: Path
    validation_dice: float | None
    folds: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelPackage:
    """An extracted, checked model package.

    Attributes:
        root: the folder it was extracted to.
        format_version: its format version.
        ramanseg_version: the ramanseg that wrote it.
        software: the versions of Python, torch, nnU-Net, ... that trained the models.
        settings: the configuration sections of :data:`SETTINGS_KEYS` and ``models``.
        models: the models by name, in the package's order.
    """

    root: Path
    format_version: int
    ramanseg_version: str
    software: Mapping[str, str | None]
    settings: Mapping[str, Any]
    models: Mapping[str, PackagedModel]

    @property
    def settings_path(self) -> Path:
        """``settings.json``: what the workflow's commands take as ``--settings @FILE``."""
        return self.root / SETTINGS_NAME

    @property
    def channels(self) -> ChannelLayout:
        """The channel layout the models were trained on."""
        return ChannelLayout.from_config(self.settings)

    @property
    def annotations(self) -> AnnotationSettings:
        """The class mapping the models were trained with."""
        return AnnotationSettings.from_config(self.settings)

    @property
    def preprocess(self) -> PreprocessSettings:
        """The preprocessing settings new slides must be preprocessed with."""
        return PreprocessSettings.from_config(self.settings)


def software_versions() -> dict[str, str | None]:
    """The versions of Python, ramanseg and :data:`SOFTWARE` (``None``: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "ramanseg": __version__}
    for name in SOFTWARE:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _model_path(model: str, name: str) -> str:
    return f"{MODELS_FOLDER}/{model}/{name}"


def _nnunet_checkpoint_bytes(path: Path) -> bytes:
    """A fold's checkpoint reduced to :data:`NNUNET_CHECKPOINT_KEYS`, saved to bytes."""
    import torch

    # Our own training's output, written by nnU-Net with NumPy scalars in its logs (hence
    # weights_only=False here); the reduced copy loads with weights_only=True.
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    reduced = {key: checkpoint[key] for key in NNUNET_CHECKPOINT_KEYS if key in checkpoint}
    buffer = io.BytesIO()
    torch.save(reduced, buffer)
    return buffer.getvalue()


def write_package(
    out: str | Path,
    config: Mapping[str, Any],
    *,
    torch_models: Mapping[str, str | Path] | None = None,
    nnunet_model_dir: str | Path | None = None,
    nnunet_folds: Sequence[int] = (),
) -> Path:
    """Write a model package (see the module docstring) atomically.

    Args:
        out: the zip to write (``results/package/models.zip``).
        config: the validated configuration the models were trained with (at least
            :data:`SETTINGS_KEYS` and ``models``).
        torch_models: model name -> its trained folder (``results/models/<model>``).
        nnunet_model_dir: nnU-Net's trained model folder (plans.json, dataset.json,
            ``fold_<k>``), or ``None`` for a package without nnU-Net.
        nnunet_folds: the folds to package.

    Returns:
        ``out``.

    Raises:
        InputError: a model folder without its weights or ``model.json``, a model trained
            on channels other than the configuration's, or a missing nnU-Net file.
    """
    from ramanseg.nnunet.run import validation_dice

    torch_models = dict(torch_models or {})
    if not torch_models and nnunet_model_dir is None:
        raise InputError("no model to package", fix="name at least one model in package.models")
    channels = ChannelLayout.from_config(config)
    files: dict[str, bytes] = {}
    models: dict[str, dict[str, Any]] = {}
    fix = "train the model first (snakemake), or leave it out of package.models"
    for name, folder in torch_models.items():
        folder = Path(folder)
        metadata = read_metadata(folder, fix=fix)
        _check_model_channels(name, metadata, channels.names, folder / METADATA_NAME)
        files[_model_path(name, WEIGHTS_NAME)] = weights_path(folder).read_bytes()
        files[_model_path(name, METADATA_NAME)] = (folder / METADATA_NAME).read_bytes()
        for extra in MODEL_EXTRA_FILES:
            if (folder / extra).is_file():
                files[_model_path(name, extra)] = (folder / extra).read_bytes()
        models[name] = {"kind": "torch", "validation_dice": metadata.get("val_dice")}
    if nnunet_model_dir is not None:
        nnunet_dir = Path(nnunet_model_dir)
        dice = []
        wanted = [*NNUNET_FOLDER_FILES] + [
            f"fold_{fold}/{name}"
            for fold in nnunet_folds
            for name in (NNUNET_CHECKPOINT, "validation/summary.json")
        ]
        for relative in wanted:
            if not (nnunet_dir / relative).is_file():
                raise InputError(
                    f"the trained nnU-Net model lacks {relative}",
                    path=nnunet_dir / relative,
                    fix=fix,
                )
        for relative in NNUNET_FOLDER_FILES:
            files[_model_path(NNUNET_MODEL, relative)] = (nnunet_dir / relative).read_bytes()
        for fold in nnunet_folds:
            fold_dir = nnunet_dir / f"fold_{fold}"
            files[_model_path(NNUNET_MODEL, f"fold_{fold}/{NNUNET_CHECKPOINT}")] = (
                _nnunet_checkpoint_bytes(fold_dir / NNUNET_CHECKPOINT)
            )
            summary = "validation/summary.json"
            files[_model_path(NNUNET_MODEL, f"fold_{fold}/{summary}")] = (
                fold_dir / summary
            ).read_bytes()
            dice.append(validation_dice(fold_dir))
        models[NNUNET_MODEL] = {
            "kind": "nnunet",
            "folds": list(nnunet_folds),
            "validation_dice": sum(dice) / len(dice) if dice else None,
            "fold_validation_dice": dice,
        }
    for name, entry in models.items():
        prefix = f"{MODELS_FOLDER}/{name}/"
        entry["files"] = sorted(path for path in files if path.startswith(prefix))
    settings = {key: config[key] for key in SETTINGS_KEYS if key in config}
    model_sections = {"training": config["models"]["training"]} if "models" in config else {}
    for name in torch_models:
        model_sections[name] = config.get("models", {}).get(name, {})
    settings["models"] = model_sections
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "ramanseg_version": __version__,
        "software": software_versions(),
        "channels": channels.names,
        "models": models,
    }
    out = Path(out)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        archive.writestr(SETTINGS_NAME, json.dumps(settings, indent=2) + "\n")
        for path, data in files.items():
            archive.writestr(path, data)
    return out


def _check_model_channels(
    name: str, metadata: Mapping[str, Any], names: Sequence[str], path: Path
) -> None:
    """Refuse a model whose ``model.json`` records training channels other than ``names``."""
    trained = metadata.get("channel_names")
    if trained is not None and list(trained) != list(names):
        raise InputError(
            f"model {name!r} was trained on the channels {list(trained)}, not on the "
            f"package's channel list {list(names)}",
            path=path,
            fix="package models trained with one channel configuration",
        )


def _refuse(path: Path, problem: str, fix: str = REPACKAGE) -> InputError:
    return InputError(f"the model package {problem}", path=path, fix=fix)


def _json_member(archive: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(archive.read(name).decode("utf-8"))
    except KeyError:
        raise _refuse(path, f"holds no {name}; it is not a ramanseg model package") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(path, f"has an unreadable {name} ({error})") from None


def inspect_package(path: str | Path) -> dict[str, Any]:
    """Check a package without extracting it and return its manifest (no torch needed).

    Args:
        path: the ``models.zip``.

    Returns:
        The manifest (``format_version``, ``ramanseg_version``, ``software``,
        ``channels``, ``models``: name -> ``kind``, ``files``, ``validation_dice``).

    Raises:
        InputError: a missing file, not a zip or a damaged one, no manifest, another
            format version, or a file the manifest lists (the weights, say) missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            "the model package does not exist",
            path=path,
            fix="set model_package to the models.zip that `snakemake package` wrote",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            if damaged is not None:
                raise _refuse(path, f"is damaged: {damaged} fails its checksum")
            manifest = _json_member(archive, MANIFEST_NAME, path)
            names = set(archive.namelist())
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise _refuse(
            path, f"is not a readable zip file ({error})", "copy the package again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise _refuse(path, f"has a {MANIFEST_NAME} that is not a ramanseg package's")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise _refuse(
            path,
            f"has format version {version!r} (written by ramanseg "
            f"{manifest.get('ramanseg_version', '?')}); this ramanseg ({__version__}) reads "
            f"format version {FORMAT_VERSION} only",
            f"predict with the ramanseg version that wrote it, or {REPACKAGE}",
        )
    for name, entry in manifest.get("models", {}).items():
        needed = set(entry.get("files", []))
        if entry.get("kind") == "torch":
            needed |= {_model_path(name, WEIGHTS_NAME), _model_path(name, METADATA_NAME)}
        missing = sorted(needed - names)
        if missing:
            raise _refuse(
                path,
                f"lacks files of model {name!r}: {', '.join(missing)} (weights missing)",
            )
    if SETTINGS_NAME not in names:
        raise _refuse(path, f"holds no {SETTINGS_NAME}")
    unsafe = sorted(
        name
        for name in names
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts
    )
    if unsafe:
        raise _refuse(path, f"holds paths outside its folder: {', '.join(unsafe)}")
    return manifest


def package_channels(path: str | Path) -> ChannelLayout:
    """The channel layout of a package's models, read from the zip (checked as
    :func:`inspect_package`; no torch needed).

    Raises:
        InputError: see :func:`inspect_package`.
    """
    path = Path(path)
    inspect_package(path)
    with zipfile.ZipFile(path) as archive:
        return ChannelLayout.from_config(_json_member(archive, SETTINGS_NAME, path))


def read_package(
    path: str | Path,
    dest: str | Path,
    *,
    channels: ChannelLayout | None = None,
    models: Sequence[str] | None = None,
) -> ModelPackage:
    """Check a package, extract it to ``dest`` and return it, typed.

    Nothing is written to ``dest`` unless every check passes; a previous ``dest`` is
    replaced as a whole.

    Args:
        path: the ``models.zip``.
        dest: the folder to extract to (``results/predict/package``).
        channels: the channel layout the caller's data has, if it must match the package's.
        models: the models the caller needs (default: the package's).

    Returns:
        The extracted package.

    Raises:
        InputError: see :func:`inspect_package`; also a model trained on other channels
            than the package's (or than ``channels``), a model the package lacks, or a
            checkpoint that does not load with ``weights_only=True``.
    """
    path = Path(path)
    manifest = inspect_package(path)
    missing = sorted(set(models or ()) - set(manifest["models"]))
    if missing:
        raise _refuse(
            path,
            f"holds no model {', '.join(missing)} (it holds {', '.join(manifest['models'])})",
            "choose models the package holds (predict.models), or package them",
        )
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp)
        package = read_package_folder(tmp, source=path)
        if channels is not None and (
            channels.names != package.channels.names or channels.roles != package.channels.roles
        ):
            raise _refuse(
                path,
                f"was trained on the channels {package.channels.names}, not on {channels.names}",
                "predict slides acquired with the package's channel layout, or use a package "
                "trained on yours",
            )
        _check_weights_load_safely(tmp, path)
    return read_package_folder(dest, source=path)


def _check_weights_load_safely(folder: Path, source: Path) -> None:
    import pickle

    import torch

    for weights in sorted([*folder.rglob("*.pt"), *folder.rglob("*.pth")]):
        try:
            torch.load(weights, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            relative = weights.relative_to(folder).as_posix()
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise _refuse(
                source, f"holds {relative}, which does not load as plain weights ({first})"
            ) from None


def read_package_folder(folder: str | Path, *, source: str | Path | None = None) -> ModelPackage:
    """An extracted package's manifest, settings and models, checked (no torch needed).

    Args:
        folder: the folder :func:`read_package` extracted to.
        source: the zip it came from, for messages (default: ``folder``).

    Raises:
        InputError: an unreadable manifest or settings, or a model trained on channels
            other than the package's.
    """
    folder = Path(folder)
    where = Path(source) if source is not None else folder

    def load(name: str) -> Any:
        try:
            return json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _refuse(where, f"has no readable {name} ({error})") from None

    manifest, settings = load(MANIFEST_NAME), load(SETTINGS_NAME)
    channel_names = ChannelLayout.from_config(settings).names
    if list(manifest.get("channels", [])) != channel_names:
        raise _refuse(where, "lists other channels in its manifest than in its settings")
    models = {}
    for name, entry in manifest["models"].items():
        model_dir = folder / MODELS_FOLDER / name
        if entry["kind"] == "torch":
            metadata = read_metadata(model_dir, fix=REPACKAGE)
            _check_model_channels(name, metadata, channel_names, where)
        else:
            _check_nnunet_channels(model_dir, len(channel_names), where)
        models[name] = PackagedModel(
            name=name,
            kind=entry["kind"],
            folder=model_dir,
            validation_dice=entry.get("validation_dice"),
            folds=tuple(entry.get("folds", ())),
        )
    return ModelPackage(
        root=folder,
        format_version=manifest["format_version"],
        ramanseg_version=manifest.get("ramanseg_version", "?"),
        software=manifest.get("software", {}),
        settings=settings,
        models=models,
    )


def _check_nnunet_channels(model_dir: Path, count: int, where: Path) -> None:
    from ramanseg.nnunet.dataset import read_dataset_channels

    try:
        trained = len(read_dataset_channels(model_dir, fix=REPACKAGE))
    except InputError as error:
        raise _refuse(where, f"has no readable nnU-Net dataset.json ({error.problem})") from None
    if trained != count:
        raise _refuse(
            where,
            f"holds an nnU-Net model trained on {trained} channels, but its channel list "
            f"has {count}",
        )


def _package_command(args: argparse.Namespace) -> int:
    from ramanseg.cli import settings_from_args
    from ramanseg.config import ConfigError

    config = settings_from_args(args)
    torch_models = {name: args.models_dir / name for name in args.models if name != NNUNET_MODEL}
    nnunet = args.nnunet_model_dir if NNUNET_MODEL in args.models else None
    if NNUNET_MODEL in args.models and (nnunet is None or not args.folds):
        raise ConfigError("packaging nnunet needs --nnunet-model-dir and --folds")
    write_package(
        args.out,
        config,
        torch_models=torch_models,
        nnunet_model_dir=nnunet,
        nnunet_folds=args.folds,
    )
    print(f"wrote {args.out} ({', '.join(args.models)})")
    return 0


def _unpack_command(args: argparse.Namespace) -> int:
    package = read_package(args.package, args.outdir, models=args.models or None)
    print(f"extracted {args.package} to {package.root} ({', '.join(package.models)})")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``package`` and ``unpack-package``."""
    from ramanseg.cli import add_settings_arguments

    parser = subparsers.add_parser(
        "package",
        help="write the trained models, their settings and versions into one models.zip",
    )
    parser.add_argument("--models", required=True, nargs="+", help="the models to package")
    parser.add_argument(
        "--models-dir", required=True, type=Path, help="our models' folders (results/models)"
    )
    parser.add_argument(
        "--nnunet-model-dir", type=Path, help="nnU-Net's trained model folder (for nnunet)"
    )
    parser.add_argument(
        "--folds", type=int, nargs="*", default=[], help="the nnU-Net folds to package"
    )
    parser.add_argument("--out", required=True, type=Path, help="the zip to write")
    add_settings_arguments(parser)
    parser.set_defaults(func=_package_command)

    parser = subparsers.add_parser(
        "unpack-package", help="check a models.zip and extract it (refuses a bad package)"
    )
    parser.add_argument("--package", required=True, type=Path, help="the models.zip")
    parser.add_argument("--outdir", required=True, type=Path, help="the folder to extract to")
    parser.add_argument("--models", nargs="*", help="the models needed (default: all)")
    parser.set_defaults(func=_unpack_command)
