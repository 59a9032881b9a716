"""Measuring the semantic tools against ground truth: attribute precision, and morphs through pixel blends.

* :func:`attribute_precision`: for one attribute (tag), every item that does
  not carry it is a query; the share of its top ``k`` results (the query
  itself left out) that carry the attribute, with plain search and with
  ``plus=attribute``, and how many of the query's other attributes the
  results keep.
* :func:`pixel_blends` and :func:`morph_recovers`: pictures mixed pixel by
  pixel between two pictures; a morph between the two through as many steps
  as there are blends should return the blends, in order.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.semantic.attributes import Labels, attribute_search
from illust2vec.semantic.morph import MorphResult, morph


@dataclass
class AttributeScore:
    """Mean over the queries of the share of the top ``k`` results that carry ``tag`` (plain / with ``plus``).

    ``kept_*``: mean share of the results that carry each of the query's
    other tags (those not in ``tag``'s exclusive group).
    """

    tag: str
    queries: int
    k: int
    ceiling: float  # best possible share: items carrying the tag / k, at most 1
    plain: float
    plus: float
    kept_plain: float
    kept_plus: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def attribute_precision(col, truth: Mapping[str, Iterable[str]], tag: str, *, k: int = 10, strength: float = 1.0,
                        labels: Labels = None, exclusive: Sequence[Iterable[str]] = (), binary: bool = False,
                        max_queries: int | None = None, queries: Iterable[str] | None = None) -> AttributeScore:
    """Precision@``k`` of ``tag`` for plain search and for ``plus=tag``; see the module docstring.

    Args:
        col: the collection.
        truth: ``{path: tags}`` of the collection's files (the ground truth).
        tag: the attribute added.
        labels: the tag source for directions (default: the collection's tagger).
        exclusive: groups of mutually exclusive tags (hair colours...): the
            query's tags in ``tag``'s group are not expected to be kept.
        max_queries: use only the first ``max_queries`` queries (file order).
        queries: query only these files (default: every file of ``truth``);
            files carrying ``tag`` are always left out.
    """
    truth = {str(Path(p).resolve()): set(t) for p, t in truth.items()}
    group = next((set(g) for g in exclusive if tag in set(g)), {tag})
    pool = truth if queries is None else {str(Path(q).resolve()) for q in queries}
    queries = sorted(p for p, t in truth.items() if tag not in t and p in pool)[:max_queries]
    acc = np.zeros(4)
    used = 0
    for q in queries:
        row = col.row_of_path(q)
        if row is None:
            continue
        others = truth[q] - group - {tag}
        res = []
        for hits in (col.search(image=q, k=k + 1, binary=binary),
                     attribute_search(col, q, plus=[tag], k=k + 1, binary=binary, strength=strength, labels=labels)):
            hits = [h for h in hits if h.row != row][:k]
            carry = [truth.get(h.path, set()) for h in hits]
            res.append(np.mean([tag in c for c in carry]) if carry else 0.0)
            res.append(np.mean([[o in c for c in carry] for o in others]) if others and carry else 1.0)
        acc += [res[0], res[2], res[1], res[3]]
        used += 1
    acc /= max(used, 1)
    ceiling = min(1.0, sum(tag in t for t in truth.values()) / k)
    return AttributeScore(tag, used, k, ceiling, float(acc[0]), float(acc[1]), float(acc[2]), float(acc[3]))


def pixel_blends(a: str | os.PathLike, b: str | os.PathLike, count: int, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``count`` pictures ``(1 - t) a + t b`` for evenly spaced ``t`` in (0, 1) to ``out_dir``; returns them in order.

    ``b`` is resized to ``a``'s size.  Files are named ``blend_01.png``...
    """
    from PIL import Image

    from illust2vec.io.images import load_image

    xa = load_image(a).astype(np.float32)
    with Image.fromarray(load_image(b)) as im:
        xb = np.asarray(im.resize((xa.shape[1], xa.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, count + 1):
        t = i / (count + 1)
        p = out / f"blend_{i:02d}.png"
        Image.fromarray(np.clip((1 - t) * xa + t * xb + 0.5, 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def morph_recovers(col, a, b, blends: Sequence[str | os.PathLike], **kw) -> tuple[bool, MorphResult]:
    """Whether :func:`morph` from ``a`` to ``b`` through ``len(blends)`` steps returns exactly ``blends``, in order."""
    r = morph(col, a, b, steps=len(blends), **kw)
    want = [str(Path(p).resolve()) for p in blends]
    return [s.path for s in r.intermediates] == want, r
