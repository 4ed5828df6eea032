"""The machine a benchmark runs on: page cache, CPU load, and a description for the report."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

from bench.common.units import GiB


def drop_caches() -> None:
    """``sync; echo 3 > /proc/sys/vm/drop_caches`` (the whole machine: every lab host)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``."""
    v = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_between(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The machine's busy fraction between two :func:`cpu_times` readings."""
    return (after[0] - before[0]) / max(1e-9, after[1] - before[1])


def wait_quiet(max_wait: float, threshold: float = 0.35) -> float:
    """Wait (up to ``max_wait`` s) for a 1 s window in which the machine's CPUs are less than
    ``threshold`` busy; return the last window's busy fraction. The machine is shared (other
    people's tests and benchmarks, the lab's running guest): this keeps their bursts out of a
    run as far as possible, and the fraction is reported with the run."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = cpu_times()
        time.sleep(1.0)
        frac = busy_between(b0, cpu_times())
        if frac < threshold or time.monotonic() >= deadline:
            return frac


def cpu_model(default: str | None = None) -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (``default``, else platform.processor())."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() if default is None else default


def machine_summary() -> str:
    """``2 vCPUs (<model>), 8 GiB RAM, Python 3.11.2``."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    return (
        f"{os.cpu_count()} vCPUs ({cpu_model()}), {ram:.0f} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def load_text(load: tuple[float, float, float]) -> str:
    """Load averages as ``0.52 0.61 0.70``."""
    return " ".join(f"{x:.2f}" for x in load)
