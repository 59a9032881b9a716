"""explain / edit / generate: the library calls and the commands, on the fixture tagger and real pictures."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ANIME36, I2V_FIXTURES
from PIL import Image

from illust2vec.cli.main import main

pytestmark = pytest.mark.skipif(
    not (I2V_FIXTURES / "tag_w8_v1.caffemodel").is_file() or not ANIME36.is_dir(),
    reason="../shared (i2v fixture models and data/anime36) is missing",
)

MIKU = I2V_FIXTURES / "images" / "miku.jpg"


def _model_flags(store) -> list[str]:
    return ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json"),
            "--model-dir", str(store), "--alpha", "drop", "-q"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _picture() -> str:
    return str(min(ANIME36.glob("*.jpg")))


def test_explain_json_maps_are_the_logit_maps(tmp_path, model_store, i2v_tagger, capsys):
    from illust2vec.semantic.explain import cam_maps

    out = tmp_path / "maps.json"
    code = main(["explain", str(MIKU), "--tags", "blue hair, 1girl", "--tags", "twintails", "--format", "json",
                 "-o", str(out), *_model_flags(model_store)])
    assert code == 0
    records = json.loads(out.read_text())
    assert [m["tag"] for m in records[0]["maps"]] == ["blue hair", "1girl", "twintails"]
    prob, maps = cam_maps(i2v_tagger, i2v_tagger.preprocess([MIKU]))
    for entry in records[0]["maps"]:
        grid = np.asarray(entry["map"])
        assert entry["method"] == "cam" and grid.shape == (7, 7)
        col = entry["column"]
        np.testing.assert_allclose(grid, maps[0, col], atol=1e-6)
        logit = np.log(prob[0, col] / (1 - prob[0, col]))
        assert abs(grid.mean() - logit) < 1e-4 and abs(entry["logit"] - logit) < 1e-4
        assert abs(entry["probability"] - i2v_tagger.predict_proba(MIKU)[0, col]) < 1e-5


def test_explain_default_tags_specific_view_and_pngs(tmp_path, model_store, i2v_tagger):
    from illust2vec.semantic.explain import explain

    plain = explain(i2v_tagger, MIKU, max_tags=3)
    assert len(plain.maps) == 3
    probs = [m.probability for m in plain.maps]
    assert probs == sorted(probs, reverse=True) and probs[0] == pytest.approx(i2v_tagger.predict_proba(MIKU).max())
    specific = explain(i2v_tagger, MIKU, [m.tag for m in plain.maps], specific=True)
    all_maps = np.stack([m.map for m in plain.maps])
    # map minus the mean of *all* tags' maps: the differences between two tags are unchanged
    np.testing.assert_allclose(specific.maps[0].map - specific.maps[1].map, all_maps[0] - all_maps[1], atol=1e-5)

    out_dir = tmp_path / "maps"
    assert main(["explain", str(MIKU), "--max-tags", "2", "-o", str(out_dir), *_model_flags(model_store)]) == 0
    files = sorted(out_dir.glob("*.png"))
    assert len(files) == 2 and all(f.name.startswith("miku_") for f in files)
    with Image.open(files[0]) as im:
        assert im.size == Image.open(MIKU).size
    sheet = tmp_path / "sheet.png"
    assert main(["explain", str(MIKU), "--max-tags", "3", "-o", str(sheet), *_model_flags(model_store)]) == 0
    with Image.open(sheet) as im:
        assert im.width > 256 and im.height > 256


def test_explain_gradient_saliency(i2v_tagger):
    from illust2vec.semantic.explain import explain

    result = explain(i2v_tagger, MIKU, ["blue hair", "1girl"], method="gradient", percentile=99, smooth=2)
    for m in result.maps:
        assert m.method == "gradient" and m.map.shape == (224, 224)
        assert m.map.min() >= 0 and m.map.max() == pytest.approx(1.0)
        assert (m.map >= 1.0).mean() == pytest.approx(0.01, abs=0.005)  # clipped at the 99th percentile
    raw = i2v_tagger.input_gradient(i2v_tagger.preprocess([MIKU]), tags=["blue hair"])
    assert np.corrcoef(np.abs(raw[0]).max(axis=0).ravel(), result.maps[0].map.ravel())[0, 1] > 0.3


def test_explain_reports_bad_inputs_and_goes_on(tmp_path, model_store, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    shutil.copy(MIKU, tmp_path / "good.jpg")
    out = tmp_path / "out.json"
    code = main(["explain", str(tmp_path), "--tags", "1girl", "--format", "json", "-o", str(out),
                 *_model_flags(model_store)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: {broken}" in err and "Traceback" not in err
    assert [r["file"] for r in json.loads(out.read_text())] == [str(tmp_path / "good.jpg")]
    assert main(["explain", str(MIKU), "--tags", "no such tag at all", "--format", "json",
                 *_model_flags(model_store)]) == 1
    assert "unknown tag" in capsys.readouterr().err


def test_explain_needs_an_output_for_png(model_store, capsys):
    assert main(["explain", str(MIKU), *_model_flags(model_store)]) == 1
    assert "--output" in capsys.readouterr().err


def test_edit_raises_and_lowers_tags_within_25_db(tmp_path, model_store, i2v_tagger, capsys):
    src = _picture()
    out = tmp_path / "edited.png"
    code = main(["edit", src, "--add", "1girl", "--remove", "black hair", "-o", str(out), "--format", "json",
                 *_model_flags(model_store)])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    before = i2v_tagger.predict_proba(src)[0]
    after = i2v_tagger.predict_proba(out)[0]  # re-tagged from the saved file
    add, remove = i2v_tagger.tag_columns(["1girl", "black hair"])
    assert after[add] >= min(before[add] + 0.2, 0.9)
    assert after[remove] < before[remove] - 0.05
    assert record["after"]["1girl"] == pytest.approx(float(after[add]), abs=1e-5)
    original = i2v_tagger.load(src)
    edited = np.asarray(Image.open(out).convert("RGB"))
    assert edited.shape == original.shape
    assert _psnr(original, edited) >= 25.0


def test_edit_keeps_its_bound(i2v_tagger):
    from illust2vec.semantic.edit import edit_image

    result = edit_image(i2v_tagger, MIKU, add=["blue hair"], steps=4, strength=4.0)
    assert result.steps == 4
    assert result.psnr >= 20 * np.log10(255 / 4.0) - 0.1  # RMS bound, plus the final rounding
    assert result.after["blue hair"] > result.before["blue hair"]
    unchanged = edit_image(i2v_tagger, MIKU, add=["blue hair"], steps=0)
    assert unchanged.psnr == float("inf")


def test_generate_makes_a_picture_that_scores_the_tags(tmp_path, model_store, i2v_tagger, capsys):
    out = tmp_path / "gen.png"
    assert main(["generate", "--tags", "1girl, smile", "-o", str(out), *_model_flags(model_store)]) == 0
    printed = capsys.readouterr().out
    prob = i2v_tagger.predict_proba(out)[0]
    cols = i2v_tagger.tag_columns(["1girl", "smile"])
    assert (prob[cols] >= 0.9).all()
    assert f"1girl: {prob[cols[0]]:.3f}" in printed


def test_edit_and_generate_usage_errors(tmp_path, model_store, capsys):
    assert main(["edit", str(MIKU), "-o", str(tmp_path / "x.png"), *_model_flags(model_store)]) == 1
    assert "--add or --remove" in capsys.readouterr().err
    assert main(["edit", str(MIKU), "--add", "1girl", "-o", str(tmp_path / "x.jpg"),
                 *_model_flags(model_store)]) == 1
    assert ".png" in capsys.readouterr().err
    assert main(["generate", "--tags", "no such tag at all", "-o", str(tmp_path / "g.png"),
                 *_model_flags(model_store)]) == 1
    assert "unknown tag" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
