"""Sync sessions from the TUI on the lab's real hosts: ``s`` syncs a clone, ``r`` again after the
source changed (written through qcow2, as the guest would), ``x`` cancels a sync mid-copy and
``r`` resumes it; the clone ends up with the source's guest data.

The source is a private copy of app.v2 on alpha (own name, own disk file), cloned to beta before
the app opens; everything takes the relay route and is removed afterwards, also on failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Static

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.common.confirm import ConfirmScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.pane import PaneState
from kvm_clone_tui.tui.sync.dialog import SyncDialog
from kvm_clone_tui.tui.sync.view import SyncView
from tests.tui.conftest import SIZE, screen_text, wait_until
from tests.tui.lab_clones import IMAGES, images, remove_clone, unique_name

pytestmark = pytest.mark.usefixtures("clone_env")
KiB = 1 << 10
SYNC_TIMEOUT = 120


def log_text(view: SyncView) -> str:
    return "\n".join(strip.text for strip in view.log_widget.lines)


DATA_AT = 64 << 20  # app.v2's guest data: 1 MiB at 64 MiB


def guest_write(path: Path, offset: int, length: int) -> None:
    """Change ``length`` bytes the guest sees at ``offset``, as the guest would: through the
    qcow2 layer (its persistent dirty bitmaps see the write; the file's metadata stays valid)."""
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {offset} {length}", str(path)],
        capture_output=True,
        check=True,
    )


def same_guest_content(a: Path, b: Path) -> bool:
    """Whether two qcow2 images hold the same guest data (their metadata may differ: bitmaps);
    ``-U``: no image lock is taken (nor needed: no VM uses them)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(a), str(b)],
        capture_output=True,
        text=True,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


@pytest.fixture
def source_vm(lab: Lab) -> Iterator[tuple[str, Path]]:
    """A private copy of app.v2 on alpha, ``tui-sync-src-…``: (name, its disk as seen here)."""
    alpha = lab.runtime("alpha")
    name = unique_name("sync-src")
    disk = images(alpha) / f"{name}.qcow2"
    disk.write_bytes((images(alpha) / "app.v2.qcow2").read_bytes())
    xml = alpha.virsh("dumpxml", "--inactive", "app.v2")
    xml = xml.replace("<name>app.v2</name>", f"<name>{name}</name>")
    xml = xml.replace(f"{IMAGES}/app.v2.qcow2", f"{IMAGES}/{name}.qcow2")
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "", xml)
    try:
        alpha.virsh("define", "/dev/stdin", input=xml)
        yield name, disk
    finally:
        alpha.virsh("undefine", "--domain", name, "--nvram", "--checkpoints-metadata", check=False)
        disk.unlink(missing_ok=True)


async def test_sync_then_sync_again(
    lab: Lab, lab_config: Config, source_vm: tuple[str, Path]
) -> None:
    name, disk = source_vm
    beta = lab.runtime("beta")
    try:
        async with KVMCloneClient(lab_config) as client:
            await client.clone_vm("alpha", "beta", name, check=True)
        app = KVMCloneApp(["alpha", "beta"], config=lab_config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: all(p.state is PaneState.CONNECTED for p in app.panes),
                "alpha and beta",
            )
            table = app.panes[0].table
            await wait_until(pilot, lambda: name in table.vms, "the source VM in alpha's pane")
            table.focus()
            table.move_cursor(row=table.get_row_index(name))
            await pilot.press("s")
            await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "hosts")
            await pilot.press("enter")  # beta
            await wait_until(pilot, lambda: isinstance(app.screen, SyncDialog), "the dialog")
            assert isinstance(app.screen, SyncDialog) and app.screen.dest == "beta"
            await pilot.press("enter")  # the same name
            await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session")
            (view,) = app.jobs.sync_views
            await wait_until(pilot, lambda: len(view.runs) == 1, "the first sync", SYNC_TIMEOUT)
            assert view.status is JobStatus.DONE, log_text(view)

            await asyncio.to_thread(guest_write, disk, DATA_AT, 64 * KiB)
            await pilot.press("r")
            await wait_until(pilot, lambda: len(view.runs) == 2, "the second sync", SYNC_TIMEOUT)
            assert view.status is JobStatus.DONE, log_text(view)
            second = view.runs[1]
            assert 64 * KiB <= second.changed_bytes <= 128 * KiB
            assert 0 < second.bytes_sent <= 2 * second.changed_bytes
            await wait_until(pilot, lambda: log_text(view).count("synced:") == 2, "the log")
        clone = lab.layout.host_path("beta", f"{IMAGES}/{name}-vda.qcow2")
        assert same_guest_content(clone, disk)
    finally:
        await asyncio.to_thread(remove_clone, beta, name)


def sync_state(runtime: LabHostRuntime, name: str) -> str | None:
    """The clone's ``sync-state`` in its persistent definition, as libvirt on the host has it."""
    xml = runtime.virsh("dumpxml", "--inactive", name)
    return read_clone_metadata(xml).get("sync-state")


async def test_cancel_a_sync_mid_copy_then_resume(
    lab: Lab, lab_config: Config, source_vm: tuple[str, Path]
) -> None:
    """``x`` on a real sync slowed to 128 KiB/s: the clone stays marked in-progress on beta, the
    view says it is mid-sync, and ``r`` resumes and completes it (the same guest data)."""
    name, disk = source_vm
    beta = lab.runtime("beta")
    slow = dataclasses.replace(  # hash mode: the test waits for a file's progress to cancel
        lab_config,
        clone=dataclasses.replace(lab_config.clone, bandwidth_limit="128K"),
        sync=dataclasses.replace(lab_config.sync, mode="hash"),
    )
    try:
        async with KVMCloneClient(lab_config) as client:
            await client.clone_vm("alpha", "beta", name, check=True)
        await asyncio.to_thread(guest_write, disk, DATA_AT, 1 << 20)
        app = KVMCloneApp(["alpha", "beta"], config=slow)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: all(p.state is PaneState.CONNECTED for p in app.panes),
                "alpha and beta",
            )
            table = app.panes[0].table
            await wait_until(pilot, lambda: name in table.vms, "the source VM in alpha's pane")
            table.focus()
            table.move_cursor(row=table.get_row_index(name))
            await pilot.press("s")
            await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "hosts")
            await pilot.press("enter")  # beta
            await wait_until(pilot, lambda: isinstance(app.screen, SyncDialog), "the dialog")
            await pilot.press("enter")  # the same name
            await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session")
            (view,) = app.jobs.sync_views
            await wait_until(
                pilot,
                lambda: (
                    any(0 < f.done < f.total for f in view.files.values()) or not view.status.active
                ),
                "the copy of the changed blocks to start",
                SYNC_TIMEOUT,
            )
            assert view.status.active, f"ended before the cancel:\n{log_text(view)}"
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_until(pilot, lambda: view.status is JobStatus.CANCELLED, "the cancel")
            assert await asyncio.to_thread(sync_state, beta, name) == "in-progress"
            await wait_until(pilot, lambda: view.mid_sync is not None, "the metadata read")
            assert view.mid_sync is True and view.runs == []
            await pilot.pause(0.3)  # a repaint
            text = screen_text(app)
            assert f"{name} on beta is mid-sync (marked sync-state=in-progress)" in text
            state = view.query_one(".sync-state", Static)
            assert state.display and "r resumes the sync" in state.render().plain  # type: ignore[union-attr]
            assert "jobs: 1 cancelled" in str(app.status_bar.render())

            await pilot.press("r")
            await wait_until(pilot, lambda: len(view.runs) == 1, "the resumed sync", SYNC_TIMEOUT)
            assert view.status is JobStatus.DONE, log_text(view)
            assert "resuming the interrupted sync" in log_text(view)
            assert not view.mid_sync
        assert await asyncio.to_thread(sync_state, beta, name) == "synced"
        clone = lab.layout.host_path("beta", f"{IMAGES}/{name}-vda.qcow2")
        assert same_guest_content(clone, disk)
    finally:
        await asyncio.to_thread(remove_clone, beta, name)


async def test_sync_with_a_checkpoint_then_revert_from_the_session(
    lab: Lab, lab_config: Config, source_vm: tuple[str, Path], tmp_path: Path
) -> None:
    """Checkpoint on in the dialog, a change on the source (through qcow2), the sync moves it
    (bitmap mode), then ``u`` + yes: the clone holds the guest data it had before the sync."""
    name, disk = source_vm
    beta = lab.runtime("beta")
    before = tmp_path / "before.qcow2"
    try:
        async with KVMCloneClient(lab_config) as client:
            await client.clone_vm("alpha", "beta", name, check=True)
        await asyncio.to_thread(shutil.copyfile, disk, before)  # the clone's guest data now
        await asyncio.to_thread(guest_write, disk, DATA_AT, 192 * KiB)
        clone = lab.layout.host_path("beta", f"{IMAGES}/{name}-vda.qcow2")
        assert not same_guest_content(clone, disk)
        app = KVMCloneApp(["alpha", "beta"], config=lab_config)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(
                pilot,
                lambda: all(p.state is PaneState.CONNECTED for p in app.panes),
                "alpha and beta",
            )
            table = app.panes[0].table
            await wait_until(pilot, lambda: name in table.vms, "the source VM in alpha's pane")
            table.focus()
            table.move_cursor(row=table.get_row_index(name))
            await pilot.press("s")
            await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "hosts")
            await pilot.press("enter")  # beta
            await wait_until(pilot, lambda: isinstance(app.screen, SyncDialog), "the dialog")
            dialog = app.screen
            assert isinstance(dialog, SyncDialog)
            dialog.query_one("#checkpoint", Checkbox).value = True
            await pilot.pause()
            await wait_until(pilot, lambda: dialog.ready, "the plan", SYNC_TIMEOUT)
            plan = dialog.plan
            assert not isinstance(plan, str) and plan is not None
            assert plan.mode == "bitmap" and plan.options.checkpoint, plan.describe()
            assert plan.new_checkpoint and plan.new_checkpoint in screen_text(app)
            await pilot.press("enter")
            await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session")
            (view,) = app.jobs.sync_views
            await wait_until(pilot, lambda: not view.status.active, "the sync", SYNC_TIMEOUT)
            assert view.status is JobStatus.DONE and len(view.runs) == 1, log_text(view)
            run = view.runs[0]
            assert run.mode == "bitmap" and run.revertible
            assert 192 * KiB <= run.changed_bytes <= 256 * KiB
            assert same_guest_content(clone, disk)

            await pilot.press("u")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            question = app.screen
            assert isinstance(question, ConfirmScreen)
            assert f"Revert {name} on beta to before sync 1" in question.question
            assert "the next sync (r) compares block hashes" in question.question
            await pilot.press("y")
            await wait_until(pilot, lambda: not view.status.active, "the revert", SYNC_TIMEOUT)
            assert view.runs[-1].reverted, log_text(view)
            assert f"reverted: {name} is back to before sync 1" in log_text(view)
        assert same_guest_content(clone, before)
        assert not same_guest_content(clone, disk)
        assert await asyncio.to_thread(sync_state, beta, name) == "reverted"
    finally:
        await asyncio.to_thread(remove_clone, beta, name)
