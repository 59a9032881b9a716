"""Scale-out on Ray: a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster).

One small cluster for the module (a head without CPUs, so that all work runs
on the worker nodes, and two worker nodes); the failure test adds a third
node and kills it in the middle of a run.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ANIME36, I2V_FIXTURES

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'illust2vec[ray]'")
pytest.importorskip("ray.data")

pytestmark = [
    pytest.mark.skipif(not ANIME36.is_dir() or not I2V_FIXTURES.is_dir(),
                       reason="needs ../shared (data/anime36 and fixtures/i2v)"),
    pytest.mark.slow,
]

STORE_MB = 80 << 20  # object store per node: small, this machine is shared


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE_MB,
                                                      "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=2, object_store_memory=STORE_MB)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """12 anime36 pictures, copies of 4 of them under other names, and a file that is not an image (17 inputs)."""
    d = tmp_path_factory.mktemp("ray-images")
    for p in sorted(ANIME36.glob("*.jpg"))[:12]:
        shutil.copy(p, d / p.name)
    for p in sorted(ANIME36.glob("*.jpg"))[:4]:
        shutil.copy(p, d / f"copy_{p.name}")
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    return d


def _local_outputs(model, sources, output):
    from illust2vec.runtime.batches import iter_batches

    out, errors = {}, {}
    for b in iter_batches(model, sources, outputs=(output,)):
        for j, i in enumerate(b.indices):
            out[i] = b.outputs[output][j]
        errors.update({e.index: e.message for e in b.errors})
    return out, errors


def test_shards_equal_local_pipeline_rerun_skips_and_merge(cluster, images, i2v_tagger, i2v_features, tmp_path, capsys):
    from illust2vec.collection import Collection
    from illust2vec.collection.infer import binarize
    from illust2vec.distributed import expand_sources, index_shards, iter_shards, run_shards

    sources = expand_sources([str(images)])
    shards = str(tmp_path / "shards")
    run = run_shards(sources, shards, tagger=i2v_tagger, embedder=i2v_features, shard_size=5, actors=2)
    assert run.reused == [] and run.done == len(sources)
    assert sum(run.per_node.values()) == len(sources) and set(run.per_node) <= {n["NodeID"] for n in ray.nodes()}
    assert [e.source for e in run.failed] == [str(images / "broken.jpg")]

    probs, perr = _local_outputs(i2v_tagger, sources, "prob")
    feats, _ = _local_outputs(i2v_features, sources, "feature")
    seen = []
    for shard in iter_shards(shards):
        good = shard.index[shard.ok]
        seen.extend(shard.index.tolist())
        assert np.array_equal(shard.vectors["prob"], np.stack([probs[i] for i in good]))
        assert np.array_equal(shard.vectors["feature"], np.stack([feats[i] for i in good]))
        assert np.array_equal(shard.vectors["codes"], binarize(i2v_features, shard.vectors["feature"]))
        for q in np.flatnonzero(~shard.ok):
            assert shard.error[q] == perr[int(shard.index[q])]
        assert shard.path == [sources[i] for i in shard.index]
    assert seen == list(range(len(sources)))  # every input exactly once, in order

    # a rerun computes only the missing shard
    files = sorted(Path(shards).glob("part-*.parquet"))
    victim = files[1]
    before = {f.name: f.stat().st_mtime_ns for f in files if f != victim}
    victim.unlink()
    again = run_shards(sources, shards, tagger=i2v_tagger, embedder=i2v_features, shard_size=5, actors=2)
    assert len(again.reused) == len(files) - 1 and victim.name not in again.reused
    assert victim.exists() and again.done == 5
    assert before == {f.name: f.stat().st_mtime_ns for f in Path(shards).glob("part-*.parquet") if f != victim}

    # shards -> collection equals indexing the same folder locally
    with Collection.open(tmp_path / "from-shards") as col:
        report = index_shards(col, shards)
        assert report.added == 12 and report.linked == 4 and len(report.failed) == 1
        merged = (col.rows_to_paths(col.live_rows()), col.vectors("feature"), col.vectors("prob"),
                  col.vectors("codes"))
        assert index_shards(col, shards).unchanged == len(sources) - 1  # merging twice adds nothing
    # the command line: --prune after a merge counts what it dropped (nothing is gone here)
    from illust2vec.cli.main import main

    capsys.readouterr()
    rc = main(["index", "--from-shards", shards, "--db", str(tmp_path / "from-shards"), "--prune", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.jpg: not an image file" in err  # the shards' failed file, told again
    assert "16 unchanged, 1 failed, 0 pruned;" in err and "PrunePlan" not in err
    with Collection.open(tmp_path / "local") as col:
        col.add([images], embedder=i2v_features, tagger=i2v_tagger, progress=False, workers=0)
        local = (col.rows_to_paths(col.live_rows()), col.vectors("feature"), col.vectors("prob"),
                 col.vectors("codes"))
    assert sorted(merged[0].values()) == sorted(local[0].values())
    order_m = np.argsort([v[0] for v in merged[0].values()])
    order_l = np.argsort([v[0] for v in local[0].values()])
    for a, b in zip(merged[1:], local[1:]):
        assert np.array_equal(a[order_m], b[order_l])


def test_cli_tag_ray_jsonl_matches_local(cluster, images, tmp_path, capsys):
    from illust2vec.cli.main import main

    model = ["--weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"), "--tags", str(I2V_FIXTURES / "tag_list.json"),
             "--model-dir", str(tmp_path / "store"), "--format", "jsonl", "-q"]
    assert main(["tag", str(images), *model, "-o", str(tmp_path / "local.jsonl")]) == 1
    local_err = capsys.readouterr().err
    assert main(["tag", str(images), *model, "-o", str(tmp_path / "ray.jsonl"), "--ray", "auto",
                 "--shard-size", "7"]) == 1
    ray_err = capsys.readouterr().err
    for err in (local_err, ray_err):
        assert f"error: {images / 'broken.jpg'}: " in err and "tagged 16 of 17 images; 1 failed" in err
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    remote = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    assert [r["path"] for r in remote] == [r["path"] for r in local]
    for a, b in zip(local, remote):
        assert a["tags"].keys() == b["tags"].keys()
        for cat in a["tags"]:
            assert a["tags"][cat].keys() == b["tags"][cat].keys()
            for tag, p in a["tags"][cat].items():
                assert abs(p - b["tags"][cat][tag]) <= 1e-5


def test_cli_embed_and_index_ray_match_local(cluster, images, tmp_path, capsys):
    """``embed`` and ``index`` run here and with ``--ray`` through the same pipeline: the same rows."""
    from illust2vec.cli.main import main
    from illust2vec.collection import Collection

    model = ["--weights", str(I2V_FIXTURES / "feature_w16_e1024.caffemodel"), "--model-dir", str(tmp_path / "store"),
             "-q"]
    ray = ["--ray", "auto", "--shard-size", "5"]
    assert main(["embed", str(images), *model, "-o", str(tmp_path / "local.npy")]) == 1
    assert main(["embed", str(images), *model, "-o", str(tmp_path / "ray.npy"), *ray]) == 1
    err = capsys.readouterr().err
    assert err.count(f"error: {images / 'broken.jpg'}: ") == 2 and err.count("embedded 16 of 17 images") == 2
    assert (tmp_path / "ray.paths.txt").read_text() == (tmp_path / "local.paths.txt").read_text()
    np.testing.assert_allclose(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"), rtol=0, atol=1e-5)

    for name, extra in (("local", []), ("ray", ray)):
        assert main(["index", str(images), "--db", str(tmp_path / f"{name}.i2v"), *model,
                     "--tagger-weights", str(I2V_FIXTURES / "tag_w8_v1.caffemodel"),
                     "--tag-list", str(I2V_FIXTURES / "tag_list.json"), *extra]) == 1
    err = capsys.readouterr().err
    assert err.count(f"error: {images / 'broken.jpg'}: ") == 2, err
    infos = []
    for name in ("local", "ray"):
        with Collection.open(tmp_path / f"{name}.i2v", create=False) as col:
            info = col.info()
            infos.append((info["files"], info["embedder"], [t["name"] for t in info["taggers"]]))
    assert infos[0] == infos[1] and infos[0][0] == 16


def test_killed_node_every_input_exactly_once(cluster, images, i2v_tagger, tmp_path):
    from illust2vec.distributed import expand_sources, iter_shards, read_manifest, run_shards

    doomed = cluster.add_node(num_cpus=2, object_store_memory=STORE_MB)
    cluster.wait_for_nodes()
    sources = expand_sources([str(images)]) * 2  # 34 inputs in 17 shards
    shards = tmp_path / "shards"
    result: dict = {}

    def work():
        try:
            result["run"] = run_shards(sources, str(shards), tagger=i2v_tagger, shard_size=2, actors=3,
                                       min_actors=3)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    from ray._private.state import available_resources_per_node

    def doomed_busy() -> bool:  # a model actor or a decode task holds a CPU of the node to be killed
        return available_resources_per_node().get(doomed.node_id, {}).get("CPU", 2.0) < 2.0

    deadline = time.monotonic() + 120
    while t.is_alive() and time.monotonic() < deadline and not (
            doomed_busy() and list(shards.glob("part-*.parquet"))):
        time.sleep(0.05)
    busy_at_kill = doomed_busy()
    written_at_kill = len(list(shards.glob("part-*.parquet")))
    cluster.remove_node(doomed, allow_graceful=False)
    t.join(300)
    assert not t.is_alive(), "the run did not finish after the node was killed"
    assert "error" not in result, result.get("error")
    total = len(read_manifest(str(shards))["shards"])
    assert written_at_kill < total  # the node died in the middle of the run
    assert busy_at_kill  # ... while it was running part of it
    run = result["run"]
    assert run.done == len(sources) and len(run.failed) == 2
    probs, _ = _local_outputs(i2v_tagger, sources[:17], "prob")
    seen = []
    for shard in iter_shards(shards):
        seen.extend(shard.index.tolist())
        good = shard.index[shard.ok]
        assert np.allclose(shard.vectors["prob"], np.stack([probs[i % 17] for i in good]), atol=1e-5, rtol=0)
    assert seen == list(range(len(sources)))


def test_decode_pools_start_after_ray_ran_in_this_process(cluster, images, i2v_tagger):
    """Ray leaves its threads in this process; the decode pool's workers (forkserver, never fork) start anyway.

    Batches decoded by worker processes equal those of the decode thread, and face
    detection runs in the same pool.
    """
    from illust2vec.faces.items import iter_detections
    from illust2vec.runtime.batches import iter_batches
    from illust2vec.runtime.pool import START_METHOD

    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42  # Ray ran here, its threads are alive
    assert threading.active_count() > 1 and START_METHOD in ("forkserver", "spawn")
    sources = sorted(str(p) for p in images.iterdir())

    def run(workers):
        probs, errors = {}, {}
        for b in iter_batches(i2v_tagger, sources, batch_size=4, workers=workers, outputs=("prob",)):
            probs.update({i: b.outputs["prob"][j] for j, i in enumerate(b.indices)})
            errors.update({e.index: e.message for e in b.errors})
        return probs, errors

    (thread_probs, thread_errors), (pool_probs, pool_errors) = run(None), run(2)
    assert pool_errors == thread_errors and len(pool_errors) == 1
    assert sorted(pool_probs) == sorted(thread_probs) and len(pool_probs) == len(sources) - 1
    for i, p in thread_probs.items():
        np.testing.assert_array_equal(pool_probs[i], p)
    detections = list(iter_detections(sources, workers=2, chunksize=3))
    assert [d.index for d in detections] == list(range(len(sources)))
    assert [d.error is not None for d in detections] == [s.endswith("broken.jpg") for s in sources]
