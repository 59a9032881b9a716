"""Clusters on the map, explained by their most distinctive tags.

Clustering runs HDBSCAN (:class:`sklearn.cluster.HDBSCAN`) on the 2-D map
coordinates, not on the PCA space: the clusters are meant to explain the
groups a person *sees* on the picture, density-based clustering is reliable
in 2-D and unreliable in 50-D (distances concentrate), and a 2-D KD-tree keeps
it fast at 100k points.  t-SNE can split a true group into pieces; the
distinctive-tag labels make such splits visible rather than hiding them.

A cluster's distinctive tags are those whose mean probability inside the
cluster most exceeds the mean outside it (``mean_in - mean_out``): the tags
that make this group different from the rest, not the tags every image has.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClusterInfo:
    """One cluster: id, size, centre on the map and distinctive tags ``(tag, mean_in, mean_out)``."""

    id: int
    size: int
    centre: tuple[float, float]
    tags: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Short name for legends: ``#id: tag1, tag2, tag3`` (or ``#id`` without tags)."""
        if not self.tags:
            return f"#{self.id}"
        return f"#{self.id}: " + ", ".join(t for t, _, _ in self.tags)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "size": self.size,
            "centre": [float(self.centre[0]), float(self.centre[1])],
            "name": self.name,
            "tags": [{"tag": t, "mean_in": round(a, 4), "mean_out": round(b, 4)} for t, a, b in self.tags],
        }


def default_min_cluster_size(n: int) -> int:
    """``max(3, round(sqrt(N) / 2))``: 3 for 36 images, 50 for 10k, 158 for 100k."""
    return int(max(3, round(math.sqrt(max(n, 1)) / 2)))


def find_clusters(
    embedding: np.ndarray,
    *,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    max_points: int = 50_000,
    seed: int = 0,
) -> np.ndarray:
    """HDBSCAN cluster id per point of a 2-D map; ``-1`` marks noise.

    Cluster ids are renumbered by decreasing size (0 = largest).  Fewer than
    ``2 * min_cluster_size`` points -> everything is noise.  Above
    ``max_points``, HDBSCAN runs on a seeded random sample of that size
    (``min_cluster_size`` scaled down with it) and every other point takes the
    cluster of its nearest sampled point.
    """
    from sklearn.cluster import HDBSCAN

    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    mcs = int(min_cluster_size or default_min_cluster_size(n))
    if n < max(2 * mcs, 4):
        return np.full(n, -1, dtype=np.int64)
    sample = None
    if n > max_points:
        sample = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        mcs = max(2, int(round(mcs * max_points / n)))
    fit_x = x if sample is None else x[sample]
    model = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, copy=True)
    raw = model.fit_predict(fit_x)
    if sample is not None:
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(fit_x).query(x, k=1)
        raw = raw[nearest]
    out = np.full(n, -1, dtype=np.int64)
    ids, counts = np.unique(raw[raw >= 0], return_counts=True)
    for new, old in enumerate(ids[np.argsort(-counts, kind="stable")]):
        out[raw == old] = new
    return out


def distinctive_tags(
    probs: np.ndarray,
    tag_names: Sequence[str],
    mask: np.ndarray,
    *,
    top: int = 3,
    min_diff: float = 0.05,
    exclude: np.ndarray | None = None,
) -> list[tuple[str, float, float]]:
    """Tags whose mean probability in ``mask`` most exceeds the mean outside it.

    Returns up to ``top`` ``(tag, mean_in, mean_out)`` with a difference of at
    least ``min_diff``, best first.  ``exclude`` is a boolean mask over tags to
    skip (e.g. rating tags).  With no points outside, ``mean_out`` is 0.
    """
    p = np.asarray(probs, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    mean_in = p[mask].mean(axis=0)
    mean_out = p[~mask].mean(axis=0) if (~mask).any() else np.zeros(p.shape[1])
    diff = mean_in - mean_out
    if exclude is not None:
        diff = np.where(np.asarray(exclude, bool), -np.inf, diff)
    order = np.argsort(-diff, kind="stable")[:top]
    return [
        (str(tag_names[j]), float(mean_in[j]), float(mean_out[j]))
        for j in order
        if diff[j] >= min_diff
    ]


def explain_clusters(
    embedding: np.ndarray,
    cluster_ids: np.ndarray,
    probs: np.ndarray | None = None,
    tag_names: Sequence[str] | None = None,
    *,
    top: int = 3,
    exclude: np.ndarray | None = None,
) -> list[ClusterInfo]:
    """One :class:`ClusterInfo` per cluster id >= 0, with distinctive tags when ``probs`` is given."""
    emb = np.asarray(embedding, dtype=np.float64)
    out = []
    for cid in sorted(int(c) for c in np.unique(cluster_ids) if c >= 0):
        mask = cluster_ids == cid
        centre = emb[mask].mean(axis=0)
        tags = []
        if probs is not None and tag_names is not None:
            tags = distinctive_tags(probs, tag_names, mask, top=top, exclude=exclude)
        out.append(ClusterInfo(cid, int(mask.sum()), (float(centre[0]), float(centre[1])), tags))
    return out
