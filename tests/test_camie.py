"""The Camie tagger family (refined and initial) on a tiny model in its export's layout, against dghs-imgutils.

``tests/fixtures/camie/oracle.json`` holds what imgutils 0.19 computed on the same tiny model
(``tests/camie_support.py``, seeded; the hashes are checked); see ``tests/fixtures/camie/README.md``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from camie_support import REPO, TAGS, digests, write_camie_repo
from conftest import ANIME36
from oracle_pixels import compared_keys
from test_hub import hub_env, prefill  # noqa: F401 (fixture)

FIXTURE = Path(__file__).parent / "fixtures" / "camie"
ODD = Path(__file__).parent / "fixtures" / "kohya" / "images"
ORACLE = json.loads((FIXTURE / "oracle.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def camie_files(tmp_path_factory) -> dict[str, bytes]:
    files = write_camie_repo(tmp_path_factory.mktemp("camie") / "repo")
    assert digests(files) == ORACLE["model_sha256"], "the tiny model is not the one the oracle was made with"
    return files


def _flat(result: dict) -> list[str]:
    return sorted(t for cat, tags in result.items() if cat != "rating" for t, _ in tags)


@pytest.mark.parametrize("stage", ["refined", "initial"])
def test_equal_to_imgutils(camie_files, hub_env, monkeypatch, stage) -> None:  # noqa: F811
    from illust2vec.models.loading import load_model

    prefill(hub_env["cache"], REPO, camie_files)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(f"camie-{stage}", task="tag")
    upright = load_model(f"camie-{stage}", task="tag", exif_orientation="ignore")  # imgutils does not rotate
    assert model.outputs == ("prob", "feature") and len(model.tags) == len(TAGS)
    assert model.recipe.size == (512, 512) and model.recipe.mean == (0.485, 0.456, 0.406)
    assert model.thresholds["general"] == 0.35 and model.thresholds["year"] == 0.4
    keys = compared_keys(ORACLE)  # all 46 on the oracle's Pillow
    paths = [(ANIME36 if k.startswith("anime36/") else ODD) / k.split("/", 1)[1] for k in keys]
    normal = [i for i, k in enumerate(keys) if "exif" not in k]
    rotated = [i for i, k in enumerate(keys) if "exif" in k]
    prob = np.empty((len(keys), len(TAGS)))
    feat = np.empty((len(keys), 12))
    for rows, m in ((normal, model), (rotated, upright)):
        prob[rows] = m.predict_proba([paths[i] for i in rows])
        feat[rows] = m.extract_feature([paths[i] for i in rows])
        for i, got, got045 in zip(rows, m.estimate_plausible_tags([paths[i] for i in rows], threshold=None),
                                  m.estimate_plausible_tags([paths[i] for i in rows], threshold=0.45)):
            want = ORACLE["pictures"][keys[i]][stage]
            assert _flat(got) == want["tags_default"], keys[i]
            assert _flat(got045) == want["tags_0.45"], keys[i]
            assert [t for t, _ in got["rating"]] and len(got["rating"]) == 4  # ratings whole
    want_p = np.array([[float(v) for v in ORACLE["pictures"][k][stage]["prediction"]] for k in keys])
    want_e = np.array([[float(v) for v in ORACLE["pictures"][k][stage]["embedding"]] for k in keys])
    print(f"{stage}: largest difference from imgutils: probability {np.abs(prob - want_p).max():.2g}, "
          f"embedding {np.abs(feat - want_e).max():.2g}")
    assert np.abs(prob - want_p).max() <= 2e-6 and np.abs(feat - want_e).max() <= 2e-5


def test_threshold_modes_and_errors(camie_files, tmp_path) -> None:
    from illust2vec.errors import ModelFormatError
    from illust2vec.models.families.camie import read_camie_thresholds

    path = tmp_path / "threshold.json"
    path.write_bytes(camie_files["initial/threshold.json"])
    assert read_camie_thresholds(path)["general"] == 0.35
    assert read_camie_thresholds(path, "high_recall")["general"] == 0.39
    with pytest.raises(ModelFormatError, match="unknown Camie threshold mode"):
        read_camie_thresholds(path, "loose")
    path.write_text('{"general": {"balanced": {}}}')
    with pytest.raises(ModelFormatError, match="threshold.json"):
        read_camie_thresholds(path)
