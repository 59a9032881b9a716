"""Tag queries on stored tag probabilities.

``"blue hair, cat ears"`` -> two terms that must both reach ``min_prob``;
``"character:hatsune miku"`` restricts a term to one tag category.  Names are
matched case-insensitively with ``_`` and spaces treated alike, so both the
i2v spelling (``blue hair``) and the Danbooru/WD one (``blue_hair``) work.

Queries with ``min_prob >= prob_floor`` run in SQL on the ``tag_probs``
table; lower thresholds scan the full probability matrix (``prob.f32``).
Both give exactly the rows whose stored probability is ``>= min_prob``.
"""
from __future__ import annotations

import difflib
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from illust2vec.collection.errors import CollectionError, UnknownTagError


def normalize_tag(name: str) -> str:
    """Lower-case, ``_`` -> space, surrounding and repeated whitespace removed."""
    return " ".join(name.replace("_", " ").lower().split())


@dataclass(frozen=True)
class TagTerm:
    """One tag in a query: a name and optionally the category it must belong to."""

    name: str
    category: str | None = None

    def __str__(self) -> str:
        return f"{self.category}:{self.name}" if self.category else self.name


def parse_terms(spec: str | Iterable[str] | None, categories: Iterable[str] = ()) -> list[TagTerm]:
    """Split ``"a, b, character:c"`` (or a list of such strings) into :class:`TagTerm` s.

    A ``prefix:`` is read as a category only when it names one of
    ``categories`` (so tags such as ``":d"`` keep their colon).
    """
    if spec is None:
        return []
    parts: list[str] = []
    for item in [spec] if isinstance(spec, str) else spec:
        parts.extend(p for p in item.split(",") if p.strip())
    cats = {c.lower() for c in categories}
    terms = []
    for part in parts:
        part = part.strip()
        cat = None
        if ":" in part:
            head, rest = part.split(":", 1)
            if head.strip().lower() in cats and rest.strip():
                cat, part = head.strip().lower(), rest
        terms.append(TagTerm(normalize_tag(part), cat))
    return terms


class TagIndex:
    """The collection's tag table, for turning names into probability columns."""

    def __init__(self, names: Sequence[str], categories: Sequence[str]) -> None:
        self.names = list(names)
        self.categories = list(categories)
        self._by_key: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self._by_key.setdefault(normalize_tag(n), []).append(i)

    @classmethod
    def from_db(cls, conn: sqlite3.Connection) -> "TagIndex":
        rows = conn.execute("SELECT id, name, category FROM tags ORDER BY id").fetchall()
        return cls([r[1] for r in rows], [r[2] for r in rows])

    def resolve(self, term: TagTerm) -> list[int]:
        """Column ids for ``term``; raises :class:`UnknownTagError` with suggestions."""
        ids = self._by_key.get(term.name, [])
        if term.category is not None:
            ids = [i for i in ids if self.categories[i].lower() == term.category]
        if not ids:
            pool = list(self._by_key) if term.category is None else [
                normalize_tag(n) for n, c in zip(self.names, self.categories) if c.lower() == term.category
            ]
            close = difflib.get_close_matches(term.name, pool, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; 'illust2vec models info' lists a model's tags"
            where = f" in category {term.category!r}" if term.category else ""
            raise UnknownTagError(f"unknown tag {str(term)!r}{where}{hint}")
        return ids


def _within(rows: np.ndarray, live_rows: np.ndarray) -> np.ndarray:
    """``rows`` that are in the sorted ``live_rows`` (rows committed after the caller's snapshot drop out)."""
    if len(rows) == 0 or len(live_rows) == 0:
        return rows[:0]
    pos = np.searchsorted(live_rows, rows).clip(max=len(live_rows) - 1)
    return rows[live_rows[pos] == rows]


def matching_rows(
    conn: sqlite3.Connection,
    probs: np.ndarray | None,
    live_rows: np.ndarray,
    include: list[list[int]],
    exclude: list[list[int]],
    min_prob: float,
    prob_floor: float,
) -> np.ndarray:
    """Sorted live rows where every ``include`` term reaches ``min_prob`` and no ``exclude`` term does.

    A term is a list of tag ids (one name may exist in several categories); it
    matches when any of its ids does.  ``probs`` is the (R, T) stored matrix,
    used when ``min_prob < prob_floor``.
    """
    if not include and not exclude:
        return live_rows
    if min_prob >= prob_floor:
        sql = [] if include else ["SELECT row FROM contents"]
        params: list[object] = []
        for ids in include:
            if sql:
                sql.append("INTERSECT")
            sql.append(f"SELECT row FROM tag_probs WHERE tag_id IN ({','.join('?' * len(ids))}) AND prob >= ?")
            params += [*ids, float(min_prob)]
        for ids in exclude:
            sql.append(f"EXCEPT SELECT row FROM tag_probs WHERE tag_id IN ({','.join('?' * len(ids))}) AND prob >= ?")
            params += [*ids, float(min_prob)]
        rows = np.fromiter((r for (r,) in conn.execute(" ".join(sql) + " ORDER BY row", params)), dtype=np.int64)
        return _within(rows, live_rows)
    if probs is None:
        raise CollectionError("this collection has no tag probabilities; index it with a tagger (--tagger)")
    mask = np.ones(len(live_rows), dtype=bool)
    for i in range(0, len(live_rows), 65_536):
        block = np.asarray(probs[live_rows[i : i + 65_536]], dtype=np.float64)
        m = mask[i : i + 65_536]
        for ids in include:
            m &= (block[:, ids] >= min_prob).any(axis=1)
        for ids in exclude:
            m &= ~(block[:, ids] >= min_prob).any(axis=1)
    return live_rows[mask]
