"""What the tiny tagger fixtures share: a strided-convolution stem, a checked opset-17 model, a tag CSV.

Every tiny tagger (``kohya_support``, ``deepdanbooru_support``, ``pixai_support``,
``camie_support``) is a 16x16 stride-16 convolution, ReLU, an average pool and a flatten
(:func:`conv_stem`) under its own head; the graphs are byte-for-byte what the recorded oracles
were made from.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path


def conv_stem(input_name: str, pool: int, *, nhwc: bool = False, pooled: str = "p") -> list:
    """Nodes ``input -> [Transpose] -> Conv(conv.w, conv.b) -> Relu -> AveragePool(pool) -> Flatten -> "f"``."""
    from onnx import helper

    nodes = [helper.make_node("Transpose", [input_name], ["x"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes += [
        helper.make_node("Conv", ["x" if nhwc else input_name, "conv.w", "conv.b"], ["c"],
                         kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], [pooled], kernel_shape=[pool, pool], strides=[pool, pool]),
        helper.make_node("Flatten", [pooled], ["f"], axis=1),
    ]
    return nodes


def checked_model(graph):
    """``graph`` as an opset-17, IR-8 model that passes the ONNX checker."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    """A UTF-8 CSV file with ``header`` and ``rows``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path
