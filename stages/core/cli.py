"""How a stage or app is started from the command line and how it ends on a user error."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from stages.core.errors import PipelineError
from stages.core.paths import HOLDOUT


def run_stage(name: str, main: Callable[..., Any], *args: Any) -> None:
    """Run a stage's main; a PipelineError ends it with `name: message` and exit 1."""
    try:
        main(*args)
    except PipelineError as err:
        raise SystemExit(f"{name}: {err}") from None


def parse_target(description: str) -> tuple[str, str]:
    """`python -m stages.<stage> BACKBONE [FOLD]`, as dvc.yaml calls the per-model stages."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("backbone", help="a key under `models:` in params.yaml")
    parser.add_argument("fold", nargs="?", default=HOLDOUT,
                        help=f"{HOLDOUT} (default) or a cross-validation fold number")
    args = parser.parse_args()
    return args.backbone, args.fold
