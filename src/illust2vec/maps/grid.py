"""Snap a 2-D map to a tidy grid, one image per cell, keeping neighbourhoods.

* up to ``exact_max`` points (1500 by default, about a second): an exact linear assignment
  (:func:`scipy.optimize.linear_sum_assignment`) of points to cells that
  minimises the total squared distance moved;
* above: recursive bisection (split the cell rectangle along its longer side,
  split the points at the matching quantile of that coordinate, recurse) down to
  leaves of at most ``leaf_size`` points, each solved exactly.  ``O(N log N)``.

Either way every point gets its own cell (no overlaps by construction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridLayout:
    """``cells[i] = (col, row)`` of point ``i`` in a ``cols x rows`` grid (row 0 at the top)."""

    cells: np.ndarray
    cols: int
    rows: int


def grid_shape(n: int, aspect: float = 1.0) -> tuple[int, int]:
    """Smallest ``(cols, rows)`` with ``cols * rows >= n`` and ``cols / rows`` near ``aspect``."""
    if n <= 0:
        return 0, 0
    aspect = float(min(3.0, max(1 / 3.0, aspect)))
    cols = max(1, int(math.ceil(math.sqrt(n * aspect))))
    rows = int(math.ceil(n / cols))
    # shrink cols when the last row allows it
    while cols > 1 and (cols - 1) * rows >= n:
        cols -= 1
    return cols, rows


def _normalise(pos: np.ndarray, cols: int, rows: int) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    lo = pos.min(axis=0)
    span = pos.max(axis=0) - lo
    span[span == 0] = 1.0
    out = (pos - lo) / span
    out[:, 0] = out[:, 0] * cols
    out[:, 1] = out[:, 1] * rows
    return out


def _assign_exact(p: np.ndarray, c0: int, r0: int, w: int, h: int) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    cc, rr = np.meshgrid(np.arange(c0, c0 + w), np.arange(r0, r0 + h))
    centres = np.column_stack([cc.ravel() + 0.5, rr.ravel() + 0.5])
    cost = ((p[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    row_ind, col_ind = linear_sum_assignment(cost)
    out = np.empty((p.shape[0], 2), dtype=np.int64)
    out[row_ind] = centres[col_ind].astype(np.int64)
    return out


def _bisect(p: np.ndarray, idx: np.ndarray, c0: int, r0: int, w: int, h: int,
            leaf_size: int, out: np.ndarray) -> None:
    m = idx.shape[0]
    if m == 0:
        return
    if m <= leaf_size or w * h <= 1:
        out[idx] = _assign_exact(p[idx], c0, r0, w, h)
        return
    axis = 0 if w >= h else 1
    if axis == 0:
        w1 = w // 2
        cap1, cap2 = w1 * h, (w - w1) * h
    else:
        h1 = h // 2
        cap1, cap2 = w * h1, w * (h - h1)
    n1 = int(round(m * cap1 / (cap1 + cap2)))
    n1 = min(cap1, max(m - cap2, n1))
    order = np.lexsort((p[idx, 1 - axis], p[idx, axis]))
    first, second = idx[order[:n1]], idx[order[n1:]]
    if axis == 0:
        _bisect(p, first, c0, r0, w1, h, leaf_size, out)
        _bisect(p, second, c0 + w1, r0, w - w1, h, leaf_size, out)
    else:
        _bisect(p, first, c0, r0, w, h1, leaf_size, out)
        _bisect(p, second, c0, r0 + h1, w, h - h1, leaf_size, out)


def snap_to_grid(
    positions: np.ndarray,
    *,
    shape: tuple[int, int] | None = None,
    exact_max: int = 1500,
    leaf_size: int = 256,
) -> GridLayout:
    """Assign each 2-D point to its own grid cell, keeping the layout's neighbourhoods.

    ``positions``: (N, 2) map coordinates (y grows downwards on the picture).
    ``shape``: ``(cols, rows)``; default :func:`grid_shape` with the aspect ratio
    of the points' bounding box.  ``exact_max``: largest N solved by one exact
    assignment (cost grows as N^3); ``leaf_size``: leaf size of the bisection above.
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = pos.shape[0]
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must be (N, 2), got {pos.shape}")
    if n == 0:
        return GridLayout(np.zeros((0, 2), np.int64), 0, 0)
    if shape is None:
        span = pos.max(0) - pos.min(0)
        aspect = float(span[0] / span[1]) if span[1] > 0 and span[0] > 0 else 1.0
        cols, rows = grid_shape(n, aspect)
    else:
        cols, rows = int(shape[0]), int(shape[1])
        if cols * rows < n:
            raise ValueError(f"grid {cols}x{rows} has fewer cells than {n} points")
    p = _normalise(pos, cols, rows)
    out = np.empty((n, 2), dtype=np.int64)
    if n <= exact_max:
        out[:] = _assign_exact(p, 0, 0, cols, rows)
    else:
        _bisect(p, np.arange(n), 0, 0, cols, rows, max(2, leaf_size), out)
    return GridLayout(out, cols, rows)
