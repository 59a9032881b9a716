"""Shared test fixtures: paths to ../shared and the i2v oracle models."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = (Path(__file__).resolve().parents[2] / "shared").resolve()  # canonical: the collection stores resolved paths
I2V_FIXTURES = SHARED / "fixtures" / "i2v"
ANIME36 = SHARED / "data" / "anime36"


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """One model store for the whole session (converted graphs are cached there)."""
    return tmp_path_factory.mktemp("model-store")


@pytest.fixture(scope="session")
def i2v_tagger(model_store):
    from illust2vec import Illustration2Vec

    return Illustration2Vec.from_caffemodel(
        I2V_FIXTURES / "tag_w8_v1.caffemodel", tags=I2V_FIXTURES / "tag_list.json",
        alpha="drop", model_dir=model_store,
    )


@pytest.fixture(scope="session")
def i2v_features(model_store):
    from illust2vec import Illustration2Vec

    return Illustration2Vec.from_caffemodel(
        I2V_FIXTURES / "feature_w16_e1024.caffemodel", alpha="drop", model_dir=model_store,
    )
