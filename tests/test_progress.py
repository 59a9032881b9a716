"""The one progress protocol: units and labels fit the work, and a callback can stop a long stage."""
from __future__ import annotations

import numpy as np
import pytest

from illust2vec.runtime.progress import Cancelled, ProgressBar, progress_callback


class Recorder:
    """A progress callback that keeps every call and stops after ``stop_after`` calls of one label."""

    def __init__(self, stop_label: str | None = None, stop_after: int = 0) -> None:
        self.calls: list[tuple[str, str, int, int | None]] = []
        self.stop_label, self.stop_after = stop_label, stop_after

    def __call__(self, done, total, *, unit, label):
        self.calls.append((label, unit, done, total))
        seen = sum(1 for c in self.calls if c[0] == self.stop_label)
        return self.stop_label is not None and seen > self.stop_after

    def units(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for label, unit, _, _ in self.calls:
            out.setdefault(label, set()).add(unit)
        return out


def test_callback_protocol_and_cancel():
    rec = Recorder("work", 2)
    report, close = progress_callback(rec, label="work", unit="pair", total=10)
    report(1)
    with pytest.raises(Cancelled, match="work: stopped by the progress callback after 2 pairs"):
        report(2)
    close()
    assert rec.calls[:2] == [("work", "pair", 0, 10), ("work", "pair", 1, 10)]
    with pytest.raises(TypeError, match="progress must be"):
        progress_callback(3, label="x")


def test_bar_adapter_counts_in_the_stage_unit(capsys):
    bar = ProgressBar(unit="img")
    bar(5, 750, unit="it", label="t-SNE")
    assert bar.n == 5 and bar._bar.unit == "it" and bar._bar.desc.startswith("t-SNE")
    bar(3, 36, unit="img", label="map image")  # a new stage: a new bar in its own unit
    assert bar.n == 3 and bar._bar.unit == "img"
    bar.close()
    err = capsys.readouterr().err
    assert "it/s" in err or "s/it" in err or "750" in err
    assert "img/s" not in err.split("map image")[0]  # the t-SNE bar never counted images


def _features(n: int = 300, d: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, d)) * 4
    return (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_tsne_counts_iterations_and_a_callback_stops_it():
    from illust2vec.maps.reduce import tsne

    rec = Recorder()
    emb = tsne(_features(), progress=rec, n_iter=100, early_exaggeration_iter=50)
    assert emb.shape == (300, 2)
    assert {c[:2] for c in rec.calls} == {("t-SNE", "it")}
    assert rec.calls[-1][2:] == (150, 150)
    stop = Recorder("t-SNE", 1)
    with pytest.raises(Cancelled) as info:
        tsne(_features(), progress=stop, n_iter=5000, early_exaggeration_iter=250)
    done = max(c[2] for c in stop.calls)
    assert done < 250  # stopped in the early exaggeration phase, long before 5,250 iterations
    assert info.value.partial.shape == (300, 2) and np.isfinite(info.value.partial).all()


def test_make_map_stages_report_their_own_units(tmp_path):
    """The demo's map: t-SNE in iterations, drawing and viewer thumbnails in images."""
    from PIL import Image

    from illust2vec.maps.pipeline import MapData, make_map

    feats = _features(60)
    paths = []
    for i in range(60):
        p = tmp_path / f"{i:02d}.png"
        Image.new("RGB", (32, 32), (i * 4, 100, 200 - i * 3)).save(p)
        paths.append(str(p))
    rec = Recorder()
    make_map(paths, tmp_path / "m.png", html=tmp_path / "m.html", data=MapData(features=feats), progress=rec)
    units = rec.units()
    assert units["t-SNE"] == {"it"}
    assert units["map image"] == {"img"} and units["viewer thumbnails"] == {"img"}
    assert max(c[2] for c in rec.calls if c[0] == "map image") == 60


def test_iter_batches_counts_images_and_stops(i2v_tagger):
    from illust2vec.runtime.batches import iter_batches

    model = i2v_tagger
    images = [np.full((40, 40, 3), k * 10, np.uint8) for k in range(24)]
    rec = Recorder()
    got = sum(len(b.indices) for b in iter_batches(model, images, batch_size=4, progress=rec))
    assert got == 24 and rec.calls[-1][1:] == ("img", 24, 24)
    stop = Recorder("images", 1)
    with pytest.raises(Cancelled):
        for _ in iter_batches(model, images, batch_size=4, progress=stop):
            pass
    assert max(c[2] for c in stop.calls) <= 8  # two batches of 24 images
