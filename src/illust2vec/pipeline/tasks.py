"""What the commands do, as library calls: readers -> distributor (runner) -> rows -> writers.

* :func:`tag_files` / :func:`run_tagging`: tags (and probabilities) per picture;
* :func:`embed_files` / :func:`run_embedding`: feature vectors (or binary codes);
* :func:`index_files`: pictures into a collection (the collection is the writer).

``illust2vec tag``, ``embed`` and ``index`` are these calls with writers attached;
``--ray`` only swaps the distributor.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.pipeline.distribute import Local, OnRay
from illust2vec.pipeline.readers import image_files
from illust2vec.pipeline.runner import RunOptions
from illust2vec.pipeline.writers import Row, Writer
from illust2vec.runtime.background import iterate_in_thread
from illust2vec.runtime.batches import BatchResult, ItemError

Distributor = Union[Local, OnRay]
OnErrorArg = Union[Callable[[ItemError], None], Literal["collect", "raise"]]
PathsArg = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


# --------------------------------------------------------------------------- tagging
def tag_thresholds(model: Any, *, threshold: float | None = None, categories: dict[str, float | None] | None = None,
                   rule: str = "constant", compare: str | None = None, compat: str | None = None
                   ) -> np.ndarray | None:
    """Per-tag thresholds (``None`` for ``rule="mcut"``): the model's own, a ``--compat`` tool's, or given.

    ``threshold`` sets every category, ``categories`` some of them
    (``{"general": 0.35}``); ``rule`` ``"f0.5"``/``"f1"``/``"f2"`` takes the
    model's calibrated thresholds of that F-score.
    """
    from illust2vec.models.compat import compat_mode
    from illust2vec.models.tags import resolve_thresholds

    if rule == "mcut":
        return None
    mode = compat_mode(compat)
    own = compat is None  # the model's own front-end rule (imgutils' >= for PixAI), unless --compat says
    compare = compare or (model.threshold_compare if own else mode.threshold_compare)
    float32 = model.thresholds_float32 if own else mode.thresholds_float32
    if rule in ("f0.5", "f1", "f2"):
        return resolve_thresholds(model.tags, model.thresholds_for(None, rule), compare=compare)
    mapping = dict(mode.thresholds) if mode.thresholds is not None else dict(model.thresholds)
    if threshold is not None:
        mapping = {"default": threshold}
    for cat, value in (categories or {}).items():
        if value is not None:
            if cat not in model.tags.category_names:
                raise Illust2VecError(f"--{cat}: {model.name} has no {cat} tags "
                                      f"(categories: {', '.join(model.tags.category_names)})")
            mapping[cat] = value
    return resolve_thresholds(model.tags, mapping, compare=compare, float32=float32)


@dataclass(frozen=True)
class TagRule:
    """How probabilities become tags: per-tag ``thresholds`` (``None``: MCut), then ``overlap`` (``None``: off)."""

    thresholds: np.ndarray | None = None
    overlap: dict | None = None  #: ``{}``: drop only the tags that are part of another present tag

    def tags(self, prob: np.ndarray, table: Any) -> list[dict[str, list[tuple[str, float]]]]:
        from illust2vec.models.overlap import drop_overlap_result
        from illust2vec.models.tags import plausible_tags, plausible_tags_mcut

        found = (plausible_tags_mcut(prob, table) if self.thresholds is None
                 else plausible_tags(prob, table, self.thresholds))
        return found if self.overlap is None else [drop_overlap_result(t, self.overlap or None) for t in found]


def _rows(batches: Iterable[BatchResult], sources: Sequence[Any], faces: Any,
          tag: Callable[[np.ndarray], list] | None = None) -> Iterator[Row]:
    for batch in batches:
        if not batch.indices:
            continue
        tags = tag(batch.outputs["prob"]) if tag is not None else None
        for j, index in enumerate(batch.indices):
            face = faces.meta[index] if faces is not None else None
            yield Row(index, str(sources[index]) if face is None else face["source"],
                      {name: value[j] for name, value in batch.outputs.items()},
                      None if tags is None else tags[j], face)


def _write(rows: Iterable[Row], writers: Sequence[Writer]) -> int:
    """Hand every row to every writer; the count of rows all writers took."""
    done = 0
    for row in rows:
        done += all([w.add(row) for w in writers])
    return done


def _ahead(batches: Iterable[BatchResult]) -> Iterator[BatchResult]:
    """The batches computed ahead in a thread, so that the writers' file work here overlaps the model's
    (ONNX Runtime releases the GIL): captions cost their I/O, not a pause of the model."""
    return iterate_in_thread(iter(batches), maxsize=2, name="illust2vec-model")


def run_tagging(distributor: Distributor, sources: Sequence[Any], model: Any, rule: TagRule,
                writers: Sequence[Writer], *, faces: Any = None, progress: Any = None,
                on_error: Callable[[ItemError], None] | None = None) -> int:
    """Tag ``sources`` (or the crops of ``faces``, a :func:`~illust2vec.pipeline.readers.face_crops`) into
    ``writers``; returns how many inputs were tagged and written."""
    batches = distributor.batches(sources if faces is None else faces, tagger=model, progress=progress,
                                  on_error=on_error)
    return _write(_rows(_ahead(batches), sources, faces, lambda prob: rule.tags(prob, model.tags)), writers)


def run_embedding(distributor: Distributor, sources: Sequence[Any], model: Any, writers: Sequence[Writer], *,
                  faces: Any = None, progress: Any = None, on_error: Callable[[ItemError], None] | None = None) -> int:
    """Embed ``sources`` (or the crops of ``faces``) into ``writers``; returns how many inputs were embedded."""
    batches = distributor.batches(sources if faces is None else faces, embedder=model, progress=progress,
                                  on_error=on_error)
    return _write(_rows(_ahead(batches), sources, faces), writers)


# --------------------------------------------------------------------------- library calls
@dataclass(frozen=True)
class TaggedFile:
    """One picture's tags (``{category: {tag: probability}}``, most likely first) and all probabilities."""

    path: str
    tags: dict[str, dict[str, float]]
    probabilities: np.ndarray


@dataclass
class TagResult:
    """What :func:`tag_files` found: the pictures that worked (input order) and one error per other."""

    model: str
    tag_names: list[str]
    files: list[TaggedFile] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)

    @property
    def probabilities(self) -> np.ndarray:
        """``(len(files), len(tag_names))`` float32."""
        return (np.stack([f.probabilities for f in self.files]) if self.files
                else np.zeros((0, len(self.tag_names)), np.float32))


@dataclass
class EmbedResult:
    """What :func:`embed_files` computed: a vector (or code) row per picture that worked, and the errors."""

    model: str
    paths: list[str]
    vectors: np.ndarray
    errors: list[ItemError] = field(default_factory=list)


class _Collect(Writer):
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> bool:
        self.rows.append(row)
        return True


def _error_handler(on_error: OnErrorArg, errors: list[ItemError]) -> Callable[[ItemError], None]:
    if on_error not in ("collect", "raise") and not callable(on_error):
        raise ValueError(f"on_error must be 'collect', 'raise' or a callable, not {on_error!r}")

    def handle(err: ItemError) -> None:
        errors.append(err)
        if on_error == "raise":
            raise Illust2VecError(str(err))
        if callable(on_error):
            on_error(err)

    return handle


def _model(model: Any, task: str, device: str | None) -> Any:
    if model is None or isinstance(model, (str, os.PathLike)):
        from illust2vec.models.loading import load_model

        return load_model(model, task=task, progress=False, **({"device": device} if device else {}))
    return model


def _files(paths: PathsArg) -> list:
    return image_files([paths] if isinstance(paths, (str, os.PathLike)) else list(paths))


def tag_files(paths: PathsArg, *, model: Any = None, threshold: float | None = None, device: str | None = None,
              batch_size: int | None = None, workers: int | None = None, on_error: OnErrorArg = "collect",
              progress: Any = None, writers: Sequence[Writer] = ()) -> TagResult:
    """Tag image files, folders (recursive) or globs: what ``illust2vec tag`` does, as a call.

    ``model``: an :class:`~illust2vec.models.image_model.ImageModel` or a name for
    :func:`~illust2vec.models.loading.load_model` (``None``: the default tagger).
    ``threshold``: one for every category (default: the model's own).  Unreadable
    pictures do not stop the run: each becomes an :class:`~illust2vec.runtime.batches.ItemError`
    in ``result.errors`` (``on_error``: ``"collect"``, ``"raise"`` at the first, or a callable
    also called with each).  ``writers`` (:mod:`illust2vec.pipeline.writers`) take the rows too.
    """
    files = _files(paths)
    model = _model(model, "tag", device)
    result = TagResult(model.name, list(model.tags.names))
    collect = _Collect()
    rule = TagRule(tag_thresholds(model, threshold=threshold))
    run_tagging(Local(RunOptions(batch_size, workers)), files, model, rule, [collect, *writers],
                progress=progress, on_error=_error_handler(on_error, result.errors))
    result.files = [TaggedFile(r.source, {c: {t: float(p) for t, p in ts} for c, ts in r.tags.items()},
                               np.asarray(r.outputs["prob"], np.float32)) for r in collect.rows]
    return result


def embed_files(paths: PathsArg, *, model: Any = None, binary: bool = False, device: str | None = None,
                batch_size: int | None = None, workers: int | None = None, on_error: OnErrorArg = "collect",
                progress: Any = None, writers: Sequence[Writer] = ()) -> EmbedResult:
    """Feature vectors (``binary``: packed binary codes) of image files, folders or globs: ``illust2vec embed``.

    Arguments as :func:`tag_files` (``model`` ``None``: the default embedder).
    """
    files = _files(paths)
    model = _model(model, "feature", device)
    errors: list[ItemError] = []
    collect = _Collect()
    run_embedding(Local(RunOptions(batch_size, workers)), files, model, [collect, *writers], progress=progress,
                  on_error=_error_handler(on_error, errors))
    feats = (np.stack([r.outputs["feature"] for r in collect.rows]) if collect.rows
             else np.zeros((0, 0), np.float32))
    vectors = model.binarize_features(feats) if binary and len(feats) else feats
    return EmbedResult(model.name, [r.source for r in collect.rows], vectors, errors)


# --------------------------------------------------------------------------- the collection as the writer
def index_files(col: Any, paths: Sequence[str], *, embedder: Any, taggers: Sequence[Any], distributor: Distributor,
                prune: bool = False, prune_missing: bool = False, rebuild: bool = False, faces: Any = None,
                progress: bool = True, on_error: Callable[[ItemError], None] | None = None) -> Any:
    """Add the pictures under ``paths`` to the collection ``col``: an :class:`~illust2vec.collection.AddReport`.

    Locally: :meth:`~illust2vec.collection.Collection.add` (incremental, every model
    over one decode).  On Ray: new and changed files run on the cluster into shards
    (one tagger: the last of ``taggers``), merged here.
    """
    if isinstance(distributor, Local):
        o = distributor.options
        return col.add(paths, embedder=embedder, taggers=taggers, batch_size=o.batch_size, workers=o.workers,
                       progress=progress, prune=prune, rebuild=rebuild, faces=faces, prune_missing=prune_missing)
    return _index_on_ray(col, paths, embedder, taggers, distributor, prune, prune_missing, progress, on_error)


def _index_on_ray(col, paths, embedder, taggers, ray: OnRay, prune, prune_missing, progress, on_error):
    import shutil

    from illust2vec.collection import AddReport
    from illust2vec.distributed import index_shards
    from illust2vec.pipeline.readers import source_list

    info = col.info()
    new = [t for t in taggers if t.identity not in {s["identity"] for s in info["taggers"]}]
    if new and info["files"]:
        raise Illust2VecError(
            f"--ray with a tagger the collection does not hold ({new[0].name!r}): add it first without --ray "
            f"('illust2vec index DIR --db {col.path} --tagger {new[0].name}' tags the stored pictures here, "
            "without embedding them again), then use --ray for new pictures")
    sources = source_list(paths)
    known = col.view.indexed_file_stats()
    todo = [s for s in sources if not _unchanged(s, known)]
    report = AddReport()
    if todo:
        directory = ray.shards or str(col.path / "ray-shards")
        ray.run(todo, directory, tagger=taggers[-1] if taggers else None, embedder=embedder,
                progress=bool(progress), on_error=on_error)
        report = index_shards(col, directory, progress=bool(progress))
        if not ray.shards:
            shutil.rmtree(directory, ignore_errors=True)
    report.unchanged += len(sources) - len(todo)
    if prune:
        report.record_prune(col.prune(missing_roots=prune_missing))
    return report


def _unchanged(source: str, known: dict) -> bool:
    """Whether a local file is indexed with its current size and mtime (URIs are always sent)."""
    if "://" in source:
        return False
    try:
        st = os.stat(source)
    except OSError:
        return False
    return known.get(os.path.realpath(source)) == (st.st_size, st.st_mtime_ns)
