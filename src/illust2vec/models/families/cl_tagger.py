"""cl_tagger (cella110n), ONNX with ``tag_mapping.json`` (``cella110n/cl_tagger``, one folder per version).

dghs-imgutils 0.19 has no cl_tagger, so this layout is based on public front-ends of the model
(the inference code people publish for ``cella110n/cl_tagger``), not on a reference we could run:

* **Files**, in the repository's folder per version (``cl_tagger_1_02/``): ``model.onnx`` (one
  image input, NCHW 448x448 RGB 0-1; its first output is the **logits**, the front-ends apply a
  sigmoid: :func:`prepare_graph` appends one unless the output already comes from a ``Sigmoid``)
  and ``tag_mapping.json``, read by :func:`read_tag_mapping` in any of its published forms:
  ``{"idx_to_tag": {"0": name}, "tag_to_category": {name: "General"}}``,
  ``{"0": {"tag": name, "category": "General"}, ...}`` or
  ``{"names": [...], "general": [indices], "character": [...], ...}``.  Categories are
  lower-cased (general, character, copyright, artist, meta, rating, quality, model).
* **Input recipe**: transparency on white, pad to a white square, Pillow bicubic to 448, / 255.
* **Thresholds**: 0.45 (the published front-end's defaults for general and character; copyright
  and artist take the character threshold, meta/quality/model the general one), ``p >= t``;
  ratings reported whole.  No embedding output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.models.families.tag_files import hub_model_files
from illust2vec.models.fetch import model_not_found, require_files
from illust2vec.models.graph_outputs import expose_outputs
from illust2vec.models.hub import HubRef, hub_files, hub_offline
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.spec import ModelFamily, ModelFile, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe

__all__ = ["CL_RECIPE", "CL_REPO", "DEFAULT_THRESHOLDS", "FAMILY", "cl_layout", "load_cl_tagger",
           "load_cl_tagger_files", "prepare_graph", "read_tag_mapping"]

CL_REPO = "cella110n/cl_tagger"
CL_RECIPE = InputRecipe(size=(448, 448), layout="NCHW", channel_order="RGB", scale=1 / 255, resize="pil-bicubic",
                        pad_to_square=True, pad_color=(255, 255, 255))
DEFAULT_THRESHOLDS = {"general": 0.45, "character": 0.45, "copyright": 0.45, "artist": 0.45, "default": 0.45}
SURGERY_VERSION = 1
_CATEGORY_LISTS = ("rating", "general", "artist", "character", "copyright", "meta", "quality", "model")


def cl_layout(version: str = "cl_tagger_1_02") -> dict[str, str]:
    return {"onnx": f"{version}/model.onnx", "tags": f"{version}/tag_mapping.json"}


def read_tag_mapping(path: str | os.PathLike[str]) -> TagTable:
    """A cl_tagger ``tag_mapping.json`` (any of its three published forms) as a tag table."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: tag_mapping.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable tag_mapping.json ({exc})") from None
    try:
        if isinstance(data, dict) and "idx_to_tag" in data:
            by_index = {int(k): str(v) for k, v in data["idx_to_tag"].items()}
            cats = data.get("tag_to_category", {})
            rows = {i: (name, str(cats.get(name, "general"))) for i, name in by_index.items()}
        elif isinstance(data, dict) and "names" in data:
            names = [str(n) for n in data["names"]]
            category = ["general"] * len(names)
            for cat in _CATEGORY_LISTS:
                for i in data.get(cat, []):
                    category[int(i)] = cat
            rows = dict(enumerate(zip(names, category)))
        elif isinstance(data, dict) and all(str(k).isdigit() for k in data):
            rows = {int(k): (str(v["tag"]), str(v.get("category", "general"))) if isinstance(v, dict)
                    else (str(v), "general") for k, v in data.items()}
        else:
            raise ValueError("none of the known forms")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFormatError(f"{path}: not a cl_tagger tag mapping ({exc})") from None
    if not rows or sorted(rows) != list(range(len(rows))):
        raise ModelFormatError(f"{path}: the tag indices are not 0..{len(rows) - 1}")
    names, cats = zip(*(rows[i] for i in range(len(rows))))
    return TagTable(tuple(names), tuple(c.lower() for c in cats))


def prepare_graph(onnx_path: Path) -> bytes:
    """The graph with output ``prob``: a ``Sigmoid`` of its first output unless it is one already."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError
        raise ModelFormatError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    if not model.graph.output:
        raise ModelFormatError(f"{onnx_path}: the graph has no output")
    first = model.graph.output[0].name
    producer = next((n for n in model.graph.node if first in n.output), None)
    source = first
    if producer is None or producer.op_type != "Sigmoid":
        model.graph.node.append(helper.make_node("Sigmoid", [first], ["illust2vec_sigmoid"], name="illust2vec_sigmoid"))
        source = "illust2vec_sigmoid"
    return expose_outputs(model, {"prob": source}).SerializeToString()


def load_cl_tagger_files(onnx_path: str | os.PathLike[str], tags_path: str | os.PathLike[str], *,
                         store: ModelStore | None = None, name: str | None = None, **options: Any) -> ImageModel:
    """An ImageModel from a cl_tagger ``model.onnx`` and ``tag_mapping.json`` anywhere on disk."""
    store = store if store is not None else ModelStore()
    onnx_path = Path(onnx_path)
    digest = store.content_hash(onnx_path)
    graph = store.cached_onnx(f"cl_tagger-{digest[:24]}-s{SURGERY_VERSION}", lambda: prepare_graph(onnx_path))
    return ImageModel(graph, recipe=CL_RECIPE, tags=read_tag_mapping(tags_path), name=name or onnx_path.parent.name,
                      identity=f"sha256:{digest}", thresholds=dict(DEFAULT_THRESHOLDS), binarize="simhash",
                      threshold_compare="ge", **with_engine(options))


def load_cl_tagger_hub(repo: str | HubRef, store: ModelStore, *, download: bool = False,
                       offline: bool | None = None, progress: bool = True, version: str = "cl_tagger_1_02",
                       name: str | None = None, **options: Any) -> ImageModel:
    ref = HubRef.parse(repo) if isinstance(repo, str) else repo
    files = hub_files(ref, cl_layout(version), download=download, offline=offline, progress=progress)
    return load_cl_tagger_files(files["onnx"], files["tags"], store=store, name=name or str(ref), **options)


def load_cl_tagger(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                   progress: bool = True, **options: Any) -> ImageModel:
    """The zoo's loader: files imported into the store (``models import --as``), else the Hub cache."""
    imported = {f.role: store.find(f.filename) for f in spec.files}
    if all(imported.values()):
        files = require_files(spec, store, download=False, offline=True, progress=progress)
        return load_cl_tagger_files(files["onnx"], files["tags"], store=store, name=spec.name, **options)
    version = spec.hub_file_names["onnx"].split("/", 1)[0]
    try:
        return load_cl_tagger_hub(spec.hub or CL_REPO, store, download=download, offline=offline, progress=progress,
                                  version=version, name=spec.name, **options)
    except ModelNotFoundError as exc:
        missing = [f for f in spec.files if imported[f.role] is None]
        raise model_not_found(spec, missing, store, offline=hub_offline(offline),
                              details=f"or in the Hugging Face cache: {exc}") from None


def _zoo_record(version: str) -> ModelSpec:
    layout = cl_layout(version)
    short = version.replace("cl_tagger_", "").replace("_", ".")
    return ModelSpec(
        name=f"cl-tagger-{short}",
        family="cl_tagger",
        description=f"cl_tagger {short} (cella110n; 448 px): about 42k Danbooru tags in 8 categories from "
                    "tag_mapping.json; layout from the model's public front-ends (not checked against a peer tool)",
        files=hub_model_files(CL_REPO, layout, version),
        recipe=CL_RECIPE,
        outputs=("prob",),
        license="Apache-2.0 (as published on the model card; not verified here)",
        homepage=f"https://huggingface.co/{CL_REPO}",
        thresholds=dict(DEFAULT_THRESHOLDS),
        binarize="simhash",
        hub=CL_REPO,
        hub_layout=layout,
    )


FAMILY = ModelFamily(name="cl_tagger", specs=(_zoo_record("cl_tagger_1_02"), _zoo_record("cl_tagger_1_01")),
                     load=load_cl_tagger, file_checks={"tag_mapping.json": read_tag_mapping})
