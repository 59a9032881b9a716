"""illust2vec: illustration2vec reborn — tags, features, search and maps for anime-style illustrations.

>>> from illust2vec import Illustration2Vec          # doctest: +SKIP
>>> tagger = Illustration2Vec.from_caffemodel("illust2vec_tag_ver200.caffemodel", tags="tag_list.json")
>>> tagger.estimate_plausible_tags(["miku.jpg"], threshold=0.5)

Heavy modules are imported lazily, so ``import illust2vec`` is fast.
"""
from __future__ import annotations

from illust2vec.lazy import lazy_exports
from illust2vec.version import __version__

_LAZY = {
    "Illustration2Vec": "models.families.i2v.model",
    "ImageModel": "models.image_model",
    "load_model": "models.loading",
    "make_i2v_with_chainer": "models.families.i2v.model",
    "make_i2v_with_caffe": "models.families.i2v.model",
    "load_image": "io.images",
    "iter_image_files": "io.images",
    "InputRecipe": "prep.preprocess",
    "preprocess": "prep.preprocess",
    "ModelStore": "models.store",
    "list_models": "models.catalog",
    "Illust2VecError": "errors",
    "iter_video_frames": "video",
    "tag_video": "video",
    "detect_faces": "faces",
    "face_crops": "faces",
    "tag_files": "pipeline.tasks",
    "embed_files": "pipeline.tasks",
    "TagResult": "pipeline.tasks",
    "EmbedResult": "pipeline.tasks",
}

__all__ = sorted(_LAZY) + ["__version__"]
__getattr__ = lazy_exports("illust2vec", _LAZY)


def __dir__() -> list[str]:
    return __all__
