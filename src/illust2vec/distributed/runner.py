"""Run the models over many images on a Ray cluster, writing Parquet shards.

    from illust2vec import load_model
    from illust2vec.distributed import run_shards, iter_shards

    report = run_shards(["s3://bucket/danbooru/"], "s3://bucket/out/", tagger=load_model(task="tag"),
                        address="auto")
    for shard in iter_shards("s3://bucket/out/"):
        ...

The pipeline is a Ray Data dataset of shard slices going through the
stages of :mod:`.stages`: decode tasks on every node's CPUs, an autoscaling
pool of model actors (``num_gpus=1`` each on GPU nodes), and shard writers.
Ray retries the tasks and restarts the actors of a node that dies; since a
shard is written whole under a name fixed by its inputs, a retried shard
replaces itself and every input ends up in exactly one row.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.distributed.shards import (
    SHARD_FORMAT, existing_shards, plan_shards, read_manifest, write_manifest,
)
from illust2vec.distributed.stages import RunModels, ModelStage, prepare_shard, write_shard_row
from illust2vec.errors import Illust2VecError
from illust2vec.runtime.progress import progress_counter
from illust2vec.runtime.batches import ItemError

#: Inputs per shard by default: ~80 MB of preprocessed 224x224 float32 pixels in flight per shard.
DEFAULT_SHARD_SIZE = 128


def require_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise Illust2VecError("running on Ray needs Ray Data: pip install 'illust2vec[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_runtime(address: str | None = None, **init_options: Any) -> Iterator[Any]:
    """Connect to Ray for the duration of the block.

    ``address`` ``None``: start a local Ray runtime (stopped at the end);
    ``"auto"`` or ``"HOST:PORT"``/``"ray://..."``: join a running cluster.
    Where this process is already connected, that connection is used as is.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    import logging

    init_options.setdefault("logging_level", logging.WARNING)
    init_options.setdefault("include_dashboard", False)
    try:
        ray.init(address=address or None, **init_options)
    except ConnectionError as exc:
        raise Illust2VecError(f"cannot join the Ray cluster at {address!r}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


@dataclass
class RunReport:
    """What :func:`run_shards` did."""

    directory: str
    shards: list[str] = field(default_factory=list)  # every shard of the run, in input order
    reused: list[str] = field(default_factory=list)  # shards finished by an earlier run (not recomputed)
    done: int = 0  # inputs processed in this run (good and failed)
    failed: list[ItemError] = field(default_factory=list)  # this run's failed inputs
    per_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> inputs its model actors ran


def _model_entry(model) -> dict[str, Any] | None:
    if model is None:
        return None
    entry: dict[str, Any] = {"name": model.name, "identity": str(model.identity), "binarize": model.binarize,
                             "recipe": repr(model.recipe), "alpha": model.alpha, "outputs": list(model.outputs)}
    if model.tags is not None:
        entry["tags"] = {"names": list(model.tags.names), "categories": list(model.tags.categories)}
        entry["thresholds"] = dict(model.thresholds)
    if model.feature_dim:
        entry["feature_dim"] = int(model.feature_dim)
    return entry


def _for_actor(model, device: str, threads: int):
    """A copy of ``model`` that, once unpickled in an actor, opens its session with these options.

    The copy shares this process's session (it is never run here); only
    its pickled form differs.
    """
    if model is None:
        return None
    clone = object.__new__(type(model))
    clone.__dict__.update(model.__dict__)
    clone.engine_options = {**model.engine_options, "device": device, "threads": threads}
    return clone


def _check_manifest(directory: str, manifest: dict[str, Any]) -> None:
    old = read_manifest(directory)
    if old is None:
        return
    keys = ("format", "shard_size", "widths", "tagger", "embedder")
    differ = [k for k in keys if old.get(k) != manifest.get(k)]
    if differ:
        raise Illust2VecError(
            f"{directory}: holds shards of another run (different {', '.join(differ)}); "
            "use another shard directory, or delete this one to start over"
        )


def run_shards(
    sources: Sequence[str],
    directory: str,
    *,
    tagger=None,
    embedder=None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    actors: int | None = None,
    min_actors: int = 1,
    actor_cpus: float = 1,
    device: str | None = None,
    progress: Any = None,
    on_error: Callable[[ItemError], None] | None = None,
) -> RunReport:
    """Run ``tagger`` and/or ``embedder`` over ``sources`` on the connected Ray cluster.

    Parameters
    ----------
    sources:
        Local paths (on storage all nodes share) or URIs, in order; see
        :func:`.sources.expand_sources`.
    directory:
        Where the shards and ``manifest.json`` go (a local/NFS path or a URI).
        Shards already there from an earlier run of the same models are kept.
    tagger, embedder:
        :class:`~illust2vec.models.image_model.ImageModel` objects (the same object may be both).
    shard_size:
        Inputs per shard file (the unit of work, retry and restart).
    actors:
        Most model actors (default: one per GPU with ``device="cuda"``, else
        three quarters of the cluster's CPUs divided by ``actor_cpus``).
    min_actors:
        Actors started at once; Ray Data adds more up to ``actors`` while
        they are busy (and runs on with fewer when a node is lost).
    actor_cpus:
        CPUs (and ONNX Runtime threads) per CPU model actor.
    device:
        ``"cpu"`` or ``"cuda"`` for the actors (default: the models' own).
    progress:
        ``True`` or a callback (:mod:`illust2vec.runtime.progress`) counting the
        inputs done (images); returning ``True`` stops reading results.
    on_error:
        Called with an :class:`~illust2vec.runtime.batches.ItemError` per failed input, as shards finish.

    Notes
    -----
    Call it inside :func:`ray_runtime` (or after ``ray.init``).
    """
    ray = require_ray()
    if not ray.is_initialized():
        raise Illust2VecError("not connected to Ray: call run_shards inside illust2vec.distributed.ray_runtime()")
    models = RunModels(tagger=tagger, embedder=embedder)
    first = tagger if tagger is not None else embedder
    device = device or first.device
    gpu = str(device).startswith("cuda")
    slices = plan_shards(list(sources), shard_size)
    manifest = {
        "format": SHARD_FORMAT, "shard_size": shard_size, "n_inputs": len(sources),
        "widths": models.widths(), "tagger": _model_entry(tagger), "embedder": _model_entry(embedder),
        "shards": [s.name for s in slices],
    }
    _check_manifest(directory, manifest)
    write_manifest(directory, manifest)
    report = RunReport(directory, shards=manifest["shards"])
    finished = existing_shards(directory)
    todo = [s for s in slices if s.name not in finished]
    report.reused = [s.name for s in slices if s.name in finished]
    step, close = progress_counter(progress, label="images", unit="img", total=sum(len(s.sources) for s in slices),
                                   leave=True)
    try:
        if report.reused:
            step(sum(len(s.sources) for s in slices if s.name in finished))
        if todo:
            _run_todo(todo, directory, models, tagger, embedder, report, step, on_error, shard_size=shard_size,
                      actors=actors, min_actors=min_actors, gpu=gpu, actor_cpus=actor_cpus, device=device)
    finally:
        close()
    return report


def _run_todo(todo, directory, models, tagger, embedder, report, step, on_error, *, shard_size, actors, min_actors,
              gpu, actor_cpus, device) -> None:
    import ray

    resources = ray.cluster_resources()
    if actors is None:
        actors = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 1) * 0.75 // actor_cpus)
    actors = max(1, min(int(actors), len(todo)))
    threads = 1 if gpu else max(1, math.floor(actor_cpus))
    payload = RunModels(tagger=_for_actor(tagger, device, threads), embedder=_for_actor(embedder, device, threads))
    ref = ray.put(payload)

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    rows = [{"k": s.k, "first": s.first, "name": s.name, "sources": list(s.sources)} for s in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    # Decode tasks reserve the memory of the batch they build; a resource request that differs from the
    # actors' also keeps Ray Data from fusing decoding into the model actors (no overlap there).
    pixels = sum(int(np.prod(r.input_shape)) * 4 for r in models.recipes) * shard_size
    ds = ds.map(prepare_shard, fn_kwargs={"recipes": models.recipes, "alpha": models.alpha}, num_cpus=1,
                memory=pixels + (160 << 20))  # + a worker process with numpy, PIL, pyarrow
    # SPREAD: model actors go to different nodes first, so that every node's cores (or GPU) take part
    stage_args: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": actor_cpus}
    stage_args["scheduling_strategy"] = "SPREAD"
    ds = ds.map(ModelStage, fn_constructor_kwargs={"payload": [ref]},
                compute=ray.data.ActorPoolStrategy(min_size=min(min_actors, actors), max_size=actors), **stage_args)
    ds = ds.map(write_shard_row, fn_kwargs={"directory": directory, "widths": models.widths()}, num_cpus=0.25)
    for row in ds.iter_rows():
        for i, src, msg in zip(row["error_index"], row["error_source"], row["error_message"]):
            err = ItemError(int(i), str(src), str(msg))
            report.failed.append(err)
            if on_error is not None:
                on_error(err)
        report.done += int(row["items"])
        report.per_node[row["node"]] = report.per_node.get(row["node"], 0) + int(row["items"])
        step(int(row["items"]))

