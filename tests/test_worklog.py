"""The work log: silent unless PIPELINE_WORK_LOG names a file, then one record per piece."""

import json

from stages.core import worklog


def test_records_only_when_asked(tmp_path, monkeypatch):
    log = tmp_path / "work.jsonl"
    monkeypatch.delenv(worklog.ENV, raising=False)
    with worklog.work("features"):
        pass
    assert not log.exists()
    monkeypatch.setenv(worklog.ENV, str(log))
    with worklog.work("head fit"):
        sum(range(1000))
    record = json.loads(log.read_text())
    assert record["work"] == "head fit" and record["seconds"] >= 0
