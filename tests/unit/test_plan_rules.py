"""The clone's rules on fixed facts: every refusal without a host (engine/plan_rules.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvm_clone_tui.api.models import VM, Disk, DiskDevice, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.plans import DirectEndpoint
from kvm_clone_tui.engine.cpu_compat import GuestCpu, HostView
from kvm_clone_tui.engine.host_port import HostLimits, PoolInfo
from kvm_clone_tui.engine.plan_facts import CloneFacts, RouteFacts, TpmFacts
from kvm_clone_tui.engine.plan_rules import decide, decide_route
from kvm_clone_tui.engine.tpm_state import TpmDevice

GiB = 1 << 30
XML = (
    "<domain type='kvm'><name>web01</name><uuid>00000000-0000-4000-8000-000000000001</uuid>"
    "<memory unit='KiB'>1048576</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
    "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    "<source file='/var/lib/libvirt/images/web01.qcow2'/><target dev='vda' bus='virtio'/>"
    "</disk></devices></domain>"
)
DISK = Disk(
    "vda", DiskDevice.DISK, "file", "/var/lib/libvirt/images/web01.qcow2", "qcow2", 4 * GiB, GiB
)
WEB01 = VM(
    name="web01",
    uuid="00000000-0000-4000-8000-000000000001",
    state=VMState.SHUT_OFF,
    vcpus=1,
    memory_kib=1 << 20,
    autostart=False,
    persistent=True,
    domain_type="kvm",
    disks=(DISK,),
)


def facts(**changes: object) -> CloneFacts:
    base = CloneFacts(
        source="alpha",
        dest="beta",
        vm=WEB01,
        new_name="web01",
        job_id="20260101-000000-aaaaaaaa",
        new_uuid="11111111-2222-4333-8444-000000000001",
        pool="default",
        pool_info=PoolInfo("/var/lib/libvirt/images", 100 * GiB),
        source_xml=XML,
        guest_cpu=GuestCpu(virttype="kvm", arch=None, machine=None, mode="none"),
        source_cpu=HostView("alpha"),
        dest_cpu=HostView("beta"),
        limits=HostLimits(64 << 10, 16, "<guest><domain type='kvm'/></guest>"),
        route=RouteFacts(agent_forwarding=False),
        stats=({"kind": "file", "link": False, "real": DISK.path},),
        extents={DISK.path: {"size": 4 * GiB, "allocated": GiB}},
        dest_probe={"qemu_img": True, "zstd": True},
        source_zstd=True,
        dest_peer="192.0.2.3",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def kinds(f: CloneFacts, **options: object) -> list[str]:
    return [c.kind for c in decide(f, CloneOptions(**options)).conflicts]  # type: ignore[arg-type]


def test_a_clean_plan_has_no_conflict_and_a_definition() -> None:
    plan = decide(facts(), CloneOptions())
    assert plan.ok and plan.dest_xml and plan.files[0].final_path.endswith("/web01-vda.qcow2")
    assert plan.required_space == GiB + (64 << 20)
    assert (plan.route, plan.compress) == ("relay", True)


def test_an_unusable_pool_refuses_with_its_message() -> None:
    plan = decide(facts(pool_info=PoolInfo(None, 0, "pool 'x' is not active")), CloneOptions())
    assert [(c.kind, c.message) for c in plan.conflicts] == [("pool", "pool 'x' is not active")]


def test_source_state_live_warns_and_others_refuse() -> None:
    running = decide(facts(vm=replace(WEB01, state=VMState.RUNNING)), CloneOptions())
    assert any(w.kind == "live" for w in running.warnings) and running.files[0].live_export
    crashed = decide(facts(vm=replace(WEB01, state=VMState.CRASHED)), CloneOptions())
    [conflict] = crashed.conflicts
    assert conflict.kind == "vm-state" and conflict.fix == "start or shut it down first"


def test_own_host_needs_a_new_name() -> None:
    assert kinds(facts(dest="alpha")) == ["same-host"]


def test_an_existing_vm_refuses_or_is_replaced_or_is_already_done() -> None:
    other = replace(WEB01, uuid="00000000-0000-4000-8000-000000000009")
    assert kinds(facts(existing=other)) == ["name-taken"]
    assert kinds(facts(existing=other), force=True) == []
    assert decide(facts(existing=other), CloneOptions(force=True)).replace_existing
    running = replace(other, state=VMState.RUNNING)
    assert kinds(facts(existing=running), force=True) == ["replace-running"]
    done = decide(facts(existing=other, existing_is_clone=True), CloneOptions(idempotent=True))
    assert done.ok and done.already_done


def test_disks_that_are_not_files_are_refused() -> None:
    block = Disk("vdb", DiskDevice.DISK, "block", "/dev/sdb", "raw", GiB, GiB)
    assert "disk-type" in kinds(facts(vm=replace(WEB01, disks=(DISK, block))))


def test_unsafe_and_unreadable_source_files_are_refused() -> None:
    odd = replace(DISK, path="/var/lib/../../etc/shadow")
    assert kinds(facts(vm=replace(WEB01, disks=(odd,)), stats=None)) == ["unsafe-path"]
    gone = ({"error": "No such file or directory"},)
    assert kinds(facts(stats=gone)) == ["source-file"]
    device = ({"kind": "block", "link": False, "real": DISK.path},)
    assert kinds(facts(stats=device)) == ["source-file"]
    link = ({"kind": "file", "link": True, "real": DISK.path},)
    assert any(w.kind == "symlink" for w in decide(facts(stats=link), CloneOptions()).warnings)


def test_tpm_rules() -> None:
    tpm = TpmDevice("tpm-crb", "emulator", "2.0", False, False)
    two = TpmFacts((tpm, tpm))
    assert kinds(facts(tpm=two)) == ["tpm"]
    state = {"exists": True, "bytes": 100, "digest": "ab"}
    assert kinds(facts(tpm=TpmFacts((tpm,), False, state))) == ["tpm"]
    unreadable = TpmFacts((tpm,), True, read_error="permission denied")
    assert kinds(facts(tpm=unreadable)) == ["tpm"]
    plan = decide(facts(tpm=TpmFacts((tpm,), True, state)), CloneOptions())
    assert plan.ok and plan.tpm is not None and plan.tpm.size == 100
    fresh = decide(facts(tpm=TpmFacts((tpm,), True, {"exists": False})), CloneOptions())
    assert fresh.tpm is None and any(w.kind == "tpm" for w in fresh.warnings)


def test_taken_paths_tools_and_space() -> None:
    taken = frozenset({"/var/lib/libvirt/images/web01-vda.qcow2"})
    assert kinds(facts(taken=taken)) == ["path-taken"]
    live = replace(WEB01, state=VMState.RUNNING)
    [tool] = decide(facts(vm=live, dest_probe={}), CloneOptions()).conflicts
    assert tool.kind == "tool-missing" and tool.fix == "apt-get install qemu-utils"
    small = facts(pool_info=PoolInfo("/var/lib/libvirt/images", GiB))
    assert kinds(small) == ["space"]


def test_limits_warn() -> None:
    plan = decide(facts(limits=HostLimits(512, 0, "")), CloneOptions())
    assert [w.kind for w in plan.warnings] == ["memory", "cpus", "kvm"]


def test_cpu_the_destination_cannot_give_is_refused() -> None:
    guest = GuestCpu(virttype="kvm", arch="x86_64", machine="pc-q35-9.9", mode="custom")
    dest = HostView("beta", machine_error="unknown machine type pc-q35-9.9")
    assert "cpu" in kinds(facts(guest_cpu=guest, dest_cpu=dest))


def test_a_definition_that_cannot_be_rewritten_is_refused() -> None:
    assert kinds(facts(source_xml="<domain")) == ["definition"]


def test_route_rules() -> None:
    endpoint = DirectEndpoint("192.0.2.3", 22, "root", "ssh-ed25519 AAAA")
    assert decide_route("auto", "alpha", RouteFacts(True, True, True, endpoint))[0] == "direct"
    for route in (
        RouteFacts(False),
        RouteFacts(True, False),
        RouteFacts(True, True, False),
        RouteFacts(True, True, True, None),
    ):
        assert decide_route("auto", "alpha", route)[3] == []
        assert [c.kind for c in decide_route("direct", "alpha", route)[3]] == ["route"]
    assert decide_route("relay", "alpha", RouteFacts(True, True, True, endpoint))[0] == "relay"


@pytest.mark.parametrize(
    ("compress", "source_zstd", "peer", "expected"),
    [
        ("off", None, "192.0.2.3", (False, [])),
        ("on", False, "192.0.2.3", (False, ["compression"])),
        ("auto", True, "127.0.0.3", (False, [])),
        ("auto", True, "192.0.2.3", (True, [])),
    ],
)
def test_compression(compress: str, source_zstd: bool | None, peer: str, expected: object) -> None:
    plan = decide(facts(source_zstd=source_zstd, dest_peer=peer), CloneOptions(compress=compress))
    assert (plan.compress, [c.kind for c in plan.conflicts]) == expected


def test_messages_are_unchanged_text() -> None:
    other = replace(WEB01, uuid="00000000-0000-4000-8000-000000000009")
    [conflict] = decide(facts(existing=other), CloneOptions()).conflicts
    assert str(conflict) == conflict.message
    assert conflict.message == (
        "a VM named 'web01' already exists on beta: choose --new-name, or --force to replace it "
        "once the copy is verified"
    )
