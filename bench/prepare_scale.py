"""Does prepare scale? Images/s, cores used and peak memory at 1,000 and 10,000 images, and
the time of a no-op `dvc status` / `dvc repro` on a pipeline that big.

    python -m bench.prepare_scale                      # 1000 and 10000 images
    python -m bench.prepare_scale --counts 1000 3000 10000 --workdir /data/tmp/scale
    python -m bench.prepare_scale --counts 3000 --generate 10000   # the first 3000 of 10000

For the largest count it writes synthetic ISIC-like JPEGs once into WORKDIR/images-N (a skin
background, a lesion, sensor grain; 45% 600x450, 30% 1024x768, 17% 2048x1536, 8% 4000x3000,
about 0.6 MB each), and for each count a folder of hard links to its first N. Then, in a
throwaway copy of this repository (tests/pipeline_project.Project) with data.source: local
pointing there:

1. `dvc repro split` (download links the images into data/raw; split);
2. `python -m stages.prepare`, timed and sampled every 50 ms (psutil: RSS of the main process,
   of each worker, and of all together), plus the process's own getrusage (CPU time of main +
   workers / wall = cores in use), and how idle the machine's CPUs were meanwhile (/proc/stat:
   0% idle with fewer cores used than workers means other jobs held the rest);
3. `dvc commit prepare`, then `dvc repro` of the rest (tiny training: 1 epoch, small_cnn);
4. `dvc status` and `dvc repro` with nothing to do, 3 times each (median).

Peak memory should not grow with the image count: prepare streams (see stages/prepare.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from PIL import Image, ImageChops, ImageDraw

from tests.pipeline_project import Project

REPO = Path(__file__).resolve().parents[1]


SIZES = [((600, 450), 0.45), ((1024, 768), 0.30), ((2048, 1536), 0.17), ((4000, 3000), 0.08)]
_NOISE: Image.Image | None = None  # one grain field per worker, cropped at random offsets


def _lesion_photo(index: int) -> None:
    """Write image number `index` (seeded by it) into the current folder."""
    global _NOISE
    if _NOISE is None:
        _NOISE = Image.effect_noise((4096, 3072), 10).convert("RGB")
    rng = np.random.default_rng(index)
    (w, h) = SIZES[rng.choice(len(SIZES), p=[p for _, p in SIZES])][0]
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers([190, 130, 110],
                                                                       [240, 180, 160])))
    draw = ImageDraw.Draw(img)
    cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65), min(w, h) * 0.2
    draw.ellipse([cx - r * rng.uniform(0.7, 1.3), cy - r, cx + r, cy + r * rng.uniform(0.7, 1.3)],
                 fill=tuple(int(c) for c in rng.integers([70, 40, 20], [140, 90, 60])))
    draw.ellipse([cx - r / 3, cy - r / 3, cx + r / 2, cy + r / 3],
                 fill=tuple(int(c) for c in rng.integers([30, 20, 10], [80, 60, 40])))
    x, y = int(rng.integers(0, 4096 - w + 1)), int(rng.integers(0, 3072 - h + 1))
    img = ImageChops.add(img, _NOISE.crop((x, y, x + w, y + h)), 1.0, -128)
    img.save(f"ISIC_{index:07d}.jpg", quality=90)


def _chdir(folder: str) -> None:
    os.chdir(folder)


def generate(folder: Path, count: int) -> None:
    """WORKDIR/images-N: N JPEGs + an isic-cli metadata.csv (30% malignant, some lesions twice)."""
    if (folder / "metadata.csv").exists() and len(pd.read_csv(folder / "metadata.csv")) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with Pool(os.cpu_count(), initializer=_chdir, initargs=(str(folder),)) as pool:
        for done, _ in enumerate(pool.imap_unordered(_lesion_photo, range(count), 64), 1):
            if done % 1000 == 0:
                print(f"  generated {done}/{count}", flush=True)
    rng = np.random.default_rng(0)
    malignant = rng.random(count) < 0.3
    pd.DataFrame({
        "isic_id": [f"ISIC_{i:07d}" for i in range(count)],
        "benign_malignant": np.where(malignant, "malignant", "benign"),
        "diagnosis": np.where(malignant, "melanoma", "nevus"),
        "lesion_id": [f"IL_{i - (i % 10 == 1):07d}" for i in range(count)],  # 10% repeats
    }).to_csv(folder / "metadata.csv", index=False)
    print(f"  {count} images in {time.perf_counter() - start:.0f} s", flush=True)


def subset(full: Path, folder: Path, count: int) -> Path:
    """The first `count` images of `full` as hard links, with their metadata rows."""
    if not (folder / "metadata.csv").exists():
        folder.mkdir(parents=True, exist_ok=True)
        meta = pd.read_csv(full / "metadata.csv").head(count)
        for isic_id in meta["isic_id"]:
            os.link(full / f"{isic_id}.jpg", folder / f"{isic_id}.jpg")
        meta.to_csv(folder / "metadata.csv", index=False)
    return folder


MEASURE = """
import json, resource, sys
from stages import prepare
from stages.core.cli import run_stage
try:
    run_stage("prepare", prepare.main)  # what `python -m stages.prepare` runs
finally:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                      "maxrss_main_mb": me.ru_maxrss / 1024,
                      "maxrss_worker_mb": kids.ru_maxrss / 1024}), file=sys.stderr)
"""


def cpu_times() -> tuple[float, float]:
    """(idle, total) jiffies of the whole machine since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def measure_prepare(project: Project) -> dict:
    proc = psutil.Popen([sys.executable, "-c", MEASURE], cwd=project.root, env=project.env(),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    load_before, (idle_before, total_before) = os.getloadavg()[0], cpu_times()
    start = time.perf_counter()
    peak = {"main": 0, "worker": 0, "total": 0}
    while proc.poll() is None:
        try:
            main = proc.memory_info().rss
            kids = [c.memory_info().rss for c in proc.children(recursive=True)]
        except psutil.Error:
            continue
        peak = {"main": max(peak["main"], main), "worker": max([peak["worker"], *kids]),
                "total": max(peak["total"], main + sum(kids))}
        time.sleep(0.05)
    wall = time.perf_counter() - start
    idle, total = (now - before for now, before in zip(cpu_times(), (idle_before, total_before),
                                                        strict=True))
    stderr = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"prepare failed:\n{stderr}")
    usage = json.loads(stderr.strip().splitlines()[-1])
    # cores_used below the worker count means waiting: for I/O (then the machine sits idle)
    # or for CPUs that other processes hold (then it does not, and load_avg > cores).
    return {"wall_s": wall, "cores_used": usage["cpu_s"] / wall,
            "machine_idle_pct": 100 * idle / total,
            "cpu_ms_per_image": 1000 * usage["cpu_s"] / project_count(project),
            "load_avg": max(load_before, os.getloadavg()[0]),
            **{f"peak_{k}_mb": v / 2**20 for k, v in peak.items()},
            "maxrss_main_mb": usage["maxrss_main_mb"],
            "maxrss_worker_mb": usage["maxrss_worker_mb"]}


def project_count(project: Project) -> int:
    return len(pd.read_csv(project.root / "data/interim/split.csv"))


def timed(project: Project, *args: str) -> float:
    start = time.perf_counter()
    project.dvc(*args)
    return time.perf_counter() - start


def bench(count: int, source: Path, workdir: Path) -> dict:
    root = workdir / f"repo-{count}"
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    project = Project.copy_of_repo(root, {
        "data": {"source": "local", "local": {"path": str(source), "layout": "isic-cli"}},
        "augment": {"copies": 1},
        "backbones": ["small_cnn"],
        "models": {"small_cnn": {"train": {"epochs": 1}, "finetune": {"epochs": 1}}},
    })
    started = time.perf_counter()
    project.dvc("repro", "split")
    upstream = time.perf_counter() - started
    prep = measure_prepare(project)
    project.dvc("commit", "--force", "prepare")
    started = time.perf_counter()
    project.dvc("repro")
    rest = time.perf_counter() - started
    status = [timed(project, "status") for _ in range(3)]
    repro = [timed(project, "repro") for _ in range(3)]
    assert "up to date" in project.dvc("status").stdout
    raw_mb = sum(p.stat().st_size for p in (root / "data/raw").iterdir()) / 2**20
    return {"images": count, "raw_mb": raw_mb, "download+split_s": upstream, **prep,
            "images_per_s": count / prep["wall_s"], "rest_of_repro_s": rest,
            "noop_status_s": statistics.median(status), "noop_repro_s": statistics.median(repro)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare-scale"))
    parser.add_argument("--generate", type=int, help="images to generate (default: the most "
                        "of --counts); smaller counts use the first N of them")
    args = parser.parse_args()
    total = args.generate or max(args.counts)
    full = args.workdir / f"images-{total}"
    print(f"generating {total} images in {full}", flush=True)
    generate(full, total)
    rows = []
    for count in args.counts:
        source = full if count == total else subset(full, args.workdir / f"images-{count}",
                                                    count)
        print(f"benchmarking {count} images", flush=True)
        rows.append(bench(count, source, args.workdir))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{os.cpu_count()} cores, prepare.size from params.yaml\n")
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"
                                for v in row.values()) + " |")


if __name__ == "__main__":
    main()
