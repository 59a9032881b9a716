"""``illust2vec dupes``: groups of near-duplicate images in a collection, and acting on them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError

#: Record formats of the groups, and "table" (one tab-separated line per file).
FORMATS = ("json", "jsonl", "csv", "parquet", "table")
#: Columns of the csv / parquet outputs: one row per file of each group (json / jsonl: one record per group).
FLAT_COLUMNS = ("group", "files", "max_distance", "keep", "path", "width", "height", "bytes", "format", "lossless",
                "mtime_ns", "error", "model")

EXAMPLES = """\
examples:
  illust2vec dupes --db pics.i2v > dupes.json                 groups, per-file facts, recommended keeper
  illust2vec dupes --db pics.i2v -o dupes.csv                 one row per file of each group (also .parquet)
  illust2vec dupes --db pics.i2v --format table --sheet groups/   a line per file, a contact sheet per group
  illust2vec dupes --db pics.i2v --move-to review/ --dry-run   print what would be moved
  illust2vec dupes --db pics.i2v --move-to review/             move the other copies, manifest in review/
  illust2vec dupes --undo review/dupes-manifest-20261206-010203.jsonl   put them back
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_output_arguments, add_quiet_argument, add_sheet_argument
    from illust2vec.collection.dupe_actions import KEEPER_RULE, MODES

    p = sub.add_parser(
        "dupes", help="find groups of near-duplicate images in a collection, move the extra copies aside",
        description="Group images whose binary codes differ in at most --max-distance bits (exact; the "
                    "pairs are kept, so a later run compares only the pictures added since). Byte-identical "
                    "files always "
                    "form a group. Prints a JSON list of groups on stdout; each lists its files with width, "
                    f"height, bytes and format, and the copy recommended to keep ({KEEPER_RULE}). "
                    "--move-to moves the other copies into a folder (never deletes, never overwrites) and "
                    "writes a manifest there that --undo reverses.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    p.add_argument("--max-distance", type=int, metavar="N",
                   help="largest Hamming distance between near-duplicates (default: 20%% of the bits of "
                        "SimHash codes, which finds flipped, cropped and recoloured copies; 2%% of i2v's)")
    out = add_output_arguments(p, FORMATS, what="the groups (json: with per-file facts; table: one line per file)")
    add_sheet_argument(out, "write a contact sheet PNG per group into DIR", metavar="DIR", aliases=("--sheets",))
    p.add_argument("--move-to", metavar="DIR", type=Path,
                   help="move every copy but the recommended keeper into DIR/group_NNNN/ and write a "
                        "manifest (dupes-manifest-*.jsonl) into DIR; prints the plan first")
    p.add_argument("--mode", choices=MODES, default="move",
                   help="with --move-to: move the copies (default), or leave them and put hard links / "
                        "symbolic links to them into DIR")
    p.add_argument("--dry-run", action="store_true", help="with --move-to: print the plan, change nothing")
    p.add_argument("--undo", metavar="MANIFEST", type=Path,
                   help="put back every file a --move-to run moved (its manifest file); nothing else is done")
    add_quiet_argument(p)
    from illust2vec.cli.helptext import short_help

    short_help(p, "--db", "--max-distance", "--move-to", "--dry-run", "--undo", "--output", "--sheet",
               "--quiet")
    p.set_defaults(func=run, requires=("faiss",))  # checked before any work (cli.common.preflight)


def _undo(args: argparse.Namespace) -> int:
    from illust2vec.collection.dupe_actions import undo_manifest

    rep = undo_manifest(args.undo, on_error=lambda p, why: print(f"error: {p}: {why}", file=sys.stderr))
    print(f"{rep.restored} restored, {rep.already} already in place, {len(rep.failed)} failed", file=sys.stderr)
    return 1 if rep.failed else 0


def run(args: argparse.Namespace) -> int:
    from illust2vec.cli.common import output_format, prepare_outputs
    from illust2vec.collection import Collection
    from illust2vec.collection.dupe_actions import apply_plan, describe_group, plan_moves
    from illust2vec.collection.dupes import default_max_distance, find_dupes
    from illust2vec.io.atomic import atomic_write
    from illust2vec.io.records import write_records

    if args.undo is not None:
        return _undo(args)
    fmt = output_format(args, FORMATS)
    if args.sheet is not None and args.sheet.exists() and not args.sheet.is_dir():
        raise Illust2VecError(f"{args.sheet}: --sheet takes a directory for dupes (one PNG per group)")
    prepare_outputs(dirs=(args.sheet, None if args.dry_run else args.move_to))  # before the work, not after it
    with Collection.open(args.db, create=False) as col:
        d = args.max_distance if args.max_distance is not None else default_max_distance(col.view)
        groups = find_dupes(col.view, max_distance=d, progress=not args.quiet)
        model = col.meta.get("embedder_name")
    data = [{"group": i, **describe_group(g.paths, g.to_dict()), "model": model} for i, g in enumerate(groups, 1)]
    if fmt == "table":
        text = _table(data)
        if args.output:
            atomic_write(args.output, lambda fh: fh.write(text), text=True)
        elif args.move_to is None:
            sys.stdout.write(text)
    elif args.output or args.move_to is None:
        flat = fmt in ("csv", "parquet")
        write_records(data, args.output, fmt, raw_csv=args.csv_raw, rows=_flat_rows if flat else None,
                      columns=FLAT_COLUMNS if flat else None)
    if args.sheet:
        from illust2vec.collection.sheet import contact_sheet

        for i, g in enumerate(data, 1):
            contact_sheet([(f["path"], _caption(f)) for f in g["files"]], args.sheet / f"group_{i:04d}.png",
                          title=f"group {i}: {len(g['files'])} files, max distance {g['max_distance']}")
    n = sum(len(g.paths) for g in groups)
    print(f"{len(groups)} group{'s' if len(groups) != 1 else ''} of near-duplicates ({n} files, "
          f"max distance {d} bits)" + (f"; sheets in {args.sheet}" if args.sheet else ""), file=sys.stderr)
    if args.move_to is None:
        return 0
    plan = plan_moves([g["paths"] for g in data], args.move_to, keepers=[g["keeper"] for g in data], mode=args.mode)
    for line in plan.lines():
        print(line)
    if args.dry_run:
        print(f"dry run: {len(plan.moves)} file(s) would go to {plan.dest}; nothing changed", file=sys.stderr)
        return 0
    try:
        rep = apply_plan(plan, on_error=lambda p, why: print(f"error: {p}: {why}", file=sys.stderr))
    except OSError as exc:
        raise Illust2VecError(f"{args.move_to}: {exc.strerror or exc}") from None
    if rep.manifest is None:
        print("nothing to move", file=sys.stderr)
        return 0
    print(f"{rep.done} file(s) {'moved' if args.mode == 'move' else 'linked'} into {plan.dest}, "
          f"{len(rep.failed)} failed; undo with: illust2vec dupes --undo {rep.manifest}", file=sys.stderr)
    return 1 if rep.failed else 0


def _flat_rows(group: dict):
    """One flat row per file of a group (csv, parquet)."""
    for f in group["files"]:
        yield {"group": group["group"], "files": len(group["files"]), "max_distance": group["max_distance"],
               "keep": f["keep"], **{k: f[k] for k in FLAT_COLUMNS[4:-1]}, "model": group["model"]}


def _table(data: list[dict]) -> str:
    lines = ["group\tkeep\twidth\theight\tbytes\tformat\tpath"]
    for i, g in enumerate(data, 1):
        for f in g["files"]:
            lines.append("\t".join(str(v) for v in (i, "*" if f["keep"] else "", f["width"] or "", f["height"] or "",
                                                      f["bytes"], f["format"] or "", f["path"])))
    return "\n".join(lines) + "\n"


def _caption(f: dict) -> str:
    size = f"{f['width']}x{f['height']}" if f["width"] else "unreadable"
    fmt = f["format"] or "?"
    kb = f"{f['bytes'] / 1024:.0f} KiB" if f["bytes"] >= 0 else "gone"
    return f"{'KEEP ' if f['keep'] else ''}{Path(f['path']).name} {size} {fmt} {kb}"
