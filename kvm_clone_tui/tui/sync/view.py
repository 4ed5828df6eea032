"""One sync session in the jobs panel: a VM and its clone, synced again and again.

Each run (``s`` the first time, ``r`` here or ``R`` anywhere afterwards) runs
``sync_vm`` with the session's :class:`SyncSettings` (mode, undo checkpoint) through the app's
job manager; its events arrive as :class:`JobWidget.Event` messages and are drawn with the clone
jobs' parts (a progress line per file, the log). The runs table lists every finished run: time, mode
and why, changed bytes, bytes sent, seconds, consistency (running source), and whether it can be
reverted.

``u`` asks the app (:class:`SyncView.RevertRequested`) to revert the clone to before the last
sync, when that sync kept a checkpoint; after the operator confirms, :meth:`SyncView.revert` runs
``revert_sync`` through the job manager and the log and the runs table say what it restored, or
why the engine refused.

``x`` (the app's key) cancels a running sync. The engine leaves the clone marked
``sync-state="in-progress"`` once it has started writing (unless a checkpointed sync puts it
back): after a run that did not complete, the view reads the clone's own metadata and, when it
says in-progress, shows that the clone is mid-sync and that ``r`` resumes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Static

from kvm_clone_tui.api.events import JobEvent
from kvm_clone_tui.api.ports import CloneStateSource
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import FileRow, JobWidget
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


@dataclass(frozen=True)
class RunEnding:
    """How a run ended: the status, its numbers (None: it did not complete), the log lines
    saying why not, and whether the engine refused it (nothing was changed)."""

    status: JobStatus
    run: SyncRun | None
    notes: list[Note]
    refused: bool = False


class SyncView(JobWidget[RunEnding]):
    """A sync session: the runs so far, the current run's files and the log."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "sync_again", "Sync again"),
        Binding("u", "revert", "Revert last sync"),
    ]

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
        self.set_reactive(SyncView.status, JobStatus.DONE)  # no run yet
        self.pair = pair
        self.runner = runner
        self.settings = settings or SyncSettings()
        #: A sync attempt after the last finished run changed the clone (failed or cancelled
        #: after it began): the engine discarded that run's undo logs when it began.
        self.undo_lost = False
        self.runs: list[SyncRun] = []
        self.files: dict[str, FileState] = {}
        self._rows: dict[str, FileRow] = {}
        self._started: float | None = None  # of the current run's first event
        #: The clone's metadata says ``sync-state=in-progress``: a run was interrupted after it
        #: had started writing, and the next run resumes it. None: not known (being read after
        #: an interrupted run, or it could not be read).
        self.mid_sync: bool | None = False
        self._state_note = ""  # the last sync state logged

    def compose(self) -> ComposeResult:
        yield Static(classes="sync-state")
        yield Static(classes="sync-runs")
        yield Vertical(classes="sync-files")
        yield self.compose_log()

    def on_mount(self) -> None:
        self.border_title = Content(self.pair.title)
        self.repaint()

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Run the sync (again); False while a run is still going."""
        if self.status.active:
            return False
        self.files.clear()
        self._rows.clear()
        self.query_one(".sync-files", Vertical).remove_children()
        self._started = None
        self.status = JobStatus.RUNNING
        if self.mid_sync is not False:
            self._note(
                "resume",
                f"resuming the interrupted sync of {self.pair.target}: every block is compared "
                "again",
            )
        self.run_job(self._run(), "sync")
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

    def revert(self) -> None:
        """Put the clone back as it was before the last sync (``revert_sync``)."""
        why_not = self.why_not_revertible()
        if why_not is not None:
            self._note("error", f"cannot revert: {why_not}")
            self.repaint()
            return
        pair, number = self.pair, len(self.runs)
        self.status = JobStatus.REVERTING
        self._note("rollback", f"reverting {pair.target} on {pair.dest} to before sync {number}")
        self.run_job(self._revert(number), "revert")

    async def _revert(self, number: int) -> None:
        pair = self.pair
        try:
            result = await self.runner.revert_sync(pair.dest, pair.target)
        except Exception as exc:
            refused = revert_refusal(exc)
            if refused is not None:
                self._note("error", f"revert refused: {refused}")
                self.app.notify(f"revert refused: {refused}", severity="error", timeout=10)
                self.status = JobStatus.DONE  # nothing was changed
            else:
                self._note("error", f"revert failed: {exc} (u tries again)")
                self.status = JobStatus.FAILED
            return
        self.runs[-1] = dataclasses.replace(self.runs[-1], reverted=True)
        self._note(
            "done",
            f"reverted: {pair.target} is back to before sync {number} (job {result.sync_job}), "
            f"{format_bytes(result.restored_bytes)} restored in {result.seconds:.1f} s; the "
            "next sync compares block hashes",
        )
        self.status = JobStatus.DONE

    def cancel(self) -> bool:
        """Stop a running sync (the clone stays marked in-progress until the next run)."""
        if self.status is not JobStatus.RUNNING or not self.has_job:
            return False
        self.status = JobStatus.STOPPING
        self._note("info", "cancel requested: stopping the sync")
        self.cancel_job()
        return True

    async def _run(self) -> None:
        pair, runner = self.pair, self.runner
        started = time.time()
        settings = self.settings
        try:
            options = runner.sync_options(
                target_name=pair.target, mode=settings.mode, checkpoint=settings.checkpoint
            )
            result = await runner.sync_vm(
                pair.source, pair.dest, pair.vm, options, on_event=self.report, check=True
            )
        except asyncio.CancelledError:
            self.end(RunEnding(JobStatus.CANCELLED, None, []))
            raise
        except Exception as exc:
            conflicts = refusal(exc)
            if conflicts is not None:
                notes = [("error", f"refused: {c}") for c in conflicts]
            else:
                notes = [("error", f"failed: {exc}")]
            self.end(RunEnding(JobStatus.FAILED, None, notes, refused=conflicts is not None))
        else:
            run = SyncRun.from_result(started, result)
            self.end(RunEnding(JobStatus.DONE, run, []))

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
        self.repaint()

    def job_event(self, event: JobEvent) -> None:
        """An engine event of the running sync: its files' progress, a log line."""
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
            self.write_log(log_line(event, self._started))

    def job_ended(self, outcome: RunEnding) -> None:
        """A run ended: its numbers in the runs table, or why not in the log."""
        if outcome.run is not None:
            self.runs.append(outcome.run)
            self._note("done", outcome.run.note())
            self.mid_sync = False
            self.undo_lost = False
        elif not outcome.refused:
            self.undo_lost = True
        for step, text in outcome.notes:
            self._note(step, text)
        if outcome.status is JobStatus.CANCELLED:
            self._note("warning", "cancelled")
        interrupted = outcome.run is None and not outcome.refused
        if interrupted:
            self.mid_sync, self._state_note = None, ""  # read below
        self.status = outcome.status
        if interrupted:
            self._read_sync_state()

    def _note(self, step: str, text: str) -> None:
        at = time.time()
        started = self._started if self._started is not None else at
        self.write_log(log_line(JobEvent("", step, text, time=at), started))

    def repaint(self) -> None:
        """The files, the mid-sync warning, the runs table, the border's summary."""
        for row in self._rows.values():
            if row.is_mounted:
                row.repaint()
        state = self.query_one(".sync-state", Static)
        state.display = self.mid_sync is not False and not self.status.active
        if state.display:
            state.update(self.mid_sync_text())
        runs = self.query_one(".sync-runs", Static)
        runs.update(runs_table(self.runs) if self.runs else Content("no finished run yet"))
        self.flush_log()
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
