"""The collection's SQLite database: schema, connection settings, metadata.

One database per collection directory (``collection.sqlite``), in WAL mode so
that readers search while a writer indexes.  The writer commits once per
batch, after the batch's vectors are on disk (see :mod:`.vectors`).

Tables
------
``meta(key, value)``
    ``schema_version``, the embedder (``embedder_name``, ``embedder_identity``,
    ``feature_dim``, ``code_bytes``, ``code_kind``), ``prob_floor`` (smallest
    probability kept in ``tag_probs``), ``rows`` (vector rows committed) and
    ``delete_gen`` (bumped whenever rows stop being live, so search indexes
    know to rebuild).
``contents(row, sha256, added_at)``
    One row per distinct file content; ``row`` is the record number in the
    vector files.
``files(path, size, mtime_ns, sha256, row, error, updated_at)``
    Every file seen.  ``row`` is set when the file's content is indexed,
    ``error`` when it could not be read (retried only when size, mtime and
    hash say it changed).  Several paths may share a row (exact copies).
``taggers(id, name, identity, tag_base, tag_count, file, rows, added_at)``
    The taggers whose probabilities the collection holds, side by side (see
    :mod:`.taggers`): each has its own vector file ``file`` (``prob.f32`` for
    the first, ``prob-ID.f32`` for the others) whose record ``r`` belongs to
    vector row ``r``; ``rows`` records are committed (a tagger added to an
    indexed collection, or one a Ray merge could not feed, catches up on the
    next ``index``).  Added in schema version 3.
``tags(id, name, category)``
    Every tagger's tags; tagger ``t`` owns the ids ``t.tag_base ...
    t.tag_base + t.tag_count - 1``, id ``t.tag_base + j`` is column ``j``
    of its vector file.
``tag_probs(tag_id, prob, row)``
    Every stored probability ``>= prob_floor``, indexed for threshold
    queries; the full matrices are in the taggers' vector files.
``faces(row, content, face_index, x, y, w, h, likelihood)``
    Face collections only (``meta.faces`` set, see :mod:`.faces`): one
    record per item (face crop, or whole picture without a face); ``content``
    is the ``contents.row`` of its picture.  Added in schema version 2;
    a version-1 database is upgraded when opened for writing.

Versions: 1 (no ``faces``), 2 (one tagger, recorded in ``meta`` as
``tagger_name``, ``tagger_identity`` and ``tag_count``), 3 (the ``taggers``
table).  A writer (``create=True``) upgrades an older database in place, in
one transaction that keeps every row and file (:func:`upgrade`); readers take
it as it is (:func:`illust2vec.collection.taggers.read_taggers` reads a
version-2 tagger from ``meta``).

File names that are not valid UTF-8 (Linux allows any bytes) are kept as
their raw bytes in TEXT columns: Python sees them as ``str`` with surrogate
escapes (:func:`os.fsdecode`), binds them with :func:`text_param` inside
``CAST(? AS TEXT)``, and every connection decodes text with
``surrogateescape`` so they come back unchanged.
``user_tags(sha256, tag, value, updated_at)``
    Tags people added (``value`` 1) or removed (0), by content hash, apart
    from the model outputs (see :mod:`.user_tags`); kept by ``--rebuild``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from pathlib import Path

from illust2vec.collection.errors import CollectionError

#: The database file of a collection directory.
DB_NAME = "collection.sqlite"
SCHEMA_VERSION = 3
#: Versions this code reads (1: no ``faces`` table, 2: one tagger in ``meta``; a writer upgrades both).
READABLE_VERSIONS = (1, 2, 3)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contents (
    row      INTEGER PRIMARY KEY,
    sha256   TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id         INTEGER PRIMARY KEY,
    path       TEXT NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     TEXT,
    row        INTEGER REFERENCES contents(row),
    error      TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_row ON files(row);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE TABLE IF NOT EXISTS tags (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL,
    category TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tags_name ON tags(name);
CREATE TABLE IF NOT EXISTS tag_probs (
    tag_id INTEGER NOT NULL,
    prob   REAL NOT NULL,
    row    INTEGER NOT NULL,
    PRIMARY KEY (tag_id, prob, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tag_probs_row ON tag_probs(row);
CREATE TABLE IF NOT EXISTS faces (
    row        INTEGER PRIMARY KEY,
    content    INTEGER NOT NULL,
    face_index INTEGER,
    x INTEGER, y INTEGER, w INTEGER, h INTEGER,
    likelihood REAL
);
CREATE INDEX IF NOT EXISTS faces_content ON faces(content);
CREATE TABLE IF NOT EXISTS taggers (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,
    identity  TEXT NOT NULL UNIQUE,
    tag_base  INTEGER NOT NULL,
    tag_count INTEGER NOT NULL,
    file      TEXT NOT NULL,
    rows      INTEGER NOT NULL,
    added_at  REAL NOT NULL
);
"""
#: User tags (see :mod:`.user_tags`); created with the others, and on first use in older collections.
USER_TAGS_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_tags (
    sha256     TEXT NOT NULL,
    tag        TEXT NOT NULL,
    value      INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sha256, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_tags_tag ON user_tags(tag);
"""


def decode_text(raw: bytes) -> str:
    """SQLite text to ``str``; bytes that are not UTF-8 become surrogate escapes (as :func:`os.fsdecode`)."""
    return raw.decode("utf-8", "surrogateescape")


def text_param(value: str | None) -> str | bytes | None:
    """A ``str`` ready to bind as ``CAST(? AS TEXT)``: its raw bytes when it holds surrogate escapes."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def on_read_only_storage(directory: Path) -> bool:
    """Whether ``directory`` is on a file system mounted read-only (or cannot be written by us)."""
    return _read_only_mount(directory) or not os.access(directory, os.W_OK)


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & getattr(os, "ST_RDONLY", 1))
    except OSError:  # pragma: no cover - no statvfs
        return False


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A query-only connection to a database whose folder cannot be written.

    On a read-only mount nobody can change the database, and SQLite in WAL
    mode cannot create the ``-shm`` file it needs even to read: it is opened
    ``immutable``.  A leftover ``-wal`` file cannot be replayed then; a warning
    says that its changes are not seen.  In a folder that is only closed to
    us (someone else may be writing), a normal read-only open is tried first.
    """
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    if not _read_only_mount(path.parent):
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            conn.execute("PRAGMA query_only=1")
            return conn
        except sqlite3.OperationalError:
            pass  # no -shm to share: fall back to reading the file as it is
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        logging.getLogger("illust2vec").warning(
            "warning: %s: changes still in %s are not seen on read-only storage", path, wal.name)
    conn = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=60.0, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


def is_read_only(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` was opened read-only (a collection on read-only storage)."""
    return bool(conn.execute("PRAGMA query_only").fetchone()[0])


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open (and with ``create`` initialise) the database at ``path``.

    Autocommit mode: callers open transactions with ``BEGIN IMMEDIATE`` /
    ``COMMIT`` (see :func:`transaction`).  An existing database on read-only
    storage is opened query-only (search, export, map and dupes work; writers
    get a :class:`CollectionError`).  A file that is not an SQLite database
    (truncated, overwritten) raises :class:`CollectionError` naming it.
    """
    if not create and not path.exists():
        raise CollectionError(f"{path.parent}: no collection here (no {path.name}); create one with 'illust2vec index DIR --db {path.parent}'")
    try:
        conn = _connect(path, create=create)
    except sqlite3.DatabaseError as exc:
        raise explain(path, exc) from None
    return conn


def explain(path: Path, exc: sqlite3.Error) -> CollectionError:
    """A one-line :class:`CollectionError` for an SQLite error on the database at ``path``."""
    name = getattr(exc, "sqlite_errorname", "")
    if is_corruption(exc):
        return damaged(path, exc)
    if name == "SQLITE_FULL" or "disk is full" in str(exc) or (
            (name.startswith("SQLITE_IOERR") or "disk I/O error" in str(exc)) and _nearly_full(path.parent)):
        return CollectionError(
            f"{path}: the disk is full (SQLITE_FULL, ENOSPC): free some space and run the command again; "
            "the batches already committed are kept"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in str(exc):
        return CollectionError(f"{path}: cannot write the collection ({exc}); check the folder's permissions")
    return CollectionError(f"{path}: {exc}")


def _nearly_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has (almost) no room left (SQLite reports I/O errors then)."""
    try:
        st = os.statvfs(folder)
    except OSError:  # pragma: no cover
        return False
    return st.f_bavail * st.f_frsize < 256 * 1024


def is_corruption(exc: BaseException) -> bool:
    """Whether an SQLite error says the file is damaged (not locked, full or unreadable)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(exc)
    return "malformed" in text or "not a database" in text


def damaged(path: Path, exc: BaseException) -> CollectionError:
    """The error for a database SQLite cannot read: what happened and how to recover."""
    return CollectionError(
        f"{path}: the collection database is damaged ({exc}); run 'illust2vec check --db {path.parent}' "
        "to examine it and 'illust2vec check --db {0} --repair' to rebuild it from its vector files "
        "and a rescan of the images".format(path.parent)
    )


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    if path.exists() and on_read_only_storage(path.parent):
        conn = _open_read_only(path)
        conn.text_factory = decode_text
        _check_version(conn, path, create=False)
        return conn
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
    conn.text_factory = decode_text
    conn.execute("PRAGMA busy_timeout=60000")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # pragma: no cover - e.g. network file systems
        raise CollectionError(f"{path}: SQLite cannot use WAL mode here ({mode}); put the collection on a local disk")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if create:
        conn.executescript(_SCHEMA + USER_TAGS_SCHEMA)
        cur = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if cur is None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("rows", "0"), ("delete_gen", "0")],
            )
            conn.execute("COMMIT")
    _check_version(conn, path, create=create)
    return conn


def _check_version(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # raises DatabaseError on a damaged file
    version = get_meta(conn, "schema_version")
    if version is None:
        raise CollectionError(f"{path}: not an illust2vec collection database")
    if create and int(version) < SCHEMA_VERSION:
        upgrade(conn)
        version = str(SCHEMA_VERSION)
    if int(version) not in READABLE_VERSIONS:
        raise CollectionError(
            f"{path}: collection schema version {version}, this illust2vec reads version {SCHEMA_VERSION}; "
            "re-index into a new --db"
        )


#: ``meta`` keys of a version-2 database's one tagger (moved into ``taggers`` by :func:`upgrade`).
V2_TAGGER_KEYS = ("tagger_name", "tagger_identity", "tag_count")


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a version 1 or 2 database to :data:`SCHEMA_VERSION` in one transaction (tables already created).

    v1 -> v2 only needed the ``faces`` table.  v2 -> v3 moves the tagger
    recorded in ``meta`` into ``taggers`` as tagger 1 (its tags keep their
    ids, its probabilities stay in ``prob.f32``); nothing else changes.
    """
    import time

    with transaction(conn) as c:
        m = get_all_meta(c)
        count = int(m.get("tag_count", 0) or 0)
        if count and m.get("tagger_identity") and c.execute("SELECT COUNT(*) FROM taggers").fetchone()[0] == 0:
            c.execute("INSERT INTO taggers(id, name, identity, tag_base, tag_count, file, rows, added_at) "
                      "VALUES (1, ?, ?, 0, ?, 'prob.f32', ?, ?)",
                      (m.get("tagger_name") or "", m["tagger_identity"], count, int(m.get("rows", 0) or 0),
                       time.time()))
        c.executemany("DELETE FROM meta WHERE key=?", [(k,) for k in V2_TAGGER_KEYS])
        set_meta(c, "schema_version", SCHEMA_VERSION)


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    except sqlite3.OperationalError:
        return default
    return default if row is None else row[0]


def get_all_meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, str(value)))


class transaction:
    """``with transaction(conn):`` runs ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            # SQLite has already rolled back after some errors (disk full): then there is nothing
            # to undo, and a failing ROLLBACK must not hide the error that matters.
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
