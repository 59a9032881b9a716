"""Turning decoded images into a model's input tensor.

A model's preprocessing is data, an :class:`InputRecipe` (input size, layout,
colour order, mean/std, scale, resize rule, padding), and one function,
:func:`preprocess`, applies any recipe to a batch of images from
:func:`illust2vec.io.images.load_image`.

The resize the illustration2vec models were published with is reproduced
exactly: ``caffe.io.resize_image`` (min-max normalise a copy to [0, 1],
``skimage.transform.resize(order=1, mode='constant')`` without anti-aliasing,
map back).  :func:`resize_bilinear_skimage` is a vectorised numpy version of
that scikit-image call (two separable 1-D passes with precomputed taps), and
also of its anti-aliased form (Gaussian prefilter, as scikit-image >= 0.19
does by default when shrinking).  uint8 images (what ``load_image`` returns)
take a faster route to the same bits (see "fast path" below).
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from illust2vec.prep.area import resize_area
from illust2vec.prep.resize_names import RESIZE_METHODS, ResizeMethod

__all__ = [
    "I2V_MEAN_BGR",
    "I2V_RECIPE",
    "RESIZE_METHODS",
    "InputRecipe",
    "preprocess",
    "preprocess_one",
    "resize_bilinear_skimage",
    "resize_caffe",
    "warm_up",
]



@dataclass(frozen=True)
class InputRecipe:
    """How a model wants its input: everything between a decoded RGB image and the tensor.

    Attributes
    ----------
    size:
        ``(height, width)`` of the network input.  Images are squashed to it
        (aspect ratio not kept) unless ``pad_to_square`` is set.
    layout:
        ``"NCHW"`` (Caffe, most ONNX exports) or ``"NHWC"`` (WD taggers, Keras).
    channel_order:
        ``"BGR"`` (Caffe models, including illustration2vec) or ``"RGB"``.
    mean, std:
        Per-channel values, given in ``channel_order`` and on the scaled values
        (``0-255 * scale``): the tensor is ``(pixel * scale - mean) / std``.
        ``None`` skips the step.
    scale:
        Multiplier applied to the 0-255 pixel values first (``1/255`` for
        models trained on 0-1 inputs).
    resize:
        ``"skimage-bilinear"``: what illustration2vec did (``caffe.io.resize_image``:
        scikit-image ``resize(order=1, mode='constant')`` of a min-max
        normalised copy, no anti-aliasing), reproduced exactly.
        ``"skimage-bilinear-aa"``: the same with today's scikit-image default
        Gaussian anti-aliasing when shrinking (what unmodified i2v computes
        with scikit-image >= 0.19).  ``"pil-bilinear"``, ``"pil-bicubic"``,
        ``"pil-lanczos"``: Pillow's resamplers, on 8-bit images, results
        rounded to 8 bits as Pillow does.  ``"pil-area"`` is Pillow's ``BOX``
        filter: every input pixel whose centre lies in the output cell counts
        with weight 1 and partial coverage is ignored, so it is not an area
        average when the ratio is not an integer.  ``"area"``: a real area
        filter (:func:`illust2vec.prep.area.resize_area`: each output pixel is
        the mean of the input area it covers), equal to OpenCV's
        ``INTER_AREA`` bit for bit when the image shrinks or keeps its size.
        ``"area-lanczos"``: ``"area"`` when neither side enlarges, Pillow
        ``LANCZOS`` otherwise (kohya-ss' tagger script).
    pad_to_square:
        Pad the image, centred, to a square of side ``max(height, width)``
        with ``pad_color`` before resizing (WD-style taggers).
    pad_color:
        RGB colour of the padding, 0-255.
    pad_to_input:
        With ``pad_to_square``: a picture smaller than the input is centred on
        a canvas of the input's side instead of being enlarged (the square's
        side is ``max(height, width, *size)``), as the WD14 web UI extension does.
    letterbox:
        Shrink or enlarge the picture so that its longer side fills the (square) input
        (each side ``int(side * size / longer)``), then centre it on a ``pad_color`` canvas of
        the input's size: resize first, pad after (DeepDanbooru's front-end).  Not with
        ``pad_to_square``.
    exif_orientation:
        ``"apply"`` (default): the decoder turns the picture upright by its EXIF
        orientation, as viewers show it.  ``"ignore"``: the stored pixels as they
        are, as kohya-ss' scripts, the WD14 web UI extension and most trainers read them.
    """

    size: tuple[int, int]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "BGR"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    scale: float = 1.0
    resize: ResizeMethod = "skimage-bilinear"
    pad_to_square: bool = False
    pad_color: tuple[int, int, int] = (255, 255, 255)
    pad_to_input: bool = False
    exif_orientation: Literal["apply", "ignore"] = "apply"
    letterbox: bool = False

    def __post_init__(self) -> None:
        size = tuple(self.size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
            raise ValueError(f"InputRecipe.size must be (height, width) with positive integers, not {self.size!r}")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"InputRecipe.layout must be 'NCHW' or 'NHWC', not {self.layout!r}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"InputRecipe.channel_order must be 'RGB' or 'BGR', not {self.channel_order!r}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(
                f"InputRecipe.resize must be one of {', '.join(RESIZE_METHODS)}; got {self.resize!r}"
            )
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3:
                    raise ValueError(f"InputRecipe.{field} must have 3 values (one per channel), not {value!r}")
                object.__setattr__(self, field, value)
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError(f"InputRecipe.std must not contain zeros: {self.std!r}")
        if not np.isfinite(self.scale) or self.scale == 0:
            raise ValueError(f"InputRecipe.scale must be a finite non-zero number, not {self.scale!r}")
        pad = tuple(int(v) for v in self.pad_color)
        if len(pad) != 3 or not all(0 <= v <= 255 for v in pad):
            raise ValueError(f"InputRecipe.pad_color must be 3 values in 0-255, not {self.pad_color!r}")
        object.__setattr__(self, "pad_color", pad)
        if self.letterbox and (self.pad_to_square or self.size[0] != self.size[1]):
            raise ValueError("InputRecipe.letterbox needs a square size and no pad_to_square")
        if self.exif_orientation not in ("apply", "ignore"):
            raise ValueError(f"InputRecipe.exif_orientation must be 'apply' or 'ignore', not {self.exif_orientation!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image: ``(3, H, W)`` or ``(H, W, 3)``."""
        h, w = self.size
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)


#: illustration2vec's BGR mean (the published ``image_mean.npy`` averaged per channel).
I2V_MEAN_BGR: tuple[float, float, float] = (164.76139251, 167.47864617, 181.13838569)

#: The preprocessing of the published illustration2vec models.
I2V_RECIPE = InputRecipe(
    size=(224, 224), layout="NCHW", channel_order="BGR", mean=I2V_MEAN_BGR, resize="skimage-bilinear"
)


# --------------------------------------------------------------------------- #
# scikit-image compatible bilinear resize
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=128)
def _axis_taps(n_in: int, n_out: int, anti_aliasing: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D linear operator of skimage's resize along one axis, as taps.

    Returns ``(idx, w, wsum)``: ``idx`` ``(n_out, K)`` source indices (clamped
    into range), ``w`` ``(n_out, K)`` float32 weights (0 for samples outside the
    image, which ``mode='constant'`` fills with ``cval=0``), ``wsum`` ``(n_out,)``
    float64, the sum of each row's weights (1 inside, less at the edges).

    scipy's ``zoom(grid_mode=True, mode='grid-constant', order=1)`` samples output
    pixel ``k`` at ``(k + 0.5) * n_in / n_out - 0.5`` and interpolates linearly
    between the two neighbours, a neighbour outside the image counting as 0.
    With anti-aliasing, a Gaussian of ``sigma = max(0, (n_in/n_out - 1) / 2)``
    truncated at ``int(4 * sigma + 0.5)`` (scipy's default) and zero padding is
    applied first; both operators are composed here into one set of taps.
    """
    zoom = n_in / n_out
    sigma = max(0.0, (zoom - 1.0) / 2.0) if anti_aliasing else 0.0
    radius = int(4.0 * sigma + 0.5) if sigma > 1e-15 else 0
    taps = _linear_taps(n_in, n_out) if radius == 0 else _filtered_taps(n_in, n_out, sigma, radius)
    for a in taps:
        a.setflags(write=False)
    return taps


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_axis_taps` without a prefilter: the same arrays as ``_filtered_taps(n_in, n_out, 0.0, 0)``,
    built with a fraction of the numpy calls (this runs once per new image size)."""
    cc = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0f = np.floor(cc)
    i0 = i0f.astype(np.intp)
    w = np.empty((n_out, 2), dtype=np.float64)
    np.subtract(cc, i0f, out=w[:, 1])
    np.subtract(1.0, w[:, 1], out=w[:, 0])
    idx = np.empty((n_out, 2), dtype=np.intp)
    idx[:, 0] = i0
    np.add(i0, 1, out=idx[:, 1])
    # a neighbour outside the image counts 0; i0 rises with k from >= -1 to <= n_in - 1
    if int(i0[0]) < 0 or int(i0[-1]) + 1 >= n_in:
        outside = (idx < 0) | (idx >= n_in)
        w[outside] = 0.0
        np.clip(idx, 0, n_in - 1, out=idx)
    wsum = w.sum(axis=1)
    if not w[:, 1].any():  # integer sample positions: the second tap is zero everywhere
        return np.ascontiguousarray(idx[:, :1]), w[:, :1].astype(np.float32), wsum
    return idx, w.astype(np.float32), wsum


def _filtered_taps(n_in: int, n_out: int, sigma: float, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_axis_taps` with scipy's Gaussian prefilter (``radius`` 0: no filter) composed in."""
    zoom = n_in / n_out
    cc = (np.arange(n_out, dtype=np.float64) + 0.5) * zoom - 0.5
    i0 = np.floor(cc)
    t = cc - i0
    i0 = i0.astype(np.intp)
    if radius > 0:
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        g = np.exp(-0.5 / (sigma * sigma) * x**2)
        g = g / g.sum()
    else:
        g = np.ones(1, dtype=np.float64)
    k = 2 * radius + 2
    idx = (i0 - radius)[:, None] + np.arange(k)[None, :]
    w0 = np.where((i0 >= 0) & (i0 < n_in), 1.0 - t, 0.0)
    w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < n_in), t, 0.0)
    w = np.zeros((n_out, k), dtype=np.float64)
    w[:, : 2 * radius + 1] += w0[:, None] * g[None, :]
    w[:, 1:] += w1[:, None] * g[None, :]
    inside = (idx >= 0) & (idx < n_in)
    w[~inside] = 0.0
    idx = np.clip(idx, 0, n_in - 1)
    # drop tap columns that are zero everywhere (e.g. the second tap of an identity)
    keep = np.any(w != 0.0, axis=0)
    if not keep.any():
        keep[0] = True
    idx = np.ascontiguousarray(idx[:, keep])
    wsum = w.sum(axis=1)
    w32 = np.ascontiguousarray(w[:, keep].astype(np.float32))
    return idx, w32, wsum


class _Scratch(threading.local):
    """Per-thread reusable work buffers.

    Allocating fresh multi-megabyte temporaries for every image costs more
    than the arithmetic on machines where each new page faults (glibc returns
    large blocks to the OS on free), so the resize keeps its intermediates.
    Buffers above ``_SCRATCH_MAX_BYTES`` are not kept.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64))
        buf = self.buffers.get((key, dtype))
        if buf is None or buf.size < n:
            buf = np.empty(n, dtype=dtype)
            if n * dtype.itemsize <= _SCRATCH_MAX_BYTES:
                self.buffers[(key, dtype)] = buf
        return buf[:n].reshape(shape)


_SCRATCH_MAX_BYTES = 64 * 1024 * 1024
_scratch = _Scratch()


def _apply_axis(x: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int, out: np.ndarray, tag: str) -> np.ndarray:
    """``out = sum_k w[:, k] * x[idx[:, k]]`` along ``axis`` (0 or 1) of a 3-D array.

    ``out`` is float32 of the result's shape.  Works on views with the weights
    laid out along the contiguous axis so that every ufunc runs over long
    inner loops, and on reused scratch buffers.
    """
    n_out, n_taps = idx.shape
    if axis == 0:
        flat = x.reshape(x.shape[0], -1)
        res = out.reshape(n_out, -1)
        rest = 1
    else:
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        rest = flat.shape[2]
        res = out.reshape(x.shape[0], n_out, rest)
    gather = _scratch.get(tag + "-gather", res.shape, flat.dtype)
    tmp = gather if flat.dtype == np.float32 else _scratch.get(tag + "-tmp", res.shape, np.float32)
    for k in range(n_taps):
        np.take(flat, idx[:, k], axis=axis, out=gather, mode="clip")  # "raise" would buffer
        dst = res if k == 0 else tmp
        if dst is not gather:
            np.copyto(dst, gather, casting="unsafe")
        if axis == 0:
            np.multiply(dst, w[:, k, None], out=dst)
        else:
            d2 = dst.reshape(dst.shape[0], -1)
            wk = np.repeat(w[:, k], rest)[None, :] if rest > 1 else w[None, :, k]
            np.multiply(d2, wk, out=d2)
        if k > 0:
            np.add(res, dst, out=res)
    return out


def _resize_linear(
    x: np.ndarray, size: tuple[int, int], anti_aliasing: bool, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Zero-padded separable resize of the first two axes of a 3-D array.

    Returns ``(out, s_r, s_c)``: ``out`` float32 ``(h, w, C)``, and the per-row
    and per-column weight sums (the coverage of output pixel ``(i, j)`` is
    ``s_r[i] * s_c[j]``), both ``None`` when they are 1 everywhere.
    """
    h_in, w_in, ch = x.shape
    h_out, w_out = size
    idx_r, w_r, s_r = _axis_taps(h_in, h_out, anti_aliasing)
    idx_c, w_c, s_c = _axis_taps(w_in, w_out, anti_aliasing)
    if out is None:
        out = np.empty((h_out, w_out, ch), dtype=np.float32)
    rows_first = h_out * w_in * idx_r.shape[1] + h_out * w_out * idx_c.shape[1]
    cols_first = h_in * w_out * idx_c.shape[1] + h_out * w_out * idx_r.shape[1]
    if rows_first <= cols_first:
        mid = _scratch.get("mid", (h_out, w_in, ch), np.float32)
        _apply_axis(x, idx_r, w_r, 0, mid, "a")
        _apply_axis(mid, idx_c, w_c, 1, out, "b")
    else:
        mid = _scratch.get("mid", (h_in, w_out, ch), np.float32)
        _apply_axis(x, idx_c, w_c, 1, mid, "a")
        _apply_axis(mid, idx_r, w_r, 0, out, "b")
    if np.all(np.abs(s_r - 1.0) < 1e-12) and np.all(np.abs(s_c - 1.0) < 1e-12):
        return out, None, None
    return out, s_r, s_c


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), not {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, not {size!r}")
    return h, w


def resize_bilinear_skimage(
    image: np.ndarray, size: tuple[int, int], *, anti_aliasing: bool = False
) -> np.ndarray:
    """``skimage.transform.resize(image, size, order=1, mode='constant', cval=0,
    clip=True, preserve_range=True, anti_aliasing=anti_aliasing)``, in numpy.

    Parameters
    ----------
    image:
        ``(H, W)`` or ``(H, W, C)`` array, any real dtype; values are used as
        they are (no rescaling of integer types).
    size:
        ``(height, width)`` of the result; channels are kept.
    anti_aliasing:
        Apply scikit-image's Gaussian prefilter (``sigma = max(0, (factor - 1) / 2)``
        per axis, zero padding).  ``True`` equals scikit-image's default
        (``anti_aliasing=None``) for shrinking, and changes nothing for enlarging.

    Returns
    -------
    numpy.ndarray
        float32, ``(height, width)`` or ``(height, width, C)``; agrees with
        scikit-image within float32 rounding (about 1e-6 relative).

    Notes
    -----
    Output pixel ``k`` samples the input at ``(k + 0.5) * in / out - 0.5``;
    samples beyond the outer pixel centres blend with ``cval = 0`` (this darkens
    the border by up to half a pixel when enlarging).  Like scikit-image, the
    result is clipped to the input's value range (widened to include 0 only when
    0 lies outside that range but inside the result's).
    """
    h, w = _check_size(size)
    x = np.asarray(image)
    if x.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), not shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"image dtype {x.dtype} is not supported")
    if x.dtype == np.bool_:
        x = x.astype(np.float32)
    out, _, _ = _resize_linear(x if x.ndim == 3 else x[:, :, None], (h, w), anti_aliasing)
    if x.ndim == 2:
        out = out[:, :, 0]
    lo = x.min()
    hi = x.max()
    lo_f, hi_f = float(lo), float(hi)
    if not (lo_f <= 0.0 <= hi_f) and float(out.min()) <= 0.0 <= float(out.max()):
        lo_f, hi_f = min(lo_f, 0.0), max(hi_f, 0.0)
    np.clip(out, np.float32(lo_f), np.float32(hi_f), out=out)
    return out


def resize_caffe(image: np.ndarray, size: tuple[int, int], *, anti_aliasing: bool = False) -> np.ndarray:
    """``caffe.io.resize_image(image, size, interp_order=1)`` as illustration2vec used it.

    The image (``(H, W, C)``, values 0-255) is min-max normalised to [0, 1],
    resized with scikit-image ``resize(order=1, mode='constant')`` and mapped
    back to its original range.  A constant image stays constant.  Because the
    resize is linear this is computed as ``R(x) + min * (1 - R(1))`` without the
    normalised copy (equal up to float32 rounding).  An image that already has
    the target size is returned unchanged (as float32).

    Returns float32 ``(height, width, C)``.
    """
    h, w = _check_size(size)
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, C) with pixels, not shape {x.shape}")
    return _resize_caffe_into(x, (h, w), anti_aliasing, np.empty((h, w, x.shape[2]), dtype=np.float32))


def _resize_caffe_into(x: np.ndarray, size: tuple[int, int], anti_aliasing: bool, out: np.ndarray) -> np.ndarray:
    h, w = size
    if x.shape[:2] == (h, w):
        np.copyto(out, x, casting="unsafe")
        return out
    lo = float(x.min())
    hi = float(x.max())
    if hi == lo:
        out.fill(lo)
        return out
    _, s_r, s_c = _resize_linear(x, (h, w), anti_aliasing, out)
    if s_r is not None and s_c is not None and lo != 0.0:
        # out = R(x - lo) + lo = R(x) + lo * (1 - coverage); coverage < 1 only near the border
        corr = _scratch.get("coverage", (h, w), np.float32)
        np.multiply.outer(s_r, s_c, out=corr, casting="same_kind")
        np.multiply(corr, np.float32(-lo), out=corr)
        np.add(corr, np.float32(lo), out=corr)
        np.add(out, corr[:, :, None], out=out)
    np.clip(out, np.float32(lo), np.float32(hi), out=out)
    return out


# --------------------------------------------------------------------------- #
# preprocess
# --------------------------------------------------------------------------- #
_PIL_FILTERS = {
    "pil-bilinear": "BILINEAR",
    "pil-bicubic": "BICUBIC",
    "pil-lanczos": "LANCZOS",
    "pil-area": "BOX",
}


def _as_hwc3(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an (H, W, 3) RGB image (as load_image returns), got shape {x.shape}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {x.shape})")
    if x.shape[2] == 1:
        x = np.broadcast_to(x, x.shape[:2] + (3,))
    elif x.shape[2] == 4:
        x = x[:, :, :3]
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"image dtype {x.dtype} is not supported; use uint8 (0-255) or float (0-255)")
    return x


def _pad_square(x: np.ndarray, color: tuple[int, int, int], min_side: int = 0) -> np.ndarray:
    h, w = x.shape[:2]
    side = max(h, w, min_side)
    if h == w == side:
        return x
    dtype = x.dtype if x.dtype == np.uint8 else np.float32
    out = np.empty((side, side, 3), dtype=dtype)
    out[...] = np.asarray(color, dtype=dtype)
    top = (side - h) // 2
    left = (side - w) // 2
    out[top : top + h, left : left + w] = x
    return out


def _resize_pil(x: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    from PIL import Image

    resample = getattr(Image.Resampling, _PIL_FILTERS[method])
    h, w = size
    if x.shape[:2] == (h, w):
        return np.array(x, dtype=np.float32)
    if x.dtype == np.uint8:
        img = Image.fromarray(np.ascontiguousarray(x), mode="RGB")
        return np.asarray(img.resize((w, h), resample), dtype=np.float32)
    out = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        band = Image.fromarray(np.ascontiguousarray(x[:, :, c], dtype=np.float32), mode="F")
        out[:, :, c] = np.asarray(band.resize((w, h), resample))
    return out


def _prepared_hwc3(image: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """``image`` as (H, W, 3), padded to a square if the recipe asks."""
    x = _as_hwc3(image)
    if recipe.pad_to_square:
        x = _pad_square(x, recipe.pad_color, max(recipe.size) if recipe.pad_to_input else 0)
    return x


def _resized_rgb(x: np.ndarray, recipe: InputRecipe) -> np.ndarray:
    """The general resize of a prepared (H, W, 3) image: float32 RGB of ``recipe.size``."""
    if recipe.letterbox:
        side = recipe.size[0]
        scale = side / max(x.shape[0], x.shape[1])
        inner = (int(x.shape[0] * scale), int(x.shape[1] * scale))
        fitted = _resize_to(x, inner, recipe)
        return _pad_square(fitted, recipe.pad_color, side).astype(np.float32, copy=False)
    return _resize_to(x, recipe.size, recipe)


def _resize_to(x: np.ndarray, size: tuple[int, int], recipe: InputRecipe) -> np.ndarray:
    """``x`` resized to ``size`` with the recipe's resize rule (float32)."""
    if recipe.resize in ("skimage-bilinear", "skimage-bilinear-aa"):
        out = _scratch.get("resized", size + (3,), np.float32)
        return _resize_caffe_into(x, size, recipe.resize == "skimage-bilinear-aa", out)
    if recipe.resize == "area" or (recipe.resize == "area-lanczos" and x.shape[0] >= size[0]
                                   and x.shape[1] >= size[1]):
        return resize_area(x, size).astype(np.float32, copy=False)
    return _resize_pil(x, size, "pil-lanczos" if recipe.resize == "area-lanczos" else recipe.resize)


def _finish_into(rgb: np.ndarray, recipe: InputRecipe, dst: np.ndarray) -> None:
    """Channel order, scale, mean, std and layout of one resized float32 RGB image into ``dst``."""
    src = rgb[:, :, ::-1] if recipe.channel_order == "BGR" else rgb
    if recipe.layout == "NCHW":
        src = src.transpose(2, 0, 1)
        shape = (3, 1, 1)
    else:
        shape = (3,)
    if recipe.scale != 1.0:
        np.multiply(src, np.float32(recipe.scale), out=dst)
        src = dst
    if recipe.mean is not None:
        np.subtract(src, np.asarray(recipe.mean, dtype=np.float32).reshape(shape), out=dst)
    elif src is not dst:
        np.copyto(dst, src)
    if recipe.std is not None:
        np.divide(dst, np.asarray(recipe.std, dtype=np.float32).reshape(shape), out=dst)


# --------------------------------------------------------------------------- #
# fast path: uint8 images with the scikit-image recipes
# --------------------------------------------------------------------------- #
# The general path above works on (H, W, C) arrays of any dtype.  For the common
# case -- a uint8 RGB image from load_image and a "skimage-bilinear(-aa)" recipe --
# the same numbers are computed with less memory traffic:
#
# * the work goes in horizontal strips of output rows whose intermediates fit in
#   a core's cache, and when shrinking a lot only the input rows some tap reads
#   are copied out (and decide the min and max when they hold 0 and 255);
# * the row pass (along H) is a sparse-matrix product (scipy's csr_matvecs:
#   ``y[i, :] += w * x[j, :]`` over whole rows, taps in order) on the rows
#   converted to float32 once;
# * the column pass gathers single values (``np.take`` along the last axis, which
#   is several times faster than gathering 3-value pixels) with indices that
#   already put the channels in the recipe's order and layout;
# * the border correction or the clip writes straight into the caller's output
#   (NCHW: a transposed view), and ``(x * scale - mean) / std`` runs in place there;
# * intermediates live in per-thread scratch buffers, and the taps of each input
#   size are computed once (:func:`_fast_plan`).
#
# Every output element goes through the same float32 operations in the same
# order as in the general path (products rounded, then summed tap by tap;
# ``0 + p == p`` exactly for the sparse product's first tap), so the results are
# bit-for-bit equal; tests/test_preprocess_fast.py checks this, and
# :func:`_sparse_rows_kernel` re-checks the sparse kernel once per process (a
# build that fused the multiply-add would fail it, and the numpy row pass is
# used instead).


@dataclass(frozen=True)
class _FastPlan:
    """Precomputed taps of one ``(H, W) -> size`` resize in the fast path's layout."""

    rows_first: bool
    rows: np.ndarray | None  # rows of the image that the row pass reads (None: all)
    blocks: tuple[_RowBlock, ...]  # output rows in strips whose work fits in the CPU cache
    col_idx: tuple[np.ndarray, ...]  # per tap: (C * w,) indices into a (rows, W * C) array
    col_w: tuple[np.ndarray, ...]  # per tap: (C * w,) float32 weights in the same order
    coverage: np.ndarray | None  # (h, w) float32 s_r[i] * s_c[j], None when 1 everywhere


@dataclass(frozen=True)
class _RowBlock:
    """Output rows ``start:stop``, made from rows ``first:last`` of the rows read."""

    start: int
    stop: int
    first: int
    last: int
    idx: np.ndarray  # (stop - start, K) intp, relative to ``first``
    w: np.ndarray  # (stop - start, K) float32
    csr: tuple[np.ndarray, np.ndarray, np.ndarray]  # indptr (int32), indices (int32), data (float32)


#: Rough size of one strip's intermediates: small enough to stay in a core's cache.
_BLOCK_BYTES = 1 << 20


@functools.lru_cache(maxsize=64)
def _fast_plan(h_in: int, w_in: int, size: tuple[int, int], anti_aliasing: bool,
               planar: bool, reverse: bool) -> _FastPlan:
    """Taps for the fast path.  ``planar``: column results ordered (channel, column)
    (NCHW) instead of (column, channel); ``reverse``: RGB -> BGR.  Built once per
    input size, with few numpy calls (collections have many sizes)."""
    h, w = size
    idx_r, w_r, s_r = _axis_taps(h_in, h, anti_aliasing)
    idx_c, w_c, s_c = _axis_taps(w_in, w, anti_aliasing)
    kr, kc = idx_r.shape[1], idx_c.shape[1]
    # the same pass order as _resize_linear (it changes the float32 rounding)
    rows_first = h * w_in * kr + h * w * kc <= h_in * w * kc + h * w * kr
    rows, ridx = None, idx_r
    if idx_r.size < 0.7 * h_in:
        # shrinking a lot: copy out the rows some tap uses (1 byte a value) rather than
        # convert every row to float32 (4 bytes a value, written then read)
        used = np.zeros(h_in, dtype=np.intp)
        used[idx_r] = 1
        rows = np.flatnonzero(used)
        ridx = np.cumsum(used)[idx_r] - 1  # position of each tap's row among those read
    n_read = h_in if rows is None else rows.size
    # bytes of the float32 intermediate behind one output row: one row of W pixels
    # (rows first), or the input rows behind it gathered to w pixels (columns first)
    per_row = 12 * w_in if rows_first else 12 * w * n_read / h
    n_blocks = max(1, min(h // 8, int(h * per_row // _BLOCK_BYTES)))
    bounds = [h * b // n_blocks for b in range(n_blocks + 1)]
    blocks = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        first = int(ridx[start:stop].min())
        bidx = ridx[start:stop] - first
        bw = w_r[start:stop]
        csr = (np.arange(0, (stop - start) * kr + 1, kr, dtype=np.int32), bidx.astype(np.int32).ravel(), bw.ravel())
        for arr in (bidx, *csr):
            arr.setflags(write=False)
        blocks.append(_RowBlock(start, stop, first, int(ridx[start:stop].max()) + 1, bidx, bw, csr))
    chans = np.array([2, 1, 0] if reverse else [0, 1, 2], dtype=np.intp)
    col_idx, col_w = [], []
    for k in range(kc):
        base = 3 * idx_c[:, k]
        if planar:
            col_idx.append((base[None, :] + chans[:, None]).ravel())
            col_w.append(np.concatenate((w_c[:, k], w_c[:, k], w_c[:, k])))
        else:
            col_idx.append((base[:, None] + chans[None, :]).ravel())
            col_w.append(np.repeat(w_c[:, k], 3))
    coverage = None
    if not (np.all(np.abs(s_r - 1.0) < 1e-12) and np.all(np.abs(s_c - 1.0) < 1e-12)):
        coverage = np.empty((h, w), dtype=np.float32)
        np.multiply.outer(s_r, s_c, out=coverage, casting="same_kind")
    for arr in (*col_idx, *col_w, coverage, rows):
        if arr is not None:
            arr.setflags(write=False)
    return _FastPlan(rows_first, rows, tuple(blocks), tuple(col_idx), tuple(col_w), coverage)


def warm_up(recipe: InputRecipe) -> None:
    """Do the one-time set-up ``recipe`` needs (imports, kernel checks) now.

    Called once by each decode worker process as it starts (the decode pool's
    initializer), so that the first picture does not pay for it (scipy's sparse
    kernels take ~0.5 s to import).
    """
    if recipe.resize.startswith("skimage"):
        _sparse_rows_kernel()


@functools.lru_cache(maxsize=1)
def _sparse_rows_kernel():
    """scipy's ``csr_matvecs`` if it computes exactly what the numpy row pass does, else ``None``."""
    try:
        from scipy.sparse._sparsetools import csr_matvecs
    except Exception:  # scipy missing or reorganised: the numpy row pass is used
        return None
    rng = np.random.default_rng(12345)
    for n_in, n_out, aa in ((97, 41, False), (41, 97, False), (301, 50, True)):
        x = rng.integers(0, 256, (n_in, 29), dtype=np.uint8).astype(np.float32)
        idx, w, _ = _axis_taps(n_in, n_out, aa)
        want = np.empty((n_out, 29), dtype=np.float32)
        _row_pass_numpy(x, idx, w, want)
        got = np.zeros((n_out, 29), dtype=np.float32)
        try:
            n_taps = idx.shape[1]
            csr_matvecs(n_out, n_in, 29, np.arange(0, n_out * n_taps + 1, n_taps, dtype=np.int32),
                        idx.astype(np.int32).ravel(), w.ravel(), x.ravel(), got.ravel())
        except Exception:
            return None
        if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
            return None
    return csr_matvecs


def _row_pass_numpy(x: np.ndarray, idx: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = sum_k w[i, k] * x[idx[i, k]]`` (float32, taps in order) with numpy."""
    gather = _scratch.get("fast-rows-gather", out.shape, x.dtype)
    tmp = _scratch.get("fast-rows-tmp", out.shape, np.float32)
    for k in range(idx.shape[1]):
        np.take(x, idx[:, k], axis=0, out=gather, mode="clip")
        np.multiply(gather, w[:, k, None], out=out if k == 0 else tmp)
        if k:
            np.add(out, tmp, out=out)


def _row_pass(x: np.ndarray, block: _RowBlock, out: np.ndarray) -> None:
    """The row pass of one block: ``out`` (its output rows) from the rows ``x`` it reads."""
    kernel = _sparse_rows_kernel()
    if kernel is None:
        _row_pass_numpy(x, block.idx, block.w, out)
        return
    if x.dtype != np.float32:
        xf = _scratch.get("fast-rows-f32", x.shape, np.float32)
        np.copyto(xf, x, casting="unsafe")
        x = xf
    out.fill(0.0)
    indptr, indices, data = block.csr
    kernel(out.shape[0], x.shape[0], out.shape[1], indptr, indices, data, x.reshape(-1), out.reshape(-1))


def _col_pass(x: np.ndarray, plan: _FastPlan, out: np.ndarray) -> None:
    """The column pass of ``plan``: ``out[:, q] = sum_k col_w[k][q] * x[:, col_idx[k][q]]``.

    ``x`` is ``(rows, W * 3)`` (uint8 or float32), ``out`` float32 ``(rows, 3 * w)``
    with its columns in ``col_idx`` order.
    """
    n = x.shape[0]
    m = plan.col_idx[0].size
    gather = _scratch.get("fast-cols-gather", (n, m), x.dtype)
    tmp = gather if x.dtype == np.float32 else _scratch.get("fast-cols-tmp", (n, m), np.float32)
    for k in range(len(plan.col_idx)):
        np.take(x, plan.col_idx[k], axis=1, out=gather, mode="clip")
        if k == 0:
            np.multiply(gather, plan.col_w[k], out=out)
        else:
            np.multiply(gather, plan.col_w[k], out=tmp)
            np.add(out, tmp, out=out)


def _fast_into(x: np.ndarray, recipe: InputRecipe, dst: np.ndarray) -> bool:
    """Resize and finish uint8 ``x`` ``(H, W, 3)`` into ``dst`` if the fast path applies.

    Returns ``False`` (nothing written) for what the general path must do: other
    dtypes or resize methods, an image already at the target size, a constant image.
    """
    if x.dtype != np.uint8 or recipe.resize not in ("skimage-bilinear", "skimage-bilinear-aa") or recipe.letterbox:
        return False
    h_in, w_in = x.shape[:2]
    h, w = recipe.size
    if (h_in, w_in) == (h, w):
        return False
    planar = recipe.layout == "NCHW"
    plan = _fast_plan(h_in, w_in, recipe.size, recipe.resize == "skimage-bilinear-aa",
                      planar, recipe.channel_order == "BGR")
    flat = np.ascontiguousarray(x).reshape(h_in, w_in * 3)
    if plan.rows is not None:
        sub = _scratch.get("fast-rows-u8", (plan.rows.size, w_in * 3), np.uint8)
        np.take(flat, plan.rows, axis=0, out=sub, mode="clip")
        flat = sub
    # The min and max of the whole image; the rows just read (often all there are)
    # already decide them when they hold 0 and 255, as most illustrations do.
    lo = int(flat.min())
    hi = int(flat.max())
    if plan.rows is not None:
        if lo > 0:
            lo = int(x.min())
        if hi < 255:
            hi = int(x.max())
    if lo == hi:
        return False
    res = _scratch.get("fast-res", (h, 3 * w), np.float32)
    for block in plan.blocks:
        src = flat[block.first : block.last]
        if plan.rows_first:
            mid = _scratch.get("fast-mid", (block.stop - block.start, w_in * 3), np.float32)
            _row_pass(src, block, mid)
            _col_pass(mid, plan, res[block.start : block.stop])
        else:
            mid = _scratch.get("fast-mid", (src.shape[0], 3 * w), np.float32)
            _col_pass(src, plan, mid)
            _row_pass(mid, block, res[block.start : block.stop])
    # res holds (h, 3, w) or (h, w, 3); dst seen with its axes in that order
    view = dst.transpose(1, 0, 2) if planar else dst
    src = res.reshape(view.shape)
    if plan.coverage is not None and lo != 0:
        # R(x - lo) + lo == R(x) + lo * (1 - coverage), as in _resize_caffe_into
        corr = _scratch.get("fast-coverage", (h, w), np.float32)
        np.multiply(plan.coverage, np.float32(-lo), out=corr)
        np.add(corr, np.float32(lo), out=corr)
        np.add(src, corr[:, None, :] if planar else corr[:, :, None], out=view)
        src = view
    np.clip(src, np.float32(lo), np.float32(hi), out=view)
    _finish_inplace(dst, recipe)
    return True


def _finish_inplace(dst: np.ndarray, recipe: InputRecipe) -> None:
    """Scale, mean and std of ``dst`` whose channels are already in order and layout."""
    shape = (3, 1, 1) if recipe.layout == "NCHW" else (3,)
    if recipe.scale != 1.0:
        np.multiply(dst, np.float32(recipe.scale), out=dst)
    if recipe.mean is not None:
        np.subtract(dst, np.asarray(recipe.mean, dtype=np.float32).reshape(shape), out=dst)
    if recipe.std is not None:
        np.divide(dst, np.asarray(recipe.std, dtype=np.float32).reshape(shape), out=dst)


def _preprocess_into(image: np.ndarray, recipe: InputRecipe, dst: np.ndarray, *, fast: bool = True) -> None:
    """Preprocess one image into ``dst``; ``fast=False`` forces the general path (tests, benchmark)."""
    x = _prepared_hwc3(image, recipe)
    if not (fast and _fast_into(x, recipe, dst)):
        _finish_into(_resized_rgb(x, recipe), recipe, dst)


def preprocess_one(image: np.ndarray, recipe: InputRecipe, out: np.ndarray | None = None) -> np.ndarray:
    """Preprocess one image: ``(3, H, W)`` (NCHW recipes) or ``(H, W, 3)`` float32.

    ``image`` is an ``(H, W, 3)`` RGB array as :func:`~illust2vec.io.images.load_image`
    returns (``uint8``, or float on the 0-255 scale); ``(H, W)`` and
    ``(H, W, 1)`` grey are copied to three channels and a fourth (alpha)
    channel is ignored -- use ``load_image`` to blend transparency.

    Steps: pad to square (if the recipe asks), resize to ``recipe.size`` with
    ``recipe.resize``, reorder channels, ``(x * scale - mean) / std``, layout.

    >>> import numpy as np
    >>> x = preprocess_one(np.full((300, 200, 3), 200, np.uint8), I2V_RECIPE)
    >>> x.shape, x.dtype, [round(float(v), 2) for v in x[:, 0, 0]]
    ((3, 224, 224), dtype('float32'), [35.24, 32.52, 18.86])

    ``out``, if given, is a writable float32 array of shape ``recipe.input_shape``
    (for instance one row of a shared batch buffer) that receives the result
    and is returned, so no array is allocated.
    """
    if out is None:
        out = np.empty(recipe.input_shape, dtype=np.float32)
    elif out.shape != recipe.input_shape or out.dtype != np.float32 or not out.flags.writeable:
        raise ValueError(
            f"out must be a writable float32 array of shape {recipe.input_shape}, not {out.dtype} {out.shape}"
        )
    _preprocess_into(image, recipe, out)
    return out


def preprocess(
    images: Sequence[np.ndarray], recipe: InputRecipe, out: np.ndarray | None = None
) -> np.ndarray:
    """Preprocess a batch of images into one float32 array of shape ``(N, *recipe.input_shape)``.

    Parameters
    ----------
    images:
        Decoded RGB images (see :func:`preprocess_one`); sizes may differ.
    recipe:
        The model's :class:`InputRecipe`, e.g. :data:`I2V_RECIPE`.
    out:
        Optional preallocated C-contiguous float32 array of exactly that shape
        to fill (avoids an allocation per batch); it is returned.

    Notes
    -----
    For :data:`I2V_RECIPE` this computes what illustration2vec's
    ``_forward`` fed the network: float 0-255, squash to 224x224 with
    ``caffe.io.resize_image``, RGB -> BGR, minus the BGR mean, NCHW.
    """
    n = len(images)
    shape = (n,) + recipe.input_shape
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {shape}, not {out.dtype} {out.shape}")
    for i, image in enumerate(images):
        _preprocess_into(image, recipe, out[i])
    return out
