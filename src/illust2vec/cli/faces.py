"""``illust2vec faces``: find anime faces, print their boxes, draw a contact sheet, write crops."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

FORMATS = ("json", "jsonl", "csv", "parquet")
EXAMPLES = """\
examples:
  illust2vec faces pictures/ --sheet check.png          boxes as JSON, and a contact sheet to look at
  illust2vec faces pictures/ --crops faces/ --margin 0.5  faces/NAME_face0.png, ... (squared crops)
  illust2vec faces "*.png" -o faces.csv --min-likelihood 0.9   one row per face (also .jsonl, .parquet)
  illust2vec embed pictures/ --faces -o faces.npy       (tag, embed and map take --faces too)
"""
CSV_FIELDS = ["source", "width", "height", "face_index", "x", "y", "w", "h", "likelihood"]


def register(subparsers: Any) -> None:
    from illust2vec.cli.common import add_output_arguments, add_quiet_argument, add_sheet_argument, probability
    from illust2vec.faces.defaults import DEFAULT_MARGIN, DEFAULT_MAX_SIDE

    p = subparsers.add_parser(
        "faces",
        help="find anime faces (boxes, landmarks), draw them on a contact sheet, write face crops",
        description=(
            "Find anime faces with the AnimeFace 2009 detector and print one record per picture "
            "(box x, y, w, h, likelihood, eyes, nose, mouth, chin, skin/hair/eye colours). "
            "--sheet draws the boxes for a quick check; --crops writes NAME_face0.png, NAME_face1.png, ..."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories (recursive) or globs")
    out = add_output_arguments(p, FORMATS, what="one record per picture (csv/parquet: one row per face)")
    add_sheet_argument(out, "draw the faces on a contact sheet of all pictures")
    p.add_argument("--sheet-cell", type=int, default=256, metavar="PIXELS", help="thumbnail size on the sheet (default 256)")
    p.add_argument("--sheet-max", type=int, default=400, metavar="N",
                   help="put at most the first N pictures on the sheet (default 400)")
    p.add_argument("--crops", metavar="DIR", help="write each face crop as DIR/NAME_faceK.png")
    p.add_argument(
        "--min-likelihood", type=probability, default=0.0, metavar="P",
        help="drop faces below this likelihood, 0..1 (default 0: all the detector reports, which is >= ~0.5)",
    )
    p.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN, metavar="FRACTION",
        help=f"crop margin on each side, as a fraction of the face box (default {DEFAULT_MARGIN})",
    )
    p.add_argument("--no-square", action="store_true", help="keep the face box's aspect ratio for crops")
    p.add_argument(
        "--max-side", type=int, default=DEFAULT_MAX_SIDE, metavar="PIXELS",
        help=f"downscale pictures to this longest side for detection, 0 = never (default {DEFAULT_MAX_SIDE})",
    )
    p.add_argument("--scan", choices=("fine", "fast"), default="fine",
                   help="fine (default: the original AnimeFace scan) or fast (about twice as fast, may miss a few faces)")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="detection processes (default: CPU count)")
    add_quiet_argument(p)
    from illust2vec.cli.helptext import short_help

    short_help(p, "--output", "--format", "--sheet", "--crops", "--min-likelihood", "--margin", "--quiet")
    p.set_defaults(func=handler, face_detector=True)


def _crop_names(stems: list[str]) -> list[str]:
    """Unique file-name stems: a repeated stem gets ``_2``, ``_3``, ..."""
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        out.append(stem if n == 1 else f"{stem}_{n}")
    return out


def face_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV/Parquet rows of one picture's record: one per face (one row without face columns for none)."""
    base = {"source": record["source"], "width": record["width"], "height": record["height"]}
    if not record["faces"]:
        return [dict.fromkeys(CSV_FIELDS, None) | base]
    rows = []
    for face in record["faces"]:
        x, y, w, h = face["box"]
        rows.append(dict(base, face_index=face["face_index"], x=x, y=y, w=w, h=h, likelihood=face["likelihood"]))
    return rows


def handler(args: argparse.Namespace) -> int:
    from illust2vec.errors import Illust2VecError
    from illust2vec.cli.common import output_format
    from illust2vec.cli.face_options import expand_paths, report_errors
    from illust2vec.io.atomic import DurableBatch
    from illust2vec.io.images import save_image
    from illust2vec.io.records import write_records
    from illust2vec.faces.items import iter_detections

    fmt = output_format(args, FORMATS)
    if args.margin < 0:
        raise Illust2VecError(f"--margin must be >= 0, got {args.margin}")
    if args.max_side and args.max_side < 64:
        raise Illust2VecError(f"--max-side must be at least 64 (or 0 for full size), got {args.max_side}")
    if args.sheet_max < 1:
        raise Illust2VecError(f"--sheet-max must be at least 1, got {args.sheet_max}")
    if args.sheet_cell < 32:
        raise Illust2VecError(f"--sheet-cell must be at least 32 pixels, got {args.sheet_cell}")

    files = expand_paths(args.paths)
    if not files:
        raise Illust2VecError(f"no images found in: {', '.join(args.paths)}")
    failed = 0
    crops_dir = Path(args.crops) if args.crops else None
    if crops_dir is not None:
        crops_dir.mkdir(parents=True, exist_ok=True)
    names = _crop_names([f.stem for f in files])

    records: list[dict[str, Any]] = []
    thumbnails: list[tuple[str, Any]] = []
    lost: list[tuple[str, str]] = []  # crops that could not be written: ``PATH: reason``
    crops = DurableBatch(on_error=lambda path, exc: lost.append((str(path), exc.strerror or str(exc))))
    with crops:  # every crop on disk, durably, when the block ends (an exception included)
        for det in iter_detections(
            files,
            workers=args.workers,
            min_likelihood=args.min_likelihood,
            max_side=args.max_side or None,
            margin=args.margin if crops_dir is not None else None,
            square=not args.no_square,
            keep_image="always" if args.sheet else "never",  # workers send pictures back only for the sheet
            progress=not args.quiet,
            scan=args.scan,
        ):
            if det.error is not None:
                failed += report_errors([(det.source, det.error)])
                continue
            records.append(det.to_dict())
            if args.sheet and det.image is not None and len(thumbnails) < args.sheet_max:
                from illust2vec.faces.sheet import face_thumbnail

                thumbnails.append((f"{Path(det.source).name} ({len(det.faces)})", face_thumbnail(det.image, det.faces, cell=args.sheet_cell)))
                det.image = None
            if crops_dir is not None and det.crops:
                from PIL import Image

                for k, crop in enumerate(det.crops):
                    target = crops_dir / f"{names[det.index]}_face{k}.png"
                    try:
                        with crops.open(target) as fh:
                            Image.fromarray(crop).save(fh, format="PNG")
                    except OSError as exc:
                        lost.append((str(target), exc.strerror or str(exc)))
    failed += report_errors(lost)

    write_records(records, args.output, fmt, rows=face_rows)
    if args.sheet:
        if thumbnails:
            from illust2vec.io.drawing import contact_sheet

            save_image(contact_sheet(thumbnails, cell=args.sheet_cell, caption_lines=1, pad=0, dark=True), args.sheet)
        else:
            failed += report_errors([(args.sheet, "no picture could be read, sheet not written")])
    n_faces = sum(len(r["faces"]) for r in records)
    if not args.quiet:
        with_face = sum(1 for r in records if r["faces"])
        print(f"{n_faces} faces in {with_face} of {len(records)} pictures", file=sys.stderr)
    return 1 if failed else 0

