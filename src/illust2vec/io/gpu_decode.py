"""Decoding batches of images, JPEGs on the GPU with NVIDIA nvImageCodec when it is there.

:class:`BatchDecoder` turns a list of sources into uint8 ``(H, W, 3)`` RGB
arrays (what :func:`illust2vec.io.images.load_image` returns) plus one error
message per source that could not be decoded.  With ``backend="nvimgcodec"``
(or ``"auto"`` on a CUDA device) JPEG files are decoded as one batch by
nvImageCodec (nvJPEG: hardware JPEG decoder or CUDA kernels) and copied back as
uint8; everything else -- other formats, arrays, PIL images, JPEGs that the GPU
decoder refuses (CMYK, damaged files) -- goes through ``load_image``, so each
bad file still gets its own error line and transparency/EXIF rules stay the
CPU's.

Where nvImageCodec is not installed or no GPU is usable, ``backend="auto"``
decodes on the CPU and says why once (a ``RuntimeWarning``, and
:attr:`BatchDecoder.fallback_reason`); asking for ``"nvimgcodec"`` explicitly
raises an :class:`~illust2vec.errors.Illust2VecError` naming the package to
install.

Exactness: nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's, so
GPU-decoded pixels can differ from Pillow's by a few levels; the benchmark
(``benchmarks/bench_gpu.py --gpu-decode``) reports the largest resulting
difference of the tag probabilities.  Not measured yet: no GPU was available
when this was written.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.images import failure_reason, load_image

__all__ = ["BACKENDS", "BatchDecoder", "nvimgcodec_problem"]

Backend = Literal["auto", "cpu", "nvimgcodec"]
#: Every value :class:`BatchDecoder` accepts for ``backend``.
BACKENDS: tuple[str, ...] = ("auto", "cpu", "nvimgcodec")

FIX_NVIMGCODEC = ("pip install 'illust2vec[gpu]'  (nvidia-nvimgcodec-cu13; for CUDA 12: "
                  "pip install 'nvidia-nvimgcodec-cu12[nvjpeg]')")
_JPEG_MAGIC = b"\xff\xd8\xff"


def _import_nvimgcodec() -> Any:
    """The ``nvidia.nvimgcodec`` module (a separate function so tests can see the real import fail)."""
    from nvidia import nvimgcodec  # type: ignore[import-not-found]

    return nvimgcodec


def nvimgcodec_problem(device_id: int = 0) -> tuple[str | None, Any]:
    """``(None, decoder)`` if nvImageCodec can decode on GPU ``device_id`` here, else ``(reason, None)``."""
    try:
        nvimgcodec = _import_nvimgcodec()
    except ImportError:
        return f"nvImageCodec is not installed; install it with: {FIX_NVIMGCODEC}", None
    except Exception as exc:  # noqa: BLE001 - a broken install (missing CUDA libraries) says so here
        return f"nvImageCodec cannot be loaded ({type(exc).__name__}: {exc})", None
    try:
        # libjpeg-turbo (Pillow) upsamples chroma with its "fancy" filter; ask nvJPEG for the same
        decoder = nvimgcodec.Decoder(device_id=device_id, options=":fancy_upsampling=1")
    except Exception as exc:  # noqa: BLE001 - no GPU, no driver
        return f"nvImageCodec cannot open a GPU decoder ({type(exc).__name__}: {exc})", None
    return None, decoder


class BatchDecoder:
    """Decode batches of sources to uint8 RGB arrays, JPEG files on the GPU where possible.

    Parameters
    ----------
    backend:
        ``"auto"`` (default): nvImageCodec when ``device`` is CUDA and it
        works here, else the CPU, with a warning saying why; ``"cpu"``:
        always :func:`~illust2vec.io.images.load_image`; ``"nvimgcodec"``: the
        GPU decoder or an error.
    device:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    alpha:
        Transparency rule for what the CPU decodes (JPEGs have no alpha).

    Attributes
    ----------
    backend:
        The backend in use: ``"cpu"`` or ``"nvimgcodec"``.
    fallback_reason:
        Why the GPU decoder is not used (``None`` when it is, or when the CPU was asked for).
    """

    def __init__(self, backend: Backend = "auto", *, device: str = "cpu", alpha: str = "white") -> None:
        if backend not in BACKENDS:
            raise Illust2VecError(f"unknown decode backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.alpha = alpha
        self.fallback_reason: str | None = None
        self._decoder: Any = None
        self._params: Any = None
        on_cuda = str(device).lower().startswith("cuda")
        if backend == "cpu" or (backend == "auto" and not on_cuda):
            self.backend = "cpu"
            return
        device_id = int(str(device).split(":", 1)[1]) if ":" in str(device) else 0
        reason, decoder = nvimgcodec_problem(device_id)
        if reason is not None:
            if backend == "nvimgcodec":
                raise Illust2VecError(f"GPU JPEG decoding is not available: {reason}")
            self.backend, self.fallback_reason = "cpu", reason
            warnings.warn(f"{reason}; decoding images on the CPU", RuntimeWarning, stacklevel=2)
            return
        nvimgcodec = _import_nvimgcodec()
        self.backend, self._decoder = "nvimgcodec", decoder
        # EXIF orientation as load_image applies it; 8-bit sRGB (grey pictures come out as RGB)
        self._params = nvimgcodec.DecodeParams(apply_exif_orientation=True, color_spec=nvimgcodec.ColorSpec.SRGB,
                                               allow_any_depth=False)

    def __repr__(self) -> str:
        return f"BatchDecoder(backend={self.backend!r})"

    def decode(self, sources: Sequence[Any]) -> list[tuple[np.ndarray | None, str | None]]:
        """One ``(array, None)`` or ``(None, error message)`` per source, in order."""
        results: list[tuple[np.ndarray | None, str | None]] = [(None, None)] * len(sources)
        gpu: list[tuple[int, bytes]] = []
        for i, src in enumerate(sources):
            data = self._jpeg_bytes(src) if self._decoder is not None else None
            if data is None:
                results[i] = self._cpu(src)
            else:
                gpu.append((i, data))
        if gpu:
            for (i, _), array in zip(gpu, self._gpu([d for _, d in gpu])):
                results[i] = (array, None) if array is not None else self._cpu(sources[i])
        return results

    def _jpeg_bytes(self, src: Any) -> bytes | None:
        """The file's bytes if ``src`` is a path to a JPEG (by content), else ``None`` (CPU decodes it)."""
        if not isinstance(src, (str, os.PathLike)):
            return None
        try:
            with open(src, "rb") as fh:
                data = fh.read()
        except OSError:
            return None  # load_image reports it
        return data if data.startswith(_JPEG_MAGIC) else None

    def _gpu(self, datas: list[bytes]) -> list[np.ndarray | None]:
        """Decode JPEG bytes on the GPU; ``None`` for each image it could not decode."""
        try:
            images = self._decoder.decode(datas, params=self._params)
        except Exception:  # noqa: BLE001 - a failing batch: every image goes to the CPU decoder
            return [None] * len(datas)
        out: list[np.ndarray | None] = []
        for img in images:
            try:
                arr = None if img is None else np.asarray(img.cpu())
            except Exception:  # noqa: BLE001
                arr = None
            if arr is not None and (arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3):
                arr = None  # anything unusual: the CPU decoder knows the rules
            out.append(arr)
        return out

    def _cpu(self, src: Any) -> tuple[np.ndarray | None, str | None]:
        try:
            return load_image(src, alpha=self.alpha), None
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the run
            return None, failure_reason(src, exc)
