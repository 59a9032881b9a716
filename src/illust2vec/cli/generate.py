"""``illust2vec generate``: a picture the tagger scores high for some tags (what the model has learned)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from illust2vec.cli.common import add_model_arguments, model_from_args, split_tags
from illust2vec.errors import Illust2VecError

EXAMPLES = """\
examples:
  illust2vec generate --tags "blue hair, cat ears" -o blue_cat.png
  illust2vec generate --tags smile --steps 400 --jitter 2 --blur 0.5 -o smile.png
"""


def register(sub) -> None:
    p = sub.add_parser(
        "generate", help="visualise tags: a picture the tagger scores high for them",
        description="Activation maximisation from a flat canvas: gradient steps that raise the tags. "
                    "This pictures what the network responds to; it is not a generative model.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tags", action="append", required=True, metavar="TAGS",
                   help="comma-separated tags to raise (repeatable)")
    p.add_argument("--output", "-o", metavar="OUT.png", required=True, help="where to write the picture")
    p.add_argument("--steps", type=int, default=200, metavar="N", help="most gradient steps (default 200)")
    p.add_argument("--rate", type=float, default=2.0, metavar="L",
                   help="RMS size of the first step in 0-255 levels (default 2)")
    p.add_argument("--jitter", type=int, default=0, metavar="PX", help="random shift before each step (default 0)")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                   help="blur the canvas every 25 steps with this sigma (default 0 = off)")
    p.add_argument("--goal", type=float, default=0.95, metavar="P", help="stop once every tag reaches P")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise and the jitter")
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="how to print the final probabilities on stdout (default text)")
    add_model_arguments(p, task="tag", tags_alias=False)
    from illust2vec.cli.helptext import short_help

    short_help(p, "--tags", "--output", "--steps", "--seed", "--model", "--quiet")
    p.set_defaults(func=run, requires=("onnxruntime",))  # checked before any work (cli.common.preflight)


def run(args: argparse.Namespace) -> int:
    from illust2vec.semantic.generate import generate_image
    from illust2vec.semantic.imagespace import save_png

    tags = split_tags(args.tags)
    if not tags:
        raise Illust2VecError("give at least one tag with --tags")
    if Path(args.output).suffix.lower() != ".png":
        raise Illust2VecError(f"-o {args.output}: the picture is written as PNG; name it .png")
    model = model_from_args(args, task="tag")
    model.tag_columns(tags)
    result = generate_image(model, tags, steps=args.steps, rate=args.rate, jitter=args.jitter, blur=args.blur,
                            goal=args.goal, seed=args.seed)
    save_png(args.output, result.image)
    written = model.estimate_specific_tags([args.output], tags)[0]
    scores = {tag: float(written[tag]) for tag in tags}
    if args.format == "json":
        sys.stdout.write(json.dumps({"file": str(args.output), "probabilities": scores,
                                     "steps": result.steps}, ensure_ascii=False) + "\n")
    else:
        for tag in tags:
            print(f"{tag}: {scores[tag]:.3f}")
        print(f"{result.steps} steps; wrote {args.output}")
    return 0
