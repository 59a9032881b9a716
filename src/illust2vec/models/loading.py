"""The one way from a name, a file or flags to a model: :func:`load_model`.

``load_model`` takes a zoo name (``"i2v-tag"``), a model file (``.caffemodel``
or ``.onnx``, with its tag list), or nothing (the best model *present* for the
task).  It never opens a network connection unless ``download=True``.

>>> from illust2vec.models.loading import load_model
>>> model = load_model("generic-effnet-lite0")                    # doctest: +SKIP
>>> model = load_model("tag_model.caffemodel", tags="tag_list.json")  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from illust2vec.errors import Illust2VecError, ModelNotFoundError
from illust2vec.models.catalog import FAMILIES, MODELS, get_family, get_spec, spec_for_hub, suggest_models
from illust2vec.models.compat import compat_mode, compat_recipe
from illust2vec.models.families.i2v.model import Illustration2Vec
from illust2vec.models.hub import HubRef, cached_file, is_repo_id
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.spec import ModelFamily, ModelSpec
from illust2vec.models.store import ModelStore
from illust2vec.prep.preprocess import I2V_RECIPE, InputRecipe

__all__ = ["DEFAULT_MODELS", "Task", "default_model_name", "hub_family", "load_model", "load_onnx_model", "model_available"]

log = logging.getLogger("illust2vec")

Task = Literal["tag", "feature"]

#: What ``load_model(task=...)`` uses when no name is given: the first one present, in this order.
DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "tag": ("i2v-tag", "wd-eva02-large-v3", "wd-vit-large-v3", "wd-swinv2-v3", "wd-convnext-v3", "wd-vit-v3"),
    "feature": ("i2v-feature", "generic-effnet-lite0"),
}

#: File suffixes that ``load_model`` treats as a model file rather than a zoo name.
MODEL_FILE_SUFFIXES = (".caffemodel", ".onnx")


def model_available(spec: ModelSpec, store: ModelStore) -> bool:
    """Whether all of a model's files are present: in the store, shipped by an installed package,
    or (Hub models) in the Hugging Face cache."""
    if all(f.package or store.find(f.filename) is not None for f in spec.files):
        return True
    return bool(spec.hub) and all(cached_file(HubRef(spec.hub), name) is not None
                                  for name in spec.hub_file_names.values())


def default_model_name(task: Task, store: ModelStore | None = None) -> str:
    """The model a command uses when none is named: the first of :data:`DEFAULT_MODELS` present.

    Deterministic for a given store: no network, no fallback after a failure.
    With nothing present, the first choice is returned (loading it then says how to get it).
    """
    store = store or ModelStore()
    names = [n for n in DEFAULT_MODELS[task] if n in MODELS]
    for name in names:
        if model_available(get_spec(name), store):
            return name
    return names[0]


def load_model(
    name: str | os.PathLike | None = None,
    *,
    task: Task = "feature",
    tags: str | os.PathLike | None = None,
    thresholds: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    download: bool = False,
    offline: bool | None = None,
    progress: bool = True,
    resize: str | None = None,
    exif_orientation: str | None = None,
    compat: str | None = None,
    **options: Any,
) -> ImageModel:
    """Load a model by zoo name (``illust2vec.models.catalog.list_models()``) or from a file.

    * ``name`` a zoo name: its files come from the model store; missing files are
      downloaded only with ``download=True`` (never with ``offline=True`` or
      ``ILLUST2VEC_OFFLINE=1``), otherwise the error says how to get them.
    * ``name`` a ``.caffemodel`` or ``.onnx`` path: the file is used directly, with
      ``tags`` (i2v ``tag_list.json[.gz]`` or WD ``selected_tags.csv``) and, for i2v
      taggers, ``thresholds`` (the calibrated threshold file).
    * ``name`` ``ORG/NAME[@REVISION]`` not in the zoo: a Hugging Face repository, from the Hub
      cache (or fetched into it with ``download=True``), read by :func:`hub_family`'s family: a
      zoo record's repository by its family, else PixAI's layout when its files are cached, else
      the WD contract (``model.onnx`` + ``selected_tags.csv``).
    * ``name`` None: the best model for ``task`` present here (:func:`default_model_name`).

    ``resize`` and ``exif_orientation`` override the recipe's; ``compat`` (``"kohya"``,
    ``"wd14-webui"``) applies that tool's pixel path (:func:`illust2vec.models.compat.compat_recipe`),
    explicit ``resize`` / ``exif_orientation`` winning; other ``options`` go to
    :class:`~illust2vec.models.image_model.ImageModel` (``device``, ``threads``,
    ``batch_size``, ``alpha``, ``precision``, ``allow_fallback``).
    """
    store = ModelStore(model_dir)
    if name is None:
        name = default_model_name(task, store)
        first = DEFAULT_MODELS[task][0]
        if name != first:
            log.warning("note: %s is not in the model store; using %s (run 'illust2vec models download %s' "
                        "for the original)", first, name, first)
    path = Path(name)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES or (isinstance(name, os.PathLike) and name not in MODELS):
        model = _load_file(path, tags=tags, thresholds=thresholds, store=store, **options)
    elif str(name) not in MODELS and is_repo_id(str(name)):  # a Hugging Face repository
        try:
            model = hub_family(str(name)).load_hub(str(name), store, download=download,  # type: ignore[misc]
                                                   offline=offline, progress=progress, **options)
        except ModelNotFoundError as exc:
            hint = suggest_models(str(name))  # a mistyped zoo repository: say which one
            if not hint:
                raise
            raise ModelNotFoundError(f"{exc}{hint}", exc.details) from None
    else:
        spec = get_spec(str(name))
        model = get_family(spec.family).load(spec, store, download=download, offline=offline,
                                              progress=progress, **options)
    model.recipe = compat_recipe(model.recipe, compat_mode(compat), resize=resize, exif_orientation=exif_orientation)
    return model


def hub_family(repo: str) -> ModelFamily:
    """The family that reads a Hub repository: the zoo record's, else the one whose files are all in
    the Hugging Face cache (the family with most files first), else WD's contract."""
    spec = spec_for_hub(repo)
    if spec is not None and get_family(spec.family).load_hub is not None:
        return get_family(spec.family)
    ref = HubRef.parse(repo)
    readers = sorted((f for f in FAMILIES.values() if f.load_hub is not None and f.hub_layout),
                     key=lambda f: -len(f.hub_layout or {}))
    for family in readers:
        if all(cached_file(ref, file) is not None for file in (family.hub_layout or {}).values()):
            return family
    return FAMILIES["wd"]


def _load_file(path: Path, *, tags: str | os.PathLike | None, thresholds: str | os.PathLike | None,
               store: ModelStore, **options: Any) -> ImageModel:
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        return Illustration2Vec.from_caffemodel(path, tags=tags, thresholds=thresholds, model_dir=store.root,
                                                **options)
    if suffix == ".onnx":
        return load_onnx_model(path, tags=tags, model_dir=store.root, **options)
    raise Illust2VecError(f"{path}: a model file is a .caffemodel or .onnx file")


def load_onnx_model(
    path: str | os.PathLike,
    *,
    tags: str | os.PathLike | None = None,
    recipe: InputRecipe | None = None,
    model_dir: str | os.PathLike | None = None,
    **options: Any,
) -> ImageModel:
    """Load an ``.onnx`` file directly (``--weights model.onnx``).

    The tag file's kind picks the family: a family that loads raw files of its
    own (WD: ``selected_tags.csv``) takes over; otherwise the family's tag reader
    reads the tags and, unless ``recipe`` is given, the i2v recipe is used.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such ONNX file")
    store = ModelStore(model_dir)
    table = None
    if tags is not None:
        suffix = Path(tags).suffix.lower()
        family = next((f for f in FAMILIES.values() if suffix in f.tag_readers), None)
        if family is None:
            known = sorted({s for f in FAMILIES.values() for s in f.tag_readers})
            raise Illust2VecError(f"{tags}: unknown tag file type {suffix!r} (expected one of {', '.join(known)})")
        if family.load_files is not None and recipe is None:
            return family.load_files(path, tags, store=store, **options)
        table = family.tag_readers[suffix](tags)
    identity = f"sha256:{store.content_hash(path)}"
    return ImageModel(path, recipe=recipe or I2V_RECIPE, tags=table, name=path.name, identity=identity, **with_engine(options))
