"""Run the collection's models over files: one decode per picture, inference in batches.

This is :func:`illust2vec.runtime.batches.iter_batches` over one
:class:`~illust2vec.runtime.batches.ModelSet` (the embedder's ``feature`` and
each tagger's ``prob`` under a name of its own): every picture is decoded once,
in the decode pool, and prepared once per distinct input recipe (the two i2v
models share one prepared batch; a WD tagger beside the i2v embedder gets its
own from the same decode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from illust2vec.runtime.batches import ModelSet, iter_batches


@dataclass
class InferBatch:
    """Results for some of the input paths (``indices`` into the input list)."""

    indices: list[int]
    features: np.ndarray | None  # (n, D) float32; None when no embedder ran
    probs: list[np.ndarray]  # one (n, T) float32 array per tagger, in the order given
    errors: list[tuple[int, str]] = field(default_factory=list)


class _Outputs:
    """One model seen through other output names, so that it can sit in a :class:`ModelSet` beside others
    (two taggers both call their output ``"prob"``)."""

    def __init__(self, model, names: dict[str, str]) -> None:
        self.model, self.names = model, dict(names)  # our name -> the model's output
        self.recipe, self.alpha, self.batch_size = model.recipe, model.alpha, model.batch_size
        self.input_dtype = getattr(model, "input_dtype", np.dtype(np.float32))
        self.name = getattr(model, "name", "model")

    def run_all(self, batch: np.ndarray, outputs=None) -> dict[str, np.ndarray]:
        wanted = list(outputs or self.names)
        got = self.model.run_all(batch, list(dict.fromkeys(self.names[n] for n in wanted)))
        return {n: got[self.names[n]] for n in wanted}


def model_set(embedder, taggers: Sequence) -> ModelSet:
    """One :class:`ModelSet` running the embedder (``"feature"``) and tagger ``i`` (``"prob<i>"``) over one
    decode per picture."""
    groups: dict[int, tuple[object, dict[str, str]]] = {}
    if embedder is not None:
        groups[id(embedder)] = (embedder, {"feature": "feature"})
    for i, t in enumerate(taggers):
        groups.setdefault(id(t), (t, {}))[1][f"prob{i}"] = "prob"
    return ModelSet({name: wrapper for wrapper in (_Outputs(m, names) for m, names in groups.values())
                     for name in wrapper.names})


def binarize(model, features: np.ndarray) -> np.ndarray:
    """Binary codes (packed bits, uint8) for ``features`` the way ``model`` defines them.

    Uses the model's ``binarize_features`` when it has one; otherwise i2v's
    rule, ``packbits(sigmoid(f) > 0.5)``, i.e. ``f > 0``.
    """
    fn = getattr(model, "binarize_features", None)
    if callable(fn):
        return np.asarray(fn(features), dtype=np.uint8)
    return np.packbits(np.asarray(features) > 0, axis=1)


def infer(
    paths: Sequence[str],
    embedder,
    taggers: Sequence = (),
    *,
    batch_size: int = 32,
    workers: int | None = None,
) -> Iterator[InferBatch]:
    """Features of ``embedder`` (``None``: none) and the probabilities of each of ``taggers`` for ``paths``,
    batch by batch, in input order, errors per item.  Every image is decoded once."""
    paths = [str(p) for p in paths]
    taggers = list(taggers)
    if embedder is None and not taggers:
        raise ValueError("infer needs an embedder or a tagger")
    model = model_set(embedder, taggers)
    for res in iter_batches(model, paths, batch_size=batch_size, workers=workers, outputs=model.outputs):
        errors = [(int(e.index), str(e.message)) for e in res.errors]
        idx = [int(i) for i in res.indices]
        n = len(idx)
        feats = (np.asarray(res.outputs["feature"], dtype=np.float32).reshape(n, -1)
                 if embedder is not None and n else None)
        probs = [np.asarray(res.outputs[f"prob{i}"], dtype=np.float32).reshape(n, -1) if n else
                 np.zeros((0, len(t.tags.names)), np.float32) for i, t in enumerate(taggers)]
        yield InferBatch(idx, feats, probs, errors)
