"""Write ``.caffemodel`` files (NetParameter, V2 or legacy V1) from Python.

The inverse of :mod:`illust2vec.models.families.i2v.caffe.net`, for tests and benchmarks: build
nets of any layout with random weights, e.g. the i2v tag network at full size.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.io.atomic import atomic_write
from illust2vec.models.families.i2v.caffe.net import _PARAM_SCHEMAS, V1_LAYER_TYPES


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _str(number: int, text: str) -> bytes:
    return _len_field(number, text.encode("utf-8"))


def _shape(dims: Sequence[int]) -> bytes:
    return _len_field(1, b"".join(_varint(int(d)) for d in dims))


def _blob(array: np.ndarray, v1: bool) -> bytes:
    array = np.asarray(array, dtype="<f4")
    if v1:
        dims = list(array.shape)
        dims = [1] * (4 - len(dims)) + dims
        head = b"".join(_key(n, 0) + _varint(d) for n, d in zip((1, 2, 3, 4), dims))
    else:
        head = _len_field(7, _shape(array.shape))
    return head + _len_field(5, array.tobytes())


def _param(schema: dict[int, tuple[str, str, bool]], values: dict[str, Any]) -> bytes:
    by_name = {name: (num, kind, rep) for num, (name, kind, rep) in schema.items()}
    out = bytearray()
    for name, value in values.items():
        num, kind, repeated = by_name[name]
        items = value if repeated and isinstance(value, (list, tuple)) and kind not in ("shape",) else [value]
        if kind == "shapes":
            items = value
        for item in items:
            if kind in ("uint", "int", "enum", "bool"):
                out += _key(num, 0) + _varint(int(item))
            elif kind == "float":
                out += _key(num, 5) + struct.pack("<f", float(item))
            elif kind in ("shape", "shapes"):
                out += _len_field(num, _shape(item))
    return bytes(out)


@dataclass
class LayerSpec:
    """A layer to write: type (V2 string), connections, parameters, weights."""

    name: str
    type: str
    bottoms: Sequence[str] = ()
    tops: Sequence[str] = ()
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    blobs: Sequence[np.ndarray] = ()
    phase: int | None = None  # include{phase: ...}; 0 = TRAIN, 1 = TEST


def encode_net(layers: Sequence[LayerSpec], *, name: str = "net", inputs: Sequence[str] = ("data",),
               input_shape: Sequence[int] | None = (1, 3, 224, 224), v1: bool = False) -> bytes:
    """Serialize a NetParameter."""
    out = bytearray(_str(1, name))
    for inp in inputs:
        out += _str(3, inp)
    if input_shape is not None:
        if v1:
            out += b"".join(_key(4, 0) + _varint(d) for d in input_shape)
        else:
            out += _len_field(8, _shape(input_shape))
    v1_codes = {v: k for k, v in V1_LAYER_TYPES.items()}
    for layer in layers:
        body = bytearray()
        if v1:
            body += _str(4, layer.name) + _key(5, 0) + _varint(v1_codes[layer.type])
            body += b"".join(_str(2, b) for b in layer.bottoms) + b"".join(_str(3, t) for t in layer.tops)
            body += b"".join(_len_field(6, _blob(b, True)) for b in layer.blobs)
            if layer.phase is not None:
                body += _len_field(32, _key(1, 0) + _varint(layer.phase))
        else:
            body += _str(1, layer.name) + _str(2, layer.type)
            body += b"".join(_str(3, b) for b in layer.bottoms) + b"".join(_str(4, t) for t in layer.tops)
            body += b"".join(_len_field(7, _blob(b, False)) for b in layer.blobs)
            if layer.phase is not None:
                body += _len_field(8, _key(1, 0) + _varint(layer.phase))
        for group, values in layer.params.items():
            v2_num, v1_num, schema = _PARAM_SCHEMAS[group]
            num = v1_num if v1 else v2_num
            if num is None:
                raise ValueError(f"{group} has no V1 field")
            body += _len_field(num, _param(schema, values))
        out += _len_field(2 if v1 else 100, bytes(body))
    return bytes(out)


def i2v_layers(widths: Sequence[int] = (64, 128, 256, 512, 512, 1024), *, head: str = "tag", n_tags: int = 1539,
               encode: int = 4096, input_size: int = 224, seed: int = 0, scale: float = 1.0) -> list[LayerSpec]:
    """The illustration2vec network layout with random weights.

    ``widths`` are the channel counts of conv1..conv6 (the published models use
    64, 128, 256, 512, 512, 1024).  ``head="tag"``: conv6_4 (n_tags) -> 7x7
    average pool -> sigmoid ``prob``; ``head="feature"``: ``encode1``
    InnerProduct (``encode``) -> sigmoid, as in the feature model.
    """
    rng = np.random.default_rng(seed)
    layers: list[LayerSpec] = []
    plan = [("conv1_1", widths[0]), "pool1", ("conv2_1", widths[1]), "pool2",
            ("conv3_1", widths[2]), ("conv3_2", widths[2]), "pool3",
            ("conv4_1", widths[3]), ("conv4_2", widths[3]), "pool4",
            ("conv5_1", widths[4]), ("conv5_2", widths[4]), "pool5",
            ("conv6_1", widths[5]), ("conv6_2", widths[5]), ("conv6_3", widths[5])]
    prev, channels, size = "data", 3, input_size
    for step in plan:
        if isinstance(step, str):
            layers.append(LayerSpec(step, "Pooling", [prev], [step],
                                    {"pooling_param": {"pool": 0, "kernel_size": 2, "stride": 2}}))
            prev, size = step, size // 2
            continue
        name, out = step
        w = (rng.standard_normal((out, channels, 3, 3)) * scale * np.sqrt(2.0 / (channels * 9))).astype(np.float32)
        b = (rng.standard_normal(out) * 0.01).astype(np.float32)
        layers.append(LayerSpec(name, "Convolution", [prev], [name],
                                {"convolution_param": {"num_output": out, "pad": [1], "kernel_size": [3]}}, [w, b]))
        layers.append(LayerSpec(name.replace("conv", "relu"), "ReLU", [name], [name]))
        prev, channels = name, out
    if head == "tag":
        w = (rng.standard_normal((n_tags, channels, 3, 3)) * np.sqrt(1.0 / (channels * 9))).astype(np.float32)
        b = (rng.standard_normal(n_tags) * 0.01).astype(np.float32)
        layers.append(LayerSpec("conv6_4", "Convolution", [prev], ["conv6_4"],
                                {"convolution_param": {"num_output": n_tags, "pad": [1], "kernel_size": [3]}}, [w, b]))
        layers.append(LayerSpec("pool6", "Pooling", ["conv6_4"], ["pool6"],
                                {"pooling_param": {"pool": 1, "kernel_size": size, "stride": 1}}))
        layers.append(LayerSpec("prob", "Sigmoid", ["pool6"], ["prob"]))
    else:
        k = channels * size * size
        w = (rng.standard_normal((encode, k)) * np.sqrt(1.0 / k)).astype(np.float32)
        layers.append(LayerSpec("encode1", "InnerProduct", [prev], ["encode1"],
                                {"inner_product_param": {"num_output": encode}}, [w, np.zeros(encode, np.float32)]))
        layers.append(LayerSpec("encode1neuron", "Sigmoid", ["encode1"], ["encode1neuron"]))
    return layers


def write_caffemodel(path: str | os.PathLike, layers: Sequence[LayerSpec], **options: Any) -> None:
    data = encode_net(layers, **options)
    atomic_write(path, lambda fh: fh.write(data))
