"""Giving a tagger graph the output names illust2vec reads (``prob``, ``feature``).

Exports name their outputs as their authors chose (``predictions_sigmoid``, ``prediction``,
``embedding``, ``output``); :class:`~illust2vec.models.image_model.ImageModel` reads ``prob``
and ``feature``.  :func:`expose_outputs` adds an ``Identity`` per wanted name and makes those
the graph's only outputs (the others are no longer computed unless something needs them).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["expose_outputs", "output_names"]


def output_names(model: Any) -> list[str]:
    """The graph outputs of an ``onnx.ModelProto``, in order."""
    return [o.name for o in model.graph.output]


def expose_outputs(model: Any, sources: Mapping[str, str], widths: Mapping[str, int | None] | None = None,
                   *, elem_type: int | None = None) -> Any:
    """Make ``{new name: source tensor}`` the graph outputs, each ``(N, width)``; changes ``model`` in place.

    A source that already has the new name is kept as it is.  The sources are recorded in
    the model's metadata (``illust2vec.<name>_source``), so a cached graph says where its
    outputs came from.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    old = {o.name: o for o in graph.output}
    widths = dict(widths or {})
    outputs = []
    for name, source in sources.items():
        vi = old.get(source)
        elem = elem_type or (vi.type.tensor_type.elem_type if vi is not None else 0) or TensorProto.FLOAT
        if width := widths.get(name):
            dims: list[Any] = ["N", width]
        elif vi is not None and len(vi.type.tensor_type.shape.dim) == 2:
            last = vi.type.tensor_type.shape.dim[1]
            dims = ["N", last.dim_value if last.HasField("dim_value") else None]
        else:
            dims = ["N", None]
        if source != name:
            graph.node.append(helper.make_node("Identity", [source], [name], name=f"illust2vec_{name}"))
        outputs.append(helper.make_tensor_value_info(name, elem, dims))
    del graph.output[:]
    graph.output.extend(outputs)
    helper.set_model_props(
        model,
        {**{p.key: p.value for p in model.metadata_props},
         **{f"illust2vec.{name}_source": source for name, source in sources.items()}},
    )
    return model
