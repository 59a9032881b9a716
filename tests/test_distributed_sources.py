"""The distributed stages in one process (no Ray needed): sources, URIs through PyArrow, shard files."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ANIME36, I2V_FIXTURES

pytestmark = pytest.mark.skipif(not ANIME36.is_dir() or not I2V_FIXTURES.is_dir(),
                                reason="needs ../shared (data/anime36 and fixtures/i2v)")


def test_sources_lists_and_file_uris(tmp_path):
    from illust2vec.distributed import expand_sources

    pics = sorted(ANIME36.glob("*.jpg"))[:3]
    d = tmp_path / "pics"
    d.mkdir()
    for p in pics:
        shutil.copy(p, d / p.name)
    (d / ".hidden.jpg").write_bytes(b"x")
    (d / "notes.txt").write_text("not an image")
    names = [str(d / p.name) for p in pics]
    (tmp_path / "list.txt").write_text("# three pictures\n" + "\n".join(names) + "\n")
    (tmp_path / "list.csv").write_text("id,path\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    pq.write_table(pa.table({"path": names}), tmp_path / "list.parquet")
    assert expand_sources([d]) == names
    for lst in ("list.txt", "list.csv", "list.parquet"):
        assert expand_sources([tmp_path / lst]) == names
    assert expand_sources([f"file://{d}"]) == [f"file://{n}" for n in names]


def test_stages_in_one_process_with_uris(tmp_path, i2v_tagger, i2v_features):
    """The three stages over file:// sources into a file:// shard directory equal the local pipeline."""
    from illust2vec.distributed.shards import iter_shards, plan_shards, write_manifest
    from illust2vec.distributed.stages import RunModels, ModelStage, prepare_shard, write_shard_row
    from illust2vec.runtime.batches import iter_batches

    local = [str(p) for p in sorted(ANIME36.glob("*.jpg"))[:4]]
    sources = [f"file://{p}" for p in local] + [f"file://{tmp_path}/missing.jpg"]
    models = RunModels(tagger=i2v_tagger, embedder=i2v_features)
    out = f"file://{tmp_path}/shards"
    slices = plan_shards(sources, 3)
    write_manifest(out, {"shards": [s.name for s in slices], "widths": models.widths()})
    stage = ModelStage(models)
    for s in slices:
        row = prepare_shard({"k": s.k, "first": s.first, "name": s.name, "sources": list(s.sources)},
                            recipes=models.recipes, alpha=models.alpha)
        summary = write_shard_row(stage(row), directory=out, widths=models.widths())
        assert summary["items"] == len(s.sources)
    shards = list(iter_shards(out))
    assert [len(s) for s in shards] == [3, 2]
    last = shards[1]
    assert last.error[1].startswith("cannot read file") and last.sha256[1] is None
    expect = {}
    for b in iter_batches(i2v_tagger, local, outputs=("prob",)):
        expect.update({i: b.outputs["prob"][j] for j, i in enumerate(b.indices)})
    got = np.concatenate([s.vectors["prob"] for s in shards])
    assert np.array_equal(got, np.stack([expect[i] for i in range(4)]))
    assert [s.vectors["feature"].shape for s in shards] == [(3, i2v_features.feature_dim), (1, i2v_features.feature_dim)]
