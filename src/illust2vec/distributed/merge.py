"""Shards into a collection (``illust2vec index --from-shards DIR --db COLL``), one shard at a time."""
from __future__ import annotations

import os
from typing import Any

from illust2vec.collection import AddReport, Collection
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.ingest import ModelRecord, PrecomputedBatch, add_precomputed
from illust2vec.distributed.shards import iter_shards, read_manifest
from illust2vec.models.tags import TagTable


def _record(entry: dict[str, Any], widths: dict[str, int]) -> ModelRecord:
    tags = entry.get("tags")
    return ModelRecord(
        name=entry["name"], identity=entry["identity"], outputs=tuple(entry["outputs"]),
        binarize=entry.get("binarize", "positive"), feature_dim=entry.get("feature_dim"),
        code_bytes=widths.get("codes"),
        tags=TagTable(tuple(tags["names"]), tuple(tags["categories"])) if tags else None,
    )


def shard_models(directory: str | os.PathLike) -> tuple[ModelRecord, ModelRecord | None]:
    """``(embedder, tagger or None)`` as recorded in the manifest of a shard directory."""
    manifest = read_manifest(os.fspath(directory))
    if manifest is None:
        raise CollectionError(f"{directory}: no manifest.json here; is this a shard directory written with --ray?")
    if not manifest.get("embedder"):
        raise CollectionError(f"{directory}: these shards hold no features (a tag-only run); a collection needs "
                              "an embedder: run 'illust2vec index --ray' or 'embed --ray' instead")
    widths = {k: int(v) for k, v in manifest["widths"].items()}
    embedder = _record(manifest["embedder"], widths)
    tagger = _record(manifest["tagger"], widths) if manifest.get("tagger") else None
    return embedder, tagger


def index_shards(col: Collection, directory: str | os.PathLike, *, progress: bool = False) -> AddReport:
    """Add every row of the shards in ``directory`` to ``col`` (streaming: one shard in memory).

    Files already in the collection with the same content are skipped, so
    merging the same shards twice adds nothing.
    """
    embedder, tagger = shard_models(directory)
    manifest = read_manifest(os.fspath(directory)) or {}

    def batches():
        for s in iter_shards(directory):
            yield PrecomputedBatch(
                paths=s.path, sizes=s.size, mtimes_ns=s.mtime_ns, sha256=s.sha256, errors=s.error,
                features=s.vectors["feature"], codes=s.vectors["codes"],
                probs=s.vectors.get("prob") if tagger is not None else None,
            )

    return add_precomputed(col, batches(), embedder=embedder, tagger=tagger, progress=progress,
                           total=manifest.get("n_inputs"))
