"""Shot-cut accuracy: precision and recall of cuts on generated videos with known boundaries.

Two 24 fps 256x192 videos are built from the anime36 pictures (``--data``), 20
shots of 0.8-3 s each, every shot a slow pan and zoom over one picture with
sensor noise, consecutive shots of different characters:

* ``hard``: hard cuts between the shots;
* ``fade``: 0.5 s cross-fades instead (a gradual change over 12 frames).

The detector (:mod:`illust2vec.video.scenes`) runs as ``video --scenes`` does
(every frame), and as ``video --every 1`` / ``--fps 4`` do (on the sampled
frames only).  A found cut is right when it falls on a boundary: within one
frame of a hard cut (every frame), inside the fade (+-1 frame), or, when
sampling, on the first sample after the boundary; each boundary is matched
once.  ``--colours-only`` leaves out the layout measure (the detector before
it), for the comparison.

Usage: python benchmarks/bench_shots.py [--data ../shared/data/anime36] [--seed 0] [--colours-only]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

RATE, W, H, FADE = 24, 256, 192, 12


def shots_plan(files: list[Path], rng: np.random.Generator, n: int = 20) -> list[tuple[Path, int]]:
    by_char: dict[str, list[Path]] = {}
    for f in files:
        by_char.setdefault(f.stem[0], []).append(f)
    plan, last = [], None
    for _ in range(n):
        char = rng.choice([c for c in sorted(by_char) if c != last])
        plan.append((by_char[char][rng.integers(len(by_char[char]))], int(rng.integers(20, 72))))
        last = char
    return plan


def shot_frames(path: Path, length: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A slow pan and zoom over the picture (Ken Burns), with noise."""
    with Image.open(path) as im:
        big = im.convert("RGB").resize((W * 5 // 4, H * 5 // 4))
    dx, dy, dz = rng.uniform(-1, 1, 3)
    out = []
    for t in range(length):
        z = 1.0 - 0.1 * (0.5 + 0.5 * dz) * t / length
        cw, ch = int(W * 5 / 4 * z * 0.8), int(H * 5 / 4 * z * 0.8)
        x0 = int((big.width - cw) * (0.5 + 0.4 * dx * t / length))
        y0 = int((big.height - ch) * (0.5 + 0.4 * dy * t / length))
        frame = np.asarray(big.crop((x0, y0, x0 + cw, y0 + ch)).resize((W, H)), dtype=np.int16)
        frame = frame + rng.integers(-6, 7, frame.shape, dtype=np.int16)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def build(kind: str, plan, seed: int, out: Path) -> list[tuple[int, int]]:
    """Write the video; returns each boundary as (first frame, last frame) of the change."""
    from illust2vec.video.encode import VideoWriter

    rng = np.random.default_rng(seed)
    shots = [shot_frames(p, n, rng) for p, n in plan]
    bounds, frames = [], list(shots[0])
    for nxt in shots[1:]:
        if kind == "hard":
            bounds.append((len(frames), len(frames)))
            frames.extend(nxt)
        else:  # cross-fade: the last FADE frames of one shot blend into the first of the next
            start = len(frames) - FADE
            for k in range(FADE):
                a = (k + 1) / (FADE + 1)
                frames[start + k] = (frames[start + k] * (1 - a) + nxt[k] * a).astype(np.uint8)
            bounds.append((start, start + FADE - 1))
            frames.extend(nxt[FADE:])
    with VideoWriter(out, W, H, rate=RATE) as w:
        for f in frames:
            w.write(f)
    return bounds


def visible(bounds: list[tuple[int, int]], samples: list[int]) -> int:
    """Boundaries a detector that sees only ``samples`` can find (a gap between two samples shows one at most)."""
    gaps = set()
    for lo, hi in bounds:
        gaps.add(next((k for k, (a, b) in enumerate(zip(samples, samples[1:])) if lo <= b and hi > a), None))
    return len(gaps - {None})


def score(found: list[int], bounds: list[tuple[int, int]], step: int, samples: list[int]) -> dict:
    """Match found cut frames to boundaries (each once)."""
    used, tp = set(), 0
    for f in found:
        for k, (a, b) in enumerate(bounds):
            if k not in used and a - 1 <= f <= b + max(1, step):
                used.add(k)
                tp += 1
                break
    fp, fn = len(found) - tp, len(bounds) - tp
    seen = visible(bounds, samples)
    return {"cuts": len(bounds), "visible": seen, "found": len(found), "precision": round(tp / max(1, tp + fp), 3),
            "recall": round(tp / max(1, tp + fn), 3), "recall_of_visible": round(tp / max(1, seen), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "anime36")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colours-only", action="store_true", help="the detector without its layout measure")
    args = ap.parse_args()
    import illust2vec.video.scenes as scenes
    from illust2vec.video.decode import iter_video_frames

    if args.colours_only:
        scenes._LAYOUT_SPREAD = float("inf")  # the layout measure never counts
    files = sorted(args.data.glob("*.jpg"))
    plan = shots_plan(files, np.random.default_rng(args.seed))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("hard", "fade"):
            path = Path(tmp) / f"{kind}.mp4"
            bounds = build(kind, plan, args.seed, path)
            det = scenes.detect_shots(path)
            found = [s.start_frame for s in det.shots[1:]]
            rows.append({"video": kind, "mode": "scenes", **score(found, bounds, 1, det.indices.tolist())})
            for label, kw, step in (("every 1", {"every": 1.0}, RATE), ("fps 4", {"fps": 4.0}, RATE // 4)):
                d = scenes.ShotDetector()
                for fr in iter_video_frames(path, **kw):
                    d.update(fr.time, fr.index, fr.image)
                rows.append({"video": kind, "mode": label, **score([i for _, i in d.cuts[1:]], bounds, step, d.indices)})
    for r in rows:
        print(json.dumps({**r, "detector": "colours only" if args.colours_only else "colours + layout"}))


if __name__ == "__main__":
    main()
