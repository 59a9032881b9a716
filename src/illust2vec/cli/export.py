"""``illust2vec export``: a collection's paths, tags, probabilities and vectors as a file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    from illust2vec.cli.index import add_db_argument

    p = sub.add_parser(
        "export", help="export a collection (paths, tag probabilities, vectors) to parquet, csv or jsonl",
        description="One record per indexed file: path, sha256, vector row, tag probabilities, float "
                    "feature and packed binary code (hex in csv/jsonl). A face collection (index --faces) "
                    "gives one record per face, with face_index and its box (face_x, face_y, face_w, "
                    "face_h, face_likelihood; empty for a picture embedded whole).",
    )
    add_db_argument(p)
    p.add_argument("--output", "-o", metavar="FILE", type=Path, required=True, help="output file")
    p.add_argument("--format", choices=("parquet", "csv", "jsonl"),
                   help="file format (default: from the output's extension)")
    p.add_argument("--no-vectors", action="store_true", help="leave out the float features")
    p.add_argument("--no-codes", action="store_true", help="leave out the binary codes")
    p.add_argument("--no-probs", action="store_true", help="leave out the tag probabilities")
    p.add_argument("--min", dest="min_prob", type=float, metavar="P",
                   help="jsonl: only list tags with probability >= P (default: all)")
    p.add_argument("--csv-raw", action="store_true",
                   help="csv: write cells as they are (by default a path starting with = + - @ gets a leading ' "
                        "so that spreadsheets do not run it as a formula)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import prepare_outputs
    from illust2vec.collection import Collection

    prepare_outputs(args.output)

    with Collection.open(args.db, create=False) as col:
        n = col.export(args.output, args.format, vectors=not args.no_vectors, codes=not args.no_codes,
                       probs=not args.no_probs, min_prob=args.min_prob, raw_csv=args.csv_raw)
    print(f"wrote {args.output} ({n} records)", file=sys.stderr)
    return 0
