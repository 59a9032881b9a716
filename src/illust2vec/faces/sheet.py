"""Draw detected faces (boxes and landmarks) on pictures and face thumbnails.

A sheet of them: :func:`illust2vec.io.drawing.contact_sheet`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from illust2vec.faces.detect import Face

FACE_COLOR = (255, 40, 40)
EYE_COLOR = (40, 200, 40)
MOUTH_COLOR = (40, 120, 255)
POINT_COLOR = (255, 200, 0)


def draw_faces(image: np.ndarray, faces: Sequence[Face], *, scale: float = 1.0, width: int = 2, labels: bool = True) -> Any:
    """Return a PIL image of ``image`` (resized by ``scale``) with face boxes, eyes, mouth, nose and chin."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if scale != 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)

    def rect(box: Sequence[int], color: tuple[int, int, int], w: int) -> None:
        x, y, bw, bh = (v * scale for v in box)
        draw.rectangle((x, y, x + max(bw - 1, 0), y + max(bh - 1, 0)), outline=color, width=w)

    for i, face in enumerate(faces):
        rect(face.box, FACE_COLOR, width)
        for name in ("left_eye", "right_eye"):
            if name in face.landmarks:
                rect(face.landmarks[name], EYE_COLOR, 1)
        if "mouth" in face.landmarks:
            rect(face.landmarks["mouth"], MOUTH_COLOR, 1)
        for name in ("nose", "chin"):
            if name in face.landmarks:
                px, py = (v * scale for v in face.landmarks[name][:2])
                r = max(2.0, 2 * width)
                draw.ellipse((px - r, py - r, px + r, py + r), fill=POINT_COLOR)
        if labels:
            x, y = face.box[0] * scale, face.box[1] * scale
            text = f"{i}: {face.likelihood:.2f}"
            tx, ty = x + 2, max(0.0, y - 12)
            draw.rectangle((tx - 1, ty, tx + 6 * len(text) + 1, ty + 11), fill=(0, 0, 0))
            draw.text((tx, ty), text, fill=(255, 255, 255))
    return im


def face_thumbnail(image: np.ndarray, faces: Sequence[Face], *, cell: int = 256) -> Any:
    """A PIL thumbnail that fits in ``cell`` x ``cell`` with the faces drawn on it."""
    h, w = image.shape[:2]
    scale = min(cell / w, cell / h)
    return draw_faces(image, faces, scale=scale, width=2 if scale > 0.4 else 1)
