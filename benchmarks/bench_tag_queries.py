"""Tag queries and item pages, this checkout against a baseline checkout, in one run.

What issue 23's collection boundary changed on the read path: tag expressions
(one engine for ``search --tags`` and the web app's filter, user tags
included) and the web app's pages of items.  Each version builds its own
synthetic collection (``bench_search.synthetic_collection``: N items, 1539
tags with about 40 per picture above the 0.01 storage floor, the numbers of
``bench_search --parts tags``) with the same random draws, and is measured
in its own process, the versions taking turns round by round so that both
see the same machine load:

* ``Collection.search(tags=..., k=20)``: one tag; two tags; a tag and a
  ``--not`` tag; a category-qualified tag (all in SQL on ``tag_probs``); one
  tag below the storage floor (``min_prob`` 0.005: the probability matrix is scanned);
* ``CollectionService.items``: the first page of 100 without a filter, a page
  filtered by one tag (a different tag each time, so no cached answer helps),
  and by a tag and a ``not`` tag (the web app's ``/api/items``, in process,
  without HTTP).

Run::

    git archive main | tar -x -C /tmp/i2v-main        # the baseline checkout
    .venv/bin/python benchmarks/bench_tag_queries.py --baseline /tmp/i2v-main [--n 100000] [--rounds 3]

Prints a markdown table: p50 of each version (median over rounds), their
ratio, the machine and the load average.  ``--json FILE`` saves the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("search one tag", "search two tags", "search tag, not tag", "search category:tag",
         "search one tag below the floor (matrix scan)", "page of 100, no filter", "page of 100, one tag",
         "page of 100, tag and not tag")


def child(checkout: Path, db: Path, n: int, queries: int) -> dict[str, list[float]]:
    """Build (once) and measure one version's collection; runs with that version's ``src`` first on the path."""
    sys.path.insert(0, str(checkout / "benchmarks"))
    import numpy as np

    import bench_search as bs
    from illust2vec.collection import Collection
    from illust2vec.serve import CollectionService

    if not (db / "collection.sqlite").exists():
        rng = np.random.default_rng(0)
        base = np.sort(rng.beta(0.3, 12, bs.N_TAGS).astype(np.float32))[::-1].copy()

        def probs(s, e):  # as bench_search's tags part draws them
            p = (10.0 ** rng.uniform(-6, -2.05, (e - s, bs.N_TAGS))).astype(np.float32)
            hot = rng.random((e - s, bs.N_TAGS)) < base * 1.5
            p[hot] = rng.uniform(0.01, 1.0, hot.sum()).astype(np.float32)
            return p

        bs.synthetic_collection(db, n, features=None,
                                codes=lambda s, e: rng.integers(0, 256, (e - s, bs.CODE_BYTES), dtype=np.uint8),
                                probs=probs, chunk=20_000)
    out: dict[str, list[float]] = {c: [] for c in CASES}
    rng = np.random.default_rng(1)
    tags = rng.permutation(bs.N_TAGS)
    with Collection.open(db, create=False) as col:
        col.search(tags="tag0", k=20)  # warm: snapshot, tag table
        searches = [("search one tag", lambda i: dict(tags=f"tag{tags[i]}")),
                    ("search two tags", lambda i: dict(tags=f"tag{tags[i]}, tag{tags[i + 1]}")),
                    ("search tag, not tag", lambda i: dict(tags=f"tag{tags[i]}", not_tags=f"tag{tags[i + 1]}")),
                    ("search category:tag", lambda i: dict(tags=f"character:tag{512 + i % 512}")),
                    ("search one tag below the floor (matrix scan)",
                     lambda i: dict(tags=f"tag{tags[i]}", min_prob=0.005))]
        for name, kw in searches:
            reps = queries if "floor" not in name else max(3, queries // 10)
            for i in range(reps):
                t = time.perf_counter()
                col.search(k=20, **{"min_prob": 0.5, **kw(i)})
                out[name].append(time.perf_counter() - t)
    svc = CollectionService(db)
    try:
        svc.items(limit=100)
        for i in range(queries):
            t = time.perf_counter()
            svc.items(offset=(i * 100) % max(1, n - 100), limit=100)
            out["page of 100, no filter"].append(time.perf_counter() - t)
        for i in range(queries):
            t = time.perf_counter()
            svc.items(tags=f"tag{tags[200 + i]}", min_prob=0.5, limit=100)
            out["page of 100, one tag"].append(time.perf_counter() - t)
        for i in range(queries):
            t = time.perf_counter()
            svc.items(tags=f"tag{tags[400 + i]}", not_tags=f"tag{tags[600 + i]}", min_prob=0.3, limit=100)
            out["page of 100, tag and not tag"].append(time.perf_counter() - t)
    finally:
        svc.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="checkout to compare with (its src/ and benchmarks/)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, help="where the two collections are written (kept for --work reruns)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=3, metavar=("CHECKOUT", "DB", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        checkout, db, out = map(Path, args.child)
        Path(out).write_text(json.dumps(child(checkout, db, args.n, args.queries)))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="i2v-bench-tags-"))
    work.mkdir(parents=True, exist_ok=True)
    versions = {"baseline": args.baseline.resolve(), "this": HERE.parent}
    results: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CASES} for v in versions}
    for r in range(args.rounds):
        for v, checkout in (versions.items() if r % 2 == 0 else reversed(list(versions.items()))):
            env = dict(os.environ, PYTHONPATH=str(checkout / "src"))
            out = work / f"{v}-{r}.json"
            t = time.perf_counter()
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--baseline", str(args.baseline),
                            "--n", str(args.n), "--queries", str(args.queries),
                            "--child", str(checkout), str(work / f"{v}-db"), str(out)], env=env, check=True)
            print(f"round {r + 1} {v}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
            import numpy as np

            for c, times in json.loads(out.read_text()).items():
                results[v][c].append(float(np.median(times)))
    import numpy as np

    load = os.getloadavg()
    print(f"\n{args.n} items x 1539 tags, {args.queries} queries per case, {args.rounds} rounds (median of the "
          f"rounds' p50s); {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| p50 | baseline | this | this / baseline |\n| --- | --- | --- | --- |")
    rows = []
    for c in CASES:
        b, t = float(np.median(results["baseline"][c])) * 1000, float(np.median(results["this"][c])) * 1000
        rows.append({"case": c, "baseline_ms": b, "this_ms": t, "ratio": t / b if b else None})
        print(f"| {c} | {b:.2f} ms | {t:.2f} ms | {t / b:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "load": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
