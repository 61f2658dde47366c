"""The levers bench/lever_gain.py measures (bench/levers.yaml), and docs/research.md's table
of them, which must be the one the committed results/levers/ give."""

import subprocess
import sys

import pytest
import yaml

from stages.core.params import load_params, with_assignment
from tests.conftest import REPO, dotted_keys

SPEC = yaml.safe_load((REPO / "bench" / "levers.yaml").read_text())


@pytest.mark.parametrize("profile", sorted(SPEC))
def test_every_lever_sets_keys_params_yaml_has(profile):
    """A typo in a lever's settings would run the profile unchanged and report no gain."""
    known = set(dotted_keys(load_params(REPO / "params.yaml")))
    assert (REPO / "profiles" / f"{profile}.yaml").exists()
    for name, lever in SPEC[profile]["levers"].items():
        for setting in [*lever.get("on_top", []), *lever["set"]]:
            keys = set(dotted_keys(with_assignment({}, setting)))
            assert keys <= known, f"{profile}.{name}: {setting} sets a key params.yaml lacks"
        assert lever.get("score", "paired") in ("paired", "class_bias_gain")
        assert lever["set"] or lever.get("score") == "class_bias_gain", (
            f"{profile}.{name}: no settings, so the variant is the profile itself")


def test_docs_table_is_the_one_the_committed_results_give():
    table = subprocess.run([sys.executable, "bench/lever_gain.py", "--table"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    docs = (REPO / "docs" / "research.md").read_text()
    written = docs.split("<!-- levers:start -->\n")[1].split("\n<!-- levers:end -->")[0]
    assert written == table, (
        "docs/research.md's levers table is stale: python bench/lever_gain.py --table --write")
