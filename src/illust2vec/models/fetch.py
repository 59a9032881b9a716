"""Downloads that users can trust: resumable, verified, atomic.

:func:`download` fetches one URL into ``dest``:

* bytes go to a ``.part`` file in a temporary directory of the model store
  (``tmp_dir``, on the same file system as ``dest``), never to ``dest`` itself;
* an interrupted transfer (cut connection, timeout, HTTP 5xx) keeps the ``.part``
  file and the next attempt asks the server for the rest with an HTTP ``Range``
  request; a server that ignores ``Range`` (answers ``200`` instead of ``206``)
  makes the download start over cleanly;
* beside the ``.part`` a small ``.part.json`` keeps the server's validator
  (strong ``ETag`` or ``Last-Modified``) and announced length: a resume sends
  ``If-Range``, so a file that changed upstream is fetched whole instead of
  being spliced onto the old prefix, and the announced length is checked when
  the caller knows no size;
* an answer that is a web page (``Content-Type: text/html``, or a body that
  starts like one) is refused: servers and proxies answer a gated or moved
  file with a login or error page and status 200;
* when the transfer is complete, the size and SHA-256 are checked (when known),
  else the length the server announced; then the caller's ``validate`` check
  (the model store passes the structural check of
  :func:`illust2vec.models.validate.check_model_file`, which also catches a body
  without ``Content-Length`` that was cut short); only then is the file
  fsync'ed and moved into place with :func:`os.replace`;
* a file that fails verification is deleted, ``.part`` included, because
  resuming it would only reproduce the bad bytes;
* proxies: a fresh :func:`urllib.request.build_opener` is made for each
  download, so ``http_proxy`` / ``https_proxy`` / ``no_proxy`` are read from the
  environment as it is at that moment;
* offline mode (``offline=True`` or ``ILLUST2VEC_OFFLINE=1``) raises before any
  socket is opened.

The policy, in short: after any failure ``dest`` does not exist (or is the file
that was there before) and the only thing left behind is a ``.part`` holding a
prefix of the file, and only after an interruption that a resume can finish.

>>> from illust2vec.models.fetch import download
>>> download("https://example.org/model.onnx", "model.onnx", size=123, sha256="ab...")  # doctest: +SKIP
PosixPath('model.onnx')
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from collections.abc import Mapping

from illust2vec.errors import DownloadError, Illust2VecError, ModelFormatError, ModelNotFoundError
from illust2vec.models.spec import ModelFile, ModelSpec
from illust2vec.models.store import ModelStore, sha256_file  # noqa: F401 (re-exported)
from illust2vec.models.store import offline_mode as is_offline
from illust2vec.models.validate import FileCheck, check_model_file, looks_like_error_page

__all__ = [
    "DEFAULT_TIMEOUT",
    "IMPORT_HINT",
    "RemoteFile",
    "download",
    "download_all",
    "is_offline",
    "missing_files_details",
    "missing_files_message",
    "model_not_found",
    "part_path",
    "require_files",
    "sha256_file",
]

#: Seconds a connect or a single read may block before the attempt counts as interrupted.
DEFAULT_TIMEOUT = 30.0
#: Told to the user whenever the network cannot be used.
IMPORT_HINT = "fetch the file(s) on a machine with network access and run `illust2vec models import FILE`"
_CHUNK = 1 << 16
_USER_AGENT = "illust2vec-downloader"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where from, under which name, and what it must be."""

    url: str
    filename: str
    size: int | None = None
    sha256: str | None = None


class _Interrupted(Exception):
    """A transfer that stopped part-way; a resume may finish it."""


def part_path(url: str, dest: str | os.PathLike[str], tmp_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``.part`` file that holds the bytes of ``url`` on their way to ``dest``.

    The name carries a hash of the URL so that a partial file is only ever resumed
    from the URL it came from.
    """
    d = Path(dest)
    tmp = Path(tmp_dir) if tmp_dir is not None else d.parent / "tmp"
    tag = hashlib.sha1(url.encode("utf-8")).hexdigest()[:12]
    return tmp / f"{d.name}.{tag}.part"


def _meta_path(part: Path) -> Path:
    """Sidecar of a ``.part``: the server's validator (ETag/Last-Modified) and the full length."""
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict:
    try:
        data = json.loads(_meta_path(part).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _drop(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _unreachable(url: str, reason: object) -> DownloadError:
    host = urllib.parse.urlsplit(url).hostname or url
    return DownloadError(
        f"cannot reach {host} to download {url} ({reason}); check the network or the "
        f"http_proxy/https_proxy variables, or {IMPORT_HINT}"
    )


def _http_error(url: str, code: int, reason: str) -> DownloadError:
    what = {
        401: "access denied: the repository may be gated and need a login token",
        403: "access denied: the repository may be gated and need a login token",
        404: "the file is not at this URL (moved or renamed upstream?)",
    }.get(code, "server error, try again later" if code >= 500 else "request refused")
    return DownloadError(f"{url}: HTTP {code} {reason}: {what}; or {IMPORT_HINT}")


def _attempt(
    url: str,
    part: Path,
    *,
    size: int | None,
    timeout: float,
    progress: bool,
    desc: str,
) -> None:
    """One HTTP request that appends to (or restarts) ``part``.  Raises ``_Interrupted`` to retry."""
    from illust2vec.runtime.progress import ProgressBar

    have = part.stat().st_size if part.exists() else 0
    if size is not None and have >= size:
        return  # complete (or too long: verification will say so)
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    meta = _read_meta(part) if have else {}
    if have:
        req.add_header("Range", f"bytes={have}-")
        if meta.get("validator"):
            # The server sends the whole (new) file instead of the rest if it changed since.
            req.add_header("If-Range", str(meta["validator"]))
    opener = urllib.request.build_opener()  # reads *_proxy / no_proxy from the environment now
    try:
        resp = opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            # Our partial file is not a prefix the server can continue: start over.
            _drop(part)
            raise _Interrupted("HTTP 416 on resume; restarting from the beginning") from None
        if exc.code >= 500:
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        _drop(part)
        raise _http_error(url, exc.code, str(exc.reason)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _unreachable(url, reason) from None

    with resp:
        status = getattr(resp, "status", 200)
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):
            _drop(part)
            raise DownloadError(
                f"{url}: the server answered HTTP {status} with a web page ({ctype}) instead of the file "
                f"(a login, error or moved-file page?); nothing was stored. Check the URL, or {IMPORT_HINT}"
            )
        length_hdr = resp.headers.get("Content-Length")
        expected_body = int(length_hdr) if length_hdr and length_hdr.isdigit() else None
        if have and status == 206:
            crange = resp.headers.get("Content-Range", "")
            start = crange.split()[1].split("-")[0] if crange.startswith("bytes ") else ""
            if start != str(have):
                _drop(part)
                raise _Interrupted(f"server answered the resume with range {crange!r}; restarting")
            mode = "ab"
            full = crange.rsplit("/", 1)[-1]
            full_length = int(full) if full.isdigit() else meta.get("total")
        else:
            # 200: the server ignored Range, the file changed (If-Range), or there was nothing to
            # resume: write from the start.
            have = 0
            mode = "wb"
            full_length = expected_body
        etag = resp.headers.get("ETag") or ""
        validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
        part.parent.mkdir(parents=True, exist_ok=True)
        if mode == "wb" or full_length != meta.get("total"):
            _meta_path(part).write_text(json.dumps({"url": url, "validator": validator, "total": full_length}))
        total = size if size is not None else (have + expected_body if expected_body is not None else None)
        received = 0
        with open(part, mode) as fh, ProgressBar(desc, total=total, initial=have, unit="B", enabled=progress,
                                                 leave=False) as bar:
            try:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if size is not None and have + received > size:
                        break  # more than expected: stop; verification reports it
            except (OSError, http.client.HTTPException) as exc:
                fh.flush()
                os.fsync(fh.fileno())
                raise _Interrupted(f"connection lost after {have + received} bytes ({exc})") from None
            fh.flush()
            os.fsync(fh.fileno())
        if expected_body is not None and received < expected_body:
            raise _Interrupted(f"connection closed after {have + received} of {have + expected_body} bytes")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    tmp_dir: str | os.PathLike[str] | None = None,
    retries: int = 3,
    offline: bool | None = None,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``, verified and atomically; return ``dest`` as a Path.

    Parameters
    ----------
    url:
        ``http://`` or ``https://`` URL.
    dest:
        Final path.  Written only once the whole file has passed verification.
    size, sha256:
        Expected byte count and hex SHA-256; ``None`` skips that check.
    progress:
        Show a tqdm bar on stderr.
    timeout:
        Seconds a connect or a read may block (each, not the whole download).
    tmp_dir:
        Where ``.part`` files live (the model store's ``tmp/``); default ``dest.parent / "tmp"``.
        Must be on the same file system as ``dest``.
    retries:
        How many more times an interrupted transfer is resumed within this call
        (only while attempts make progress). ``0`` leaves the ``.part`` for the next call.
    offline:
        ``True`` refuses to use the network; ``None`` reads ``ILLUST2VEC_OFFLINE``.
    validate:
        Called with the complete ``.part`` file before it is moved to ``dest``;
        an :class:`~illust2vec.errors.Illust2VecError` it raises deletes the
        file and becomes a :class:`DownloadError`.  Without it, a body that
        starts like a web page is still refused.

    Raises
    ------
    DownloadError
        Offline mode, network unreachable (names the URL and how to import the file
        by hand), HTTP errors, a transfer still interrupted after ``retries``, or a
        size/checksum mismatch (both values in the message).
    """
    dest = Path(dest)
    if is_offline(offline):
        raise DownloadError(
            f"offline mode (ILLUST2VEC_OFFLINE=1 or --offline): not downloading {url}; {IMPORT_HINT}"
        )
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http:// and https:// URLs can be downloaded")
    part = part_path(url, dest, tmp_dir)
    part.parent.mkdir(parents=True, exist_ok=True)
    if size is not None and part.exists() and part.stat().st_size > size:
        _drop(part)

    attempt = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _attempt(url, part, size=size, timeout=timeout, progress=progress, desc=dest.name)
            break
        except _Interrupted as exc:
            after = part.stat().st_size if part.exists() else 0
            attempt += 1
            made_progress = after > before or "restarting" in str(exc)
            if attempt > retries or not made_progress:
                kept = f"; {after} bytes kept in {part}, run the command again to resume" if after else ""
                raise DownloadError(f"{url}: download interrupted: {exc}{kept}") from None
            time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))

    got = part.stat().st_size
    announced = _read_meta(part).get("total")
    expected = size if size is not None else announced
    if expected is not None and got != expected:
        _drop(part)
        what = "expected" if size is not None else "the server announced"
        raise DownloadError(
            f"{url}: size mismatch: got {got} bytes, {what} {expected}; the partial file was deleted. "
            "The upstream file may have changed: check the model entry, or fetch it yourself and "
            "run `illust2vec models import FILE`"
        )
    if sha256 is not None:
        digest = sha256_file(part)
        if digest.lower() != sha256.lower():
            _drop(part)
            raise DownloadError(
                f"{url}: checksum mismatch: SHA-256 {digest}, expected {sha256.lower()}; "
                "the file was deleted. The upstream file may have changed or the transfer was "
                "corrupted: run the command again, or fetch it yourself and run `illust2vec models import FILE`"
            )
    try:
        if validate is not None:
            validate(part)
        elif looks_like_error_page(part):
            raise ModelFormatError(f"{part}: is a web page, not the file")
    except Illust2VecError as exc:
        _drop(part)
        raise DownloadError(
            f"{url}: the downloaded file is not usable ({exc}); it was deleted and nothing was stored. "
            f"The upstream file may have moved or need a login: check the URL, or {IMPORT_HINT}"
        ) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return dest


def download_all(
    files: Iterable[RemoteFile],
    dest_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    tmp_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> list[Path]:
    """Fetch every file that is not yet in ``dest_dir``; one error naming every missing URL.

    Files already present are kept as they are (the store verifies them on import).
    In offline mode, or when the network is unreachable, the error lists each URL
    with its target path so the user can fetch them elsewhere.
    """
    dest_dir = Path(dest_dir)
    files = list(files)
    out: list[Path] = []
    missing = [f for f in files if not (dest_dir / f.filename).exists()]
    if missing and is_offline(offline):
        raise DownloadError(
            "offline mode: these files are missing from the model store:\n"
            + "\n".join(f"  {f.url}  ->  {dest_dir / f.filename}" for f in missing)
            + f"\n{IMPORT_HINT}"
        )
    failures: list[str] = []
    for f in files:
        target = dest_dir / f.filename
        if target.exists():
            out.append(target)
            continue
        try:
            out.append(
                download(
                    f.url, target, size=f.size, sha256=f.sha256, progress=progress,
                    timeout=timeout, tmp_dir=tmp_dir, offline=offline,
                )
            )
        except DownloadError as exc:
            failures.append(str(exc))
    if failures:
        raise DownloadError(
            "\n".join(failures)
            + "\nfiles still missing:\n"
            + "\n".join(f"  {f.url}  ->  {dest_dir / f.filename}" for f in missing if not (dest_dir / f.filename).exists())
        )
    return out


#: :func:`download` under a name that ``require_files``'s ``download`` flag does not hide.
_download_url = download


def missing_files_message(spec: ModelSpec, missing: Iterable[ModelFile], store: ModelStore, *,
                          offline: bool | None = None) -> str:
    """What to tell a user whose model files are not here: one or two lines, one command.

    Online, the route is ``models download NAME`` (or ``--download``); offline (``offline`` or
    ``ILLUST2VEC_OFFLINE=1``), fetching the files elsewhere and ``models import ... --as NAME``.
    Where each file comes from and goes is :func:`missing_files_details` (``--debug``,
    ``models info NAME``).
    """
    missing = list(missing)
    names = ", ".join(f.filename for f in missing)
    if is_offline(offline):
        urls = " and ".join(f.url for f in missing if f.url) or names
        local = " ".join(f.url.rsplit("/", 1)[-1] if f.url else f.filename for f in missing)
        return (f"model '{spec.name}' is not here and downloads are off (offline): fetch {urls} elsewhere, then run "
                f"'illust2vec models import {local} --as {spec.name}'.")
    if not all(f.url for f in missing):
        return (f"model '{spec.name}' needs {names} (shipped by a pip package, see "
                f"'illust2vec models info {spec.name}').")
    return (f"model '{spec.name}' is not downloaded (it needs {names}): run 'illust2vec models download "
            f"{spec.name}' (or add --download).\nWithout network: 'illust2vec models info {spec.name}' lists its "
            "files, where to get them and how to import them.")


def missing_files_details(spec: ModelSpec, missing: Iterable[ModelFile], store: ModelStore) -> str:
    """Every missing file of a model with its source and where the store keeps it."""
    lines = [f"model '{spec.name}': files missing from the model store ({store.files_dir}):"]
    for f in missing:
        where = f" from {f.url}" if f.url else (f" (shipped by the pip package '{f.package}')" if f.package else "")
        lines.append(f"  {f.filename}{where} -> {store.path_for(f.filename)}")
    lines.append(f"import files fetched elsewhere with 'illust2vec models import FILE... --as {spec.name}'")
    return "\n".join(lines)


def model_not_found(spec: ModelSpec, missing: Iterable[ModelFile], store: ModelStore, *,
                    offline: bool | None = None, details: str = "") -> ModelNotFoundError:
    """The :class:`ModelNotFoundError` of a model whose files are missing (short message, long details)."""
    missing = list(missing)
    long = missing_files_details(spec, missing, store) + (f"\n{details}" if details else "")
    return ModelNotFoundError(missing_files_message(spec, missing, store, offline=offline), long)


def require_files(spec: ModelSpec, store: ModelStore | None = None, *, download: bool = False,
                  offline: bool | None = None, progress: bool = True, verify: bool = False,
                  checks: Mapping[str, FileCheck] | None = None) -> dict[str, Path]:
    """Paths of a model's files by role.

    Missing files are fetched only when ``download`` is true (``models download``,
    ``--download``) and downloads are not forbidden (``offline`` or
    ``ILLUST2VEC_OFFLINE=1``); otherwise :class:`ModelNotFoundError` says how to get them.
    Nothing here opens a connection unless asked.  Every download passes
    :func:`~illust2vec.models.validate.check_model_file` (with the family's ``checks``)
    before it is stored; ``verify`` also checks the files already in the store
    (``models download`` does): a broken one is set aside into ``tmp/`` with a
    warning and fetched again.
    """
    store = store or ModelStore()
    found: dict[str, Path] = {}
    missing = []
    for f in spec.files:
        if f.package:
            continue  # resolved by the family loader from the installed package
        path = store.find(f.filename)
        if path is not None and verify:
            try:
                check_model_file(path, name=path.name, checks=checks)
            except Illust2VecError as exc:
                moved = store.set_aside(path)
                logging.getLogger("illust2vec").warning(
                    "warning: %s is broken (%s); moved to %s, fetching it again", path, exc, moved)
                path = None
        if path is None:
            missing.append(f)
        else:
            found[f.role] = path
    if missing and download and not is_offline(offline) and all(f.url for f in missing):
        for f in missing:
            found[f.role] = _download_url(
                f.url, store.path_for(f.filename), size=f.size, sha256=f.sha256,
                progress=progress, tmp_dir=store.tmp_dir,
                validate=lambda part, name=f.filename: check_model_file(part, name=name, checks=checks),
            )
        missing = []
    if missing:
        raise model_not_found(spec, missing, store, offline=offline)
    return found
