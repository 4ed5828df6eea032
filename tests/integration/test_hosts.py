"""Hosts over real SSH on the lab: inventory, events, host keys, ProxyJump, failures, names."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config, load_config
from kvm_clone_tui.api.errors import HostKeyError, HostUnreachableError, LibvirtError
from kvm_clone_tui.api.models import VMState
from kvm_clone_tui.engine.hosts import HostTarget, SSHHost
from kvm_clone_tui.engine.inventory import InventoryEvent, InventoryTracker
from kvm_clone_tui.engine.ssh import SSHSettings, connect
from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir, plan_hosts
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.lab.processes import processes_in_namespace

STATES = {"running": VMState.RUNNING, "shut off": VMState.SHUT_OFF, "paused": VMState.PAUSED}


def settings(lab: Lab, **overrides: object) -> SSHSettings:
    base: dict[str, object] = {
        "config_files": (lab.layout.ssh_config,),
        "known_hosts": lab.layout.known_hosts,
        "retry_delays": (0.2,),
        "connect_timeout": 5.0,
    }
    base.update(overrides)
    return SSHSettings(**base)  # type: ignore[arg-type]


def lab_config(lab: Lab) -> Config:
    """The config `lab up` wrote (environment overrides ignored)."""
    return load_config(lab.layout.client_config, environ={})


async def test_inventory_matches_virsh_on_every_host(lab: Lab) -> None:
    async with KVMCloneClient(lab_config(lab)) as client:
        listings = await client.list_vms([r.host.name for r in lab.runtimes()])
    for runtime, listing in zip(lab.runtimes(), listings, strict=True):
        assert listing.error is None and listing.inventory is not None
        inventory = listing.inventory
        assert inventory.hostname == runtime.host.name
        names = sorted(runtime.virsh("list", "--all", "--name").split())
        assert sorted(vm.name for vm in inventory.vms) == names
        for vm in inventory.vms:
            assert vm.state is STATES[runtime.virsh("domstate", vm.name).strip()]
            assert vm.uuid == runtime.virsh("domuuid", vm.name).strip()
            for disk in vm.disks:
                if disk.path is None:
                    continue
                info = dict(
                    line.split(":", 1)
                    for line in runtime.virsh("domblkinfo", vm.name, disk.target).splitlines()
                    if ":" in line
                )
                assert disk.virtual_size == int(info["Capacity"])
                local = lab.layout.host_path(runtime.host.name, disk.path)
                if vm.state is VMState.SHUT_OFF:
                    assert disk.allocation == local.stat().st_blocks * 512
        pool = next(p for p in inventory.pools if p.name == "default")
        assert pool.active and pool.path == "/var/lib/libvirt/images" and pool.available > 0


async def test_sample_vm_details(lab: Lab) -> None:
    async with KVMCloneClient(lab_config(lab)) as client:
        inventory = await client.inventory("alpha")
    db01, linked, web01 = (inventory.vm(n) for n in ("db01", "linked01", "web01"))
    assert db01 is not None and [d.format for d in db01.disks] == ["raw", "qcow2"]
    assert db01.memory_kib == 1024 * 1024 and db01.vcpus == 2
    assert linked is not None
    assert [b.path for b in linked.disks[0].backing_chain] == [
        "/var/lib/libvirt/images/base/bookworm-base.qcow2"
    ]
    assert web01 is not None and web01.nics[0].mac == "52:54:00:6c:ab:01"
    assert 0 < web01.allocation < web01.virtual_size
    uefi = inventory.vm("uefi01")
    if uefi is not None:
        assert uefi.nvram == "/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd"


async def test_a_vm_starting_is_seen_live_from_events(lab: Lab) -> None:
    alpha = lab.runtime("alpha")
    async with KVMCloneClient(lab_config(lab)) as client:
        tracker = await client.tracker("alpha")
        await tracker.watch()
        seen: asyncio.Queue[InventoryEvent] = asyncio.Queue()
        tracker.subscribe(seen.put_nowait)
        await asyncio.to_thread(alpha.virsh, "start", "app.v2")
        try:
            while True:
                event = await asyncio.wait_for(seen.get(), 30)
                if event.name == "app.v2" and event.vm and event.vm.state is VMState.RUNNING:
                    break
            assert tracker.inventory is not None
            vm = tracker.inventory.vm("app.v2")
            assert vm is not None and vm.state is VMState.RUNNING
        finally:
            await asyncio.to_thread(alpha.virsh, "destroy", "app.v2")
        while True:
            event = await asyncio.wait_for(seen.get(), 30)
            if event.name == "app.v2" and event.vm and event.vm.state is VMState.SHUT_OFF:
                break


async def test_a_changed_host_key_is_refused_with_the_fix(lab: Lab, tmp_path: Path) -> None:
    beta_key = lab.runtime("beta").host_public_key().split()[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"alpha,127.0.0.2 {' '.join(beta_key)}\n")
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError) as exc:
            await connect("alpha", settings(lab, known_hosts=forged, host_key_policy=policy))
        assert "CHANGED" in str(exc.value) and "ssh-keygen -R" in str(exc.value)
    assert forged.read_text().count("\n") == 1  # accept-new did not record the changed key


async def test_unknown_host_strict_refuses_accept_new_records(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="is not in"):
        await connect("gamma", settings(lab, known_hosts=empty))
    conn = await connect("gamma", settings(lab, known_hosts=empty, host_key_policy="accept-new"))
    conn.close()
    recorded = empty.read_text()
    assert lab.runtime("gamma").host_public_key().split()[1] in recorded
    conn = await connect("gamma", settings(lab, known_hosts=empty))  # now strict passes
    conn.close()


async def test_proxyjump_through_one_lab_host_to_another(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        lab.layout.ssh_config.read_text()
        + "\nHost gamma-via-beta\n    HostName 127.0.0.4\n    User root\n    ProxyJump beta\n"
        + f"    IdentityFile {lab.layout.operator_key}\n"
    )
    beta_ns = lab.runtime("beta").namespace()
    assert beta_ns is not None
    target = HostTarget.parse("gamma-via-beta")
    host = await SSHHost.connect(target, settings(lab, config_files=(config,)))
    try:
        assert (await host.run(["hostname"])).stdout.strip() == "gamma"
        # The connection to gamma's sshd was made by an sshd process of beta's.
        sockets = subprocess.run(
            ["ss", "-Htnp", "dst", "127.0.0.4:22"], capture_output=True, text=True, check=True
        ).stdout
        beta_pids = {str(p) for p in processes_in_namespace(beta_ns)}
        assert any(f"pid={pid}," in sockets for pid in beta_pids), sockets
        inventory = await InventoryTracker(host).refresh()
        assert inventory.hostname == "gamma"
    finally:
        await host.close()


async def test_unreachable_host_is_reported_and_the_others_still_listed(lab: Lab) -> None:
    config = dataclasses.replace(
        lab_config(lab), ssh=dataclasses.replace(lab_config(lab).ssh, connect_retries=1)
    )
    async with KVMCloneClient(config) as client:
        listings = await client.list_vms(["alpha", "root@127.0.0.99:22"])
    assert listings[0].inventory is not None and listings[0].error is None
    assert listings[1].inventory is None
    assert isinstance(listings[1].error, HostUnreachableError)
    assert "refused" in str(listings[1].error)


async def test_libvirtd_down_on_one_host_is_a_clear_libvirt_error(tmp_path: Path) -> None:
    small = Lab(LabLayout(tmp_path / "lab"), default_cache_dir())
    small.up(plan_hosts(1, "127.0.0.50"), sample_vms=False)
    try:
        runtime = small.runtimes()[0]
        pid = runtime.pid("libvirtd")
        assert pid is not None
        os.kill(pid, 15)
        config = load_config(small.layout.client_config, environ={})
        async with KVMCloneClient(config) as client:
            listing = (await client.list_vms(["alpha"]))[0]
        assert isinstance(listing.error, LibvirtError)
        assert "libvirtd running" in str(listing.error)
    finally:
        small.down()


HOSTILE_VM_NAMES = ["evil;touch kvm-clone-pwned", "$(id)", "wébserver 01", "-leading", "a`b`"]


async def test_hostile_vm_names_are_listed_verbatim(lab: Lab) -> None:
    beta = lab.runtime("beta")
    for name in HOSTILE_VM_NAMES:
        xml = (
            "<domain type='qemu'><name>{}</name><memory unit='MiB'>32</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>"
        ).format(name.replace("&", "&amp;").replace("<", "&lt;"))
        beta.virsh("define", "/dev/stdin", input=xml)
    try:
        async with KVMCloneClient(lab_config(lab)) as client:
            inventory = await client.inventory("beta")
            assert set(HOSTILE_VM_NAMES) <= {vm.name for vm in inventory.vms}
            host = await client.host("beta")
            for name in HOSTILE_VM_NAMES:  # through a remote shell: quoted, never interpreted
                done = await host.run(["virsh", "domstate", "--domain", name])
                assert done.stdout.strip() == "shut off"
            assert (await host.run(["ls", "/root"])).stdout.split().count("kvm-clone-pwned") == 0
    finally:
        for name in HOSTILE_VM_NAMES:
            beta.virsh("undefine", "--", name, check=False)


@pytest.mark.parametrize(
    "host",
    [
        "-oProxyCommand=touch /tmp/kvm-clone-pwned",
        "a;b",
        "$(id)",
        "host name",
        "a/b",
        "root@",
        "alpha:99999",
    ],
)
def test_cli_refuses_hostile_host_names_before_connecting(lab: Lab, host: str) -> None:
    done = run_cli(lab, "list", "--", host)
    assert done.returncode == 2, done.stderr
    assert "error" in done.stderr
    assert not Path("/tmp/kvm-clone-pwned").exists()


def run_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    return subprocess.run(
        [sys.executable, "-m", "kvm_clone_tui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_list_json_and_exit_code(lab: Lab) -> None:
    done = run_cli(lab, "list", "alpha", "beta", "--output", "json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [h["host"] for h in data["hosts"]] == ["alpha", "beta"]
    alpha = data["hosts"][0]
    writer = next(vm for vm in alpha["vms"] if vm["name"] == "writer")
    assert writer["state"] == "running" and writer["disks"][0]["format"] == "raw"
    done = run_cli(lab, "list", "alpha", "root@127.0.0.99", "--status", "running")
    assert done.returncode == 1
    assert "writer" in done.stdout and "web01" not in done.stdout
    assert "127.0.0.99" in done.stderr and "refused" in done.stderr


async def test_domain_xml_close_host_and_disconnect_events(lab: Lab) -> None:
    async with KVMCloneClient(lab_config(lab)) as client:
        xml = await client.domain_xml("alpha", "db01", inactive=True)
        assert "<name>db01</name>" in xml
        tracker = await client.tracker("alpha")
        await tracker.watch()
        seen: asyncio.Queue[InventoryEvent] = asyncio.Queue()
        tracker.subscribe(seen.put_nowait)
        first = await client.host("alpha")
        first.ssh.close()  # the link drops under the tracker
        event = await asyncio.wait_for(seen.get(), 30)
        assert event.kind == "disconnected" and event.vm is None
        tracker.unsubscribe(seen.put_nowait)
        await client.close_host("alpha")
        again = await client.host("alpha")  # reconnects on next use
        assert again is not first
        assert (await again.run(["hostname"])).stdout.strip() == "alpha"
