"""Errors raised by collections (all :class:`~illust2vec.errors.Illust2VecError`)."""
from __future__ import annotations

from illust2vec.errors import Illust2VecError


class CollectionError(Illust2VecError):
    """A collection is missing, damaged, locked or was asked something it cannot answer."""


class ModelMismatchError(CollectionError):
    """The model given to a collection is not the one its vectors were computed with.

    The stored vectors cannot be mixed with vectors of another model: index
    into a new collection (another ``--db``) or rebuild this one with
    ``rebuild=True`` (``illust2vec index --rebuild``), which recomputes every vector.
    """


class UnknownTagError(CollectionError):
    """A tag query names a tag the collection's tagger does not know."""
