"""Shared test fixtures: paths to ../shared and the i2v oracle models."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = (Path(__file__).resolve().parents[2] / "shared").resolve()  # canonical: the collection stores resolved paths
I2V_FIXTURES = SHARED / "fixtures" / "i2v"
ANIME36 = SHARED / "data" / "anime36"

#: Why tests that read ../shared are skipped when it is not there.
SHARED_MISSING = (
    f"needs the shared test data at {SHARED} (the 'shared' folder beside this checkout: the i2v oracle "
    "fixtures and the anime36 images, see docs/getting-started.md, Tests); it is missing"
)
_NEEDS_SHARED = ("SHARED", "ANIME36", "I2V_FIXTURES", "../shared")


class _SkippedModule(pytest.File):
    """A test file that cannot run here: collecting it reports one skip with the reason."""

    def collect(self):
        pytest.skip(SHARED_MISSING, allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
    if SHARED.is_dir():
        return None
    text = module_path.read_text(encoding="utf-8")
    if any(marker in text for marker in _NEEDS_SHARED):
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


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
