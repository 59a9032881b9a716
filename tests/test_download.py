"""Downloads against a real HTTP server on 127.0.0.1 (Range support, cut connections, errors, proxy)."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from illust2vec.models.fetch import RemoteFile, download, download_all, part_path
from illust2vec.errors import DownloadError

PAYLOAD = bytes((i * 7 + (i >> 8)) % 251 for i in range(300_000))
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {"/model.bin": PAYLOAD}
        self.cut_after: dict[str, list[int]] = {}  # path -> byte counts, one per request, then whole
        self.ignore_range: set[str] = set()
        self.status: dict[str, int] = {}
        self.etags: dict[str, str] = {}
        self.log: list[tuple[str, str | None]] = []  # (request line path, Range header)
        self.if_range: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        srv.if_range.append(self.headers.get("If-Range"))
        path = urlsplit(self.path).path  # proxies get absolute URLs
        if path in srv.status:
            self.send_error(srv.status[path])
            return
        data = srv.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        etag = srv.etags.get(path)
        if rng and self.headers.get("If-Range") not in (None, etag):
            rng = None  # the file changed since the client's copy: send all of it
        if rng and path not in srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cuts = srv.cut_after.get(path)
        if cuts:
            k = cuts.pop(0)
            self.wfile.write(body[:k])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "no_proxy", "NO_PROXY", "ILLUST2VEC_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.rglob("*") if p.is_file())


def test_success_verified_and_atomic(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "store" / "model.bin"
    out = download(server.url + "/model.bin", dest, size=len(PAYLOAD), sha256=SHA, progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == ["model.bin"]  # no .part left in tmp/
    assert server.log == [("/model.bin", None)]


def test_resume_after_cut_connection_next_call(server: _Server, tmp_path: Path) -> None:
    k = 100_000
    server.cut_after["/model.bin"] = [k]
    dest = tmp_path / "model.bin"
    url = server.url + "/model.bin"
    with pytest.raises(DownloadError, match="interrupted") as info:
        download(url, dest, size=len(PAYLOAD), sha256=SHA, progress=False, retries=0)
    assert "resume" in str(info.value)
    assert not dest.exists()
    part = part_path(url, dest)
    assert part.read_bytes() == PAYLOAD[:k]  # the policy: an interrupted transfer keeps its prefix
    download(url, dest, size=len(PAYLOAD), sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()
    assert server.log[-1] == ("/model.bin", f"bytes={k}-")


def test_resume_within_one_call(server: _Server, tmp_path: Path) -> None:
    server.cut_after["/model.bin"] = [50_000, 70_000]
    dest = tmp_path / "model.bin"
    download(server.url + "/model.bin", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.log] == [None, "bytes=50000-", "bytes=120000-"]


def test_server_ignoring_range_restarts_cleanly(server: _Server, tmp_path: Path) -> None:
    server.cut_after["/model.bin"] = [123_456]
    server.ignore_range.add("/model.bin")
    dest = tmp_path / "model.bin"
    download(server.url + "/model.bin", dest, size=len(PAYLOAD), sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD  # a naive append of the 200 body would corrupt it
    assert [r for _, r in server.log] == [None, "bytes=123456-"]


def test_stale_part_longer_than_server_file_restarts(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    url = server.url + "/model.bin"
    part = part_path(url, dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))  # no size known: the server's 416 triggers a restart
    download(url, dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_wrong_size(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url + "/model.bin", dest, size=len(PAYLOAD) + 1, progress=False)
    msg = str(info.value)
    assert f"got {len(PAYLOAD)} bytes" in msg and f"expected {len(PAYLOAD) + 1}" in msg
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_wrong_size_server_sends_more(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="size mismatch"):
        download(server.url + "/model.bin", dest, size=1000, progress=False)
    assert _leftovers(tmp_path) == []


def test_wrong_checksum(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    bad = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(server.url + "/model.bin", dest, size=len(PAYLOAD), sha256=bad, progress=False)
    assert SHA in str(info.value) and bad in str(info.value)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_server_error_500(server: _Server, tmp_path: Path) -> None:
    server.status["/model.bin"] = 500
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="500"):
        download(server.url + "/model.bin", dest, progress=False)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_http_404_names_url(server: _Server, tmp_path: Path) -> None:
    url = server.url + "/missing.onnx"
    with pytest.raises(DownloadError, match="404") as info:
        download(url, tmp_path / "missing.onnx", progress=False)
    assert url in str(info.value)
    assert _leftovers(tmp_path) == []


def test_existing_destination_untouched_on_failure(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"old good file")
    with pytest.raises(DownloadError):
        download(server.url + "/model.bin", dest, sha256="1" * 64, progress=False)
    assert dest.read_bytes() == b"old good file"


def test_connection_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/model.bin"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "model.bin", progress=False, timeout=5)
    assert time.monotonic() - t0 < 5  # no retry loop on a dead network
    msg = str(info.value)
    assert url in msg and "illust2vec models import FILE" in msg
    assert _leftovers(tmp_path) == []


def test_unresolvable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    url = "http://no-such-host.invalid/model.onnx"
    with pytest.raises(DownloadError, match="cannot reach no-such-host.invalid") as info:
        download(url, tmp_path / "model.onnx", progress=False, timeout=5)
    assert "illust2vec models import FILE" in str(info.value)


def test_offline_never_touches_network(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.url + "/model.bin"
    with pytest.raises(DownloadError, match="offline") as info:
        download(url, tmp_path / "a.bin", offline=True, progress=False)
    assert url in str(info.value)
    monkeypatch.setenv("ILLUST2VEC_OFFLINE", "1")
    with pytest.raises(DownloadError, match="illust2vec models import FILE"):
        download(url, tmp_path / "b.bin", progress=False)
    assert server.log == []
    assert _leftovers(tmp_path) == []


def test_proxy_variables_honoured(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The local server plays an HTTP proxy: it receives the absolute URL of a host that does not exist.
    monkeypatch.setenv("http_proxy", server.url)
    url = "http://models.example.invalid/model.bin"
    download(url, tmp_path / "model.bin", sha256=SHA, progress=False)
    assert (tmp_path / "model.bin").read_bytes() == PAYLOAD
    assert server.log == [(url, None)]
    # no_proxy exempts the host: then it is contacted directly (and cannot be resolved).
    monkeypatch.setenv("no_proxy", "models.example.invalid")
    with pytest.raises(DownloadError, match="cannot reach"):
        download(url, tmp_path / "again.bin", progress=False, timeout=5)
    assert len(server.log) == 1


def test_download_all_lists_missing_urls_offline(server: _Server, tmp_path: Path) -> None:
    files = [
        RemoteFile(server.url + "/model.bin", "model.bin", len(PAYLOAD), SHA),
        RemoteFile(server.url + "/tags.csv", "selected_tags.csv"),
    ]
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n")
    with pytest.raises(DownloadError) as info:
        download_all(files, tmp_path, offline=True, progress=False)
    msg = str(info.value)
    assert files[0].url in msg and files[1].url not in msg  # only what is missing
    assert server.log == []
    got = download_all(files, tmp_path, progress=False)
    assert [p.name for p in got] == ["model.bin", "selected_tags.csv"]
    assert (tmp_path / "model.bin").read_bytes() == PAYLOAD


def test_resume_of_a_file_that_changed_upstream_restarts(server: _Server, tmp_path: Path) -> None:
    """No checksum known (as for the WD files): If-Range keeps an old prefix from being spliced onto a new file."""
    server.etags["/model.bin"] = '"v1"'
    server.cut_after["/model.bin"] = [80_000]
    dest = tmp_path / "model.bin"
    url = server.url + "/model.bin"
    with pytest.raises(DownloadError, match="interrupted"):
        download(url, dest, progress=False, retries=0)
    assert sorted(_leftovers(tmp_path)) == sorted([part_path(url, dest).name, part_path(url, dest).name + ".json"])
    new = bytes(reversed(PAYLOAD))
    server.files["/model.bin"] = new
    server.etags["/model.bin"] = '"v2"'
    download(url, dest, progress=False)
    assert dest.read_bytes() == new
    assert server.if_range[-1] == '"v1"' and server.log[-1][1] == "bytes=80000-"
    assert _leftovers(tmp_path) == ["model.bin"]


def test_resume_same_version_uses_range(server: _Server, tmp_path: Path) -> None:
    server.etags["/model.bin"] = '"v1"'
    server.cut_after["/model.bin"] = [80_000]
    dest = tmp_path / "model.bin"
    download(server.url + "/model.bin", dest, progress=False)  # no size, no checksum given
    assert dest.read_bytes() == PAYLOAD
    assert server.if_range == [None, '"v1"']
