"""The ISIC Archive through isic-cli: its `isic image download` writes the isic-cli layout.

Offline, isic-cli retries silently for minutes, so we ask the archive's API first, with a
short timeout, and fail with one clear line instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from stages.core.errors import PipelineError

API_URL = "https://api.isic-archive.com/api/v2/"


class ArchiveUnreachableError(PipelineError):
    """The ISIC Archive did not answer; the message says how to proceed offline."""


def check_reachable(url: str | None = None, timeout: float = 5.0) -> None:
    url = url or API_URL
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered, even if with an error status: the network path works
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ArchiveUnreachableError(
            f"The ISIC Archive ({url}) is unreachable: {reason}. Download the images on a "
            "machine with internet (`isic image download OUTDIR`), then set data.source: local "
            "and data.local.path: OUTDIR in params.yaml."
        ) from err


def download_command(out_dir: Path, search: str, collections: str, limit: int) -> list[str]:
    """The isic-cli call for the params; `isic` sits beside this Python in its environment."""
    isic = Path(sys.executable).with_name("isic")
    cmd = [str(isic) if isic.exists() else (shutil.which("isic") or "isic"), "image", "download"]
    if search:
        cmd += ["--search", search]
    if collections:
        cmd += ["--collections", collections]
    return [*cmd, "--limit", str(limit), str(out_dir)]


def download(out_dir: Path, search: str, collections: str, limit: int) -> None:
    check_reachable()
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = download_command(out_dir, search, collections, limit)
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
