"""CPU compatibility refusals and TPM state copies, between real lab hosts over real SSH.

The VMs are defined on alpha by the tests themselves (and removed after): a CPU model the lab's
QEMU cannot emulate, a CPU feature that does not exist, and a VM with an emulated TPM (swtpm)
that has been started once, so that libvirt created its state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.errors import KVMCloneError
from kvm_clone_tui.engine.clone import CloneFailed, run_clone
from kvm_clone_tui.engine.journal import unfinished
from kvm_clone_tui.engine.tpm_state import TpmStateError
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES, domain_names, leftovers

SWTPM = "/var/lib/libvirt/swtpm"
DISK_BYTES = 4 << 20  # data in each test VM's disk: a 1 byte/s copy of it stalls

DefineVM = Callable[..., str]


def domain_xml(name: str, domain_type: str, cpu: str, tpm: bool) -> str:
    tpm_xml = "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>" if tpm else ""
    return (
        f"<domain type='{domain_type}'><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<vcpu>1</vcpu>{cpu}<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{IMAGES}/{name}.img'/><target dev='vda' bus='virtio'/></disk>"
        f"{tpm_xml}<graphics type='vnc' autoport='yes'/></devices></domain>"
    )


@pytest.fixture
def define_vm(lab: Lab) -> Iterator[DefineVM]:
    """Define VMs on alpha (disk with DISK_BYTES of data); undefined with their files after."""
    alpha = lab.runtime("alpha")
    names: list[str] = []

    def define(name: str, cpu: str = "", *, tpm: bool = False, start_once: bool = False) -> str:
        names.append(name)
        disk = lab.layout.host_path("alpha", f"{IMAGES}/{name}.img")
        with disk.open("wb") as f:
            f.write(os.urandom(DISK_BYTES))
        alpha.virsh("define", "/dev/stdin", input=domain_xml(name, "qemu", cpu, tpm))
        if start_once:  # swtpm creates the TPM state when the VM starts
            alpha.virsh("start", name)
            alpha.virsh("destroy", name)
        return name

    yield define
    for name in names:
        alpha.virsh("destroy", name, check=False)
        alpha.virsh("undefine", name, "--checkpoints-metadata", check=False)  # and its TPM state
        lab.layout.host_path("alpha", f"{IMAGES}/{name}.img").unlink(missing_ok=True)


@pytest.fixture
def beta_swtpm(lab: Lab, clean_beta: LabHostRuntime) -> Iterator[Path]:
    """beta's swtpm directory, checked for and cleared of staged TPM state afterwards."""
    root = lab.layout.host_path("beta", SWTPM)
    yield root
    for path in root.glob(".kvmclone-*") if root.exists() else []:
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def staged_tpm(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(".kvmclone-*")) if root.exists() else []


def tree(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``path``: relative path -> (mode, owner, content)."""
    out = {}
    for file in sorted(path.rglob("*")):
        st = file.lstat()
        content = file.read_bytes() if file.is_file() else b""
        out[str(file.relative_to(path))] = (st.st_mode, st.st_uid, content)
    return out


def dry_run(lab: Lab, vm: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KVM_CLONE_CONFIG=str(lab.layout.client_config))
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(
        [sys.executable, "-m", "kvm_clone_tui", "clone", "alpha", "beta", vm, "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# --- CPU -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "expected"),
    [
        # A recent model under TCG: libvirt checks it at start (check='partial') and refuses.
        (
            "<cpu mode='custom' match='exact' check='partial'>"
            "<model fallback='forbid'>Skylake-Server</model></cpu>",
            ["Skylake-Server", "TCG", "avx512f", "libvirt would refuse to start the clone"],
        ),
        # A feature no CPU has: unknown to libvirt on the destination.
        (
            "<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
            "<feature policy='require' name='kvmclone-no-such-feature'/></cpu>",
            ["qemu64 +kvmclone-no-such-feature", "Unknown CPU feature"],
        ),
    ],
    ids=["recent-model-under-tcg", "feature-that-does-not-exist"],
)
def test_dry_run_refuses_a_cpu_the_destination_cannot_give(
    lab: Lab, define_vm: DefineVM, cpu: str, expected: list[str]
) -> None:
    name = define_vm("cpu-refused", cpu)
    done = dry_run(lab, name)
    assert done.returncode == 4, done.stdout + done.stderr
    refused = [line for line in done.stdout.splitlines() if "REFUSED" in line]
    assert len(refused) == 1, done.stdout
    for text in expected:
        assert text in refused[0]
    assert f"virsh edit {name}" in refused[0] and "<cpu mode='host-model'/>" in refused[0]
    assert not lab.layout.host_path("beta", f"{IMAGES}/{name}-vda.img").exists()


def test_dry_run_passes_plain_cpus(lab: Lab, define_vm: DefineVM) -> None:
    for name, cpu in [
        ("cpu-none", ""),
        ("cpu-qemu64", "<cpu mode='custom' match='exact'><model>qemu64</model></cpu>"),
        ("cpu-host-model", "<cpu mode='host-model'/>"),
    ]:
        define_vm(name, cpu)
        done = dry_run(lab, name)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "REFUSED" not in done.stdout and "WARNING: cpu" not in done.stdout, done.stdout


# --- TPM -----------------------------------------------------------------------------------


async def test_tpm_state_is_copied_under_the_new_uuid_and_the_clone_starts(
    lab: Lab, lab_config: Config, beta_swtpm: Path, define_vm: DefineVM, no_agent: None
) -> None:
    name = define_vm("tpm-vm", tpm=True, start_once=True)
    alpha = lab.runtime("alpha")
    source_uuid = alpha.virsh("domuuid", name).strip()
    source_state = lab.layout.host_path("alpha", f"{SWTPM}/{source_uuid}")
    assert (source_state / "tpm2" / "tpm2-00.permall").stat().st_size > 0
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", name, new_name="tpm-copy")
        assert plan.ok, plan.conflicts
        assert plan.tpm is not None and plan.tpm.final_dir == f"{SWTPM}/{plan.new_uuid}"
        assert "tpm            state" in plan.describe()
        result = await client.clone_vm("alpha", "beta", name, new_name="tpm-copy", check=True)
    beta = lab.runtime("beta")
    copied = beta_swtpm / result.uuid
    assert tree(copied) == tree(source_state)
    assert staged_tpm(beta_swtpm) == [] and leftovers(beta) == []
    dest = ET.fromstring(beta.virsh("dumpxml", "tpm-copy"))
    tpm = dest.find("devices/tpm")
    assert tpm is not None and tpm.get("model") == "tpm-crb"
    assert tpm.find("backend").get("type") == "emulator"  # type: ignore[union-attr]
    # swtpm accepts the copied state: the clone starts with it.
    beta.virsh("start", "tpm-copy")
    beta.virsh("destroy", "tpm-copy")
    assert (copied / "tpm2" / "tpm2-00.permall").exists()


async def test_a_tpm_that_never_started_has_no_state_to_copy(
    lab: Lab, lab_config: Config, beta_swtpm: Path, define_vm: DefineVM, no_agent: None
) -> None:
    name = define_vm("tpm-fresh", tpm=True)
    async with KVMCloneClient(lab_config) as client:
        plan = await client.plan_clone("alpha", "beta", name)
        assert plan.ok and plan.tpm is None
        assert any("no TPM state" in w.message for w in plan.warnings)
        result = await client.clone_vm("alpha", "beta", name, check=True)
    assert not (beta_swtpm / result.uuid).exists()
    assert "<tpm model='tpm-crb'>" in lab.runtime("beta").virsh("dumpxml", name)


async def test_a_failure_mid_clone_leaves_no_tpm_state(
    lab: Lab, lab_config: Config, beta_swtpm: Path, define_vm: DefineVM, no_agent: None
) -> None:
    name = define_vm("tpm-fail", tpm=True, start_once=True)
    stall = {"bandwidth_limit": 1, "no_progress_timeout": 1.0}
    async with KVMCloneClient(lab_config) as client:
        # Kept for the operator: the TPM state is staged, then rolled back on request.
        with pytest.raises(CloneFailed) as failed:
            await client.clone_vm("alpha", "beta", name, auto_rollback=False, **stall, check=True)
        job = next(j for j in unfinished() if j.record.job_id == failed.value.job_id)
        assert staged_tpm(beta_swtpm) == [
            f".kvmclone-partial-{failed.value.job_id}-{job.record.new_uuid}"
        ]
        await client.rollback_job(failed.value.job_id)
        assert staged_tpm(beta_swtpm) == []
        # Rolled back at once.
        with pytest.raises(KVMCloneError):
            await client.clone_vm("alpha", "beta", name, **stall, check=True)
    assert staged_tpm(beta_swtpm) == []
    assert name not in domain_names(lab.runtime("beta"))
    assert leftovers(lab.runtime("beta")) == []


async def test_force_keeps_the_replaced_vms_tpm_until_the_copy_is_committed(
    lab: Lab, lab_config: Config, beta_swtpm: Path, define_vm: DefineVM, no_agent: None
) -> None:
    name = define_vm("tpm-force", tpm=True, start_once=True)
    beta = lab.runtime("beta")
    async with KVMCloneClient(lab_config) as client:
        first = await client.clone_vm("alpha", "beta", name, check=True)
        old_state = beta_swtpm / first.uuid
        before = tree(old_state)
        # A failure at commit, after the old VM was undefined: its TPM state must survive.
        # The clone's final TPM directory is taken behind kvm-clone's back, so renaming the
        # staged state there fails.
        plan = await client.plan_clone("alpha", "beta", name, force=True)
        assert plan.ok and plan.replace_existing and plan.tpm is not None
        squatter = beta_swtpm / plan.new_uuid
        squatter.mkdir()
        try:
            with pytest.raises(TpmStateError, match="already exists"):
                await run_clone(client.hosts, plan)
            assert squatter.is_dir()  # not this job's: left alone by the rollback
        finally:
            squatter.rmdir()
        assert beta.virsh("domuuid", name).strip() == first.uuid
        assert tree(old_state) == before
        assert staged_tpm(beta_swtpm) == [] and leftovers(beta) == []
        second = await client.clone_vm("alpha", "beta", name, force=True, check=True)
    assert beta.virsh("domuuid", name).strip() == second.uuid
    assert not old_state.exists()
    assert tree(beta_swtpm / second.uuid) == before
    assert staged_tpm(beta_swtpm) == []
