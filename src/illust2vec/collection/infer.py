"""Run the collection's models over files: decode in worker processes, infer in batches.

This is :func:`illust2vec.runtime.batches.iter_batches` (decode and preprocess in
workers while the network runs).  A separate tagger whose input recipe equals
the embedder's (the two i2v models) shares the preprocessed batch; one with
another recipe gets the decoded images (decoded once, in worker processes)
and preprocesses them itself.
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
    features: np.ndarray  # (n, D) float32
    probs: np.ndarray | None  # (n, T) float32
    errors: list[tuple[int, str]] = field(default_factory=list)


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
    try:
        try:
            from illust2vec.io.images import load_image
        except ImportError:  # pragma: no cover - before images.py exists
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB")), None
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


def _run_models(embedder, tagger, images: list) -> tuple[np.ndarray, np.ndarray | None]:
    feats = np.asarray(embedder.extract_feature(images), dtype=np.float32)
    probs = None
    if tagger is not None:
        probs = np.asarray(tagger.predict_proba(images), dtype=np.float32)
    return feats, probs


def infer(
    paths: Sequence[str],
    embedder,
    tagger=None,
    *,
    batch_size: int = 32,
    workers: int | None = None,
) -> Iterator[InferBatch]:
    """Features (and tag probabilities) for ``paths``, batch by batch, errors per item."""
    paths = [str(p) for p in paths]

    if tagger is None or tagger is embedder:
        model, outputs = embedder, (("prob", "feature") if tagger is not None else ("feature",))
    elif ModelSet.shares_input(embedder, tagger):
        model, outputs = ModelSet({"feature": embedder, "prob": tagger}), ("prob", "feature")
    else:
        model = None
    if model is not None:
        for res in iter_batches(model, paths, batch_size=batch_size, workers=workers, outputs=outputs):
            errors = [(int(e.index), str(e.message)) for e in res.errors]
            idx = [int(i) for i in res.indices]
            if not idx:
                yield InferBatch([], np.zeros((0, 0), np.float32), None, errors)
                continue
            feats = np.asarray(res.outputs["feature"], dtype=np.float32).reshape(len(idx), -1)
            probs = np.asarray(res.outputs["prob"], dtype=np.float32).reshape(len(idx), -1) if tagger is not None else None
            yield InferBatch(idx, feats, probs, errors)
        return
    for batch in _decoded_batches(paths, batch_size, workers):
        ok = [(j, img) for j, img, err in batch if err is None]
        errors = [(j, err) for j, img, err in batch if err is not None]
        if ok:
            try:
                feats, probs = _run_models(embedder, tagger, [img for _, img in ok])
            except Exception:
                # find the culprit(s) one by one so the rest of the batch survives
                good, fl, pl = [], [], []
                for j, img in ok:
                    try:
                        f, p = _run_models(embedder, tagger, [img])
                    except Exception as exc:
                        errors.append((j, f"inference failed: {exc}"))
                        continue
                    good.append((j, img))
                    fl.append(f)
                    pl.append(p)
                ok = good
                feats = np.concatenate(fl) if fl else None
                probs = np.concatenate(pl) if (pl and tagger is not None) else None
            if ok:
                yield InferBatch([j for j, _ in ok], feats, probs, errors)
                continue
        yield InferBatch([], np.zeros((0, 0), np.float32), None, errors)
