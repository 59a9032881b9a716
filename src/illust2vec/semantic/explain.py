"""Why a tag was predicted: tag maps from the network itself.

Two methods:

``"cam"`` (class activation map, exact)
    For illustration2vec's tagger each tag's logit is *exactly* the mean of its
    7x7 map in ``conv6_4`` (the net ends in a 7x7 average pool and a sigmoid), so
    the map is read from one forward pass: the graph is run with that tensor as
    a second output.  ``map.mean()`` is the tag's logit; a cell's value is how
    much that region of the picture (a 32x32 block of the 224x224 input, seen
    through a larger receptive field) raises (positive) or lowers (negative) it.
    Available when the graph's head is "spatial map -> average pool ->
    (sigmoid)" (:func:`illust2vec.runtime.reverse.spatial_map_tensor`).

``"gradient"`` (saliency, any model the gradient builder covers)
    The gradient of the tag's probability with respect to the input pixels
    (:meth:`ImageModel.forward_backward`), reduced to one value per pixel
    (largest absolute value over the colour channels), smoothed with a Gaussian
    (``smooth`` pixels, at the input size) and clipped at the ``percentile``-th
    percentile before scaling to 0-1: raw gradients are dominated by a few
    pixels and look like noise without both steps.  Models without a spatial
    head (WD, EfficientNet-Lite0) use this method.

``specific=True`` shows what is particular to a tag: for ``cam`` the tag's map
minus the mean of all tags' maps (as halcy's DeepDanbooruActivationMaps does),
for ``gradient`` the gradient of ``prob[tag] - mean(prob)``.

>>> from illust2vec.semantic.explain import explain               # doctest: +SKIP
>>> result = explain(model, "miku.jpg", tags=["blue hair"])
>>> result.maps[0].method, result.maps[0].map.shape
('cam', (7, 7))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from illust2vec.runtime.reverse import spatial_map_tensor, with_outputs
from illust2vec.errors import Illust2VecError
from illust2vec.models.image_model import ImageModel
from illust2vec.semantic.imagespace import (
    content_box,
    input_grad_to_pixels,
    resize_plane,
)

__all__ = [
    "Explanation", "Method", "TagMap", "cam_maps", "default_tags", "explain", "gradient_saliency",
    "has_spatial_head", "overlay", "render_panels",
]

Method = Literal["auto", "cam", "gradient"]

#: Name of the extra graph output carrying the spatial logit maps.
CAM_OUTPUT = "tag_maps"


@dataclass(frozen=True)
class TagMap:
    """One tag's map for one picture.

    ``map``: for ``cam`` the raw (h, w) logit map (``map.mean()`` is the logit,
    unless ``specific``); for ``gradient`` an (H, W) saliency in 0-1 at the
    model's input size (cropped to the picture when the recipe pads).
    """

    tag: str
    column: int
    probability: float
    method: str
    specific: bool
    map: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tag": self.tag, "column": self.column, "probability": round(self.probability, 6),
                               "method": self.method, "specific": self.specific}
        if self.method == "cam" and not self.specific:
            out["logit"] = float(self.map.astype(np.float64).mean())
        out["map"] = self.map.astype(float).tolist()
        return out


@dataclass(frozen=True)
class Explanation:
    """The maps of several tags for one picture, with the decoded picture they belong to."""

    source: str
    image: np.ndarray  # (H, W, 3) uint8 RGB, as decoded
    maps: list[TagMap]

    def to_dict(self) -> dict[str, Any]:
        h, w = self.image.shape[:2]
        return {"file": self.source, "width": w, "height": h, "maps": [m.to_dict() for m in self.maps]}


def has_spatial_head(model: ImageModel) -> bool:
    """Whether exact class activation maps exist for this tagger (see the module docs)."""
    return model.is_tagger and _map_tensor(model) is not None


def _map_tensor(model: ImageModel) -> str | None:
    key = "_spatial_map_tensor"
    if key not in model.__dict__:
        import onnx

        src = model.onnx_source
        proto = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(str(src), load_external_data=False)
        model.__dict__[key] = spatial_map_tensor(proto, "prob")
    return model.__dict__[key]


def cam_maps(model: ImageModel, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(prob (N, T), maps (N, T, h, w))`` from one forward pass over a prepared batch."""
    tensor = _map_tensor(model) if model.is_tagger else None
    if tensor is None:
        raise Illust2VecError(
            f"{model.name} has no spatial tag maps (its head is not 'map -> average pool -> sigmoid'); "
            "use method='gradient'"
        )
    session = model.derived_session("cam", lambda proto: with_outputs(proto, {CAM_OUTPUT: tensor}))
    prob, maps = session.run(["prob", CAM_OUTPUT], {session.get_inputs()[0].name: np.asarray(batch, np.float32)})
    return np.asarray(prob, np.float32).reshape(prob.shape[0], -1), np.asarray(maps, np.float32)


def gradient_saliency(
    model: ImageModel, batch: np.ndarray, columns: Sequence[int], *, specific: bool = False,
    percentile: float = 99.0, smooth: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(prob (N, T), saliency (N, K, H, W))`` in 0-1 at the input size, one backward run per picture.

    All K tags of a picture go through the network together: the picture is
    repeated K times with one tag's weight per row.  ``percentile`` clips the
    largest values (100 keeps them); ``smooth`` is the Gaussian sigma in input
    pixels (0 turns it off).
    """
    table = model._require_tags()
    cols = np.asarray(columns, np.int64)
    n, k = batch.shape[0], len(cols)
    weights = np.zeros((k, len(table)), np.float32)
    if specific:
        weights -= 1.0 / len(table)
    weights[np.arange(k), cols] += 1.0
    maps = np.zeros((n, k, *model.recipe.size), np.float32)
    prob = np.zeros((n, len(table)), np.float32)
    for i in range(n):
        grad, outputs = model.forward_backward(np.repeat(batch[i : i + 1], k, axis=0), tag_weights=weights)
        prob[i] = outputs["prob"][0]
        pixels = np.abs(input_grad_to_pixels(grad, model.recipe)).max(axis=-1)  # (K, H, W)
        for j in range(k):
            maps[i, j] = _postprocess(pixels[j], percentile, smooth)
    return prob, maps


def _postprocess(saliency: np.ndarray, percentile: float, smooth: float) -> np.ndarray:
    s = gaussian_filter(saliency, smooth) if smooth > 0 else saliency
    top = float(np.percentile(s, percentile)) if percentile < 100 else float(s.max())
    if top <= 0:
        return np.zeros_like(s, dtype=np.float32)
    return np.clip(s / top, 0.0, 1.0).astype(np.float32)


def default_tags(model: ImageModel, prob: np.ndarray, *, threshold: float | None = None,
                 max_tags: int = 10) -> list[int]:
    """Columns of the plausible tags of one picture (model thresholds), most probable first, at most ``max_tags``."""
    thresholds = model.thresholds_for(threshold)
    cols = np.flatnonzero(prob >= thresholds)
    cols = cols[np.argsort(-prob[cols], kind="stable")]
    return [int(c) for c in cols[:max_tags]]


def explain(
    model: ImageModel,
    image: Any,
    tags: Sequence[str | int] | None = None,
    *,
    method: Method = "auto",
    specific: bool = False,
    threshold: float | None = None,
    max_tags: int = 10,
    percentile: float = 99.0,
    smooth: float = 2.0,
) -> Explanation:
    """Tag maps for one picture (path, PIL image or array).

    ``tags``: names or columns; default the plausible ones (``threshold``, else
    the model's), at most ``max_tags``.  ``method``: ``"cam"``, ``"gradient"``
    or ``"auto"`` (cam where the model has a spatial head).  ``percentile`` and
    ``smooth`` shape gradient saliency (see :func:`gradient_saliency`).
    """
    if method not in ("auto", "cam", "gradient"):
        raise Illust2VecError(f"unknown method {method!r}; choose auto, cam or gradient")
    table = model._require_tags()
    rgb = model.load(image)
    batch = model.preprocess([rgb])
    if method == "auto":
        method = "cam" if has_spatial_head(model) else "gradient"
    if method == "cam":
        prob, maps = cam_maps(model, batch)
        prob, maps = prob[0], maps[0]
    else:
        prob = model.run(batch, "prob")[0]
        maps = None
    cols = list(model.tag_columns(tags)) if tags else default_tags(model, prob, threshold=threshold,
                                                                   max_tags=max_tags)
    if method == "cam":
        base = maps.mean(axis=0) if specific else 0.0
        chosen = [maps[c] - base for c in cols]
    else:
        _, sal = gradient_saliency(model, batch, cols, specific=specific, percentile=percentile, smooth=smooth)
        top, left, bottom, right = content_box(model.recipe, *rgb.shape[:2])
        chosen = [sal[0, j, top:bottom, left:right] for j in range(len(cols))]
    result = [
        TagMap(tag=table.names[c], column=int(c), probability=float(prob[c]), method=method, specific=specific,
               map=np.asarray(m, np.float32))
        for c, m in zip(cols, chosen)
    ]
    source = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else "<image>"
    return Explanation(source=source, image=rgb, maps=result)


# -- pictures ---------------------------------------------------------------

_RAMP = np.array([  # a perceptually ordered dark-blue -> red -> yellow ramp (0 .. 1)
    [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
    [252, 255, 164],
], dtype=np.float32)


def _colorize(values: np.ndarray) -> np.ndarray:
    pos = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_RAMP) - 1)
    frac = (pos - lo)[..., None]
    return _RAMP[lo] * (1 - frac) + _RAMP[hi] * frac


def overlay(image: np.ndarray, tag_map: TagMap | np.ndarray, *, opacity: float = 0.55) -> np.ndarray:
    """The picture with a tag's map laid over it as colours, (H, W, 3) uint8.

    A ``cam`` map is scaled so that 0 is its minimum and 1 its maximum (the
    colours show where the tag's evidence is relatively strongest); a
    ``gradient`` saliency is already 0-1.
    """
    values = tag_map.map if isinstance(tag_map, TagMap) else np.asarray(tag_map, np.float32)
    h, w = image.shape[:2]
    lo, hi = float(values.min()), float(values.max())
    norm = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    heat = _colorize(resize_plane(norm.astype(np.float32), (h, w)))
    blended = image.astype(np.float32) * (1 - opacity) + heat * opacity
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def render_panels(explanation: Explanation, *, columns: int = 4, width: int = 256) -> Image.Image:
    """One picture with a labelled overlay per tag (the picture itself first)."""
    img = explanation.image
    h = max(1, round(img.shape[0] * width / img.shape[1]))
    label_h = 16
    panels = [(Image.fromarray(img), "original")]
    panels += [(Image.fromarray(overlay(img, m)), f"{m.tag} {m.probability:.2f}") for m in explanation.maps]
    cols = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // cols)
    sheet = Image.new("RGB", (cols * width, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (panel, label) in enumerate(panels):
        x, y = (i % cols) * width, (i // cols) * (h + label_h)
        sheet.paste(panel.resize((width, h), Image.Resampling.BILINEAR), (x, y + label_h))
        draw.text((x + 3, y + 2), label, fill="black")
    return sheet
