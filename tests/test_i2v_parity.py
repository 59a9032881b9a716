"""illust2vec reproduces the original illustration2vec (Chainer) number for number.

The oracle is ../shared/fixtures/i2v: random-weight models in the real layouts
(a V1 tag model, a V2 feature model with a training head) and what original
i2v computed for them.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import I2V_FIXTURES

REF = np.load(I2V_FIXTURES / "reference.npz")
REF_JSON = json.loads((I2V_FIXTURES / "reference.json").read_text())
IMAGES = [I2V_FIXTURES / "images" / name for name in REF_JSON["order"]]


def test_network_tag_model_matches_chainer(i2v_tagger):
    out = i2v_tagger.run(REF["net_input"])
    assert out.shape == REF["net_prob"].shape == (3, 1539)
    np.testing.assert_allclose(out, REF["net_prob"], atol=1e-4, rtol=0)


def test_network_feature_model_matches_chainer(i2v_features):
    out = i2v_features.run(REF["net_input"])
    ref = REF["net_encode1"]
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_pipeline_probabilities_match(i2v_tagger):
    prob = i2v_tagger.predict_proba(IMAGES)
    np.testing.assert_allclose(prob, REF["noaa_prob"], atol=1e-3, rtol=0)


def test_pipeline_features_and_codes_match(i2v_features):
    feats = i2v_features.extract_feature(IMAGES)
    ref = REF["noaa_feature"]
    assert feats.dtype == np.float32
    assert np.abs(feats - ref).max() <= 1e-3 * np.abs(ref).max()
    codes = i2v_features.extract_binary_feature(IMAGES)
    assert codes.dtype == np.uint8 and codes.shape == REF["noaa_binary"].shape
    differing = np.unpackbits(codes ^ REF["noaa_binary"]).mean()
    assert differing <= 0.005


def test_antialiased_resize_matches_modern_i2v(model_store):
    """With today's scikit-image default (anti-aliasing), i2v master computes aa_*; so do we."""
    from illust2vec import Illustration2Vec
    from illust2vec.prep.preprocess import I2V_RECIPE

    recipe = type(I2V_RECIPE)(**{**I2V_RECIPE.__dict__, "resize": "skimage-bilinear-aa"})
    tagger = Illustration2Vec.from_caffemodel(
        I2V_FIXTURES / "tag_w8_v1.caffemodel", tags=I2V_FIXTURES / "tag_list.json",
        alpha="drop", recipe=recipe, model_dir=model_store,
    )
    np.testing.assert_allclose(tagger.predict_proba(IMAGES), REF["aa_prob"], atol=1e-3, rtol=0)


def _assert_same_tag_lists(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, ref in zip(ours, theirs):
        assert set(mine) == set(ref)
        for category in ref:
            assert [t for t, _ in mine[category]] == [t for t, _ in ref[category]], category
            np.testing.assert_allclose([p for _, p in mine[category]], [p for _, p in ref[category]], atol=1e-3)


def test_estimate_plausible_tags(i2v_tagger):
    ours = i2v_tagger.estimate_plausible_tags(IMAGES, threshold=0.5)
    _assert_same_tag_lists(ours, REF_JSON["noaa_plausible_0.5"])


def test_estimate_top_tags(i2v_tagger):
    ours = i2v_tagger.estimate_top_tags(IMAGES, n_tag=5)
    _assert_same_tag_lists(ours, REF_JSON["noaa_top5"])


def test_estimate_specific_tags(i2v_tagger):
    ref = REF_JSON["noaa_specific"]
    ours = i2v_tagger.estimate_specific_tags(IMAGES, list(ref[0]))
    assert [list(d) for d in ours] == [list(d) for d in ref]
    for mine, theirs in zip(ours, ref):
        for tag, p in theirs.items():
            assert mine[tag] == pytest.approx(p, abs=1e-3)


def test_single_image_and_generator_inputs(i2v_tagger):
    one = i2v_tagger.predict_proba(IMAGES[0])
    gen = i2v_tagger.predict_proba(p for p in IMAGES[:2])
    assert one.shape == (1, 1539) and gen.shape == (2, 1539)
    np.testing.assert_allclose(one[0], REF["noaa_prob"][0], atol=1e-3)


def test_second_load_uses_cached_graph(model_store):
    import time

    from illust2vec import Illustration2Vec

    path = I2V_FIXTURES / "tag_w8_v1.caffemodel"
    Illustration2Vec.from_caffemodel(path, tags=I2V_FIXTURES / "tag_list.json", model_dir=model_store)
    cached = list((model_store / "onnx").glob("caffe-*.onnx"))
    assert cached, "the converted graph is stored"
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    start = time.perf_counter()
    again = Illustration2Vec.from_caffemodel(path, tags=I2V_FIXTURES / "tag_list.json", model_dir=model_store)
    assert time.perf_counter() - start < 5
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes, "no re-conversion"
    # ONNX Runtime's optimised graph for this machine is kept too, and gives the same numbers.
    assert list((model_store / "onnx" / "ort").glob("*.ort.onnx"))
    np.testing.assert_allclose(again.run(REF["net_input"]), REF["net_prob"], atol=1e-4, rtol=0)


def test_original_factory_functions_port_unchanged(model_store):
    """Code written for i2v runs after `import illust2vec as i2v`."""
    from PIL import Image

    import illust2vec as i2v

    model = i2v.make_i2v_with_chainer(str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), str(I2V_FIXTURES / "tag_list.json"),
                                      model_dir=model_store)
    images = [Image.open(p) for p in IMAGES]
    _assert_same_tag_lists(model.estimate_plausible_tags(images, threshold=0.5), REF_JSON["noaa_plausible_0.5"])
