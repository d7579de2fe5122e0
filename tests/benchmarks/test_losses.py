"""`ramanseg bench-losses`: the activation overlap loss against ProtoSeg's KLD loss."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from ramanseg.benchmarks.losses import _kld_pairwise_loop, add_commands, run_benchmark
from ramanseg.models.prototypes import kld_diversity_loss
from tests.models.test_prototypes import kld_case


def test_pair_by_pair_loop_gives_the_batched_kld_loss_and_gradient():
    # The benchmark compares two formulations of one loss: they must agree.
    distances, target, prototype_class = kld_case()
    batched = distances.clone().requires_grad_()
    looped = distances.clone().requires_grad_()
    expected = kld_diversity_loss(batched, target, torch.tensor(prototype_class))
    loop = _kld_pairwise_loop(looped, target, torch.tensor(prototype_class))
    assert loop.item() == pytest.approx(expected.item(), rel=1e-12)
    expected.backward()
    loop.backward()
    torch.testing.assert_close(batched.grad, looped.grad)


def test_benchmark_report_and_command(tmp_path, capsys):
    report = run_benchmark(
        prototype_counts=(2, 3), size=4, batch=2, repeats=2, warmup=1, include_loop=True
    )
    assert [row["prototypes_per_class"] for row in report["results"]] == [2, 3]
    for row in report["results"]:
        assert row["ratio_kld_over_overlap"] == pytest.approx(row["kld_ms"] / row["overlap_ms"])
        assert row["kld_loop_ms"] > 0
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    out = tmp_path / "losses.json"
    argv = "bench-losses --device cpu --repeats 1 --prototypes 2 --size 4 --batch 1"
    args = parser.parse_args([*argv.split(), "--out", str(out)])
    assert args.func(args) == 0
    written = json.loads(out.read_text())
    assert written["device"] == "cpu" and "kld_loop_ms" not in written["results"][0]
    assert "kld/overlap" in capsys.readouterr().out
    with pytest.raises(ValueError, match="size"):
        run_benchmark(size=0)
