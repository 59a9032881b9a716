"""Package-wide guarantees: no forbidden frameworks, a fast import, zoo records that hold together."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import illust2vec
from illust2vec.models.catalog import MODELS, get_spec, list_models

PACKAGE = Path(illust2vec.__file__).parent
FORBIDDEN = {"torch", "chainer", "caffe", "tensorflow"}


def test_no_torch_chainer_or_caffe_imports():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_import_is_light():
    code = "import sys, illust2vec; print(sorted(m for m in ('onnxruntime','faiss','openTSNE','av','sklearn','torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_record_is_consistent(name):
    spec = get_spec(name)
    assert spec.name == name and spec.outputs and set(spec.outputs) <= {"prob", "feature"}
    assert spec.license and spec.description
    assert spec.files, "a model needs files"
    for f in spec.files:
        assert f.filename and (f.url or f.package), f
        if f.url:
            assert f.url.startswith("https://") and f.url.endswith(f.filename.split("/")[-1]) or "resolve" in f.url
        if f.sha256 is not None:
            assert len(f.sha256) == 64
    h, w = spec.recipe.size
    assert h > 0 and w > 0
    if spec.is_tagger:
        assert any(f.role == "tags" for f in spec.files) or spec.family != "i2v"
    if spec.tag_layout:
        assert sum(n for _, n in spec.tag_layout) == spec.n_tags


def test_unknown_model_lists_valid_names():
    with pytest.raises(illust2vec.Illust2VecError) as err:
        get_spec("i2v-tagger")
    for name in list_models():
        assert name in str(err.value)
    assert list_models("i2v-*") == ["i2v-feature", "i2v-tag"]
