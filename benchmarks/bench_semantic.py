"""Semantic morphing and attribute queries: quality on real pictures, latency at 100k items.

Run:  .venv/bin/python benchmarks/bench_semantic.py [--parts blends,demo,morph,attr] [--n 100000]
      [--pairs 20] [--subsets 3] [--workdir DIR] [--reuse] [--json FILE]

Parts:

* ``blends``: anime36 plus 4 pixel blends for each of ``--blend-pairs`` random pairs of its
  pictures, in one collection (the bundled EfficientNet-Lite0); a morph between the two pictures
  of a pair with ``steps=4`` should return that pair's blends in order (the other pairs' blends
  are distractors).  Float and binary codes, exact solver and graph method.
* ``demo``: the demo gallery (25 characters x 3, known tags), same embedder, tag directions
  learned from its ``tags.json``: precision@10 of every attribute with plain search and with
  ``plus=ATTR`` (queries: every picture without the attribute), and the share of the query's
  other attributes the results keep.
* ``morph``: ``--n`` synthetic 4096-d features (``bench_search.clustered``: cluster centres plus
  variation in a shared subspace; codes are their signs) written into a collection; p50/p99
  latency of ``morph`` (graph method, endpoints outside the collection) for K = 4 and 8; then,
  on ``--subsets`` random 5k-row subsets, the graph method's path cost against the exact optimum
  over all 5k rows.
* ``attr``: the same features with 64 synthetic tags (probability = sigmoid of the projection on
  a random direction per tag): latency of ``attribute_search(vector=q, plus=TAG)`` against
  ``Collection.search(vector=q)``, taking turns query by query, directions cached; and the
  one-time cost of learning the directions.

Prints a markdown table; ``--json FILE`` saves the numbers.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # semantic_evaluate
import bench_search as bs

from illust2vec.collection import Collection
from illust2vec.semantic.attributes import attribute_search, tag_directions
from illust2vec.semantic.morph import morph
from semantic_evaluate import attribute_precision, morph_recovers, pixel_blends

ANIME36 = bs.SHARED / "data" / "anime36"
row = bs.row


def _effnet():
    from illust2vec.models.loading import load_model

    return load_model("generic-effnet-lite0", offline=True, progress=False)


def bench_blends(work: Path, pairs: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    files = sorted(ANIME36.glob("*.jpg"))
    chosen = []
    while len(chosen) < pairs:
        i, j = (int(v) for v in rng.choice(len(files), 2, replace=False))
        if (i, j) not in chosen and (j, i) not in chosen:
            chosen.append((i, j))
    root = work / "blends"
    shutil.rmtree(root, ignore_errors=True)
    blends = {p: pixel_blends(files[p[0]], files[p[1]], 4, root / "pics" / f"{p[0]:02d}-{p[1]:02d}") for p in chosen}
    model = _effnet()
    with Collection.open(root / "col") as col:
        col.add([ANIME36, root / "pics"], embedder=model, batch_size=16, workers=0, progress=False)
        for binary in (False, True):
            for method in ("exact", "graph"):
                ok = some = 0
                t = time.perf_counter()
                for (i, j), bl in blends.items():
                    good, r = morph_recovers(col, files[i], files[j], bl, binary=binary, method=method)
                    ok += good
                    some += len({s.path for s in r.intermediates} & {str(p.resolve()) for p in bl}) == 4
                dt = (time.perf_counter() - t) / len(blends)
                row(f"blends, {'binary' if binary else 'float'}, {method}: 4 blends returned in order",
                    f"{ok}/{len(blends)} pairs", f"(all 4 present in any order: {some}/{len(blends)}; "
                    f"{len(col)} items, {dt * 1000:.0f} ms per morph)")


def bench_demo(work: Path, k: int = 10) -> None:
    from illust2vec.io.gallery import ACCESSORY_TAGS, EYE_COLORS, FRINGE_TAGS, HAIR_COLORS, STYLE_TAGS, write_gallery

    root = work / "demo"
    shutil.rmtree(root, ignore_errors=True)
    write_gallery(root / "gallery", characters=25, variants=3, seed=0)
    labels = root / "gallery" / "tags.json"
    truth = {str((root / "gallery" / p).resolve()): t for p, t in json.loads(labels.read_text()).items()}
    groups = [{f"{h} hair" for h in HAIR_COLORS}, {f"{e} eyes" for e in EYE_COLORS}, set(STYLE_TAGS.values()),
              set(FRINGE_TAGS.values()), {v for v in ACCESSORY_TAGS.values() if v}]
    counts: dict[str, int] = {}
    for tags in truth.values():
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
    attrs = sorted(t for t, c in counts.items() if c >= 3 and c < len(truth))
    with Collection.open(root / "col") as col:
        col.add([root / "gallery"], embedder=_effnet(), batch_size=16, workers=0, progress=False)
        for binary in (False, True):
            scores = [attribute_precision(col, truth, t, k=k, labels=labels, exclusive=groups, binary=binary)
                      for t in attrs]
            name = "binary" if binary else "float"
            better = sum(s.plus > s.plain for s in scores)
            well = sum(s.plus >= s.plain + 0.2 for s in scores)
            row(f"demo gallery, {name}: mean precision@{k} plain -> plus",
                f"{np.mean([s.plain for s in scores]):.3f} -> {np.mean([s.plus for s in scores]):.3f}",
                f"({len(attrs)} attributes; raised for {better}, by >= 0.2 for {well}; mean ceiling "
                f"{np.mean([s.ceiling for s in scores]):.3f})")
            row(f"demo gallery, {name}: other attributes kept, plain -> plus",
                f"{np.mean([s.kept_plain for s in scores]):.3f} -> {np.mean([s.kept_plus for s in scores]):.3f}")
            if not binary:
                # held out: directions learned from the labels of half the characters, queries from the others
                chars = sorted({Path(p).parent.name for p in truth})
                seen = set(chars[::2])
                known = {p: sorted(t) for p, t in truth.items() if Path(p).parent.name in seen}
                held = [p for p in truth if Path(p).parent.name not in seen]
                ok = [t for t in attrs if sum(t in v for v in known.values()) >= 1 and
                      sum(t not in v for v in known.values()) >= 1]
                hs = [attribute_precision(col, truth, t, k=k, labels=known, exclusive=groups, queries=held)
                      for t in ok]
                row(f"demo gallery, float, held out: mean precision@{k} plain -> plus",
                    f"{np.mean([s.plain for s in hs]):.3f} -> {np.mean([s.plus for s in hs]):.3f}",
                    f"(directions from the labels of {len(seen)} of {len(chars)} characters, queries from the "
                    f"other {len(chars) - len(seen)}; {len(ok)} attributes; raised for "
                    f"{sum(s.plus > s.plain for s in hs)}, by >= 0.2 for {sum(s.plus >= s.plain + 0.2 for s in hs)}; "
                    f"kept {np.mean([s.kept_plain for s in hs]):.3f} -> {np.mean([s.kept_plus for s in hs]):.3f})")
                for s in scores:
                    row(f"  {s.tag} (carried by {counts[s.tag]})", f"{s.plain:.2f} -> {s.plus:.2f}",
                        f"(kept {s.kept_plain:.2f} -> {s.kept_plus:.2f}; ceiling {s.ceiling:.2f})")


def _features(n: int, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2000, bs.DIM), dtype=np.float32) / np.sqrt(bs.DIM) * 8
    return rng, centers


N_TAGS = 64


def _tag_probs(x: np.ndarray) -> np.ndarray:
    w = np.random.default_rng(7).standard_normal((bs.DIM, N_TAGS)).astype(np.float32) / np.sqrt(bs.DIM)
    z = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ w
    z = (z - np.linspace(0.3, 2.0, N_TAGS, dtype=np.float32) * z.std()) / (0.3 * z.std())
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def _write(path: Path, n: int, feats_fn) -> None:
    cache: dict[tuple[int, int], np.ndarray] = {}

    def feats(s, e):
        if (s, e) not in cache:
            cache.clear()
            cache[(s, e)] = feats_fn(s, e)
        return cache[(s, e)]

    bs.N_TAGS = N_TAGS
    bs.synthetic_collection(path, n, features=feats, codes=lambda s, e: np.packbits(feats(s, e) > 0, axis=1),
                            probs=lambda s, e: _tag_probs(feats(s, e)), chunk=20_000)


def bench_morph(work: Path, n: int, pairs: int, subsets: int, seed: int) -> None:
    rng, centers = _features(n, seed)
    path = work / "synthetic"
    t = time.perf_counter()
    _write(path, n, lambda s, e: bs.clustered(np.random.default_rng(seed * 1000 + s), e - s, centers))
    row(f"morph {n // 1000}k: write synthetic collection", f"{time.perf_counter() - t:.1f} s")
    qa, qb = bs.clustered(rng, pairs, centers), bs.clustered(rng, pairs, centers)
    with Collection.open(path, create=False) as col:
        t = time.perf_counter()
        col.search(vector=qa[0], k=1)
        row(f"morph {n // 1000}k: first search (builds the index)", f"{time.perf_counter() - t:.1f} s")
        for binary in (False, True):
            for steps in (4, 8):
                times, cands, cpu = [], [], []
                for a, b in zip(qa, qb):
                    if binary:
                        a, b = np.packbits(a > 0), np.packbits(b > 0)
                    t, c = time.perf_counter(), time.process_time()
                    r = morph(col, a, b, steps=steps, binary=binary)
                    times.append(time.perf_counter() - t)
                    cpu.append(time.process_time() - c)
                    cands.append(r.candidates)
                p50, p99 = bs.percentiles(times)
                row(f"morph {n // 1000}k {'binary' if binary else 'float'}, K={steps}: p50 / p99",
                    f"{p50:.0f} / {p99:.0f} ms (CPU p50 {np.median(cpu) * 1000:.0f} ms)",
                    f"({pairs} pairs, median {int(np.median(cands))} candidates; {bs.load_avg()})")
    if subsets:
        vf = bs.VectorFile(path / "feature.f32", bs.DIM, "float32")
        full = vf.view()
        for steps in (4, 8):
            ratios = []
            tex = []
            for s in range(subsets):
                sub = np.sort(np.random.default_rng(100 + s).choice(n, 5000, replace=False))
                spath = work / f"subset{s}"
                if not (spath / "collection.sqlite").exists() or not bs.REUSE:
                    _write(spath, 5000, lambda a, b, sub=sub: np.asarray(full[sub[a:b]]))
                with Collection.open(spath, create=False) as col:
                    for a, b in list(zip(qa, qb))[: max(2, pairs // subsets)]:
                        t = time.perf_counter()
                        ex = morph(col, a, b, steps=steps, method="exact", max_nodes=0)
                        tex.append(time.perf_counter() - t)
                        gr = morph(col, a, b, steps=steps, method="graph")
                        # the programme over all 5k rows without distinctness is a lower bound of the optimum
                        ratios.append((gr.cost / ex.bound, gr.cost / ex.cost, ex.optimal))
            r = np.asarray([x[0] for x in ratios])
            r2 = np.asarray([x[1] for x in ratios])
            row(f"morph, 5k subsets, K={steps}: graph cost / lower bound of the exact optimum",
                f"median {np.median(r):.4f}, max {r.max():.4f}",
                f"({len(r)} pairs on {subsets} subsets; within 5%: {int((r <= 1.05).sum())}/{len(r)}; "
                f"graph / exact solver's path: median {np.median(r2):.4f}, max {r2.max():.4f}, exact proven "
                f"optimal for {sum(x[2] for x in ratios)}; exact solve {np.median(tex):.1f} s)")


def bench_attr(work: Path, n: int, queries: int, rounds: int, seed: int) -> None:
    path = work / "synthetic"
    if not (path / "collection.sqlite").exists():
        rng, centers = _features(n, seed)
        _write(path, n, lambda s, e: bs.clustered(np.random.default_rng(seed * 1000 + s), e - s, centers))
    _, centers = _features(n, seed)
    qs = bs.clustered(np.random.default_rng(seed + 5), queries, centers)
    with Collection.open(path, create=False) as col:
        col.search(vector=qs[0], k=1)
        shutil.rmtree(path / "index", ignore_errors=True)  # directions too: measure learning them
        col.search(vector=qs[0], k=1)
        t = time.perf_counter()
        tag_directions(col, [f"tag{i}" for i in range(8)])
        row(f"attr {n // 1000}k: learn 8 tag directions (one pass over the features), first time",
            f"{time.perf_counter() - t:.1f} s")
        tag_directions(col, ["tag3"])
        fns = {
            "plain": lambda q: col.search(vector=q, k=20),
            "plus": lambda q: attribute_search(col, vector=q, plus="tag3", k=20),
            "plus+minus": lambda q: attribute_search(col, vector=q, plus="tag3", minus="tag5", k=20),
        }
        bs.latency_rows(fns, qs, rounds, f"attr {n // 1000}k: {{}} k=20 p50 / p99")
        res = bs.time_interleaved(fns, qs[: max(20, queries // 4)], 1)
        row(f"attr {n // 1000}k: plus / plain p50 (second interleaved run)", f"{res['plus'][0] / res['plain'][0]:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="blends,demo,morph,attr")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=20, help="morph endpoint pairs at --n")
    ap.add_argument("--blend-pairs", type=int, default=12)
    ap.add_argument("--subsets", type=int, default=3)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--reuse", action="store_true", help="keep and reuse synthetic collections in --workdir")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    bs.REUSE = args.reuse
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-semantic-"))
    work.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    t0 = time.perf_counter()
    if "blends" in parts:
        bench_blends(work, args.blend_pairs, args.seed)
    if "demo" in parts:
        bench_demo(work)
    if "morph" in parts:
        bench_morph(work, args.n, args.pairs, args.subsets, args.seed)
    if "attr" in parts:
        bench_attr(work, args.n, args.queries, args.rounds, args.seed)
    print("| measure | value | note |\n| --- | --- | --- |")
    for what, value, note in bs.ROWS:
        print(f"| {what} | {value} | {note} |")
    print(f"total {time.perf_counter() - t0:.0f} s; {bs.load_avg()}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("measure", "value", "note"), r)) for r in bs.ROWS], indent=1))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
