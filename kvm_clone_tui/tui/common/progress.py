"""A job's progress as the jobs panel keeps it: per file, and its log lines.

Pure state fed with the engine's :class:`JobEvent`; shared by clone jobs and sync sessions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rich.text import Text

from kvm_clone_tui.api.events import DiskProgress, JobEvent
from kvm_clone_tui.api.units import format_bytes

RATE_SAMPLES = 60  # throughput history per file (the sparkline)

STEP_STYLES: dict[str, str] = {
    "warning": "yellow",
    "failed": "bold red",
    "error": "bold red",
    "rollback": "yellow",
    "done": "bold green",
    "define": "green",
    "start": "green",
}


def format_duration(seconds: float | None) -> str:
    """``0:17``, ``12:03``, ``1:02:03``; ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class FileState:
    """One file's copy as last reported, and its recent throughput."""

    label: str
    total: int
    done: int = 0
    rate: float = 0.0
    eta: float | None = None
    finished: bool = False
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_SAMPLES))

    def update(self, progress: DiskProgress) -> bool:
        """Take a new report; True when something changed (a rate sample is then kept)."""
        total = max(progress.total, progress.done)
        if (progress.done, total, progress.finished) == (self.done, self.total, self.finished):
            return False
        self.done, self.total, self.finished = progress.done, total, progress.finished
        self.rate, self.eta = progress.rate, progress.eta
        self.rates.append(progress.rate)
        return True

    def reset(self) -> None:
        """Start over (a resumed job reports its files again from the start)."""
        self.done, self.rate, self.eta, self.finished = 0, 0.0, None, False
        self.rates.clear()

    @property
    def fraction(self) -> float:
        """Done as a fraction of the total (1.0 for an empty file)."""
        return min(1.0, self.done / self.total) if self.total else 1.0

    def stats(self) -> str:
        """``12.0 MiB / 45.0 MiB · 2.0 MiB/s · ETA 0:17``."""
        sizes = f"{format_bytes(self.done)} / {format_bytes(self.total)}"
        if self.finished:
            return f"{sizes} · verified"
        if not self.done and not self.rate:
            return f"{sizes} · waiting"
        if not self.rate:  # one report so far: no rate yet
            return f"{sizes} · measuring the rate"
        return f"{sizes} · {format_bytes(self.rate)}/s · ETA {format_duration(self.eta)}"


def log_line(event: JobEvent, started: float) -> Text:
    """``00:03 stage    copying 2 file(s)...``: elapsed time, step, message (styled by step)."""
    text = Text()
    text.append(f"{format_duration(max(0.0, event.time - started)):>5} ", style="dim")
    style = STEP_STYLES.get(event.step, "")
    text.append(f"{event.step:<8} ", style=style or "bold")
    text.append(event.message, style=style)
    return text
