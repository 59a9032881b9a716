"""``illust2vec index``: add image folders to a collection (incremental, resumable)."""
from __future__ import annotations

import argparse
import sys

from illust2vec.errors import Illust2VecError, one_line

EXAMPLES = """\
examples:
  illust2vec index pictures/ --db pics.i2v                   features and tags
  illust2vec index pictures/ --db pics.i2v --tagger wd-vit-v3  add a tagger
  illust2vec index pictures/ --db pics.i2v --prune                 and drop files that were deleted
  illust2vec index pictures/ --db faces.i2v --faces                one searchable item per anime face
  illust2vec search query.jpg --db pics.i2v                        then search it
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_model_arguments, add_tagger_arguments

    p = sub.add_parser(
        "index", help="index image folders into a collection for search, dupes and tag queries",
        description="Add images to a collection directory: an SQLite database (files, content hashes, "
                    "models, tag probabilities, errors) plus feature and binary-code files. Incremental: "
                    "unchanged files are skipped, moved files keep their vectors, files that failed are "
                    "retried only when they change. Safe to interrupt; the next run resumes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="DIR", help="image files, directories (recursive) or globs")
    add_db_argument(p)
    p.add_argument("--from-shards", metavar="DIR",
                   help="add the Parquet shards of a --ray run (tag/embed/index --shards DIR) instead of images; "
                        "streaming, one shard in memory at a time")
    p.add_argument("--prune", action="store_true",
                   help="drop files that no longer exist (each one is listed) and give back their disk (as "
                        "'compact'); entries under a missing or empty folder are kept (an unmounted drive)")
    p.add_argument("--prune-missing", action="store_true",
                   help="with --prune: also drop the entries under missing or empty folders")
    p.add_argument("--dry-run", action="store_true",
                   help="with --prune: list what would be dropped and kept, change nothing, index nothing")
    p.add_argument("--rebuild", action="store_true",
                   help="recompute every vector, forget the taggers (needed to change --model, "
                        "not to add a tagger)")
    add_model_arguments(p, task="feature")
    add_tagger_arguments(p)
    from illust2vec.cli.face_options import add_face_arguments

    # a collection is made with or without --faces (and one set of face options): keep them apart with --db
    add_face_arguments(p)
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="DB/ray-shards, removed once merged")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--db", "--model", "--tagger", "--device", "--prune", "--rebuild", "--faces", "--quiet")
    p.set_defaults(func=run, requires=lambda a: () if a.from_shards else ("onnxruntime",))  # cli.common.preflight


def _print_prune(dropped: list[str], kept: dict[str, list[str]], *, verb: str) -> None:
    for path in dropped:
        print(f"{verb}: {one_line(path)}", file=sys.stderr)
    for folder, paths in kept.items():
        print(f"warning: {one_line(folder)}: missing or empty (an unmounted drive?); kept its {len(paths)} "
              "entr" + ("y" if len(paths) == 1 else "ies") + " (--prune-missing drops them)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Options -> models, the collection as the writer -> the pipeline (here or on Ray, as ``--ray`` says)."""
    from illust2vec.cli.common import ErrorReport, collection_models_from_args
    from illust2vec.cli.face_options import face_options_from_args, faces_requested
    from illust2vec.cli.ray_support import distributor_from_args
    from illust2vec.collection import Collection
    from illust2vec.pipeline.distribute import OnRay
    from illust2vec.pipeline.readers import require_inputs
    from illust2vec.pipeline.tasks import index_files

    if args.from_shards:
        return run_from_shards(args)
    if not args.paths:
        raise Illust2VecError("give image folders to index (or --from-shards DIR)")
    dist = distributor_from_args(args, "--faces", "--rebuild")
    if not args.prune and not isinstance(dist, OnRay):  # --prune reads a missing folder as "its files were deleted"
        require_inputs(args.paths)
    faces = face_options_from_args(args) if faces_requested(args) else None
    if args.dry_run:
        return _dry_run(args)
    with Collection.open(args.db) as col:
        embedder, taggers = collection_models_from_args(args, None if args.rebuild else col.info())
        if isinstance(dist, OnRay) and taggers:  # one tagger runs on the cluster: --tagger's, else the newest
            chosen = next((t for t in taggers if t.name == args.tagger), taggers[-1])
            taggers = [t for t in taggers if t is not chosen] + [chosen]
        report = index_files(col, args.paths, embedder=embedder, taggers=taggers, distributor=dist,
                             prune=args.prune, prune_missing=args.prune_missing, rebuild=args.rebuild,
                             faces=faces, progress=not args.quiet, on_error=ErrorReport())
        for path, msg in [] if isinstance(dist, OnRay) else report.failed:  # Ray's were printed as they came
            print(f"error: {one_line(path)}: {one_line(msg)}", file=sys.stderr)
        _print_prune(report.pruned_paths, report.prune_kept, verb="pruned")
        if report.compaction is not None and (report.compaction.dead_rows or report.compaction.freed):
            print(f"{args.db}: {report.compaction.describe(args.db)}", file=sys.stderr)
        info = col.info()
    if report.seen == 0 and not args.prune and not isinstance(dist, OnRay):
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    return _summary(args, report, info)


def _dry_run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection

    if not args.prune:
        raise Illust2VecError("--dry-run previews --prune; add --prune")
    with Collection.open(args.db, create=False) as col:
        plan = col.prune(args.paths, missing_roots=args.prune_missing, dry_run=True)
    _print_prune(plan.drop, plan.kept, verb="would drop")
    print(f"{args.db}: --dry-run: {len(plan.drop)} would be pruned, "
          f"{sum(map(len, plan.kept.values()))} kept; nothing changed", file=sys.stderr)
    return 0


def _summary(args: argparse.Namespace, report, info: dict) -> int:
    for path, msg in report.untagged:
        print(f"warning: {one_line(path)}: {one_line(msg)}", file=sys.stderr)
    for name, n in report.tagged.items():
        print(f"{args.db}: tagger {name!r}: {n} stored picture{'s' if n != 1 else ''} tagged "
              "(not re-embedded)", file=sys.stderr)
    for name, n in report.lagging.items():
        print(f"warning: {args.db}: tagger {name!r} has no tags for {n} picture{'s' if n != 1 else ''} yet; "
              f"'illust2vec index DIR --db {args.db}' (without --ray) adds them", file=sys.stderr)
    parts = [f"{report.added} added", f"{report.linked} already known (moved or copied)",
             f"{report.unchanged} unchanged"]
    if report.still_bad:
        parts.append(f"{report.still_bad} still unreadable (not retried until they change)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    if report.pruned or args.prune:
        parts.append(f"{report.pruned} pruned")
    taggers = ", ".join(t["name"] for t in info.get("taggers", []))
    print(f"{args.db}: " + ", ".join(parts) + f"; {info['files']} files indexed "
          f"(model {info['embedder']}" + (f", tags from {taggers}" if taggers else "") + ")",
          file=sys.stderr)
    return 1 if report.failed else 0


def run_from_shards(args: argparse.Namespace) -> int:
    """``index --from-shards DIR``: a --ray run's shards into the collection."""
    from illust2vec.collection import Collection
    from illust2vec.distributed import index_shards

    if args.paths:
        raise Illust2VecError("--from-shards takes no image paths (the shards name their files)")
    with Collection.open(args.db) as col:
        report = index_shards(col, args.from_shards, progress=not args.quiet)
        for path, msg in report.failed:
            print(f"error: {path}: {msg}", file=sys.stderr)
        if args.prune:
            report.record_prune(col.prune(missing_roots=args.prune_missing))
            _print_prune(report.pruned_paths, report.prune_kept, verb="pruned")
        info = col.info()
    return _summary(args, report, info)
