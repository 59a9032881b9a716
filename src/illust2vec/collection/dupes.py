"""Near-duplicates from binary codes: every close pair, exactly, and the groups they make.

:func:`near_duplicate_pairs` finds every pair of codes that differ in at most
``max_distance`` bits, exactly the pairs a brute-force scan finds, by
multi-index hashing while the distance is small against the code length and
by FAISS's exhaustive scan where that is cheaper (:mod:`.mih`).  Groups are
the connected components of that "close to" graph, so A~B and B~C put A, B
and C in one group.  Files with identical bytes share one content and always
form a group.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from illust2vec.collection import mih as _mih
from illust2vec.collection.errors import CollectionError

#: Methods of :func:`near_duplicate_pairs`.
METHODS = _mih.METHODS


def near_duplicate_pairs(codes: np.ndarray, max_distance: int, *, new_from: int = 0, method: str = "auto",
                         threads: int | None = None, progress=None) -> np.ndarray:
    """Every pair of ``codes`` within ``max_distance`` bits, exactly.

    Args:
        codes: ``(N, nbytes)`` uint8 packed binary codes (an array or a memory map).
        max_distance: largest Hamming distance of a pair, 0 or more (any size:
            from the code length on, every pair is returned).
        new_from: only the pairs with at least one code from ``codes[new_from:]``
            (the codes added since the pairs of ``codes[:new_from]`` were found).
        method: ``"auto"`` (the cheaper of the two by an estimate from a sample),
            ``"mih"`` (multi-index hashing; needs ``max_distance < nbytes``) or
            ``"scan"`` (FAISS's exhaustive range search, block by block).
        threads: threads to use (default: the CPUs this process may use, at most 8).
        progress: ``True`` for a bar on stderr, or a bar / callable (see :mod:`illust2vec.runtime.progress`).

    Returns:
        An ``(M, 3)`` int64 array of rows ``(i, j, distance)`` with ``i < j``,
        sorted by ``i`` then ``j``: the same as comparing every pair.

    >>> c = np.array([[0b1111], [0b1110], [0b0000], [0b1111]], np.uint8)
    >>> near_duplicate_pairs(c, 1).tolist()
    [[0, 1, 1], [0, 3, 0], [1, 3, 1]]
    """
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2:
        raise ValueError(f"codes must be an (N, nbytes) uint8 array, not {getattr(codes, 'dtype', type(codes))} "
                         f"of shape {getattr(codes, 'shape', '?')}")
    r = operator.index(max_distance)
    if r < 0:
        raise ValueError(f"max_distance must be 0 or more bits, not {r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "mih" and r >= codes.shape[1]:
        raise ValueError(f"method 'mih' needs max_distance below {codes.shape[1]} for {codes.shape[1]}-byte codes "
                         "(one substring per byte at most); use 'scan' or 'auto'")
    new_from = min(max(0, operator.index(new_from)), len(codes))
    return _mih.pairs_among(codes, None, r, new_from=new_from, method=method, threads=threads, progress=progress)


@dataclass
class DupeGroup:
    """One group of near-duplicate files.

    ``paths`` are all files of the group, sorted; ``rows`` their vector rows;
    ``pairs`` lists every close pair found as ``(row_a, row_b, distance)``
    (the edges that joined the group); ``max_distance`` is the largest of them.
    In a face collection ``items`` lists each row of the group as
    ``{"row", "path", "face_index", "box"}`` (``face_index``/``box`` are
    ``None`` for a whole picture); it is empty otherwise.
    """

    paths: list[str]
    rows: list[int]
    max_distance: int
    pairs: list[tuple[int, int, int]] = field(default_factory=list)  # (row_a, row_b, distance)
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def connected_components(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, root)``: the distinct rows of ``pairs`` (sorted) and the smallest row of each one's component.

    Vectorised hooking and pointer jumping: every round hooks the root of
    each edge's larger end under the smaller root, then flattens the trees.
    """
    nodes = np.unique(pairs[:, :2])
    u, v = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    parent = np.arange(len(nodes))
    while True:
        pu, pv = parent[u], parent[v]
        apart = pu != pv
        if not apart.any():
            break
        np.minimum.at(parent, np.maximum(pu, pv)[apart], np.minimum(pu, pv)[apart])
        while True:
            up = parent[parent]
            if (up == parent).all():
                break
            parent = up
    return nodes, nodes[parent]


def find_dupes(view, max_distance: int = 8, *, progress=False, method: str = "auto") -> list[DupeGroup]:
    """Groups of near-duplicate files of a collection (``view``: its
    :class:`~illust2vec.collection.view.CollectionView`), largest groups first.

    The close pairs come from the collection's pair cache
    (:func:`illust2vec.collection.pair_cache.close_pairs`): found exactly once,
    then only pictures added since are compared.
    """
    from illust2vec.collection.pair_cache import close_pairs

    if max_distance < 0:
        raise CollectionError(f"max_distance must be 0 or more bits, not {max_distance}")
    snap = view.snapshot()
    meta, live = snap.meta, snap.live
    if "feature_dim" not in meta or len(live) == 0:
        return []
    pairs = close_pairs(view, snap, int(max_distance), method=method, progress=progress)
    nodes, root = connected_components(pairs)
    # single contents with several paths (identical files) are groups too
    multi = view.copied_rows()  # in a face collection every face of a copied picture
    alone = np.setdiff1d(np.asarray(multi, np.int64), nodes)
    nodes, root = np.concatenate([nodes, alone]), np.concatenate([root, alone])
    order = np.lexsort((nodes, root))
    nodes, root = nodes[order], root[order]
    bounds = np.flatnonzero(np.concatenate([[True], root[1:] != root[:-1], [True]]))
    edge_root = root[np.searchsorted(nodes, pairs[:, 0], sorter=np.argsort(nodes))] if len(pairs) else root[:0]
    eorder = np.argsort(edge_root, kind="stable")
    epairs, eroot = pairs[eorder], edge_root[eorder]
    paths = view.rows_to_paths(nodes.tolist())
    groups = []
    for k in range(len(bounds) - 1):
        rs = sorted(int(r) for r in nodes[bounds[k] : bounds[k + 1]])
        ps = sorted(p for r in rs for p in paths.get(r, []))
        if len(ps) < 2:
            continue
        lo, hi = np.searchsorted(eroot, rs[0], side="left"), np.searchsorted(eroot, rs[0], side="right")
        es = [tuple(map(int, e)) for e in epairs[lo:hi]]
        groups.append(DupeGroup(ps, rs, max((d for *_, d in es), default=0), es))
    groups.sort(key=lambda g: (-len(g.paths), g.paths[0]))
    if meta.get("faces"):
        info = view.face_fields(nodes.tolist())
        for g in groups:
            for r in g.rows:
                fi, box, _ = info.get(r, (None, None, None))
                g.items += [{"row": r, "path": p, "face_index": fi, "box": box} for p in paths.get(r, [])]
    return groups


#: Default near-duplicate distance as a fraction of the code length, per kind of code.
#:
#: * ``simhash`` (random hyperplanes: the generic embedder, the WD taggers'
#:   embeddings): the Hamming fraction is the angle over pi.  Measured with
#:   generic-effnet-lite0 on anime36 and five edited copies of each
#:   (``benchmarks/bench_dupes.py --parts distances``): largest distance of a
#:   copy to its original JPEG q60 7.4%, half size 9.4%, horizontal flip
#:   15.5%, 10% crop 17.3%, recolour 17.9%; two different pictures never
#:   closer than 23.3% (1st percentile 28%).  20% (819 of 4096 bits) finds all
#:   of those copies.  Such a radius is beyond what multi-index hashing can
#:   search faster than comparing all pairs (see :mod:`.mih`), so these
#:   collections take FAISS's exhaustive scan the first time (about 90 s for
#:   100k pictures on 2 cores, hours for 1M) and then only new pictures.
#: * ``positive`` (i2v's ``sigmoid(encode1) > 0.5``): 2% (82 of 4096 bits),
#:   not measured: the published model's weights are not available here, and
#:   the fixture model's random weights put copies at 5.6-11% (flips 23%) and
#:   different pictures from 10.6%, which says nothing about trained codes.
NEAR_FRACTION = {"positive": 0.02, "simhash": 0.20}


def code_kind(meta: dict[str, str]) -> str:
    """How the collection's codes were made: ``positive`` (i2v) or ``simhash``.

    Recorded at indexing time (``meta.code_kind``); collections made before
    that are looked up by their embedder's zoo record.
    """
    kind = meta.get("code_kind")
    if not kind:
        from illust2vec.models.catalog import MODELS

        spec = MODELS.get(meta.get("embedder_name") or "")
        kind = spec.binarize if spec is not None else "positive"
    return kind


def default_max_distance(view) -> int:
    """:data:`NEAR_FRACTION` of the collection's code length for its kind of code (``view``: anything with ``meta``)."""
    meta = view.meta
    bits = int(meta.get("code_bytes", 512)) * 8
    return max(1, round(bits * NEAR_FRACTION.get(code_kind(meta), NEAR_FRACTION["positive"])))
