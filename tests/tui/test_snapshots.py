"""Pictures of the main screen, help, details, clone dialog, jobs panel, rollback prompt and
sync dialog, compared with the accepted snapshots.

Fixed inventories and fake clones (tests/tui/fake_clone.py) so the picture is stable; real hosts
are covered by test_app.py and test_clone.py. Update after an intended change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the new files in
``__snapshots__/`` before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, Input

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.rollback import RollbackScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.pane import PaneState
from kvm_clone_tui.tui.sync.dialog import SyncDialog
from tests.tui.fake_clone import FakeCloneSource, lab_like_clone_source
from tests.tui.fake_sync import lab_like_sync_source

SnapCompare = Callable[..., bool]
RunBefore = Callable[[Pilot[Any]], Awaitable[None]]
SIZE = (130, 32)
HOSTS = ("alpha", "beta", "root@127.0.0.99")


def app() -> KVMCloneApp:
    return KVMCloneApp(HOSTS, source=lab_like_clone_source())


def the_app(pilot: Pilot[Any]) -> KVMCloneApp:
    assert isinstance(pilot.app, KVMCloneApp)
    return pilot.app


async def settled(pilot: Pilot[Any]) -> None:
    app = the_app(pilot)
    while any(p.state is PaneState.CONNECTING for p in app.panes):
        await pilot.pause(0.01)
    await pilot.pause()


def test_main_screen(snap_compare: SnapCompare) -> None:
    """Three panes: alpha with two VMs marked and the cursor below them, beta empty, a failure."""
    assert snap_compare(
        app(), press=["j", "space", "space"], terminal_size=SIZE, run_before=settled
    )


def test_filtered(snap_compare: SnapCompare) -> None:
    """The filter line with a regex, and the panes showing what it matches."""
    press = ["slash", *"^(web|db)", "enter"]
    assert snap_compare(app(), press=press, terminal_size=SIZE, run_before=settled)


def test_help_screen(snap_compare: SnapCompare) -> None:
    """Every key binding, from the widgets' BINDINGS."""
    assert snap_compare(app(), press=["question_mark"], terminal_size=SIZE, run_before=settled)


def test_details_screen(snap_compare: SnapCompare) -> None:
    """installer: a disk and a read-only CD-ROM."""
    press = ["j", "j", "enter"]
    assert snap_compare(app(), press=press, terminal_size=SIZE, run_before=settled)


def planned_dialog(pool: str | None = None) -> RunBefore:
    """db01 -> c -> beta: the clone dialog once its plan is shown (focus off the text fields,
    whose cursor blinks)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settled(pilot)
        await pilot.press("j", "c", "enter")
        app = the_app(pilot)
        while not isinstance(app.screen, CloneDialog):
            await pilot.pause(0.01)
        dialog = app.screen
        if pool is not None:
            dialog.query_one("#pool", Input).value = pool
        while dialog.planned_form is None or dialog.planned_form.pool != (pool or "default"):
            await pilot.pause(0.01)
        dialog.query_one("#cancel", Button).focus()
        await pilot.pause()

    return run_before


def test_clone_dialog(snap_compare: SnapCompare) -> None:
    """db01 to beta: options, then the plan (route, space, two files, a warning in yellow)."""
    assert snap_compare(app(), terminal_size=SIZE, run_before=planned_dialog())


def test_clone_dialog_refused(snap_compare: SnapCompare) -> None:
    """A pool too small: the conflict in red and Start disabled."""
    assert snap_compare(app(), terminal_size=SIZE, run_before=planned_dialog("small"))


async def start_jobs(pilot: Pilot[Any], *vms: str) -> None:
    app = the_app(pilot)
    source = app.source
    assert isinstance(source, FakeCloneSource)
    plans = [await source.plan_clone("alpha", "beta", vm, CloneOptions()) for vm in vms]
    await app.clones.start(plans)


async def two_jobs(pilot: Pilot[Any]) -> None:
    await settled(pilot)
    await start_jobs(pilot, "db01", "app.v2")
    views = the_app(pilot).jobs.views
    while [v.status for v in views] != [JobStatus.DONE, JobStatus.RUNNING]:
        await pilot.pause(0.01)
    await pilot.pause(0.6)  # at least two repaint ticks
    for view in views:  # where a log is scrolled must not depend on timing
        view.log_widget.scroll_end(animate=False, immediate=True)
    await pilot.pause(0.1)


def test_jobs_panel(snap_compare: SnapCompare) -> None:
    """Two jobs: app.v2 done, db01 copying two files (bars, sizes, rate, ETA, sparklines)."""
    assert snap_compare(app(), terminal_size=SIZE, run_before=two_jobs)


async def failed_job(pilot: Pilot[Any]) -> None:
    await settled(pilot)
    await start_jobs(pilot, "web01")
    while not isinstance(pilot.app.screen, RollbackScreen):
        await pilot.pause(0.01)
    await pilot.pause(0.3)


def test_rollback_prompt(snap_compare: SnapCompare) -> None:
    """web01 failed mid-copy: the error, the staged file, roll back / keep / show log."""
    assert snap_compare(app(), terminal_size=SIZE, run_before=failed_job)


async def sync_dialog_planned(pilot: Pilot[Any]) -> None:
    await settled(pilot)
    app = the_app(pilot)
    table = app.panes[0].table
    table.focus()
    table.move_cursor(row=table.get_row_index("writer"))
    await pilot.press("s", "enter")
    while not isinstance(app.screen, SyncDialog):
        await pilot.pause(0.01)
    dialog = app.screen
    dialog.query_one("#checkpoint", Checkbox).value = True
    await pilot.pause()
    while not dialog.ready:
        await pilot.pause(0.01)
    dialog.query_one("#cancel", Button).focus()  # off the name field, whose cursor blinks
    await pilot.pause(0.1)


def test_sync_dialog(snap_compare: SnapCompare) -> None:
    """writer (running) to beta, checkpoint on: bitmap mode and why, a running source, the
    checkpoints base -> new, the undo kept, the file pair."""
    sync_app = KVMCloneApp(HOSTS, source=lab_like_sync_source())
    assert snap_compare(sync_app, terminal_size=SIZE, run_before=sync_dialog_planned)
