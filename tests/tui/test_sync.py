"""Sync sessions from the TUI on the lab's real hosts: ``s`` syncs a clone, ``r`` again after the
source changed, and the clone ends up byte-identical.

The source is a private copy of app.v2 on alpha (own name, own disk file), cloned to beta before
the app opens; everything takes the relay route and is removed afterwards, also on failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_clone_tui.engine.client import KVMCloneClient
from kvm_clone_tui.engine.config import Config
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.job_state import JobStatus
from kvm_clone_tui.tui.screens.destination import DestinationScreen
from kvm_clone_tui.tui.screens.sync_dialog import SyncDialog
from kvm_clone_tui.tui.widgets.host_pane import PaneState
from kvm_clone_tui.tui.widgets.sync_view import SyncView
from tests.tui.conftest import SIZE, wait_until
from tests.tui.lab_clones import IMAGES, images, remove_clone, unique_name

pytestmark = pytest.mark.usefixtures("clone_env")
KiB = 1 << 10
SYNC_TIMEOUT = 120


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_text(view: SyncView) -> str:
    return "\n".join(strip.text for strip in view.log_widget.lines)


def data_offset(path: Path) -> int:
    """A 64 KiB-aligned offset in ``path`` (a qcow2 file) holding guest data, not metadata."""
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", "qcow2", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for extent in json.loads(out):
        if extent.get("data") and "offset" in extent and extent["length"] >= 64 * KiB:
            return int(extent["offset"]) // (64 * KiB) * (64 * KiB)
    raise AssertionError(f"no data cluster in {path}")


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
        alpha.virsh("undefine", "--domain", name, "--nvram", check=False)
        disk.unlink(missing_ok=True)


async def test_sync_then_sync_again(
    lab: Lab, lab_config: Config, source_vm: tuple[str, Path]
) -> None:
    name, disk = source_vm
    beta = lab.runtime("beta")
    try:
        async with KVMCloneClient(lab_config) as client:
            await client.clone_vm("alpha", "beta", name)
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

            offset = data_offset(disk)
            with disk.open("r+b") as f:
                f.seek(offset)
                f.write(os.urandom(64 * KiB))
            await pilot.press("r")
            await wait_until(pilot, lambda: len(view.runs) == 2, "the second sync", SYNC_TIMEOUT)
            assert view.status is JobStatus.DONE, log_text(view)
            second = view.runs[1]
            assert 64 * KiB <= second.changed_bytes <= 128 * KiB
            assert 0 < second.bytes_sent <= 2 * second.changed_bytes
            await wait_until(pilot, lambda: log_text(view).count("synced:") == 2, "the log")
        clone = lab.layout.host_path("beta", f"{IMAGES}/{name}-vda.qcow2")
        assert sha256(clone) == sha256(disk)
    finally:
        await asyncio.to_thread(remove_clone, beta, name)
