"""``--ray [ADDRESS]`` and its options for ``tag``, ``embed`` and ``index``: the same commands on a Ray cluster."""
from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from illust2vec.cli.common import ErrorReport, progress_bar
from illust2vec.errors import Illust2VecError


def add_ray_arguments(parser: argparse.ArgumentParser, *, shard_dir_default: str) -> None:
    g = parser.add_argument_group("Ray cluster (needs illust2vec[ray])")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: no ADDRESS starts a local Ray runtime, 'auto' or HOST:PORT joins a cluster "
                        "(put --ray after the inputs, or write --ray=auto)")
    g.add_argument("--shards", metavar="DIR",
                   help=f"where the Parquet shards go (a path every node shares, or s3://...); a rerun into the "
                        f"same DIR skips finished shards (default: {shard_dir_default})")
    g.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="images per shard, the unit of work and retry (default 128)")
    g.add_argument("--actors", type=int, default=None, metavar="N",
                   help="most model actors (default: one per GPU with --device cuda, else 3/4 of the cluster's CPUs)")
    g.add_argument("--actor-cpus", type=float, default=1, metavar="N",
                   help="CPUs (ONNX Runtime threads) per CPU model actor (default 1)")


def reject_with_ray(args: argparse.Namespace, *flags: str) -> None:
    """Usage error for options the Ray path does not offer."""
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value:
            raise Illust2VecError(f"{flag} is not available with --ray")


@contextlib.contextmanager
def shard_directory(args: argparse.Namespace, default: str | None = None) -> Iterator[str]:
    """``--shards``, else ``default``, else a temporary directory removed at the end."""
    if args.shards or default is not None:
        yield args.shards or default
        return
    tmp = tempfile.mkdtemp(prefix="illust2vec-shards-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_on_ray(args: argparse.Namespace, sources: list[str], directory: str, *, tagger=None, embedder=None,
               report: ErrorReport, bar=None) -> Any:
    """Run the models over ``sources`` into shards, with progress and one error line per bad input."""
    from illust2vec.distributed import DEFAULT_SHARD_SIZE, ray_runtime, run_shards

    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data's INFO lines would bury the error lines
    own_bar = bar is None
    bar = bar if bar is not None else progress_bar(args, len(sources))
    report.bar = bar
    try:
        with ray_runtime(args.ray or None):
            return run_shards(sources, directory, tagger=tagger, embedder=embedder,
                              shard_size=args.shard_size or DEFAULT_SHARD_SIZE, actors=args.actors,
                              actor_cpus=args.actor_cpus, device=args.device, progress=bar, on_error=report)
    finally:
        if own_bar:
            bar.close()
        report.bar = None


def report_reused_errors(run, report: ErrorReport) -> None:
    """Error lines for failed inputs of shards an earlier run finished (this run reported its own)."""
    from illust2vec.distributed.shards import read_shard
    from illust2vec.runtime.batches import ItemError

    for name in run.reused:
        shard = read_shard(run.directory, name, {})
        for i, path, msg in zip(shard.index, shard.path, shard.error):
            if msg is not None:
                report(ItemError(int(i), path, msg))
