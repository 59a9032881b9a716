"""The Camie tagger (Camais03), in its ONNX export (``deepghs/camie_tagger_onnx``), initial and refined.

What this module knows about the family (the layout dghs-imgutils 0.19 reads,
``imgutils.tagging.camie``; the repository could not be fetched here):

* **Files**, in the repository's folder ``initial/``: ``model.onnx`` (both stages: outputs
  ``initial/embedding``, ``initial/logits``, ``initial/output`` and the refined ``embedding``,
  ``logits``, ``output``), ``model_initial_only.onnx`` (the first stage: ``embedding``,
  ``logits``, ``output``), ``selected_tags.csv`` (``name``, ``category``), ``preprocess.json``
  (torchvision-style stages, :func:`illust2vec.prep.stages.recipe_from_stages`; 512 px) and
  ``threshold.json`` (``{category: {mode: {"threshold": t, ...}}}``).
* **Models**: ``camie-refined`` (``model.onnx``'s refined output, what ``get_camie_tags`` returns by
  default) and ``camie-initial`` (``model_initial_only.onnx``).
* **Categories**: codes 0 general, 1 artist, 3 copyright, 4 character, 5 meta, 9 rating, 10 year.
* **Thresholds**: ``threshold.json``'s ``balanced`` mode per category (:data:`MODES` lists the
  others, for :func:`load_camie_files`); ratings reported whole; kept when ``p >= t`` (float32),
  as imgutils compares.
* **Embeddings**: the graph's ``embedding`` output becomes ``feature``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.models.families.exports import open_export, read_recipe
from illust2vec.models.families.tag_files import hub_model_files, read_tag_table
from illust2vec.models.fetch import model_not_found, require_files
from illust2vec.models.hub import HubRef, hub_files, hub_offline
from illust2vec.models.image_model import ImageModel
from illust2vec.models.spec import ModelFamily, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe

__all__ = ["CAMIE_REPO", "CATEGORY_CODES", "FAMILY", "MODES", "camie_layout", "load_camie", "load_camie_files", "load_camie_hub",
           "read_camie_tags", "read_camie_thresholds"]

CAMIE_REPO = "deepghs/camie_tagger_onnx"
#: selected_tags.csv category code -> name (imgutils' map).
CATEGORY_CODES: dict[int, str] = {9: "rating", 10: "year", 0: "general", 1: "artist", 3: "copyright",
                                  4: "character", 5: "meta"}
#: The threshold sets of threshold.json.
MODES = ("balanced", "high_precision", "high_recall", "micro_opt", "macro_opt")
_GRAPHS = {"refined": "model.onnx", "initial": "model_initial_only.onnx"}


def camie_layout(stage: str, folder: str = "initial") -> dict[str, str]:
    """Role -> file in the repository for a stage (``refined`` or ``initial``)."""
    return {"onnx": f"{folder}/{_GRAPHS[stage]}", "tags": f"{folder}/selected_tags.csv",
            "preprocess": f"{folder}/preprocess.json", "thresholds": f"{folder}/threshold.json"}


def read_camie_tags(path: str | os.PathLike[str]) -> TagTable:
    """A Camie ``selected_tags.csv`` (``name``, ``category``) as a tag table; errors name the line."""
    return read_tag_table(path, CATEGORY_CODES)


def read_camie_thresholds(path: str | os.PathLike[str], mode: str = "balanced") -> dict[str, float]:
    """``threshold.json`` -> category -> threshold of ``mode``."""
    if mode not in MODES:
        raise ModelFormatError(f"unknown Camie threshold mode {mode!r}; choose {', '.join(MODES)}")
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {cat: float(raw[cat][mode]["threshold"]) for cat in raw if cat in CATEGORY_CODES.values()}
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: threshold.json not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable threshold.json ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: no {mode} threshold for a category ({exc!r})") from None


def load_camie_files(onnx_path: str | os.PathLike[str], tags_path: str | os.PathLike[str],
                     preprocess_path: str | os.PathLike[str], thresholds_path: str | os.PathLike[str], *,
                     stage: str = "refined", mode: str = "balanced", store: ModelStore | None = None,
                     name: str | None = None, **options: Any) -> ImageModel:
    """An ImageModel from a Camie export's files: ``stage`` ``refined`` reads ``model.onnx``'s refined
    output, ``initial`` the first stage (``model_initial_only.onnx``, or ``model.onnx``'s ``initial/output``)."""
    import onnx

    onnx_path = Path(onnx_path)
    outputs = [o.name for o in onnx.load(os.fspath(onnx_path), load_external_data=False).graph.output]
    if stage == "initial" and "initial/output" in outputs:
        prob, embedding = "initial/output", "initial/embedding"
    elif stage in ("initial", "refined"):
        prob, embedding = "output", "embedding"
    else:
        raise ModelFormatError(f"unknown Camie stage {stage!r}; choose refined or initial")
    thresholds = read_camie_thresholds(thresholds_path, mode)
    return open_export(onnx_path, family="camie", prob=prob, embedding=embedding, recipe=read_recipe(preprocess_path),
                       tags=read_camie_tags(tags_path), thresholds=thresholds, store=store, name=name, **options)


def load_camie_hub(repo: str | HubRef, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                   progress: bool = True, stage: str = "refined", name: str | None = None,
                   **options: Any) -> ImageModel:
    """A Camie-layout model by Hub repository id (``ORG/NAME[@REV]``), from the Hugging Face cache."""
    ref = HubRef.parse(repo) if isinstance(repo, str) else repo
    files = hub_files(ref, camie_layout(stage), download=download, offline=offline, progress=progress)
    return load_camie_files(files["onnx"], files["tags"], files["preprocess"], files["thresholds"], stage=stage,
                            store=store, name=name or str(ref), **options)


def load_camie(spec: ModelSpec, store: ModelStore, *, download: bool = False, offline: bool | None = None,
               progress: bool = True, **options: Any) -> ImageModel:
    """The zoo's loader: files imported into the store (``models import --as``), else the Hub cache."""
    stage = "initial" if spec.name.endswith("initial") else "refined"
    imported = {f.role: store.find(f.filename) for f in spec.files}
    if all(imported.values()):
        files = require_files(spec, store, download=False, offline=True, progress=progress)
    else:
        try:
            files = hub_files(HubRef.parse(spec.hub or CAMIE_REPO), spec.hub_file_names, download=download,
                              offline=offline, progress=progress)
        except ModelNotFoundError as exc:
            missing = [f for f in spec.files if imported[f.role] is None]
            raise model_not_found(spec, missing, store, offline=hub_offline(offline),
                                  details=f"or in the Hugging Face cache: {exc}") from None
    return load_camie_files(files["onnx"], files["tags"], files["preprocess"], files["thresholds"], stage=stage,
                            store=store, name=spec.name, **options)


def _zoo_record(stage: str) -> ModelSpec:
    layout = camie_layout(stage)
    return ModelSpec(
        name=f"camie-{stage}",
        family="camie",
        description=f"Camie tagger ({stage} stage; Camais03, 512 px, ONNX export by deepghs): about 70k Danbooru "
                    "tags in 7 categories (general, character, copyright, artist, meta, year, rating), thresholds "
                    "from its threshold.json (balanced), an embedding",
        files=hub_model_files(CAMIE_REPO, layout, f"camie-{stage}"),
        # the loaded model's recipe is read from preprocess.json; this one is its size only
        recipe=InputRecipe(size=(512, 512), layout="NCHW", channel_order="RGB", scale=1 / 255, resize="pil-bilinear"),
        outputs=("prob", "feature"),
        license="GPL-3.0 (as published on the model card; not verified here)",
        homepage="https://huggingface.co/Camais03/camie-tagger",
        thresholds={},  # from threshold.json
        binarize="simhash",
        hub=CAMIE_REPO,
        hub_layout=layout,
    )


FAMILY = ModelFamily(
    name="camie",
    specs=(_zoo_record("refined"), _zoo_record("initial")),
    load=load_camie,
    file_checks={"threshold.json": read_camie_thresholds},
    load_hub=load_camie_hub,
    hub_layout=camie_layout("refined"),
)
