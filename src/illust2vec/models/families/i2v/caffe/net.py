"""Read a Caffe ``NetParameter`` (``.caffemodel``) into plain Python objects.

Both formats Caffe ever wrote are understood: V2 (``layer``, string types,
``BlobShape``) and the legacy V1 (``layers``, enum types, blobs with
num/channels/height/width).  Only the fields inference needs are decoded, by
field number, straight from the protobuf wire format (see ``caffe.proto``).
Weight blobs stay zero-copy views into the file's memory map.
"""
from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.models.families.i2v.caffe.wire import (
    FIXED32,
    LENGTH_DELIMITED,
    Field,
    WireError,
    as_str,
    fixed32_to_float,
    iter_fields,
    packed_array,
    packed_varints,
    to_signed32,
)
from illust2vec.errors import ModelFormatError

# V1LayerParameter.LayerType -> V2 type string (caffe.proto, "enum LayerType").
V1_LAYER_TYPES = {
    0: "None", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat",
    37: "ContrastiveLoss", 4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout",
    32: "DummyData", 7: "EuclideanLoss", 25: "Eltwise", 38: "Exp", 8: "Flatten",
    9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col", 12: "ImageData",
    13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
    16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU",
    19: "Sigmoid", 27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax",
    21: "SoftmaxWithLoss", 22: "Split", 33: "Slice", 23: "TanH", 24: "WindowData",
    31: "Threshold",
}

# Parameter sub-messages we decode: field number in LayerParameter (V2) and in
# V1LayerParameter, and the schema of the sub-message.
# Schema entries: field number -> (name, kind, repeated); kinds: "int", "uint",
# "bool", "float", "enum", "shape" (BlobShape), "shapes" (repeated BlobShape).
_PARAM_SCHEMAS: dict[str, tuple[int | None, int | None, dict[int, tuple[str, str, bool]]]] = {
    "convolution_param": (106, 10, {
        1: ("num_output", "uint", False), 2: ("bias_term", "bool", False),
        3: ("pad", "uint", True), 4: ("kernel_size", "uint", True), 6: ("stride", "uint", True),
        18: ("dilation", "uint", True), 9: ("pad_h", "uint", False), 10: ("pad_w", "uint", False),
        11: ("kernel_h", "uint", False), 12: ("kernel_w", "uint", False),
        13: ("stride_h", "uint", False), 14: ("stride_w", "uint", False),
        5: ("group", "uint", False), 16: ("axis", "int", False),
    }),
    "pooling_param": (121, 19, {
        1: ("pool", "enum", False), 4: ("pad", "uint", False), 9: ("pad_h", "uint", False),
        10: ("pad_w", "uint", False), 2: ("kernel_size", "uint", False),
        5: ("kernel_h", "uint", False), 6: ("kernel_w", "uint", False),
        3: ("stride", "uint", False), 7: ("stride_h", "uint", False), 8: ("stride_w", "uint", False),
        12: ("global_pooling", "bool", False), 13: ("round_mode", "enum", False),
    }),
    "inner_product_param": (117, 17, {
        1: ("num_output", "uint", False), 2: ("bias_term", "bool", False),
        5: ("axis", "int", False), 6: ("transpose", "bool", False),
    }),
    "relu_param": (123, 30, {1: ("negative_slope", "float", False)}),
    "softmax_param": (125, 39, {2: ("axis", "int", False)}),
    "concat_param": (104, 9, {2: ("axis", "int", False), 1: ("concat_dim", "uint", False)}),
    "eltwise_param": (110, 24, {1: ("operation", "enum", False), 2: ("coeff", "float", True)}),
    "flatten_param": (135, None, {1: ("axis", "int", False), 2: ("end_axis", "int", False)}),
    "reshape_param": (133, None, {
        1: ("shape", "shape", False), 2: ("axis", "int", False), 3: ("num_axes", "int", False),
    }),
    "input_param": (143, None, {1: ("shape", "shapes", True)}),
    "dropout_param": (108, 12, {1: ("dropout_ratio", "float", False)}),
}


@dataclass
class PhaseRule:
    """A ``NetStateRule`` reduced to what deploy-time filtering needs."""

    phase: int | None = None  # 0 = TRAIN, 1 = TEST


@dataclass
class CaffeLayer:
    """One layer of a Caffe net: type, connections, parameters and weight blobs."""

    name: str
    type: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: list[np.ndarray] = field(default_factory=list)
    include: list[PhaseRule] = field(default_factory=list)
    exclude: list[PhaseRule] = field(default_factory=list)

    def param(self, group: str) -> dict[str, Any]:
        return self.params.get(group, {})

    def in_test_phase(self) -> bool:
        """Whether Caffe would instantiate this layer in the TEST (deploy) phase."""
        if self.include:
            return any(r.phase in (None, 1) for r in self.include)
        return not any(r.phase == 1 for r in self.exclude)


@dataclass
class CaffeNet:
    """A parsed ``NetParameter``: the layers in file order and declared inputs."""

    name: str
    layers: list[CaffeLayer]
    inputs: list[str] = field(default_factory=list)
    input_shapes: list[list[int]] = field(default_factory=list)
    format: str = "V2"  # "V2" (layer) or "V1" (layers)
    _keepalive: Any = None  # the mmap the blobs point into

    def layer(self, name: str) -> CaffeLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def _decode_value(f: Field, kind: str) -> Any:
    if kind in ("uint", "enum"):
        return f.value if isinstance(f.value, int) else None
    if kind == "int":
        return to_signed32(f.value) if isinstance(f.value, int) else None
    if kind == "bool":
        return bool(f.value)
    if kind == "float":
        if f.wire_type == FIXED32:
            return fixed32_to_float(f.value)
        raise WireError(f"expected a float at byte {f.offset}")
    if kind in ("shape", "shapes"):
        return _parse_blob_shape(f.value)
    raise AssertionError(kind)


def _parse_message(buf: memoryview, schema: dict[int, tuple[str, str, bool]], offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in iter_fields(buf, offset):
        spec = schema.get(f.number)
        if spec is None:
            continue
        name, kind, repeated = spec
        if repeated:
            values = out.setdefault(name, [])
            if kind in ("uint", "int") and f.wire_type == LENGTH_DELIMITED:
                ints = packed_varints(f)
                values.extend(to_signed32(v) if kind == "int" else v for v in ints)
            elif kind == "float" and f.wire_type == LENGTH_DELIMITED:
                values.extend(float(x) for x in packed_array(f, "<f4"))
            else:
                values.append(_decode_value(f, kind))
        else:
            out[name] = _decode_value(f, kind)
    return out


def _parse_blob_shape(buf: memoryview) -> list[int]:
    dims: list[int] = []
    for f in iter_fields(buf):
        if f.number == 1:
            dims.extend(to_signed32(v) for v in packed_varints(f))
    return dims


def _parse_blob(buf: memoryview, offset: int) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its declared shape (zero-copy when packed)."""
    shape: list[int] | None = None
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    seen_legacy = False
    chunks: list[np.ndarray] = []
    for f in iter_fields(buf, offset):
        if f.number == 7:
            shape = _parse_blob_shape(f.value)
        elif f.number in legacy and isinstance(f.value, int):
            legacy[f.number] = to_signed32(f.value)
            seen_legacy = True
        elif f.number == 5:  # data: repeated float
            if f.wire_type == LENGTH_DELIMITED:
                chunks.append(packed_array(f, "<f4"))
            else:
                chunks.append(np.array([fixed32_to_float(f.value)], dtype="<f4"))
        elif f.number == 8 and f.wire_type == LENGTH_DELIMITED:  # double_data
            chunks.append(packed_array(f, "<f8").astype(np.float32))
    if shape is None:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]] if seen_legacy else []
    data = chunks[0] if len(chunks) == 1 else (np.concatenate(chunks) if chunks else np.zeros(0, "<f4"))
    count = math.prod(shape) if shape else data.size  # Python ints: a hostile shape cannot wrap around
    if any(d < 0 for d in shape) or count != data.size:
        raise WireError(f"blob at byte {offset} declares shape {shape} ({count} values) but holds {data.size}")
    return data.reshape(shape) if shape else data


def _parse_rule(buf: memoryview) -> PhaseRule:
    rule = PhaseRule()
    for f in iter_fields(buf):
        if f.number == 1 and isinstance(f.value, int):
            rule.phase = f.value
    return rule


def _parse_layer(buf: memoryview, offset: int, v1: bool) -> CaffeLayer:
    layer = CaffeLayer(name="", type="")
    if v1:
        nums = {"name": 4, "type": 5, "bottom": 2, "top": 3, "blobs": 6, "include": 32, "exclude": 33}
    else:
        nums = {"name": 1, "type": 2, "bottom": 3, "top": 4, "blobs": 7, "include": 8, "exclude": 9}
    param_by_number = {
        (v1_num if v1 else v2_num): (group, schema)
        for group, (v2_num, v1_num, schema) in _PARAM_SCHEMAS.items()
        if (v1_num if v1 else v2_num) is not None
    }
    for f in iter_fields(buf, offset):
        n = f.number
        if n == nums["name"]:
            layer.name = as_str(f)
        elif n == nums["type"]:
            if v1:
                if not isinstance(f.value, int):
                    raise WireError(f"V1 layer type at byte {f.offset} is not an enum")
                layer.type = V1_LAYER_TYPES.get(f.value, f"V1 type {f.value}")
            else:
                layer.type = as_str(f)
        elif n == nums["bottom"]:
            layer.bottoms.append(as_str(f))
        elif n == nums["top"]:
            layer.tops.append(as_str(f))
        elif n == nums["blobs"]:
            layer.blobs.append(_parse_blob(f.value, f.offset))
        elif n == nums["include"]:
            layer.include.append(_parse_rule(f.value))
        elif n == nums["exclude"]:
            layer.exclude.append(_parse_rule(f.value))
        elif n in param_by_number and f.wire_type == LENGTH_DELIMITED:
            group, schema = param_by_number[n]
            layer.params[group] = _parse_message(f.value, schema, f.offset)
    return layer


def parse_net(data: bytes | memoryview | mmap.mmap) -> CaffeNet:
    """Parse a serialized ``NetParameter``.

    Raises :class:`WireError` (a ``ValueError``) on malformed bytes.
    """
    buf = memoryview(data)
    net = CaffeNet(name="", layers=[])
    v2: list[CaffeLayer] = []
    v1: list[CaffeLayer] = []
    input_dims: list[int] = []
    for f in iter_fields(buf):
        if f.number == 1 and f.wire_type == LENGTH_DELIMITED:
            net.name = as_str(f)
        elif f.number == 3 and f.wire_type == LENGTH_DELIMITED:
            net.inputs.append(as_str(f))
        elif f.number == 8 and f.wire_type == LENGTH_DELIMITED:
            net.input_shapes.append(_parse_blob_shape(f.value))
        elif f.number == 4:
            input_dims.extend(to_signed32(v) for v in packed_varints(f))
        elif f.number == 100 and f.wire_type == LENGTH_DELIMITED:
            v2.append(_parse_layer(f.value, f.offset, v1=False))
        elif f.number == 2 and f.wire_type == LENGTH_DELIMITED:
            v1.append(_parse_layer(f.value, f.offset, v1=True))
    if input_dims and not net.input_shapes:
        net.input_shapes = [input_dims[i : i + 4] for i in range(0, len(input_dims), 4)]
    if v2 and v1:
        raise WireError("the file mixes V1 'layers' and V2 'layer' entries")
    net.layers = v2 or v1
    net.format = "V2" if v2 or not v1 else "V1"
    if not net.layers:
        raise WireError("no layers found: this is not a Caffe NetParameter")
    return net


def read_caffemodel(path: str | os.PathLike) -> CaffeNet:
    """Memory-map and parse a ``.caffemodel`` file.

    Weight arrays are read-only views into the mapping (no copy).  Errors are
    :class:`~illust2vec.errors.ModelFormatError` naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise ModelFormatError(f"{path}: the file is empty (0 bytes); download it again")
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{path}: is a directory, not a .caffemodel file") from None
    except PermissionError:
        raise ModelFormatError(f"{path}: permission denied") from None
    try:
        net = parse_net(mapped)
    except (WireError, UnicodeDecodeError, OverflowError, ValueError, MemoryError) as exc:
        raise ModelFormatError(
            f"{path}: not a valid .caffemodel ({exc}); the file may be truncated or corrupted — "
            "download it again and compare its size"
        ) from None
    net._keepalive = mapped
    return net
