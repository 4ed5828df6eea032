"""Live clone of the lab's running `writer` VM, whose guest writes to its disk all the time."""

from __future__ import annotations

import re
import shutil
import time

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.lab.guest import DATA_START, SLOT_COUNT, SLOT_SIZE, scan_disk_markers
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES, leftovers


def assert_one_point_in_time(markers: dict[int, int]) -> int:
    """The records a consistent image holds: the last SLOT_COUNT counters, each in its slot."""
    assert markers, "no write records on the disk"
    last = max(markers.values())
    expected = range(max(1, last - SLOT_COUNT + 1), last + 1)
    assert sorted(markers.values()) == list(expected)
    for offset, counter in markers.items():
        assert offset == DATA_START + (counter % SLOT_COUNT) * SLOT_SIZE
    return last


async def test_live_clone_of_a_writing_guest_is_one_point_in_time_and_boots(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    alpha = lab.runtime("alpha")
    assert alpha.virsh("domstate", "writer").strip() == "running"
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", "writer", new_name="writer-live")
        assert plan.ok and plan.live, plan.conflicts
        result = await client.clone_vm(
            "alpha", "beta", "writer", new_name="writer-live", check=True
        )
    assert result.consistency == "crash-consistent"  # the busybox guest has no agent
    assert alpha.virsh("domstate", "writer").strip() == "running"  # never stopped
    copied = lab.layout.host_path("beta", f"{IMAGES}/writer-live-vda.img")
    taken = assert_one_point_in_time(scan_disk_markers(copied))
    source_now = max(
        scan_disk_markers(lab.layout.host_path("alpha", f"{IMAGES}/writer.raw")).values()
    )
    assert taken <= source_now
    assert [n for n in leftovers(clean_beta) if "writer-live" in n] == []
    assert not [
        p
        for p in lab.layout.host_path("alpha", IMAGES).iterdir()
        if p.name.startswith(".kvmclone-scratch-")
    ]

    # The clone boots: its guest reaches init and writes on after the copied records.
    for name in ("writer-vmlinuz", "writer-initrd.gz"):
        target = lab.layout.host_path("beta", f"/var/lib/libvirt/boot/{name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lab.layout.host_path("alpha", f"/var/lib/libvirt/boot/{name}"), target)
    clean_beta.virsh("start", "writer-live")
    xml = clean_beta.virsh("dumpxml", "writer-live")
    console = re.search(r"<source path='([^']+console[^']*)'", xml)
    assert console is not None, xml
    log = lab.layout.host_path("beta", console.group(1))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "KVMCLONE-WROTE" in text:
            break
        time.sleep(1)
    assert "KVMCLONE-GUEST-READY" in text and "KVMCLONE-WROTE" in text, text[-2000:]
    clean_beta.virsh("destroy", "writer-live")
