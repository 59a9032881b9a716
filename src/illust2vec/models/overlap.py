"""Dropping tags implied by a more specific tag that is also present (dghs-imgutils' ``drop_overlap``).

The rule, as imgutils 0.19 defines it (``imgutils.tagging.overlap.drop_overlap_tags``),
reproduced here; a tag is dropped when

1. it is **part of another tag's text** that is present (``hair`` under ``long hair``,
   ``long_hair`` under ``very_long_hair``, ``sky`` under ``blue_sky``; a plain substring test on
   the tags as written, so ``hair`` also goes when ``chair`` is there, and a repeated tag stays), or
2. the **overlap table** lists it with a tag that is present: ``{"hair_ornament": ["hair_flower",
   "hairclip"], ...}`` drops ``hair_ornament`` when ``hair_flower`` is there (looked up with spaces
   written as underscores).

Rule 1 needs nothing.  Rule 2 needs the table imgutils downloads,
``overlap_tags_simplified.json`` of the Hugging Face dataset ``alea31415/tag_filtering``:
:func:`find_overlap_table` finds it in the Hugging Face cache (``hf download alea31415/tag_filtering
overlap_tags_simplified.json --repo-type dataset`` puts it there), or give a file of the same form.
Without a table only rule 1 applies (a subset of what imgutils drops).

>>> drop_overlap(["1girl", "solo", "long_hair", "very_long_hair", "breasts", "medium_breasts"])
['1girl', 'solo', 'very_long_hair', 'medium_breasts']
>>> drop_overlap({"hair ornament": 0.8, "hair flower": 0.6}, table={"hair_ornament": ["hair_flower"]})
{'hair flower': 0.6}
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from illust2vec.errors import ModelFormatError
from illust2vec.models.hub import HubRef, cached_file

__all__ = ["OVERLAP_DATASET", "OVERLAP_FILE", "OverlapTable", "drop_overlap", "drop_overlap_result",
           "find_overlap_table", "overlap_table", "read_overlap_table"]

#: Where imgutils gets its table (a Hugging Face dataset) and the file's name in it.
OVERLAP_DATASET = "alea31415/tag_filtering"
OVERLAP_FILE = "overlap_tags_simplified.json"

#: Tag (underscores) -> the more specific tags that imply it.
OverlapTable = Mapping[str, Sequence[str]]

T = TypeVar("T", list, dict)


def read_overlap_table(path: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """A JSON object of ``tag: [more specific tags]``; anything else is a :class:`ModelFormatError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: overlap table not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable overlap table ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ModelFormatError(f"{path}: an overlap table is a JSON object of tag -> list of tags")
    return {str(k): tuple(str(t) for t in v) for k, v in data.items()}


def find_overlap_table() -> Path | None:
    """imgutils' table in the Hugging Face cache, if it has been downloaded there (no network)."""
    return cached_file(HubRef(OVERLAP_DATASET), OVERLAP_FILE, repo_type="dataset")


def overlap_table(choice: bool | str | os.PathLike[str] | OverlapTable | None) -> OverlapTable | None:
    """The table a ``drop_overlap`` choice means: a mapping as it is, a path read, ``True`` /
    ``"auto"`` imgutils' table from the Hugging Face cache when it is there (else ``None``: the
    substring rule only), ``False`` / ``None`` nothing."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "auto":
        found = find_overlap_table()
        return read_overlap_table(found) if found is not None else None
    if isinstance(choice, Mapping):
        return choice
    return read_overlap_table(choice)  # type: ignore[arg-type]


def _kept(tags: Sequence[str], table: OverlapTable | None) -> list[bool]:
    underscored = [t.replace(" ", "_") for t in tags]
    present = set(underscored)
    keep = []
    for tag, key in zip(tags, underscored):
        implied = table is not None and key in table and not present.isdisjoint(table[key])
        inside = any(tag != other and tag in other for other in tags)
        keep.append(not (implied or inside))
    return keep


def drop_overlap(tags: T, table: OverlapTable | None = None) -> T:
    """``tags`` (a list of names, or a mapping name -> score) without the tags implied by others.

    The same type comes back, in the same order (a list keeps repeats).  ``table`` is an
    overlap table (:func:`read_overlap_table`); ``None`` applies the substring rule only.
    """
    if isinstance(tags, Mapping):
        names = list(tags)
        return {n: tags[n] for n, k in zip(names, _kept(names, table)) if k}  # type: ignore[return-value]
    names = list(tags)
    return [n for n, k in zip(names, _kept(names, table)) if k]  # type: ignore[return-value]


def drop_overlap_result(result: Mapping[str, list[tuple[str, float]]], table: OverlapTable | None = None,
                        categories: Iterable[str] = ("general",)) -> dict[str, list[tuple[str, float]]]:
    """An i2v-style result (category -> [(tag, probability)]) with :func:`drop_overlap` applied to
    ``categories`` (default the general tags, as imgutils' taggers apply it); the others unchanged."""
    wanted = set(categories)
    out: dict[str, list[tuple[str, float]]] = {}
    for cat, pairs in result.items():
        if cat not in wanted:
            out[cat] = list(pairs)
            continue
        keep = _kept([t for t, _ in pairs], table)
        out[cat] = [pair for pair, k in zip(pairs, keep) if k]
    return out
