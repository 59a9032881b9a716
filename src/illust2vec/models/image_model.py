"""Models: an ONNX Runtime session plus the recipe, outputs and tags that give it meaning.

:class:`ImageModel` is the one model class; :class:`~illust2vec.models.families.i2v.model.Illustration2Vec`
adds the ``from_caffemodel`` constructor of the original project.  The i2v methods
(``estimate_plausible_tags``, ``estimate_specific_tags``, ``estimate_top_tags``,
``extract_feature``, ``extract_binary_feature``) return the same structures as
illustration2vec, so existing code ports by changing one import.

``images`` arguments accept file paths, PIL images or numpy arrays, in any
iterable; they are decoded and run one batch at a time, so long lists never
sit decoded in memory.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from illust2vec.errors import Illust2VecError, ImageDecodeError
from illust2vec.io.images import load_image
from illust2vec.prep.preprocess import InputRecipe, preprocess
from illust2vec.runtime.batches import BatchResult, ItemError, iter_batches
from illust2vec.runtime.session import open_session
from illust2vec.models.tags import (
    TagTable,
    plausible_tags,
    resolve_thresholds,
    specific_tags,
    top_tags,
)

log = logging.getLogger("illust2vec")

#: Called with each input that could not be processed (the run goes on).
OnError = Callable[[ItemError], None]

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


@dataclass(frozen=True)
class EngineOptions:
    """How an :class:`ImageModel`'s graph runs and is fed.

    Parameters
    ----------
    device, threads, batch_size:
        ``device`` is ``"cpu"`` or ``"cuda"``.
    precision:
        ``"fp32"`` (default); ``"int8"``: a static int8 graph calibrated on pictures,
        cached in the model store (CPU; :mod:`illust2vec.models.quantize`); ``"bf16"``:
        runs fp32 (no faster bf16 kernels in ONNX Runtime's CPU build, said in one line);
        ``"auto"``: int8 on a CPU with fast int8 instructions, else fp32; ``"fp16"``:
        half-precision weights and arithmetic, on CUDA only (see
        :func:`illust2vec.runtime.session.to_float16`).  A model's :attr:`identity`
        names a precision other than fp32, so a collection never mixes vectors of two.
    calibration:
        A folder of pictures to calibrate the int8 graph on (default: the one
        ``models quantize --calibrate`` chose, else the drawn demo gallery).
    keep_fp32:
        Node names the int8 graph keeps in float32 (a family's measured sensitive layers).
    model_dir:
        The model store for the int8 graph (default: the store holding ``onnx_model``).
    alpha:
        Default transparency handling: ``"white"`` composites onto white,
        ``"drop"`` ignores alpha like the original i2v.
    allow_fallback, optimized_cache:
        Run on the CPU when the device is missing; where ONNX Runtime's optimised graph is cached.
    """

    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 16
    alpha: Alpha = "white"
    allow_fallback: bool = False
    optimized_cache: str | os.PathLike | None = None
    precision: str = "fp32"
    calibration: str | os.PathLike | None = None
    keep_fp32: Sequence[str] = ()
    model_dir: str | os.PathLike | None = None


def with_engine(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (the keywords a loader takes) as :class:`ImageModel` keywords: the engine ones in ``engine``."""
    names = {f.name for f in fields(EngineOptions)}
    rest = {k: v for k, v in options.items() if k not in names}
    return {**rest, "engine": EngineOptions(**{k: v for k, v in options.items() if k in names})}


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
    threshold_compare, thresholds_float32:
        How the model's reference front-end compares a probability with its threshold
        (:func:`illust2vec.models.tags.resolve_thresholds`): ``"gt"`` (``p > t``, default) or
        ``"ge"`` (``p >= t``), the threshold rounded to float32 first or not.
    engine:
        An :class:`EngineOptions`: how the graph runs and is fed (device, threads,
        batch size, transparency, precision); :func:`with_engine` builds it from keywords.

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
        threshold_compare: str = "gt",
        thresholds_float32: bool = False,
        engine: EngineOptions | None = None,
    ) -> None:
        from illust2vec.models.quantize import quantized_graph, resolve_precision

        e = engine if engine is not None else EngineOptions()
        device, threads, batch_size, alpha = e.device, e.threads, e.batch_size, e.alpha
        allow_fallback, optimized_cache, precision, calibration = e.allow_fallback, e.optimized_cache, e.precision, \
            e.calibration
        keep_fp32, model_dir = e.keep_fp32, e.model_dir

        self.name = name
        self.threshold_compare = threshold_compare
        self.thresholds_float32 = thresholds_float32
        self.recipe = recipe
        self.tags = tags
        self.identity = identity or name
        self.thresholds = dict(thresholds or {"default": 0.25})
        self.calibrated_thresholds = calibrated_thresholds
        self.binarize = binarize
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.alpha: Alpha = alpha
        #: The precision of the graph itself (``fp32`` or ``int8``); :attr:`precision` is what runs.
        self.graph_precision = "fp32"
        self.keep_fp32 = tuple(keep_fp32)
        precision = resolve_precision(precision, device)
        if precision == "int8":
            onnx_model, calibration_hash = quantized_graph(
                onnx_model, identity=self.identity, recipe=recipe, calibration=calibration, keep_fp32=keep_fp32,
                model_dir=model_dir, name=name)
            self.identity = f"{self.identity}+int8-cal{calibration_hash}"
            self.graph_precision, precision = "int8", "fp32"
        #: The graph (path or bytes) and engine options: derived graphs (gradients) are built from them,
        #: and a pickled copy (sent to a Ray actor or a worker process) opens its own session (:meth:`__getstate__`).
        self.onnx_source: str | os.PathLike | bytes = onnx_model
        self.engine_options: dict[str, Any] = dict(device=device, threads=threads, allow_fallback=allow_fallback,
                                                   optimized_cache=optimized_cache, precision=precision)
        self._derived: dict[str, Any] = {}
        self._simhash: np.ndarray | None = None
        self._open_session()

    def _open_session(self) -> None:
        name, tags = self.name, self.tags
        precision = self.engine_options["precision"]
        self.device = self.engine_options["device"]
        self.session = open_session(self.onnx_source, **self.engine_options)
        on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
        self.precision = precision if precision == "fp16" and on_gpu else self.graph_precision
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
        """Everything but the sessions; the graph travels as bytes, so the copy needs no shared files.

        Unpickling opens a new session with :attr:`engine_options` (without
        the optimised-graph cache, a directory of this machine).
        """
        state = {k: v for k, v in self.__dict__.items() if k not in ("session", "_derived")}
        if not isinstance(self.onnx_source, (bytes, bytearray)):
            state["onnx_source"] = Path(self.onnx_source).read_bytes()
        state["engine_options"] = {**self.engine_options, "optimized_cache": None}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._derived = {}
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
        return load_image(image, alpha=alpha or self.alpha, exif_orientation=self.recipe.exif_orientation)

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
        batch_size: int | None = None, on_error: OnError | None = None,
    ) -> Iterator[BatchResult]:
        """Outputs batch by batch through the one batch runner (:func:`~illust2vec.runtime.batches.iter_batches`).

        Images are decoded only for the batches in flight; an input that cannot be
        read becomes an :class:`~illust2vec.runtime.batches.ItemError` in its batch
        (and goes to ``on_error``) while the rest go on.
        """
        return iter_batches(self, images, batch_size=batch_size or self.batch_size, alpha=alpha or self.alpha,
                            outputs=outputs, on_error=on_error)

    def _collect(self, images: Any, output: str, alpha: Alpha | None, on_error: OnError | None) -> np.ndarray:
        if output not in self.outputs:
            kind = "a tagger" if output == "prob" else "a feature extractor"
            raise Illust2VecError(f"{self.name} is not {kind} (its outputs: {', '.join(self.outputs)})")
        single = isinstance(images, (str, os.PathLike, bytes)) or hasattr(images, "getpixel") or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype != object
        )
        items = [images] if single else list(images)
        width = self._output_dims.get(output)
        rows: dict[int, np.ndarray] = {}
        failed: list[ItemError] = []
        for batch in self.iter_outputs(items, (output,), alpha=alpha):
            failed.extend(batch.errors)
            for j, index in enumerate(batch.indices):
                rows[index] = batch.outputs[output][j]
                if not isinstance(width, int):
                    width = batch.outputs[output].shape[1]
        if single and failed:
            raise ImageDecodeError(str(failed[0]))
        for error in failed:
            if on_error is not None:
                on_error(error)
            else:
                log.warning("warning: %s (its row is NaN)", error)
        out = np.full((len(items), width if isinstance(width, int) else 0), np.nan, np.float32)
        for index, row in rows.items():
            out[index] = row
        return out

    # -- derived graphs: inner tensors, gradients -----------------------------
    def derived_session(self, key: str, transform: Callable[[Any], Any]):
        """A session on ``transform(forward onnx.ModelProto)``, built once per ``key`` and kept.

        Used for graphs derived from this model's: extra outputs
        (:func:`illust2vec.runtime.reverse.with_outputs`) and gradient graphs.
        """
        if key not in self._derived:
            import onnx

            src = self.onnx_source
            proto = onnx.load_from_string(src) if isinstance(src, bytes) else onnx.load(os.fspath(src))
            self._derived[key] = open_session(transform(proto).SerializeToString(), device=self.device,
                                              threads=self.engine_options["threads"], allow_fallback=True)
        return self._derived[key]

    def tag_columns(self, tags: Sequence[str | int]) -> np.ndarray:
        """Column indices of tags given by name (``"blue hair"`` or ``"blue_hair"``) or index."""
        table = self._require_tags()
        cols = []
        for t in tags:
            if isinstance(t, (int, np.integer)):
                if not 0 <= int(t) < len(table):
                    raise Illust2VecError(f"tag index {t} is out of range: this model has {len(table)} tags")
                cols.append(int(t))
            else:
                cols.append(table.index(str(t)))
        return np.asarray(cols, dtype=np.int64)

    def forward_backward(
        self, batch: np.ndarray, *, tag_weights: np.ndarray | None = None, feature_target: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One forward and backward run: ``(d objective / d batch, forward outputs)``.

        The objective is ``sum(tag_weights * prob)`` (``tag_weights`` (N, T) or
        (T,)) or ``0.5 * ||feature - feature_target||^2`` (``feature_target``
        (N, D)); exactly one must be given.  The backward graph is generated
        from this model's ONNX graph (:func:`illust2vec.runtime.reverse.gradient_model`)
        once and run on ONNX Runtime.
        """
        from illust2vec.runtime.reverse import GRAD_OUTPUT, gradient_model  # onnx: loaded when first needed

        if (tag_weights is None) == (feature_target is None):
            raise Illust2VecError("give exactly one objective: tag_weights or feature_target")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if tag_weights is not None:
            self._require_tags()
            output, objective = "prob", "weight"
            seed = np.broadcast_to(np.asarray(tag_weights, np.float32), (batch.shape[0], len(self.tags)))
        else:
            if "feature" not in self.outputs:
                raise Illust2VecError(f"{self.name} has no feature output; feature_target needs an embedder")
            output, objective = "feature", "target"
            seed = np.asarray(feature_target, np.float32)
            if seed.shape != (batch.shape[0], self.feature_dim):
                raise Illust2VecError(
                    f"feature_target must have shape (N, {self.feature_dim}) = ({batch.shape[0]}, "
                    f"{self.feature_dim}), not {seed.shape}"
                )
        session = self.derived_session(f"grad-{output}-{objective}",
                                       lambda proto: gradient_model(proto, output, objective))
        names = [GRAD_OUTPUT, *self.outputs]
        values = session.run(names, {self._input_name: batch, f"{output}_{objective}": np.ascontiguousarray(seed)})
        outputs = {n: np.asarray(v, np.float32).reshape(v.shape[0], -1) for n, v in zip(names[1:], values[1:])}
        return np.asarray(values[0], np.float32), outputs

    def input_gradient(
        self, batch: np.ndarray, tags: Sequence[str | int] | None = None, feature_target: np.ndarray | None = None,
    ) -> np.ndarray:
        """The gradient of an objective with respect to a prepared batch (same shape as ``batch``).

        With ``tags`` (names or column indices): of the sum of those tags'
        probabilities.  With ``feature_target`` (N, D): of
        ``0.5 * ||feature - feature_target||^2``.

        >>> batch = model.preprocess(["miku.jpg"])                  # doctest: +SKIP
        >>> model.input_gradient(batch, tags=["blue hair"]).shape
        (1, 3, 224, 224)
        """
        if (tags is None) == (feature_target is None):
            raise Illust2VecError("input_gradient needs exactly one of tags= or feature_target=")
        weights = None
        if tags is not None:
            weights = np.zeros(len(self._require_tags()), np.float32)
            weights[self.tag_columns(tags)] = 1.0
        return self.forward_backward(batch, tag_weights=weights, feature_target=feature_target)[0]

    # -- heads --------------------------------------------------------------
    def predict_proba(self, images: Any, *, alpha: Alpha | None = None, on_error: OnError | None = None
                      ) -> np.ndarray:
        """Tag probabilities, shape (N, number of tags), float32.

        Per-item errors: a list with an unreadable image still returns N rows; that
        image's row is NaN and its :class:`~illust2vec.runtime.batches.ItemError`
        goes to ``on_error`` (default: a warning on the ``illust2vec`` logger).  A
        single image (not in a list) that cannot be read raises
        :class:`~illust2vec.errors.ImageDecodeError`.
        """
        return self._collect(images, "prob", alpha, on_error)

    def extract_feature(self, images: Any, *, alpha: Alpha | None = None, on_error: OnError | None = None
                        ) -> np.ndarray:
        """Feature vectors, shape (N, D) float32 (i2v: ``encode1``, D = 4096); failed rows as in :meth:`predict_proba`."""
        return self._collect(images, "feature", alpha, on_error)

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

    def extract_binary_feature(self, images: Any, *, alpha: Alpha | None = None, on_error: OnError | None = None
                               ) -> np.ndarray:
        """Binary codes packed into bytes, shape (N, D/8) uint8 (i2v: 512 bytes).

        An image that cannot be read gets an all-zero row; its error goes to ``on_error``
        (see :meth:`predict_proba`).
        """
        return self.binarize_features(self.extract_feature(images, alpha=alpha, on_error=on_error))

    def _require_tags(self) -> TagTable:
        if self.tags is None or "prob" not in self.outputs:
            raise Illust2VecError(f"{self.name} is not a tagger: load a tag model (e.g. --model i2v-tag)")
        return self.tags

    def _per_image(self, images: Any, alpha: Alpha | None, on_error: OnError | None,
                   make: Callable[[np.ndarray], list[dict]]) -> list[dict | None]:
        """``make(probabilities)`` for the images that worked; ``None`` in the place of each that failed."""
        prob = self.predict_proba(images, alpha=alpha, on_error=on_error)
        ok = ~np.isnan(prob).any(axis=1)
        made = iter(make(prob[ok]) if ok.any() else [])
        return [next(made) if good else None for good in ok]

    def estimate_top_tags(self, images: Any, n_tag: int = 10, *, alpha: Alpha | None = None,
                          on_error: OnError | None = None) -> list[dict | None]:
        """The ``n_tag`` most probable tags per category (rating: all), as i2v returns them.

        An image that cannot be read gives ``None`` in its place (see :meth:`predict_proba`).
        """
        table = self._require_tags()
        return self._per_image(images, alpha, on_error, lambda prob: top_tags(prob, table, n_tag))

    def thresholds_for(
        self, threshold: float | Mapping[str, float] | None = None, threshold_rule: ThresholdRule = "constant"
    ) -> np.ndarray:
        """Per-tag thresholds for a rule: a constant (or per-category mapping) or i2v's calibrated f0.5/f1/f2."""
        table = self._require_tags()
        if threshold_rule == "constant":
            return resolve_thresholds(table, self.thresholds if threshold is None else threshold,
                                      compare=self.threshold_compare,  # type: ignore[arg-type]
                                      float32=self.thresholds_float32)
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
        threshold_rule: ThresholdRule = "constant", *, alpha: Alpha | None = None, on_error: OnError | None = None,
        drop_overlap: bool | str | os.PathLike | Mapping[str, Sequence[str]] = False,
    ) -> list[dict | None]:
        """Tags above a threshold per category (rating: all, sorted), as i2v returns them.

        ``threshold=None`` uses the model's own thresholds.  ``drop_overlap`` drops the general
        tags implied by a more specific one that is present, as dghs-imgutils does
        (:mod:`illust2vec.models.overlap`): ``True`` (its table from the Hugging Face cache when
        there, else the substring rule alone), a table file or a mapping.
        An image that cannot be read gives ``None`` in its place (see :meth:`predict_proba`).
        """
        from illust2vec.models.overlap import drop_overlap_result, overlap_table

        thresholds = self.thresholds_for(threshold, threshold_rule)
        table = self._require_tags()
        if drop_overlap is False:
            return self._per_image(images, alpha, on_error, lambda prob: plausible_tags(prob, table, thresholds))
        implied = overlap_table(drop_overlap)
        return self._per_image(images, alpha, on_error, lambda prob: [
            drop_overlap_result(r, implied) for r in plausible_tags(prob, table, thresholds)])

    def estimate_specific_tags(self, images: Any, tags: Sequence[str], *, alpha: Alpha | None = None,
                               on_error: OnError | None = None) -> list[dict | None]:
        """The probability of each named tag, per image (``None`` for an image that cannot be read)."""
        table = self._require_tags()
        return self._per_image(images, alpha, on_error, lambda prob: specific_tags(prob, table, list(tags)))
