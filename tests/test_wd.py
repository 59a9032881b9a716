"""WD v3 tagger support on tiny ONNX models with the WD v3 contract.

The real ``model.onnx`` files cannot be downloaded here, so these graphs are
built with onnx.helper the way the WD exports look: an NHWC image input with a
``input_1:0``-style name, a small trunk (1x1 conv, ReLU, global average pool),
a Gemm (or MatMul+Add) classifier head and a Sigmoid output, plus a matching
``selected_tags.csv``.  The code paths are the real ones: CSV parsing, the
graph inspection that finds the embedding, the recipe read from the graph.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from illust2vec.models.families import wd
from illust2vec.errors import ModelFormatError
from illust2vec.models.store import ModelStore

from conftest import SHARED  # noqa: E402
ANIME36 = SHARED / "data" / "anime36"

# (name, category, fixed probability or None for "depends on the image")
TAGS = [
    ("general", 9, 0.70), ("sensitive", 9, 0.20), ("questionable", 9, 0.05), ("explicit", 9, 0.01),
    ("1girl", 0, 0.90), ("long_hair", 0, 0.50), ("^_^", 0, 0.36), ("0_0", 0, 0.34), ("solo_focus", 0, 0.10),
    ("hatsune_miku", 4, 0.86), ("kagamine_rin", 4, 0.84),
    ("smile", 0, None), ("blue_eyes", 0, None), ("open_mouth", 0, None),
]
D = 8  # embedding width


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def write_csv(path: Path, rows=TAGS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat, _) in enumerate(rows):
            w.writerow([1000 + i, name, cat, 5000 - i])
    return path


def weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    wc = rng.normal(0, 0.02, (D, 3)).astype(np.float32)  # 1x1 conv on 0-255 BGR values
    bc = rng.normal(0, 0.5, D).astype(np.float32)
    wh = rng.normal(0, 0.3, (len(TAGS), D)).astype(np.float32)
    bh = rng.normal(0, 0.3, len(TAGS)).astype(np.float32)
    for i, (_, _, p) in enumerate(TAGS):
        if p is not None:  # a fixed probability, whatever the image
            wh[i] = 0
            bh[i] = logit(p)
    return wc, bc, wh, bh


def build_model(size: int = 64, *, fixed_batch: bool = False, head: str = "gemm", seed: int = 0,
                input_name: str = "input_1:0", output_name: str = "predictions_sigmoid") -> onnx.ModelProto:
    wc, bc, wh, bh = weights(seed)
    T = len(TAGS)
    batch = 1 if fixed_batch else "batch"
    inits = [
        numpy_helper.from_array(wc.reshape(D, 3, 1, 1), "conv.w"),
        numpy_helper.from_array(bc, "conv.b"),
        numpy_helper.from_array(bh, "head.b"),
    ]
    nodes = [
        helper.make_node("Transpose", [input_name], ["x_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x_nchw", "conv.w", "conv.b"], ["conv"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
    ]
    if fixed_batch:  # what a batch-1 export does: the batch is spelled out in the Reshape
        inits.append(numpy_helper.from_array(np.array([1, D], np.int64), "flat.shape"))
        nodes.append(helper.make_node("Reshape", ["gap", "flat.shape"], ["pooled"]))
    else:
        nodes.append(helper.make_node("Flatten", ["gap"], ["pooled"], axis=1))
    if head == "gemm":
        inits.append(numpy_helper.from_array(wh, "head.w"))
        nodes.append(helper.make_node("Gemm", ["pooled", "head.w", "head.b"], ["logits"], transB=1))
    elif head == "matmul":
        inits.append(numpy_helper.from_array(np.ascontiguousarray(wh.T), "head.w"))
        nodes.append(helper.make_node("MatMul", ["pooled", "head.w"], ["mm"]))
        nodes.append(helper.make_node("Add", ["mm", "head.b"], ["logits"]))
    else:  # "tf": tf2onnx-style: weight through Identity, bias as a Constant node, Identity output
        inits.append(numpy_helper.from_array(np.ascontiguousarray(wh.T), "head.w"))
        nodes.append(helper.make_node("Identity", ["head.w"], ["head.w:0"]))
        nodes.append(helper.make_node("MatMul", ["head.w:0", "pooled"][::-1], ["mm"]))
        nodes.append(helper.make_node("Constant", [], ["head.b:0"], value=numpy_helper.from_array(bh, "bias")))
        nodes.append(helper.make_node("Add", ["head.b:0", "mm"], ["logits"]))
    if head == "tf":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["sig"]))
        nodes.append(helper.make_node("Identity", ["sig"], [output_name]))
    else:
        nodes.append(helper.make_node("Sigmoid", ["logits"], [output_name]))
    graph = helper.make_graph(
        nodes, "tiny_wd",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, T])],
        initializer=inits,
        value_info=[helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [batch, D])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def reference(x_nhwc_bgr: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The tiny network computed directly in numpy: (embedding, probabilities)."""
    wc, bc, wh, bh = weights(seed)
    x = x_nhwc_bgr.astype(np.float64)
    emb = np.maximum(x @ wc.T.astype(np.float64) + bc, 0).mean(axis=(1, 2))
    prob = 1 / (1 + np.exp(-(emb @ wh.T.astype(np.float64) + bh)))
    return emb, prob


def wd_input(img: Image.Image, size: int) -> np.ndarray:
    """WD front-end preprocessing written out with PIL: white square pad, bicubic, BGR, float 0-255."""
    img = img.convert("RGB")
    side = max(img.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    if side != size:
        canvas = canvas.resize((size, size), Image.BICUBIC)
    return np.asarray(canvas, np.float32)[:, :, ::-1]


# --------------------------------------------------------------------------- tags


def test_read_selected_tags(tmp_path: Path) -> None:
    tags = wd.read_selected_tags(write_csv(tmp_path / "selected_tags.csv"))
    assert len(tags) == len(TAGS)
    assert tags.names[5] == "long_hair"  # the file's form is kept
    assert tags.display_names[5] == "long hair"
    assert tags.display_names[6] == "^_^" and tags.display_names[7] == "0_0"  # emoticons unchanged
    assert tags.display_names[9] == "hatsune miku"
    assert tags.categories[:4] == ("rating",) * 4
    assert tags.categories[4] == "general" and tags.categories[9] == "character"
    assert tags.tag_ids[0] == 1000 and tags.counts[0] == 5000
    table = tags.table()
    assert table.category_names == ("rating", "general", "character")
    assert list(table.indices("character")) == [9, 10]
    assert table.index("long_hair") == 5  # either spelling finds the tag


def test_read_selected_tags_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,tag\n1,foo\n")
    with pytest.raises(ModelFormatError, match="tag_id,name,category,count"):
        wd.read_selected_tags(bad)
    bad.write_text("tag_id,name,category,count\n1,foo,general,3\n")
    with pytest.raises(ModelFormatError, match=r"bad.csv:2"):
        wd.read_selected_tags(bad)
    with pytest.raises(ModelFormatError, match="not found"):
        wd.read_selected_tags(tmp_path / "missing.csv")


def test_display_name_kaomoji_set() -> None:
    assert wd.display_name("(o)_(o)") == "(o)_(o)"
    assert wd.display_name("||_||") == "||_||"
    assert wd.display_name("x_x") == "x_x"
    assert wd.display_name("looking_at_viewer") == "looking at viewer"
    assert len(wd.KAOMOJI) == 19


# --------------------------------------------------------------------------- graph


@pytest.mark.parametrize("head", ["gemm", "matmul", "tf"])
def test_graph_info_finds_head_input(head: str) -> None:
    m = build_model(64, head=head)
    info = wd.graph_info(m)
    assert info.input_name == "input_1:0"
    assert info.input_size == (64, 64) and info.layout == "NHWC"
    assert info.embedding == "pooled"
    assert info.feature_dim == D and info.n_tags == len(TAGS)
    assert info.prob_output == "predictions_sigmoid" and not info.fixed_batch


def test_recipe_size_read_from_graph_448() -> None:
    info = wd.graph_info(build_model(448))
    recipe = wd.wd_recipe(info.input_size, info.layout)
    assert recipe.size == (448, 448)
    assert recipe.layout == "NHWC" and recipe.channel_order == "BGR"
    assert recipe.mean is None and recipe.std is None and recipe.scale == 1.0
    assert recipe.pad_to_square and recipe.pad_color == (255, 255, 255)
    assert recipe.resize == "pil-bicubic"


def test_not_a_tagger_graph() -> None:
    m = build_model(32)
    m.graph.node[-1].op_type = "Softmax"
    with pytest.raises(ModelFormatError, match="Sigmoid"):
        wd.graph_info(m)


@pytest.mark.parametrize("head", ["gemm", "matmul", "tf"])
def test_feature_output_equals_head_input(head: str) -> None:
    m = build_model(32, head=head)
    wd.add_feature_output(m)
    onnx.checker.check_model(m)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["prob", "feature"]
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    prob, feat = sess.run(["prob", "feature"], {"input_1:0": x})
    emb, ref_prob = reference(x)
    assert feat.shape == (3, D)
    np.testing.assert_allclose(feat, emb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(prob, ref_prob, rtol=1e-4, atol=1e-6)
    # The feature is exactly the Gemm/MatMul input of the original graph.
    orig = build_model(32, head=head)
    orig.graph.output.append(helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None))
    pooled = ort.InferenceSession(orig.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["pooled"], {"input_1:0": x})[0]
    np.testing.assert_array_equal(feat, pooled)


def test_fixed_batch_made_symbolic() -> None:
    m = build_model(32, fixed_batch=True)
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    before = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        before.run(None, {"input_1:0": x})  # the exported graph only takes one image
    info = wd.graph_info(m)
    assert info.fixed_batch
    wd.add_feature_output(m, info)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    prob, feat = sess.run(["prob", "feature"], {"input_1:0": x})
    emb, ref_prob = reference(x)
    assert prob.shape == (4, len(TAGS))
    np.testing.assert_allclose(feat, emb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(prob, ref_prob, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- end to end


@pytest.fixture()
def wd_files(tmp_path: Path) -> tuple[Path, Path, ModelStore]:
    d = tmp_path / "wd-tiny"
    d.mkdir()
    onnx.save(build_model(64, fixed_batch=True), d / "model.onnx")
    write_csv(d / "selected_tags.csv")
    return d / "model.onnx", d / "selected_tags.csv", ModelStore(tmp_path / "store")


def _images() -> list[Image.Image]:
    files = sorted(ANIME36.glob("*.jpg"))[:3]
    imgs = [Image.open(f) for f in files]
    imgs[1] = imgs[1].crop((0, 0, 512, 300))  # wide: padded top and bottom with white
    imgs[2] = imgs[2].crop((100, 0, 300, 512))  # tall
    return imgs


def test_model_recipe_and_outputs(wd_files) -> None:
    onnx_path, tags_path, store = wd_files
    model = wd.load_wd_files(onnx_path, tags_path, store=store, name="wd-tiny", batch_size=3)
    assert model.outputs == ("prob", "feature")
    assert model.recipe.size == (64, 64)
    assert model.feature_dim == D
    imgs = _images()
    batch = model.preprocess(imgs)
    expected = np.stack([wd_input(im, 64) for im in imgs])
    assert batch.shape == (3, 64, 64, 3)
    np.testing.assert_allclose(batch, expected, atol=1.0)  # PIL rounding of the bicubic resize
    assert np.all(batch[1, :5] == 255) and np.all(batch[2, :, :5] == 255)  # white padding
    emb, ref_prob = reference(batch)
    np.testing.assert_allclose(model.extract_feature(imgs), emb, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict_proba(imgs), ref_prob, rtol=1e-4, atol=1e-5)
    # cached graph: a second load does not rebuild it
    cached = sorted(p.name for p in store.onnx_dir.iterdir())
    assert len([c for c in cached if c.endswith(".onnx")]) == 1
    wd.load_wd_files(onnx_path, tags_path, store=store)
    assert sorted(p.name for p in store.onnx_dir.iterdir()) == cached


def test_default_thresholds_and_mcut(wd_files) -> None:
    onnx_path, tags_path, store = wd_files
    model = wd.load_wd_files(onnx_path, tags_path, store=store)
    img = _images()[0]
    res = model.estimate_plausible_tags([img], threshold=None)[0]
    general = [t for t, _ in res["general"] if t not in {"smile", "blue eyes", "open mouth"}]
    assert general == ["1girl", "long hair", "^_^"]  # 0.90, 0.50, 0.36 > 0.35; 0.34 and 0.10 are not
    assert [t for t, _ in res["character"]] == ["hatsune miku"]  # 0.86 > 0.85 > 0.84
    assert [t for t, _ in res["rating"]] == ["general", "sensitive", "questionable", "explicit"]
    assert res["rating"][0][1] == pytest.approx(0.70, abs=1e-6)

    prob = model.predict_proba([img])
    thr = wd.mcut_thresholds(prob, model.tags)
    gen = model.tags.indices("general")
    p = np.sort(prob[0, gen])[::-1]
    k = int(np.argmax(p[:-1] - p[1:]))
    assert thr[0, gen[0]] == pytest.approx((p[k] + p[k + 1]) / 2)
    mres = wd.plausible_tags_mcut(prob, model.tags)[0]
    assert all(pr > thr[0, gen[0]] for _, pr in mres["general"])
    assert len(mres["general"]) == k + 1
    assert [t for t, _ in mres["character"]] == ["hatsune miku"]  # gap 0.86/0.84 -> threshold 0.85


def test_mcut_cases() -> None:
    from illust2vec.models.tags import TagTable

    table = TagTable(("a", "b", "c", "d", "e", "x", "y"), ("general",) * 5 + ("character",) * 2)
    prob = np.array([
        [0.9, 0.5, 0.36, 0.34, 0.1, 0.12, 0.02],  # general gap .9/.5 -> 0.7; character 0.07 -> floor 0.15
        [0.6, 0.55, 0.5, 0.1, 0.05, 0.9, 0.3],    # general gap .5/.1 -> 0.3; character 0.6
    ])
    thr = wd.mcut_thresholds(prob, table)
    np.testing.assert_allclose(thr[:, 0], [0.7, 0.3])
    np.testing.assert_allclose(thr[:, 5], [0.15, 0.6])
    res = wd.plausible_tags_mcut(prob, table)
    assert [t for t, _ in res[0]["general"]] == ["a"] and res[0]["character"] == []
    assert [t for t, _ in res[1]["general"]] == ["a", "b", "c"] and [t for t, _ in res[1]["character"]] == ["x"]


def test_tag_count_mismatch(wd_files, tmp_path: Path) -> None:
    onnx_path, _, store = wd_files
    short = write_csv(tmp_path / "short.csv", TAGS[:-1])
    with pytest.raises(ModelFormatError, match="13 tags"):
        wd.load_wd_files(onnx_path, short, store=store)


def test_unfixable_batch_falls_back_to_batch_1(tmp_path: Path) -> None:
    # A batch-1 export whose Concat with a constant (like a ViT class token) cannot take batch N.
    m = build_model(32, fixed_batch=True)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.zeros((1, D), np.float32), "cls"))
    for n in g.node:
        if n.op_type == "Gemm":
            n.input[0] = "pooled_cls"
    g.node.insert(len(g.node) - 2, helper.make_node("Concat", ["pooled", "cls"], ["cat"], axis=1))
    g.initializer.append(numpy_helper.from_array(np.array([0, 0], np.int64), "cut.starts"))
    g.initializer.append(numpy_helper.from_array(np.array([1, D], np.int64), "cut.ends2"))
    g.node.insert(len(g.node) - 2, helper.make_node("Slice", ["cat", "cut.starts", "cut.ends2"], ["pooled_cls"]))
    d = tmp_path / "m"
    d.mkdir()
    onnx.save(m, d / "model.onnx")
    write_csv(d / "selected_tags.csv")
    model = wd.load_wd_files(d / "model.onnx", d / "selected_tags.csv", store=ModelStore(tmp_path / "s"))
    assert model.batch_size == 1
    x = np.random.default_rng(3).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(model.run_all(x)["prob"], reference(x)[1], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- zoo


WD_NAMES = ["wd-vit-v3", "wd-swinv2-v3", "wd-convnext-v3", "wd-vit-large-v3", "wd-eva02-large-v3"]


@pytest.mark.parametrize("name", WD_NAMES)
def test_zoo_records(name: str) -> None:
    from illust2vec.models.catalog import get_spec, list_models

    spec = get_spec(name)
    assert name in list_models("wd-*")
    repo = wd.WD_REPOS[name]
    assert spec.family == "wd" and spec.license == "Apache-2.0"
    assert spec.file("onnx").url == f"https://huggingface.co/{repo}/resolve/main/model.onnx"
    assert spec.file("tags").url == f"https://huggingface.co/{repo}/resolve/main/selected_tags.csv"
    assert spec.file("tags").filename.endswith(".csv")
    assert spec.thresholds["general"] == 0.35 and spec.thresholds["character"] == 0.85
    assert spec.outputs == ("prob", "feature")
    assert spec.recipe == wd.wd_recipe((448, 448))


def test_zoo_filenames_do_not_collide() -> None:
    from illust2vec.models.catalog import MODELS

    names = [f.filename for spec in MODELS.values() for f in spec.files]
    assert len(names) == len(set(names))


def _serve(directory: Path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return srv


def test_zoo_download_then_load_offline(wd_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A WD record whose URLs point at a local server: nothing is fetched unless asked; download=True
    fetches, later loads work offline.

    (The zoo's WD records read the Hugging Face cache, tests/test_hub.py; a record without
    ``hub`` uses its file URLs and illust2vec's own downloader, as here.)
    """
    import dataclasses

    from illust2vec.errors import ModelNotFoundError
    from illust2vec.models.loading import load_model
    from illust2vec.models.catalog import MODELS, get_spec

    for var in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "ILLUST2VEC_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    onnx_path, _, _ = wd_files
    srv = _serve(onnx_path.parent)
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}/"
        real = get_spec("wd-vit-v3")
        local = dataclasses.replace(real, hub=None, files=tuple(
            dataclasses.replace(f, url=base + ("model.onnx" if f.role == "onnx" else "selected_tags.csv"))
            for f in real.files))
        monkeypatch.setitem(MODELS, "wd-vit-v3", local)
        store_dir = tmp_path / "zoo-store"
        with pytest.raises(ModelNotFoundError) as info:
            load_model("wd-vit-v3", model_dir=store_dir, offline=True)
        assert base + "model.onnx" in str(info.value) and "models import" in str(info.value)
        with pytest.raises(ModelNotFoundError, match="--download"):  # not asked: no connection
            load_model("wd-vit-v3", model_dir=store_dir, progress=False)
        assert not (store_dir / "files").exists() or not any((store_dir / "files").iterdir())
        model = load_model("wd-vit-v3", model_dir=store_dir, progress=False, download=True)
        assert model.name == "wd-vit-v3" and model.outputs == ("prob", "feature")
        assert not list((store_dir / "tmp").glob("*.part"))
    finally:
        srv.shutdown()
        srv.server_close()
    again = load_model("wd-vit-v3", model_dir=store_dir, offline=True)  # server gone: store only
    img = _images()[:1]
    np.testing.assert_allclose(again.predict_proba(img), model.predict_proba(img))


def test_cli_import_as_then_offline_load(wd_files, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Files fetched elsewhere keep their repository names; --as files them under the model's names."""
    from illust2vec.cli.main import main
    from illust2vec.errors import ModelNotFoundError
    from illust2vec.models.loading import load_model

    onnx_path, tags_path, _ = wd_files
    store_dir = tmp_path / "cli-store"
    with pytest.raises(ModelNotFoundError, match="--as wd-convnext-v3"):
        load_model("wd-convnext-v3", model_dir=store_dir, offline=True)
    assert main(["models", "--model-dir", str(store_dir), "import", str(onnx_path), "--as", "wd-vit-v3"]) == 0
    assert (store_dir / "files" / "wd-vit-tagger-v3.onnx").is_file()
    bad_csv = tmp_path / "selected_tags.csv"
    bad_csv.write_text("not,a,tag,file\n")
    code = main(["models", "--model-dir", str(store_dir), "import", "--as", "wd-convnext-v3",
                 str(onnx_path), str(bad_csv)])
    assert code == 1 and "tag_id,name,category,count" in capsys.readouterr().err  # checked before it enters
    assert main(["models", "--model-dir", str(store_dir), "import", "--as", "wd-convnext-v3",
                 str(onnx_path), str(tags_path)]) == 0
    model = load_model("wd-convnext-v3", model_dir=store_dir, offline=True)
    assert model.outputs == ("prob", "feature") and len(model.tags) == len(TAGS)


def test_cli_tag_with_wd_files(wd_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    """`illust2vec tag --weights model.onnx --tags selected_tags.csv`: same results, CSV and captions as i2v."""
    import json
    import shutil

    from illust2vec.cli.main import main

    onnx_path, tags_path, _ = wd_files
    monkeypatch.setenv("ILLUST2VEC_HOME", str(tmp_path / "home"))
    img = tmp_path / "pics" / "a.jpg"
    img.parent.mkdir()
    shutil.copy(sorted(ANIME36.glob("*.jpg"))[0], img)
    common = ["tag", "--weights", str(onnx_path), "--tag-list", str(tags_path), str(img), "-q"]
    assert main(common + ["--captions", "--rating"]) == 0
    assert capsys.readouterr().out == ""  # captions alone print nothing
    img.with_suffix(".txt").unlink()
    assert main(common + ["--captions", "--rating", "--format", "json"]) == 0  # asked for: JSON too
    out = json.loads(capsys.readouterr().out)
    tags = out[0]["tags"]
    assert [t for t in tags["general"] if t not in {"smile", "blue eyes", "open mouth"}] == ["1girl", "long hair", "^_^"]
    assert list(tags["character"]) == ["hatsune miku"]
    assert list(tags["rating"]) == ["general", "sensitive", "questionable", "explicit"]
    caption = img.with_suffix(".txt").read_text()
    assert caption.startswith("general, hatsune miku, 1girl, long hair")
    assert "^_^" in caption
