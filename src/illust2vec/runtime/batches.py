"""The batch pipeline: decode + preprocess in workers while the engine runs.

``iter_batches`` turns any iterable of image sources into batches of network
outputs.  A source that cannot be decoded becomes an :class:`ItemError` in its
batch and the run goes on; indices always refer to positions in the input.

Decoding is overlapped with inference: by default one background thread
prepares the next items while ONNX Runtime computes (enough on a CPU, where the
network dominates); ``workers=N`` (N >= 2) uses N processes of the decode pool
(:mod:`illust2vec.runtime.pool`), for GPUs.  These write preprocessed images
straight into a ring of batch buffers in shared memory, so feeding thousands of
images per second costs the parent process no pickling or copying (with a pipe
fallback where ``/dev/shm`` is too small).

Every picture is decoded once: a :class:`ModelSet` of models with different
input recipes gets one prepared input per distinct ``(recipe, alpha)``, all
from the same decode.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illust2vec.io.images import failure_reason, load_image, source_name
from illust2vec.prep.preprocess import InputRecipe, preprocess_one, warm_up
from illust2vec.runtime.background import iterate_in_thread
from illust2vec.runtime.pool import decode_threads, process_pool
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


#: What one model takes: its input recipe and its transparency rule.
InputKey = tuple[InputRecipe, str]


class ModelSet:
    """Several models fed from one decode: each graph output comes from one model.

    ``ModelSet({"feature": embedder, "prob": tagger})`` looks like one model to
    :func:`iter_batches`: every image is decoded once, prepared once per
    distinct input (``inputs``: the ``(recipe, alpha)`` pairs, in order) and
    each model runs on its own prepared batch (tags and features in one pass).
    """

    def __init__(self, by_output: dict[str, Any]) -> None:
        if not by_output:
            raise ValueError("ModelSet needs at least one output")
        self.by_output = dict(by_output)
        models = list({id(m): m for m in self.by_output.values()}.values())
        first = models[0]
        keys: list[InputKey] = []
        for m in models:
            if (m.recipe, m.alpha) not in keys:
                keys.append((m.recipe, m.alpha))
        self.inputs: tuple[InputKey, ...] = tuple(keys)
        self._slot = {id(m): keys.index((m.recipe, m.alpha)) for m in models}
        self.input_dtypes = tuple(
            dtypes.pop() if len(dtypes := {np.dtype(getattr(m, "input_dtype", np.float32)) for m in models
                                           if (m.recipe, m.alpha) == key}) == 1 else np.dtype(np.float32)
            for key in keys)
        self.recipe, self.alpha = keys[0]
        self.input_dtype = self.input_dtypes[0]
        self.batch_size = first.batch_size
        self.outputs = tuple(by_output)
        self.name = "+".join(dict.fromkeys(getattr(m, "name", "model") for m in models))

    @staticmethod
    def shares_input(*models: Any) -> bool:
        """Whether the models take the same prepared input (same recipe and alpha rule)."""
        first = models[0]
        return all(m.recipe == first.recipe and m.alpha == first.alpha for m in models[1:])

    def run_prepared(self, batches: Sequence[np.ndarray], outputs: Sequence[str] | None = None
                     ) -> dict[str, np.ndarray]:
        """Outputs by name; ``batches[k]`` is the batch prepared for ``inputs[k]``."""
        names = list(outputs or self.outputs)
        result: dict[str, np.ndarray] = {}
        for model in {id(m): m for m in self.by_output.values()}.values():  # each model runs once
            wanted = [n for n in names if self.by_output[n] is model]
            if wanted:
                result.update(model.run_all(batches[self._slot[id(model)]], wanted))
        return result

    def run_all(self, batch: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name for one prepared batch (the models must share their input)."""
        if len(self.inputs) != 1:
            raise ValueError("these models prepare images differently: give one batch per input (run_prepared)")
        return self.run_prepared([batch], outputs)


def _inputs_of(model: Any, alpha: str | None) -> tuple[InputKey, ...]:
    """The distinct inputs ``model`` takes (``alpha``, when given, overrides the models' own)."""
    if isinstance(model, ModelSet):
        keys = model.inputs
        return tuple(dict.fromkeys((r, alpha) for r, _ in keys)) if alpha else keys
    return ((model.recipe, alpha or model.alpha),)


def _run_model(model: Any, batches: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(model, ModelSet):
        if len(batches) == 1 and len(model.inputs) > 1:  # alpha override merged the inputs
            batches = [batches[0]] * len(model.inputs)
        return model.run_prepared(batches, names)
    return model.run_all(batches[0], names)


def prepare_inputs(source: Any, inputs: Sequence[InputKey], outs: Sequence[np.ndarray | None] | None = None
                   ) -> tuple[list[np.ndarray] | None, str | None]:
    """Decode one item once and prepare it for each of ``inputs`` (into ``outs[k]`` where given).

    Returns ``(arrays, None)`` or ``(None, message)``; errors are returned, never
    raised, and the message leaves out the source name.  The one per-item step of
    every runner (threads, processes, Ray tasks).
    """
    try:
        decoded: dict[tuple[str, str], np.ndarray] = {}
        arrays = []
        for k, (recipe, alpha) in enumerate(inputs):
            key = (alpha, recipe.exif_orientation)
            if key not in decoded:
                decoded[key] = load_image(source, alpha=alpha, exif_orientation=recipe.exif_orientation)
            arrays.append(preprocess_one(decoded[key], recipe, out=None if outs is None else outs[k]))
        return arrays, None
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the whole run
        return None, failure_reason(source, exc)


def prepare_item(source: Any, alpha: str, recipe: InputRecipe,
                 out: np.ndarray | None = None) -> tuple[np.ndarray | None, str | None]:
    """:func:`prepare_inputs` for one input: ``(array, None)`` or ``(None, message)``."""
    arrays, message = prepare_inputs(source, ((recipe, alpha),), (out,))
    return (None, message) if arrays is None else (arrays[0], None)


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
        ``"white"`` or ``"drop"`` (default: the model's; for a :class:`ModelSet`, each model's).
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
    keys = _inputs_of(model, alpha)
    names = tuple(outputs or model.outputs)
    total = len(inputs) if hasattr(inputs, "__len__") else None
    bar, close = progress_counter(progress, label=desc, unit=unit, total=total, leave=True)
    try:
        if workers and workers >= 2:
            yield from _batches_from_processes(model, inputs, batch_size, workers, keys, names, bar, on_error)
        else:
            yield from _batches_from_thread(model, inputs, batch_size, keys, names, bar, on_error)
    finally:
        close()


def _batches_from_thread(model, inputs, batch_size, keys, names, bar, on_error) -> Iterator[BatchResult]:
    """One background thread decodes the next items while the engine runs (CPU inference)."""
    executor = decode_threads(1)
    window = batch_size * 2
    pending: deque[tuple[int, Any, cf.Future]] = deque()
    source_iter = iter(enumerate(inputs))

    def fill() -> None:
        while len(pending) < window:
            try:
                i, src = next(source_iter)
            except StopIteration:
                return
            pending.append((i, src, executor.submit(prepare_inputs, src, keys)))

    try:
        fill()
        while pending:
            arrays: list[list[np.ndarray]] = []
            indices: list[int] = []
            sources: list[str] = []
            errors: list[ItemError] = []
            while pending and len(arrays) < batch_size:
                i, src, fut = pending.popleft()
                prepared, message = fut.result()
                if prepared is None:
                    record_error(errors, on_error, i, src, message)
                else:
                    arrays.append(prepared)
                    indices.append(i)
                    sources.append(source_name(src))
                fill()
            if arrays:
                result = _run_model(model, [np.stack(column) for column in zip(*arrays)], names)
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
#: The rings this worker process writes into (one per distinct input), mapped by :func:`_attach_rings`.
_worker_rings: list[np.ndarray] | None = None
_worker_shm: Any = None

#: How one ring lies in a shared block: ``(offset, shape, dtype string)``.
RingSpec = tuple[int, tuple[int, ...], str]


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


def ring_layout(shapes: Sequence[tuple[int, ...]], dtypes: Sequence[np.dtype]) -> tuple[list[RingSpec], int]:
    """Where each ring lies in one shared block (64-byte aligned), and the block's size."""
    specs: list[RingSpec] = []
    offset = 0
    for shape, dtype in zip(shapes, dtypes):
        specs.append((offset, tuple(shape), np.dtype(dtype).str))
        offset += -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 64) * 64
    return specs, offset


def ring_views(buffer: Any, specs: Sequence[RingSpec]) -> list[np.ndarray]:
    return [np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset) for offset, shape, dtype in specs]


def _attach_rings(name: str | None, specs: Sequence[RingSpec], recipes: Sequence[InputRecipe] = ()) -> None:
    """Worker initializer: map the parent's batch rings (``name`` ``None``: send arrays back instead)."""
    global _worker_rings, _worker_shm
    for recipe in recipes:
        warm_up(recipe)  # once per worker, before its first picture
    if name is None:
        return
    from multiprocessing import shared_memory

    # Workers share the parent's resource tracker (forkserver and spawn pass it on),
    # and the parent's unlink() is what removes the block.
    shm = shared_memory.SharedMemory(name=name)
    _worker_shm = shm
    _worker_rings = ring_views(shm.buf, specs)


def _prepare_chunk(slot: int, start: int, sources: list[Any], keys: Sequence[InputKey]
                   ) -> tuple[list[str | None], list[list[np.ndarray]] | None]:
    """Decode and preprocess ``sources`` into rows ``start...`` of batch buffer ``slot`` of each ring.

    Returns one error message (or ``None``) per source, and the arrays of the
    good ones when there are no shared rings to write into.
    """
    rings = _worker_rings
    messages: list[str | None] = []
    arrays: list[list[np.ndarray]] | None = None if rings is not None else []
    for j, src in enumerate(sources):
        # a float32 ring row is written in place by preprocess_one; float16 rows (fp16 graph) convert on assignment
        outs = None if rings is None else [r[slot, start + j] if r.dtype == np.float32 else None for r in rings]
        prepared, message = prepare_inputs(src, keys, outs)
        messages.append(message)
        if prepared is None:
            continue
        if arrays is not None:
            arrays.append(prepared)
        else:
            for ring, out, array in zip(rings, outs, prepared):  # type: ignore[arg-type]
                if out is None:
                    ring[slot, start + j] = array
    return messages, arrays


def _batches_from_processes(model, inputs, batch_size, workers, keys, names, bar, on_error
                            ) -> Iterator[BatchResult]:
    """``workers`` processes decode whole chunks straight into rings of shared batch buffers.

    Each batch is the next ``batch_size`` inputs; its chunks are spread over
    the workers and written in place (one ring per distinct input), so the
    parent neither unpickles pixels nor stacks arrays: the engine reads the
    shared buffers directly.  Up to ``_SLOTS - 1`` batches are decoded while the
    engine runs the current one, and the engine (its own thread) runs up to two
    batches ahead of the caller.  ``on_error`` and the progress bar are called
    from that thread.
    """
    import itertools

    dtypes = (getattr(model, "input_dtypes", None) if len(keys) > 1
              else (np.dtype(getattr(model, "input_dtype", np.float32)),))  # float16 for a half-precision graph
    specs, nbytes = ring_layout([(_SLOTS, batch_size, *r.input_shape) for r, _ in keys], dtypes)
    shm = _shared_buffer(nbytes)
    rings = (ring_views(shm.buf, specs) if shm is not None
             else [np.empty(shape, dtype) for _, shape, dtype in specs])
    chunk = max(1, min(32, -(-batch_size // workers)))
    executor = process_pool(workers, initializer=_attach_rings,
                            initargs=(shm.name if shm is not None else None, specs,
                                      tuple(dict.fromkeys(r for r, _ in keys))))
    source_iter = enumerate(inputs)
    inflight: deque[tuple[int, list[tuple[int, Any]], list[tuple[int, cf.Future]]]] = deque()

    def submit(slot: int) -> None:
        items = list(itertools.islice(source_iter, batch_size))
        if items:
            futures = [(s, executor.submit(_prepare_chunk, slot, s, [src for _, src in items[s : s + chunk]], keys))
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
                            for ring, array in zip(rings, arrays.pop(0)):
                                ring[slot, start + j] = array
                        good.append(start + j)
                    else:
                        record_error(errors, on_error, i, src, message)
            if good:
                whole = len(good) == len(items)
                batches = [ring[slot, : len(good)] if whole else ring[slot, good] for ring in rings]
                result = _run_model(model, batches, names)
                del batches
            else:
                result = {n: np.zeros((0, 0), np.float32) for n in names}
            submit(slot)  # the engine is done with this buffer: refill it
            bar(len(good) + len(errors))
            yield BatchResult([items[g][0] for g in good], [source_name(items[g][1]) for g in good], result, errors)

    try:
        for slot in range(_SLOTS):
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
        rings = []  # the engine thread has ended: drop the last views of the shared block before closing it
        if shm is not None:
            try:
                shm.close()
            except BufferError:  # pragma: no cover - a view escaped; the mapping goes with the process
                pass
            shm.unlink()
