"""What the taggers exported with a ``preprocess.json`` share (the PixAI and Camie families).

These exports (deepghs' ONNX conversions, read by dghs-imgutils) ship their preprocessing as
torchvision-style stages (:func:`read_recipe`), name their outputs (``prediction`` /
``output``, ``embedding``), and keep a tag when ``p >= threshold`` with the threshold
rounded to float32 (numpy comparing a float32 array with a Python float).
:func:`open_export` turns the files into an :class:`~illust2vec.models.image_model.ImageModel`
with outputs ``prob`` and ``feature``, the graph cached in the model store.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from illust2vec.errors import ModelFormatError
from illust2vec.models.graph_outputs import expose_outputs, output_names
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe
from illust2vec.prep.stages import recipe_from_stages

__all__ = ["SURGERY_VERSION", "open_export", "prepare_graph", "read_recipe"]

#: Bump when :func:`prepare_graph` changes what it writes (invalidates cached graphs).
SURGERY_VERSION = 1


def read_recipe(path: str | os.PathLike[str]) -> InputRecipe:
    """The input recipe of a ``preprocess.json``; an unsupported stage is a :class:`ModelFormatError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return recipe_from_stages(data)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: preprocess.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable preprocess.json ({exc})") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{path}: {exc}") from None


def prepare_graph(onnx_path: Path, prob: str, embedding: str | None, family: str) -> bytes:
    """The export's graph with ``prob`` (from output ``prob``) and ``feature`` (from ``embedding``, if present)."""
    import onnx

    try:
        model = onnx.load(os.fspath(onnx_path), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError
        raise ModelFormatError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    names = output_names(model)
    if prob not in names:
        raise ModelFormatError(f"{onnx_path}: no output {prob!r} (outputs: {', '.join(names)}); "
                               f"not a {family} tagger export")
    sources = {"prob": prob}
    if embedding is not None and embedding in names:
        sources["feature"] = embedding
    return expose_outputs(model, sources).SerializeToString()


def open_export(onnx_path: str | os.PathLike[str], *, family: str, prob: str, embedding: str | None,
                recipe: InputRecipe, tags: TagTable, thresholds: Mapping[str, float],
                store: ModelStore | None = None, name: str | None = None, threshold_compare: str = "ge",
                thresholds_float32: bool = True, **options: Any) -> ImageModel:
    """An ImageModel of an export: the graph prepared once per content hash; imgutils' ``>=`` rule
    unless ``threshold_compare`` / ``thresholds_float32`` say otherwise."""
    store = store if store is not None else ModelStore()
    onnx_path = Path(onnx_path)
    digest = store.content_hash(onnx_path)
    graph = store.cached_onnx(f"{family}-{digest[:24]}-s{SURGERY_VERSION}-{prob}",
                              lambda: prepare_graph(onnx_path, prob, embedding, family))
    return ImageModel(graph, recipe=recipe, tags=tags, name=name or onnx_path.parent.name,
                      identity=f"sha256:{digest}", thresholds=dict(thresholds), binarize="simhash",
                      threshold_compare=threshold_compare, thresholds_float32=thresholds_float32, **with_engine(options))
