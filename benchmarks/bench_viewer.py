"""Benchmark the HTML map viewer: build time in Python and load time in headless Chromium.

For each size N (default 10k and 100k) it lays out N points in synthetic clusters,
uses the 36 illustrations of ../shared/data/anime36 (cycled) as thumbnails, writes the
viewer with :func:`illust2vec.maps.viewer.write_viewer` and opens it in Debian's
chromium (Playwright, ``executable_path``; software WebGL under ``--disable-gpu``):

- build s      wall time of ``write_viewer`` (cpu s: process CPU time, which is what
               matters on a shared machine)
- size MB      the HTML file (+ the ``_files`` folder when not embedded)
- ready ms     navigation start -> first frame drawn (the ``ready`` promise); the map is
               interactive from here, points in their mean colours
- base ms      navigation start -> overview atlas decoded and drawn (thumbnails everywhere)
- settled ms   navigation start -> every atlas page the first view needs is drawn
- pan ms/frame mean time between the frames drawn while dragging the map at full zoom-out and
               at 8x zoom (thumbnails from the hi atlas); js ms: the viewer's own JavaScript
               time of the last frame (the rest is the browser and software WebGL)

Target (issue 5): ready <= 3 s at 100k points.

Usage:
    .venv/bin/python benchmarks/bench_viewer.py [--sizes 10000 100000] [--thumb-size 128]
        [--modes embed external] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from illust2vec.maps.viewer import ViewerOptions, ViewerPoint, write_viewer  # noqa: E402

SHARED = ROOT.parent / "shared"
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


def make_points(n: int, seed: int = 0) -> list[ViewerPoint]:
    rng = np.random.default_rng(seed)
    k = max(2, int(np.sqrt(n) / 4))
    centres = rng.normal(size=(k, 2)) * 12.0
    lab = rng.integers(0, k, n)
    xy = centres[lab] + rng.normal(size=(n, 2)) * rng.uniform(0.6, 2.0, size=(k, 1))[lab]
    return [
        ViewerPoint(
            float(x), float(y), f"character_{l:03d}/img_{i:06d}.jpg", label=f"character {l}",
            cluster=int(l) % 40 - 1, top_tags=[("1girl", 0.95), (f"tag_{l}", 0.7), ("smile", 0.41)],
        )
        for i, ((x, y), l) in enumerate(zip(xy, lab))
    ]


def load_pool(size: int = 256) -> list[Image.Image]:
    files = sorted((SHARED / "data" / "anime36").glob("*.jpg"))
    if not files:
        sys.exit(f"no images in {SHARED / 'data' / 'anime36'}")
    return [Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BILINEAR) for f in files]


def dir_size(html: Path) -> float:
    total = html.stat().st_size
    files = html.with_name(html.stem + "_files")
    if files.is_dir():
        total += sum(p.stat().st_size for p in files.iterdir())
    return total / 1e6


def measure_load(browser, html: Path) -> dict:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.resolve().as_uri(), wait_until="commit", timeout=600_000)
    t0 = time.time()
    while not page.evaluate("() => window.illust2vecViewer !== undefined"):
        if time.time() - t0 > 600:
            raise RuntimeError("viewer did not start")
        time.sleep(0.02)
    page.evaluate("() => window.illust2vecViewer.ready")
    settled = page.evaluate("() => window.illust2vecViewer.settled().then(() => performance.now())")
    tm = page.evaluate("() => window.illust2vecViewer.timings()")
    renderer = page.evaluate("() => window.illust2vecViewer.renderer")

    def pan_frame_ms() -> float:
        """Mean time between the frames the viewer drew while the map was dragged."""
        page.evaluate("() => window.illust2vecViewer.settled()")
        t0 = page.evaluate("() => performance.now()")
        page.mouse.move(700, 400)
        page.mouse.down()
        for k in range(30):
            page.mouse.move(700 + 6 * k, 400 + 3 * k)
        page.mouse.up()
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        tm = page.evaluate("() => window.illust2vecViewer.timings()")
        js_ms.append(tm["lastFrameJs"])
        f = np.array([t for t in tm["frames"] if t >= t0])
        return float(np.diff(f).mean()) if f.size > 2 else float("nan")

    js_ms: list[float] = []

    pan_out = pan_frame_ms()
    for _ in range(6):  # zoom in about 8x around the window centre
        page.mouse.move(700, 400)
        page.mouse.wheel(0, -220)
    page.evaluate("() => window.illust2vecViewer.settled()")
    visible = page.evaluate("() => window.illust2vecViewer.visibleCount()")
    pan_in = pan_frame_ms()
    ctx.close()
    return {
        "ready": tm.get("firstFrame"), "base": tm.get("baseDecoded"), "settled": settled,
        "pan_out": pan_out, "pan_in": pan_in, "js_out": js_ms[0], "js_in": js_ms[1], "visible_zoomed": visible, "errors": errors,
        "renderer": renderer,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--thumb-size", type=int, default=128)
    ap.add_argument("--modes", nargs="+", default=["embed", "external"], choices=["embed", "external"])
    ap.add_argument("--max-embed", type=int, default=20_000,
                    help="skip embedded files above this many points (they grow to ~6 kB per image)")
    ap.add_argument("--out", type=Path, default=None, help="keep the HTML files here")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    out.mkdir(parents=True, exist_ok=True)
    pool = load_pool()
    rows = []
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for n in args.sizes:
            pts = make_points(n)
            for mode in args.modes:
                if mode == "embed" and n > args.max_embed:
                    continue
                html = out / f"viewer_{n}_{mode}.html"
                t, c = time.perf_counter(), time.process_time()
                write_viewer(html, pts, lambda i: pool[i % len(pool)],
                             ViewerOptions(thumb_size=args.thumb_size, embed=(mode == "embed"), title=f"bench {n}"))
                build, cpu = time.perf_counter() - t, time.process_time() - c
                r = measure_load(browser, html)
                r.update(n=n, mode=mode, build=build, cpu=cpu, size=dir_size(html))
                rows.append(r)
                print(f"  {n} {mode}: build {build:.1f}s (cpu {cpu:.1f}s), ready {r['ready']:.0f} ms, "
                      f"base {r['base']:.0f} ms, settled {r['settled']:.0f} ms, {r['renderer']}"
                      + (f", errors {r['errors']}" if r["errors"] else ""), flush=True)
        browser.close()
    print()
    print(f"thumb_size={args.thumb_size}; times in ms from navigation start; load average now {os.getloadavg()[0]:.1f}")
    hdr = f"{'N':>7} {'mode':>8} {'build s':>8} {'cpu s':>6} {'size MB':>8} {'ready ms':>9} {'base ms':>8} {'settled ms':>10} {'pan out ms/f':>12} {'pan 8x ms/f':>11} {'js ms':>9}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['n']:>7} {r['mode']:>8} {r['build']:>8.1f} {r['cpu']:>6.1f} {r['size']:>8.1f} {r['ready']:>9.0f} "
              f"{r['base']:>8.0f} {r['settled']:>10.0f} {r['pan_out']:>12.1f} {r['pan_in']:>11.1f} {r['js_out']:>4.1f}/{r['js_in']:<4.1f}")
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
