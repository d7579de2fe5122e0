"""The model package (ramanseg.package): round trip and every refusal.

nnU-Net's folds in a package are covered by the workflow test (tests/test_workflow_predict.py),
which trains them.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ramanseg.cli import main
from ramanseg.errors import InputError
from ramanseg.models.folder import write_metadata
from ramanseg.models.registry import load_trained_model
from ramanseg.models.unet import UNet
from ramanseg.package import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    inspect_package,
    read_package,
    write_package,
)
from ramanseg.settings import ChannelLayout, PreprocessSettings

ARCHITECTURE = {"levels": 2, "base_channels": 4}


def model_folder(folder: Path, channels: list[str], seed: int = 0) -> Path:
    """A model folder as training leaves it: a small U-Net's weights and its model.json."""
    torch.manual_seed(seed)
    architecture = {"in_channels": len(channels), **ARCHITECTURE}
    folder.mkdir(parents=True)
    torch.save(UNet(**architecture).state_dict(), folder / "model.pt")
    write_metadata(
        folder / "model.json",
        {
            "model": "unet",
            "architecture": architecture,
            "in_channels": len(channels),
            "channel_names": channels,
            "patch_size": 16,
            "val_dice": 0.5,
        },
    )
    return folder


@pytest.fixture()
def package(tmp_path, config) -> Path:
    names = ChannelLayout.from_config(config).names
    folder = model_folder(tmp_path / "models" / "unet", names)
    return write_package(tmp_path / "models.zip", config, torch_models={"unet": folder})


def rewrite(source: Path, target: Path, changes: dict[str, bytes | None]) -> Path:
    """A copy of the zip ``source`` with members replaced (bytes) or left out (None)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = changes.get(item.filename, old.read(item.filename))
            if data is not None:
                new.writestr(item.filename, data)
    return target


def test_a_package_round_trips_weights_settings_and_versions(tmp_path, config, package):
    extracted = read_package(package, tmp_path / "out")
    assert list(extracted.models) == ["unet"]
    unet = extracted.models["unet"]
    assert unet.kind == "torch" and unet.validation_dice == 0.5
    assert extracted.channels == ChannelLayout.from_config(config)
    assert extracted.preprocess == PreprocessSettings.from_config(config)
    assert extracted.annotations.labels == config["annotations"]["classes"]
    assert extracted.format_version == FORMAT_VERSION
    assert extracted.software["torch"] and extracted.software["ramanseg"]
    model, _ = load_trained_model(unet.folder)
    original = torch.load(tmp_path / "models" / "unet" / "model.pt", weights_only=True)
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())
    # The settings file is what the workflow's preprocessing takes as --settings @FILE.
    settings = json.loads(extracted.settings_path.read_text())
    assert settings["channels"] == config["channels"] and settings["seed"] == config["seed"]


def test_the_cli_packages_and_unpacks(tmp_path, config, package, capsys):
    assert main(["unpack-package", "--package", str(package), "--outdir", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "models" / "unet" / "model.pt").is_file()


def refused(tmp_path: Path, package: Path, capsys, *extra: str) -> str:
    """Unpack through the command line; check it exits 2 with a message and writes nothing."""
    dest = tmp_path / "dest"
    code = main(["unpack-package", "--package", str(package), "--outdir", str(dest), *extra])
    error = capsys.readouterr().err
    assert code == 2, error
    assert "Traceback" not in error and str(package) in error
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dest")]
    return error


def test_a_model_trained_on_other_channels_is_refused(tmp_path, config, package, capsys):
    metadata = json.loads(zipfile.ZipFile(package).read("models/unet/model.json"))
    metadata["channel_names"] = ["a", "b"]
    bad = rewrite(
        package, tmp_path / "bad.zip", {"models/unet/model.json": json.dumps(metadata).encode()}
    )
    assert "trained on the channels ['a', 'b']" in refused(tmp_path, bad, capsys)


def test_a_package_for_other_channels_than_the_callers_is_refused(tmp_path, config, package):
    channels = ChannelLayout.from_config({"channels": config["channels"][:3]})
    with pytest.raises(InputError, match="was trained on the channels"):
        read_package(package, tmp_path / "dest", channels=channels)
    assert not (tmp_path / "dest").exists()


def test_another_format_version_is_refused(tmp_path, package, capsys):
    manifest = json.loads(zipfile.ZipFile(package).read(MANIFEST_NAME))
    manifest["format_version"] = FORMAT_VERSION + 1
    bad = rewrite(package, tmp_path / "bad.zip", {MANIFEST_NAME: json.dumps(manifest).encode()})
    error = refused(tmp_path, bad, capsys)
    assert f"format version {FORMAT_VERSION + 1}" in error and "reads format version" in error


def test_a_package_missing_weights_is_refused(tmp_path, package, capsys):
    bad = rewrite(package, tmp_path / "bad.zip", {"models/unet/model.pt": None})
    assert "weights missing" in refused(tmp_path, bad, capsys)


def test_a_corrupt_zip_is_refused(tmp_path, package, capsys):
    data = package.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    assert "not a readable zip" in refused(tmp_path, truncated, capsys)
    # A flipped byte inside a member: the zip's directory is intact, its checksum is not.
    with zipfile.ZipFile(package) as archive:
        info = archive.getinfo("models/unet/model.pt")
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    flipped = bytearray(data)
    flipped[offset] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(flipped))
    assert "damaged" in refused(tmp_path, damaged, capsys)


def test_weights_that_need_more_than_plain_tensors_are_refused(tmp_path, package, capsys):
    pickled = tmp_path / "pickled.pt"
    torch.save({"weight": np.float32(1.0)}, pickled)  # a NumPy object: not weights_only
    bad = rewrite(package, tmp_path / "bad.zip", {"models/unet/model.pt": pickled.read_bytes()})
    assert "does not load as plain weights" in refused(tmp_path, bad, capsys)


def test_a_model_folder_without_weights_cannot_be_packaged(tmp_path, config):
    names = ChannelLayout.from_config(config).names
    folder = model_folder(tmp_path / "unet", names)
    (folder / "model.pt").unlink()
    with pytest.raises(InputError, match="weights do not exist"):
        write_package(tmp_path / "models.zip", config, torch_models={"unet": folder})
    assert not (tmp_path / "models.zip").exists()


def test_inspect_reads_the_manifest_without_extracting(package):
    manifest = inspect_package(package)
    assert list(manifest["models"]) == ["unet"] and manifest["channels"]


def with_nnunet(package: Path, target: Path, dataset_json: bytes | None) -> Path:
    """A copy of ``package`` that also holds an nnU-Net model (no folds) whose
    ``dataset.json`` is ``dataset_json`` (``None``: left out, and off the manifest's list)."""
    manifest = json.loads(zipfile.ZipFile(package).read(MANIFEST_NAME))
    members = {"models/nnunet/plans.json": b"{}", "models/nnunet/dataset.json": dataset_json}
    members = {name: data for name, data in members.items() if data is not None}
    manifest["models"]["nnunet"] = {"kind": "nnunet", "folds": [], "files": sorted(members)}
    rewrite(package, target, {MANIFEST_NAME: json.dumps(manifest).encode()})
    with zipfile.ZipFile(target, "a") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def nnunet_dataset_json(channels: list[str]) -> bytes:
    """nnU-Net's dataset.json for ``channels`` (only what the package reads of it)."""
    return json.dumps({"channel_names": {str(i): name for i, name in enumerate(channels)}}).encode()


def test_an_nnunet_model_is_checked_against_the_packages_channels(
    tmp_path, config, package, capsys
):
    names = ChannelLayout.from_config(config).names
    good = with_nnunet(package, tmp_path / "good.zip", nnunet_dataset_json(names))
    extracted = read_package(good, tmp_path / "out")
    assert extracted.models["nnunet"].kind == "nnunet"
    # nnU-Net trained on fewer channels than the package lists.
    fewer = with_nnunet(package, tmp_path / "fewer.zip", nnunet_dataset_json(names[:2]))
    error = refused(tmp_path, fewer, capsys)
    assert f"nnU-Net model trained on 2 channels, but its channel list has {len(names)}" in error
    assert "snakemake package" in error  # the fix


@pytest.mark.parametrize(
    ("dataset_json", "problem"),
    [
        (None, "dataset.json does not exist"),
        (b"{not json", "dataset.json cannot be read"),
        (b'{"labels": {"background": 0}}', "has no channel_names object"),
        (b'{"channel_names": {"1": "a", "2": "b"}}', "has no channel_names object"),
        (b'["a", "b"]', "has no channel_names object"),
    ],
)
def test_an_nnunet_model_without_a_readable_dataset_json_is_refused(
    tmp_path, package, capsys, dataset_json, problem
):
    bad = with_nnunet(package, tmp_path / "bad.zip", dataset_json)
    error = refused(tmp_path, bad, capsys)
    assert "has no readable nnU-Net dataset.json" in error and problem in error
    assert "snakemake package" in error  # the fix
