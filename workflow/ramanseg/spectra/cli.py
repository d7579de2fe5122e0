"""The spectra commands: ``spectra-synthetic``, ``spectra-run``, ``spectra-summary``.

Heavy modules (torch, scikit-learn) are imported inside the commands: ``ramanseg --help``
imports this module.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

from ramanseg.config import require

LOGGER = logging.getLogger(__name__)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the spectra commands to the ``ramanseg`` parser."""
    from ramanseg.cli import add_settings_arguments

    synthetic = subparsers.add_parser(
        "spectra-synthetic", help="write the synthetic Lorentzian spectra table"
    )
    synthetic.add_argument("--out", required=True, help="the table (.parquet or .csv)")
    add_settings_arguments(synthetic)
    synthetic.set_defaults(func=run_synthetic)

    run = subparsers.add_parser(
        "spectra-run",
        help="one spectra dataset: preprocessing, 1D-CNN, SVM, 1D ResNet, metrics, figures",
    )
    run.add_argument("--dataset", required=True, help="its name in spectra.datasets")
    run.add_argument("--table", required=True, help="the spectra table (CSV or Parquet)")
    run.add_argument("--source", help="the table the 1D ResNet is pretrained on (optional)")
    run.add_argument("--outdir", required=True, help="the dataset's output folder")
    run.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_settings_arguments(run)
    run.set_defaults(func=run_dataset_command)

    summary = subparsers.add_parser(
        "spectra-summary", help="the metrics tables of every dataset as one table"
    )
    summary.add_argument("--metrics", nargs="+", required=True, help="each dataset's metrics.csv")
    summary.add_argument("--out-prefix", required=True, help="writes PREFIX.csv/.parquet/.md")
    summary.set_defaults(func=run_summary)

    pixel = subparsers.add_parser(
        "spectra-pixel-model",
        help="the per-pixel 1D-CNN of the tumour table: train, predict the test set, explain",
    )
    for option, name in (
        ("--stacks", "stack.ome.tif"),
        ("--masks", "mask.tif"),
        ("--foregrounds", "foreground.tif"),
    ):
        pixel.add_argument(
            option, required=True, nargs="+", metavar="FILE", help=f"the samples' {name}"
        )
    pixel.add_argument("--split", required=True, metavar="JSON", help="split.json")
    pixel.add_argument("--model-dir", required=True, help="results/models/<model>")
    pixel.add_argument("--outdir", required=True, help="results/predictions/<model>")
    pixel.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_settings_arguments(pixel)
    pixel.set_defaults(func=run_pixel_model)


def run_synthetic(args: argparse.Namespace) -> None:
    from ramanseg.cli import settings_from_args
    from ramanseg.fileio import atomic_path
    from ramanseg.spectra.synthetic import lorentzian_spectra

    config = settings_from_args(args)
    section = require(config, "spectra.synthetic")
    frame = lorentzian_spectra(
        int(section["spectra"]),
        int(section["groups"]),
        float(section["noise"]),
        int(require(config, "seed")),
    )
    with atomic_path(args.out) as tmp:
        if str(args.out).endswith(".parquet"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


def run_dataset_command(args: argparse.Namespace) -> None:
    import torch

    from ramanseg.cli import settings_from_args
    from ramanseg.figures import figure_bytes, table_bytes
    from ramanseg.fileio import check_output_folder, json_bytes, prefixed, write_files
    from ramanseg.spectra import figures
    from ramanseg.spectra.experiment import metrics_markdown, run_dataset
    from ramanseg.spectra.table import read_spectra_table

    torch.set_num_threads(max(1, args.threads))
    config = settings_from_args(args)
    check_output_folder(args.outdir)
    table = read_spectra_table(args.table, args.dataset)
    source = (
        read_spectra_table(args.source, f"{args.dataset} (transfer source)")
        if args.source
        else None
    )
    result = run_dataset(table, config, args.dataset, source)
    outdir = Path(args.outdir)
    data = result["data"]
    name = args.dataset
    k = int(require(config, "spectra.top_bands"))
    files: dict = {}
    files.update(
        prefixed(
            outdir / "metrics", table_bytes(result["metrics"], metrics_markdown(result["metrics"]))
        )
    )
    files.update(prefixed(outdir / "importance", table_bytes(result["importance"])))
    files.update(prefixed(outdir / "predictions", table_bytes(result["predictions"])))
    curves = histories_table(result["histories"])
    files.update(prefixed(outdir / "training_curves", table_bytes(curves)))
    figure_specs = {
        "training_curves": figures.training_curves_figure(result["histories"], name),
        "confusion": figures.confusion_figure(result["confusions"], data.classes, name),
        "spectra": figures.class_spectra_figure(data, result["importance"], k, name),
        "explanations": figures.explanation_figure(result["importance"], name),
    }
    for stem, figure in figure_specs.items():
        files.update(prefixed(outdir / stem, figure_bytes(figure)))
    buffer = io.BytesIO()
    torch.save(result["cnn"].state_dict(), buffer)
    files[outdir / "cnn.pt"] = buffer.getvalue()
    files[outdir / "model.json"] = json_bytes(
        {
            "dataset": name,
            "classes": data.classes,
            "bands": len(data.wavenumbers),
            "wavenumbers": [float(w) for w in data.wavenumbers],
            "split_sizes": {key: len(rows) for key, rows in data.split.items()},
            "selected_epoch": {
                model: int(history.loc[history["selected"], "epoch"].iloc[0])
                for model, history in result["histories"].items()
            },
            "settings": {"spectra": require(config, "spectra"), "seed": require(config, "seed")},
        }
    )
    write_files(files)
    LOGGER.info("%s: wrote %d files to %s", name, len(files), outdir)
    print(json.dumps({"dataset": name, "outdir": str(outdir)}))


def histories_table(histories):
    """The training curves of every network as one long table (column ``model``)."""
    import pandas as pd

    return pd.concat(
        [history.assign(model=model) for model, history in histories.items()], ignore_index=True
    )


def run_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from ramanseg.errors import InputError
    from ramanseg.figures import table_bytes
    from ramanseg.fileio import prefixed, write_files
    from ramanseg.spectra.experiment import metrics_markdown

    frames = []
    for path in args.metrics:
        if not Path(path).is_file():
            raise InputError(
                "the metrics table does not exist", path=path, fix="run spectra-run first"
            )
        frames.append(pd.read_csv(path))
    metrics = pd.concat(frames, ignore_index=True)
    write_files(prefixed(args.out_prefix, table_bytes(metrics, metrics_markdown(metrics))))


def run_pixel_model(args: argparse.Namespace) -> None:
    import torch

    from ramanseg.cli import settings_from_args
    from ramanseg.figures import figure_bytes, table_bytes
    from ramanseg.fileio import check_output_folder, json_bytes, prefixed, write_files
    from ramanseg.models.data import load_samples
    from ramanseg.predictions import write_prediction
    from ramanseg.preprocessed import files_by_sample
    from ramanseg.spectra.pixel import (
        importance_figure,
        pixel_band_importance,
        predict_sample,
        train_pixel_model,
    )
    from ramanseg.split import read_split

    torch.set_num_threads(max(1, args.threads))
    config = settings_from_args(args)
    for folder, option in ((args.model_dir, "--model-dir"), (args.outdir, "--outdir")):
        check_output_folder(folder, option=option)
    split = read_split(args.split)
    files = files_by_sample(stacks=args.stacks, masks=args.masks, foregrounds=args.foregrounds)
    train = load_samples(files, split["train"])
    val = load_samples(files, split["val"]) if split["val"] else []
    model, history, fisher = train_pixel_model(train, val, config)
    test = load_samples(files, split["test"])
    for sample in test:
        write_prediction(args.outdir, sample.sample_id, predict_sample(model, sample, config))
    importance = pixel_band_importance(model, test, fisher, config)
    k = 5
    methods = ("gradcam", "weights", "integrated_gradients", "integrated_gradients_abs", "fisher")
    top = {m: [float(w) for w in importance.nlargest(k, m)["wavenumber"]] for m in methods}
    model_dir = Path(args.model_dir)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    markdown = (
        "Per-pixel 1D-CNN: band importance for the tumour logit (test-sample tumour pixels) "
        "and the Fisher score of each band on the training pixels\n\n"
        + importance.to_markdown(index=False, floatfmt=".3f")
        + "\n"
    )
    files_out = {
        model_dir / "model.pt": buffer.getvalue(),
        model_dir / "training_log.csv": history.to_csv(index=False).encode(),
        **prefixed(model_dir / "band_importance", table_bytes(importance, markdown)),
        **prefixed(model_dir / "band_importance", figure_bytes(importance_figure(importance, k))),
        model_dir / "model.json": json_bytes(
            {
                "kind": "pixel_1d_cnn",
                "bands": [float(w) for w in importance["wavenumber"]],
                f"top_{k}_bands": top,
                "selected_epoch": int(history.loc[history["selected"], "epoch"].iloc[0]),
                "val_loss": float(history["val_loss"].min()),
                "train_samples": list(split["train"]),
                "settings": require(config, "spectra.pixel_model"),
            }
        ),
    }
    write_files(files_out)
    LOGGER.info("per-pixel 1D-CNN: top-%d bands by method %s", k, top)
