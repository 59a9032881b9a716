"""The PixAI tagger v0.9 family on a tiny model in its export's file layout, against dghs-imgutils.

``tests/fixtures/pixai/oracle.json`` holds what imgutils 0.19 computed on the same tiny model
(``tests/pixai_support.py``, seeded: the test rebuilds the same bytes and checks their hash)
for anime36 and the odd pictures; see ``tests/fixtures/pixai/README.md``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ANIME36
from pixai_support import REPO, TAGS, model_digest, write_pixai_repo
from oracle_pixels import compared_keys
from test_hub import hub_env, prefill  # noqa: F401 (fixture)

FIXTURE = Path(__file__).parent / "fixtures" / "pixai"
ODD = Path(__file__).parent / "fixtures" / "kohya" / "images"
ORACLE = json.loads((FIXTURE / "oracle.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pixai_files(tmp_path_factory) -> dict[str, bytes]:
    files = write_pixai_repo(tmp_path_factory.mktemp("pixai") / "repo")
    assert model_digest(files) == ORACLE["model_sha256"], "the tiny model is not the one the oracle was made with"
    return files


@pytest.fixture()
def pixai_cache(pixai_files, hub_env, monkeypatch):  # noqa: F811
    snap = prefill(hub_env["cache"], REPO, pixai_files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snap


def _picture(key: str) -> Path:
    folder, name = key.split("/", 1)
    return (ANIME36 if folder == "anime36" else ODD) / name


def _flat(result: dict) -> list[str]:
    return sorted(t for tags in result.values() for t, _ in tags)


def test_equal_to_imgutils_on_anime36_and_odd_pictures(pixai_cache) -> None:
    from illust2vec.models.loading import load_model

    model = load_model("pixai-v0.9", task="tag")
    upright = load_model("pixai-v0.9", task="tag", exif_orientation="ignore")  # imgutils does not rotate by EXIF
    assert model.outputs == ("prob", "feature") and len(model.tags) == len(TAGS)
    assert model.recipe.size == (448, 448) and model.recipe.resize == "pil-bicubic"
    assert model.thresholds == {"general": 0.3, "character": 0.5, "default": 0.4}
    assert len(ORACLE["pictures"]) == 46
    keys = compared_keys(ORACLE)  # all 46 on the oracle's Pillow
    worst_p = worst_e = 0.0
    for key in keys:
        want = ORACLE["pictures"][key]
        m = upright if "exif" in key else model
        path = _picture(key)
        prob = m.predict_proba([path])[0]
        feat = m.extract_feature([path])[0]
        worst_p = max(worst_p, float(np.abs(prob - np.array(want["prediction"], float)).max()))
        worst_e = max(worst_e, float(np.abs(feat - np.array(want["embedding"], float)).max()))
        assert _flat(m.estimate_plausible_tags([path], threshold=None)[0]) == want["tags_default"], key
        assert _flat(m.estimate_plausible_tags([path], threshold=0.45)[0]) == want["tags_0.45"], key
    print(f"largest difference from imgutils: probability {worst_p:.2g}, embedding {worst_e:.2g}")
    assert worst_p <= 2e-6 and worst_e <= 2e-5, (worst_p, worst_e)


def test_acceptance_tiny_pixai_model_in_hub_cache_tags_offline(pixai_cache, hub_env, tmp_path) -> None:
    """`illust2vec tag` in a fresh process, HF_HUB_OFFLINE=1, no network (HF_ENDPOINT points at a closed port)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    pics = [ANIME36 / "00.jpg", ODD / "odd_rgba.png", ODD / "odd_cmyk.jpg"]
    for name in (REPO, "pixai-v0.9"):
        r = subprocess.run([sys.executable, "-m", "illust2vec", "tag", *map(str, pics), "-m", name,
                            "--format", "jsonl", "-q"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert len(rows) == 3
        for row, key in zip(rows, ("anime36/00.jpg", "odd/odd_rgba.png", "odd/odd_cmyk.jpg")):
            got = sorted(t for cat, tags in row["tags"].items() for t in tags)
            assert got == ORACLE["pictures"][key]["tags_default"], (name, key, row)


def test_models_list_names_the_new_families(capsys) -> None:
    from illust2vec.cli.main import main

    assert main(["models", "list", "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert {"pixai-v0.9", "camie-refined", "camie-initial", "cl-tagger-1.02", "deepdanbooru"} <= names
    assert {"wd14-moat-v2", "wd14-convnext-v2", "wd14-convnextv2-v2", "wd14-swinv2-v2", "wd14-vit-v2"} <= names


def test_unsupported_preprocessing_and_broken_files_are_clear_errors(pixai_files, tmp_path) -> None:
    from illust2vec.errors import Illust2VecError, ModelFormatError
    from illust2vec.models.families.exports import read_recipe
    from illust2vec.models.families.pixai import load_pixai_files, read_category_thresholds

    d = tmp_path / "repo"
    d.mkdir()
    for name, data in pixai_files.items():
        (d / name).write_bytes(data)
    stages = [{"type": "resize", "size": 448, "interpolation": "bicubic"}, {"type": "center_crop", "size": 448},
              {"type": "to_tensor"}]
    (d / "preprocess.json").write_text(json.dumps({"stages": stages}))
    with pytest.raises(ModelFormatError, match="shorter side"):
        read_recipe(d / "preprocess.json")
    (d / "preprocess.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="preprocess.json"):
        read_recipe(d / "preprocess.json")
    (d / "thresholds.csv").write_text("category,name,threshold\n0,general,high\n")
    with pytest.raises(ModelFormatError, match="thresholds.csv:2"):
        read_category_thresholds(d / "thresholds.csv")
    (d / "preprocess.json").write_bytes(pixai_files["preprocess.json"])
    (d / "selected_tags.csv").write_text("name,category\n1girl,0\n")
    with pytest.raises(Illust2VecError, match="1 tags"):
        load_pixai_files(d / "model.onnx", d / "selected_tags.csv", d / "preprocess.json")


def test_models_import_as_then_offline_without_the_hub_cache(pixai_files, hub_env, tmp_path, monkeypatch) -> None:  # noqa: F811
    from illust2vec.cli.main import main
    from illust2vec.models.loading import load_model

    d = tmp_path / "downloaded"
    d.mkdir()
    for name, data in pixai_files.items():
        (d / name).write_bytes(data)
    assert main(["models", "import", *(str(d / n) for n in sorted(pixai_files)), "--as", "pixai-v0.9"]) == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model("pixai-v0.9", task="tag")  # the Hub cache is empty: the store's files
    got = model.estimate_plausible_tags([ANIME36 / "00.jpg"], threshold=None)[0]
    assert _flat(got) == ORACLE["pictures"]["anime36/00.jpg"]["tags_default"]


def test_an_unknown_repository_in_pixai_layout_is_read_as_pixai(pixai_files, hub_env, monkeypatch) -> None:  # noqa: F811
    from illust2vec.models.loading import hub_family, load_model

    prefill(hub_env["cache"], "someone/pixai-finetune", pixai_files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_family("someone/pixai-finetune").name == "pixai"
    model = load_model("someone/pixai-finetune", task="tag")
    assert model.recipe.resize == "pil-bicubic" and model.threshold_compare == "ge"
