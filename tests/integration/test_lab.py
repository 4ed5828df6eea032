"""The lab itself: real hosts over real SSH, isolated from each other, with a guest that writes."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from kvm_clone_tui.cli.main import main
from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir, plan_hosts
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.lab.processes import processes_in_namespace
from kvm_clone_tui.lab.sample_vms import WRITER_CONSOLE_LOG, WRITER_VM


def lab_ssh(
    lab: Lab, host: str, command: str, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a lab host with plain OpenSSH and the lab's strict ssh_config."""
    return subprocess.run(
        ["ssh", "-F", str(lab.layout.ssh_config), host, command],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,  # type: ignore[call-overload]
    )


def test_every_host_answers_over_ssh_with_strict_host_key_checking(lab: Lab) -> None:
    for runtime in lab.runtimes():
        done = lab_ssh(lab, runtime.host.name, "hostname; virsh -c qemu:///system uri")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [runtime.host.name, "qemu:///system"]


def test_a_changed_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    alpha, beta = lab.runtimes()[:2]
    # known_hosts that claims alpha has beta's key: ssh must refuse to connect.
    forged = tmp_path / "known_hosts"
    key_type, key_data = beta.host_public_key().split()[:2]
    forged.write_text(f"{alpha.host.known_hosts_patterns} {key_type} {key_data}\n")
    done = subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.layout.ssh_config),
            "-o",
            f"UserKnownHostsFile={forged}",
            alpha.host.name,
            "echo connected",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 255
    assert "connected" not in done.stdout
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr


def test_hosts_see_only_their_own_vms(lab: Lab) -> None:
    alpha, beta, gamma = lab.runtimes()[:3]
    assert WRITER_VM in alpha.virsh("list", "--all", "--name").split()
    probe = "isolation-probe"
    xml = (
        f"<domain type='qemu'><name>{probe}</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    done = lab_ssh(lab, beta.host.name, "virsh -q define /dev/stdin", input=xml)
    assert done.returncode == 0, done.stderr
    try:
        assert probe in beta.virsh("list", "--all", "--name").split()
        for other in (alpha, gamma):
            names = other.virsh("list", "--all", "--name").split()
            assert probe not in names
        assert WRITER_VM not in beta.virsh("list", "--all", "--name").split()
        # Nor do they share storage: beta's images folder is not alpha's.
        listing = lab_ssh(lab, beta.host.name, "ls /var/lib/libvirt/images").stdout.split()
        assert "web01.qcow2" not in listing
    finally:
        beta.virsh("undefine", probe, check=False)


def test_hosts_reach_each_other_by_name_with_pinned_host_keys(lab: Lab) -> None:
    # No key of beta's is authorised on gamma, but the host key check must already pass:
    # the failure is about authentication, never about an unknown host.
    done = lab_ssh(lab, "beta", "ssh -o BatchMode=yes gamma true")
    assert done.returncode == 255
    assert "Permission denied" in done.stderr
    assert "Host key verification failed" not in done.stderr


def test_the_booting_vm_reaches_init_and_keeps_writing(lab: Lab) -> None:
    alpha = lab.runtimes()[0]
    assert alpha.virsh("domstate", WRITER_VM).strip() == "running"
    console = lab.layout.host_path(alpha.host.name, WRITER_CONSOLE_LOG)

    def last_write() -> int:
        counts = re.findall(r"KVMCLONE-WROTE (\d+)", console.read_text(errors="replace"))
        return int(counts[-1]) if counts else -1

    deadline = time.monotonic() + 120
    while last_write() < 0 and time.monotonic() < deadline:
        time.sleep(1)
    first = last_write()
    assert "KVMCLONE-GUEST-READY" in console.read_text(errors="replace")
    assert first >= 0, "the guest never reported a write"
    while last_write() <= first and time.monotonic() < deadline:
        time.sleep(1)
    assert last_write() > first, "the guest stopped writing"
    disk = lab.layout.host_path(alpha.host.name, "/var/lib/libvirt/images/writer.raw")
    assert b"KVMCLONE-WRITE" in disk.read_bytes()


def test_sample_vms_have_the_shapes_operators_have(lab: Lab) -> None:
    alpha = lab.runtimes()[0]
    names = set(alpha.virsh("list", "--all", "--name").split())
    assert {"web01", "db01", "installer", "linked01", "app.v2", WRITER_VM} <= names
    db01 = alpha.virsh("domblklist", "db01").split()
    paths = [p for p in db01 if p.startswith("/")]
    assert len(paths) == 2 and len({Path(p).name for p in paths}) == 1
    assert "cdrom" in alpha.virsh("domblklist", "installer", "--details")
    web01 = lab.layout.host_path("alpha", "/var/lib/libvirt/images/web01.qcow2")
    assert web01.stat().st_blocks * 512 < 64 * 1024 * 1024  # 8 GiB virtual, sparse
    if "uefi01" in names:
        assert "<nvram" in alpha.virsh("dumpxml", "uefi01")


def test_up_and_down_are_idempotent_and_leave_nothing(tmp_path: Path) -> None:
    # A second, small lab of its own (other addresses, no sample VMs): never the shared one.
    layout = LabLayout(tmp_path / "lab")
    lab = Lab(layout, default_cache_dir())
    hosts = plan_hosts(2, "127.0.0.40")
    lab.up(hosts, sample_vms=False)
    try:
        first = {r.host.name: r.daemon_pids() for r in lab.runtimes()}
        namespaces = [r.namespace() for r in lab.runtimes()]
        assert all(s.up for s in lab.status())
        lab.up(hosts, sample_vms=False)  # twice: harmless, the same daemons keep running
        assert {r.host.name: r.daemon_pids() for r in lab.runtimes()} == first
        assert len(set(namespaces)) == 2 and None not in namespaces
    finally:
        lab.down()
    lab.down()  # twice: harmless
    for ns in namespaces:
        assert ns is not None and processes_in_namespace(ns) == []
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert not any(s.up or s.ssh_reachable for s in lab.status())
    assert main(["lab", "--dir", str(layout.root), "status"]) == 3
