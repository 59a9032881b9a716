"""Inputs shared by the benchmark scripts: the full-size random i2v tag model and a JPEG folder."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test helpers: caffe_writer


def make_model(path: Path) -> Path:
    """A random-weight tag model with the published i2v layout (~188 MB, V1 format), written once."""
    from caffe_writer import i2v_layers, write_caffemodel

    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_caffemodel(path, i2v_layers(head="tag"), v1=True)
    return path


def make_folder(folder: Path, n: int, size: int = 256) -> list[Path]:
    """``n`` distinct ``size``x``size`` JPEGs (smooth random colour fields, quality 90), written once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        base = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        if not p.exists():
            Image.fromarray(base).resize((size, size), Image.BICUBIC).save(p, quality=90)
        paths.append(p)
    return paths


class StandInEngine:
    """Looks like an ImageModel to ``iter_batches``; each run sleeps ``seconds`` with the GIL free,
    as an ONNX Runtime GPU run does, and returns zeros."""

    alpha, outputs = "white", ("prob",)

    def __init__(self, seconds: float, *, recipe=None, batch_size: int = 8, input_dtype=np.float32) -> None:
        from illust2vec.prep.preprocess import I2V_RECIPE

        self.seconds, self.batch_size, self.input_dtype = seconds, batch_size, input_dtype
        self.recipe = recipe or I2V_RECIPE

    def run_all(self, batch, names):
        time.sleep(self.seconds)
        return {"prob": np.zeros((len(batch), 1), np.float32)}
