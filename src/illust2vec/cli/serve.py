"""``illust2vec serve``: the local web app over a collection."""
from __future__ import annotations

import argparse
import sys
import threading
import time
import webbrowser
from pathlib import Path

EXAMPLES = """\
examples:
  illust2vec serve --db pics.i2v                      http://127.0.0.1:8765/ (this machine only)
  illust2vec serve --db pics.i2v --open               and open it in the browser
  illust2vec serve --db pics.i2v --host 0.0.0.0       on the network: prints an address with a token
"""


def register(sub) -> None:
    from illust2vec.cli.common import add_db_argument, add_model_arguments, add_quiet_argument
    from illust2vec.cli.helptext import short_help

    p = sub.add_parser(
        "serve", help="browse, filter, search and curate a collection in the browser (local web app)",
        description="A local web app over one collection: a virtualised grid, tag filters with autocomplete, "
                    "item view with similar images and near-duplicates, query by an uploaded/dropped/pasted "
                    "image, duplicate review (moves with a manifest, undo), user tags, and a JSON API "
                    "(/api/openapi.json). Binds to 127.0.0.1; any other --host requires a token. "
                    "Needs the 'serve' extra: pip install 'illust2vec[serve]'.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", help="require this token on every request (default for a non-loopback --host: a "
                                   "random one, printed once)")
    p.add_argument("--move-to", metavar="DIR", type=Path,
                   help="where duplicate review moves the copies it takes out (default DB/duplicates)")
    p.add_argument("--map-method", choices=("tsne", "umap", "pca"), default="tsne",
                   help="layout of the map page, built on its first visit (default tsne; pca is instant)")
    p.add_argument("--open", action="store_true", help="open the app in the default browser")
    add_quiet_argument(p)
    # the embedder of uploaded query images: the collection's (or --model/--weights), on --device, from --model-dir
    add_model_arguments(p, "feature")
    short_help(p, "--db", "--host", "--port", "--token", "--open", "--device", "--model-dir", "--quiet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from illust2vec.serve import create_app
        from illust2vec.serve.security import is_loopback, new_token
    except ImportError as exc:
        print(f"error: the web app needs the 'serve' extra ({exc.name} is missing): pip install 'illust2vec[serve]'",
              file=sys.stderr)
        return 1
    token = args.token
    if token is None and not is_loopback(args.host):
        token = new_token()
    def query_embedder():  # on the first query image: the one route, the collection's model by default
        from illust2vec.cli.common import collection_models_from_args

        return collection_models_from_args(args, app.app.state.service.col.info(), need_tagger=False)[0]

    app = create_app(args.db, token=token, embedder=query_embedder, move_to=args.move_to,
                     map_method=args.map_method)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown

    def announce() -> None:
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else args.port
        url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
        print(f"serving {app.app.state.service.col.path} at {url}" + ("" if token is None else
              "  (the token is printed only this once)"), file=sys.stderr)
        if args.open:
            webbrowser.open(url)

    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            announce()

    threading.Thread(target=watch, daemon=True).start()
    server.run()
    return 0
