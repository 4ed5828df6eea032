"""One clone job in the jobs panel: a progress line per file and the transaction log, live.

The job runs in a worker of this widget (``run_plan`` with ``auto_rollback=False``). The
engine's events arrive on the event loop and are posted to the widget as :class:`JobView.Event`
messages; progress is repainted from the latest state every :data:`REPAINT_SECONDS`.

A failed job whose staged files were kept (status ``KEPT``) is resumed with ``r``: the engine's
``resume_job`` plans the clone again as a new job that adopts the staged files and moves only the
blocks that are missing or differ; the view shows its progress like a clone's and what was
already there. ``x`` (the app's key) asks again whether to roll back instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import RichLog
from textual.worker import Worker

from kvm_clone_tui.api.errors import CloneFailed
from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.api.results import CloneResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.clone.job_state import JobState
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import LOG_LINES, REPAINT_SECONDS, FileRow
from kvm_clone_tui.tui.common.progress import format_duration
from kvm_clone_tui.tui.hosts.feeds import CloneSource

CANCELLED = "cancelled before anything was staged"


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


class JobView(Vertical, can_focus=True):
    """A job: its files' progress, its log; cancel, roll back, keep or resume what it staged."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "resume", "Resume (kept job)")]

    class Event(Message):
        """An engine event of this job (posted by the job's worker to the view itself)."""

        bubble = False

        def __init__(self, event: JobEvent) -> None:
            super().__init__()
            self.event = event

    class Ended(Message):
        """The worker finished; queued after the job's last events (to the view itself)."""

        bubble = False

        def __init__(self, status: JobStatus, note: str, failure: CloneFailed | None) -> None:
            super().__init__()
            self.status = status
            self.note = note
            self.failure = failure

    class Changed(Message):
        """The job's status changed (bubbles to the app: status line, footer)."""

        def __init__(self, view: JobView) -> None:
            super().__init__()
            self.view = view

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
        self._worker: Worker[None] | None = None
        self._rows: list[FileRow] = []
        self._lines: list[Text] = []  # log lines waiting for the log to know its width

    @property
    def status(self) -> JobStatus:
        """Where the job is."""
        return self.state.status

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
    def log_widget(self) -> RichLog:
        """The job's transaction log."""
        return self.query_one(RichLog)

    def compose(self) -> ComposeResult:
        self._rows = [FileRow(state) for state in self.state.files.values()]
        yield from self._rows
        log = RichLog(max_lines=LOG_LINES, wrap=True, classes="job-log")
        log.can_focus = False  # the job itself takes the focus (x acts on it)
        yield log

    def on_mount(self) -> None:
        self.border_title = Content(self.state.title)
        self._repaint()
        self.set_interval(REPAINT_SECONDS, self._tick)
        self._worker = self._run()

    # -- the job ---------------------------------------------------------------------------------

    @work(group="job", exit_on_error=False)
    async def _run(self) -> None:
        plan = self.state.plan
        try:
            result = await self.runner.run_plan(plan, on_event=self._on_event, auto_rollback=False)
        except asyncio.CancelledError:
            # The engine rolled back (and says so in an event) before re-raising.
            self._end(JobStatus.ROLLED_BACK, CANCELLED)
            raise
        except CloneFailed as exc:
            self._end(JobStatus.FAILED, "", exc)
        except Exception as exc:  # refused since planning, unreachable, or a failed rollback
            if self.status is JobStatus.CANCELLING:
                self._end(JobStatus.ROLLBACK_FAILED, f"{exc} (`kvm-clone recover` retries)")
            else:
                self._end(JobStatus.FAILED, f"{exc} (nothing was staged)")
        else:
            self._end(JobStatus.DONE, done_note(result))

    def _on_event(self, event: JobEvent) -> None:
        # Called by the engine on the event loop: hand it over as a message, in order.
        self.post_message(self.Event(event))

    def _end(self, status: JobStatus, note: str, failure: CloneFailed | None = None) -> None:
        self.post_message(self.Ended(status, note, failure))

    def cancel(self) -> bool:
        """Cancel a running job (the engine rolls back); False when it is not running."""
        if self.status is not JobStatus.RUNNING or self._worker is None:
            return False
        self._set_status(JobStatus.CANCELLING)
        self._log("info", "cancel requested: stopping the copy and rolling back")
        self._worker.cancel()
        return True

    @work(group="rollback", exit_on_error=False)
    async def rollback(self) -> None:
        """Roll back what a failed job staged (asked for in the rollback prompt)."""
        if not self.can_roll_back:
            return
        self._set_status(JobStatus.ROLLING_BACK)
        try:
            await self.runner.rollback_job(self.job_id, on_event=self._on_event)
        except Exception as exc:
            self._end(JobStatus.ROLLBACK_FAILED, f"{exc} (`kvm-clone recover` retries)")
        else:
            self._end(JobStatus.ROLLED_BACK, "nothing of this job is left on the destination")

    def keep(self) -> None:
        """Leave a failed job's staged files for a resume (or a later rollback)."""
        if self.status is JobStatus.FAILED:
            self._set_status(JobStatus.KEPT)
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
        """Resume the kept job in a worker; False when there is nothing to resume."""
        if not self.can_resume or self.failure is None:
            return False
        kept = self.failure
        self.failure = None
        self.state.error = None
        for state in self.state.files.values():
            state.reset()
        self._set_status(JobStatus.RUNNING)
        self._log("resume", f"resuming job {kept.job_id} from its staged files")
        self._worker = self._resume(kept)
        return True

    @work(group="resume", exit_on_error=False)
    async def _resume(self, kept: CloneFailed) -> None:
        """``resume_job``: a new job adopts the staged files; only what is missing moves."""
        try:
            result = await self.runner.resume_job(kept.job_id, self._on_event, auto_rollback=False)
        except asyncio.CancelledError:
            self._end(JobStatus.ROLLED_BACK, CANCELLED)
            raise
        except CloneFailed as exc:
            self._end(JobStatus.FAILED, "", exc)
        except Exception as exc:  # unknown job, unreachable host, a failed rollback
            if self.status is JobStatus.CANCELLING:
                self._end(JobStatus.ROLLBACK_FAILED, f"{exc} (`kvm-clone recover` retries)")
            else:  # the staged files are as they were: decide again
                self._end(JobStatus.FAILED, f"resume failed: {exc}", kept)
        else:
            self._end(JobStatus.DONE, done_note(result))

    # -- what it shows ---------------------------------------------------------------------------

    @on(Event)
    def _event(self, message: Event) -> None:
        line = self.state.apply(message.event)
        if line is not None:
            self._lines.append(line)
            self._flush_log()

    @on(Ended)
    def _ended(self, message: Ended) -> None:
        status, note = message.status, message.note
        if note == CANCELLED and "rollback" in self.state.steps:
            note = ""  # the engine's own log says it rolled back
        if message.failure is not None:
            self.failure = message.failure
            self.state.error = note or str(message.failure.cause)
            self.state.staged = tuple(message.failure.staged)
        elif status in (JobStatus.FAILED, JobStatus.ROLLBACK_FAILED):
            self.state.error = note
        if note and status is JobStatus.DONE:
            self._log("info", note, self.state.last_time)  # at the engine's last word
        elif note:
            step = "rollback" if status is JobStatus.ROLLED_BACK else "error"
            self._log(step, f"{status.label}: {note}")
        self._set_status(status)
        self._repaint()
        if message.failure is not None:
            self.post_message(self.Failed(self, message.failure))

    def _log(self, step: str, message: str, at: float | None = None) -> None:
        self._lines.append(self.state.note(step, message, time.time() if at is None else at))
        self._flush_log()

    def _flush_log(self) -> None:
        """Write waiting lines, wrapped to the log's width (once it is laid out)."""
        log = self.log_widget
        width = log.scrollable_content_region.width
        if width <= 0:
            return  # not laid out yet: the next tick writes them
        lines, self._lines = self._lines, []
        for line in lines:
            log.write(line, width=width)

    def _set_status(self, status: JobStatus) -> None:
        self.state.status = status
        for each in JobStatus:
            self.set_class(each is status, f"-{each.name.lower().replace('_', '-')}")
        self.state.dirty = True
        self._repaint()
        self.post_message(self.Changed(self))

    def _tick(self) -> None:
        if self._lines:
            self._flush_log()
        if self.state.dirty:
            self._repaint()

    def _repaint(self) -> None:
        self.state.dirty = False
        for row in self._rows:
            row.repaint()
        status = Text(self.status.label, style=self.status.style)
        self.border_subtitle = Content.from_rich_text(
            Text.assemble(self.state.summary(), " · ", status)
        )
