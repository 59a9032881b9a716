"""The Caffe importer against an independent numpy implementation of Caffe's layer semantics.

Nets are written with the test helper `tests/caffe_writer.py` in both file formats (V2
and legacy V1), imported, run in ONNX Runtime, and compared with a direct
numpy forward pass that follows Caffe's definitions (pooling output size with
ceil rounding clipped at the padding; average pooling divided by the window
clipped to the padded extent).
"""
from __future__ import annotations

import math
import time

import numpy as np
import onnxruntime as ort
import pytest

from illust2vec.models.families.i2v.caffe.net import read_caffemodel
from illust2vec.models.families.i2v.caffe.to_onnx import caffe_to_onnx
from caffe_writer import LayerSpec, i2v_layers, write_caffemodel
from illust2vec.errors import ModelFormatError

RNG = np.random.default_rng(7)


# ---------------------------------------------------------------- numpy Caffe
def ref_conv(x, w, b, pad, stride, dilation=(1, 1), group=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw]
                out[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og : (g + 1) * og, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_pool(x, method, k, s, p, global_pooling=False):
    n, c, h, w = x.shape
    if global_pooling:
        k, s, p = (h, w), (1, 1), (0, 0)
    (kh, kw), (sh, sw), (ph, pw) = k, s, p

    def size(dim, kk, ss, pp):
        o = int(math.ceil((dim + 2 * pp - kk) / ss)) + 1
        if pp and (o - 1) * ss >= dim + pp:
            o -= 1
        return o

    oh, ow = size(h, kh, sh, ph), size(w, kw, sw, pw)
    out = np.zeros((n, c, oh, ow), np.float64)
    for y in range(oh):
        for x_ in range(ow):
            hs, ws = y * sh - ph, x_ * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            region = x[:, :, hs:he, ws:we]
            out[:, :, y, x_] = region.max(axis=(2, 3)) if method == 0 else region.sum(axis=(2, 3)) / area
    return out


def run_onnx(path, outputs, x, **kw):
    model = caffe_to_onnx(read_caffemodel(path), outputs, **kw)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = list(outputs)
    return dict(zip(names, sess.run(names, {"input": x.astype(np.float32)})))


def conv_layer(name, bottom, cin, cout, k, pad=0, stride=1, dilation=1, group=1, bias=True, hw_form=False):
    w = RNG.standard_normal((cout, cin // group, *k)).astype(np.float32) * 0.3
    b = RNG.standard_normal(cout).astype(np.float32) * 0.1
    if hw_form:
        param = {"num_output": cout, "kernel_h": k[0], "kernel_w": k[1], "pad_h": pad[0], "pad_w": pad[1],
                 "stride_h": stride[0], "stride_w": stride[1], "group": group, "bias_term": bias}
        if dilation != 1:
            param["dilation"] = [dilation]
    else:
        param = {"num_output": cout, "kernel_size": [k[0]], "pad": [pad], "stride": [stride], "group": group,
                 "bias_term": bias, "dilation": [dilation]}
    blobs = [w, b] if bias else [w]
    return LayerSpec(name, "Convolution", [bottom], [name], {"convolution_param": param}, blobs), w, (b if bias else None)


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
def test_convolution_forms(tmp_path, v1):
    x = RNG.standard_normal((2, 4, 11, 9))
    l1, w1, b1 = conv_layer("c1", "data", 4, 6, (3, 3), pad=1, stride=2)
    l2, w2, b2 = conv_layer("c2", "c1", 6, 6, (3, 2), pad=(2, 1), stride=(1, 2), group=3, hw_form=True)
    l3, w3, _ = conv_layer("c3", "c2", 6, 4, (3, 3), pad=2, dilation=2, bias=False)
    path = tmp_path / "conv.caffemodel"
    write_caffemodel(path, [l1, l2, l3], input_shape=(1, 4, 11, 9), v1=v1)
    got = run_onnx(path, {"y": "c3"}, x)["y"]
    ref = ref_conv(ref_conv(ref_conv(x, w1, b1, (1, 1), (2, 2)), w2, b2, (2, 1), (1, 2), group=3),
                   w3, None, (2, 2), (1, 1), dilation=(2, 2))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "method,k,s,p,hw",
    [(0, 3, 2, 0, (10, 9)), (0, 3, 2, 1, (10, 9)), (1, 3, 2, 1, (10, 9)), (1, 3, 2, 0, (7, 8)),
     (1, 2, 2, 1, (5, 5)), (0, 2, 2, 0, (7, 7)), (1, 4, 3, 2, (9, 11))],
)
def test_pooling_matches_caffe_rounding_and_divisor(tmp_path, method, k, s, p, hw):
    x = RNG.standard_normal((2, 3, *hw))
    layer = LayerSpec("pool", "Pooling", ["data"], ["pool"],
                      {"pooling_param": {"pool": method, "kernel_size": k, "stride": s, "pad": p}})
    path = tmp_path / "pool.caffemodel"
    write_caffemodel(path, [layer], input_shape=(1, 3, *hw))
    got = run_onnx(path, {"y": "pool"}, x)["y"]
    ref = ref_pool(x, method, (k, k), (s, s), (p, p))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_global_pooling(tmp_path):
    x = RNG.standard_normal((2, 5, 6, 4))
    layers = [LayerSpec("gap", "Pooling", ["data"], ["gap"], {"pooling_param": {"pool": 1, "global_pooling": True}}),
              LayerSpec("gmp", "Pooling", ["data"], ["gmp"], {"pooling_param": {"pool": 0, "global_pooling": True}})]
    path = tmp_path / "g.caffemodel"
    write_caffemodel(path, layers, input_shape=(1, 5, 6, 4))
    got = run_onnx(path, {"a": "gap", "m": "gmp"}, x)
    np.testing.assert_allclose(got["a"], x.mean(axis=(2, 3)), atol=1e-5)
    np.testing.assert_allclose(got["m"], x.max(axis=(2, 3)), atol=1e-6)


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
def test_branches_eltwise_concat_softmax_innerproduct(tmp_path, v1):
    x = RNG.standard_normal((3, 4, 6, 6))
    ca, wa, ba = conv_layer("ca", "s0", 4, 5, (3, 3), pad=1)
    cb, wb, bb = conv_layer("cb", "s1", 4, 5, (1, 1))
    ip_w = RNG.standard_normal((7, 15 * 36)).astype(np.float32) * 0.05
    ip_b = RNG.standard_normal(7).astype(np.float32)
    layers = [
        LayerSpec("split", "Split", ["data"], ["s0", "s1"]),
        ca, cb,
        LayerSpec("relu_a", "ReLU", ["ca"], ["ca"], {"relu_param": {"negative_slope": 0.1}}),
        LayerSpec("sum", "Eltwise", ["ca", "cb"], ["sum"], {"eltwise_param": {"operation": 1, "coeff": [0.5, -2.0]}}),
        LayerSpec("prod", "Eltwise", ["ca", "cb"], ["prod"], {"eltwise_param": {"operation": 0}}),
        LayerSpec("max", "Eltwise", ["ca", "cb"], ["max"], {"eltwise_param": {"operation": 2}}),
        LayerSpec("cat", "Concat", ["sum", "prod", "max"], ["cat"], {"concat_param": {"axis": 1}}),
        LayerSpec("drop", "Dropout", ["cat"], ["cat"], {"dropout_param": {"dropout_ratio": 0.5}}),
        LayerSpec("ip", "InnerProduct", ["cat"], ["ip"], {"inner_product_param": {"num_output": 7}}, [ip_w, ip_b]),
        LayerSpec("sm", "Softmax", ["ip"], ["sm"]),
        LayerSpec("flat", "Flatten", ["cat"], ["flat"]),
        LayerSpec("resh", "Reshape", ["flat"], ["resh"], {"reshape_param": {"shape": [0, 15, -1]}}),
        LayerSpec("sig", "Sigmoid", ["ip"], ["sig"]),
    ]
    if v1:  # Flatten/Reshape have no V1 parameter fields; keep V1 to what V1 can express
        layers = [ly for ly in layers if ly.type not in ("Reshape",)]
    path = tmp_path / "branches.caffemodel"
    write_caffemodel(path, layers, input_shape=(1, 4, 6, 6), v1=v1)
    a = ref_conv(x, wa, ba, (1, 1), (1, 1))
    a = np.where(a > 0, a, 0.1 * a)
    b = ref_conv(x, wb, bb, (0, 0), (1, 1))
    cat = np.concatenate([0.5 * a - 2.0 * b, a * b, np.maximum(a, b)], axis=1)
    ip = cat.reshape(3, -1) @ ip_w.T + ip_b
    sm = np.exp(ip - ip.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    outputs = {"ip": "ip", "sm": "sm", "sig": "sig", "flat": "flat"}
    if not v1:
        outputs["resh"] = "resh"
    got = run_onnx(path, outputs, x)
    np.testing.assert_allclose(got["ip"], ip, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["sm"], sm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["sig"], 1 / (1 + np.exp(-ip)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["flat"], cat.reshape(3, -1), rtol=1e-4, atol=1e-4)
    if not v1:
        np.testing.assert_allclose(got["resh"], cat.reshape(3, 15, -1), rtol=1e-4, atol=1e-4)


def test_training_only_layers_are_ignored(tmp_path):
    conv, w, b = conv_layer("conv", "data", 3, 4, (3, 3), pad=1)
    layers = [
        LayerSpec("train_data", "Data", [], ["data", "label"], phase=0),
        conv,
        LayerSpec("head", "InnerProduct", ["conv"], ["head"], {"inner_product_param": {"num_output": 2}},
                  [np.ones((2, 4 * 25), np.float32), np.zeros(2, np.float32)]),
        LayerSpec("loss", "SigmoidCrossEntropyLoss", ["head", "label"], ["loss"]),
        LayerSpec("acc", "Accuracy", ["head", "label"], ["acc"], phase=1),
        LayerSpec("odd", "LRN", ["conv"], ["odd"]),  # unsupported, but not on the requested path
    ]
    path = tmp_path / "train.caffemodel"
    write_caffemodel(path, layers, input_shape=(1, 3, 5, 5))
    x = RNG.standard_normal((2, 3, 5, 5))
    got = run_onnx(path, {"feature": "conv"}, x)["feature"]
    np.testing.assert_allclose(got, ref_conv(x, w, b, (1, 1), (1, 1)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelFormatError, match=r"layer 'odd' has type 'LRN'"):
        caffe_to_onnx(read_caffemodel(path), {"y": "odd"})
    with pytest.raises(ModelFormatError, match="label"):
        caffe_to_onnx(read_caffemodel(path), {"y": "loss"})
    with pytest.raises(ModelFormatError, match="not found"):
        caffe_to_onnx(read_caffemodel(path), {"y": "nope"})


@pytest.mark.parametrize("widths,head,v1", [((4, 8, 8, 16, 16, 32), "tag", True), ((6, 6, 12, 12, 24, 24), "feature", False)])
def test_i2v_layouts_of_other_widths(tmp_path, widths, head, v1):
    """Unseen widths of the i2v layout import and compute what a direct forward pass computes."""
    layers = i2v_layers(widths, head=head, n_tags=37, encode=48, seed=3)
    path = tmp_path / "i2v.caffemodel"
    write_caffemodel(path, layers, v1=v1)
    x = RNG.standard_normal((2, 3, 224, 224)).astype(np.float32) * 50
    h = x.astype(np.float64)
    for layer in layers:
        if layer.type == "Convolution":
            h = ref_conv(h, layer.blobs[0], layer.blobs[1], (1, 1), (1, 1))
        elif layer.type == "ReLU":
            h = np.maximum(h, 0)
        elif layer.type == "Pooling" and layer.name != "pool6":
            h = ref_pool(h, 0, (2, 2), (2, 2), (0, 0))
        elif layer.name == "pool6":
            h = h.mean(axis=(2, 3))
        elif layer.type == "Sigmoid" and head == "tag":
            h = 1 / (1 + np.exp(-h))
        elif layer.type == "InnerProduct":
            h = h.reshape(h.shape[0], -1) @ layer.blobs[0].T.astype(np.float64) + layer.blobs[1]
            break
    out = {"tag": {"prob": "prob"}, "feature": {"feature": "encode1"}}[head]
    got = run_onnx(path, out, x)[next(iter(out))]
    scale = np.abs(h).max()
    assert np.abs(got - h).max() <= 1e-4 * max(scale, 1.0)


def _small_model(tmp_path):
    path = tmp_path / "small.caffemodel"
    write_caffemodel(path, i2v_layers((4, 4, 8, 8, 8, 8), head="tag", n_tags=16), v1=False)
    return path


def test_truncated_and_corrupted_files_fail_fast(tmp_path):
    good = _small_model(tmp_path).read_bytes()
    cases = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "cut_header": good[:7],
        "garbage": RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text": b"this is not a caffemodel\n" * 100,
        "huge_length": b"\xa2\x06\xff\xff\xff\xff\x0f" + b"\x00" * 64,  # field 100 claiming 4 GiB
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.caffemodel"
        path.write_bytes(data)
        start = time.perf_counter()
        with pytest.raises(ModelFormatError) as err:
            caffe_to_onnx(read_caffemodel(path), {"prob": "prob"})
        assert time.perf_counter() - start < 1.0, name
        assert str(path) in str(err.value) or "prob" in str(err.value), name


def test_flipped_bytes_never_crash(tmp_path):
    good = bytearray(_small_model(tmp_path).read_bytes())
    rng = np.random.default_rng(11)
    for trial in range(40):
        data = bytearray(good)
        for pos in rng.integers(0, 400, 3):  # the structure lives in the first bytes of each layer
            data[pos] ^= 0xFF
        path = tmp_path / f"flip{trial}.caffemodel"
        path.write_bytes(bytes(data))
        try:
            caffe_to_onnx(read_caffemodel(path), {"prob": "prob"})
        except ModelFormatError:
            pass  # a clear error is the expected outcome; anything else fails the test
