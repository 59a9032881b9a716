"""Reverse-mode graphs on ONNX Runtime: against Chainer's backprop and against finite differences."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ANIME36, I2V_FIXTURES
from onnx import TensorProto, helper, numpy_helper

from illust2vec.runtime.reverse import (
    GRAD_OUTPUT,
    gradient_model,
    spatial_map_tensor,
    with_outputs,
)
from illust2vec.errors import Illust2VecError, ModelFormatError

needs_oracle = pytest.mark.skipif(
    not (I2V_FIXTURES / "explain.npz").is_file(),
    reason="../shared/fixtures/i2v/explain.npz (Chainer's maps and gradients) is missing",
)


def _oracle():
    return np.load(I2V_FIXTURES / "explain.npz"), np.load(I2V_FIXTURES / "reference.npz")


@needs_oracle
def test_tag_gradient_matches_chainer(i2v_tagger):
    explain, ref = _oracle()
    grad = i2v_tagger.input_gradient(ref["net_input"], tags=[int(t) for t in explain["tag_idx"]])
    want = explain["grad_tags"]
    assert grad.shape == want.shape and grad.dtype == np.float32
    assert np.abs(grad - want).max() <= 1e-3 * np.abs(want).max()


@needs_oracle
def test_tag_gradient_by_names_equals_by_columns(i2v_tagger):
    _, ref = _oracle()
    names = [i2v_tagger.tags.names[i] for i in (0, 9)]
    by_name = i2v_tagger.input_gradient(ref["net_input"][:1], tags=names)
    by_index = i2v_tagger.input_gradient(ref["net_input"][:1], tags=[0, 9])
    np.testing.assert_array_equal(by_name, by_index)


@needs_oracle
def test_feature_gradient_matches_chainer(i2v_features):
    explain, ref = _oracle()
    x = ref["net_input"]
    grad = i2v_features.input_gradient(x, feature_target=explain["feature_target"])
    want = explain["grad_feature"]
    tol = 1e-3 * np.abs(want).max()
    assert np.abs(grad[:2] - want[:2]).max() <= tol
    # Image 2 (noise) has a max-pool window in pool3 whose two largest inputs differ
    # by one float32 rounding step; Chainer and ONNX Runtime round the convolution
    # differently and pick different winners, which moves the gradient of that
    # window's 8x8 pixel patch (receptive field up to 18 px around it).  Outside
    # that patch the gradient agrees; the near tie itself is checked below.
    err = np.abs(grad[2] - want[2]).max(axis=0)
    rows, cols = np.nonzero(err > tol)
    assert rows.size == 0 or (rows.min() >= 27 * 8 - 18 and cols.min() >= 5 * 8 - 18 and cols.max() < 6 * 8 + 18)
    pre_pool = _inner(i2v_features, "caffe/conv3_2__1", x[2:3])[0, 11, 54:56, 10:12].ravel()
    top = np.sort(pre_pool)
    assert top[-1] - top[-2] < 1e-6


def _inner(model, tensor, batch):
    session = model.derived_session(f"test-{tensor}", lambda proto: with_outputs(proto, {"inner": tensor}))
    return session.run(["inner"], {"input": batch})[0]


@needs_oracle
def test_spatial_map_is_conv6_4_and_its_mean_is_the_logit(i2v_tagger):
    explain, ref = _oracle()
    proto = onnx.load(i2v_tagger.onnx_source)
    tensor = spatial_map_tensor(proto)
    assert tensor is not None
    maps = _inner(i2v_tagger, tensor, ref["net_input"])
    assert np.abs(maps - explain["conv6_4"]).max() <= 1e-4
    logits = maps.mean(axis=(2, 3))
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), ref["net_prob"], atol=1e-5)


@needs_oracle
def test_gradient_arguments_are_checked(i2v_tagger, i2v_features):
    batch = np.zeros((1, 3, 224, 224), np.float32)
    with pytest.raises(Illust2VecError, match="exactly one"):
        i2v_tagger.input_gradient(batch)
    with pytest.raises(Illust2VecError, match="unknown tag"):
        i2v_tagger.input_gradient(batch, tags=["no such tag at all"])
    with pytest.raises(Illust2VecError, match="no feature output"):
        i2v_tagger.input_gradient(batch, feature_target=np.zeros((1, 4), np.float32))
    with pytest.raises(Illust2VecError, match="shape"):
        i2v_features.input_gradient(batch, feature_target=np.zeros((1, 3), np.float32))


# -- finite differences on a graph with every op the reverse rules cover ----------

def _const(rng, name, shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _all_ops_graph() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    inits = [
        _const(rng, "w1", (6, 3, 3, 3)), _const(rng, "b1", (6,)),
        _const(rng, "w2", (6, 3, 3, 3)), _const(rng, "b2", (6,)),
        _const(rng, "scale", (1, 12, 1, 1)), _const(rng, "bias", (1, 12, 1, 1)),
        _const(rng, "fc", (5, 12)), _const(rng, "fcb", (5,)),
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.array(-3.4e38, np.float32), "fill"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.5, np.float32), "hi"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[0, 0, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.1),
        helper.make_node("Pad", ["a1", "pads", "fill"], ["p1"], mode="constant"),
        helper.make_node("MaxPool", ["p1"], ["m1"], kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[2, 2, 2, 2],
                         dilations=[2, 2], group=2),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Tanh", ["c2"], ["t2"]),
        helper.make_node("Concat", ["r2", "t2"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["avg"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Mul", ["avg", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["sc"]),  # no exact zeros (Clip makes some) at Relu
        helper.make_node("Sigmoid", ["sc"], ["sg"]),
        helper.make_node("Mul", ["sc", "sg"], ["swish"]),
        helper.make_node("Relu", ["sc"], ["rl"]),
        helper.make_node("Add", ["swish", "rl"], ["add"]),
        helper.make_node("Sub", ["add", "t2p"], ["sub"]),
        helper.make_node("GlobalAveragePool", ["sub"], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
        helper.make_node("Flatten", ["gap"], ["feature"], axis=1),
    ]
    # t2p: a pooled copy of t2 sized like "add" (Identity through a second pool)
    nodes.insert(15, helper.make_node("AveragePool", ["cat"], ["t2p"], kernel_shape=[2, 2], strides=[1, 1]))
    graph = helper.make_graph(
        nodes, "all_ops",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 11, 11])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["batch", 12])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("output,objective", [("prob", "weight"), ("feature", "target")])
def test_reverse_rules_match_finite_differences(output, objective):
    forward = _all_ops_graph()
    fwd = ort.InferenceSession(forward.SerializeToString())
    bwd = ort.InferenceSession(gradient_model(forward, output, objective).SerializeToString())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 11, 11)).astype(np.float32)
    width = 5 if output == "prob" else 12
    seed = rng.standard_normal((2, width)).astype(np.float32)

    def objective_value(inp: np.ndarray) -> float:
        y = fwd.run([output], {"input": inp.astype(np.float32)})[0].astype(np.float64)
        if objective == "weight":
            return float((seed * y).sum())
        return float(0.5 * ((y - seed) ** 2).sum())

    grad = bwd.run([GRAD_OUTPUT], {"input": x, f"{output}_{objective}": seed})[0]
    assert grad.shape == x.shape
    for k in range(4):
        v = rng.standard_normal(x.shape).astype(np.float32)
        analytic = float((grad.astype(np.float64) * v).sum())
        # The graph has ReLU, Clip and max-pool kinks; a step can cross one, so
        # two step sizes are tried and one of them must agree.
        numeric = [(objective_value(x + eps * v) - objective_value(x - eps * v)) / (2 * eps) for eps in (1e-3, 1e-4)]
        assert min(abs(n - analytic) for n in numeric) <= 3e-2 * max(abs(analytic), 1e-3), (k, numeric, analytic)


def test_unsupported_op_is_named():
    graph = helper.make_graph(
        [helper.make_node("Exp", ["input"], ["prob"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelFormatError, match="'Exp'"):
        gradient_model(model, "prob")


def test_effnet_gradient_matches_finite_differences(model_store):
    """The reverse rules for the EfficientNet-Lite0 graph (Clip, Add, GlobalAveragePool, Softmax)."""
    from illust2vec.models.loading import load_model

    try:
        model = load_model("generic-effnet-lite0", model_dir=model_store, offline=True, progress=False)
    except Illust2VecError as exc:
        pytest.skip(f"generic-effnet-lite0 is not available: {exc}")
    if not ANIME36.is_dir():
        pytest.skip("../shared/data/anime36 is missing")
    rng = np.random.default_rng(5)
    x = model.preprocess([min(ANIME36.glob("*.jpg"))])
    target = model.run(x, "feature") + rng.normal(0, 0.5, (1, model.feature_dim)).astype(np.float32)
    grad = model.input_gradient(x, feature_target=target)

    def loss(inp):
        return 0.5 * float(((model.run(inp.astype(np.float32), "feature").astype(np.float64) - target) ** 2).sum())

    # 49 convolutions and 33 ReLU6 kinks make random directions too rough for float32
    # differences; along the gradient itself the slope must approach |grad|.
    norm = float(np.sqrt((grad.astype(np.float64) ** 2).sum()))
    v = grad / norm
    slopes = [(loss(x + eps * v) - loss(x - eps * v)) / (2 * eps) for eps in (1e-2, 1e-3)]
    assert abs(slopes[1] - norm) <= 0.05 * norm, (slopes, norm)
    assert abs(slopes[1] - norm) < abs(slopes[0] - norm)
    w = np.zeros(len(model.tags), np.float32)
    w[917] = 1.0  # "comic book"
    tag_grad, outputs = model.forward_backward(x, tag_weights=w)
    assert tag_grad.shape == x.shape and outputs["prob"].shape == (1, 1000)
