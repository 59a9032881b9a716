"""Tools for people who build tagged training sets: caption files and tag statistics.

* :mod:`illust2vec.datasets.captions` — :class:`CaptionOptions` and :func:`make_caption`
  (one image's tags -> one caption line, with the options of kohya-ss' tagger script and
  the WD14 web UI extension), and the caption file plan that never overwrites an input.
* :mod:`illust2vec.datasets.tagstats` — tag frequencies over a run or a collection.
"""
from __future__ import annotations

from illust2vec.datasets.captions import (
    CaptionClash,
    CaptionOptions,
    CaptionPlan,
    make_caption,
    plan_captions,
    write_caption,
)
from illust2vec.datasets.tagstats import TagStats, tag_statistics

__all__ = [
    "CaptionClash",
    "CaptionOptions",
    "CaptionPlan",
    "TagStats",
    "make_caption",
    "plan_captions",
    "tag_statistics",
    "write_caption",
]
