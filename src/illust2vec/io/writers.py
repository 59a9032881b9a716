"""Sinks: tag records as JSON/JSONL/CSV, vectors as NumPy/Parquet (captions: :mod:`illust2vec.datasets.captions`)."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import DurableBatch, atomic_write, utf8_safe

def tag_record(path: str, tags: dict[str, list[tuple[str, float]]], **extra: Any) -> dict[str, Any]:
    """One image's result: ``{"path": ..., "tags": {category: {tag: probability}}}`` (sorted by probability)."""
    record: dict[str, Any] = {"path": path}
    record.update(extra)
    record["tags"] = {cat: {t: round(float(p), 6) for t, p in pairs} for cat, pairs in tags.items()}
    return record


def write_matrix(path: str | os.PathLike, matrix: np.ndarray, paths: Sequence[str], *,
                 column_names: Sequence[str] | None = None, model: str | None = None) -> list[Path]:
    """Save a row-per-image matrix with its paths (and the name of the model that made it).

    ``.npy``: the matrix, plus ``NAME.paths.txt`` (one path per line, same order)
    and, with ``model``, ``NAME.meta.json`` (``{"model": ..., "shape": ..., "dtype": ...}``).
    ``.npz``: arrays ``matrix`` and ``paths`` (and ``columns``, ``model``).
    ``.parquet``: columns ``path`` and ``vector`` (a fixed-size list), or one
    column per name when ``column_names`` is given; ``model`` in the schema metadata.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if suffix == ".npy":
        # non-UTF-8 names as their bytes (surrogateescape); encoded before anything is written
        listing = "".join(p.replace("\n", " ") + "\n" for p in paths).encode("utf-8", "surrogateescape")
        paths_file = path.with_suffix(".paths.txt")
        meta_file = path.with_suffix(".meta.json")
        meta = {"model": model, "shape": list(matrix.shape), "dtype": str(matrix.dtype)}
        # all written in full before any replaces its old file: a failure leaves the old set
        batch = DurableBatch()
        try:
            with batch.open(path) as npy:
                np.save(npy, matrix)
            batch.write(paths_file, listing)
            if model is not None:
                batch.write(meta_file, json.dumps(meta) + "\n")
        except BaseException:
            batch.discard()
            raise
        batch.commit()
        written += [paths_file] + ([meta_file] if model is not None else [])
    elif suffix == ".npz":
        extra = {"columns": np.asarray(column_names, dtype=str)} if column_names is not None else {}
        if model is not None:
            extra["model"] = np.asarray(model)
        atomic_write(path, lambda f: np.savez(f, matrix=matrix, paths=np.asarray(paths, dtype=str), **extra))
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        if column_names is not None:
            table = pa.table({"path": [utf8_safe(p) for p in paths],
                              **{n: matrix[:, i] for i, n in enumerate(column_names)}})
        else:
            flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
            vectors = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
            table = pa.table({"path": [utf8_safe(p) for p in paths], "vector": vectors})
        if model is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"illust2vec.model": model})
        atomic_write(path, lambda f: pq.write_table(table, f))
    else:
        raise Illust2VecError(f"{path}: unknown output format {suffix!r}; use .npy, .npz or .parquet")
    return written


__all__ = ["tag_record", "write_matrix"]
