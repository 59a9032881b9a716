"""The records that describe models: a file, a model, a family of models.

A family (i2v, wd, effnet) is one :class:`ModelFamily` record in its module
under :mod:`illust2vec.models.families`: its zoo entries, its loader, the tag
files it reads.  The catalog (:mod:`illust2vec.models.catalog`) collects the
families; nothing else lists them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from illust2vec.prep.preprocess import InputRecipe

if TYPE_CHECKING:  # typing only: the image model and the store are one layer up
    from illust2vec.models.image_model import ImageModel


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
    #: (:mod:`illust2vec.models.hub`); ``files`` then name the files ``models import --as`` accepts.
    hub: str | None = None
    #: Role -> file name in the Hub repository (``None``: the WD contract, ``model.onnx`` + ``selected_tags.csv``).
    hub_layout: Mapping[str, str] | None = None

    @property
    def hub_file_names(self) -> dict[str, str]:
        """The files the model takes from its Hub repository, by role."""
        from illust2vec.models.hub import WD_CONTRACT

        return dict(self.hub_layout) if self.hub_layout is not None else dict(WD_CONTRACT)

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



#: ``loader(spec, store, *, download, progress, **options) -> ImageModel``
ModelLoader = Callable[..., "ImageModel"]


@dataclass(frozen=True)
class ModelFamily:
    """One family of models: its zoo records and how to load them.

    ``load`` builds an :class:`~illust2vec.models.image_model.ImageModel` from a
    record and the store.  ``tag_readers`` maps tag-file suffixes (``.json``,
    ``.csv``) to functions reading a :class:`~illust2vec.models.tags.TagTable`;
    ``load_files`` (optional) loads a raw ``.onnx`` file of this family given
    its tag file, for ``--weights model.onnx --tag-list selected_tags.csv``;
    ``file_checks`` parse its files before they enter the store.
    """

    name: str
    specs: tuple[ModelSpec, ...]
    load: ModelLoader
    tag_readers: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    load_files: Callable[..., "ImageModel"] | None = None
    #: Name ending -> parser that raises ModelFormatError for a broken file of that kind
    #: (:func:`illust2vec.models.validate.check_model_file`, before a file counts as present).
    file_checks: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    #: ``load_hub(repo, store, *, download, offline, progress, **options)``: a model of this family by Hub
    #: repository id (``ORG/NAME[@REV]``) that is not in the zoo, with the files of ``hub_layout`` (role -> name).
    load_hub: Callable[..., "ImageModel"] | None = None
    hub_layout: Mapping[str, str] | None = None
