"""An ``ssh-agent`` of the benchmark's own holding the lab key (kvm-clone's direct route needs
one to forward), and the environment kvm-clone then runs in."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common.lab import BenchLab


@contextlib.contextmanager
def ssh_agent(lab: BenchLab, tmp: Path) -> Iterator[tuple[dict[str, str], int]]:
    """An ``ssh-agent -D`` holding the lab key; (environment with SSH_AUTH_SOCK, its pid).

    The environment also points kvm-clone at the lab's config and at a private state dir
    (``tmp/state``): kvm-clone's job journals of this benchmark are invisible to anyone else's
    ``kvm-clone recover`` (which rolls back every unfinished journal it finds, running or not),
    and theirs to ours.
    """
    sock = tmp / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {
            **os.environ,
            "SSH_AUTH_SOCK": str(sock),
            "KVM_CLONE_CONFIG": str(lab.config),
            "KVM_CLONE_STATE_DIR": str(tmp / "state"),
        }
        subprocess.run(
            ["ssh-add", "-q", str(lab.layout.operator_key)],
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        yield env, agent.pid
    finally:
        agent.terminate()
        agent.wait(timeout=10)
