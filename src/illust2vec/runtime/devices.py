"""What stands between ``--device cuda`` and a running CUDA session, said in one line.

ONNX Runtime's CUDA execution provider needs three things, and when one is
missing ONNX Runtime either lacks the provider altogether or silently runs on
the CPU after logging a long error.  :func:`cuda_problem` checks them in order
and names the first missing piece with the command that fixes it:

1. the ``onnxruntime-gpu`` package (the plain ``onnxruntime`` wheel has no CUDA;
   both install the same ``onnxruntime`` module, so the CPU one must go first);
2. the NVIDIA driver (``libcuda.so.1``);
3. the CUDA runtime libraries and cuDNN of the major versions the installed
   onnxruntime-gpu was built against (``libcudart``, ``libcublas``,
   ``libcublasLt``, ``libcufft``, ``libcurand``, ``libcudnn``), from a system
   CUDA install or from the ``nvidia-*`` pip wheels that
   ``pip install 'onnxruntime-gpu[cuda,cudnn]'`` brings (found via
   ``onnxruntime.preload_dlls``).

:func:`engine.open_session` uses this to explain a refused CUDA request; the
CPU is used instead only when the caller allows it (``--allow-cpu-fallback``).

>>> from illust2vec.runtime.devices import cuda_problem
>>> cuda_problem()  # doctest: +SKIP
"onnxruntime has no CUDA support here (providers: CPUExecutionProvider); ..."
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
from functools import lru_cache
from typing import Any

__all__ = ["cuda_library_names", "cuda_problem", "load_onnxruntime", "missing_cuda_libraries", "ort_cuda_versions"]

FIX_PACKAGE = "pip uninstall -y onnxruntime && pip install 'illust2vec[gpu]'  (onnxruntime-gpu)"
FIX_LIBRARIES = "pip install 'onnxruntime-gpu[cuda,cudnn]'  (NVIDIA's CUDA and cuDNN wheels)"


def ort_cuda_versions() -> tuple[int, int]:
    """(CUDA major, cuDNN major) the installed onnxruntime was built for; (12, 9) when it does not say."""
    cuda, cudnn = 12, 9
    try:
        from onnxruntime.capi import build_and_package_info as info

        cuda = int(str(getattr(info, "cuda_version", "12")).split(".")[0] or 12)
        cudnn = int(str(getattr(info, "cudnn_version", "9")).split(".")[0] or 9)
    except (ImportError, ValueError):
        pass
    return cuda, cudnn


def cuda_library_names(cuda: int = 12, cudnn: int = 9) -> dict[str, str]:
    """Human name -> shared library file that the CUDA provider loads, for this platform."""
    cufft = cuda - 1  # cuFFT's soname major trails CUDA's (11 for CUDA 12)
    if sys.platform == "win32":  # pragma: no cover - Windows DLL names
        return {
            "NVIDIA driver": "nvcuda.dll",
            f"CUDA {cuda} runtime": f"cudart64_{cuda}.dll",
            f"cuBLAS (CUDA {cuda})": f"cublas64_{cuda}.dll",
            f"cuBLASLt (CUDA {cuda})": f"cublasLt64_{cuda}.dll",
            f"cuFFT (CUDA {cuda})": f"cufft64_{cufft}.dll",
            f"cuDNN {cudnn}": f"cudnn64_{cudnn}.dll",
        }
    return {
        "NVIDIA driver": "libcuda.so.1",
        f"CUDA {cuda} runtime": f"libcudart.so.{cuda}",
        f"cuBLAS (CUDA {cuda})": f"libcublas.so.{cuda}",
        f"cuBLASLt (CUDA {cuda})": f"libcublasLt.so.{cuda}",
        f"cuFFT (CUDA {cuda})": f"libcufft.so.{cufft}",
        f"cuRAND (CUDA {cuda})": "libcurand.so.10",
        f"cuDNN {cudnn}": f"libcudnn.so.{cudnn}",
    }


@lru_cache(maxsize=1)
def load_onnxruntime() -> Any:
    """The ``onnxruntime`` module, with its telemetry switched off.

    Recent ONNX Runtime builds carry a telemetry client that connects to
    ``*.events.data.microsoft.com`` from native code; illust2vec opens no
    connection unless a download is asked for, so it is disabled before any
    session exists.  A missing runtime raises :class:`ModuleNotFoundError`
    (the CLI turns it into one line naming ``pip install 'illust2vec[cpu]'``).
    """
    import onnxruntime

    disable = getattr(onnxruntime, "disable_telemetry_events", None)
    if disable is not None:
        disable()
    return onnxruntime


def _preload() -> None:
    """Let onnxruntime load CUDA/cuDNN from NVIDIA's pip wheels if they are installed (quietly)."""
    try:
        ort = load_onnxruntime()
    except ImportError:  # pragma: no cover
        return
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            preload()
        except Exception:  # noqa: BLE001 - a failed preload is what we report below
            pass


def missing_cuda_libraries(names: dict[str, str] | None = None) -> list[str]:
    """``"human name (file)"`` for each CUDA library that cannot be loaded here."""
    if names is None:
        _preload()
        names = cuda_library_names(*ort_cuda_versions())
    missing = []
    for human, soname in names.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(f"{human} ({soname})")
    return missing


@lru_cache(maxsize=1)
def _cached_problem() -> str | None:
    return _find_problem()


def _find_problem() -> str | None:
    try:
        ort = load_onnxruntime()
    except ImportError:
        return "onnxruntime is not installed: " + FIX_PACKAGE
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return (
            f"onnxruntime has no CUDA support here (providers: {', '.join(providers)}); install the GPU build: "
            + FIX_PACKAGE
        )
    missing = missing_cuda_libraries()
    if any(m.startswith("NVIDIA driver") for m in missing):
        return "the NVIDIA driver (libcuda.so.1) is not installed or no GPU is visible to this process"
    if missing:
        cuda, cudnn = ort_cuda_versions()
        return (
            f"onnxruntime-gpu (built for CUDA {cuda}, cuDNN {cudnn}) cannot load: {', '.join(missing)}; "
            f"install them with: {FIX_LIBRARIES}, or add a CUDA {cuda} toolkit's lib directory to "
            f"{'PATH' if sys.platform == 'win32' else 'LD_LIBRARY_PATH'}"
        )
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU"
    return None


def cuda_problem(*, cached: bool = True) -> str | None:
    """Why CUDA cannot be used here, as one sentence with the fix; ``None`` if nothing is missing.

    ``None`` means the package, the driver and the libraries are all there; the
    session can still fail (e.g. a GPU too old for this build), which
    :func:`illust2vec.runtime.session.open_session` reports when it happens.
    """
    return _cached_problem() if cached else _find_problem()
