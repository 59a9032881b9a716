"""Scale-out on a Ray cluster: the library's own stages as Ray Data tasks and actors, writing Parquet shards.

* :func:`run_shards` runs a tagger and/or an embedder over many sources
  (local paths, list files, ``s3://``/``gs://`` URIs) on the connected Ray
  cluster (:func:`ray_runtime`) and writes one Parquet shard per slice of
  the inputs, resumable and exactly once per input.
* :func:`iter_shards` reads a finished run back in input order.
* :func:`index_shards` (``illust2vec index
  --from-shards``) turns shards into a collection.

Needs the ``ray`` extra: ``pip install 'illust2vec[ray]'``.
"""
from __future__ import annotations

from illust2vec.distributed.runner import DEFAULT_SHARD_SIZE, RunReport, ray_runtime, require_ray, run_shards
from illust2vec.distributed.merge import index_shards, shard_models
from illust2vec.distributed.shards import ShardRows, iter_shards, read_manifest
from illust2vec.distributed.sources import expand_sources

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "RunReport",
    "ShardRows",
    "expand_sources",
    "index_shards",
    "iter_shards",
    "ray_runtime",
    "read_manifest",
    "require_ray",
    "run_shards",
    "shard_models",
]
