"""The jobs panel under the host panes: every clone job and sync session, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Static

from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.tui.clone.job_view import JobView
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import JobWidget
from kvm_clone_tui.tui.hosts.feeds import CloneSource, SyncSource
from kvm_clone_tui.tui.sync.session import SyncPair, SyncSettings
from kvm_clone_tui.tui.sync.view import SyncView

EMPTY = "No jobs yet. Press c on a VM to clone it, or drag it onto another host's pane."


def jobs_summary(views: Sequence[JobWidget[Any]]) -> str:
    """``2 running · 1 done · 1 kept · 1 failed`` (empty without jobs)."""
    counts: dict[str, int] = {}
    for view in views:
        if view.status.active:
            key = "running"
        elif view.status is JobStatus.KEPT:
            key = "kept"
        elif view.status is JobStatus.DONE:
            key = "done"
        elif view.status is JobStatus.ROLLED_BACK:
            key = "rolled back"
        elif view.status is JobStatus.CANCELLED:
            key = "cancelled"
        else:
            key = "failed"
        counts[key] = counts.get(key, 0) + 1
    order = ("running", "done", "rolled back", "cancelled", "kept", "failed")
    return " · ".join(f"{counts[k]} {k}" for k in order if k in counts)


class JobsPanel(Vertical):
    """Hidden until a job starts (or ``J``); one :class:`JobView` per job."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._job_ids = 0

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="job-list") as job_list:
            job_list.can_focus = False  # tab goes to the jobs themselves
            yield Static(Content(EMPTY), id="no-jobs")

    def on_mount(self) -> None:
        self.border_title = "Jobs"
        self.border_subtitle = "J hides · tab reaches a job · x cancels it · r resumes a kept one"

    @property
    def views(self) -> list[JobView]:
        """Every job, newest first."""
        return list(self.query(JobView))

    @property
    def sync_views(self) -> list[SyncView]:
        """Every sync session, newest first."""
        return list(self.query(SyncView))

    def sync_view(self, pair: SyncPair) -> SyncView | None:
        """The session of ``pair``, if it was synced before."""
        return next((v for v in self.sync_views if v.pair == pair), None)

    def active(self) -> list[JobWidget[Any]]:
        """The jobs a worker still works on (copying, syncing, cancelling, rolling back)."""
        return [v for v in self._all() if v.status.active]

    def _all(self) -> list[JobWidget[Any]]:
        return list(self.query(JobWidget))  # type: ignore[type-abstract]

    async def start(self, plan: ClonePlan, runner: CloneSource) -> JobView:
        """Add a job for ``plan`` and start it."""
        self._job_ids += 1
        view = JobView(plan, runner, id=f"job-{self._job_ids}")
        await self._add(view)
        return view

    async def add_sync(
        self, pair: SyncPair, runner: SyncSource, settings: SyncSettings | None = None
    ) -> SyncView:
        """Add a sync session for ``pair`` (its runs start with :meth:`SyncView.start`)."""
        self._job_ids += 1
        view = SyncView(pair, runner, settings, id=f"job-{self._job_ids}")
        await self._add(view)
        return view

    async def _add(self, view: JobWidget[Any]) -> None:
        await self.query("#no-jobs").remove()
        job_list = self.query_one("#job-list", VerticalScroll)
        if job_list.children:
            await job_list.mount(view, before=0)  # the newest on top, where it is seen
        else:
            await job_list.mount(view)
        job_list.scroll_home(animate=False)
        self.display = True
        self._show_counts()

    @on(JobWidget.Changed)
    def _job_changed(self) -> None:
        self._show_counts()  # the message goes on to the app (status line)

    def _show_counts(self) -> None:
        summary = self.summary()
        self.border_title = f"Jobs · {summary}" if summary else "Jobs"

    def summary(self) -> str:
        """The jobs in a few words, for the status line."""
        return jobs_summary(self._all())
