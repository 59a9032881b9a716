"""Tag expressions: the one parser and evaluator behind every tag query of a collection.

``search --tags/--not``, the web app's filter, ``export``, ``tag-stats`` and
attribute queries all read tags through this module (via
:class:`~illust2vec.collection.view.CollectionView`), so they agree on what
matches, user tags included.

The language (terms separated by commas, every term must hold)::

    blue hair, cat ears          both tags (probability >= the query's threshold, default 0.5)
    -hat                         not this tag (``--not hat`` says the same)
    character:hatsune miku       a tag of one category of the tagger (general, character, ...)
    user:favourite               a user tag (one a person added, see :mod:`.user_tags`)
    smile>=0.8, solo>0.3         a threshold of the term's own
    hat<0.2                      probability below 0.2 (the same as ``-hat>=0.2``)

Names are matched case-insensitively with ``_`` and spaces treated alike, so
both the i2v spelling (``blue hair``) and the Danbooru/WD one
(``blue_hair``) work.  A ``prefix:`` is a category only when the tagger has
that category (or it is ``user``), so tags such as ``:d`` keep their colon; a
term written exactly as a known tag is that tag (``-_-`` and ``>_<`` are
tags, not a negation or a threshold).

User decisions take precedence over the model: a tag the user added to a
picture holds there (as probability 1.0) whatever the model said, one the
user removed does not hold.

Model tests with a threshold ``>= prob_floor`` run in SQL on the
``tag_probs`` table; lower thresholds scan the tagger's probability matrix.
Both give exactly the rows whose stored probability passes the test.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from illust2vec.collection.errors import CollectionError, UnknownTagError
from illust2vec.errors import close_matches

#: Categories every collection knows besides its taggers' own.
USER_CATEGORY = "user"
_THRESHOLD = re.compile(r"^(?P<head>.*?\S)\s*(?P<op>>=|<=|>|<)\s*(?P<p>\d*\.?\d+)\s*$")


def normalize_tag(name: str) -> str:
    """Lower-case, ``_`` -> space, surrounding and repeated whitespace removed."""
    return " ".join(name.replace("_", " ").lower().split())


@dataclass(frozen=True)
class TagTerm:
    """One term of a tag expression.

    ``name`` is normalised (:func:`normalize_tag`); ``category`` a tagger
    category or ``"user"``; ``negated`` for ``-term`` (and ``--not``);
    ``op``/``threshold`` the term's own test (``threshold`` ``None``: the
    query's ``min_prob``).
    """

    name: str
    category: str | None = None
    negated: bool = False
    op: str = ">="
    threshold: float | None = None

    @property
    def label(self) -> str:
        """``category:name`` or ``name`` (without negation or threshold)."""
        return f"{self.category}:{self.name}" if self.category else self.name

    def __str__(self) -> str:
        thr = "" if self.threshold is None else f"{self.op}{self.threshold:g}"
        return ("-" if self.negated else "") + self.label + thr

    def limit(self, min_prob: float) -> float:
        return float(min_prob if self.threshold is None else self.threshold)

    def passes(self, prob: float, min_prob: float) -> bool:
        """Whether a probability passes this term's test (user-added tags count as 1.0)."""
        t = self.limit(min_prob)
        return prob > t if self.op == ">" else prob >= t


def parse_terms(spec: str | Iterable[str] | None, categories: Iterable[str] = (), *,
                known: Callable[[str], bool] | None = None) -> list[TagTerm]:
    """Split ``"a, -b, character:c, d>=0.3"`` (or a list of such strings) into :class:`TagTerm` s.

    ``categories``: the tagger's categories (``user`` is always one).
    ``known(normalised name)``: whether a name is a tag as written (then no
    ``-`` or threshold is read out of it).

    Raises:
        CollectionError: an empty term or a threshold outside [0, 1].
    """
    if spec is None:
        return []
    parts: list[str] = []
    for item in [spec] if isinstance(spec, str) else spec:
        parts.extend(p for p in str(item).split(",") if p.strip())
    cats = {c.lower() for c in categories} | {USER_CATEGORY}
    terms = []
    for part in parts:
        raw = part.strip()
        if known is not None and known(normalize_tag(raw)):
            terms.append(TagTerm(normalize_tag(raw)))
            continue
        negated = False
        if raw.startswith("-") and len(raw) > 1:
            negated, raw = True, raw[1:].strip()
        op, threshold = ">=", None
        m = _THRESHOLD.match(raw)
        if m and not (known is not None and known(normalize_tag(raw))):
            threshold = float(m["p"])
            if not 0.0 <= threshold <= 1.0:
                raise CollectionError(f"{part.strip()!r}: the threshold {m['p']} is not a probability between 0 and 1")
            raw, op = m["head"], m["op"]
            if op in ("<", "<="):  # below p: not (>= p); at most p: not (> p)
                negated, op = not negated, (">=" if op == "<" else ">")
        cat = None
        if ":" in raw:
            head, rest = raw.split(":", 1)
            if head.strip().lower() in cats and rest.strip():
                cat, raw = head.strip().lower(), rest
        name = normalize_tag(raw)
        if not name:
            raise CollectionError(f"{part.strip()!r} names no tag")
        terms.append(TagTerm(name, cat, negated, op, threshold))
    return terms


@dataclass(frozen=True)
class TagQuery:
    """A parsed tag expression: terms that must hold (``include``) and terms that must not (``exclude``)."""

    terms: tuple[TagTerm, ...] = ()

    @classmethod
    def parse(cls, tags: str | Iterable[str] | None = None, not_tags: str | Iterable[str] | None = None,
              categories: Iterable[str] = (), *, known: Callable[[str], bool] | None = None) -> TagQuery:
        """``tags`` as written, plus ``not_tags`` (each of its terms negated: ``--not a, b``)."""
        cats = list(categories)
        inc = parse_terms(tags, cats, known=known)
        exc = [replace(t, negated=not t.negated) for t in parse_terms(not_tags, cats, known=known)]
        return cls(tuple(inc + exc))

    @property
    def include(self) -> list[TagTerm]:
        return [t for t in self.terms if not t.negated]

    @property
    def exclude(self) -> list[TagTerm]:
        return [t for t in self.terms if t.negated]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __str__(self) -> str:
        return ", ".join(map(str, self.terms))


class TagIndex:
    """One tagger's tag table: names and categories of its probability columns.

    ``base`` is the ``tags.id`` of column 0 (several taggers share the
    ``tags`` table, see :mod:`.db`).
    """

    def __init__(self, names: Sequence[str], categories: Sequence[str], *, base: int = 0, tagger: str = "") -> None:
        self.names = list(names)
        self.categories = list(categories)
        self.category_names = sorted({c.lower() for c in self.categories})  # each category once
        self.base = int(base)
        self.tagger = tagger
        self._by_key: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self._by_key.setdefault(normalize_tag(n), []).append(i)

    @classmethod
    def from_db(cls, conn: sqlite3.Connection, base: int = 0, count: int | None = None, *,
                tagger: str = "") -> TagIndex:
        q, params = "SELECT id, name, category FROM tags", []
        if count is not None:
            q, params = q + " WHERE id >= ? AND id < ?", [int(base), int(base) + int(count)]
        rows = conn.execute(q + " ORDER BY id", params).fetchall()
        return cls([r[1] for r in rows], [r[2] for r in rows], base=base, tagger=tagger)

    def knows(self, name: str) -> bool:
        """Whether the normalised ``name`` is one of the tags."""
        return name in self._by_key

    def columns_of(self, name: str) -> list[int]:
        """Columns of a tag name in any category (matched as :func:`normalize_tag` does)."""
        return list(self._by_key.get(normalize_tag(name), []))

    def lookup(self, term: TagTerm) -> list[int]:
        """Columns of ``term`` (one name may exist in several categories); empty when unknown."""
        ids = self._by_key.get(term.name, [])
        if term.category is not None:
            ids = [i for i in ids if self.categories[i].lower() == term.category]
        return ids

    def resolve(self, term: TagTerm) -> list[int]:
        """Columns of ``term``; raises :class:`UnknownTagError` with suggestions."""
        ids = self.lookup(term)
        if not ids:
            raise self.unknown(term)
        return ids

    def unknown(self, term: TagTerm, extra: Iterable[str] = ()) -> UnknownTagError:
        """The error for a term that names no tag, with the closest names (and ``extra`` ones, e.g. user tags)."""
        if term.category is None:
            pool = list(self._by_key) + list(extra)
        else:
            pool = [normalize_tag(n) for n, c in zip(self.names, self.categories) if c.lower() == term.category]
        where = f" in category {term.category!r}" if term.category else ""
        return UnknownTagError(f"unknown tag {term.label!r}{where}{suggest(term.name, pool, self.tagger)}")


def suggest(name: str, pool: Iterable[str], tagger: str = "") -> str:
    """``"; did you mean 'a', 'b'?"`` and where to look the tagger's tags up (which model's tags they are)."""
    close = close_tags(name, pool)
    if not close:
        return f"; 'illust2vec models tags {tagger or 'NAME'}' lists a tagger's tags"
    return close + (f" (the tags of {tagger}: 'illust2vec models tags {tagger}' lists them)" if tagger else "")


@dataclass(frozen=True)
class Condition:
    """A model-side test: any of ``columns`` passes ``op threshold``."""

    columns: tuple[int, ...]
    op: str
    threshold: float


class UserTagRows(Protocol):
    """What the evaluator needs to know about user tags (see :class:`~.view.CollectionView`)."""

    def rows(self, name: str, added: bool) -> np.ndarray:
        """Sorted live rows whose picture has user tag ``name`` added (or removed)."""

    def has(self, name: str) -> bool:
        """Whether any picture has a user decision about ``name``."""

    def names(self) -> list[str]:
        """Every user tag name (for suggestions)."""


@dataclass
class TermMatch:
    """How one term was evaluated: its model columns and the user's decisions."""

    term: TagTerm
    columns: list[int]
    added: np.ndarray
    removed: np.ndarray


@dataclass
class TagMatch:
    """The result of a tag expression: the sorted rows where it holds, and how each term was read."""

    rows: np.ndarray
    include: list[TermMatch] = field(default_factory=list)
    exclude: list[TermMatch] = field(default_factory=list)

    def scores(self, rows: np.ndarray, column: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
        """The weakest included term's effective probability at each of ``rows`` (NaN without included terms).

        ``column(j, rows)``: the tagger's probabilities of column ``j`` (NaN
        where it has none).  A term's probability is the best of its
        columns, 1.0 where the user added the tag.
        """
        if not self.include:
            return np.full(len(rows), np.nan)
        score = np.full(len(rows), np.inf)
        for tm in self.include:
            if tm.columns:
                vals = np.nanmax(np.stack([np.nan_to_num(np.asarray(column(j, rows), np.float64), nan=0.0)
                                           for j in tm.columns], axis=1), axis=1)
            else:
                vals = np.zeros(len(rows))
            vals[np.isin(rows, tm.added)] = 1.0
            score = np.minimum(score, vals)
        return score

    def columns(self) -> list[int]:
        """Every model column the query read (for the tag probabilities shown with a hit)."""
        return list(dict.fromkeys(j for tm in self.include + self.exclude for j in tm.columns))


def evaluate(query: TagQuery, *, live: np.ndarray, tags: TagIndex | None, user: UserTagRows,
             model_rows: Callable[[list[Condition], list[Condition]], np.ndarray], min_prob: float,
             no_tags_hint: str = "") -> TagMatch:
    """The sorted ``live`` rows where ``query`` holds.

    ``model_rows(include, exclude)``: sorted live rows where every
    ``include`` condition passes and no ``exclude`` one does
    (:func:`model_matches`).  Unknown names raise :class:`UnknownTagError`
    (with suggestions); ``no_tags_hint`` is added when the collection has no
    tagger at all.
    """
    if not 0.0 <= min_prob <= 1.0:
        raise CollectionError(f"min_prob must be between 0 and 1, not {min_prob}")
    if not query:
        return TagMatch(live)
    empty = live[:0]
    matches: list[tuple[TermMatch, Condition | None]] = []
    for term in query.terms:
        cols = tags.lookup(term) if tags is not None and term.category != USER_CATEGORY else []
        if not cols and not user.has(term.name):
            if term.category == USER_CATEGORY:
                raise UnknownTagError(f"no picture has the user tag {term.name!r}{close_tags(term.name, user.names())}")
            if tags is None:
                raise UnknownTagError(f"unknown tag {term.label!r}: this collection has no tag probabilities "
                                      f"(indexed without a tagger) and no user tag of that name{no_tags_hint}")
            raise tags.unknown(term, user.names())
        added = user.rows(term.name, True) if (term.category in (None, USER_CATEGORY) or cols) else empty
        if len(added) and not term.passes(1.0, min_prob):
            added = empty
        removed = user.rows(term.name, False) if term.category != USER_CATEGORY else empty
        cond = Condition(tuple(cols), term.op, term.limit(min_prob)) if cols else None
        matches.append((TermMatch(term, list(cols), added, removed), cond))
    include = [tm for tm, _ in matches if not tm.term.negated]
    exclude = [tm for tm, _ in matches if tm.term.negated]
    if all(not len(tm.added) and not len(tm.removed) for tm, _ in matches):
        # no user decision involved: the model conditions in one go (one SQL statement)
        if any(c is None for tm, c in matches if not tm.term.negated):
            return TagMatch(empty, include, exclude)  # a term only user tags could satisfy, and none does
        rows = model_rows([c for tm, c in matches if not tm.term.negated],
                          [c for tm, c in matches if tm.term.negated and c is not None])
        return TagMatch(rows, include, exclude)
    rows: np.ndarray | None = None
    for tm, cond in matches:
        model = model_rows([cond], []) if cond is not None else empty
        held = np.setdiff1d(model, tm.removed, assume_unique=True) if len(tm.removed) else model
        held = np.union1d(held, tm.added) if len(tm.added) else held
        if not tm.term.negated:
            rows = held if rows is None else np.intersect1d(rows, held, assume_unique=True)
    rows = live if rows is None else _within(rows, live)
    for tm, cond in matches:
        if tm.term.negated:
            model = model_rows([cond], []) if cond is not None else empty
            held = np.setdiff1d(model, tm.removed, assume_unique=True) if len(tm.removed) else model
            held = np.union1d(held, tm.added) if len(tm.added) else held
            rows = np.setdiff1d(rows, held, assume_unique=True)
    return TagMatch(rows.astype(np.int64, copy=False), include, exclude)


def close_tags(name: str, pool: Iterable[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` for the names of ``pool`` close to ``name``, else ``""``."""
    close = close_matches(name, sorted(set(pool)), n=5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _within(rows: np.ndarray, live_rows: np.ndarray) -> np.ndarray:
    """``rows`` that are in the sorted ``live_rows`` (rows committed after the caller's snapshot drop out)."""
    if len(rows) == 0 or len(live_rows) == 0:
        return rows[:0]
    pos = np.searchsorted(live_rows, rows).clip(max=len(live_rows) - 1)
    return rows[live_rows[pos] == rows]


def model_matches(conn: sqlite3.Connection, probs: np.ndarray | None, live_rows: np.ndarray,
                  include: list[Condition], exclude: list[Condition], *, base: int, prob_floor: float
                  ) -> np.ndarray:
    """Sorted live rows where every ``include`` condition passes and no ``exclude`` one does.

    ``base``: the tagger's first ``tags.id`` (its columns are ids ``base + j``
    in ``tag_probs``).  ``probs``: the tagger's (R, T) probability matrix
    (rows it covers), scanned when a threshold is below ``prob_floor``; rows
    it does not cover never match.
    """
    if not include and not exclude:
        return live_rows
    conds = include + exclude
    if all(c.threshold >= prob_floor for c in conds):
        def select(c: Condition) -> tuple[str, list[object]]:
            op = ">" if c.op == ">" else ">="
            return (f"SELECT row FROM tag_probs WHERE tag_id IN ({','.join('?' * len(c.columns))}) AND prob {op} ?",
                    [*(base + j for j in c.columns), float(c.threshold)])

        def run(sql: list[str], params: list[object]) -> np.ndarray:
            return np.fromiter((r for (r,) in conn.execute(" ".join(sql) + " ORDER BY row", params)), dtype=np.int64)

        sql: list[str] = []
        params: list[object] = []
        for c in include:
            s, p = select(c)
            sql += (["INTERSECT"] if sql else []) + [s]
            params += p
        if include:
            for c in exclude:
                s, p = select(c)
                sql += ["EXCEPT", s]
                params += p
            return _within(run(sql, params), live_rows)
        for c in exclude:  # only exclusions: the live rows less the union of theirs
            s, p = select(c)
            sql += (["UNION"] if sql else []) + [s]
            params += p
        return np.setdiff1d(live_rows, run(sql, params), assume_unique=True)
    if probs is None:
        raise CollectionError("this collection has no tag probabilities; add a tagger with "
                              "'illust2vec index DIR --db DB --tagger NAME'")
    covered = live_rows[live_rows < len(probs)]
    mask = np.ones(len(covered), dtype=bool)
    for i in range(0, len(covered), 65_536):
        block = np.asarray(probs[covered[i : i + 65_536]], dtype=np.float64)
        m = mask[i : i + 65_536]
        for c in include:
            m &= _passes(block[:, list(c.columns)], c).any(axis=1)
        for c in exclude:
            m &= ~_passes(block[:, list(c.columns)], c).any(axis=1)
    rows = covered[mask]
    if not include and len(covered) < len(live_rows):  # uncovered rows have no tag to exclude
        rows = np.union1d(rows, live_rows[live_rows >= len(probs)])
    return rows


def _passes(values: np.ndarray, c: Condition) -> np.ndarray:
    return values > c.threshold if c.op == ">" else values >= c.threshold
