"""Run the collection's models over files: decode in worker processes, infer in batches.

This is :func:`illust2vec.runtime.batches.iter_batches` (decode and preprocess in
workers while the network runs).  Taggers whose input recipe equals the
embedder's (the two i2v models) share the preprocessed batch (one
:class:`~illust2vec.runtime.batches.ModelSet`, each tagger's ``prob`` output
under a name of its own); models with different recipes get the decoded
images (decoded once, in worker processes) and preprocess them themselves.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
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


def model_set(embedder, taggers: Sequence) -> ModelSet | None:
    """One :class:`ModelSet` running the embedder (``"feature"``) and tagger ``i`` (``"prob<i>"``) on one
    prepared batch, when they all take the same input; ``None`` otherwise."""
    models = ([embedder] if embedder is not None else []) + list(taggers)
    if not ModelSet.shares_input(*models):
        return None
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


def _decode(path: str):
    from illust2vec.io.images import load_image

    try:
        return load_image(path), None
    except Exception as exc:  # one bad file must not stop the run
        msg = str(exc) or type(exc).__name__
        return None, msg


def _decoded_batches(paths: Sequence[str], batch_size: int, workers: int | None) -> Iterator[list[tuple[int, object, str | None]]]:
    """Batches of ``(index, image|None, error|None)``, decoded ahead in worker processes."""
    workers = workers if workers is not None else max(1, min(4, (os.cpu_count() or 2) - 1))
    if workers <= 0:
        for i in range(0, len(paths), batch_size):
            yield [(j, *_decode(paths[j])) for j in range(i, min(i + batch_size, len(paths)))]
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[int, Future]] = deque()
        nxt = 0
        window = batch_size * 3
        batch: list[tuple[int, object, str | None]] = []
        while nxt < len(paths) or pending:
            while nxt < len(paths) and len(pending) < window:
                pending.append((nxt, pool.submit(_decode, paths[nxt])))
                nxt += 1
            j, fut = pending.popleft()
            batch.append((j, *fut.result()))
            if len(batch) == batch_size or (nxt == len(paths) and not pending):
                yield batch
                batch = []


def _run_models(embedder, taggers: Sequence, images: list) -> tuple[np.ndarray | None, list[np.ndarray]]:
    feats = None if embedder is None else np.asarray(embedder.extract_feature(images), dtype=np.float32)
    return feats, [np.asarray(t.predict_proba(images), dtype=np.float32) for t in taggers]


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
    if model is not None:
        outputs = tuple(model.outputs)
        for res in iter_batches(model, paths, batch_size=batch_size, workers=workers, outputs=outputs):
            errors = [(int(e.index), str(e.message)) for e in res.errors]
            idx = [int(i) for i in res.indices]
            n = len(idx)
            feats = (np.asarray(res.outputs["feature"], dtype=np.float32).reshape(n, -1)
                     if embedder is not None and n else None)
            probs = [np.asarray(res.outputs[f"prob{i}"], dtype=np.float32).reshape(n, -1) if n else
                     np.zeros((0, len(t.tags.names)), np.float32) for i, t in enumerate(taggers)]
            yield InferBatch(idx, feats, probs, errors)
        return
    for batch in _decoded_batches(paths, batch_size, workers):
        ok = [(j, img) for j, img, err in batch if err is None]
        errors = [(j, err) for j, img, err in batch if err is not None]
        if ok:
            try:
                feats, probs = _run_models(embedder, taggers, [img for _, img in ok])
            except Exception:
                # find the culprit(s) one by one so the rest of the batch survives
                good, fl, pl = [], [], []
                for j, img in ok:
                    try:
                        f, p = _run_models(embedder, taggers, [img])
                    except Exception as exc:
                        errors.append((j, f"inference failed: {exc}"))
                        continue
                    good.append((j, img))
                    fl.append(f)
                    pl.append(p)
                ok = good
                feats = np.concatenate(fl) if (fl and embedder is not None) else None
                probs = [np.concatenate([p[i] for p in pl]) for i in range(len(taggers))] if pl else []
            if ok:
                yield InferBatch([j for j, _ in ok], feats, probs, sorted(errors))
                continue
        yield InferBatch([], None, [np.zeros((0, len(t.tags.names)), np.float32) for t in taggers], sorted(errors))
