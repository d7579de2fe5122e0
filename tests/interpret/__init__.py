"""Tests of the interpretability analyses, and a helper for testing stage commands."""

from __future__ import annotations

import copy

import pytest
import yaml

from ramanseg import cli, config

#: The configuration schema entries of the evaluation and interpretation steps, as proposed
#: for workflow/schemas/config.schema.yaml (top-level ``properties``).
SCHEMA_FRAGMENT = yaml.safe_load(
    """
evaluate:
  type: object
  description: Evaluation of the test-set predictions (paper section 4).
  additionalProperties: false
  default: {}
  properties:
    pixels:
      enum: [tissue, annotated, all]
      default: tissue
      description: >-
        pixels counted by Dice, sensitivity and specificity: tissue (foreground.tif or
        annotated), annotated only, or every pixel of the image
interpret:
  type: object
  description: Interpretability analyses (paper section 4.1).
  additionalProperties: false
  default: {}
  properties:
    sample:
      type: string
      minLength: 1
      default: auto
      description: test sample to explain; auto = largest nnU-Net false-positive area
    target_pixel:
      oneOf:
        - {const: auto}
        - {type: array, items: {type: integer, minimum: 0}, minItems: 2, maxItems: 2}
      default: auto
      description: "[y, x] in image pixels (needs `sample`); auto = deepest false positive"
    gradcam_layer:
      type: string
      minLength: 1
      default: auto
      description: >-
        module path in the nnU-Net network (e.g. encoder.stages.2); auto = deepest encoder
        stage whose feature map is at least 16 px on each side
    ig_steps: {type: integer, minimum: 2, default: 32}
    ig_baseline: {enum: [blur, noise, zeros], default: blur}
    ig_baseline_sigma: {type: number, exclusiveMinimum: 0, default: 8.0, description: pixels}
    internal_batch_size: {type: integer, minimum: 1, default: 8}
    ablation_class:
      type: string
      minLength: 1
      default: Epithelium
      description: annotation class whose region Feature Ablation masks per channel
    output: {enum: [logit, margin], default: logit}
    display_channel:
      type: string
      minLength: 1
      default: auto
      description: channel under the heatmaps; auto = Raman band nearest 2930 cm-1
    kmeans_n_init: {type: integer, minimum: 1, default: 10}
"""
)


def register_commands(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``ramanseg.cli.main`` know the commands of ``modules`` for this test.

    A no-op for modules already in ``COMMAND_MODULES``.
    """
    monkeypatch.setattr(cli, "COMMAND_MODULES", tuple(dict.fromkeys(cli.COMMAND_MODULES + modules)))


def extend_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validate configurations against the schema plus :data:`SCHEMA_FRAGMENT` (entries the
    schema already has are kept as they are)."""
    load_schema = config.load_schema

    def extended(name: str) -> dict:
        schema = load_schema(name)
        if name == "config":
            schema = copy.deepcopy(schema)
            for key, value in SCHEMA_FRAGMENT.items():
                schema["properties"].setdefault(key, value)
        return schema

    monkeypatch.setattr(config, "load_schema", extended)
