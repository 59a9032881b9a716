"""The batch pipeline: decode + preprocess in workers while the engine runs.

``iter_batches`` turns any iterable of image sources into batches of network
outputs.  A source that cannot be decoded becomes an :class:`ItemError` in its
batch and the run goes on; indices always refer to positions in the input.

Decoding is overlapped with inference: by default one background thread
prepares the next items while ONNX Runtime computes (enough on a CPU, where the
network dominates); ``workers=N`` (N >= 2) uses N processes, for GPUs.
"""
from __future__ import annotations

import concurrent.futures as cf
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.images import load_image, source_name
from illust2vec.preprocess import InputRecipe, preprocess_one


@dataclass(frozen=True)
class ItemError:
    """An input that could not be processed."""

    index: int
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class BatchResult:
    """Outputs for the items of one batch that worked, plus the errors of those that did not.

    ``outputs[name][j]`` belongs to input ``indices[j]`` (named ``sources[j]``).
    """

    indices: list[int]
    sources: list[str]
    outputs: dict[str, np.ndarray]
    errors: list[ItemError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices)


def _prepare(source: Any, alpha: str, recipe: InputRecipe) -> tuple[np.ndarray | None, str | None]:
    """Decode and preprocess one item; errors are returned, never raised."""
    try:
        return preprocess_one(load_image(source, alpha=alpha), recipe), None
    except Illust2VecError as exc:
        msg = str(exc)
        name = source_name(source)
        if msg.startswith(name + ": "):
            msg = msg[len(name) + 2 :]
        return None, msg
    except MemoryError:
        return None, "out of memory while decoding (image too large?)"
    except Exception as exc:  # a decoder bug must not stop the whole run
        return None, f"{type(exc).__name__}: {exc}"


def _progress_bar(progress: Any, total: int | None, desc: str):
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm import tqdm

        return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    return progress  # a tqdm-like object supplied by the caller


def iter_batches(
    model,
    inputs: Iterable[Any],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    alpha: str | None = None,
    outputs: Sequence[str] | None = None,
    progress: Any = None,
    desc: str = "images",
    on_error: Callable[[ItemError], None] | None = None,
) -> Iterator[BatchResult]:
    """Run ``model`` over ``inputs`` batch by batch.

    Parameters
    ----------
    model:
        An :class:`~illust2vec.model.ImageModel`.
    inputs:
        Paths, PIL images or arrays; a list gives the progress bar a total.
    batch_size:
        Images per network call (default: the model's).
    workers:
        ``None``/``0``/``1``: one background decode thread; ``N >= 2``: N processes.
    alpha:
        ``"white"`` or ``"drop"`` (default: the model's).
    outputs:
        Graph outputs to compute (default: all of the model's).
    progress:
        ``True`` for a tqdm bar on stderr, or a tqdm-like object to update.
    on_error:
        Called with each :class:`ItemError` as soon as it happens.
    """
    batch_size = batch_size or model.batch_size
    alpha = alpha or model.alpha
    names = tuple(outputs or model.outputs)
    total = len(inputs) if hasattr(inputs, "__len__") else None
    bar = _progress_bar(progress, total, desc)
    if workers and workers >= 2:
        executor: cf.Executor = cf.ProcessPoolExecutor(max_workers=workers)
        window = batch_size * 2 + workers * 2
    else:
        executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="illust2vec-decode")
        window = batch_size * 2
    pending: deque[tuple[int, Any, cf.Future]] = deque()
    source_iter = iter(enumerate(inputs))

    def fill() -> None:
        while len(pending) < window:
            try:
                i, src = next(source_iter)
            except StopIteration:
                return
            pending.append((i, src, executor.submit(_prepare, src, alpha, model.recipe)))

    try:
        fill()
        while pending:
            arrays: list[np.ndarray] = []
            indices: list[int] = []
            sources: list[str] = []
            errors: list[ItemError] = []
            while pending and len(arrays) < batch_size:
                i, src, fut = pending.popleft()
                array, message = fut.result()
                if array is None:
                    err = ItemError(i, source_name(src), message or "unknown error")
                    errors.append(err)
                    if on_error:
                        on_error(err)
                else:
                    arrays.append(array)
                    indices.append(i)
                    sources.append(source_name(src))
                fill()
            if arrays:
                result = model.run_all(np.stack(arrays), names)
            else:
                result = {n: np.zeros((0, 0), np.float32) for n in names}
            if bar is not None:
                bar.update(len(arrays) + len(errors))
            yield BatchResult(indices, sources, result, errors)
    finally:
        for _, _, fut in pending:
            fut.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
        if bar is not None and progress is True:
            bar.close()
