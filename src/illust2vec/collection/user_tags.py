"""User tags: tags people add to (or take off) pictures, stored apart from the model's outputs.

Kept in the collection database, table ``user_tags(sha256, tag, value,
updated_at)``, keyed by the picture's content hash: a decision survives
re-indexing (``--rebuild`` replaces model outputs, not this table), a moved
or renamed file keeps it, and byte-identical copies share it.  ``value`` 1
adds the tag, 0 removes it (hides the model's tag of that name).  User
decisions take precedence over the model: :func:`effective_tags` applies
them to a model's ``{tag: probability}`` (added tags count as 1.0).

Tag names are compared as :func:`illust2vec.collection.query.normalize_tag`
does (case, ``_`` and spaces alike) and stored as typed.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping

from illust2vec.collection import db as _db
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.query import normalize_tag

#: Longest user tag accepted, in characters.
MAX_TAG_LENGTH = 200


def ensure_table(conn: sqlite3.Connection) -> None:
    """Create the ``user_tags`` table if the database has none (older collections)."""
    conn.executescript(_db.USER_TAGS_SCHEMA)


def has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='user_tags'").fetchone() is not None


def clean_tag(tag: str) -> str:
    """``tag`` as stored: the normalised name (lower case, spaces for ``_``); raises on empty or overlong names."""
    t = normalize_tag(str(tag))
    if not t or "," in t:
        raise CollectionError(f"not a usable tag name: {tag!r} (empty, or contains a comma)")
    if len(t) > MAX_TAG_LENGTH:
        raise CollectionError(f"tag names are limited to {MAX_TAG_LENGTH} characters")
    return t


def set_user_tags(conn: sqlite3.Connection, shas: Iterable[str], *, add: Iterable[str] = (),
                  remove: Iterable[str] = ()) -> int:
    """Record ``add`` (value 1) and ``remove`` (value 0) for every content in ``shas``; returns records written."""
    shas = list(dict.fromkeys(shas))
    recs = [(s, clean_tag(t), 1) for t in add for s in shas] + [(s, clean_tag(t), 0) for t in remove for s in shas]
    if not recs:
        return 0
    now = time.time()
    ensure_table(conn)
    with _db.transaction(conn) as c:
        c.executemany(
            "INSERT INTO user_tags(sha256, tag, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(sha256, tag) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            [(s, t, v, now) for s, t, v in recs],
        )
    return len(recs)


def forget_user_tags(conn: sqlite3.Connection, shas: Iterable[str], tags: Iterable[str]) -> int:
    """Drop the user's decisions about ``tags`` for ``shas`` (the model's tags show again)."""
    if not has_table(conn):
        return 0
    pairs = [(s, clean_tag(t)) for s in dict.fromkeys(shas) for t in tags]
    with _db.transaction(conn) as c:
        before = c.total_changes
        c.executemany("DELETE FROM user_tags WHERE sha256=? AND tag=?", pairs)
        return c.total_changes - before


def user_tags_of(conn: sqlite3.Connection, shas: Iterable[str]) -> dict[str, dict[str, bool]]:
    """``{sha256: {tag: added?}}`` for the contents in ``shas`` that have user tags."""
    out: dict[str, dict[str, bool]] = {}
    if not has_table(conn):
        return out
    shas = list(dict.fromkeys(shas))
    for i in range(0, len(shas), 900):
        chunk = shas[i : i + 900]
        q = f"SELECT sha256, tag, value FROM user_tags WHERE sha256 IN ({','.join('?' * len(chunk))}) ORDER BY tag"
        for s, t, v in conn.execute(q, chunk):
            out.setdefault(s, {})[t] = bool(v)
    return out


def shas_with(conn: sqlite3.Connection, tag: str, value: bool) -> set[str]:
    """Contents whose user tag ``tag`` was added (``value`` true) or removed (false)."""
    if not has_table(conn):
        return set()
    return {s for (s,) in conn.execute("SELECT sha256 FROM user_tags WHERE tag=? AND value=?", (clean_tag(tag), int(value)))}


def tag_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """``{tag: number of contents it was added to}`` over the whole collection."""
    if not has_table(conn):
        return {}
    return dict(conn.execute("SELECT tag, COUNT(*) FROM user_tags WHERE value=1 GROUP BY tag").fetchall())


def effective_tags(model: Mapping[str, float], user: Mapping[str, bool] | None) -> dict[str, float]:
    """The model's ``{tag: probability}`` with the user's decisions applied (added: 1.0, removed: dropped)."""
    if not user:
        return dict(model)
    out = {t: p for t, p in model.items() if user.get(normalize_tag(t), True)}
    have = {normalize_tag(t) for t in out}
    for t, added in user.items():
        if added and t not in have:
            out[t] = 1.0
        elif added:
            for name in [n for n in out if normalize_tag(n) == t]:
                out[name] = 1.0
    return out
