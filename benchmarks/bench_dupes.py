"""Near-duplicates: exact pairs by multi-index hashing against FAISS's exhaustive range search,
and the copy distances behind the default ``--max-distance``.

Run:  flock /tmp/i2v-heavy.lock .venv/bin/python benchmarks/bench_dupes.py [--parts speed,crossover,incremental,costs,distances]
      [--n 300000,1000000] [--radius 82] [--queries 2000] [--json FILE]

Parts:

* ``speed``: N random 4096-bit codes with planted pairs at every distance
  0..r (and a family of near-identical codes, and exact duplicates);
  ``near_duplicate_pairs`` (wall and CPU time, 1 and 2 threads) against
  FAISS ``IndexBinaryFlat.range_search`` over all N codes, the *same run*:
  FAISS is timed on ``--queries`` of the N codes as queries (its cost is
  exactly linear in the queries: all-pairs = that time * N / queries).  Exact:
  the planted pairs are found, and every pair FAISS finds for the sampled
  queries is among ours and vice versa.
* ``crossover``: at 100k codes, the radius sweep: the estimate of each method
  (what ``method="auto"`` decides on) next to both methods measured (the scan
  on a subsample of queries, scaled), to show where the switch happens.
* ``incremental``: 1M old codes + 1000 new ones: only the new pairs
  (``new_from``) against recomputing all.
* ``costs``: the unit costs behind the automatic choice (``mih.NS_PER_*``).
* ``distances``: anime36 and five edited copies of each (horizontal flip, 10%
  crop, recolour, JPEG q60, half size) with every model whose codes are
  available offline: the bundled ``generic-effnet-lite0`` (SimHash) and the
  i2v fixture feature model (random weights: its distances say nothing about
  the published model).  Histograms of copy-to-original distances by edit,
  and of distances between different pictures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _timing import cpu_model
from illust2vec.collection import mih
from illust2vec.collection.dupes import near_duplicate_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared"
NBYTES = 512
ROWS: list[tuple[str, str, str]] = []
RESULTS: dict[str, object] = {}


def load_avg() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value} {note}", file=sys.stderr, flush=True)


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def flip_bits(rng, code: np.ndarray, d: int) -> np.ndarray:
    u = np.unpackbits(code)
    u[rng.choice(len(u), d, replace=False)] ^= 1
    return np.packbits(u)


def planted_codes(n: int, r: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Random codes; pairs at every distance 0..r (two each); a family of 20 codes within 3 bits of one
    code; 10 exact duplicates of one code.  Returns the codes and the planted pairs (i < j)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    pick = rng.choice(n, 4 * (r + 1) + 40, replace=False)
    planted = set()
    k = 0
    for d in range(r + 1):
        for _ in range(2):
            a, b = pick[k], pick[k + 1]
            k += 2
            codes[b] = flip_bits(rng, codes[a], d)
            planted.add((min(a, b), max(a, b)))
    fam = pick[k : k + 20]
    for f in fam[1:]:
        codes[f] = flip_bits(rng, codes[fam[0]], int(rng.integers(0, 4)))
    dup = pick[k + 20 : k + 30]
    codes[dup] = codes[dup[0]]
    return codes, planted


def faiss_pairs(codes: np.ndarray, queries: np.ndarray, r: int, threads: int):
    """FAISS ``IndexBinaryFlat.range_search`` of ``queries`` over all codes: ``(pairs set, seconds, index build s)``."""
    import faiss

    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    build = time.perf_counter() - t
    t = time.perf_counter()
    lims, D, I = index.range_search(np.ascontiguousarray(codes[queries]), r + 1)
    secs = time.perf_counter() - t
    out = set()
    for q, a in enumerate(queries):
        for b, d in zip(I[lims[q] : lims[q + 1]], D[lims[q] : lims[q + 1]]):
            if b != a:
                out.add((min(int(a), int(b)), max(int(a), int(b)), int(d)))
    return out, secs, build


def part_speed(ns: list[int], r: int, nq: int) -> None:
    print(f"speed: r={r}", file=sys.stderr)
    for n in ns:
        codes, planted = planted_codes(n, r)
        la = load_avg()
        res = {}
        for threads in (2, 1):
            pairs, wall, cpu = timed(lambda: near_duplicate_pairs(codes, r, threads=threads))
            res[threads] = (wall, cpu)
        found = {(int(a), int(b)) for a, b, _ in pairs}
        assert planted <= found, "a planted pair is missing"
        rng = np.random.default_rng(1)
        queries = np.unique(np.concatenate([rng.choice(n, nq, replace=False),
                                            np.array([a for a, _ in planted][:50])]))
        fp, fsecs, fbuild = faiss_pairs(codes, queries, r, 2)
        qs = set(queries.tolist())
        ours = {(int(a), int(b), int(d)) for a, b, d in pairs if int(a) in qs or int(b) in qs}
        assert ours == fp, f"MIH and FAISS differ on the sampled queries: {len(ours ^ fp)} pairs"
        full = fsecs / len(queries) * n
        la2 = load_avg()
        row(f"near_duplicate_pairs, {n:,} x 4096-bit codes, r={r}, 2 threads", f"{res[2][0]:.2f} s wall",
            f"(CPU {res[2][1]:.2f} s; {len(pairs)} pairs; {la} before, {la2} after)")
        row(f"near_duplicate_pairs, {n:,} codes, r={r}, 1 thread", f"{res[1][0]:.2f} s wall", f"(CPU {res[1][1]:.2f} s)")
        row(f"FAISS IndexBinaryFlat.range_search, {len(queries)} queries over {n:,} codes, 2 threads",
            f"{fsecs:.2f} s -> all {n:,} queries {full:.0f} s ({full / 3600:.2f} h)",
            f"(index build {fbuild:.2f} s; same pairs for these queries)")
        row(f"speed-up at {n:,} (FAISS all-pairs / ours, both 2 threads)", f"{full / res[2][0]:.0f}x", "")
        RESULTS[f"speed_{n}"] = {"n": n, "r": r, "mih_wall_2t": res[2][0], "mih_cpu_2t": res[2][1],
                                  "mih_wall_1t": res[1][0], "faiss_queries": len(queries), "faiss_s": fsecs,
                                  "faiss_all_s": full, "pairs": len(pairs), "load_before": la, "load_after": la2}
        del codes


def part_crossover(n: int = 100_000, nq: int = 500) -> None:
    print("crossover", file=sys.stderr)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    out = []
    for r in (10, 40, 82, 120, 170, 200, 255, 300, 511, 600):
        method, est = mih.choose_method(codes, np.arange(n), r)
        q = rng.choice(n, nq, replace=False)
        _, scan_s, _ = timed(lambda: mih.scan_pairs(codes, np.sort(q), r, threads=2))
        # the scan of nq query rows against rows from them on: about nq*n/2 pairs -> scale to n*n/2
        scan_all = scan_s * n / nq
        if est["mih_s"] < 600:
            _, mih_s, _ = timed(lambda: mih.mih_pairs(codes, np.arange(n), r, threads=2))
        else:
            mih_s = float("nan")
        out.append((r, method, est, mih_s, scan_all))
        row(f"r={r} at {n:,} codes: auto picks {method}",
            f"estimate mih {est['mih_s']:.1f} s / scan {est['scan_s']:.0f} s; measured mih {mih_s:.1f} s / "
            f"scan ~{scan_all:.0f} s", f"(candidates est. {est.get('candidates', float('nan')):.3g}; {load_avg()})")
    RESULTS["crossover"] = [{"r": r, "auto": m, "est": e, "mih_s": ms, "scan_s": ss} for r, m, e, ms, ss in out]


def part_incremental(n: int = 1_000_000, new: int = 1000, r: int = 82) -> None:
    print("incremental", file=sys.stderr)
    codes, planted = planted_codes(n + new, r, seed=5)
    la = load_avg()
    allp, wall_all, _ = timed(lambda: near_duplicate_pairs(codes, r))
    newp, wall_new, cpu_new = timed(lambda: near_duplicate_pairs(codes, r, new_from=n))
    assert np.array_equal(newp, allp[allp[:, 1] >= n])
    row(f"{new} new codes against {n:,}: only the new pairs (new_from)", f"{wall_new:.2f} s wall",
        f"(CPU {cpu_new:.2f} s; all pairs again: {wall_all:.2f} s; {la})")
    RESULTS["incremental"] = {"n": n, "new": new, "new_s": wall_new, "all_s": wall_all}


def part_costs() -> None:
    import faiss

    print("costs", file=sys.stderr)
    rng = np.random.default_rng(4)
    n = 500_000
    codes = rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    parts = mih.Substrings(NBYTES, 83)
    _, t_keys, _ = timed(lambda: parts.keys(codes, None, range(16)))
    keys = parts.keys(codes, None, range(1))[0]
    _, t_sort, _ = timed(lambda: mih._pass(codes, np.arange(n), parts, 0, keys, 82, 0))
    per_key = (t_keys / 16 + t_sort) / n * 1e9
    # candidates as a pass verifies them: chunks of CHUNK_BYTES, half of them true pairs (which go through
    # the first-agreement check), partners scattered over the codes
    chunk = mih.CHUNK_BYTES // NBYTES
    a = np.sort(rng.integers(0, n, 16 * chunk))
    b = rng.integers(0, n, len(a))
    codes[b[::2]] = codes[a[::2]]
    _, t_ver, _ = timed(lambda: [mih._verify(codes, parts, a[s:s + chunk], b[s:s + chunk], 40, 82)
                                 for s in range(0, len(a), chunk)])
    per_cand = t_ver / len(a) * 1e9
    faiss.omp_set_num_threads(1)
    x = np.ascontiguousarray(codes[:20_000])
    _, t_scan, _ = timed(lambda: mih.scan_pairs(codes, np.arange(20_000), 82, threads=1))
    per_byte = t_scan / (20_000 * 19_999 / 2) / NBYTES * 1e9
    row("cost per code and substring pass (hash + sort)", f"{per_key:.1f} ns", f"(NS_PER_KEY = {mih.NS_PER_KEY})")
    row("cost per candidate pair verified", f"{per_cand:.0f} ns", f"(NS_PER_CANDIDATE = {mih.NS_PER_CANDIDATE})")
    row("FAISS exhaustive scan per code byte, one thread", f"{per_byte:.3f} ns",
        f"(NS_PER_BYTE_SCAN = {mih.NS_PER_BYTE_SCAN}; {load_avg()})")
    del x
    RESULTS["costs"] = {"ns_per_key": per_key, "ns_per_candidate": per_cand, "ns_per_byte_scan": per_byte}


# --------------------------------------------------------------------------- copy distances
EDITS = ("jpeg60", "half", "crop10", "recolour", "flip")


def _edit(im, kind: str):
    from PIL import Image, ImageEnhance, ImageOps

    w, h = im.size
    if kind == "flip":
        return ImageOps.mirror(im)
    if kind == "crop10":
        return im.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95)))
    if kind == "recolour":
        return ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.15)).enhance(0.7)
    if kind == "half":
        return im.resize((w // 2, h // 2), Image.Resampling.BICUBIC)
    return im


def _histogram(values: np.ndarray, bits: int, width: float = 0.02) -> str:
    edges = np.arange(0, 0.5 + width, width)
    h, _ = np.histogram(values / bits, edges)
    return " ".join(f"{edges[i]:.2f}:{c}" for i, c in enumerate(h) if c)


def part_distances(work: Path) -> None:
    from PIL import Image

    from illust2vec import Illustration2Vec
    from illust2vec.errors import Illust2VecError
    from illust2vec.models.loading import load_model

    print("distances", file=sys.stderr)
    originals = sorted((SHARED / "data" / "anime36").glob("*.jpg"))
    folder = work / "copies"
    folder.mkdir(parents=True, exist_ok=True)
    files, stems, kinds = [], [], []
    for p in originals:
        im = Image.open(p).convert("RGB")
        for kind in ("orig",) + EDITS:
            q = folder / f"{p.stem}_{kind}.jpg"
            if not q.exists():
                _edit(im, kind).save(q, quality=60 if kind == "jpeg60" else 95)
            files.append(str(q))
            stems.append(p.stem)
            kinds.append(kind)
    stems, kinds = np.array(stems), np.array(kinds)
    models = {}
    try:
        models["generic-effnet-lite0 (SimHash, trained ImageNet weights)"] = load_model(
            "generic-effnet-lite0", offline=True, progress=False)
    except Illust2VecError as exc:
        print(f"  generic-effnet-lite0 not available: {exc}", file=sys.stderr)
    fx = SHARED / "fixtures" / "i2v" / "feature_w16_e1024.caffemodel"
    if fx.exists():
        models["i2v feature fixture (positive codes, RANDOM weights)"] = Illustration2Vec.from_caffemodel(
            fx, alpha="drop", model_dir=work / "store")
    out = {}
    for name, model in models.items():
        codes = model.binarize_features(model.extract_feature(files))
        bits = codes.shape[1] * 8
        D = np.bitwise_count(codes[:, None, :] ^ codes[None, :, :]).sum(-1)
        orig = {s: i for i, (s, k) in enumerate(zip(stems, kinds)) if k == "orig"}
        res = {"bits": bits, "kind": getattr(model, "binarize", "?")}
        for kind in EDITS:
            d = np.array([D[orig[s], i] for i, (s, k) in enumerate(zip(stems, kinds)) if k == kind])
            res[kind] = {"min": int(d.min()), "median": float(np.median(d)), "max": int(d.max())}
            row(f"{name}: {kind} copy to its original", f"{d.min()} / {np.median(d):.0f} / {d.max()} bits "
                f"(max {d.max() / bits:.1%})", f"[{_histogram(d, bits)}]")
        other = stems[:, None] != stems[None, :]
        dd = D[other]
        res["distinct"] = {"min": int(dd.min()), "p01": float(np.percentile(dd, 1)), "median": float(np.median(dd))}
        row(f"{name}: different pictures (any versions)", f"{dd.min()} / p1 {np.percentile(dd, 1):.0f} / "
            f"median {np.median(dd):.0f} bits (min {dd.min() / bits:.1%})", f"[{_histogram(dd, bits)}]")
        same = ~other & ~np.eye(len(files), dtype=bool)
        res["same_picture_max"] = int(D[same].max())
        row(f"{name}: two versions of one picture, largest", f"{D[same].max()} bits ({D[same].max() / bits:.1%})", "")
        out[name] = res
    RESULTS["distances"] = out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="speed,crossover,incremental,costs,distances")
    ap.add_argument("--n", default="300000,1000000", help="code counts for the speed part")
    ap.add_argument("--radius", type=int, default=82)
    ap.add_argument("--queries", type=int, default=2000, help="FAISS queries timed in the speed part")
    ap.add_argument("--work", type=Path, default=Path("/tmp/illust2vec-bench-dupes"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    parts = args.parts.split(",")
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {load_avg()}", file=sys.stderr)
    if "distances" in parts:
        part_distances(args.work)
    if "costs" in parts:
        part_costs()
    if "speed" in parts:
        part_speed([int(x) for x in args.n.split(",")], args.radius, args.queries)
    if "crossover" in parts:
        part_crossover()
    if "incremental" in parts:
        part_incremental(r=args.radius)
    print(f"\n{cpu_model()}, {os.cpu_count()} CPUs, numpy {np.__version__}; {load_avg()} at the end\n")
    print("| measure | value | notes |\n| --- | --- | --- |")
    for what, value, note in ROWS:
        print(f"| {what} | {value} | {note} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": cpu_model(), "results": RESULTS}, indent=1, default=str))


if __name__ == "__main__":
    main()
