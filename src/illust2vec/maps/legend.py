"""The legend of a map, the same in the PNG and the HTML viewer: names, counts, order, noise.

Labels are listed in natural order (``char 2`` before ``char 10``); clusters by
id, the grey HDBSCAN ``noise`` points (id ``-1``) first, each with its count.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Hashable

import numpy as np

__all__ = ["NOISE", "natural_key", "label_legend", "cluster_legend", "cluster_name"]

#: Legend name of the points no cluster claims (cluster id -1).
NOISE = "noise"


def natural_key(s: str) -> list:
    """Sort key that orders the digit runs of ``s`` by value."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", s) if t]


def label_legend(labels: Sequence[Hashable | None]) -> list[tuple[Hashable, int]]:
    """``(label, count)`` per distinct label (``None`` left out), in natural order."""
    counts: dict[Hashable, int] = {}
    for lab in labels:
        if lab is not None:
            counts[lab] = counts.get(lab, 0) + 1
    return [(lab, counts[lab]) for lab in sorted(counts, key=lambda k: natural_key(str(k)))]


def cluster_name(cid: int, names: dict[int, str] | None) -> str:
    """The legend name of cluster ``cid``: its given name, ``noise`` for -1, else ``cluster N``."""
    given = (names or {}).get(int(cid))
    return str(given) if given is not None else (NOISE if cid == -1 else f"cluster {cid}")


def cluster_legend(cluster_ids: Sequence[int] | np.ndarray,
                   names: dict[int, str] | None) -> list[tuple[int, str, int]]:
    """``(id, name, count)`` per cluster present in ``cluster_ids``, by id (noise first)."""
    ids, counts = np.unique(np.asarray(cluster_ids, dtype=np.int64), return_counts=True)
    return [(int(c), cluster_name(int(c), names), int(k)) for c, k in zip(ids, counts)]
