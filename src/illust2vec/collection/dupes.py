"""Near-duplicate groups from binary codes.

Every pair of indexed contents whose codes differ in at most
``max_distance`` bits is found exactly with FAISS ``range_search`` on an
``IndexBinaryFlat`` (no N x N matrix is held); groups are the connected
components of that "close to" graph (union-find), so A~B and B~C put A, B
and C in one group.  Files with identical bytes share one content and always
form a group.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from illust2vec.collection.errors import CollectionError


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


class UnionFind:
    """Disjoint sets over arbitrary hashable items (path halving, union by size)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        if x not in parent:
            parent[x] = x
            self.size[x] = 1
            return x
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]


def close_pairs(index, codes: np.ndarray, rows: np.ndarray, max_distance: int, *, chunk: int = 4096,
                progress: Callable[[int], None] | None = None) -> list[tuple[int, int, int]]:
    """All ``(row_a, row_b, distance)`` with ``row_a < row_b`` and Hamming distance ``<= max_distance``.

    ``index`` is a binary FAISS index whose ids are rows; ``codes`` are the
    codes of ``rows`` (the queries).
    """
    out: list[tuple[int, int, int]] = []
    for i in range(0, len(rows), chunk):
        q = np.ascontiguousarray(codes[i : i + chunk], dtype=np.uint8)
        # FAISS binary range search keeps distances strictly below the radius
        lims, D, I = index.range_search(q, int(max_distance) + 1)
        for j in range(len(q)):
            a = int(rows[i + j])
            for b, d in zip(I[lims[j] : lims[j + 1]], D[lims[j] : lims[j + 1]]):
                if a < b and d <= max_distance:
                    out.append((a, int(b), int(d)))
        if progress:
            progress(len(q))
    return out


def find_dupes(view, max_distance: int = 8, *, progress: bool = False) -> list[DupeGroup]:
    """Groups of near-duplicate files of a collection (``view``: its
    :class:`~illust2vec.collection.view.CollectionView`), largest groups first."""
    from illust2vec.runtime.progress import progress_bar

    from illust2vec.collection.search import get_index

    if max_distance < 0:
        raise CollectionError(f"max_distance must be 0 or more bits, not {max_distance}")
    snap = view.snapshot()
    meta, live = snap.meta, snap.live
    if "feature_dim" not in meta or len(live) == 0:
        return []
    bits = int(meta["code_bytes"]) * 8
    if max_distance >= bits:
        raise CollectionError(f"max_distance {max_distance} is not below the code length ({bits} bits); every image would match")
    index = get_index(view, "codes", snap)
    codes = view.vector_file("codes", snap).read(live)
    with progress_bar(len(live), desc="dupes", enabled=progress) as bar:
        pairs = close_pairs(index, codes, live, max_distance, progress=bar.update)
    uf = UnionFind()
    for a, b, _ in pairs:
        uf.union(a, b)
    members: dict[int, list[int]] = {}
    for r in {x for a, b, _ in pairs for x in (a, b)}:
        members.setdefault(uf.find(r), []).append(r)
    root_of = {r: root for root, rs in members.items() for r in rs}
    edges: dict[int, list[tuple[int, int, int]]] = {}
    for a, b, d in pairs:
        edges.setdefault(root_of[a], []).append((a, b, d))
    # single contents with several paths (identical files) are groups too
    multi = view.copied_rows()  # in a face collection every face of a copied picture
    for r in multi:
        if r not in root_of:
            members[r] = [r]
            root_of[r] = r
    rows_all = sorted(root_of)
    paths = view.rows_to_paths(rows_all)
    groups = []
    for root, rs in members.items():
        rs = sorted(rs)
        ps = sorted(p for r in rs for p in paths.get(r, []))
        if len(ps) < 2:
            continue
        es = sorted(edges.get(root, []))
        groups.append(DupeGroup(ps, rs, max((d for *_, d in es), default=0), es))
    groups.sort(key=lambda g: (-len(g.paths), g.paths[0]))
    if meta.get("faces"):
        info = view.face_fields(rows_all)
        for g in groups:
            for r in g.rows:
                fi, box, _ = info.get(r, (None, None, None))
                g.items += [{"row": r, "path": p, "face_index": fi, "box": box} for p in paths.get(r, [])]
    return groups


#: Default near-duplicate distance as a fraction of the code length, per kind of code.
#: i2v's sign codes: 2% (82 of 4096 bits).  SimHash codes (random hyperplanes,
#: the zoo's generic embedder): the Hamming fraction is the angle over pi, so
#: 12.5% is an angle of 22.5 degrees (cosine 0.92).  Measured on anime36 with
#: EfficientNet-Lite0: JPEG q60 re-encodes within 6.7% of their original,
#: half-size JPEG copies within 11.1%, different pictures no closer than 25%.
NEAR_FRACTION = {"positive": 0.02, "simhash": 0.125}


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
