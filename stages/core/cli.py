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


def parse_target(description: str) -> tuple[str, str | None]:
    """`python -m stages.<stage> BACKBONE [FOLD]`: dvc.yaml runs every fold of a backbone in
    one process; FOLD runs just that one (to look into it, outside DVC)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("backbone", help="a key under `models:` in params.yaml")
    parser.add_argument("fold", nargs="?", default=None,
                        help=f"{HOLDOUT} or a cross-validation fold number (default: every "
                             "fold in params.yaml's `folds`)")
    args = parser.parse_args()
    return args.backbone, args.fold
