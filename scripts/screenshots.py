#!/usr/bin/env python3
"""Regenerate screenshots/*.svg (and .png when a converter exists) from the real UI on the lab.

Usage: ``.venv/bin/python scripts/screenshots.py [--out DIR] [--size COLSxROWS]``. Needs a running
lab (``kvm-clone lab up``); the pictures show its hosts as they are. PNGs are made with
``rsvg-convert`` (Debian: librsvg2-bin) when it is installed.

Besides the main screen, a VM's details and the help, it really clones and syncs on the lab:

* ``jobs``: a VM with two disks of random data (104 MiB) defined on alpha and cloned to beta,
  slowed by the clone dialog's bandwidth limit (the agent moves 4 MiB blocks), caught mid-copy;
* ``rollback``: db01 cloned into a small pool on beta that fills up mid-copy (the prompt; the
  script then rolls back from it);
* ``sync``: a private copy of app.v2 on alpha, cloned to beta, then synced from the UI twice
  (with an undo checkpoint) after its disk changed, the second sync (slowed by the config's
  bandwidth limit) caught mid-copy.

Everything it makes on the lab is named ``shots-…`` and removed at the end (and at the start, in
case an earlier run was interrupted). Clones take the relay route (the SSH agent is not used) and
their journals go to a temporary state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from textual.pilot import Pilot
from textual.widgets import Checkbox, Input

from kvm_clone_tui.api import Config, KVMCloneClient, load_config
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir, default_state_dir
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.lab.sample_vms import Extent, domain_xml, make_disk
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.clone.dialog import CloneDialog
from kvm_clone_tui.tui.clone.rollback import RollbackScreen
from kvm_clone_tui.tui.common.destination import DestinationScreen
from kvm_clone_tui.tui.common.job_status import JobStatus
from kvm_clone_tui.tui.hosts.details import VMDetailsScreen
from kvm_clone_tui.tui.hosts.pane import HostPane, PaneState
from kvm_clone_tui.tui.startup import running_lab_config
from kvm_clone_tui.tui.sync.dialog import SyncDialog

ROOT = Path(__file__).resolve().parents[1]
PNG_WIDTH = 1800  # pixels
IMAGES = "/var/lib/libvirt/images"  # the lab hosts' default pool
MiB = 1 << 20
PREFIX = "shots-"  # everything this script makes on the lab
DATA_VM = f"{PREFIX}data"  # two disks with enough data for a few seconds of copy
DATA_DISKS = {"vda": 64 * MiB, "vdb": 40 * MiB}
FAILED_CLONE = f"{PREFIX}db01"
SMALL_POOL = f"{PREFIX}pool"
SMALL_POOL_MIB = 128
SYNC_SOURCE = f"{PREFIX}app"
TIMEOUT = 120  # seconds, for a copy or a sync

AppPilot = Pilot[Any]


async def settle(app: KVMCloneApp, pilot: AppPilot, timeout: float = 60) -> None:
    """Wait until no pane is still connecting."""
    await wait_until(
        pilot,
        lambda: all(p.state is not PaneState.CONNECTING for p in app.panes),
        "the lab's hosts to answer",
        timeout,
    )
    await asyncio.sleep(0.3)


async def wait_until(
    pilot: AppPilot, condition: Callable[[], object], what: str, timeout: float = 30
) -> None:
    """Let the app run until ``condition()`` holds; give up naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            await give_up(pilot, f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)
    await pilot.pause()


async def give_up(pilot: AppPilot, why: str) -> NoReturn:
    """Cancel the app's running jobs (they roll back, as when quitting), then stop."""
    app = pilot.app
    if isinstance(app, KVMCloneApp) and app.screen_stack:
        for view in app.jobs.active():
            view.cancel()
        deadline = time.monotonic() + TIMEOUT
        while app.jobs.active() and time.monotonic() < deadline:
            await pilot.pause(0.1)
    raise SystemExit(f"screenshots: {why}")


def put_cursor(pane: HostPane, vm: str) -> None:
    pane.table.focus()
    pane.table.move_cursor(row=pane.table.get_row_index(vm))


# -- the lab: what the pictures need, and removing it again ---------------------------------------


def inside(runtime: LabHostRuntime, *command: str, check: bool = True) -> str:
    """Run ``command`` in the lab host's mount namespace."""
    argv = runtime.inside_argv(*command)
    return subprocess.run(argv, capture_output=True, text=True, check=check).stdout


def images(runtime: LabHostRuntime) -> Path:
    """The host's default pool, as this machine sees it."""
    return runtime.layout.host_path(runtime.host.name, IMAGES)


def pool_path(name: str) -> str:
    return f"/var/lib/libvirt/{name}"


def pool_image(runtime: LabHostRuntime, name: str) -> Path:
    return runtime.layout.host_dir(runtime.host.name) / f"{name}.img"


def make_small_pool(runtime: LabHostRuntime, name: str, mib: int) -> str:
    """A loop-mounted ext4 pool ``name`` of ``mib`` MiB on the host; returns its path there."""
    path, image = pool_path(name), pool_image(runtime, name)
    subprocess.run(["truncate", "-s", f"{mib}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    inside(runtime, "mkdir", "-p", path)
    inside(runtime, "mount", "-o", "loop", str(image), path)
    runtime.virsh("pool-create-as", name, "dir", "--target", path)
    return path


def remove_small_pool(runtime: LabHostRuntime, name: str) -> None:
    runtime.virsh("pool-destroy", name, check=False)
    path = pool_path(name)
    inside(runtime, "umount", path, check=False)
    inside(runtime, "rmdir", path, check=False)
    pool_image(runtime, name).unlink(missing_ok=True)


def fill(runtime: LabHostRuntime, path: str) -> None:
    """Write zeros into ``path``/filler until its file system is full."""
    script = f"dd if=/dev/zero of={path}/filler bs=1M 2>/dev/null; sync"
    inside(runtime, "sh", "-c", script, check=False)


def define_sync_source(alpha: LabHostRuntime) -> Path:
    """A private copy of app.v2 on alpha (own name, disk, UUID, MACs); returns its disk."""
    disk = images(alpha) / f"{SYNC_SOURCE}.qcow2"
    shutil.copyfile(images(alpha) / "app.v2.qcow2", disk)
    xml = alpha.virsh("dumpxml", "--inactive", "app.v2")
    xml = xml.replace("<name>app.v2</name>", f"<name>{SYNC_SOURCE}</name>")
    xml = xml.replace(f"{IMAGES}/app.v2.qcow2", f"{IMAGES}/{SYNC_SOURCE}.qcow2")
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "", xml)
    alpha.virsh("define", "/dev/stdin", input=xml)
    return disk


def define_data_vm(lab: Lab) -> None:
    """``shots-data`` on alpha: two raw disks of 1 GiB holding 64 and 40 MiB of random data."""
    alpha, state = lab.runtime("alpha"), lab.state()
    devices = []
    for seed, (target, data) in enumerate(DATA_DISKS.items()):
        disk = f"{IMAGES}/{DATA_VM}-{target}.raw"
        local = alpha.layout.host_path(alpha.host.name, disk)
        make_disk(local, "raw", 1 << 30, [Extent(0, data)], seed=seed)
        devices.append(
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{disk}'/><target dev='{target}' bus='virtio'/></disk>"
        )
    xml = domain_xml(DATA_VM, state.domain_type if state else "qemu", devices, vcpus=2)
    alpha.virsh("define", "/dev/stdin", input=xml)


def guest_write(disk: Path, offset: int, length: int, pattern: int) -> None:
    """Change the guest's data as the guest would: through qcow2 (its dirty bitmaps see it)."""
    write = f"write -P {pattern:#x} {offset} {length}"
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", write, str(disk)], capture_output=True, check=True
    )


def undo_uuids(pool: Path) -> set[str]:
    """The clone UUIDs of the sync undo logs in ``pool`` that belong to this script's VMs
    (their manifest ``.kvmclone-undo-<uuid>.json`` names the clone)."""
    found: set[str] = set()
    for manifest in pool.glob(".kvmclone-undo-*.json"):
        try:
            undo = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(undo, dict) and str(undo.get("target", "")).startswith(PREFIX):
            found.add(str(undo.get("uuid", "")))
    return found - {""}


def ours(file_name: str, uuids: set[str]) -> bool:
    """A file of this script's VMs: theirs, their block indexes, their jobs' staged files and
    their sync undo logs."""
    if file_name.startswith(PREFIX):
        return True
    if not file_name.startswith(".kvmclone-"):
        return False
    return f"-{PREFIX}" in file_name or any(f"-{uuid}" in file_name for uuid in uuids)


def clean_lab(lab: Lab) -> None:
    """Remove every ``shots-…`` VM, file and pool from the lab's hosts."""
    for runtime in lab.runtimes():
        if not runtime.is_up():
            continue
        pool = images(runtime)
        uuids = undo_uuids(pool)
        for name in runtime.virsh("list", "--all", "--name", check=False).split():
            if name.startswith(PREFIX):
                uuids.add(runtime.virsh("domuuid", name, check=False).strip())
                runtime.virsh("destroy", "--domain", name, check=False)
                undefine = ("undefine", "--domain", name, "--nvram", "--checkpoints-metadata")
                runtime.virsh(*undefine, check=False)
        remove_small_pool(runtime, SMALL_POOL)
        uuids.discard("")
        for path in pool.iterdir():
            if ours(path.name, uuids):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)


# -- the pictures ----------------------------------------------------------------------------------


async def main_details_help(config: Config, out: Path, size: tuple[int, int]) -> list[Path]:
    """The hosts side by side (two VMs marked), a VM's details, the help."""
    app = KVMCloneApp(config.default_hosts, config=config)
    saved: list[Path] = []
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        alpha = app.panes[0]
        names = [str(row.key.value) for row in alpha.table.ordered_rows]
        for name in ("db01", "web01"):  # two marked VMs
            if name in names:
                alpha.table.move_cursor(row=alpha.table.get_row_index(name))
                await pilot.press("space")
        alpha.table.move_cursor(row=alpha.table.get_row_index("linked01"))
        await pilot.pause()
        saved.append(Path(app.save_screenshot("main.svg", str(out))))

        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, VMDetailsScreen), "the details")
        await pilot.pause(0.2)
        saved.append(Path(app.save_screenshot("details.svg", str(out))))
        await pilot.press("escape")

        await pilot.press("question_mark")
        await pilot.pause(0.2)
        saved.append(Path(app.save_screenshot("help.svg", str(out))))
    return saved


async def clone_dialog(
    app: KVMCloneApp,
    pilot: AppPilot,
    names: dict[str, str],
    bandwidth: str,
    pool: str | None = None,
) -> None:
    """``c`` on alpha's VMs ``names`` (VM -> new name; several are marked first), beta, then
    the dialog: the new names, pool and bandwidth limit; ``ctrl+s`` once the plans are ready;
    returns when the jobs run."""
    alpha = app.panes[0]
    for vm in names:
        put_cursor(alpha, vm)
        if len(names) > 1:
            await pilot.press("space")  # marked; one VM is cloned from the cursor
    await pilot.press("c")
    await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "the host list")
    await pilot.press("enter")  # the first other host: beta
    await wait_until(pilot, lambda: isinstance(app.screen, CloneDialog), "the clone dialog")
    dialog = app.screen
    assert isinstance(dialog, CloneDialog) and dialog.request.dest == "beta"
    new_names = [names[vm.name] for vm in dialog.request.vms]
    for i, name in enumerate(new_names):
        dialog.query_one(f"#name-{i}", Input).value = name
    dialog.query_one("#bandwidth", Input).value = bandwidth
    if pool is not None:
        dialog.query_one("#pool", Input).value = pool

    def ready() -> bool:
        plans = [p for p in dialog.plans if not isinstance(p, str)]
        return dialog.ready and [p.new_name for p in plans] == new_names

    await wait_until(pilot, ready, f"the plans of {', '.join(new_names)}", 60)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: len(app.jobs.views) == len(names), "the jobs")


async def jobs(lab: Lab, config: Config, out: Path, size: tuple[int, int]) -> Path:
    """shots-data (two disks, 104 MiB of data) cloned to beta at 8 MiB/s per disk, shot while
    both files are mid-way."""
    await asyncio.to_thread(define_data_vm, lab)
    app = KVMCloneApp(["alpha", "beta"], config=config)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await wait_until(pilot, lambda: DATA_VM in app.panes[0].table.vms, f"{DATA_VM} on alpha")
        await clone_dialog(app, pilot, {DATA_VM: DATA_VM}, "8M")
        (view,) = app.jobs.views
        files = list(view.state.files.values())

        def mid_copy() -> bool:
            return not view.status.active or files[0].fraction >= 0.4

        await wait_until(pilot, mid_copy, "the copy to get mid-way", TIMEOUT)
        await pilot.pause(0.3)  # a repaint
        if not view.status.active or any(f.finished for f in files):
            shown = ", ".join(f"{f.label} {f.fraction:.0%}" for f in files)
            await give_up(pilot, f"{view.status.label} before the picture: {shown}")
        shot = Path(app.save_screenshot("jobs.svg", str(out)))
        await wait_until(pilot, lambda: not view.status.active, "the clone to finish", TIMEOUT)
        if view.status is not JobStatus.DONE:
            await give_up(pilot, f"{view.state.title} ended {view.status.label}")
    return shot


async def rollback(lab: Lab, config: Config, out: Path, size: tuple[int, int]) -> Path:
    """db01 cloned into a 128 MiB pool on beta that fills up mid-copy: the prompt; then r."""
    beta = lab.runtime("beta")
    path = await asyncio.to_thread(make_small_pool, beta, SMALL_POOL, SMALL_POOL_MIB)
    app = KVMCloneApp(["alpha", "beta"], config=config)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await clone_dialog(app, pilot, {"db01": FAILED_CLONE}, "2M", pool=SMALL_POOL)
        (view,) = app.jobs.views
        await wait_until(pilot, lambda: view.state.done_bytes > 0, "the copy to start", 60)
        await asyncio.to_thread(fill, beta, path)  # the pool is full mid-copy
        await wait_until(
            pilot, lambda: isinstance(app.screen, RollbackScreen), "the prompt", TIMEOUT
        )
        await pilot.pause(0.3)
        shot = Path(app.save_screenshot("rollback.svg", str(out)))
        await pilot.press("r")
        await wait_until(pilot, lambda: not view.status.active, "the rollback", TIMEOUT)
        if view.status is not JobStatus.ROLLED_BACK:
            await give_up(pilot, f"the failed clone ended {view.status.label}")
    return shot


async def sync(lab: Lab, config: Config, out: Path, size: tuple[int, int]) -> Path:
    """A clone of a private app.v2 synced twice after the source's disk changed; the second
    sync (slowed to 4 MiB/s by the config's bandwidth limit) shot mid-copy."""
    alpha = lab.runtime("alpha")
    disk = await asyncio.to_thread(define_sync_source, alpha)
    async with KVMCloneClient(config) as client:
        await client.clone_vm("alpha", "beta", SYNC_SOURCE, check=True)
    await asyncio.to_thread(guest_write, disk, 64 * MiB, 256 << 10, 0x5A)
    slow = dataclasses.replace(
        config, clone=dataclasses.replace(config.clone, bandwidth_limit="4M")
    )
    app = KVMCloneApp(["alpha", "beta"], config=slow)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        table = app.panes[0].table
        await wait_until(pilot, lambda: SYNC_SOURCE in table.vms, f"{SYNC_SOURCE} in alpha's pane")
        put_cursor(app.panes[0], SYNC_SOURCE)
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, DestinationScreen), "the host list")
        await pilot.press("enter")  # beta
        await wait_until(pilot, lambda: isinstance(app.screen, SyncDialog), "the sync dialog")
        app.screen.query_one("#checkpoint", Checkbox).value = True  # keep an undo checkpoint
        await pilot.pause(0.1)
        await pilot.press("enter")  # the same name: syncs once the plan allows it
        await wait_until(pilot, lambda: bool(app.jobs.sync_views), "the sync session", 60)
        (view,) = app.jobs.sync_views
        await wait_until(pilot, lambda: not view.status.active and view.runs, "sync 1", TIMEOUT)
        if view.status is not JobStatus.DONE:
            await give_up(pilot, f"the first sync ended {view.status.label}")

        await asyncio.to_thread(guest_write, disk, 128 * MiB, 24 * MiB, 0xA5)
        await pilot.press("R")  # the same pair and settings again (this focuses the session)
        await wait_until(pilot, lambda: view.status.active, "sync 2 to start")
        put_cursor(app.panes[0], SYNC_SOURCE)  # back to the VM: the session shows its short log

        def mid_copy() -> bool:
            if not view.status.active:
                return True
            return any(f.fraction >= 0.4 and not f.finished for f in view.files.values())

        await wait_until(pilot, mid_copy, "sync 2 to get mid-way", TIMEOUT)
        await pilot.pause(0.3)  # a repaint
        if not view.status.active or any(f.finished for f in view.files.values()):
            await give_up(pilot, f"sync 2 got too far before the picture: {view.status.label}")
        shot = Path(app.save_screenshot("sync.svg", str(out)))
        await wait_until(pilot, lambda: not view.status.active, "sync 2", TIMEOUT)
        if view.status is not JobStatus.DONE:
            await give_up(pilot, f"the second sync ended {view.status.label}")
    return shot


async def take(out: Path, size: tuple[int, int]) -> list[Path]:
    """Drive the app on the lab and save every SVG into ``out``."""
    state_dir = default_state_dir()
    config_file = running_lab_config(state_dir)
    if config_file is None:
        raise SystemExit("screenshots: no lab is up; run `kvm-clone lab up` first")
    config = load_config(config_file, environ={})
    lab = Lab(LabLayout(state_dir), default_cache_dir())
    await asyncio.to_thread(clean_lab, lab)  # what an interrupted run left
    try:
        saved = await main_details_help(config, out, size)
        saved.append(await jobs(lab, config, out, size))
        saved.append(await rollback(lab, config, out, size))
        saved.append(await sync(lab, config, out, size))
    finally:
        await asyncio.to_thread(clean_lab, lab)
    return saved


def to_png(svg: Path) -> Path | None:
    """Convert with rsvg-convert; None when it is not installed."""
    converter = shutil.which("rsvg-convert")
    if converter is None:
        return None
    # Textual's SVGs start text runs with no-break spaces, which librsvg drops unless told to
    # preserve white space.
    text = svg.read_text(encoding="utf-8").replace("<svg ", '<svg xml:space="preserve" ', 1)
    png = svg.with_suffix(".png")
    subprocess.run(
        [converter, "--width", str(PNG_WIDTH), "--output", str(png)],
        input=text.encode("utf-8"),
        check=True,
    )
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="output folder")
    parser.add_argument("--size", default="170x42", help="terminal size, COLSxROWS")
    args = parser.parse_args(argv)
    columns, _, rows = args.size.partition("x")
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.pop("SSH_AUTH_SOCK", None)  # the relay route, whatever agent this machine has
    with tempfile.TemporaryDirectory(prefix="kvm-clone-screenshots-") as state:
        os.environ["KVM_CLONE_STATE_DIR"] = state  # the clones' journals: not the user's
        svgs = asyncio.run(take(args.out, (int(columns), int(rows))))
    for svg in svgs:
        png = to_png(svg)
        print(svg.relative_to(ROOT) if svg.is_relative_to(ROOT) else svg)
        if png is not None:
            print(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    if shutil.which("rsvg-convert") is None:
        print("no PNGs: install rsvg-convert (Debian: apt-get install librsvg2-bin)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
