"""``illust2vec morph``: the items of a collection that lead step by step from one illustration to another."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  illust2vec morph a.jpg b.jpg --db pics.i2v --steps 4                   table of the path
  illust2vec morph a.jpg b.jpg --db pics.i2v --steps 6 --sheet path.png  strip of thumbnails
  illust2vec morph a.jpg b.jpg --db pics.i2v --steps 4 -o path.json      JSON: rows, paths, step lengths
  illust2vec morph a.jpg b.jpg --db pics.i2v --steps 4 --binary          Hamming distance of binary codes
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_model_arguments, add_output_arguments, add_sheet_argument
    from illust2vec.cli.common import add_db_argument
    from illust2vec.semantic.morph import METHODS, NEIGHBORS, ROUNDS

    p = sub.add_parser(
        "morph", help="find the collection items that connect two illustrations step by step",
        description="Semantic morphing: K distinct items of a collection that lead from illustration A to "
                    "illustration B as evenly as possible in feature space (the path minimising the sum of "
                    "squared step lengths; solved exactly on collections up to a few thousand items, on a "
                    "candidate set grown around the way on larger ones). A and B may be inside or outside "
                    "the collection; outside ones are embedded with the collection's model.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="first illustration")
    p.add_argument("b", metavar="B", help="last illustration")
    add_db_argument(p)
    p.add_argument("--steps", "-K", type=int, default=4, metavar="K",
                   help="number of intermediate items (default 4)")
    p.add_argument("--binary", action="store_true", help="measure steps by Hamming distance of binary codes")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="exact (all items), graph (candidates around the way) or auto (default: exact up to "
                        "3000 items)")
    p.add_argument("--neighbors", type=int, default=NEIGHBORS, metavar="N",
                   help=f"graph method: neighbours fetched per waypoint and path item (default {NEIGHBORS})")
    p.add_argument("--rounds", type=int, default=ROUNDS, metavar="N",
                   help=f"graph method: rounds of growing the candidates around the path (default {ROUNDS})")
    out = add_output_arguments(p, ("json",), what="the path as JSON (default: a table on stdout)")
    out.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)
    add_sheet_argument(out, "also write a strip of thumbnails A, x1 .. xK, B")
    add_model_arguments(p, task="feature")
    from illust2vec.cli.helptext import short_help

    short_help(p, "--db", "--steps", "--binary", "--output", "--sheet", "--quiet")
    p.set_defaults(func=run)


def _table(result) -> str:
    lines = [f"{'#':>3}  {'step':>7}  {'sim':>6}  path"]
    n = len(result.steps)
    for i, s in enumerate(result.steps):
        label = "A" if i == 0 else "B" if i == n - 1 else str(i)
        step = f"{s.distance:7.4f}" if i else f"{'-':>7}"
        lines.append(f"{label:>3}  {step}  {s.similarity:6.3f}  {s.path or '(vector)'}")
    lines.append(f"cost {result.cost:.4f} ({result.method}, {'optimal' if result.optimal else 'not proven optimal'} "
                 f"over {result.candidates} items)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import collection_models_from_args, output_format
    from illust2vec.collection import Collection
    from illust2vec.io.atomic import atomic_write, json_safe
    from illust2vec.semantic.morph import morph, morph_sheet

    table = args.output is None and args.format is None
    if not table:
        output_format(args, ("json",))

    bad = [q for q in (args.a, args.b) if not Path(q).exists()]
    for q in bad:
        print(f"error: {q}: not found", file=sys.stderr)
    if bad:
        return 1
    embedder = None
    with Collection.open(args.db, create=False) as col:
        if any(col.row_of_path(q) is None for q in (args.a, args.b)):
            embedder, _ = collection_models_from_args(args, col.info(), need_tagger=False)
        result = morph(col, args.a, args.b, steps=args.steps, binary=args.binary, method=args.method,
                       embedder=embedder, neighbors=args.neighbors, rounds=args.rounds)
        model_name = col.meta.get("embedder_name")
    doc = result.to_dict()
    doc["model"] = model_name
    text = json_safe(json.dumps(doc, indent=1, ensure_ascii=False)) + "\n"
    if args.output:
        atomic_write(args.output, lambda fh: fh.write(text), text=True)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.output is None and not table:
        sys.stdout.write(text)
    else:
        print(_table(result))
    if args.sheet:
        morph_sheet(result, args.sheet, title=f"morph: {Path(args.a).name} -> {Path(args.b).name} ({args.steps} steps)")
        print(f"wrote {args.sheet}", file=sys.stderr)
    return 0
