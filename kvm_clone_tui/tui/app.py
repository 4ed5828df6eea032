"""The kvm-clone terminal UI: one pane per host, side by side, their VMs live."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from itertools import count
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.models import VM
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.flow import CloneFlow
from kvm_clone_tui.tui.clone.job_view import JobView
from kvm_clone_tui.tui.clone.rollback import RollbackScreen
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.help import HelpScreen, HelpSections, class_bindings
from kvm_clone_tui.tui.common.job_manager import JobManager
from kvm_clone_tui.tui.common.job_widget import JobWidget
from kvm_clone_tui.tui.hosts.add_host import AddHostScreen
from kvm_clone_tui.tui.hosts.details import VMDetailsScreen, XMLLoader
from kvm_clone_tui.tui.hosts.drag_source import DragSource
from kvm_clone_tui.tui.hosts.empty_state import EmptyState
from kvm_clone_tui.tui.hosts.feeds import DomainXMLSource, HostFeeds, InventorySource
from kvm_clone_tui.tui.hosts.filter_bar import FilterBar
from kvm_clone_tui.tui.hosts.messages import (
    CloneRequested,
    PaneStatusChanged,
    RemoveHostRequested,
    SyncRequested,
    VMDetailsRequested,
)
from kvm_clone_tui.tui.hosts.pane import HostPane
from kvm_clone_tui.tui.hosts.status_bar import StatusBar
from kvm_clone_tui.tui.hosts.vm_table import VMTable
from kvm_clone_tui.tui.jobs_panel import JobsPanel
from kvm_clone_tui.tui.palette import KVMCloneCommands
from kvm_clone_tui.tui.sync.dialog import SyncDialog
from kvm_clone_tui.tui.sync.flow import SyncFlow
from kvm_clone_tui.tui.sync.view import SyncView

DARK_THEME, LIGHT_THEME = "textual-dark", "textual-light"
#: Actions on the panes: not while a dialog (details, add host, a question) is open.
PANE_ACTIONS = frozenset(
    {
        "add_host",
        "remove_host",
        "refresh",
        "filter",
        "clear_filter",
        "next_pane",
        "previous_pane",
        "clone",
        "sync",
        "sync_again",
        "revert_sync",
        "resume_job",
        "toggle_jobs",
        "cancel_job",
    }
)
MOUSE_HELP = (
    "Drag a VM (or a marked one, to take every marked VM) onto another host's pane and "
    "release: the clone dialog opens for them."
)


class KVMCloneApp(App[None]):
    """Hosts side by side; select VMs with the keyboard or the mouse.

    Layout, top to bottom: header, ``#hosts`` (the panes), ``#bottom`` (the filter line and the
    jobs panel), the status line and the footer. Cloning lives in :class:`CloneFlow`, sync
    sessions in :class:`SyncFlow`.
    """

    CSS_PATH = "app.tcss"
    TITLE = "kvm-clone"
    COMMANDS = App.COMMANDS | {KVMCloneCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add_host", "Add host"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("l", "next_pane", "Next pane", show=False),
        Binding("h", "previous_pane", "Previous pane", show=False),
        Binding("J", "toggle_jobs", "Jobs"),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("R", "sync_again", "Sync again"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        hosts: Sequence[str] = (),
        *,
        config: Config | None = None,
        source: InventorySource | None = None,
        sub_title: str | None = None,
    ) -> None:
        """Open ``hosts`` through ``source`` (default: a ``KVMCloneClient`` on ``config``,
        closed when the app ends)."""
        super().__init__()
        self._own_client: KVMCloneClient | None = None
        if source is None:
            source = self._own_client = KVMCloneClient(config)
        self.source: InventorySource = source
        self.feeds = HostFeeds(self.source)
        self.initial_hosts = tuple(dict.fromkeys(hosts))
        self.panes: list[HostPane] = []
        self.filter_text = ""
        self.filter_pattern: re.Pattern[str] | None = None
        self._pane_ids = count(1)
        self._last_pane: HostPane | None = None
        self.job_manager = JobManager(self)  # the jobs' workers: they outlive their views
        self.clones = CloneFlow(self)
        self.syncs = SyncFlow(self)
        if sub_title is not None:
            self.sub_title = sub_title

    # -- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="hosts"):
            self.panes = [self._new_pane(host) for host in self.initial_hosts]
            yield from self.panes
            if not self.panes:
                yield EmptyState()
        with Vertical(id="bottom"):
            yield FilterBar(id="filter")
            yield JobsPanel(id="jobs")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.theme = DARK_THEME
        self._show_status()

    async def on_unmount(self) -> None:
        if self._own_client is not None:
            await self._own_client.close()

    def _new_pane(self, host: str) -> HostPane:
        pane_id = f"pane-{next(self._pane_ids)}"
        return HostPane(host, self.feeds, pattern=self.filter_pattern, id=pane_id)

    @property
    def main_screen(self) -> Screen[object]:
        """The screen holding the panes (below any modal)."""
        return self.screen_stack[0]

    @property
    def jobs(self) -> JobsPanel:
        """The jobs panel (hidden until a job starts, or ``J``)."""
        return self.main_screen.query_one(JobsPanel)

    @property
    def status_bar(self) -> StatusBar:
        """The line above the footer."""
        return self.main_screen.query_one(StatusBar)

    @property
    def current_pane(self) -> HostPane | None:
        """The pane holding the focus, else the last one that did, else the first."""
        focused = self.main_screen.focused
        if focused is not None:
            for node in focused.ancestors_with_self:
                if isinstance(node, HostPane):
                    self._last_pane = node
                    return node
        if self._last_pane in self.panes:
            return self._last_pane
        return self.panes[0] if self.panes else None

    def pane_for(self, host: str) -> HostPane | None:
        """The pane showing ``host``."""
        return next((p for p in self.panes if p.host == host), None)

    def selection(self) -> dict[str, list[VM]]:
        """The marked VMs of every pane, by host (what a clone will work on)."""
        return {p.host: vms for p in self.panes if (vms := p.marked_vms())}

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        for node in event.widget.ancestors_with_self:
            if isinstance(node, HostPane):
                self._last_pane = node

    def _show_status(self) -> None:
        if not self.screen_stack:
            return  # the app is closing: a pane's late message finds no screen
        filter_text = self.filter_text if self.filter_pattern else ""
        self.status_bar.show(self.panes, filter_text, self.jobs.summary())

    def _focus_pane(self, pane: HostPane | None) -> None:
        if pane is not None:
            self._last_pane = pane
            pane.table.focus()

    # -- actions ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide what cannot run now (no pane, no filter, a dialog open) from the footer and
        the palette."""
        dialog = isinstance(self.screen, ModalScreen) and not isinstance(
            self.screen, CommandPalette
        )
        if dialog and action in PANE_ACTIONS:
            return False
        if action in ("remove_host", "refresh", "next_pane", "previous_pane"):
            return bool(self.panes)
        if action == "clear_filter":
            return bool(self.filter_text)
        if action == "clone":
            pane = self.current_pane
            return pane is not None and bool(pane.clone_selection())
        if action == "sync":
            return self.syncs.can_sync(self.current_pane)
        if action == "sync_again":
            return self.syncs.pairs.last is not None
        if action == "revert_sync":
            view = self.syncs.target()
            return view is not None and view.why_not_revertible() is None
        if action == "resume_job":
            return self._kept_job() is not None
        if action == "cancel_job":
            return True if self.target_job() is not None else None  # shown, dimmed
        return True

    def action_add_host(self) -> None:
        """Ask for a host and open it in a new pane."""

        async def added(spec: str | None) -> None:
            if spec:
                await self.add_host(spec)

        self.push_screen(AddHostScreen([p.host for p in self.panes]), added)

    async def add_host(self, host: str) -> HostPane:
        """Open ``host`` in a new pane, to the right of the others, and focus it."""
        area = self.query_one("#hosts", Horizontal)
        await area.query(EmptyState).remove()
        pane = self._new_pane(host)
        self.panes.append(pane)
        await area.mount(pane)
        self._focus_pane(pane)
        self._show_status()
        self.refresh_bindings()
        return pane

    def action_remove_host(self) -> None:
        """Remove the current pane, after confirmation."""
        pane = self.current_pane
        if pane is not None:
            self._confirm_remove(pane)

    @on(RemoveHostRequested)
    def _remove_requested(self, message: RemoveHostRequested) -> None:
        self._confirm_remove(message.pane)

    def _confirm_remove(self, pane: HostPane) -> None:
        async def answered(yes: bool | None) -> None:
            if yes:
                await self.remove_pane(pane)

        question = f"Remove {pane.host} from the screen?\n\nIts VMs are not touched."
        self.push_screen(ConfirmScreen(question, yes="Remove", no="Keep"), answered)

    async def remove_pane(self, pane: HostPane) -> None:
        """Close ``pane`` (its host's events stop reaching the UI)."""
        if pane not in self.panes:
            return
        index = self.panes.index(pane)
        self.panes.remove(pane)
        self.feeds.close(pane.host)
        if self.panes:
            self._focus_pane(self.panes[min(index, len(self.panes) - 1)])
        await pane.remove()
        if not self.panes:
            self.main_screen.set_focus(None)  # keys must not go to the removed table
            await self.query_one("#hosts", Horizontal).mount(EmptyState())
        self._show_status()
        self.refresh_bindings()

    def action_refresh(self) -> None:
        """Re-read the current host, or retry it after a failure."""
        pane = self.current_pane
        if pane is not None:
            pane.action_reload()

    def action_filter(self) -> None:
        """Open the filter line."""
        _ = self.current_pane  # remember where the focus goes back to
        self.query_one(FilterBar).open()

    def action_clear_filter(self) -> None:
        """Show every VM again."""
        self.query_one(FilterBar).action_clear()

    def action_next_pane(self) -> None:
        """Focus the pane to the right (wrapping around)."""
        self._step_pane(1)

    def action_previous_pane(self) -> None:
        """Focus the pane to the left (wrapping around)."""
        self._step_pane(-1)

    def _step_pane(self, step: int) -> None:
        pane = self.current_pane
        if pane is None:
            return
        self._focus_pane(self.panes[(self.panes.index(pane) + step) % len(self.panes)])

    def action_clone(self) -> None:
        """Clone the current pane's marked VMs (or its current VM): pick where, then how."""
        pane = self.current_pane
        if pane is not None:
            self.clones.clone_from(pane)

    def action_sync(self) -> None:
        """Sync the current pane's VM (under the cursor) to its clone: pick where, which."""
        pane = self.current_pane
        if pane is not None:
            self.syncs.sync_from(pane)

    def action_sync_again(self) -> None:
        """Sync the last synced pair again, without asking."""
        self.syncs.again()

    def action_revert_sync(self) -> None:
        """Revert the focused (or last) sync session's clone to before its last sync (asks)."""
        self.syncs.revert()

    def _kept_job(self) -> JobView | None:
        """The job a resume acts on: the focused one, else the only one that can resume."""
        focused = self.main_screen.focused
        if isinstance(focused, JobView):
            return focused if focused.can_resume else None
        kept = [v for v in self.jobs.views if v.can_resume]
        return kept[0] if len(kept) == 1 else None

    def action_resume_job(self) -> None:
        """Resume the focused kept job (or the only one)."""
        view = self._kept_job()
        if view is None:
            self.notify("no kept job to resume: focus one (tab)", severity="warning")
            return
        view.resume()

    def action_toggle_jobs(self) -> None:
        """Show or hide the jobs panel."""
        jobs = self.jobs
        jobs.display = not jobs.display
        if not jobs.display and isinstance(self.main_screen.focused, JobWidget):
            self._focus_pane(self.current_pane)

    def show_jobs(self) -> None:
        """Show the jobs panel."""
        self.jobs.display = True

    def target_job(self) -> JobWidget[Any] | None:
        """The job or sync ``x`` acts on: the focused one, else the only one it can act on."""
        focused = self.main_screen.focused
        if isinstance(focused, JobWidget):
            return focused
        jobs = self.main_screen.query(JobWidget)  # type: ignore[type-abstract]
        actionable = [v for v in jobs if v.actionable]
        return actionable[0] if len(actionable) == 1 else None

    def action_cancel_job(self) -> None:
        """Cancel the focused job (asks first); for a failed job, ask what to do with it."""
        view = self.target_job()
        if view is None:
            self.notify("focus a job first (tab, or a click on it)", severity="warning")
        elif isinstance(view, SyncView):
            self.syncs.cancel(view)
        elif isinstance(view, JobView):
            self.clones.cancel_or_decide(view)

    async def action_quit(self) -> None:
        """Quit; running jobs are cancelled and rolled back first (after confirmation)."""
        active = self.jobs.active()
        if not active:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._quit_after_jobs()

        question = (
            f"{len(active)} job(s) still running.\n\n"
            "Quitting cancels them and rolls back what they copied."
        )
        if any(isinstance(v, SyncView) for v in active):
            question += " A cancelled sync leaves its clone marked mid-sync: the next sync resumes."
        self.push_screen(ConfirmScreen(question, yes="Cancel jobs and quit", no="Stay"), answered)

    @work(group="quit", exclusive=True)
    async def _quit_after_jobs(self) -> None:
        for view in self.jobs.active():
            view.cancel()
        self.status_bar.hint("rolling back the running jobs before quitting…")
        while self.jobs.active():
            await asyncio.sleep(0.1)
        self.exit()

    def action_help(self) -> None:
        """Show every key binding."""
        self.push_screen(HelpScreen(self.help_sections(), notes=[("Mouse", MOUSE_HELP)]))

    def help_sections(self) -> HelpSections:
        """Every binding, by where it works; read from the classes, so it cannot drift."""
        everywhere = [*class_bindings(type(self)), *class_bindings(Screen)]
        if self.ENABLE_COMMAND_PALETTE:
            everywhere.append(
                Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "Command palette")
            )
        return [
            ("Everywhere", everywhere),
            ("Host pane", class_bindings(HostPane)),
            ("VM list", class_bindings(VMTable)),
            ("Filter line", class_bindings(FilterBar)),
            ("VM details", class_bindings(VMDetailsScreen, below=Screen)),
            ("Clone: destination", class_bindings(DestinationScreen, below=Screen)),
            ("Clone dialog", class_bindings(CloneDialog, below=Screen)),
            ("Sync dialog", class_bindings(SyncDialog, below=Screen)),
            ("Sync session", class_bindings(SyncView)),
            ("Clone job", class_bindings(JobView)),
            ("Failed clone", class_bindings(RollbackScreen, below=Screen)),
            ("Add host", class_bindings(AddHostScreen, below=Screen)),
            ("Questions", class_bindings(ConfirmScreen, below=Screen)),
            ("This help", class_bindings(HelpScreen, below=Screen)),
        ]

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = LIGHT_THEME if self.current_theme.dark else DARK_THEME

    # -- messages --------------------------------------------------------------------------------

    @on(PaneStatusChanged)
    @on(VMTable.MarksChanged)
    def _pane_changed(self) -> None:
        self._show_status()

    @on(JobWidget.Changed)
    def _job_changed(self) -> None:
        self._show_status()
        self.refresh_bindings()

    @on(SyncView.RevertRequested)
    def _revert_requested(self, message: SyncView.RevertRequested) -> None:
        self.syncs.revert(message.view)

    @on(JobView.Failed)
    def _job_failed(self, message: JobView.Failed) -> None:
        self.clones.failed(message.view, message.failure)

    @on(CloneRequested)
    def _clone_requested(self, message: CloneRequested) -> None:
        self.clones.clone_from(message.pane)

    @on(SyncRequested)
    def _sync_requested(self, message: SyncRequested) -> None:
        self.syncs.sync_from(message.pane)

    @on(DragSource.Dropped)
    def _dropped(self, message: DragSource.Dropped) -> None:
        self.clones.dropped(message)

    @on(DragSource.Dragging)
    def _dragging(self, message: DragSource.Dragging) -> None:
        self.clones.dragging(message)

    @on(FilterBar.Changed)
    def _filter_changed(self, message: FilterBar.Changed) -> None:
        self.filter_text = message.text
        self.filter_pattern = message.pattern
        for pane in self.panes:
            pane.set_filter(message.pattern)
        self._show_status()
        self.refresh_bindings()

    @on(FilterBar.Done)
    def _filter_done(self) -> None:
        self._focus_pane(self.current_pane)

    @on(VMDetailsRequested)
    def _details(self, message: VMDetailsRequested) -> None:
        pane = self.pane_for(message.host)
        vm = pane.table.vms.get(message.vm_name) if pane else None
        if vm is not None:
            self.push_screen(VMDetailsScreen(message.host, vm, self._xml_loader(message)))

    def _xml_loader(self, message: VMDetailsRequested) -> XMLLoader | None:
        source = self.source
        if not isinstance(source, DomainXMLSource):
            return None  # the engine has no domain XML API yet

        async def load() -> str:
            return await source.domain_xml(message.host, message.vm_name)

        return load
