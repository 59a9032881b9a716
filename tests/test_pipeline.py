"""iter_batches: the thread and worker-process paths give the same outputs, indices and errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ANIME36

from illust2vec.runtime import batches as pipeline
from illust2vec.runtime.batches import iter_batches


def _inputs(tmp_path: Path) -> list:
    """anime36 files with bad entries mixed in: missing, empty, truncated, not an image."""
    files = sorted(ANIME36.glob("*.jpg"))[:11]
    empty = tmp_path / "empty file.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated ü.jpg"
    truncated.write_bytes(files[0].read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    return [files[0], tmp_path / "missing.jpg", *files[1:5], empty, *files[5:9], truncated, text, *files[9:]]


def _collect(batches):
    indices, sources, probs, errors, sizes = [], [], [], [], []
    for b in batches:
        indices += b.indices
        sources += b.sources
        if len(b):
            probs.append(b.outputs["prob"])
        errors += [(e.index, e.source, e.message) for e in b.errors]
        sizes.append(len(b) + len(b.errors))
    return indices, sources, np.concatenate(probs), errors, sizes


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "pipe-fallback"])
def test_worker_processes_match_the_thread_path(i2v_tagger, tmp_path, monkeypatch, shared):
    inputs = _inputs(tmp_path)
    ref_idx, ref_src, ref_prob, ref_err, _ = _collect(
        iter_batches(i2v_tagger, inputs, batch_size=4, workers=0, outputs=("prob",)))
    if not shared:
        monkeypatch.setattr(pipeline, "_shared_buffer", lambda nbytes: None)
    before = _shm_names()
    seen = []
    idx, src, prob, err, sizes = _collect(
        iter_batches(i2v_tagger, inputs, batch_size=4, workers=2, outputs=("prob",), on_error=seen.append))
    assert idx == ref_idx == [i for i in range(len(inputs)) if i not in {1, 6, 11, 12}]
    assert src == ref_src
    assert err == ref_err and [e.index for e in seen] == [1, 6, 11, 12]
    assert "missing.jpg" in err[0][1] and "truncated ü.jpg" in err[2][1]
    np.testing.assert_array_equal(prob, ref_prob)  # the same bytes in, the same engine: identical
    # every batch is the next batch_size inputs, bad ones included
    assert sizes == [4] * (len(inputs) // 4) + ([len(inputs) % 4] if len(inputs) % 4 else [])
    assert _shm_names() == before  # the shared ring is unlinked


def test_stopping_early_releases_the_workers_and_the_ring(i2v_tagger):
    files = sorted(ANIME36.glob("*.jpg"))
    before = _shm_names()
    gen = iter_batches(i2v_tagger, files, batch_size=3, workers=2, outputs=("prob",))
    first = next(gen)
    assert first.indices == [0, 1, 2] and first.outputs["prob"].shape[0] == 3
    gen.close()
    assert _shm_names() == before


def test_all_bad_batch_yields_errors_only(i2v_tagger, tmp_path):
    bad = [tmp_path / f"gone{i}.jpg" for i in range(3)]
    good = sorted(ANIME36.glob("*.jpg"))[:2]
    out = list(iter_batches(i2v_tagger, [*bad, *good], batch_size=3, workers=2, outputs=("prob",)))
    assert [len(b) for b in out] == [0, 2]
    assert [e.index for e in out[0].errors] == [0, 1, 2]
    assert out[1].indices == [3, 4]


class _FailingEngine:
    """Wraps a model; its second run fails (as a GPU running out of memory would)."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.recipe, self.alpha, self.outputs, self.batch_size = model.recipe, model.alpha, ("prob",), 2

    def run_all(self, batch, names):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("engine failed on the second batch")
        return self.model.run_all(batch, names)


def test_engine_errors_reach_the_caller_and_everything_is_released(i2v_tagger):
    files = sorted(ANIME36.glob("*.jpg"))[:8]
    before = _shm_names()
    seen = []
    with pytest.raises(RuntimeError, match="second batch"):
        for batch in iter_batches(_FailingEngine(i2v_tagger), files, batch_size=2, workers=2, outputs=("prob",)):
            seen.append(batch.indices)
    assert seen == [[0, 1]]
    assert _shm_names() == before
    import threading

    assert not any(t.name == "illust2vec-engine" for t in threading.enumerate())


@pytest.mark.parametrize("good_items", [3, 11], ids=["while-starting", "from-the-engine-thread"])
def test_a_failing_input_iterable_reaches_the_caller(i2v_tagger, good_items):
    files = sorted(ANIME36.glob("*.jpg"))

    def inputs():
        yield from files[:good_items]
        raise ValueError("listing the folder failed")

    before = _shm_names()
    with pytest.raises(ValueError, match="listing the folder failed"):
        list(iter_batches(i2v_tagger, inputs(), batch_size=2, workers=2, outputs=("prob",)))
    assert _shm_names() == before
