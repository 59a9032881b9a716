"""What a command needs is checked before any work: one line, said once, before a picture is decoded.

Optional libraries are hidden in a fresh interpreter by a finder first on ``sys.meta_path`` that
refuses them (:func:`run_hidden`); read-only storage is a real read-only bind mount
(``test_reliability``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ANIME36, I2V_FIXTURES
from test_reliability import read_only, run_cli  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[1]
TAGGER = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]
EMBEDDER = ["--weights", str(I2V_FIXTURES / "feature_w16_e1024.caffemodel")]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Eight anime36 pictures and a broken one: if any were decoded, the broken one would say so."""
    if not (ANIME36.is_dir() and (I2V_FIXTURES / "tag_w8_v1.caffemodel").exists()):
        pytest.skip("shared data missing")
    folder = tmp_path_factory.mktemp("pictures")
    for src in sorted(ANIME36.glob("*.jpg"))[:8]:
        shutil.copy(src, folder / src.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def run_hidden(hidden: list[str], *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """``illust2vec ARGV`` in a fresh interpreter in which the ``hidden`` modules cannot be imported:
    a finder first on ``sys.meta_path`` refuses them, as an interpreter without the package would
    (``importlib.util.find_spec`` and ``import`` both fail, nothing is planted in ``sys.modules``)."""
    code = ("import importlib.abc, sys\n"
            f"HIDDEN = {set(hidden)!r}\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in HIDDEN:\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from illust2vec.cli.main import main\n"
            f"sys.exit(main({list(argv)!r}))")
    env = {k: v for k, v in os.environ.items() if k != "ILLUST2VEC_NVXS_LIBRARY"}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_a_missing_face_detector_is_one_line_not_one_per_picture(pictures, tmp_path):
    want = "pip install 'illust2vec[faces]'"
    for argv in (["faces", str(pictures), "-q"],
                 ["faces", str(pictures), "-q", "--workers", "2", "--crops", "crops"],
                 ["embed", str(pictures), "--faces", "-q", "-o", "f.npy", *EMBEDDER],
                 ["tag", str(pictures), "--faces-only", "-q", *TAGGER],
                 ["index", str(pictures), "--faces", "-q", "--db", "f.i2v", *EMBEDDER],
                 ["map", str(pictures), "--faces", "-q", "-o", "f.png", "--method", "pca", *EMBEDDER]):
        r = run_hidden(["animeface"], *argv, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, (argv, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], (argv, r.stderr)
        assert r.stdout == "" and list(tmp_path.iterdir()) == [], (argv, list(tmp_path.iterdir()))


def test_the_library_raises_a_missing_detector_once(tmp_path):
    code = ("import sys; sys.modules['animeface'] = None\n"
            "from illust2vec.errors import MissingDependency\n"
            "from illust2vec.faces import iter_detections\n"
            f"paths = {[str(p) for p in sorted(ANIME36.glob('*.jpg'))[:3]]!r}\n"
            "try:\n"
            "    list(iter_detections(paths, workers=0))\n"
            "except MissingDependency as exc:\n"
            "    print(type(exc).__name__)\n")
    env = {k: v for k, v in os.environ.items() if k != "ILLUST2VEC_NVXS_LIBRARY"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, "PYTHONPATH": str(ROOT / "src")})
    assert r.stdout.strip() == "FaceDetectorUnavailable", r.stderr


def test_missing_optional_libraries_are_said_before_the_work(pictures, tmp_path, tmp_path_factory):
    collection = tmp_path_factory.mktemp("db") / "pics.i2v"
    assert run_cli("index", pictures, "--db", collection, "-q", *EMBEDDER)[0] == 1  # broken.jpg
    cases = [
        (["pyarrow"], ["tag", str(pictures), "-q", "-o", "tags.parquet", *TAGGER], "illust2vec[parquet]"),
        (["pyarrow"], ["embed", str(pictures), "-q", "-o", "f.parquet", *EMBEDDER], "illust2vec[parquet]"),
        (["openTSNE"], ["map", str(pictures), "-q", "-o", "m.png", *EMBEDDER], "illust2vec[maps]"),
        (["umap"], ["map", str(pictures), "-q", "-o", "m.png", "--method", "umap", *EMBEDDER], "illust2vec[umap]"),
        (["onnxruntime"], ["demo", "--out", "demo", "-q"], "illust2vec[cpu]"),
        (["onnxruntime"], ["tag", str(pictures), "-q", *TAGGER], "illust2vec[cpu]"),
        (["onnxruntime"], ["map", str(pictures), "-q", "-o", "m.png"], "illust2vec[cpu]"),  # no "note:" first
        (["faiss"], ["dupes", "--db", str(collection), "-o", "d.csv"], "illust2vec[collections]"),
    ]
    for hidden, argv, want in cases:
        r = run_hidden(hidden, *argv, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and want in lines[0], (argv, r.stderr)
        assert list(tmp_path.iterdir()) == [], (argv, list(tmp_path.iterdir()))  # nothing drawn, nothing written


def test_read_only_outputs_fail_at_once(pictures, read_only, tmp_path):
    (tmp_path / "src").mkdir()
    ro = read_only(tmp_path / "src")
    (tmp_path / "db").mkdir()
    cases = [
        ["tag", pictures, *TAGGER, "-o", ro / "tags.json"],
        ["tag", pictures, *TAGGER, "-o", ro / "new" / "tags.json"],
        ["tag", pictures, *TAGGER, "--captions", "--caption-dir", ro],
        ["tag", pictures, *TAGGER, "--captions", "--caption-dir", ro / "captions"],
        ["tag", pictures, *TAGGER, "--stats", ro / "freq.csv"],
        ["embed", pictures, *EMBEDDER, "-o", ro / "f.npy"],
        ["map", pictures, *EMBEDDER, "--method", "pca", "-o", tmp_path / "m.png", "--html", ro / "m.html"],
        ["faces", pictures, "--crops", ro / "crops"],
        ["explain", pictures, *TAGGER, "-o", ro / "maps"],
        ["index", pictures, *EMBEDDER, "--db", ro / "pics.i2v"],
    ]
    for argv in cases:
        rc, out, err = run_cli(*argv, "-q")
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1, (argv, err)  # no "broken.jpg" line: nothing was decoded
        assert lines[0].startswith(f"error: {ro}") and "read-only" in lines[0].lower(), (argv, err)
    assert list(ro.iterdir()) == []
    assert not (tmp_path / "m.png").exists()


def test_a_folder_given_as_the_output_file_fails_at_once(pictures, tmp_path):
    (tmp_path / "tags.json").mkdir()
    rc, out, err = run_cli("tag", pictures, *TAGGER, "-q", "-o", tmp_path / "tags.json")
    assert rc == 1 and err.strip().splitlines() == [
        f"error: {tmp_path / 'tags.json'}: is a folder; give a file name for -o (e.g. {tmp_path / 'tags.json' / 'out'}.json)"]
