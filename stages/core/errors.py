"""The errors a user can fix. Only these end a stage with one line and no traceback
(stages/core/cli.py); anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """Something in the input or params.yaml needs fixing; the message says what and how."""


class MissingInputError(PipelineError, FileNotFoundError):
    """A file an earlier stage writes is not there: the message names it and what to run."""


class DataError(PipelineError, ValueError):
    """A dataset folder or file cannot be read as asked; the message names it."""
