"""Cloning from the TUI on the lab's real hosts: by keyboard, by drag and drop, watching a job,
cancelling it, and a failure mid-copy that the operator rolls back from the prompt.

Every clone takes the relay route (no SSH agent) and uses names starting with ``tui-``; each
test removes what it made, also when it fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from textual.widgets import Input, ProgressBar, RadioButton, Sparkline

from kvm_clone_tui.api.config import Config
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.job_view import JobView
from kvm_clone_tui.tui.clone.rollback import RollbackScreen
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.common.job_widget import FileRow
from kvm_clone_tui.tui.hosts.pane import HostPane, PaneState
from tests.tui.conftest import SIZE, screen_text, wait_until
from tests.tui.lab_clones import (
    domains,
    fill,
    inside,
    job_files,
    remove_clone,
    small_pool,
    unique_name,
)

pytestmark = pytest.mark.usefixtures("clone_env")
COPY_TIMEOUT = 120


def settled(app: KVMCloneApp) -> bool:
    return bool(app.panes) and all(p.state is PaneState.CONNECTED for p in app.panes)


def log_text(view: JobView) -> str:
    return "\n".join(strip.text for strip in view.log_widget.lines)


def status_is(view: JobView, *statuses: JobStatus) -> bool:
    return view.status in statuses


async def open_dialog(app: KVMCloneApp, pilot: object, pane: HostPane, vm: str) -> CloneDialog:
    """Put the cursor on ``vm``, press c and pick the first other host."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    pane.table.focus()
    pane.table.move_cursor(row=pane.table.get_row_index(vm))
    await pilot.press("c")
    await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "the host list")
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, CloneDialog), "the clone dialog")
    assert isinstance(app.screen, CloneDialog)
    return app.screen


async def planned(pilot: object, dialog: CloneDialog, *names: str) -> None:
    """Until the dialog's plans are for ``names`` and ready to start."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)

    def ready() -> bool:
        plans = [p for p in dialog.plans if not isinstance(p, str)]
        return dialog.ready and [p.new_name for p in plans] == list(names)

    await wait_until(pilot, ready, f"a plan for {names}", 60)


@pytest.fixture
def beta(lab: Lab) -> LabHostRuntime:
    return lab.runtime("beta")


async def test_clone_by_keyboard(lab: Lab, lab_config: Config, beta: LabHostRuntime) -> None:
    name = unique_name("kb")
    app = KVMCloneApp(["alpha", "beta"], config=lab_config)
    jobs: tuple[str, ...] = ()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: settled(app), "alpha and beta to connect")
            alpha, beta_pane = app.panes
            dialog = await open_dialog(app, pilot, alpha, "app.v2")
            assert dialog.request.dest == "beta"
            assert dialog.query_one("#name-0", Input).value == "app.v2"  # same name elsewhere
            assert dialog.query_one("#pool", Input).value == "default"
            dialog.query_one("#name-0", Input).value = name
            dialog.query_one("#transfer-relay", RadioButton).value = True
            await planned(pilot, dialog, name)
            plan = dialog.plans[0]
            assert not isinstance(plan, str)
            jobs = (plan.job_id,)
            assert plan.route == "relay" and plan.options.transfer == "relay"
            text = screen_text(app)
            for expected in ("route  relay", "✓ fits", "vda", f"{name}-vda.qcow2"):
                assert expected in text, expected

            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: bool(app.jobs.views), "the job")
            assert app.jobs.display  # shown when a job starts
            (view,) = app.jobs.views
            await wait_until(
                pilot, lambda: view.status is JobStatus.DONE, "the clone to finish", COPY_TIMEOUT
            )
            log = log_text(view)
            assert "stage" in log and "verify" in log and "define" in log
            assert f"cloned app.v2 to beta as {name}" in log
            assert view.state.files["vda"].finished
            await wait_until(pilot, lambda: name in beta_pane.table.vms, "the clone in beta's pane")
            assert "jobs: 1 done" in str(app.status_bar.render())
        assert beta.virsh("domstate", name).strip() == "shut off"
    finally:
        await asyncio.to_thread(remove_clone, beta, name, jobs)


async def test_clone_by_drag_and_drop(lab: Lab, lab_config: Config) -> None:
    gamma = lab.runtime("gamma")
    names = {"app.v2": unique_name("dd-app"), "web01": unique_name("dd-web")}
    app = KVMCloneApp(["alpha", "gamma"], config=lab_config)
    jobs: tuple[str, ...] = ()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: settled(app), "alpha and gamma to connect")
            alpha, gamma_pane = app.panes
            table = alpha.table
            for vm in ("app.v2", "web01"):
                table.move_cursor(row=table.get_row_index(vm))
                await pilot.press("space")
            row = table.get_row_index("web01")
            await pilot.mouse_down(table, offset=(4, 1 + row))  # under the header
            await pilot.hover(table, offset=(5, 1 + row))  # a cell: no drag yet
            assert app.status_bar.hint_text is None and not table.dragging
            await pilot.hover(table, offset=(7, 5 + row))  # still over alpha: a drag
            assert table.dragging and not gamma_pane.has_class("-drop-target")
            assert "drop on another host's pane" in (app.status_bar.hint_text or "")
            await pilot.hover(gamma_pane, offset=(10, 5))
            assert gamma_pane.has_class("-drop-target")
            assert app.status_bar.hint_text == "release to clone app.v2, web01 to gamma"
            await pilot.mouse_up(gamma_pane, offset=(10, 5))
            await wait_until(pilot, lambda: isinstance(app.screen, CloneDialog), "the dialog")
            assert app.status_bar.hint_text is None
            assert not gamma_pane.has_class("-drop-target")
            dialog = app.screen
            assert isinstance(dialog, CloneDialog)
            assert dialog.request.source == "alpha" and dialog.request.dest == "gamma"
            assert [vm.name for vm in dialog.request.vms] == ["app.v2", "web01"]
            dialog.query_one("#name-0", Input).value = names["app.v2"]
            dialog.query_one("#name-1", Input).value = names["web01"]
            await planned(pilot, dialog, names["app.v2"], names["web01"])
            jobs = tuple(p.job_id for p in dialog.plans if not isinstance(p, str))
            await pilot.click("#start-clone")
            await wait_until(pilot, lambda: len(app.jobs.views) == 2, "two jobs")
            await wait_until(
                pilot,
                lambda: all(v.status is JobStatus.DONE for v in app.jobs.views),
                "both clones to finish",
                COPY_TIMEOUT,
            )
        assert set(names.values()) <= domains(gamma)
    finally:
        for name in names.values():
            await asyncio.to_thread(remove_clone, gamma, name, jobs)


async def test_job_progress_then_cancel_rolls_back(
    lab: Lab, lab_config: Config, beta: LabHostRuntime
) -> None:
    name = unique_name("cancel")
    app = KVMCloneApp(["alpha", "beta"], config=lab_config)
    jobs: tuple[str, ...] = ()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: settled(app), "alpha and beta to connect")
            dialog = await open_dialog(app, pilot, app.panes[0], "db01")
            dialog.query_one("#name-0", Input).value = name
            dialog.query_one("#bandwidth", Input).value = "2M"  # per disk: ~6 s for vda
            await planned(pilot, dialog, name)
            plan = dialog.plans[0]
            assert not isinstance(plan, str) and plan.options.bandwidth_limit == 2 << 20
            jobs = (plan.job_id,)
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: bool(app.jobs.views), "the job")
            (view,) = app.jobs.views
            row = next(r for r in view.query(FileRow) if r.state.label == "vda")
            bar = row.query_one(ProgressBar)
            seen: set[float] = set()

            def progressed() -> bool:
                if bar.progress:
                    seen.add(bar.progress)
                return len(seen) >= 2

            await wait_until(pilot, progressed, "two progress updates of vda", 60)
            assert view.status is JobStatus.RUNNING
            assert len(row.query_one(Sparkline).data or []) >= 2
            assert "MiB/s" in str(row.query_one(".file-stats").render())
            assert "ETA" in str(row.query_one(".file-stats").render())
            assert "stage" in log_text(view)

            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_until(
                pilot, lambda: view.status is JobStatus.ROLLED_BACK, "the rollback", COPY_TIMEOUT
            )
            assert "rolled back" in log_text(view)
            assert "jobs: 1 rolled back" in str(app.status_bar.render())
        assert job_files(beta, plan.job_id) == []
        assert name not in domains(beta)
    finally:
        await asyncio.to_thread(remove_clone, beta, name, jobs)


@pytest.fixture
def beta_small_pool(beta: LabHostRuntime) -> Iterator[tuple[str, str]]:
    """A 128 MiB pool on beta with a name of this test's own: (name, path)."""
    name = unique_name("pool")
    for path in small_pool(beta, name, 128):
        yield name, path


async def test_failure_mid_copy_then_roll_back_from_the_prompt(
    lab: Lab, lab_config: Config, beta: LabHostRuntime, beta_small_pool: tuple[str, str]
) -> None:
    pool, pool_path = beta_small_pool
    name = unique_name("fail")
    app = KVMCloneApp(["alpha", "beta"], config=lab_config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: settled(app), "alpha and beta to connect")
            dialog = await open_dialog(app, pilot, app.panes[0], "db01")
            dialog.query_one("#name-0", Input).value = name
            dialog.query_one("#pool", Input).value = pool
            dialog.query_one("#bandwidth", Input).value = "2M"
            await planned(pilot, dialog, name)
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: bool(app.jobs.views), "the job")
            (view,) = app.jobs.views
            await wait_until(pilot, lambda: view.state.done_bytes > 0, "the copy to start", 60)
            await asyncio.to_thread(fill, beta, pool_path)  # the pool is full mid-copy

            await wait_until(
                pilot, lambda: isinstance(app.screen, RollbackScreen), "the prompt", COPY_TIMEOUT
            )
            assert view.status is JobStatus.FAILED and view.failure is not None
            text = screen_text(app)
            assert "Clone failed" in text and "What happened" in text
            assert view.state.staged and any(pool_path in s for s in view.state.staged)
            assert view.state.staged[0].rsplit("/", 1)[-1][:20] in text
            for choice in ("Roll back now", "Keep for resume", "Show log"):
                assert choice in text

            await pilot.press("r")
            await wait_until(
                pilot, lambda: view.status is JobStatus.ROLLED_BACK, "the rollback", COPY_TIMEOUT
            )
            assert "rolled back" in log_text(view)
        listing = await asyncio.to_thread(inside, beta, "ls", "-A", pool_path)
        assert sorted(listing.split()) == ["filler", "lost+found"]
        assert name not in domains(beta)
    finally:
        await asyncio.to_thread(remove_clone, beta, name)


async def test_failure_mid_copy_then_keep_and_resume(
    lab: Lab, lab_config: Config, beta: LabHostRuntime, beta_small_pool: tuple[str, str]
) -> None:
    """The pool fills up mid-copy; keep for resume, free the space, ``r`` on the job: the
    engine's resume adopts the staged files and the clone is defined on beta."""
    pool, pool_path = beta_small_pool
    name = unique_name("resume")
    app = KVMCloneApp(["alpha", "beta"], config=lab_config)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: settled(app), "alpha and beta to connect")
            dialog = await open_dialog(app, pilot, app.panes[0], "db01")
            dialog.query_one("#name-0", Input).value = name
            dialog.query_one("#pool", Input).value = pool
            dialog.query_one("#bandwidth", Input).value = "2M"
            await planned(pilot, dialog, name)
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: bool(app.jobs.views), "the job")
            (view,) = app.jobs.views
            await wait_until(pilot, lambda: view.state.done_bytes > 0, "the copy to start", 60)
            await asyncio.to_thread(fill, beta, pool_path)
            await wait_until(
                pilot, lambda: isinstance(app.screen, RollbackScreen), "the prompt", COPY_TIMEOUT
            )
            await pilot.press("k")
            kept: JobStatus = view.status
            assert kept is JobStatus.KEPT and view.can_resume
            old_job = view.job_id
            await asyncio.to_thread(inside, beta, "rm", "-f", f"{pool_path}/filler")
            view.focus()
            await pilot.press("r")
            await wait_until(
                pilot, lambda: not view.status.active, "the resumed clone", COPY_TIMEOUT
            )
            log = log_text(view)
            assert view.status is JobStatus.DONE, log
            assert f"resuming job {old_job} (as job " in log and "already there" in log
            assert f"resumed job {old_job}: " in log
        assert name in domains(beta)
        listing = await asyncio.to_thread(inside, beta, "ls", "-A", pool_path)
        assert not [f for f in listing.split() if f.startswith(".kvmclone-partial-")]
    finally:
        await asyncio.to_thread(remove_clone, beta, name)
