"""Collection search at scale, and the cost of indexing over plain inference.

Run:  .venv/bin/python benchmarks/bench_search.py [--parts float,binary,tags,ivf,overhead] [--n-float 100000]
      [--n-binary 1000000] [--n-ivf 1000000] [--queries 200] [--rounds 1] [--workdir DIR] [--reuse]

Parts (all run by default except ``ivf1m``):

* ``float``: a collection of N synthetic 4096-d float features (clusters plus
  variation in a 128-d subspace, so neighbours exist) written straight into
  the collection files; first search builds the index the collection picks
  for N (4-bit PQ FastScan for 20k-2M rows); then p50/p99 latency of
  ``Collection.search(vector=..., k=20)`` (end to end: candidates, exact
  re-rank on the stored vectors, SQLite path lookup) and recall@20 against
  exact numpy ground truth, searched in one thread and with one shard per
  CPU in threads, taking turns query by query with a re-implementation of
  index format 1 (PCA-256 float32 flat, re-rank on copied rows) as the
  same-run baseline.  The same for the PCA256+IVF index used above 2M
  rows, and the raw latency of an exact 4096-d ``IndexFlatIP`` scan.
  The synthetic features are a *hard* case for a PCA projection: the 2000
  cluster centres spread their energy evenly over ~2000 directions (see
  docs/benchmarks.md, Collections, for how this compares with real features).
* ``binary``: N random 512-byte codes (4096 bits) in a collection (the float
  feature file is a sparse file of zeros there: binary search never reads it);
  ``Collection.search(vector=code, binary=True, k=20)`` latency (one shard per
  CPU searched in threads vs the same shards in one thread vs format 1's single
  ``IndexBinaryFlat``, taking turns), exactness against numpy, build time.
* ``real``: the float candidates on real features (the bundled EfficientNet-Lite0
  on anime36 and randomly cropped / flipped / recoloured copies): shape of
  the data next to the synthetic set's, recall@20 by number of candidates.
* ``tags``: N rows of synthetic tag probabilities (1539 tags, about 40 per
  image above the 0.01 storage floor), SQL tag query latency, disk per image.
* ``ivf1m``: the candidate indexes for large collections at 1M x 4096 float
  (vectors generated in chunks from per-chunk seeds and streamed into the
  indexes and an exact ground truth in one pass, never stored: 16 GB would
  not fit this machine): PCA-256 + IVF, the full-vector 4-bit PQ FastScan
  and (``--ivfpq-nlist``, 0 = skip) IVF + PQ FastScan; candidate recall of
  the exact top 20, candidate-search latency, build time, memory per row,
  and the exact re-rank's cost from a memory map of a 100k-row sample.
* ``overhead``: ``Collection.add`` over a folder vs plain inference
  (``pipeline.iter_batches`` as ``illust2vec embed`` runs it) with the same model.

Prints a markdown table; ``--json FILE`` saves the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from illust2vec.collection import Collection
from illust2vec.collection import db as _db
from illust2vec.collection import index as _index
from illust2vec.collection.vectors import HEADER_SIZE, VectorFile

SHARED = Path(__file__).resolve().parents[2] / "shared"
DIM = 4096
CODE_BYTES = 512
N_TAGS = 1539
ROWS: list[tuple[str, str, str]] = []
REUSE = False


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_queries(fn, qs) -> dict[int, tuple[float, float, float]]:
    """``{omp threads: (wall p50 ms, wall p99 ms, CPU-time p50 ms)}`` of ``fn(q)`` over ``qs``.

    CPU time (all threads of this process) is what a query costs on an idle
    machine; wall time on a shared, loaded machine can be several times more.
    """
    import faiss

    out = {}
    default = faiss.omp_get_max_threads()
    for threads in sorted({default, 1}, reverse=True):
        faiss.omp_set_num_threads(threads)
        wall, cpu = [], []
        for q in qs:
            t, c = time.perf_counter(), time.process_time()
            fn(q)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        p50, p99 = percentiles(wall)
        out[threads] = (p50, p99, float(np.median(cpu)) * 1000)
    faiss.omp_set_num_threads(default)
    return out


def row_latency(what: str, res: dict[int, tuple[float, float, float]], note: str = "") -> None:
    for threads, (p50, p99, cpu) in res.items():
        row(f"{what} ({threads} thread{'s' if threads > 1 else ''})",
            f"{p50:.1f} / {p99:.1f} ms (CPU {cpu:.1f} ms)", note)


def latency_rows(fns: dict[str, object], qs, rounds: int, what: str, note: str = "") -> None:
    """Time ``fns`` interleaved and add a row per variant (``what`` has a ``{}`` for its name)."""
    la = load_avg()
    res = time_interleaved(fns, qs, rounds)
    for name, (p50, p99, cpu) in res.items():
        row(what.format(name), f"{p50:.1f} / {p99:.1f} ms (CPU {cpu:.1f} ms)", f"({note}{la} before, {load_avg()} after)")


def time_interleaved(fns: dict[str, object], qs, rounds: int = 1) -> dict[str, tuple[float, float, float]]:
    """``{name: (wall p50 ms, wall p99 ms, CPU-time p50 ms)}``; the variants take turns on every query
    (repeated ``rounds`` times), so a load change on the shared machine hits all of them alike."""
    from threadpoolctl import threadpool_limits

    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    # BLAS at one thread for every variant: OpenBLAS threads spin for a while after a call and would
    # take CPU from whichever variant runs next (format 1's re-rank multiplies with BLAS)
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(rounds):
            for q in qs:
                for name, fn in fns.items():
                    t, c = time.perf_counter(), time.process_time()
                    fn(q)
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.process_time() - c)
    out = {}
    for name in fns:
        p50, p99 = percentiles(wall[name])
        out[name] = (p50, p99, float(np.median(cpu[name])) * 1000)
    return out


def load_avg() -> str:
    return "load average %.2f / %.2f / %.2f" % os.getloadavg()


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value} {note}", file=sys.stderr, flush=True)


_BASIS: dict[int, np.ndarray] = {}


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray, noise: float = 0.02) -> np.ndarray:
    """Synthetic features with structure like real ones: cluster centre + variation in a
    128-d subspace (decaying spectrum) + a little isotropic noise."""
    d = centers.shape[1]
    if d not in _BASIS:
        b = np.random.default_rng(1).standard_normal((128, d), dtype=np.float32) / np.sqrt(d)
        _BASIS[d] = b * np.linspace(1.0, 0.2, 128, dtype=np.float32)[:, None]
    lab = rng.integers(0, len(centers), n)
    z = rng.standard_normal((n, 128), dtype=np.float32)
    x = centers[lab] + z @ _BASIS[d] + noise * rng.standard_normal((n, d), dtype=np.float32)
    return x.astype(np.float32)


def synthetic_collection(path: Path, n: int, *, features, codes, probs=None, chunk: int = 50_000) -> None:
    """Write a collection of ``n`` synthetic rows directly (no inference).

    ``features``/``codes``/``probs`` are callables ``(start, stop) -> array``
    (``features=None`` writes a sparse all-zero feature file).
    """
    if REUSE and (path / "collection.sqlite").exists():
        with Collection.open(path, create=False) as col:
            if int(col.meta.get("rows", 0)) == n and bool(probs) == bool(col.taggers()):
                print(f"    reusing {path}", file=sys.stderr)
                return
    shutil.rmtree(path, ignore_errors=True)
    # Written straight into the collection's files (the layout of collection/db.py, schema 3), not through
    # CollectionStore: at 1M rows the store would write 16 GB of features where this leaves a sparse file.
    col = Collection.open(path)
    c = col.conn
    with _db.transaction(c):
        for k, v in {"embedder_name": "synthetic", "embedder_identity": "sha256:synthetic", "feature_dim": DIM,
                     "code_bytes": CODE_BYTES, "prob_floor": 0.01}.items():
            _db.set_meta(c, k, v)
        if probs:
            c.execute("INSERT INTO taggers(id, name, identity, tag_base, tag_count, file, rows, added_at) "
                      "VALUES (1, 'synthetic-tags', 'sha256:synthetic-tags', 0, ?, 'prob.f32', 0, 0)", (N_TAGS,))
            c.executemany("INSERT INTO tags(id, name, category) VALUES (?, ?, ?)",
                          [(i, f"tag{i}", "general" if i < 512 else "character" if i < 1024 else
                            "copyright" if i < 1536 else "rating") for i in range(N_TAGS)])
    vfs = {"feature": col.view.vector_file("feature"), "codes": col.view.vector_file("codes")}
    if probs:
        vfs["prob"] = col.view.vector_file("prob")
    if features is None:
        with open(vfs["feature"].path, "r+b") as fh:
            fh.truncate(HEADER_SIZE + n * DIM * 4)  # sparse: zeros, no disk blocks
    now = time.time()
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        if features is not None:
            vfs["feature"].append(features(s, e), expect_row=s)
        vfs["codes"].append(codes(s, e), expect_row=s)
        if probs:
            p = probs(s, e)
            vfs["prob"].append(p, expect_row=s)
        with _db.transaction(c):
            c.executemany("INSERT INTO contents(row, sha256, added_at) VALUES (?, ?, ?)",
                          ((r, f"{r:064x}", now) for r in range(s, e)))
            c.executemany("INSERT INTO files(path, size, mtime_ns, sha256, row, error, updated_at) "
                          "VALUES (?, 0, 0, ?, ?, NULL, ?)",
                          ((f"/synthetic/{r // 1000:04d}/{r:08d}.jpg", f"{r:064x}", r, now) for r in range(s, e)))
            if probs:
                rr, tt = np.nonzero(p >= 0.01)
                c.executemany("INSERT INTO tag_probs(tag_id, prob, row) VALUES (?, ?, ?)",
                              zip(tt.tolist(), p[rr, tt].astype(np.float64).tolist(), (rr + s).tolist()))
            _db.set_meta(c, "rows", e)
            if probs:
                c.execute("UPDATE taggers SET rows=?", (e,))
        print(f"    wrote {e}/{n} rows", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)
    col.close()


def disk_mb(path: Path, names: list[str]) -> float:
    total = 0
    for name in names:
        for p in path.glob(name):
            total += p.stat().st_blocks * 512
    return total / 2**20


def exact_topk(vecs: np.ndarray, qn: np.ndarray, k: int = 20, chunk: int = 20_000) -> np.ndarray:
    """Exact top-k rows by cosine (ground truth), streamed over the memmap."""
    best_s = np.full((len(qn), 0), -np.inf, np.float32)
    best_i = np.zeros((len(qn), 0), np.int64)
    for s in range(0, len(vecs), chunk):
        sims = qn @ _index.l2_normalize(np.asarray(vecs[s : s + chunk])).T
        allS = np.concatenate([best_s, sims], axis=1)
        allI = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + sims.shape[1]), sims.shape)], axis=1)
        top = np.argsort(-allS, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(allS, top, 1), np.take_along_axis(allI, top, 1)
    return best_i


class Format1Float:
    """The float search of index format 1, re-implemented for a same-run baseline: PCA-256 float32
    flat scan (one thread), 1000 candidates re-ranked on rows *copied* out of a fresh memory map
    of ``feature.f32``, SQLite path lookup."""

    def __init__(self, col, vf: VectorFile, n: int) -> None:
        import faiss

        live = np.arange(n, dtype=np.int64)
        pick = np.sort(np.random.default_rng(0).choice(live, size=min(32_768, n), replace=False))
        self.A = _index._pca(_index.l2_normalize(vf.view()[pick]), 256, 0)
        self.flat = faiss.IndexFlatIP(256)
        for s in range(0, n, 16_384):
            self.flat.add(np.ascontiguousarray(_index.l2_normalize(vf.view()[s : s + 16_384]) @ self.A.T))
        self.col, self.vf = col, vf

    def search(self, q: np.ndarray, k: int = 20, cand: int = 1000):
        import faiss

        qn = _index.l2_normalize(q[None])
        faiss.omp_set_num_threads(1)
        _, I = self.flat.search(np.ascontiguousarray(qn @ self.A.T), cand)
        self.col.view.snapshot()  # what Collection.search does first (one SQLite read transaction)
        rows = np.sort(I[0])
        sims = _index.l2_normalize(self.vf.read(rows)) @ qn[0]
        order = np.lexsort((rows, -sims))[:k]
        paths = self.col.rows_to_paths(rows[order])
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        return [(int(r), paths[int(r)]) for r in rows[order]]


def bench_float(work: Path, n: int, queries: int, rng, rounds: int = 1) -> None:
    print(f"float: {n} x {DIM}", file=sys.stderr)
    centers = rng.standard_normal((2000, DIM), dtype=np.float32) / np.sqrt(DIM) * 8
    path = work / "float"
    t = time.perf_counter()
    synthetic_collection(path, n, features=lambda s, e: clustered(rng, e - s, centers),
                         codes=lambda s, e: rng.integers(0, 256, (e - s, CODE_BYTES), dtype=np.uint8))
    row(f"float {n // 1000}k: write synthetic collection", f"{time.perf_counter() - t:.1f} s")
    qs = clustered(rng, queries, centers)
    qn = _index.l2_normalize(qs)
    vf = VectorFile(path / "feature.f32", DIM, "float32")
    t = time.perf_counter()
    gt = exact_topk(vf.view(), qn)
    row(f"float {n // 1000}k: exact ground truth by numpy", f"{time.perf_counter() - t:.1f} s", f"({queries} queries)")
    describe_features(f"synthetic {n // 1000}k", np.asarray(vf.view()[: min(n, 20_000)]))

    def recall(hits) -> float:
        return float(np.mean([len(set(h) & set(g)) / 20 for h, g in zip(hits, gt)]))

    shutil.rmtree(path / "index", ignore_errors=True)
    ivf_min0 = _index.IVF_MIN
    for ivf_min in (ivf_min0, 0):
        _index.IVF_MIN = ivf_min
        with Collection.open(path, create=False) as col:
            m0 = rss_mb()
            t = time.perf_counter()
            col.search(vector=qs[0], k=20)
            build = time.perf_counter() - t
            m1 = rss_mb()
            idx, im = col.view.memo(("index", "feature"))
            nsh = len(idx.shards)
            rec = recall([[h.row for h in col.search(vector=q, k=20)] for q in qs])
            row(f"float {n // 1000}k {im.kind}: build on first search", f"{build:.1f} s",
                f"(train + add, {nsh} shard(s); saved to index/)")
            row(f"float {n // 1000}k {im.kind}: index memory", f"{idx.nbytes / n / 1024:.2f} KiB/image",
                f"(process RSS grew {(m1 - m0) / n * 1024:.2f} KiB/image over the build; "
                f"index file {disk_mb(path, ['index/feature.faiss']) / n * 1024:.2f} KiB/image)")

            def with_threads(th):
                def fn(q):
                    idx.threads = th
                    return col.search(vector=q, k=20)
                return fn

            fns = {}
            if im.kind == "pq4fs-ip":
                t = time.perf_counter()
                old = Format1Float(col, vf, n)
                row(f"float {n // 1000}k format 1 (PCA-256 fp32 flat) baseline: build", f"{time.perf_counter() - t:.1f} s")
                old_rec = recall([[r for r, _ in old.search(q)] for q in qs])
                fns[f"format 1: PCA-256 fp32 flat + copying re-rank of 1000, recall@20 = {old_rec:.3f}"] = old.search
            fns[f"{im.kind} + in-place re-rank of 1000, recall@20 = {rec:.3f}, 1 thread"] = with_threads(1)
            if nsh > 1:
                fns[f"{im.kind} + in-place re-rank of 1000, recall@20 = {rec:.3f}, {nsh} shards in threads"] = \
                    with_threads(None)
            latency_rows(fns, qs, rounds, f"float {n // 1000}k {{}}: Collection.search k=20 p50 / p99",
                         "target <= 20 ms; ")
            idx.threads = None
    _index.IVF_MIN = ivf_min0
    # what an exact 4096-d scan would cost (the kind used up to FLAT_MAX rows)
    exact, _ = _index.build_float_index(vf.view(), np.arange(n, dtype=np.int64), flat_max=n)

    def exact_fn(th):
        def fn(q):
            exact.threads = th
            return exact.search(q[None], 20)
        return fn

    res = time_interleaved({"1 thread": exact_fn(1), f"{len(exact.shards)} shards in threads": exact_fn(None)}, qn[:50])
    for name, (p50, p99, cpu) in res.items():
        row(f"float {n // 1000}k exact IndexFlatIP (4096-d, for comparison), {name}: raw search k=20 p50 / p99",
            f"{p50:.1f} / {p99:.1f} ms (CPU {cpu:.1f} ms)")
    row(f"float {n // 1000}k: disk (feature.f32 + codes.u8 + sqlite)",
        f"{disk_mb(path, ['feature.f32', 'codes.u8', 'collection.sqlite*']) / n * 1024:.1f} KiB/image")


def bench_binary(work: Path, n: int, queries: int, rng, rounds: int = 1) -> None:
    import faiss

    print(f"binary: {n} x {CODE_BYTES} bytes", file=sys.stderr)
    path = work / "binary"
    t = time.perf_counter()
    synthetic_collection(path, n, features=None,
                         codes=lambda s, e: rng.integers(0, 256, (e - s, CODE_BYTES), dtype=np.uint8), chunk=100_000)
    row(f"binary {n // 1000}k: write synthetic collection", f"{time.perf_counter() - t:.1f} s")
    codes = VectorFile(path / "codes.u8", CODE_BYTES, "uint8")
    pick = rng.choice(n, queries, replace=False)
    qs = codes.read(np.sort(pick))
    flip = rng.random(qs.shape) < 0.02  # near-duplicates of stored codes
    qs = qs ^ (flip * rng.integers(1, 256, qs.shape)).astype(np.uint8)
    with Collection.open(path, create=False) as col:
        m0 = rss_mb()
        t = time.perf_counter()
        col.search(vector=qs[0], k=20, binary=True)
        build = time.perf_counter() - t
        m1 = rss_mb()
        idx = col.view.memo(("index", "codes"))[0]
        nsh = len(idx.shards)
        row(f"binary {n // 1000}k: build on first search (from codes.u8, {nsh} shards)", f"{build:.1f} s")
        row(f"binary {n // 1000}k: index memory", f"{idx.nbytes / n / 1024:.2f} KiB/image",
            f"(process RSS grew {(m1 - m0) / n * 1024:.2f} KiB/image; nothing written to disk)")
        # exactness: same rows and distances as numpy over all codes, for a few queries
        allc = codes.view()
        pop = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
        for q in qs[:3]:
            d = np.concatenate([pop[allc[s : s + 100_000] ^ q].sum(axis=1) for s in range(0, n, 100_000)])
            o = np.lexsort((np.arange(n), d))[:20]
            hits = col.search(vector=q, k=20, binary=True)
            assert [h.row for h in hits] == o.tolist() and [h.distance for h in hits] == d[o].tolist()
        row(f"binary {n // 1000}k: exact", "same rows and distances as numpy", "(3 queries checked)")
        # format 1 ran one IndexBinaryIDMap(IndexBinaryFlat) on one thread
        old = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(CODE_BYTES * 8))
        for s in range(0, n, 65_536):
            old.add_with_ids(np.ascontiguousarray(allc[s : s + 65_536]), np.arange(s, min(n, s + 65_536), dtype=np.int64))

        tmp = path / "format1-codes.faiss"
        faiss.write_index_binary(old, str(tmp))
        t = time.perf_counter()
        faiss.read_index_binary(str(tmp))
        row(f"binary {n // 1000}k format 1: loading its saved index file (for comparison with the build above)",
            f"{time.perf_counter() - t:.1f} s", "(page cache warm)")
        tmp.unlink()
        new_entry = col.view.memo(("index", "codes"))

        def old_fn(q):  # the whole Collection.search path, with format 1's index swapped in
            col.view.remember(("index", "codes"), (old, new_entry[1]))
            faiss.omp_set_num_threads(1)
            try:
                return col.search(vector=q, k=20, binary=True)
            finally:
                faiss.omp_set_num_threads(os.cpu_count() or 1)
                col.view.remember(("index", "codes"), new_entry)

        def with_threads(th):
            def fn(q):
                idx.threads = th
                return col.search(vector=q, k=20, binary=True)
            return fn

        fns = {"format 1: one IndexBinaryIDMap(IndexBinaryFlat), 1 thread": old_fn,
               "sharded, searched in 1 thread": with_threads(1),
               f"sharded, {nsh} shards in threads": with_threads(None)}
        latency_rows(fns, qs, rounds, f"binary {n // 1000}k {{}}: Collection.search k=20 p50 / p99",
                     "target <= 50 ms; ")
        idx.threads = None
    row(f"binary {n // 1000}k: disk (codes.u8 + sqlite)",
        f"{disk_mb(path, ['codes.u8', 'collection.sqlite*', 'index/*']) / n * 1024:.2f} KiB/image")


def bench_real(n_variants: int, rng) -> None:
    """How the float candidates fare on *real* features: the bundled EfficientNet-Lite0 (the only
    trained model available offline) on anime36 and randomly cropped / flipped / recoloured copies.

    Reports the shape of the data next to the synthetic set's (energy in the top principal
    directions, cosine of the 1st / 20th neighbour vs a random pair) and recall@20 of the
    4-bit PQ FastScan candidates + exact re-rank against numpy, by number of candidates.
    """
    from PIL import Image, ImageEnhance, ImageOps

    from illust2vec.models.loading import load_model

    model = load_model("generic-effnet-lite0", task="feature", progress=False)
    imgs = []
    for p in sorted((SHARED / "data" / "anime36").glob("*.jpg")):
        im = Image.open(p).convert("RGB")
        w, h = im.size
        imgs.append(im)
        for _ in range(n_variants - 1):
            s = rng.uniform(0.5, 0.95)
            cw, ch = int(w * s), int(h * s)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            v = im.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                v = ImageOps.mirror(v)
            imgs.append(ImageEnhance.Color(ImageEnhance.Brightness(v).enhance(rng.uniform(0.8, 1.2)))
                        .enhance(rng.uniform(0.6, 1.4)))
    t = time.perf_counter()
    F = np.concatenate([np.asarray(model.extract_feature(imgs[i : i + 32]), np.float32) for i in range(0, len(imgs), 32)])
    n, d = F.shape
    row(f"real features: {model.name}, {n} images (anime36 x {n_variants}), {d}-d", f"{time.perf_counter() - t:.0f} s to embed")
    describe_features("real", F)
    qi = np.arange(0, n, max(1, n // 200))
    qn = _index.l2_normalize(F[qi])
    gt = exact_topk(F, qn)
    idx, kind = _index.build_float_index(F, np.arange(n, dtype=np.int64), flat_max=0, ivf_min=n)
    for frac in (0.01, 0.02, 0.05, 0.1):
        c = max(20, int(round(frac * n)))
        hits = []
        for q in qn:
            _, cand = idx.search(q[None], c)
            cand = cand[0][cand[0] >= 0]
            sims = _index.l2_normalize(F[cand]) @ q
            hits.append(cand[np.lexsort((cand, -sims))[:20]])
        rec = np.mean([len(set(h.tolist()) & set(g.tolist())) / 20 for h, g in zip(hits, gt)])
        row(f"real features {kind} + exact re-rank of {c} candidates ({100 * c / n:.0f}% of rows)", f"recall@20 = {rec:.3f}",
            f"({len(qi)} queries vs exact numpy)")


def describe_features(label: str, F: np.ndarray, sample: int = 4000) -> None:
    """Energy of the normalised vectors in their top principal directions (uncentred) and neighbour cosines."""
    from sklearn.utils.extmath import randomized_svd

    rng = np.random.default_rng(0)
    x = _index.l2_normalize(F[np.sort(rng.choice(len(F), min(sample, len(F)), replace=False))])
    n, d = x.shape
    ks = [k for k in (16, 64, 256) if k < min(n, d)]
    _, sv, _ = randomized_svd(x, max(ks), n_iter=3, random_state=0)
    energy = np.cumsum(sv**2) / n  # rows have unit norm: total energy per row is 1
    sims = x[:200] @ x.T
    sims[np.arange(min(200, n)), np.arange(min(200, n))] = -np.inf
    srt = -np.sort(-sims, axis=1)
    row(f"{label} features: energy in the top {'/'.join(map(str, ks))} principal directions",
        " / ".join(f"{energy[k - 1]:.2f}" for k in ks),
        f"(cosine: 1st neighbour {np.median(srt[:, 0]):.2f}, 20th {np.median(srt[:, 19]):.2f}, "
        f"random pair {np.median(sims[np.isfinite(sims)]):.2f}; medians, {n} rows)")


def bench_tags(work: Path, n: int, queries: int, rng) -> None:
    print(f"tags: {n} x {N_TAGS}", file=sys.stderr)
    path = work / "tags"
    base = np.sort(rng.beta(0.3, 12, N_TAGS).astype(np.float32))[::-1].copy()  # tag frequencies

    def probs(s, e):
        # background far below the 0.01 floor, plus "present" tags drawn by tag frequency
        p = (10.0 ** rng.uniform(-6, -2.05, (e - s, N_TAGS))).astype(np.float32)
        hot = rng.random((e - s, N_TAGS)) < base * 1.5
        p[hot] = rng.uniform(0.01, 1.0, hot.sum()).astype(np.float32)
        return p

    t = time.perf_counter()
    synthetic_collection(path, n, features=None,
                         codes=lambda s, e: rng.integers(0, 256, (e - s, CODE_BYTES), dtype=np.uint8),
                         probs=probs, chunk=20_000)
    row(f"tags {n // 1000}k: write synthetic collection", f"{time.perf_counter() - t:.1f} s")
    with Collection.open(path, create=False) as col:
        stored = col.conn.execute("SELECT COUNT(*) FROM tag_probs").fetchone()[0]
        row(f"tags {n // 1000}k: probabilities >= 0.01 in SQL", f"{stored / n:.1f} per image")
        cases = [("tag0", None), ("tag1, tag2", None), ("tag3", "tag0"), ("character:tag600", None)]
        for tags, not_tags in cases:
            times, cpu = [], []
            for _ in range(max(5, queries // 20)):
                t, c = time.perf_counter(), time.process_time()
                col.search(tags=tags, not_tags=not_tags, min_prob=0.5, k=20)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            p50, p99 = percentiles(times)
            row(f"tags {n // 1000}k: --tags {tags!r}" + (f" --not {not_tags!r}" if not_tags else "") + " k=20 p50 / p99",
                f"{p50:.1f} / {p99:.1f} ms (CPU {np.median(cpu) * 1000:.1f} ms)")
    row(f"tags {n // 1000}k: disk (prob.f32 + sqlite incl. tag_probs)",
        f"{disk_mb(path, ['prob.f32', 'collection.sqlite*']) / n * 1024:.1f} KiB/image",
        f"(prob.f32 alone {disk_mb(path, ['prob.f32']) / n * 1024:.1f})")


def bench_ivf1m(n: int, queries: int, rng, rounds: int = 1, cands: tuple[int, ...] = (1000, 2000, 4000),
                ivfpq_nlist: int = 512, nprobes: tuple[int, ...] = (16, 32, 64), rerank_sample: int = 100_000,
                work: Path | None = None) -> None:
    """The float candidate indexes for large collections at ``n`` rows (default 1M x 4096).

    The vectors are generated chunk by chunk (chunk ``c`` from its own seed) and streamed, in one
    pass, into (a) the PCA-256 + IVF index, (b) the 4-bit PQ FastScan over the full vectors
    ("pq4fs-ip", sharded), (c) an IVF + 4-bit PQ FastScan over the full vectors, and into the
    exact ground truth (inner products of the queries with every chunk, a running top 20); nothing
    is stored (16 GB).  Measured for each: candidate recall (the fraction of the exact top 20
    among the candidates the exact re-rank would get: that re-rank on the stored vectors makes
    it the end-to-end recall@20), latency of the candidate search for as many candidates as
    :mod:`illust2vec.collection.search` asks for (1000 for k=20; the variants take turns query by
    query), build time and index memory.  The re-rank itself (reading ~1000 stored 16 KB rows) is
    measured on a memory map of ``rerank_sample`` rows written to ``work``: warm (page cache) and
    cold (the file's pages dropped first).
    """
    import faiss

    from illust2vec.collection import search as _search

    print(f"ivf1m: {n} x {DIM} streamed", file=sys.stderr)
    centers = rng.standard_normal((2000, DIM), dtype=np.float32) / np.sqrt(DIM) * 8
    chunk = 25_000

    def gen(c: int) -> np.ndarray:  # chunk c, regenerated identically from its seed
        s = c * chunk
        return clustered(np.random.default_rng((7, c)), min(chunk, n - s), centers)

    sample = _index.l2_normalize(clustered(np.random.default_rng(8), 32_768, centers))  # as build_float_index
    qs = _index.l2_normalize(clustered(np.random.default_rng(9), queries, centers))
    la0 = load_avg()
    variants: dict[str, object] = {}
    build: dict[str, float] = {}
    t = time.perf_counter()
    pca, _ = _index.new_float_index(DIM, n, flat_max=0, ivf_min=0, sample=sample)
    build["pca"] = time.perf_counter() - t
    pca_nlist = faiss.extract_index_ivf(pca.shards[0]).nlist
    t = time.perf_counter()
    pq, _ = _index.new_float_index(DIM, n, flat_max=0, ivf_min=n, sample=sample)
    build["pq"] = time.perf_counter() - t
    t = time.perf_counter()
    idxs = {"pca": pca, "pq": pq}
    ivfpq = ivfpq_idx = None
    if ivfpq_nlist:
        ivfpq = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(DIM), DIM, ivfpq_nlist, _index.pq_subquantizers(DIM), 4,
                                         faiss.METRIC_INNER_PRODUCT)
        ivfpq.cp.niter = 10
        ivfpq.train(sample)
        ivfpq_idx = idxs["ivfpq"] = _index.ShardedIndex([ivfpq], [None], binary=False)
        build["ivfpq"] = time.perf_counter() - t
    names = {"pca": f"PCA-256 + IVF{pca_nlist} (pca-ivf-ip)", "pq": f"4-bit PQ FastScan, {len(pq.shards)} shards (pq4fs-ip)",
             "ivfpq": f"IVF{ivfpq_nlist} + 4-bit PQ FastScan"}
    gt_s = np.full((queries, 0), -np.inf, np.float32)
    gt_i = np.zeros((queries, 0), np.int64)
    gen_t = 0.0
    for c in range(-(-n // chunk)):
        t = time.perf_counter()
        x = gen(c)
        xn, norms = _index._normalize_with_norms(x)
        del x
        rows = np.arange(c * chunk, c * chunk + len(xn), dtype=np.int64)
        gen_t += time.perf_counter() - t
        for key, idx in idxs.items():
            t = time.perf_counter()
            if key == "pq":  # a fresh build: one contiguous range of rows per shard
                _index._add_to_shard(idx, c * len(idx.shards) // -(-n // chunk), xn, rows, norms)
            else:
                idx.add_with_ids(xn, rows, norms)
            build[key] += time.perf_counter() - t
        sims = qs @ xn.T
        allS = np.concatenate([gt_s, sims], axis=1)
        allI = np.concatenate([gt_i, np.broadcast_to(rows, sims.shape)], axis=1)
        top = np.argsort(-allS, axis=1, kind="stable")[:, :20]
        gt_s, gt_i = np.take_along_axis(allS, top, 1), np.take_along_axis(allI, top, 1)
        print(f"    added {rows[-1] + 1}/{n}", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)
    row(f"float {n // 1000}k streamed: generating the synthetic vectors (not in the build times)", f"{gen_t:.0f} s",
        f"({la0} before)")
    for key in idxs:
        idx = idxs[key]
        row(f"float {n // 1000}k {names[key]}: build (train + add)", f"{build[key]:.0f} s",
            f"index memory {idx.nbytes / n:.0f} B/image (incl. norms and row ids)")

    def recall(idx, c: int) -> float:
        _, I = idx.search(qs, c)
        return float(np.mean([len(set(i.tolist()) & set(g.tolist())) / 20 for i, g in zip(I, gt_i)]))

    fns = {}
    for c in cands:
        for key in ("pca", "pq"):
            for nprobe in (nprobes if key == "pca" else (0,)):
                if key == "pca":
                    _index.set_nprobe(pca, nprobe)
                label = names[key] + (f" nprobe={nprobe}" if key == "pca" else "")
                rec = recall(idxs[key], c)
                row(f"float {n // 1000}k {label}: candidate recall of the exact top 20 in {c} candidates",
                    f"{rec:.3f}", f"({queries} queries vs exact ground truth)")
                if c == cands[0]:
                    fns[f"{label}, recall {rec:.3f}"] = (lambda idx, npb, c: lambda q: (
                        _index.set_nprobe(idx, npb) if npb else None, idx.search(q[None], c)))(idxs[key], nprobe, c)
        for nprobe in nprobes if ivfpq_idx is not None else ():
            _index.set_nprobe(ivfpq_idx, nprobe)
            rec = recall(ivfpq_idx, c)
            row(f"float {n // 1000}k {names['ivfpq']} nprobe={nprobe}: candidate recall of the exact top 20 in {c} candidates",
                f"{rec:.3f}", f"({queries} queries vs exact ground truth)")
            if c == cands[0]:
                fns[f"{names['ivfpq']} nprobe={nprobe}, recall {rec:.3f}"] = (lambda npb, c: lambda q: (
                    _index.set_nprobe(ivfpq_idx, npb), ivfpq_idx.search(q[None], c)))(nprobe, c)
    latency_rows(fns, qs, rounds, f"float {n // 1000}k {{}}: candidate search ({cands[0]} candidates) p50 / p99")
    del idxs, pca, ivfpq_idx, ivfpq
    # exact re-rank of 1000 candidates, as search.py does it, from a memory map of stored vectors
    path = (work or Path(tempfile.gettempdir())) / "rerank-sample.f32"
    m = min(n, rerank_sample)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(m, DIM))
    for c in range(-(-m // chunk)):
        x = gen(c)[: m - c * chunk]
        mm[c * chunk : c * chunk + len(x)] = x
    mm.flush()
    norms = np.linalg.norm(mm, axis=1).astype(np.float32)
    pick = np.random.default_rng(10)
    warm, cold = [], []
    with open(path, "rb") as fh:
        for i, q in enumerate(qs):
            cand = np.sort(pick.choice(m, cands[0], replace=False))
            if i % 2:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            t = time.perf_counter()
            _search._rerank(mm, norms, cand, q[None], 20)
            (cold if i % 2 else warm).append(time.perf_counter() - t)
    del mm
    path.unlink()
    for name, times in (("warm (rows in the page cache)", warm), ("cold (file pages dropped before each query)", cold)):
        p50, p99 = percentiles(times)
        row(f"exact re-rank of {cands[0]} random stored rows (16 KB each) from a memory map of {m // 1000}k rows, {name}",
            f"{p50:.1f} / {p99:.1f} ms", f"(p50 / p99, {len(times)} queries)")


def bench_overhead(work: Path, model_name: str | None, n_images: int) -> None:
    from illust2vec.models.families.i2v.model import Illustration2Vec
    from illust2vec.models.loading import load_model
    from illust2vec.runtime.batches import iter_batches

    src = sorted((SHARED / "data" / "anime36").glob("*.jpg"))
    folder = work / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from PIL import Image

    for i in range(n_images):  # distinct files (different bytes) so nothing is skipped as a duplicate
        p = src[i % len(src)]
        Image.open(p).convert("RGB").rotate(0 if i < len(src) else i, expand=False).save(folder / f"{i:04d}.jpg", quality=90)
    files = sorted(folder.glob("*.jpg"))
    if model_name == "fixture":
        fix = SHARED / "fixtures" / "i2v"
        model = Illustration2Vec.from_caffemodel(fix / "feature_w16_e1024.caffemodel")
    else:
        model = load_model(model_name, task="feature", progress=False)
    label = f"{model.name} ({model.feature_dim}-d)"
    list(iter_batches(model, files[:16], batch_size=16, outputs=("feature",)))  # warm-up
    results = {"plain": [], "index": []}
    for rep in range(2):
        t = time.perf_counter()
        for _ in iter_batches(model, files, batch_size=16, outputs=("feature",)):
            pass
        results["plain"].append(time.perf_counter() - t)
        shutil.rmtree(work / "ov", ignore_errors=True)
        t = time.perf_counter()
        with Collection.open(work / "ov") as col:
            r = col.add([folder], embedder=model, batch_size=16, progress=False)
        results["index"].append(time.perf_counter() - t)
        assert r.added == len(files), r
    plain, idx = min(results["plain"]), min(results["index"])
    row(f"indexing {len(files)} images, {label}: plain inference / Collection.add",
        f"{plain:.1f} s / {idx:.1f} s", f"(overhead {100 * (idx / plain - 1):+.1f} %, target <= 10 %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="float,binary,real,tags,overhead")
    ap.add_argument("--n-float", type=int, default=100_000)
    ap.add_argument("--n-binary", type=int, default=1_000_000)
    ap.add_argument("--n-tags", type=int, default=100_000)
    ap.add_argument("--n-ivf", type=int, default=1_000_000)
    ap.add_argument("--ivfpq-nlist", type=int, default=512,
                    help="lists of the IVF + PQ FastScan variant in the ivf1m part (0: leave that variant out)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1, help="times every query is timed (float and binary parts)")
    ap.add_argument("--overhead-model", default=None,
                    help="zoo model for the overhead part (default: load_model's default; 'fixture' = i2v fixture)")
    ap.add_argument("--overhead-images", type=int, default=72)
    ap.add_argument("--real-variants", type=int, default=30, help="copies per anime36 image in the 'real' part")
    ap.add_argument("--workdir", type=Path, help="where to write the synthetic collections (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse synthetic collections of the right size already in --workdir")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    global REUSE
    REUSE = args.reuse
    work = args.workdir or Path(tempfile.mkdtemp(prefix="i2v-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    try:
        if "float" in parts:
            bench_float(work, args.n_float, args.queries, rng, args.rounds)
        if "binary" in parts:
            bench_binary(work, args.n_binary, args.queries, rng, args.rounds)
        if "real" in parts:
            bench_real(args.real_variants, rng)
        if "tags" in parts:
            bench_tags(work, args.n_tags, args.queries, rng)
        if "ivf1m" in parts:
            bench_ivf1m(args.n_ivf, args.queries, rng, args.rounds, ivfpq_nlist=args.ivfpq_nlist, work=work)
        if "overhead" in parts:
            bench_overhead(work, args.overhead_model, args.overhead_images)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    import faiss

    print(f"\nmachine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB\n")
    print("| measurement | value | note |\n| --- | --- | --- |")
    for what, value, note in ROWS:
        print(f"| {what} | {value} | {note} |")
    if args.json:
        args.json.write_text(json.dumps([{"what": w, "value": v, "note": n} for w, v, n in ROWS], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
