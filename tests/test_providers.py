"""--device cuda on a machine without CUDA: a clear refusal, CPU only with permission.

This machine has the CPU onnxruntime and no NVIDIA driver, so these tests
exercise the real detection code on the real "missing" situation; the GPU
itself is exercised by benchmarks/bench_gpu.py where one is available.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from illust2vec.runtime import devices as providers
from illust2vec.runtime.session import open_session
from illust2vec.errors import Illust2VecError

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed here"
)


def tiny_model() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["feature"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["N", 4])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_cpu_build_is_named_with_fix() -> None:
    problem = providers.cuda_problem(cached=False)
    assert problem is not None
    assert "no CUDA support" in problem and "onnxruntime-gpu" in problem and "pip" in problem


def test_cuda_request_refused_without_permission() -> None:
    with pytest.raises(Illust2VecError, match="no CUDA support") as info:
        open_session(tiny_model(), device="cuda")
    assert "pip install" in str(info.value) and "--device cpu" in str(info.value)


def test_cpu_fallback_only_when_allowed() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = open_session(tiny_model(), device="cuda", allow_fallback=True)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert any("CPU" in str(w.message) for w in caught)
    out = session.run(["feature"], {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
    np.testing.assert_array_equal(out, [[0, 2, 0, 4]])


def test_gpu_package_without_driver_names_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if onnxruntime-gpu were installed: the libraries are then what is missing here.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    problem = providers.cuda_problem(cached=False)
    assert problem is not None and "libcuda.so.1" in problem


def test_missing_libraries_are_named() -> None:
    names = {"C library": "libc.so.6", "CUDA 12 runtime": "libcudart.so.12", "cuDNN 9": "libcudnn.so.9"}
    missing = providers.missing_cuda_libraries(names)
    assert missing == ["CUDA 12 runtime (libcudart.so.12)", "cuDNN 9 (libcudnn.so.9)"]


def test_library_names_follow_build_versions() -> None:
    cuda, cudnn = providers.ort_cuda_versions()
    assert isinstance(cuda, int) and isinstance(cudnn, int)
    names = providers.cuda_library_names(13, 9)
    assert names["CUDA 13 runtime"] == "libcudart.so.13"
    assert names["cuFFT (CUDA 13)"] == "libcufft.so.12"
    assert names["cuDNN 9"] == "libcudnn.so.9"


def test_model_loading_refuses_cuda(tmp_path: Path) -> None:
    from illust2vec.models.loading import load_model

    with pytest.raises(Illust2VecError, match="no CUDA support"):
        load_model("generic-effnet-lite0", model_dir=tmp_path, device="cuda", offline=True)
