"""Tag tables and the i2v-compatible result structures built from probabilities.

A :class:`TagTable` holds tag names and a category per tag; categories are data
(from the model's tag file and its zoo record), never hard-coded slices.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from illust2vec.errors import Illust2VecError, ModelFormatError
from illust2vec.models.compat import THRESHOLD_COMPARES, ThresholdCompare

#: Category order of illustration2vec's tag list: (name, count) blocks in file order.
I2V_LAYOUT: tuple[tuple[str, int], ...] = (("general", 512), ("character", 512), ("copyright", 512), ("rating", 3))

#: Categories that are reported whole (sorted) rather than thresholded, as in i2v.
UNTHRESHOLDED = frozenset({"rating"})

THRESHOLD_RULES = ("constant", "f0.5", "f1", "f2")


TagList = list[tuple[str, float]]

#: Emoticon tags whose underscores are part of the tag: every display and caption rule keeps them as they are.
KAOMOJI: frozenset[str] = frozenset({
    "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
    ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
})


#: Largest tag list read (decompressed); i2v's has 1,539 tags in about 25 KB.
MAX_TAG_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class TagTable:
    """Names and categories of a model's outputs, index-aligned with its probability vector."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.categories):
            raise ValueError("names and categories must have the same length")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def category_names(self) -> tuple[str, ...]:
        """Distinct categories in order of first appearance."""
        return tuple(dict.fromkeys(self.categories))

    def indices(self, category: str) -> np.ndarray:
        """Columns of ``category``, ascending (computed once per table; read-only)."""
        cache = self.__dict__.get("_indices_cache")
        if cache is None:
            cats = np.asarray(self.categories)
            cache = {c: np.flatnonzero(cats == c) for c in self.category_names}
            for a in cache.values():
                a.setflags(write=False)
            object.__setattr__(self, "_indices_cache", cache)
        found = cache.get(category)
        return found if found is not None else np.zeros(0, dtype=np.intp)

    @property
    def name_array(self) -> np.ndarray:
        """The names as a read-only object array (for fancy indexing)."""
        cached = self.__dict__.get("_name_array")
        if cached is None:
            cached = np.asarray(self.names, dtype=object)
            cached.setflags(write=False)
            object.__setattr__(self, "_name_array", cached)
        return cached

    def index(self, tag: str) -> int:
        try:
            return self._index[tag]
        except KeyError:
            alt = tag.replace("_", " ") if "_" in tag else tag.replace(" ", "_")
            if alt in self._index:
                return self._index[alt]
            raise Illust2VecError(
                f"unknown tag {tag!r}: this model has {len(self)} tags; "
                "run 'illust2vec models tags NAME' to list them"
            ) from None

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {name: i for i, name in enumerate(self.names)}
            object.__setattr__(self, "_index_cache", cached)
        return cached

    @classmethod
    def from_layout(cls, names: Sequence[str], layout: Sequence[tuple[str, int]]) -> TagTable:
        total = sum(n for _, n in layout)
        if len(names) != total:
            raise ModelFormatError(
                f"the tag list has {len(names)} tags but the model layout expects {total} "
                f"({', '.join(f'{n} {c}' for c, n in layout)})"
            )
        cats: list[str] = []
        for cat, n in layout:
            cats.extend([cat] * n)
        return cls(tuple(names), tuple(cats))

    @classmethod
    def from_i2v_json(cls, path: str | os.PathLike, layout: Sequence[tuple[str, int]] = I2V_LAYOUT) -> TagTable:
        """Read illustration2vec's ``tag_list.json`` (or ``.json.gz``)."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                gz = fh.read(2) == b"\x1f\x8b"
                fh.seek(0)
                # bounded either way: a small .gz that inflates to gigabytes is refused, not unpacked
                raw = (gzip.GzipFile(fileobj=fh) if gz else fh).read(MAX_TAG_FILE_BYTES + 1)
            if len(raw) > MAX_TAG_FILE_BYTES:
                raise ModelFormatError(
                    f"{path}: tag list larger than {MAX_TAG_FILE_BYTES >> 20} MiB"
                    + (" once decompressed" if gz else "") + "; not an illustration2vec tag list"
                )
            names = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            raise ModelFormatError(f"{path}: tag list not found") from None
        except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, zlib.error) as exc:
            raise ModelFormatError(f"{path}: not a readable tag list ({type(exc).__name__}: {exc})") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelFormatError(f"{path}: expected a JSON list of tag names")
        return cls.from_layout(names, layout)


def load_thresholds(path: str | os.PathLike, n_tags: int) -> np.ndarray:
    """Read an i2v calibrated threshold file: one row per tag, columns f0.5, f1, f2."""
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: not a readable threshold file ({exc})") from None
    if table.shape != (n_tags, 3):
        raise ModelFormatError(f"{path}: expected {n_tags} rows of 3 thresholds (f0.5 f1 f2), got {table.shape}")
    return table


def top_tags(prob: np.ndarray, table: TagTable, n_tag: int = 10) -> list[dict[str, TagList]]:
    """i2v's ``estimate_top_tags`` on a probability matrix: top ``n_tag`` per category, rating whole."""
    prob = np.asarray(prob)
    results: list[dict[str, TagList]] = [{} for _ in range(prob.shape[0])]
    names = np.asarray(table.names, dtype=object)
    for cat in table.category_names:
        idx = table.indices(cat)
        sub = prob[:, idx]
        order = np.argsort(-sub, axis=1, kind="stable")
        if cat not in UNTHRESHOLDED:
            order = order[:, :n_tag]
        for i, res in enumerate(results):
            cols = order[i]
            res[cat] = list(zip(names[idx[cols]].tolist(), sub[i, cols].tolist()))
    return results


def resolve_thresholds(
    table: TagTable,
    threshold: float | Mapping[str, float] | np.ndarray,
    *,
    compare: ThresholdCompare = "gt",
    float32: bool = False,
) -> np.ndarray:
    """One threshold per tag from a constant, a per-category mapping or a per-tag array.

    The result is what :func:`plausible_tags` compares with ``>``.  ``compare="ge"`` keeps
    tags whose probability equals the threshold too (kohya-ss' tagger, the WD14 web UI
    extension): each threshold becomes the next smaller double, and ``p > t'`` is exactly
    ``p >= t``.  ``float32=True`` first rounds each threshold to float32, which is how
    numpy >= 2 compares a float32 probability with a Python float (kohya-ss' script).
    A threshold above 1 keeps no tag (kohya-ss' way of turning a category off).
    """
    if compare not in THRESHOLD_COMPARES:
        raise Illust2VecError(f"compare must be one of {', '.join(THRESHOLD_COMPARES)}, not {compare!r}")
    if isinstance(threshold, np.ndarray):
        if threshold.shape != (len(table),):
            raise Illust2VecError(f"per-tag thresholds must have shape ({len(table)},), got {threshold.shape}")
        out = threshold.astype(np.float64)
    elif isinstance(threshold, Mapping):
        unknown = set(threshold) - set(table.category_names) - {"default"}
        if unknown:
            raise Illust2VecError(
                f"unknown tag categories {sorted(unknown)}; this model has {', '.join(table.category_names)}"
            )
        default = float(threshold.get("default", 0.25))
        out = np.array([float(threshold.get(c, default)) for c in table.categories], dtype=np.float64)
    else:
        out = np.full(len(table), float(threshold), dtype=np.float64)
    if float32:
        out = out.astype(np.float32).astype(np.float64)
    if compare == "ge":
        out = np.nextafter(out, -np.inf)
    return out


def plausible_tags(prob: np.ndarray, table: TagTable, thresholds: np.ndarray) -> list[dict[str, TagList]]:
    """Tags whose probability is strictly above their threshold, per category, sorted by probability.

    The rating category is returned whole and sorted, as i2v does.
    """
    prob = np.asarray(prob)
    names = table.name_array
    results: list[dict[str, TagList]] = [{} for _ in range(prob.shape[0])]
    for cat in table.category_names:
        idx = table.indices(cat)
        sub = prob[:, idx]
        keep = None if cat in UNTHRESHOLDED else sub > np.asarray(thresholds)[idx]
        for i, res in enumerate(results):
            # the kept columns (ascending), then a stable sort: ties stay in column order
            cols = np.arange(len(idx)) if keep is None else np.flatnonzero(keep[i])
            vals = sub[i, cols]
            order = np.argsort(-vals, kind="stable")
            res[cat] = list(zip(names[idx[cols[order]]].tolist(), vals[order].tolist()))
    return results


def specific_tags(prob: np.ndarray, table: TagTable, tags: Sequence[str]) -> list[dict[str, float]]:
    """i2v's ``estimate_specific_tags``: the probability of each named tag, per image."""
    cols = [table.index(t) for t in tags]
    prob = np.asarray(prob)
    return [{t: float(prob[i, c]) for t, c in zip(tags, cols)} for i in range(prob.shape[0])]


#: MCut never keeps a character tag below this probability (as the WD front-ends do).
MCUT_CHARACTER_FLOOR = 0.15


def mcut_thresholds(
    prob: np.ndarray,
    table: TagTable,
    *,
    categories: Sequence[str] | None = None,
    character_floor: float = MCUT_CHARACTER_FLOOR,
) -> np.ndarray:
    """Per-image, per-tag thresholds by Maximum Cut Thresholding (MCut).

    For each image and each category in ``categories``, the category's
    probabilities are sorted and the threshold is the midpoint of the largest
    gap between neighbours; tags strictly above it are kept.  Other categories
    get threshold 0 (ratings are reported whole anyway).  Returns an (N, T) array.
    """
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] != len(table):
        raise Illust2VecError(f"probabilities of shape {prob.shape} do not match {len(table)} tags")
    out = np.zeros_like(prob)
    if categories is None:
        categories = [c for c in table.category_names if c not in UNTHRESHOLDED]
    for cat in categories:
        idx = table.indices(cat)
        if idx.size == 0:
            continue
        sub = -np.sort(-prob[:, idx], axis=1)  # descending
        if idx.size < 2:
            thr = np.full(prob.shape[0], 0.5)
        else:
            gaps = sub[:, :-1] - sub[:, 1:]
            k = np.argmax(gaps, axis=1)
            rows = np.arange(prob.shape[0])
            thr = (sub[rows, k] + sub[rows, k + 1]) / 2
        if cat == "character":
            thr = np.maximum(thr, character_floor)
        out[:, idx] = thr[:, None]
    return out


def plausible_tags_mcut(prob: np.ndarray, table: TagTable, **kwargs: Any) -> list[dict[str, list[tuple[str, float]]]]:
    """i2v-style results (category -> [(tag, prob)], sorted) with MCut thresholds per image."""
    prob = np.asarray(prob)
    thr = mcut_thresholds(prob, table, **kwargs)
    return [plausible_tags(prob[i : i + 1], table, thr[i])[0] for i in range(prob.shape[0])]
