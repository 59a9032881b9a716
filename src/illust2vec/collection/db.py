"""The collection's SQLite database: schema, connection settings, metadata.

One database per collection directory (``collection.sqlite``), in WAL mode so
that readers search while a writer indexes.  The writer commits once per
batch, after the batch's vectors are on disk (see :mod:`.vectors`).

Tables
------
``meta(key, value)``
    ``schema_version``, the models (``embedder_name``, ``embedder_identity``,
    ``feature_dim``, ``code_bytes``, ``tagger_name``, ``tagger_identity``,
    ``tag_count``), ``prob_floor`` (smallest probability kept in
    ``tag_probs``), ``rows`` (vector rows committed) and ``delete_gen``
    (bumped whenever rows stop being live, so search indexes know to rebuild).
``contents(row, sha256, added_at)``
    One row per distinct file content; ``row`` is the record number in the
    vector files.
``files(path, size, mtime_ns, sha256, row, error, updated_at)``
    Every file seen.  ``row`` is set when the file's content is indexed,
    ``error`` when it could not be read (retried only when size, mtime and
    hash say it changed).  Several paths may share a row (exact copies).
``tags(id, name, category)``
    The tagger's tag table; ``id`` is the column in ``prob.f32``.
``tag_probs(tag_id, prob, row)``
    Every stored probability ``>= prob_floor``, indexed for threshold
    queries; the full matrix is in ``prob.f32``.
``faces(row, content, face_index, x, y, w, h, likelihood)``
    Face collections only (``meta.faces`` set, see :mod:`.faces`): one
    record per item (face crop, or whole picture without a face); ``content``
    is the ``contents.row`` of its picture.  Added in schema version 2;
    a version-1 database is upgraded when opened for writing.
``user_tags(sha256, tag, value, updated_at)``
    Tags people added (``value`` 1) or removed (0), by content hash, apart
    from the model outputs (see :mod:`.user_tags`); kept by ``--rebuild``.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from illust2vec.collection.errors import CollectionError

SCHEMA_VERSION = 2
#: Versions this code reads (version 1 has no ``faces`` table; it is created when a writer opens it).
READABLE_VERSIONS = (1, 2)

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


def connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open (and with ``create`` initialise) the database at ``path``.

    Autocommit mode: callers open transactions with ``BEGIN IMMEDIATE`` /
    ``COMMIT`` (see :func:`transaction`).
    """
    if not create and not path.exists():
        raise CollectionError(f"{path.parent}: no collection here (no {path.name}); create one with 'illust2vec index DIR --db {path.parent}'")
    conn = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
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
    version = get_meta(conn, "schema_version")
    if version is None:
        raise CollectionError(f"{path}: not an illust2vec collection database")
    if create and int(version) == 1:  # v1 -> v2: the faces table (created by _SCHEMA above)
        conn.execute("BEGIN IMMEDIATE")
        set_meta(conn, "schema_version", SCHEMA_VERSION)
        conn.execute("COMMIT")
        version = str(SCHEMA_VERSION)
    if int(version) not in READABLE_VERSIONS:
        raise CollectionError(
            f"{path}: collection schema version {version}, this illust2vec reads version {SCHEMA_VERSION}; "
            "re-index into a new --db"
        )
    return conn


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
        else:
            self.conn.execute("ROLLBACK")
