"""Model files are checked before they count: downloads from a misbehaving HTTP server on 127.0.0.1,
broken store files, replaced weights, and hostile files (overflowing shapes, gzip bombs, .pth bombs)."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.server
import io
import json
import os
import shutil
import threading
import zipfile

import numpy as np
import pytest
from conftest import I2V_FIXTURES

from illust2vec.cli.main import main
from illust2vec.models.fetch import download
from illust2vec.errors import DownloadError, ModelFormatError
from illust2vec.models.store import ModelStore
from illust2vec.models.fetch import require_files
from illust2vec.models.validate import check_model_file
from illust2vec.models.catalog import MODELS, ModelFile, file_checks

CAFFE = I2V_FIXTURES / "tag_w8_v1.caffemodel"
TAGS = I2V_FIXTURES / "tag_list.json"
HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"


def _need_fixtures():
    if not CAFFE.exists() or not TAGS.exists():
        pytest.skip(f"fixture models missing: {I2V_FIXTURES}")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # path -> (body, content type, send Content-Length, bytes actually sent or None for all)
        self.routes: dict[str, tuple[bytes, str, bool, int | None]] = {}
        self.hits: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # without Content-Length the body ends when the connection closes

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, ctype, with_length, cut = route
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if with_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])


@pytest.fixture()
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "ILLUST2VEC_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _store_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.files_dir.glob("*")) if store.files_dir.exists() else []


# ---------------------------------------------------------------- downloads
def test_html_page_with_status_200_is_not_stored(server, tmp_path):
    store = ModelStore(tmp_path / "store")
    server.routes["/m.caffemodel"] = (HTML, "text/html; charset=utf-8", True, None)
    server.routes["/m2.caffemodel"] = (HTML, "application/octet-stream", True, None)  # a lying proxy
    for name in ("m.caffemodel", "m2.caffemodel"):
        with pytest.raises(DownloadError, match="web page"):
            download(f"{server.url}/{name}", store.path_for(name), progress=False, tmp_dir=store.tmp_dir,
                     validate=lambda p, n=name: check_model_file(p, name=n, checks=file_checks()))
    assert _store_files(store) == []
    assert list(store.tmp_dir.glob("*.part")) == []


def test_body_without_content_length_cut_short_is_refused(server, tmp_path):
    _need_fixtures()
    store = ModelStore(tmp_path / "store")
    data = CAFFE.read_bytes()
    server.routes["/w.caffemodel"] = (data, "application/octet-stream", False, len(data) // 2)
    with pytest.raises(DownloadError, match="not usable"):
        download(f"{server.url}/w.caffemodel", store.path_for("w.caffemodel"), progress=False,
                 tmp_dir=store.tmp_dir, validate=lambda p: check_model_file(p, name="w.caffemodel", checks=file_checks()))
    assert _store_files(store) == []
    # the whole body, still without Content-Length, is accepted
    server.routes["/w.caffemodel"] = (data, "application/octet-stream", False, None)
    out = download(f"{server.url}/w.caffemodel", store.path_for("w.caffemodel"), progress=False,
                   tmp_dir=store.tmp_dir, validate=lambda p: check_model_file(p, name="w.caffemodel", checks=file_checks()))
    assert out.read_bytes() == data


def test_wrong_size_against_content_length_is_not_stored(server, tmp_path):
    _need_fixtures()
    store = ModelStore(tmp_path / "store")
    data = TAGS.read_bytes()
    server.routes["/t.json"] = (data, "application/json", True, len(data) - 100)  # announces more than it sends
    with pytest.raises(DownloadError, match="interrupted"):
        download(f"{server.url}/t.json", store.path_for("t.json"), progress=False, tmp_dir=store.tmp_dir,
                 retries=1, validate=lambda p: check_model_file(p, name="t.json", checks=file_checks()))
    assert _store_files(store) == []


@pytest.fixture()
def fake_zoo(server, monkeypatch):
    """``i2v-tag`` fetched from the local server (the real URLs are not reachable here)."""
    _need_fixtures()
    spec = MODELS["i2v-tag"]
    files = (ModelFile("illust2vec_tag_ver200.caffemodel", "weights", f"{server.url}/tag.caffemodel"),
             ModelFile("tag_list.json.gz", "tags", f"{server.url}/tag_list.json.gz"))
    monkeypatch.setitem(MODELS, "i2v-tag", dataclasses.replace(spec, files=files))
    server.routes["/tag.caffemodel"] = (CAFFE.read_bytes(), "application/octet-stream", True, None)
    server.routes["/tag_list.json.gz"] = (gzip.compress(TAGS.read_bytes()), "application/gzip", True, None)
    return server


def test_models_download_replaces_a_broken_store_file(fake_zoo, tmp_path):
    store = ModelStore(tmp_path / "store")
    store.files_dir.mkdir(parents=True)
    store.path_for("illust2vec_tag_ver200.caffemodel").write_bytes(HTML)  # an error page saved as the model
    store.path_for("tag_list.json.gz").write_bytes(gzip.compress(TAGS.read_bytes())[:-200])  # truncated
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "--model-dir", str(store.root), "list", "i2v-tag", "--json"]) == 0
    assert json.loads(out.getvalue())[0]["present"] is False  # the web page does not count
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["models", "--model-dir", str(store.root), "download", "i2v-tag"])
    assert rc == 0, err.getvalue()
    assert store.path_for("illust2vec_tag_ver200.caffemodel").read_bytes() == CAFFE.read_bytes()
    assert gzip.decompress(store.path_for("tag_list.json.gz").read_bytes()) == TAGS.read_bytes()
    assert (store.tmp_dir / "tag_list.json.gz.broken").exists()  # set aside, not deleted
    # a second run finds everything valid and fetches nothing
    hits = len(fake_zoo.hits)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "--model-dir", str(store.root), "download", "i2v-tag"]) == 0
    assert len(fake_zoo.hits) == hits


def test_require_files_never_publishes_junk(fake_zoo, tmp_path):
    store = ModelStore(tmp_path / "store")
    fake_zoo.routes["/tag.caffemodel"] = (HTML, "text/plain", True, None)
    with pytest.raises(DownloadError):
        require_files(MODELS["i2v-tag"], store, download=True, progress=False, checks=file_checks())
    assert "illust2vec_tag_ver200.caffemodel" not in _store_files(store)


# ---------------------------------------------------------------- the converted-graph cache
def test_replaced_weights_with_same_size_and_mtime_give_new_outputs(tmp_path):
    _need_fixtures()
    from illust2vec import Illustration2Vec
    from illust2vec.models.families.i2v.caffe.net import read_caffemodel

    store_dir = tmp_path / "store"
    weights = tmp_path / "files" / "tag.caffemodel"
    weights.parent.mkdir()
    shutil.copy(CAFFE, weights)
    image = np.full((64, 64, 3), 200, np.uint8)
    image[16:48, 16:48] = (30, 60, 220)
    first = Illustration2Vec.from_caffemodel(weights, tags=TAGS, model_dir=store_dir).predict_proba([image])
    st = weights.stat()
    # other weights, same size: scale the largest weight blob in place (the byte layout stays the same)
    net = read_caffemodel(weights)
    blob = max((b for layer in net.layers for b in layer.blobs), key=lambda b: b.size)
    raw = weights.read_bytes()
    old = np.ascontiguousarray(blob, dtype="<f4").tobytes()
    at = raw.index(old)
    del net, blob
    new = (np.frombuffer(old, "<f4") * -1.5).astype("<f4").tobytes()
    with open(weights, "r+b") as fh:  # same inode
        fh.seek(at)
        fh.write(new)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    second = Illustration2Vec.from_caffemodel(weights, tags=TAGS, model_dir=store_dir).predict_proba([image])
    assert not np.allclose(first, second)
    shutil.copy(CAFFE, weights)  # back to the original bytes: the original outputs again
    third = Illustration2Vec.from_caffemodel(weights, tags=TAGS, model_dir=store_dir).predict_proba([image])
    np.testing.assert_allclose(third, first, rtol=0, atol=0)


# ---------------------------------------------------------------- hostile files
def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def test_caffe_blob_shape_that_overflows_int64_is_a_format_error(tmp_path):
    # 65536**4 == 2**64: in int64 arithmetic the element count wraps around to 0, matching an empty blob
    dims = [65536] * 4
    shape = _field(1, b"".join(_varint(d) for d in dims))
    blob = _field(7, shape)
    layer = _field(1, b"conv") + _field(2, b"Convolution") + _field(7, blob)
    path = tmp_path / "evil.caffemodel"
    path.write_bytes(_field(1, b"net") + _field(100, layer))
    with pytest.raises(ModelFormatError, match="evil.caffemodel"):
        check_model_file(path, checks=file_checks())
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["models", "--model-dir", str(tmp_path / "s"), "import", str(path), "--as", "i2v-tag"])
    assert rc == 1 and "Traceback" not in err.getvalue() and err.getvalue().count("error:") == 1


def test_tag_list_gzip_bomb_is_refused_with_bounded_memory(tmp_path):
    from illust2vec.models.tags import MAX_TAG_FILE_BYTES, TagTable

    path = tmp_path / "tag_list.json.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        chunk = b" " * (1 << 20)
        for _ in range((MAX_TAG_FILE_BYTES >> 20) + 8):
            fh.write(chunk)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ModelFormatError, match="larger than"):
        TagTable.from_i2v_json(path)


def test_pth_bombs_are_format_errors(tmp_path):
    from test_torch_checkpoint import Storage, Tensor, dumps, write_zip

    from illust2vec.models.families.torch_checkpoint import load_state_dict

    six = np.arange(6, dtype="<f4")
    good = tmp_path / "good.pth"
    write_zip(good, {"w": Tensor(Storage("0", "FloatStorage", six), 0, (2, 3), (3, 1))})
    np.testing.assert_array_equal(load_state_dict(good)["w"], six.reshape(2, 3))
    # a 10^12-element tensor broadcast from 6 values (stride 0): would allocate 4 TB
    broadcast = tmp_path / "broadcast.pth"
    write_zip(broadcast, {"w": Tensor(Storage("0", "FloatStorage", six), 0, (10**6, 10**6), (0, 0))})
    # a storage member that inflates to 64 MiB for a 6-element storage
    inflated = tmp_path / "inflated.pth"
    with zipfile.ZipFile(inflated, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", dumps({"w": Tensor(Storage("0", "FloatStorage", six), 0, (2, 3), (3, 1))}))
        zf.writestr("archive/data/0", b"\0" * (64 << 20))
    # nesting deeper than the stack: 100000 nested lists
    deep = tmp_path / "deep.pth"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
    for bad in (broadcast, inflated, deep):
        with pytest.raises(ModelFormatError):
            load_state_dict(bad)
    # a refused file that tries to rewrite an allowed stand-in (FloatStorage -> bytes) changes nothing
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02ctorch\nFloatStorage\n(N}X\x04\x00\x00\x00nameX\x0b\x00\x00\x00"
                    b"ByteStoragests" + b"b" + b"cos\nsystem\n.")
    with pytest.raises(ModelFormatError):
        load_state_dict(evil)
    np.testing.assert_array_equal(load_state_dict(good)["w"], six.reshape(2, 3))
