"""Record outputs: one format rule for every command that writes records.

The format comes from ``--format`` when given, else from the output's extension
(``.json .jsonl .csv .parquet .npy .npz``), else ``json`` on stdout.
:class:`RecordSink` streams records (dicts) to stdout or to a file that appears
only when complete (a failed run leaves an existing file as it was).

Nested values (lists, dicts) become JSON text in CSV cells and Parquet columns
are built from the flat rows; a command may pass ``rows`` to turn one record into
several flat rows (e.g. one per tag).

>>> infer_format("tags.csv", None, ("json", "csv"))
'csv'
"""
from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import AtomicFile, atomic_write, json_safe, utf8_safe

__all__ = ["EXTENSIONS", "FORMULA_PREFIXES", "RecordSink", "csv_cell", "flat_row", "infer_format", "write_records"]

#: Output file extension -> format name.
EXTENSIONS: dict[str, str] = {
    ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
    ".pq": "parquet", ".npy": "npy", ".npz": "npz",
}
#: Formats that cannot go to stdout.
BINARY_FORMATS = frozenset({"parquet", "npy", "npz"})


def infer_format(output: str | os.PathLike | None, fmt: str | None, allowed: Sequence[str],
                 default: str = "json") -> str:
    """The output format: ``fmt`` if given, else the extension of ``output``, else ``default``.

    Raises :class:`Illust2VecError` for a format the command does not write, an
    unknown extension, or a binary format without an output file.
    """
    if fmt is None and output not in (None, "-"):
        suffix = Path(output).suffix.lower()
        fmt = EXTENSIONS.get(suffix)
        if fmt is None:
            raise Illust2VecError(
                f"{output}: cannot tell the format from the extension {suffix or '(none)'!r}; "
                f"use one of {', '.join(sorted(e for e, f in EXTENSIONS.items() if f in allowed))} "
                "or pass --format"
            )
    fmt = fmt or default
    if fmt not in allowed:
        raise Illust2VecError(f"this command writes {', '.join(allowed)}, not {fmt}")
    if fmt in BINARY_FORMATS and output in (None, "-"):
        raise Illust2VecError(f"--format {fmt} needs an output file: -o FILE.{fmt}")
    return fmt


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record with nested values (lists, dicts) as JSON text, for CSV cells."""
    return {k: (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, tuple, dict)) else v)
            for k, v in record.items()}


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any, *, raw: bool = False) -> Any:
    """A CSV cell safe to open in a spreadsheet: text starting with ``= + - @``, tab or CR gets a leading ``'``.

    Spreadsheets run such cells as formulas (``=HYPERLINK(...)``); Danbooru has tags
    like ``=_=`` and ``+_+``.  The apostrophe is what a spreadsheet user types to enter
    text literally.  Numbers (``-0.25``) are data and stay as they are; ``raw`` turns the
    guard off (``--csv-raw``).
    """
    if raw or not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


class RecordSink:
    """Streams records to stdout or a file in ``json``, ``jsonl``, ``csv`` or ``parquet``.

    Use as a context manager.  ``rows`` turns one record into flat rows for
    ``csv``/``parquet`` (default: :func:`flat_row`); ``columns`` fixes their
    columns, so that a CSV has its header and a Parquet file its schema even
    with no records (default: the first row's keys).  A file output is written
    to a temporary file and renamed into place on success; on an exception it is
    discarded and an existing file keeps its content.
    """

    def __init__(self, output: str | os.PathLike | None, fmt: str, *,
                 rows: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None = None,
                 columns: Sequence[str] | None = None, stdout: IO[str] | None = None,
                 raw_csv: bool = False) -> None:
        if fmt not in ("json", "jsonl", "csv", "parquet"):
            raise Illust2VecError(f"records cannot be written as {fmt}")
        self.output = None if output in (None, "-") else Path(output)
        self.fmt = fmt
        self.rows = rows or (lambda r: [flat_row(r)])
        self.count = 0
        self.raw_csv = raw_csv
        self._stdout = stdout
        self._csv: Any = None
        self._columns: list[str] | None = None if columns is None else list(columns)
        self._table_rows: list[dict[str, Any]] = []
        self._file: AtomicFile | None = None

    def __enter__(self) -> RecordSink:
        if self.output is None or self.fmt == "parquet":
            self._fh: IO[str] = self._stdout or sys.stdout
        else:  # a temporary file beside the output, renamed into place at the end
            self._file = AtomicFile(self.output, text=True, newline="")
            self._fh = self._file  # type: ignore[assignment]
        if self.fmt == "json":
            self._fh.write("[")
        if self.fmt == "csv" and self._columns is not None:
            self._start_csv(self._columns)
        return self

    def _start_csv(self, columns: list[str]) -> None:
        self._columns = columns
        self._csv = csv.DictWriter(self._fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        self._csv.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        fh = self._fh
        if self.fmt == "jsonl":
            fh.write(json_safe(json.dumps(record, ensure_ascii=False)) + "\n")
        elif self.fmt == "json":
            fh.write(("\n" if self.count == 0 else ",\n") + json_safe(json.dumps(record, ensure_ascii=False)))
        elif self.fmt == "csv":
            for row in self.rows(record):
                if self._csv is None:
                    self._start_csv(list(row))
                self._csv.writerow({k: csv_cell(v, raw=self.raw_csv) for k, v in row.items()})
        else:
            self._table_rows.extend({k: utf8_safe(v) if isinstance(v, str) else v for k, v in row.items()}
                                    for row in self.rows(record))
        self.count += 1
        if self.output is None and self.fmt in ("jsonl", "csv"):
            fh.flush()

    def write_all(self, records: Iterable[dict[str, Any]]) -> int:
        for r in records:
            self.write(r)
        return self.count

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.fmt == "json":
            self._fh.write("\n]\n" if self.count else "]\n")
        if self._file is not None:  # an error discards the temporary file: the old output stays
            self._file.__exit__(exc_type, exc, tb)
            return
        if exc_type is not None:
            return
        if self.fmt == "parquet":
            if self.output is None:  # pragma: no cover - infer_format refuses this
                raise Illust2VecError("--format parquet needs an output file")
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._table_rows:
                table = pa.Table.from_pylist(self._table_rows)
            else:
                table = pa.table({c: pa.array([], pa.string()) for c in self._columns or ["path"]})
            atomic_write(self.output, lambda f: pq.write_table(table, f), fsync=True)
        else:
            self._fh.flush()


def write_records(records: Iterable[dict[str, Any]], output: str | os.PathLike | None, fmt: str, *,
                  rows: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None = None,
                  columns: Sequence[str] | None = None, raw_csv: bool = False) -> int:
    """Write all ``records`` with a :class:`RecordSink`; returns how many were written."""
    with RecordSink(output, fmt, rows=rows, columns=columns, raw_csv=raw_csv) as sink:
        return sink.write_all(records)
