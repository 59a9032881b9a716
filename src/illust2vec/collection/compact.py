"""Reclaiming the disk of dropped pictures without breaking readers that are open.

A vector row whose picture was dropped (``index --prune``, a changed file)
stays in the vector files: row numbers never move, so that every reader's
snapshot, search index and pair cache stays valid.  Compaction gives its
disk back instead of moving anything:

* **Vector files**: the dead rows' byte ranges become *holes*
  (``fallocate(PUNCH_HOLE)``): the file keeps its size and every live row its
  place, the blocks go back to the file system (a 4096-d feature row is four
  4 KiB blocks; runs of dead rows free all of theirs, a single dead row the
  blocks wholly inside it).  A hole reads as zeros.
* **Database**: the free pages left by deleted rows are given back with
  ``PRAGMA incremental_vacuum`` (collections are switched to incremental
  auto-vacuum by one full ``VACUUM`` the first time enough is free), then
  the write-ahead log is checkpointed and truncated when no reader needs it.

**Readers hold leases.**  A reader that took a snapshot before the
deletion may still read those rows (an export, a search in flight, the web
app), so holes are only punched when no open reader holds an older
snapshot.  A reader holds a shared lock on ``leases/gen-<delete_gen>.lock``
for the snapshot it uses (:class:`ReaderLease`, taken *before* the snapshot
is read and checked against it); the compactor, after the deletion has
committed, tries an exclusive lock on every older lease file: one it cannot
take means a reader still reads an older snapshot, and the holes wait
(:attr:`CompactReport.deferred`) for the next ``index --prune`` or
``illust2vec compact``.  Free lease files are removed.  On read-only
storage there are no leases and nothing to compact.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from illust2vec.collection.db import DB_NAME
from illust2vec.collection.vectors import HEADER_SIZE, VectorFile

LEASES = "leases"
#: A full VACUUM (the first compaction of a collection without incremental auto-vacuum) only from this
#: share of free pages on; later compactions free every free page with ``incremental_vacuum``.
VACUUM_MIN_FREE = 0.10
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE


@dataclass
class CompactReport:
    """What :func:`compact` did."""

    dead_rows: int = 0
    #: bytes the vector files and the database gave back to the file system
    vectors_freed: int = 0
    database_freed: int = 0
    #: holes not punched because a reader still reads an older snapshot (its lease generations)
    deferred: list[int] = field(default_factory=list)
    #: why nothing could be freed in the vector files (file system without holes), else None
    unsupported: str | None = None

    @property
    def freed(self) -> int:
        return self.vectors_freed + self.database_freed

    def describe(self, db: str) -> str:
        """One line for the command line: what was given back, or why not yet."""
        text = (f"{self.freed / 2**20:.1f} MiB given back ({self.vectors_freed / 2**20:.1f} MiB of vectors of "
                f"{self.dead_rows} dropped picture(s), {self.database_freed / 2**20:.1f} MiB of database)")
        if self.deferred:
            text += (f"; the vectors of dropped pictures are kept while a reader (a running 'serve', search or "
                     f"export) reads an older state of the collection: run 'illust2vec compact --db {db}' later")
        if self.unsupported:
            text += f"; {self.unsupported}"
        return text


# --------------------------------------------------------------------------- leases
def _lease_path(col_path: Path, gen: int) -> Path:
    return Path(col_path) / LEASES / f"gen-{int(gen)}.lock"


class ReaderLease:
    """A reader's shared lock on the snapshot generation it reads (see the module docstring).

    ``hold(gen)`` before reading a snapshot of ``delete_gen`` ``gen``; the
    reader then checks that its snapshot is of that generation (else holds
    the new one and reads again).  Holding costs two system calls when the
    generation changes, nothing otherwise.  Best effort where the folder
    cannot be written (read-only storage: nothing can be compacted there).
    """

    def __init__(self, col_path: Path) -> None:
        self.col_path = Path(col_path)
        self.gen: int | None = None
        self._fh = None

    def hold(self, gen: int) -> None:
        gen = int(gen)
        if gen == self.gen:
            return
        old = self._fh
        self._fh, self.gen = None, gen
        try:
            path = _lease_path(self.col_path, gen)
            path.parent.mkdir(exist_ok=True)
            fh = open(path, "a+")
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            self._fh = fh
        except OSError:  # read-only or foreign folder: no compaction can happen here either
            pass
        if old is not None:
            old.close()

    def release(self) -> None:
        """Give the lease up (the next snapshot takes one again)."""
        if self._fh is not None:
            self._fh.close()
        self._fh, self.gen = None, None


def held_older(col_path: Path, gen: int) -> list[int]:
    """Generations below ``gen`` that an open reader still holds; free lease files below ``gen`` are removed."""
    folder = Path(col_path) / LEASES
    held = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        if not (name.startswith("gen-") and name.endswith(".lock")):
            continue
        try:
            g = int(name[4:-5])
        except ValueError:
            continue
        if g >= gen:
            continue
        try:
            with open(folder / name, "a+") as fh:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append(g)
                    continue
                os.unlink(folder / name)  # while locked: a reader opening it now finds a newer generation
        except OSError:
            continue
    return sorted(held)


# --------------------------------------------------------------------------- holes
def dead_runs(live: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of the row ranges in ``[0, rows)`` that are not in ``live`` (sorted)."""
    alive = np.zeros(rows + 1, bool)
    alive[np.asarray(live, dtype=np.int64)] = True
    alive[rows] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[True], alive]).astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    return list(zip(starts.tolist(), stops.tolist()))


_LIBC = None


def _fallocate():
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "fallocate", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
        _LIBC = fn or False
    return _LIBC or None


def punch_rows(path: Path, header: int, record_size: int, runs: list[tuple[int, int]]) -> int:
    """Turn the records of ``runs`` into holes (whole file-system blocks inside them); returns bytes freed.

    Raises :class:`OSError` (``EOPNOTSUPP``) where the file system cannot make holes.
    """
    fn = _fallocate()
    if fn is None:
        raise OSError(errno.EOPNOTSUPP, "this system cannot punch holes in files", str(path))
    before = os.stat(path).st_blocks
    with open(path, "r+b") as fh:
        block = os.fstat(fh.fileno()).st_blksize or 4096
        fd = fh.fileno()
        for a, b in runs:
            lo = -(-(header + a * record_size) // block) * block
            hi = (header + b * record_size) // block * block
            if hi > lo and fn(fd, _PUNCH_HOLE, lo, hi - lo) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), str(path))
    return max(0, before - os.stat(path).st_blocks) * 512


# --------------------------------------------------------------------------- compaction
def _db_file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(str(path) + suffix).st_blocks * 512
        except OSError:
            pass
    return total


def vacuum(conn: sqlite3.Connection, path: Path, *, full: bool | None = None) -> int:
    """Give the database's free pages back; returns bytes freed (database + log).

    ``full`` ``None``: an ``incremental_vacuum`` when the database has
    incremental auto-vacuum, else a full ``VACUUM`` (which switches it on) if
    at least :data:`VACUUM_MIN_FREE` of its pages are free.
    """
    before = _db_file_bytes(path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    if incremental and not full:
        if free:
            conn.execute("PRAGMA incremental_vacuum")
    elif full or (full is None and pages and free / pages >= VACUUM_MIN_FREE):
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    # the log is truncated only when no reader needs it: a checkpoint that does not wait for readers
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout=0")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")
    return max(0, before - _db_file_bytes(path))


def compact(conn: sqlite3.Connection, path: Path, snap, vector_files: Iterable[VectorFile], *,
            vacuum_db: bool | None = None) -> CompactReport:
    """Reclaim the disk of the rows that are not live in ``snap`` (a fresh snapshot).

    The writer's part (:meth:`illust2vec.collection.store.CollectionStore.compact`
    calls it under the writer lock, after giving up its own reader's lease):
    holes in ``vector_files`` unless an open reader holds an older
    generation, then the database's free pages (``vacuum_db`` as ``full`` of
    :func:`vacuum`; ``False``: leave the database alone).  See the module docstring.
    """
    report = CompactReport()
    runs = dead_runs(snap.live, snap.rows)
    report.dead_rows = sum(b - a for a, b in runs)
    if runs:
        report.deferred = held_older(path, int(snap.meta.get("delete_gen", 0)))
        if not report.deferred:
            for vf in vector_files:
                try:
                    report.vectors_freed += punch_rows(vf.path, HEADER_SIZE, vf.record_size, runs)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    report.unsupported = f"{vf.path}: {exc.strerror} (the file system cannot free parts of files)"
                    break
    if vacuum_db is not False:
        report.database_freed = vacuum(conn, Path(path) / DB_NAME, full=vacuum_db)
    return report
