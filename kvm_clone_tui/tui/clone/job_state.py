"""What the jobs panel knows about one clone job: per-file progress, log lines, what it staged.

Pure state fed with the engine's :class:`JobEvent`; :mod:`.job_view` draws it.
"""

from __future__ import annotations

from rich.text import Text

from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.common.progress import FileState, log_line


class JobState:
    """A clone job as the panel shows it."""

    def __init__(self, plan: ClonePlan) -> None:
        self.plan = plan
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
