"""Shards into a collection (``illust2vec index --from-shards DIR --db COLL``), one shard at a time.

The shards' results go through the collection's store like any other
producer's (:meth:`~illust2vec.collection.store.WriteSession.append`): one
batch per shard, so memory stays bounded by one shard and an interrupted
merge resumes where it stopped (paths already recorded with the same content
are skipped).
"""
from __future__ import annotations

import os
from typing import Any

from illust2vec.collection import AddReport, Collection
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.store import ItemBatch, ModelRecord
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
    merging the same shards twice adds nothing.  The shards' tagger is added
    to the collection when it is new; a stored tagger the shards do not carry
    falls behind (:attr:`AddReport.lagging`): the next local ``index`` tags
    the merged pictures with it.
    """
    from illust2vec.runtime.progress import progress_counter

    embedder, tagger = shard_models(directory)
    manifest = read_manifest(os.fspath(directory)) or {}
    with col.store.writing(embedder=embedder, taggers=[tagger] if tagger is not None else []) as w:
        step, close = progress_counter(progress, label="merging", unit="img", total=manifest.get("n_inputs"),
                                       leave=True)
        try:
            for s in iter_shards(directory):
                w.append(ItemBatch(  # the shard's vectors hold its good rows, in order: one item each
                    paths=s.path, sizes=s.size, mtimes_ns=s.mtime_ns, sha256=s.sha256, errors=s.error,
                    features=s.vectors["feature"], codes=s.vectors["codes"],
                    probs={tagger.identity: s.vectors["prob"]} if tagger is not None else None,
                ))
                step(len(s.path))
        finally:
            close()
    return w.report
