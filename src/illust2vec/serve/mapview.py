"""The map page of the web app: the collection's map in the existing viewer, each picture linked to its item view.

Built on first request (features -> PCA -> t-SNE, as ``illust2vec map`` does;
minutes for 100k items) and cached beside the thumbnails until the
collection's files change.  The page is the self-contained viewer with its
own Content-Security-Policy (a nonce for its one script, no network).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from illust2vec.io.atomic import atomic_write
from illust2vec.maps.pipeline import top_tags
from illust2vec.maps.reduce import reduce
from illust2vec.maps.viewer import ViewerOptions, ViewerPoint, write_viewer
from illust2vec.serve.service import CollectionService, NotFound

#: The viewer's thumbnail cell size on the served map.
MAP_THUMB = 128


def map_page(service: CollectionService, *, method: str = "tsne") -> Path:
    """The map HTML of ``service``'s collection (built, or reused while the files are unchanged)."""
    with service.lock:
        files = service.files()
        ids, rows, paths = files.ids.copy(), files.rows.copy(), list(files.paths)
        key = hashlib.sha256(repr((files.key, method)).encode()).hexdigest()
    out = service.thumb_dir.parent / "serve-map" / "map.html"
    stamp = out.with_suffix(".key")
    try:
        if out.is_file() and stamp.read_text() == key:
            return out
    except OSError:
        pass
    if not len(ids):
        raise NotFound("the collection has no items to map yet")
    with service.lock:
        feats = np.asarray(service.col.vectors("feature", rows=rows), dtype=np.float32)
        ti = service.tag_index()
        probs = np.asarray(service.view.probs(rows), dtype=np.float32) if ti is not None else None
        names = ti.names if ti is not None else []
    xy = reduce(feats, method=method if len(ids) >= 5 else "pca", seed=0)
    tags = top_tags(probs, names) if probs is not None else [[] for _ in ids]
    points = [ViewerPoint(float(x), float(y), p, label=Path(p).parent.name, top_tags=t, href=f"/#/item/{int(i)}")
              for (x, y), p, t, i in zip(xy, paths, tags, ids)]

    def thumb(i: int) -> Image.Image:
        try:
            got = service.thumbnail(int(ids[i]), 256)
            return Image.open(got if isinstance(got, Path) else io.BytesIO(got))
        except Exception:  # noqa: BLE001 - a file gone since indexing gets a grey cell
            return Image.new("RGB", (MAP_THUMB, MAP_THUMB), (60, 60, 60))

    write_viewer(out, points, thumb, ViewerOptions(title=f"illust2vec map: {service.col.path.name}", thumb_size=MAP_THUMB))
    atomic_write(stamp, lambda fh: fh.write(key), text=True)
    return out
