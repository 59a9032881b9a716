"""Preprocessing on the device: the in-graph pipeline and its decoder fallback, on the CPU provider."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ANIME36

from illust2vec.runtime import device_batches as device_pipeline

from illust2vec.runtime import batches as pipeline
from illust2vec.runtime.device_batches import InGraphRunner, iter_batches_in_graph
from illust2vec.errors import Illust2VecError
from illust2vec.io.gpu_decode import BatchDecoder, nvimgcodec_problem
from illust2vec.io.images import load_image
from illust2vec.runtime.batches import iter_batches
from illust2vec.prep.preprocess import preprocess


def _anime(n: int) -> list[Path]:
    files = sorted(ANIME36.glob("*.jpg"))[:n]
    if not files:
        pytest.skip(f"{ANIME36} is missing (the shared data set)")
    return files


def _inputs(tmp_path: Path) -> list:
    """anime36 files with bad entries mixed in: missing, empty, truncated, not an image."""
    files = _anime(9)
    empty = tmp_path / "empty file.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated ü.jpg"
    truncated.write_bytes(files[0].read_bytes()[:300])
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    return [files[0], tmp_path / "missing.jpg", *files[1:4], empty, *files[4:7], truncated, text, *files[7:]]


def _collect(batches):
    indices, sources, probs, errors = [], [], [], []
    for b in batches:
        indices += b.indices
        sources += b.sources
        if len(b):
            probs.append(b.outputs["prob"])
        errors += [(e.index, e.source, e.message) for e in b.errors]
    return indices, sources, np.concatenate(probs), errors


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("mode", ["thread", "shared-memory", "overflow", "pipe"])
def test_in_graph_pipeline_equals_the_cpu_pipeline(i2v_tagger, tmp_path, monkeypatch, mode):
    inputs = _inputs(tmp_path)
    want = _collect(iter_batches(i2v_tagger, inputs, batch_size=4, workers=0, outputs=("prob",)))
    if mode == "overflow":  # room for one 512x512 picture per two: the rest comes back through the pipe
        monkeypatch.setattr(device_pipeline, "ARENA_IMAGE_BYTES", 512 * 512 * 3 // 2 + 1)
    if mode == "pipe":  # no room in /dev/shm
        monkeypatch.setattr(pipeline, "_shared_buffer", lambda nbytes: None)
    before = _shm_names()
    seen = []
    got = _collect(iter_batches_in_graph(i2v_tagger, inputs, batch_size=4, workers=0 if mode == "thread" else 2,
                                         outputs=("prob",), on_error=seen.append))
    assert _shm_names() <= before  # the ring is gone
    assert got[0] == want[0] and got[1] == want[1]
    assert got[3] == want[3] and len(seen) == 4  # the same error lines for the same inputs
    assert "missing.jpg" in got[3][0][1] and "truncated ü.jpg" in got[3][2][1]
    np.testing.assert_array_equal(got[2], want[2])  # same input tensor, same network, same batches: identical


@pytest.mark.parametrize("io_binding", [True, False], ids=["io-binding", "host"])
def test_runner_on_mixed_sizes_matches_the_model(i2v_features, io_binding):
    images = [load_image(p, alpha="drop") for p in _anime(4)]
    images += [images[0][:300, :200], images[1][50:, :333], images[2][:300, :200]]
    runner = InGraphRunner(i2v_features, io_binding=io_binding)
    assert runner.device_type == "cpu"
    if not io_binding:
        runner.max_bucket_bytes = 1  # one picture per run: large buckets are split
    got = runner.run_images(images)["feature"]
    want = i2v_features.run_all(preprocess(images, i2v_features.recipe))["feature"]
    # the same input tensors (bit-equal), run in buckets of one size instead of one batch
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.skipif(nvimgcodec_problem()[0] is None, reason="nvImageCodec decodes on a GPU here: no fallback")
def test_gpu_decoder_falls_back_to_the_cpu_with_the_reason(tmp_path):
    files = _anime(3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\0" * 50)  # a JPEG signature and nothing else
    # without the package: what to install; with it but without a GPU: the decoder's own error
    reasons = "nvImageCodec (is not installed.*pip install|cannot open a GPU decoder|cannot be loaded)"
    with pytest.warns(RuntimeWarning, match=reasons + ".*; decoding images on the CPU"):
        decoder = BatchDecoder("auto", device="cuda")
    assert decoder.backend == "cpu" and decoder.fallback_reason.startswith("nvImageCodec")
    results = decoder.decode([*files, bad, tmp_path / "missing.jpg"])
    for path, (array, message) in zip(files, results):
        assert message is None
        np.testing.assert_array_equal(array, load_image(path))
    assert results[3][0] is None and results[3][1] and "bad.jpg" not in results[3][1]
    assert results[4][0] is None and results[4][1]
    with pytest.raises(Illust2VecError, match="GPU JPEG decoding is not available: " + reasons):
        BatchDecoder("nvimgcodec", device="cuda")


def test_decoder_on_the_cpu_asks_nothing_and_rejects_unknown_backends():
    assert BatchDecoder("auto", device="cpu").fallback_reason is None
    with pytest.raises(Illust2VecError, match="auto, cpu, nvimgcodec"):
        BatchDecoder("dali")


class _StandInGpuDecoder:
    """Stands in for nvImageCodec's decoder (no GPU here): decodes JPEG bytes with Pillow and,
    like nvImageCodec, answers None for what it cannot decode; records what it was given."""

    def __init__(self):
        self.seen = 0

    def decode(self, datas, params=None):
        import io

        from PIL import Image

        class Host:
            def __init__(self, array):
                self.array = array

            def cpu(self):
                return self.array

        out = []
        for data in datas:
            self.seen += 1
            try:
                with Image.open(io.BytesIO(data)) as img:
                    out.append(Host(np.asarray(img.convert("RGB"))))
            except Exception:  # noqa: BLE001 - as nvImageCodec: None for a picture it cannot decode
                out.append(None)
        return out


def test_decoder_sends_jpegs_to_the_gpu_and_the_rest_and_its_refusals_to_the_cpu(tmp_path):
    from PIL import Image

    files = _anime(2)
    png = tmp_path / "picture.png"
    Image.open(files[0]).save(png)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(files[1].read_bytes()[:300])
    array = np.zeros((5, 7, 3), np.uint8)
    decoder = BatchDecoder("cpu")
    decoder._decoder = stand_in = _StandInGpuDecoder()  # what __init__ sets when nvImageCodec works
    results = decoder.decode([files[0], png, truncated, array, tmp_path / "missing.jpg", files[1]])
    assert stand_in.seen == 3  # the two JPEG files and the truncated one, in one batch
    for k, source in ((0, files[0]), (1, png), (3, array), (5, files[1])):
        assert results[k][1] is None
        np.testing.assert_array_equal(results[k][0], load_image(source))
    # refused by the GPU decoder, then by load_image: one error line each, as on the CPU path
    assert results[2] == (None, BatchDecoder("cpu").decode([truncated])[0][1]) and results[2][1]
    assert results[4][0] is None and results[4][1]
