"""Search indexes: sharded exact Hamming search, 4-bit PQ FastScan candidates with exact re-ranking, index caching.

The vectors are the anime36 features and codes of the i2v fixture model,
repeated with planted exact copies (ties) and a few flipped bits, so that
the collections are big enough to be split into shards.  Every result is
checked against a brute-force numpy computation with the documented order:
Hamming distance ascending (cosine descending), ties by smaller row.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from conftest import ANIME36

from illust2vec.collection import Collection, ItemBatch, ModelRecord
from illust2vec.collection import index as _index
from illust2vec.collection import search as _search


def _index_of(col: Collection):
    """``(index, meta)`` of the float search index the collection's view holds."""
    return col.view.memo(("index", "feature"))


POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


@pytest.fixture(scope="module")
def real(i2v_features):
    """Features and packed codes of the 36 anime36 images (i2v fixture model)."""
    from illust2vec.collection.infer import binarize

    paths = sorted(ANIME36.glob("*.jpg"))
    feats = np.asarray(i2v_features.extract_feature(paths), dtype=np.float32)
    return feats, binarize(i2v_features, feats)


def _grow(real, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows from the 36 real ones: each an exact copy (every fourth) or a copy with noise / a few bits flipped."""
    feats, codes = real
    rng = np.random.default_rng(seed)
    src = rng.integers(0, len(feats), n)
    f = feats[src] * rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)  # cosine ignores the scale
    noisy = np.arange(n) % 4 != 0
    f[noisy] += 0.05 * np.abs(feats).mean() * rng.standard_normal((int(noisy.sum()), feats.shape[1])).astype(np.float32)
    c = codes[src].copy()
    flip = (rng.random(c.shape) < 0.01) & noisy[:, None]
    c ^= (flip * rng.integers(1, 256, c.shape)).astype(np.uint8)
    return f, c


def _hamming_topk(codes: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int):
    d = POP[codes[rows] ^ q].sum(axis=1)
    o = np.lexsort((rows, d))[:k]
    return rows[o], d[o]


def _cosine(feats: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    x = feats[rows].astype(np.float64)
    return (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))


# --------------------------------------------------------------------------- binary, index level
@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_sharded_hamming_search_equals_numpy_with_ties(real, monkeypatch, shards):
    monkeypatch.setattr(_index, "PARALLEL_MIN_BYTES", 0)  # use the threads even for this small index
    _, codes = _grow(real, 3000, seed=1)
    live = np.sort(np.random.default_rng(2).choice(3000, 2500, replace=False))  # rows with gaps (deleted ones)
    idx = _index.build_binary_index(codes, live, shards=shards)
    assert len(idx.shards) == shards and idx.ntotal == len(live)
    ties = 0
    for qi in range(0, 2500, 97):
        q = codes[live[qi]]
        want_rows, want_d = _hamming_topk(codes, live, q, 40)
        ties += int((want_d[1:] == want_d[:-1]).sum())
        for threads in (1, 2):
            D, rows = idx.search(q[None], 40, threads=threads)
            assert rows[0].tolist() == want_rows.tolist()
            assert D[0].tolist() == want_d.tolist()
    assert ties > 100  # the planted copies really produced ties across the shards
    # several queries at once (FAISS's own threads over queries) give the same answers
    qs = codes[live[:7]]
    D, rows = idx.search(qs, 12)
    for j, q in enumerate(qs):
        want_rows, want_d = _hamming_topk(codes, live, q, 12)
        assert rows[j].tolist() == want_rows.tolist() and D[j].tolist() == want_d.tolist()
    # asking for more than there is pads like FAISS
    small = _index.build_binary_index(codes, live[:5], shards=shards)
    D, rows = small.search(codes[live[0]][None], 8)
    assert sorted(rows[0][:5].tolist()) == live[:5].tolist() and rows[0][5:].tolist() == [-1, -1, -1]


def test_sharded_range_search_equals_numpy(real):
    _, codes = _grow(real, 2000, seed=3)
    live = np.arange(0, 2000, 2)
    idx = _index.build_binary_index(codes, live, shards=3)
    lims, D, rows = idx.range_search(codes[live[:25]], 40)  # distances below 40
    assert len(lims) == 26
    for j in range(25):
        d = POP[codes[live] ^ codes[live[j]]].sum(axis=1)
        want = {(int(r), int(x)) for r, x in zip(live, d) if x < 40}
        got = {(int(r), int(x)) for r, x in zip(rows[lims[j] : lims[j + 1]], D[lims[j] : lims[j + 1]])}
        assert got == want and len(want) >= 1


def test_binary_index_extended_incrementally_stays_exact_and_balanced(real):
    _, codes = _grow(real, 3000, seed=4)
    idx = _index.build_binary_index(codes, np.arange(1000), shards=2)
    _index.add_binary_rows(idx, codes, np.arange(1000, 3000))
    assert [s.ntotal for s in idx.shards] == [1500, 1500]
    assert all((np.diff(ids) > 0).all() for ids in idx.ids)  # each shard's rows ascending
    all_rows = np.arange(3000)
    for qi in (0, 1234, 2999):
        D, rows = idx.search(codes[qi][None], 25)
        want_rows, want_d = _hamming_topk(codes, all_rows, codes[qi], 25)
        assert rows[0].tolist() == want_rows.tolist() and D[0].tolist() == want_d.tolist()


# --------------------------------------------------------------------------- collections
def _append(col: Collection, feats: np.ndarray, codes: np.ndarray) -> None:
    """Add rows through the collection's store, with vectors computed elsewhere (no model runs)."""
    start = int(col.meta.get("rows", 0))
    paths = [f"/real36/{r:06d}.jpg" for r in range(start, start + len(feats))]
    with col.store.writing(embedder=ModelRecord(name="real36", identity="sha256:real36", outputs=("feature",),
                                                feature_dim=feats.shape[1], code_bytes=codes.shape[1])) as w:
        w.append(ItemBatch(paths=paths, sizes=[0] * len(paths), mtimes_ns=[0] * len(paths),
                           sha256=[f"{r:064x}" for r in range(start, start + len(feats))],
                           errors=[None] * len(paths), features=feats, codes=codes))


@pytest.fixture()
def grown(real, tmp_path):
    feats, codes = _grow(real, 3000, seed=5)
    col = Collection.open(tmp_path / "col")
    _append(col, feats[:2000], codes[:2000])
    yield col, feats, codes
    col.close()


def _check_float_hits(hits, feats, live, q, k):
    """Scores are the exact cosines; nothing better was left out; equal scores come by row."""
    rows = np.array([h.row for h in hits])
    sims = _cosine(feats, rows, q)
    np.testing.assert_allclose([h.score for h in hits], sims, rtol=1e-5, atol=1e-5)
    allsims = _cosine(feats, live, q)
    kth = np.sort(allsims)[::-1][k - 1]
    assert len(hits) == k and sims.min() >= kth - 1e-5
    assert all(a > b - 1e-5 for a, b in zip(sims, sims[1:]))
    same = [(a.row, b.row) for a, b in zip(hits, hits[1:]) if np.array_equal(feats[a.row] / np.linalg.norm(feats[a.row]),
                                                                           feats[b.row] / np.linalg.norm(feats[b.row]))]
    assert all(a < b for a, b in same)
    return rows


def test_pq_fastscan_index_reranks_to_the_exact_top_k(grown, monkeypatch):
    col, feats, codes = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)  # 2000 rows: the 4-bit product-quantiser kind
    monkeypatch.setattr(_search, "RERANK_MIN", 2000)  # every row is a candidate: the answer must be exact
    live = np.arange(2000)
    for i in (0, 17, 1999):
        q = feats[i] * 3.0
        hits = col.search(vector=q, k=15)
        rows = _check_float_hits(hits, feats, live, q, 15)
        want = live[np.lexsort((live, -_cosine(feats, live, q)))[:15]]
        assert set(rows.tolist()) == set(want.tolist())
    idx, im = _index_of(col)
    assert im.kind == "pq4fs-ip" and im.format == _index.INDEX_FORMAT == 2
    assert len(idx.shards) == _index.search_threads() and idx.transform is None
    assert idx.shards[0].M == _index.pq_subquantizers(feats.shape[1]) == min(256, feats.shape[1])
    np.testing.assert_allclose(idx.norms[:2000], np.linalg.norm(feats[:2000], axis=1), rtol=1e-5)
    # fewer candidates: still exact scores for what is returned, and the planted copies are found
    monkeypatch.setattr(_search, "RERANK_MIN", 200)
    hits = col.search(vector=feats[4], k=10)  # row 4 is an exact copy (every fourth row): cosine 1
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    _check_float_hits(hits[:1], feats, live, feats[4], 1)


def test_float_and_binary_indexes_follow_additions_and_deletions(grown, monkeypatch):
    col, feats, codes = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)
    monkeypatch.setattr(_search, "RERANK_MIN", 4000)
    col.search(vector=feats[0], k=5)
    col.search(vector=codes[0], k=5, binary=True)
    path = col.path / "index" / "feature.faiss"
    assert json.loads(path.with_suffix(".json").read_text())["rows_upto"] == 2000
    assert not (col.path / "index" / "codes.faiss").exists()  # the codes file is the binary index
    _append(col, feats[2000:], codes[2000:])  # incremental: the indexes are extended, not rebuilt
    live = np.arange(3000)
    q = feats[2501]  # a noisy copy: only itself has cosine 1
    hits = col.search(vector=q, k=8)
    assert hits[0].row == 2501 and hits[1].score < 0.9999
    _check_float_hits(hits, feats, live, q, 8)
    assert json.loads(path.with_suffix(".json").read_text())["rows_upto"] == 3000
    bh = col.search(vector=codes[2999], k=30, binary=True)
    want_rows, want_d = _hamming_topk(codes, live, codes[2999], 30)
    assert [h.row for h in bh] == want_rows.tolist() and [h.distance for h in bh] == want_d.tolist()
    # a fresh reader loads the saved float index (format 2) and answers the same
    with Collection.open(col.path, create=False) as other:
        assert [h.row for h in other.search(vector=q, k=8)] == [h.row for h in hits]
        assert _index_of(other)[1].rows_upto == 3000
    # deletions bump delete_gen: both indexes are rebuilt without the deleted rows
    gone = list(range(0, 3000, 3))
    col.store.remove_files([f"/real36/{r:06d}.jpg" for r in gone])
    live = np.setdiff1d(np.arange(3000), gone)
    q = feats[3]  # row 3 is gone, its exact copies (same source image) may remain
    hits = col.search(vector=q, k=10)
    assert not {h.row for h in hits} & set(gone)
    _check_float_hits(hits, feats, live, q, 10)
    bh = col.search(vector=codes[3], k=20, binary=True)
    want_rows, want_d = _hamming_topk(codes, live, codes[3], 20)
    assert [h.row for h in bh] == want_rows.tolist() and [h.distance for h in bh] == want_d.tolist()


def test_index_of_another_format_is_rebuilt(grown, monkeypatch):
    col, feats, _ = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)
    first = [h.row for h in col.search(vector=feats[9], k=6)]
    meta = col.path / "index" / "feature.json"
    m = json.loads(meta.read_text())
    m["format"] = 1  # as written by the previous layout
    meta.write_text(json.dumps(m))
    assert _index.load(col.path / "index" / "feature.faiss") is None
    with Collection.open(col.path, create=False) as other:
        assert [h.row for h in other.search(vector=feats[9], k=6)] == first
    assert json.loads(meta.read_text())["format"] == _index.INDEX_FORMAT


def test_pca_ivf_index_is_rebuilt_as_pq_when_its_size_class_changes(grown, monkeypatch):
    """An index built as PCA + IVF (what the old thresholds chose from 200k rows) is rebuilt as the
    4-bit PQ FastScan once the thresholds put its size in the PQ class; its candidates then give the
    exact top k with every row a candidate and reach the brute-force top k with 5% of the rows."""
    col, feats, _ = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)
    monkeypatch.setattr(_index, "IVF_MIN", 1000)  # 2000 rows: PCA + IVF
    monkeypatch.setattr(_search, "RERANK_MIN", 2000)
    col.search(vector=feats[1], k=5)
    assert _index_of(col)[1].kind == "pca-ivf-ip"
    assert json.loads((col.path / "index" / "feature.json").read_text())["kind"] == "pca-ivf-ip"
    monkeypatch.setattr(_index, "IVF_MIN", 10_000)  # 2000 rows: now the PQ kind
    live = np.arange(2000)
    with Collection.open(col.path, create=False) as other:
        for i in (1, 502, 1998):
            q = feats[i]
            hits = other.search(vector=q, k=12)
            _check_float_hits(hits, feats, live, q, 12)  # exact scores, nothing better left out
            want = np.sort(_cosine(feats, live, q))[::-1][:12]  # (planted copies tie up to rounding)
            np.testing.assert_allclose([h.score for h in hits], want, atol=1e-5)
        idx, im = _index_of(other)
        assert im.kind == "pq4fs-ip" and idx.transform is None
        assert json.loads((col.path / "index" / "feature.json").read_text())["kind"] == "pq4fs-ip"
        monkeypatch.setattr(_search, "RERANK_MIN", 100)  # 5% of the rows as candidates
        found = []
        for i in range(3, 2000, 41):
            q = feats[i]
            kth = np.sort(_cosine(feats, live, q))[::-1][9]
            found.append(np.mean([h.score >= kth - 1e-5 for h in other.search(vector=q, k=10)]))
        assert np.mean(found) >= 0.95, np.mean(found)  # recall@10 against brute force (ties counted as found)


def test_default_thresholds_use_pq_for_large_collections():
    """Up to IVF_MIN the full-vector PQ FastScan is used (the PCA projection lost most neighbours of
    the 1M-row benchmark, see benchmarks/bench_search.py --parts ivf1m); thresholds stay ordered."""
    assert _index.float_kind(_index.FLAT_MAX) == "flat-ip"
    assert _index.float_kind(_index.FLAT_MAX + 1) == "pq4fs-ip"
    assert _index.float_kind(1_000_000) == "pq4fs-ip"
    assert _index.float_kind(_index.IVF_MIN) == "pq4fs-ip" and _index.float_kind(_index.IVF_MIN + 1) == "pca-ivf-ip"


def test_large_binary_index_holds_short_codes_and_reranks_exactly(grown, monkeypatch):
    """From BINARY_SHORT_MIN rows on the binary index holds the most varied bytes of each code; search
    re-ranks its candidates on the full codes: exact distances, the exact top k when every row is a
    candidate, high recall with fewer; additions extend it, deletions and size classes rebuild it."""
    col, feats, codes = grown
    monkeypatch.setattr(_index, "BINARY_SHORT_MIN", 1000)
    monkeypatch.setattr(_search, "BINARY_RERANK_MIN", 2000)  # every row a candidate: exact
    live = np.arange(2000)
    for qi in (0, 5, 1999):
        bh = col.search(vector=codes[qi], k=25, binary=True)
        want_rows, want_d = _hamming_topk(codes, live, codes[qi], 25)
        assert [h.row for h in bh] == want_rows.tolist() and [h.distance for h in bh] == want_d.tolist()
    idx = col.view.memo(("index", "codes"))[0]
    assert not idx.exact and len(idx.columns) == _index.SHORT_BYTES and idx.shards[0].d == _index.SHORT_BYTES * 8
    # the chosen bytes are the most varied ones
    ent = _index_entropy(codes[:2000])
    assert ent[idx.columns].min() >= np.sort(ent)[::-1][_index.SHORT_BYTES - 1] - 1e-9
    # fewer candidates than rows: distances stay exact, recall@20 against the exact answer stays high
    monkeypatch.setattr(_search, "BINARY_RERANK_MIN", 100)
    monkeypatch.setattr(_search, "BINARY_RERANK_FACTOR", 5)
    recalls = []
    for qi in range(0, 2000, 50):
        rows = col.nearest_rows(codes[qi][None], 20, binary=True)[0]
        want_rows, want_d = _hamming_topk(codes, live, codes[qi], 20)
        d = POP[codes[rows] ^ codes[qi]].sum(axis=1)
        assert len(rows) == 20 and (np.diff(d) >= 0).all() and (d >= want_d).all()  # never better than exact
        recalls.append(np.isin(rows, want_rows).mean())
    assert np.mean(recalls) >= 0.95, np.mean(recalls)
    # additions extend the short-code index (same columns); a filter goes through the same path
    monkeypatch.setattr(_search, "BINARY_RERANK_MIN", 3000)
    _append(col, feats[2000:], codes[2000:])
    live = np.arange(3000)
    bh = col.search(vector=codes[2999], k=30, binary=True)
    want_rows, want_d = _hamming_topk(codes, live, codes[2999], 30)
    assert [h.row for h in bh] == want_rows.tolist() and [h.distance for h in bh] == want_d.tolist()
    assert col.view.memo(("index", "codes"))[0].ntotal == 3000
    # deletions: rebuilt without them; below the threshold again: the exact full-code index
    gone = list(range(0, 3000, 2))
    col.store.remove_files([f"/real36/{r:06d}.jpg" for r in gone])
    monkeypatch.setattr(_index, "BINARY_SHORT_MIN", 2000)
    live = np.setdiff1d(np.arange(3000), gone)
    bh = col.search(vector=codes[7], k=20, binary=True)
    want_rows, want_d = _hamming_topk(codes, live, codes[7], 20)
    assert [h.row for h in bh] == want_rows.tolist() and [h.distance for h in bh] == want_d.tolist()
    assert col.view.memo(("index", "codes"))[0].exact


def _index_entropy(codes: np.ndarray) -> np.ndarray:
    from illust2vec.collection.mih import byte_entropy

    return byte_entropy(codes)


def test_large_collections_with_few_directions_get_a_pca_product_quantiser(grown, monkeypatch):
    """From PCA_PQ_MIN rows, features whose energy lies in a few hundred directions are quantised after a
    PCA projection (finer codes per dimension); spread-out features keep the full-vector quantiser."""
    col, feats, codes = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)
    monkeypatch.setattr(_index, "PCA_PQ_MIN", 1000)
    monkeypatch.setattr(_index, "PCA_DIM", 64)  # a quicker quantiser to train than the default 256
    monkeypatch.setattr(_search, "RERANK_MIN", 2000)  # every row a candidate: exact
    live = np.arange(2000)
    for i in (0, 17, 1999):
        q = feats[i] * 3.0
        rows = _check_float_hits(col.search(vector=q, k=15), feats, live, q, 15)
        assert set(rows.tolist()) == set(live[np.lexsort((live, -_cosine(feats, live, q)))[:15]].tolist())
    idx, im = _index_of(col)
    assert im.kind == "pca-pq4fs-ip" and idx.transform.shape == (_index.PCA_DIM, feats.shape[1])
    assert idx.shards[0].d == _index.PCA_DIM and idx.shards[0].M == _index.PCA_DIM // 2
    monkeypatch.setattr(_search, "RERANK_MIN", 100)  # 5% of the rows as candidates: still the nearest ones
    found = []  # share of the returned rows as close as the exact 10th (the planted exact copies tie)
    for i in range(0, 2000, 100):
        kth = np.sort(_cosine(feats, live, feats[i]))[::-1][9]
        found.append((_cosine(feats, col.nearest_rows(feats[i][None], 10)[0], feats[i]) >= kth - 1e-5).mean())
    assert np.mean(found) >= 0.9, np.mean(found)
    # saved and loaded as its kind (the same size class as the full-vector PQ: not rebuilt)
    with Collection.open(col.path, create=False) as other:
        assert [h.row for h in other.search(vector=feats[3], k=5)] == [h.row for h in col.search(vector=feats[3], k=5)]
        assert _index_of(other)[1].kind == "pca-pq4fs-ip"
    # features spread over every direction: the full-vector product quantiser
    spread = np.random.default_rng(0).standard_normal((2000, 256), dtype=np.float32)
    idx2, kind = _index.build_float_index(spread, np.arange(2000))
    assert kind == "pq4fs-ip" and idx2.transform is None


def test_pq_index_grown_past_pca_pq_min_is_rebuilt_once_with_the_projection(grown, monkeypatch):
    """A full-vector PQ index trained below PCA_PQ_MIN rows that grows past it is rebuilt, so that the PCA
    projection is chosen on the collection it became; once trained at that size it is only appended to."""
    col, feats, codes = grown
    monkeypatch.setattr(_index, "FLAT_MAX", 500)
    monkeypatch.setattr(_index, "PCA_PQ_MIN", 2500)
    monkeypatch.setattr(_index, "PCA_DIM", 64)
    monkeypatch.setattr(_search, "RERANK_MIN", 3000)  # every row a candidate: exact
    col.search(vector=feats[1], k=5)
    _, im = _index_of(col)
    assert im.kind == "pq4fs-ip" and im.built_ntotal == 2000
    _append(col, feats[2000:2600], codes[2000:2600])
    live = np.arange(2600)
    _check_float_hits(col.search(vector=feats[2100], k=8), feats, live, feats[2100], 8)
    _, im2 = _index_of(col)
    assert im2.kind == "pca-pq4fs-ip" and im2.built_ntotal == 2600
    saved = json.loads((col.path / "index" / "feature.json").read_text())
    assert saved["kind"] == "pca-pq4fs-ip" and saved["built_ntotal"] == 2600
    _append(col, feats[2600:], codes[2600:])
    _check_float_hits(col.search(vector=feats[2900], k=8), feats, np.arange(3000), feats[2900], 8)
    _, im3 = _index_of(col)
    assert im3.ntotal == 3000 and im3.built_ntotal == 2600, im3  # appended, not rebuilt
    # an index saved before built_ntotal was recorded loads, and counts as trained on what it holds
    del saved["built_ntotal"]
    assert not _index.outgrown(_index.IndexMeta(**{**saved, "kind": "pq4fs-ip", "ntotal": 2600}), 3000)
    assert _index.outgrown(_index.IndexMeta(**{**saved, "kind": "pq4fs-ip", "ntotal": 2400}), 2600)
