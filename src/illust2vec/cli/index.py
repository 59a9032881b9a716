"""``illust2vec index``: add image folders to a collection (incremental, resumable)."""
from __future__ import annotations

import argparse
import sys

from illust2vec.errors import Illust2VecError, one_line

EXAMPLES = """\
examples:
  illust2vec index pictures/ --db pics.i2v                       features (+ tags with --tagger)
  illust2vec index pictures/ --db pics.i2v --tagger i2v-tag       store tag probabilities too
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
    p.add_argument("paths", nargs="+", metavar="DIR", help="image files, directories (recursive) or globs")
    add_db_argument(p)
    p.add_argument("--prune", action="store_true",
                   help="drop files that no longer exist from the collection (each one is listed); entries "
                        "under a folder argument (or, outside them, a file's folder) that is missing or empty "
                        "are kept: that is what an unmounted drive looks like")
    p.add_argument("--prune-missing", action="store_true",
                   help="with --prune: also drop the entries under missing or empty folders")
    p.add_argument("--dry-run", action="store_true",
                   help="with --prune: list what would be dropped and kept, change nothing, index nothing")
    p.add_argument("--rebuild", action="store_true",
                   help="recompute every vector (needed when changing --model or --tagger)")
    add_model_arguments(p, task="feature")
    add_tagger_arguments(p)
    from illust2vec.cli.face_options import add_face_arguments

    # a collection is made with or without --faces (and one set of face options): keep them apart with --db
    add_face_arguments(p)
    p.set_defaults(func=run)


def _print_prune(dropped: list[str], kept: dict[str, list[str]], *, verb: str) -> None:
    for path in dropped:
        print(f"{verb}: {one_line(path)}", file=sys.stderr)
    for folder, paths in kept.items():
        print(f"warning: {one_line(folder)}: missing or empty (an unmounted drive?); kept its {len(paths)} "
              "entr" + ("y" if len(paths) == 1 else "ies") + " (--prune-missing drops them)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import collection_models_from_args
    from illust2vec.cli.face_options import face_options_from_args, faces_requested
    from illust2vec.collection import Collection

    faces = face_options_from_args(args) if faces_requested(args) else None
    if args.dry_run:
        if not args.prune:
            raise Illust2VecError("--dry-run previews --prune; add --prune")
        with Collection.open(args.db, create=False) as col:
            plan = col.prune(args.paths, missing_roots=args.prune_missing, dry_run=True)
        _print_prune(plan.drop, plan.kept, verb="would drop")
        print(f"{args.db}: --dry-run: {len(plan.drop)} would be pruned, "
              f"{sum(map(len, plan.kept.values()))} kept; nothing changed", file=sys.stderr)
        return 0
    with Collection.open(args.db) as col:
        embedder, tagger = collection_models_from_args(args, None if args.rebuild else col.meta)
        report = col.add(args.paths, embedder=embedder, tagger=tagger, batch_size=args.batch_size,
                         workers=args.workers, progress=not args.quiet, prune=args.prune,
                         rebuild=args.rebuild, faces=faces, prune_missing=args.prune_missing)
        for path, msg in report.failed:
            print(f"error: {one_line(path)}: {one_line(msg)}", file=sys.stderr)
        _print_prune(report.pruned_paths, report.prune_kept, verb="pruned")
        info = col.info()
    if report.seen == 0 and not args.prune:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
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
