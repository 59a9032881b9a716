"""Exact near-duplicate pairs (multi-index hashing and the exhaustive scan) against brute force, the
collection's incremental pair cache, and the dupes command's flat CSV.

Brute force is a numpy popcount over every pair.  Codes are random with
planted pairs at every distance up to (and past) the radius, families of
near-identical codes (many ties, big buckets) and exact duplicates.
"""
from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from illust2vec.collection import mih
from illust2vec.collection.dupes import connected_components, near_duplicate_pairs


def brute_pairs(codes: np.ndarray, r: int, new_from: int = 0) -> np.ndarray:
    """``(i, j, d)`` of every pair within ``r`` with ``j >= new_from``, by comparing all of them."""
    n = len(codes)
    out = []
    for s in range(0, n, 256):
        d = np.bitwise_count(codes[s : s + 256, None, :] ^ codes[None, :, :]).sum(-1, dtype=np.int64)
        i, j = np.nonzero(d <= r)
        i += s
        keep = (i < j) & (j >= new_from)
        out.append(np.stack([i[keep], j[keep], d[i[keep] - s, j[keep]]], axis=1))
    res = np.concatenate(out) if out else np.zeros((0, 3), np.int64)
    return res[np.lexsort((res[:, 1], res[:, 0]))].astype(np.int64)


def flip(rng, code: np.ndarray, d: int, first_bit: int = 0) -> np.ndarray:
    u = np.unpackbits(code)
    u[rng.choice(np.arange(first_bit, len(u)), d, replace=False)] ^= 1
    return np.packbits(u)


def planted(rng, n: int, nbytes: int, r: int, *, dead: int = 0) -> np.ndarray:
    """Random codes (``dead`` leading bytes always 0) with two pairs at each distance 0..r+2, a family of
    near-identical codes and exact duplicates."""
    c = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    c[:, :dead] = 0
    bits = 8 * (nbytes - dead)
    for d in range(min(r + 2, bits) + 1):
        for _ in range(2):
            a, b = rng.choice(n, 2, replace=False)
            c[b] = flip(rng, c[a], d, 8 * dead)
    fam = rng.choice(n, 12, replace=False)
    for k, f in enumerate(fam[1:], 1):
        c[f] = flip(rng, c[fam[0]], k % 4, 8 * dead)  # ties: several at the same distance
    c[fam[-3:]] = c[fam[0]]  # and identical copies
    return c


CASES = [  # n, nbytes, r, dead bytes
    (300, 8, 3, 0), (500, 16, 7, 0), (400, 32, 20, 0), (600, 64, 40, 8), (300, 16, 0, 0), (250, 16, 15, 0),
    (800, 128, 60, 40), (200, 4, 40, 0), (60, 1, 3, 0), (120, 8, 64, 0), (120, 8, 500, 0), (2600, 32, 10, 0),
]


@pytest.mark.parametrize("n,nbytes,r,dead", CASES)
def test_pairs_equal_brute_force(n, nbytes, r, dead):
    rng = np.random.default_rng(n * 31 + r)
    codes = planted(rng, n, nbytes, r, dead=dead)
    for new_from in (0, n // 2, n - 3, n):
        want = brute_pairs(codes, r, new_from)
        for method in ("auto", "mih", "scan"):
            if method == "mih" and r >= nbytes:
                with pytest.raises(ValueError, match="mih"):
                    near_duplicate_pairs(codes, r, method=method)
                continue
            got = near_duplicate_pairs(codes, r, new_from=new_from, method=method, threads=2)
            assert got.dtype == np.int64 and got.shape[1] == 3
            np.testing.assert_array_equal(got, want, err_msg=f"{method} new_from={new_from}")
    if r >= 8 * nbytes:  # from the code length on, every pair
        assert len(brute_pairs(codes, r)) == n * (n - 1) // 2


def test_mih_on_a_memory_map_and_balanced_substrings(tmp_path):
    """Codes with bytes that never vary: the substrings share out the varied bytes (still exact), and a
    memory map works as input."""
    rng = np.random.default_rng(7)
    codes = planted(rng, 3000, 64, 19, dead=40)
    parts = mih.Substrings(64, 20, codes)
    assert sorted(np.concatenate(parts.cols).tolist()) == list(range(64))
    assert all(any(c >= 40 for c in cols) for cols in parts.cols)  # every substring has varied bytes
    path = tmp_path / "codes.u8"
    codes.tofile(path)
    mm = np.memmap(path, np.uint8, "r", shape=codes.shape)
    np.testing.assert_array_equal(near_duplicate_pairs(mm, 19, method="mih"), brute_pairs(codes, 19))


def test_huge_bucket_of_near_identical_codes_stays_in_bounded_memory(monkeypatch):
    """800 distinct codes within 4 bits of one another (every substring a single bucket): 319,600 pairs,
    all found; candidates are verified in chunks, so memory stays near the size of the answer."""
    monkeypatch.setattr(mih, "CHUNK_BYTES", 1 << 20)
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, 16, dtype=np.uint8)
    codes = np.stack([flip(rng, base, 2) for _ in range(800)])
    codes = codes[np.unique(codes, axis=0, return_index=True)[1]]
    want = brute_pairs(codes, 8)
    tracemalloc.start()
    got = near_duplicate_pairs(codes, 8, method="mih", threads=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, want)
    assert len(want) == len(codes) * (len(codes) - 1) // 2
    assert peak < 3 * want.nbytes + (64 << 20), f"peak {peak / 2**20:.0f} MB for {want.nbytes / 2**20:.0f} MB of pairs"


def test_bad_arguments():
    codes = np.zeros((4, 8), np.uint8)
    for bad in (codes.astype(np.int32), codes[0], [[1, 2]]):
        with pytest.raises(ValueError, match="uint8"):
            near_duplicate_pairs(bad, 1)
    with pytest.raises(ValueError, match="0 or more"):
        near_duplicate_pairs(codes, -1)
    with pytest.raises(ValueError, match="method"):
        near_duplicate_pairs(codes, 1, method="lsh")
    assert near_duplicate_pairs(codes[:1], 3).shape == (0, 3)
    assert near_duplicate_pairs(codes, 0).tolist() == [[i, j, 0] for i in range(4) for j in range(i + 1, 4)]


def test_connected_components():
    pairs = np.array([[5, 9, 1], [1, 2, 0], [9, 12, 3], [2, 3, 1], [20, 21, 0], [3, 1, 2]])
    nodes, root = connected_components(pairs)
    assert dict(zip(nodes.tolist(), root.tolist())) == {1: 1, 2: 1, 3: 1, 5: 5, 9: 5, 12: 5, 20: 20, 21: 20}
    chain = np.stack([np.arange(999, 0, -1) - 1, np.arange(999, 0, -1), np.zeros(999, int)], axis=1)
    assert set(connected_components(chain)[1].tolist()) == {0}


# --------------------------------------------------------------------------- the collection's pair cache
def _add(col, paths, codes, shas, *, rebuild: bool = False) -> None:
    """Codes computed elsewhere, appended through the collection's store (no model runs)."""
    from illust2vec.collection import ItemBatch, ModelRecord

    n = len(paths)
    model = ModelRecord(name="test-codes", identity="sha256:test-codes", outputs=("feature",), feature_dim=4,
                        code_bytes=codes.shape[1])
    with col.store.writing(embedder=model, rebuild=rebuild) as w:
        w.append(ItemBatch(paths=list(map(str, paths)), sizes=[1] * n, mtimes_ns=[1] * n, sha256=list(shas),
                           errors=[None] * n, features=np.ones((n, 4), np.float32), codes=codes))


def _live_pairs(col, r):
    """Brute force over the collection's live rows, as (row, row, distance)."""
    live = col.live_rows()
    p = brute_pairs(col.vectors("codes"), r)
    return np.stack([live[p[:, 0]], live[p[:, 1]], p[:, 2]], axis=1) if len(p) else p


def test_incremental_pairs_equal_a_full_recomputation(tmp_path, monkeypatch):
    from illust2vec.collection import Collection, pair_cache

    calls = []
    real = mih.pairs_among

    def spy(codes, rows, r, **kw):
        calls.append((len(rows), kw.get("new_from", 0), r))
        return real(codes, rows, r, **kw)

    monkeypatch.setattr(mih, "pairs_among", spy)
    rng = np.random.default_rng(11)
    codes = planted(rng, 900, 16, 12)
    paths = [tmp_path / "pics" / f"{i:04d}.png" for i in range(900)]
    for p in paths[:700]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    shas = [f"{i:064x}" for i in range(900)]
    with Collection.open(tmp_path / "db") as col:
        _add(col, paths[:600], codes[:600], shas[:600])
        first = col.dupes(max_distance=12)
        pairs = pair_cache.close_pairs(col.view, col.view.snapshot(), 12)
        np.testing.assert_array_equal(pairs, _live_pairs(col, 12))
        assert calls == [(600, 0, 12)] and first  # computed once, then read from the cache
        # more pictures: only they are compared (with the old and with each other)
        _add(col, paths[600:], codes[600:], shas[600:])
        np.testing.assert_array_equal(pair_cache.close_pairs(col.view, col.view.snapshot(), 12), _live_pairs(col, 12))
        assert calls[-1] == (900, 600, 12)
        # a smaller distance filters the cache; a larger one recomputes
        n = len(calls)
        np.testing.assert_array_equal(pair_cache.close_pairs(col.view, col.view.snapshot(), 5), _live_pairs(col, 5))
        assert len(calls) == n
        np.testing.assert_array_equal(pair_cache.close_pairs(col.view, col.view.snapshot(), 14), _live_pairs(col, 14))
        assert calls[-1] == (900, 0, 14)
        # deletions (the files of rows 700.. are gone): their pairs go, nothing is recomputed
        col.prune([tmp_path / "pics"])
        assert len(col.live_rows()) == 700
        n = len(calls)
        np.testing.assert_array_equal(pair_cache.close_pairs(col.view, col.view.snapshot(), 14), _live_pairs(col, 14))
        assert len(calls) == n
        # --rebuild puts other pictures under the same row numbers: the code hashes tell, all is recomputed
        other = planted(rng, 900, 16, 12)
        _add(col, paths, other, [f"{i + 5000:064x}" for i in range(900)], rebuild=True)
        want = _live_pairs(col, 14)
        np.testing.assert_array_equal(pair_cache.close_pairs(col.view, col.view.snapshot(), 14), want)
        assert calls[-1] == (900, 0, 14)
        # the groups are the connected components of those pairs
        nodes, root = connected_components(want)
        expect = {frozenset(nodes[root == r].tolist()) for r in np.unique(root)}
        assert {frozenset(g.rows) for g in col.dupes(max_distance=14)} == expect


def test_dupes_csv_has_a_header_and_flat_columns(tmp_path, capsys):
    from illust2vec.cli.dupes import FLAT_COLUMNS
    from illust2vec.cli.main import main
    from illust2vec.collection import Collection

    from conftest import ANIME36

    pics = sorted(ANIME36.glob("*.jpg"))[:4]
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (4, 16), dtype=np.uint8)
    with Collection.open(tmp_path / "db") as col:
        _add(col, pics, codes, [f"{i:064x}" for i in range(4)])
    out = tmp_path / "none.csv"
    assert main(["dupes", "--db", str(tmp_path / "db"), "--max-distance", "3", "-o", str(out), "--quiet"]) == 0
    assert out.read_text().splitlines() == [",".join(FLAT_COLUMNS)]
    codes[1] = flip(rng, codes[0], 2)
    with Collection.open(tmp_path / "db2") as col:
        _add(col, pics, codes, [f"{i:064x}" for i in range(4)])
    out = tmp_path / "some.csv"
    assert main(["dupes", "--db", str(tmp_path / "db2"), "--max-distance", "3", "-o", str(out), "--quiet"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(FLAT_COLUMNS) and len(rows) == 2
    assert {r["path"] for r in rows} == {str(p) for p in pics[:2]} and {r["group"] for r in rows} == {"1"}
    assert sum(r["keep"] == "True" for r in rows) == 1 and all(r["max_distance"] == "2" for r in rows)
    for r in rows:  # flat: no JSON anywhere
        assert not any(v.startswith(("[", "{")) for v in r.values())
        json.dumps(r)
    capsys.readouterr()
