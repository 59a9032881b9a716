"""Lazy package exports (PEP 562): public names whose submodule is imported on first use.

So that ``import illust2vec`` and the command-line parser stay light while ``illust2vec.load_model``,
``illust2vec.collection.Collection`` and the like still work as plain attributes.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each public name to the submodule
    (relative to ``package``) that defines it; any other name is an ``AttributeError``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
