"""Writing timelines: JSON (everything) and CSV (one row per frame and tag), and frame images."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from illust2vec.errors import Illust2VecError
from illust2vec.io.atomic import DurableBatch, atomic_write, json_safe
from illust2vec.video.timeline import Timeline

__all__ = ["write_timeline", "write_timeline_json", "write_timeline_csv", "save_frame", "TIMELINE_FORMATS"]

TIMELINE_FORMATS = ("json", "csv")


def write_timeline_json(
    timeline: Timeline, path: str | Path, *, include_features: bool = False, top: int | None = None
) -> None:
    """Write :meth:`Timeline.to_dict` as JSON (UTF-8, tag names unescaped)."""
    data = timeline.to_dict(include_features=include_features, top=top)
    text = json_safe(json.dumps(data, ensure_ascii=False, indent=1))
    atomic_write(path, lambda f: f.write(text), text=True)


def write_timeline_csv(timeline: Timeline, path: str | Path, *, top: int | None = None) -> None:
    """Write one row per (frame, tag): ``time,frame,shot,tag,category,probability``.

    Tags are those at or above their threshold, most probable first; a frame
    without any gets one row with empty tag columns, so every frame is listed.
    """
    cats = dict(zip(timeline.tags.names, timeline.tags.categories))

    def write(f: Any) -> None:
        w = csv.writer(f)
        w.writerow(["time", "frame", "shot", "tag", "category", "probability"])
        for i in range(len(timeline)):
            base = [f"{timeline.times[i]:.6f}", int(timeline.frame_indices[i]), int(timeline.shot_of[i])]
            tags = timeline.frame_tags(i, top=top)
            if not tags:
                w.writerow(base + ["", "", ""])
            for tag, p in tags:
                w.writerow(base + [tag, cats.get(tag, ""), f"{p:.4f}"])

    atomic_write(path, write, text=True, newline="")


def write_timeline(timeline: Timeline, path: str | Path, **options: Any) -> None:
    """Write a timeline in the format given by the file extension (.json or .csv)."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "json":
        write_timeline_json(timeline, path, **options)
    elif ext == "csv":
        options.pop("include_features", None)
        write_timeline_csv(timeline, path, **options)
    else:
        raise Illust2VecError(
            f"{path}: unknown timeline format {ext!r}; use one of {', '.join('.' + x for x in TIMELINE_FORMATS)}"
        )


def frame_filename(time: float, index: int, shot: int, ext: str = "jpg") -> str:
    """``shot0003_t000012.500_f000300.jpg``: sorts by time, says shot, time and frame."""
    return f"shot{shot:04d}_t{time:010.3f}_f{index:06d}.{ext}"


def save_frame(image: np.ndarray, directory: str | Path, time: float, index: int, shot: int,
               *, ext: str = "jpg", quality: int = 92, batch: DurableBatch | None = None) -> Path:
    """Save one RGB frame into ``directory`` under :func:`frame_filename`; returns the path.

    Written atomically; with ``batch`` the frame is queued there and appears, durably, when
    the batch commits (a few ``fsync`` rounds for a whole video instead of two per frame).
    """
    from PIL import Image

    d = Path(directory)
    path = d / frame_filename(time, index, shot, ext)
    im = Image.fromarray(image)
    fmt = "JPEG" if ext.lower() in ("jpg", "jpeg") else Image.registered_extensions().get(f".{ext.lower()}", ext.upper())
    params = {"quality": quality} if fmt == "JPEG" else {}
    if batch is None:
        atomic_write(path, lambda fh: im.save(fh, format=fmt, **params))
    else:
        with batch.open(path) as fh:
            im.save(fh, format=fmt, **params)
    return path
