"""Progress of long work: per-disk rates and ETAs (the values live in api.events)."""

from __future__ import annotations

import time
from collections import deque

from kvm_clone_tui.api.events import DiskProgress, JobEvent

__all__ = ["DiskProgress", "JobEvent", "RateMeter", "disk_progress"]


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
