"""``illust2vec models``: list, import, download and inspect the models of the zoo."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from illust2vec.errors import Illust2VecError


def register(sub) -> None:
    p = sub.add_parser("models", help="list, import and download models",
                       description="Manage the model store (where model files live).")
    p.add_argument("--model-dir", type=Path, metavar="DIR",
                   help="model store directory (default: $ILLUST2VEC_HOME or the user cache dir)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")

    ls = msub.add_parser("list", help="known models and whether their files are present")
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard filter, e.g. 'wd-*'")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    imp = msub.add_parser("import", help="copy model files fetched elsewhere into the store",
                          description="Copy official model files (e.g. illust2vec_tag_ver200.caffemodel, "
                                      "tag_list.json.gz) into the model store, checking them first.")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--as", dest="model", metavar="NAME",
                     help="the model these files belong to (default: recognised by file name)")
    imp.set_defaults(func=cmd_import)

    dl = msub.add_parser("download", help="download models into the store (resumable, verified)")
    dl.add_argument("names", nargs="+", metavar="NAME")
    dl.set_defaults(func=cmd_download)

    info = msub.add_parser("info", help="a model's record: files, sources, recipe, outputs, license")
    info.add_argument("name")
    info.set_defaults(func=cmd_info)

    tags = msub.add_parser("tags", help="list a tagger's tags with their categories")
    tags.add_argument("name")
    tags.add_argument("--category", help="only this category")
    tags.set_defaults(func=cmd_tags)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _store(args):
    from illust2vec.store import ModelStore

    return ModelStore(args.model_dir)


def cmd_list(args) -> int:
    from illust2vec.model import model_available
    from illust2vec.zoo import get_spec, list_models

    store = _store(args)
    rows = []
    for name in list_models(args.pattern):
        spec = get_spec(name)
        rows.append({
            "name": name, "family": spec.family, "outputs": list(spec.outputs),
            "present": model_available(spec, store), "license": spec.license, "description": spec.description,
        })
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'PRESENT':<7}  {'OUTPUTS':<12}  DESCRIPTION")
    for r in rows:
        print(f"{r['name']:<{width}}  {'yes' if r['present'] else 'no':<7}  {'+'.join(r['outputs']):<12}  "
              f"{r['description']}")
    print(f"\nmodel store: {store.root}", file=sys.stderr)
    return 0


def _target_name(model: str, path: Path) -> str:
    """The store name of ``path`` as a file of ``model`` (WD repositories all use model.onnx/selected_tags.csv)."""
    from illust2vec.zoo import get_spec

    files = [f for f in get_spec(model).files if not f.package]
    for f in files:
        if f.filename == path.name or (f.url and f.url.rsplit("/", 1)[-1] == path.name):
            return f.filename
    same_kind = [f for f in files if Path(f.filename).suffix == path.suffix.lower()]
    if len(same_kind) == 1:
        return same_kind[0].filename
    raise Illust2VecError(
        f"{path}: not a file of {model} (it needs: {', '.join(f.filename for f in files)})"
    )


def cmd_import(args) -> int:
    from illust2vec.validate import check_model_file
    from illust2vec.zoo import MODELS

    store = _store(args)
    known = {f.filename: spec.name for spec in MODELS.values() for f in spec.files}
    failed = 0
    for path in args.files:
        try:
            if not path.is_file():
                raise Illust2VecError(f"{path}: no such file")
            target_name = path.name
            if args.model is None and target_name not in known and target_name + ".gz" not in known:
                raise Illust2VecError(
                    f"{path}: not a file of any known model (expected one of: {', '.join(sorted(known))}); "
                    "rename it or pass --as NAME"
                )
            if args.model is not None:
                target_name = _target_name(args.model, path)
            check_model_file(path, name=target_name)
            dest = store.import_file(path, name=target_name)
            print(f"imported {path} -> {dest}")
        except Illust2VecError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_download(args) -> int:
    from illust2vec.store import require_files
    from illust2vec.zoo import get_spec

    store = _store(args)
    failed = 0
    for name in args.names:
        try:
            spec = get_spec(name)
            files = require_files(spec, store, offline=False, verify=True)
            for role, path in files.items():
                print(f"{name}: {role} -> {path}")
        except Illust2VecError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def cmd_info(args) -> int:
    import dataclasses

    from illust2vec.zoo import get_spec

    spec = get_spec(args.name)
    store = _store(args)
    record = dataclasses.asdict(spec)
    record["recipe"] = dataclasses.asdict(spec.recipe)
    record["source_outputs"] = dict(spec.source_outputs)
    record["thresholds"] = dict(spec.thresholds)
    for f in record["files"]:
        found = store.find(f["filename"])
        f["present_at"] = str(found) if found else None
    json.dump(record, sys.stdout, indent=2, default=str)
    print()
    return 0


def cmd_tags(args) -> int:
    from illust2vec.model import load_model

    model = load_model(args.name, task="tag", model_dir=args.model_dir)
    if model.tags is None:
        raise Illust2VecError(f"{args.name} is not a tagger")
    for name, cat in zip(model.tags.names, model.tags.categories):
        if args.category is None or cat == args.category:
            print(f"{cat}\t{name}")
    return 0
