"""Fixtures for tests that copy VMs between lab hosts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_clone_tui.api.config import Config, load_config
from kvm_clone_tui.api.errors import KVMCloneError
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.lab.processes import processes_in_namespace

IMAGES = "/var/lib/libvirt/images"


@pytest.fixture
def lab_config(lab: Lab) -> Config:
    """The config `lab up` wrote (environment overrides ignored)."""
    return load_config(lab.layout.client_config, environ={})


@pytest.fixture(autouse=True)
def _private_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps its transaction journals to itself."""
    monkeypatch.setenv("KVM_CLONE_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SSH agent: clones take the relay route."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(scope="session")
def _agent_socket(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("agent")
    sock = str(folder / "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        subprocess.run(
            ["ssh-add", "-q", str(lab.layout.operator_key)],
            check=True,
            env=dict(os.environ, SSH_AUTH_SOCK=sock),
        )
        yield sock
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def ssh_agent(_agent_socket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An SSH agent holding the lab's operator key: clones can go direct."""
    monkeypatch.setenv("SSH_AUTH_SOCK", _agent_socket)
    return _agent_socket


def purge(runtime: LabHostRuntime, name: str) -> None:
    """Remove VM ``name`` and every file kvm-clone may have left for it on a lab host."""
    runtime.virsh("destroy", "--domain", name, check=False)
    runtime.virsh("undefine", "--domain", name, "--nvram", "--checkpoints-metadata", check=False)
    images = runtime.layout.host_path(runtime.host.name, IMAGES)
    for path in images.iterdir():
        if path.name.startswith((f"{name}-", ".kvmclone-")):
            path.unlink()


def leftovers(runtime: LabHostRuntime) -> list[str]:
    """Files of unfinished kvm-clone jobs in a host's default pool: every ``.kvmclone-`` file
    but the block index of a file that exists (docs/sync.md)."""
    images = runtime.layout.host_path(runtime.host.name, IMAGES)
    names = {p.name for p in images.iterdir()}

    def indexed(name: str) -> str | None:
        inner = name.removeprefix(".kvmclone-index-").removesuffix(".json")
        return inner if name.startswith(".kvmclone-index-") and name.endswith(".json") else None

    return sorted(
        n for n in names if n.startswith(".kvmclone-") and (indexed(n) or "") not in names
    )


def sha256(path: Path) -> str:
    """Hash of a file's whole contents (holes read as zeros)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def domain_names(runtime: LabHostRuntime) -> set[str]:
    """Every VM defined on a lab host."""
    return {n for n in runtime.virsh("list", "--all", "--name").splitlines() if n.strip()}


@pytest.fixture
def clean_beta(lab: Lab) -> Iterator[LabHostRuntime]:
    """beta, with whatever a test cloned onto it removed afterwards."""
    beta = lab.runtime("beta")
    before = domain_names(beta)
    yield beta
    for name in domain_names(beta) - before:
        purge(beta, name)
    for name in leftovers(beta):
        (beta.layout.host_path("beta", IMAGES) / name).unlink()
    drop_source_checkpoints(lab.runtime("alpha"))


def drop_source_checkpoints(runtime: LabHostRuntime) -> None:
    """Remove the checkpoints (and their bitmaps) that clones left on a lab host's VMs."""
    for name in domain_names(runtime):
        listed = runtime.virsh("checkpoint-list", "--domain", name, "--name", check=False)
        for checkpoint in listed.split():
            if checkpoint.startswith("kvmclone-"):
                runtime.virsh(
                    "checkpoint-delete", "--domain", name, checkpoint, "--metadata", check=False
                )
    images = runtime.layout.host_path(runtime.host.name, IMAGES)
    for image in images.rglob("*"):
        if not image.is_file() or image.name.startswith("."):
            continue
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(image)], capture_output=True, text=True
        )
        if info.returncode != 0 or '"format": "qcow2"' not in info.stdout:
            continue
        data = json.loads(info.stdout).get("format-specific", {}).get("data", {})
        for bitmap in data.get("bitmaps", []):
            if str(bitmap.get("name", "")).startswith("kvmclone-"):
                subprocess.run(
                    ["qemu-img", "bitmap", "--remove", str(image), bitmap["name"]],
                    capture_output=True,
                )


def has_tool(name: str) -> bool:
    """True when ``name`` is on this machine."""
    return shutil.which(name) is not None


def sshd_sessions(namespace: str | None) -> list[int]:
    """The sshd session processes (not the listener) of a lab host."""
    assert namespace is not None
    pids = []
    for pid in processes_in_namespace(namespace):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if cmdline and b"sshd:" in cmdline[0] and b"listener" not in cmdline[0]:
            pids.append(pid)
    return pids


async def cut_off_mid_sync(
    runtime: LabHostRuntime, name: str, task: asyncio.Future[object], after: float
) -> None:
    """Wait until a sync marks clone ``name`` in-progress, let it write for ``after`` seconds,
    then kill every SSH session of ``runtime``'s host: the sync must fail."""
    for _ in range(200):
        xml = await asyncio.to_thread(runtime.virsh, "dumpxml", name)
        if read_clone_metadata(xml).get("sync-state") == "in-progress":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(after)
    for pid in sshd_sessions(runtime.namespace()):
        os.kill(pid, signal.SIGKILL)
    with pytest.raises((KVMCloneError, OSError)):
        await asyncio.wait_for(task, 60)
