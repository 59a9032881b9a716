"""``illust2vec explain``: where a tag comes from, as heatmaps over the picture or raw maps in JSON."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from illust2vec.cli.common import (
    ErrorReport,
    add_input_arguments,
    add_model_arguments,
    model_from_args,
    progress_bar,
    split_tags,
)
from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec explain miku.jpg -o miku_explained.png          maps of the plausible tags, one sheet
  illust2vec explain miku.jpg --tags "blue hair, twintails" -o maps/   one overlay PNG per tag
  illust2vec explain miku.jpg --tags "blue hair" --format json          raw 7x7 logit maps (i2v)
  illust2vec explain pics/ --method gradient --specific -o maps/        gradient saliency, tag-specific
"""


def register(sub) -> None:
    p = sub.add_parser(
        "explain", help="tag maps: which parts of a picture raise a tag",
        description="Tag maps per picture. For illustration2vec taggers the exact class activation map "
                    "(the tag's 7x7 conv6_4 logit map, whose mean is the logit); for other taggers, or with "
                    "--method gradient, gradient saliency (smoothed, percentile-clipped).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(p)
    x = p.add_argument_group("maps")
    x.add_argument("--tags", action="append", metavar="TAGS",
                   help="comma-separated tags to explain (repeatable; default: the plausible tags)")
    x.add_argument("--method", choices=("auto", "cam", "gradient"), default="auto",
                   help="cam (exact i2v maps), gradient (saliency) or auto (cam where the model allows; default)")
    x.add_argument("--specific", action="store_true",
                   help="show what is specific to each tag (its map minus the mean of all tags' maps)")
    x.add_argument("--threshold", type=float, metavar="P",
                   help="default tags: those with probability >= P (default: the model's thresholds)")
    x.add_argument("--max-tags", type=int, default=10, metavar="N", help="at most N default tags (default 10)")
    x.add_argument("--percentile", type=float, default=99.0, metavar="Q",
                   help="gradient saliency: clip at the Q-th percentile (default 99)")
    x.add_argument("--smooth", type=float, default=2.0, metavar="SIGMA",
                   help="gradient saliency: Gaussian smoothing in input pixels (default 2; 0 = off)")
    o = p.add_argument_group("output")
    o.add_argument("--format", "-f", choices=("png", "json"), default="png",
                   help="png: overlays (needs -o); json: tags, probabilities and raw maps (default png)")
    o.add_argument("--output", "-o", metavar="OUT",
                   help="png: OUT.png (one sheet, one input) or a directory (STEM_TAG.png per tag); "
                        "json: a file (default: stdout)")
    add_model_arguments(p, task="tag", tags_alias=False)
    from illust2vec.cli.helptext import short_help

    short_help(p, "--tags", "--method", "--specific", "--output", "--format", "--model", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def _slug(tag: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", tag).strip("_") or "tag"


def run(args: argparse.Namespace) -> int:
    from illust2vec.io.atomic import atomic_write
    from illust2vec.semantic.explain import explain, overlay, render_panels
    from illust2vec.semantic.imagespace import save_png

    if args.format == "png" and not args.output:
        raise Illust2VecError("--format png needs --output (OUT.png or a directory); or use --format json")
    from illust2vec.pipeline.readers import image_files

    files = image_files(args.paths)
    sheet = args.format == "png" and args.output.lower().endswith(".png")
    if sheet and len(files) != 1:
        raise Illust2VecError(f"-o {args.output}: one sheet holds one picture; give a directory for {len(files)}")
    model = model_from_args(args, task="tag")
    tags = split_tags(args.tags) or None
    if tags:
        model.tag_columns(tags)  # unknown tags are a usage error, not one per picture
    records = []
    bar = progress_bar(args, len(files))
    report = ErrorReport(bar)
    done = 0
    try:
        for path in files:
            try:
                result = explain(model, path, tags, method=args.method, specific=args.specific,
                                 threshold=args.threshold, max_tags=args.max_tags, percentile=args.percentile,
                                 smooth=args.smooth)
            except Illust2VecError as exc:
                report(exc if str(path) in str(exc) else f"{path}: {exc}")
                continue
            finally:
                bar.update(1)
            if args.format == "json":
                records.append(result.to_dict())
            elif sheet:
                save_png(args.output, render_panels(result))
            else:
                out_dir = Path(args.output)
                for m in result.maps:
                    save_png(out_dir / f"{path.stem}_{_slug(m.tag)}.png", overlay(result.image, m))
            done += 1
    finally:
        bar.close()
    if args.format == "json":
        text = json.dumps(records, ensure_ascii=False) + "\n"
        if args.output in (None, "-"):
            sys.stdout.write(text)
        else:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(args.output, lambda fh: fh.write(text), text=True)
    return report.summary(done, "explained")
