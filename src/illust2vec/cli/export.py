"""``illust2vec export``: a collection's paths, tags, probabilities and vectors as a file."""
from __future__ import annotations

import argparse
import sys


FORMATS = ("parquet", "csv", "jsonl", "json")

EXAMPLES = """\
examples:
  illust2vec export --db pics.i2v -o pics.parquet            everything, columnar (pandas, polars, DuckDB)
  illust2vec export --db pics.i2v -o tags.jsonl --no-vectors --no-codes --min 0.5
  illust2vec export --db pics.i2v --format json --no-vectors | jq '.[0]'
  illust2vec export --db pics.i2v -o wd.csv --tagger wd-vit-v3 --no-vectors   one of several taggers' tags
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_output_arguments, add_quiet_argument, add_tagger_choice, probability
    from illust2vec.cli.common import add_db_argument

    p = sub.add_parser(
        "export", help="export a collection (paths, tag probabilities, vectors) to parquet, csv, jsonl or json",
        description="One record per indexed file: path, sha256, vector row, tag probabilities, float "
                    "feature and packed binary code (hex in csv/jsonl). A face collection (index --faces) "
                    "gives one record per face, with face_index and its box (face_x, face_y, face_w, "
                    "face_h, face_likelihood; empty for a picture embedded whole).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    add_output_arguments(p, FORMATS, default="jsonl", what="the records")
    p.add_argument("--no-vectors", action="store_true", help="leave out the float features")
    p.add_argument("--no-codes", action="store_true", help="leave out the binary codes")
    p.add_argument("--no-probs", action="store_true", help="leave out the tag probabilities")
    p.add_argument("--min", dest="min_prob", type=probability, metavar="P",
                   help="jsonl: only list tags with probability >= P (default: all)")
    add_tagger_choice(p)
    add_quiet_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.collection import Collection

    with Collection.open(args.db, create=False) as col:
        n = col.export(args.output, args.format, vectors=not args.no_vectors, codes=not args.no_codes,
                       probs=not args.no_probs, min_prob=args.min_prob, raw_csv=args.csv_raw, tagger=args.tagger)
    if not args.quiet:
        print(f"wrote {args.output or 'stdout'} ({n} records)", file=sys.stderr)
    return 0
