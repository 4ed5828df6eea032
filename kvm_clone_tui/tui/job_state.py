"""What the jobs panel knows about one clone job: status, per-file progress, log lines.

Pure state fed with the engine's :class:`JobEvent`; :mod:`.widgets.job_view` draws it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from rich.text import Text

from kvm_clone_tui.api.events import DiskProgress, JobEvent
from kvm_clone_tui.api.plans import ClonePlan
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


class JobStatus(str, Enum):
    """Where a job is."""

    RUNNING = "running"
    CANCELLING = "cancelling: rolling back"
    STOPPING = "cancelling"  # a sync: nothing to roll back
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"
    ROLLING_BACK = "rolling back"
    ROLLED_BACK = "rolled back"
    KEPT = "kept for resume: r resumes, x rolls back"
    ROLLBACK_FAILED = "rollback failed"
    REVERTING = "reverting to before the sync"

    @property
    def active(self) -> bool:
        """True while a worker still works on the job."""
        return self in (
            JobStatus.RUNNING,
            JobStatus.CANCELLING,
            JobStatus.STOPPING,
            JobStatus.ROLLING_BACK,
            JobStatus.REVERTING,
        )

    @property
    def style(self) -> str:
        """How the status is shown."""
        return {
            JobStatus.RUNNING: "bold",
            JobStatus.DONE: "bold green",
            JobStatus.ROLLED_BACK: "yellow",
            JobStatus.CANCELLING: "yellow",
            JobStatus.STOPPING: "yellow",
            JobStatus.CANCELLED: "bold yellow",
            JobStatus.ROLLING_BACK: "yellow",
            JobStatus.REVERTING: "yellow",
            JobStatus.KEPT: "bold yellow",
        }.get(self, "bold red")


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


class JobState:
    """A clone job as the panel shows it."""

    def __init__(self, plan: ClonePlan) -> None:
        self.plan = plan
        self.status = JobStatus.RUNNING
        self.files = {f.label: FileState(f.label, f.allocated) for f in plan.files}
        self.started: float | None = None
        self.last_time: float | None = None  # of the latest engine event
        self.error: str | None = None
        self.staged: tuple[str, ...] = ()
        self.steps: set[str] = set()  # every step the engine reported
        self.dirty = True

    @property
    def title(self) -> str:
        """``web01 → beta as web01-copy``."""
        plan = self.plan
        name = "" if plan.new_name == plan.vm.name else f" as {plan.new_name}"
        return f"{plan.vm.name} ({plan.source_host}) → {plan.dest_host}{name}"

    @property
    def done_bytes(self) -> int:
        """Bytes copied so far, all files together."""
        return sum(f.done for f in self.files.values())

    @property
    def total_bytes(self) -> int:
        """Bytes to copy, all files together."""
        return sum(f.total for f in self.files.values())

    def summary(self) -> str:
        """``45% of 16.3 MiB · relay`` (the job's border subtitle, with the status)."""
        total = self.total_bytes
        percent = round(100 * self.done_bytes / total) if total else 100
        return f"{percent}% of {format_bytes(total)} · {self.plan.route}"

    def apply(self, event: JobEvent) -> Text | None:
        """Take an engine event; return the log line it makes (None: progress only)."""
        if self.started is None:
            self.started = event.time
        self.steps.add(event.step)
        self.last_time = event.time
        for disk in event.disks:
            state = self.files.get(disk.target)
            if state is None:
                state = self.files[disk.target] = FileState(disk.target, disk.total)
            if state.update(disk):
                self.dirty = True
        if event.step == "copy" and not event.message:
            return None
        return log_line(event, self.started)

    def note(self, step: str, message: str, at: float) -> Text:
        """A line of the UI's own (cancel asked, rollback result...) in the same format."""
        return self.apply(JobEvent(self.plan.job_id, step, message, time=at)) or Text()
