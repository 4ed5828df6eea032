"""Clones between real lab hosts over real SSH: what arrives, how, and what is never lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.errors import KVMCloneError
from kvm_clone_tui.engine.clone import CloneRefused
from kvm_clone_tui.engine.progress import JobEvent
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import (
    IMAGES,
    domain_names,
    drop_source_checkpoints,
    leftovers,
    purge,
    sha256,
)
from tests.integration.conftest import sshd_sessions as _sshd_sessions


def source_file(lab: Lab, path: str) -> os.PathLike[str]:
    return lab.layout.host_path("alpha", path)


def assert_same_disk(lab: Lab, src: str, dest_host: str, dest: str) -> None:
    """Raw files are byte-identical; a qcow2 copy holds the same guest data, without the
    checkpoint bitmap the clone added to the source (docs/sync.md)."""
    a, b = lab.layout.host_path("alpha", src), lab.layout.host_path(dest_host, dest)
    if src.endswith(".qcow2"):
        same = subprocess.run(
            ["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", str(a), str(b)],
            capture_output=True,
        )
        assert same.returncode == 0, f"{dest} differs from {src}"
        info = subprocess.run(
            ["qemu-img", "info", "-U", str(b)], capture_output=True, text=True, check=True
        )
        assert "kvmclone-" not in info.stdout, "the source's bitmap was copied along"
    else:
        assert sha256(a) == sha256(b), f"{dest} differs from {src}"
        assert b.stat().st_size == a.stat().st_size
    assert b.stat().st_blocks <= a.stat().st_blocks, "the copy is less sparse than the source"


async def test_clone_relay_copies_disks_exactly_and_defines_a_new_identity(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    events: list[JobEvent] = []
    async with KVMCloneClient(lab_config) as client:
        result = await client.clone_vm(
            "alpha", "beta", "db01", new_name="db01-copy", on_event=events.append, check=True
        )
    assert result.route == "relay" and not result.started
    assert_same_disk(lab, f"{IMAGES}/db01/sys/disk.img", "beta", f"{IMAGES}/db01-copy-vda.img")
    assert_same_disk(lab, f"{IMAGES}/db01/data/disk.img", "beta", f"{IMAGES}/db01-copy-vdb.qcow2")
    xml = ET.fromstring(clean_beta.virsh("dumpxml", "db01-copy"))
    source = ET.fromstring(lab.runtime("alpha").virsh("dumpxml", "db01"))
    assert xml.findtext("uuid") != source.findtext("uuid")
    assert xml.findtext("uuid") == result.uuid
    new_macs = [m.get("address") for m in xml.iter("mac")]
    old_macs = [m.get("address") for m in source.iter("mac")]
    assert len(new_macs) == len(old_macs) == 1 and new_macs != old_macs
    assert [s.get("file") for s in xml.iter("source")] == [
        f"{IMAGES}/db01-copy-vda.img",
        f"{IMAGES}/db01-copy-vdb.qcow2",
    ]
    assert clean_beta.virsh("domstate", "db01-copy").strip() == "shut off"
    assert leftovers(clean_beta) == []
    steps = [e.step for e in events]
    for step in ("stage", "verify", "define", "done"):
        assert step in steps
    progress = [d for e in events for d in e.disks if d.finished]
    assert {d.target for d in progress} == {"vda", "vdb"}


async def test_clone_direct_goes_host_to_host(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, ssh_agent: str
) -> None:
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", "web01", new_name="web01-direct")
        assert plan.route == "direct", plan.route_reason
        result = await client.clone_vm(
            "alpha", "beta", "web01", new_name="web01-direct", transfer="direct", check=True
        )
    assert result.route == "direct"
    assert_same_disk(lab, f"{IMAGES}/web01.qcow2", "beta", f"{IMAGES}/web01-direct-vda.qcow2")


async def test_backing_chain_and_nvram_are_copied_and_repointed(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", "linked01", new_name="linked-copy", check=True)
        if "uefi01" in domain_names(lab.runtime("alpha")):
            await client.clone_vm("alpha", "beta", "uefi01", new_name="uefi-copy", check=True)
    overlay = f"{IMAGES}/linked-copy-vda.qcow2"
    info = json.loads(
        subprocess.run(
            [
                "ssh",
                "-F",
                str(lab.layout.ssh_config),
                "beta",
                f"qemu-img info --output=json --backing-chain {overlay}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info[0]["backing-filename"] == f"{IMAGES}/linked-copy-vda-backing1.qcow2"
    assert len(info) == 2
    if "uefi01" in domain_names(lab.runtime("alpha")):
        xml = clean_beta.virsh("dumpxml", "uefi-copy")
        assert f"{IMAGES}/uefi-copy-nvram.fd" in xml
        assert_same_disk(
            lab,
            "/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd",
            "beta",
            f"{IMAGES}/uefi-copy-nvram.fd",
        )


async def test_dry_run_copies_nothing_and_shows_the_plan(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvm_clone_tui",
            "clone",
            "alpha",
            "beta",
            "web01",
            "--dry-run",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    assert plan["ok"] and plan["route"] == "relay" and "agent" in plan["route_reason"]
    assert [f["final_path"] for f in plan["files"]] == [f"{IMAGES}/web01-vda.qcow2"]
    assert "web01" not in domain_names(clean_beta)
    assert not lab.layout.host_path("beta", f"{IMAGES}/web01-vda.qcow2").exists()


async def test_name_collision_is_refused_and_idempotent_rerun_converges(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        first = await client.clone_vm("alpha", "beta", "app.v2", check=True)
        with pytest.raises(CloneRefused, match="already exists"):
            await client.clone_vm("alpha", "beta", "app.v2", check=True)
        again = await client.clone_vm("alpha", "beta", "app.v2", idempotent=True, check=True)
    assert again.already_done and again.bytes_copied == 0
    assert clean_beta.virsh("domuuid", "app.v2").strip() == first.uuid


async def test_force_replaces_only_after_the_copy_is_verified(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        first = await client.clone_vm("alpha", "beta", "app.v2", new_name="app-forced", check=True)
        disk = lab.layout.host_path("beta", f"{IMAGES}/app-forced-vda.qcow2")
        before = sha256(disk)
        # A copy that fails (no progress for 1 s under a 1 byte/s limit) must leave the old
        # VM and its disk exactly as they were.
        with pytest.raises(KVMCloneError):
            await client.clone_vm(
                "alpha",
                "beta",
                "web01",
                new_name="app-forced",
                force=True,
                bandwidth_limit=1,
                no_progress_timeout=1.0,
                check=True,
            )
        assert clean_beta.virsh("domuuid", "app-forced").strip() == first.uuid
        assert sha256(disk) == before
        assert leftovers(clean_beta) == []
        replaced = await client.clone_vm(
            "alpha", "beta", "web01", new_name="app-forced", force=True, check=True
        )
    assert clean_beta.virsh("domuuid", "app-forced").strip() == replaced.uuid != first.uuid
    assert_same_disk(lab, f"{IMAGES}/web01.qcow2", "beta", f"{IMAGES}/app-forced-vda.qcow2")
    assert not disk.exists() or sha256(disk) != before
    assert leftovers(clean_beta) == []


@pytest.mark.parametrize(
    "args",
    [
        ["alpha", "beta", "-rf"],
        ["alpha", "beta", "web01", "--new-name", "../../etc/x"],
        ["alpha", "-oProxyCommand=touch /tmp/kvm-clone-pwned", "web01"],
        ["alpha", "beta;id", "web01"],
    ],
)
def test_hostile_names_are_refused_before_anything_happens(lab: Lab, args: list[str]) -> None:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    done = subprocess.run(
        [sys.executable, "-m", "kvm_clone_tui", "clone", "--", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error" in done.stderr
    assert not os.path.exists("/tmp/kvm-clone-pwned")


async def test_a_vm_with_a_hostile_name_clones_safely(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    alpha = lab.runtime("alpha")
    name = "evil $(touch pwned); `id` 'q'"
    xml = alpha.virsh("dumpxml", "--inactive", "app.v2")
    root = ET.fromstring(xml)
    root.find("name").text = name  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    for mac in root.iter("mac"):
        mac.set("address", "52:54:00:6c:ab:99")
    alpha.virsh("define", "/dev/stdin", input=ET.tostring(root, encoding="unicode"))
    try:
        async with KVMCloneClient(lab_config) as client:
            result = await client.clone_vm("alpha", "beta", name, check=True)
        assert result.new_name == name
        assert clean_beta.virsh("domstate", "--domain", name).strip() == "shut off"
        assert not lab.layout.host_path("beta", "/root/.ssh/pwned").exists()
    finally:
        alpha.virsh("undefine", "--domain", name, "--checkpoints-metadata", check=False)


async def test_destination_pool_too_small_is_refused_before_copying(
    lab: Lab, lab_config: Config, small_pool: str, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", "db01", new_name="db01-small", pool="small")
        assert not plan.ok and any("not enough space" in c.message for c in plan.conflicts)
        with pytest.raises(CloneRefused):
            await client.clone_vm(
                "alpha", "beta", "db01", new_name="db01-small", pool="small", check=True
            )
    assert ls_inside(lab.runtime("beta"), small_pool) == ["lost+found"]


@pytest.mark.parametrize("small_pool", [128], indirect=True)
async def test_destination_filling_up_mid_copy_rolls_back(
    lab: Lab, lab_config: Config, small_pool: str, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    beta = lab.runtime("beta")
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone(
            "alpha", "beta", "web01", new_name="web01-full", pool="small"
        )
        assert plan.ok, plan.conflicts
        # Someone else fills the pool between the plan and the copy.
        beta.virsh("pool-refresh", "small")
        subprocess.run(
            beta.inside_argv(
                "sh",
                "-c",
                f"dd if=/dev/urandom of={small_pool}/filler bs=1M count=110 2>/dev/null; sync",
            ),
            check=False,
        )
        from kvm_clone_tui.engine.clone import run_clone

        with pytest.raises(KVMCloneError, match=r"full|space"):
            await run_clone(client.hosts, plan)
    assert ls_inside(beta, small_pool) == ["filler", "lost+found"]
    assert "web01-full" not in domain_names(beta)


def ls_inside(runtime: LabHostRuntime, path: str) -> list[str]:
    """A folder's entries as the host sees them (mounts in its namespace included)."""
    done = subprocess.run(
        runtime.inside_argv("ls", "-A", path),
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(done.stdout.split())


@pytest.fixture
def small_pool(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """A small loop-mounted ext4 pool called `small` on beta (mounted in beta's namespace).

    Its size in MiB is the test's ``pool_mib`` parameter (default 48).
    """
    size = getattr(request, "param", 48)
    beta = lab.runtime("beta")
    path = "/var/lib/libvirt/small"
    image = lab.layout.host_dir("beta") / "small-pool.img"
    subprocess.run(["truncate", "-s", f"{size}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    inside = beta.inside_argv()
    subprocess.run([*inside, "mkdir", "-p", path], check=True)
    subprocess.run([*inside, "mount", "-o", "loop", str(image), path], check=True)
    beta.virsh("pool-create-as", "small", "dir", "--target", path)
    yield path
    beta.virsh("pool-destroy", "small", check=False)
    subprocess.run([*inside, "umount", path], check=False)
    image.unlink()


async def test_connection_dropped_mid_copy_rolls_back(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha", "beta", "db01", new_name="db01-drop", bandwidth_limit=2 << 20, check=True
            )
        )
        await _wait_for_partial(clean_beta, "db01-drop")
        # Kill beta's SSH session processes (the receiver among them): the link is gone.
        ns = clean_beta.namespace()
        for pid in _sshd_sessions(ns):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises((KVMCloneError, OSError)):
            await asyncio.wait_for(task, 60)
    assert "db01-drop" not in domain_names(clean_beta)
    assert leftovers(clean_beta) == []


async def test_destination_libvirtd_restarted_mid_copy_still_commits(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha",
                "beta",
                "db01",
                new_name="db01-restart",
                bandwidth_limit=4 << 20,
                check=True,
            )
        )
        await _wait_for_partial(clean_beta, "db01-restart")
        await asyncio.to_thread(clean_beta.restart_libvirtd)
        result = await asyncio.wait_for(task, 120)
    assert clean_beta.virsh("domuuid", "db01-restart").strip() == result.uuid
    assert_same_disk(lab, f"{IMAGES}/db01/sys/disk.img", "beta", f"{IMAGES}/db01-restart-vda.img")
    assert leftovers(clean_beta) == []


async def test_cancel_mid_copy_rolls_back(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha", "beta", "db01", new_name="db01-cancel", bandwidth_limit=2 << 20, check=True
            )
        )
        await _wait_for_partial(clean_beta, "db01-cancel")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "db01-cancel" not in domain_names(clean_beta)
    assert leftovers(clean_beta) == []
    images = lab.layout.host_path("beta", IMAGES)
    assert not [p for p in os.listdir(images) if p.startswith("db01-cancel")]


def test_kill_9_then_idempotent_rerun_converges(
    lab: Lab, clean_beta: LabHostRuntime, tmp_path: object
) -> None:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    env.pop("SSH_AUTH_SOCK", None)
    argv = [
        sys.executable,
        "-m",
        "kvm_clone_tui",
        "clone",
        "alpha",
        "beta",
        "db01",
        "--new-name",
        "db01-killed",
        "--idempotent",
    ]
    proc = subprocess.Popen(
        [*argv, "--bandwidth-limit", "2M"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    asyncio.run(_wait_for_partial(clean_beta, "db01-killed"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming job" in done.stdout + done.stderr  # what the killed run staged is kept
    assert_same_disk(lab, f"{IMAGES}/db01/sys/disk.img", "beta", f"{IMAGES}/db01-killed-vda.img")
    assert leftovers(clean_beta) == []
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already done" in again.stdout


async def test_running_source_is_planned_as_a_live_clone(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", "writer", new_name="writer-copy")
    assert plan.ok and plan.live
    assert any(
        "point in time" in w.message and "crash-consistent" in w.message for w in plan.warnings
    )
    assert [f.live_export for f in plan.files] == ["vda"]


async def _wait_for_partial(runtime: LabHostRuntime, name: str, timeout: float = 60) -> None:
    """Until a staged (partial) file of clone ``name`` with some data shows up in the pool."""
    images = runtime.layout.host_path(runtime.host.name, IMAGES)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for path in images.iterdir():
            if (
                path.name.startswith(".kvmclone-partial-")
                and f"-{name}-" in path.name
                and path.stat().st_blocks > 2048
            ):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("no partial file appeared")


__all__ = ["purge", "source_file"]


async def test_symlinked_disk_outside_any_pool_and_ejected_cdrom(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    alpha = lab.runtime("alpha")
    # A VM whose disk is a symlink, in a folder that is no storage pool, pointing at a copy of
    # app.v2's disk; plus installer's CD-ROM, whose ISO beta does not have.
    outside = "/var/lib/libvirt/elsewhere"
    local = lab.layout.host_path("alpha", outside)
    local.mkdir(exist_ok=True)
    real = local / "real.qcow2"
    real.write_bytes(lab.layout.host_path("alpha", f"{IMAGES}/app.v2.qcow2").read_bytes())
    (local / "link.qcow2").symlink_to(f"{outside}/real.qcow2")
    root = ET.fromstring(alpha.virsh("dumpxml", "--inactive", "installer"))
    root.find("name").text = "odd-paths"  # type: ignore[union-attr]
    root.remove(root.find("uuid"))  # type: ignore[arg-type]
    root.find("devices/disk/source").set("file", f"{outside}/link.qcow2")  # type: ignore[union-attr]
    alpha.virsh("define", "/dev/stdin", input=ET.tostring(root, encoding="unicode"))
    try:
        async with KVMCloneClient(lab_config) as client:
            plan = await client.plan_clone("alpha", "beta", "odd-paths")
            assert plan.ok, plan.conflicts
            assert any("symlink" in w.message for w in plan.warnings)
            assert any("ejected" in w.message for w in plan.warnings)
            assert plan.files[0].source_path == f"{outside}/real.qcow2"
            await client.clone_vm("alpha", "beta", "odd-paths", check=True)
        assert_same_disk(lab, f"{outside}/real.qcow2", "beta", f"{IMAGES}/odd-paths-vda.qcow2")
        xml = ET.fromstring(clean_beta.virsh("dumpxml", "odd-paths"))
        cdrom = next(d for d in xml.iter("disk") if d.get("device") == "cdrom")
        assert cdrom.find("source") is None  # ejected: the ISO is not on beta
    finally:
        drop_source_checkpoints(alpha)  # libvirt refuses to undefine a VM with checkpoints
        alpha.virsh("undefine", "--domain", "odd-paths", "--checkpoints-metadata", check=False)
        for name in ("link.qcow2", "real.qcow2"):
            (local / name).unlink(missing_ok=True)


async def test_failure_kept_for_the_operator_then_rolled_back_on_request(
    lab: Lab, lab_config: Config, clean_beta: LabHostRuntime, no_agent: None
) -> None:
    from kvm_clone_tui.engine.clone import CloneFailed

    async with KVMCloneClient(lab_config) as client:
        task = asyncio.ensure_future(
            client.clone_vm(
                "alpha",
                "beta",
                "db01",
                new_name="db01-kept",
                bandwidth_limit=2 << 20,
                auto_rollback=False,
                check=True,
            )
        )
        await _wait_for_partial(clean_beta, "db01-kept")
        # The destination's receiver dies mid-copy: a failure, not a cancellation.
        for pid in _sshd_sessions(clean_beta.namespace()):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(CloneFailed) as failed:
            await asyncio.wait_for(task, 60)
        assert failed.value.staged and "db01-kept" not in domain_names(clean_beta)
        await client.rollback_job(failed.value.job_id)
    assert leftovers(clean_beta) == []
