"""What ``--compat kohya`` and ``--compat wd14-webui`` change, as plain library options.

A compat mode is the set of illust2vec options that reproduces a peer tool's captions byte
for byte: the pixel path (an :class:`~illust2vec.prep.preprocess.InputRecipe` change), the
threshold defaults and comparison (for :func:`~illust2vec.models.tags.resolve_thresholds`) and
the caption rules (:meth:`~illust2vec.datasets.caption_options.CaptionOptions.defaults_for`).
Each piece is an independent option too; a mode only sets their defaults.

================  =========================  ====================================  ==============================
piece             illust2vec (default)       kohya                                 wd14-webui
================  =========================  ====================================  ==============================
EXIF orientation  applied                    ignored                               ignored
resize            the model's (WD: bicubic)  area when shrinking, else Lanczos     area (never enlarges)
small pictures    enlarged                   enlarged                              white canvas of the input size
thresholds        the model's (WD .35/.85)   0.35 for every category               0.35 for every category
comparison        ``p > t`` (double)         ``p >= t`` (t as float32)             ``p >= t`` (double)
caption rules     illust2vec                 :mod:`~illust2vec.datasets.caption_kohya`  :mod:`~illust2vec.datasets.caption_webui`
================  =========================  ====================================  ==============================

>>> COMPAT_MODES["kohya"].resize, COMPAT_MODES["wd14-webui"].pad_to_input
('area-lanczos', True)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from illust2vec.errors import Illust2VecError, did_you_mean

if TYPE_CHECKING:
    from illust2vec.prep.preprocess import InputRecipe

__all__ = ["COMPAT_MODES", "THRESHOLD_COMPARES", "CompatMode", "ThresholdCompare", "compat_mode", "compat_recipe"]

#: How a probability is compared with its threshold: strictly above (``gt``: i2v, imgutils, the WD
#: reference front-end) or at least (``ge``: kohya-ss' tagger, the WD14 web UI extension).
ThresholdCompare = Literal["gt", "ge"]
THRESHOLD_COMPARES: tuple[str, ...] = ("gt", "ge")


@dataclass(frozen=True)
class CompatMode:
    """The defaults one peer tool implies (see the module docstring)."""

    name: str
    resize: str | None = None                 # recipe resize rule; None: the model's
    exif_orientation: str = "apply"
    pad_to_input: bool = False
    thresholds: Mapping[str, float] | None = None  # None: the model's defaults
    threshold_compare: str = "gt"
    thresholds_float32: bool = False
    caption_rules: str = "illust2vec"
    description: str = ""
    reference: str = ""  # the peer's version the rules were checked against
    notes: tuple[str, ...] = field(default=())


COMPAT_MODES: dict[str, CompatMode] = {
    "illust2vec": CompatMode("illust2vec", description="the reference preprocessing of each model"),
    "kohya": CompatMode(
        "kohya", resize="area-lanczos", exif_orientation="ignore", thresholds={"default": 0.35},
        threshold_compare="ge", thresholds_float32=True, caption_rules="kohya",
        description="kohya-ss sd-scripts finetune/tag_images_by_wd14_tagger.py",
        reference="kohya-ss/sd-scripts 48d368fa557731ad0488c07304dfeba8c07910eb (2026-02-16)",
    ),
    "wd14-webui": CompatMode(
        "wd14-webui", resize="area", exif_orientation="ignore", pad_to_input=True, thresholds={"default": 0.35},
        threshold_compare="ge", caption_rules="wd14-webui",
        description="the WD14 tagger extension of the Stable Diffusion web UI",
        reference="toriato/stable-diffusion-webui-wd14-tagger 99bf7d8132cb757edbcdfaad654f31f32f3500a5 (2023-07-17)",
    ),
}


def compat_mode(name: str | None) -> CompatMode:
    """The mode by name (``None``: illust2vec's own); an unknown name lists the valid ones."""
    if name is None:
        return COMPAT_MODES["illust2vec"]
    try:
        return COMPAT_MODES[name]
    except KeyError:
        raise Illust2VecError(f"unknown compat mode {name!r}; choose one of {', '.join(COMPAT_MODES)}"
                              + did_you_mean(name, COMPAT_MODES)) from None


def compat_recipe(recipe: InputRecipe, mode: CompatMode, *, resize: str | None = None,
                  exif_orientation: str | None = None) -> InputRecipe:
    """``recipe`` with the mode's pixel path; ``resize`` / ``exif_orientation`` given by the user win."""
    changes: dict = {}
    if resize or mode.resize:
        changes["resize"] = resize or mode.resize
    if exif_orientation or mode.exif_orientation != "apply":
        changes["exif_orientation"] = exif_orientation or mode.exif_orientation
    if mode.pad_to_input and recipe.pad_to_square:
        changes["pad_to_input"] = True
    return dataclasses.replace(recipe, **changes) if changes else recipe
