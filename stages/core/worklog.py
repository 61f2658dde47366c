"""Seconds of real work (feature extraction, head fits, training epochs, evaluation maths,
export's conversion), appended to the file PIPELINE_WORK_LOG names when it is set: how
bench/profile_time.py tells a run's computing from its waiting (process start-up, imports,
reading shards, DVC's bookkeeping). Unset, it records nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "PIPELINE_WORK_LOG"


@contextmanager
def work(what: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        path = os.environ.get(ENV)
        if path:
            record = {"module": Path(sys.argv[0]).stem, "target": " ".join(sys.argv[1:]),
                      "work": what, "seconds": round(time.monotonic() - started, 3)}
            with open(path, "a") as log:
                log.write(json.dumps(record) + "\n")
