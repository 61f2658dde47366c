"""The download stage's sources: synthetic into data/raw, and the ISIC Archive offline."""

import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from stages import download
from stages.core.sources import isic_archive
from tests.conftest import REPO

CLOSED_PORT = "http://127.0.0.1:9/"  # nothing listens on the discard port here


def _write_params(tmp_path, params, **data):
    params["data"].update(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_synthetic_source_writes_the_isic_layout(in_tmp_repo, params):
    params["data"]["synthetic"].update(count=12, size=48)
    _write_params(in_tmp_repo, params, source="synthetic")
    download.main()
    meta = pd.read_csv(in_tmp_repo / "data/raw/metadata.csv")
    assert len(meta) == 12
    assert {"isic_id", "benign_malignant", "diagnosis", "lesion_id"} <= set(meta.columns)
    for isic_id in meta["isic_id"]:
        assert (in_tmp_repo / f"data/raw/{isic_id}.jpg").exists()
    assert pd.read_csv(in_tmp_repo / "data/raw/rejected.csv").empty


def test_local_source_copies_images_metadata_and_attribution(in_tmp_repo, params, tmp_path):
    from PIL import Image

    source = tmp_path / "isic-download"
    source.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 90, 60)).save(source / f"ISIC_000000{i}.jpg")
        rows.append({"isic_id": f"ISIC_000000{i}", "benign_malignant": "benign",
                     "diagnosis": "nevus"})
    rows.append({"isic_id": "ISIC_0000009", "benign_malignant": "benign", "diagnosis": "nevus"})
    pd.DataFrame(rows).to_csv(source / "metadata.csv", index=False)
    (source / "attribution.txt").write_text("Anonymous, CC-0\n")
    _write_params(in_tmp_repo, params, source="local", max_rejected_fraction=0.5,
                  local={"path": str(source), "layout": "auto"})
    download.main()
    raw = in_tmp_repo / "data/raw"
    assert sorted(p.name for p in raw.glob("*.jpg")) == [f"ISIC_000000{i}.jpg" for i in range(4)]
    assert (raw / "attribution.txt").read_text() == "Anonymous, CC-0\n"
    rejected = pd.read_csv(raw / "rejected.csv")
    assert len(rejected) == 1 and "ISIC_0000009" in rejected["item"][0]


def test_isic_command_carries_the_query_collections_and_limit(tmp_path):
    cmd = isic_archive.download_command(tmp_path, 'diagnosis_3:"Melanoma Invasive"', "66,70", 50)
    assert cmd[0].endswith("isic") and cmd[1:3] == ["image", "download"]
    assert cmd[3:] == ["--search", 'diagnosis_3:"Melanoma Invasive"', "--collections", "66,70",
                       "--limit", "50", str(tmp_path)]
    assert isic_archive.download_command(tmp_path, "", "", 0)[3:] == ["--limit", "0",
                                                                      str(tmp_path)]


def test_unreachable_archive_fails_fast_with_one_clear_line(tmp_path, params):
    _write_params(tmp_path, params, source="isic")
    code = ("import runpy, stages.core.sources.isic_archive as a; "
            f"a.API_URL = {CLOSED_PORT!r}; "
            "runpy.run_module('stages.download', run_name='__main__')")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "ISIC Archive" in result.stderr and "unreachable" in result.stderr
    assert "data.source: local" in result.stderr


def test_check_reachable_raises_the_project_error(monkeypatch):
    with pytest.raises(isic_archive.ArchiveUnreachableError, match="isic image download OUTDIR"):
        isic_archive.check_reachable(CLOSED_PORT, timeout=2)
