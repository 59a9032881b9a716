"""The inference engine: ONNX Runtime sessions and execution-provider selection."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from illust2vec.errors import Illust2VecError
from illust2vec.runtime.devices import load_onnxruntime

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")


def select_providers(device: str = "cpu", *, allow_fallback: bool = False) -> list:
    """Execution providers for ``device``; ``ILLUST2VEC_DEVICE`` overrides the default ``cpu``.

    Asking for ``cuda`` without onnxruntime-gpu raises an error that says what to
    install, unless ``allow_fallback`` lets it run on the CPU with a warning.
    """
    ort = load_onnxruntime()

    device = (device or os.environ.get("ILLUST2VEC_DEVICE") or "cpu").lower()
    if device.startswith("cuda"):
        device_id = int(device.split(":", 1)[1]) if ":" in device else 0
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        message = (
            "CUDA was requested but this onnxruntime has no CUDA support "
            f"(providers: {', '.join(ort.get_available_providers())}); "
            "install it with: pip uninstall -y onnxruntime && pip install 'illust2vec[gpu]'"
        )
        if not allow_fallback:
            raise Illust2VecError(message + " (or pass --device cpu)")
        warnings.warn(message + "; running on the CPU", RuntimeWarning, stacklevel=2)
        return ["CPUExecutionProvider"]
    if device != "cpu":
        raise Illust2VecError(f"unknown device {device!r}; choose one of: cpu, cuda, cuda:N")
    return ["CPUExecutionProvider"]


def open_session(
    model: str | os.PathLike | bytes,
    *,
    device: str = "cpu",
    threads: int | None = None,
    allow_fallback: bool = False,
    optimized_cache: str | os.PathLike | None = None,
    precision: str = "fp32",
):
    """Open an ONNX Runtime session on ``model`` (a path or serialized bytes).

    ``precision="fp16"`` (CUDA only) runs a half-precision copy of the graph
    made by :func:`to_float16`: float16 input (half the bytes to copy to the
    GPU), float32 outputs.  Where CUDA is not usable and ``allow_fallback``
    lets the CPU take over, the CPU runs the float32 graph (it has no fast
    float16 kernels).

    On CUDA the CPU side of the session gets one thread that does not spin
    (unless ``threads`` says otherwise): the GPU does the work, and the cores
    are left to the processes that decode images.

    ``threads`` sets intra-op threads (default: ONNX Runtime's choice, one per
    physical core).  If CUDA was asked for but the session could not use it
    (missing CUDA/cuDNN libraries), an error names the problem.

    ``optimized_cache`` (a directory; CPU only) keeps ONNX Runtime's fully
    optimised graph for this machine and ONNX Runtime version, so later loads
    skip graph optimisation (for the i2v tag network: ~1.0 s -> ~0.3 s).
    """
    ort = load_onnxruntime()

    if precision not in PRECISIONS:
        raise Illust2VecError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    providers = select_providers(device, allow_fallback=allow_fallback)
    source = os.fspath(model) if isinstance(model, (str, Path, os.PathLike)) else model
    on_gpu = providers[0] != "CPUExecutionProvider"
    if precision == "fp16":
        if on_gpu:
            source, optimized_cache = to_float16(source, half_input=True), None
        elif not device.startswith("cuda"):
            raise Illust2VecError("fp16 runs on a GPU only: add --device cuda (the CPU computes in fp32)")
    level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cached = save_to = None
    if optimized_cache is not None and isinstance(source, str) and providers == ["CPUExecutionProvider"]:
        cached = Path(optimized_cache) / f"{Path(source).stem}.{_machine_key()}.ort.onnx"
        if cached.is_file():
            source, level = str(cached), ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        else:
            save_to = cached.with_name(f".{cached.name}.{os.getpid()}.part")

    def make(src: str | bytes, lvl, save: Path | None):
        options = ort.SessionOptions()
        options.graph_optimization_level = lvl
        if threads:
            options.intra_op_num_threads = int(threads)
        elif on_gpu:
            options.intra_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            options.optimized_model_filepath = str(save)
        return ort.InferenceSession(src, sess_options=options, providers=providers)

    try:
        try:
            session = make(source, level, save_to)
        except Exception:
            if cached is None or source != str(cached):
                raise
            cached.unlink(missing_ok=True)  # a damaged cache entry: rebuild from the original
            source, save_to = os.fspath(model), None
            session = make(source, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, None)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        name = source if isinstance(source, str) else "model bytes"
        raise Illust2VecError(f"{name}: ONNX Runtime could not load the model ({exc})") from None
    if save_to is not None and cached is not None:
        try:
            if save_to.is_file() and save_to.stat().st_size > 0:
                os.replace(save_to, cached)
        except OSError:
            pass  # a read-only store still works, just without the cache
        finally:
            save_to.unlink(missing_ok=True)
    if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        from illust2vec.runtime.devices import cuda_problem

        message = cuda_problem() or (
            "onnxruntime-gpu is installed but CUDA could not be initialised (CUDA 12 runtime, cuDNN 9 "
            "or the driver is missing or mismatched; see ONNX Runtime's CUDA requirements)"
        )
        if not allow_fallback:
            raise Illust2VecError(message + "; pass --device cpu to run on the CPU")
        warnings.warn(message + "; running on the CPU", RuntimeWarning, stacklevel=2)
    return session


def to_float16(model: str | os.PathLike | bytes, *, half_input: bool = False) -> bytes:
    """A copy of the graph with float16 weights and arithmetic; float32 outputs.

    The inputs stay float32 unless ``half_input``.  Uses ONNX Runtime's own
    converter (``onnxruntime.transformers.float16``), which inserts casts at
    the graph's float32 inputs and outputs and keeps operators without float16
    kernels in float32.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(os.fspath(model))
    keep = [o.name for o in graph.graph.output] if half_input else True
    half = convert_float_to_float16(graph, keep_io_types=keep)
    _sort_nodes(half.graph)  # the converter appends its input casts last
    return half.SerializeToString()


def _sort_nodes(graph) -> None:
    """Put ``graph``'s nodes in topological order (Kahn's algorithm, stable), as ONNX requires."""
    from collections import defaultdict, deque

    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    users: dict[int, list[int]] = defaultdict(list)
    waiting = [0] * len(nodes)
    for i, n in enumerate(nodes):
        for name in {x for x in n.input if x in producer}:
            users[producer[name]].append(i)
            waiting[i] += 1
    ready = deque(i for i, w in enumerate(waiting) if w == 0)
    order = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) == len(nodes):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


@functools.lru_cache(maxsize=1)
def _machine_key() -> str:
    """ONNX Runtime version + CPU identity: optimised graphs are only valid where they were made."""
    import hashlib
    import platform

    ort = load_onnxruntime()

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            info = fh.read()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        cpu += "|" + "|".join(sorted(set(lines)))
    except OSError:
        cpu += "|" + platform.processor()
    digest = hashlib.sha256(cpu.encode()).hexdigest()[:12]
    return f"ort{ort.__version__}-{digest}"
