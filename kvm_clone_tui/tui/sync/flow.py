"""Sync sessions, and what follows: the app's sync logic.

``s`` on a VM -> :class:`DestinationScreen` (the remembered destination highlighted) ->
:class:`SyncDialog` (the clone's name, the mode and the undo checkpoint, prefilled from the
remembered pair or the config; the engine's plan, live) -> a :class:`SyncView` in the jobs panel
(one per pair; a pair synced again runs in its view). ``r`` on a sync session, or ``R``
anywhere, syncs the last pair again without asking, with the same settings. ``x`` on a running
session cancels it after a :class:`ConfirmScreen`: the clone stays marked mid-sync and the next
run resumes it. ``u`` on a session (or "Revert last sync" in the palette) puts the clone back as
it was before its last sync, when that sync kept a checkpoint, after a :class:`ConfirmScreen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.feeds import SyncSource
from kvm_clone_tui.tui.hosts.pane import HostPane, PaneState, pane_note
from kvm_clone_tui.tui.sync.dialog import SyncChoice, SyncDialog
from kvm_clone_tui.tui.sync.session import SyncPair, SyncPairs, SyncSettings
from kvm_clone_tui.tui.sync.view import SyncView

if TYPE_CHECKING:
    from kvm_clone_tui.api.plans import SyncPlan
    from kvm_clone_tui.tui.app import KVMCloneApp


class SyncFlow:
    """The sync actions of ``app`` and the pairs remembered for this app session."""

    def __init__(self, app: KVMCloneApp) -> None:
        self.app = app
        self.pairs = SyncPairs()

    @property
    def source(self) -> SyncSource | None:
        """The app's source when it can sync."""
        source = self.app.source
        return source if isinstance(source, SyncSource) else None

    def can_sync(self, pane: HostPane | None) -> bool:
        """True when ``pane`` has a VM under the cursor and the source can sync."""
        if self.source is None or pane is None or pane.state is not PaneState.CONNECTED:
            return False
        return pane.table.current_vm() is not None

    def sync_from(self, pane: HostPane) -> None:
        """``s``: pick the destination and the clone's name for the VM under the cursor."""
        vm = pane.table.current_vm() if pane.state is PaneState.CONNECTED else None
        source = self.source
        if vm is None or source is None:
            self.app.notify(f"no VM to sync on {pane.host}", severity="warning")
            return
        known = self.pairs.get(pane.host, vm.name)
        hosts = [(p.host, pane_note(p)) for p in self.app.panes]

        def named(dest: str, choice: SyncChoice | None) -> None:
            if choice is not None:
                pair = SyncPair(pane.host, vm.name, dest, choice.target)
                self.app.run_worker(self.start(pair, choice.settings))

        def picked(dest: str | None) -> None:
            if not dest:
                return
            same = known is not None and known.dest == dest
            target = known.target if known is not None and same else vm.name
            remembered = self.pairs.settings(known) if known is not None and same else None

            async def planner(name: str, settings: SyncSettings) -> SyncPlan:
                options = source.sync_options(
                    target_name=name, mode=settings.mode, checkpoint=settings.checkpoint
                )
                return await source.plan_sync(pane.host, dest, vm.name, options)

            settings = remembered or self.defaults()
            dialog = SyncDialog(pane.host, vm.name, dest, target, settings, planner)
            self.app.push_screen(dialog, lambda choice: named(dest, choice))

        preferred = known.dest if known is not None else None
        screen = DestinationScreen(pane.host, [vm], hosts, verb="Sync", preferred=preferred)
        self.app.push_screen(screen, picked)

    def defaults(self) -> SyncSettings:
        """The sync settings the config gives (``sync.mode``; no undo checkpoint)."""
        source = self.source
        if source is None:
            return SyncSettings()
        options = source.sync_options()
        return SyncSettings(options.mode, options.checkpoint)

    async def start(self, pair: SyncPair, settings: SyncSettings | None = None) -> SyncView | None:
        """Remember ``pair`` (with ``settings``, else those it had) and sync it in its session
        (made on first use); focus it."""
        source = self.source
        if source is None:
            self.app.notify("this source cannot sync", severity="error")
            return None
        settings = settings or self.pairs.settings(pair) or self.defaults()
        self.pairs.remember(pair, settings)
        jobs = self.app.jobs
        view = jobs.sync_view(pair) or await jobs.add_sync(pair, source, settings)
        view.settings = settings
        if not view.start():
            self.app.notify(f"{pair.title}: still running", severity="warning")
        self.app.show_jobs()
        view.focus()
        view.scroll_visible(animate=False)
        self.app.refresh_bindings()
        return view

    def again(self) -> None:
        """``R``: sync the last pair again, without asking."""
        pair = self.pairs.last
        if pair is None:
            self.app.notify("nothing synced yet: press s on a VM first", severity="warning")
            return
        self.app.run_worker(self.start(pair))

    def cancel(self, view: SyncView) -> None:
        """``x`` on a session: confirm, then stop its running sync."""
        if view.status is not JobStatus.RUNNING:
            hint = " (r resumes it)" if view.mid_sync is not False else ""
            self.app.notify(f"{view.pair.title}: {view.status.label}, nothing to cancel{hint}")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                view.cancel()

        pair = view.pair
        question = (
            f"Cancel the {pair.title}?\n\n"
            f"Blocks already written stay on {pair.dest}: nothing is rolled back. "
            f"{pair.target} stays marked mid-sync (sync-state=in-progress) until a sync "
            "completes; r on the session resumes it."
        )
        self.app.push_screen(ConfirmScreen(question, yes="Cancel sync", no="Keep going"), answered)

    def target(self) -> SyncView | None:
        """The session ``u`` acts on: the focused one, else the last synced pair's."""
        focused = self.app.main_screen.focused
        if isinstance(focused, SyncView):
            return focused
        last = self.pairs.last
        return self.app.jobs.sync_view(last) if last is not None else None

    def revert(self, view: SyncView | None = None) -> None:
        """``u``: confirm, then put the clone back as it was before its last sync."""
        view = view or self.target()
        if view is None:
            self.app.notify("nothing synced yet: press s on a VM first", severity="warning")
            return
        why_not = view.why_not_revertible()
        if why_not is not None:
            self.app.notify(f"{view.pair.title}: {why_not}", severity="warning")
            return
        run = view.runs[-1]
        pair = view.pair

        def answered(yes: bool | None) -> None:
            if yes:
                view.revert()

        question = (
            f"Revert {pair.target} on {pair.dest} to before sync {len(view.runs)} "
            f"(job {run.job_id})?\n\n"
            f"The blocks that sync overwrote are written back and {pair.target}'s previous "
            "definition is restored. The source's checkpoint moved on with that sync, so the "
            "next sync (r) compares block hashes (hash mode)."
        )
        self.app.push_screen(ConfirmScreen(question, yes="Revert", no="Keep the sync"), answered)
