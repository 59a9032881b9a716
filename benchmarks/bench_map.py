"""Benchmark of the map stages on synthetic clustered 4096-d features.

Reduction time (wall and CPU) and map quality (trustworthiness, k-NN
preservation against the cosine feature space, on a sample of query points for
big N) for illust2vec's pipeline (L2-normalise, randomized PCA 50, FAISS exact
kNN, openTSNE FFT), next to openTSNE's defaults and scikit-learn's TSNE on the
same PCA-50 input (both optional: they are slow), plus PNG render time and peak
memory for N thumbnails, and grid snapping time.

    python benchmarks/bench_map.py                         # 1k, 10k, 20k, 100k; baselines up to 20k
    python benchmarks/bench_map.py --sizes 1000,10000 --skip-sklearn
    python benchmarks/bench_map.py --sizes 0 --render 10000   # only the renderer
    nice -n 10 python benchmarks/bench_map.py --json bench_map.json

Numbers depend on the machine and its load; run the baselines in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # map_synthetic
SHARED = ROOT.parent / "shared"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timer:
    def __enter__(self):
        self.t, self.c = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        self.cpu = _cpu() - self.c


def _quality(x, emb, labels, queries):
    from illust2vec.maps.quality import map_quality

    q = map_quality(x, emb, labels, k=10, label_k=5, max_queries=queries, seed=0)
    return {k: round(q[k], 4) for k in ("trustworthiness", "knn_preservation", "knn_label_accuracy_map")} | {
        "queries": q["queries"]}


def bench_reduce(n: int, args) -> list[dict]:
    from illust2vec.maps.reduce import l2_normalize, pca, reduce
    from map_synthetic import clustered_features

    x, y = clustered_features(n, args.dim, n_clusters=args.clusters, seed=0)
    labels = [int(v) for v in y]
    queries = min(n, args.queries if n <= 20_000 else args.queries // 2)
    rows = []
    with Timer() as t:
        emb = reduce(x, method="tsne", seed=0, n_jobs=args.jobs)
    rows.append({"n": n, "impl": "illust2vec", "wall_s": round(t.wall, 1), "cpu_s": round(t.cpu, 1)}
                | _quality(x, emb, labels, queries))
    print(json.dumps(rows[-1]), flush=True)
    baselines = []
    if not args.skip_opentsne and n <= args.baseline_max:
        baselines.append("openTSNE-defaults")
    if not args.skip_sklearn and n <= args.baseline_max:
        baselines.append("sklearn")
    if baselines:
        with Timer() as tp:
            p50 = pca(l2_normalize(x), 50, seed=0)
    for name in baselines:
        with Timer() as t:
            if name == "sklearn":
                from sklearn.manifold import TSNE

                emb = TSNE(n_components=2, init="pca", random_state=0, n_jobs=args.jobs).fit_transform(p50)
            else:
                from openTSNE import TSNE

                emb = np.asarray(TSNE(n_jobs=args.jobs, random_state=0).fit(p50))
        rows.append({"n": n, "impl": name, "wall_s": round(t.wall + tp.wall, 1), "cpu_s": round(t.cpu + tp.cpu, 1)}
                    | _quality(x, emb, labels, queries))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bench_grid(n: int) -> dict:
    from illust2vec.maps.grid import snap_to_grid

    pos = np.random.default_rng(0).standard_normal((n, 2))
    with Timer() as t:
        layout = snap_to_grid(pos)
    assert len({tuple(c) for c in layout.cells.tolist()}) == n
    return {"n": n, "impl": "grid", "wall_s": round(t.wall, 2), "cpu_s": round(t.cpu, 2)}


RENDER_CHILD = r"""
import sys, time, json, resource
from pathlib import Path
import numpy as np
from illust2vec.maps.options import RenderOptions
from illust2vec.maps.render import render_map
n, out = int(sys.argv[1]), sys.argv[2]
src = sorted(Path(sys.argv[3]).glob("*.jpg"))
paths = [src[i % len(src)] for i in range(n)]
pos = np.random.default_rng(0).standard_normal((n, 2))
labels = [str(i % 25) for i in range(n)]
t = time.perf_counter()
c0 = resource.getrusage(resource.RUSAGE_SELF)
r = render_map(out, pos, paths, labels=labels, options=RenderOptions(title=f"{n} thumbnails", max_size=4096))
wall = time.perf_counter() - t
c1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
print(json.dumps({"n": n, "impl": "render-png", "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "size": list(r.size),
                  "thumb_px": r.thumb_size,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def bench_render(n: int, out_dir: Path) -> dict:
    out = out_dir / f"render_{n}.png"
    res = subprocess.run([sys.executable, "-c", RENDER_CHILD, str(n), str(out), str(SHARED / "data" / "anime36")],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,20000,100000", help="comma-separated N (0 = none)")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--clusters", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--queries", type=int, default=2000, help="query points for the quality measures")
    ap.add_argument("--baseline-max", type=int, default=20_000, help="largest N for the baselines")
    ap.add_argument("--skip-sklearn", action="store_true", help="skip scikit-learn's TSNE (slow)")
    ap.add_argument("--skip-opentsne", action="store_true", help="skip openTSNE with default settings")
    ap.add_argument("--render", default="10000", help="comma-separated N for the PNG renderer (0 = skip)")
    ap.add_argument("--grid", default="10000,100000", help="comma-separated N for grid snapping (0 = skip)")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/illust2vec-bench-map"))
    ap.add_argument("--json", type=Path, help="write all rows here")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_at_start": os.getloadavg()[0]}
    print(json.dumps(info), flush=True)
    for n in [int(s) for s in args.sizes.split(",") if int(s) > 0]:
        rows.extend(bench_reduce(n, args))
    for n in [int(s) for s in args.grid.split(",") if int(s) > 0]:
        rows.append(bench_grid(n))
        print(json.dumps(rows[-1]), flush=True)
    for n in [int(s) for s in args.render.split(",") if int(s) > 0]:
        rows.append(bench_render(n, args.out_dir))
        print(json.dumps(rows[-1]), flush=True)
    info["load_at_end"] = os.getloadavg()[0]
    print("\n| N | implementation | wall s | CPU s | trustworthiness | kNN preservation | kNN label acc. |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "trustworthiness" in r:
            print(f"| {r['n']} | {r['impl']} | {r['wall_s']} | {r['cpu_s']} | {r['trustworthiness']} | "
                  f"{r['knn_preservation']} | {r['knn_label_accuracy_map']} |")
        else:
            mem = f"peak RSS {r['peak_rss_mb']} MB" if "peak_rss_mb" in r else ""
            print(f"| {r['n']} | {r['impl']} | {r['wall_s']} | {r.get('cpu_s', '')} | | | {mem} |")
    print(json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
