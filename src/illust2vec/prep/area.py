"""A real area filter: each output pixel is the average of the input area it covers.

:func:`resize_area` computes what OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_AREA)``
computes when an image shrinks (or keeps its size) in both directions, bit for bit, in
numpy (no OpenCV at run time):

* same size: a copy;
* an integer factor in both directions (``896 -> 448``): the mean of each ``kx`` x ``ky``
  block, summed as integers; for 8-bit images a factor of 2 x 2 rounds halves up
  (``(a + b + c + d + 2) >> 2``), other factors multiply the sum by ``1 / (kx * ky)`` in
  float32 and round to nearest, ties to even;
* any other ratio (``1000 -> 448``): a weight per covered input pixel, the covered fraction
  divided by the cell width (computed in double, stored as float32, OpenCV's
  ``computeResizeAreaTab``), a horizontal pass then a vertical pass accumulated in float32 in
  the same order as OpenCV, and for 8-bit images a final rounding to nearest, ties to even.

When a direction enlarges, OpenCV switches to a bilinear variant; here the same coverage
weights are used (each output pixel is still the average of the area it covers), so the
result is an area filter in every case but equals OpenCV only when no direction enlarges.

Pillow's ``BOX`` filter (``pil-area``) is not this filter: it weighs every input pixel whose
centre lies in the cell by 1 and ignores partial coverage, so the two differ whenever the
ratio is not an integer.

>>> import numpy as np
>>> resize_area(np.array([[0, 10, 20, 30]], np.uint8)[:, :, None], (1, 2))[:, :, 0].tolist()
[[5, 25]]
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["area_taps", "resize_area"]

_EPS = 1e-3  # OpenCV's threshold for a partial cell at either end


@functools.lru_cache(maxsize=256)
def area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(index, weight)`` arrays of shape ``(n_out, K)`` for one axis (weights float32, padded with 0).

    The taps of each output pixel are in increasing input order, as OpenCV's
    ``computeResizeAreaTab`` lists them; padding taps (weight 0, index 0) come last, so
    accumulating in column order adds ``+0.0`` at the end, which changes nothing.
    """
    scale = 1.0 / (n_out / n_in)  # as cv::resize: scale_x = 1 / inv_scale_x
    rows: list[list[tuple[int, float]]] = []
    for d in range(n_out):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s1, s2 = math.ceil(f1), math.floor(f2)
        s2 = min(s2, n_in - 1)
        s1 = min(s1, s2)
        taps: list[tuple[int, float]] = []
        if s1 - f1 > _EPS:
            taps.append((s1 - 1, (s1 - f1) / cell))
        for s in range(s1, s2):
            taps.append((s, 1.0 / cell))
        if f2 - s2 > _EPS:
            taps.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        rows.append(taps)
    k = max(len(t) for t in rows)
    index = np.zeros((n_out, k), np.intp)
    weight = np.zeros((n_out, k), np.float32)
    for d, taps in enumerate(rows):
        for j, (s, w) in enumerate(taps):
            index[d, j] = s
            weight[d, j] = np.float32(w)
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def _integer_factor(n_in: int, n_out: int) -> int | None:
    scale = 1.0 / (n_out / n_in)
    k = int(round(scale))
    return k if abs(scale - k) < np.finfo(np.float64).eps and k >= 1 else None


def _round_u8(x: np.ndarray) -> np.ndarray:
    """float32 -> uint8 as OpenCV's ``saturate_cast<uchar>``: nearest, ties to even, clamped."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _block_mean(x: np.ndarray, ky: int, kx: int) -> np.ndarray:
    h, w, c = x.shape
    h_out, w_out = h // ky, w // kx
    blocks = x[: h_out * ky, : w_out * kx].reshape(h_out, ky, w_out, kx, c)
    if x.dtype != np.uint8:
        # OpenCV sums float images in float32 along the block's rows, then multiplies by 1/area
        total = np.zeros((h_out, w_out, c), np.float32)
        for i in range(ky):
            for j in range(kx):
                total += blocks[:, i, :, j].astype(np.float32)
        return total * np.float32(1.0 / (ky * kx))
    acc_type = np.uint16 if ky * kx <= 257 else np.uint32  # 255 * 257 < 2**16
    total = np.zeros((h_out, w_out, c), acc_type)
    for i in range(ky):  # strided views: no copy of the whole picture
        for j in range(kx):
            total += blocks[:, i, :, j]
    total = total.astype(np.int32)
    if ky == 2 and kx == 2 and c in (1, 3, 4):
        return ((total + 2) >> 2).astype(np.uint8)
    return _round_u8(total.astype(np.float32) * np.float32(1.0 / (ky * kx)))


def resize_area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize of an ``(H, W, C)`` array to ``size = (height, width)``.

    ``uint8`` input gives ``uint8`` output (rounded as OpenCV does); any other dtype is
    computed in float32 and returned as float32, unrounded.  See the module docstring for
    the rule and for when it equals ``cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)``.
    """
    x = np.asarray(image)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected an (H, W, C) image with pixels, got shape {np.shape(image)}")
    h_out, w_out = (int(v) for v in size)
    if h_out <= 0 or w_out <= 0:
        raise ValueError(f"size must be positive, not {size!r}")
    h_in, w_in = x.shape[:2]
    if (h_in, w_in) == (h_out, w_out):
        out = np.array(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)
        return out[:, :, 0] if squeeze else out
    ky, kx = _integer_factor(h_in, h_out), _integer_factor(w_in, w_out)
    if ky is not None and kx is not None:
        out = _block_mean(x, ky, kx)
        return out[:, :, 0] if squeeze else out
    xi, xw = area_taps(w_in, w_out)
    yi, yw = area_taps(h_in, h_out)
    c = x.shape[2]
    # Both passes gather whole rows of a transposed copy (contiguous blocks, not single pixels);
    # each output value still gets its products added tap by tap in OpenCV's order.
    cols = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float32).reshape(w_in, h_in * c)
    rows = np.zeros((w_out, h_in * c), np.float32)  # horizontal pass, every input row
    for j in range(xi.shape[1]):
        rows += cols[xi[:, j]] * xw[:, j, None]
    rows = np.ascontiguousarray(rows.reshape(w_out, h_in, c).transpose(1, 0, 2)).reshape(h_in, w_out * c)
    acc = np.zeros((h_out, w_out * c), np.float32)  # vertical pass
    for j in range(yi.shape[1]):
        acc += rows[yi[:, j]] * yw[:, j, None]
    acc = acc.reshape(h_out, w_out, c)
    out = _round_u8(acc) if x.dtype == np.uint8 else acc
    return out[:, :, 0] if squeeze else out
