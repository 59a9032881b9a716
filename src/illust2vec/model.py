"""Models: an ONNX Runtime session plus the recipe, outputs and tags that give it meaning.

:class:`ImageModel` is the one model class; :class:`Illustration2Vec` adds the
``from_caffemodel`` constructor of the original project.  The i2v methods
(``estimate_plausible_tags``, ``estimate_specific_tags``, ``estimate_top_tags``,
``extract_feature``, ``extract_binary_feature``) return the same structures as
illustration2vec, so existing code ports by changing one import.

``images`` arguments accept file paths, PIL images or numpy arrays, in any
iterable; they are decoded and run one batch at a time, so long lists never
sit decoded in memory.
"""
from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.images import load_image
from illust2vec.preprocess import I2V_RECIPE, InputRecipe, preprocess
from illust2vec.store import ModelStore, offline_mode, require_files
from illust2vec.tags import (
    I2V_LAYOUT,
    TagTable,
    load_thresholds,
    plausible_tags,
    resolve_thresholds,
    specific_tags,
    top_tags,
)
from illust2vec.zoo import ModelSpec, get_spec

log = logging.getLogger("illust2vec")

#: Bump when the Caffe converter changes what it writes (invalidates cached graphs).
CAFFE_CONVERTER_VERSION = 1

Alpha = Literal["white", "drop"]
ThresholdRule = Literal["constant", "f0.5", "f1", "f2"]


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of up to ``size`` consecutive items (the last may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class ImageModel:
    """An image model on ONNX Runtime.

    Parameters
    ----------
    onnx_model:
        Path to an ``.onnx`` file or its serialized bytes.  Graph outputs named
        ``prob`` (tag probabilities) and/or ``feature`` (feature vectors) are used.
    recipe:
        How images become the network's input.
    tags:
        Names and categories of the ``prob`` columns (taggers only).
    name:
        A display name (zoo name or file name).
    identity:
        A stable identifier of the weights (content hash); stored beside vectors.
    thresholds:
        Default per-category thresholds (``{"general": 0.35, "default": 0.25}``).
    calibrated_thresholds:
        Optional (T, 3) array of i2v's f0.5/f1/f2 thresholds.
    binarize:
        ``"positive"`` (codes are ``feature > 0``) or ``"simhash"``.
    device, threads, batch_size:
        Engine options; ``device`` is ``"cpu"`` or ``"cuda"``.
    precision:
        ``"fp32"`` (default) or ``"fp16"``: half-precision weights and
        arithmetic, on CUDA only (see :func:`illust2vec.engine.to_float16`).
    alpha:
        Default transparency handling: ``"white"`` composites onto white,
        ``"drop"`` ignores alpha like the original i2v.
    """

    def __init__(
        self,
        onnx_model: str | os.PathLike | bytes,
        *,
        recipe: InputRecipe,
        tags: TagTable | None = None,
        name: str = "model",
        identity: str | None = None,
        thresholds: Mapping[str, float] | None = None,
        calibrated_thresholds: np.ndarray | None = None,
        binarize: str = "positive",
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 16,
        alpha: Alpha = "white",
        allow_fallback: bool = False,
        optimized_cache: str | os.PathLike | None = None,
        precision: str = "fp32",
    ) -> None:
        self.name = name
        self.recipe = recipe
        self.tags = tags
        self.identity = identity or name
        self.thresholds = dict(thresholds or {"default": 0.25})
        self.calibrated_thresholds = calibrated_thresholds
        self.binarize = binarize
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.alpha: Alpha = alpha
        #: The graph (path or bytes) and engine options, kept so that a pickled copy (sent to a Ray actor
        #: or a worker process) can open its own session: see :meth:`__getstate__`.
        self.onnx_source: str | os.PathLike | bytes = onnx_model
        self.engine_options: dict[str, Any] = dict(device=device, threads=threads, allow_fallback=allow_fallback,
                                                   optimized_cache=optimized_cache, precision=precision)
        self._open_session()
        self._simhash: np.ndarray | None = None

    def _open_session(self) -> None:
        from illust2vec.engine import open_session

        name, tags = self.name, self.tags
        precision = self.engine_options["precision"]
        self.device = self.engine_options["device"]
        self.session = open_session(self.onnx_source, **self.engine_options)
        self.precision = precision if "CUDAExecutionProvider" in self.session.get_providers() else "fp32"
        self._input_name = self.session.get_inputs()[0].name
        #: What :meth:`run_all` feeds the graph (float16 for a half-precision GPU graph).
        self.input_dtype = np.dtype(np.float16 if self.session.get_inputs()[0].type == "tensor(float16)"
                                    else np.float32)
        graph_outputs = [o.name for o in self.session.get_outputs()]
        self.outputs: tuple[str, ...] = tuple(o for o in ("prob", "feature") if o in graph_outputs)
        if not self.outputs:
            raise Illust2VecError(
                f"{name}: the graph has no 'prob' or 'feature' output (outputs: {', '.join(graph_outputs)})"
            )
        self._output_dims = {o.name: o.shape[-1] for o in self.session.get_outputs()}
        if tags is not None and "prob" in self.outputs:
            width = self._output_dims.get("prob")
            if isinstance(width, int) and width != len(tags):
                raise Illust2VecError(
                    f"{name}: the model outputs {width} probabilities but the tag list has {len(tags)} tags; "
                    "use the tag list that belongs to these weights"
                )

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the session; the graph travels as bytes, so the copy needs no shared files.

        Unpickling opens a new session with :attr:`engine_options` (without
        the optimised-graph cache, a directory of this machine).
        """
        state = {k: v for k, v in self.__dict__.items() if k != "session"}
        if not isinstance(self.onnx_source, (bytes, bytearray)):
            state["onnx_source"] = Path(self.onnx_source).read_bytes()
        state["engine_options"] = {**self.engine_options, "optimized_cache": None}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_session()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, outputs={self.outputs}, device={self.device!r})"

    # -- sizes ---------------------------------------------------------------
    @property
    def feature_dim(self) -> int | None:
        d = self._output_dims.get("feature")
        return d if isinstance(d, int) else None

    @property
    def is_tagger(self) -> bool:
        return "prob" in self.outputs and self.tags is not None

    @property
    def is_embedder(self) -> bool:
        return "feature" in self.outputs

    # -- stages -------------------------------------------------------------
    def load(self, image: Any, *, alpha: Alpha | None = None) -> np.ndarray:
        """Decode one input (path, PIL image or array) to an (H, W, 3) uint8 RGB array."""
        return load_image(image, alpha=alpha or self.alpha)

    def preprocess(self, images: Sequence[Any], *, alpha: Alpha | None = None) -> np.ndarray:
        """Decode and prepare images as one float32 batch in the model's input layout."""
        arrays = [self.load(img, alpha=alpha) for img in images]
        return preprocess(arrays, self.recipe)

    def run(self, batch: np.ndarray, output: str | None = None) -> np.ndarray:
        """Run the network on a prepared batch; return one raw output.

        ``output`` defaults to ``prob`` for taggers and ``feature`` otherwise
        (for i2v: tag probabilities, or ``encode1``).
        """
        name = output or self.outputs[0]
        if name not in self.outputs:
            raise Illust2VecError(f"{self.name} has no output {name!r}; it has {', '.join(self.outputs)}")
        return self.run_all(batch, (name,))[name]

    def run_all(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the network and return the requested outputs by name."""
        names = list(outputs or self.outputs)
        batch = np.ascontiguousarray(batch, dtype=self.input_dtype)
        values = self.session.run(names, {self._input_name: batch})
        return {n: np.asarray(v, dtype=np.float32).reshape(v.shape[0], -1) for n, v in zip(names, values)}

    def iter_outputs(
        self, images: Iterable[Any], outputs: Sequence[str] | None = None, *, alpha: Alpha | None = None,
        batch_size: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Outputs batch by batch; images are decoded only for the batch in flight."""
        for chunk in chunks(images, batch_size or self.batch_size):
            yield self.run_all(self.preprocess(chunk, alpha=alpha), outputs)

    def _collect(self, images: Any, output: str, alpha: Alpha | None) -> np.ndarray:
        if output not in self.outputs:
            kind = "a tagger" if output == "prob" else "a feature extractor"
            raise Illust2VecError(f"{self.name} is not {kind} (its outputs: {', '.join(self.outputs)})")
        if isinstance(images, (str, os.PathLike, bytes)) or hasattr(images, "getpixel") or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object
        ):
            images = [images]
        parts = [out[output] for out in self.iter_outputs(images, (output,), alpha=alpha)]
        if not parts:
            width = self._output_dims.get(output)
            return np.zeros((0, width if isinstance(width, int) else 0), np.float32)
        return np.concatenate(parts, axis=0)

    # -- heads --------------------------------------------------------------
    def predict_proba(self, images: Any, *, alpha: Alpha | None = None) -> np.ndarray:
        """Tag probabilities, shape (N, number of tags), float32."""
        return self._collect(images, "prob", alpha)

    def extract_feature(self, images: Any, *, alpha: Alpha | None = None) -> np.ndarray:
        """Feature vectors, shape (N, D) float32 (i2v: ``encode1``, D = 4096)."""
        return self._collect(images, "feature", alpha)

    def binarize_features(self, features: np.ndarray) -> np.ndarray:
        """Packed binary codes (N, bits/8) uint8 from features of this model."""
        features = np.asarray(features, dtype=np.float32)
        if self.binarize == "positive":
            bits = features > 0  # == sigmoid(x) > 0.5
        elif self.binarize == "simhash":
            if self._simhash is None:
                rng = np.random.default_rng(0x1A2B3C)
                self._simhash = rng.standard_normal((features.shape[1], 4096)).astype(np.float32)
            # Centre each vector on its own mean first: embedders with non-negative
            # (ReLU) features would otherwise put every vector in one orthant and
            # the signed projections would carry little information.
            centred = features - features.mean(axis=1, keepdims=True)
            norm = np.linalg.norm(centred, axis=1, keepdims=True)
            bits = (centred / np.maximum(norm, 1e-12)) @ self._simhash > 0
        else:
            raise Illust2VecError(f"unknown binarize rule {self.binarize!r}")
        return np.packbits(bits, axis=1)

    def extract_binary_feature(self, images: Any, *, alpha: Alpha | None = None) -> np.ndarray:
        """Binary codes packed into bytes, shape (N, D/8) uint8 (i2v: 512 bytes)."""
        return self.binarize_features(self.extract_feature(images, alpha=alpha))

    def _require_tags(self) -> TagTable:
        if self.tags is None or "prob" not in self.outputs:
            raise Illust2VecError(f"{self.name} is not a tagger: load a tag model (e.g. --model i2v-tag)")
        return self.tags

    def estimate_top_tags(self, images: Any, n_tag: int = 10, *, alpha: Alpha | None = None) -> list[dict]:
        """The ``n_tag`` most probable tags per category (rating: all), as i2v returns them."""
        table = self._require_tags()
        return top_tags(self.predict_proba(images, alpha=alpha), table, n_tag)

    def thresholds_for(
        self, threshold: float | Mapping[str, float] | None = None, threshold_rule: ThresholdRule = "constant"
    ) -> np.ndarray:
        """Per-tag thresholds for a rule: a constant (or per-category mapping) or i2v's calibrated f0.5/f1/f2."""
        table = self._require_tags()
        if threshold_rule == "constant":
            return resolve_thresholds(table, self.thresholds if threshold is None else threshold)
        columns = {"f0.5": 0, "f1": 1, "f2": 2}
        if threshold_rule not in columns:
            raise Illust2VecError(f"unknown threshold_rule {threshold_rule!r}; choose constant, f0.5, f1 or f2")
        if self.calibrated_thresholds is None:
            raise Illust2VecError(
                f"threshold_rule={threshold_rule!r} needs a calibrated threshold file "
                "(pass thresholds=PATH when loading the model)"
            )
        return self.calibrated_thresholds[:, columns[threshold_rule]]

    def estimate_plausible_tags(
        self, images: Any, threshold: float | Mapping[str, float] | None = 0.25,
        threshold_rule: ThresholdRule = "constant", *, alpha: Alpha | None = None,
    ) -> list[dict]:
        """Tags above a threshold per category (rating: all, sorted), as i2v returns them."""
        thresholds = self.thresholds_for(threshold, threshold_rule)
        return plausible_tags(self.predict_proba(images, alpha=alpha), self._require_tags(), thresholds)

    def estimate_specific_tags(self, images: Any, tags: Sequence[str], *, alpha: Alpha | None = None) -> list[dict]:
        """The probability of each named tag, per image."""
        table = self._require_tags()
        return specific_tags(self.predict_proba(images, alpha=alpha), table, list(tags))


class Illustration2Vec(ImageModel):
    """illustration2vec on ONNX Runtime (no Chainer, no Caffe)."""

    @classmethod
    def from_caffemodel(
        cls,
        weights: str | os.PathLike,
        tags: str | os.PathLike | None = None,
        *,
        thresholds: str | os.PathLike | None = None,
        outputs: Mapping[str, str] | None = None,
        recipe: InputRecipe = I2V_RECIPE,
        model_dir: str | os.PathLike | None = None,
        name: str | None = None,
        **options: Any,
    ) -> Illustration2Vec:
        """Import an i2v ``.caffemodel`` (converted once, then cached in the model store).

        ``outputs`` maps graph outputs to Caffe blobs; by default a net with an
        ``encode1`` blob is a feature extractor (``{"feature": "encode1"}``) and
        one with a ``prob`` blob a tagger (``{"prob": "prob"}``).
        """
        onnx_path, identity = import_caffemodel(weights, outputs=outputs, input_size=recipe.size, model_dir=model_dir)
        table = TagTable.from_i2v_json(tags, I2V_LAYOUT) if tags is not None else None
        calibrated = load_thresholds(thresholds, len(table)) if thresholds is not None and table else None
        options.setdefault("optimized_cache", onnx_path.parent / "ort")
        return cls(
            onnx_path, recipe=recipe, tags=table, name=name or Path(weights).name, identity=identity,
            calibrated_thresholds=calibrated, **options,
        )


def _default_caffe_outputs(net) -> dict[str, str]:
    blobs = {t for layer in net.layers for t in layer.tops}
    if "encode1" in blobs:
        return {"feature": "encode1"}
    if "prob" in blobs:
        return {"prob": "prob"}
    raise Illust2VecError(
        "cannot tell whether this caffemodel is a tagger or a feature extractor; "
        "pass outputs={'prob': BLOB} or {'feature': BLOB}"
    )


def import_caffemodel(
    weights: str | os.PathLike,
    *,
    outputs: Mapping[str, str] | None = None,
    input_size: tuple[int, int] = I2V_RECIPE.size,
    model_dir: str | os.PathLike | None = None,
) -> tuple[Path, str]:
    """Convert a ``.caffemodel`` to ONNX once and cache it; return ``(onnx_path, identity)``.

    The cache key is the file's SHA-256 (memoised by path, size and mtime), the
    requested outputs and the input size, so a second load skips the import.
    """
    from illust2vec.caffe.net import read_caffemodel
    from illust2vec.caffe.to_onnx import caffe_to_onnx

    weights = Path(weights)
    store = ModelStore(model_dir)
    if not weights.is_file():
        raise Illust2VecError(f"{weights}: no such caffemodel file")
    digest = store.content_hash(weights)
    net = None
    if outputs is None:
        net = read_caffemodel(weights)
        outputs = _default_caffe_outputs(net)
    spec = "-".join(f"{k}={v}" for k, v in sorted(outputs.items()))
    key = f"caffe-{digest[:24]}-{spec}-{input_size[0]}x{input_size[1]}-c{CAFFE_CONVERTER_VERSION}"

    def build() -> bytes:
        source = net if net is not None else read_caffemodel(weights)
        return caffe_to_onnx(source, dict(outputs), input_size=input_size).SerializeToString()

    return store.cached_onnx(key, build), f"sha256:{digest}"


# -- zoo loading -------------------------------------------------------------

#: Family -> "module:function" building an ImageModel from a spec (imported lazily).
FAMILY_LOADERS: dict[str, str] = {
    "i2v": "illust2vec.model:load_i2v",
    "wd": "illust2vec.wd:load_wd",
    "effnet": "illust2vec.effnet:load_effnet",
}

#: What ``load_model(task=...)`` uses when no name is given, in order of preference.
DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "tag": ("i2v-tag",),
    "feature": ("i2v-feature", "generic-effnet-lite0"),
}


def load_i2v(spec: ModelSpec, store: ModelStore, *, offline: bool | None = None, progress: bool = True,
             **options: Any) -> ImageModel:
    files = require_files(spec, store, offline=offline, progress=progress)
    onnx_path, identity = import_caffemodel(
        files["weights"], outputs=dict(spec.source_outputs), input_size=spec.recipe.size, model_dir=store.root,
    )
    table = TagTable.from_i2v_json(files["tags"], spec.tag_layout) if "tags" in files else None
    options.setdefault("optimized_cache", store.onnx_dir / "ort")
    return Illustration2Vec(
        onnx_path, recipe=spec.recipe, tags=table, name=spec.name, identity=identity,
        thresholds=spec.thresholds or None, binarize=spec.binarize, **options,
    )


def model_available(spec: ModelSpec, store: ModelStore) -> bool:
    """Whether all of a model's downloadable files are already in the store."""
    return all(f.package or store.find(f.filename) is not None for f in spec.files)


def load_model(
    name: str | None = None,
    *,
    task: Literal["tag", "feature"] = "feature",
    model_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    **options: Any,
) -> ImageModel:
    """Load a zoo model by name (``illust2vec.zoo.list_models()``).

    With no name, the best model for ``task`` that works here is chosen: for
    ``feature`` that is ``i2v-feature`` when its weights are present (or can be
    downloaded), else the bundled ``generic-effnet-lite0``, with a one-line note.
    ``options`` go to :class:`ImageModel` (``device``, ``threads``, ``batch_size``, ``alpha``).
    """
    store = ModelStore(model_dir)
    if name is None:
        candidates = [c for c in DEFAULT_MODELS[task] if _registered(c)]
        first = get_spec(candidates[0])
        if model_available(first, store) or len(candidates) == 1 or not offline_mode(offline):
            try:
                return load_model(first.name, task=task, model_dir=store.root, offline=offline,
                                  progress=progress, **options)
            except Illust2VecError as exc:
                if len(candidates) == 1:
                    raise
                log.warning("note: %s is not available (%s); using %s instead",
                            first.name, str(exc).splitlines()[0], candidates[1])
        else:
            log.warning("note: %s weights are not in the model store; using %s instead "
                        "(run 'illust2vec models download %s' for the original)",
                        first.name, candidates[1], first.name)
        return load_model(candidates[1], task=task, model_dir=store.root, offline=offline,
                          progress=progress, **options)
    spec = get_spec(name)
    target = FAMILY_LOADERS.get(spec.family)
    if target is None:
        raise Illust2VecError(f"model family {spec.family!r} of {name!r} has no loader")
    module, func = target.split(":")
    loader = getattr(importlib.import_module(module), func)
    return loader(spec, store, offline=offline, progress=progress, **options)


def _registered(name: str) -> bool:
    from illust2vec.zoo import MODELS

    return name in MODELS


#: Tag-file suffix -> "module:function" reading a TagTable (other families add theirs).
TAG_FILE_READERS: dict[str, str] = {
    ".json": "illust2vec.tags:TagTable.from_i2v_json",
    ".gz": "illust2vec.tags:TagTable.from_i2v_json",
}

#: Tag-file suffix -> "module:function" returning the InputRecipe for a raw ONNX file.
ONNX_RECIPE_RESOLVERS: dict[str, str] = {}


def _resolve(target: str):
    module, attr = target.split(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_onnx_model(
    path: str | os.PathLike,
    *,
    tags: str | os.PathLike | None = None,
    recipe: InputRecipe | None = None,
    **options: Any,
) -> ImageModel:
    """Load an ``.onnx`` file directly (``--weights model.onnx``).

    The tag file's kind picks how tags are read and, unless ``recipe`` is given,
    how images are prepared (a WD ``selected_tags.csv`` implies the WD recipe;
    anything else the i2v recipe).
    """
    path = Path(path)
    if not path.is_file():
        raise Illust2VecError(f"{path}: no such ONNX file")
    if tags is not None and recipe is None and Path(tags).suffix.lower() == ".csv":
        from illust2vec.wd import (
            load_wd_files,  # WD tagger: adds the feature output, recipe from the graph
        )

        return load_wd_files(path, tags, store=ModelStore(options.pop("model_dir", None)), **options)
    table = None
    suffix = Path(tags).suffix.lower() if tags is not None else ""
    if tags is not None:
        reader = TAG_FILE_READERS.get(suffix)
        if reader is None:
            raise Illust2VecError(f"{tags}: unknown tag file type {suffix!r} (expected .json, .json.gz or .csv)")
        table = _resolve(reader)(tags)
    if recipe is None:
        resolver = ONNX_RECIPE_RESOLVERS.get(suffix)
        recipe = _resolve(resolver)(path) if resolver else I2V_RECIPE
    store = ModelStore(options.pop("model_dir", None))
    identity = f"sha256:{store.content_hash(path)}"
    return ImageModel(path, recipe=recipe, tags=table, name=path.name, identity=identity, **options)


# -- drop-in replacements for illustration2vec's factory functions -----------

def make_i2v_with_chainer(
    param_path: str | os.PathLike, tag_path: str | os.PathLike | None = None,
    threshold_path: str | os.PathLike | None = None, **options: Any,
) -> Illustration2Vec:
    """Same call as ``i2v.make_i2v_with_chainer``; runs on ONNX Runtime.

    Transparency is dropped, as the original does; pass ``alpha="white"`` to
    composite onto white instead.

    >>> import illust2vec as i2v                              # doctest: +SKIP
    >>> model = i2v.make_i2v_with_chainer("illust2vec_tag_ver200.caffemodel", "tag_list.json")
    """
    options.setdefault("alpha", "drop")
    return Illustration2Vec.from_caffemodel(param_path, tags=tag_path, thresholds=threshold_path, **options)


def make_i2v_with_caffe(
    net_path: str | os.PathLike, param_path: str | os.PathLike, tag_path: str | os.PathLike | None = None,
    threshold_path: str | os.PathLike | None = None, **options: Any,
) -> Illustration2Vec:
    """Same call as ``i2v.make_i2v_with_caffe``; the ``.prototxt`` is not needed (the caffemodel has the net)."""
    return make_i2v_with_chainer(param_path, tag_path, threshold_path, **options)
