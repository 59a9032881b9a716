"""The local web app over a collection (``illust2vec serve``): a JSON API and static pages.

:func:`create_app` builds the ASGI application; :class:`CollectionService`
is the same functionality as plain Python calls.  Needs the ``serve`` extra
(``pip install 'illust2vec[serve]'``: FastAPI, uvicorn, python-multipart).
"""
from __future__ import annotations

from illust2vec.serve.app import create_app
from illust2vec.serve.service import CollectionService, NotFound

__all__ = ["CollectionService", "NotFound", "create_app"]
