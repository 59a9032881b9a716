"""Start-up time and end-to-end speed of the one-product layout, against a baseline commit.

    python benchmarks/bench_product.py [--baseline REV] [--rounds N] [--images N] [--out FILE]

Start-up: ``import illust2vec`` and ``illust2vec --help`` in fresh processes, next to a bare
``python -c pass`` (the interpreter's own start).  End to end: ``tag``, ``embed`` and ``index``
on the anime36 images (``--images N``: N copies of them under distinct names) with the i2v
oracle fixtures, and ``tag --workers 2`` (the decode pool's worker processes), this checkout against ``--baseline``
(default: the commit before the restructure, c879c33) checked out in a temporary worktree.
Runs alternate between the two trees (in ABBA order) and each figure is the median of ``--rounds``
runs, so both see the same machine load.  Prints a table and writes ``--out`` (benchmarks/results/product.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "i2v"
IMAGES = SHARED / "data" / "anime36"


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="c879c33", help="git revision to compare with (default c879c33)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=36, help="pictures per command: copies of anime36 (default 36)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "product.json")
    args = ap.parse_args()
    if not FIXTURES.is_dir():
        raise SystemExit(f"needs the shared fixtures at {SHARED}")
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-product-"))
    base_tree = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.baseline],
                   check=True, capture_output=True)
    trees = {"this": ROOT / "src", "baseline": base_tree / "src"}
    images = IMAGES
    if args.images != 36:
        images = work / "images"
        images.mkdir()
        pictures = sorted(IMAGES.glob("*.jpg"))
        for i in range(args.images):
            shutil.copy(pictures[i % len(pictures)], images / f"{i:05d}.jpg")
    n = args.images
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    try:
        tag = ["tag", str(images), "--weights", str(FIXTURES / "tag_w8_v1.caffemodel"),
               "--tags", str(FIXTURES / "tag_list.json"), "-q", "-o", "{out}/tags.json"]
        embed = ["embed", str(images), "--weights", str(FIXTURES / "feature_w16_e1024.caffemodel"), "-q",
                 "-o", "{out}/f.npy"]
        index = ["index", str(images), "--weights", str(FIXTURES / "feature_w16_e1024.caffemodel"), "-q",
                 "--db", "{out}/db{round}"]
        jobs = {
            "python -c pass": [py, "-c", "pass"],
            "import illust2vec": [py, "-c", "import illust2vec"],
            "illust2vec --help": [py, "-m", "illust2vec", "--help"],
            f"tag ({n} images)": [py, "-m", "illust2vec", *tag],
            f"tag --workers 2 ({n})": [py, "-m", "illust2vec", *tag, "--workers", "2"],
            f"embed ({n} images)": [py, "-m", "illust2vec", *embed],
            f"index ({n} images)": [py, "-m", "illust2vec", *index],
        }
        for r in range(args.rounds + 1):  # round 0 warms the model stores and page cache
            # the order alternates (ABBA), so that neither tree always runs first after the other's load
            for name, src in (list(trees.items()) if r % 2 else list(trees.items())[::-1]):
                out = work / f"out-{name}"
                out.mkdir(exist_ok=True)
                env = {**os.environ, "PYTHONPATH": str(src), "ILLUST2VEC_HOME": str(work / f"store-{name}"),
                       "ILLUST2VEC_OFFLINE": "1"}
                for job, cmd in jobs.items():
                    cmd = [c.format(out=out, round=r) for c in cmd]
                    t = timed(cmd, env, ROOT)
                    if r:
                        results[name].setdefault(job, []).append(t)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.1f}; "
          f"medians of {args.rounds} runs, seconds")
    print(f"{'':24s} {'this':>8s} {'baseline':>9s} {'ratio':>7s}")
    table = {}
    for job in results["this"]:
        a, b = statistics.median(results["this"][job]), statistics.median(results["baseline"][job])
        table[job] = {"this": a, "baseline": b, "ratio": a / b}
        print(f"{job:24s} {a:8.3f} {b:9.3f} {a / b:7.2f}")
    args.out.write_text(json.dumps({"baseline": args.baseline, "rounds": args.rounds, "images": n, "load": load,
                               "cpu": platform.processor(), "results": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
