"""A small real collection for the web app tests, and a live uvicorn server on a free port."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import ANIME36
from PIL import Image, ImageEnhance, ImageOps

ORIGINALS = sorted(ANIME36.glob("*.jpg"))
XSS_NAME = "<img src=x onerror=window.__xss=1>.jpg"
XSS_TAG = "<script>window.__xss=2</script>"
#: copy name -> (original index, edit)
COPIES = {"c0_jpeg.jpg": (0, "jpeg"), "c1_half.jpg": (1, "half"), "c2_flip.jpg": (2, "flip"),
          "c3_crop.jpg": (3, "crop"), "c4_recolour.jpg": (4, "recolour")}


def edit(im: Image.Image, kind: str) -> Image.Image:
    w, h = im.size
    if kind == "crop":
        return im.crop((int(w * 0.06), int(h * 0.06), int(w * 0.94), int(h * 0.94)))
    if kind == "recolour":
        return ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.15)).enhance(0.7)
    if kind == "flip":
        return ImageOps.mirror(im)
    if kind == "half":
        return im.resize((w // 2, h // 2))
    return im


def build_collection(root: Path, n_originals: int = 9):
    """``root/pics``: originals 0..n-1, edited copies, a hostile file name; indexed with generic-effnet-lite0."""
    from illust2vec.collection import Collection
    from illust2vec.errors import Illust2VecError
    from illust2vec.models.loading import load_model

    if len(ORIGINALS) < 12:
        pytest.skip(f"{ANIME36} is missing (../shared/data/anime36)")
    try:
        model = load_model("generic-effnet-lite0", offline=True, progress=False)
    except Illust2VecError as exc:
        pytest.skip(f"generic-effnet-lite0 not available offline: {exc}")
    pics = root / "pics"
    pics.mkdir(parents=True)
    for p in ORIGINALS[:n_originals]:
        shutil.copy(p, pics / p.name)
    for name, (i, kind) in COPIES.items():
        edit(Image.open(ORIGINALS[i]).convert("RGB"), kind).save(pics / name, quality=60 if kind == "jpeg" else 90)
    shutil.copy(ORIGINALS[10], pics / XSS_NAME)
    with Collection.open(root / "db") as col:
        rep = col.add([pics], embedder=model, tagger=model, batch_size=16, workers=0, progress=False)
        assert not rep.failed
    return root / "db", pics, model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``app`` in a thread on 127.0.0.1 (or ``host``)."""

    def __init__(self, app, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.port = free_port()
        self.host = host
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
