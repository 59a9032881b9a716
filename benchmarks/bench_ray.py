"""What running on Ray costs against the local pipeline, and how work spreads over simulated nodes.

Parts (all on the same images and the same model, in one run):

* ``stages``: per-stage CPU cost on one thread (decode + preprocess, the
  network at batch 16, writing a shard), the inputs of the 5M-image estimate;
* ``overhead``: the local pipeline (``iter_batches``, one background decode
  thread, ONNX Runtime on all cores) against ``run_shards`` on a local Ray
  runtime with the same cores (one actor with all ONNX Runtime threads, decode
  tasks beside it); the two take turns, ``--rounds`` times; Ray's start-up is
  reported apart;
* ``nodes``: a ``ray.cluster_utils.Cluster`` on this machine with 1, 2 and 3
  worker nodes of two logical CPUs each (one model actor with one ONNX Runtime thread, one for
  decode tasks; a head without CPUs): wall time, and how many
  inputs the model actors of each node ran.

Model: the real-size i2v tag network with random weights (``--model real``,
188 MB, written once by ``_common.make_model``) or the small fixture tagger
(``--model fixture``).  Images: anime36 (512x512 JPEGs) repeated to ``--images``.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/bench_ray.py [--images 48] [--parts stages,overhead,nodes]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANIME36 = SHARED / "data" / "anime36"
FIXTURES = SHARED / "fixtures" / "i2v"


def load(kind: str, out: Path, threads: int | None):
    from illust2vec import Illustration2Vec

    if kind == "real":
        weights = make_model(out / "i2v_tag_random_v1.caffemodel")
        return Illustration2Vec.from_caffemodel(weights, tags=FIXTURES / "tag_list.json", model_dir=out / "store",
                                                threads=threads, batch_size=16)
    return Illustration2Vec.from_caffemodel(FIXTURES / "tag_w8_v1.caffemodel", tags=FIXTURES / "tag_list.json",
                                            model_dir=out / "store", threads=threads, batch_size=16)


def part_stages(model, sources: list[str], out: Path) -> dict:
    from illust2vec.distributed.shards import ShardRows, write_shard
    from illust2vec.runtime.batches import prepare_item

    t = time.process_time()
    arrays = [prepare_item(s, model.alpha, model.recipe)[0] for s in sources]
    prep = (time.process_time() - t) / len(sources)
    batch = np.stack(arrays[:16])
    model.run_all(batch, ("prob",))  # warm-up
    t = time.perf_counter()
    probs = model.run_all(batch, ("prob",))["prob"]
    net = (time.perf_counter() - t) / len(batch)
    rows = ShardRows(index=np.arange(128), path=[f"/data/{i:09d}.jpg" for i in range(128)], size=[100_000] * 128,
                     mtime_ns=[0] * 128, sha256=["0" * 64] * 128, error=[None] * 128, ok=np.ones(128, bool),
                     vectors={"prob": np.repeat(probs[:1], 128, axis=0)})
    t = time.perf_counter()
    write_shard(str(out / "stage-shards"), "part-000000-x.parquet", rows, {"prob": probs.shape[1]})
    write = (time.perf_counter() - t) / 128
    return {"prepare_ms": prep * 1e3, "network_ms_1thread": net * 1e3, "write_ms": write * 1e3}


def run_local(model, sources: list[str]) -> float:
    from illust2vec.runtime.batches import iter_batches

    t = time.perf_counter()
    for _ in iter_batches(model, sources, outputs=("prob",)):
        pass
    return time.perf_counter() - t


def run_ray(model, sources: list[str], out: Path, actors: int, actor_cpus: float, tag: str,
            shard_size: int = 16) -> tuple[float, dict]:
    import shutil

    from illust2vec.distributed import run_shards

    d = out / f"shards-{tag}"
    shutil.rmtree(d, ignore_errors=True)
    t = time.perf_counter()
    report = run_shards(sources, str(d), tagger=model, shard_size=shard_size, actors=actors, min_actors=actors,
                        actor_cpus=actor_cpus)
    return time.perf_counter() - t, report.per_node


def part_overhead(kind: str, sources: list[str], out: Path, rounds: int) -> dict:
    import ray

    cores = os.cpu_count() or 2
    model = load(kind, out, threads=cores)
    t = time.perf_counter()
    # one logical CPU more than there are cores: the actor holds all cores for ONNX Runtime and a decode
    # task runs beside it, as the local pipeline's decode thread does
    ray.init(num_cpus=cores + 1, include_dashboard=False, logging_level="ERROR")
    startup = time.perf_counter() - t
    local, remote = [], []
    try:
        run_ray(model, sources[:16], out, 1, cores, "warm")  # actor start-up and model shipping, once
        for r in range(rounds):
            local.append(run_local(model, sources))
            remote.append(run_ray(model, sources, out, 1, cores, f"o{r}")[0])
    finally:
        ray.shutdown()
    ratio = statistics.median(b / a for a, b in zip(local, remote))
    return {"ray_init_s": startup, "local_s": local, "ray_s": remote, "ray_over_local_median": ratio,
            "local_img_s": len(sources) / statistics.median(local), "ray_img_s": len(sources) / statistics.median(remote)}


def part_nodes(kind: str, sources: list[str], out: Path, counts: list[int]) -> list[dict]:
    import ray
    from ray.cluster_utils import Cluster

    results = []
    for n in counts:
        t = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 400 << 20,
                                                                 "include_dashboard": False})
        # two logical CPUs per node: one for its model actor, one for decode tasks and shard writers
        nodes = [cluster.add_node(num_cpus=2, object_store_memory=400 << 20) for _ in range(n)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR")
        startup = time.perf_counter() - t
        try:
            model = load(kind, out, threads=1)
            run_ray(model, sources[:8], out, n, 1, f"warm{n}", shard_size=4)
            wall, per_node = run_ray(model, sources, out, n, 1, f"n{n}", shard_size=8)
            ids = {node.node_id: i for i, node in enumerate(nodes)}
            results.append({"nodes": n, "startup_s": startup, "wall_s": wall, "img_s": len(sources) / wall,
                            "inputs_per_node": {f"node{ids.get(k, '?')}": v for k, v in sorted(per_node.items())}})
        finally:
            ray.shutdown()
            cluster.shutdown()
        print(json.dumps(results[-1]), file=sys.stderr)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("real", "fixture"), default="real")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--parts", default="stages,overhead,nodes")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "illust2vec-bench-ray")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not ANIME36.is_dir():
        sys.exit(f"needs {ANIME36}")
    args.out.mkdir(parents=True, exist_ok=True)
    pics = [str(p) for p in sorted(ANIME36.glob("*.jpg"))]
    sources = (pics * (args.images // len(pics) + 1))[: args.images]
    parts = args.parts.split(",")
    result: dict = {"model": args.model, "images": len(sources), "cpus": os.cpu_count(),
                    "load_average_start": os.getloadavg()}
    if "stages" in parts:
        result["stages"] = part_stages(load(args.model, args.out, threads=1), sources, args.out)
        print(json.dumps(result["stages"]), file=sys.stderr)
    if "overhead" in parts:
        result["overhead"] = part_overhead(args.model, sources, args.out, args.rounds)
        print(json.dumps(result["overhead"]), file=sys.stderr)
    if "nodes" in parts:
        result["nodes"] = part_nodes(args.model, sources, args.out, [int(n) for n in args.nodes.split(",")])
    result["load_average_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
