"""The caption rules of the WD14 tagger extension of the Stable Diffusion web UI (``rules="wd14-webui"``).

What the extension (toriato/stable-diffusion-webui-wd14-tagger at commit 99bf7d8,
``Interrogator.postprocess_tags`` and the batch writer of ``tagger/ui.py``) writes, rule by rule:

1. every tag but the four ratings is a candidate, whatever its category, with **one**
   threshold (default 0.35) compared as ``p >= threshold`` (the caller's thresholds);
2. **exclude** (``exclude``, "Exclude tags"): whole names as the tag file spells them
   (underscores), compared exactly;
3. **order**: most probable first (``order="confidence"``; equal probabilities keep the tag
   file's order), or ``order="alphabetical"`` by the file's names;
4. **underscores** become spaces (``underscores=False``, "Use spaces instead of underscore"),
   except in the emoticon tags of its default exclusion list, which is
   :data:`~illust2vec.models.tags.KAOMOJI`;
5. **escape** (``escape_parentheses``, "Escape brackets"): a backslash before ``\\``, ``(`` and
   ``)``; then **weights** (``weights``): ``(tag:0.8999999761581421)``, the probability as
   Python prints the double;
6. joined with ``", "``; the file has no final newline, and an existing caption is left
   alone by default (its "ignore" action; ``mode="append"`` adds ``", " + new``).

Ratings are never written by the extension; ``rating="first"``/``"last"`` and ``replace`` are
illust2vec's additions and off by default.
"""
from __future__ import annotations

from collections.abc import Mapping

from illust2vec.datasets.caption_options import CaptionOptions, display_tag, format_tag, raw_tag

__all__ = ["webui_words"]


def webui_words(tags: Mapping[str, list[tuple[str, float]]], options: CaptionOptions,
                column: Mapping[str, int] | None = None) -> list[str]:
    """One caption's tags by the extension's rules (the module docstring), formatted.

    ``column`` (each tag's position in the model's tag list) breaks ties between equal
    probabilities as the extension does; without it, the order of ``tags`` is kept.
    """
    excluded = set(options.exclude)
    replace = dict(options.replace)
    pool = [(t, p) for cat, pairs in tags.items() if cat != "rating" for t, p in pairs]
    if column:
        pool.sort(key=lambda tp: column.get(tp[0], 0))
    pool = [(t, p) for t, p in pool if raw_tag(t) not in excluded]
    if options.order == "alphabetical":
        pool.sort(key=lambda tp: raw_tag(tp[0]))
    else:
        pool.sort(key=lambda tp: -tp[1])
    words = []
    for t, p in pool:
        raw = replace.get(raw_tag(t), raw_tag(t))
        if raw:
            words.append((raw, p))
    ratings = tags.get("rating") or []
    if options.rating != "none" and ratings:
        words.insert(0 if options.rating == "first" else len(words), ratings[0])
    return [format_tag(display_tag(t, options.underscores, options.keep_underscores_in), p, options)
            for t, p in words]
