"""``illust2vec dupes``: groups of near-duplicate images in a collection."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub) -> None:
    from illust2vec.cli.index import add_db_argument

    p = sub.add_parser(
        "dupes", help="find groups of near-duplicate images in a collection",
        description="Group images whose binary codes differ in at most --max-distance bits (exact FAISS "
                    "binary range search; groups are connected components). Byte-identical files always "
                    "form a group. Prints a JSON list of groups on stdout.",
    )
    add_db_argument(p)
    p.add_argument("--max-distance", type=int, metavar="N",
                   help="largest Hamming distance between near-duplicates (default by kind of code: 2%% of "
                        "the code length for i2v's codes, 82 of 4096 bits; 12.5%% for the generic embedder's "
                        "SimHash codes, 512 of 4096 bits)")
    p.add_argument("--sheets", metavar="DIR", type=Path, help="write a contact sheet PNG per group into DIR")
    p.add_argument("--output", "-o", metavar="FILE", type=Path, help="write the JSON list here instead of stdout")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection
    from illust2vec.cli.common import prepare_outputs
    from illust2vec.collection.dupes import default_max_distance, find_dupes
    from illust2vec.fileio import atomic_write, json_safe

    prepare_outputs(args.output, dirs=(args.sheets,))  # before the work, not after it
    with Collection.open(args.db, create=False) as col:
        d = args.max_distance if args.max_distance is not None else default_max_distance(col)
        groups = find_dupes(col, max_distance=d, progress=not args.quiet)
    data = [g.to_dict() for g in groups]
    text = json_safe(json.dumps(data, indent=1, ensure_ascii=False)) + "\n"
    if args.output:
        atomic_write(args.output, lambda fh: fh.write(text), text=True)
    else:
        sys.stdout.write(text)
    if args.sheets:
        from illust2vec.collection.sheet import contact_sheet

        args.sheets.mkdir(parents=True, exist_ok=True)
        for i, g in enumerate(groups, 1):
            contact_sheet([(p, Path(p).name) for p in g.paths], args.sheets / f"group_{i:04d}.png",
                          title=f"group {i}: {len(g.paths)} files, max distance {g.max_distance}")
    n = sum(len(g.paths) for g in groups)
    print(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of near-duplicates ({n} files, "
          f"max distance {d} bits)" + (f"; sheets in {args.sheets}" if args.sheets else ""), file=sys.stderr)
    return 0
