"""Collections: index a folder of images once, then search it.

A collection is one directory holding an SQLite database (files, content
hashes, model identities, taggers, tag probabilities, user tags, errors),
append-only vector files (float features, binary codes, one file of tag
probabilities per tagger) and FAISS indexes rebuilt from them when missing
or stale.  See :class:`Collection`: ``col.view`` (:class:`CollectionView`)
reads, ``col.store`` (:class:`CollectionStore`) is the one writer.
"""
from __future__ import annotations

from illust2vec.lazy import lazy_exports

#: Public names -> the module that defines them, imported on first use (so that ``--help`` and the
#: modules that only need :class:`CollectionError` do not load SQLite, FAISS glue and numpy).
_LAZY = {
    "DB_NAME": "core", "Collection": "core", "database_error": "core",
    "DupeGroup": "dupes",
    "CollectionError": "errors", "ModelMismatchError": "errors", "UnknownTagError": "errors",
    "TagQuery": "query", "TagTerm": "query",
    "SearchHit": "search",
    "AddReport": "store", "CollectionStore": "store", "ItemBatch": "store", "ModelRecord": "store",
    "WriteSession": "store",
    "TaggerInfo": "taggers", "UnknownTaggerError": "taggers",
    "CollectionView": "view", "FileTable": "view", "Snapshot": "view",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports("illust2vec.collection", _LAZY)


def __dir__() -> list[str]:
    return __all__
