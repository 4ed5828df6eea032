"""Where a clone job or a sync session is (:class:`JobStatus`), and how the UI words it.

The status is a plain state; what the jobs panel writes for it (``kept for resume: r resumes,
x rolls back``) and in which style is :attr:`JobStatus.label` and :attr:`JobStatus.style`.
"""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is."""

    RUNNING = "running"
    CANCELLING = "cancelling"  # a clone: rolling back what it copied
    STOPPING = "stopping"  # a sync: nothing to roll back
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    KEPT = "kept"  # a failed clone's staged files, kept for a resume
    ROLLBACK_FAILED = "rollback-failed"
    REVERTING = "reverting"

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
    def label(self) -> str:
        """How the jobs panel and the notifications word the status."""
        return STATUS_LABELS[self]

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

    @property
    def css_class(self) -> str:
        """The class a job widget carries in this status (``-rollback-failed``)."""
        return f"-{self.name.lower().replace('_', '-')}"


STATUS_LABELS: dict[JobStatus, str] = {
    JobStatus.RUNNING: "running",
    JobStatus.CANCELLING: "cancelling: rolling back",
    JobStatus.STOPPING: "cancelling",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.DONE: "done",
    JobStatus.FAILED: "failed",
    JobStatus.ROLLING_BACK: "rolling back",
    JobStatus.ROLLED_BACK: "rolled back",
    JobStatus.KEPT: "kept for resume: r resumes, x rolls back",
    JobStatus.ROLLBACK_FAILED: "rollback failed",
    JobStatus.REVERTING: "reverting to before the sync",
}
