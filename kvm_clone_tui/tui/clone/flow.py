"""From a pane's selection to running jobs, and what follows: the app's clone logic.

``c`` (or a drop on another pane) -> :class:`DestinationScreen` (skipped for a drop) ->
:class:`CloneDialog` (plans, options) -> one :class:`JobView` per VM in the jobs panel. A job
that fails with staged files opens :class:`RollbackScreen`; ``x`` (the app picks the job)
cancels a running job after a :class:`ConfirmScreen`, or brings the rollback prompt back for a
failed one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.content import Content
from textual.errors import NoWidget
from textual.geometry import Offset

from kvm_clone_tui.api.errors import CloneFailed
from kvm_clone_tui.api.models import VM
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import ClonePlan
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.job_view import JobView
from kvm_clone_tui.tui.clone.rollback import Choice, RollbackScreen
from kvm_clone_tui.tui.clone.setup import CloneRequest
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen, vm_names
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.drag_source import DragSource
from kvm_clone_tui.tui.hosts.feeds import CloneSource
from kvm_clone_tui.tui.hosts.pane import HostPane, pane_note

if TYPE_CHECKING:
    from kvm_clone_tui.tui.app import KVMCloneApp

DROP_TARGET = "-drop-target"


class CloneFlow:
    """The clone actions of ``app``: what to clone, where, with which options; the jobs."""

    def __init__(self, app: KVMCloneApp) -> None:
        self.app = app

    @property
    def source(self) -> CloneSource | None:
        """The app's source when it can clone."""
        source = self.app.source
        return source if isinstance(source, CloneSource) else None

    # -- starting a clone ------------------------------------------------------------------------

    def clone_from(self, pane: HostPane) -> None:
        """``c``: pick a destination for the pane's marked VMs (or its current VM)."""
        vms = pane.clone_selection()
        if not vms:
            self.app.notify(f"no VM to clone on {pane.host}", severity="warning")
            return
        hosts = [(p.host, pane_note(p)) for p in self.app.panes]

        def picked(dest: str | None) -> None:
            if dest:
                self.open_dialog(CloneRequest(pane.host, dest, tuple(vms)))

        self.app.push_screen(DestinationScreen(pane.host, vms, hosts), picked)

    def open_dialog(self, request: CloneRequest) -> None:
        """The clone dialog for ``request``; its plans start as jobs when confirmed."""
        source = self.source
        if source is None:
            self.app.notify("this source cannot clone", severity="error")
            return
        defaults = CloneOptions.from_config(source.config)
        pool = defaults.pool or source.config.pool_for(request.dest)

        async def planner(vm: str, options: CloneOptions) -> ClonePlan:
            return await source.plan_clone(request.source, request.dest, vm, options)

        async def confirmed(plans: list[ClonePlan] | None) -> None:
            if plans:
                await self.start(plans)

        self.app.push_screen(CloneDialog(request, defaults, pool, planner), confirmed)

    async def start(self, plans: Sequence[ClonePlan]) -> list[JobView]:
        """Run ``plans`` as jobs (the jobs panel opens)."""
        source = self.source
        assert source is not None
        return [await self.app.jobs.start(plan, source) for plan in plans]

    # -- cancelling, failures --------------------------------------------------------------------

    def cancel_or_decide(self, view: JobView) -> None:
        """``x`` on a clone job: confirm and cancel a running one; a failed one gets the
        rollback prompt."""
        if view.status is JobStatus.RUNNING:
            self._confirm_cancel(view)
        elif view.can_roll_back:
            self.ask_rollback(view)
        else:
            self.app.notify(f"{view.state.title}: {view.status.label}, nothing to cancel")

    def _confirm_cancel(self, view: JobView) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                view.cancel()

        question = (
            f"Cancel the clone {view.state.title}?\n\n"
            f"What was copied so far is removed from {view.state.plan.dest_host} (rolled back)."
        )
        self.app.push_screen(ConfirmScreen(question, yes="Cancel clone", no="Keep going"), answered)

    def ask_rollback(self, view: JobView) -> None:
        """What to do with what a failed job left: roll back, keep, or look at the log."""
        state = view.state

        def chosen(choice: Choice | None) -> None:
            if choice == "rollback":
                view.rollback()
            elif choice == "log":
                view.keep()
                self.app.show_jobs()
                view.focus()
                view.scroll_visible(animate=False)
            else:
                view.keep()

        screen = RollbackScreen(
            f"Cloning {state.title} failed.",
            state.error or "unknown error",
            state.plan.dest_host,
            state.staged,
        )
        self.app.push_screen(screen, chosen)

    def failed(self, view: JobView, failure: CloneFailed) -> None:
        """A job failed and kept its staged files: ask what to do."""
        self.ask_rollback(view)

    # -- drag and drop ---------------------------------------------------------------------------

    def pane_at(self, offset: Offset) -> HostPane | None:
        """The host pane under the screen position ``offset``."""
        try:
            widget, _ = self.app.main_screen.get_widget_at(offset.x, offset.y)
        except NoWidget:
            return None
        return next((n for n in widget.ancestors_with_self if isinstance(n, HostPane)), None)

    def _drag_vms(
        self, message: DragSource.Dragging | DragSource.Dropped
    ) -> tuple[HostPane | None, list[VM]]:
        source = next(
            (n for n in message.source.ancestors_with_self if isinstance(n, HostPane)), None
        )
        if source is None:
            return None, []
        vms = [source.table.vms[n] for n in message.items if n in source.table.vms]
        return source, vms

    def dragging(self, message: DragSource.Dragging) -> None:
        """Highlight the pane under the pointer and say what a release would do."""
        source, vms = self._drag_vms(message)
        target = self.pane_at(message.offset)
        for pane in self.app.panes:
            pane.set_class(pane is target and target is not source, DROP_TARGET)
        what = vm_names(vms)
        if target is not None and source is not None and target is not source:
            hint = Content.assemble("release to clone ", (what, "bold"), f" to {target.host}")
        else:
            hint = Content.assemble("drop on another host's pane to clone ", (what, "bold"))
        self.app.status_bar.hint(hint)

    def dropped(self, message: DragSource.Dropped) -> None:
        """Open the clone dialog when the VMs were released over another host's pane."""
        for pane in self.app.panes:
            pane.remove_class(DROP_TARGET)
        self.app.status_bar.hint(None)
        source, vms = self._drag_vms(message)
        target = self.pane_at(message.offset)
        if source is None or target is None or target is source or not vms:
            return
        self.open_dialog(CloneRequest(source.host, target.host, tuple(vms)))
