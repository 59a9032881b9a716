"""``illust2vec dupes``: groups of near-duplicate images in a collection."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError


FORMATS = ("json", "jsonl", "csv", "parquet")

EXAMPLES = """\
examples:
  illust2vec dupes --db pics.i2v                        JSON list of groups on stdout
  illust2vec dupes --db pics.i2v -o dupes.csv           one row per group (also .jsonl, .parquet)
  illust2vec dupes --db pics.i2v --max-distance 200 --sheet groups/   a contact sheet PNG per group
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_output_arguments, add_quiet_argument, add_sheet_argument
    from illust2vec.cli.common import add_db_argument

    p = sub.add_parser(
        "dupes", help="find groups of near-duplicate images in a collection",
        description="Group images whose binary codes differ in at most --max-distance bits (exact FAISS "
                    "binary range search; groups are connected components). Byte-identical files always "
                    "form a group. Prints a JSON list of groups on stdout.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    p.add_argument("--max-distance", type=int, metavar="N",
                   help="largest Hamming distance between near-duplicates (default by kind of code: 2%% of "
                        "the code length for i2v's codes, 82 of 4096 bits; 12.5%% for the generic embedder's "
                        "SimHash codes, 512 of 4096 bits)")
    out = add_output_arguments(p, FORMATS, what="the groups")
    add_sheet_argument(out, "write a contact sheet PNG per group into DIR", metavar="DIR", aliases=("--sheets",))
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import output_format
    from illust2vec.collection import Collection
    from illust2vec.cli.common import prepare_outputs
    from illust2vec.collection.dupes import default_max_distance, find_dupes
    from illust2vec.io.records import write_records

    fmt = output_format(args, FORMATS)
    if args.sheet is not None and args.sheet.exists() and not args.sheet.is_dir():
        raise Illust2VecError(f"{args.sheet}: --sheet takes a directory for dupes (one PNG per group)")
    prepare_outputs(dirs=(args.sheet,))  # before the work, not after it
    with Collection.open(args.db, create=False) as col:
        d = args.max_distance if args.max_distance is not None else default_max_distance(col)
        groups = find_dupes(col, max_distance=d, progress=not args.quiet)
        model = col.meta.get("embedder_name")
    write_records(({"group": i, **g.to_dict(), "model": model} for i, g in enumerate(groups, 1)), args.output, fmt)
    if args.sheet:
        from illust2vec.collection.sheet import contact_sheet

        args.sheet.mkdir(parents=True, exist_ok=True)
        for i, g in enumerate(groups, 1):
            contact_sheet([(p, Path(p).name) for p in g.paths], args.sheet / f"group_{i:04d}.png",
                          title=f"group {i}: {len(g.paths)} files, max distance {g.max_distance}")
    n = sum(len(g.paths) for g in groups)
    print(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of near-duplicates ({n} files, "
          f"max distance {d} bits)" + (f"; sheets in {args.sheet}" if args.sheet else ""), file=sys.stderr)
    return 0
