"""The one progress protocol and its one bar adapter.

Every long stage (tagging images, decoding frames, t-SNE iterations, duplicate
pairs, downloads) takes ``progress``:

* ``None``/``False``: silent;
* ``True``: a bar of its own on stderr (:class:`ProgressBar`), labelled and
  counted in the stage's unit;
* a callable ``progress(done, total, *, unit, label) -> bool | None``: called
  with the units done so far (``total`` is ``None`` when unknown).  Returning
  ``True`` asks the stage to stop: it raises :class:`Cancelled` (stages that can
  keep a partial result say so).  A :class:`ProgressBar` is such a callable, so
  a command can make one bar and hand it to the library.

Units: ``"img"`` (images), ``"frame"`` (video frames), ``"it"`` (optimiser
iterations), ``"pair"``, ``"file"``, ``"B"`` (bytes).

>>> seen = []
>>> report, close = progress_callback(lambda done, total, **kw: seen.append((done, total, kw["unit"])),
...                                   label="t-SNE", unit="it", total=10)
>>> report(5); close()
>>> seen
[(0, 10, 'it'), (5, 10, 'it')]
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from illust2vec.errors import Illust2VecError

__all__ = ["Cancelled", "Progress", "ProgressBar", "progress_callback", "progress_counter", "UNITS"]

#: What each unit counts (for labels and docs).
UNITS = {"img": "images", "frame": "video frames", "it": "iterations", "pair": "pairs", "file": "files",
         "B": "bytes", "face": "faces", "code": "hash codes", "pass": "search passes",
         "step": "steps"}


class Cancelled(Illust2VecError):
    """A progress callback asked the running stage to stop (it returned ``True``)."""


class Progress(Protocol):
    """The progress callback every long stage accepts (see the module docstring)."""

    def __call__(self, done: int, total: int | None, *, unit: str, label: str) -> bool | None: ...


class ProgressBar:
    """The one bar adapter: a tqdm bar on stderr driven through :class:`Progress`.

    Calling it with ``(done, total, unit=, label=)`` moves the bar to ``done``;
    a new ``label`` closes the current bar and opens the next one (one bar per
    stage of a multi-stage run), with that stage's unit.  ``update(n)`` and
    ``write(line)`` work as on tqdm, for callers that count themselves.
    ``enabled=False`` draws nothing.
    """

    def __init__(self, label: str | None = None, *, unit: str = "img", total: int | None = None,
                 enabled: bool = True, leave: bool = True, initial: int = 0) -> None:
        self.label, self.unit, self.total, self.initial = label, unit, total, initial
        self.enabled, self.leave = enabled, leave
        self._bar: Any = None
        self._bar_label: str | None = None

    def _open(self, label: str | None, unit: str, total: int | None) -> Any:
        from tqdm import tqdm

        self._close_bar()
        self._bar = tqdm(total=total or None, desc=label, unit=unit, file=sys.stderr, disable=not self.enabled,
                         leave=self.leave, dynamic_ncols=True, smoothing=0.1, initial=self.initial,
                         unit_scale=unit == "B", unit_divisor=1024)
        self.initial = 0
        self._bar_label = label
        return self._bar

    def _current(self, label: str | None = None, unit: str | None = None, total: int | None = None) -> Any:
        label = label if label is not None else self.label
        if self._bar is None or label != self._bar_label:
            self._open(label, unit or self.unit, total if total is not None else self.total)
        return self._bar

    def __call__(self, done: int, total: int | None = None, *, unit: str | None = None,
                 label: str | None = None) -> None:
        bar = self._current(label, unit, total)
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    @property
    def n(self) -> int:
        return int(self._bar.n) if self._bar is not None else 0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units on the current bar."""
        self._current().update(n)

    def set_postfix_str(self, text: str) -> None:
        """Show ``text`` after the counts (e.g. the time in the video)."""
        self._current().set_postfix_str(text, refresh=False)

    def write(self, line: str, file: Any = None) -> None:
        """Print ``line`` above the bar (error lines during a run)."""
        from tqdm import tqdm

        tqdm.write(line, file=file or sys.stderr)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self._close_bar()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_callback(progress: Any, *, label: str, unit: str = "img", total: int | None = None,
                      leave: bool = False) -> tuple[Callable[..., None], Callable[[], None]]:
    """``(report, close)`` for a stage's ``progress`` argument (see the module docstring).

    The callback is called with ``done=0`` at once (the stage starts).
    ``report(done, total=...)`` passes the count on and raises :class:`Cancelled`
    when the callback returns ``True``; ``close`` closes only a bar made here.
    """
    if progress is None or progress is False:
        return (lambda done, total=None: None), (lambda: None)
    if progress is True:
        progress = bar = ProgressBar(label, unit=unit, total=total, leave=leave)
        close: Callable[[], None] = bar.close
    elif callable(progress):
        close = lambda: None  # noqa: E731 - the caller's callback or bar stays theirs
    else:
        raise TypeError(f"progress must be a bool or a callable progress(done, total, *, unit, label), "
                        f"not {type(progress).__name__}")
    fn = progress
    known = [total]

    def report(done: int, total: int | None = None) -> None:
        if total is not None:
            known[0] = total
        if fn(int(done), known[0], unit=unit, label=label) is True:
            close()
            raise Cancelled(f"{label}: stopped by the progress callback after {done} {UNITS.get(unit, unit)}")

    report(0)  # the stage starts: a bar starts its clock, a callback may stop it before any work
    return report, close


def progress_counter(progress: Any, *, label: str, unit: str = "img", total: int | None = None,
                     leave: bool = False) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Like :func:`progress_callback` for stages that count increments: ``step(n)`` adds ``n`` done."""
    report, close = progress_callback(progress, label=label, unit=unit, total=total, leave=leave)
    done = [0]

    def step(n: int = 1) -> None:
        done[0] += n
        report(done[0])

    return step, close
