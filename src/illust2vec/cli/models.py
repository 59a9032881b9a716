"""``illust2vec models``: list, import, download and inspect the models of the zoo."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError


EXAMPLES = """\
examples:
  illust2vec models list                          every model and whether its files are here
  illust2vec models list 'wd-*' --format json     machine-readable
  illust2vec models download i2v-tag              fetch (resumable, verified) into the store
  illust2vec models import illust2vec_tag_ver200.caffemodel tag_list.json.gz   files fetched elsewhere
  illust2vec models info i2v-feature              files, sources, input recipe, outputs, license
  illust2vec models tags i2v-tag --category character
  illust2vec models quantize i2v-tag --calibrate my_pictures/   the int8 graph of --precision int8
"""

LIST_FORMATS = ("json", "jsonl", "csv")


def _common(parser, *, top: bool) -> None:
    """Options accepted before and after the action (``models --model-dir X list`` = ``models list --model-dir X``)."""
    from illust2vec.cli.common import add_quiet_argument

    default = None if top else argparse.SUPPRESS
    parser.add_argument("--model-dir", type=Path, metavar="DIR", default=default,
                        help="model store directory (default: $ILLUST2VEC_HOME or the user cache dir)")
    add_quiet_argument(parser, default=False if top else argparse.SUPPRESS)


def _action(msub, name: str, help: str, examples: str, **kw):
    parser = msub.add_parser(name, help=help, epilog="examples:\n" + examples,
                             formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    _common(parser, top=False)
    return parser


def register(sub) -> None:
    from illust2vec.cli.common import add_output_arguments

    p = sub.add_parser("models", help="list, import and download models",
                       description="Manage the model store (where model files live). Nothing is downloaded "
                                   "except by 'models download' or a command's --download.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, top=True)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")

    ls = _action(msub, "list", "known models and whether their files are present",
                 "  illust2vec models list\n  illust2vec models list 'i2v-*' --format json\n")
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'wd-*'")
    add_output_arguments(ls, LIST_FORMATS, what="the list (default: a table on stdout)")
    ls.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)
    ls.set_defaults(func=cmd_list)

    imp = _action(msub, "import", "copy model files fetched elsewhere into the store",
                  "  illust2vec models import illust2vec_tag_ver200.caffemodel tag_list.json.gz\n"
                  "  illust2vec models import model.onnx selected_tags.csv --as wd-vit-v3\n",
                  description="Copy official model files (e.g. illust2vec_tag_ver200.caffemodel, "
                              "tag_list.json.gz) into the model store, checking them first.")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--as", dest="model", metavar="NAME",
                     help="the model these files belong to (default: recognised by file name)")
    imp.set_defaults(func=cmd_import)

    dl = _action(msub, "download", "download models into the store (resumable, verified); WD models and Hugging "
                 "Face repositories into the Hugging Face cache",
                 "  illust2vec models download i2v-tag i2v-feature\n  illust2vec models download SmilingWolf/wd-vit-tagger-v3\n")
    dl.add_argument("names", nargs="+", metavar="NAME", help="zoo names or Hugging Face repository ids (ORG/NAME)")
    dl.set_defaults(func=cmd_download)

    info = _action(msub, "info", "a model's record: files, sources, recipe, outputs, license",
                   "  illust2vec models info i2v-tag\n  illust2vec models info wd-vit-v3 --format json\n")
    info.add_argument("name")
    info.add_argument("--format", "-f", choices=("json",), default="json", help="json (the only format)")
    info.set_defaults(func=cmd_info)

    tags = _action(msub, "tags", "list a tagger's tags with their categories",
                   "  illust2vec models tags i2v-tag --category character\n")
    tags.add_argument("name")
    tags.add_argument("--category", help="only this category")
    tags.set_defaults(func=cmd_tags)
    q = _action(msub, "quantize", "make a model's int8 graph (--precision int8), calibrated on your pictures",
                "  illust2vec models quantize i2v-tag --calibrate my_pictures/\n"
                "  illust2vec models quantize generic-effnet-lite0            (the drawn demo gallery)\n",
                description="Make the static int8 graph that --precision int8 runs, calibrated on up to 64 "
                            "pictures of DIR (default: the drawn demo gallery), and make it the one later "
                            "--precision int8 runs of this model use. Vectors of another calibration are "
                            "another model for a collection.")
    q.add_argument("name", metavar="NAME", help="a zoo name or a model file (.caffemodel / .onnx)")
    q.add_argument("--calibrate", metavar="DIR", type=Path, default=None,
                   help="pictures to calibrate on (default: the drawn demo gallery)")
    q.add_argument("--tag-list", dest="tag_file", metavar="FILE", type=Path,
                   help="tag list for a model file (i2v tag_list.json[.gz] or WD selected_tags.csv)")
    q.set_defaults(func=cmd_quantize)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _store(args):
    from illust2vec.models.store import ModelStore

    return ModelStore(args.model_dir)


def cmd_list(args) -> int:
    from illust2vec.models.loading import model_available
    from illust2vec.models.catalog import get_spec, list_models

    store = _store(args)
    rows = []
    for name in list_models(args.pattern):
        spec = get_spec(name)
        rows.append({
            "name": name, "family": spec.family, "outputs": list(spec.outputs),
            "present": model_available(spec, store), "license": spec.license, "description": spec.description,
        })
    if args.output is not None or args.format is not None:
        from illust2vec.cli.common import output_format
        from illust2vec.io.records import write_records

        write_records(rows, args.output, output_format(args, LIST_FORMATS))
        return 0
    if not rows:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'PRESENT':<7}  {'OUTPUTS':<12}  DESCRIPTION")
    for r in rows:
        print(f"{r['name']:<{width}}  {'yes' if r['present'] else 'no':<7}  {'+'.join(r['outputs']):<12}  "
              f"{r['description']}")
    if not args.quiet:
        print(f"\nmodel store: {store.root}", file=sys.stderr)
    return 0


def _gz_twins(a: str, b: str) -> bool:
    """``tag_list.json`` and ``tag_list.json.gz`` name the same file (the store finds either)."""
    return a == b or a + ".gz" == b or b + ".gz" == a


def _kind(name: str) -> str:
    """The file's type by its ending, a ``.gz`` left out: ``tag_list.json.gz`` -> ``.json``."""
    path = Path(name[:-3] if name.lower().endswith(".gz") else name)
    return path.suffix.lower()


def _target_name(model: str, path: Path) -> str:
    """The store name of ``path`` as a file of ``model`` (WD repositories all use model.onnx/selected_tags.csv).

    The file's own name, the name of the file it is downloaded from, or its ``.gz`` twin
    (``tag_list.json`` for ``tag_list.json.gz``, kept as given) match; otherwise the one file
    of the model of the same type.
    """
    from illust2vec.models.catalog import get_spec

    files = [f for f in get_spec(model).files if not f.package]
    for f in files:
        remote = f.url.rsplit("/", 1)[-1] if f.url else f.filename
        if _gz_twins(path.name, f.filename) or _gz_twins(path.name, remote):
            return path.name if _gz_twins(path.name, f.filename) else f.filename
    same_kind = [f for f in files if _kind(f.filename) == _kind(path.name)]
    if len(same_kind) == 1:
        return same_kind[0].filename
    raise Illust2VecError(
        f"{path}: not a file of {model} (it needs: {', '.join(f.filename for f in files)})"
    )


def cmd_import(args) -> int:
    """Check every file, then copy them all into the store, or none (one error line per refused file)."""
    from illust2vec.models.catalog import MODELS, file_checks
    from illust2vec.models.validate import check_model_file

    store = _store(args)
    known = {f.filename: spec.name for spec in MODELS.values() for f in spec.files}
    accepted: list[tuple[Path, str]] = []
    refused = 0
    for path in args.files:
        try:
            if not path.is_file():
                raise Illust2VecError(f"{path}: no such file")
            target_name = path.name
            if args.model is None and not any(_gz_twins(target_name, k) for k in known):
                raise Illust2VecError(
                    f"{path}: not a file of any known model (expected one of: {', '.join(sorted(known))}); "
                    "rename it or pass --as NAME"
                )
            if args.model is not None:
                target_name = _target_name(args.model, path)
            check_model_file(path, name=target_name, checks=file_checks())
            accepted.append((path, target_name))
        except Illust2VecError as exc:
            refused += 1
            print(f"error: {exc}", file=sys.stderr)
    if refused:
        print(f"nothing was imported: {refused} of {len(args.files)} file{'s' if len(args.files) != 1 else ''} "
              "refused (an import is all or nothing)", file=sys.stderr)
        return 1
    for (path, _), dest in zip(accepted, store.import_files(accepted)):
        print(f"imported {path} -> {dest}")
    return 0


def cmd_download(args) -> int:
    from illust2vec.models.catalog import MODELS, get_family, get_spec
    from illust2vec.models.fetch import require_files
    from illust2vec.models.hub import hub_files, is_repo_id

    store = _store(args)
    failed = 0
    for name in args.names:
        try:
            if name not in MODELS and is_repo_id(name):
                files = hub_files(name, download=True, progress=not args.quiet)  # into the Hugging Face cache
            elif get_spec(name).hub:
                files = hub_files(get_spec(name).hub, download=True, progress=not args.quiet)
            else:
                spec = get_spec(name)
                files = require_files(spec, store, download=True, verify=True, progress=not args.quiet,
                                      checks=get_family(spec.family).file_checks)
            for role, path in files.items():
                print(f"{name}: {role} -> {path}")
        except Illust2VecError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_info(args) -> int:
    import dataclasses

    from illust2vec.models.catalog import get_spec
    from illust2vec.models.loading import model_available

    spec = get_spec(args.name)
    store = _store(args)
    record = dataclasses.asdict(spec)
    for f in record["files"]:
        found = store.find(f["filename"])
        f["present_at"] = str(found) if found else None
    record["present"] = model_available(spec, store)
    record["store"] = str(store.files_dir)
    record["how_to_get"] = {  # what the short missing-model message points to
        "download": f"illust2vec models download {spec.name}",
        "import": f"fetch the files' urls elsewhere, then: illust2vec models import FILE... --as {spec.name}",
    }
    if spec.hub:
        from illust2vec.models.hub import HubRef, cached_file, hub_cache_dir

        record["hub_cache"] = str(hub_cache_dir())
        record["hub_files"] = {name: str(p) if (p := cached_file(HubRef(spec.hub), name)) else None
                               for name in spec.hub_file_names.values()}
    json.dump(record, sys.stdout, indent=2, default=str)
    print()
    return 0


def cmd_quantize(args) -> int:
    from illust2vec.cli.common import model_args, model_from_args
    from illust2vec.models.quantize import quantize_model

    model = model_from_args(model_args(args, args.name, tag_file=args.tag_file), task=None)
    path = quantize_model(model, args.calibrate, model_dir=args.model_dir)
    print(f"{model.name}: int8 graph {path}")
    return 0


def cmd_tags(args) -> int:
    from illust2vec.cli.common import model_args, model_from_args

    model = model_from_args(model_args(args, args.name), task="tag")  # "NAME is not a tagger" otherwise
    for name, cat in zip(model.tags.names, model.tags.categories):
        if args.category is None or cat == args.category:
            print(f"{cat}\t{name}")
    return 0
