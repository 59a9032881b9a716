"""illust2vec: illustration2vec reborn — tags, features, search and maps for anime-style illustrations.

>>> from illust2vec import Illustration2Vec          # doctest: +SKIP
>>> tagger = Illustration2Vec.from_caffemodel("illust2vec_tag_ver200.caffemodel", tags="tag_list.json")
>>> tagger.estimate_plausible_tags(["miku.jpg"], threshold=0.5)

Heavy modules are imported lazily, so ``import illust2vec`` is fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from illust2vec.version import __version__

_LAZY = {
    "Illustration2Vec": "illust2vec.models.families.i2v.model",
    "ImageModel": "illust2vec.models.image_model",
    "load_model": "illust2vec.models.loading",
    "make_i2v_with_chainer": "illust2vec.models.families.i2v.model",
    "make_i2v_with_caffe": "illust2vec.models.families.i2v.model",
    "load_image": "illust2vec.io.images",
    "iter_image_files": "illust2vec.io.images",
    "InputRecipe": "illust2vec.prep.preprocess",
    "preprocess": "illust2vec.prep.preprocess",
    "ModelStore": "illust2vec.models.store",
    "list_models": "illust2vec.models.catalog",
    "Illust2VecError": "illust2vec.errors",
    "iter_video_frames": "illust2vec.video",
    "tag_video": "illust2vec.video",
    "detect_faces": "illust2vec.faces",
    "face_crops": "illust2vec.faces",
    "tag_files": "illust2vec.pipeline.tasks",
    "embed_files": "illust2vec.pipeline.tasks",
    "TagResult": "illust2vec.pipeline.tasks",
    "EmbedResult": "illust2vec.pipeline.tasks",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'illust2vec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
