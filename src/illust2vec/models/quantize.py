"""Precisions below fp32 on the CPU: static int8 graphs calibrated on pictures, bf16's fallback, ``auto``.

* ``int8``: ONNX Runtime's static quantisation (``onnxruntime.quantization.quantize_static``):
  QDQ format (measured as fast as QOperator through MLAS and the format ONNX Runtime fuses
  best), per-channel symmetric int8 weights, uint8 activations with ranges from MinMax
  calibration on pictures: the drawn demo gallery (:mod:`illust2vec.io.gallery`, 75 pictures)
  unless a folder is given.  Each int8 Conv's bias is then corrected for the mean shift of its
  rounded weights on the calibration pictures (:func:`_correct_biases`).  Layers measured to hurt
  accuracy stay float32 (a family passes their node names as ``keep_fp32``).  The graph is cached in the model store under
  :func:`quantized_key` (the source graph's content key + precision + calibration hash).
* ``bf16``: ONNX Runtime's x86 CPU build has no bfloat16 convolution or matrix kernels (measured:
  docs/incoming/h27.md), so ``bf16`` runs the fp32 graph and says so in one line.
* ``auto``: int8 where the CPU multiplies int8 fast (VNNI or AMX; ARM dot product), otherwise fp32.

The CPU's instruction sets come from ``/proc/cpuinfo``; ``ILLUST2VEC_CPU_FLAGS`` (comma- or
space-separated flags) overrides them, to see what another CPU would get.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.images import iter_image_files, load_image
from illust2vec.models.store import ModelStore
from illust2vec.prep.preprocess import InputRecipe, preprocess

__all__ = ["CALIBRATION_LIMIT", "ENV_CPU_FLAGS", "PRECISIONS", "calibration_pictures", "cpu_flags",
           "quantize_graph", "quantize_model", "quantized_graph", "quantized_key", "resolve_precision"]

log = logging.getLogger("illust2vec")

#: What ``--precision`` accepts (fp16: CUDA only, :func:`illust2vec.runtime.session.open_session`).
PRECISIONS = ("fp32", "int8", "bf16", "auto", "fp16")
ENV_CPU_FLAGS = "ILLUST2VEC_CPU_FLAGS"
#: At most this many pictures of a calibration folder are used (evenly spaced in file order).
CALIBRATION_LIMIT = 64
#: Bump when :func:`quantize_graph` changes what it writes (invalidates cached int8 graphs).
QUANTIZER_VERSION = 3

#: Instruction sets with fast int8 dot products (x86 VNNI / AMX, ARM dot product): ``auto`` picks int8.
INT8_FAST = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
#: Instruction sets MLAS's int8 kernels need at all: without one, int8 falls back to fp32.
INT8_NEEDS = frozenset({"avx2", "asimd"}) | INT8_FAST


@functools.lru_cache(maxsize=8)
def _proc_flags(override: str | None) -> frozenset[str]:
    if override is not None:
        return frozenset(f for f in override.replace(",", " ").lower().split() if f)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags (``ILLUST2VEC_CPU_FLAGS`` overrides ``/proc/cpuinfo``)."""
    return _proc_flags(os.environ.get(ENV_CPU_FLAGS))


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """The precision a model runs at: ``fp32``, ``fp16`` (CUDA) or ``int8``.

    ``auto`` becomes int8 on a CPU with fast int8 instructions, else fp32; ``bf16``
    and an ``int8`` the CPU cannot run become fp32 with one line saying why.
    """
    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS:
        raise Illust2VecError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    gpu = str(device or "cpu").lower().startswith("cuda")
    if precision in ("fp32", "fp16"):
        return precision
    if gpu:
        if precision == "auto":
            return "fp32"
        raise Illust2VecError(f"--precision {precision} is for the CPU; with --device cuda use fp32 or fp16")
    flags = cpu_flags()
    if precision == "auto":
        return "int8" if flags & INT8_FAST else "fp32"
    if precision == "bf16":
        log.warning("note: bf16 is not faster than fp32 in ONNX Runtime's CPU build (no bfloat16 kernels); "
                    "running fp32 (int8 is the faster precision here)")
        return "fp32"
    if not flags & INT8_NEEDS:
        log.warning("note: this CPU has no int8 instructions ONNX Runtime uses (AVX2, VNNI, AMX or NEON); "
                    "running fp32")
        return "fp32"
    return "int8"


# -- calibration pictures -----------------------------------------------------------

def calibration_pictures(folder: str | os.PathLike | None = None) -> tuple[list[Any], str]:
    """The calibration pictures and their hash: the demo gallery, or up to CALIBRATION_LIMIT from ``folder``.

    The hash covers the pictures' bytes (file contents, or the drawn gallery's
    pixels), so a changed folder makes a new graph.
    """
    digest = hashlib.sha256()
    if folder is None:
        from illust2vec.io.gallery import draw_character, make_characters

        pictures: list[Any] = [np.asarray(draw_character(ch, v).convert("RGB"))
                               for ch in make_characters(25) for v in range(3)]
        for arr in pictures:
            digest.update(arr.tobytes())
        return pictures, digest.hexdigest()
    files = iter_image_files([folder])
    if not files:
        raise Illust2VecError(f"{folder}: no pictures to calibrate on (give a folder of images)")
    step = max(1, -(-len(files) // CALIBRATION_LIMIT))
    chosen = files[::step][:CALIBRATION_LIMIT]
    for path in chosen:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return list(chosen), digest.hexdigest()


def quantized_key(source_key: str, precision: str, calibration_hash: str, keep_fp32: Sequence[str] = ()) -> str:
    """Store key of a quantised graph: source content key + precision + calibration (+ layers kept fp32)."""
    kept = hashlib.sha256("\0".join(sorted(keep_fp32)).encode()).hexdigest()[:6] if keep_fp32 else "all"
    return f"{source_key}-{precision}-cal{calibration_hash[:12]}-x{kept}-q{QUANTIZER_VERSION}"


def _batches(pictures: Sequence[Any], recipe: InputRecipe, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(pictures), batch):
        arrays = []
        for picture in pictures[start:start + batch]:
            try:
                arrays.append(load_image(picture, exif_orientation=recipe.exif_orientation))
            except Illust2VecError as exc:
                log.warning("warning: calibration skips %s", exc)
        if arrays:
            yield preprocess(arrays, recipe)


def _input_means(proto: Any, batches: Sequence[np.ndarray], tensors: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) means of the float graph's ``tensors`` over the calibration batches."""
    import onnx
    import onnxruntime as ort

    feed = proto.graph.input[0].name
    inner = sorted(set(tensors) - {feed})
    outputs = list(proto.graph.output)  # the probe is the graph itself with other outputs (no copy of a big graph)
    del proto.graph.output[:]
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in inner)
    try:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]) if inner else None
    finally:
        del proto.graph.output[:]
        proto.graph.output.extend(outputs)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for x in batches:
        values = dict(zip(inner, session.run(inner, {feed: x}))) if session is not None else {}
        values[feed] = x
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value.astype(np.float64).sum(axis=(0, *range(2, value.ndim)))
            counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in sums}


def _correct_biases(quantized: Any, source: Any, batches: Sequence[np.ndarray]) -> None:
    """Bias correction: each int8 Conv's bias absorbs the mean shift its rounded weights cause.

    With float weights ``W`` and the int8 graph's dequantised weights ``Wq``, a Conv's
    output is off on average by ``(Wq - W)`` applied to its input's per-channel mean
    over the calibration pictures (zero padding at the borders aside); its int32 bias
    moves by minus that.  Measured on EfficientNet-Lite0 (depthwise convs round worst):
    weight rounding alone moves the logits 0.139 (median, top 10) before, 0.056 after.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in quantized.graph.initializer}
    producer = {out: n for n in quantized.graph.node for out in n.output}
    floats = {i.name: i for i in source.graph.initializer}
    float_convs = {n.name: n for n in source.graph.node if n.op_type == "Conv" and n.name}

    def dequantizer(tensor: str):
        node = producer.get(tensor)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            return None
        return node

    work = []
    for node in quantized.graph.node:
        orig = float_convs.get(node.name)
        if node.op_type != "Conv" or orig is None or len(node.input) < 3 or len(orig.input) < 3:
            continue
        wdq, bdq = dequantizer(node.input[1]), dequantizer(node.input[2])
        if wdq is not None and bdq is not None and orig.input[1] in floats:
            work.append((node, orig, wdq, bdq))
    means = _input_means(source, batches, [orig.input[0] for _, orig, _, _ in work])

    def dequantize(dq: Any, ndim: int) -> np.ndarray:
        q, scale = (numpy_helper.to_array(inits[t]).astype(np.float64) for t in dq.input[:2])
        zero = numpy_helper.to_array(inits[dq.input[2]]).astype(np.float64) if len(dq.input) > 2 and dq.input[2] \
            else np.zeros_like(scale)
        if scale.ndim:  # per channel, along the node's axis
            shape = [1] * ndim
            shape[next((a.i for a in dq.attribute if a.name == "axis"), 1)] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (q - zero) * scale

    for node, orig, wdq, bdq in work:
        w = numpy_helper.to_array(floats[orig.input[1]]).astype(np.float64)
        error = dequantize(wdq, w.ndim) - w  # (out, in / groups, *kernel)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        mean = means[orig.input[0]].reshape(groups, -1)
        per_tap = error.sum(axis=tuple(range(2, w.ndim))).reshape(groups, w.shape[0] // groups, -1)
        shift = np.einsum("goi,gi->go", per_tap, mean).reshape(-1)
        bias = inits[bdq.input[0]]
        scale = numpy_helper.to_array(inits[bdq.input[1]]).astype(np.float64)
        q = numpy_helper.to_array(bias).astype(np.float64) - shift / scale
        info = np.iinfo(np.int32)
        bias.CopyFrom(numpy_helper.from_array(np.clip(np.round(q), info.min, info.max).astype(np.int32), bias.name))


def quantize_graph(source: str | os.PathLike | bytes, pictures: Sequence[Any], recipe: InputRecipe, *,
                   keep_fp32: Sequence[str] = ()) -> bytes:
    """A static int8 (QDQ) copy of the float32 graph ``source``, calibrated on ``pictures``, biases corrected."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(os.fspath(source))
    feed = proto.graph.input[0]
    first_dim = feed.type.tensor_type.shape.dim[0] if feed.type.tensor_type.shape.dim else None
    batch = 1 if first_dim is not None and first_dim.HasField("dim_value") and first_dim.dim_value == 1 else 8
    batches = list(_batches(pictures, recipe, batch))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{feed.name: x} for x in batches])

        def get_next(self):
            return next(self._it, None)

    names = {n.name for n in proto.graph.node}
    missing = [n for n in keep_fp32 if n not in names]
    if missing:
        raise Illust2VecError(f"layers to keep in fp32 not in the graph: {', '.join(missing)}")
    # AveragePool stays float32: ONNX Runtime 1.23 (the newest for Python 3.10) fuses a quantised one
    # into QLinearAveragePool and then refuses to load the graph ("Scale and Zero-point must be a
    # scalar"); pooling is a sliver of the work, so nothing is lost elsewhere.
    exclude = list(keep_fp32) + [n.name for n in proto.graph.node if n.op_type == "AveragePool" and n.name]
    with tempfile.TemporaryDirectory(prefix="illust2vec-quantize-") as tmp:
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, os.fspath(src))
        logging.disable(logging.WARNING)  # the quantiser's advice to pre-process, on the root logger
        try:
            quantize_static(os.fspath(src), os.fspath(out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, extra_options={"WeightSymmetric": True})
        finally:
            logging.disable(logging.NOTSET)
        quantized = onnx.load(os.fspath(out))
    _correct_biases(quantized, proto, batches)
    return quantized.SerializeToString()


def _store_and_key(source: str | os.PathLike | bytes, identity: str,
                   model_dir: str | os.PathLike | None) -> tuple[ModelStore, str]:
    """Where a quantised graph goes (the store holding the source graph) and the source's content key."""
    if isinstance(source, (bytes, bytearray)):
        return ModelStore(model_dir), "bytes-" + hashlib.sha256(bytes(source)).hexdigest()[:24]
    path = Path(source)
    if model_dir is None and path.parent.name == "onnx":
        model_dir = path.parent.parent  # a graph converted into a store: its quantised copies go beside it
    store = ModelStore(model_dir)
    if path.parent.resolve() == store.onnx_dir.resolve():
        return store, path.stem  # converted graphs are named by their source's content key
    return store, "onnx-" + hashlib.sha256(identity.encode()).hexdigest()[:24]


def _pointer(store: ModelStore, source_key: str, precision: str) -> Path:
    """The file naming the graph ``models quantize --calibrate DIR`` made last for this source."""
    return store.onnx_dir / f"{source_key}-{precision}.calibration"


def quantized_graph(source: str | os.PathLike | bytes, *, identity: str, recipe: InputRecipe,
                    calibration: str | os.PathLike | None = None, keep_fp32: Sequence[str] = (),
                    model_dir: str | os.PathLike | None = None, remember: bool = False,
                    name: str = "the model") -> tuple[Path, str]:
    """The int8 graph of ``source`` from the store (made and cached on first use); ``(path, calibration hash)``.

    Without ``calibration`` the graph last made by ``models quantize --calibrate``
    for this source is used, else the demo gallery's.  ``remember`` makes this
    calibration the one later loads without ``calibration`` use.
    """
    from illust2vec.io.atomic import atomic_write

    store, source_key = _store_and_key(source, identity, model_dir)
    pointer = _pointer(store, source_key, "int8")
    if calibration is None and not remember:
        try:
            key = pointer.read_text().strip()
            path = store.onnx_dir / f"{key}.onnx"
            if key and path.is_file():
                return path, key.rsplit("-cal", 1)[1][:12]
        except (OSError, IndexError):
            pass
    pictures, digest = calibration_pictures(calibration)
    digest = digest[:12]
    key = quantized_key(source_key, "int8", digest, keep_fp32)
    path = store.onnx_dir / f"{key}.onnx"
    if not (path.is_file() and path.stat().st_size > 0):
        where = "the demo gallery" if calibration is None else str(calibration)
        log.warning("note: making the int8 graph of %s, calibrated on %s (%d pictures; once)", name, where,
                    len(pictures))
        path = store.cached_onnx(key, lambda: quantize_graph(source, pictures, recipe, keep_fp32=keep_fp32))
    if remember:
        try:
            atomic_write(pointer, lambda fh: fh.write(key.encode()), tmp_dir=store.tmp_dir)
        except OSError:
            pass  # a read-only store still works
    return path, digest


def quantize_model(model: Any, calibration: str | os.PathLike | None = None, *,
                   model_dir: str | os.PathLike | None = None) -> Path:
    """Make (or find) the int8 graph of a loaded fp32 model, calibrated on ``calibration``, and remember it.

    Later loads of this model with ``precision="int8"`` and no ``calibration``
    use this graph (``illust2vec models quantize NAME --calibrate DIR``).
    """
    if getattr(model, "graph_precision", "fp32") != "fp32":
        raise Illust2VecError(f"{model.name} is already {model.graph_precision}; load it with precision='fp32'")
    path, _ = quantized_graph(model.onnx_source, identity=model.identity, recipe=model.recipe,
                              calibration=calibration, keep_fp32=model.keep_fp32, model_dir=model_dir,
                              remember=True, name=model.name)
    return path
