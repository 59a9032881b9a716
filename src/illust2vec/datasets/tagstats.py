"""Tag frequencies over a run of ``tag`` or over a collection (what kohya's ``--frequency_tags`` prints, and more).

For every (category, tag): how many images have it, the share of images that have it,
and its mean probability over those images.  An image "has" a tag when it is among the
tags reported for it (above the threshold); for the ``rating`` category, which is
reported whole, only the most probable rating of each image counts.

Examples
--------
>>> from illust2vec.datasets.tagstats import tag_statistics
>>> stats = tag_statistics([{"general": [("smile", 0.9)]}, {"general": [("smile", 0.7), ("hat", 0.6)]}])
>>> [(r.tag, r.count, r.share, round(r.mean_probability, 2)) for r in stats.rows]
[('smile', 2, 1.0, 0.8), ('hat', 1, 0.5, 0.6)]
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write
from illust2vec.models.tags import UNTHRESHOLDED, TagTable, plausible_tags, resolve_thresholds

__all__ = ["TagCounter", "TagStat", "TagStats", "collection_tag_statistics", "read_tag_records", "tag_statistics"]


@dataclass(frozen=True)
class TagStat:
    """One row of the report."""

    category: str
    tag: str
    count: int               # images that have the tag
    share: float             # count / images
    mean_probability: float  # over the images that have it


@dataclass
class TagStats:
    """Tag frequencies over ``images`` images; ``rows`` by category (first seen first), then count, then name."""

    images: int
    rows: list[TagStat] = field(default_factory=list)

    def top(self, n: int | None = None, category: str | None = None) -> list[TagStat]:
        """The ``n`` most frequent rows (of one category, or all categories but rating)."""
        rows = [r for r in self.rows if (r.category == category if category else r.category not in UNTHRESHOLDED)]
        rows.sort(key=lambda r: (-r.count, -r.mean_probability, r.tag))
        return rows if n is None else rows[:n]

    def table(self, top: int | None = 20) -> str:
        """A plain-text table per category (the ``top`` most frequent tags of each)."""
        lines = [f"{self.images} image{'s' if self.images != 1 else ''}"]
        categories = list(dict.fromkeys(r.category for r in self.rows))
        width = max([len(r.tag) for r in self.rows] + [3])
        width = min(width, 40)
        for cat in categories:
            rows = self.top(top, cat)
            total = sum(1 for r in self.rows if r.category == cat)
            lines.append("")
            lines.append(f"{cat} ({total} distinct tag{'s' if total != 1 else ''})")
            lines.append(f"  {'tag':<{width}}  {'count':>7}  {'share':>6}  {'mean p':>6}")
            for r in rows:
                lines.append(f"  {r.tag:<{width}}  {r.count:>7}  {r.share:>6.1%}  {r.mean_probability:>6.3f}")
            if top is not None and total > top:
                lines.append(f"  ... {total - top} more")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"images": self.images, "tags": [asdict(r) for r in self.rows]},
                          ensure_ascii=False, indent=1) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["category", "tag", "count", "share", "mean_probability"])
        for r in self.rows:
            w.writerow([r.category, r.tag, r.count, f"{r.share:.6f}", f"{r.mean_probability:.6f}"])
        return buf.getvalue()

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``.json`` or ``.csv`` (by suffix), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = self.to_json()
        elif suffix == ".csv":
            text = self.to_csv()
        else:
            raise Illust2VecError(f"{path}: tag statistics are written as .csv or .json, not {suffix or 'no suffix'}")
        return atomic_write(path, lambda fh: fh.write(text), text=True, newline="")

    def chart(self, path: str | os.PathLike, top: int = 30, category: str | None = None) -> Path:
        """A horizontal bar chart PNG of the ``top`` most frequent tags (share of images)."""
        from illust2vec.io.drawing import bar_chart

        rows = self.top(top, category)
        title = f"top {len(rows)} tags of {self.images} images" + (f" ({category})" if category else "")
        palette = {"general": (70, 130, 180), "character": (200, 80, 80), "copyright": (120, 90, 190),
                   "rating": (120, 120, 120)}
        bars = [(r.tag, r.share, f"{r.count} ({r.share:.0%})", palette.get(r.category, (90, 160, 90))) for r in rows]
        img = bar_chart(bars, title)
        return atomic_write(Path(path), lambda fh: img.save(fh, format="PNG"))


class TagCounter:
    """Accumulates results one image at a time (for a streaming run); :meth:`stats` gives the report."""

    def __init__(self) -> None:
        self.images = 0
        self._count: dict[tuple[str, str], int] = {}
        self._sum: dict[tuple[str, str], float] = {}

    def add(self, result: Mapping[str, Any]) -> None:
        """One image's reported tags (``{category: [(tag, p), ...]}``, or a ``tag --format json`` record)."""
        tags = result.get("tags") if isinstance(result.get("tags"), Mapping) else result
        self.images += 1
        for cat, value in tags.items():
            pairs = list(value.items()) if isinstance(value, Mapping) else list(value)
            if cat in UNTHRESHOLDED:
                pairs = sorted(pairs, key=lambda tp: -float(tp[1]))[:1]
            for tag, p in pairs:
                key = (str(cat), str(tag))
                self._count[key] = self._count.get(key, 0) + 1
                self._sum[key] = self._sum.get(key, 0.0) + float(p)

    def stats(self) -> TagStats:
        order = {c: i for i, c in enumerate(dict.fromkeys(cat for cat, _ in self._count))}
        keys = sorted(self._count, key=lambda k: (order[k[0]], -self._count[k], k[1]))
        n = max(self.images, 1)
        return TagStats(self.images, [
            TagStat(cat, tag, self._count[(cat, tag)], self._count[(cat, tag)] / n,
                    self._sum[(cat, tag)] / self._count[(cat, tag)])
            for cat, tag in keys
        ])


def tag_statistics(results: Iterable[Mapping[str, Any]]) -> TagStats:
    """Tag frequencies over results (``plausible_tags`` outputs or ``tag --format json/jsonl`` records)."""
    counter = TagCounter()
    for r in results:
        counter.add(r)
    return counter.stats()


def read_tag_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``tag --format json`` (a list) or ``--format jsonl`` (one per line) file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Illust2VecError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        stripped = text.lstrip()
        if stripped.startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise Illust2VecError(f"{path}: not tag JSON or JSONL ({exc})") from None
    if not all(isinstance(r, dict) and isinstance(r.get("tags"), dict) for r in records):
        raise Illust2VecError(f"{path}: expected records with a 'tags' object, as 'illust2vec tag' writes them")
    return records


def collection_tag_statistics(col: Any, threshold: float | Mapping[str, float] = 0.5, *, tagger: str | None = None,
                              chunk: int = 4096) -> TagStats:
    """Tag frequencies over every picture of a collection that one of its taggers tagged.

    ``threshold``: one value, or per category (``{"general": 0.35, "character": 0.85}``),
    as :func:`illust2vec.models.tags.resolve_thresholds` takes it.  ``tagger``:
    whose tags (a name or identity; default: the most recently added tagger).
    User tags count: a tag the user added has probability 1.0, one the user
    removed is not counted, and user tags the tagger does not know are
    counted in category ``user``.  Pictures the tagger has no tags for (not
    tagged yet) are left out.
    """
    view = col.view
    index = view.tag_index(tagger)
    if index is None:
        raise Illust2VecError(f"{col.path}: has no tags (indexed without a tagger); add a tagger with "
                              f"'illust2vec index DIR --db {col.path} --tagger NAME'")
    table = TagTable(tuple(index.names), tuple(index.categories))
    thresholds = resolve_thresholds(table, threshold)
    rows: Sequence[int] = col.live_rows()
    counter = TagCounter()
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        prob = np.asarray(view.probs(part, tagger=tagger), dtype=np.float32)
        tagged = ~np.isnan(prob).all(axis=1) if prob.shape[1] else np.ones(len(part), bool)
        user = view.user_tags_of_rows(part)
        for row, ok, result in zip(part, tagged, plausible_tags(np.nan_to_num(prob, nan=0.0), table, thresholds)):
            if not ok:
                continue
            own = [t for t, added in user.get(int(row), {}).items() if added and not index.columns_of(t)]
            if own:
                result = {**result, "user": [(t, 1.0) for t in own]}
            counter.add(result)
    return counter.stats()
