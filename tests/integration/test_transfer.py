"""The transfer layer on the lab: the agent on the hosts, and one file copy whose receiver
stops first."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvm_clone_tui.agent import AGENT_DIGEST, AGENT_VERSION
from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.api.config import Config
from kvm_clone_tui.engine.remote_agent import RemoteAgent
from kvm_clone_tui.engine.transfer import FileTransfer, TransferError, TransferOptions, copy_file
from kvm_clone_tui.lab.manager import Lab
from tests.integration.conftest import IMAGES

SIZE = 64 << 20  # far more than the relay's SSH window: the sender cannot finish unread


@pytest.fixture
def big_source(lab: Lab) -> Iterator[str]:
    """A file of random data on alpha (its path as alpha sees it)."""
    name = f"transfer-src-{os.getpid()}.img"
    local = lab.layout.host_path("alpha", f"{IMAGES}/{name}")
    with local.open("wb") as f:
        f.write(os.urandom(SIZE))
    yield f"{IMAGES}/{name}"
    local.unlink(missing_ok=True)


def senders_of(lab: Lab, path: str) -> list[int]:
    """Processes on alpha whose command line names ``path`` (the agent sending it)."""
    namespace = lab.runtime("alpha").namespace()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") != namespace:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"send" in argv and path.encode() in argv:
            found.append(int(entry.name))
    return found


async def test_a_receiver_that_stops_first_fails_the_relay_copy_at_once(
    lab: Lab, lab_config: Config, big_source: str
) -> None:
    """The receiver refuses its file (it exists) while the sender still has most of 64 MiB to
    send: the copy fails with the receiver's reason, does not wait on the sender's output that
    nobody reads any more, and the sender does not go on running on the source host."""
    taken = f"{IMAGES}/transfer-taken-{os.getpid()}.img"
    local_taken = lab.layout.host_path("beta", taken)
    local_taken.write_bytes(b"not to be overwritten")
    item = FileTransfer(
        label="vda",
        source_path=big_source,
        dest_path=taken,
        dest_root=IMAGES,
        size=SIZE,
        allocated=SIZE,
    )
    try:
        async with KVMCloneClient(lab_config) as client:
            alpha, beta = await client.host("alpha"), await client.host("beta")
            copy = copy_file(
                alpha,
                RemoteAgent(alpha),
                beta,
                RemoteAgent(beta),
                item,
                TransferOptions(),
                lambda _: None,
            )
            with pytest.raises(TransferError, match="exists"):
                await asyncio.wait_for(copy, 60)  # the no-progress watchdog would take 120 s
        assert local_taken.read_bytes() == b"not to be overwritten"
        deadline = time.monotonic() + 10
        while senders_of(lab, big_source) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not senders_of(lab, big_source)
    finally:
        local_taken.unlink(missing_ok=True)


async def test_the_agent_is_installed_checked_and_run_compiled(lab_config: Config) -> None:
    """A host without this version's agent gets its zipapp installed and compiled once; a later
    connection checks both and runs the compiled agent; a damaged zipapp is installed anew and
    a damaged compiled copy rebuilt."""
    async with KVMCloneClient(lab_config) as client:
        alpha = await client.host("alpha")
        mine = f"~/.cache/kvm-clone/agent-{AGENT_VERSION}"
        await alpha.run(["sh", "-c", f"rm -f {mine}.pyz {mine}.*.pyz"])
        installed = await RemoteAgent(alpha).ensure()
        assert installed.endswith(".pyz") and f"agent-{AGENT_VERSION}.cpython-" in installed
        source = installed.rsplit(".", 2)[0] + ".pyz"
        listed = await alpha.run(["sha256sum", source, installed])
        before = dict(reversed(line.split()) for line in listed.stdout.splitlines())
        assert before[source] == AGENT_DIGEST
        damage = 'printf "damaged" >> "$1"; printf "x" | dd of="$2" bs=1 seek=5000 conv=notrunc'
        await alpha.run(["sh", "-c", damage + " 2>/dev/null", "sh", source, installed])
        listed = await alpha.run(["sha256sum", installed])
        damaged = listed.stdout.split()[0]
        assert damaged != before[installed]
    async with KVMCloneClient(lab_config) as client:  # a new connection checks again
        alpha = await client.host("alpha")
        agent = RemoteAgent(alpha)
        assert await agent.ensure() == installed
        assert (await agent.probe())["agent_version"] == AGENT_VERSION
        listed = await alpha.run(["sha256sum", source, installed])
        after = dict(reversed(line.split()) for line in listed.stdout.splitlines())
        assert after[source] == AGENT_DIGEST and after[installed] != damaged  # repaired
