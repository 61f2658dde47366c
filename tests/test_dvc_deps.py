"""Every stage lists, as deps in dvc.yaml, each module of ours it imports (transitively), so
that editing a shared module reruns exactly the stages that use it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


def imported_modules(path: Path, seen: set[Path] | None = None) -> set[Path]:
    """Our modules (as repo-relative files) that `path` imports, directly or indirectly."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("stages")]
        for name in names:
            file = REPO / (name.replace(".", "/") + ".py")
            if file.exists() and file not in seen and file.name != "__init__.py":
                seen.add(file)
                imported_modules(file, seen)
    return seen


def _stages() -> list[tuple[str, str, list[str]]]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [(name, s["cmd"].split()[2], s["deps"]) for name, s in spec.items()]


@pytest.mark.parametrize("name, module, deps", _stages(), ids=[s[0] for s in _stages()])
def test_stage_deps_cover_the_code_it_imports(name, module, deps):
    entry = REPO / (module.replace(".", "/") + ".py")
    needed = {str(p.relative_to(REPO)) for p in {entry, *imported_modules(entry)}}
    covered = {n for n in needed if any(n == d or n.startswith(d.rstrip("/") + "/")
                                        for d in deps)}
    assert needed == covered, f"{name}: add to deps {sorted(needed - covered)}"
