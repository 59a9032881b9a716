"""``illust2vec index``: add image folders to a collection (incremental, resumable)."""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError

DEFAULT_DB = "illust2vec-collection"

EXAMPLES = """\
examples:
  illust2vec index pictures/ --db pics.i2v                       features (+ tags with --tagger)
  illust2vec index pictures/ --db pics.i2v --tagger i2v-tag       store tag probabilities too
  illust2vec index pictures/ --db pics.i2v --prune                 and drop files that were deleted
  illust2vec index pictures/ --db faces.i2v --faces                one searchable item per anime face
  illust2vec search query.jpg --db pics.i2v                        then search it
"""


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="DIR", default=os.environ.get("ILLUST2VEC_DB", DEFAULT_DB),
                        help=f"collection directory (default: $ILLUST2VEC_DB or ./{DEFAULT_DB})")


def add_tagger_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tagger (stores tag probabilities for tag queries)")
    g.add_argument("--tagger", metavar="NAME",
                   help="zoo tag model (e.g. i2v-tag); 'none' for no tag probabilities. Default: the "
                        "collection's tagger, none for a new collection (or the embedder if it also tags)")
    g.add_argument("--tagger-weights", metavar="FILE", type=Path,
                   help="use this tag model file directly (.caffemodel or .onnx)")
    g.add_argument("--tag-list", dest="tagger_tag_file", metavar="FILE", type=Path,
                   help="tag list for --tagger-weights (i2v tag_list.json[.gz] or WD selected_tags.csv)")


def _registered(name: str | None) -> bool:
    from illust2vec.zoo import MODELS

    return bool(name) and name in MODELS


def models_from_args(args: argparse.Namespace, meta: dict[str, str] | None = None, *, need_tagger: bool = True):
    """``(embedder, tagger or None)`` from the model flags, defaulting to the collection's models.

    ``meta`` is the collection's metadata (``Collection.meta``) when it exists.
    """
    from illust2vec.cli.common import model_from_args

    meta = meta or {}
    a = copy.copy(args)
    if a.weights is None and a.model is None and meta.get("embedder_name"):
        if not _registered(meta["embedder_name"]):
            raise Illust2VecError(
                f"{args.db}: indexed with the model file {meta['embedder_name']!r}; pass it again with --weights FILE"
            )
        a.model = meta["embedder_name"]
    embedder = model_from_args(a, task="feature")
    if not need_tagger:
        return embedder, None
    t = copy.copy(args)
    t.model, t.weights = getattr(args, "tagger", None), getattr(args, "tagger_weights", None)
    t.tag_file = getattr(args, "tagger_tag_file", None)
    t.threshold_file = None
    t.resize = None
    if t.model == "none":
        return embedder, None
    if t.weights is None and t.model is None:
        if meta.get("tagger_name"):
            if not _registered(meta["tagger_name"]):
                raise Illust2VecError(
                    f"{args.db}: tag probabilities come from the model file {meta['tagger_name']!r}; "
                    "pass it again with --tagger-weights FILE (and --tag-list FILE)"
                )
            t.model = meta["tagger_name"]
        elif "embedder_name" in meta or not getattr(embedder, "is_tagger", False):
            return embedder, None
        else:
            return embedder, embedder
    return embedder, model_from_args(t, task="tag")


def register(sub) -> None:
    from illust2vec.cli.common import add_model_arguments

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
    p.add_argument("--prune", action="store_true", help="drop files that no longer exist from the collection")
    p.add_argument("--rebuild", action="store_true",
                   help="recompute every vector (needed when changing --model or --tagger)")
    add_model_arguments(p, task="feature")
    add_tagger_arguments(p)
    from illust2vec.faces.cli_support import add_face_arguments

    # a collection is made with or without --faces (and one set of face options): keep them apart with --db
    add_face_arguments(p)
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="DB/ray-shards, removed once merged")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection
    from illust2vec.faces.cli_support import faces_requested
    from illust2vec.faces.features import FaceOptions

    if args.from_shards:
        return run_from_shards(args)
    if not args.paths:
        raise Illust2VecError("give image folders to index (or --from-shards DIR)")
    if getattr(args, "ray", None) is not None:
        return run_ray(args)
    faces = FaceOptions.from_args(args) if faces_requested(args) else None
    with Collection.open(args.db) as col:
        embedder, tagger = models_from_args(args, None if args.rebuild else col.meta)
        report = col.add(args.paths, embedder=embedder, tagger=tagger, batch_size=args.batch_size,
                         workers=args.workers, progress=not args.quiet, prune=args.prune,
                         rebuild=args.rebuild, faces=faces)
        for path, msg in report.failed:
            print(f"error: {path}: {msg}", file=sys.stderr)
        info = col.info()
    if report.seen == 0 and not args.prune:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    return _summary(args, report, info)


def _summary(args: argparse.Namespace, report, info: dict) -> int:
    parts = [f"{report.added} added", f"{report.linked} already known (moved or copied)",
             f"{report.unchanged} unchanged"]
    if report.still_bad:
        parts.append(f"{report.still_bad} still unreadable (not retried until they change)")
    if report.failed:
        parts.append(f"{len(report.failed)} failed")
    if report.pruned or args.prune:
        parts.append(f"{report.pruned} pruned")
    print(f"{args.db}: " + ", ".join(parts) + f"; {info['files']} files indexed "
          f"(model {info['embedder']}" + (f", tags from {info['tagger']}" if info["tagger"] else "") + ")",
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
            report.pruned = col.prune()
        info = col.info()
    return _summary(args, report, info)


def run_ray(args: argparse.Namespace) -> int:
    """``index --ray``: new and changed files run on a Ray cluster into shards, then merged here."""
    import shutil

    from illust2vec.cli.common import ErrorReport
    from illust2vec.cli.ray_support import report_reused_errors, reject_with_ray, run_on_ray
    from illust2vec.collection import Collection
    from illust2vec.distributed import expand_sources, index_shards

    reject_with_ray(args, "--faces", "--rebuild")
    with Collection.open(args.db) as col:
        embedder, tagger = models_from_args(args, col.meta)
        sources = expand_sources(args.paths)
        if not sources:
            raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
        known = {p: (size, mtime) for p, size, mtime in
                 col.conn.execute("SELECT path, size, mtime_ns FROM files WHERE row IS NOT NULL")}
        todo = [s for s in sources if not _unchanged(s, known)]
        directory = args.shards or str(col.path / "ray-shards")
        errors = ErrorReport()
        if todo:
            run = run_on_ray(args, todo, directory, tagger=tagger, embedder=embedder, report=errors)
            report_reused_errors(run, errors)
            report = index_shards(col, directory, progress=not args.quiet)
            if not args.shards:
                shutil.rmtree(directory, ignore_errors=True)
        else:
            from illust2vec.collection import AddReport

            report = AddReport()
        report.unchanged += len(sources) - len(todo)
        if args.prune:
            report.pruned = col.prune()
        info = col.info()
    return _summary(args, report, info)


def _unchanged(source: str, known: dict) -> bool:
    """Whether a local file is indexed with its current size and mtime (URIs are always sent)."""
    if "://" in source:
        return False
    try:
        st = os.stat(source)
    except OSError:
        return False
    return known.get(os.path.realpath(source)) == (st.st_size, st.st_mtime_ns)
