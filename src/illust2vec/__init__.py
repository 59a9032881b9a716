"""illust2vec: illustration2vec reborn — tags, features, search and maps for anime-style illustrations.

>>> from illust2vec import Illustration2Vec          # doctest: +SKIP
>>> tagger = Illustration2Vec.from_caffemodel("illust2vec_tag_ver200.caffemodel", tags="tag_list.json")
>>> tagger.estimate_plausible_tags(["miku.jpg"], threshold=0.5)

Heavy modules are imported lazily, so ``import illust2vec`` is fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Illustration2Vec": "illust2vec.model",
    "ImageModel": "illust2vec.model",
    "load_model": "illust2vec.model",
    "make_i2v_with_chainer": "illust2vec.model",
    "make_i2v_with_caffe": "illust2vec.model",
    "load_image": "illust2vec.images",
    "iter_image_files": "illust2vec.images",
    "InputRecipe": "illust2vec.preprocess",
    "preprocess": "illust2vec.preprocess",
    "ModelStore": "illust2vec.store",
    "list_models": "illust2vec.zoo",
    "Illust2VecError": "illust2vec.errors",
    "iter_video_frames": "illust2vec.video",
    "tag_video": "illust2vec.video",
    "detect_faces": "illust2vec.faces",
    "face_crops": "illust2vec.faces",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'illust2vec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
