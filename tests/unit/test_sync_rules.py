"""The sync's rules on fixed facts: every refusal and the mode choice without a host."""

from __future__ import annotations

from dataclasses import replace

from kvm_clone_tui.api.models import Disk, DiskDevice, VMState
from kvm_clone_tui.api.options import SyncOptions
from kvm_clone_tui.engine.plan_facts import RouteFacts
from kvm_clone_tui.engine.sync_plan import SyncFacts, decide_sync
from tests.unit.test_plan_rules import WEB01, XML

GiB = 1 << 30
CLONE_DISK = Disk(
    "vda", DiskDevice.DISK, "file", "/var/lib/libvirt/images/web01-vda.qcow2", "qcow2", 4 * GiB
)
CLONE = replace(WEB01, uuid="11111111-2222-4333-8444-000000000001", disks=(CLONE_DISK,))
META = (
    "<metadata><kvmclone:clone xmlns:kvmclone='https://github.com/kvm-clone/ns/1' "
    "source-host='alpha' source-uuid='{uuid}' checkpoint='kvmclone-1' dest-stamp='s1'/></metadata>"
)


def dest_xml(uuid: str = WEB01.uuid) -> str:
    clone = XML.replace(WEB01.uuid, CLONE.uuid)
    return clone.replace("<name>web01</name>", f"<name>web01</name>{META.format(uuid=uuid)}")


def facts(**changes: object) -> SyncFacts:
    base = SyncFacts(
        "alpha", "beta", WEB01, CLONE, dest_xml(), XML, RouteFacts(False), "job-1", "s1", None
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def kinds(f: SyncFacts, **options: object) -> list[str]:
    return [c.kind for c in decide_sync(f, SyncOptions(**options)).conflicts]  # type: ignore[arg-type]


def test_bitmap_mode_when_the_checkpoint_serves() -> None:
    plan = decide_sync(facts(), SyncOptions())
    assert plan.ok and plan.mode == "bitmap" and plan.base_checkpoint == "kvmclone-1"
    assert plan.dest_xml


def test_hash_mode_when_bitmap_cannot_serve() -> None:
    changed = decide_sync(facts(dest_stamp="s2"), SyncOptions())
    assert changed.ok and changed.mode == "hash" and "disks changed" in changed.mode_reason
    gone = decide_sync(facts(checkpoint_problem="no checkpoint"), SyncOptions())
    assert gone.mode == "hash" and gone.mode_reason == "bitmap mode is impossible: no checkpoint"
    assert kinds(facts(dest_stamp="s2"), mode="bitmap") == ["mode"]
    assert kinds(facts(), mode="fast") == ["mode"]


def test_not_a_clone_and_a_running_target_are_refused() -> None:
    assert kinds(facts(dest_xml=dest_xml("00000000-0000-4000-8000-00000000ffff"))) == [
        "not-a-clone"
    ]
    assert kinds(facts(target=replace(CLONE, state=VMState.RUNNING))) == ["target-state"]


def test_disk_pairs() -> None:
    assert kinds(facts(target=replace(CLONE, disks=()))) == ["disk-missing"]
    block = replace(WEB01.disks[0], source_type="block")
    assert "disk-type" in kinds(facts(vm=replace(WEB01, disks=(block,))))


def test_a_running_source_needs_bitmap_mode() -> None:
    running = replace(WEB01, state=VMState.RUNNING)
    assert kinds(facts(vm=running)) == []
    assert kinds(facts(vm=running), mode="hash") == ["source-running"]
