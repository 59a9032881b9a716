"""``--precision int8|bf16|auto``: static int8 graphs (error within the documented bound), cache key, fallbacks, collections.

The bounds are docs/incoming/h27.md's, on the random-weight i2v fixtures and
EfficientNet-Lite0's real weights, over anime36.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import ANIME36, I2V_FIXTURES
from illust2vec import Illustration2Vec
from illust2vec.cli.main import main
from illust2vec.collection import Collection, ModelMismatchError
from illust2vec.models.loading import load_model
from illust2vec.models.quantize import ENV_CPU_FLAGS, quantized_key, resolve_precision

PICTURES = sorted(ANIME36.glob("*.jpg"))
TAG = I2V_FIXTURES / "tag_w8_v1.caffemodel"
FEAT = I2V_FIXTURES / "feature_w16_e1024.caffemodel"


@pytest.fixture(scope="module")
def i2v_pair(model_store):
    load = lambda path, **kw: Illustration2Vec.from_caffemodel(path, alpha="drop", model_dir=model_store, **kw)
    tags = I2V_FIXTURES / "tag_list.json"
    return {"tag": (load(TAG, tags=tags), load(TAG, tags=tags, precision="int8")),
            "feature": (load(FEAT), load(FEAT, precision="int8"))}


def test_int8_i2v_tags_within_bound(i2v_pair):
    fp32, int8 = i2v_pair["tag"]
    assert int8.precision == int8.graph_precision == "int8" and fp32.precision == "fp32"
    assert int8.identity.startswith(fp32.identity + "+int8-cal") and "QuantizeLinear" in _ops(int8)
    p, q = (m.run(m.preprocess(PICTURES)) for m in (fp32, int8))
    d = np.abs(p - q)
    assert d.max() <= 0.15 and d.mean() <= 0.005, (d.max(), d.mean())
    top10 = np.mean([len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10 for a, b in zip(p, q)])
    assert top10 >= 0.9, top10


def test_int8_i2v_features_and_codes_within_bound(i2v_pair):
    fp32, int8 = i2v_pair["feature"]
    f, g = (m.run(m.preprocess(PICTURES)) for m in (fp32, int8))
    cos = np.sum(f * g, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(g, axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())
    bits = np.mean(np.unpackbits(fp32.binarize_features(f), axis=1) != np.unpackbits(int8.binarize_features(g), axis=1))
    assert bits <= 0.03, bits


def _ops(model) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(model.onnx_source)).graph.node}


def test_effnet_real_weights_int8_acceptance(model_store):
    """The acceptance on anime36: int8's ImageNet top-5 set equals fp32's on >= 95% of pictures, cosine >= 0.99."""
    fp32 = load_model("generic-effnet-lite0", model_dir=model_store)
    int8 = load_model("generic-effnet-lite0", model_dir=model_store, precision="int8")
    x = fp32.preprocess(PICTURES)
    (p, f), (q, g) = ((o["prob"], o["feature"]) for o in (fp32.run_all(x), int8.run_all(x)))
    same = np.mean([set(a) == set(b) for a, b in zip(np.argsort(-p, 1)[:, :5], np.argsort(-q, 1)[:, :5])])
    cos = np.sum(f * g, 1) / np.linalg.norm(f, axis=1) / np.linalg.norm(g, axis=1)
    assert same >= 0.95 and cos.min() >= 0.99, (same, cos.min())
    ops = _ops_by_name(int8)
    assert ops["conv_stem"] == "Conv" and ops["fc"] == "Gemm" and "QuantizeLinear" in ops.values()
    # the outputs are not rounded to 256 levels: no QuantizeLinear reads prob, logits or the feature
    import onnx

    read = {i for n in onnx.load(str(int8.onnx_source)).graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    assert not read & {"prob", "logits", "feature", "pooled"}


def _ops_by_name(model) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(model.onnx_source)).graph.node}


def test_cache_key_names_source_precision_and_calibration(model_store, tmp_path):
    base = quantized_key("caffe-abc", "int8", "0123456789ab")
    assert len({base, quantized_key("caffe-abd", "int8", "0123456789ab"),
                quantized_key("caffe-abc", "int4", "0123456789ab"), quantized_key("caffe-abc", "int8", "0123456789ac"),
                quantized_key("caffe-abc", "int8", "0123456789ab", ("conv1",))}) == 5
    # another calibration folder: another graph and identity; quantize makes it the default for the source
    pics = tmp_path / "pics"
    pics.mkdir()
    for src in PICTURES[:6]:
        (pics / src.name).write_bytes(src.read_bytes())
    gallery = Illustration2Vec.from_caffemodel(TAG, model_dir=tmp_path / "store", precision="int8")
    own = Illustration2Vec.from_caffemodel(TAG, model_dir=tmp_path / "store", precision="int8", calibration=pics)
    assert own.onnx_source != gallery.onnx_source and own.identity != gallery.identity
    assert main(["models", "quantize", str(TAG), "--calibrate", str(pics), "--model-dir", str(tmp_path / "store")]) == 0
    again = Illustration2Vec.from_caffemodel(TAG, model_dir=tmp_path / "store", precision="int8")
    assert again.onnx_source == own.onnx_source and again.identity == own.identity


def test_fallbacks_say_one_line(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="illust2vec")
    monkeypatch.setenv(ENV_CPU_FLAGS, "fpu sse2")  # a CPU without AVX2/VNNI/AMX/NEON
    assert resolve_precision("int8") == "fp32" and resolve_precision("auto") == "fp32"
    monkeypatch.setenv(ENV_CPU_FLAGS, "avx2 fma")
    assert resolve_precision("auto") == "fp32" and resolve_precision("int8") == "int8"
    monkeypatch.setenv(ENV_CPU_FLAGS, "avx2 avx512_vnni")
    assert resolve_precision("auto") == "int8" and resolve_precision("bf16") == "fp32"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "no int8 instructions" in lines[0] and "bf16" in lines[1]
    assert all("\n" not in line for line in lines)
    with pytest.raises(Exception, match="for the CPU"):
        resolve_precision("int8", "cuda")


def test_fallback_model_runs_fp32(monkeypatch, model_store):
    monkeypatch.setenv(ENV_CPU_FLAGS, "sse2")
    model = Illustration2Vec.from_caffemodel(FEAT, model_dir=model_store, precision="int8")
    assert model.precision == "fp32" and "+int8" not in model.identity


def test_collection_refuses_int8_into_fp32(i2v_pair, tmp_path):
    fp32, int8 = i2v_pair["feature"]
    with Collection.open(tmp_path / "col") as col:
        col.add(PICTURES[:4], embedder=fp32, progress=False)
    with Collection.open(tmp_path / "col") as col, pytest.raises(ModelMismatchError, match=r"\+int8-cal"):
        col.add(PICTURES[4:8], embedder=int8, progress=False)


@pytest.mark.parametrize("which", ["i2v", "effnet"])
def test_cli_tag_and_embed_int8(which, model_store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")
    if which == "i2v":
        tag = ["--weights", str(TAG), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]
        embed = ["--weights", str(FEAT)]
    else:
        tag = embed = ["--model", "generic-effnet-lite0"]
    common = ["--model-dir", str(model_store), "--precision", "int8", "--quiet"]
    assert main(["tag", str(ANIME36), *tag, *common, "-o", str(tmp_path / "t.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(rows) == len(PICTURES) and all(r["tags"] for r in rows)
    assert main(["embed", str(ANIME36), *embed, *common, "-o", str(tmp_path / "e.npy")]) == 0
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape[0] == len(PICTURES) and np.isfinite(vectors).all()


def test_wd_layout_int8_runs(tmp_path):
    """A WD-contract graph exported for one picture at a time (calibrated one by one) quantises and tags."""
    import onnx
    from test_wd import build_model, write_csv

    from illust2vec.models.families.wd import load_wd_files
    from illust2vec.models.store import ModelStore

    onnx.save(build_model(64, fixed_batch=True), tmp_path / "model.onnx")
    store = ModelStore(tmp_path / "store")
    args = (tmp_path / "model.onnx", write_csv(tmp_path / "selected_tags.csv"))
    fp32, int8 = load_wd_files(*args, store=store), load_wd_files(*args, store=store, precision="int8")
    assert int8.precision == "int8" and "QuantizeLinear" in _ops(int8)
    p, q = (m.predict_proba(PICTURES[:4]) for m in (fp32, int8))
    assert np.abs(p - q).max() <= 0.15


def _depthwise_graph(seed: int) -> bytes:
    """A 3x3 depthwise Conv on the 3 input channels, one large tap per filter (as BatchNorm folding leaves them)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(0, 0.3, (3, 1, 3, 3)).astype(np.float32)
    w[:, 0, 1, 1] = 4.0  # the other taps round coarsely against it
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    node = helper.make_node("Conv", ["input", "w", "b"], ["y"], name="dw", group=3, kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1])
    io = [helper.make_tensor_value_info(t, TensorProto.FLOAT, ["N", 3, 16, 16]) for t in ("input", "y")]
    graph = helper.make_graph([node], "dw", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # ONNX Runtime 1.23 (Python 3.10) reads IR <= 11
    return model.SerializeToString()


def test_bias_correction_removes_the_mean_shift_of_rounded_weights(monkeypatch):
    """quantize_graph moves each int8 Conv's bias by its rounded weights' shift on the calibration mean."""
    import onnxruntime as ort

    from illust2vec.models import quantize
    from illust2vec.prep.preprocess import InputRecipe

    recipe = InputRecipe(size=(16, 16), layout="NCHW", channel_order="RGB", mean=(0.0,) * 3, std=(255.0,) * 3,
                         resize="pil-bilinear")
    rng = np.random.default_rng(3)
    pictures = [rng.integers(150, 256, (16, 16, 3), dtype=np.uint8) for _ in range(24)]  # inputs with a large mean
    graph = _depthwise_graph(seed=7)
    x = quantize.preprocess(pictures, recipe)
    run = lambda g: ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ref = run(graph)
    corrected = run(quantize.quantize_graph(graph, pictures, recipe))
    monkeypatch.setattr(quantize, "_correct_biases", lambda *a: None)
    plain = run(quantize.quantize_graph(graph, pictures, recipe))
    shift = lambda y: np.abs((y - ref)[:, :, 1:-1, 1:-1].mean(axis=(0, 2, 3)))  # borders see the zero padding
    assert shift(corrected).max() < 0.25 * shift(plain).max(), (shift(corrected), shift(plain))
