"""fp16: the converted graph computes the same function within half-precision tolerance; CPU refuses it."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ANIME36, I2V_FIXTURES

from illust2vec.runtime.session import open_session, to_float16
from illust2vec.errors import Illust2VecError

NO_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


def _is_i2v_tagger(path) -> bool:
    """A converted graph with the fixture tagger's 1539 tag probabilities."""
    for o in onnx.load(str(path), load_external_data=False).graph.output:
        dims = o.type.tensor_type.shape.dim
        if o.name == "prob" and dims and dims[-1].dim_value == 1539:
            return True
    return False


def test_fp16_graph_has_half_weights_float_io_and_close_outputs(i2v_tagger, model_store):
    # the store also holds other models' graphs, and the tagger's int8 copies (tests/test_int8.py)
    graphs = [p for p in model_store.rglob("*.onnx") if p.parent.name != "ort" and "-int8-" not in p.name]
    graph = next(p for p in graphs if _is_i2v_tagger(p))
    half = onnx.load_from_string(to_float16(graph))
    onnx.checker.check_model(half)
    types = {init.data_type for init in half.graph.initializer if len(init.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}
    assert {i.type.tensor_type.elem_type for i in half.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in half.graph.output} == {onnx.TensorProto.FLOAT}
    x = np.random.default_rng(7).normal(0, 50, (3, 3, 224, 224)).astype(np.float32)
    ref = i2v_tagger.run(x, "prob")
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["prob"], {session.get_inputs()[0].name: x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert 0 < err < 5e-3  # half precision: not bit-identical, but close


@pytest.mark.skipif(not NO_CUDA, reason="onnxruntime-gpu is installed here")
def test_fp16_is_refused_on_the_cpu():
    with pytest.raises(Illust2VecError, match="--device cuda"):
        open_session(I2V_FIXTURES / "nonexistent.onnx", device="cpu", precision="fp16")
    with pytest.raises(Illust2VecError, match="unknown precision"):
        open_session(I2V_FIXTURES / "nonexistent.onnx", precision="bf16")


@pytest.mark.skipif(not NO_CUDA, reason="onnxruntime-gpu is installed here")
def test_fp16_with_allowed_fallback_runs_fp32_on_the_cpu(i2v_tagger, model_store):
    from illust2vec import Illustration2Vec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Illustration2Vec.from_caffemodel(
            I2V_FIXTURES / "tag_w8_v1.caffemodel", tags=I2V_FIXTURES / "tag_list.json", alpha="drop",
            model_dir=model_store, device="cuda", allow_fallback=True, precision="fp16")
    assert any("CPU" in str(w.message) for w in caught)
    assert model.precision == "fp32" and model.session.get_providers() == ["CPUExecutionProvider"]
    x = np.random.default_rng(1).normal(0, 50, (2, 3, 224, 224)).astype(np.float32)
    np.testing.assert_array_equal(model.run(x, "prob"), i2v_tagger.run(x, "prob"))


def test_half_input_graph_is_fed_float16_through_the_worker_ring(i2v_tagger, model_store):
    from illust2vec.models.image_model import EngineOptions, ImageModel
    from illust2vec.runtime.batches import iter_batches

    # the store also holds other models' graphs, and the tagger's int8 copies (tests/test_int8.py)
    graphs = [p for p in model_store.rglob("*.onnx") if p.parent.name != "ort" and "-int8-" not in p.name]
    graph = next(p for p in graphs if _is_i2v_tagger(p))
    half = ImageModel(to_float16(graph, half_input=True), recipe=i2v_tagger.recipe,
                      engine=EngineOptions(alpha="drop", batch_size=4))
    assert half.input_dtype == np.float16
    assert half.session.get_outputs()[0].type == "tensor(float)"
    files = sorted(ANIME36.glob("*.jpg"))[:6]
    ref = np.concatenate([b.outputs["prob"] for b in iter_batches(i2v_tagger, files, batch_size=4, workers=0)])
    got = [b for b in iter_batches(half, files, batch_size=4, workers=2, outputs=("prob",))]
    assert [i for b in got for i in b.indices] == list(range(6))
    prob = np.concatenate([b.outputs["prob"] for b in got])
    assert prob.dtype == np.float32
    assert 0 < np.abs(prob - ref).max() < 5e-3
