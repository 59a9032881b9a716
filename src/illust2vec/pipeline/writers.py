"""Writers, the last stage: where each tagged or embedded input goes.

A writer takes the rows of a run one by one (:meth:`add`, ``False`` when that
input could not be written: it is reported, the run goes on) and finishes with
:meth:`close`, which returns the lines that say what was written.

* records (:class:`TagRecords`: JSON, JSONL, CSV, Parquet), matrices
  (:class:`TagMatrix`, :class:`FaceTagMatrix`, :class:`VectorMatrix`: ``.npy``
  + paths, ``.npz``, Parquet), captions (:class:`Captions`), statistics
  (:class:`TagStatistics`, :class:`TagFrequencies`);
* the collection is the writer of ``index`` (:func:`illust2vec.pipeline.tasks.index_files`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Row:
    """One input's result: its position, its name, its outputs and (tagging) its tags.

    ``face`` is the crop's description (``source``, ``face_index``, ``box``,
    ``likelihood``, ``ref``) when the input is a face crop.
    """

    index: int
    source: str
    outputs: dict[str, np.ndarray]
    tags: dict[str, list[tuple[str, float]]] | None = None
    face: dict[str, Any] | None = None


class Writer:
    """The writer protocol (and a base that does nothing)."""

    def add(self, row: Row) -> bool:
        return True

    def close(self) -> list[str]:
        """After the last row: write what waits for the end; the ``wrote ...`` lines."""
        return []

    def abort(self) -> None:
        """The run failed: leave nothing half written (what was already complete stays)."""


@contextlib.contextmanager
def writing(writers: Sequence[Writer]) -> Iterator[list[str]]:
    """Close ``writers`` when the block ends (their lines land in the list it gives), or abort them on an error."""
    lines: list[str] = []
    try:
        yield lines
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        lines.extend(writer.close())


def tag_csv_rows(record: dict) -> list[dict]:
    """CSV/Parquet rows of one tag record: one per tag (path, [face columns], category, tag, probability, model)."""
    base = {k: v for k, v in record.items() if k not in ("tags", "model")}
    return [{**base, "category": cat, "tag": tag, "probability": p, "model": record.get("model")}
            for cat, tags in record["tags"].items() for tag, p in tags.items()]


class TagRecords(Writer):
    """One record per input (``{"path", [face fields], "tags", "model"}``) into a :class:`~illust2vec.io.records.RecordSink`."""

    def __init__(self, output: str | os.PathLike | None, fmt: str, *, model: str, raw_csv: bool = False) -> None:
        from illust2vec.io.records import RecordSink

        self.fmt, self.model = fmt, model
        self.sink = RecordSink(output, fmt, rows=tag_csv_rows, raw_csv=raw_csv).__enter__()

    def add(self, row: Row) -> bool:
        from illust2vec.faces.features import FACE_FIELDS
        from illust2vec.io.writers import tag_record

        if row.face is None:
            self.sink.write(tag_record(row.source, row.tags, model=self.model))
        else:  # csv: path column "PATH#faceK [x,y,w,h]"
            path = row.face["ref"] if self.fmt == "csv" else row.face["source"]
            self.sink.write(tag_record(path, row.tags, **{k: row.face[k] for k in FACE_FIELDS}, model=self.model))
        return True

    def close(self) -> list[str]:
        self.sink.__exit__(None, None, None)
        return []

    def abort(self) -> None:
        self.sink.__exit__(*sys.exc_info())


class TagMatrix(Writer):
    """The ``(N, T)`` probabilities in input order (failed rows NaN), saved at the end."""

    def __init__(self, output: str | os.PathLike, sources: Sequence[Any], *, model: Any, columns: bool) -> None:
        self.output, self.sources, self.model, self.columns = output, [str(s) for s in sources], model, columns
        self.matrix = np.full((len(self.sources), len(model.tags)), np.nan, np.float32)

    def add(self, row: Row) -> bool:
        self.matrix[row.index] = row.outputs["prob"]
        return True

    def close(self) -> list[str]:
        from illust2vec.io.writers import write_matrix

        write_matrix(self.output, self.matrix, self.sources, model=self.model.name,
                     column_names=list(self.model.tags.names) if self.columns else None)
        return [f"wrote {self.output} ({self.matrix.shape[0]}x{self.matrix.shape[1]}; failed rows are NaN)"]


class FaceTagMatrix(Writer):
    """The probabilities of every face crop (a row each) and ``FILE.faces.jsonl`` naming the rows."""

    def __init__(self, output: str | os.PathLike, *, model: Any, columns: bool) -> None:
        self.output, self.model, self.columns = output, model, columns
        self.rows: list[np.ndarray] = []
        self.faces: list[dict[str, Any]] = []

    def add(self, row: Row) -> bool:
        self.rows.append(row.outputs["prob"])
        self.faces.append(row.face)  # type: ignore[arg-type]
        return True

    def close(self) -> list[str]:
        from illust2vec.io.writers import write_matrix

        if not self.rows:
            return []
        write_matrix(self.output, np.stack(self.rows), [m["source"] for m in self.faces], model=self.model.name,
                     column_names=list(self.model.tags.names) if self.columns else None)
        side = write_face_sidecar(self.output, self.faces)
        return [f"wrote {self.output} ({len(self.rows)}x{len(self.model.tags)}, one row per face) and {side}"]


class VectorMatrix(Writer):
    """Feature vectors (or packed binary codes) of the inputs that worked, in input order, with their paths."""

    def __init__(self, output: str | os.PathLike, *, model: Any, binary: bool = False) -> None:
        self.output, self.model, self.binary = output, model, binary
        self.rows: list[np.ndarray] = []
        self.paths: list[str] = []
        self.faces: list[dict[str, Any]] = []

    def add(self, row: Row) -> bool:
        self.rows.append(row.outputs["codes"] if self.binary and "codes" in row.outputs else
                         self.model.binarize_features(row.outputs["feature"][None])[0] if self.binary else
                         row.outputs["feature"])
        self.paths.append(row.source if row.face is None else row.face["source"])
        if row.face is not None:
            self.faces.append(row.face)
        return True

    def close(self) -> list[str]:
        from illust2vec.io.writers import write_matrix

        if not self.rows:
            return []
        matrix = np.stack(self.rows)
        written = write_matrix(self.output, matrix, self.paths, model=self.model.name)
        if self.faces:
            written.append(write_face_sidecar(self.output, self.faces))
        return [f"wrote {', '.join(map(str, written))} ({matrix.shape[0]}x{matrix.shape[1]} {matrix.dtype}, "
                f"model {self.model.name})"]


def write_face_sidecar(output: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``OUTPUT.faces.jsonl``: per matrix row ``{"row", "source", "face_index", "box", "likelihood"}``."""
    import json

    from illust2vec.faces.features import FACE_FIELDS
    from illust2vec.io.atomic import atomic_write, json_safe

    path = Path(output)
    side = path.with_name(path.stem + ".faces.jsonl")

    def write(fh) -> None:
        for row, meta in enumerate(rows):
            rec = {"row": row, "source": meta["source"], **{k: meta[k] for k in FACE_FIELDS}}
            fh.write(json_safe(json.dumps(rec, ensure_ascii=False)) + "\n")

    return atomic_write(side, write, text=True)


class TagFrequencies(Writer):
    """kohya-ss' ``--frequency_tags``: how many captions each tag is in, printed at the end.

    Ties are listed in the order kohya-ss meets the tags: pictures in sorted path order,
    tags in caption order.  Beside :class:`Captions` it counts the caption words
    (``captions.frequencies``); alone, the tags of each input.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream
        self.counts: dict[str, int] = {}
        self.first: dict[str, tuple[str, int]] = {}
        self.with_captions = False

    def count(self, source: object, words) -> None:
        for i, word in enumerate(words):
            self.counts[word] = self.counts.get(word, 0) + 1
            key = (str(source), i)
            if word not in self.first or key < self.first[word]:
                self.first[word] = key

    def add(self, row: Row) -> bool:
        if not self.with_captions:
            self.count(row.source, [t for c, ts in row.tags.items() if c != "rating" for t, _ in ts])
        return True

    def close(self) -> list[str]:
        stream = self.stream or sys.stdout
        print("Tag frequencies:", file=stream)
        for tag in sorted(self.counts, key=lambda t: (-self.counts[t], self.first[t])):
            print(f"{tag}: {self.counts[tag]}", file=stream)
        return []


class Captions(Writer):
    """A caption file per picture (:mod:`illust2vec.datasets.captions`), planned before any work.

    Pictures whose caption would clash with another's (or be an input) are reported
    at once through ``on_error`` and get none.
    """

    def __init__(self, files: Sequence[Path], options: Any, *, table: Any, caption_dir: Path | None = None,
                 on_error: Callable[[Any], None], frequencies: TagFrequencies | None = None) -> None:
        from illust2vec.datasets.captions import caption_batch, plan_captions

        self.options, self.table, self.on_error, self.frequencies = options, table, on_error, frequencies
        self.failed = 0  # captions counted as written whose commit (fsync, rename) then failed

        def commit_failed(exc) -> None:
            self.failed += 1
            on_error(exc)

        self.batch = caption_batch(commit_failed)  # durable in rounds, and all of it by close()
        self.plan = plan_captions(files, options, caption_dir)
        for clash in self.plan.clashes:  # before any work: one line per image that gets no caption
            for image in clash.images:
                on_error(_clash_line(image, clash))
        if frequencies is not None:
            frequencies.with_captions = True

    def add(self, row: Row) -> bool:
        from illust2vec.datasets.captions import CaptionError, caption_words, write_caption

        image = Path(row.source)
        target = self.plan.target(image)
        if target is None:
            return False  # in a clash, reported above
        words = caption_words(row.tags, self.options, self.table)
        if self.frequencies is not None:
            self.frequencies.count(image, words)
        try:
            write_caption(target, self.options.separator.join(words), self.options, batch=self.batch)
        except CaptionError as exc:
            self.on_error(exc)
            return False
        return True

    def close(self) -> list[str]:
        self.batch.commit()
        return []

    def abort(self) -> None:
        self.batch.commit()  # the captions already complete stay, durably


def _clash_line(image: Path, clash) -> str:
    others = [str(p) for p in clash.images if p != image]
    if clash.is_input:
        return f"{image}: its caption {clash.target} would overwrite an input file; no caption written"
    return (f"{image}: its caption {clash.target} would also be the caption of {', '.join(others)}; "
            "no caption written (--caption-name name gives x.jpg.txt, x.png.txt)")


class TagStatistics(Writer):
    """Tag frequencies of the run (:class:`~illust2vec.datasets.tagstats.TagCounter`); ``stats()`` at the end."""

    def __init__(self) -> None:
        from illust2vec.datasets.tagstats import TagCounter

        self.counter = TagCounter()

    def add(self, row: Row) -> bool:
        self.counter.add(row.tags)
        return True

    def stats(self):
        return self.counter.stats()
