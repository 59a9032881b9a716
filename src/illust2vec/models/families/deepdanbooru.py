"""DeepDanbooru (KichangKim), in the ONNX export dghs-imgutils uses (``deepghs/imgutils-models``).

What this module knows about the family (the layout imgutils 0.19 reads,
``imgutils.tagging.deepdanbooru``; the repository could not be fetched here):

* **Files**: ``deepdanbooru/deepdanbooru.onnx`` (one image input, NHWC 512x512 RGB 0-1; its
  first output is the sigmoid probabilities) and ``deepdanbooru/deepdanbooru_tags.csv``
  (``name``, ``real_name`` (today's Danbooru name), ``category``: 0 general, 4 character,
  9 rating).
* **Input recipe**: transparency on white, the picture scaled so that its longer side is 512
  (``int(side * 512 / longer)``, Pillow bicubic), then centred on a black 512x512 canvas (resize
  first, pad after: :attr:`InputRecipe.letterbox <illust2vec.prep.preprocess.InputRecipe>`), / 255.
* **Thresholds**: 0.5 general and character, ``p > t``; ratings reported whole.
  No embedding output (the export has only the probabilities).
"""
from __future__ import annotations

import os
from typing import Any

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.models.families.exports import open_export
from illust2vec.models.families.tag_files import hub_model_files, read_tag_table
from illust2vec.models.fetch import model_not_found, require_files
from illust2vec.models.hub import HubRef, hub_files, hub_offline
from illust2vec.models.image_model import ImageModel
from illust2vec.models.spec import ModelFamily, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe

__all__ = ["DDB_LAYOUT", "DDB_RECIPE", "DDB_REPO", "DEFAULT_THRESHOLDS", "FAMILY", "load_deepdanbooru",
           "load_deepdanbooru_files", "read_deepdanbooru_tags"]

DDB_REPO = "deepghs/imgutils-models"
DDB_LAYOUT = {"onnx": "deepdanbooru/deepdanbooru.onnx", "tags": "deepdanbooru/deepdanbooru_tags.csv"}
DEFAULT_THRESHOLDS = {"general": 0.5, "character": 0.5, "default": 0.5}
DDB_RECIPE = InputRecipe(size=(512, 512), layout="NHWC", channel_order="RGB", scale=1 / 255, resize="pil-bicubic",
                         letterbox=True, pad_color=(0, 0, 0))
_CODES = {0: "general", 4: "character", 9: "rating"}


def read_deepdanbooru_tags(path: str | os.PathLike[str], *, real_names: bool = False) -> TagTable:
    """``deepdanbooru_tags.csv`` as a tag table (``real_names``: the ``real_name`` column)."""
    return read_tag_table(path, _CODES, name_column="real_name" if real_names else "name",
                          what="DeepDanbooru tag file", require_names=False)


def load_deepdanbooru_files(onnx_path: str | os.PathLike[str], tags_path: str | os.PathLike[str], *,
                            real_names: bool = False, store: ModelStore | None = None, name: str | None = None,
                            **options: Any) -> ImageModel:
    """An ImageModel from the export's two files (``real_names``: today's Danbooru names)."""
    import onnx

    outputs = [o.name for o in onnx.load(os.fspath(onnx_path), load_external_data=False).graph.output]
    if not outputs:
        raise ModelFormatError(f"{onnx_path}: the graph has no output")
    return open_export(onnx_path, family="deepdanbooru", prob=outputs[0], embedding=None, recipe=DDB_RECIPE,
                       tags=read_deepdanbooru_tags(tags_path, real_names=real_names), thresholds=DEFAULT_THRESHOLDS,
                       store=store, name=name, threshold_compare="gt", thresholds_float32=False, **options)


def load_deepdanbooru_hub(repo: str | HubRef, store: ModelStore, *, download: bool = False,
                          offline: bool | None = None, progress: bool = True, name: str | None = None,
                          **options: Any) -> ImageModel:
    """DeepDanbooru's files from a Hub repository in the Hugging Face cache."""
    ref = HubRef.parse(repo) if isinstance(repo, str) else repo
    files = hub_files(ref, DDB_LAYOUT, download=download, offline=offline, progress=progress)
    return load_deepdanbooru_files(files["onnx"], files["tags"], store=store, name=name or str(ref), **options)


def load_deepdanbooru(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                      progress: bool = True, **options: Any) -> ImageModel:
    """The zoo's loader: files imported into the store (``models import --as``), else the Hub cache."""
    imported = {f.role: store.find(f.filename) for f in spec.files}
    if all(imported.values()):
        files = require_files(spec, store, download=False, offline=True, progress=progress)
        return load_deepdanbooru_files(files["onnx"], files["tags"], store=store, name=spec.name, **options)
    try:
        return load_deepdanbooru_hub(spec.hub or DDB_REPO, store, download=download, offline=offline,
                                     progress=progress, name=spec.name, **options)
    except ModelNotFoundError as exc:
        missing = [f for f in spec.files if imported[f.role] is None]
        raise model_not_found(spec, missing, store, offline=hub_offline(offline),
                              details=f"or in the Hugging Face cache: {exc}") from None


def _zoo_record() -> ModelSpec:
    return ModelSpec(
        name="deepdanbooru",
        family="deepdanbooru",
        description="DeepDanbooru (KichangKim; ResNet, 512 px, ONNX export used by dghs-imgutils): Danbooru general, "
                    "character and rating tags; an old model, for comparison",
        files=hub_model_files(DDB_REPO, DDB_LAYOUT, "deepdanbooru"),
        recipe=DDB_RECIPE,
        outputs=("prob",),
        license="MIT (the DeepDanbooru project; as published, not verified here)",
        homepage="https://github.com/KichangKim/DeepDanbooru",
        thresholds=dict(DEFAULT_THRESHOLDS),
        binarize="simhash",
        hub=DDB_REPO,
        hub_layout=dict(DDB_LAYOUT),
    )


FAMILY = ModelFamily(name="deepdanbooru", specs=(_zoo_record(),), load=load_deepdanbooru)
