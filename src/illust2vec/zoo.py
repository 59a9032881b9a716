"""The model zoo: one frozen record per known model.

A record says which files a model needs and where they come from, how images
are prepared for it (:class:`~illust2vec.preprocess.InputRecipe`), what it
outputs, how its tags are categorised and which thresholds it uses by default.
Adding a model is adding a record; the family's loader does the rest.

>>> list_models("i2v-*")
['i2v-feature', 'i2v-tag']
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from illust2vec.errors import Illust2VecError
from illust2vec.preprocess import I2V_RECIPE, InputRecipe
from illust2vec.tags import I2V_LAYOUT

I2V_RELEASE = "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/"


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name in the store, where to fetch it, how to check it.

    ``role`` says what the loader uses it for (``weights``, ``tags``, ``onnx``).
    ``size``/``sha256`` are ``None`` where they are not known; downloads are then
    checked structurally after import instead.  ``package`` names a pip package
    that ships the file (no download needed).
    """

    filename: str
    role: str
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    package: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything illust2vec knows about one model."""

    name: str
    family: str  # which loader builds it: "i2v", "wd", "effnet"
    description: str
    files: tuple[ModelFile, ...]
    recipe: InputRecipe
    outputs: tuple[str, ...]  # graph outputs: "prob" and/or "feature"
    license: str
    homepage: str = ""
    #: Graph output -> source blob/tensor, for importers (e.g. {"prob": "prob"}).
    source_outputs: Mapping[str, str] = field(default_factory=dict)
    #: Tag categories in file order (i2v) — other families read them from their tag file.
    tag_layout: tuple[tuple[str, int], ...] = ()
    #: Default per-category thresholds for ``estimate_plausible_tags`` / ``tag``.
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: How binary codes are made from features: "positive" (feature > 0, i2v's
    #: sigmoid(encode1) > 0.5) or "simhash" (signs of a fixed random projection).
    binarize: str = "positive"
    feature_dim: int | None = None
    n_tags: int | None = None

    def file(self, role: str) -> ModelFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(role)

    @property
    def is_tagger(self) -> bool:
        return "prob" in self.outputs

    @property
    def is_embedder(self) -> bool:
        return "feature" in self.outputs


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """The record of a model by name; an unknown name lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        close = [m for m in MODELS if name.lower() in m or m in name.lower()]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise Illust2VecError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}.{hint}"
        ) from None


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style wildcard, sorted."""
    return sorted(n for n in MODELS if fnmatch.fnmatchcase(n, pattern))


register(ModelSpec(
    name="i2v-tag",
    family="i2v",
    description="illustration2vec v2.0.0 tag estimator: 1539 Danbooru tags (512 general, 512 character, "
                "512 copyright, 3 rating)",
    files=(
        ModelFile("illust2vec_tag_ver200.caffemodel", "weights", I2V_RELEASE + "illust2vec_tag_ver200.caffemodel"),
        ModelFile("tag_list.json.gz", "tags", I2V_RELEASE + "tag_list.json.gz"),
    ),
    recipe=I2V_RECIPE,
    outputs=("prob",),
    license="MIT (code); model weights per the illustration2vec release",
    homepage="https://github.com/rezoo/illustration2vec",
    source_outputs=MappingProxyType({"prob": "prob"}),
    tag_layout=I2V_LAYOUT,
    thresholds=MappingProxyType({"default": 0.25}),
    n_tags=1539,
))

register(ModelSpec(
    name="i2v-feature",
    family="i2v",
    description="illustration2vec v2.0.0 feature extractor: 4096-d semantic features (encode1) and 4096-bit codes",
    files=(
        ModelFile("illust2vec_ver200.caffemodel", "weights", I2V_RELEASE + "illust2vec_ver200.caffemodel"),
    ),
    recipe=I2V_RECIPE,
    outputs=("feature",),
    license="MIT (code); model weights per the illustration2vec release",
    homepage="https://github.com/rezoo/illustration2vec",
    source_outputs=MappingProxyType({"feature": "encode1"}),
    binarize="positive",
    feature_dim=4096,
))
