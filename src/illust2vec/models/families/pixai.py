"""The PixAI tagger v0.9 (pixai-labs), in its ONNX export (``deepghs/pixai-tagger-v0.9-onnx``).

What this module knows about the family (the layout dghs-imgutils 0.19 reads,
``imgutils.tagging.pixai``; the repository could not be fetched here):

* **Files** of the Hub repository: ``model.onnx`` (input ``input``, NCHW; outputs
  ``prediction`` (sigmoid probabilities), ``embedding`` (the pooled image embedding,
  1024-d for v0.9) and ``logits``), ``selected_tags.csv`` (columns ``name``, ``category``
  and optionally ``ips``, a JSON list of the series of a character tag),
  ``preprocess.json`` (``{"stages": [...]}``: torchvision-style transforms, read by
  :func:`illust2vec.prep.stages.recipe_from_stages`) and ``thresholds.csv``
  (``category,name,threshold``: the category names and default thresholds).
* **Tags** keep their underscores (``long_hair``), as imgutils returns them; categories get
  the names ``thresholds.csv`` gives their codes (code 0 ``general``, 4 ``character`` in v0.9),
  codes it does not list fall back to the WD codes (:data:`~illust2vec.models.families.wd.CATEGORY_CODES`).
* **Thresholds**: per category from ``thresholds.csv`` (the first row of a category wins), 0.4
  for a category it does not list; a tag is kept when ``p >= threshold`` (the threshold
  rounded to float32), as imgutils compares.  ``--threshold`` overrides.
* **Embeddings**: the graph's ``embedding`` output becomes ``feature`` (collections, search).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.models.fetch import model_not_found, require_files
from illust2vec.models.families.exports import open_export, read_recipe
from illust2vec.models.families.tag_files import category_code, csv_rows, hub_model_files
from illust2vec.models.hub import HubRef, hub_files, hub_offline
from illust2vec.models.image_model import ImageModel
from illust2vec.models.spec import ModelFamily, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe

__all__ = ["DEFAULT_THRESHOLD", "FAMILY", "PIXAI_LAYOUT", "PixAITagList", "load_pixai", "load_pixai_files",
           "load_pixai_hub", "read_category_thresholds", "read_pixai_tags"]

#: Role -> file name in a PixAI export repository.
PIXAI_LAYOUT: dict[str, str] = {"onnx": "model.onnx", "tags": "selected_tags.csv",
                                "preprocess": "preprocess.json", "thresholds": "thresholds.csv"}
#: The threshold of a category that ``thresholds.csv`` does not list (imgutils' fallback).
DEFAULT_THRESHOLD = 0.4
#: Output names of the export (imgutils reads them by these names).
PROB_OUTPUT, EMBEDDING_OUTPUT = "prediction", "embedding"
_WD_CODES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating"}


@dataclass(frozen=True)
class PixAITagList:
    """The rows of a PixAI ``selected_tags.csv``, index-aligned with the ``prediction`` output."""

    names: tuple[str, ...]
    category_codes: tuple[int, ...]
    ips: Mapping[str, tuple[str, ...]]  # character tag -> its series, where the file says

    def __len__(self) -> int:
        return len(self.names)

    def table(self, category_names: Mapping[int, str]) -> TagTable:
        cats = tuple(category_names.get(c) or _WD_CODES.get(c, f"category{c}") for c in self.category_codes)
        return TagTable(self.names, cats)


def read_pixai_tags(path: str | os.PathLike[str]) -> PixAITagList:
    """Parse a PixAI ``selected_tags.csv`` (``name``, ``category``, optional ``ips``); errors name the line."""
    names: list[str] = []
    codes: list[int] = []
    ips: dict[str, tuple[str, ...]] = {}
    for line, row in csv_rows(path, ("name", "category")):
        if not row.get("name"):
            raise ModelFormatError(f"{path}:{line}: empty tag name")
        codes.append(category_code(path, line, row["category"]))
        names.append(row["name"])
        if row.get("ips"):
            try:
                series = json.loads(row["ips"])
            except json.JSONDecodeError:
                raise ModelFormatError(f"{path}:{line}: the ips column is not a JSON list") from None
            if series:
                ips[row["name"]] = tuple(str(s) for s in series)
    if not names:
        raise ModelFormatError(f"{path}: no tags")
    return PixAITagList(tuple(names), tuple(codes), ips)


def read_category_thresholds(path: str | os.PathLike[str]) -> tuple[dict[int, float], dict[int, str]]:
    """``thresholds.csv`` (``category,name,threshold``) -> (code -> threshold, code -> name).

    The first row of a category gives its threshold, the last its name (as imgutils reads it).
    """
    thresholds: dict[int, float] = {}
    names: dict[int, str] = {}
    for line, row in csv_rows(path, ("category", "name", "threshold"), what="thresholds.csv",
                              missing="thresholds file"):
        try:
            code, value = int(row["category"]), float(row["threshold"])
        except (TypeError, ValueError):
            raise ModelFormatError(f"{path}:{line}: bad number") from None
        thresholds.setdefault(code, value)
        names[code] = row["name"]
    return thresholds, names


def load_pixai_files(
    onnx_path: str | os.PathLike[str],
    tags_path: str | os.PathLike[str],
    preprocess_path: str | os.PathLike[str],
    thresholds_path: str | os.PathLike[str] | None = None,
    *,
    store: ModelStore | None = None,
    name: str | None = None,
    **options: Any,
) -> ImageModel:
    """An ImageModel from a PixAI export's files anywhere on disk."""
    tags = read_pixai_tags(tags_path)
    by_code, names = read_category_thresholds(thresholds_path) if thresholds_path is not None else ({}, {})
    table = tags.table(names)
    thresholds = {table.categories[tags.category_codes.index(code)]: value for code, value in by_code.items()
                  if code in tags.category_codes}
    thresholds["default"] = DEFAULT_THRESHOLD
    model = open_export(onnx_path, family="pixai", prob=PROB_OUTPUT, embedding=EMBEDDING_OUTPUT,
                        recipe=read_recipe(preprocess_path), tags=table, thresholds=thresholds, store=store,
                        name=name, **options)
    #: the series of each character tag, where selected_tags.csv has an ``ips`` column
    model.tag_series = dict(tags.ips)  # type: ignore[attr-defined]
    return model


def load_pixai_hub(repo: str | HubRef, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                   progress: bool = True, name: str | None = None, **options: Any) -> ImageModel:
    """A PixAI-layout model by Hub repository id (``ORG/NAME[@REV]``), from the Hugging Face cache."""
    ref = HubRef.parse(repo) if isinstance(repo, str) else repo
    files = hub_files(ref, PIXAI_LAYOUT, download=download, offline=offline, progress=progress)
    return load_pixai_files(files["onnx"], files["tags"], files["preprocess"], files["thresholds"],
                            store=store, name=name or str(ref), **options)


def load_pixai(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
               progress: bool = True, **options: Any) -> ImageModel:
    """The zoo's loader: files imported into the store (``models import --as``), else the Hub cache."""
    imported = {f.role: store.find(f.filename) for f in spec.files}
    if all(imported.values()):
        files = require_files(spec, store, download=False, offline=True, progress=progress)
    elif spec.hub:
        try:
            return load_pixai_hub(spec.hub, store, download=download, offline=offline, progress=progress,
                                  name=spec.name, **options)
        except ModelNotFoundError as exc:
            missing = [f for f in spec.files if imported[f.role] is None]
            raise model_not_found(spec, missing, store, offline=hub_offline(offline),
                                  details=f"or in the Hugging Face cache: {exc}") from None
    else:
        files = require_files(spec, store, download=download, offline=offline, progress=progress)
    return load_pixai_files(files["onnx"], files["tags"], files["preprocess"], files["thresholds"],
                            store=store, name=spec.name, **options)


def _zoo_record() -> ModelSpec:
    repo = "deepghs/pixai-tagger-v0.9-onnx"
    stem = "pixai-tagger-v0.9"
    return ModelSpec(
        name="pixai-v0.9",
        family="pixai",
        description="PixAI tagger v0.9 (pixai-labs; EVA02-L, 448 px, ONNX export by deepghs): about 13k Danbooru "
                    "general and character tags, per-category thresholds from its thresholds.csv, a 1024-d embedding",
        files=hub_model_files(repo, PIXAI_LAYOUT, stem),
        # what PixAI's own front-end does; the loaded model's recipe is read from preprocess.json
        recipe=InputRecipe(size=(448, 448), layout="NCHW", channel_order="RGB", scale=1 / 255,
                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="pil-bilinear"),
        outputs=("prob", "feature"),
        license="Apache-2.0 (as published on the model card; not verified here)",
        homepage="https://huggingface.co/pixai-labs/pixai-tagger-v0.9",
        thresholds={"default": DEFAULT_THRESHOLD},  # the per-category values come from thresholds.csv
        binarize="simhash",
        hub=repo,
        hub_layout=dict(PIXAI_LAYOUT),
    )


def _read_tag_table(path: str | os.PathLike[str]) -> TagTable:
    return read_pixai_tags(path).table({})


FAMILY = ModelFamily(
    name="pixai",
    specs=(_zoo_record(),),
    load=load_pixai,
    file_checks={"preprocess.json": read_recipe, "thresholds.csv": read_category_thresholds},
    load_hub=load_pixai_hub,
    hub_layout=dict(PIXAI_LAYOUT),
)
