"""One product: the CLI surface, output formats, file modes, no network unless asked, packaging.

Everything runs for real: the i2v oracle tagger, the bundled offline embedder, a
collection on disk, subprocesses with a listening socket as their proxy, and pip's
resolver on this project's metadata.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ANIME36, I2V_FIXTURES

ROOT = Path(__file__).resolve().parents[1]
TAGGER = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tag-list", str(I2V_FIXTURES / "tag_list.json")]


def run_main(*args: object) -> tuple[int, str, str]:
    from illust2vec.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    for p in sorted(ANIME36.glob("*.jpg"))[:6]:
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(scope="module")
def collection(pictures, model_store, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("col") / "db"
    rc, _, err = run_main("index", pictures, "--db", db, "--model", "generic-effnet-lite0", "--model-dir",
                          model_store, "--quiet")
    assert rc == 0, err
    return db


# -- output formats ----------------------------------------------------------------------------------------

def test_tag_output_format_follows_the_extension(pictures, model_store, tmp_path):
    base = [pictures / "00.jpg", pictures / "01.jpg", *TAGGER, "--model-dir", model_store, "-q"]
    assert run_main("tag", *base, "-o", tmp_path / "t.csv")[0] == 0
    rows = list(csv.DictReader((tmp_path / "t.csv").open(encoding="utf-8")))
    assert rows and set(rows[0]) == {"path", "category", "tag", "probability", "model"}
    assert {r["path"] for r in rows} == {str(pictures / "00.jpg"), str(pictures / "01.jpg")}

    assert run_main("tag", *base, "-o", tmp_path / "t.jsonl")[0] == 0
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records] == [str(pictures / "00.jpg"), str(pictures / "01.jpg")]
    assert all(r["model"] == "tag_w8_v1.caffemodel" for r in records)

    import pyarrow.parquet as pq

    assert run_main("tag", *base, "-o", tmp_path / "t.parquet")[0] == 0
    table = pq.read_table(tmp_path / "t.parquet").to_pylist()
    assert [(r["path"], r["category"], r["tag"]) for r in table] == [(r["path"], r["category"], r["tag"]) for r in rows]
    np.testing.assert_allclose([r["probability"] for r in table], [float(r["probability"]) for r in rows], atol=1e-6)

    assert run_main("tag", *base, "-o", tmp_path / "t.npz")[0] == 0
    npz = np.load(tmp_path / "t.npz")
    assert npz["matrix"].shape == (2, 1539) and str(npz["model"]) == "tag_w8_v1.caffemodel"
    assert list(npz["columns"][:2]) == json.load(open(I2V_FIXTURES / "tag_list.json"))[:2] or len(npz["columns"]) == 1539

    # --format overrides the extension; an unknown extension says what to do
    assert run_main("tag", *base, "-o", tmp_path / "t.txt", "--format", "json")[0] == 0
    assert json.loads((tmp_path / "t.txt").read_text())[0]["path"] == str(pictures / "00.jpg")
    rc, _, err = run_main("tag", *base, "-o", tmp_path / "t.xlsx")
    assert rc == 1 and "--format" in err and not (tmp_path / "t.xlsx").exists()


def test_failed_run_keeps_the_previous_output(pictures, model_store, tmp_path):
    out = tmp_path / "tags.json"
    out.write_text('["the previous good result"]\n')
    rc, _, err = run_main("tag", pictures / "00.jpg", "--model", "i2v-tag", "--model-dir", tmp_path / "empty",
                          "-o", out, "-q")
    assert rc == 1 and "error:" in err
    assert out.read_text() == '["the previous good result"]\n'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("command", [
    ["search", "{query}", "--db", "{db}", "-k", "3", "--include-query"],
    ["dupes", "--db", "{db}", "--max-distance", "4095"],
    ["export", "--db", "{db}", "--no-vectors", "--no-codes"],
    ["faces", "{query}"],
    ["models", "list"],
    ["models", "info", "generic-effnet-lite0"],
])
def test_format_json_prints_valid_json(command, collection, pictures, model_store):
    args = [a.format(db=collection, query=pictures / "00.jpg") for a in command]
    rc, out, err = run_main(*args, "--format", "json", "--quiet", *(
        ["--model-dir", str(model_store)] if command[0] in ("search", "models") else []))
    assert rc == 0, err
    data = json.loads(out)
    assert data
    if command[0] == "search":
        assert data[0]["path"] == str(pictures / "00.jpg") and data[0]["model"] == "generic-effnet-lite0"
    if command[0] == "dupes":
        assert sorted(p for g in data for p in g["paths"]) == sorted(str(p) for p in pictures.iterdir())


def test_search_and_dupes_write_csv(collection, pictures, tmp_path):
    assert run_main("search", pictures / "01.jpg", "--db", collection, "-k", "2", "--include-query",
                    "-o", tmp_path / "h.csv")[0] == 0
    rows = list(csv.DictReader((tmp_path / "h.csv").open(encoding="utf-8")))
    assert [int(r["rank"]) for r in rows] == [1, 2] and rows[0]["path"] == str(pictures / "01.jpg")


def test_models_info_works_for_every_model(model_store):
    from illust2vec.models.catalog import list_models

    for name in list_models():
        rc, out, err = run_main("models", "info", name, "--model-dir", model_store)
        assert rc == 0, (name, err)
        record = json.loads(out)
        assert record["name"] == name and record["files"] and "recipe" in record


def test_models_options_after_the_action(model_store, tmp_path):
    rc, out, _ = run_main("models", "list", "--model-dir", tmp_path / "empty", "--format", "json")
    assert rc == 0
    present = {m["name"]: m["present"] for m in json.loads(out)}
    assert present["generic-effnet-lite0"] is True and present["i2v-tag"] is False


# -- one surface -----------------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_every_command_has_examples_and_quiet():
    from illust2vec.cli.main import build_parser

    commands = dict(_subparsers(build_parser()))
    assert {"tag", "embed", "index", "search", "dupes", "export", "faces", "map", "demo", "video",
            "models", "models list", "models info"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "examples:" in text, f"'illust2vec {name} --help' shows no examples"
        assert "--quiet" in text, f"'illust2vec {name}' has no --quiet"


def test_thresholds_are_probabilities(pictures):
    from illust2vec.cli.main import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
        parser.parse_args(["tag", str(pictures), "--threshold", "1.5"])
    assert "between 0 and 1" in err.getvalue()
    assert parser.parse_args(["tag", str(pictures), "--general", "0.3"]).general == 0.3


def test_old_tags_option_still_works_and_says_so(pictures, model_store):
    rc, out, err = run_main("tag", pictures / "00.jpg", "--weights", I2V_FIXTURES / "tag_w8_v1.caffemodel",
                            "--tags", I2V_FIXTURES / "tag_list.json", "--model-dir", model_store, "-q")
    assert rc == 0 and "--tags is deprecated; use --tag-list" in err
    assert json.loads(out)[0]["tags"]


def test_captions_alone_print_nothing_and_honour_the_umask(pictures, model_store, tmp_path):
    work = tmp_path / "set"
    shutil.copytree(pictures, work)
    existing = work / "01.txt"
    existing.write_text("old")
    existing.chmod(0o600)
    old = os.umask(0o022)
    try:
        rc, out, _ = run_main("tag", work, *TAGGER, "--model-dir", model_store, "--captions", "-q")
        assert rc == 0 and out == ""
        assert stat.S_IMODE((work / "00.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600  # a replaced file keeps its mode
        rc, _, _ = run_main("embed", work, "--model", "generic-effnet-lite0", "--model-dir", model_store,
                            "-o", tmp_path / "f.npy", "-q")
        assert rc == 0
        for name in ("f.npy", "f.paths.txt", "f.meta.json"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        assert json.loads((tmp_path / "f.meta.json").read_text())["model"] == "generic-effnet-lite0"
        store = tmp_path / "store"
        rc, _, _ = run_main("models", "import", I2V_FIXTURES / "tag_w8_v1.caffemodel", "--as", "i2v-tag",
                            "--model-dir", store)
        assert rc == 0
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (store / "files").iterdir())
    finally:
        os.umask(old)


# -- the library ---------------------------------------------------------------------------------------------

def test_many_image_calls_report_errors_per_item(i2v_tagger, tmp_path):
    from illust2vec.errors import ImageDecodeError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    images = [ANIME36 / "00.jpg", broken, ANIME36 / "01.jpg"]
    errors = []
    prob = i2v_tagger.predict_proba(images, on_error=errors.append)
    assert prob.shape == (3, 1539) and np.isnan(prob[1]).all() and not np.isnan(prob[[0, 2]]).any()
    np.testing.assert_allclose(prob[[0, 2]], i2v_tagger.predict_proba([images[0], images[2]]), atol=1e-6)
    assert [e.index for e in errors] == [1] and str(broken) in str(errors[0])
    tags = i2v_tagger.estimate_plausible_tags(images, on_error=lambda e: None)
    assert tags[1] is None and tags[0] == i2v_tagger.estimate_plausible_tags([images[0]])[0]
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        i2v_tagger.predict_proba(broken)


def test_preprocess_stays_a_function():
    import illust2vec
    import illust2vec.prep.preprocess  # noqa: F401  (the submodule being imported must not shadow it)

    assert callable(illust2vec.preprocess)
    assert illust2vec.load_model.__module__ == "illust2vec.models.loading"


def test_one_route_from_a_name_or_a_file(model_store):
    from illust2vec.models.loading import load_model

    by_file = load_model(I2V_FIXTURES / "tag_w8_v1.caffemodel", tags=I2V_FIXTURES / "tag_list.json",
                         model_dir=model_store)
    assert by_file.is_tagger and len(by_file.tags) == 1539
    by_name = load_model("generic-effnet-lite0", model_dir=model_store)
    assert by_name.name == "generic-effnet-lite0"
    assert load_model(None, task="feature", model_dir=model_store).name == "generic-effnet-lite0"


def test_model_records_pickle():
    import copy
    import pickle

    from illust2vec.models.catalog import MODELS

    for spec in MODELS.values():
        assert pickle.loads(pickle.dumps(spec)) == spec
        assert copy.deepcopy(spec) == spec


# -- no network unless asked -------------------------------------------------------------------------------

class _Listener:
    """A TCP listener standing in for a proxy: it counts the connections it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.requests: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(1.0)
            try:
                self.requests.append(conn.recv(200))
            except OSError:
                self.requests.append(b"(nothing sent)")
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_no_model_flags_open_no_connection(pictures, tmp_path):
    listener = _Listener()
    env = {k: v for k, v in os.environ.items() if k not in ("ILLUST2VEC_OFFLINE", "no_proxy", "NO_PROXY")}
    env.update({"ILLUST2VEC_HOME": str(tmp_path / "store"), "http_proxy": listener.url,
                "https_proxy": listener.url, "HTTP_PROXY": listener.url, "HTTPS_PROXY": listener.url,
                "PYTHONPATH": str(ROOT / "src")})
    runs = {
        "embed": ["embed", pictures, "-o", tmp_path / "f.npy"],
        "index": ["index", pictures, "--db", tmp_path / "db"],
        "map": ["map", pictures, "-o", tmp_path / "map.png"],
        "tag": ["tag", pictures / "00.jpg"],
    }
    try:
        results = {}
        for name, args in runs.items():
            results[name] = subprocess.run([sys.executable, "-m", "illust2vec", *map(str, args), "-q"],
                                           capture_output=True, text=True, env=env, timeout=300)
    finally:
        listener.close()
    assert listener.requests == []
    for name in ("embed", "index", "map"):
        assert results[name].returncode == 0, (name, results[name].stderr)
    assert json.loads((tmp_path / "f.meta.json").read_text())["model"] == "generic-effnet-lite0"
    tag = results["tag"]  # no tagger in the store: a clear error, and still no connection
    assert tag.returncode == 1 and "models download i2v-tag" in tag.stderr and "Traceback" not in tag.stderr


# -- packaging ------------------------------------------------------------------------------------------------

def test_missing_optional_package_is_one_line(collection, pictures):
    code = ("import sys; sys.modules['faiss'] = None\n"
            "from illust2vec.cli.main import main\n"
            f"sys.exit(main(['search', {str(pictures / '00.jpg')!r}, '--db', {str(collection)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: collections (index, search, dupes) needs the optional package 'faiss': "
        "pip install 'illust2vec[collections]'")
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_gpu_extra_never_installs_the_cpu_runtime(tmp_path):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), f"{ROOT}[gpu,all]"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No matching distribution found for onnxruntime-gpu" in r.stderr:
        pytest.skip("onnxruntime-gpu has no wheel for this platform in the reachable indexes")
    assert r.returncode == 0, r.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names
    assert {"faiss-cpu", "av", "pyarrow"} <= names
