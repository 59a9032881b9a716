"""Contact sheets: a grid of thumbnails with captions (Pillow), for search hits and duplicate groups."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from illust2vec.io.images import save_image


def contact_sheet(items: Sequence[tuple[str | os.PathLike, str]], out: str | os.PathLike, *, thumb: int = 192,
                  columns: int | None = None, title: str | None = None) -> Path:
    """Write a PNG grid of ``(image path, caption)`` items to ``out``; returns the path.

    Thumbnails keep their aspect ratio inside ``thumb`` x ``thumb`` cells;
    files that cannot be read get a grey cell with their caption.
    """
    out = Path(out)
    n = max(1, len(items))
    cols = columns or min(n, 6)
    rows = (n + cols - 1) // cols
    font = ImageFont.load_default()
    line_h = 14
    cap_h = 2 * line_h + 4
    title_h = line_h + 8 if title else 0
    pad = 6
    W = cols * (thumb + pad) + pad
    H = title_h + rows * (thumb + cap_h + pad) + pad
    sheet = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title[:200], fill="black", font=font)
    for i, (path, caption) in enumerate(items):
        x = pad + (i % cols) * (thumb + pad)
        y = title_h + pad + (i // cols) * (thumb + cap_h + pad)
        try:
            with Image.open(path) as im:
                im.draft("RGB", (thumb, thumb))
                im = im.convert("RGB")
                im.thumbnail((thumb, thumb))
                sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        except Exception:
            draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=(200, 200, 200))
            draw.text((x + 4, y + thumb // 2), "unreadable", fill="black", font=font)
        chars = max(8, thumb // 6)
        lines = [caption[j : j + chars] for j in range(0, len(caption), chars)][:2] or [""]
        for k, line in enumerate(lines):
            draw.text((x, y + thumb + 2 + k * line_h), line, fill="black", font=font)
    save_image(sheet, out)
    return out
