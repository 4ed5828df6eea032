"""Progress of long work: per-disk bytes, rate and ETA, and the events jobs emit."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DiskProgress:
    """One disk's copy: bytes done of total, current rate (bytes/s) and seconds left."""

    target: str
    done: int
    total: int
    rate: float
    eta: float | None
    finished: bool = False

    @property
    def fraction(self) -> float:
        """Done as a fraction of the total (1.0 for an empty disk)."""
        return min(1.0, self.done / self.total) if self.total else 1.0


@dataclass(frozen=True)
class JobEvent:
    """Something a job did: a step of its transaction log, or progress of its disks.

    ``step`` is one of: plan, stage, copy, verify, define, commit, start, rollback, done,
    failed, warning, info.
    """

    job_id: str
    step: str
    message: str
    disks: tuple[DiskProgress, ...] = ()
    time: float = field(default_factory=time.time)


class RateMeter:
    """Bytes per second over a sliding window of recent samples."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int, now: float | None = None) -> float:
        """Record ``done`` bytes at ``now``; return the current rate."""
        now = time.monotonic() if now is None else now
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        return self.rate

    @property
    def rate(self) -> float:
        """The rate over the window, 0 until two samples exist."""
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def disk_progress(
    target: str, done: int, total: int, meter: RateMeter, finished: bool = False
) -> DiskProgress:
    """A DiskProgress with rate and ETA from ``meter`` (which this call feeds)."""
    rate = meter.add(done)
    eta = (total - done) / rate if rate > 0 and total >= done else None
    return DiskProgress(target, done, total, rate, 0.0 if finished else eta, finished)
