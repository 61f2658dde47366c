"""The ISIC Archive through isic-cli: its `isic image download` writes the isic-cli layout.

Offline, isic-cli retries silently for minutes, so we ask the archive's API first, with a
short timeout, and fail with one clear line instead.

Full-archive downloads die on read timeouts, and DVC deletes a stage's outputs before it
runs, so isic-cli writes into a cache outside them, .cache/isic/<query>/, kept across runs
(like the training backups). isic-cli skips a file it already has at the right size, so a
rerun fetches only what is missing. A failed run is retried with exponential backoff; a
finished one is checked (metadata.csv written, every image decodes; a broken file is
deleted so the next try fetches it again) before download uses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

from stages.core.errors import PipelineError

API_URL = "https://api.isic-archive.com/api/v2/"
CACHE_ROOT = Path(".cache/isic")
ATTEMPTS = 4
BACKOFF_SECONDS = 15.0  # doubled after each failed attempt
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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
    """The isic-cli call for the params: the `isic` on PATH (the active environment's), else
    the one beside this Python."""
    beside = Path(sys.executable).with_name("isic")
    isic = shutil.which("isic") or (str(beside) if beside.exists() else "isic")
    cmd = [isic, "image", "download"]
    if search:
        cmd += ["--search", search]
    if collections:
        cmd += ["--collections", collections]
    return [*cmd, "--limit", str(limit), str(out_dir)]


def cache_dir(search: str, collections: str, limit: int) -> Path:
    """Where the images of this query accumulate: one folder per query."""
    key = json.dumps([search, collections, limit]).encode()
    return CACHE_ROOT / hashlib.sha256(key).hexdigest()[:16]


def broken_images(folder: Path) -> list[Path]:
    """Image files that do not decode; each is deleted, so that the next try refetches it."""
    broken = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception:  # noqa: BLE001 -- whatever Pillow raises, the file is unusable
            broken.append(path)
            path.unlink()
    return broken


def download(search: str, collections: str, limit: int) -> Path:
    """Bring the query's images and metadata into its cache folder; returns the folder."""
    check_reachable()
    folder = cache_dir(search, collections, limit)
    folder.mkdir(parents=True, exist_ok=True)
    cmd = download_command(folder, search, collections, limit)
    wait = BACKOFF_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        have = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        print(f"running (attempt {attempt} of {ATTEMPTS}, {have} images already in {folder}):",
              " ".join(cmd), flush=True)
        code = subprocess.run(cmd).returncode
        broken = broken_images(folder) if code == 0 else []
        if code == 0 and not broken and (folder / "metadata.csv").exists():
            return folder
        why = f"isic-cli exited with {code}" if code else (
            f"{len(broken)} downloaded image(s) did not decode (deleted: "
            f"{', '.join(p.name for p in broken[:3])})" if broken else "no metadata.csv")
        if attempt < ATTEMPTS:
            print(f"{why}; retrying in {wait:.0f} s (what is downloaded is kept)", flush=True)
            time.sleep(wait)
            wait *= 2
    raise ArchiveUnreachableError(
        f"the ISIC download did not complete after {ATTEMPTS} attempts ({why}). The images "
        f"downloaded so far are kept in {folder}; run `dvc repro` again to continue.")
