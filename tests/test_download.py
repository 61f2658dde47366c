"""The download stage's sources: synthetic into data/raw, and the ISIC Archive offline."""

import os
import subprocess
import sys
import time
from pathlib import Path

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


STAND_IN = """#!{python}
# A stand-in for isic-cli's `isic image download ... OUTDIR`: like isic-cli it skips images it
# already has; it logs what it fetched, and on its first call dies after three images.
import sys, pathlib
from PIL import Image
out, log = pathlib.Path(sys.argv[-1]), pathlib.Path({log!r})
calls = log.read_text().count("call") if log.exists() else 0
with log.open("a") as f:
    f.write("call\\n")
    for i in range(6):
        target = out / f"ISIC_{{i:07d}}.jpg"
        if target.exists():
            continue
        if calls == 0 and i == 3:
            sys.exit("read timeout")
        Image.new("RGB", (16, 16), (120, 80, 60 + i)).save(target)
        f.write(f"fetched {{target.name}}\\n")
(out / "metadata.csv").write_text("isic_id,benign_malignant,diagnosis\\n" + "".join(
    f"ISIC_{{i:07d}},{{'malignant' if i % 2 else 'benign'}},\\n" for i in range(6)))
"""


def _isic_query(params) -> tuple[str, str, int]:
    isic = params["data"]["isic"]
    return isic["search"] or "", str(isic["collections"] or ""), isic["limit"]


def _stand_in_isic(tmp_path, monkeypatch) -> Path:
    log = tmp_path / "isic-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "isic").write_text(STAND_IN.format(python=sys.executable, log=str(log)))
    (bin_dir / "isic").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(isic_archive, "check_reachable", lambda: None)
    monkeypatch.setattr(isic_archive, "BACKOFF_SECONDS", 0.0)
    return log


def test_a_dropped_download_resumes_and_fetches_only_what_was_missing(in_tmp_repo, params,
                                                                     monkeypatch, tmp_path):
    log = _stand_in_isic(tmp_path, monkeypatch)
    _write_params(in_tmp_repo, params, source="isic")
    monkeypatch.setattr(isic_archive, "ATTEMPTS", 1)  # the first run gives up at once
    with pytest.raises(isic_archive.ArchiveUnreachableError, match="kept in .cache/isic"):
        download.main()
    monkeypatch.setattr(isic_archive, "ATTEMPTS", 4)
    download.main()  # the rerun, as `dvc repro` would (data/raw was deleted in between)
    fetched = [line.split()[1] for line in log.read_text().splitlines() if "fetched" in line]
    assert fetched == [f"ISIC_000000{i}.jpg" for i in range(6)]  # each image exactly once
    assert log.read_text().count("call") == 2
    raw = in_tmp_repo / "data/raw"
    assert sorted(p.name for p in raw.glob("*.jpg")) == fetched


def test_a_failed_attempt_is_retried_and_a_broken_image_refetched(in_tmp_repo, params,
                                                                 monkeypatch, tmp_path):
    log = _stand_in_isic(tmp_path, monkeypatch)
    _write_params(in_tmp_repo, params, source="isic")
    cache = isic_archive.cache_dir(*_isic_query(params))
    cache.mkdir(parents=True)
    (cache / "ISIC_0000005.jpg").write_bytes(b"\xff\xd8 cut short")  # a truncated file
    download.main()  # attempt 1 dies, attempt 2 completes, the check deletes the bad file,
    assert log.read_text().count("call") == 3  # and attempt 3 fetches it again
    assert (in_tmp_repo / "data/raw/ISIC_0000005.jpg").stat().st_size > 100
