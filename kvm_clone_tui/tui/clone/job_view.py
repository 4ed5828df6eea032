"""One clone job in the jobs panel: a progress line per file and the transaction log, live.

The job runs through the app's job manager (``run_plan`` with ``auto_rollback=False``), not in
a worker of this widget. The engine's events arrive on the event loop and are posted to the
widget as :class:`JobWidget.Event` messages; progress is repainted from the latest state every
``REPAINT_SECONDS``.

A failed job whose staged files were kept (status ``KEPT``) is resumed with ``r``: the engine's
``resume_job`` plans the clone again as a new job that adopts the staged files and moves only the
blocks that are missing or differ; the view shows its progress like a clone's and what was
already there. ``x`` (the app's key) asks again whether to roll back instead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message

from kvm_clone_tui.api.errors import CloneFailed
from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.api.results import CloneResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.clone.job_state import JobState
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import FileRow, JobWidget
from kvm_clone_tui.tui.common.progress import format_duration
from kvm_clone_tui.tui.hosts.feeds import CloneSource

CANCELLED = "cancelled before anything was staged"
RECOVER = "(`kvm-clone recover` retries)"


def done_note(result: CloneResult) -> str:
    """``copied 16.3 MiB in 0:07 via relay`` (the route taken, after any fallback); a resumed
    job also says what was already there."""
    if result.already_done:
        return "already done: nothing copied"
    note = (
        f"copied {format_bytes(result.bytes_copied)} in {format_duration(result.seconds)} "
        f"via {result.route}"
    )
    if result.resumed_from:
        note = (
            f"resumed job {result.resumed_from}: {format_bytes(result.bytes_reused)} already "
            f"there (verified), {note}"
        )
    return f"{note} ({result.consistency})" if result.consistency else note


@dataclass(frozen=True)
class CloneEnding:
    """How a clone's work ended: the status, a note for the log, the kept staged files."""

    status: JobStatus
    note: str
    failure: CloneFailed | None = None


class JobView(JobWidget[CloneEnding]):
    """A job: its files' progress, its log; cancel, roll back, keep or resume what it staged."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "resume", "Resume (kept job)")]

    class Failed(Message):
        """The job failed and kept its staged files: the app asks what to do with them."""

        def __init__(self, view: JobView, failure: CloneFailed) -> None:
            super().__init__()
            self.view = view
            self.failure = failure

    def __init__(self, plan: ClonePlan, runner: CloneSource, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="job")
        self.state = JobState(plan)
        self.runner = runner
        self.failure: CloneFailed | None = None
        self._rows: list[FileRow] = []

    @property
    def job_id(self) -> str:
        """The engine job that holds the staged files now (a resume's new job once it ran)."""
        return self.failure.job_id if self.failure is not None else self.state.plan.job_id

    @property
    def can_roll_back(self) -> bool:
        """True when the job left staged files that the operator has not decided about."""
        if self.status is JobStatus.ROLLBACK_FAILED:
            return True
        return self.failure is not None and self.status in (JobStatus.FAILED, JobStatus.KEPT)

    @property
    def actionable(self) -> bool:
        """True when ``x`` can act on the job (cancel it, or decide about what it kept)."""
        return self.status is JobStatus.RUNNING or self.can_roll_back

    def compose(self) -> ComposeResult:
        self._rows = [FileRow(state) for state in self.state.files.values()]
        yield from self._rows
        yield self.compose_log()

    def on_mount(self) -> None:
        self.border_title = Content(self.state.title)
        self.repaint()
        self.run_job(self._run(), "clone")

    # -- the job ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        plan = self.state.plan
        try:
            result = await self.runner.run_plan(plan, on_event=self.report, auto_rollback=False)
        except asyncio.CancelledError:
            # The engine rolled back (and says so in an event) before re-raising.
            self.end(CloneEnding(JobStatus.ROLLED_BACK, CANCELLED))
            raise
        except CloneFailed as exc:
            self.end(CloneEnding(JobStatus.FAILED, "", exc))
        except Exception as exc:  # refused since planning, unreachable, or a failed rollback
            if self.status is JobStatus.CANCELLING:
                self.end(CloneEnding(JobStatus.ROLLBACK_FAILED, f"{exc} {RECOVER}"))
            else:
                self.end(CloneEnding(JobStatus.FAILED, f"{exc} (nothing was staged)"))
        else:
            self.end(CloneEnding(JobStatus.DONE, done_note(result)))

    def cancel(self) -> bool:
        """Cancel a running job (the engine rolls back); False when it is not running."""
        if self.status is not JobStatus.RUNNING or not self.has_job:
            return False
        self.status = JobStatus.CANCELLING
        self._log("info", "cancel requested: stopping the copy and rolling back")
        self.cancel_job()
        return True

    def rollback(self) -> None:
        """Roll back what a failed job staged (asked for in the rollback prompt)."""
        if not self.can_roll_back:
            return
        self.status = JobStatus.ROLLING_BACK
        self.run_job(self._rollback(), "rollback")

    async def _rollback(self) -> None:
        try:
            await self.runner.rollback_job(self.job_id, on_event=self.report)
        except Exception as exc:
            self.end(CloneEnding(JobStatus.ROLLBACK_FAILED, f"{exc} {RECOVER}"))
        else:
            note = "nothing of this job is left on the destination"
            self.end(CloneEnding(JobStatus.ROLLED_BACK, note))

    def keep(self) -> None:
        """Leave a failed job's staged files for a resume (or a later rollback)."""
        if self.status is JobStatus.FAILED:
            self.status = JobStatus.KEPT
            self._log(
                "info",
                f"staged files kept on {self.state.plan.dest_host} for resume: r here resumes "
                "(only missing or differing blocks move), x rolls back; or later "
                "`kvm-clone resume` / `kvm-clone recover`",
            )

    @property
    def can_resume(self) -> bool:
        """True when the job kept its staged files and nothing runs on it."""
        return self.failure is not None and self.status in (JobStatus.FAILED, JobStatus.KEPT)

    def action_resume(self) -> None:
        """``r``: finish a kept job from its staged files."""
        if not self.resume():
            self.app.notify(
                f"{self.state.title}: {self.status.label}; only a failed job that kept its "
                "staged files can be resumed",
                severity="warning",
            )

    def resume(self) -> bool:
        """Resume the kept job; False when there is nothing to resume."""
        if not self.can_resume or self.failure is None:
            return False
        kept = self.failure
        self.failure = None
        self.state.error = None
        for state in self.state.files.values():
            state.reset()
        self.status = JobStatus.RUNNING
        self._log("resume", f"resuming job {kept.job_id} from its staged files")
        self.run_job(self._resume(kept), "resume")
        return True

    async def _resume(self, kept: CloneFailed) -> None:
        """``resume_job``: a new job adopts the staged files; only what is missing moves."""
        try:
            result = await self.runner.resume_job(kept.job_id, self.report, auto_rollback=False)
        except asyncio.CancelledError:
            self.end(CloneEnding(JobStatus.ROLLED_BACK, CANCELLED))
            raise
        except CloneFailed as exc:
            self.end(CloneEnding(JobStatus.FAILED, "", exc))
        except Exception as exc:  # unknown job, unreachable host, a failed rollback
            if self.status is JobStatus.CANCELLING:
                self.end(CloneEnding(JobStatus.ROLLBACK_FAILED, f"{exc} {RECOVER}"))
            else:  # the staged files are as they were: decide again
                self.end(CloneEnding(JobStatus.FAILED, f"resume failed: {exc}", kept))
        else:
            self.end(CloneEnding(JobStatus.DONE, done_note(result)))

    # -- what it shows ---------------------------------------------------------------------------

    def job_event(self, event: JobEvent) -> None:
        """An engine event: progress, and a log line unless it is progress only."""
        line = self.state.apply(event)
        if line is not None:
            self.write_log(line)

    def job_ended(self, outcome: CloneEnding) -> None:
        """The work ended: log why, take the staged files of a failure, ask about them."""
        status, note = outcome.status, outcome.note
        if note == CANCELLED and "rollback" in self.state.steps:
            note = ""  # the engine's own log says it rolled back
        if outcome.failure is not None:
            self.failure = outcome.failure
            self.state.error = note or str(outcome.failure.cause)
            self.state.staged = tuple(outcome.failure.staged)
        elif status in (JobStatus.FAILED, JobStatus.ROLLBACK_FAILED):
            self.state.error = note
        if note and status is JobStatus.DONE:
            self._log("info", note, self.state.last_time)  # at the engine's last word
        elif note:
            step = "rollback" if status is JobStatus.ROLLED_BACK else "error"
            self._log(step, f"{status.label}: {note}")
        self.status = status
        self.repaint()
        if outcome.failure is not None:
            self.post_message(self.Failed(self, outcome.failure))

    def _log(self, step: str, message: str, at: float | None = None) -> None:
        self.write_log(self.state.note(step, message, time.time() if at is None else at))

    def watch_status(self, status: JobStatus) -> None:
        self.state.dirty = True
        super().watch_status(status)

    def needs_repaint(self) -> bool:
        """Only when an event changed something."""
        return self.state.dirty

    def repaint(self) -> None:
        """The files' progress, and the summary and status in the border."""
        self.state.dirty = False
        for row in self._rows:
            row.repaint()
        status = Text(self.status.label, style=self.status.style)
        self.border_subtitle = Content.from_rich_text(
            Text.assemble(self.state.summary(), " · ", status)
        )
