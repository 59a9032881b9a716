"""The distributor: where the runner runs, chosen by one option (:func:`distributor`).

* :class:`Local`: this process, its decode pool (a thread or worker processes)
  and ONNX Runtime (:func:`~illust2vec.pipeline.runner.run_models`);
* :class:`OnRay`: a Ray cluster (:mod:`illust2vec.distributed`): the models run
  in Ray Data actors into Parquet shards, read back here in input order.

Both yield the same :class:`~illust2vec.runtime.batches.BatchResult` stream
(``"prob"`` from the tagger, ``"feature"`` from the embedder, indices into the
sources), so the writers after them do not know which one ran.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.pipeline.runner import RunOptions, run_models
from illust2vec.runtime.batches import BatchResult, ItemError, ModelSet

OnError = Callable[[ItemError], None]


def _outputs(tagger: Any, embedder: Any) -> dict[str, Any]:
    by_output = {}
    if tagger is not None:
        by_output["prob"] = tagger
    if embedder is not None:
        by_output["feature"] = embedder
    if not by_output:
        raise ValueError("give a tagger, an embedder or both")
    return by_output


@dataclass(frozen=True)
class Local:
    """Run here: one decode per picture in the decode pool, the models in this process."""

    options: RunOptions = field(default_factory=RunOptions)

    def batches(self, sources: Sequence[Any], *, tagger: Any = None, embedder: Any = None, progress: Any = None,
                on_error: OnError | None = None) -> Iterator[BatchResult]:
        by_output = _outputs(tagger, embedder)
        models = {id(m): m for m in by_output.values()}
        model = next(iter(models.values())) if len(models) == 1 else ModelSet(by_output)
        return run_models(model, sources, outputs=tuple(by_output), options=self.options, progress=progress,
                          on_error=on_error)


@dataclass(frozen=True)
class OnRay:
    """Run on a Ray cluster (needs ``illust2vec[ray]``): shards of ``shard_size`` sources, one retry unit each."""

    address: str | None = None  #: ``None``: a local Ray runtime; ``"auto"`` or ``HOST:PORT``: a cluster
    shards: str | None = None  #: shard directory (shared by every node, or a URI); None: a temporary one
    shard_size: int | None = None  #: sources per shard (default 128)
    actors: int | None = None  #: most model actors
    actor_cpus: float = 1  #: CPUs (ONNX Runtime threads) per CPU actor
    device: str | None = None  #: the actors' device (default: the models')

    def run(self, sources: Sequence[str], directory: str, *, tagger: Any = None, embedder: Any = None,
            progress: Any = None, on_error: OnError | None = None) -> Any:
        """Run the models into shards under ``directory``; errors of shards an earlier run left are reported too."""
        from illust2vec.distributed import DEFAULT_SHARD_SIZE, ray_runtime, run_shards
        from illust2vec.distributed.shards import read_shard

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data's INFO lines would bury the error lines
        with ray_runtime(self.address or None):
            run = run_shards(sources, directory, tagger=tagger, embedder=embedder,
                             shard_size=self.shard_size or DEFAULT_SHARD_SIZE, actors=self.actors,
                             actor_cpus=self.actor_cpus, device=self.device, progress=progress, on_error=on_error)
        for name in run.reused:
            shard = read_shard(run.directory, name, {})
            for i, path, msg in zip(shard.index, shard.path, shard.error):
                if msg is not None and on_error is not None:
                    on_error(ItemError(int(i), path, msg))
        return run

    def batches(self, sources: Sequence[str], *, tagger: Any = None, embedder: Any = None, progress: Any = None,
                on_error: OnError | None = None) -> Iterator[BatchResult]:
        from illust2vec.distributed import iter_shards

        _outputs(tagger, embedder)
        with self._directory() as directory:
            self.run(sources, directory, tagger=tagger, embedder=embedder, progress=progress, on_error=on_error)
            for shard in iter_shards(directory):
                ok = np.flatnonzero(shard.ok)
                yield BatchResult([int(i) for i in shard.index[ok]], [shard.path[q] for q in ok], dict(shard.vectors))

    @contextlib.contextmanager
    def _directory(self) -> Iterator[str]:
        if self.shards:
            yield self.shards
            return
        tmp = tempfile.mkdtemp(prefix="illust2vec-shards-")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def distributor(ray: str | None = None, *, options: RunOptions | None = None, **ray_options: Any) -> Local | OnRay:
    """:class:`Local` (``ray`` ``None``) or :class:`OnRay` at address ``ray`` (``""``: a local Ray runtime)."""
    if ray is None:
        return Local(options or RunOptions())
    return OnRay(address=ray or None, **ray_options)
