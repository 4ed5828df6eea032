"""What jobs emit while they run: steps of their transaction log and per-disk progress."""

from __future__ import annotations

import time
from collections.abc import Callable
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


EventCallback = Callable[[JobEvent], None]
