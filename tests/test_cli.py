import argparse
import importlib
import subprocess
import sys

import pytest

from ramanseg import cli


@pytest.mark.parametrize("module", cli.COMMAND_MODULES)
def test_command_map_names_exactly_the_commands_each_module_defines(module):
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(module).add_commands(subparsers)
    assert sorted(subparsers.choices) == sorted(c for c, m in cli.COMMANDS.items() if m == module)


def test_a_command_imports_only_its_own_module():
    # In a fresh interpreter: `split --help` must not pull in other stages' modules.
    code = (
        "import sys\n"
        "from ramanseg import cli\n"
        "try:\n"
        "    cli.main(['split', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'sklearn', 'ramanseg.preprocess', 'ramanseg.models.cli')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_command_lists_all_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    error = capsys.readouterr().err
    assert "invalid choice" in error and "nnunet-train" in error and "bench-dag" in error


def test_torch_threads_and_device_of_the_pytorch_commands():
    import torch

    from ramanseg.config import ConfigError

    parser = argparse.ArgumentParser()
    cli.add_torch_threads_argument(parser)
    assert parser.parse_args([]).threads is None
    assert parser.parse_args(["--threads", "3"]).threads == 3
    before = torch.get_num_threads()
    try:
        cli.set_torch_threads(None)
        assert torch.get_num_threads() == before
        cli.set_torch_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="--threads must be at least 1, got 0"):
            cli.set_torch_threads(0)
    finally:
        torch.set_num_threads(before)
    assert cli.configured_device({}).type in ("cpu", "cuda")  # auto
    assert cli.configured_device({"device": "cpu"}) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: device must be auto, cpu"):
        cli.configured_device({"device": "tpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            cli.configured_device({"device": "cuda"})


def test_split_data_arguments_with_and_without_the_ground_truth():
    argv = ["--stacks", "p/S1/stack.ome.tif", "--split", "split.json"]
    labelled = argparse.ArgumentParser()
    cli.add_split_data_arguments(labelled)
    truth = ["--masks", "p/S1/mask.tif", "--foregrounds", "p/S1/foreground.tif"]
    args = labelled.parse_args([*argv, *truth])
    assert args.stacks == ["p/S1/stack.ome.tif"] and args.masks == ["p/S1/mask.tif"]
    assert args.split == "split.json"
    with pytest.raises(SystemExit):  # the ground truth is required
        labelled.parse_args(argv)
    unlabelled = argparse.ArgumentParser()
    cli.add_split_data_arguments(unlabelled, labels=False)
    assert not hasattr(unlabelled.parse_args(argv), "masks")
    with pytest.raises(SystemExit):  # and refused where nothing learns from it
        unlabelled.parse_args([*argv, *truth])
