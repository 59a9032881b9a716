"""Where ``tag``, ``embed`` and ``index`` run: ``--ray [ADDRESS]`` and its options (a Ray cluster), ``--in-graph``."""
from __future__ import annotations

import argparse

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


def add_in_graph_argument(parser: argparse.ArgumentParser) -> None:
    """``--in-graph``: the runner's option for ``--device cuda`` (preprocessing on the device)."""
    parser.add_argument("--in-graph", action="store_true",
                        help="preprocess inside ONNX Runtime on the model's device: uint8 pixels go to the GPU "
                             "(nvImageCodec decodes JPEGs there when installed); the same numbers on the CPU")


def reject_with_ray(args: argparse.Namespace, *flags: str) -> None:
    """Usage error for options the Ray path does not offer."""
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value:
            raise Illust2VecError(f"{flag} is not available with --ray")


def distributor_from_args(args: argparse.Namespace, *rejected: str):
    """The one option that picks where a command runs: :class:`~illust2vec.pipeline.distribute.Local`, or
    :class:`~illust2vec.pipeline.distribute.OnRay` with ``--ray`` (which refuses the ``rejected`` flags)."""
    from illust2vec.pipeline.distribute import distributor
    from illust2vec.pipeline.runner import RunOptions

    if getattr(args, "ray", None) is None:
        return distributor(options=RunOptions(args.batch_size, args.workers, getattr(args, "in_graph", False)))
    reject_with_ray(args, *rejected)
    return distributor(args.ray, shards=args.shards, shard_size=args.shard_size, actors=args.actors,
                       actor_cpus=args.actor_cpus, device=args.device)
