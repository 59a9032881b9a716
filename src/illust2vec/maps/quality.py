"""How well a 2-D map keeps the neighbourhoods of the feature space, in numbers.

* **trustworthiness** (Venna & Kaski 2001; the definition scikit-learn uses):
  1 minus a penalty for map neighbours that are not neighbours in feature
  space, weighted by how far down the feature-space ranking they are.
  1.0 = every map neighbour is a true neighbour.
* **k-NN preservation**: mean fraction of a point's ``k`` nearest neighbours in
  feature space that are also among its ``k`` nearest neighbours on the map.
* **k-NN label accuracy** (with labels): leave-one-out majority vote of a point's
  ``k`` nearest neighbours, in feature space and on the map.  Ties between labels
  are broken in favour of the label whose first vote comes from the nearer neighbour.
  Quantifies "images of the same character form their own clusters".

Feature space distances are cosine distances (``1 - cos``); map distances are
Euclidean.  For large N the measures are estimated on a random sample of query
points (each query still ranks against all N points), so they stay exact per
query and cost ``O(queries * N * D)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Hashable

import numpy as np

#: Above this many points, measures use a sample of ``max_queries`` query points.
DEFAULT_MAX_QUERIES = 2000


def _pairwise_feature_dist(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        return 1.0 - q @ x.T
    if metric == "euclidean":
        d = (q * q).sum(1)[:, None] - 2.0 * (q @ x.T) + (x * x).sum(1)[None, :]
        return np.sqrt(np.maximum(d, 0))
    raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64 if x.shape[0] * x.shape[1] <= 4_000_000 else np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        x = x / norms
    return x


def _query_indices(n: int, max_queries: int | None, seed: int) -> np.ndarray:
    if max_queries is None or n <= max_queries:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_queries, replace=False))


def _knn_rows(d: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest entries per row, nearest first (ties by index)."""
    n = d.shape[1]
    if k < n:
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), d.shape).copy()
    dpart = np.take_along_axis(d, part, 1)
    # sort by (distance, index) so ties resolve like a stable argsort
    keys = np.argsort(part, axis=1, kind="stable")
    part = np.take_along_axis(part, keys, 1)
    dpart = np.take_along_axis(dpart, keys, 1)
    order = np.argsort(dpart, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _neighbour_lists(
    features: np.ndarray,
    embedding: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    need_ranks: bool,
    chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """For each query: its k nearest in feature space and on the map (self excluded),
    and (if ``need_ranks``) the feature-space rank (1 = nearest, ties by index) of
    each map neighbour."""
    xf = _prepare(features, metric)
    emb = np.asarray(embedding, dtype=np.float64)
    esq = (emb * emb).sum(1)
    nn_f = np.empty((len(queries), k), dtype=np.int64)
    nn_e = np.empty((len(queries), k), dtype=np.int64)
    ranks = np.empty((len(queries), k), dtype=np.int64) if need_ranks else None
    idx_all = np.arange(xf.shape[0])
    for s in range(0, len(queries), chunk):
        q = queries[s : s + chunk]
        rows = np.arange(len(q))
        df = _pairwise_feature_dist(xf[q], xf, metric).astype(np.float64)
        df[rows, q] = np.inf
        de = esq[q][:, None] - 2.0 * (emb[q] @ emb.T) + esq[None, :]
        de[rows, q] = np.inf
        e_nn = _knn_rows(de, k)
        nn_e[s : s + len(q)] = e_nn
        nn_f[s : s + len(q)] = _knn_rows(df, k)
        if need_ranks:
            dj = np.take_along_axis(df, e_nn, 1)
            for c in range(k):
                col = dj[:, c : c + 1]
                ranks[s : s + len(q), c] = (
                    (df < col).sum(1) + ((df == col) & (idx_all[None, :] < e_nn[:, c : c + 1])).sum(1) + 1
                )
    return nn_f, nn_e, ranks


def trustworthiness(
    features: np.ndarray,
    embedding: np.ndarray,
    k: int = 10,
    *,
    metric: str = "cosine",
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    seed: int = 0,
) -> float:
    """Trustworthiness of ``embedding`` (N, 2) w.r.t. ``features`` (N, D) at ``k`` neighbours.

    Equals :func:`sklearn.manifold.trustworthiness` (with the same metric) when
    ``N <= max_queries``; above, the average runs over a seeded sample of queries.
    """
    n = features.shape[0]
    k = _check_k(k, n)
    q = _query_indices(n, max_queries, seed)
    _, _, ranks = _neighbour_lists(features, embedding, q, k, metric, need_ranks=True)
    return _trust_from_ranks(ranks, n, k)


def _trust_from_ranks(ranks: np.ndarray, n: int, k: int) -> float:
    pen = ranks - k
    total = pen[pen > 0].sum()
    m = ranks.shape[0]
    return float(1.0 - total * 2.0 / (m * k * (2.0 * n - 3.0 * k - 1.0)))


def _check_k(k: int, n: int) -> int:
    if n < 3:
        raise ValueError(f"map quality needs at least 3 points, got {n}")
    # scikit-learn requires k < n / 2 for trustworthiness
    return max(1, int(min(k, (n - 1) // 2)))


def knn_preservation(
    features: np.ndarray,
    embedding: np.ndarray,
    k: int = 10,
    *,
    metric: str = "cosine",
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    seed: int = 0,
) -> float:
    """Mean fraction of each point's ``k`` feature-space neighbours kept among its ``k`` map neighbours."""
    n = features.shape[0]
    k = _check_k(k, n)
    q = _query_indices(n, max_queries, seed)
    nn_f, nn_e, _ = _neighbour_lists(features, embedding, q, k, metric, need_ranks=False)
    return _overlap(nn_f, nn_e, k)


def _overlap(nn_f: np.ndarray, nn_e: np.ndarray, k: int) -> float:
    hits = (nn_f[:, :, None] == nn_e[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def _vote(neighbour_labels: np.ndarray) -> int:
    """Majority label among neighbours (codes, nearest first); ties -> earliest first vote."""
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for pos, lab in enumerate(neighbour_labels.tolist()):
        counts[lab] = counts.get(lab, 0) + 1
        first.setdefault(lab, pos)
    return max(counts, key=lambda lab: (counts[lab], -first[lab]))


def label_accuracy_from_neighbours(codes: np.ndarray, queries: np.ndarray, nn: np.ndarray) -> float:
    """Fraction of ``queries`` whose majority neighbour label equals their own label."""
    ok = [_vote(codes[row]) == codes[i] for i, row in zip(queries, nn)]
    return float(np.mean(ok)) if ok else float("nan")


def default_label_k(labels: Sequence[Hashable | None], k: int = 5) -> int:
    """Neighbours to vote with: ``min(k, median class size - 1)``, made odd.

    With 3 images per character (as in the original experiment) only 2 others
    share a point's label, so a 5-neighbour vote could never succeed; this uses 1.
    """
    _, counts = np.unique(np.asarray([str(v) for v in labels if v is not None]), return_counts=True)
    if len(counts) == 0:
        return 1
    kk = int(min(k, max(1, int(np.median(counts)) - 1)))
    if kk > 1 and kk % 2 == 0:
        kk -= 1
    return kk


def map_quality(
    features: np.ndarray,
    embedding: np.ndarray,
    labels: Sequence[Hashable | None] | None = None,
    *,
    k: int = 10,
    label_k: int | None = None,
    metric: str = "cosine",
    max_queries: int | None = DEFAULT_MAX_QUERIES,
    seed: int = 0,
) -> dict:
    """All map quality numbers in one pass over the distances.

    Returns a dict: ``n``, ``k``, ``queries`` (how many points were measured),
    ``metric``, ``trustworthiness``, ``knn_preservation``; with ``labels``
    (``None`` entries are left out of the vote targets but still count as
    neighbours) also ``label_k``, ``labelled``, ``knn_label_accuracy_features``
    and ``knn_label_accuracy_map``.
    """
    features = np.asarray(features)
    n = features.shape[0]
    k = _check_k(k, n)
    q = _query_indices(n, max_queries, seed)
    result: dict = {"n": int(n), "k": int(k), "queries": int(len(q)), "metric": metric}
    kk = k
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} points")
        kk = label_k if label_k is not None else default_label_k(labels)
        kk = max(1, min(int(kk), n - 1))
    kmax = max(k, kk)
    nn_f, nn_e, ranks = _neighbour_lists(features, embedding, q, kmax, metric, need_ranks=True)
    result["trustworthiness"] = _trust_from_ranks(ranks[:, :k], n, k)
    result["knn_preservation"] = _overlap(nn_f[:, :k], nn_e[:, :k], k)
    if labels is not None:
        names = ["" if v is None else str(v) for v in labels]
        _, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
        codes = codes.astype(np.int64)
        has = np.array([v is not None for v in labels])
        sel = has[q]
        result["label_k"] = int(kk)
        result["labelled"] = int(has.sum())
        result["knn_label_accuracy_features"] = label_accuracy_from_neighbours(codes, q[sel], nn_f[sel, :kk])
        result["knn_label_accuracy_map"] = label_accuracy_from_neighbours(codes, q[sel], nn_e[sel, :kk])
    return result
