"""Similarity search (cosine on float features, Hamming on binary codes) and tag filters, over a view.

Every function here takes a :class:`~illust2vec.collection.view.CollectionView`
(``col.view``) and reads through its public methods; tag filters are tag
expressions evaluated by the view (:meth:`~.view.CollectionView.match_tags`,
user tags included), with one tagger's probabilities (``tagger``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.collection import index as _index
from illust2vec.collection.errors import CollectionError, ModelMismatchError
from illust2vec.collection.view import CollectionView, Snapshot

#: With a tag filter, candidate sets up to this size are ranked exactly by brute force (float / binary).
BRUTE_FORCE_MAX = 5_000
BRUTE_FORCE_MAX_BINARY = 100_000
#: Candidates taken from an approximate index (PQ FastScan, PCA+IVF) and re-ranked exactly: max(RERANK_MIN, RERANK_FACTOR * k).
RERANK_MIN = 1000
RERANK_FACTOR = 20
#: The same for the binary index's short codes (re-ranked on the full codes).
BINARY_RERANK_MIN = 2000
BINARY_RERANK_FACTOR = 50


@dataclass
class SearchHit:
    """One result.

    ``score`` is the cosine similarity (float search), ``1 - distance/bits``
    (binary search) or, for tag-only queries, the smallest probability among
    the queried tags.  ``distance`` is the Hamming distance (binary search).
    ``tags`` holds the stored probability of each queried tag.  In a face
    collection (``index --faces``) ``face_index`` and ``box`` (``[x, y, w, h]``
    in the picture's pixels) say which face of ``path`` matched; both are
    ``None`` for a whole picture.
    """

    path: str
    row: int
    score: float | None
    distance: int | None = None
    paths: list[str] = field(default_factory=list)
    tags: dict[str, float] = field(default_factory=dict)
    face_index: int | None = None
    box: list[int] | None = None

    @property
    def ref(self) -> str:
        """``PATH#faceK [x,y,w,h]`` for a face, else ``PATH``."""
        from illust2vec.faces.items import face_ref

        return face_ref(self.path, self.face_index, self.box)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def get_index(view: CollectionView, kind: str, snap: Snapshot, *, nprobe: int | None = None):
    """The up-to-date search index of ``kind`` (``"feature"`` or ``"codes"``), loading, extending or rebuilding it.

    Float indexes are saved under ``index/``; the binary index is built from
    ``codes.u8`` in memory (its data is that file) and kept in the view's
    memo for the life of the collection object.
    """
    meta, live = snap.meta, snap.live
    ident = meta["embedder_identity"]
    rows = int(meta["rows"])
    gen = int(meta.get("delete_gen", 0))
    path = view.path / "index" / f"{kind}.faiss"
    vf = view.vector_file(kind, snap)
    cached = view.memo(("index", kind))
    if cached is None and kind == "feature":
        cached = _index.load(path)
    changed = False
    if cached is not None:
        idx, im = cached
        if im.identity != ident or im.delete_gen != gen or im.rows_upto > rows:
            cached = None
        elif kind == "feature" and _index.size_class(im.kind) != _index.float_kind(im.ntotal):
            cached = None  # built for another size class (or other thresholds)
        elif kind == "codes" and idx.exact != _index.binary_exact(len(live), int(meta["code_bytes"])):
            cached = None  # grew into (or shrank out of) the short codes' size class
        elif im.rows_upto < rows:
            vectors = vf.view(rows)
            new = live[np.searchsorted(live, im.rows_upto):]
            if kind == "codes":
                _index.add_binary_rows(idx, vectors, new)
            elif _index.outgrown(im, im.ntotal + len(new)):
                cached = None  # grew past the size of this kind: rebuild as the next one
            else:
                _index.add_float_rows(idx, vectors, new)
            if cached is not None:
                im.rows_upto, im.ntotal = rows, int(idx.ntotal)
                changed = True
    if cached is None:
        vectors = vf.view(rows)
        if kind == "codes":
            idx = _index.build_binary_index(vectors, live)
            k = "binary-flat" if idx.exact else "binary-short"
            for old in (path, path.with_suffix(".json")):  # written by format 1; the codes file is the index now
                try:
                    old.unlink(missing_ok=True)
                except OSError:
                    pass
        else:
            idx, k = _index.build_float_index(vectors, live)
        im = _index.IndexMeta(_index.INDEX_FORMAT, k, ident, rows, gen, int(idx.ntotal), int(vectors.shape[1]),
                              built_ntotal=int(idx.ntotal))
        cached = (idx, im)
        changed = True
    if changed and kind == "feature":
        try:
            _index.save(cached[0], path, cached[1])
        except OSError:  # read-only collection: keep the index in memory only
            pass
    view.remember(("index", kind), cached)
    if kind == "feature":
        _index.set_nprobe(cached[0], nprobe or _index.DEFAULT_NPROBE)
    return cached[0]


def index_meta(view: CollectionView, kind: str = "feature") -> _index.IndexMeta | None:
    """What the search index of ``kind`` in use covers (its kind, rows, identity), ``None`` before the first search."""
    cached = view.memo(("index", kind))
    return None if cached is None else cached[1]


def _vector_map(view: CollectionView, meta, vf) -> np.ndarray:
    """A memory map of a vector file kept open across queries (re-mapping per query costs page faults).

    Keyed by the rows, ``delete_gen`` and the file's inode: a ``--rebuild``
    replaces the file, and rows only grow otherwise.
    """
    rows = int(meta["rows"])
    st = os.stat(vf.path)
    key = (rows, meta.get("delete_gen"), st.st_ino, st.st_dev)
    cached = view.memo(("mmap", vf.path.name))
    if cached is None or cached[0] != key:
        cached = view.remember(("mmap", vf.path.name), (key, vf.view(rows)))
    return cached[1]


def _rerank(mm: np.ndarray, norms: np.ndarray, cand: np.ndarray, q: np.ndarray, k: int):
    """Exact cosine of the candidate rows (inner products read in place from the memory map, no copy)."""
    import faiss

    cand = np.ascontiguousarray(np.unique(cand[cand >= 0]), dtype=np.int64)
    ip = np.empty(len(cand), dtype=np.float32)
    qq = np.ascontiguousarray(q[0], dtype=np.float32)
    if len(cand):
        with _index._one_omp_thread():
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(ip), faiss.swig_ptr(qq), faiss.swig_ptr(mm),
                                             faiss.swig_ptr(cand), mm.shape[1], 1, len(cand))
    n = norms[cand]
    sims = np.where(n > 0, ip / np.where(n > 0, n, 1), 0).astype(np.float32)
    order = np.lexsort((cand, -sims))[:k]
    return cand[order], sims[order]


def _query_vectors(view: CollectionView, snap: Snapshot, image, vector, embedder, binary: bool):
    """``(float query or None, code query or None, row of the query if it is in the collection)``."""
    from illust2vec.collection.infer import binarize

    meta = snap.meta
    dim = int(meta["feature_dim"])
    nbytes = int(meta["code_bytes"])
    if vector is not None:
        v = np.asarray(vector)
        v = v.reshape(1, -1)
        if v.dtype == np.uint8 and v.shape[1] == nbytes:
            if not binary:
                raise CollectionError("a uint8 vector is a binary code: search it with binary=True (--binary)")
            return None, v, None
        if v.shape[1] != dim:
            raise CollectionError(f"query vector has {v.shape[1]} values; this collection's features have {dim}")
        v = v.astype(np.float32)
        return v, (binarize(embedder or _LazyModel(view), v) if binary else None), None
    if isinstance(image, (str, os.PathLike)):
        row = view.row_of_path(image)
        if row is not None:
            vf = view.vector_file("codes" if binary else "feature", snap)
            return (None, vf.read([row]), row) if binary else (vf.read([row]), None, row)
    model = embedder if embedder is not None else view.embedder()
    if getattr(model, "identity", None) != meta["embedder_identity"]:
        raise ModelMismatchError(
            f"the query model {getattr(model, 'name', '?')!r} is not the model this collection was indexed with "
            f"({meta.get('embedder_name')!r}, identity {meta['embedder_identity'][:16]}); its vectors are not comparable"
        )
    feats = np.asarray(model.extract_feature(image), dtype=np.float32).reshape(1, -1)
    return feats, (binarize(model, feats) if binary else None), None


def query_vector(view: CollectionView, image=None, vector=None, *, embedder=None, binary: bool = False):
    """The query as :meth:`Collection.search` sees it: ``(feature or None, code or None, row or None)``.

    ``image`` inside the collection gives its stored vector (or code with
    ``binary``) and its row; any other image is embedded with ``embedder``
    (default: the collection's model, checked by identity).  Used by the
    domain packages that build on search (:mod:`illust2vec.semantic`).
    """
    return _query_vectors(view, view.require_items(), image, vector, embedder, binary)


def nearest_rows(view: CollectionView, queries: np.ndarray, k: int, *, binary: bool = False) -> list[np.ndarray]:
    """The ``k`` nearest live rows of each query vector (packed codes with ``binary``), in one index call.

    The rows :meth:`Collection.search` would return for ``vector=q`` (cosine,
    exact re-rank after an approximate index; Hamming with ``binary``),
    without tag filters or path lookups: for callers that search many
    vectors at once (:mod:`illust2vec.semantic`).
    """
    snap = view.require_items()
    live = snap.live
    kk = min(int(k), len(live))
    if kk <= 0 or len(queries) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(queries))]
    if binary:
        idx = get_index(view, "codes", snap)
        qc = np.ascontiguousarray(queries, dtype=np.uint8)
        if idx.exact:
            _, rows = idx.search(qc, kk)
            return [r[r >= 0].astype(np.int64) for r in rows]
        _, cand = idx.search(qc, min(len(live), max(BINARY_RERANK_MIN, BINARY_RERANK_FACTOR * kk)))
        mm = _vector_map(view, snap.meta, view.vector_file("codes", snap))
        return [_rerank_hamming(mm, cand[j], qc[j : j + 1], kk)[0] for j in range(len(qc))]
    q = _index.l2_normalize(np.asarray(queries, dtype=np.float32).reshape(len(queries), -1))
    idx = get_index(view, "feature", snap)
    if index_meta(view, "feature").kind == "flat-ip":
        _, rows = idx.search(q, kk)
        return [r[r >= 0].astype(np.int64) for r in rows]
    _, cand = idx.search(q, min(len(live), max(RERANK_MIN, RERANK_FACTOR * kk)))
    mm = _vector_map(view, snap.meta, view.vector_file("feature", snap))
    return [_rerank(mm, idx.norms, cand[j], q[j : j + 1], kk)[0] for j in range(len(q))]


class _LazyModel:
    """Stands in for the embedder where only its ``binarize`` rule is needed."""

    def __init__(self, view: CollectionView):
        self.view = view

    def binarize_features(self, feats):  # the name binarize() looks for
        from illust2vec.collection.infer import binarize

        return binarize(self.view.embedder(), feats)


def search(view: CollectionView, *, image=None, vector=None, k: int | None = 20, binary: bool = False, tags=None,
           not_tags=None, min_prob: float = 0.5, tagger=None, embedder=None, nprobe: int | None = None,
           include_query: bool = False) -> list[SearchHit]:
    """Search a collection (through its view).

    Args:
        image: query image (path, or anything :func:`illust2vec.io.images.load_image`
            takes).  A file that is in the collection uses its stored vector;
            others are embedded with ``embedder`` (default: the collection's
            model, loaded by name and checked by identity).
        vector: a query feature vector (or packed code with ``binary``) instead of an image.
        k: number of results (``None``: all that match).
        binary: rank by Hamming distance of binary codes instead of cosine similarity.
        tags: a tag expression every result must satisfy (``"blue hair, cat ears"``,
            ``"character:hatsune miku, -hat, user:favourite, smile>=0.8"``; see
            :mod:`illust2vec.collection.query`); user tags count.
        not_tags: tags no result may have.
        min_prob: probability threshold for the terms without one of their own (``>=``).
        tagger: whose tag probabilities (a name or identity; default: the most recently added tagger).
        embedder: the model for query images outside the collection.
        nprobe: IVF lists visited (large collections only).
        include_query: keep the query image among the results.  By default a query
            file that is in the collection is left out (its byte-identical copies
            under other paths stay, as hits of the same row).

    Returns:
        Hits, best first.  Without ``image``/``vector`` the hits are the
        files matching the tag query, highest probability first.
    """
    from illust2vec.collection.faces import annotate_hits

    if not 0.0 <= min_prob <= 1.0:
        raise CollectionError(f"min_prob must be between 0 and 1, not {min_prob}")
    if k is not None and k <= 0:
        raise CollectionError(f"k must be a positive number of results, not {k}")
    snap = view.require_items()
    live = snap.live
    match = None
    if tags or not_tags:
        match = view.match_tags(tags, not_tags, min_prob=min_prob, tagger=tagger, snap=snap)
    allowed = None if match is None else match.rows
    t = view.tagger(tagger, snap=snap) if match is not None else None
    probs = view.prob_matrix(t, snap) if t is not None else None
    ti = view.tag_index(t, snap=snap) if t is not None else None
    columns = match.columns() if match is not None else []

    def column(j: int, rows: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), np.nan)
        ok = rows < (len(probs) if probs is not None else 0)
        if ok.any():
            out[ok] = probs[rows[ok], j]
        return out

    decisions = [([ti.names[j] for j in tm.columns] if ti is not None and tm.columns else [tm.term.name],
                  set(tm.added.tolist()), set(tm.removed.tolist())) for tm in (match.include + match.exclude)] \
        if match is not None else []

    def tag_probs(rows: np.ndarray) -> list[dict[str, float]]:
        """The queried tags' probabilities at each of ``rows``, with the user's decisions (added 1.0, removed 0.0)."""
        if match is None:
            return [{} for _ in rows]
        rows = np.asarray(rows, dtype=np.int64)
        cols = {ti.names[j]: column(j, rows) for j in columns}
        out = []
        for k, row in enumerate(rows.tolist()):
            d = {n: float(v[k]) for n, v in cols.items()}
            for names, added, removed in decisions:
                if row in added:
                    d.update({n: 1.0 for n in names})
                elif row in removed:
                    d.update({n: 0.0 for n in names})
            out.append(d)
        return out

    if image is None and vector is None:
        if allowed is None:
            raise CollectionError("give a query image, a vector or tags (--tags) to search for")
        # score: the weakest queried tag (best of a term's columns; 1.0 where the user added it)
        score = match.scores(allowed, column)
        order = np.lexsort((allowed, -score)) if match.include else np.arange(len(allowed))
        order = order if k is None else order[:k]
        rows = allowed[order]
        paths = view.rows_to_paths(rows)
        hits = [SearchHit(paths[r][0], int(r), None if np.isnan(s) else float(s), None, paths[r], tp)
                for r, s, tp in zip(rows, score[order], tag_probs(rows)) if paths[r]]
        return annotate_hits(view, hits)

    qf, qc, qrow = _query_vectors(view, snap, image, vector, embedder, binary)
    pool = live if allowed is None else allowed
    drop = None if include_query or qrow is None else str(Path(image).resolve())
    kk = len(pool) if k is None else min(k + (drop is not None), len(pool))
    if kk == 0:
        return []
    hits = _vector_hits(view, snap, allowed, qf, qc, kk, binary, nprobe, tag_probs)
    if drop is not None:
        hits = _without_query(hits, qrow, drop)
    return annotate_hits(view, hits if k is None else hits[:k])


def _without_query(hits: list[SearchHit], qrow: int, query: str) -> list[SearchHit]:
    """The hits without the query file; other paths of its row (byte-identical copies) stay."""
    out = []
    for h in hits:
        if h.row == qrow:
            h.paths = [p for p in h.paths if p != query]
            if not h.paths:
                continue
            h.path = h.paths[0]
        out.append(h)
    return out


def _vector_hits(view: CollectionView, snap: Snapshot, allowed, qf, qc, kk: int, binary: bool, nprobe,
                 tag_probs) -> list[SearchHit]:
    """The ``kk`` nearest rows to the query vectors (cosine, or Hamming with ``binary``), as hits."""
    live = snap.live
    pool = live if allowed is None else allowed
    if binary:
        bits = qc.shape[1] * 8
        if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX_BINARY:
            rows, dist = _brute_hamming(view.vector_file("codes", snap), allowed, qc, kk)
        else:
            idx = get_index(view, "codes", snap)
            if idx.exact:
                rows, dist = _filtered_search(idx, qc, kk, allowed, len(live))
            else:  # short codes: candidates, then the exact distance on the full codes
                want = min(len(pool), max(BINARY_RERANK_MIN, BINARY_RERANK_FACTOR * kk))
                cand, _ = _filtered_search(idx, qc, want, allowed, len(live))
                rows, dist = _rerank_hamming(_vector_map(view, snap.meta, view.vector_file("codes", snap)), cand,
                                             qc, kk)
        paths = view.rows_to_paths(rows)
        return [SearchHit(paths[r][0], int(r), 1.0 - float(d) / bits, int(d), paths[r], tp)
                for r, d, tp in zip(rows, dist, tag_probs(rows)) if paths[r]]
    q = _index.l2_normalize(qf)
    features = view.vector_file("feature", snap)
    if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX:
        rows, sims = _brute_cosine(features, allowed, q, kk)
    else:
        idx = get_index(view, "feature", snap, nprobe=nprobe)
        if index_meta(view, "feature").kind == "flat-ip":
            rows, sims = _filtered_search(idx, q, kk, allowed, len(live))
        else:  # approximate index: candidates, then exact cosine on the stored vectors
            cand, _ = _filtered_search(idx, q, min(len(pool), max(RERANK_MIN, RERANK_FACTOR * kk)), allowed, len(live))
            rows, sims = _rerank(_vector_map(view, snap.meta, features), idx.norms, cand, q, kk)
    paths = view.rows_to_paths(rows)
    return [SearchHit(paths[r][0], int(r), float(s), None, paths[r], tp)
            for r, s, tp in zip(rows, sims, tag_probs(rows)) if paths[r]]


def _brute_cosine(vf, rows, q, k):
    sims = np.empty(len(rows), dtype=np.float32)
    for i in range(0, len(rows), 16_384):
        sims[i : i + 16_384] = _index.l2_normalize(vf.read(rows[i : i + 16_384])) @ q[0]
    order = np.lexsort((rows, -sims))[:k]
    return rows[order], sims[order]


def _hamming(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Hamming distance of each code (rows of ``codes``) to the code ``q``."""
    x = np.bitwise_xor(codes, q)
    return np.bitwise_count(x.view(np.uint64) if x.shape[1] % 8 == 0 else x).sum(axis=1, dtype=np.int64)


def _brute_hamming(vf, rows, qc, k):
    dist = np.empty(len(rows), dtype=np.int64)
    for i in range(0, len(rows), 65_536):
        dist[i : i + 65_536] = _hamming(vf.read(rows[i : i + 65_536]), qc[0])
    order = np.lexsort((rows, dist))[:k]
    return rows[order], dist[order]


def _rerank_hamming(mm: np.ndarray, cand: np.ndarray, qc: np.ndarray, k: int):
    """Exact Hamming distances of the candidate rows (read from the memory map of the codes), best ``k``."""
    cand = np.unique(cand[cand >= 0])
    dist = _hamming(np.asarray(mm[cand]), qc[0]) if len(cand) else np.zeros(0, np.int64)
    order = np.lexsort((cand, dist))[:k]
    return cand[order], dist[order]


def _filtered_search(idx, q, k, allowed, total):
    """Top ``k`` ids of ``idx`` restricted to ``allowed`` (``None``: all), over-fetching as needed."""
    fetch = k if allowed is None else min(total, max(4 * k, 64))
    before = -1
    while True:
        D, I = idx.search(q, fetch)
        D, I = D[0], I[0]
        valid = I >= 0
        keep = valid & np.isin(I, allowed) if allowed is not None else valid
        # stop when enough, when everything was seen, or when the index has no more candidates (IVF nprobe)
        if keep.sum() >= k or fetch >= total or valid.sum() == before:
            sel = np.nonzero(keep)[0][:k]
            return I[sel].astype(np.int64), D[sel]
        before = int(valid.sum())
        fetch = min(total, fetch * 4)
