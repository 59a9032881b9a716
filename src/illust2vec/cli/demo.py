"""``illust2vec demo``: draw a small gallery of characters and map it (no downloads needed)."""
from __future__ import annotations

import argparse
import sys
import time
import webbrowser
from pathlib import Path


EXAMPLES = """\
examples:
  illust2vec demo                                  ./illust2vec-demo/map.png and map.html
  illust2vec demo --open                           the same, then the viewer in your web browser
  illust2vec demo --characters 40 --grid --out demo40/
  illust2vec demo --method umap                    needs illust2vec[umap]
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="draw a gallery of characters and show them as a map (works offline)",
        description="Draw a gallery of procedurally generated anime-style characters (hair and eye colours, "
                    "hair styles, accessories; several characters x 3 variants, like the original "
                    "illustration2vec experiment), then run the whole map pipeline on it with the best "
                    "feature model available offline and write a PNG map and an HTML viewer.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("illust2vec-demo"), metavar="DIR",
                   help="output directory (default ./illust2vec-demo)")
    p.add_argument("--characters", type=int, default=25, help="number of characters (default 25)")
    p.add_argument("--variants", type=int, default=3, help="images per character (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed for drawing and the map (default 0)")
    p.add_argument("--model", "-m", metavar="NAME",
                   help="feature model (default: i2v-feature if its weights are stored, else generic-effnet-lite0)")
    p.add_argument("--method", choices=("tsne", "umap", "pca"), default="tsne")
    p.add_argument("--grid", action="store_true", help="snap the map to a grid")
    p.add_argument("--open", action="store_true", help="open the viewer (map.html) in the web browser when done")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run, requires=demo_requirements)


def demo_requirements(args: argparse.Namespace) -> tuple[str, ...]:
    """The engine and the map's modules: said before the gallery is drawn, not after."""
    from illust2vec.cli.map import map_requirements

    return map_requirements(args)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from illust2vec.errors import Illust2VecError
    from illust2vec.io.gallery import write_gallery
    from illust2vec.maps.pipeline import format_quality, make_map
    from illust2vec.models.loading import load_model

    if args.characters < 2 or args.variants < 1:
        raise Illust2VecError("--characters must be at least 2 and --variants at least 1")
    t0 = time.perf_counter()
    out: Path = args.out
    gallery = out / "gallery"
    items = write_gallery(gallery, characters=args.characters, variants=args.variants, seed=args.seed)
    print(f"drew {len(items)} images of {args.characters} characters in {gallery}", file=sys.stderr)
    model = load_model(args.model, task="feature", offline=True, progress=not args.quiet)
    # The gallery knows what it drew: those tags explain the clusters (no tagger works offline).
    vocab = sorted({t for it in items for t in it.tags})
    col = {t: j for j, t in enumerate(vocab)}
    probs = np.zeros((len(items), len(vocab)), dtype=np.float32)
    for i, it in enumerate(items):
        probs[i, [col[t] for t in it.tags]] = 1.0
    paths = [str(it.path) for it in items]
    from illust2vec.maps.pipeline import compute_features

    ok, feats, _, errors = compute_features(model, paths, with_probs=False, progress=None if args.quiet else True)
    if errors:
        for p, m in errors:
            print(f"error: {p}: {m}", file=sys.stderr)
    keep = [paths.index(p) for p in ok]
    title = f"illust2vec demo: {args.characters} characters x {args.variants} ({model.name}, {args.method})"
    result = make_map(
        ok, out / "map.png", html=out / "map.html", report=out / "report.json", features=feats,
        labels=[items[i].character for i in keep], tag_probs=probs[keep], tag_names=vocab,
        method=args.method, grid=args.grid, seed=args.seed, title=title, max_size=3072,
        progress=not args.quiet, model=model.name,
    )
    print(format_quality(result.quality))
    for c in result.clusters:
        print(f"  cluster {c.name} ({c.size} images)")
    print(f"model: {model.name}   time: {time.perf_counter() - t0:.1f} s")
    print(f"wrote {out}/: gallery/ ({len(items)} pictures), map.png, map.html, report.json")
    print(f"map:    {result.png}")
    print(f"viewer: {result.html}")
    print(f"report: {result.report}")
    url = result.html.resolve().as_uri()
    if args.open:
        print(f"opening {url}")
        webbrowser.open(url)
    else:
        print(f"open the viewer in a web browser: {url}  (--open does it for you)")
    return 1 if errors else 0
