"""Tests of the interpretability analyses, and a helper for testing stage commands."""

from __future__ import annotations

import pytest

from ramanseg import cli


def register_commands(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``ramanseg.cli.main`` know the commands of ``modules`` for this test.

    A no-op for modules already in ``COMMAND_MODULES``.
    """
    monkeypatch.setattr(cli, "COMMAND_MODULES", tuple(dict.fromkeys(cli.COMMAND_MODULES + modules)))
