"""The runner: the models over one decode of each picture, batch by batch, in input order.

One :class:`~illust2vec.runtime.batches.ModelSet` (or one model) runs over the
inputs; every picture is decoded once in the decode pool and prepared once per
distinct input recipe.  ``in_graph=True`` moves the preprocessing into ONNX
Runtime on the model's device (:mod:`illust2vec.runtime.device_batches`: uint8
pixels go to the device, the preprocessing graph runs there, exact bit for bit
on the CPU provider), the option for ``--device cuda``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from illust2vec.errors import Illust2VecError
from illust2vec.runtime.batches import BatchResult, ItemError, ModelSet, iter_batches


@dataclass(frozen=True)
class RunOptions:
    """How the runner feeds the models: images per call, decode workers, where preprocessing runs."""

    batch_size: int | None = None  #: images per network call (default: the model's)
    workers: int | None = None  #: ``None``/0/1: one decode thread; N >= 2: N decode processes
    in_graph: bool = False  #: preprocess inside ONNX Runtime on the model's device (one model only)


def run_models(model: Any, inputs: Iterable[Any], *, outputs: Sequence[str], options: RunOptions = RunOptions(),
               progress: Any = None, on_error: Callable[[ItemError], None] | None = None) -> Iterator[BatchResult]:
    """``model``'s ``outputs`` for every input, batch by batch (indices are input positions)."""
    if options.in_graph:
        if isinstance(model, ModelSet):
            raise Illust2VecError(f"{model.name}: preprocessing in the graph runs one model at a time")
        from illust2vec.runtime.device_batches import iter_batches_in_graph

        return iter_batches_in_graph(model, inputs, batch_size=options.batch_size, workers=options.workers,
                                     outputs=outputs, progress=progress, on_error=on_error)
    return iter_batches(model, inputs, batch_size=options.batch_size, workers=options.workers, outputs=outputs,
                        progress=progress, on_error=on_error)
