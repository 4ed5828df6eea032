"""Incremental sync (hash mode) between lab hosts: only what changed moves, interruptions resume."""

from __future__ import annotations

import asyncio
import random

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.errors import KVMCloneError
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.engine.sync import SyncRefused
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES, cut_off_mid_sync, sha256

KiB = 1024


@pytest.fixture
def source_vm(lab: Lab) -> tuple[str, object]:
    """A private copy of db01 on alpha (raw + qcow2 disks) that the test may change."""
    alpha = lab.runtime("alpha")
    name = "sync-src"
    images = lab.layout.host_path("alpha", IMAGES)
    for disk, fmt in (("sys/disk.img", "img"), ("data/disk.img", "qcow2")):
        (images / f"{name}-{fmt}").write_bytes((images / "db01" / disk).read_bytes())
    xml = alpha.virsh("dumpxml", "--inactive", "db01")
    xml = xml.replace("<name>db01</name>", f"<name>{name}</name>")
    xml = xml.replace(f"{IMAGES}/db01/sys/disk.img", f"{IMAGES}/{name}-img")
    xml = xml.replace(f"{IMAGES}/db01/data/disk.img", f"{IMAGES}/{name}-qcow2")
    import re

    xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
    xml = re.sub(r"<mac address='[^']*'/>", "<mac address='52:54:00:6c:ab:77'/>", xml)
    alpha.virsh("define", "/dev/stdin", input=xml)
    yield name, images
    alpha.virsh("undefine", "--domain", name, "--checkpoints-metadata", check=False)
    for suffix in ("img", "qcow2"):
        (images / f"{name}-{suffix}").unlink(missing_ok=True)


def change_raw(path: object, pieces: int, seed: int) -> int:
    """Overwrite ``pieces`` random 64 KiB-aligned pieces with new data; return bytes changed."""
    rng = random.Random(seed)
    with open(path, "r+b") as f:  # type: ignore[call-overload]
        for _ in range(pieces):
            f.seek(rng.randrange(0, 8 << 20, 64 * KiB))
            f.write(rng.randbytes(64 * KiB))
    return pieces * 64 * KiB


async def test_sync_moves_only_changed_blocks_and_keeps_the_clone_identity(
    lab: Lab,
    lab_config: Config,
    clean_beta: LabHostRuntime,
    source_vm: tuple[str, object],
    no_agent: None,
) -> None:
    name, images = source_vm
    async with KVMCloneClient(lab_config) as client:
        clone = await client.clone_vm("alpha", "beta", name, new_name="sync-dst", check=True)
        changed = change_raw(images / f"{name}-img", 5, seed=1)  # type: ignore[operator]
        # Zero a block that had data: the clone must read zeros there afterwards.
        with open(images / f"{name}-img", "r+b") as f:  # type: ignore[operator]
            f.seek(4 << 20)
            f.write(bytes(64 * KiB))
        result = await client.sync_vm("alpha", "beta", name, target_name="sync-dst", check=True)
        again = await client.sync_vm("alpha", "beta", name, target_name="sync-dst", check=True)
    dest = lab.layout.host_path("beta", f"{IMAGES}/sync-dst-vda.img")
    assert sha256(dest) == sha256(images / f"{name}-img")  # type: ignore[operator]
    assert sha256(lab.layout.host_path("beta", f"{IMAGES}/sync-dst-vdb.qcow2")) == sha256(
        images / f"{name}-qcow2"
    )  # type: ignore[operator]
    assert changed <= result.changed_bytes <= changed + 64 * KiB
    assert result.bytes_sent <= 1.5 * (changed + 64 * KiB)
    assert again.changed_bytes == 0 and again.bytes_sent == 0
    xml = clean_beta.virsh("dumpxml", "sync-dst")
    assert clean_beta.virsh("domuuid", "sync-dst").strip() == clone.uuid
    assert "52:54:00:6c:ab:77" not in xml  # the clone keeps its own MAC
    assert read_clone_metadata(xml)["sync-state"] == "synced"


async def test_sync_refuses_what_is_not_its_clone_or_running(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", "app.v2", new_name="not-a-web01-clone", check=True)
        with pytest.raises(SyncRefused, match="not a clone"):
            await client.sync_vm(
                "alpha", "beta", "web01", target_name="not-a-web01-clone", check=True
            )
        with pytest.raises(KVMCloneError, match="clone it first"):
            await client.plan_sync("alpha", "beta", "writer", None)


async def test_interrupted_sync_is_marked_and_resumes(
    lab: Lab,
    lab_config: Config,
    clean_beta: LabHostRuntime,
    source_vm: tuple[str, object],
    no_agent: None,
) -> None:
    name, images = source_vm
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", name, new_name="sync-cut", check=True)
        change_raw(images / f"{name}-img", 60, seed=2)  # type: ignore[operator]
        task = asyncio.ensure_future(
            client.sync_vm(
                "alpha", "beta", name, target_name="sync-cut", bandwidth_limit=512 * KiB, check=True
            )
        )
        await cut_off_mid_sync(clean_beta, "sync-cut", task, after=1.0)
        xml = clean_beta.virsh("dumpxml", "sync-cut")
        assert read_clone_metadata(xml)["sync-state"] == "in-progress"  # never claims done
        plan = await client.plan_sync(
            "alpha", "beta", name, client.sync_options(target_name="sync-cut")
        )
        assert any("resumes" in w.message for w in plan.warnings)
        await client.sync_vm("alpha", "beta", name, target_name="sync-cut", check=True)
    assert sha256(lab.layout.host_path("beta", f"{IMAGES}/sync-cut-vda.img")) == sha256(
        images / f"{name}-img"
    )  # type: ignore[operator]
    assert read_clone_metadata(clean_beta.virsh("dumpxml", "sync-cut"))["sync-state"] == "synced"
