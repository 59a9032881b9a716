"""``tag --captions --compat kohya`` writes the bytes kohya-ss' tagger script wrote (tests/fixtures/kohya).

The fixtures are the caption files of kohya-ss' ``finetune/tag_images_by_wd14_tagger.py``
run on held-out pictures (a third of anime36 and odd ones: RGBA, palette with transparency,
grey, CMYK, 40x30, 300x700, 448, 896, 1000x700 WebP, EXIF-rotated) with a held-out tiny
model (tests/kohya_support.py), one folder per flag case (cases.json); README.md there says
how they were made.  Each case runs here with illust2vec's equivalent flags and compares bytes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kohya_support import ANIME36, FIXTURES, REPO, copy_pictures, write_parity_model

CASES = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))

pytestmark = pytest.mark.skipif(not ANIME36.is_dir(), reason=f"shared data not found: {ANIME36}")


@pytest.fixture(scope="module")
def kohya_models(tmp_path_factory) -> Path:
    """kohya-ss' model folder layout: MODEL_DIR/ORG_NAME/{model.onnx, selected_tags.csv}."""
    root = tmp_path_factory.mktemp("wd14_tagger_model")
    write_parity_model(root / REPO.replace("/", "_"))
    return root


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kohya-pictures")
    copy_pictures(folder)
    return folder


def _run(case: str, pictures: Path, models: Path, tmp_path: Path, capsys, monkeypatch, extra=()) -> Path:
    from illust2vec.cli.main import main

    spec = CASES[case]
    folder = tmp_path / case
    shutil.copytree(pictures, folder)
    for name, text in spec.get("existing", {}).items():
        (folder / name).write_bytes(text.encode("utf-8"))
    monkeypatch.setenv("ILLUST2VEC_HOME", str(models.parent / "store"))
    capsys.readouterr()
    code = main(["tag", str(folder), "--captions", "--compat", "kohya", "--repo_id", REPO, "--model_dir", str(models),
                 "-q", *spec["illust2vec"], *extra])
    assert code == 0, capsys.readouterr().err
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_captions_byte_identical_to_kohya(case, pictures, kohya_models, tmp_path, capsys, monkeypatch) -> None:
    folder = _run(case, pictures, kohya_models, tmp_path, capsys, monkeypatch)
    expected_dir = FIXTURES / "captions" / case
    expected = sorted(p.name for p in expected_dir.glob("*.txt") if p.name != "stdout.txt")
    assert sorted(p.name for p in folder.glob("*.txt")) == expected
    for name in expected:
        assert (folder / name).read_bytes() == (expected_dir / name).read_bytes(), (case, name)
    if CASES[case].get("stdout"):
        assert capsys.readouterr().out == (expected_dir / "stdout.txt").read_text(encoding="utf-8")


def test_default_mode_differs_where_documented(pictures, kohya_models, tmp_path, capsys, monkeypatch) -> None:
    """Without --compat the reference behaviour stays: probability order, spaces, EXIF applied, bicubic."""
    from illust2vec.cli.main import main

    folder = tmp_path / "plain"
    shutil.copytree(pictures, folder)
    monkeypatch.setenv("ILLUST2VEC_HOME", str(kohya_models.parent / "store"))
    assert main(["tag", str(folder), "--captions", "--repo_id", REPO, "--model_dir", str(kohya_models), "-q"]) == 0
    kohya = FIXTURES / "captions" / "default"
    same = [p.name for p in sorted(folder.glob("*.txt")) if p.read_bytes() == (kohya / p.name).read_bytes()]
    assert same == []  # spaces instead of underscores, most probable first, 0.85 for characters
    assert "_" not in (folder / "00.txt").read_text().replace("^_^", "").replace("0_0", "")


def test_compat_pixels_equal_kohya_path_and_switches_are_independent(pictures, kohya_models) -> None:
    """The pieces of --compat kohya are library options: the same recipe by hand gives the same tensors."""
    from illust2vec.models.loading import load_model

    folder = kohya_models / REPO.replace("/", "_")
    files = sorted(pictures.glob("odd_*"))
    store = kohya_models.parent / "store"
    compat = load_model(folder / "model.onnx", tags=folder / "selected_tags.csv", model_dir=store, compat="kohya")
    by_hand = load_model(folder / "model.onnx", tags=folder / "selected_tags.csv", model_dir=store,
                         resize="area-lanczos", exif_orientation="ignore")
    assert compat.recipe == by_hand.recipe
    np.testing.assert_array_equal(compat.preprocess(files), by_hand.preprocess(files))
    rotated = [pictures / "odd_exif_rotated.jpg"]
    upright = load_model(folder / "model.onnx", tags=folder / "selected_tags.csv", model_dir=store,
                         compat="kohya", exif_orientation="apply")
    assert upright.recipe.resize == "area-lanczos"  # an explicit switch wins over the mode, the rest stays
    assert not np.array_equal(upright.preprocess(rotated), compat.preprocess(rotated))


WEBUI_CASES = json.loads((FIXTURES / "webui_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", sorted(WEBUI_CASES))
def test_captions_byte_identical_to_the_wd14_webui_extension(case, pictures, kohya_models, tmp_path, monkeypatch,
                                                             capsys) -> None:
    """The extension's own postprocess_tags and pixel path (run outside the web UI; README.md) on the same set."""
    from illust2vec.cli.main import main

    folder = tmp_path / case
    shutil.copytree(pictures, folder)
    model = kohya_models / REPO.replace("/", "_")
    monkeypatch.setenv("ILLUST2VEC_HOME", str(kohya_models.parent / "store"))
    code = main(["tag", str(folder), "--captions", "--compat", "wd14-webui", "--weights", str(model / "model.onnx"),
                 "--tag-list", str(model / "selected_tags.csv"), "-q", *WEBUI_CASES[case]["illust2vec"]])
    assert code == 0, capsys.readouterr().err
    expected_dir = FIXTURES / "webui" / case
    for expected in sorted(expected_dir.glob("*.txt")):
        assert (folder / expected.name).read_bytes() == expected.read_bytes(), (case, expected.name)
    # the extension's default action on an existing caption is "ignore"
    (folder / "00.txt").write_text("mine", encoding="utf-8")
    assert main(["tag", str(folder / "00.jpg"), "--captions", "--compat", "wd14-webui", "--weights",
                 str(model / "model.onnx"), "--tag-list", str(model / "selected_tags.csv"), "-q"]) == 0
    assert (folder / "00.txt").read_text(encoding="utf-8") == "mine"
