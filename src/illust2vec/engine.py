"""The inference engine: ONNX Runtime sessions and execution-provider selection."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from illust2vec.errors import Illust2VecError

DEVICES = ("cpu", "cuda")


def available_devices() -> list[str]:
    """Devices ONNX Runtime can use here (``cuda`` needs onnxruntime-gpu)."""
    import onnxruntime as ort

    devices = ["cpu"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        devices.append("cuda")
    return devices


def select_providers(device: str = "cpu", *, allow_fallback: bool = False) -> list:
    """Execution providers for ``device``; ``ILLUST2VEC_DEVICE`` overrides the default ``cpu``.

    Asking for ``cuda`` without onnxruntime-gpu raises an error that says what to
    install, unless ``allow_fallback`` lets it run on the CPU with a warning.
    """
    import onnxruntime as ort

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
):
    """Open an ONNX Runtime session on ``model`` (a path or serialized bytes).

    ``threads`` sets intra-op threads (default: ONNX Runtime's choice, one per
    physical core).  If CUDA was asked for but the session could not use it
    (missing CUDA/cuDNN libraries), an error names the problem.
    """
    import onnxruntime as ort

    providers = select_providers(device, allow_fallback=allow_fallback)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    source = os.fspath(model) if isinstance(model, (str, Path, os.PathLike)) else model
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        name = source if isinstance(source, str) else "model bytes"
        raise Illust2VecError(f"{name}: ONNX Runtime could not load the model ({exc})") from None
    if device.startswith("cuda") and "CUDAExecutionProvider" not in session.get_providers():
        from illust2vec.providers import cuda_problem

        message = cuda_problem() or (
            "onnxruntime-gpu is installed but CUDA could not be initialised (CUDA 12 runtime, cuDNN 9 "
            "or the driver is missing or mismatched; see ONNX Runtime's CUDA requirements)"
        )
        if not allow_fallback:
            raise Illust2VecError(message + "; pass --device cpu to run on the CPU")
        warnings.warn(message + "; running on the CPU", RuntimeWarning, stacklevel=2)
    return session
