"""Benchmark the web app (``illust2vec serve``) on a large synthetic collection.

Builds (once per ``--work`` folder) a collection of ``--n`` items with the real
vector sizes of the i2v models (4096-d float features, 512-byte codes, 1539 tag
probabilities with ~55 tags above 0.01 per picture), whose files are hard links
to ``--pictures`` generated JPEGs (so every item is a real picture with its own
path and content hash).  Then starts ``illust2vec serve`` in its own process and
measures:

- grid        navigation start -> the first grid page drawn with every visible
              thumbnail decoded, in headless Debian chromium (cold: thumbnails made
              on demand; warm: from the cache)
- filter      ``GET /api/items?tags=T&limit=100`` round trip, a different tag each time
              (no query cache helps), p50 / p99; also with ``not=``
- similar     ``GET /api/items/{id}/similar?k=20`` round trip, random ids, p50 / p99
              (after one warm-up query that builds the float index)
- thumbs      thumbnails served per second from the cache (4 client threads)
- memory      the server process's resident memory (VmRSS, peak VmHWM), split into
              anonymous memory (its heap) and file pages (the memory-mapped vector files
              that the exact re-rank reads; page cache the kernel can drop)

Targets (issue 15): grid < 1 s, filter p50 < 100 ms, similar p50 < 150 ms,
thumbnails >= 300/s, memory < 600 MB.

Usage:
    .venv/bin/python benchmarks/bench_serve.py [--n 100000] [--pictures 2000] [--work DIR] [--queries 100]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_search as bs
from _common import make_folder

from illust2vec.collection import Collection
from illust2vec.collection import db as _db

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def build(work: Path, n: int, pictures: int) -> Path:
    db = work / "db"
    if (db / "collection.sqlite").exists():
        with Collection.open(db, create=False) as col:
            if int(col.meta.get("rows", 0)) == n:
                print(f"reusing {db}", file=sys.stderr)
                return db
    rng = np.random.default_rng(0)
    pics = make_folder(work / "pictures", pictures, size=256)
    centers = rng.standard_normal((2000, bs.DIM), dtype=np.float32) / np.sqrt(bs.DIM) * 8
    freq = np.sort(rng.beta(0.3, 12, bs.N_TAGS).astype(np.float32))[::-1].copy()

    def probs(s, e):
        p = (10.0 ** rng.uniform(-6, -2.05, (e - s, bs.N_TAGS))).astype(np.float32)
        hot = rng.random((e - s, bs.N_TAGS)) < freq * 1.5
        p[hot] = rng.uniform(0.01, 1.0, hot.sum()).astype(np.float32)
        return p

    t = time.perf_counter()
    bs.synthetic_collection(db, n, features=lambda s, e: bs.clustered(rng, e - s, centers),
                            codes=lambda s, e: rng.integers(0, 256, (e - s, bs.CODE_BYTES), dtype=np.uint8),
                            probs=probs, chunk=10_000)
    links = work / "items"
    with Collection.open(db, create=False) as col, _db.transaction(col.conn) as c:
        recs = c.execute("SELECT id, path FROM files").fetchall()
        new = []
        for fid, path in recs:
            r = int(Path(path).stem)
            dst = links / f"{r // 1000:04d}" / f"{r:08d}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.link(pics[r % len(pics)], dst)
            new.append((str(dst), fid))
        c.executemany("UPDATE files SET path=? WHERE id=?", new)
    print(f"built {n} items in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def pct(times: list[float]) -> str:
    a = np.asarray(times) * 1000
    return f"{np.percentile(a, 50):.1f} / {np.percentile(a, 99):.1f} ms"


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def grid_time(base: str) -> float:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = b.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(base + "/")
        page.evaluate("() => window.illust2vecApp.ready")
        ms = page.evaluate("""() => new Promise(res => {
            const check = () => {
              const imgs = [...document.querySelectorAll('.cell img')];
              if (imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0)) res(performance.now());
              else requestAnimationFrame(check);
            };
            check();
        })""")
        cells = page.evaluate("() => document.querySelectorAll('.cell').length")
        # jump to the middle of the collection: time until that screen's thumbnails are drawn
        jump = page.evaluate("""() => new Promise(res => {
            const g = document.getElementById('grid'), t0 = performance.now();
            g.scrollTop = g.scrollHeight / 2;
            const check = () => {
              const imgs = [...document.querySelectorAll('.cell img')];
              const top = g.scrollTop, vis = imgs.filter(i => {
                const c = i.parentElement, y = parseFloat(c.style.top);
                return y + c.offsetHeight > top && y < top + g.clientHeight; });
              if (vis.length && vis.every(i => i.complete && i.naturalWidth > 0)) res(performance.now() - t0);
              else requestAnimationFrame(check);
            };
            requestAnimationFrame(check);
        })""")
        b.close()
    return ms / 1000, cells, jump / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pictures", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path("/tmp/illust2vec-bench-serve"))
    args = ap.parse_args()
    db = build(args.work, args.n, args.pictures)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "illust2vec", "serve", "--db", str(db), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    rows: list[tuple[str, str]] = []
    try:
        while "serving" not in (proc.stderr.readline() or "serving"):
            pass
        rng = np.random.default_rng(1)
        rows.append(("items", str(json.loads(get(base + "/api/items?limit=1"))["total"])))
        for label in ("cold", "warm"):
            s, cells, jump = grid_time(base)
            rows.append((f"first grid page visible ({label} thumbnails, {cells} cells)", f"{s * 1000:.0f} ms"))
            rows.append((f"scroll to the middle, thumbnails drawn ({label})", f"{jump * 1000:.0f} ms"))
        tags = rng.permutation(bs.N_TAGS)
        times = []
        for t in tags[: args.queries]:
            t0 = time.perf_counter()
            get(f"{base}/api/items?tags=tag{t}&min=0.5&limit=100")
            times.append(time.perf_counter() - t0)
        rows.append(("tag filter, one tag, page of 100, p50 / p99", pct(times)))
        times = []
        for a, b in zip(tags[args.queries : 2 * args.queries], tags[2 * args.queries : 3 * args.queries]):
            t0 = time.perf_counter()
            get(f"{base}/api/items?tags=tag{a}&not=tag{b}&min=0.3&limit=100")
            times.append(time.perf_counter() - t0)
        rows.append(("tag filter, tag and not tag, p50 / p99", pct(times)))
        ids = rng.integers(1, args.n + 1, args.queries + 1)
        t0 = time.perf_counter()
        get(f"{base}/api/items/{ids[0]}/similar?k=20", timeout=1800)
        rows.append(("first similar query (builds or loads the float index)", f"{time.perf_counter() - t0:.1f} s"))
        times = []
        for i in ids[1:]:
            t0 = time.perf_counter()
            get(f"{base}/api/items/{i}/similar?k=20")
            times.append(time.perf_counter() - t0)
        rows.append(("similar k=20, p50 / p99", pct(times)))
        times = []
        for i in ids[1:]:
            t0 = time.perf_counter()
            get(f"{base}/api/items/{i}/similar?k=20&binary=1")
            times.append(time.perf_counter() - t0)
        rows.append(("similar k=20 by binary codes, p50 / p99", pct(times)))
        warm = [int(i) for i in rng.integers(1, args.n + 1, 1000)]
        t0 = time.perf_counter()
        for i in warm:
            get(f"{base}/thumb/{i}")
        rows.append(("thumbnails made (cold), per second", f"{len(warm) / (time.perf_counter() - t0):.0f}"))
        done = [0]

        def worker(part):
            for i in part:
                get(f"{base}/thumb/{i}")
                done[0] += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(warm[k::4] * 2,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        rows.append(("thumbnails from the cache, per second (4 client threads)", f"{done[0] / (time.perf_counter() - t0):.0f}"))
        rows.append(("server memory: resident now / peak", f"{vm(proc.pid, 'VmRSS'):.0f} / {vm(proc.pid, 'VmHWM'):.0f} MB"))
        rows.append(("... of which anonymous (heap) / file pages (memory-mapped vectors, reclaimable)",
                     f"{vm(proc.pid, 'RssAnon'):.0f} / {vm(proc.pid, 'RssFile'):.0f} MB"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load = os.getloadavg()
    print(f"\n{args.n} items, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| measure | value |\n| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
