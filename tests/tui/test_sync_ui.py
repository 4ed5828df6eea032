"""Sync sessions against a fake source: ``s`` asks where and which clone, ``r`` and ``R`` sync
again without asking, every run is listed, and ``x`` cancels a running sync (deterministic, held
at an exact point: see fake_sync.py; the same on the lab's real hosts is in test_sync.py)."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button, Checkbox, Input, Label, RadioButton

from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.pane import PaneState
from kvm_clone_tui.tui.sync.dialog import SyncDialog
from kvm_clone_tui.tui.sync.session import SyncPair
from kvm_clone_tui.tui.sync.view import SyncView
from tests.tui.conftest import SIZE, screen_text, wait_until
from tests.tui.fake_sync import FakeSyncSource, lab_like_sync_source


def log_text(view: SyncView) -> str:
    return "\n".join(strip.text for strip in view.log_widget.lines)


async def settled(pilot: Pilot[Any], app: KVMCloneApp) -> None:
    await wait_until(
        pilot, lambda: all(p.state is PaneState.CONNECTED for p in app.panes), "the panes"
    )


async def sync_dialog(pilot: Pilot[Any], app: KVMCloneApp, vm: str) -> SyncDialog:
    """Cursor on ``vm`` in alpha, ``s``, the highlighted host: the name dialog."""
    table = app.panes[0].table
    table.focus()
    table.move_cursor(row=table.get_row_index(vm))
    await pilot.press("s")
    await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "the hosts")
    assert isinstance(app.screen, DestinationScreen)
    assert app.screen.verb == "Sync"
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, SyncDialog), "the name dialog")
    assert isinstance(app.screen, SyncDialog)
    return app.screen


async def test_sync_session_lists_each_run() -> None:
    source = lab_like_sync_source()
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        assert not app.check_action("sync_again", ())  # nothing synced yet: R hidden
        dialog = await sync_dialog(pilot, app, "app.v2")
        assert dialog.dest == "beta"
        name = dialog.query_one(Input)
        assert name.value == "app.v2"  # the same name by default
        name.value = "app.v2-copy"
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session")
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: len(view.runs) == 1, "the first run")
        assert view.pair == SyncPair("alpha", "app.v2", "beta", "app.v2-copy")
        assert app.main_screen.focused is view and app.jobs.display
        await wait_until(pilot, lambda: "synced:" in log_text(view), "the log")
        assert "synced: 16.0 MiB changed, 16.0 MiB sent in 1.5 s" in log_text(view)

        await pilot.press("r")  # on the session: again, no dialog
        await wait_until(pilot, lambda: len(view.runs) == 2, "the second run")
        assert not isinstance(app.screen, SyncDialog)
        app.panes[1].table.focus()
        await pilot.press("R")  # anywhere: the last pair again
        await wait_until(pilot, lambda: len(view.runs) == 3, "the third run")
        await wait_until(pilot, lambda: view.status is JobStatus.DONE, "the end of the run")
        assert [r.changed_bytes for r in view.runs] == [16 << 20, 64 << 10, 0]
        assert [r.bytes_sent for r in view.runs] == [(16 << 20) + 512, (64 << 10) + 512, 512]
        assert len(source.runs) == 3 and len(app.jobs.sync_views) == 1
        await pilot.pause(0.3)  # a repaint
        text = screen_text(app)
        for expected in ("run", "changed", "sent", "seconds", "16.0 MiB", "64.0 KiB", "0 B"):
            assert expected in text, expected
        assert "64.0 KiB changed, 64.5 KiB sent in 1.5 s" in log_text(view)
        assert "jobs: 1 done" in str(app.status_bar.render())

        # The pair is remembered: the destination and the clone's name come back.
        dialog = await sync_dialog(pilot, app, "app.v2")
        assert dialog.dest == "beta" and dialog.query_one(Input).value == "app.v2-copy"
        await pilot.press("escape")
        assert not isinstance(app.screen, SyncDialog)


async def test_refused_sync_shows_its_conflicts() -> None:
    """The dialog's plan shows a refusal and enter does not start it; a sync refused when it
    runs (the plan changed since) says why in its session."""
    source = lab_like_sync_source()
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await sync_dialog(pilot, app, "writer")  # running
        await wait_until(pilot, lambda: dialog.ready, "the first plan (bitmap)")
        dialog.query_one("#mode-hash", RadioButton).value = True
        await wait_until(
            pilot,
            lambda: dialog.form.settings.mode == "hash" and dialog.planned_form == dialog.form,
            "the hash plan",
        )
        assert not dialog.ready and dialog.query_one("#sync", Button).disabled
        text = screen_text(app)
        assert (
            "writer is running and requested: hash mode reads the disk files, so shut it down "
            "first" in text
        )
        assert "refused: see the plan" in text
        await pilot.press("enter")
        assert app.screen is dialog and not app.jobs.sync_views  # nothing started
        dialog.query_one("#mode-auto", RadioButton).value = True  # bitmap: a running source
        await pilot.pause()
        await wait_until(pilot, lambda: dialog.ready, "the bitmap plan")
        assert "source  running: its disks are read at one point in time" in screen_text(app)
        await pilot.press("escape")

        dialog = await sync_dialog(pilot, app, "db01")
        dialog.query_one(Input).value = "db01-x"
        await pilot.press("enter")  # syncs when planned, if the plan allows it: it does
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the session")
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: len(view.runs) == 1, "the first run")
        source.refused = frozenset({"db01-x"})  # e.g. the clone was replaced meanwhile
        await pilot.press("r")
        await wait_until(pilot, lambda: view.status is JobStatus.FAILED, "the refusal")
        await wait_until(pilot, lambda: "refused" in log_text(view), "the log")
        assert (
            "refused: db01-x on beta is not a clone of db01 on alpha (its kvmclone metadata "
            "names another source)" in log_text(view)
        )
        assert "jobs: 1 failed" in str(app.status_bar.render())


async def test_dialog_plans_the_mode_and_checkpoint_and_the_session_keeps_them() -> None:
    source = lab_like_sync_source()
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await sync_dialog(pilot, app, "app.v2")
        await wait_until(pilot, lambda: dialog.ready, "the first plan")
        # Defaults from the config: mode auto (config.sync.mode), no undo checkpoint.
        assert source.plans[-1].mode == "auto" and not source.plans[-1].checkpoint
        text = screen_text(app)
        assert "mode  bitmap: checkpoint kvmclone-base is valid and app.v2 is unchanged" in text
        assert "kvmclone-base → kvmclone-sync-0 (on the source, for the next sync)" in text
        assert "undo  off: this sync cannot be reverted" in text
        dialog.query_one("#checkpoint", Checkbox).value = True
        await pilot.pause()  # the change reaches the dialog: its plan is stale
        await wait_until(pilot, lambda: dialog.ready, "the plan with a checkpoint")
        assert source.plans[-1].checkpoint
        assert "undo  kept: u in the session reverts the clone" in screen_text(app)
        planned = len(source.plans)
        await pilot.press("end", *"copy")  # typing: one plan after a pause, not one per key
        await wait_until(pilot, lambda: dialog.ready, "the plan for the new name")
        assert len(source.plans) == planned + 1
        assert source.plans[-1].target_name == "app.v2copy"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the session")
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: len(view.runs) == 1, "the first run")
        run = view.runs[0]
        assert (run.mode, run.revertible, run.consistency) == ("bitmap", True, None)
        await pilot.press("R")  # again: the same settings
        await wait_until(pilot, lambda: len(view.runs) == 2, "the second run")
        assert view.runs[1].revertible and view.settings.checkpoint
        await pilot.pause(0.3)
        text = screen_text(app)
        for expected in ("mode", "why this mode", "undo", "replaced", "u reverts", "bitmap"):
            assert expected in text, expected
        assert "mode auto · checkpoint on" in text
        # s again: the remembered settings come back in the dialog.
        dialog = await sync_dialog(pilot, app, "app.v2")
        assert dialog.query_one(Input).value == "app.v2copy"
        assert dialog.query_one("#checkpoint", Checkbox).value
        assert dialog.query_one("#mode-auto", RadioButton).value
        await pilot.press("escape")


async def test_u_reverts_the_last_sync_after_asking() -> None:
    source = lab_like_sync_source()
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await sync_dialog(pilot, app, "app.v2")
        await wait_until(pilot, lambda: dialog.ready, "the plan")
        await pilot.press("enter")  # no checkpoint: nothing to revert
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the session")
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: len(view.runs) == 1, "the first run")
        assert not app.check_action("revert_sync", ())
        await pilot.press("u")
        assert not isinstance(app.screen, ConfirmScreen) and source.reverted == []

        dialog = await sync_dialog(pilot, app, "app.v2")
        dialog.query_one("#checkpoint", Checkbox).value = True
        await pilot.pause()  # the change reaches the dialog: its plan is stale
        await wait_until(pilot, lambda: dialog.ready, "the plan with a checkpoint")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(view.runs) == 2, "the checkpointed run")
        assert app.check_action("revert_sync", ()) is True  # in the palette now
        await pilot.pause(0.3)
        assert "u reverts the last sync" in screen_text(app)
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        text = screen_text(app)
        assert "Revert app.v2 on beta to before sync 2 (job sync-1)?" in text
        assert "next sync (r) compares block hashes" in text
        await pilot.press("n")
        assert source.reverted == [] and view.why_not_revertible() is None
        await pilot.press("u", "y")
        await wait_until(pilot, lambda: view.runs[-1].reverted, "the revert")
        assert source.reverted == [("beta", "app.v2")]
        assert view.status is JobStatus.DONE
        await wait_until(pilot, lambda: "reverted:" in log_text(view), "the log")
        assert "reverted: app.v2 is back to before sync 2 (job sync-1), 64.0 KiB restored" in (
            log_text(view)
        )
        await pilot.pause(0.3)
        assert "reverted: r syncs again (hash mode)" in str(view.border_subtitle)
        assert "reverted" in screen_text(app)  # the runs table's undo column
        assert not app.check_action("revert_sync", ())
        await pilot.press("u")  # already reverted: says so, asks nothing
        assert not isinstance(app.screen, ConfirmScreen) and len(source.reverted) == 1


async def test_a_refused_revert_says_why_and_changes_nothing() -> None:
    source = lab_like_sync_source()
    source.revert_refused = (
        "app.v2's disks changed after the sync (was it started?): reverting would mix states; "
        "sync it again instead"
    )
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await sync_dialog(pilot, app, "app.v2")
        dialog.query_one("#checkpoint", Checkbox).value = True
        await pilot.pause()  # the change reaches the dialog: its plan is stale
        await wait_until(pilot, lambda: dialog.ready, "the plan")
        await pilot.press("enter")
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the session")
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: len(view.runs) == 1, "the run")
        app.panes[1].table.focus()  # the palette's command finds the last session
        await pilot.pause()
        app.action_revert_sync()
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_until(pilot, lambda: "revert refused" in log_text(view), "the refusal")
        assert "disks changed after the sync (was it started?)" in log_text(view)
        assert view.status is JobStatus.DONE and not view.runs[-1].reverted
        assert source.reverted == []


async def start_held_sync(pilot: Pilot[Any], app: KVMCloneApp, source: FakeSyncSource) -> SyncView:
    """``s`` on app.v2 to beta; the run waits at ``source.hold``."""
    await settled(pilot, app)
    await sync_dialog(pilot, app, "app.v2")
    await pilot.press("enter")
    await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session")
    (view,) = app.jobs.sync_views
    await wait_until(pilot, lambda: source.held == 1, "the run to reach its hold")
    assert view.status is JobStatus.RUNNING and app.main_screen.focused is view
    return view


async def test_x_cancels_a_running_sync_and_r_resumes_it() -> None:
    source = lab_like_sync_source()
    source.hold = "after-mark"
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        view = await start_held_sync(pilot, app, source)
        await wait_until(pilot, lambda: "marked as being synced" in log_text(view), "the log")
        assert app.check_action("cancel_job", ()) is True  # x is offered for the sync

        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        assert "sync-state=in-progress" in screen_text(app)
        await pilot.press("n")  # keep going
        assert not isinstance(app.screen, ConfirmScreen)
        assert view.status is JobStatus.RUNNING

        await pilot.press("x")
        await pilot.press("y")
        await wait_until(pilot, lambda: view.status is JobStatus.CANCELLED, "the cancel")
        await wait_until(pilot, lambda: view.mid_sync is not None, "the clone's metadata read")
        assert view.mid_sync is True and view.runs == []
        assert "app.v2 on beta is marked sync-state=in-progress: r resumes" in log_text(view)
        await pilot.pause(0.3)  # a repaint
        text = screen_text(app)
        assert "app.v2 on beta is mid-sync (marked sync-state=in-progress)" in text
        assert "r resumes the sync" in text and "mid-sync: r resumes" in text
        assert "jobs: 1 cancelled" in str(app.status_bar.render())
        await pilot.press("x")  # nothing left to cancel: says so, asks nothing
        assert not isinstance(app.screen, ConfirmScreen)

        source.hold = None
        await pilot.press("r")  # resumes: completes this time
        await wait_until(pilot, lambda: view.status is JobStatus.DONE, "the resumed run")
        await wait_until(pilot, lambda: "synced:" in log_text(view), "the log")
        assert "resuming the interrupted sync of app.v2" in log_text(view)
        assert len(view.runs) == 1 and not view.mid_sync
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "is mid-sync" not in text and "mid-sync: r resumes" not in text
        assert not view.query_one(".sync-state").display
        assert "jobs: 1 done" in str(app.status_bar.render())


async def test_sync_cancelled_before_the_clone_is_marked_changed_nothing() -> None:
    source = lab_like_sync_source()
    source.hold = "before-mark"
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        view = await start_held_sync(pilot, app, source)
        app.panes[1].table.focus()  # x still finds the only running job
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_until(pilot, lambda: view.status is JobStatus.CANCELLED, "the cancel")
        await wait_until(pilot, lambda: view.mid_sync is not None, "the clone's metadata read")
        assert view.mid_sync is False
        assert "app.v2 on beta is not mid-sync (sync-state=none)" in log_text(view)
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "is mid-sync" not in text and "may be mid-sync" not in text
        assert not view.query_one(".sync-state").display


async def test_the_clones_own_metadata_decides_whether_it_is_mid_sync() -> None:
    """Cancelled before this run marked the clone, but an earlier sync (from the command line,
    say) was interrupted: the clone's metadata says in-progress, so the view says mid-sync."""
    source = lab_like_sync_source()
    source.sync_states[("beta", "app.v2")] = "in-progress"
    source.hold = "before-mark"
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        view = await start_held_sync(pilot, app, source)
        await pilot.press("x", "y")
        await wait_until(pilot, lambda: view.status is JobStatus.CANCELLED, "the cancel")
        await wait_until(pilot, lambda: view.mid_sync is not None, "the clone's metadata read")
        assert view.mid_sync is True
        assert "app.v2 on beta is marked sync-state=in-progress: r resumes" in log_text(view)
        await pilot.pause(0.3)
        assert "app.v2 on beta is mid-sync" in screen_text(app)

        source.hold = None
        await pilot.press("r")
        await wait_until(pilot, lambda: view.status is JobStatus.DONE, "the resumed run")
        assert "resuming the interrupted sync" in log_text(view) and not view.mid_sync


async def test_a_bad_clone_name_is_refused_before_planning() -> None:
    source = lab_like_sync_source()
    app = KVMCloneApp(["alpha", "beta"], source=source)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app)
        dialog = await sync_dialog(pilot, app, "app.v2")
        await wait_until(pilot, lambda: dialog.ready, "the first plan")
        planned = len(source.plans)
        dialog.query_one(Input).value = "a/b"
        await pilot.press("enter")
        await pilot.pause(0.6)  # longer than the debounce: no plan is asked for
        error = dialog.query_one(".error", Label)
        assert error.display and "VM name" in str(error.render())
        assert app.screen is dialog and len(source.plans) == planned and not dialog.ready
        dialog.query_one(Input).value = "app.v2-b"
        await pilot.pause()
        await wait_until(pilot, lambda: dialog.ready, "the plan for a good name")
        assert not error.display and source.plans[-1].target_name == "app.v2-b"
