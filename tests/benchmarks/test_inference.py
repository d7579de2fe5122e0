"""`ramanseg bench-inference`: our models' inference throughput next to nnU-Net's."""

from __future__ import annotations

import argparse
import json

import pytest

from ramanseg.benchmarks import inference as bench_inference
from ramanseg.errors import InputError
from tests.models.test_training import (  # noqa: F401 (fixture)
    CHANNELS,
    make_sample,
    single_thread,
    tiny_run,
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Two tiny trained U-Nets (one epoch each) in one models folder."""
    root = tmp_path_factory.mktemp("models")
    samples = [make_sample(f"tr{i}", i) for i in range(2)], [make_sample("va0", 10)]
    for name, lr in (("unet", 1e-2), ("unet_b", 5e-3)):
        tiny_run(root / name, *samples, epochs=1, lr=lr)
    return root


def test_bench_inference_reports_throughput_and_ratio_to_nnunet(models_dir, tmp_path):
    nnunet = tmp_path / "nnunet_inference.json"
    nnunet.write_text(json.dumps({"seconds_per_megapixel": 4.0, "megapixels_per_second": 0.25}))
    out = tmp_path / "inference.json"
    parser = argparse.ArgumentParser()
    bench_inference.add_commands(parser.add_subparsers())
    channels = [{"name": name, "role": "raman"} for name in CHANNELS]
    args = parser.parse_args(
        ["bench-inference", "--models-dir", str(models_dir), "--models", "unet", "unet_b",
         "--nnunet-json", str(nnunet), "--size", "40", "--repeats", "1",
         "--out", str(out), "--threads", "1", "--settings",
         json.dumps({"device": "cpu", "channels": channels})]
    )  # fmt: skip
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert list(result["models"]) == ["unet", "unet_b"]
    assert result["image_size"] == 40 and result["device"] == "cpu"
    for row in result["models"].values():
        mps = row["megapixels_per_second"]
        assert 0 < mps < 1e4 and row["patch_size"] == 16
        assert row["seconds_per_megapixel"] == pytest.approx(1 / mps)
        assert row["throughput_ratio_to_nnunet"] == pytest.approx(mps / 0.25)
    assert result["nnunet"]["seconds_per_megapixel"] == 4.0
    assert "x nnU-Net" in bench_inference.format_table(result)


def test_bench_inference_names_the_missing_model_and_its_rule(tmp_path):
    with pytest.raises(InputError, match=r"model 'unetr' is not trained.*rule train_model"):
        bench_inference.bench_inference(tmp_path, ["unetr"], {"device": "cpu"}, size=32)
    bad = tmp_path / "nnunet.json"
    bad.write_text(json.dumps({"seconds_per_megapixel": 2.0}))
    with pytest.raises(InputError, match=r"megapixels_per_second.*bench-nnunet"):
        bench_inference.bench_inference(tmp_path, ["unet"], {}, nnunet_json=bad)


def test_bench_inference_rejects_a_model_of_another_channel_count(models_dir, tmp_path):
    channels = [{"name": f"band {c}", "role": "raman"} for c in range(5)]
    with pytest.raises(InputError, match=r"takes 4 channels, the configuration has 5"):
        bench_inference.bench_inference(
            models_dir, ["unet"], {"device": "cpu", "channels": channels}, size=32
        )
