"""``illust2vec edit``: push a picture toward some tags and away from others (gradient steps)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from illust2vec.cli.common import add_model_arguments, model_from_args, split_tags
from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec edit girl.png --add "blonde hair" --remove "black hair" -o blonde.png
  illust2vec edit girl.png --add smile --steps 50 --strength 10 -o smiling.png --format json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "edit", help="change a picture so that tags rise or fall (tag-guided editing)",
        description="Gradient steps on the picture toward the --add tags and away from the --remove tags, "
                    "with the change bounded (RMS <= --strength levels, so PSNR >= 20*log10(255/strength) dB) "
                    "and smoothed; the result keeps the original size. The saved picture is re-tagged and the "
                    "probabilities before and after are printed.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("image", metavar="IMAGE", type=Path, help="the picture to edit")
    p.add_argument("--add", action="append", metavar="TAGS", help="comma-separated tags to raise (repeatable)")
    p.add_argument("--remove", action="append", metavar="TAGS", help="comma-separated tags to lower (repeatable)")
    p.add_argument("--output", "-o", metavar="OUT.png", required=True, help="where to write the edited picture")
    p.add_argument("--steps", type=int, default=25, metavar="N", help="most gradient steps (default 25)")
    p.add_argument("--strength", type=float, default=13.0, metavar="S",
                   help="largest RMS change in 0-255 levels (default 13: PSNR >= 25.8 dB)")
    p.add_argument("--smooth", type=float, default=0.5, metavar="SIGMA",
                   help="Gaussian smoothing of each step, in input pixels (default 0.5; 0 = off)")
    p.add_argument("--goal", type=float, default=0.95, metavar="P",
                   help="stop once added tags reach P and removed ones fall to 1-P (default 0.95)")
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="how to print the before/after probabilities on stdout (default text)")
    add_model_arguments(p, task="tag", tags_alias=False)
    from illust2vec.cli.helptext import short_help

    short_help(p, "--add", "--remove", "--output", "--strength", "--steps", "--model", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def run(args: argparse.Namespace) -> int:
    from illust2vec.semantic.edit import edit_image
    from illust2vec.semantic.imagespace import save_png

    add, remove = split_tags(args.add), split_tags(args.remove)
    if not add and not remove:
        raise Illust2VecError("give at least one tag with --add or --remove")
    if Path(args.output).suffix.lower() != ".png":
        raise Illust2VecError(f"-o {args.output}: the edited picture is written as PNG; name it .png")
    model = model_from_args(args, task="tag")
    model.tag_columns(add + remove)
    result = edit_image(model, args.image, add, remove, steps=args.steps, strength=args.strength,
                        smooth=args.smooth, goal=args.goal)
    save_png(args.output, result.image)
    # Re-tag what was written, so the numbers are what anyone reading the file gets.
    written = model.estimate_specific_tags([args.output], add + remove)[0]
    after = {tag: float(written[tag]) for tag in add + remove}
    if args.format == "json":
        record = {"file": str(args.output), "source": str(args.image), "added": add, "removed": remove,
                  "before": result.before, "after": after, "psnr": round(result.psnr, 3), "steps": result.steps}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        for tag in add + remove:
            sign = "+" if tag in add else "-"
            print(f"{sign} {tag}: {result.before[tag]:.3f} -> {after[tag]:.3f}")
        print(f"PSNR {result.psnr:.2f} dB after {result.steps} steps; wrote {args.output}")
    return 0
