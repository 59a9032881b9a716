"""Timing helpers shared by the benchmark scripts: the machine's name and medians of interleaved rounds."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """The CPU, its cores and the load average now (report it beside every number)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def interleaved_rounds(cases: Mapping[str, Callable[[], object]], rounds: int,
                       before: Callable[[str], object] | None = None) -> dict[str, list[float]]:
    """Seconds of each case, ``rounds`` times, the cases interleaved round by round.

    Interleaving makes the machine's noise (other processes, a warming cache) hit every case
    alike; ``before(name)``, when given, runs untimed before each timed call (e.g. a clean-up).
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            if before is not None:
                before(name)
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return times

