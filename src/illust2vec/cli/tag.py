"""``illust2vec tag``: Danbooru tags for images, as JSON/JSONL/CSV/NumPy or caption files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from illust2vec.cli.common import (
    ErrorReport, add_input_arguments, add_model_arguments, expand_inputs, model_from_args, progress_bar,
)
from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec tag pictures/                       tags of every image, JSON on stdout
  illust2vec tag a.jpg b.png --threshold 0.5 --format csv -o tags.csv
  illust2vec tag dataset/ --captions --rating    NAME.txt caption beside each image
  illust2vec tag dataset/ --captions --caption-dir captions/ --underscores --exclude "white background"
  illust2vec tag "shots/*.png" --format npy -o probs.npy   raw (N, T) probabilities + probs.paths.txt
"""


def register(sub) -> None:
    p = sub.add_parser(
        "tag", help="estimate Danbooru tags (general, character, copyright, rating)",
        description="Estimate Danbooru tags with probabilities for each image. Tags above a threshold are "
                    "reported per category; rating is always reported whole.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    add_model_arguments(p, task="tag")
    t = p.add_argument_group("thresholds")
    t.add_argument("--threshold", type=float, metavar="P",
                   help="report tags with probability > P (default: the model's, i2v 0.25)")
    t.add_argument("--general", type=float, metavar="P", help="threshold for general tags")
    t.add_argument("--character", type=float, metavar="P", help="threshold for character tags")
    t.add_argument("--copyright", type=float, metavar="P", help="threshold for copyright tags")
    t.add_argument("--threshold-rule", choices=("constant", "f0.5", "f1", "f2", "mcut"), default="constant",
                   help="constant (default); f0.5/f1/f2 use i2v's calibrated file (--thresholds); "
                        "mcut picks the largest probability gap per image and category")
    o = p.add_argument_group("output")
    o.add_argument("--format", "-f", choices=("json", "jsonl", "csv", "npy"), default="json",
                   help="json (default), jsonl (streamed), csv (path,category,tag,probability), "
                        "npy (raw probability matrix in input order; needs --output)")
    o.add_argument("--output", "-o", metavar="FILE", help="write results here (default: stdout)")
    c = p.add_argument_group("captions (training sets)")
    c.add_argument("--captions", action="store_true", help="write a comma-separated caption file per image")
    c.add_argument("--caption-dir", type=Path, metavar="DIR",
                   help="write captions under DIR (mirroring folders) instead of beside the images")
    c.add_argument("--caption-ext", default=".txt", metavar="EXT", help="caption file extension (default .txt)")
    c.add_argument("--underscores", action="store_true", help="blue_eyes instead of 'blue eyes'")
    c.add_argument("--exclude", action="append", default=[], metavar="TAGS",
                   help="comma-separated tags to leave out (repeatable)")
    c.add_argument("--order", default="character,copyright,general", metavar="CATS",
                   help="category order in captions (default character,copyright,general)")
    c.add_argument("--rating", action="store_true", help="start captions with the most likely rating tag")
    c.add_argument("--escape-parentheses", action="store_true", help=r"write \( \) for prompt syntaxes")
    c.add_argument("--if-exists", dest="caption_mode", choices=("overwrite", "append", "skip"),
                   default="overwrite", help="what to do with an existing caption file (default overwrite)")
    from illust2vec.faces.cli_support import add_face_arguments

    add_face_arguments(p)  # --faces: one record per face with face_index, box, likelihood
    from illust2vec.cli.ray_support import add_ray_arguments

    add_ray_arguments(p, shard_dir_default="a temporary directory, removed at the end")
    p.set_defaults(func=run)


def _thresholds(args, model):
    from illust2vec.tags import resolve_thresholds

    if args.threshold_rule in ("f0.5", "f1", "f2"):
        return model.thresholds_for(None, args.threshold_rule)
    mapping = dict(model.thresholds)
    if args.threshold is not None:
        mapping = {"default": args.threshold}
    for cat in ("general", "character", "copyright"):
        value = getattr(args, cat)
        if value is not None:
            if cat not in model.tags.category_names:
                raise Illust2VecError(f"--{cat}: {model.name} has no {cat} tags "
                                      f"(categories: {', '.join(model.tags.category_names)})")
            mapping[cat] = value
    return resolve_thresholds(model.tags, mapping)


def run(args: argparse.Namespace) -> int:
    from illust2vec.outputs import (
        CaptionOptions, TagWriter, caption_path, caption_text, common_root, open_text_output, tag_record,
        write_caption, write_matrix,
    )
    from illust2vec.faces.cli_support import face_inputs, faces_requested, write_face_sidecar
    from illust2vec.pipeline import iter_batches
    from illust2vec.tags import plausible_tags, plausible_tags_mcut

    if args.format == "npy" and not args.output:
        raise Illust2VecError("--format npy needs --output FILE.npy")
    if getattr(args, "ray", None) is not None:
        return run_ray(args)
    if args.captions and faces_requested(args):
        raise Illust2VecError("--captions writes one caption per picture; it cannot be combined with --faces")
    files = expand_inputs(args.paths)
    model = model_from_args(args, task="tag")
    thresholds = None if args.threshold_rule == "mcut" else _thresholds(args, model)
    caption_opts = CaptionOptions(
        underscores=args.underscores,
        exclude=frozenset(t.strip() for group in args.exclude for t in group.split(",") if t.strip()),
        order=tuple(c.strip() for c in args.order.split(",") if c.strip()),
        rating=args.rating, escape_parentheses=args.escape_parentheses, mode=args.caption_mode,
        extension=args.caption_ext if args.caption_ext.startswith(".") else "." + args.caption_ext,
    )
    root = common_root(files) if args.caption_dir else None
    npy = args.format == "npy" and not faces_requested(args)
    matrix = np.full((len(files), len(model.tags)), np.nan, np.float32) if npy else None
    face_probs: list[np.ndarray] = []
    face_rows: list[dict] = []
    writer = None
    fh, close = (None, False)
    if args.format != "npy":
        fh, close = open_text_output(args.output)
        writer = TagWriter(fh, args.format)
    bar = progress_bar(args, None if faces_requested(args) else len(files))
    report = ErrorReport(bar)
    faces = face_inputs(files, args, on_error=report)  # None without --faces
    done = 0
    try:
        for batch in iter_batches(model, files if faces is None else faces, batch_size=args.batch_size,
                                  workers=args.workers,
                                  outputs=("prob",), progress=bar, on_error=report):
            prob = batch.outputs["prob"]
            batch_tags = (plausible_tags_mcut(prob, model.tags) if args.threshold_rule == "mcut"
                          else plausible_tags(prob, model.tags, thresholds)) if len(batch) else []
            for j, index in enumerate(batch.indices):
                tags = batch_tags[j]
                if matrix is not None:
                    matrix[index] = prob[j]
                elif faces is not None and args.format == "npy":
                    face_probs.append(prob[j])
                    face_rows.append(faces.meta[index])
                if writer is not None and faces is not None:  # csv: path column "PATH#faceK [x,y,w,h]"
                    path = faces.ref(index) if args.format == "csv" else faces.source(index)
                    writer.write(tag_record(path, tags, **faces.fields(index)))
                elif writer is not None:
                    writer.write(tag_record(str(files[index]), tags))
                if args.captions:
                    target = caption_path(files[index], caption_opts, args.caption_dir, root)
                    write_caption(target, caption_text(tags, caption_opts), caption_opts.mode)
                done += 1
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if close:
            fh.close()
    if matrix is not None:
        write_matrix(args.output, matrix, [str(f) for f in files])
        print(f"wrote {args.output} ({matrix.shape[0]}x{matrix.shape[1]}; failed rows are NaN)", file=sys.stderr)
    elif face_probs:
        write_matrix(args.output, np.stack(face_probs), [m["source"] for m in face_rows])
        side = write_face_sidecar(args.output, face_rows)
        print(f"wrote {args.output} ({len(face_probs)}x{len(model.tags)}, one row per face) and {side}",
              file=sys.stderr)
    return report.summary(done, "tagged")


def run_ray(args: argparse.Namespace) -> int:
    """``tag --ray``: the tagger runs on a Ray cluster into shards, read back here in input order."""
    from illust2vec.cli.ray_support import report_reused_errors, reject_with_ray, run_on_ray, shard_directory
    from illust2vec.distributed import expand_sources, iter_shards
    from illust2vec.outputs import TagWriter, open_text_output, tag_record, write_matrix
    from illust2vec.tags import plausible_tags, plausible_tags_mcut

    reject_with_ray(args, "--captions", "--faces")
    sources = expand_sources(args.paths)
    if not sources:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    model = model_from_args(args, task="tag")
    thresholds = None if args.threshold_rule == "mcut" else _thresholds(args, model)
    report = ErrorReport()
    done = 0
    with shard_directory(args) as directory:
        run = run_on_ray(args, sources, directory, tagger=model, report=report)
        report_reused_errors(run, report)
        if args.format == "npy":
            matrix = np.full((len(sources), len(model.tags)), np.nan, np.float32)
            for shard in iter_shards(directory):
                matrix[shard.index[shard.ok]] = shard.vectors["prob"]
                done += int(shard.ok.sum())
            write_matrix(args.output, matrix, sources)
            print(f"wrote {args.output} ({matrix.shape[0]}x{matrix.shape[1]}; failed rows are NaN)", file=sys.stderr)
            return report.summary(done, "tagged")
        fh, close = open_text_output(args.output)
        writer = TagWriter(fh, args.format)
        try:
            for shard in iter_shards(directory):
                prob = shard.vectors["prob"]
                if not len(prob):
                    continue
                tags = (plausible_tags_mcut(prob, model.tags) if args.threshold_rule == "mcut"
                        else plausible_tags(prob, model.tags, thresholds))
                for j, q in enumerate(np.flatnonzero(shard.ok)):
                    writer.write(tag_record(shard.path[q], tags[j]))
                    done += 1
        finally:
            writer.close()
            if close:
                fh.close()
    return report.summary(done, "tagged")
