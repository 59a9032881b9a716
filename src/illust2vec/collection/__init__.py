"""Collections: index a folder of images once, then search it.

A collection is one directory holding an SQLite database (files, content
hashes, model identities, tag probabilities, errors), append-only vector
files (float features, binary codes, tag probabilities) and FAISS indexes
rebuilt from them when missing or stale.  See :class:`Collection`.
"""
from __future__ import annotations

from illust2vec.collection.core import AddReport, Collection
from illust2vec.collection.dupes import DupeGroup
from illust2vec.collection.errors import CollectionError, ModelMismatchError, UnknownTagError
from illust2vec.collection.search import SearchHit

__all__ = [
    "AddReport",
    "Collection",
    "CollectionError",
    "DupeGroup",
    "ModelMismatchError",
    "SearchHit",
    "UnknownTagError",
]
