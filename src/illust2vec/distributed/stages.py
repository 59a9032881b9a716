"""The Ray Data stages of a distributed run, each a plain function or class over one shard.

A row of the dataset is one shard slice (:class:`~.shards.ShardSlice`); it
flows through three stages:

1. :func:`prepare_shard` (CPU tasks): read each source, hash its bytes,
   decode and preprocess it with :func:`illust2vec.runtime.batches.prepare_inputs`
   (the local pipeline's own per-item step) into one batch per input recipe.
2. :class:`ModelStage` (actors, one ONNX Runtime session per model per
   actor, rebuilt once from the model sent through the object store): run
   the models over the batch in the model's batch size, add binary codes.
3. :func:`write_shard_row` (CPU tasks): write the shard file atomically and
   pass on a small summary (counts and the errors) to the driver.

The stages know nothing about Ray beyond taking and returning dict rows, so
they run (and are tested) in one process too.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from illust2vec.collection.infer import binarize
from illust2vec.distributed.shards import ShardRows, write_shard
from illust2vec.distributed.sources import is_uri, read_source, stat_and_hash
from illust2vec.runtime.batches import prepare_inputs


class RunModels:
    """The models of a run by role: ``tagger`` (``prob``) and/or ``embedder`` (``feature`` + codes).

    Models with equal input recipes share one preprocessed batch.
    """

    def __init__(self, tagger=None, embedder=None) -> None:
        if tagger is None and embedder is None:
            raise ValueError("a run needs a tagger, an embedder or both")
        self.tagger, self.embedder = tagger, embedder
        models = [m for m in (tagger, embedder) if m is not None]
        self.recipes: list = []
        for m in models:
            if not any(m.recipe == r for r in self.recipes):
                self.recipes.append(m.recipe)
        self.alpha = models[0].alpha

    def recipe_slot(self, model) -> int:
        return next(i for i, r in enumerate(self.recipes) if r == model.recipe)

    def widths(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.tagger is not None:
            out["prob"] = len(self.tagger.tags)
        if self.embedder is not None:
            dim = int(self.embedder.feature_dim)
            out["feature"] = dim
            out["codes"] = int(binarize(self.embedder, np.zeros((1, dim), np.float32)).shape[1])
        return out


def prepare_shard(row: dict[str, Any], *, recipes: list, alpha: str) -> dict[str, Any]:
    """Stage 1: read, hash, decode and preprocess the sources of one shard slice."""
    sources = list(row["sources"])
    n = len(sources)
    size: list[int | None] = [None] * n
    mtime: list[int | None] = [None] * n
    sha: list[str | None] = [None] * n
    error: list[str | None] = [None] * n
    arrays: list[list[np.ndarray]] = [[] for _ in recipes]
    for j, src in enumerate(sources):
        try:
            if is_uri(src):
                data, size[j], mtime[j] = read_source(src)
                sha[j] = hashlib.sha256(data).hexdigest()
                item: Any = data
            else:
                size[j], mtime[j], sha[j] = stat_and_hash(src)
                item = src  # decoded from the path, exactly as the local pipeline does
        except OSError as exc:
            error[j] = f"cannot read file: {exc.strerror or exc}"
            continue
        got, message = prepare_inputs(item, [(recipe, alpha) for recipe in recipes])  # one decode
        if got is None:
            error[j] = message or "unknown error"
            continue
        for r, a in enumerate(got):
            arrays[r].append(a)
    out = {k: row[k] for k in ("k", "first", "name", "sources")}
    out.update(size=size, mtime_ns=mtime, sha256=sha, error=error)
    for r, recipe in enumerate(recipes):
        out[f"pixels_{r}"] = (np.stack(arrays[r]) if arrays[r]
                              else np.zeros((0, *recipe.input_shape), np.float32))
    return out


class ModelStage:
    """Stage 2 (an actor): the run's models, loaded once, over each shard's prepared batches.

    ``payload`` is ``[ObjectRef]`` of a :class:`RunModels` put in the object
    store by the driver (a list, so that Ray hands the reference over
    unresolved), or the :class:`RunModels` itself in one process.
    """

    def __init__(self, payload: Any) -> None:
        self.node = ""  # the Ray node this actor runs on (reported per shard)
        if isinstance(payload, list):
            import ray

            payload = ray.get(payload[0])
            self.node = ray.get_runtime_context().get_node_id()
        self.models: RunModels = payload

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        ms = self.models
        out = {k: v for k, v in row.items() if not k.startswith("pixels_")}
        out["node"] = self.node
        for role, name in (("tagger", "prob"), ("embedder", "feature")):
            model = getattr(ms, role)
            if model is None:
                continue
            pixels = row[f"pixels_{ms.recipe_slot(model)}"]
            step = model.batch_size
            parts = [model.run_all(pixels[i : i + step], (name,))[name] for i in range(0, len(pixels), step)]
            width = model.feature_dim if name == "feature" else len(model.tags)
            values = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
            out[name] = values
            if name == "feature":
                out["codes"] = binarize(model, values)
        return out


def write_shard_row(row: dict[str, Any], *, directory: str, widths: dict[str, int]) -> dict[str, Any]:
    """Stage 3: write the shard file; return the summary the driver reports from."""
    n = len(row["sources"])
    error = list(row["error"])
    ok = np.array([e is None for e in error], dtype=bool)
    rows = ShardRows(
        index=np.arange(row["first"], row["first"] + n, dtype=np.int64), path=list(row["sources"]),
        size=list(row["size"]), mtime_ns=list(row["mtime_ns"]), sha256=list(row["sha256"]),
        error=error, ok=ok, vectors={k: np.asarray(row[k]) for k in widths if k in row},
    )
    write_shard(directory, row["name"], rows, widths)
    bad = [j for j in range(n) if error[j] is not None]
    return {"k": row["k"], "name": row["name"], "items": n, "node": row.get("node", ""),
            "error_index": [row["first"] + j for j in bad],
            "error_source": [row["sources"][j] for j in bad],
            "error_message": [error[j] for j in bad]}
