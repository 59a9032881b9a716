"""The batch pipeline: decode + preprocess in workers while the engine runs.

``iter_batches`` turns any iterable of image sources into batches of network
outputs.  A source that cannot be decoded becomes an :class:`ItemError` in its
batch and the run goes on; indices always refer to positions in the input.

Decoding is overlapped with inference: by default one background thread
prepares the next items while ONNX Runtime computes (enough on a CPU, where the
network dominates); ``workers=N`` (N >= 2) uses N processes, for GPUs.  These
write preprocessed images straight into a ring of batch buffers in shared
memory, so feeding thousands of images per second costs the parent process no
pickling or copying (with a pipe fallback where ``/dev/shm`` is too small).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.images import failure_reason, load_image, source_name
from illust2vec.prep.preprocess import InputRecipe, preprocess_one, warm_up
from illust2vec.runtime.background import iterate_in_thread
from illust2vec.runtime.progress import progress_counter


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


class ModelSet:
    """Several models fed from one decode: each graph output comes from one model.

    ``ModelSet({"feature": embedder, "prob": tagger})`` looks like one model to
    :func:`iter_batches`: every image is decoded and prepared once and each model
    runs on the same prepared batch (tags and features in one pass).  The models
    must share their input recipe and transparency rule (:meth:`shares_input`).
    """

    def __init__(self, by_output: dict[str, Any]) -> None:
        if not by_output:
            raise ValueError("ModelSet needs at least one output")
        models = list(by_output.values())
        first = models[0]
        if not ModelSet.shares_input(*models):
            names = ", ".join(getattr(m, "name", "?") for m in models)
            raise Illust2VecError(f"{names}: these models prepare images differently and cannot share a batch")
        self.by_output = dict(by_output)
        self.recipe = first.recipe
        self.alpha = first.alpha
        self.batch_size = first.batch_size
        self.input_dtype = first.input_dtype if all(m.input_dtype == first.input_dtype for m in models) \
            else np.dtype(np.float32)
        self.outputs = tuple(by_output)
        self.name = "+".join(dict.fromkeys(getattr(m, "name", "model") for m in models))

    @staticmethod
    def shares_input(*models: Any) -> bool:
        """Whether the models take the same prepared input (same recipe and alpha rule)."""
        first = models[0]
        return all(m.recipe == first.recipe and m.alpha == first.alpha for m in models[1:])

    def run_all(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or self.outputs)
        result: dict[str, np.ndarray] = {}
        for model in {id(m): m for m in self.by_output.values()}.values():  # each model runs once
            wanted = [n for n in names if self.by_output[n] is model]
            if wanted:
                result.update(model.run_all(batch, wanted))
        return result


def prepare_item(source: Any, alpha: str, recipe: InputRecipe,
                 out: np.ndarray | None = None) -> tuple[np.ndarray | None, str | None]:
    """Decode and preprocess one item (into ``out`` if given): ``(array, None)`` or ``(None, message)``.

    Errors are returned, never raised; the message leaves out the source name.
    The one per-item step of every runner (threads, processes, Ray tasks).
    """
    try:
        image = load_image(source, alpha=alpha, exif_orientation=recipe.exif_orientation)
        return preprocess_one(image, recipe, out=out), None
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the whole run
        return None, failure_reason(source, exc)


def record_error(errors: list[ItemError], on_error: Callable[[ItemError], None] | None, index: int, source: Any,
                 message: str | None) -> None:
    """Add the :class:`ItemError` of one input to its batch's ``errors`` and hand it to ``on_error``."""
    err = ItemError(index, source_name(source), message or "unknown error")
    errors.append(err)
    if on_error:
        on_error(err)


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
    unit: str = "img",
    on_error: Callable[[ItemError], None] | None = None,
) -> Iterator[BatchResult]:
    """Run ``model`` over ``inputs`` batch by batch.

    Parameters
    ----------
    model:
        An :class:`~illust2vec.models.image_model.ImageModel`.
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
        ``True`` for a bar on stderr, or a callable
        ``progress(done, total, *, unit, label)`` (:mod:`illust2vec.runtime.progress`;
        returning ``True`` stops the run with :class:`~illust2vec.runtime.progress.Cancelled`).
    desc, unit:
        The label and the unit of the bar (``"faces"``, ``"face"`` for face crops).
    on_error:
        Called with each :class:`ItemError` as soon as it happens (with
        ``workers >= 2`` from the engine's thread).
    """
    batch_size = batch_size or model.batch_size
    alpha = alpha or model.alpha
    names = tuple(outputs or model.outputs)
    total = len(inputs) if hasattr(inputs, "__len__") else None
    bar, close = progress_counter(progress, label=desc, unit=unit, total=total, leave=True)
    try:
        if workers and workers >= 2:
            yield from _batches_from_processes(model, inputs, batch_size, workers, alpha, names, bar, on_error)
        else:
            yield from _batches_from_thread(model, inputs, batch_size, alpha, names, bar, on_error)
    finally:
        close()


def _batches_from_thread(model, inputs, batch_size, alpha, names, bar, on_error) -> Iterator[BatchResult]:
    """One background thread decodes the next items while the engine runs (CPU inference)."""
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
            pending.append((i, src, executor.submit(prepare_item, src, alpha, model.recipe)))

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
                    record_error(errors, on_error, i, src, message)
                else:
                    arrays.append(array)
                    indices.append(i)
                    sources.append(source_name(src))
                fill()
            if arrays:
                result = model.run_all(np.stack(arrays), names)
            else:
                result = {n: np.zeros((0, 0), np.float32) for n in names}
            bar(len(arrays) + len(errors))
            yield BatchResult(indices, sources, result, errors)
    finally:
        for _, _, fut in pending:
            fut.cancel()
        executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- #
# worker processes writing into shared batch buffers (GPU feeding)
# --------------------------------------------------------------------------- #

#: Batch buffers in the ring: one being run by the engine, the others being filled.
_SLOTS = 4
_worker_ring: np.ndarray | None = None
_worker_shm: Any = None


def _shared_buffer(nbytes: int):
    """A POSIX shared-memory block of ``nbytes``, or ``None`` where there is no room for it.

    Containers often mount a small ``/dev/shm`` (64 MB under Docker's default);
    writing past it would kill the process with SIGBUS, so its free space is
    checked first and the caller falls back to sending arrays through pipes.
    """
    from multiprocessing import shared_memory

    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize < nbytes + (64 << 20):
            return None
    except OSError:  # no /dev/shm (macOS): shared_memory still works
        pass
    try:
        return shared_memory.SharedMemory(create=True, size=max(1, nbytes))
    except OSError:
        return None


def _attach_ring(name: str | None, shape: tuple[int, ...], dtype: str) -> None:
    """Worker initializer: map the parent's batch ring (``name`` ``None``: send arrays back instead)."""
    global _worker_ring, _worker_shm
    if name is None:
        return
    from multiprocessing import shared_memory

    # Workers share the parent's resource tracker, so attaching registers nothing
    # new, and the parent's unlink() is what removes the block.
    shm = shared_memory.SharedMemory(name=name)
    _worker_shm = shm
    _worker_ring = np.ndarray(shape, dtype=dtype, buffer=shm.buf)


def _prepare_chunk(slot: int, start: int, sources: list[Any], alpha: str, recipe: InputRecipe
                   ) -> tuple[list[str | None], list[np.ndarray] | None]:
    """Decode and preprocess ``sources`` into rows ``start...`` of batch buffer ``slot``.

    Returns one error message (or ``None``) per source, and the arrays of the
    good ones when there is no shared ring to write into.
    """
    messages: list[str | None] = []
    arrays: list[np.ndarray] | None = None if _worker_ring is not None else []
    # a float32 ring row is written in place by preprocess_one; float16 rows (fp16 graph) convert on assignment
    direct = _worker_ring is not None and _worker_ring.dtype == np.float32
    for j, src in enumerate(sources):
        array, message = prepare_item(src, alpha, recipe, _worker_ring[slot, start + j] if direct else None)
        messages.append(message)
        if array is not None and not direct:
            if arrays is None:
                _worker_ring[slot, start + j] = array  # type: ignore[index]
            else:
                arrays.append(array)
    return messages, arrays


def _batches_from_processes(model, inputs, batch_size, workers, alpha, names, bar, on_error
                            ) -> Iterator[BatchResult]:
    """``workers`` processes decode whole chunks straight into a ring of shared batch buffers.

    Each batch is the next ``batch_size`` inputs; its chunks are spread over
    the workers and written in place, so the parent neither unpickles pixels
    nor stacks arrays: the engine reads the shared buffer directly.  Up to
    ``_SLOTS - 1`` batches are decoded while the engine runs the current one,
    and the engine (its own thread) runs up to two batches ahead of the
    caller.  ``on_error`` and the progress bar are called from that thread.
    """
    import itertools

    recipe = model.recipe
    dtype = np.dtype(getattr(model, "input_dtype", np.float32))  # float16 for a half-precision GPU graph
    shape = (_SLOTS, batch_size, *recipe.input_shape)
    shm = _shared_buffer(int(np.prod(shape)) * dtype.itemsize)
    ring = np.ndarray(shape, dtype=dtype, buffer=shm.buf) if shm is not None else np.empty(shape, dtype)
    chunk = max(1, min(32, -(-batch_size // workers)))
    warm_up(recipe)  # once here rather than once per forked worker
    executor = cf.ProcessPoolExecutor(max_workers=workers, initializer=_attach_ring,
                                      initargs=(shm.name if shm is not None else None, shape, dtype.str))
    source_iter = enumerate(inputs)
    inflight: deque[tuple[int, list[tuple[int, Any]], list[tuple[int, cf.Future]]]] = deque()

    def submit(slot: int) -> None:
        items = list(itertools.islice(source_iter, batch_size))
        if items:
            futures = [(s, executor.submit(_prepare_chunk, slot, s, [src for _, src in items[s : s + chunk]],
                                           alpha, recipe))
                       for s in range(0, len(items), chunk)]
            inflight.append((slot, items, futures))

    def engine() -> Iterator[BatchResult]:
        """Collect the decoded batches and run the model on them, in order."""
        while inflight:
            slot, items, futures = inflight.popleft()
            good: list[int] = []
            errors: list[ItemError] = []
            for start, fut in futures:
                messages, arrays = fut.result()
                for j, message in enumerate(messages):
                    i, src = items[start + j]
                    if message is None:
                        if arrays is not None:
                            ring[slot, start + j] = arrays.pop(0)
                        good.append(start + j)
                    else:
                        record_error(errors, on_error, i, src, message)
            if good:
                batch = ring[slot, : len(good)] if len(good) == len(items) else ring[slot, good]
                result = model.run_all(batch, names)
                del batch
            else:
                result = {n: np.zeros((0, 0), np.float32) for n in names}
            submit(slot)  # the engine is done with this buffer: refill it
            bar(len(good) + len(errors))
            yield BatchResult([items[g][0] for g in good], [source_name(items[g][1]) for g in good], result, errors)

    try:
        for slot in range(_SLOTS):  # here, so that the workers fork before the engine thread exists
            submit(slot)
        # The engine runs in its own thread so that the caller's work on one batch
        # (writing tags, JSON, captions: Python holding the GIL) overlaps the next
        # batch on the GPU (ONNX Runtime releases the GIL while it computes).
        yield from iterate_in_thread(engine(), maxsize=2, name="illust2vec-engine")
    finally:
        for _, _, futures in inflight:
            for _, fut in futures:
                fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        ring = None  # the engine thread has ended: drop the last view of the shared block before closing it
        if shm is not None:
            try:
                shm.close()
            except BufferError:  # pragma: no cover - a view escaped; the mapping goes with the process
                pass
            shm.unlink()
