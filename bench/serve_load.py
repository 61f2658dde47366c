"""Many people at once: the real web server under concurrent load.

    python bench/serve_load.py                       # 16 clients, 2000 requests, each mode
    python bench/serve_load.py --clients 4 --requests 200

Starts `python -m stages.app.serve` (waitress) on a free 127.0.0.1 port in this repository
(after `dvc repro`: it serves models/served.json), then for each mode, plain prediction and
prediction + Grad-CAM (the page's request), sends `--requests` POST /api/predict uploads of a
real ISIC JPEG (else a synthetic one) from `--clients` concurrent threads. Prints errors (any
non-200), median and p95 latency, throughput, and the server's resident memory before and
after each mode, so growth without bound would show. Only loopback traffic; bounded in count.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
UDA1_PHOTO = REPO.parent / "shared/data/isic-uda1-dev/ISIC_0000001.jpg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_bytes() -> bytes:
    if UDA1_PHOTO.exists():
        return UDA1_PHOTO.read_bytes()
    buf = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 150, 120)).save(buf, "JPEG")
    return buf.getvalue()


def multipart(photo: bytes, heatmap: bool) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
             f"filename=\"lesion.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".encode(), photo,
             b"\r\n"]
    if heatmap:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\n"
                     "1\r\n".encode())
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def start_server(port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its output goes to a file: a pipe nobody reads fills up under load (waitress logs its
    # queue depth) and blocks the server.
    proc = subprocess.Popen([sys.executable, "-m", "stages.app.serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server did not start:\n" + log.read_text()) from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start within 180 s")


def load(url: str, body: bytes, kind: str, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            request = urllib.request.Request(url, data=body, headers={"Content-Type": kind})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                    ok = response.status == 200
            except Exception as err:  # noqa: BLE001 -- every failure counts as an error
                ok = False
                with lock:
                    errors.append(str(err))
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = sorted(1000 * x for x in latencies)
    return {"ok": len(ms), "errors": len(errors), "first_error": errors[0] if errors else "",
            "median_ms": statistics.median(ms) if ms else float("nan"),
            "p95_ms": ms[int(0.95 * (len(ms) - 1))] if ms else float("nan"),
            "per_s": len(ms) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    port = free_port()
    log = Path(tempfile.mkdtemp()) / "server.log"
    server = start_server(port, log)
    memory = psutil.Process(server.pid)
    url = f"http://127.0.0.1:{port}/api/predict"
    photo = photo_bytes()
    print(f"{args.clients} clients, {args.requests} requests per mode, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("| mode | requests | errors | median ms | p95 ms | requests/s | RSS MB start → end |")
    print("|---|---|---|---|---|---|---|")
    try:
        for heatmap in (False, True):
            body, kind = multipart(photo, heatmap)
            load(url, body, kind, 2, 10)  # warm-up: compile the paths before timing
            before = memory.memory_info().rss / 1e6
            r = load(url, body, kind, args.clients, args.requests)
            after = memory.memory_info().rss / 1e6
            mode = "predict + Grad-CAM" if heatmap else "predict"
            print(f"| {mode} | {r['ok'] + r['errors']} | {r['errors']} | {r['median_ms']:.0f} "
                  f"| {r['p95_ms']:.0f} | {r['per_s']:.1f} | {before:.0f} → {after:.0f} |",
                  flush=True)
            if r["errors"]:
                print(f"  first error: {r['first_error']}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
