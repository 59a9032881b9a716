"""The taggers of a collection: several models' tag probabilities side by side, one chosen per query.

A collection holds one embedder (its features and codes define the rows) and
any number of taggers.  Each tagger is a row of the ``taggers`` table
(:mod:`.db`) with its own vector file of probabilities, row-aligned with the
features: record ``r`` of ``prob-ID.f32`` belongs to vector row ``r``.  A
tagger added to an indexed collection is run over the stored pictures
(never re-embedding them); until that has finished, or when a Ray merge
brought pictures without its tags, its file covers fewer rows than the
collection (:attr:`TaggerInfo.rows`) and the next ``index`` catches up.

Queries pick one tagger (:func:`pick_tagger`): by name or identity, by
default the most recently added.  Two taggers' tags are never mixed in one
answer.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from illust2vec.collection.errors import CollectionError
from illust2vec.errors import close_matches

__all__ = ["TaggerInfo", "UnknownTaggerError", "pick_tagger", "prob_file_name", "read_taggers"]


class UnknownTaggerError(CollectionError):
    """A query named a tagger the collection does not hold."""


@dataclass(frozen=True)
class TaggerInfo:
    """One tagger of a collection (a row of ``taggers``)."""

    id: int
    name: str
    identity: str
    tag_base: int  # first tags.id of this tagger; column j of its file is tag tag_base + j
    tag_count: int
    file: str  # vector file name in the collection directory
    rows: int  # records committed in that file (vector rows [0, rows) are covered)
    added_at: float

    def covers(self, rows: int) -> bool:
        """Whether every one of the collection's ``rows`` vector rows has this tagger's probabilities."""
        return self.rows >= rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prob_file_name(tagger_id: int) -> str:
    """The vector file of tagger ``tagger_id`` (``prob.f32`` for the first, as in schema version 2)."""
    return "prob.f32" if tagger_id == 1 else f"prob-{tagger_id}.f32"


def read_taggers(conn: sqlite3.Connection, meta: dict[str, str]) -> list[TaggerInfo]:
    """The collection's taggers, oldest first.

    A version-2 database (read without upgrading it, e.g. on read-only storage)
    has no ``taggers`` table: its one tagger is read from ``meta``.
    """
    if int(meta.get("schema_version", 3)) >= 3:
        return [TaggerInfo(*r) for r in conn.execute(
            "SELECT id, name, identity, tag_base, tag_count, file, rows, added_at FROM taggers ORDER BY id")]
    count = int(meta.get("tag_count", 0) or 0)
    if not count or not meta.get("tagger_identity"):
        return []
    return [TaggerInfo(1, meta.get("tagger_name") or "", meta["tagger_identity"], 0, count, "prob.f32",
                       int(meta.get("rows", 0) or 0), 0.0)]


def describe(taggers: Sequence[TaggerInfo]) -> str:
    """``'a', 'b' (identity 1234abcd...)`` for messages."""
    return ", ".join(f"{t.name!r} (identity {t.identity.split(':')[-1][:12]})" for t in taggers) or "none"


def pick_tagger(taggers: Sequence[TaggerInfo], name: str | None = None, *, where: str = "this collection"
                ) -> TaggerInfo | None:
    """The tagger a query uses: ``name`` (a name, or an identity or its first 8+ characters), else the newest.

    ``None`` when the collection has no tagger and none was asked for.

    Raises:
        UnknownTaggerError: ``name`` matches none (the message lists the stored
            taggers), or several taggers of that name (give the identity then).
    """
    if name is None or name == "":
        return taggers[-1] if taggers else None
    found = [t for t in taggers if t.name == name]
    if not found:
        key = name.split(":")[-1].lower()
        found = [t for t in taggers if t.identity == name or (len(key) >= 8 and t.identity.split(":")[-1].startswith(key))]
    if len(found) == 1:
        return found[0]
    if not found:
        if not taggers:
            raise UnknownTaggerError(f"{where} has no tagger (indexed without one), so no {name!r}; add one with "
                                     f"'illust2vec index DIR --db DB --tagger {name}'")
        close = close_matches(name, [t.name for t in taggers])
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownTaggerError(f"{where} holds no tagger {name!r}; its taggers: {describe(taggers)}{hint}")
    raise UnknownTaggerError(f"{where} holds several taggers named {name!r}: {describe(found)}; "
                             "give the identity instead of the name")
