"""``illust2vec tag`` / ``embed`` / ``models`` on real files, in a subprocess like a user runs them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ANIME36, I2V_FIXTURES

TAG = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]
FEAT = ["--weights", str(I2V_FIXTURES / "feature_w16_e1024.caffemodel")]


def cli(*args, store, cwd=None):
    env = {**os.environ, "ILLUST2VEC_HOME": str(store), "ILLUST2VEC_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "illust2vec", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A folder like users have: good images, names with spaces and non-ASCII, broken files."""
    root = tmp_path_factory.mktemp("messy")
    for name in ("00.jpg", "01.jpg"):
        shutil.copy(ANIME36 / name, root / name)
    (root / "sub dir").mkdir()
    shutil.copy(I2V_FIXTURES / "images" / "miku_rgba.png", root / "sub dir" / "ミク 01.png")
    (root / "broken.jpg").write_bytes((ANIME36 / "02.jpg").read_bytes()[:3000])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_tag_reports_each_bad_file_and_keeps_going(messy, model_store):
    r = cli("tag", messy, *TAG, "--threshold", "0.6", "--format", "json", "-q", store=model_store)
    assert r.returncode == 1
    records = json.loads(r.stdout)
    assert sorted(os.path.basename(x["path"]) for x in records) == ["00.jpg", "01.jpg", "ミク 01.png"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    for name in ("broken.jpg", "empty.png", "notes.jpg"):
        assert sum(name in line for line in errors) == 1
    assert "3 failed" in r.stderr
    for rec in records:
        assert set(rec["tags"]) == {"general", "character", "copyright", "rating"}
        assert len(rec["tags"]["rating"]) == 3
        assert all(p > 0.6 for cat in ("general", "character", "copyright") for p in rec["tags"][cat].values())


def test_tag_outputs_match_library(messy, model_store, i2v_tagger):
    out = messy.parent / "probs.npy"
    r = cli("tag", messy / "00.jpg", messy / "empty.png", messy / "01.jpg", *TAG, "--alpha", "drop",
            "--format", "npy", "-o", out, "-q", store=model_store)
    assert r.returncode == 1
    matrix = np.load(out)
    assert matrix.shape == (3, 1539)
    assert np.isnan(matrix[1]).all()
    expected = i2v_tagger.predict_proba([messy / "00.jpg", messy / "01.jpg"])
    np.testing.assert_allclose(matrix[[0, 2]], expected, atol=1e-6)
    assert out.with_suffix(".paths.txt").read_text().splitlines()[1].endswith("empty.png")

    r = cli("tag", messy / "00.jpg", *TAG, "--general", "0.7", "--character", "0.99", "--copyright", "0.5",
            "--format", "csv", "-q", store=model_store)
    assert r.returncode == 0
    rows = [line.split(",") for line in r.stdout.strip().splitlines()[1:]]
    prob = expected[0]
    names = i2v_tagger.tags.names
    want = {("general", n) for n, p, c in zip(names, prob, i2v_tagger.tags.categories) if c == "general" and p > 0.7}
    want |= {("copyright", n) for n, p, c in zip(names, prob, i2v_tagger.tags.categories) if c == "copyright" and p > 0.5}
    got = {(row[1], row[2]) for row in rows if row[1] != "rating"}
    assert got == want


def test_captions(messy, model_store, tmp_path):
    captions = tmp_path / "caps"
    r = cli("tag", messy / "00.jpg", messy / "sub dir", *TAG, "--captions", "--caption-dir", captions,
            "--threshold", "0.7", "--underscores", "--rating", "--exclude", "umbrella, cover", "-q",
            "--format", "jsonl", "-o", tmp_path / "t.jsonl", store=model_store)
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(captions).as_posix() for p in captions.rglob("*.txt"))
    assert files == ["00.txt", "sub dir/ミク 01.txt"]
    text = (captions / "00.txt").read_text().strip()
    words = text.split(", ")
    rec = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert words[0] == next(iter(rec["tags"]["rating"]))
    assert "umbrella" not in words and "cover" not in words
    assert all(" " not in w for w in words)
    char = [t.replace(" ", "_") for t in rec["tags"]["character"]]
    assert words[1 : 1 + len(char)] == char  # character tags come first after the rating

    (captions / "00.txt").write_text("keep me")
    r = cli("tag", messy / "00.jpg", *TAG, "--captions", "--caption-dir", captions, "--if-exists", "skip",
            "-q", "-o", tmp_path / "x.json", store=model_store)
    assert r.returncode == 0 and (captions / "00.txt").read_text() == "keep me"
    r = cli("tag", messy / "00.jpg", *TAG, "--captions", "--caption-dir", captions, "--if-exists", "append",
            "--threshold", "0.7", "-q", "-o", tmp_path / "x.json", store=model_store)
    assert (captions / "00.txt").read_text().startswith("keep me, ")


def test_embed_npy_and_parquet(messy, model_store, i2v_features, tmp_path):
    r = cli("embed", messy, *FEAT, "-o", tmp_path / "f.parquet", "-q", store=model_store)
    assert r.returncode == 1 and "3 failed" in r.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "f.parquet")
    paths = table.column("path").to_pylist()
    vectors = np.asarray(table.column("vector").to_pylist(), np.float32)
    assert [os.path.basename(p) for p in paths] == ["00.jpg", "01.jpg", "ミク 01.png"]
    np.testing.assert_allclose(vectors, i2v_features.extract_feature(paths, alpha="white"), atol=1e-5)

    r = cli("embed", messy / "00.jpg", messy / "01.jpg", *FEAT, "--binary", "-o", tmp_path / "c.npy", "-q",
            store=model_store)
    assert r.returncode == 0
    codes = np.load(tmp_path / "c.npy")
    assert codes.dtype == np.uint8 and codes.shape == (2, 128)
    np.testing.assert_array_equal(codes, i2v_features.extract_binary_feature([messy / "00.jpg", messy / "01.jpg"],
                                                                             alpha="white"))


def test_missing_weights_say_what_to_do(model_store, tmp_path):
    r = cli("tag", ANIME36 / "00.jpg", "--model", "i2v-tag", "--model-dir", tmp_path / "empty-store",
            store=model_store)
    assert r.returncode == 1
    assert "illust2vec_tag_ver200.caffemodel" in r.stderr and "tag_list.json.gz" in r.stderr
    assert "illust2vec models import" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("tag", ANIME36 / "00.jpg", "--model", "nope", store=model_store)
    assert r.returncode == 1 and "i2v-tag" in r.stderr and "Traceback" not in r.stderr


def test_models_import_then_list(model_store, tmp_path):
    store = tmp_path / "store"
    src = tmp_path / "illust2vec_tag_ver200.caffemodel"
    shutil.copy(I2V_FIXTURES / "tag_w8_v1.caffemodel", src)
    tags = tmp_path / "tag_list.json"
    shutil.copy(I2V_FIXTURES / "tag_list.json", tags)
    bad = tmp_path / "illust2vec_ver200.caffemodel"
    bad.write_bytes(b"\x0a\x05trunc")
    r = cli("models", "--model-dir", store, "import", src, tags, bad, store=model_store)
    assert r.returncode == 1 and "illust2vec_ver200.caffemodel" in r.stderr and "nothing was imported" in r.stderr
    assert not (store / "files").exists() or not any((store / "files").iterdir())  # all or nothing
    assert not (store / "tmp").exists() or not any((store / "tmp").iterdir())
    r = cli("models", "--model-dir", store, "import", src, tags, store=model_store)
    assert r.returncode == 0, r.stderr
    r = cli("models", "--model-dir", store, "list", "i2v-*", "--json", store=model_store)
    present = {m["name"]: m["present"] for m in json.loads(r.stdout)}
    assert present == {"i2v-tag": True, "i2v-feature": False}
    r = cli("tag", ANIME36 / "00.jpg", "--model-dir", store, "--threshold", "0.7", "-q", store=model_store)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["tags"]["character"]


def test_engine_defaults_follow_the_device():
    import os

    from illust2vec.cli.common import resolve_engine_defaults
    from illust2vec.cli.main import build_parser

    parser = build_parser()
    cpu = parser.parse_args(["tag", "x.jpg"])
    resolve_engine_defaults(cpu)
    assert (cpu.batch_size, cpu.workers) == (16, 0)
    gpu = parser.parse_args(["embed", "x.jpg", "-o", "f.npy", "--device", "cuda:1"])
    resolve_engine_defaults(gpu)
    assert (gpu.batch_size, gpu.workers) == (128, max(2, (os.cpu_count() or 2) - 1))
    given = parser.parse_args(["index", "d", "--device", "cuda", "--batch-size", "7", "--workers", "0"])
    resolve_engine_defaults(given)
    assert (given.batch_size, given.workers) == (7, 0)
    faces = parser.parse_args(["faces", "d"])  # its --workers means detection processes: left alone
    resolve_engine_defaults(faces)
    assert faces.workers is None
