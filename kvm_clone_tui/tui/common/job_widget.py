"""The base of a job in the jobs panel (a clone job, a sync session) and the parts it is drawn
with: a progress line per file (:class:`FileRow`), the log, a ``reactive`` status.

A job's work runs through the app's :class:`JobManager`; the engine's events come back as
:class:`JobWidget.Event` messages and the end as one :class:`JobWidget.Ended` (queued after the
last event), both posted to the widget itself. The log is written once the log knows its width,
the rest is repainted every :data:`REPAINT_SECONDS`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label, ProgressBar, RichLog, Sparkline, Static

from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.tui.common.job_manager import JobManager
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.progress import FileState

REPAINT_SECONDS = 0.25
LOG_LINES = 2000

OutcomeT = TypeVar("OutcomeT")


class FileRow(Horizontal):
    """``vda  ███████░░░░ 45%  12.0 MiB / 45.0 MiB · 2.0 MiB/s · ETA 0:17  ▂▃▅▇``."""

    def __init__(self, state: FileState) -> None:
        super().__init__(classes="file-row")
        self.state = state

    def compose(self) -> ComposeResult:
        yield Label(Content(self.state.label), classes="file-label")
        yield ProgressBar(total=max(1, self.state.total), show_eta=False)
        yield Static(classes="file-stats")
        yield Sparkline([], classes="file-rate")

    def repaint(self) -> None:
        """Show the file's latest state."""
        state = self.state
        self.query_one(ProgressBar).update(total=max(1, state.total), progress=state.done)
        self.query_one(".file-stats", Static).update(Content(state.stats()))
        self.query_one(Sparkline).data = list(state.rates)


class JobWidget(Vertical, Generic[OutcomeT], can_focus=True):
    """A job the jobs panel shows; ``OutcomeT`` is what its work reports when it ends.

    Setting :attr:`status` sets the widget's status class (``-kept``), repaints it and tells
    the app (:class:`JobWidget.Changed`), every time, even to the same status.
    """

    status: reactive[JobStatus] = reactive(
        JobStatus.RUNNING, always_update=True, init=False, repaint=False
    )

    class Event(Message):
        """An engine event of the job (posted by its work to the widget itself)."""

        bubble = False

        def __init__(self, event: JobEvent) -> None:
            super().__init__()
            self.event = event

    class Ended(Message):
        """The work finished; queued after its last events (to the widget itself)."""

        bubble = False

        def __init__(self, outcome: object) -> None:
            super().__init__()
            self.outcome = outcome

    class Changed(Message):
        """The job's status changed (bubbles to the app: status line, footer)."""

        def __init__(self, view: JobWidget[Any]) -> None:
            super().__init__()
            self.view = view

    def __init__(self, *, id: str | None = None, classes: str = "job") -> None:
        super().__init__(id=id, classes=classes)
        self._lines: list[Text] = []  # log lines waiting for the log to know its width

    # -- what a job says -------------------------------------------------------------------------

    @abstractmethod
    def job_event(self, event: JobEvent) -> None:
        """Take an engine event of the running work."""

    @abstractmethod
    def job_ended(self, outcome: OutcomeT) -> None:
        """Take what the work reported when it ended."""

    @abstractmethod
    def repaint(self) -> None:
        """Show the job's latest state."""

    @property
    def actionable(self) -> bool:
        """True when ``x`` can act on the job (a running one: cancel it)."""
        return self.status is JobStatus.RUNNING

    @abstractmethod
    def cancel(self) -> bool:
        """Cancel the running work (after the operator confirmed); False when not running."""

    def needs_repaint(self) -> bool:
        """True when the next tick must repaint."""
        return True

    # -- running ---------------------------------------------------------------------------------

    def run_job(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` through the app's job manager (it outlives this widget)."""
        JobManager.of(self.app).run(self, work, name=name)

    @property
    def has_job(self) -> bool:
        """True once the widget ran work (finished or not)."""
        return JobManager.of(self.app).worker(self) is not None

    def cancel_job(self) -> bool:
        """Cancel the latest work; False when the widget never ran any."""
        return JobManager.of(self.app).cancel(self)

    def report(self, event: JobEvent) -> None:
        """The engine's callback (on the event loop): hand the event over as a message."""
        self.post_message(self.Event(event))

    def end(self, outcome: OutcomeT) -> None:
        """Report the end of the work, after the events posted before."""
        self.post_message(self.Ended(outcome))

    @on(Event)
    def _event(self, message: Event) -> None:
        self.job_event(message.event)

    @on(Ended)
    def _ended(self, message: Ended) -> None:
        self.job_ended(cast(OutcomeT, message.outcome))

    def watch_status(self, status: JobStatus) -> None:
        for each in JobStatus:
            self.set_class(each is status, each.css_class)
        self.repaint()
        self.post_message(self.Changed(self))

    # -- the log ---------------------------------------------------------------------------------

    def compose_log(self) -> RichLog:
        """The job's log (the job itself takes the focus: ``x`` acts on it)."""
        log = RichLog(max_lines=LOG_LINES, wrap=True, classes="job-log")
        log.can_focus = False
        return log

    @property
    def log_widget(self) -> RichLog:
        """The job's log."""
        return self.query_one(RichLog)

    def write_log(self, line: Text) -> None:
        """Add a line to the log."""
        self._lines.append(line)
        self.flush_log()

    def flush_log(self) -> None:
        """Write waiting lines, wrapped to the log's width (once it is laid out)."""
        if not self._lines:
            return
        log = self.log_widget
        width = log.scrollable_content_region.width
        if width <= 0:
            return  # not laid out yet: the next tick writes them
        lines, self._lines = self._lines, []
        for line in lines:
            log.write(line, width=width)

    def on_mount(self) -> None:
        self.set_interval(REPAINT_SECONDS, self._tick)

    def _tick(self) -> None:
        self.flush_log()
        if self.needs_repaint():
            self.repaint()
