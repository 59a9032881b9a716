"""The one progress type: a tqdm bar on stderr, made the same way everywhere.

Library calls take ``progress``: ``True`` (a bar of their own), ``False``/``None``
(silent), or a bar-like object the caller made (``update(n)``, ``close()``) that they
update instead — so a command can show one bar over several stages.  A ``callable``
is also accepted and called with each increment.

>>> bar = progress_bar(10, desc="demo", enabled=False)
>>> bar.update(3); bar.close()
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    """What the library needs from a progress bar (tqdm satisfies it)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


def progress_bar(total: int | None = None, *, desc: str | None = None, unit: str = "img", enabled: bool = True,
                 leave: bool = True, **options: Any) -> Any:
    """A tqdm bar on stderr (``enabled=False``: one that draws nothing); ``options`` go to tqdm."""
    from tqdm import tqdm

    return tqdm(total=total or None, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, leave=leave,
                dynamic_ncols=True, smoothing=0.1, **options)


def as_progress(progress: Any, total: int | None = None, *, desc: str | None = None, unit: str = "img",
                leave: bool = True) -> tuple[Callable[[int], Any], Callable[[], Any]]:
    """``(update, close)`` for a ``progress`` argument (see the module docstring).

    ``close`` closes only a bar made here; a caller's bar stays open for its next stage.
    """
    if progress is None or progress is False:
        return (lambda n: None), (lambda: None)
    if progress is True:
        bar = progress_bar(total, desc=desc, unit=unit, leave=leave)
        return bar.update, bar.close
    if hasattr(progress, "update"):
        return progress.update, (lambda: None)
    if callable(progress):
        return progress, (lambda: None)
    raise TypeError(f"progress must be a bool, a bar with update() or a callable, not {type(progress).__name__}")
