"""Attribute queries: move a query in feature space toward tags (``plus``) and away from others (``minus``).

A tag's **direction** is learned from the collection itself: with ``X`` the
L2-normalised features, ``mu+`` the mean of the items that carry the tag
(stored probability ``>= threshold``, or listed in a labels file) and ``mu-``
the mean of the others, the direction is ``u = (mu+ - mu-) / |mu+ - mu-|``,
with the two *levels* ``hi = mu+ . u`` and ``lo = mu- . u``.

A query ``q`` (normalised) is moved along each direction only:

* ``plus`` tag: the query's component along ``u`` is raised to
  ``hi + margin`` (``margin = hi - lo``) when it is lower: one whole
  with/without gap above the typical level of the items that carry the tag
  (``strength`` 1 goes all the way, 0.5 half of it); the components outside
  the tags' directions, which hold its other attributes, are untouched.
* ``minus`` tag: the same, down to ``lo - margin``.  Several tags are moved
  together (:func:`move_query`), so that correlated tags do not undo each
  other's moves.
* ``like`` tags (no query image): the start is the normalised mean of the
  collection, moved as for ``plus``.

The moved vector is searched like any query (cosine, or its binary code with
``binary``), so the hard tag filters (``tags``/``not_tags``) combine with it.
Directions are computed once per collection state and label source, only
for the tags asked, and cached under ``index/`` (a cache: rebuilt when the
collection or the labels change).

Labels come from one of the collection's taggers (``tagger``, default the
most recently added: its stored probabilities, with the user's tags applied:
a tag the user added counts as 1.0, one the user removed as 0.0, and a user
tag that no tagger knows is a label too) or, for a collection indexed
without a tagger, from ``labels``: a JSON file (``{path:
[tags]}``, ``{path: {tag: probability}}``, or the records ``illust2vec tag``
writes, JSON or JSONL; relative paths are relative to the file), a mapping of
the same shape, or ``"captions"`` (comma-separated ``NAME.txt`` files beside
the images, as ``illust2vec tag --captions`` writes them).  Items a labels
file leaves out (or without a caption file) count on neither side.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from illust2vec.collection.errors import CollectionError, UnknownTagError
from illust2vec.collection.query import close_tags, normalize_tag, parse_terms
from illust2vec.collection.search import SearchHit
from illust2vec.io.atomic import atomic_write

#: Stored probability (or label weight) from which an item counts as carrying a tag.
THRESHOLD = 0.5
#: Items with and without a tag needed to learn its direction.
MIN_ITEMS = 1
CACHE_FORMAT = 1
_CHUNK = 16_384

Labels = Union[str, os.PathLike, Mapping[str, Any], None]


@dataclass(frozen=True)
class TagDirection:
    """A tag's direction in feature space (unit vector) and the levels of items with / without it."""

    name: str
    direction: np.ndarray
    hi: float  # mean projection of items carrying the tag
    lo: float  # mean projection of the others
    count: int  # items carrying the tag

    @property
    def margin(self) -> float:
        return self.hi - self.lo


# --------------------------------------------------------------------------- labels
def _records_to_mapping(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rec in records:
        if not isinstance(rec, dict) or "path" not in rec:
            raise CollectionError("labels records need a 'path' field")
        tags = rec.get("tags", {})
        flat: dict[str, float] = {}
        if isinstance(tags, dict):
            for k, v in tags.items():
                if isinstance(v, dict):  # {category: {tag: p}}
                    flat.update({t: float(p) for t, p in v.items()})
                else:
                    flat[k] = float(v)
        else:
            flat = {t: 1.0 for t in tags}
        out[str(rec["path"])] = flat
    return out


def read_labels(source: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a labels file into ``{absolute path: {normalised tag: weight}}`` (see the module docstring)."""
    p = Path(source)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CollectionError(f"{p}: cannot read labels: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in io.StringIO(text) if line.strip()]
        except json.JSONDecodeError as exc:
            raise CollectionError(f"{p}: labels are neither JSON nor JSON lines: {exc}") from None
    return _normalise_mapping(data, p.resolve().parent)


def _normalise_mapping(data: Any, base: Path) -> dict[str, dict[str, float]]:
    if isinstance(data, list):
        data = _records_to_mapping(data)
    if not isinstance(data, Mapping):
        raise CollectionError("labels must map paths to tags ({path: [tags]} or {path: {tag: probability}})")
    out: dict[str, dict[str, float]] = {}
    for path, tags in data.items():
        if isinstance(tags, Mapping):
            w = {normalize_tag(str(t)): float(v) for t, v in tags.items()}
        elif isinstance(tags, str):
            w = {normalize_tag(t): 1.0 for t in tags.split(",") if t.strip()}
        else:
            w = {normalize_tag(str(t)): 1.0 for t in tags}
        q = Path(path)
        out[str((q if q.is_absolute() else base / q).resolve())] = w
    return out


def _caption_labels(col, rows: np.ndarray) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for row, paths in col.rows_to_paths(rows).items():
        for p in paths:
            cap = Path(p).with_suffix(".txt")
            try:
                text = cap.read_text(encoding="utf-8")
            except OSError:
                continue
            out[row] = {normalize_tag(t): 1.0 for t in text.replace("\n", ",").split(",") if t.strip()}
            break
    return out


class _Source:
    """Tag weights per live row, from stored probabilities or from labels."""

    def __init__(self, col, live: np.ndarray, labels: Labels, tagger=None) -> None:
        self.col, self.live = col, live
        self.by_row: dict[int, dict[str, float]] | None = None
        if labels is None:
            self.tagger = col.view.tagger(tagger)
            if self.tagger is None:
                raise CollectionError(
                    f"{col.path}: has no tag probabilities (indexed without a tagger); add a tagger with "
                    f"'illust2vec index DIR --db {col.path} --tagger NAME', "
                    "or give labels (--labels tags.json, or --labels captions for NAME.txt files beside the images)"
                )
            self.key = f"tagger:{self.tagger.identity}:user:{col.view.user_tags_stamp()}"
            self.tag_index = col.view.tag_index(self.tagger)
            self.user = col.view.user_tag_rows()
            return
        if isinstance(labels, str) and labels == "captions":
            self.by_row = _caption_labels(col, live)
            name = "captions"
        else:
            mapping = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else _normalise_mapping(labels, Path.cwd())
            self.by_row = {}
            for path, w in mapping.items():
                row = col.row_of_path(path)
                if row is not None:
                    self.by_row.setdefault(int(row), {}).update(w)
            name = "labels"
        if not self.by_row:
            raise CollectionError(f"{col.path}: none of the labelled files is in the collection")
        blob = json.dumps(sorted((r, sorted(w.items())) for r, w in self.by_row.items())).encode()
        self.key = f"{name}:{hashlib.sha256(blob).hexdigest()}"

    def canonical(self, tag: str) -> str:
        """The name a query term refers to (checked: unknown tags raise with suggestions)."""
        if self.by_row is None:
            term = parse_terms(tag, self.tag_index.category_names)[0]
            ids = self.tag_index.lookup(term) if term.category != "user" else []
            if ids:
                return term.label if term.category else self.tag_index.names[ids[0]]
            if self.user.has(term.name):  # a user tag the tagger does not know
                return f"user:{term.name}"
            raise self.tag_index.unknown(term, self.user.names())
        name = normalize_tag(tag)
        known = {t for w in self.by_row.values() for t in w}
        if name not in known:
            raise UnknownTagError(f"unknown tag {tag!r}: no labelled item carries it{close_tags(name, known)}")
        return name

    def weights(self, tags: list[str], rows: np.ndarray) -> np.ndarray:
        """(len(rows), len(tags)) weights (probabilities or label weights) of ``tags``; NaN rows: not labelled."""
        out = np.zeros((len(rows), len(tags)), dtype=np.float32)
        if self.by_row is None:  # the tagger's probabilities with the user's decisions applied
            probs = np.nan_to_num(self.col.view.probs(rows, tagger=self.tagger), nan=0.0)
            cats = self.tag_index.category_names
            for j, t in enumerate(tags):
                term = parse_terms(t, cats)[0]
                ids = self.tag_index.lookup(term) if term.category != "user" else []
                out[:, j] = probs[:, ids].max(axis=1) if ids else 0.0
                if not ids:
                    out[np.isin(rows, self.user.rows(term.name, True)), j] = 1.0
            return out
        for i, r in enumerate(rows):
            w = self.by_row.get(int(r))
            if w is None:
                out[i] = np.nan
            else:
                for j, t in enumerate(tags):
                    out[i, j] = w.get(t, 0.0)
        return out


def _source(col, snap, labels: Labels, tagger=None) -> _Source:
    """The tag source, kept in the collection view's memo while the collection and a labels file stay the same."""
    meta, live = snap.meta, snap.live
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return _Source(col, live, labels, tagger)
    stamp: tuple = ()
    if labels is not None and labels != "captions":
        try:
            st = os.stat(labels)
        except OSError as exc:
            raise CollectionError(f"{labels}: cannot read labels: {exc.strerror or exc}") from None
        stamp = (str(Path(labels).resolve()), st.st_mtime_ns, st.st_size)
    t = col.view.tagger(tagger, snap=snap) if labels is None else None
    key = ("tag-source", labels if labels in (None, "captions") else "file", stamp, snap.key,
           t.identity if t else None, col.view.data_version())
    return col.view.memo(key, lambda: _Source(col, live, labels, t))


# --------------------------------------------------------------------------- directions
def _cache_path(col, source_key: str) -> Path:
    return col.path / "index" / f"directions-{hashlib.sha256(source_key.encode()).hexdigest()[:16]}.npz"


def _state_key(meta: dict[str, str], source_key: str, threshold: float) -> str:
    return json.dumps([CACHE_FORMAT, meta.get("embedder_identity"), meta.get("rows"), meta.get("delete_gen"),
                       source_key, float(threshold)])


def _load_cache(col, path: Path, state: str) -> dict[str, Any]:
    """The cached directions for ``state`` (kept in memory while the file does not change), or ``{}``."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    key = ("directions", str(path), st.st_mtime_ns, st.st_size, state)
    hit = col.view.memo(key)
    if hit is not None:
        return hit
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["state"]) != state:
                return {}
            out = {k: z[k] for k in z.files}
    except Exception:  # corrupt or from another version: it is only a cache
        return {}
    return col.view.remember(key, out)


def tag_directions(col, tags: str | Iterable[str], *, labels: Labels = None, threshold: float = THRESHOLD,
                   tagger=None) -> tuple[dict[str, TagDirection], np.ndarray]:
    """Directions of ``tags`` (``"a, b"`` or a list) and the collection's normalised mean feature.

    Computed in one pass over the stored features for the tags not cached
    yet, then cached under ``index/``.  ``labels``: see the module docstring
    (``None``: the stored probabilities of ``tagger``, default the most
    recently added, with user tags).  ``threshold``: weight from which an
    item carries a tag.

    Returns:
        ``({query term: TagDirection}, mean)``.

    Raises:
        UnknownTagError: a tag the tagger / labels do not know.
        CollectionError: no tag source, or a tag carried by no item (or by all).
    """
    if not 0.0 < threshold <= 1.0:
        raise CollectionError(f"threshold must be in (0, 1], not {threshold}")
    snap = col.view.snapshot()
    meta, live = snap.meta, snap.live
    if "feature_dim" not in meta or not len(live):
        raise CollectionError(f"{col.path}: the collection is empty; add images with 'illust2vec index DIR --db {col.path}'")
    src = _source(col, snap, labels, tagger)
    terms = [str(t) for t in parse_terms(tags)] if isinstance(tags, str) else [str(t) for t in tags]
    wanted = {t: src.canonical(t) for t in terms}
    path = _cache_path(col, src.key)
    state = _state_key(meta, src.key, threshold)
    cache = _load_cache(col, path, state)
    names = [str(n) for n in cache.get("names", [])]
    have = {n: i for i, n in enumerate(names)}
    missing = sorted({c for c in wanted.values() if c not in have})
    dim = int(meta["feature_dim"])
    dirs = cache.get("dirs", np.zeros((0, dim), np.float32))
    hi, lo = cache.get("hi", np.zeros(0, np.float32)), cache.get("lo", np.zeros(0, np.float32))
    count = cache.get("count", np.zeros(0, np.int64))
    mean = cache.get("mean")
    if missing or mean is None:
        s_with = np.zeros((len(missing), dim), np.float64)
        n_with = np.zeros(len(missing), np.float64)
        s_all = np.zeros(dim, np.float64)
        s_known = np.zeros(dim, np.float64)
        n_known = 0
        for i in range(0, len(live), _CHUNK):
            rows = live[i : i + _CHUNK]
            x = col.vectors("feature", rows).astype(np.float32)
            nx = np.linalg.norm(x, axis=1, keepdims=True)
            x /= np.where(nx > 0, nx, 1)
            s_all += x.sum(axis=0, dtype=np.float64)
            if missing:
                w = src.weights(missing, rows)
                known = ~np.isnan(w[:, 0])  # labels files may leave items out: they count on neither side
                w = (w[known] >= threshold).astype(np.float32)
                s_known += x[known].sum(axis=0, dtype=np.float64)
                n_known += int(known.sum())
                s_with += (w.T @ x[known]).astype(np.float64)
                n_with += w.sum(axis=0)
        n = float(n_known)
        mean = _unit(s_all / len(live)).astype(np.float32)
        new_dirs, new_hi, new_lo = [], [], []
        for j, t in enumerate(missing):
            if n_with[j] < MIN_ITEMS or n - n_with[j] < MIN_ITEMS:
                which = "no item carries" if n_with[j] < MIN_ITEMS else "every item carries"
                raise CollectionError(f"cannot learn a direction for {t!r}: {which} it (weight >= {threshold})")
            mu_p = s_with[j] / n_with[j]
            mu_m = (s_known - s_with[j]) / (n - n_with[j])
            u = _unit(mu_p - mu_m)
            new_dirs.append(u)
            new_hi.append(float(mu_p @ u))
            new_lo.append(float(mu_m @ u))
        if missing:
            names += missing
            dirs = np.concatenate([dirs, np.asarray(new_dirs, np.float32).reshape(-1, dim)])
            hi = np.concatenate([hi, np.asarray(new_hi, np.float32)])
            lo = np.concatenate([lo, np.asarray(new_lo, np.float32)])
            count = np.concatenate([count, n_with.astype(np.int64)])
        arrays = dict(state=np.array(state), names=np.array(names, dtype=str), dirs=dirs, hi=hi, lo=lo,
                      count=count, mean=mean)
        try:
            atomic_write(path, lambda fh: np.savez(fh, **arrays))
        except OSError:  # read-only collection: computed again next time
            pass
        have = {n: i for i, n in enumerate(names)}
    out = {}
    for term, canon in wanted.items():
        i = have[canon]
        out[term] = TagDirection(canon, np.asarray(dirs[i], np.float32), float(hi[i]), float(lo[i]), int(count[i]))
    return out, np.asarray(mean, np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def move_query(q: np.ndarray, plus: Iterable[TagDirection] = (), minus: Iterable[TagDirection] = (), *,
               strength: float = 1.0) -> np.ndarray:
    """``q`` (normalised first) moved toward ``plus`` and away from ``minus`` (see the module docstring).

    All tags are moved at once: with ``U`` the directions and ``p = U^T q``
    the query's projections, the wanted projections are ``p*`` (a plus tag
    raised to ``hi + margin``, a minus tag lowered to ``lo - margin``, others
    kept) and ``q + strength * U (U^T U)^-1 (p* - p)`` reaches them together,
    changing ``q`` only inside the span of the directions.  (Tags are often
    correlated: moving along one after the other would undo the first move.)
    """
    v = _unit(np.asarray(q, np.float64).reshape(-1))
    dirs = [(d, +1) for d in plus] + [(d, -1) for d in minus]
    if not dirs:
        return v.astype(np.float32)
    u = np.stack([np.asarray(d.direction, np.float64) for d, _ in dirs], axis=1)
    p = u.T @ v
    want = np.array([max(pi, d.hi + d.margin) if sign > 0 else min(pi, d.lo - d.margin)
                     for pi, (d, sign) in zip(p, dirs)])
    gram = u.T @ u + 1e-6 * np.eye(len(dirs))  # a tag given twice, or as plus and minus: no blow-up
    v = v + strength * (u @ np.linalg.solve(gram, want - p))
    return v.astype(np.float32)


def _split(spec) -> list[str]:
    if spec is None:
        return []
    return [str(t) for t in parse_terms(spec)]


def attribute_vector(col, image=None, vector=None, *, plus=None, minus=None, like=None, strength: float = 1.0,
                     labels: Labels = None, embedder=None, tagger=None) -> np.ndarray:
    """The moved query feature (normalised) for an image / vector, or for ``like`` tags alone."""
    if strength <= 0:
        raise CollectionError(f"strength must be positive, not {strength}")
    plus_t, minus_t, like_t = _split(plus), _split(minus), _split(like)
    if (image is None and vector is None) == (not like_t):
        raise CollectionError("give either a query image (with plus/minus tags) or like tags, not both or neither")
    dirs, mean = tag_directions(col, plus_t + minus_t + like_t, labels=labels, tagger=tagger)
    if like_t:
        base = mean
        plus_t = like_t + plus_t
    else:
        f, _, _ = col.query_vector(image=image, vector=vector, embedder=embedder, binary=False)
        base = f[0]
    return move_query(base, [dirs[t] for t in plus_t], [dirs[t] for t in minus_t], strength=strength)


def attribute_search(col, image=None, vector=None, *, plus=None, minus=None, like=None, strength: float = 1.0,
                     labels: Labels = None, embedder=None, tagger=None, **search: Any) -> list[SearchHit]:
    """Search ``col`` with a query moved toward ``plus`` tags and away from ``minus`` tags, or for ``like`` tags.

    Args:
        image, vector: the query (as for :meth:`Collection.search`); leave
            both out with ``like``.
        plus, minus, like: tags, ``"blonde hair, cat ears"`` or a list.
        strength: how far to move (1: one with/without gap past the typical
            level of items carrying the tag; see the module docstring).
        labels: where tag directions are learned from when the collection
            has no tagger: a labels file, a mapping or ``"captions"``.
        embedder: as for :meth:`Collection.search`.
        search: the other options of :meth:`Collection.search` (``k``,
            ``binary``, ``tags``/``not_tags``: hard filters, tag expressions
            with user tags, ``min_prob``, ``nprobe``).
        tagger: whose probabilities the directions and the filters use
            (default: the most recently added tagger).

    Returns:
        Hits, best first (:class:`illust2vec.collection.SearchHit`).
    """
    v = attribute_vector(col, image=image, vector=vector, plus=plus, minus=minus, like=like, strength=strength,
                         labels=labels, embedder=embedder, tagger=tagger)
    return col.search(vector=v, embedder=embedder, tagger=tagger, **search)
