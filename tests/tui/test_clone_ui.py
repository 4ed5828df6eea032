"""The clone dialog, jobs and prompts driven with Pilot against fake clones (fake_clone.py):
the form's checks, re-planning, cancel, keep/roll back, quitting with jobs running.

Fakes make these quick and exact (how often the engine is asked to plan, which job was rolled
back); the same flows on the lab's real hosts are in test_clone.py.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, Input, Label

from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.engine.plan import ClonePlan
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.job_view import JobView
from kvm_clone_tui.tui.clone.rollback import RollbackScreen
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.pane import PaneState
from tests.tui.conftest import SIZE, screen_text, wait_until
from tests.tui.fake_clone import FakeCloneSource, lab_like_clone_source


class CountingSource(FakeCloneSource):
    """Counts the plans asked for."""

    def __init__(self) -> None:
        base = lab_like_clone_source()
        super().__init__(base.inventories, base.failures)
        self.planned: list[CloneOptions] = []

    async def plan_clone(
        self, source: str, dest: str, vm: str, options: CloneOptions | None = None
    ) -> ClonePlan:
        self.planned.append(options or CloneOptions())
        return await super().plan_clone(source, dest, vm, options)


def new_app(source: FakeCloneSource | None = None) -> KVMCloneApp:
    return KVMCloneApp(["alpha", "beta"], source=source or lab_like_clone_source())


async def settled(pilot: Pilot[Any], app: KVMCloneApp) -> None:
    await wait_until(
        pilot, lambda: all(p.state is PaneState.CONNECTED for p in app.panes), "the panes"
    )


async def dialog_for(pilot: Pilot[Any], app: KVMCloneApp, vm: str, *keys: str) -> CloneDialog:
    table = app.panes[0].table
    table.move_cursor(row=table.get_row_index(vm))
    await pilot.press("c", *keys)
    await wait_until(pilot, lambda: isinstance(app.screen, CloneDialog), "the dialog")
    assert isinstance(app.screen, CloneDialog)
    return app.screen


async def test_same_host_copies_get_a_new_name_and_bad_input_is_refused() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await pilot.press("c")
        assert isinstance(app.screen, DestinationScreen)
        await pilot.press("j", "enter")  # beta, then alpha itself (the last entry)
        await wait_until(pilot, lambda: isinstance(app.screen, CloneDialog), "the dialog")
        dialog = app.screen
        assert isinstance(dialog, CloneDialog) and dialog.request.same_host
        name = dialog.query_one("#name-0", Input)
        assert name.value == "app.v2-clone"
        await wait_until(pilot, lambda: dialog.ready, "the plan")

        error = dialog.query_one("#form-error", Label)
        for value, problem in (
            ("app.v2", "needs a new name"),
            ("", "type a name"),
            ("-x", "VM name"),
        ):
            name.value = value
            await wait_until(pilot, lambda p=problem: p in str(error.render()), problem)  # type: ignore[misc]
            assert not dialog.ready and dialog.query_one("#start-clone", Button).disabled
        name.value = "app.v2-copy"
        dialog.query_one("#bandwidth", Input).value = "2X"
        await wait_until(pilot, lambda: "bandwidth limit" in str(error.render()), "2X refused")
        await pilot.press("ctrl+s")  # refused: nothing starts
        assert isinstance(app.screen, CloneDialog)
        dialog.query_one("#bandwidth", Input).value = "512K"
        await wait_until(pilot, lambda: dialog.ready, "a plan again")
        assert not error.display
        plan = dialog.plans[0]
        assert isinstance(plan, ClonePlan) and plan.options.bandwidth_limit == 512 << 10
        await pilot.press("escape")
        assert not isinstance(app.screen, CloneDialog) and not app.jobs.views


async def test_typing_plans_once_after_a_pause_and_conflicts_disable_start() -> None:
    source = CountingSource()
    app = new_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await dialog_for(pilot, app, "db01", "enter")
        await wait_until(pilot, lambda: dialog.ready, "the first plan")
        assert len(source.planned) == 1
        dialog.query_one("#pool", Input).focus()
        await pilot.press("end", *"-x")  # a pool that does not exist, typed key by key
        await pilot.pause(0.1)
        assert not dialog.ready  # stale while typing
        await wait_until(pilot, lambda: dialog.planned_form == dialog.form, "the new plan")
        assert [o.pool for o in source.planned] == ["default", "default-x"]  # one per burst
        assert not dialog.ready and dialog.query_one("#start-clone", Button).disabled
        assert "no storage pool 'default-x'" in screen_text(app)
        dialog.query_one("#pool", Input).value = "default"
        await wait_until(pilot, lambda: dialog.ready, "a clean plan")
        await pilot.press("enter")  # enter in a field goes to Start when the plan is ready
        assert app.screen.focused is dialog.query_one("#start-clone", Button)
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.jobs.views) == 1, "the job")


async def test_cancel_a_job_and_decide_about_a_failed_one() -> None:
    source = lab_like_clone_source()
    app = new_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert not app.jobs.display
        await app.clones.start(
            [await source.plan_clone("alpha", "beta", "db01", CloneOptions(new_name="a"))]
        )
        (running,) = app.jobs.views
        await wait_until(pilot, lambda: running.state.done_bytes > 0, "progress")
        assert app.jobs.display
        await pilot.press("x", "n")  # asked, then kept going
        assert running.status is JobStatus.RUNNING
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: running.status is JobStatus.ROLLED_BACK, "rolled back")
        assert "rolled back" in "\n".join(s.text for s in running.log_widget.lines)

        await app.clones.start([await source.plan_clone("alpha", "beta", "web01")])
        await wait_until(pilot, lambda: isinstance(app.screen, RollbackScreen), "the prompt")
        failed = app.jobs.views[0]
        await pilot.press("k")  # keep for later
        assert failed.status is JobStatus.KEPT and source.rolled_back == []
        assert "kvm-clone recover" in "\n".join(s.text for s in failed.log_widget.lines)
        await pilot.press("x")  # the only job x can act on: the prompt again
        assert isinstance(app.screen, RollbackScreen)
        await pilot.press("l")  # show the log: the job gets the focus
        assert isinstance(app.focused, JobView) and app.focused is failed
        await pilot.press("x", "r")
        await wait_until(pilot, lambda: failed.status is JobStatus.ROLLED_BACK, "rolled back")
        assert source.rolled_back == [failed.state.plan.job_id]
        await pilot.press("J")
        assert not app.jobs.display and not isinstance(app.focused, JobView)
        await pilot.press("J")
        assert app.jobs.display


async def test_quitting_cancels_running_jobs_first() -> None:
    source = lab_like_clone_source()
    app = new_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await app.clones.start([await source.plan_clone("alpha", "beta", "db01")])
        (view,) = app.jobs.views
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert view.status is JobStatus.RUNNING
        await pilot.press("q", "y")
        await wait_until(pilot, lambda: view.status is JobStatus.ROLLED_BACK, "the rollback")
    assert app.return_code == 0


async def test_palette_offers_the_clone_commands() -> None:
    app = new_app()
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert app.check_action("clone", ()) is True
        assert app.check_action("cancel_job", ()) is None  # no job: shown, dimmed
        await pilot.press("ctrl+p", *"clone vms")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "hosts")
        await pilot.press("escape")
        await pilot.press("ctrl+p", *"show/hide jobs")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.jobs.display, "the jobs panel")
        assert "No jobs yet" in str(app.jobs.query_one("#no-jobs").render())


async def test_a_kept_job_resumes_with_r() -> None:
    """Keep for resume, then ``r`` on the job: the engine's resume (faked: it finds 45% of each
    file already there) runs in the job's view, with its progress and what was reused."""
    source = lab_like_clone_source()
    app = new_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        await app.clones.start([await source.plan_clone("alpha", "beta", "web01")])
        await wait_until(pilot, lambda: isinstance(app.screen, RollbackScreen), "the prompt")
        assert "Keep for resume (k)" in screen_text(app)
        await pilot.press("k")
        (kept,) = app.jobs.views
        old_job = kept.state.plan.job_id
        assert kept.status is JobStatus.KEPT and kept.can_resume
        assert app.check_action("resume_job", ()) is True
        assert "1 kept" in str(app.status_bar.render())
        kept.focus()
        await pilot.pause()
        assert "r Resume (kept job)" in screen_text(app)  # in the footer
        await pilot.press("r")
        await wait_until(pilot, lambda: kept.status is JobStatus.DONE, "the resumed job")
        assert source.resumed == [old_job] and source.rolled_back == []
        log = "\n".join(s.text for s in kept.log_widget.lines)
        assert f"resuming job {old_job} from its staged files" in log
        assert f"resuming job {old_job} (as job {old_job}-r): 3.8 MiB of 8.4 MiB already" in log
        assert f"resumed job {old_job}: 3.8 MiB already there (verified), copied 4.6 MiB" in log
        assert all(f.finished and f.done == f.total for f in kept.state.files.values())
        assert not app.check_action("resume_job", ())
        await pilot.press("r")  # done: nothing to resume, says so
        assert source.resumed == [old_job]


async def test_a_job_outlives_its_view() -> None:
    """The app's job manager runs the job, not the view: removing the view (Textual cancels
    a widget's own workers then) neither stops the copy nor rolls it back."""
    source = lab_like_clone_source()
    app = new_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        plan = await source.plan_clone("alpha", "beta", "db01", CloneOptions(new_name="a"))
        (view,) = await app.clones.start([plan])
        await wait_until(pilot, lambda: view.state.done_bytes > 0, "progress")
        worker = app.job_manager.worker(view)
        assert worker is not None and worker.node is app
        await view.remove()
        await pilot.pause(0.2)
        assert not worker.is_finished and source.rolled_back == []
        worker.cancel()  # what x does: the engine rolls back
        await wait_until(pilot, lambda: worker.is_finished, "the cancelled job")
