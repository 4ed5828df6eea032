"""One sync session in the jobs panel: a VM and its clone, synced again and again.

Each run (``s`` the first time, ``r`` here or ``R`` anywhere afterwards) runs
``sync_vm`` with the session's :class:`SyncSettings` (mode, undo checkpoint) in a worker of this
widget; its events arrive as :class:`SyncView.Event` messages and are drawn with the clone jobs'
parts (a progress line per file, the log). The runs table lists every finished run: time, mode
and why, changed bytes, bytes sent, seconds, consistency (running source), and whether it can be
reverted.

``u`` asks the app (:class:`SyncView.RevertRequested`) to revert the clone to before the last
sync, when that sync kept a checkpoint; after the operator confirms, :meth:`SyncView.revert` runs
``revert_sync`` in a worker and the log and the runs table say what it restored, or why the
engine refused.

``x`` (the app's key) cancels a running sync. The engine leaves the clone marked
``sync-state="in-progress"`` once it has started writing (unless a checkpointed sync puts it
back): after a run that did not complete, the view reads the clone's own metadata and, when it
says in-progress, shows that the clone is mid-sync and that ``r`` resumes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import RichLog, Static
from textual.worker import Worker

from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.ports import CloneStateSource
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import LOG_LINES, REPAINT_SECONDS, FileRow
from kvm_clone_tui.tui.common.progress import FileState, log_line
from kvm_clone_tui.tui.hosts.feeds import SyncSource
from kvm_clone_tui.tui.sync.session import (
    SyncPair,
    SyncRun,
    SyncSettings,
    refusal,
    revert_refusal,
    runs_table,
)

Note = tuple[str, str]  # (log step, message)


class SyncView(Vertical, can_focus=True):
    """A sync session: the runs so far, the current run's files and the log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "sync_again", "Sync again"),
        Binding("u", "revert", "Revert last sync"),
    ]

    class Event(Message):
        """An engine event of the running sync (to the view itself)."""

        bubble = False

        def __init__(self, event: JobEvent) -> None:
            super().__init__()
            self.event = event

    class Ended(Message):
        """The run finished: its numbers, or the log lines saying why not."""

        bubble = False

        def __init__(
            self,
            status: JobStatus,
            run: SyncRun | None,
            notes: list[Note],
            *,
            refused: bool = False,
        ) -> None:
            super().__init__()
            self.status = status
            self.run = run
            self.notes = notes
            self.refused = refused  # nothing was changed

    class Changed(Message):
        """The session's status changed (bubbles to the app: status line, footer)."""

        def __init__(self, view: SyncView) -> None:
            super().__init__()
            self.view = view

    class RevertRequested(Message):
        """``u``: the operator asks to revert the clone (the app confirms first)."""

        def __init__(self, view: SyncView) -> None:
            super().__init__()
            self.view = view

    def __init__(
        self,
        pair: SyncPair,
        runner: SyncSource,
        settings: SyncSettings | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes="job sync")
        self.pair = pair
        self.runner = runner
        self.settings = settings or SyncSettings()
        #: A sync attempt after the last finished run changed the clone (failed or cancelled
        #: after it began): the engine discarded that run's undo logs when it began.
        self.undo_lost = False
        self.status = JobStatus.DONE
        self.runs: list[SyncRun] = []
        self.files: dict[str, FileState] = {}
        self._rows: dict[str, FileRow] = {}
        self._started: float | None = None  # of the current run's first event
        self._lines: list[Text] = []
        self._worker: Worker[None] | None = None
        #: The clone's metadata says ``sync-state=in-progress``: a run was interrupted after it
        #: had started writing, and the next run resumes it. None: not known (being read after
        #: an interrupted run, or it could not be read).
        self.mid_sync: bool | None = False
        self._state_note = ""  # the last sync state logged

    @property
    def log_widget(self) -> RichLog:
        """The session's log (every run)."""
        return self.query_one(RichLog)

    def compose(self) -> ComposeResult:
        yield Static(classes="sync-state")
        yield Static(classes="sync-runs")
        yield Vertical(classes="sync-files")
        log = RichLog(max_lines=LOG_LINES, wrap=True, classes="job-log")
        log.can_focus = False
        yield log

    def on_mount(self) -> None:
        self.border_title = Content(self.pair.title)
        self.set_interval(REPAINT_SECONDS, self._tick)
        self._repaint()

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Run the sync (again); False while a run is still going."""
        if self.status.active:
            return False
        self.files.clear()
        self._rows.clear()
        self.query_one(".sync-files", Vertical).remove_children()
        self._started = None
        self._set_status(JobStatus.RUNNING)
        if self.mid_sync is not False:
            self._note(
                "resume",
                f"resuming the interrupted sync of {self.pair.target}: every block is compared "
                "again",
            )
        self._worker = self._run()
        return True

    def action_sync_again(self) -> None:
        """``r``: sync this pair again (resumes a sync that was interrupted)."""
        if not self.start():
            self.app.notify("this sync is still running", severity="warning")

    def action_revert(self) -> None:
        """``u``: revert the clone to before the last sync (the app asks first)."""
        self.post_message(self.RevertRequested(self))

    def why_not_revertible(self) -> str | None:
        """Why ``u`` cannot revert now (None: it can)."""
        if self.status.active:
            return "wait until the running sync ends"
        if not self.runs:
            return (
                "no sync of this session to revert (`kvm-clone revert "
                f"{self.pair.dest} {self.pair.target}` reverts one made elsewhere)"
            )
        last = self.runs[-1]
        if last.reverted:
            return f"already reverted to before sync {len(self.runs)}"
        if not last.revertible:
            return (
                "the last sync kept no checkpoint: only syncs made with “keep a checkpoint "
                "(undo)” (s on the VM) can be reverted"
            )
        if self.undo_lost:
            return (
                "a later sync attempt discarded the last sync's checkpoint (only the last sync "
                "can be reverted)"
            )
        return None

    @work(group="revert", exclusive=True, exit_on_error=False)
    async def revert(self) -> None:
        """Put the clone back as it was before the last sync (``revert_sync``), in a worker."""
        why_not = self.why_not_revertible()
        if why_not is not None:
            self._note("error", f"cannot revert: {why_not}")
            self._repaint()
            return
        pair, number = self.pair, len(self.runs)
        self._set_status(JobStatus.REVERTING)
        self._note("rollback", f"reverting {pair.target} on {pair.dest} to before sync {number}")
        try:
            result = await self.runner.revert_sync(pair.dest, pair.target)
        except Exception as exc:
            refused = revert_refusal(exc)
            if refused is not None:
                self._note("error", f"revert refused: {refused}")
                self.app.notify(f"revert refused: {refused}", severity="error", timeout=10)
                self._set_status(JobStatus.DONE)  # nothing was changed
            else:
                self._note("error", f"revert failed: {exc} (u tries again)")
                self._set_status(JobStatus.FAILED)
            return
        self.runs[-1] = dataclasses.replace(self.runs[-1], reverted=True)
        self._note(
            "done",
            f"reverted: {pair.target} is back to before sync {number} (job {result.sync_job}), "
            f"{format_bytes(result.restored_bytes)} restored in {result.seconds:.1f} s; the "
            "next sync compares block hashes",
        )
        self._set_status(JobStatus.DONE)

    def cancel(self) -> bool:
        """Stop a running sync (the clone stays marked in-progress until the next run)."""
        if self.status is not JobStatus.RUNNING or self._worker is None:
            return False
        self._set_status(JobStatus.STOPPING)
        self._note("info", "cancel requested: stopping the sync")
        self._worker.cancel()
        return True

    @work(group="sync", exit_on_error=False)
    async def _run(self) -> None:
        pair, runner = self.pair, self.runner
        started = time.time()
        settings = self.settings
        try:
            options = runner.sync_options(
                target_name=pair.target, mode=settings.mode, checkpoint=settings.checkpoint
            )
            result = await runner.sync_vm(
                pair.source, pair.dest, pair.vm, options, on_event=self._on_event
            )
        except asyncio.CancelledError:
            self.post_message(self.Ended(JobStatus.CANCELLED, None, []))
            raise
        except Exception as exc:
            conflicts = refusal(exc)
            if conflicts is not None:
                notes = [("error", f"refused: {c}") for c in conflicts]
            else:
                notes = [("error", f"failed: {exc}")]
            ended = self.Ended(JobStatus.FAILED, None, notes, refused=conflicts is not None)
            self.post_message(ended)
        else:
            run = SyncRun.from_result(started, result)
            self.post_message(self.Ended(JobStatus.DONE, run, []))

    def _on_event(self, event: JobEvent) -> None:
        self.post_message(self.Event(event))

    # -- what it shows ---------------------------------------------------------------------------

    @work(group="sync-state", exclusive=True, exit_on_error=False)
    async def _read_sync_state(self) -> None:
        """Read the clone's ``sync-state`` from its own metadata (after an interrupted run)."""
        runner, pair = self.runner, self.pair
        where = f"{pair.target} on {pair.dest}"
        if not isinstance(runner, CloneStateSource):
            self._state_known(None, f"{where} may be mid-sync: this source cannot read it")
            return
        try:
            state = await runner.clone_sync_state(pair.dest, pair.target)
        except Exception as exc:  # shown, never fatal
            self._state_known(None, f"{where} may be mid-sync: its state could not be read: {exc}")
            return
        if state == "in-progress":
            self._state_known(True, f"{where} is marked sync-state=in-progress: r resumes")
        else:
            self._state_known(False, f"{where} is not mid-sync (sync-state={state or 'none'})")

    def _state_known(self, mid_sync: bool | None, note: str) -> None:
        if self.status.active:
            return  # a new run started meanwhile; it decides
        self.mid_sync = mid_sync
        if note != self._state_note:
            self._state_note = note
            self._note("warning" if mid_sync is not False else "info", note)
        self._repaint()

    @on(Event)
    def _event(self, message: Event) -> None:
        event = message.event
        if self._started is None:
            self._started = event.time
        if not self.status.active and self.mid_sync is not False:
            # The engine still reports after an interrupted run (shielded clean-up, a
            # checkpointed sync putting the clone back): read the clone's state again.
            self._read_sync_state()
        for disk in event.disks:
            state = self.files.get(disk.target)
            if state is None:
                state = self.files[disk.target] = FileState(disk.target, disk.total)
                row = self._rows[disk.target] = FileRow(state)
                self.query_one(".sync-files", Vertical).mount(row)
            state.update(disk)
        if event.step != "copy" or event.message:
            self._lines.append(log_line(event, self._started))

    @on(Ended)
    def _ended(self, message: Ended) -> None:
        if message.run is not None:
            self.runs.append(message.run)
            self._note("done", message.run.note())
            self.mid_sync = False
            self.undo_lost = False
        elif not message.refused:
            self.undo_lost = True
        for step, text in message.notes:
            self._note(step, text)
        if message.status is JobStatus.CANCELLED:
            self._note("warning", "cancelled")
        interrupted = message.run is None and not message.refused
        if interrupted:
            self.mid_sync, self._state_note = None, ""  # read below
        self._set_status(message.status)
        if interrupted:
            self._read_sync_state()

    def _note(self, step: str, text: str) -> None:
        at = time.time()
        started = self._started if self._started is not None else at
        self._lines.append(log_line(JobEvent("", step, text, time=at), started))

    def _set_status(self, status: JobStatus) -> None:
        self.status = status
        for each in (
            JobStatus.RUNNING,
            JobStatus.DONE,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.REVERTING,
        ):
            self.set_class(each is status, f"-{each.name.lower()}")
        self._repaint()
        self.post_message(self.Changed(self))

    def _tick(self) -> None:
        self._repaint()

    def _repaint(self) -> None:
        for row in self._rows.values():
            if row.is_mounted:
                row.repaint()
        state = self.query_one(".sync-state", Static)
        state.display = self.mid_sync is not False and not self.status.active
        if state.display:
            state.update(self.mid_sync_text())
        runs = self.query_one(".sync-runs", Static)
        runs.update(runs_table(self.runs) if self.runs else Content("no finished run yet"))
        if self._lines:
            log = self.log_widget
            width = log.scrollable_content_region.width
            if width > 0:
                lines, self._lines = self._lines, []
                for line in lines:
                    log.write(line, width=width)
        count = f"{len(self.runs)} run(s) · {self.settings.describe()}"
        status = Text(self.status.label, style=self.status.style)
        parts: list[str | Text] = [count, " · ", status]
        if self.runs and self.runs[-1].reverted and not self.status.active:
            parts += [" · ", Text("reverted: r syncs again (hash mode)", style="yellow")]
        elif self.why_not_revertible() is None:
            parts += [" · ", Text("u reverts the last sync", style="green")]
        if self.mid_sync and not self.status.active:
            parts += [" · ", Text("mid-sync: r resumes", style="bold yellow")]
        self.border_subtitle = Content.from_rich_text(Text.assemble(*parts))

    def mid_sync_text(self) -> Content:
        """What the operator must know about a clone left mid-sync (or maybe), and what to do."""
        pair = self.pair
        if self.mid_sync:
            what = (
                " is mid-sync (marked sync-state=in-progress): its disks hold part old, part "
                "new blocks, so do not start or use it yet. "
            )
        else:
            what = (
                " may be mid-sync (its sync state is not known yet): do not start or use it "
                "before a sync completes. "
            )
        return Content.assemble(
            ("⚠ ", "bold"),
            (pair.target, "bold"),
            f" on {pair.dest}{what}",
            ("r", "bold"),
            " resumes the sync (every block is compared again; only the differences move).",
        )
