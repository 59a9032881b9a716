"""SmilingWolf's WD taggers, v3 and v1.4 (v2 generation) (``model.onnx`` + ``selected_tags.csv``).

What this module knows about the family:

* **Tags**: ``selected_tags.csv`` with columns ``tag_id,name,category,count``;
  category codes 0 general, 4 character, 9 rating (1 artist, 3 copyright and
  5 meta are understood too).  Names keep their underscores in the file; the
  display form replaces them with spaces except for the emoticon tags
  (:data:`KAOMOJI`, e.g. ``^_^``, ``0_0``), which the WD front-ends keep as they are.
* **Input recipe**: pad to a square with white, resize to the model's input
  size (read from the ONNX graph input, 448 for v3 and v1.4) with PIL bicubic, BGR,
  float 0-255, NHWC.
* **Thresholds**: 0.35 general, 0.85 character (ratings are reported whole);
  or MCut (:func:`mcut_thresholds`): per image and category, the midpoint of
  the largest gap between the sorted probabilities (characters floored at 0.15,
  as the reference WD front-end does).
* **Embeddings**: :func:`add_feature_output` finds the tensor that feeds the
  classifier head (the input of the last Gemm/MatMul(+Add) before the Sigmoid
  that produces the output) and adds it as a second graph output ``feature``;
  the probabilities become output ``prob``.  A fixed batch dimension of 1 is
  made symbolic so batches of any size run.

>>> from illust2vec.models.families.wd import display_name
>>> display_name("long_hair"), display_name("^_^")
('long hair', '^_^')
"""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.io.atomic import atomic_write
from illust2vec.models.fetch import model_not_found, require_files
from illust2vec.models.graph_outputs import expose_outputs
from illust2vec.models.hub import WD_CONTRACT, HubRef, hub_files, hub_offline
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.spec import ModelFamily, ModelFile, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import (  # noqa: F401 (re-exported)
    KAOMOJI,
    MCUT_CHARACTER_FLOOR,
    TagTable,
    mcut_thresholds,
    plausible_tags_mcut,
)
from illust2vec.prep.preprocess import InputRecipe

__all__ = [
    "CATEGORY_CODES",
    "DEFAULT_THRESHOLDS",
    "KAOMOJI",
    "SURGERY_VERSION",
    "WD_REPOS",
    "GraphInfo",
    "WDTagList",
    "add_feature_output",
    "display_name",
    "find_embedding_tensor",
    "graph_info",
    "load_wd",
    "load_wd_hub",
    "mcut_thresholds",
    "plausible_tags_mcut",
    "read_selected_tags",
    "wd_recipe",
    "FAMILY",
]

log = logging.getLogger("illust2vec")

#: selected_tags.csv category code -> illust2vec category name.
CATEGORY_CODES: dict[int, str] = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating"}
#: Default thresholds of the WD v3 and v1.4 taggers (ratings are reported whole, as i2v does).
DEFAULT_THRESHOLDS: Mapping[str, float] = {"general": 0.35, "character": 0.85, "default": 0.35}
#: Zoo name -> Hugging Face repository of SmilingWolf's WD taggers.
WD_REPOS: dict[str, str] = {
    "wd-vit-v3": "SmilingWolf/wd-vit-tagger-v3",
    "wd-swinv2-v3": "SmilingWolf/wd-swinv2-tagger-v3",
    "wd-convnext-v3": "SmilingWolf/wd-convnext-tagger-v3",
    "wd-vit-large-v3": "SmilingWolf/wd-vit-large-tagger-v3",
    "wd-eva02-large-v3": "SmilingWolf/wd-eva02-large-tagger-v3",
    # the WD v1.4 taggers of the v2 generation: the same file layout and preprocessing
    "wd14-moat-v2": "SmilingWolf/wd-v1-4-moat-tagger-v2",
    "wd14-convnext-v2": "SmilingWolf/wd-v1-4-convnext-tagger-v2",
    "wd14-convnextv2-v2": "SmilingWolf/wd-v1-4-convnextv2-tagger-v2",
    "wd14-swinv2-v2": "SmilingWolf/wd-v1-4-swinv2-tagger-v2",
    "wd14-vit-v2": "SmilingWolf/wd-v1-4-vit-tagger-v2",
}
#: Bump when :func:`add_feature_output` changes what it writes (invalidates cached graphs).
SURGERY_VERSION = 1
#: MCut never sets the character threshold below this (the reference front-end's floor).


def display_name(tag: str) -> str:
    """A tag as people write it: underscores become spaces, emoticons stay as they are."""
    return tag if tag in KAOMOJI else tag.replace("_", " ")


# --------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class WDTagList:
    """The rows of a ``selected_tags.csv``, index-aligned with the model's output."""

    tag_ids: tuple[int, ...]
    names: tuple[str, ...]  # as in the file (underscores)
    category_codes: tuple[int, ...]
    counts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def display_names(self) -> tuple[str, ...]:
        return tuple(display_name(n) for n in self.names)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(CATEGORY_CODES.get(c, f"category{c}") for c in self.category_codes)

    def table(self, *, display: bool = True) -> Any:
        """A :class:`illust2vec.models.tags.TagTable`; ``display=True`` uses the spaced names (like i2v's tags)."""
        return TagTable(self.display_names if display else self.names, self.categories)


def read_selected_tags(path: str | os.PathLike[str]) -> WDTagList:
    """Parse a WD ``selected_tags.csv`` (``tag_id,name,category,count``).

    Raises :class:`~illust2vec.errors.ModelFormatError` naming the file and line
    for a missing column, a non-integer category or an empty file.
    """
    path = Path(path)
    try:
        fh = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: tag file not found") from None
    ids: list[int] = []
    names: list[str] = []
    cats: list[int] = []
    counts: list[int] = []
    with fh:
        reader = csv.DictReader(fh)
        need = {"name", "category"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ModelFormatError(
                f"{path}: not a WD selected_tags.csv (need columns tag_id,name,category,count; "
                f"found {reader.fieldnames})"
            )
        for row in reader:
            line = reader.line_num
            try:
                cat = int(row["category"])
                tag_id = int(row["tag_id"]) if row.get("tag_id") not in (None, "") else -1
                count = int(row["count"]) if row.get("count") not in (None, "") else 0
            except ValueError as exc:
                raise ModelFormatError(f"{path}:{line}: bad number ({exc})") from None
            name = row["name"]
            if not name:
                raise ModelFormatError(f"{path}:{line}: empty tag name")
            ids.append(tag_id)
            names.append(name)
            cats.append(cat)
            counts.append(count)
    if not names:
        raise ModelFormatError(f"{path}: no tags")
    return WDTagList(tuple(ids), tuple(names), tuple(cats), tuple(counts))


# --------------------------------------------------------------------------- thresholds


# --------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class GraphInfo:
    """What illust2vec needs to know about a WD graph."""

    input_name: str
    input_size: tuple[int, int]  # (height, width)
    layout: str  # "NHWC" or "NCHW"
    prob_output: str
    embedding: str  # tensor feeding the classifier head
    feature_dim: int | None
    n_tags: int | None
    fixed_batch: bool  # the exported graph had a fixed batch dimension

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> GraphInfo:
        d = json.loads(text)
        d["input_size"] = tuple(d["input_size"])
        return cls(**d)


def _dims(vi: Any) -> list[int | str | None]:
    out: list[int | str | None] = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _graph_input(graph: Any) -> Any:
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelFormatError(f"expected one image input, found {[i.name for i in inputs]}")
    return inputs[0]


_PASS_THROUGH = {"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def find_embedding_tensor(model: Any, output: str | None = None) -> tuple[str, str, int | None]:
    """Find the pooled embedding of a tagger graph.

    Walks back from the probability output (default: the first graph output)
    through pass-through nodes to the ``Sigmoid``, then to the classifier head:
    a ``Gemm``, or a ``MatMul`` optionally followed by ``Add`` (bias), whose
    weight is a constant.  Returns ``(embedding tensor, probability output, dim)``.
    """
    graph = model.graph
    output = output or graph.output[0].name
    producers = {o: n for n in graph.node for o in n.output}
    consts = {t.name: t for t in graph.initializer}
    for n in graph.node:  # graph order: an Identity of a constant is a constant (tf2onnx exports)
        if n.op_type == "Constant":
            for o in n.output:
                consts.setdefault(o, next((a.t for a in n.attribute if a.name == "value"), n))
        elif n.op_type == "Identity" and n.input and n.input[0] in consts:
            consts.setdefault(n.output[0], consts[n.input[0]])

    def weight_dim(name: str, axis: int) -> int | None:
        t = consts.get(name)
        if t is None or not hasattr(t, "dims"):
            return None
        return int(t.dims[axis]) if len(t.dims) > axis else None

    node = producers.get(output)
    while node is not None and node.op_type in _PASS_THROUGH and node.op_type != "Sigmoid":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Sigmoid":
        raise ModelFormatError(
            f"cannot find the Sigmoid that produces {output!r}: this does not look like a WD tagger graph"
        )
    head = producers.get(node.input[0])
    while head is not None and head.op_type in ("Identity", "Cast"):
        head = producers.get(head.input[0])
    if head is not None and head.op_type == "Add":
        a, b = head.input[0], head.input[1]
        data = a if b in consts else b
        head = producers.get(data)
        while head is not None and head.op_type in ("Identity", "Cast"):
            head = producers.get(head.input[0])
    if head is None or head.op_type not in ("Gemm", "MatMul"):
        raise ModelFormatError(
            f"the Sigmoid producing {output!r} is not fed by a Gemm/MatMul classifier head "
            f"(found {head.op_type if head is not None else 'a graph input'})"
        )
    if head.op_type == "Gemm":
        emb, w = head.input[0], head.input[1]
        trans_a = next((a.i for a in head.attribute if a.name == "transA"), 0)
        if trans_a:
            raise ModelFormatError("classifier Gemm with transA=1 is not supported")
        trans_b = next((a.i for a in head.attribute if a.name == "transB"), 0)
        dim = weight_dim(w, 1 if trans_b else 0)
    else:
        a, b = head.input[0], head.input[1]
        emb, w = (a, b) if b in consts else (b, a)
        dim = weight_dim(w, 0)
    return emb, output, dim


def graph_info(model: Any) -> GraphInfo:
    """Input name/size/layout, head tensor and sizes of a WD graph (no changes)."""
    graph = model.graph
    inp = _graph_input(graph)
    dims = _dims(inp)
    if len(dims) != 4:
        raise ModelFormatError(f"image input {inp.name!r} has shape {dims}, expected 4 dimensions")
    if dims[3] == 3:
        layout, hw = "NHWC", (dims[1], dims[2])
    elif dims[1] == 3:
        layout, hw = "NCHW", (dims[2], dims[3])
    else:
        raise ModelFormatError(f"image input {inp.name!r} has shape {dims}: no 3-channel axis")
    if not all(isinstance(v, int) and v > 0 for v in hw):
        raise ModelFormatError(f"image input {inp.name!r} has no fixed spatial size ({dims}); cannot build a recipe")
    emb, out, dim = find_embedding_tensor(model)
    out_vi = next(o for o in graph.output if o.name == out)
    out_dims = _dims(out_vi)
    n_tags = out_dims[-1] if out_dims and isinstance(out_dims[-1], int) else None
    return GraphInfo(
        input_name=inp.name, input_size=(int(hw[0]), int(hw[1])), layout=layout, prob_output=out,
        embedding=emb, feature_dim=dim, n_tags=n_tags, fixed_batch=isinstance(dims[0], int),
    )


def _make_batch_symbolic(model: Any, fixed: int) -> None:
    """Replace a fixed batch dimension by ``N`` on inputs/outputs and in Reshape targets."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    for vi in list(graph.input) + list(graph.output):
        if vi.name in inits:
            continue
        shape = vi.type.tensor_type.shape
        if len(shape.dim) and shape.dim[0].HasField("dim_value") and shape.dim[0].dim_value == fixed:
            shape.dim[0].Clear()
            shape.dim[0].dim_param = "N"
    # Intermediate shapes recorded for batch 1 would contradict batch N: let ORT infer them again.
    del graph.value_info[:]
    # Reshape targets that spell out the batch (e.g. [1, -1]) copy it from the input instead (0).
    by_name = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    for n in graph.node:
        if n.op_type != "Reshape" or len(n.input) < 2:
            continue
        allowzero = next((a.i for a in n.attribute if a.name == "allowzero"), 0)
        t = by_name.get(n.input[1])
        if t is None or allowzero or readers.get(t.name, 0) != 1:
            continue
        target = numpy_helper.to_array(t).copy()
        if target.ndim == 1 and target.size >= 2 and target[0] == fixed:
            target[0] = 0
            t.CopyFrom(numpy_helper.from_array(target.astype(np.int64), t.name))


def add_feature_output(model: Any, info: GraphInfo | None = None) -> Any:
    """Expose the classifier head's input as output ``feature`` and the probabilities as ``prob``.

    Changes the ``ModelProto`` in place and returns it: an ``Identity`` node copies
    the embedding to ``feature`` (``(N, D)``) and the old output to ``prob``; the
    graph outputs become ``prob`` and ``feature``.  A fixed batch dimension is
    made symbolic.
    """
    from onnx import TensorProto

    info = info or graph_info(model)
    graph = model.graph
    if info.fixed_batch:
        fixed = _dims(_graph_input(graph))[0]
        _make_batch_symbolic(model, int(fixed))  # type: ignore[arg-type]
    out_vi = next(o for o in graph.output if o.name == info.prob_output)
    elem = out_vi.type.tensor_type.elem_type or TensorProto.FLOAT
    return expose_outputs(model, {"prob": info.prob_output, "feature": info.embedding},
                          {"prob": info.n_tags, "feature": info.feature_dim}, elem_type=elem)


def wd_recipe(input_size: tuple[int, int] = (448, 448), layout: str = "NHWC") -> InputRecipe:
    """The WD taggers' input recipe at a given input size (from the ONNX graph)."""
    return InputRecipe(
        size=tuple(input_size), layout=layout, channel_order="BGR", mean=None, std=None, scale=1.0,
        resize="pil-bicubic", pad_to_square=True, pad_color=(255, 255, 255),
    )


def prepare_graph(onnx_path: str | os.PathLike[str]) -> tuple[bytes, GraphInfo]:
    """Load a WD ``model.onnx`` once, add the ``feature``/``prob`` outputs, and serialise it."""
    import onnx  # heavy: only when a graph is prepared

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=True)
    except Exception as exc:
        raise ModelFormatError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    info = graph_info(model)
    add_feature_output(model, info)
    return model.SerializeToString(), info


# --------------------------------------------------------------------------- loading


def load_wd(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
            progress: bool = True, **options: Any) -> ImageModel:
    """Build an :class:`illust2vec.models.image_model.ImageModel` for a WD zoo record (``family == "wd"``).

    Files come from the store (downloaded unless offline); the graph with the
    added ``feature`` output is cached in the store, keyed by the model file's
    SHA-256.  The recipe's input size is read from the graph.
    """
    imported = {f.role: store.find(f.filename) for f in spec.files}
    if spec.hub and not all(imported.values()):
        try:  # the Hugging Face cache, where the other WD front-ends keep these files
            files = hub_files(spec.hub, download=download, offline=offline, progress=progress)
        except ModelNotFoundError as exc:
            missing = [f for f in spec.files if imported[f.role] is None]
            raise model_not_found(spec, missing, store, offline=hub_offline(offline),
                                  details=f"or in the Hugging Face cache: {exc}") from None
    else:
        files = require_files(spec, store, download=download, offline=offline, progress=progress,
                              checks={".csv": read_selected_tags})
    return load_wd_files(
        files["onnx"], files["tags"], store=store, name=spec.name,
        thresholds=dict(spec.thresholds) if spec.thresholds else None, model_cls=ImageModel, **options,
    )


def load_wd_hub(repo: str, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                progress: bool = True, **options: Any) -> ImageModel:
    """A WD-contract model (``model.onnx`` + ``selected_tags.csv``) by Hub repository id (``ORG/NAME[@REV]``).

    The files come from the user's Hugging Face cache, or (``download=True``) are fetched
    into it (:func:`illust2vec.models.hub.hub_files`); thresholds are the WD v3 defaults.
    """
    ref = HubRef.parse(repo)
    files = hub_files(ref, download=download, offline=offline, progress=progress)
    return load_wd_files(files["onnx"], files["tags"], store=store, name=str(ref), **options)


def load_wd_files(
    onnx_path: str | os.PathLike[str],
    tags_path: str | os.PathLike[str],
    *,
    store: ModelStore | None = None,
    name: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    model_cls: type[ImageModel] = ImageModel,
    **options: Any,
) -> ImageModel:
    """An ImageModel from a WD ``model.onnx`` and ``selected_tags.csv`` anywhere on disk."""
    store = store if store is not None else ModelStore()
    onnx_path = Path(onnx_path)
    digest = store.content_hash(onnx_path)
    key = f"wd-{digest[:24]}-s{SURGERY_VERSION}"
    info_path = store.onnx_dir / f"{key}.json"
    holder: dict[str, GraphInfo] = {}

    def build() -> bytes:
        data, info = prepare_graph(onnx_path)
        holder["info"] = info
        return data

    graph_path = store.cached_onnx(key, build)
    info = holder.get("info")
    if info is None:
        try:
            info = GraphInfo.from_json(info_path.read_text())
        except (OSError, ValueError, TypeError, KeyError):
            import onnx

            info = graph_info(onnx.load(os.fspath(onnx_path)))
    if not info_path.exists():
        try:
            atomic_write(info_path, lambda fh: fh.write(info.to_json()), text=True)
        except OSError:  # read-only store
            pass
    tags = read_selected_tags(tags_path)
    if info.n_tags is not None and info.n_tags != len(tags):
        raise ModelFormatError(
            f"{onnx_path} outputs {info.n_tags} probabilities but {tags_path} lists {len(tags)} tags; "
            "use the selected_tags.csv from the same repository"
        )
    model = model_cls(
        graph_path, recipe=wd_recipe(info.input_size, info.layout), tags=tags.table(),
        name=name or onnx_path.parent.name, identity=f"sha256:{digest}",
        thresholds=dict(thresholds or DEFAULT_THRESHOLDS), binarize="simhash", **with_engine(options),
    )
    if info.fixed_batch and not _batch_ok(model, store.onnx_dir / f"{key}.batch"):
        log.warning("note: %s was exported for one image at a time; running it with batch size 1", model.name)
        model.batch_size = 1
    return model


def _batch_ok(model: Any, marker: Path) -> bool:
    """Whether a graph exported with a fixed batch of 1 runs two images at once (checked once, remembered)."""
    try:
        return marker.read_text().strip() == "ok"
    except OSError:
        pass
    x = np.zeros((2,) + tuple(model.recipe.input_shape), np.float32)
    try:
        out = model.session.run(None, {model.session.get_inputs()[0].name: x})
        ok = all(o.shape[0] == 2 for o in out)
    except Exception:  # onnxruntime's shape errors have no common base class
        ok = False
    try:
        marker.write_text("ok" if ok else "batch-1")
    except OSError:
        pass
    return ok


# --------------------------------------------------------------------------- zoo records
# Each repository has model.onnx and
# selected_tags.csv; they are stored under per-model names because every repository uses
# the same two file names.  Sizes and SHA-256 are not recorded here (they could not be
# fetched when these entries were written): downloads are checked structurally instead.
# The input size in the recipe is read from the graph when the model loads (448 for v3 and v1.4).
HF = "https://huggingface.co/{repo}/resolve/main/{file}"
_WD_INFO = {
    "wd-vit-v3": "ViT-B/16",
    "wd-swinv2-v3": "SwinV2-B",
    "wd-convnext-v3": "ConvNeXt-B",
    "wd-vit-large-v3": "ViT-L/16",
    "wd-eva02-large-v3": "EVA02-L",
    "wd14-moat-v2": "MOAT",
    "wd14-convnext-v2": "ConvNeXt",
    "wd14-convnextv2-v2": "ConvNeXtV2",
    "wd14-swinv2-v2": "SwinV2",
    "wd14-vit-v2": "ViT",
}


def _zoo_record(name: str, architecture: str) -> ModelSpec:
    repo = WD_REPOS[name]
    stem = repo.split("/")[1]
    return ModelSpec(
        name=name,
        family="wd",
        description=f"WD {'v1.4 (v2 generation)' if name.startswith('wd14-') else 'v3'} tagger ({architecture}, "
                    "SmilingWolf): Danbooru general/character/rating tags and the embedding that feeds its "
                    "classifier head",
        files=(
            ModelFile(f"{stem}.onnx", "onnx", HF.format(repo=repo, file="model.onnx")),
            ModelFile(f"{stem}.selected_tags.csv", "tags", HF.format(repo=repo, file="selected_tags.csv")),
        ),
        recipe=wd_recipe((448, 448)),
        outputs=("prob", "feature"),
        license="Apache-2.0",
        homepage=f"https://huggingface.co/{repo}",
        thresholds=dict(DEFAULT_THRESHOLDS),
        binarize="simhash",
        hub=repo,
    )


def _read_tag_table(path: str | os.PathLike[str]) -> TagTable:
    return read_selected_tags(path).table()


FAMILY = ModelFamily(
    name="wd",
    specs=tuple(_zoo_record(name, arch) for name, arch in _WD_INFO.items()),
    load=load_wd,
    tag_readers={".csv": _read_tag_table},
    load_files=load_wd_files,
    file_checks={".csv": read_selected_tags},
    load_hub=load_wd_hub,
    hub_layout=dict(WD_CONTRACT),
)
