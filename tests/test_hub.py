"""WD-contract models from the Hugging Face Hub cache, offline, and from a local server that speaks the Hub protocol.

The model is the tiny WD-contract graph of test_wd (``model.onnx`` + ``selected_tags.csv``); the Hub
cache is built in tmp in the layout huggingface_hub writes (blobs, snapshots with relative links,
refs); downloads go to a real HTTP server on 127.0.0.1 that answers ``/ORG/NAME/resolve/REV/FILE``
like the Hub does (HEAD with X-Repo-Commit / ETag / Content-Length, then GET).
"""
from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from test_wd import ANIME36, TAGS, build_model, write_csv

REPO = "SmilingWolf/wd-vit-tagger-v3"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def wd_repo(tmp_path: Path) -> dict[str, bytes]:
    d = tmp_path / "src"
    d.mkdir()
    onnx.save(build_model(64), d / "model.onnx")
    write_csv(d / "selected_tags.csv")
    return {name: (d / name).read_bytes() for name in ("model.onnx", "selected_tags.csv")}


def prefill(cache: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main") -> Path:
    """What huggingface_hub leaves in a cache: content-addressed blobs, a snapshot of links, the ref."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (root / "blobs" / digest).write_bytes(data)
        link = snap / name  # a file in a folder of the repository links one level further up
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(*[".."] * (2 + name.count("/"))) / "blobs" / digest)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture()
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "ILLUST2VEC_OFFLINE", "HF_TOKEN",
                "HF_ENDPOINT", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    home, store = tmp_path / "hf", tmp_path / "store"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("ILLUST2VEC_HOME", str(store))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any network use would fail
    return {"home": home, "cache": home / "hub", "store": store}


def _images():
    from PIL import Image

    if not ANIME36.is_dir():
        pytest.skip(f"shared data not found: {ANIME36}")
    return [Image.open(ANIME36 / f"{i:02d}.jpg") for i in range(2)]


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from illust2vec.models.hub import hub_cache_dir

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hub_cache_dir() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hub_cache_dir() == tmp_path / "hubcache"


def test_prefilled_cache_used_offline_by_repo_id_and_zoo_name(wd_repo, hub_env, monkeypatch, tmp_path) -> None:
    from illust2vec.models.loading import load_model
    from illust2vec.models.families.wd import load_wd_files

    snap = prefill(hub_env["cache"], REPO, wd_repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_repo = load_model(REPO, task="tag")
    by_zoo = load_model("wd-vit-v3", task="tag")
    assert by_repo.name == REPO and by_zoo.name == "wd-vit-v3"
    assert by_repo.outputs == ("prob", "feature") and len(by_repo.tags) == len(TAGS)
    assert by_repo.thresholds == by_zoo.thresholds  # the zoo record lends its thresholds to its repository
    direct = load_wd_files(snap / "model.onnx", snap / "selected_tags.csv")
    imgs = _images()
    np.testing.assert_allclose(by_repo.predict_proba(imgs), direct.predict_proba(imgs), atol=1e-6)
    np.testing.assert_allclose(by_zoo.predict_proba(imgs), direct.predict_proba(imgs), atol=1e-6)
    assert by_repo.identity == by_zoo.identity == direct.identity
    # no copy of the model files into illust2vec's store (only the converted graph cache)
    assert not (hub_env["store"] / "files").exists() or not any((hub_env["store"] / "files").iterdir())
    from illust2vec.models.loading import model_available
    from illust2vec.models.store import ModelStore
    from illust2vec.models.catalog import get_spec

    assert model_available(get_spec("wd-vit-v3"), ModelStore())
    assert not model_available(get_spec("wd-swinv2-v3"), ModelStore())


def test_models_info_and_list_see_the_hub_cache(wd_repo, hub_env, capsys) -> None:
    import json

    from illust2vec.cli.main import main

    snap = prefill(hub_env["cache"], REPO, wd_repo)
    assert main(["models", "info", "wd-vit-v3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hub"] == REPO and info["hub_files"]["model.onnx"] == str(snap / "model.onnx")
    assert main(["models", "list", "wd-*", "--json"]) == 0
    present = {r["name"]: r["present"] for r in json.loads(capsys.readouterr().out)}
    assert present["wd-vit-v3"] and not present["wd-convnext-v3"]


def test_hub_cache_variable_and_revisions(wd_repo, hub_env, monkeypatch, tmp_path) -> None:
    from illust2vec.errors import ModelNotFoundError
    from illust2vec.models.hub import HubRef, cached_file, hub_files

    other = tmp_path / "elsewhere"
    monkeypatch.setenv("HF_HUB_CACHE", str(other))  # wins over HF_HOME
    tagged = "f" * 40
    prefill(other, "someone/fine-tune", wd_repo, commit=COMMIT)
    prefill(other, "someone/fine-tune", wd_repo, commit=tagged, ref="v2")
    assert hub_files("someone/fine-tune", offline=True)["onnx"].parent.name == COMMIT
    assert hub_files("someone/fine-tune@v2", offline=True)["onnx"].parent.name == tagged
    assert hub_files(f"someone/fine-tune@{tagged}", offline=True)["tags"].name == "selected_tags.csv"
    assert cached_file(HubRef("someone/fine-tune", "v3"), "model.onnx") is None
    with pytest.raises(ModelNotFoundError) as info:
        hub_files("someone/fine-tune@v3", offline=True)
    msg = str(info.value)
    assert str(other) in msg and "model.onnx" in msg and "selected_tags.csv" in msg and "--revision v3" in msg


def test_cli_tag_with_repo_id_offline(wd_repo, hub_env, tmp_path) -> None:
    """A user's run: `tag -m ORG/NAME` in a fresh process, HF_HUB_OFFLINE=1, the cache under HF_HOME."""
    prefill(hub_env["cache"], REPO, wd_repo)
    if not ANIME36.is_dir():
        pytest.skip(f"shared data not found: {ANIME36}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for model in (REPO, "wd-vit-v3"):
        r = subprocess.run([sys.executable, "-m", "illust2vec", "tag", str(ANIME36 / "00.jpg"), "-m", model,
                            "--format", "jsonl", "-q"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert '"rating"' in r.stdout
    r = subprocess.run([sys.executable, "-m", "illust2vec", "tag", str(ANIME36 / "00.jpg"), "-m", "someone/missing",
                        "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "someone/missing" in r.stderr


# --------------------------------------------------------------------------- a local Hub


class _Hub(http.server.BaseHTTPRequestHandler):
    repos: dict[str, dict[str, bytes]] = {}
    token: str | None = None
    requests: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, body: bool) -> None:
        self.requests.append((self.command, self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        if self.token is not None and self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self.send_error(404)
            return
        repo, name = "/".join(parts[:2]), "/".join(parts[4:])
        if repo not in self.repos:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        files = self.repos[repo]
        if name not in files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = files[name]
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)


@pytest.fixture()
def local_hub(wd_repo, hub_env, monkeypatch):
    pytest.importorskip("huggingface_hub", reason="downloads from the Hub need illust2vec[hub]")
    _Hub.repos = {REPO: wd_repo, "someone/not-a-tagger": {"model.onnx": wd_repo["model.onnx"]}}
    _Hub.token = "secret-token"
    _Hub.requests = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_from_a_local_hub_into_the_cache(local_hub, hub_env, monkeypatch) -> None:
    from illust2vec.errors import DownloadError
    from illust2vec.models.hub import hub_files
    from illust2vec.models.loading import load_model

    from illust2vec.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="--download"):  # not asked: no request at all
        load_model("wd-vit-v3", task="tag", progress=False)
    assert _Hub.requests == []
    with pytest.raises(DownloadError, match="HF_TOKEN"):  # the server wants the token
        hub_files(REPO, download=True, progress=False)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    model = load_model("wd-vit-v3", task="tag", progress=False, download=True)
    assert any(cmd == "GET" and path.endswith("/resolve/main/model.onnx") for cmd, path in _Hub.requests)
    repo_dir = hub_env["cache"] / "models--SmilingWolf--wd-vit-tagger-v3"
    assert (repo_dir / "refs" / "main").read_text().strip() == COMMIT
    assert (repo_dir / "snapshots" / COMMIT / "selected_tags.csv").read_bytes() == _Hub.repos[REPO]["selected_tags.csv"]
    assert not (hub_env["store"] / "files").exists() or not any((hub_env["store"] / "files").iterdir())
    # files in the cache: no request at all, even with the server up
    _Hub.requests = []
    again = load_model(REPO, task="tag", progress=False)
    assert _Hub.requests == [] and again.identity == model.identity
    # a repository without the WD contract
    with pytest.raises(DownloadError, match="selected_tags.csv"):
        load_model("someone/not-a-tagger", task="tag", progress=False, download=True)
    with pytest.raises(DownloadError, match="not found"):
        load_model("someone/nothing-here", task="tag", progress=False, download=True)


def test_models_download_repo_id(local_hub, hub_env, monkeypatch, capsys) -> None:
    from illust2vec.cli.main import main

    monkeypatch.setenv("HF_TOKEN", "secret-token")
    assert main(["models", "download", REPO]) == 0
    out = capsys.readouterr().out
    assert "model.onnx" in out and str(hub_env["cache"]) in out


def test_wd14_v2_generation_from_the_cache_offline(wd_repo, hub_env, monkeypatch) -> None:
    """The WD v1.4 taggers: the WD layout and path, by zoo name and by repository id."""
    from illust2vec.models.loading import hub_family, load_model

    repo = "SmilingWolf/wd-v1-4-moat-tagger-v2"
    prefill(hub_env["cache"], repo, wd_repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_family(repo).name == "wd"
    by_zoo, by_repo = load_model("wd14-moat-v2", task="tag"), load_model(repo, task="tag")
    assert by_zoo.outputs == ("prob", "feature") and by_zoo.recipe.size == (64, 64)  # read from the graph
    imgs = _images()
    np.testing.assert_array_equal(by_zoo.predict_proba(imgs), by_repo.predict_proba(imgs))
