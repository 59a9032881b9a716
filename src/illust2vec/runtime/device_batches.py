"""Feeding a GPU with uint8 pixels: the CPU (or nvImageCodec) only decodes, the device preprocesses.

:func:`iter_batches_in_graph` is :func:`illust2vec.runtime.batches.iter_batches`
with the preprocessing moved into ONNX Runtime: each batch is decoded to
uint8 RGB arrays, split into buckets of one image size, and each bucket runs
through the recipe's preprocessing graph
(:class:`~illust2vec.prep.graph.GraphPreprocessor`) and the network,
chained with I/O binding so that the preprocessed tensor stays on the device
(on the CPU provider the same code runs with host memory).  The results equal
``iter_batches``'s bit for bit on the CPU provider (the preprocessing is exact
and the network sees the same tensor); on CUDA only the network's own
arithmetic differs, as it does for ``iter_batches``.

Decoding: ``decode="auto"`` uses :class:`~illust2vec.io.gpu_decode.BatchDecoder`
(nvImageCodec for JPEG files when the model runs on CUDA and it is installed,
with a warning naming the missing piece otherwise); with ``workers >= 2`` and
no GPU decoder, that many processes decode on the CPU into a ring of shared
memory arenas (``ARENA_IMAGE_BYTES`` per image of a batch; a picture that
does not fit comes back through the pipe, as everything does where
``/dev/shm`` has no room).  uint8 pixels are a quarter of the bytes of the
float32 batches ``iter_batches`` moves.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from illust2vec.runtime import batches as pipeline
from illust2vec.runtime.background import iterate_in_thread
from illust2vec.runtime.pool import process_pool
from illust2vec.io.gpu_decode import BatchDecoder
from illust2vec.io.images import source_name
from illust2vec.runtime.batches import BatchResult, ItemError, record_error
from illust2vec.runtime.progress import progress_counter
from illust2vec.prep.graph import GRAPH_OUTPUT, GraphPreprocessor, size_buckets

__all__ = ["InGraphRunner", "iter_batches_in_graph"]

Decoded = list[tuple[np.ndarray | None, str | None]]


class InGraphRunner:
    """A model run on same-size uint8 images: preprocessing graph, then the network, on one device.

    Parameters
    ----------
    model:
        An :class:`~illust2vec.models.image_model.ImageModel`; its session's execution
        providers and input dtype (float16 for ``precision="fp16"``) are used.
    io_binding:
        Chain the two sessions with ONNX Runtime I/O binding (default), so the
        preprocessed batch never leaves the device; ``False`` passes it
        through host memory (for comparisons).
    """

    #: Rough device memory one preprocessing run may use (its float64 working copies).
    max_bucket_bytes: int = 2 << 30

    def __init__(self, model: Any, *, io_binding: bool = True) -> None:
        session = model.session
        names = session.get_providers()
        options = session.get_provider_options()
        self.model = model
        self.device_type = "cuda" if "CUDAExecutionProvider" in names else "cpu"
        self.device_id = int(options.get("CUDAExecutionProvider", {}).get("device_id", 0) or 0)
        self.io_binding = io_binding
        # CUDA (on the network's card) or the CPU; never TensorRT and the like, which
        # would build engines for this small graph and have no float64 kernels anyway
        providers: list = ["CPUExecutionProvider"]
        if self.device_type == "cuda":
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": self.device_id}))
        self.preprocessor = GraphPreprocessor(model.recipe, providers=providers, output_dtype=model.input_dtype)
        self._input_name = session.get_inputs()[0].name

    def __repr__(self) -> str:
        return f"InGraphRunner({self.model.name!r}, device={self.device_type!r}, io_binding={self.io_binding})"

    def run(self, pixels: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs by name (float32, ``(N, -1)``) for ``(N, H, W, 3)`` uint8 images of one size."""
        names = list(outputs or self.model.outputs)
        prep, feeds = self.preprocessor.feeds(pixels)
        net = self.model.session
        if not self.io_binding:
            batch = prep.run([GRAPH_OUTPUT], feeds)[0]
            values = net.run(names, {self._input_name: batch})
        else:
            bind = prep.io_binding()
            for name, value in feeds.items():
                bind.bind_cpu_input(name, value)
            bind.bind_output(GRAPH_OUTPUT, self.device_type, self.device_id)
            prep.run_with_iobinding(bind)
            tensor = bind.get_outputs()[0]
            run = net.io_binding()
            run.bind_ortvalue_input(self._input_name, tensor)
            for name in names:
                run.bind_output(name, "cpu")
            net.run_with_iobinding(run)
            values = run.copy_outputs_to_cpu()
        return {n: np.asarray(v, dtype=np.float32).reshape(v.shape[0], -1) for n, v in zip(names, values)}

    def run_images(self, images: Sequence[np.ndarray], outputs: Sequence[str] | None = None
                   ) -> dict[str, np.ndarray]:
        """Outputs for uint8 ``(H, W, 3)`` images of any sizes, in order (one run per size)."""
        names = list(outputs or self.model.outputs)
        result: dict[str, np.ndarray] = {}
        for bucket in size_buckets(images).values():
            h, w = images[bucket[0]].shape[:2]
            # float64 working copies (Pillow recipes, padding) of many large pictures would not
            # fit in device memory: such buckets run a few pictures at a time
            step = max(1, self.max_bucket_bytes // (3 * 8 * 3 * h * w))
            for s in range(0, len(bucket), step):
                positions = bucket[s : s + step]
                part = self.run(np.stack([images[i] for i in positions]), names)
                for name, value in part.items():
                    if name not in result:
                        result[name] = np.empty((len(images), value.shape[1]), dtype=np.float32)
                    result[name][positions] = value
        return result


#: Batch arenas in the shared ring: one being run, the others being filled.
_SLOTS = 4
#: Shared-memory bytes per image of a batch (a 512x512 RGB image); the images of one
#: worker's chunk share their room, and what does not fit comes back through the pipe.
ARENA_IMAGE_BYTES = 512 * 512 * 3


def _decode_into(slot: int, start: int, sources: list[Any], alpha: str, budget: int
                 ) -> list[tuple[Any, str | None]]:
    """Worker: decode ``sources`` (batch positions ``start...``) on the CPU.

    Each decoded image is written into this chunk's room of arena ``slot`` of the
    shared ring and described as ``((offset, shape), None)``; without a ring, or
    when the room is full, the array itself is returned.
    """
    ring = pipeline._worker_rings[0] if pipeline._worker_rings else None  # mapped by pipeline._attach_rings
    pos, end = start * budget, (start + len(sources)) * budget
    out: list[tuple[Any, str | None]] = []
    for array, message in BatchDecoder("cpu", alpha=alpha).decode(sources):
        if array is not None and ring is not None and pos + array.nbytes <= end:
            ring[slot, pos : pos + array.nbytes] = array.reshape(-1)
            out.append(((pos, array.shape), None))
            pos += array.nbytes
        else:
            out.append((array, message))
    return out


def _batches_from_pool(inputs: Iterable[Any], batch_size: int, workers: int, alpha: str, budget: int
                       ) -> Iterator[tuple[list[tuple[int, Any]], Decoded]]:
    """``(items, decoded)`` per batch, decoded by ``workers`` processes into a shared ring.

    Up to ``_SLOTS - 1`` batches are decoded while the caller runs one; a slot is
    refilled when the caller asks for the next batch (it is done with the views).
    """
    slot_bytes = batch_size * budget
    specs, nbytes = pipeline.ring_layout([(_SLOTS, slot_bytes)], [np.dtype(np.uint8)])
    shm = pipeline._shared_buffer(nbytes)
    ring = pipeline.ring_views(shm.buf, specs)[0] if shm is not None else None
    pool = process_pool(workers, initializer=pipeline._attach_rings,
                        initargs=(shm.name if shm is not None else None, specs))
    chunk = max(1, min(32, -(-batch_size // workers)))
    source_iter = enumerate(inputs)
    inflight: deque[tuple[int, list[tuple[int, Any]], list[tuple[int, cf.Future]]]] = deque()

    def submit(slot: int) -> None:
        items = list(itertools.islice(source_iter, batch_size))
        if items:
            srcs = [src for _, src in items]
            inflight.append((slot, items, [(s, pool.submit(_decode_into, slot, s, srcs[s : s + chunk], alpha, budget))
                                           for s in range(0, len(srcs), chunk)]))

    try:
        for slot in range(_SLOTS):
            submit(slot)
        while inflight:
            slot, items, futures = inflight.popleft()
            decoded: Decoded = []
            for _, fut in futures:
                for entry, message in fut.result():
                    if isinstance(entry, tuple):
                        (pos, shape), size = entry, int(np.prod(entry[1]))
                        entry = ring[slot, pos : pos + size].reshape(shape)  # type: ignore[index]
                    decoded.append((entry, message))
            yield items, decoded
            decoded = []
            submit(slot)
    finally:
        for _, _, futures in inflight:
            for _, fut in futures:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        ring = None
        if shm is not None:
            try:
                shm.close()
            except BufferError:  # pragma: no cover - a view escaped; the mapping goes with the process
                pass
            shm.unlink()


def _batches_from_decoder(inputs: Iterable[Any], batch_size: int, decoder: BatchDecoder
                          ) -> Iterator[tuple[list[tuple[int, Any]], Decoded]]:
    """``(items, decoded)`` per batch, decoded by ``decoder`` in this process."""
    source_iter = enumerate(inputs)
    while items := list(itertools.islice(source_iter, batch_size)):
        yield items, decoder.decode([src for _, src in items])


def iter_batches_in_graph(
    model: Any,
    inputs: Iterable[Any],
    *,
    batch_size: int | None = None,
    workers: int | None = None,
    decode: str = "auto",
    alpha: str | None = None,
    outputs: Sequence[str] | None = None,
    progress: Any = None,
    desc: str = "images",
    unit: str = "img",
    on_error: Callable[[ItemError], None] | None = None,
    runner: InGraphRunner | None = None,
) -> Iterator[BatchResult]:
    """Run ``model`` over ``inputs`` with preprocessing on the model's device.

    Parameters are those of :func:`illust2vec.runtime.batches.iter_batches`, plus:

    decode:
        ``"auto"``, ``"cpu"`` or ``"nvimgcodec"`` (see
        :class:`~illust2vec.io.gpu_decode.BatchDecoder`); ``"auto"`` uses the
        GPU decoder only when the model runs on CUDA.
    runner:
        An :class:`InGraphRunner` to reuse (it keeps the preprocessing sessions).

    With the GPU decoder, decoding happens in one background thread of this
    process (nvImageCodec works on whole batches); without it, ``workers >= 2``
    processes decode while the device runs.
    """
    batch_size = batch_size or model.batch_size
    alpha = alpha or model.alpha
    names = tuple(outputs or model.outputs)
    runner = runner or InGraphRunner(model)
    device = "cpu" if runner.device_type == "cpu" else f"cuda:{runner.device_id}"
    decoder = BatchDecoder(decode, device=device, alpha=alpha)  # type: ignore[arg-type]
    total = len(inputs) if hasattr(inputs, "__len__") else None
    bar, close = progress_counter(progress, label=desc, unit=unit, total=total, leave=True)
    if decoder.backend == "cpu" and workers and workers >= 2:
        batches = _batches_from_pool(inputs, batch_size, workers, alpha, ARENA_IMAGE_BYTES)
    else:
        batches = iterate_in_thread(_batches_from_decoder(inputs, batch_size, decoder), maxsize=2,
                                    name="illust2vec-decode")
    try:
        for items, decoded in batches:
            good: list[int] = []
            errors: list[ItemError] = []
            for j, ((i, src), (array, message)) in enumerate(zip(items, decoded)):
                if array is None:
                    record_error(errors, on_error, i, src, message)
                else:
                    good.append(j)
            if good:
                result = runner.run_images([decoded[j][0] for j in good], names)  # type: ignore[misc]
            else:
                result = {n: np.zeros((0, 0), np.float32) for n in names}
            bar(len(items))
            yield BatchResult([items[j][0] for j in good], [source_name(items[j][1]) for j in good], result, errors)
    finally:
        batches.close()
        close()
