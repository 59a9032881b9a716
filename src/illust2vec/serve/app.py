"""The ASGI app: a JSON API over :class:`~illust2vec.serve.service.CollectionService` and the static pages.

Build it with :func:`create_app` and run it with any ASGI server (the CLI
uses uvicorn)::

    from illust2vec.serve import create_app
    import uvicorn
    uvicorn.run(create_app("my.i2v"), host="127.0.0.1", port=8765)

The OpenAPI description is at ``/api/openapi.json`` (the interactive docs
pages are off: they load scripts from a CDN).  Files are only ever served by
item id; the static front end is in ``serve/static/`` (no build step, no
network).
"""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from illust2vec.collection.errors import UnknownTagError
from illust2vec.errors import Illust2VecError
from illust2vec.serve.mapview import map_page
from illust2vec.serve.security import Guard
from illust2vec.serve.service import MAX_LIMIT, CollectionService, NotFound

STATIC = Path(__file__).with_name("static")
#: Largest upload accepted by ``POST /api/search``.
MAX_UPLOAD = 50 * 1024 * 1024


class DupeDecision(BaseModel):
    ids: list[int] = Field(description="item ids of the group (two or more)")
    keeper: int = Field(description="the item to keep; the others are moved")


class ApplyRequest(BaseModel):
    groups: list[DupeDecision]


class UndoRequest(BaseModel):
    manifest: str = Field(description="file name of a manifest in the move-to folder")


class UserTagsRequest(BaseModel):
    ids: list[int]
    add: list[str] = []
    remove: list[str] = []
    forget: list[str] = []


def _item_id(text: str) -> int:
    """Ids in URLs are decimal numbers; anything else (``..%2F``, names) is an unknown item."""
    if not text.isdigit() or len(text) > 18:
        raise NotFound(f"no item {text!r}")
    return int(text)


def create_app(db: str | Path | CollectionService, *, token: str | None = None, embedder=None,
               move_to: str | Path | None = None, map_method: str = "tsne"):
    """The web app over collection ``db`` (an ASGI application).

    Args:
        db: collection directory (or a ready :class:`CollectionService`).
        token: require this token on every request (needed when serving on
            a non-loopback address); ``None``: loopback ``Host`` only.
        embedder: model for uploaded query images (default: the collection's, by name).
        move_to: where duplicate review moves copies (default ``DB/duplicates``).
        map_method: layout of the map page: ``tsne`` (as ``illust2vec map``), ``umap`` or ``pca`` (instant).
    """
    service = db if isinstance(db, CollectionService) else CollectionService(db, embedder=embedder, move_to=move_to)
    api = FastAPI(title="illust2vec", summary="Browse, search and curate an illust2vec collection",
                  docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    api.state.service = service

    @api.middleware("http")
    async def _idle(request: Request, call_next):
        response = await call_next(request)
        await run_in_threadpool(service.idle)  # no snapshot held between requests (see collection.compact)
        return response

    @api.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(Illust2VecError)
    async def _bad(request: Request, exc: Illust2VecError):
        return JSONResponse({"detail": str(exc), "unknown_tag": isinstance(exc, UnknownTagError)}, status_code=400)

    @api.get("/api/info", summary="The collection: path, item count, models")
    def info() -> dict[str, Any]:
        return service.info()

    @api.get("/api/items", summary="Items filtered by a tag expression, sorted by path (or ?sort=)")
    def items(tags: str | None = None, not_tags: str | None = Query(None, alias="not"),
              min_prob: float = Query(0.5, alias="min"), offset: int = 0, limit: int = 100,
              model: str | None = None, sort: str = "path") -> dict[str, Any]:
        return service.items(tags=tags, not_tags=not_tags, min_prob=min_prob, offset=offset, limit=limit,
                             model=model, sort=sort)

    @api.get("/api/items/{item_id}", summary="One item with all its tags (model and user)")
    def item(item_id: str, model: str | None = None) -> dict[str, Any]:
        return service.item(_item_id(item_id), model=model)

    @api.get("/api/items/{item_id}/similar", summary="Nearest items by features (or binary codes), itself excluded")
    def similar(item_id: str, k: int = 20, binary: int = 0) -> dict[str, Any]:
        return {"items": service.similar(_item_id(item_id), k=k, binary=bool(binary))}

    @api.post("/api/search", summary="Items most similar to an uploaded image")
    async def search(image: Annotated[UploadFile, File()], k: Annotated[int, Form()] = 20) -> dict[str, Any]:
        data = await image.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            return JSONResponse({"detail": f"image larger than {MAX_UPLOAD // (1024 * 1024)} MiB"}, status_code=413)
        if not data:
            return JSONResponse({"detail": "empty upload"}, status_code=400)
        return {"items": await run_in_threadpool(service.search_image, data, k=k)}

    @api.get("/api/tags", summary="Tag autocomplete with counts")
    def tags(prefix: str = "", limit: int = 20, min_prob: float = Query(0.5, alias="min"),
             model: str | None = None) -> list[dict[str, Any]]:
        return service.tags(prefix, limit=max(1, min(limit, MAX_LIMIT)), min_prob=min_prob, model=model)

    @api.get("/api/dupes", summary="Near-duplicate groups with per-file facts and the recommended keeper ('computing': ask again)")
    def dupes(distance: int | None = Query(None, ge=0, description="largest Hamming distance (bits); "
                                                                       "default: the dupes command's")) -> dict[str, Any]:
        groups = service.dupes(max_distance=distance, wait=False)
        return {"computing": groups is None, "groups": groups or [], "manifests": service.manifests(),
                "move_to": str(service.move_to), "distance": distance, **service.dupes_settings()}

    @api.post("/api/dupes/apply", summary="Move every copy but the keeper of each group (manifest written)")
    def dupes_apply(req: ApplyRequest) -> dict[str, Any]:
        return service.apply_dupes([g.model_dump() for g in req.groups])

    @api.post("/api/dupes/undo", summary="Put back the files a manifest moved")
    def dupes_undo(req: UndoRequest) -> dict[str, Any]:
        return service.undo_dupes(req.manifest)

    @api.post("/api/user-tags", summary="Add, remove or forget user tags on items")
    def user_tags(req: UserTagsRequest) -> dict[str, Any]:
        return {"changed": service.set_user_tags(req.ids, add=req.add, remove=req.remove, forget=req.forget)}

    @api.get("/image/{item_id}", summary="The picture of an item", response_class=FileResponse)
    def image(item_id: str):
        path = service.path_of(_item_id(item_id))
        mt = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not mt.startswith("image/") or mt == "image/svg+xml":
            mt = "application/octet-stream"
        return FileResponse(path, media_type=mt, content_disposition_type="inline",
                            headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/thumb/{item_id}", summary="A cached JPEG thumbnail of an item")
    def thumb(item_id: str, size: int = 256):
        got = service.thumbnail(_item_id(item_id), size)
        headers = {"Cache-Control": "private, max-age=86400"}
        if isinstance(got, Path):
            return FileResponse(got, media_type="image/jpeg", headers=headers)
        return Response(got, media_type="image/jpeg", headers=headers)

    @api.get("/map", include_in_schema=False)
    def map_view():
        # the viewer carries its own CSP (a nonce for its script, no network); the guard keeps this one
        return FileResponse(map_page(service, method=map_method), media_type="text/html", headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"})

    @api.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @api.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    return Guard(api, token=token)

