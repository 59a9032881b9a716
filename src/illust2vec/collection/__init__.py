"""Collections: index a folder of images once, then search it.

A collection is one directory holding an SQLite database (files, content
hashes, model identities, taggers, tag probabilities, user tags, errors),
append-only vector files (float features, binary codes, one file of tag
probabilities per tagger) and FAISS indexes rebuilt from them when missing
or stale.  See :class:`Collection`: ``col.view`` (:class:`CollectionView`)
reads, ``col.store`` (:class:`CollectionStore`) is the one writer.
"""
from __future__ import annotations

from illust2vec.collection.core import DB_NAME, Collection, database_error
from illust2vec.collection.dupes import DupeGroup
from illust2vec.collection.errors import CollectionError, ModelMismatchError, UnknownTagError
from illust2vec.collection.query import TagQuery, TagTerm
from illust2vec.collection.search import SearchHit
from illust2vec.collection.store import AddReport, CollectionStore, ItemBatch, ModelRecord, WriteSession
from illust2vec.collection.taggers import TaggerInfo, UnknownTaggerError
from illust2vec.collection.view import CollectionView, FileTable, Snapshot

__all__ = [
    "DB_NAME",
    "AddReport",
    "Collection",
    "CollectionError",
    "CollectionStore",
    "CollectionView",
    "DupeGroup",
    "FileTable",
    "ItemBatch",
    "ModelMismatchError",
    "ModelRecord",
    "SearchHit",
    "Snapshot",
    "TagQuery",
    "TagTerm",
    "TaggerInfo",
    "UnknownTagError",
    "UnknownTaggerError",
    "WriteSession",
    "database_error",
]
