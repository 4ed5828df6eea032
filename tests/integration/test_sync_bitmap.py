"""Bitmap-mode sync between lab hosts: checkpoints, dirty blocks only, fallbacks, undo."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.engine.sync import SyncRefused
from kvm_clone_tui.engine.sync_undo import RevertRefused
from kvm_clone_tui.lab.guest import scan_disk_markers
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import (
    IMAGES,
    cut_off_mid_sync,
    drop_source_checkpoints,
    leftovers,
)
from tests.integration.test_live_clone import assert_one_point_in_time

KiB, MiB = 1024, 1024 * 1024
NAME, CLONE = "bm-src", "bm-dst"


@pytest.fixture
def qcow2_vm(lab: Lab) -> Iterator[Path]:
    """A private qcow2 VM on alpha (a copy of app.v2) that the test may change; its image."""
    alpha = lab.runtime("alpha")
    images = lab.layout.host_path("alpha", IMAGES)
    image = images / f"{NAME}.qcow2"
    shutil.copyfile(images / "app.v2.qcow2", image)
    xml = alpha.virsh("dumpxml", "--inactive", "app.v2")
    xml = xml.replace("<name>app.v2</name>", f"<name>{NAME}</name>")
    xml = xml.replace(f"{IMAGES}/app.v2.qcow2", f"{IMAGES}/{NAME}.qcow2")
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "", xml)
    alpha.virsh("define", "/dev/stdin", input=xml)
    yield image
    alpha.virsh("destroy", "--domain", NAME, check=False)
    drop_source_checkpoints(alpha)
    alpha.virsh("undefine", "--domain", NAME, check=False)
    image.unlink(missing_ok=True)


def qemu_io(image: Path, *commands: str) -> None:
    argv = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        argv += ["-c", command]
    done = subprocess.run([*argv, str(image)], capture_output=True, text=True, check=True)
    assert "failed" not in done.stdout, done.stdout


def same_guest_data(a: Path, b: Path) -> bool:
    """What the guests see is identical (qcow2 layouts may differ)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(a), str(b)],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def bitmaps(image: Path) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return (
        re.findall(r'"name": "([^"]+)"', out.split('"bitmaps"', 1)[-1]) if "bitmaps" in out else []
    )


def clone_meta(runtime: LabHostRuntime, name: str) -> dict[str, str]:
    return read_clone_metadata(runtime.virsh("dumpxml", "--inactive", name))


async def test_bitmap_sync_moves_only_dirty_blocks_and_rolls_the_checkpoint(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, qcow2_vm: Path, no_agent: None
) -> None:
    alpha = lab.runtime("alpha")
    dest = lab.layout.host_path("beta", f"{IMAGES}/{CLONE}-vda.qcow2")
    async with KVMCloneClient(lab_config) as client:
        clone = await client.clone_vm("alpha", "beta", NAME, new_name=CLONE, check=True)
        first = f"kvmclone-{clone.job_id}"
        assert clone_meta(clean_beta, CLONE)["checkpoint"] == first
        assert alpha.virsh("checkpoint-list", "--domain", NAME, "--name").split() == [first]
        assert bitmaps(qcow2_vm) == [first] and bitmaps(dest) == []  # not copied along
        qemu_io(qcow2_vm, "write -P 0x5a 8M 192k", "write -z 64M 64k")  # new data, and zeros
        plan = await client.plan_sync("alpha", "beta", NAME, client.sync_options(target_name=CLONE))
        assert plan.mode == "bitmap", plan.mode_reason
        result = await client.run_sync_plan(plan)
        again = await client.sync_vm("alpha", "beta", NAME, target_name=CLONE, check=True)
    assert result.mode == "bitmap"
    assert result.changed_bytes == 192 * KiB and result.bytes_sent == 192 * KiB
    assert same_guest_data(qcow2_vm, dest)
    second = f"kvmclone-{result.job_id}"
    third = f"kvmclone-{again.job_id}"
    assert again.mode == "bitmap" and again.bytes_sent == 0
    assert alpha.virsh("checkpoint-list", "--domain", NAME, "--name").split() == [third]
    assert bitmaps(qcow2_vm) == [third] and second != third
    meta = clone_meta(clean_beta, CLONE)
    assert meta["checkpoint"] == third and meta["sync-state"] == "synced"
    assert leftovers(clean_beta) == []


async def test_bitmap_mode_falls_back_to_hash_and_says_why(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, qcow2_vm: Path, no_agent: None
) -> None:
    dest = lab.layout.host_path("beta", f"{IMAGES}/{CLONE}-vda.qcow2")
    async with KVMCloneClient(lab_config) as client:
        clone = await client.clone_vm("alpha", "beta", NAME, new_name=CLONE, check=True)
        options = client.sync_options(target_name=CLONE)
        # The clone was changed behind kvm-clone's back (as a boot would): hash mode.
        qemu_io(dest, "write -P 0x11 1M 64k")
        plan = await client.plan_sync("alpha", "beta", NAME, options)
        assert plan.mode == "hash" and "changed since the last sync" in plan.mode_reason
        strict = await client.plan_sync(
            "alpha", "beta", NAME, client.sync_options(target_name=CLONE, mode="bitmap")
        )
        assert not strict.ok and "bitmap mode is impossible" in strict.conflicts[0].message
        with pytest.raises(SyncRefused):
            await client.run_sync_plan(strict)
        hashed = await client.run_sync_plan(plan)
        assert hashed.mode == "hash" and same_guest_data(qcow2_vm, dest)
        # The hash sync left a new checkpoint: bitmap mode again.
        plan = await client.plan_sync("alpha", "beta", NAME, options)
        assert plan.mode == "bitmap", plan.mode_reason
        assert plan.base_checkpoint == f"kvmclone-{hashed.job_id}" != f"kvmclone-{clone.job_id}"
        # The bitmap is gone from the image (e.g. a qemu-img convert): hash mode.
        subprocess.run(
            ["qemu-img", "bitmap", "--remove", str(qcow2_vm), plan.base_checkpoint], check=True
        )
        plan = await client.plan_sync("alpha", "beta", NAME, options)
        assert plan.mode == "hash" and "has no bitmap" in plan.mode_reason
        await client.run_sync_plan(plan)
        # The disk grew on the source: hash mode, and the clone grows too.
        subprocess.run(["qemu-img", "resize", "-q", str(qcow2_vm), "+1M"], check=True)
        qemu_io(qcow2_vm, "write -P 0x22 512M 64k")
        await client.inventory("alpha")
        plan = await client.plan_sync("alpha", "beta", NAME, options)
        assert plan.mode == "hash" and "resized" in plan.mode_reason
        await client.run_sync_plan(plan)
    assert same_guest_data(qcow2_vm, dest)
    assert leftovers(clean_beta) == []


async def test_checkpointed_sync_reverts_on_request_and_by_itself_on_failure(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, qcow2_vm: Path, no_agent: None
) -> None:
    dest = lab.layout.host_path("beta", f"{IMAGES}/{CLONE}-vda.qcow2")
    before = dest.with_name("bm-before.qcow2")
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", NAME, new_name=CLONE, check=True)
        shutil.copyfile(dest, before)
        try:
            qemu_io(qcow2_vm, "write -P 0x33 2M 256k", "write -z 64M 64k")
            result = await client.sync_vm(
                "alpha", "beta", NAME, target_name=CLONE, checkpoint=True, check=True
            )
            assert result.revertible and same_guest_data(qcow2_vm, dest)
            assert any(n.startswith(".kvmclone-undo-") for n in leftovers(clean_beta))
            reverted = await client.revert_sync("beta", CLONE)
            assert reverted.restored_bytes >= 256 * KiB
            assert same_guest_data(before, dest) and not same_guest_data(qcow2_vm, dest)
            assert leftovers(clean_beta) == []
            with pytest.raises(RevertRefused, match="no checkpoint to go back to"):
                await client.revert_sync("beta", CLONE)
            plan = await client.plan_sync(
                "alpha", "beta", NAME, client.sync_options(target_name=CLONE)
            )
            assert plan.mode == "hash" and "reverted" in plan.mode_reason
            await client.run_sync_plan(plan)  # back to the source's state (and a checkpoint)
            shutil.copyfile(dest, before)
            # A slow checkpointed sync, cancelled half-way: the clone goes back by itself.
            qemu_io(qcow2_vm, "write -P 0x44 16M 6M")
            task = asyncio.ensure_future(
                client.sync_vm(
                    "alpha",
                    "beta",
                    NAME,
                    target_name=CLONE,
                    checkpoint=True,
                    bandwidth_limit=1 * MiB,
                    check=True,
                )
            )
            await asyncio.sleep(3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert same_guest_data(before, dest)
            meta = clone_meta(clean_beta, CLONE)
            assert meta.get("sync-state") == "synced"
            plan = await client.plan_sync(
                "alpha", "beta", NAME, client.sync_options(target_name=CLONE)
            )
            assert plan.mode == "bitmap", plan.mode_reason  # the old checkpoint still serves
            done = await client.run_sync_plan(plan)
            assert done.changed_bytes == 6 * MiB
        finally:
            before.unlink(missing_ok=True)
    assert same_guest_data(qcow2_vm, dest)
    assert leftovers(clean_beta) == []
    names = lab.runtime("alpha").virsh("checkpoint-list", "--domain", NAME, "--name").split()
    assert names == [f"kvmclone-{done.job_id}"]


WRITER = "bm-writer"


@pytest.fixture
def running_qcow2_writer(lab: Lab) -> Iterator[Path]:
    """A running guest on alpha that keeps writing records to its qcow2 disk; its image."""
    alpha = lab.runtime("alpha")
    images = lab.layout.host_path("alpha", IMAGES)
    image = images / f"{WRITER}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    xml = alpha.virsh("dumpxml", "--inactive", "writer")
    xml = xml.replace("<name>writer</name>", f"<name>{WRITER}</name>")
    xml = xml.replace(f"{IMAGES}/writer.raw", f"{IMAGES}/{WRITER}.qcow2")
    xml = xml.replace("type='raw'", "type='qcow2'").replace("writer-console", f"{WRITER}-console")
    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "", xml)
    alpha.virsh("define", "/dev/stdin", input=xml)
    alpha.virsh("start", WRITER)
    yield image
    alpha.virsh("destroy", "--domain", WRITER, check=False)
    drop_source_checkpoints(alpha)
    alpha.virsh("undefine", "--domain", WRITER, check=False)
    image.unlink(missing_ok=True)


def markers_of(image: Path, tmp: Path) -> dict[int, int]:
    """The guest's write records in a qcow2 image (read through a raw copy)."""
    raw = tmp / "scan.raw"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True
    )
    try:
        return scan_disk_markers(raw)
    finally:
        raw.unlink()


async def test_bitmap_sync_of_a_running_source_moves_its_writes_at_one_point_in_time(
    lab: Lab,
    lab_config: Config,
    clean_beta: LabHostRuntime,
    running_qcow2_writer: Path,
    no_agent: None,
    tmp_path: Path,
) -> None:
    alpha = lab.runtime("alpha")
    dest = lab.layout.host_path("beta", f"{IMAGES}/{WRITER}-vda.qcow2")
    async with KVMCloneClient(lab_config) as client:
        for _ in range(120):  # the guest boots (TCG) and starts writing
            if markers_of(running_qcow2_writer, tmp_path):
                break
            await asyncio.sleep(1)
        clone = await client.clone_vm("alpha", "beta", WRITER, check=True)
        assert clone_meta(clean_beta, WRITER)["checkpoint"] == f"kvmclone-{clone.job_id}"
        at_clone = assert_one_point_in_time(markers_of(dest, tmp_path))
        await asyncio.sleep(4)  # the guest writes on
        plan = await client.plan_sync("alpha", "beta", WRITER)
        assert plan.mode == "bitmap" and plan.source_running, plan.mode_reason
        result = await client.run_sync_plan(plan)
    assert alpha.virsh("domstate", WRITER).strip() == "running"  # never stopped
    assert result.mode == "bitmap" and 0 < result.changed_bytes < 8 * MiB
    assert result.consistency == "crash-consistent"  # the lab's guest has no guest agent
    at_sync = assert_one_point_in_time(markers_of(dest, tmp_path))
    assert at_sync > at_clone
    names = alpha.virsh("checkpoint-list", "--domain", WRITER, "--name").split()
    assert names == [f"kvmclone-{result.job_id}"]
    assert leftovers(clean_beta) == []


async def test_bitmap_sync_cut_by_a_dropped_connection_resumes_in_bitmap_mode(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, qcow2_vm: Path, no_agent: None
) -> None:
    alpha = lab.runtime("alpha")
    dest = lab.layout.host_path("beta", f"{IMAGES}/{CLONE}-vda.qcow2")
    async with KVMCloneClient(lab_config) as client:
        clone = await client.clone_vm("alpha", "beta", NAME, new_name=CLONE, check=True)
        qemu_io(qcow2_vm, "write -P 0x77 8M 8M")
        task = asyncio.ensure_future(
            client.sync_vm(
                "alpha", "beta", NAME, target_name=CLONE, bandwidth_limit=1 * MiB, check=True
            )
        )
        await cut_off_mid_sync(clean_beta, CLONE, task, after=2.0)
        meta = clone_meta(clean_beta, CLONE)
        assert meta["sync-state"] == "in-progress" and meta["sync-mode"] == "bitmap"
        assert meta["checkpoint"] == f"kvmclone-{clone.job_id}"  # the base is kept
        plan = await client.plan_sync("alpha", "beta", NAME, client.sync_options(target_name=CLONE))
        assert plan.mode == "bitmap", plan.mode_reason  # the partly written clone is ours
        assert any("resumes" in w.message for w in plan.warnings)
        result = await client.run_sync_plan(plan)
    assert result.changed_bytes == 8 * MiB and same_guest_data(qcow2_vm, dest)
    assert clone_meta(clean_beta, CLONE)["sync-state"] == "synced"
    names = alpha.virsh("checkpoint-list", "--domain", NAME, "--name").split()
    assert names == [f"kvmclone-{result.job_id}"]  # neither the base nor the cut sync's
    assert leftovers(clean_beta) == []


async def test_checkpointed_sync_cut_off_from_the_clone_is_reverted_afterwards(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, qcow2_vm: Path, no_agent: None
) -> None:
    dest = lab.layout.host_path("beta", f"{IMAGES}/{CLONE}-vda.qcow2")
    before = dest.with_name("bm-before.qcow2")
    async with KVMCloneClient(lab_config) as client:
        clone = await client.clone_vm("alpha", "beta", NAME, new_name=CLONE, check=True)
        shutil.copyfile(dest, before)
        try:
            qemu_io(qcow2_vm, "write -P 0x55 8M 8M")
            task = asyncio.ensure_future(
                client.sync_vm(
                    "alpha",
                    "beta",
                    NAME,
                    target_name=CLONE,
                    checkpoint=True,
                    bandwidth_limit=1 * MiB,
                    check=True,
                )
            )
            # The clone's host is cut off: the sync cannot put it back by itself.
            await cut_off_mid_sync(clean_beta, CLONE, task, after=2.0)
            assert clone_meta(clean_beta, CLONE)["sync-state"] == "in-progress"
            assert not same_guest_data(before, dest)  # half written
            reverted = await client.revert_sync("beta", CLONE)
            assert reverted.restored_bytes > 0 and same_guest_data(before, dest)
            meta = clone_meta(clean_beta, CLONE)
            assert meta.get("sync-state") != "in-progress"
            assert meta["checkpoint"] == f"kvmclone-{clone.job_id}"
            plan = await client.plan_sync(
                "alpha", "beta", NAME, client.sync_options(target_name=CLONE)
            )
            assert plan.mode == "bitmap", plan.mode_reason  # the base still serves
            done = await client.run_sync_plan(plan)
        finally:
            before.unlink(missing_ok=True)
    assert done.changed_bytes == 8 * MiB and same_guest_data(qcow2_vm, dest)
    assert leftovers(clean_beta) == []
    names = lab.runtime("alpha").virsh("checkpoint-list", "--domain", NAME, "--name").split()
    assert names == [f"kvmclone-{done.job_id}"]
