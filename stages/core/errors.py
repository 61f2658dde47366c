"""Errors a user can fix, and how a stage reports them: one line, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PipelineError(Exception):
    """Something in the input or params.yaml needs fixing; the message says what and how."""


def run_stage(name: str, main: Callable[..., Any], *args: Any) -> None:
    """Run a stage's main; a bad input or param ends it with `name: message` and exit 1.

    ValueError and FileNotFoundError are included because our modules raise them with
    messages written for users (a bad folder, a missing shard); anything else is a bug and
    keeps its traceback.
    """
    try:
        main(*args)
    except (PipelineError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"{name}: {err}") from None
