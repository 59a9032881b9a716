"""Input recipes from the ``preprocess.json`` files that ONNX tagger exports ship.

Exports of the deepghs family (the PixAI tagger v0.9, Camie and others) describe their
preprocessing as a list of stages, torchvision's transforms written as JSON::

    {"stages": [{"type": "resize", "size": [448, 448], "interpolation": "bicubic"},
                {"type": "to_tensor"},
                {"type": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}]}

:func:`recipe_from_stages` turns such a list into an :class:`~illust2vec.prep.preprocess.InputRecipe`
(the stages' meaning, not the code that reads them elsewhere): ``convert_rgb`` (transparency on
white: what :func:`illust2vec.io.images.load_image` does by default), ``resize`` to a fixed
``[height, width]`` (squashed, as torchvision does) with Pillow's ``bilinear``/``bicubic``/
``lanczos``/``box`` filter, ``center_crop`` of the size already reached (no change), ``to_tensor``/``maybe_to_tensor``
(RGB, NCHW, values / 255) and ``normalize``.  Anything else (a resize of the shorter side
followed by a crop, a crop that cuts, ``pad_to_size``, which resizes before padding) raises :class:`ValueError` naming the stage, rather
than preprocessing differently from the model's own front-end.

>>> r = recipe_from_stages([{"type": "resize", "size": [448, 448], "interpolation": "bicubic"},
...                         {"type": "to_tensor"}, {"type": "normalize", "mean": 0.5, "std": 0.5}])
>>> r.size, r.layout, r.resize, r.mean, r.std
((448, 448), 'NCHW', 'pil-bicubic', (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from illust2vec.prep.preprocess import InputRecipe

__all__ = ["recipe_from_stages"]

_FILTERS = {"bilinear": "pil-bilinear", "bicubic": "pil-bicubic", "lanczos": "pil-lanczos", "box": "pil-area"}


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return (int(value[0]), int(value[0]))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{what}: size {value!r} is not N or [height, width]")


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) in (1, 3):
        vals = tuple(float(v) for v in value)
        return vals * 3 if len(vals) == 1 else vals  # type: ignore[return-value]
    raise ValueError(f"{what}: expected one or three values, not {value!r}")


def recipe_from_stages(stages: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> InputRecipe:
    """The :class:`InputRecipe` of a ``preprocess.json`` stage list (or the whole file's mapping)."""
    if isinstance(stages, Mapping):
        stages = stages.get("stages", stages.get("test", []))  # type: ignore[assignment]
    if not isinstance(stages, Sequence) or not stages:
        raise ValueError("no preprocessing stages")
    size: tuple[int, int] | None = None
    resize = "pil-bilinear"
    tensor = False
    mean = std = None
    for i, stage in enumerate(stages):
        kind = stage.get("type") if isinstance(stage, Mapping) else None
        where = f"stage {i + 1} ({kind})"
        if kind == "convert_rgb":
            background = stage.get("force_background", "white")
            if background not in ("white", None):
                raise ValueError(f"{where}: background {background!r} is not supported (white only)")
        elif kind == "resize":
            raw = stage.get("size")
            if isinstance(raw, int) or (isinstance(raw, (list, tuple)) and len(raw) == 1):
                raise ValueError(f"{where}: resizing the shorter side to {raw} (keeping the aspect ratio) "
                                 "is not supported; only a fixed [height, width]")
            if size is not None:
                raise ValueError(f"{where}: a second resize is not supported")
            size = _pair(raw, where)
            interp = str(stage.get("interpolation", "bilinear")).lower()
            if interp not in _FILTERS:
                raise ValueError(f"{where}: interpolation {interp!r} is not supported ({', '.join(_FILTERS)})")
            resize = _FILTERS[interp]
        elif kind == "center_crop":
            crop = _pair(stage.get("size"), where)
            if size is None or crop != size:
                raise ValueError(f"{where}: a crop to {list(crop)} that cuts the picture is not supported")
        elif kind in ("to_tensor", "maybe_to_tensor"):
            tensor = True
        elif kind == "normalize":
            mean, std = _triple(stage.get("mean"), where), _triple(stage.get("std"), where)
        else:
            raise ValueError(f"{where}: unknown stage type {kind!r}")
    if size is None:
        raise ValueError("no resize stage: the input size is not known")
    if not tensor:
        raise ValueError("no to_tensor stage")
    return InputRecipe(size=size, layout="NCHW", channel_order="RGB", scale=1.0 / 255.0, mean=mean, std=std,
                       resize=resize)  # type: ignore[arg-type]
