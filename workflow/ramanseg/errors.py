"""Errors for bad input: each names the sample, the file, what is wrong and the fix."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input, reported with enough context to fix it.

    Args:
        problem: what is wrong, one sentence.
        sample: the sample id concerned, if any.
        path: the file concerned, if any.
        fix: what the user should do about it.
    """

    def __init__(
        self,
        problem: str,
        *,
        sample: str | None = None,
        path: str | Path | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.sample = sample
        self.path = None if path is None else Path(path)
        self.fix = fix
        parts = []
        if sample is not None:
            parts.append(f"sample {sample!r}")
        if path is not None:
            parts.append(f"file {str(path)!r}")
        where = f"{', '.join(parts)}: " if parts else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class InputErrors(InputError):
    """Several problems with the user's input, reported together, one line each.

    Args:
        errors: the problems, at least one.
    """

    def __init__(self, errors: list[InputError]) -> None:
        first = errors[0]
        super().__init__(first.problem, sample=first.sample, path=first.path, fix=first.fix)
        self.errors = list(errors)
        self.args = (
            f"{len(errors)} problems:\n" + "\n".join(f"  {error}" for error in errors)
            if len(errors) > 1
            else str(first),
        )
