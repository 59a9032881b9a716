"""Compaction: the disk of pruned pictures comes back, and a reader in another process that still reads
an older snapshot keeps reading valid data until it moves on."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from illust2vec.collection import Collection, ItemBatch, ModelRecord

N, DIM = 600, 4096

READER = textwrap.dedent("""
    import sys, numpy as np
    from illust2vec.collection import Collection
    col = Collection.open(sys.argv[1], create=False)
    snap = col.view.snapshot()                         # the snapshot an export or a search would read from
    live, vf = snap.live, col.view.vector_file("feature", snap)
    def total(rows):
        return float(np.asarray(vf.read(rows), np.float64).sum())
    col.conn.execute("BEGIN")                          # and an open read transaction of the database
    files = col.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    print("ready", len(live), total(live), flush=True)
    sys.stdin.readline()
    again = col.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    col.conn.execute("COMMIT")
    print("again", total(live), files == again, flush=True)  # after the prune and vacuum: the same data
    sys.stdin.readline()
    live = col.live_rows()                             # a new snapshot: the reader moves on
    print("moved", len(live), flush=True)
    sys.stdin.readline()
    print("now", total(live), flush=True)
    col.close()
""")


def _features(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, DIM), dtype=np.float32) + 1.0


def _build(tmp_path: Path) -> tuple[Path, list[Path], np.ndarray]:
    pics = tmp_path / "pics"
    pics.mkdir()
    paths = [pics / f"{i:04d}.png" for i in range(N)]
    for p in paths:
        p.write_bytes(b"x")
    feats = _features(N)
    rng = np.random.default_rng(1)
    batch = ItemBatch(paths=[str(p) for p in paths], sizes=[1] * N, mtimes_ns=[1] * N,
                      sha256=[f"{i:064x}" for i in range(N)], errors=[None] * N, features=feats,
                      codes=rng.integers(0, 256, (N, 512), dtype=np.uint8))
    model = ModelRecord(name="t", identity="sha256:t", outputs=("feature",), feature_dim=DIM, code_bytes=512)
    with Collection.open(tmp_path / "db") as col, col.store.writing(embedder=model) as w:
        w.append(batch)
    return tmp_path / "db", paths, feats


def _disk(path: Path) -> int:
    return path.stat().st_blocks * 512


def _say(proc, want: str) -> list[str]:
    line = proc.stdout.readline().split()
    assert line and line[0] == want, (line, proc.stderr.read() if proc.poll() is not None else "")
    return line[1:]


def test_compaction_waits_for_an_open_reader_in_another_process(tmp_path):
    db, paths, feats = _build(tmp_path)
    feature = db / "feature.f32"
    before = _disk(feature)
    proc = subprocess.Popen([sys.executable, "-c", READER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        n, total = _say(proc, "ready")
        assert int(n) == N and float(total) == pytest.approx(float(feats.astype(np.float64).sum()))
        gone = list(range(200, 400)) + list(range(450, N, 7))  # a folder's worth, and scattered ones
        for i in gone:
            paths[i].unlink()
        with Collection.open(db) as col:
            plan = col.prune([paths[0].parent])
            assert len(plan.drop) == len(gone)
            rep = plan.compaction
            assert rep.dead_rows == len(gone) and rep.deferred == [0] and rep.vectors_freed == 0
        assert _disk(feature) == before  # nothing punched under the reader
        proc.stdin.write("\n")
        proc.stdin.flush()
        total, same = _say(proc, "again")
        assert float(total) == pytest.approx(float(feats.astype(np.float64).sum())) and same == "True"
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert int(_say(proc, "moved")[0]) == N - len(gone)
        with Collection.open(db) as col:
            rep = col.compact()
            live = col.live_rows()
            assert rep.deferred == [] and rep.dead_rows == len(gone)
            # the run of 200 dead rows gives back every block inside it (4 per row, less one at the edges of
            # the run: rows start 64 bytes into a block), a single dead row the 3 blocks wholly inside it
            assert rep.vectors_freed >= (200 * 4 - 1 + 3 * (len(gone) - 200) - 2) * 4096
            np.testing.assert_array_equal(col.vectors("feature", live), feats[live])
            vf = col.view.vector_file("feature")
            dead = vf.read(np.arange(210, 390))
            assert not dead.any()  # holes read as zeros (only dead rows)
        # (the file system may spend a block or two on its own bookkeeping of the holes)
        assert before - _disk(feature) >= (200 * 4 - 1 + 3 * (len(gone) - 200) - 2) * 4096
        assert feature.stat().st_size == 64 + N * DIM * 4  # rows keep their places
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert float(_say(proc, "now")[0]) == pytest.approx(float(feats[live].astype(np.float64).sum()))
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # with no reader left, the lease files of older snapshots are gone
    assert sorted(p.name for p in (db / "leases").iterdir()) == ["gen-1.lock"]


def test_database_gives_back_its_free_pages(tmp_path):
    db, paths, _ = _build(tmp_path)
    for p in paths[: N // 2]:
        p.unlink()
    with Collection.open(db) as col:
        size = (db / "collection.sqlite").stat().st_size
        col.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        plan = col.prune([paths[0].parent])
        assert plan.compaction.database_freed > 0
        assert col.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
        assert col.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert col.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert len(col) == N - N // 2
    assert (db / "collection.sqlite").stat().st_size < size


def test_a_write_session_that_prunes_gives_the_disk_back(tmp_path):
    """``index --prune`` (a write session that prunes): the compaction runs when the session closes."""
    db, paths, feats = _build(tmp_path)
    for p in paths[:100]:
        p.unlink()
    model = ModelRecord(name="t", identity="sha256:t", outputs=("feature",), feature_dim=DIM, code_bytes=512)
    before = _disk(db / "feature.f32")
    with Collection.open(db) as col:
        col.live_rows()  # this process's own earlier snapshot does not hold the holes back
        with col.store.writing(embedder=model) as w:
            w.prune([paths[0].parent])
        rep = w.report.compaction
        assert rep is not None and rep.dead_rows == 100 and rep.deferred == []
        assert rep.vectors_freed >= (100 * 4 - 1) * 4096
        np.testing.assert_array_equal(col.vectors("feature"), feats[100:])
    assert before - _disk(db / "feature.f32") >= (100 * 4 - 1) * 4096
