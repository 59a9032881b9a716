"""Check a collection, and rebuild a damaged database from what is left (``illust2vec check [--repair]``).

:func:`check_collection` reads only: SQLite's ``integrity_check``, the
vector files' headers and lengths against the database.

:func:`repair_collection` rebuilds the database when SQLite cannot read it
(truncated, overwritten, "database disk image is malformed"):

1. the damaged database (with its ``-wal``/``-shm``) is renamed
   ``collection.sqlite.damaged-TIME``, never deleted;
2. every row SQLite can still read is copied into a new database, table by
   table and rowid range by rowid range, skipping the ranges it cannot read;
3. what the vector files hold is kept where the salvaged rows still describe
   it (the models in ``meta``, contents whose row is present in every vector
   file); entries that point at something lost are dropped;
4. the next ``illust2vec index FOLDER --db DIR`` rescans the folders: files
   whose content was salvaged are linked again without recomputation, the
   others are embedded anew.  Nothing but the collection's own files is
   touched: the images are only read, by that rescan.

When the models' record (``meta``) is lost the vectors cannot be trusted:
the vector files are set aside beside the damaged database and everything is
recomputed by the rescan.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import struct
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from illust2vec.collection import db as _db
from illust2vec.collection.db import DB_NAME
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.taggers import read_taggers
from illust2vec.collection.vectors import VectorFile

__all__ = ["CheckReport", "RepairReport", "check_collection", "repair_collection"]

#: The embedder's vector files: name, the meta key of their width, dtype (the taggers' files are in ``taggers``).
VECTOR_FILES = {"feature": ("feature.f32", "feature_dim", "float32"),
                "codes": ("codes.u8", "code_bytes", "uint8")}
#: Tables copied by a repair, with the column that pages through them (None: read whole).
_TABLES = (("meta", None), ("contents", "row"), ("files", "id"), ("taggers", "id"), ("tags", "id"),
           ("tag_probs", None), ("faces", "row"), ("user_tags", None))
#: meta keys without which stored vectors cannot be used.
_ESSENTIAL = ("embedder_identity", "feature_dim", "code_bytes")


@dataclass
class CheckReport:
    """What :func:`check_collection` found; ``ok`` when there is nothing to repair."""

    path: Path
    problems: list[str] = field(default_factory=list)
    files: int = 0
    contents: int = 0
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RepairReport:
    """What :func:`repair_collection` kept, lost and set aside."""

    path: Path
    set_aside: list[Path] = field(default_factory=list)
    salvaged: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    unreadable: dict[str, int] = field(default_factory=dict)  # table -> rowid ranges skipped
    contents_kept: int = 0
    files_kept: int = 0
    vectors_reused: bool = False


_MAGIC = b"SQLite format 3\0"


def _fresh_header(page_size: int) -> bytes:
    """The 100-byte header of a new database with this page size (a template for a destroyed one)."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.sqlite")
        c = sqlite3.connect(p)
        c.execute(f"PRAGMA page_size={int(page_size)}")
        c.execute("CREATE TABLE t(x)")
        c.commit()
        c.close()
        with open(p, "rb") as fh:
            return fh.read(100)


def _salvage_copy(damaged: Path) -> Path:
    """A working copy of a damaged database that SQLite has the best chance to read.

    A truncated file is padded to the length its header announces (the pages
    that are left become readable again); a destroyed header (first bytes
    overwritten) is replaced by a fresh one for SQLite's default page size.
    """
    work = damaged.with_name(damaged.name + ".salvage")
    shutil.copyfile(damaged, work)
    size = work.stat().st_size
    with open(work, "r+b") as fh:
        head = fh.read(100)
        if head[:16] == _MAGIC and len(head) == 100:
            ps = struct.unpack(">H", head[16:18])[0]
            ps = 65536 if ps == 1 else ps
            pages = struct.unpack(">I", head[28:32])[0]
            if ps >= 512 and pages and size < ps * pages:
                fh.truncate(ps * pages)
        elif size >= 4096:
            ps = 4096
            pages = -(-size // ps)
            hdr = bytearray(_fresh_header(ps))
            hdr[28:32] = struct.pack(">I", pages)
            hdr[32:40] = b"\0" * 8  # no free-page list: it cannot be trusted
            hdr[92:96] = hdr[24:28]  # "version valid for" = change counter: the page count above is used
            fh.seek(0)
            fh.write(hdr)
            fh.truncate(ps * pages)
    return work


def _open_any(path: Path) -> sqlite3.Connection:
    """Open a possibly damaged database without writing to it."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.text_factory = _db.decode_text
    return conn


def check_collection(path: str | os.PathLike) -> CheckReport:
    """Examine a collection without changing it."""
    folder = Path(path)
    report = CheckReport(folder)
    dbp = folder / DB_NAME
    if not dbp.is_file():
        raise CollectionError(f"{folder}: no collection here (no {DB_NAME})")
    meta: dict[str, str] = {}
    try:
        conn = _open_any(dbp)
        try:
            result = [line for r in conn.execute("PRAGMA integrity_check(20)").fetchall()
                      for line in str(r[0]).splitlines() if line.strip()]
            if result != ["ok"]:
                report.problems += [f"{dbp}: {line}" for line in result if not line.startswith("***")]
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            taggers = read_taggers(conn, meta)
            report.files = conn.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0]
            report.contents = conn.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
            top = conn.execute("SELECT MAX(row) FROM contents").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"{dbp}: SQLite cannot read it ({exc})")
        return report
    report.rows = int(meta.get("rows", 0))
    if top is not None and top >= report.rows:
        report.problems.append(f"{dbp}: contents reference row {top} but only {report.rows} rows are committed")
    for name, dim_key, dtype in VECTOR_FILES.values():
        if not int(meta.get(dim_key, 0) or 0):
            continue
        try:
            vf = VectorFile(folder / name, int(meta[dim_key]), dtype, create=False)
        except CollectionError as exc:
            report.problems.append(str(exc))
            continue
        if vf.rows < report.rows:
            report.problems.append(f"{vf.path}: holds {vf.rows} vectors, the database references {report.rows}")
    for t in taggers:
        try:
            vf = VectorFile(folder / t.file, t.tag_count, "float32", create=False)
        except CollectionError as exc:
            report.problems.append(str(exc))
            continue
        if vf.rows < t.rows:
            report.problems.append(f"{vf.path}: holds {vf.rows} vectors of tagger {t.name!r}, the database "
                                   f"references {t.rows}")
    return report


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, key: str | None,
                report: RepairReport) -> None:
    try:
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})").fetchall()]
        if not cols and src.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]:
            return  # a table an older version did not have (taggers, user_tags)
    except sqlite3.DatabaseError:
        cols = []
    if not cols:
        report.unreadable[table] = report.unreadable.get(table, 0) + 1
        return
    insert = f"INSERT OR IGNORE INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    select = f"SELECT {', '.join(cols)} FROM {table}"
    copied = 0

    def put(rows: list[tuple]) -> None:
        nonlocal copied
        dst.executemany(insert, [tuple(_db.text_param(v) if isinstance(v, str) else v for v in r) for r in rows])
        copied += len(rows)

    bounds = None
    if key is not None:
        try:
            bounds = src.execute(f"SELECT MIN({key}), MAX({key}) FROM {table}").fetchone()
        except sqlite3.DatabaseError:
            bounds = None  # the table's index pages are damaged: read it in order, as far as possible
    if bounds is None:
        rows: list[tuple] = []
        try:
            for r in src.execute(select):  # row by row: keep what comes before a damaged page
                rows.append(r)  # noqa: PERF402
        except sqlite3.DatabaseError:
            report.unreadable[table] = report.unreadable.get(table, 0) + 1
        put(rows)
    else:
        lo, hi = bounds
        step = 512
        start = lo or 0
        while hi is not None and start <= hi:
            try:
                put(src.execute(f"{select} WHERE {key} >= ? AND {key} < ?", (start, start + step)).fetchall())
            except sqlite3.DatabaseError:
                for one in range(start, start + step):  # the bad range, row by row
                    try:
                        put(src.execute(f"{select} WHERE {key} = ?", (one,)).fetchall())
                    except sqlite3.DatabaseError:
                        report.unreadable[table] = report.unreadable.get(table, 0) + 1
            start += step
    report.salvaged[table] = copied


def repair_collection(path: str | os.PathLike) -> RepairReport:
    """Rebuild the database of the collection at ``path`` from what can be read (see the module text).

    Raises :class:`CollectionError` when another process is writing to the collection.
    """
    folder = Path(path)
    dbp = folder / DB_NAME
    if not dbp.exists():
        raise CollectionError(f"{folder}: no collection here (no {DB_NAME})")
    report = RepairReport(folder)
    lock = open(folder / "write.lock", "a+")
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CollectionError(f"{folder}: another process is writing to this collection; wait for it") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        damaged = dbp.with_name(f"{DB_NAME}.damaged-{stamp}")
        os.replace(dbp, damaged)
        report.set_aside.append(damaged)
        for suffix in ("-wal", "-shm"):
            side = dbp.with_name(DB_NAME + suffix)
            if side.exists():
                os.replace(side, damaged.with_name(damaged.name + suffix))
                report.set_aside.append(damaged.with_name(damaged.name + suffix))
        new = _db.connect(dbp, create=True)
        try:
            work = _salvage_copy(damaged)
            try:
                src = _open_any(work)
            except sqlite3.DatabaseError:
                src = None
            try:
                if src is not None:
                    with _db.transaction(new):
                        new.execute("DELETE FROM meta")
                        for table, key in _TABLES:
                            _copy_table(src, new, table, key, report)
            finally:
                if src is not None:
                    src.close()
                work.unlink(missing_ok=True)
            _make_consistent(folder, new, report, stamp)
        finally:
            new.close()
    finally:
        lock.close()
    return report


def _make_consistent(folder: Path, c: sqlite3.Connection, report: RepairReport, stamp: str) -> None:
    meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
    usable = all(meta.get(k) for k in _ESSENTIAL)
    rows = None
    taggers = read_taggers(c, meta)
    tagger_rows: dict[int, int] = {}
    if usable:
        for name, dim_key, dtype in VECTOR_FILES.values():
            if not int(meta.get(dim_key, 0) or 0):
                continue
            try:
                vf = VectorFile(folder / name, int(meta[dim_key]), dtype, create=False)
            except CollectionError:
                usable = False
                break
            rows = vf.rows if rows is None else min(rows, vf.rows)
        for t in taggers:  # a tagger keeps the rows its file still holds (the next index catches up)
            try:
                tagger_rows[t.id] = min(t.rows, VectorFile(folder / t.file, t.tag_count, "float32", create=False).rows)
            except CollectionError:
                tagger_rows[t.id] = 0
    with _db.transaction(c):
        if not usable:  # the models are unknown: the vectors cannot be used, set them aside
            names = [n for n, _, _ in VECTOR_FILES.values()] + [t.file for t in taggers]
            for name in dict.fromkeys(names + ["prob.f32"]):
                p = folder / name
                if p.exists():
                    dest = p.with_name(f"{name}.damaged-{stamp}")
                    os.replace(p, dest)
                    report.set_aside.append(dest)
            for table in ("contents", "tag_probs", "faces", "tags", "taggers"):
                c.execute(f"DELETE FROM {table}")
            c.execute("DELETE FROM meta")
            c.execute("DELETE FROM files")
            c.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                          [("schema_version", str(_db.SCHEMA_VERSION)), ("rows", "0"), ("delete_gen", "0")])
        else:
            rows = int(rows or 0)
            c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                      (str(_db.SCHEMA_VERSION),))
            c.execute("DELETE FROM contents WHERE row >= ?", (rows,))
            c.execute("DELETE FROM faces WHERE row >= ? OR content NOT IN (SELECT row FROM contents)", (rows,))
            c.execute("DELETE FROM tag_probs WHERE row >= ? OR (row NOT IN (SELECT row FROM contents) "
                      "AND row NOT IN (SELECT row FROM faces))", (rows,))
            for t in taggers:
                keep = min(tagger_rows.get(t.id, 0), rows)
                c.execute("UPDATE taggers SET rows=? WHERE id=?", (keep, t.id))
                c.execute("DELETE FROM tag_probs WHERE tag_id >= ? AND tag_id < ? AND row >= ?",
                          (t.tag_base, t.tag_base + t.tag_count, keep))
            # a path whose content is lost is forgotten: the rescan finds it again
            c.execute("DELETE FROM files WHERE row IS NOT NULL AND row NOT IN (SELECT row FROM contents)")
            _db.set_meta(c, "rows", rows)
            _db.set_meta(c, "delete_gen", int(meta.get("delete_gen", 0) or 0) + 1)
            report.vectors_reused = True
    report.contents_kept = c.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
    report.files_kept = c.execute("SELECT COUNT(*) FROM files WHERE row IS NOT NULL").fetchone()[0]

