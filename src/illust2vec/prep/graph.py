"""Preprocessing as an ONNX graph: uint8 pixels in, the model's input tensor out.

:func:`illust2vec.prep.preprocess.preprocess` turns decoded images into a float32
batch on the CPU.  For a GPU that leaves the CPU as the bottleneck (decoding
plus the resize cost ~2.5-3 ms per image per core), so this module computes
the same tensor inside ONNX Runtime, on whatever execution provider runs the
network: the CPU only decodes, and uint8 pixels (a quarter of the float32
bytes) travel to the device.

One call handles one *bucket*: ``N`` images of one size ``(H, W)``, as a
``(N, H, W, 3)`` uint8 array.  The graph's structure depends only on the
recipe and the number of filter taps; the taps themselves (which input rows
and columns each output pixel reads, with which weights) are graph *inputs*,
computed once per input size, so a collection with thousands of sizes needs a
handful of sessions, not one per size.

Exactness (tested on the CPU execution provider, ``tests/test_preprocess_graph.py``):

* ``skimage-bilinear`` / ``-aa`` (illustration2vec): the graph performs the
  float32 operations of :mod:`illust2vec.prep.preprocess` in the same order (each
  tap's product rounded, products summed tap by tap, the border correction of
  the min-max normalisation, the clip, then scale / mean / std), so the
  result is bit-for-bit the CPU's.  This relies on the execution provider not
  fusing a separate ``Mul`` and ``Add`` into one fused multiply-add; sessions
  here are opened with graph optimisations off for that reason.
* ``pil-*`` (WD taggers, EfficientNet-Lite0): Pillow's 8-bit resampler works
  in fixed point (22 fractional bits, rounded to 8 bits after each pass).  The
  graph builds Pillow's integer coefficients and evaluates each pass as a
  float64 matrix product; every partial sum is an integer below 2**53, so it
  is exact in any summation order, and the rounding is Pillow's.  Pillow 13
  does not always start with the horizontal pass; the order for each size is
  read off the installed Pillow once (see :func:`_pil_vertical_first`).
  Equal to Pillow bit for bit.
* ``pad_to_square``: ``Pad`` with the recipe's colour before the resize, as
  the CPU pads before it.

Not handled here (use the CPU path): images that are not 8-bit RGB arrays;
the graph needs all images of a call to share one size (see :func:`size_buckets`).

>>> import numpy as np
>>> from illust2vec.prep.preprocess import I2V_RECIPE, preprocess
>>> pixels = np.random.default_rng(0).integers(0, 256, (2, 300, 200, 3), dtype=np.uint8)
>>> prep = GraphPreprocessor(I2V_RECIPE)
>>> bool(np.array_equal(prep.run(pixels), preprocess(list(pixels), I2V_RECIPE)))
True
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.prep.preprocess import InputRecipe, _axis_taps

__all__ = [
    "GRAPH_INPUT",
    "GRAPH_OUTPUT",
    "GraphPreprocessor",
    "SizePlan",
    "graph_unsupported_reason",
    "pillow_coefficients",
    "preprocess_in_graph",
    "size_buckets",
]

#: Name of the uint8 ``(N, H, W, 3)`` pixel input of every preprocessing graph.
GRAPH_INPUT = "pixels"
#: Name of the output (the model's input tensor).
GRAPH_OUTPUT = "input"

_OPSET = 17
_IR_VERSION = 8
_PIL_PRECISION_BITS = 22  # Pillow's Resample.c: 32 - 8 - 2


def graph_unsupported_reason(recipe: InputRecipe) -> str | None:
    """Why ``recipe`` cannot be computed in a graph, or ``None`` if it can."""
    if recipe.exif_orientation != "apply":
        return "exif_orientation='ignore' is not supported by the batch decoders of the in-graph path"
    if recipe.letterbox:
        return "resizing before padding (letterbox) has no graph form"
    if recipe.pad_to_square and recipe.pad_to_input:
        return "padding onto a canvas of the input size (pad_to_input) has no graph form"
    if recipe.resize.startswith("skimage-bilinear") or recipe.resize in _PIL_FILTERS:
        return None
    return f"resize {recipe.resize!r} has no graph form"


# --------------------------------------------------------------------------- #
# per-size plans
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SizePlan:
    """What one input size ``(H, W)`` needs: which graph, and the arrays fed beside the pixels.

    ``key`` names the graph variant (several sizes share one); ``feeds`` are
    the graph's tap inputs for this size.
    """

    key: tuple
    feeds: dict[str, np.ndarray]


def _square_pads(h_in: int, w_in: int, recipe: InputRecipe) -> tuple[dict[str, np.ndarray], int, int]:
    """The ``pads`` feed (ONNX ``Pad`` order) that centres the image on a square, and the padded size."""
    if not recipe.pad_to_square or h_in == w_in:
        return {}, h_in, w_in
    side = max(h_in, w_in)
    top, left = (side - h_in) // 2, (side - w_in) // 2  # as preprocess._pad_square
    pads = np.array([0, 0, top, left, 0, 0, side - h_in - top, side - w_in - left], dtype=np.int64)
    return {"pads": pads}, side, side


def _skimage_plan(h_in: int, w_in: int, recipe: InputRecipe) -> SizePlan:
    feeds, h_in, w_in = _square_pads(h_in, w_in, recipe)
    pad = bool(feeds)
    h, w = recipe.size
    if (h_in, w_in) == (h, w):  # preprocess copies such an image unchanged (no resize, no clip)
        return SizePlan(("skimage", pad, "same", 0, 0), feeds)
    aa = recipe.resize == "skimage-bilinear-aa"
    idx_r, w_r, s_r = _axis_taps(h_in, h, aa)
    idx_c, w_c, s_c = _axis_taps(w_in, w, aa)
    kr, kc = idx_r.shape[1], idx_c.shape[1]
    # the pass order of preprocess._resize_linear / _fast_plan (it decides the float32 rounding)
    rows_first = h * w_in * kr + h * w * kc <= h_in * w * kc + h * w * kr
    coverage = np.empty((h, w), dtype=np.float32)
    np.multiply.outer(s_r, s_c, out=coverage, casting="same_kind")  # as preprocess computes it
    # Variants are keyed by tap count; one-tap axes (integer zoom) get a second tap of
    # weight 0, which adds an exact 0, so most sizes share the two-tap graphs.
    kr2, kc2 = max(kr, 2), max(kc, 2)
    feeds.update({
        "row_idx": _pad_taps(idx_r.astype(np.int64), kr2),
        "row_w": _pad_taps(w_r, kr2),
        "col_idx": _pad_taps(idx_c.astype(np.int64), kc2),
        "col_w": _pad_taps(w_c, kc2),
        "coverage": coverage,
    })
    return SizePlan(("skimage", pad, "rows" if rows_first else "cols", kr2, kc2), feeds)


def _pad_taps(a: np.ndarray, k: int) -> np.ndarray:
    if a.shape[1] == k:
        return np.ascontiguousarray(a)
    out = np.zeros((a.shape[0], k), dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


# Pillow's filters (Resample.c), evaluated in float64 with its operation order.
def _pil_box(x: np.ndarray) -> np.ndarray:
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


def _pil_bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    outer = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        px = x * np.pi
        return np.where(x == 0.0, 1.0, np.sin(px) / px)


def _pil_lanczos(x: np.ndarray) -> np.ndarray:
    return np.where((x >= -3.0) & (x < 3.0), _sinc(x) * _sinc(x / 3), 0.0)


#: recipe resize -> (filter, support), as Pillow defines them.
_PIL_FILTERS = {
    "pil-area": (_pil_box, 0.5),
    "pil-bilinear": (_pil_bilinear, 1.0),
    "pil-bicubic": (_pil_bicubic, 2.0),
    "pil-lanczos": (_pil_lanczos, 3.0),
}


@functools.lru_cache(maxsize=256)
def pillow_coefficients(n_in: int, n_out: int, resize: str) -> np.ndarray:
    """Pillow's 8-bit resampling along one axis as an ``(n_out, n_in)`` matrix of integers (float64).

    Output pixel ``i`` is ``clip(floor((sum_j M[i, j] * x[j] + 2**21) / 2**22), 0, 255)``,
    which is what Pillow's ``ImagingResample`` computes for 8-bit images: the
    filter's weights normalised per output pixel, then turned into 22-bit
    fixed point (``precompute_coeffs`` and ``normalize_coeffs_8bpc``).
    """
    filt, support_1 = _PIL_FILTERS[resize]
    scale = float(n_in) / n_out
    filterscale = max(scale, 1.0)
    support = support_1 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    xx = np.arange(n_out, dtype=np.float64)
    center = 0.0 + (xx + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), n_in) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    valid = taps[None, :] < xmax[:, None]
    k = filt(((taps[None, :] + xmin[:, None]) - center[:, None] + 0.5) * ss)
    k = np.where(valid, k, 0.0)
    ww = np.zeros(n_out, dtype=np.float64)
    for t in range(ksize):  # Pillow sums the weights one by one
        ww += k[:, t]
    k = np.where((ww != 0.0)[:, None], k / np.where(ww != 0.0, ww, 1.0)[:, None], k)
    one = float(1 << _PIL_PRECISION_BITS)
    kint = np.where(k < 0, np.trunc(-0.5 + k * one), np.trunc(0.5 + k * one))
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.repeat(np.arange(n_out), ksize).reshape(n_out, ksize)
    cols = xmin[:, None] + taps[None, :]
    matrix[rows[valid], cols[valid]] = kint[valid]
    matrix.setflags(write=False)
    return matrix


def _pil_plan(h_in: int, w_in: int, recipe: InputRecipe) -> SizePlan:
    feeds, h_in, w_in = _square_pads(h_in, w_in, recipe)
    h, w = recipe.size
    need_h, need_v = w_in != w, h_in != h
    if need_h:
        feeds["hmat"] = np.ascontiguousarray(pillow_coefficients(w_in, w, recipe.resize).T)
    if need_v:
        feeds["vmat"] = pillow_coefficients(h_in, h, recipe.resize)
    return SizePlan(("pil", "pads" in feeds, need_h, need_v, _pil_vertical_first(h_in, w_in, h, w, recipe.resize)), feeds)


def _pil_vertical_first(h_in: int, w_in: int, h: int, w: int, resize: str) -> bool:
    """Whether Pillow runs the vertical pass first for this size (it rounds to 8 bits
    between the passes, so the order shows in the result).

    Older Pillow always ran the horizontal pass first; Pillow 13 sometimes
    starts with the vertical one, by a rule it does not document.  So the
    installed Pillow is asked: a random probe image of this size is resized
    once, and the order whose result equals Pillow's is used (cached per size).
    """
    if h == h_in or w == w_in:
        return False  # one pass only
    from PIL import Image

    rng = np.random.default_rng(h_in * 7919 + w_in)
    probe = rng.integers(0, 256, (h_in, w_in), dtype=np.uint8)
    want = np.asarray(Image.fromarray(probe, "L").resize((w, h), getattr(Image.Resampling, _PIL_NAMES[resize])))
    hmat = pillow_coefficients(w_in, w, resize)
    vmat = pillow_coefficients(h_in, h, resize)
    x = probe.astype(np.float64)
    vertical = _pil_round(_pil_round(vmat @ x) @ hmat.T)
    return bool(np.array_equal(vertical, want)) and not np.array_equal(_pil_round(vmat @ _pil_round(x @ hmat.T)), want)


def _pil_round(s: np.ndarray) -> np.ndarray:
    """Pillow's ``clip8((ss + 2**21) >> 22)`` on exact integer sums held in float64."""
    return np.clip(np.floor((s + float(1 << (_PIL_PRECISION_BITS - 1))) / float(1 << _PIL_PRECISION_BITS)), 0, 255)


_PIL_NAMES = {"pil-area": "BOX", "pil-bilinear": "BILINEAR", "pil-bicubic": "BICUBIC", "pil-lanczos": "LANCZOS"}


@functools.lru_cache(maxsize=512)
def _plan(h_in: int, w_in: int, recipe: InputRecipe) -> SizePlan:
    if recipe.resize.startswith("skimage"):
        return _skimage_plan(h_in, w_in, recipe)
    return _pil_plan(h_in, w_in, recipe)

# --------------------------------------------------------------------------- #
# graph building
# --------------------------------------------------------------------------- #
class _Builder:
    """A tiny helper that names nodes and constants while a graph is written."""

    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def input(self, name: str, elem: int, shape: Sequence) -> str:
        self.inputs.append(self.helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def model(self, output: str, out_elem: int, out_shape: Sequence) -> bytes:
        helper = self.helper
        self.nodes.append(helper.make_node("Identity", [output], [GRAPH_OUTPUT], name="output"))
        graph = helper.make_graph(self.nodes, "illust2vec_preprocess", self.inputs,
                                  [helper.make_tensor_value_info(GRAPH_OUTPUT, out_elem, list(out_shape))],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                                  producer_name="illust2vec")
        model.ir_version = _IR_VERSION
        return model.SerializeToString()


def _tap_pass(b: _Builder, x: str, idx: str, w: str, k: int, axis: int) -> str:
    """``sum_k w[:, k] * x[idx[:, k]]`` along ``axis`` (2: rows, 3: columns), taps summed in order."""
    acc = None
    for t in range(k):
        tk = b.const(np.array(t, dtype=np.int64), "tap")
        idx_t = b.op("Gather", [idx, tk], axis=1)
        w_t = b.op("Gather", [w, tk], axis=1)
        if axis == 2:
            w_t = b.op("Unsqueeze", [w_t, b.const(np.array([1], dtype=np.int64), "axes")])
        prod = b.op("Mul", [b.op("Gather", [x, idx_t], axis=axis), w_t])
        acc = prod if acc is None else b.op("Add", [acc, prod])
    assert acc is not None
    return acc


def _finish(b: _Builder, x: str, recipe: InputRecipe) -> str:
    """Scale, mean and std on an (N, 3, h, w) float32 tensor already in the recipe's channel order."""
    if recipe.scale != 1.0:
        x = b.op("Mul", [x, b.const(np.array(recipe.scale, dtype=np.float32), "scale")])
    if recipe.mean is not None:
        x = b.op("Sub", [x, b.const(np.asarray(recipe.mean, dtype=np.float32).reshape(1, 3, 1, 1), "mean")])
    if recipe.std is not None:
        x = b.op("Div", [x, b.const(np.asarray(recipe.std, dtype=np.float32).reshape(1, 3, 1, 1), "std")])
    return x


def _build_graph(recipe: InputRecipe, key: tuple, out_dtype: np.dtype) -> bytes:
    from onnx import TensorProto, helper

    b = _Builder()
    pixels = b.input(GRAPH_INPUT, TensorProto.UINT8, ["N", "H", "W", 3])
    family = key[0]
    work = TensorProto.FLOAT if family == "skimage" else TensorProto.DOUBLE
    x = b.op("Transpose", [b.op("Cast", [pixels], to=work)], perm=[0, 3, 1, 2])  # (N, 3, H, W)
    if recipe.channel_order == "BGR":
        x = b.op("Gather", [x, b.const(np.array([2, 1, 0], dtype=np.int64), "bgr")], axis=1)
    if key[1]:  # pad to a square with the recipe's colour: Pad(x - colour, 0) + colour, exact
        color = np.asarray(recipe.pad_color, dtype=np.float32 if family == "skimage" else np.float64)
        c = b.const((color[::-1] if recipe.channel_order == "BGR" else color).reshape(1, 3, 1, 1), "pad_color")
        pads = b.input("pads", TensorProto.INT64, [8])
        x = b.op("Add", [b.op("Pad", [b.op("Sub", [x, c]), pads], mode="constant"), c])
    if family == "skimage":
        x = _skimage_body(b, x, key)
    else:
        x = _pil_body(b, x, key)
    x = _finish(b, x, recipe)
    h, w = recipe.size
    if recipe.layout == "NHWC":
        x = b.op("Transpose", [x], perm=[0, 2, 3, 1])
        shape = ["N", h, w, 3]
    else:
        shape = ["N", 3, h, w]
    out_elem = helper.np_dtype_to_tensor_dtype(out_dtype)
    if out_elem != TensorProto.FLOAT:
        x = b.op("Cast", [x], to=out_elem)
    return b.model(x, out_elem, shape)


def _skimage_body(b: _Builder, x: str, key: tuple) -> str:
    from onnx import TensorProto

    _, _, order, kr, kc = key
    if order == "same":
        return x
    row_idx = b.input("row_idx", TensorProto.INT64, ["h", kr])
    row_w = b.input("row_w", TensorProto.FLOAT, ["h", kr])
    col_idx = b.input("col_idx", TensorProto.INT64, ["w", kc])
    col_w = b.input("col_w", TensorProto.FLOAT, ["w", kc])
    coverage = b.input("coverage", TensorProto.FLOAT, ["h", "w"])
    lo = b.op("ReduceMin", [x], axes=[1, 2, 3], keepdims=1)  # (N, 1, 1, 1): the whole image's range
    hi = b.op("ReduceMax", [x], axes=[1, 2, 3], keepdims=1)
    if order == "rows":
        y = _tap_pass(b, _tap_pass(b, x, row_idx, row_w, kr, 2), col_idx, col_w, kc, 3)
    else:
        y = _tap_pass(b, _tap_pass(b, x, col_idx, col_w, kc, 3), row_idx, row_w, kr, 2)
    # caffe.io.resize_image on a min-max normalised copy == R(x) + lo * (1 - coverage), then clip
    corr = b.op("Add", [b.op("Mul", [coverage, b.op("Neg", [lo])]), lo])
    y = b.op("Add", [y, corr])
    return b.op("Min", [b.op("Max", [y, lo]), hi])


def _pil_body(b: _Builder, x: str, key: tuple) -> str:
    from onnx import TensorProto

    _, _, need_h, need_v, vertical_first = key
    half = b.const(np.array(float(1 << (_PIL_PRECISION_BITS - 1))), "half")
    inv = b.const(np.array(1.0 / (1 << _PIL_PRECISION_BITS)), "inv_one")
    lo, hi = b.const(np.array(0.0), "zero"), b.const(np.array(255.0), "u8max")

    def rounded(v: str) -> str:  # Pillow's clip8((ss + 2**21) >> 22), exact in float64
        return b.op("Clip", [b.op("Floor", [b.op("Mul", [b.op("Add", [v, half]), inv])]), lo, hi])

    passes = [("h", need_h), ("v", need_v)]
    for axis, needed in reversed(passes) if vertical_first else passes:
        if needed and axis == "h":
            x = rounded(b.op("MatMul", [x, b.input("hmat", TensorProto.DOUBLE, ["W", "w"])]))
        elif needed:
            x = rounded(b.op("MatMul", [b.input("vmat", TensorProto.DOUBLE, ["h", "H"]), x]))
    return b.op("Cast", [x], to=TensorProto.FLOAT)


# --------------------------------------------------------------------------- #
# running
# --------------------------------------------------------------------------- #
class GraphPreprocessor:
    """A recipe's preprocessing run by ONNX Runtime, one bucket of same-size uint8 images per call.

    Parameters
    ----------
    recipe:
        The model's :class:`~illust2vec.prep.preprocess.InputRecipe`.
    providers:
        ONNX Runtime execution providers (as for ``InferenceSession``); the CPU by default.
    output_dtype:
        ``float32`` (default) or ``float16`` (the input of a half-precision graph).

    Notes
    -----
    Sessions are opened lazily, one per graph variant (a few per recipe), and
    kept.  The object is safe to use from several threads.
    """

    def __init__(self, recipe: InputRecipe, *, providers: Sequence | None = None,
                 output_dtype: np.dtype | type = np.float32) -> None:
        reason = graph_unsupported_reason(recipe)
        if reason:
            raise Illust2VecError(f"cannot preprocess in a graph: {reason}")
        self.recipe = recipe
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.output_dtype = np.dtype(output_dtype)
        if self.output_dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise Illust2VecError(f"output_dtype must be float32 or float16, not {self.output_dtype}")
        self._sessions: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def plan(self, height: int, width: int) -> SizePlan:
        """The graph variant and tap inputs for images of ``height`` x ``width``."""
        return _plan(int(height), int(width), self.recipe)

    def graph(self, key: tuple) -> bytes:
        """The serialized ONNX graph of one variant (see :attr:`SizePlan.key`)."""
        return _build_graph(self.recipe, key, self.output_dtype)

    def session(self, key: tuple):
        """The ONNX Runtime session of one variant, opened on first use."""
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                # no fusions: a fused multiply-add would change the float32 rounding
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                options.log_severity_level = 3
                sess = ort.InferenceSession(self.graph(key), sess_options=options, providers=self.providers)
                self._sessions[key] = sess
            return sess

    def _check(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] != 3:
            raise Illust2VecError(
                f"pixels must be a uint8 (N, H, W, 3) array of same-size RGB images, not {pixels.dtype} "
                f"{pixels.shape}"
            )
        if 0 in pixels.shape[1:3]:
            raise Illust2VecError(f"images have no pixels (shape {pixels.shape})")
        return np.ascontiguousarray(pixels)

    def feeds(self, pixels: np.ndarray) -> tuple[object, dict[str, np.ndarray]]:
        """``(session, feed dict)`` for one bucket, for callers that bind inputs themselves."""
        pixels = self._check(pixels)
        plan = self.plan(pixels.shape[1], pixels.shape[2])
        return self.session(plan.key), {GRAPH_INPUT: pixels, **plan.feeds}

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocess ``(N, H, W, 3)`` uint8 images: ``(N, *recipe.input_shape)`` in ``output_dtype``."""
        session, feeds = self.feeds(pixels)
        return session.run([GRAPH_OUTPUT], feeds)[0]


def size_buckets(images: Sequence[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Positions of the images grouped by ``(height, width)``, in first-seen order."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        buckets.setdefault(tuple(np.shape(image)[:2]), []).append(i)
    return buckets


def preprocess_in_graph(images: Sequence[np.ndarray], recipe: InputRecipe, *,
                        preprocessor: GraphPreprocessor | None = None) -> np.ndarray:
    """:func:`illust2vec.prep.preprocess.preprocess` computed by ONNX Runtime (same result).

    ``images`` are uint8 ``(H, W, 3)`` RGB arrays (what ``load_image`` returns)
    of any sizes; they are run in buckets of one size and returned in order.
    """
    prep = preprocessor or GraphPreprocessor(recipe)
    out = np.empty((len(images), *recipe.input_shape), dtype=prep.output_dtype)
    for positions in size_buckets(images).values():
        out[positions] = prep.run(np.stack([np.asarray(images[i]) for i in positions]))
    return out
