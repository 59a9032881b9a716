"""Reverse-mode (backward) ONNX graphs: the gradient of an objective with respect to the input.

ONNX Runtime's inference sessions compute no gradients, so the gradient is
written as more graph: :func:`gradient_model` copies a forward graph, seeds the
gradient of one of its outputs, and appends, node by node in reverse order,
the ONNX ops that carry the gradient back to the graph input.  The result is
an ordinary inference graph (forward and backward in one run) for a plain
ONNX Runtime session, on the CPU or a GPU.

The reverse rules cover the ops the Caffe converter writes
(:mod:`illust2vec.models.families.i2v.caffe.to_onnx`: Conv, Relu, LeakyRelu, MaxPool,
AveragePool, Pad, Mul, Gemm, Flatten, Reshape, Sigmoid, Tanh, Softmax,
Concat, Sum, Max, Identity) and those of the EfficientNet-Lite0 graph
(:mod:`illust2vec.models.families.effnet`: Clip, Add, GlobalAveragePool).  Only the
gradient with respect to the data input is formed; weights are constants.

Rules (``g`` is the gradient arriving at a node's output):

- Conv: ``ConvTranspose(g, W)`` with the same strides, pads, dilations and
  groups; ``output_padding`` restores the exact input size.
- MaxPool: the forward pass also returns the argmax indices; ``g`` is
  scattered back onto them with ``ScatterElements(reduction="add")``, so
  overlapping windows add up as in Caffe and Chainer.
- AveragePool: a transposed depthwise convolution with the constant
  ``1 / (kh * kw)`` kernel; GlobalAveragePool: ``g / (H * W)`` broadcast.
- Relu: ``g`` where the output is positive (Chainer's rule); Clip: where the
  input lies strictly between the bounds; Sigmoid, Tanh, Softmax: from the
  output.
- Pad: a slice; Flatten/Reshape: a reshape back; Gemm: a product with the
  weight; Mul/Add/Sum: with broadcasting undone by a sum.

>>> grad_proto = gradient_model(forward_proto, "prob")          # doctest: +SKIP
>>> # inputs: "input", "prob_weight" (N, T); outputs: "input_grad", "prob", ...
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from illust2vec.errors import ModelFormatError

__all__ = ["GRAD_OUTPUT", "Objective", "gradient_model", "spatial_map_tensor", "with_outputs"]

#: Name of the gradient output of a :func:`gradient_model` graph.
GRAD_OUTPUT = "input_grad"

#: ``"weight"``: objective ``sum(weight * output)``, graph input ``<output>_weight``.
#: ``"target"``: objective ``0.5 * ||output - target||^2``, graph input ``<output>_target``.
Objective = Literal["weight", "target"]

_PASS_THROUGH = {"Identity", "Dropout"}
_SUPPORTED = _PASS_THROUGH | {
    "Conv", "Relu", "LeakyRelu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Pad", "Mul", "Add",
    "Sub", "Sum", "Max", "Gemm", "Flatten", "Reshape", "Sigmoid", "Tanh", "Softmax", "Concat",
}


@dataclass
class _Graph:
    """The graph being extended: nodes, constants and what is known of each tensor."""

    nodes: list[onnx.NodeProto]
    initializers: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]  # None = unknown (the batch)
    new_inits: list[onnx.TensorProto] = field(default_factory=list)
    counter: int = 0

    def name(self, base: str) -> str:
        self.counter += 1
        return f"grad/{base}__{self.counter}"

    def const(self, base: str, array: np.ndarray) -> str:
        name = self.name(base)
        self.new_inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], base: str, n_out: int = 1, **attrs) -> str | list[str]:
        outs = [self.name(f"{base}.{op}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs

    def shape(self, tensor: str) -> list[int | None]:
        if tensor in self.initializers:
            return list(self.initializers[tensor].shape)
        if tensor not in self.shapes:
            raise ModelFormatError(f"the gradient needs the shape of '{tensor}', which shape inference did not give")
        return self.shapes[tensor]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _infer_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _needs_grad(nodes: Sequence[onnx.NodeProto], source: str) -> set[str]:
    """Tensors that depend on ``source``."""
    live = {source}
    for n in nodes:
        if any(i in live for i in n.input):
            live.update(o for o in n.output if o)
    return live


def gradient_model(
    forward: onnx.ModelProto,
    output: str,
    objective: Objective = "weight",
    *,
    input_name: str | None = None,
) -> onnx.ModelProto:
    """A graph computing the forward outputs and the gradient of an objective on ``output``.

    Parameters
    ----------
    forward:
        The inference graph (float32, one image input).
    output:
        The graph output the objective is defined on (e.g. ``"prob"``, ``"feature"``).
    objective:
        ``"weight"``: ``sum(w * output)`` with ``w`` fed as ``<output>_weight``
        (same shape as the output; ones on chosen tag columns give the gradient
        of the sum of those probabilities).  ``"target"``: ``0.5 * ||output -
        t||^2`` with ``t`` fed as ``<output>_target``.
    input_name:
        The input to differentiate with respect to (default: the only graph input).

    Returns
    -------
    onnx.ModelProto
        The graph, which keeps the forward outputs and adds ``input_grad``
        (shape of the input).
    """
    graph = forward.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if input_name is None:
        if len(inputs) != 1:
            raise ModelFormatError(f"the graph has {len(inputs)} inputs; name the one to differentiate")
        input_name = inputs[0].name
    out_info = next((o for o in graph.output if o.name == output), None)
    if out_info is None:
        names = ", ".join(o.name for o in graph.output)
        raise ModelFormatError(f"the graph has no output '{output}' (outputs: {names})")
    if objective not in ("weight", "target"):
        raise ValueError(f"objective must be 'weight' or 'target', not {objective!r}")
    elem = out_info.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        raise ModelFormatError("gradients need a float32 graph (not a half-precision one)")

    g = _Graph(
        nodes=[],
        initializers={i.name: numpy_helper.to_array(i) for i in graph.initializer},
        shapes=_infer_shapes(forward),
    )
    # Forward part: copied, with MaxPool asked for its argmax indices.
    pool_indices: dict[str, str] = {}
    for n in graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        if n.op_type == "MaxPool":
            if len(copy.output) < 2 or not copy.output[1]:
                idx = f"grad/{n.output[0]}.argmax"
                del copy.output[1:]
                copy.output.append(idx)
            pool_indices[n.output[0]] = copy.output[1]
        g.nodes.append(copy)

    live = _needs_grad(graph.node, input_name)
    if output not in live:
        raise ModelFormatError(f"output '{output}' does not depend on input '{input_name}'")
    seed_name = f"{output}_{objective}"
    seed = seed_name if objective == "weight" else g.node("Sub", [output, seed_name], "seed")
    grads: dict[str, list[str]] = {output: [seed]}

    def grad_of(tensor: str) -> str | None:
        parts = grads.get(tensor)
        if not parts:
            return None
        if len(parts) > 1:
            grads[tensor] = [g.node("Sum", parts, "acc")]
        return grads[tensor][0]

    for n in reversed(graph.node):
        outs = [o for o in n.output if o]
        dy = grad_of(outs[0]) if outs else None
        if dy is None:
            continue
        if n.op_type not in _SUPPORTED:
            raise ModelFormatError(
                f"no reverse rule for ONNX op '{n.op_type}' (node '{n.name}'); "
                f"supported: {', '.join(sorted(_SUPPORTED))}"
            )
        for tensor, dx in _reverse(g, n, dy, live, pool_indices):
            grads.setdefault(tensor, []).append(dx)

    dx = grad_of(input_name)
    if dx is None:  # pragma: no cover - guarded by the liveness check
        raise ModelFormatError("the gradient does not reach the input")
    g.nodes.append(helper.make_node("Identity", [dx], [GRAD_OUTPUT], name=GRAD_OUTPUT))

    in_info = next(i for i in inputs if i.name == input_name)
    grad_info = onnx.ValueInfoProto()
    grad_info.CopyFrom(in_info)
    grad_info.name = GRAD_OUTPUT
    seed_info = onnx.ValueInfoProto()
    seed_info.CopyFrom(out_info)
    seed_info.name = seed_name
    new_graph = helper.make_graph(
        g.nodes,
        f"{graph.name}_grad",
        [*graph.input, seed_info],
        [grad_info, *graph.output],
        initializer=[*graph.initializer, *g.new_inits],
    )
    model = helper.make_model(new_graph, opset_imports=[helper.make_opsetid("", max(_opset(forward), 17))],
                              producer_name="illust2vec-reverse")
    model.ir_version = max(forward.ir_version, 8)
    return model


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _unbroadcast(g: _Graph, dy: str, target: str, out: str) -> str:
    """Sum ``dy`` (shaped like ``out``) down to the shape of ``target`` (numpy broadcasting)."""
    t_shape, o_shape = g.shape(target), g.shape(out)
    lead = len(o_shape) - len(t_shape)
    axes = list(range(lead)) + [
        lead + i for i, d in enumerate(t_shape) if d == 1 and o_shape[lead + i] != 1
    ]
    if not axes:
        return dy
    summed = g.node("ReduceSum", [dy, g.const("axes", np.array(axes, np.int64))], "unbroadcast", keepdims=1)
    return g.node("Reshape", [summed, g.const("shape", np.array(t_shape, np.int64))], "unbroadcast")


def _scalar(g: _Graph, value: float) -> str:
    return g.const("scalar", np.array(value, np.float32))


def _reverse(
    g: _Graph, n: onnx.NodeProto, dy: str, live: set[str], pool_indices: dict[str, str]
) -> list[tuple[str, str]]:
    """``(input tensor, its gradient contribution)`` for the live inputs of one node."""
    op, a = n.op_type, _attrs(n)
    x = n.input[0] if n.input else ""
    y = n.output[0]
    base = n.name or y
    if op in _PASS_THROUGH:
        return [(x, dy)] if x in live else []
    if op in ("Flatten", "Reshape"):
        return [(x, g.node("Reshape", [dy, g.node("Shape", [x], base)], base))] if x in live else []
    if op == "Relu":
        return [(x, g.node("Where", [g.node("Greater", [y, _scalar(g, 0.0)], base), dy, _scalar(g, 0.0)], base))]
    if op == "LeakyRelu":
        alpha = float(a.get("alpha", 0.01))
        scaled = g.node("Mul", [dy, _scalar(g, alpha)], base)
        return [(x, g.node("Where", [g.node("Greater", [x, _scalar(g, 0.0)], base), dy, scaled], base))]
    if op == "Clip":
        lo = n.input[1] if len(n.input) > 1 and n.input[1] else None
        hi = n.input[2] if len(n.input) > 2 and n.input[2] else None
        mask = None
        for bound, cmp in ((lo, "Greater"), (hi, "Less")):
            if bound is None:
                continue
            m = g.node(cmp, [x, bound], base)
            mask = m if mask is None else g.node("And", [mask, m], base)
        return [(x, dy if mask is None else g.node("Where", [mask, dy, _scalar(g, 0.0)], base))]
    if op == "Sigmoid":
        one_minus = g.node("Sub", [_scalar(g, 1.0), y], base)
        return [(x, g.node("Mul", [dy, g.node("Mul", [y, one_minus], base)], base))]
    if op == "Tanh":
        one_minus = g.node("Sub", [_scalar(g, 1.0), g.node("Mul", [y, y], base)], base)
        return [(x, g.node("Mul", [dy, one_minus], base))]
    if op == "Softmax":
        axis = int(a.get("axis", -1))
        dot = g.node("ReduceSum", [g.node("Mul", [dy, y], base), g.const("axes", np.array([axis], np.int64))],
                     base, keepdims=1)
        return [(x, g.node("Mul", [y, g.node("Sub", [dy, dot], base)], base))]
    if op == "Conv":
        return [(x, _conv_backward(g, n, a, dy))]
    if op == "MaxPool":
        return [(x, _maxpool_backward(g, n, dy, pool_indices[y]))]
    if op == "AveragePool":
        return [(x, _avgpool_backward(g, n, a, dy))]
    if op == "GlobalAveragePool":
        shape = g.shape(x)
        area = float(np.prod(shape[2:]))
        spread = g.node("Expand", [dy, g.node("Shape", [x], base)], base)
        return [(x, g.node("Mul", [spread, _scalar(g, 1.0 / area)], base))]
    if op == "Pad":
        return [(x, _pad_backward(g, n, a, dy))]
    if op == "Gemm":
        if n.input[1] in live or (len(n.input) > 2 and n.input[2] in live):
            raise ModelFormatError(f"Gemm '{n.name}': gradients flow only through its first input")
        alpha, trans_a, trans_b = float(a.get("alpha", 1.0)), int(a.get("transA", 0)), int(a.get("transB", 0))
        # Y = alpha * A' B' (+ C): dA' = alpha * dY B'^T; dA = dA'^T when transA.
        if trans_a:
            dx = g.node("Gemm", [n.input[1], dy], base, alpha=alpha, transA=trans_b, transB=1)
        else:
            dx = g.node("Gemm", [dy, n.input[1]], base, alpha=alpha, transB=1 - trans_b)
        return [(x, dx)]
    if op in ("Add", "Sum"):
        return [(i, _unbroadcast(g, dy, i, y)) for i in n.input if i in live]
    if op == "Sub":
        result = []
        if n.input[0] in live:
            result.append((n.input[0], _unbroadcast(g, dy, n.input[0], y)))
        if n.input[1] in live:
            neg = g.node("Neg", [dy], base)
            result.append((n.input[1], _unbroadcast(g, neg, n.input[1], y)))
        return result
    if op == "Mul":
        first, second = n.input[0], n.input[1]
        result = []
        if first in live:
            result.append((first, _unbroadcast(g, g.node("Mul", [dy, second], base), first, y)))
        if second in live:
            result.append((second, _unbroadcast(g, g.node("Mul", [dy, first], base), second, y)))
        return result
    if op == "Max":
        result = []
        for i in n.input:
            if i in live:
                mask = g.node("Equal", [i, y], base)
                result.append((i, _unbroadcast(g, g.node("Where", [mask, dy, _scalar(g, 0.0)], base), i, y)))
        return result
    if op == "Concat":
        axis = int(a["axis"])
        sizes = [g.shape(i)[axis] for i in n.input]
        parts = g.node("Split", [dy, g.const("split", np.array(sizes, np.int64))], base, n_out=len(sizes),
                       axis=axis)
        parts = parts if isinstance(parts, list) else [parts]
        return [(i, p) for i, p in zip(n.input, parts) if i in live]
    raise ModelFormatError(f"no reverse rule for ONNX op '{op}'")  # pragma: no cover


def _spatial(g: _Graph, tensor: str) -> list[int]:
    shape = g.shape(tensor)
    if any(d is None for d in shape[1:]):
        raise ModelFormatError(f"the gradient needs static sizes for '{tensor}' (got {shape})")
    return [int(d) for d in shape[2:]]


def _transpose_conv(
    g: _Graph, dy: str, weight: str, x: str, *, kernel: list[int], strides: list[int], pads: list[int],
    dilations: list[int], group: int, base: str,
) -> str:
    """``ConvTranspose`` that maps ``dy`` back onto exactly the spatial size of ``x``."""
    in_size, out_size = _spatial(g, x), _spatial(g, dy) if dy in g.shapes else None
    rank = len(kernel)
    if out_size is None:
        out_size = [
            (in_size[i] + pads[i] + pads[i + rank] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
            for i in range(rank)
        ]
    extra = [
        in_size[i] - (strides[i] * (out_size[i] - 1) + dilations[i] * (kernel[i] - 1) + 1 - pads[i] - pads[i + rank])
        for i in range(rank)
    ]
    if any(e < 0 or e >= max(strides[i], dilations[i]) for i, e in enumerate(extra)):
        raise ModelFormatError(f"cannot invert the geometry of '{base}' (output padding {extra})")
    return g.node("ConvTranspose", [dy, weight], base, kernel_shape=kernel, strides=strides, pads=pads,
                  dilations=dilations, group=group, output_padding=extra)


def _geometry(g: _Graph, n: onnx.NodeProto, a: dict, kernel: list[int]) -> tuple[list[int], list[int], list[int]]:
    rank = len(kernel)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelFormatError(f"'{n.name}': auto_pad is not supported by the gradient builder")
    strides = list(a.get("strides", [1] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    dilations = list(a.get("dilations", [1] * rank))
    return strides, pads, dilations


def _conv_backward(g: _Graph, n: onnx.NodeProto, a: dict, dy: str) -> str:
    weight = n.input[1]
    if weight not in g.initializers:
        raise ModelFormatError(f"Conv '{n.name}': the gradient builder needs constant weights")
    kernel = list(a.get("kernel_shape", g.initializers[weight].shape[2:]))
    strides, pads, dilations = _geometry(g, n, a, kernel)
    # Conv weights (M, C/group, kh, kw) are laid out as ConvTranspose wants them (C_in=M, C_out/group).
    g.shapes.setdefault(dy, g.shape(n.output[0]))
    return _transpose_conv(g, dy, weight, n.input[0], kernel=kernel, strides=strides, pads=pads,
                           dilations=dilations, group=int(a.get("group", 1)), base=n.name or n.output[0])


def _avgpool_backward(g: _Graph, n: onnx.NodeProto, a: dict, dy: str) -> str:
    kernel = list(a["kernel_shape"])
    strides, pads, dilations = _geometry(g, n, a, kernel)
    if any(pads) and not int(a.get("count_include_pad", 0)):
        raise ModelFormatError(f"AveragePool '{n.name}' with padding excluded from the count is not supported")
    if int(a.get("ceil_mode", 0)):
        raise ModelFormatError(f"AveragePool '{n.name}' with ceil_mode is not supported")
    channels = g.shape(n.input[0])[1]
    if channels is None:
        raise ModelFormatError(f"AveragePool '{n.name}': the channel count is unknown")
    weight = np.full((channels, 1, *kernel), 1.0 / float(np.prod(kernel)), np.float32)
    g.shapes.setdefault(dy, g.shape(n.output[0]))
    return _transpose_conv(g, dy, g.const("avg_kernel", weight), n.input[0], kernel=kernel, strides=strides,
                           pads=pads, dilations=dilations, group=int(channels), base=n.name or n.output[0])


def _maxpool_backward(g: _Graph, n: onnx.NodeProto, dy: str, indices: str) -> str:
    x = n.input[0]
    base = n.name or n.output[0]
    shape_x = g.node("Shape", [x], base)
    a = _attrs(n)
    kernel = list(a.get("kernel_shape", []))
    non_overlapping = (list(a.get("strides", [1] * len(kernel))) == kernel and not any(a.get("pads", [0]))
                       and not int(a.get("ceil_mode", 0)) and all(d == 1 for d in a.get("dilations", [1])))
    if non_overlapping:
        # Windows that do not overlap: every input is picked at most once, so placing
        # the gradient at the argmax (MaxUnpool) equals adding it there, and is faster.
        return g.node("MaxUnpool", [dy, indices, shape_x], base, kernel_shape=kernel, strides=kernel)
    flat_shape = g.const("flat", np.array([-1], np.int64))
    zeros = g.node("Reshape", [g.node("ConstantOfShape", [shape_x], base,
                                      value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])),
                               flat_shape], base)
    scattered = g.node(
        "ScatterElements",
        [zeros, g.node("Reshape", [indices, flat_shape], base), g.node("Reshape", [dy, flat_shape], base)],
        base, axis=0, reduction="add",
    )
    return g.node("Reshape", [scattered, shape_x], base)


def _pad_backward(g: _Graph, n: onnx.NodeProto, a: dict, dy: str) -> str:
    mode = a.get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise ModelFormatError(f"Pad '{n.name}' in mode {mode!r}: only constant padding is supported")
    if len(n.input) > 1 and n.input[1]:
        if n.input[1] not in g.initializers:
            raise ModelFormatError(f"Pad '{n.name}': the gradient builder needs constant pads")
        pads = g.initializers[n.input[1]].astype(np.int64)
    else:
        pads = np.asarray(a.get("pads", []), np.int64)
    if len(n.input) > 3 and n.input[3]:
        raise ModelFormatError(f"Pad '{n.name}' with axes is not supported")
    if (pads < 0).any():
        raise ModelFormatError(f"Pad '{n.name}' with negative pads is not supported")
    rank = len(pads) // 2
    base = n.name or n.output[0]
    starts = g.const("starts", pads[:rank])
    ends = g.node("Add", [g.node("Shape", [n.input[0]], base), starts], base)
    return g.node("Slice", [dy, starts, ends], base)


def with_outputs(model: onnx.ModelProto, outputs: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs inner tensors (``{output name: tensor}``), shapes inferred."""
    shapes = _infer_shapes(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for out_name, tensor in outputs.items():
        dims = shapes.get(tensor)
        if dims is None:
            raise ModelFormatError(f"the graph has no tensor '{tensor}'")
        copy.graph.node.append(helper.make_node("Identity", [tensor], [out_name], name=f"expose/{out_name}"))
        copy.graph.output.append(helper.make_tensor_value_info(
            out_name, TensorProto.FLOAT, ["batch" if d is None else d for d in dims]))
    return copy


def spatial_map_tensor(model: onnx.ModelProto, output: str = "prob") -> str | None:
    """The 4-D tensor whose spatial mean is ``output``'s logit, if the head is that simple.

    That holds for illustration2vec's tagger (``conv6_4`` -> 7x7 average pool
    -> sigmoid): walking back from ``output`` through Identity, Flatten,
    Reshape and Sigmoid must reach an average pool covering the whole map (a
    global pool, or one whose kernel equals the map size, optionally followed
    by a unit divisor).  Returns ``None`` for other heads (e.g. a linear
    layer after the pool, as in WD and EfficientNet).
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    shapes = _infer_shapes(model)
    tensor = output
    while tensor in producers:
        n = producers[tensor]
        a = _attrs(n)
        if n.op_type in ("Identity", "Flatten", "Reshape", "Sigmoid"):
            tensor = n.input[0]
            continue
        if n.op_type == "Mul" and n.input[1] in inits:
            if not np.allclose(numpy_helper.to_array(inits[n.input[1]]), 1.0):
                return None
            tensor = n.input[0]
            continue
        if n.op_type == "GlobalAveragePool":
            return n.input[0]
        if n.op_type == "AveragePool":
            shape = shapes.get(n.input[0])
            if shape is None or len(shape) != 4 or list(a.get("kernel_shape", [])) != list(shape[2:]):
                return None
            if any(a.get("pads", [0])):
                return None
            return n.input[0]
        return None
    return None
