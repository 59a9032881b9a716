"""``illust2vec map``: draw a folder (or a collection) as a t-SNE/UMAP map of its own images."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from illust2vec.cli.common import ErrorReport, add_model_arguments, add_tagger_choice, model_from_args

EXAMPLES = """\
examples:
  illust2vec map characters/ -o map.png --html map.html --label-by folder
  illust2vec map pictures/ -o map.png --grid --max-size 8192 --report map.json
  illust2vec map my.i2v -o map.png                 (a collection: stored features, no model run)
  illust2vec map pictures/ -o map.png --db my.i2v  (index into the collection first, reuse next time)
  illust2vec map art/ -o map.png --label-by 'regex:^([^_]+)_'   (label = file name up to '_')
"""


def register(sub) -> None:
    p = sub.add_parser(
        "map", help="draw images as a t-SNE/UMAP map of themselves (PNG + interactive HTML)",
        description="Compute features (or read them from a collection), reduce them to 2-D (PCA 50 then "
                    "openTSNE, UMAP or PCA), optionally snap to a grid, find clusters and draw the map as a "
                    "PNG of thumbnails and an interactive HTML viewer. Prints how well the map keeps "
                    "feature-space neighbours.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="DIR_OR_COLLECTION",
                   help="image files, directories (recursive), globs, or one collection directory")
    p.add_argument("--output", "-o", type=Path, metavar="FILE.png", help="PNG (or .jpg/.webp) map to write")
    p.add_argument("--html", type=Path, metavar="FILE.html", help="interactive viewer to write")
    p.add_argument("--report", type=Path, metavar="FILE.json",
                   help="JSON report: quality numbers, clusters, positions per image")
    p.add_argument("--method", choices=("tsne", "umap", "pca"), default="tsne",
                   help="tsne (openTSNE, default), umap (needs illust2vec[umap]) or pca (instant)")
    p.add_argument("--label-by", metavar="SPEC",
                   help="frame colours and label accuracy from: folder | regex:PATTERN | csv:FILE")
    p.add_argument("--grid", action="store_true", help="snap images to a tidy grid that keeps neighbourhoods")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same map; default 0)")
    p.add_argument("--max-size", type=int, default=4096, metavar="PX",
                   help="largest PNG side in pixels (default 4096)")
    p.add_argument("--thumb-size", type=int, metavar="PX", help="thumbnail size in the PNG (default: automatic)")
    p.add_argument("--title", help="title drawn on the PNG and the viewer")
    p.add_argument("--perplexity", type=float, default=30.0,
                   help="t-SNE perplexity (default 30, lowered automatically for small sets)")
    p.add_argument("--db", type=Path, metavar="COLLECTION",
                   help="collection used as a feature cache: images are indexed into it, then mapped")
    add_model_arguments(p, task="feature")
    add_tagger_choice(p)
    from illust2vec.cli.face_options import add_face_arguments

    add_face_arguments(p)  # --faces: one point per face crop, named SOURCE#faceK [x,y,w,h]
    from illust2vec.cli.helptext import short_help

    short_help(p, "--output", "--html", "--method", "--label-by", "--grid", "--db", "--model", "--faces",
               "--quiet")
    p.set_defaults(func=run, requires=map_requirements)


def map_requirements(args: argparse.Namespace) -> tuple[str, ...]:
    """The optional modules a map with ``args.method`` needs (checked before any feature is computed):
    the engine too, unless the map reads a collection's stored vectors."""
    from illust2vec.maps.pipeline import is_collection

    paths = getattr(args, "paths", ())
    engine = () if len(paths) == 1 and is_collection(paths[0]) else ("onnxruntime",)
    return (*engine, "faiss", "scipy", "sklearn") + {"tsne": ("openTSNE",), "umap": ("umap",)}.get(args.method, ())


def run(args: argparse.Namespace) -> int:
    from illust2vec.errors import Illust2VecError, one_line
    from illust2vec.maps.pipeline import format_quality, is_collection, make_map
    from illust2vec.io.images import missing_inputs

    if args.output is None and args.html is None and args.report is None:
        print("error: nothing to write; give -o FILE.png, --html FILE.html and/or --report FILE.json",
              file=sys.stderr)
        return 2
    if args.max_size < 128:
        raise Illust2VecError(f"--max-size {args.max_size}: too small; use at least 128")
    inputs: list[str] | str = args.paths
    model = None
    if len(args.paths) == 1 and is_collection(args.paths[0]):
        inputs = args.paths[0]
    else:
        missing = missing_inputs(args.paths)
        report = ErrorReport()
        for p in missing:
            print(f"error: {one_line(p)}: no such file or directory", file=sys.stderr)
            report.count += 1
        inputs = [p for p in args.paths if p not in missing]
        if not inputs:
            return 1
        model = model_from_args(args, task="feature")
        if len(inputs) == 1:
            inputs = inputs[0]
    report_errors = ErrorReport()
    face_refs, face_kw, face_errors = None, {}, []
    if getattr(args, "faces", False) or getattr(args, "faces_only", False):
        if model is None or args.db is not None:
            raise Illust2VecError("--faces maps face crops of image files; it cannot read a collection or use --db")
        from illust2vec.cli.face_options import map_face_inputs

        face_refs, face_kw, face_errors = map_face_inputs(model, inputs, args, on_error=report_errors)
    result = make_map(
        inputs if face_refs is None else face_refs, args.output, html=args.html, report=args.report, method=args.method, model=model,
        label_by=args.label_by, grid=args.grid, seed=args.seed, max_size=args.max_size, title=args.title,
        db=args.db, perplexity=args.perplexity, batch_size=args.batch_size,
        workers=args.workers or None, thumb_size=args.thumb_size, progress=not args.quiet,
        on_error=report_errors, tagger=args.tagger, **face_kw,
    )
    print(format_quality(result.quality))
    for c in result.clusters[:20]:
        print(f"  cluster {c.name} ({c.size} images)")
    for what, path in (("map", result.png), ("viewer", result.html), ("report", result.report)):
        if path is not None:
            print(f"wrote {what}: {path}", file=sys.stderr)
    failed = len(result.errors) + len(face_errors)
    if failed:
        print(f"mapped {len(result.paths)} images; {failed} failed (see the error lines above)", file=sys.stderr)
    return 1 if failed or (not isinstance(inputs, str) and len(inputs) < len(args.paths)) else 0
