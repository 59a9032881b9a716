"""User tags: stored by content hash apart from model outputs, applied over the model's tags."""
from __future__ import annotations

import pytest

from illust2vec.collection import Collection
from illust2vec.collection.errors import CollectionError
from illust2vec.collection.user_tags import (
    effective_tags,
    forget_user_tags,
    set_user_tags,
    shas_with,
    tag_counts,
    user_tags_of,
)


def test_effective_tags_user_decisions_win():
    model = {"blue_hair": 0.8, "smile": 0.6, "solo": 0.95}
    user = {"smile": False, "blue hair": True, "my pick": True}
    assert effective_tags(model, user) == {"blue_hair": 1.0, "solo": 0.95, "my pick": 1.0}
    assert effective_tags(model, None) == model and effective_tags(model, {}) is not model


def test_store_query_forget(tmp_path):
    with Collection.open(tmp_path / "db") as col:
        c = col.conn
        assert set_user_tags(c, ["a" * 64, "b" * 64], add=["My_Pick"], remove=["smile"]) == 4
        assert user_tags_of(c, ["a" * 64, "c" * 64]) == {"a" * 64: {"my pick": True, "smile": False}}
        assert shas_with(c, "my pick", True) == {"a" * 64, "b" * 64} and shas_with(c, "SMILE", False) == {"a" * 64, "b" * 64}
        assert tag_counts(c) == {"my pick": 2}
        set_user_tags(c, ["a" * 64], add=["smile"])  # a later decision replaces the earlier one
        assert user_tags_of(c, ["a" * 64])["a" * 64]["smile"] is True
        assert forget_user_tags(c, ["a" * 64], ["smile", "my pick"]) == 2
        assert user_tags_of(c, ["a" * 64]) == {}
        for bad in ("", " , ", "x" * 201):
            with pytest.raises(CollectionError):
                set_user_tags(c, ["a" * 64], add=[bad])
