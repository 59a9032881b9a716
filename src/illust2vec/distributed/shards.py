"""Parquet shards: the output of a distributed run, one file per fixed slice of the inputs.

A run splits its ordered list of sources into slices of ``shard_size``;
slice ``k`` becomes ``part-{k:06d}-{digest}.parquet``, where the digest is
taken over the slice's sources, so a name always stands for the same
inputs.  Shards are written whole and atomically (a temporary file renamed
into place; a single PUT on object stores): a rerun skips every shard that
exists, and a task that is retried after a lost node rewrites the same file,
never adds rows twice.

``manifest.json`` beside the shards records the models (names, identities,
tag table, vector sizes) and the list of shard names of the run, in order.

Columns of a shard (one row per input, failed inputs included):

========== ======================================= =========================
``index``  int64: position in the run's input list
``path``   string: the source as given
``size``   int64: bytes (null if unreadable)
``mtime_ns`` int64: modification time (null if unknown)
``sha256`` string: content hash (null if unreadable)
``error``  string: why the input failed (null if it worked)
``prob``   fixed-size list<float32>[T]: tag probabilities (taggers; null on error)
``feature`` fixed-size list<float32>[D]: features (embedders; null on error)
``codes``  fixed-size list<uint8>[B]: packed binary codes (embedders; null on error)
========== ======================================= =========================
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import atomic_write

MANIFEST = "manifest.json"
SHARD_FORMAT = 1


def shard_name(k: int, sources: Sequence[str]) -> str:
    """The deterministic file name of slice ``k`` holding ``sources``."""
    digest = hashlib.sha256("\n".join(sources).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"part-{k:06d}-{digest}.parquet"


@dataclass(frozen=True)
class ShardSlice:
    """One unit of work: slice ``k`` of the inputs, starting at input ``first``."""

    k: int
    first: int
    sources: tuple[str, ...]

    @property
    def name(self) -> str:
        return shard_name(self.k, self.sources)


def plan_shards(sources: Sequence[str], shard_size: int) -> list[ShardSlice]:
    """Cut ``sources`` into consecutive slices of ``shard_size`` (the last one shorter)."""
    if shard_size < 1:
        raise Illust2VecError(f"shard size must be at least 1 (got {shard_size})")
    return [ShardSlice(k, i, tuple(sources[i : i + shard_size]))
            for k, i in enumerate(range(0, len(sources), shard_size))]


@dataclass
class ShardRows:
    """The rows of one shard as arrays (``prob``/``feature``/``codes`` hold the good rows only)."""

    index: np.ndarray  # (n,) int64, every row
    path: list[str]
    size: list[int | None]
    mtime_ns: list[int | None]
    sha256: list[str | None]
    error: list[str | None]
    ok: np.ndarray  # (n,) bool: rows without an error
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (ok.sum(), width)

    def __len__(self) -> int:
        return len(self.path)


def _fixed_list(values: np.ndarray | None, ok: np.ndarray, width: int, dtype) -> Any:
    """A fixed-size-list column: rows of ``values`` where ``ok``, zeros elsewhere (the ``error`` column says which).

    No null lists: pyarrow < 26 writes a null fixed-size list in a way it cannot read back.
    """
    import pyarrow as pa

    full = np.zeros((len(ok), width), dtype)
    if values is not None and len(values):
        full[ok] = values
    flat = pa.array(full.reshape(-1), type=pa.from_numpy_dtype(np.dtype(dtype)))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def shard_table(rows: ShardRows, widths: dict[str, int]):
    """A ``pyarrow.Table`` of ``rows`` (``widths``: vector columns and their sizes)."""
    import pyarrow as pa

    cols = {
        "index": pa.array(rows.index, pa.int64()),
        "path": pa.array(rows.path, pa.string()),
        "size": pa.array(rows.size, pa.int64()),
        "mtime_ns": pa.array(rows.mtime_ns, pa.int64()),
        "sha256": pa.array(rows.sha256, pa.string()),
        "error": pa.array(rows.error, pa.string()),
    }
    for name, width in widths.items():
        dtype = np.uint8 if name == "codes" else np.float32
        cols[name] = _fixed_list(rows.vectors.get(name), rows.ok, width, dtype)
    return pa.table(cols)


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _remote(directory: str):
    """``(filesystem, path)`` for a URI directory, ``None`` for a local one."""
    if "://" not in directory:
        return None
    from pyarrow import fs

    return fs.FileSystem.from_uri(directory)


def write_shard(directory: str, name: str, rows: ShardRows, widths: dict[str, int]) -> None:
    """Write one shard whole: a local temporary file renamed into place, or one object PUT."""
    import pyarrow.parquet as pq

    table = shard_table(rows, widths)
    remote = _remote(directory)
    if remote is None:
        atomic_write(Path(directory) / name, lambda f: pq.write_table(table, f))
        return
    filesystem, root = remote
    with filesystem.open_output_stream(_join(root, name)) as fh:
        pq.write_table(table, fh)


def existing_shards(directory: str) -> set[str]:
    """Names of the complete shard files in ``directory`` (none if it does not exist)."""
    remote = _remote(directory)
    if remote is None:
        d = Path(directory)
        return {p.name for p in d.glob("part-*.parquet")} if d.is_dir() else set()
    from pyarrow import fs

    filesystem, root = remote
    try:
        infos = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
    except OSError:
        return set()
    return {i.base_name for i in infos if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")}


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, ensure_ascii=False, sort_keys=True)
    remote = _remote(directory)
    if remote is None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(directory) / MANIFEST, lambda f: f.write(text), text=True)
        return
    filesystem, root = remote
    filesystem.create_dir(root, recursive=True)
    with filesystem.open_output_stream(_join(root, MANIFEST)) as fh:
        fh.write(text.encode("utf-8"))


def read_manifest(directory: str) -> dict[str, Any] | None:
    """The manifest in ``directory``, or ``None`` when there is none."""
    remote = _remote(directory)
    try:
        if remote is None:
            text = (Path(directory) / MANIFEST).read_text(encoding="utf-8")
        else:
            filesystem, root = remote
            with filesystem.open_input_stream(_join(root, MANIFEST)) as fh:
                text = fh.read().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if remote is not None and "not found" in str(exc).lower():
            return None
        raise
    try:
        return json.loads(text)
    except ValueError:
        raise Illust2VecError(f"{_join(directory, MANIFEST)}: not a valid shard manifest (delete it and rerun)") from None


def read_shard(directory: str, name: str, widths: dict[str, int]) -> ShardRows:
    """Read one shard back as arrays."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    remote = _remote(directory)
    if remote is None:
        table = pq.read_table(Path(directory) / name)
    else:
        filesystem, root = remote
        table = pq.read_table(_join(root, name), filesystem=filesystem)
    error = table.column("error")
    ok = np.asarray(pc.is_null(error).to_numpy(zero_copy_only=False), dtype=bool)
    good = table.filter(pc.is_null(error))
    vectors = {}
    for col, width in widths.items():
        dtype = np.uint8 if col == "codes" else np.float32
        flat = good.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors[col] = np.asarray(flat, dtype=dtype).reshape(len(good), width)
    return ShardRows(
        index=np.asarray(table.column("index").to_numpy(), dtype=np.int64),
        path=table.column("path").to_pylist(), size=table.column("size").to_pylist(),
        mtime_ns=table.column("mtime_ns").to_pylist(), sha256=table.column("sha256").to_pylist(),
        error=error.to_pylist(), ok=ok, vectors=vectors,
    )


def iter_shards(directory: str | os.PathLike) -> Iterator[ShardRows]:
    """The shards of the run recorded in ``directory``'s manifest, in input order.

    Raises :class:`Illust2VecError` naming the first missing shard (an
    unfinished run: run the same command again to finish it).
    """
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise Illust2VecError(f"{directory}: no {MANIFEST} here; is this a shard directory written with --ray?")
    widths = manifest_widths(manifest)
    present = existing_shards(directory)
    missing = [n for n in manifest["shards"] if n not in present]
    if missing:
        raise Illust2VecError(f"{directory}: {len(missing)} of {len(manifest['shards'])} shards are missing "
                              f"(first: {missing[0]}); the run did not finish: run it again to complete them")
    for name in manifest["shards"]:
        yield read_shard(directory, name, widths)


def manifest_widths(manifest: dict[str, Any]) -> dict[str, int]:
    """Vector columns of the shards described by ``manifest`` and their widths."""
    return {k: int(v) for k, v in manifest["widths"].items()}
