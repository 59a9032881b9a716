"""Semantic morphing: the items of a collection that lead, step by step, from one illustration to another.

The illustration2vec paper shows intermediate illustrations that gradually
connect two queries; its algorithm is not public.  This is ours:

* **Objective.**  A path ``A -> x1 -> ... -> xK -> B`` over ``K`` distinct
  collection items, none of them ``A`` or ``B``, that minimises the sum of
  the *squared* step lengths.  A step's length is the Euclidean distance
  between L2-normalised features (``sqrt(2 (1 - cos))``, the chord on the unit
  sphere, a true metric unlike ``1 - cos``) or, for binary codes, the fraction
  of bits that differ (Hamming distance / bits).  For a given total length
  the sum of squares is smallest when all steps are equal, so the path
  prefers even steps, and a detour costs more than it gains.  On the float
  side the cost of a step is ``2 - 2 cos``: every layer of the dynamic
  programme is one matrix product.
* **Exact solver** (collections up to :data:`EXACT_MAX` items, or
  ``method="exact"``): dynamic programming over ``K`` layers of all items,
  ``O(K n^2)``.  The programme alone may visit an item twice (``x -> y -> x``);
  when it does, a best-first branch and bound forbids the repeated item in
  all but one of its layers (each branch is a relaxation, so the first
  repeat-free path taken from the queue is optimal).  The search gives up
  after :data:`BRANCH_NODES` branches and finishes greedily; the result says
  whether optimality was proven (:attr:`MorphResult.optimal`).
* **Large collections** (``method="graph"``): the exact solver runs on a
  candidate set grown like a lazily built k-NN graph: the neighbours (from
  the collection's search index) of ``A``, ``B`` and ``K`` evenly spaced
  waypoints between them (spherical interpolation of the features; for
  codes, the differing bits taken over in a fixed order), then, for up to
  :data:`ROUNDS` rounds, the neighbours of the current path's items and of the
  midpoints of its steps, until a round adds nothing new.  Its cost against
  the exact optimum is measured in ``benchmarks/bench_semantic.py``.
"""
from __future__ import annotations

import heapq
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.collection.errors import CollectionError

#: Collections up to this many items are solved exactly over all items (``method="auto"``).
EXACT_MAX = 3000
#: Branches the exact solver may open to remove repeated items before it finishes greedily.
BRANCH_NODES = 64
#: Neighbours fetched per waypoint / path item when growing the candidate set (``method="graph"``).
NEIGHBORS = 48
#: Rounds of growing the candidate set around the current path (``method="graph"``).
ROUNDS = 2
METHODS = ("auto", "exact", "graph")


@dataclass
class MorphStep:
    """One item of a morphing path.

    ``distance`` is the length of the step that reaches this item from the
    previous one (0 for ``A``): the Euclidean distance of the normalised
    features, or the fraction of differing bits with ``binary``.
    ``similarity`` is the cosine similarity to the previous item (``1 -
    distance`` for codes).  ``row`` is ``None`` for an endpoint that is not in
    the collection.
    """

    path: str | None
    row: int | None
    distance: float
    similarity: float
    paths: list[str] = field(default_factory=list)


@dataclass
class MorphResult:
    """A morphing path ``A, x1 .. xK, B`` (:attr:`steps`) and how it was found.

    ``cost`` is the objective (sum of squared step lengths); ``optimal`` says
    whether it is proven minimal over the ``candidates`` items considered
    (all items with ``method == "exact"``).
    """

    steps: list[MorphStep]
    cost: float
    method: str
    optimal: bool
    candidates: int
    binary: bool
    bound: float = 0.0  # lower bound of the optimum over the candidates (the programme without distinctness)

    @property
    def intermediates(self) -> list[MorphStep]:
        """The ``K`` collection items between ``A`` and ``B``."""
        return self.steps[1:-1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["intermediates"] = [s.row for s in self.intermediates]
        return d


# --------------------------------------------------------------------------- geometry
def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def _signs(codes: np.ndarray) -> np.ndarray:
    """Packed codes as +-1 float32 rows, so that Hamming distances are one matrix product."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1).astype(np.float32) * 2 - 1


class _Space:
    """Squared step lengths between points: unit features (``2 - 2 cos``) or +-1 code signs ((h / bits)^2)."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return _signs(x) if self.binary else _normalize(x)

    def sq(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        g = p @ q.T
        if self.binary:
            bits = p.shape[1]
            return np.square((bits - g) / (2.0 * bits)).astype(np.float32)
        return np.maximum(2.0 - 2.0 * g, 0.0).astype(np.float32)

    def similarity(self, p: np.ndarray, q: np.ndarray) -> float:
        g = float(p @ q)
        return 1.0 - (p.shape[0] - g) / (2.0 * p.shape[0]) if self.binary else g


# --------------------------------------------------------------------------- exact solver
def _dp(ca: np.ndarray, cmat: np.ndarray, cb: np.ndarray, steps: int, banned: np.ndarray | None):
    """Cheapest ``steps``-item path (items may repeat, never twice in a row); ``(items, cost)`` or ``(None, inf)``."""
    n = len(ca)
    dp = ca.copy()
    if banned is not None:
        dp[banned[0]] = np.inf
    back = np.zeros((steps, n), dtype=np.int32)
    cols = np.arange(n)
    for k in range(1, steps):
        m = dp[:, None] + cmat
        b = np.argmin(m, axis=0)
        dp = m[b, cols]
        back[k] = b
        if banned is not None:
            dp[banned[k]] = np.inf
    total = dp + cb
    j = int(np.argmin(total))
    cost = float(total[j])
    if not np.isfinite(cost):
        return None, np.inf
    items = [j]
    for k in range(steps - 1, 0, -1):
        j = int(back[k][j])
        items.append(j)
    return items[::-1], cost


def _first_repeat(items: list[int]) -> tuple[int, list[int]] | None:
    where: dict[int, list[int]] = {}
    for layer, it in enumerate(items):
        where.setdefault(it, []).append(layer)
    for it, layers in where.items():
        if len(layers) > 1:
            return it, layers
    return None


def best_path(ca: np.ndarray, cmat: np.ndarray, cb: np.ndarray, steps: int, *,
              max_nodes: int = BRANCH_NODES) -> tuple[list[int], float, bool, float]:
    """Minimum-cost path over ``steps`` distinct items (indices into the cost arrays).

    Args:
        ca: (n,) cost of the first step, from ``A`` to each item.
        cmat: (n, n) cost of a step between two items (the diagonal is ignored).
        cb: (n,) cost of the last step, from each item to ``B``.
        steps: number of distinct intermediate items.
        max_nodes: branches opened before finishing greedily.

    Returns:
        ``(items, cost, optimal, bound)``; ``optimal`` is false when the
        branch budget ran out before a repeat-free path was proven best;
        ``bound`` is the cost of the programme without the distinctness
        constraint, a lower bound of the optimum.
    """
    n = len(ca)
    if steps < 1:
        raise CollectionError(f"steps must be at least 1, not {steps}")
    if n < steps:
        raise CollectionError(f"cannot pick {steps} distinct items out of {n}")
    ca = np.asarray(ca, dtype=np.float32)
    cb = np.asarray(cb, dtype=np.float32)
    cmat = np.array(cmat, dtype=np.float32)
    np.fill_diagonal(cmat, np.inf)
    items, cost = _dp(ca, cmat, cb, steps, None)
    bound = cost
    heap: list[tuple[float, int, list[int], np.ndarray | None]] = [(cost, 0, items, None)]
    tick = 1
    opened = 0

    def children(items: list[int], banned: np.ndarray | None):
        nonlocal tick
        item, layers = _first_repeat(items)
        out = []
        for keep in layers:
            nb = np.zeros((steps, n), dtype=bool) if banned is None else banned.copy()
            for layer in layers:
                if layer != keep:
                    nb[layer, item] = True
            it, c = _dp(ca, cmat, cb, steps, nb)
            if it is not None:
                out.append((c, tick, it, nb))
                tick += 1
        return out

    while heap:
        cost, _, items, banned = heapq.heappop(heap)
        if _first_repeat(items) is None:
            return items, cost, True, bound
        if opened >= max_nodes:
            # out of budget: dive greedily from the most promising open branch
            while _first_repeat(items) is not None:
                kids = children(items, banned)
                if not kids:
                    break
                cost, _, items, banned = min(kids)
            if _first_repeat(items) is None:
                return items, cost, False, bound
            continue
        opened += 1
        for kid in children(items, banned):
            heapq.heappush(heap, kid)
    raise CollectionError(f"no path of {steps} distinct items found")  # pragma: no cover - n >= steps guarantees one


# --------------------------------------------------------------------------- waypoints
def _waypoints(a: np.ndarray, b: np.ndarray, ts: Sequence[float], binary: bool) -> np.ndarray:
    """Points at fractions ``ts`` of the way from ``a`` to ``b``: spherical interpolation, or codes taking over b's bits."""
    if binary:
        ua, ub = np.unpackbits(a), np.unpackbits(b)
        diff = np.nonzero(ua != ub)[0]
        order = diff[np.random.default_rng(0).permutation(len(diff))]
        out = []
        for t in ts:
            u = ua.copy()
            take = order[: int(round(t * len(order)))]
            u[take] = ub[take]
            out.append(np.packbits(u))
        return np.asarray(out, dtype=np.uint8)
    a, b = _normalize(a), _normalize(b)
    omega = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    if omega < 1e-6:
        return np.repeat(a[None], len(ts), axis=0)
    s = np.sin(omega)
    return np.asarray([(np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / s for t in ts], dtype=np.float32)


def _midpoints(p: np.ndarray, binary: bool) -> np.ndarray:
    return np.asarray([_waypoints(p[i], p[i + 1], [0.5], binary)[0] for i in range(len(p) - 1)])


# --------------------------------------------------------------------------- collection level
def _endpoint(col, x, embedder, binary: bool) -> tuple[np.ndarray, int | None, str | None]:
    if isinstance(x, np.ndarray):
        f, c, row = col.query_vector(vector=x, embedder=embedder, binary=binary)
        return (c[0] if binary else f[0]), row, None
    if isinstance(x, (str, os.PathLike)) and not Path(x).exists():
        raise CollectionError(f"{x}: morph endpoint not found")
    f, c, row = col.query_vector(image=x, embedder=embedder, binary=binary)
    name = str(Path(x).resolve()) if isinstance(x, (str, os.PathLike)) else None
    return (c[0] if binary else f[0]), row, name


def _neighbours(col, queries: np.ndarray, k: int, binary: bool) -> set[int]:
    rows: set[int] = set()
    for r in col.nearest_rows(np.asarray(queries), k, binary=binary):
        rows.update(int(x) for x in r)
    return rows


def morph(col, a, b, *, steps: int, binary: bool = False, method: str = "auto", embedder=None,
          neighbors: int = NEIGHBORS, rounds: int = ROUNDS, max_nodes: int = BRANCH_NODES) -> MorphResult:
    """``steps`` distinct items of ``col`` that connect ``a`` to ``b`` as evenly as possible.

    Args:
        col: an open :class:`illust2vec.collection.Collection`.
        a, b: the endpoints: image files (inside the collection, their stored
            vectors are used; outside, they are embedded with ``embedder`` or
            the collection's model), or feature vectors (packed codes with
            ``binary``).
        steps: number of intermediate items ``K`` (>= 1).
        binary: measure steps by Hamming distance of the binary codes.
        method: ``"exact"`` (all items), ``"graph"`` (candidates grown
            around the way, for large collections) or ``"auto"`` (exact up to
            :data:`EXACT_MAX` items).
        embedder: model for endpoints outside the collection.
        neighbors: neighbours fetched per waypoint and path item (graph).
        rounds: rounds of growing the candidates around the path (graph).
        max_nodes: branch-and-bound budget of the exact solver.

    Returns:
        A :class:`MorphResult`; see the module docstring for the objective.

    Raises:
        CollectionError: bad arguments, or fewer than ``steps`` items besides ``a`` and ``b``.
    """
    if method not in METHODS:
        raise CollectionError(f"unknown morph method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise CollectionError(f"steps must be a positive number of intermediate items, not {steps!r}")
    if neighbors < 1 or rounds < 0:
        raise CollectionError(f"neighbors must be >= 1 and rounds >= 0 (got {neighbors}, {rounds})")
    va, row_a, name_a = _endpoint(col, a, embedder, binary)
    vb, row_b, name_b = _endpoint(col, b, embedder, binary)
    exclude = {r for r in (row_a, row_b) if r is not None}
    live = col.live_rows()
    n_free = len(live) - int(np.isin(np.fromiter(exclude, dtype=np.int64), live).sum())
    if n_free < steps:
        raise CollectionError(f"{col.path}: has {n_free} items besides the endpoints; cannot morph through {steps}")
    space = _Space(binary)
    kind = "codes" if binary else "feature"
    pa, pb = space.prepare(va[None])[0], space.prepare(vb[None])[0]
    if method == "auto":
        method = "exact" if len(live) <= EXACT_MAX else "graph"

    def solve(rows: np.ndarray, nodes: int = max_nodes):
        x = space.prepare(col.vectors(kind, rows))
        items, cost, optimal, bound = best_path(space.sq(pa[None], x)[0], space.sq(x, x),
                                                space.sq(pb[None], x)[0], steps, max_nodes=nodes)
        return [int(rows[i]) for i in items], cost, optimal, bound

    if method == "exact":
        rows = live[~np.isin(live, list(exclude))]
        path_rows, cost, optimal, bound = solve(rows)
    else:
        fetch = neighbors + len(exclude)
        ts = [(i + 1) / (steps + 1) for i in range(steps)]
        cand = _neighbours(col, np.concatenate([va[None], _waypoints(va, vb, ts, binary), vb[None]]), fetch, binary)
        cand -= exclude
        while len(cand) < steps:  # tiny neighbourhoods: widen
            fetch *= 4
            cand |= _neighbours(col, np.stack([va, vb]), fetch, binary)
            cand -= exclude
        rows = np.asarray(sorted(cand), dtype=np.int64)
        # while growing, a quick solve (no branch and bound) only says where to look next
        path_rows, cost, optimal, bound = solve(rows, 0)
        expanded: set[int] = set()
        for _ in range(rounds):
            raw = col.vectors(kind, path_rows)
            todo = [i for i, r in enumerate(path_rows) if r not in expanded]
            expanded.update(path_rows)
            queries = np.concatenate([raw[todo], _midpoints(np.concatenate([va[None], raw, vb[None]]), binary)])
            grow = _neighbours(col, queries, neighbors, binary) - exclude - cand
            if not grow:
                break
            cand |= grow
            rows = np.asarray(sorted(cand), dtype=np.int64)
            path_rows, cost, optimal, bound = solve(rows, 0)
        if not optimal:
            path_rows, cost, optimal, bound = solve(rows)
    xs = space.prepare(col.vectors(kind, path_rows))
    paths = col.rows_to_paths(path_rows + [r for r in (row_a, row_b) if r is not None])
    points = np.concatenate([pa[None], xs, pb[None]])
    out: list[MorphStep] = []
    for i, r in enumerate([row_a, *path_rows, row_b]):
        if i == 0:
            dist, sim = 0.0, 1.0
        else:
            dist = float(np.sqrt(space.sq(points[i - 1][None], points[i][None])[0, 0]))
            sim = space.similarity(points[i - 1], points[i])
        ps = paths.get(r, []) if r is not None else []
        name = name_a if i == 0 else name_b if i == len(path_rows) + 1 else None
        out.append(MorphStep(path=name or (ps[0] if ps else None), row=r, distance=dist, similarity=sim, paths=ps))
    return MorphResult(steps=out, cost=float(cost), method=method, optimal=bool(optimal),
                       candidates=len(rows), binary=binary, bound=float(bound))


def morph_sheet(result: MorphResult, out: str | os.PathLike, *, thumb: int = 160, title: str | None = None) -> Path:
    """A one-row strip PNG of the path ``A, x1 .. xK, B`` with each step's length under its picture."""
    from illust2vec.io.drawing import contact_sheet
    from illust2vec.io.images import save_image

    n = len(result.steps)
    items = []
    for i, s in enumerate(result.steps):
        label = "A" if i == 0 else "B" if i == n - 1 else str(i)
        cap = f"{label}: {Path(s.path).name if s.path else '(vector)'}" + (f" d={s.distance:.3f}" if i else "")
        items.append((cap, s.path))
    return save_image(contact_sheet(items, cell=thumb, columns=n, title=title), out)
