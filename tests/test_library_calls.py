"""``illust2vec.tag_files`` / ``embed_files``: the library calls give what ``illust2vec tag`` / ``embed`` give.

The commands run in a subprocess, as a user runs them, on anime36 plus two files
that are not pictures; the calls run here on the same folder with the same i2v
fixture models.  Both go through one pipeline (readers -> runner -> writers).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import illust2vec
from conftest import ANIME36, I2V_FIXTURES

TAG = ["--weights", I2V_FIXTURES / "tag_w8_v1.caffemodel", "--tag-list", I2V_FIXTURES / "tag_list.json"]
FEAT = ["--weights", I2V_FIXTURES / "feature_w16_e1024.caffemodel"]
BAD = ("broken.jpg", "notes.png")


def cli(*args, store):
    env = {**os.environ, "ILLUST2VEC_HOME": str(store), "ILLUST2VEC_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "illust2vec", *map(str, args), "--alpha", "drop", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("anime36-and-bad")
    for p in sorted(ANIME36.glob("*.jpg")):
        shutil.copy(p, root / p.name)
    (root / BAD[0]).write_bytes((ANIME36 / "02.jpg").read_bytes()[:2000])
    (root / BAD[1]).write_text("not a picture")
    return root


def test_tag_files_equals_the_tag_command(folder, i2v_tagger, model_store, tmp_path):
    result = illust2vec.tag_files(folder, model=i2v_tagger)
    assert isinstance(result, illust2vec.TagResult) and result.model == i2v_tagger.name
    assert sorted(os.path.basename(e.source) for e in result.errors) == sorted(BAD)
    assert all(e.message for e in result.errors)
    assert len(result.files) == len(list(ANIME36.glob("*.jpg")))

    r = cli("tag", folder, *TAG, "-o", tmp_path / "probs.npy", store=model_store)
    assert r.returncode == 1, r.stderr  # the exit code says some failed
    for name in BAD:
        assert sum(name in line for line in r.stderr.splitlines() if line.startswith("error:")) == 1
    matrix = np.load(tmp_path / "probs.npy")
    paths = (tmp_path / "probs.paths.txt").read_text(encoding="utf-8").splitlines()
    good = [i for i, p in enumerate(paths) if not p.endswith(BAD)]
    assert [paths[i] for i in good] == [f.path for f in result.files]
    assert np.isnan(matrix[[i for i in range(len(paths)) if i not in good]]).all()
    np.testing.assert_allclose(result.probabilities, matrix[good], rtol=0, atol=1e-6)

    r = cli("tag", folder, *TAG, "-o", tmp_path / "tags.json", store=model_store)
    records = json.loads((tmp_path / "tags.json").read_text(encoding="utf-8"))
    assert [rec["path"] for rec in records] == [f.path for f in result.files]
    for rec, f in zip(records, result.files):
        assert {c: sorted(t) for c, t in rec["tags"].items()} == {c: sorted(t) for c, t in f.tags.items()}


def test_embed_files_equals_the_embed_command(folder, i2v_features, model_store, tmp_path):
    seen = []
    result = illust2vec.embed_files(folder, model=i2v_features, on_error=seen.append)
    assert isinstance(result, illust2vec.EmbedResult)
    assert seen == result.errors and sorted(os.path.basename(e.source) for e in seen) == sorted(BAD)
    r = cli("embed", folder, *FEAT, "-o", tmp_path / "f.npy", store=model_store)
    assert r.returncode == 1, r.stderr
    assert (tmp_path / "f.paths.txt").read_text(encoding="utf-8").splitlines() == result.paths
    np.testing.assert_allclose(result.vectors, np.load(tmp_path / "f.npy"), rtol=0, atol=1e-5)

    codes = illust2vec.embed_files(folder, model=i2v_features, binary=True)
    r = cli("embed", folder, *FEAT, "--binary", "-o", tmp_path / "c.npy", store=model_store)
    np.testing.assert_array_equal(codes.vectors, np.load(tmp_path / "c.npy"))


def test_on_error_raise_names_the_file(folder, i2v_tagger):
    with pytest.raises(illust2vec.Illust2VecError, match="broken.jpg|notes.png"):
        illust2vec.tag_files(folder, model=i2v_tagger, on_error="raise")


def test_in_graph_preprocessing_gives_the_same_tags(folder, i2v_tagger, model_store, tmp_path):
    """``--in-graph`` (the runner's option for ``--device cuda``) is exact on the CPU provider."""
    plain = illust2vec.tag_files(folder, model=i2v_tagger)
    r = cli("tag", folder, *TAG, "--in-graph", "-o", tmp_path / "probs.npy", store=model_store)
    assert r.returncode == 1 and r.stderr.count("error:") == len(BAD), r.stderr
    matrix = np.load(tmp_path / "probs.npy")
    np.testing.assert_allclose(matrix[np.isfinite(matrix[:, 0])], plain.probabilities, rtol=0, atol=1e-6)
