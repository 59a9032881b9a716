"""Convert a parsed Caffe net into an ONNX graph, with Caffe's layer semantics.

Only the layers needed for the requested outputs are converted, so training
heads, loss layers and ``label`` inputs that a deploy-time net never runs do
not get in the way.  Shapes are tracked statically (batch stays symbolic), which
lets pooling reproduce Caffe's output-size rule (ceil rounding, clipped at the
padding) and its average-pooling divisor exactly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from illust2vec.models.families.i2v.caffe.net import CaffeLayer, CaffeNet
from illust2vec.errors import ModelFormatError

OPSET = 17
BATCH = "batch"

#: Layer types that produce data (graph inputs) rather than compute.
INPUT_TYPES = {"Input", "Data", "ImageData", "MemoryData", "DummyData", "HDF5Data", "WindowData"}
IDENTITY_TYPES = {"Dropout", "Split", "Silence"}
SUPPORTED_TYPES = INPUT_TYPES | IDENTITY_TYPES | {
    "Convolution", "ReLU", "Pooling", "InnerProduct", "Sigmoid", "Softmax", "TanH",
    "Concat", "Eltwise", "Flatten", "Reshape",
}


@dataclass
class _Step:
    """One deploy-phase layer with its inputs/outputs resolved to SSA tensor names."""

    layer: CaffeLayer
    inputs: list[str]
    outputs: list[str]


@dataclass
class _Builder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # -1 = batch
    _counter: int = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], output: str, **attrs) -> str:
        self._counter += 1
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=f"{op}_{self._counter}", **attrs))
        return output


def _pair(p: dict, base: str, default: int, h_key: str, w_key: str) -> tuple[int, int]:
    """Read Caffe's square-or-(h, w) parameter forms (e.g. kernel_size / kernel_h+kernel_w)."""
    if h_key in p or w_key in p:
        return int(p.get(h_key, default)), int(p.get(w_key, default))
    value = p.get(base, default)
    if isinstance(value, list):
        if not value:
            return default, default
        if len(value) == 1:
            return int(value[0]), int(value[0])
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _plan(net: CaffeNet, outputs: Sequence[str]) -> tuple[list[_Step], dict[str, str], set[str]]:
    """Resolve in-place layers to SSA names and keep only what the outputs need.

    Returns the needed steps in order, the final SSA name of each blob, and the
    set of graph-input blob names (SSA) that the needed steps read.
    """
    version: dict[str, int] = {}
    current: dict[str, str] = {}
    steps: list[_Step] = []

    def ssa(blob: str) -> str:
        n = version.get(blob, 0)
        version[blob] = n + 1
        return f"caffe/{blob}" if n == 0 else f"caffe/{blob}__{n}"

    for name in net.inputs:
        current[name] = ssa(name)
    for layer in net.layers:
        if not layer.in_test_phase():
            continue
        inputs = [current.get(b, f"<undefined:{b}>") for b in layer.bottoms]
        outs = [ssa(t) for t in layer.tops]
        for t, o in zip(layer.tops, outs):
            current[t] = o
        steps.append(_Step(layer, inputs, outs))

    missing = [o for o in outputs if o not in current]
    if missing:
        known = sorted({t for s in steps for t in s.layer.tops})
        raise ModelFormatError(
            f"output blob(s) {', '.join(missing)} not found in the net; available blobs: {', '.join(known)}"
        )
    needed = {current[o] for o in outputs}
    keep: list[_Step] = []
    for step in reversed(steps):
        if any(o in needed for o in step.outputs):
            keep.append(step)
            needed.update(step.inputs)
    keep.reverse()
    produced = {o for s in keep for o in s.outputs}
    graph_inputs = {i for i in needed if i not in produced}
    undefined = sorted(i for i in graph_inputs if i.startswith("<undefined:"))
    if undefined:
        raise ModelFormatError(
            "the requested outputs depend on blobs no layer produces: "
            + ", ".join(u[len("<undefined:") : -1] for u in undefined)
        )
    return keep, current, graph_inputs


def caffe_to_onnx(
    net: CaffeNet,
    outputs: dict[str, str],
    *,
    input_size: tuple[int, int] | None = None,
    input_channels: int | None = None,
    producer: str = "illust2vec",
) -> onnx.ModelProto:
    """Build an ONNX model computing Caffe blobs.

    Parameters
    ----------
    net:
        A parsed net (:func:`illust2vec.models.families.i2v.caffe.net.read_caffemodel`).
    outputs:
        Graph output name -> Caffe blob name, e.g. ``{"prob": "prob"}`` or
        ``{"feature": "encode1"}``.  Outputs of rank 4 with 1x1 spatial size are
        flattened to ``(N, C)``.
    input_size:
        ``(height, width)`` of the input.  Defaults to the size the net declares.
    input_channels:
        Channels of the input; defaults to the declared shape or the first
        convolution's weights.

    Notes
    -----
    The graph has one input named ``input`` (``(batch, C, H, W)`` float32) and
    a symbolic batch dimension.
    """
    steps, current, graph_inputs = _plan(net, list(outputs.values()))
    # Steps that merely define inputs (Input/Data layers) are replaced by the graph input.
    data_steps = [s for s in steps if s.layer.type in INPUT_TYPES]
    input_blobs = set(graph_inputs) | {o for s in data_steps for o in s.outputs}
    input_blobs = {b for b in input_blobs if not b.startswith("<")}
    if len(input_blobs) != 1:
        raise ModelFormatError(
            f"expected exactly one image input for the requested outputs, found: {', '.join(sorted(input_blobs)) or 'none'}"
        )
    input_blob = input_blobs.pop()

    declared = net.input_shapes[0] if net.input_shapes else None
    for s in data_steps:
        shapes = s.layer.param("input_param").get("shape") or []
        if shapes:
            declared = shapes[0]
    if input_size is None:
        if not declared or len(declared) != 4:
            raise ModelFormatError("the net declares no input size; pass input_size=(height, width)")
        input_size = (int(declared[2]), int(declared[3]))
    if input_channels is None:
        if declared and len(declared) == 4:
            input_channels = int(declared[1])
        else:
            first_conv = next((s for s in steps if s.layer.type == "Convolution"), None)
            if first_conv is None or not first_conv.layer.blobs:
                raise ModelFormatError("cannot tell the number of input channels; pass input_channels")
            group = int(first_conv.layer.param("convolution_param").get("group", 1))
            input_channels = int(first_conv.layer.blobs[0].shape[1]) * group

    b = _Builder()
    b.shapes[input_blob] = [-1, input_channels, input_size[0], input_size[1]]
    alias: dict[str, str] = {input_blob: "input"}

    def name_of(t: str) -> str:
        return alias.get(t, t)

    for step in steps:
        layer = step.layer
        if layer.type in INPUT_TYPES:
            continue
        if layer.type not in SUPPORTED_TYPES:
            raise ModelFormatError(
                f"layer '{layer.name}' has type '{layer.type}', which illust2vec cannot convert "
                f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})"
            )
        ins = [name_of(i) for i in step.inputs]
        in_shapes = [b.shapes[i] for i in step.inputs]
        try:
            _convert_layer(b, layer, ins, in_shapes, step.outputs, alias)
        except ModelFormatError:
            raise
        except (ValueError, IndexError, KeyError) as exc:
            raise ModelFormatError(f"layer '{layer.name}' ({layer.type}): {exc}") from None

    graph_outputs = []
    for out_name, blob in outputs.items():
        tensor = name_of(current[blob])
        shape = b.shapes[current[blob]]
        if len(shape) == 4 and shape[2] == 1 and shape[3] == 1:
            tensor = b.node("Flatten", [tensor], f"{out_name}__flat", axis=1)
            shape = [-1, shape[1]]
        b.node("Identity", [tensor], out_name)
        dims = [BATCH if d == -1 else d for d in shape]
        graph_outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, dims))

    graph = helper.make_graph(
        b.nodes,
        net.name or "caffe_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, input_channels, *input_size])],
        graph_outputs,
        initializer=b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = 8
    return model


def _convert_layer(
    b: _Builder,
    layer: CaffeLayer,
    ins: list[str],
    in_shapes: list[list[int]],
    outs: list[str],
    alias: dict[str, str],
) -> None:
    t = layer.type
    x = ins[0] if ins else None
    shape = in_shapes[0] if in_shapes else None

    if t in IDENTITY_TYPES:
        for o in outs:  # Split/Dropout: every top is the bottom
            alias[o] = x
            b.shapes[o] = list(shape)
        return

    out = outs[0]
    if t == "Convolution":
        p = layer.param("convolution_param")
        kh, kw = _pair(p, "kernel_size", 0, "kernel_h", "kernel_w")
        ph, pw = _pair(p, "pad", 0, "pad_h", "pad_w")
        sh, sw = _pair(p, "stride", 1, "stride_h", "stride_w")
        dh, dw = _pair(p, "dilation", 1, "dilation_h", "dilation_w")
        group = int(p.get("group", 1))
        weight = np.asarray(layer.blobs[0], dtype=np.float32)
        num_output = int(p.get("num_output", weight.shape[0] if weight.ndim else 0))
        c_in = shape[1]
        weight = weight.reshape(num_output, c_in // group, kh, kw)
        inputs = [x, b.const(f"{layer.name}.weight", weight)]
        if p.get("bias_term", True) and len(layer.blobs) > 1:
            inputs.append(b.const(f"{layer.name}.bias", np.asarray(layer.blobs[1], np.float32).reshape(num_output)))
        b.node("Conv", inputs, out, kernel_shape=[kh, kw], pads=[ph, pw, ph, pw],
               strides=[sh, sw], dilations=[dh, dw], group=group)
        oh = (shape[2] + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        ow = (shape[3] + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        b.shapes[out] = [shape[0], num_output, oh, ow]
    elif t == "ReLU":
        slope = float(layer.param("relu_param").get("negative_slope", 0.0))
        if slope:
            b.node("LeakyRelu", [x], out, alpha=slope)
        else:
            b.node("Relu", [x], out)
        b.shapes[out] = list(shape)
    elif t in ("Sigmoid", "TanH"):
        b.node("Sigmoid" if t == "Sigmoid" else "Tanh", [x], out)
        b.shapes[out] = list(shape)
    elif t == "Softmax":
        axis = int(layer.param("softmax_param").get("axis", 1))
        b.node("Softmax", [x], out, axis=axis)
        b.shapes[out] = list(shape)
    elif t == "Pooling":
        _pooling(b, layer, x, shape, out)
    elif t == "InnerProduct":
        p = layer.param("inner_product_param")
        axis = int(p.get("axis", 1)) % len(shape)
        k = int(np.prod(shape[axis:]))
        weight = np.asarray(layer.blobs[0], dtype=np.float32)
        transpose = bool(p.get("transpose", False))
        n = int(p.get("num_output", weight.size // k))
        weight = weight.reshape((k, n) if transpose else (n, k))
        flat = b.node("Flatten", [x], f"{out}__in", axis=axis) if len(shape) > axis + 1 else x
        if axis != 1:
            raise ModelFormatError(f"InnerProduct '{layer.name}' with axis={axis} is not supported (only axis 1)")
        inputs = [flat, b.const(f"{layer.name}.weight", weight)]
        if p.get("bias_term", True) and len(layer.blobs) > 1:
            inputs.append(b.const(f"{layer.name}.bias", np.asarray(layer.blobs[1], np.float32).reshape(n)))
        b.node("Gemm", inputs, out, transB=0 if transpose else 1)
        b.shapes[out] = [shape[0], n]
    elif t == "Concat":
        p = layer.param("concat_param")
        axis = int(p["axis"]) if "axis" in p else int(p.get("concat_dim", 1))
        axis %= len(shape)
        b.node("Concat", ins, out, axis=axis)
        new = list(shape)
        new[axis] = sum(s[axis] for s in in_shapes)
        b.shapes[out] = new
    elif t == "Eltwise":
        p = layer.param("eltwise_param")
        op = int(p.get("operation", 1))
        if op == 0:
            acc = ins[0]
            for i, other in enumerate(ins[1:]):
                acc = b.node("Mul", [acc, other], out if i == len(ins) - 2 else f"{out}__m{i}")
        elif op == 2:
            b.node("Max", ins, out)
        else:
            coeff = p.get("coeff") or []
            if coeff and len(coeff) != len(ins):
                raise ModelFormatError(f"Eltwise '{layer.name}' has {len(coeff)} coefficients for {len(ins)} inputs")
            terms = []
            for i, name in enumerate(ins):
                if coeff and coeff[i] != 1.0:
                    c = b.const(f"{layer.name}.coeff{i}", np.array(coeff[i], np.float32))
                    name = b.node("Mul", [name, c], f"{out}__c{i}")
                terms.append(name)
            b.node("Sum", terms, out)
        b.shapes[out] = list(shape)
    elif t == "Flatten":
        p = layer.param("flatten_param")
        axis = int(p.get("axis", 1)) % len(shape)
        end = int(p.get("end_axis", -1)) % len(shape)
        new = shape[:axis] + [int(np.prod(shape[axis : end + 1]))] + shape[end + 1 :]
        _reshape(b, layer, x, new, out)
    elif t == "Reshape":
        p = layer.param("reshape_param")
        spec = list(p.get("shape") or [])
        axis = int(p.get("axis", 0))
        num_axes = int(p.get("num_axes", -1))
        start = axis % (len(shape) + 1) if axis < 0 else axis
        end = len(shape) if num_axes == -1 else start + num_axes
        new_part: list[int | None] = []
        for i, d in enumerate(spec):
            new_part.append(shape[start + i] if d == 0 else (None if d == -1 else d))
        new = shape[:start] + new_part + shape[end:]
        if new[0] != -1 or -1 in new[1:]:
            raise ModelFormatError(f"Reshape '{layer.name}' that moves the batch axis is not supported")
        if None in new:
            known = int(np.prod([d for d in new[1:] if d is not None]))
            new[new.index(None)] = int(np.prod(shape[1:])) // max(1, known)
        _reshape(b, layer, x, new, out)
    else:  # pragma: no cover - guarded by SUPPORTED_TYPES
        raise ModelFormatError(f"layer '{layer.name}' has unsupported type '{t}'")


def _reshape(b: _Builder, layer: CaffeLayer, x: str, new: list[int], out: str) -> None:
    target = np.array([0 if i == 0 and d == -1 else d for i, d in enumerate(new)], dtype=np.int64)
    b.node("Reshape", [x, b.const(f"{layer.name}.shape", target)], out)
    b.shapes[out] = list(new)


def _pooling(b: _Builder, layer: CaffeLayer, x: str, shape: list[int], out: str) -> None:
    p = layer.param("pooling_param")
    method = int(p.get("pool", 0))
    if method not in (0, 1):
        raise ModelFormatError(f"Pooling '{layer.name}': only MAX and AVE pooling are supported (got STOCHASTIC)")
    height, width = shape[2], shape[3]
    if p.get("global_pooling"):
        kh, kw, ph, pw, sh, sw = height, width, 0, 0, 1, 1
    else:
        kh, kw = _pair(p, "kernel_size", 0, "kernel_h", "kernel_w")
        ph, pw = _pair(p, "pad", 0, "pad_h", "pad_w")
        sh, sw = _pair(p, "stride", 1, "stride_h", "stride_w")
    floor_mode = int(p.get("round_mode", 0)) == 1

    def out_size(size: int, k: int, pad: int, s: int) -> int:
        if floor_mode:
            n = (size + 2 * pad - k) // s + 1
        else:
            n = int(math.ceil((size + 2 * pad - k) / s)) + 1
        if pad and (n - 1) * s >= size + pad:
            n -= 1  # Caffe: the last window must start inside the image or its left padding
        return n

    oh, ow = out_size(height, kh, ph, sh), out_size(width, kw, pw, sw)
    # Pad explicitly so every window lies inside the tensor; pads past Caffe's
    # own padding only serve windows Caffe clips, and never reach a maximum.
    need_h, need_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    extra_h, extra_w = need_h - height - ph, need_w - width - pw
    fill = -3.4e38 if method == 0 else 0.0
    src = x
    if ph or pw or extra_h > 0 or extra_w > 0:
        pads = np.array([0, 0, ph, pw, 0, 0, max(extra_h, 0), max(extra_w, 0)], dtype=np.int64)
        src = b.node("Pad", [x, b.const(f"{layer.name}.pads", pads),
                             b.const(f"{layer.name}.fill", np.array(fill, np.float32))],
                     f"{out}__pad", mode="constant")
    op = "MaxPool" if method == 0 else "AveragePool"
    pooled = out if method == 0 else f"{out}__avg"
    b.node(op, [src], pooled, kernel_shape=[kh, kw], strides=[sh, sw])
    if method == 1:
        # Caffe divides by the window clipped to the padded extent (H + pad),
        # not by kh*kw; correct AveragePool's constant divisor where they differ.
        def sizes(n: int, size: int, k: int, pad: int, s: int) -> np.ndarray:
            start = np.arange(n) * s - pad
            end = np.minimum(start + k, size + pad)
            return (end - start).astype(np.float64)

        area = np.outer(sizes(oh, height, kh, ph, sh), sizes(ow, width, kw, pw, sw))
        scale = (kh * kw) / area
        if np.allclose(scale, 1.0):
            b.node("Identity", [pooled], out)
        else:
            b.node("Mul", [pooled, b.const(f"{layer.name}.divisor", scale.astype(np.float32)[None, None])], out)
    b.shapes[out] = [shape[0], shape[1], oh, ow]
