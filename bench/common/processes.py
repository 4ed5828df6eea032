"""Processes this benchmark started, read from /proc: descendants, peak RSS, CPU time."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [
                    int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return out


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``."""
    seen: set[int] = set()
    todo = _children(pid)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += _children(p)
    return seen


def hwm_kib(pid: int) -> int:
    """VmHWM: the peak RSS of the process's current program (reset by exec)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def proc_stat(pid: str) -> tuple[str, float] | None:
    """(command name, CPU seconds used: utime + stime) of ``pid``; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / CLK_TCK


def kill_tree(pid: int) -> None:
    """SIGTERM ``pid`` and its descendants (all of them started by this benchmark)."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)


class RssSampler:
    """Peak summed VmHWM of this process's live descendants (but ``exclude``), every 0.1 s.

    ``ru_maxrss`` from ``wait4`` cannot be used: Linux carries the forking parent's peak over
    ``exec``."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.peak_kib = 0
        self._hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tick(self) -> None:
        live = descendants(os.getpid()) - self.exclude
        for p in live:
            self._hwm[p] = max(self._hwm.get(p, 0), hwm_kib(p))
        self.peak_kib = max(self.peak_kib, sum(self._hwm.get(p, 0) for p in live))

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._tick()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
