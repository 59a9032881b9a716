"""A collection of a million pictures: build it once, then measure dupes, search, the web app and compaction.

Run (each part under the shared lock; ``build`` once, ~25 GB under ``--work``):

    flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_1m.py --parts build
    flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_1m.py --parts dupes,binary,float,serve,prune

The collection has the real vector sizes of the i2v models: 4096-d float32
features (16 KB per picture), 4096-bit codes (``sigmoid(f) > 0.5``, i2v's
rule) and 1539 tag probabilities.  Vectors are generated in chunks from
per-chunk seeds and streamed through the collection's one writer
(``col.store.writing(...).append(ItemBatch)``, as a Ray merge does): never
held in memory, resumable.  Every item is a hard link to
one of ``--pictures`` generated JPEGs, so it has a real file (thumbnails,
pruning) but costs no disk blocks.

Structure, so that recall means something (``synthetic_chunk``):

* 20,000 clusters ("a character, an artist") of ~50 pictures; a picture is
  its cluster's centre plus its own variation in a 128-d latent space
  (spectrum decaying like real CNN features'), mapped to 4096 dimensions,
  plus a little isotropic noise and a fixed per-dimension offset (so some
  code bits are biased, as real codes' are);
* near-duplicate families: every 10th picture is an edited copy of the one
  before it and every 20th a second copy (0.3-1.5% of the code bits
  differ), so ~15% of the pictures have a near-duplicate;
* ~45 tags above the 0.01 storage floor per picture: ~30 of its cluster's
  tags (Zipf-distributed over the 1539) with high probabilities, the rest
  small.

Parts: ``build`` (time, disk per item and per file), ``dupes`` (all pairs at
the default distance with multi-index hashing vs FAISS all-pairs measured on
a subsample in the same run; then 1000 pictures added and the incremental
update), ``binary`` / ``float`` (``Collection.search`` p50/p99 over
``--queries`` random pictures, recall@20 against exact ground truth computed
in the same run), ``serve`` (the web app in its own process: first grid page,
tag filter, similar, memory), ``prune`` (delete 10% of the pictures, prune,
compaction: time and disk reclaimed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DIM, CODE_BYTES, N_TAGS = 4096, 512, 1539
LATENT, CLUSTERS = 128, 20_000
CHUNK = 10_000
ROWS: list[tuple[str, str, str]] = []
RESULTS: dict[str, object] = {}


def load_avg() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value} {note}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the synthetic pictures
class Synthetic:
    """Deterministic synthetic vectors: ``chunk(k)`` gives pictures ``k*CHUNK ... (k+1)*CHUNK - 1``."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        spectrum = (np.arange(1, LATENT + 1, dtype=np.float32) ** -0.6)
        self.spectrum = spectrum / np.linalg.norm(spectrum)
        self.centres = rng.standard_normal((CLUSTERS, LATENT), dtype=np.float32) * self.spectrum
        self.basis = rng.standard_normal((LATENT, DIM), dtype=np.float32) * np.float32(np.sqrt(DIM / LATENT))
        self.offset = rng.standard_normal(DIM, dtype=np.float32) * np.float32(0.25)
        zipf = 1.0 / np.arange(1, N_TAGS + 1) ** 0.9
        self.tag_p = zipf / zipf.sum()
        self.cluster_tags = np.stack([rng.choice(N_TAGS, 30, replace=False, p=self.tag_p) for _ in range(CLUSTERS)])
        self.cluster_logit = rng.normal(1.0, 1.5, (CLUSTERS, 30)).astype(np.float32)
        self.seed = seed

    def clusters(self, ids: np.ndarray) -> np.ndarray:
        """Cluster of each picture; a copy (i % 10 == 1, i % 20 == 2) has its original's."""
        base = np.where(ids % 10 == 1, ids - 1, np.where(ids % 20 == 2, ids - 2, ids))
        return (base * 2654435761 % (2**32)) % CLUSTERS

    def chunk(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(features, codes, probs)`` of chunk ``k``."""
        ids = np.arange(k * CHUNK, (k + 1) * CHUNK)
        rng = np.random.default_rng([self.seed, k])
        lab = self.clusters(ids)
        z = self.centres[lab] + rng.standard_normal((CHUNK, LATENT), dtype=np.float32) * (0.55 * self.spectrum)
        x = z @ self.basis
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.12)
        x += self.offset
        # copies: the original plus a small edit (originals are in the same chunk: CHUNK % 20 == 0)
        for step, scale in ((1, 0.0022), (2, 0.0035)):
            cp = np.flatnonzero((ids % (10 if step == 1 else 20)) == step)
            edit = rng.standard_normal((len(cp), LATENT), dtype=np.float32) * (scale * rng.uniform(0.3, 1.7, (len(cp), 1))
                                                                               ).astype(np.float32)
            x[cp] = x[cp - step] + edit @ self.basis + rng.standard_normal((len(cp), DIM), dtype=np.float32) * np.float32(0.01)
        codes = np.packbits(x > 0, axis=1)
        p = (10.0 ** rng.uniform(-6, -2.2, (CHUNK, N_TAGS))).astype(np.float32)
        extra = rng.random((CHUNK, N_TAGS)) < 0.01
        p[extra] = rng.uniform(0.01, 0.3, int(extra.sum())).astype(np.float32)
        hot = self.cluster_tags[lab]
        logit = self.cluster_logit[lab] + rng.normal(0, 1.0, hot.shape).astype(np.float32)
        np.put_along_axis(p, hot, (1 / (1 + np.exp(-logit))).astype(np.float32).clip(0.011, 0.999), axis=1)
        return x.astype(np.float32), codes, p


def _pictures(folder: Path, n: int) -> list[Path]:
    from _common import make_folder

    return make_folder(folder, n, size=256)


def item_path(work: Path, i: int) -> Path:
    return work / "items" / f"{i // 1000:04d}" / f"{i:08d}.jpg"


def build(work: Path, n: int, pictures: int) -> Path:
    from illust2vec.collection import Collection
    from illust2vec.collection import ItemBatch, ModelRecord
    from illust2vec.models.tags import TagTable

    db = work / "db"
    pics = _pictures(work / "pictures", pictures)
    syn = Synthetic()
    cats = ["general"] * 512 + ["character"] * 512 + ["copyright"] * 512 + ["rating"] * 3
    tagger = ModelRecord(name="synthetic-i2v-tags", identity="sha256:synthetic-i2v-tags", outputs=("prob",),
                         tags=TagTable(tuple(f"tag{i}" for i in range(N_TAGS)), tuple(cats)))
    embedder = ModelRecord(name="synthetic-i2v", identity="sha256:synthetic-i2v", outputs=("feature",),
                           binarize="positive", feature_dim=DIM, code_bytes=CODE_BYTES)

    def batches():
        for k in range(n // CHUNK):
            paths, sizes, mtimes = [], [], []
            for i in range(k * CHUNK, (k + 1) * CHUNK):
                dst = item_path(work, i)
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.link(pics[i % len(pics)], dst)
                st = dst.stat()
                paths.append(str(dst))
                sizes.append(st.st_size)
                mtimes.append(st.st_mtime_ns)
            f, c, p = syn.chunk(k)
            yield ItemBatch(paths=paths, sizes=sizes, mtimes_ns=mtimes,
                            sha256=[f"{i:064x}" for i in range(k * CHUNK, (k + 1) * CHUNK)], errors=[None] * CHUNK,
                            features=f, codes=c, probs=p)
            print(f"    {(k + 1) * CHUNK:,} / {n:,} pictures ({load_avg()})", file=sys.stderr, end="\r", flush=True)

    la = load_avg()
    t = time.perf_counter()
    with Collection.open(db) as col:
        have = len(col)
        with col.store.writing(embedder=embedder, taggers=[tagger]) as w:
            for batch in batches():
                w.append(batch)
        rep = w.report
    secs = time.perf_counter() - t
    print(file=sys.stderr)
    if rep.added:
        row(f"build {n:,} pictures through the store's append", f"{secs:.0f} s ({rep.added / secs:.0f} pictures/s)",
            f"({have:,} were there; {la} before, {load_avg()} after)")
    disk(db, n)
    return db


def disk(db: Path, n: int) -> None:
    total = 0
    for p in sorted(db.rglob("*")):
        if p.is_file():
            used = p.stat().st_blocks * 512
            total += used
            if used > 1 << 20:
                row(f"disk: {p.relative_to(db)}", f"{used / 2**30:.2f} GiB ({used / n / 1024:.2f} KiB per picture)",
                    f"(apparent {p.stat().st_size / 2**30:.2f} GiB)")
    row("disk: the whole collection", f"{total / 2**30:.2f} GiB ({total / n / 1024:.2f} KiB per picture)", "")
    RESULTS["disk_bytes"] = total


# --------------------------------------------------------------------------- parts
def part_dupes(db: Path, work: Path, nq: int = 1000) -> None:
    import faiss

    from illust2vec.collection import Collection
    from illust2vec.collection.dupes import default_max_distance
    from illust2vec.collection.pair_cache import cache_path

    with Collection.open(db, create=False) as col:
        r = default_max_distance(col)
        cache_path(col.path).unlink(missing_ok=True)
        la = load_avg()
        t, c = time.perf_counter(), time.process_time()
        groups = col.dupes(r)
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        n = len(col.live_rows())
        row(f"dupes, {n:,} pictures, default distance {r} bits (multi-index hashing, pairs kept)",
            f"{secs:.1f} s wall", f"(CPU {cpu:.1f} s; {len(groups):,} groups, "
            f"{sum(len(g.paths) for g in groups):,} pictures; {la} before, {load_avg()} after)")
        t = time.perf_counter()
        col.dupes(r)
        row("dupes again, nothing changed (from the pair cache)", f"{time.perf_counter() - t:.1f} s", "")
        codes = col.vectors("codes")
        rng = np.random.default_rng(0)
        q = rng.choice(len(codes), nq, replace=False)
        index = faiss.IndexBinaryFlat(CODE_BYTES * 8)
        index.add(codes)
        t = time.perf_counter()
        index.range_search(np.ascontiguousarray(codes[q]), r + 1)
        fsecs = time.perf_counter() - t
        full = fsecs / nq * len(codes)
        row(f"baseline: FAISS IndexBinaryFlat.range_search, {nq} queries over all codes (2 threads)",
            f"{fsecs:.1f} s -> all pairs {full / 3600:.1f} h", f"({full / secs:.0f}x slower; {load_avg()})")
        del index, codes
        RESULTS["dupes"] = {"n": n, "r": r, "secs": secs, "faiss_all_s": full}


def _pct(times: list[float]) -> str:
    a = np.asarray(times) * 1000
    return f"{np.percentile(a, 50):.1f} / {np.percentile(a, 99):.1f} ms"


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    """Recall of ``got`` against the exact ``want`` (equal scores count as the same answer: ties)."""
    g, w = np.sort(np.round(got, 5)), np.sort(np.round(want, 5))
    vals, cw = np.unique(w, return_counts=True)
    cg = np.array([(g == v).sum() for v in vals])
    return float(np.minimum(cg, cw).sum() / len(want))


def part_binary(db: Path, queries: int, k: int = 20) -> None:
    """``Collection.search(binary=True)`` p50/p99 with recall@k against an exact scan (the baseline) in the same run."""
    import faiss

    from illust2vec.collection import Collection

    with Collection.open(db, create=False) as col:
        live = col.live_rows()
        codes = col.vectors("codes")
        q = np.random.default_rng(2).choice(len(live), queries + 1, replace=False)
        t = time.perf_counter()
        col.search(vector=codes[q[0]], k=k, binary=True, include_query=True)
        row(f"binary index built or loaded ({len(live):,} codes)", f"{time.perf_counter() - t:.1f} s", f"({load_avg()})")
        idx = col.view.memo(("index", "codes"))[0]
        times, got = [], []
        for _ in range(2):  # the second round is what is timed (memory maps warm)
            times, got = [], []
            for qi in q[1:]:
                t = time.perf_counter()
                hits = col.search(vector=codes[qi], k=k, binary=True, include_query=True)
                times.append(time.perf_counter() - t)
                got.append(np.array([h.distance for h in hits], np.float64))
        la = load_avg()
        exact = faiss.IndexBinaryFlat(CODE_BYTES * 8)
        exact.add(codes)
        etimes, want = [], []
        for qi in q[1:]:
            t = time.perf_counter()
            d, _ = exact.search(codes[qi : qi + 1], k)
            etimes.append(time.perf_counter() - t)
            want.append(d[0].astype(np.float64))
        rec = np.mean([_recall(g, w) for g, w in zip(got, want)])
        kind = "exact" if idx.exact else f"short codes ({len(idx.columns)} bytes) + exact re-rank"
        row(f"binary kNN k={k} through Collection.search, {len(live):,} codes, {kind}, p50 / p99", _pct(times),
            f"(recall@{k} {rec:.4f} against the exact scan, ties counted as equal; {la})")
        row(f"baseline: exact FAISS IndexBinaryFlat scan of all codes (one index, FAISS threads), p50 / p99",
            _pct(etimes), f"({load_avg()})")
        RESULTS["binary"] = {"p50_ms": float(np.median(times) * 1000), "p99_ms": float(np.percentile(times, 99) * 1000),
                             "recall": rec, "exact_p50_ms": float(np.median(etimes) * 1000), "kind": kind}


def part_float(db: Path, queries: int, k: int = 20) -> None:
    """``Collection.search(vector=f)`` p50/p99 with recall@k against exact cosine over every row (one pass over
    the features, the baseline's time with it)."""
    from illust2vec.collection import Collection
    from illust2vec.collection import index as _index
    from illust2vec.collection.search import index_meta

    with Collection.open(db, create=False) as col:
        live = col.live_rows()
        pick = np.sort(np.random.default_rng(3).choice(live, queries + 1, replace=False))
        qf = col.vectors("feature", pick)
        t = time.perf_counter()
        col.search(vector=qf[0], k=k, include_query=True)
        row(f"float index built or loaded ({len(live):,} x {DIM})", f"{time.perf_counter() - t:.0f} s",
            f"(kind {index_meta(col.view, 'feature').kind}; {load_avg()})")
        times, got = [], []
        for _ in range(2):
            times, got, got_rows = [], [], []
            for f in qf[1:]:
                t = time.perf_counter()
                hits = col.search(vector=f, k=k, include_query=True)
                times.append(time.perf_counter() - t)
                got.append(np.array([h.score for h in hits], np.float64))
                got_rows.append(np.array([h.row for h in hits], np.int64))
        la = load_avg()
        qn = _index.l2_normalize(qf[1:])
        best_s = np.full((len(qn), k), -np.inf, np.float32)
        best_r = np.full((len(qn), k), -1, np.int64)
        t = time.perf_counter()
        for a in range(0, len(live), 50_000):
            rows = live[a : a + 50_000]
            s = qn @ _index.l2_normalize(col.vectors("feature", rows)).T
            top = np.argpartition(s, -k, axis=1)[:, -k:]
            cs = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
            cr = np.concatenate([best_r, rows[top]], axis=1)
            o = np.argsort(-cs, axis=1, kind="stable")[:, :k]
            best_s, best_r = np.take_along_axis(cs, o, 1), np.take_along_axis(cr, o, 1)
        secs = time.perf_counter() - t
        # recall by rows (the exact top k by cosine in float32)
        rec = np.mean([len(set(g.tolist()) & set(w.tolist())) / k for g, w in zip(got_rows, best_r)])
        row(f"float kNN k={k} through Collection.search, {len(live):,} x {DIM}, p50 / p99", _pct(times),
            f"(recall@{k} {rec:.4f} against exact cosine; {la})")
        row(f"baseline: exact cosine over every row, {len(qn)} queries in one pass", f"{secs:.0f} s",
            f"({secs / len(qn) * 1000:.0f} ms per query; {load_avg()})")
        RESULTS["float"] = {"p50_ms": float(np.median(times) * 1000), "p99_ms": float(np.percentile(times, 99) * 1000),
                            "recall": rec}


def part_prune(db: Path, work: Path, share: float = 0.1) -> None:
    """Delete ``share`` of the pictures (every tenth folder), prune, compaction: time and disk given back."""
    from illust2vec.collection import Collection

    folders = sorted((work / "items").iterdir())[:: int(round(1 / share))]
    gone = [p for f in folders for p in f.iterdir()]
    before = sum(p.stat().st_blocks * 512 for p in db.rglob("*") if p.is_file())
    for p in gone:
        p.unlink()
    la = load_avg()
    t = time.perf_counter()
    with Collection.open(db) as col:
        plan = col.prune([work / "items"])
    secs = time.perf_counter() - t
    after = sum(p.stat().st_blocks * 512 for p in db.rglob("*") if p.is_file())
    rep = plan.compaction
    row(f"prune {len(plan.drop):,} of the pictures + compaction", f"{secs:.0f} s",
        f"({rep.describe(str(db))}; {la} before, {load_avg()} after)")
    row("disk given back (the whole collection folder)", f"{(before - after) / 2**30:.2f} GiB",
        f"({before / 2**30:.2f} -> {after / 2**30:.2f} GiB)")
    RESULTS["prune"] = {"dropped": len(plan.drop), "secs": secs, "freed": before - after}


def part_serve(db: Path, queries: int) -> None:
    import bench_serve as bsv

    env = dict(os.environ)
    import subprocess

    port = bsv.free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "illust2vec", "serve", "--db", str(db), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        t = time.perf_counter()
        while "serving" not in (proc.stderr.readline() or "serving"):
            pass
        row("web app start (until it listens)", f"{time.perf_counter() - t:.1f} s", "")
        t = time.perf_counter()
        bsv.get(base + "/api/items?limit=100", timeout=600)
        row("first page of 100 items (API, cold)", f"{(time.perf_counter() - t) * 1000:.0f} ms", "")
        s, cells, jump = bsv.grid_time(base)
        row(f"first grid page drawn in Chromium ({cells} cells, cold thumbnails)", f"{s * 1000:.0f} ms", "")
        rng = np.random.default_rng(1)
        times = []
        for tg in rng.permutation(N_TAGS)[:queries]:
            t = time.perf_counter()
            bsv.get(f"{base}/api/items?tags=tag{tg}&min=0.5&limit=100")
            times.append(time.perf_counter() - t)
        row("tag filter, one tag, page of 100, p50 / p99", bsv.pct(times), f"({load_avg()})")
        n = json.loads(bsv.get(base + "/api/items?limit=1"))["total"]
        ids = rng.integers(1, n + 1, queries + 1)
        t = time.perf_counter()
        bsv.get(f"{base}/api/items/{ids[0]}/similar?k=20", timeout=3600)
        row("first similar query (loads or builds the float index)", f"{time.perf_counter() - t:.1f} s", "")
        for binary in (0, 1):
            times = []
            if binary:
                bsv.get(f"{base}/api/items/{ids[0]}/similar?k=20&binary=1", timeout=3600)
            for i in ids[1:]:
                t = time.perf_counter()
                bsv.get(f"{base}/api/items/{i}/similar?k=20&binary={binary}")
                times.append(time.perf_counter() - t)
            row(f"similar k=20{' by binary codes' if binary else ''}, p50 / p99", bsv.pct(times), f"({load_avg()})")
        row("server memory: resident / anonymous (heap) / file pages",
            f"{bsv.vm(proc.pid, 'VmRSS'):.0f} / {bsv.vm(proc.pid, 'RssAnon'):.0f} / {bsv.vm(proc.pid, 'RssFile'):.0f} MB",
            f"(peak resident {bsv.vm(proc.pid, 'VmHWM'):.0f} MB)")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="dupes,binary,float,serve,prune")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--pictures", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/work/bench-1m"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = args.parts.split(",")
    db = args.work / "db"
    if "build" in parts:
        build(args.work, args.n, args.pictures)
    if "dupes" in parts:
        part_dupes(db, args.work)
    if "binary" in parts:
        part_binary(db, args.queries)
    if "float" in parts:
        part_float(db, args.queries)
    if "serve" in parts:
        part_serve(db, args.queries)
    if "prune" in parts:
        part_prune(db, args.work)
    print(f"\n{args.n:,} pictures; {load_avg()} at the end\n")
    print("| measure | value | notes |\n| --- | --- | --- |")
    for what, value, note in ROWS:
        print(f"| {what} | {value} | {note} |")
    if args.json:
        args.json.write_text(json.dumps(RESULTS, indent=1, default=str))


if __name__ == "__main__":
    main()
