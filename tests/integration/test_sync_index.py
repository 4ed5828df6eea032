"""The clone's block index on the lab: a clone leaves one, hash-mode syncs read only the source
while it holds, keep it right, and never trust it once the clone changed behind their back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kvm_clone_tui.agent.host.hashing import sha_in_hardware
from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.engine.progress import JobEvent
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES, sha256
from tests.integration.test_sync import change_raw, source_vm
from tests.unit.test_agent import AGENT

__all__ = ["source_vm"]  # the fixture, shared with test_sync.py

INDEX_USED = "the clone's block index stands in for reading it"


def agent_hash(path: Path, *extra: str) -> dict[str, object]:
    """The agent's ``hash`` of a lab file (run here: the lab's files are this machine's)."""
    argv = [sys.executable, str(AGENT), "hash", str(path), "--block-size", "64KiB"]
    argv += ["--algo", "sha256" if sha_in_hardware() else "blake2b", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def index_holds(path: Path) -> bool:
    """The file's index is valid and says what a fresh hash of the file says."""
    indexed = agent_hash(path, "--index", "--index-only", "--root", str(path.parent))
    return indexed["index"] == "used" and indexed["blocks"] == agent_hash(path)["blocks"]


async def test_a_clone_leaves_an_index_and_hash_syncs_keep_it_and_use_it(
    lab: Lab,
    lab_config: Config,
    clean_beta: LabHostRuntime,
    source_vm: tuple[str, Path],
    no_agent: None,
) -> None:
    name, images = source_vm
    raw = lab.layout.host_path("beta", f"{IMAGES}/ix-dst-vda.img")
    qcow2 = lab.layout.host_path("beta", f"{IMAGES}/ix-dst-vdb.qcow2")
    events: list[JobEvent] = []
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", name, new_name="ix-dst", check=True)
        # the qcow2 clone's copied bitmap was removed after the copy: its index was refreshed
        assert index_holds(raw) and index_holds(qcow2)
        changed = change_raw(images / f"{name}-img", 7, seed=5)
        result = await client.sync_vm(
            "alpha",
            "beta",
            name,
            target_name="ix-dst",
            mode="hash",
            on_event=events.append,
            check=True,
        )
    used = [e.message for e in events if INDEX_USED in e.message]
    assert len(used) == 2, [e.message for e in events]  # both disks: the clone was not read
    assert sha256(raw) == sha256(images / f"{name}-img")
    assert sha256(qcow2) == sha256(images / f"{name}-qcow2")
    assert changed <= result.changed_bytes <= changed + 64 * 1024  # + the qcow2's metadata
    assert index_holds(raw) and index_holds(qcow2)


async def test_a_clone_changed_behind_kvm_clones_back_is_read_again(
    lab: Lab,
    lab_config: Config,
    clean_beta: LabHostRuntime,
    source_vm: tuple[str, Path],
    no_agent: None,
) -> None:
    name, images = source_vm
    raw = lab.layout.host_path("beta", f"{IMAGES}/ix-touched-vda.img")
    events: list[JobEvent] = []
    async with KVMCloneClient(lab_config) as client:
        await client.clone_vm("alpha", "beta", name, new_name="ix-touched", check=True)
        with raw.open("r+b") as f:  # same size, same allocation: only the bytes differ
            f.seek(1 << 20)
            f.write(b"written on beta, not by kvm-clone")
        change_raw(images / f"{name}-img", 3, seed=6)
        await client.sync_vm(
            "alpha",
            "beta",
            name,
            target_name="ix-touched",
            mode="hash",
            on_event=events.append,
            check=True,
        )
    messages = [e.message for e in events]
    assert sum(INDEX_USED in m for m in messages) == 1, messages  # vdb only: vda was re-read
    assert sha256(raw) == sha256(images / f"{name}-img")  # the stray write is gone
    assert index_holds(raw)  # and the clone's hash saved a new index, kept by the receive
