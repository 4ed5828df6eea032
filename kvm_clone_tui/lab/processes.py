"""Process and mount-namespace helpers for the lab (Linux /proc only)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def read_pid_file(path: Path) -> int | None:
    """The pid in ``path``, or None when the file is missing or garbled."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_running(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def mount_namespace(pid: int | str = "self") -> str | None:
    """The mount namespace id of ``pid`` (e.g. ``mnt:[4026532288]``), or None if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def processes_in_namespace(namespace: str) -> list[int]:
    """Every live process whose mount namespace is ``namespace``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if mount_namespace(pid) == namespace and is_running(pid):
                pids.append(pid)
    return pids


def terminate(pids: Iterable[int], grace: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``grace`` seconds, then SIGKILL; return those killed hard."""
    pending = [p for p in pids if is_running(p)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [p for p in pending if is_running(p)]
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pending


def nsenter_argv(pid: int, argv: Sequence[str], *, uts: bool = True) -> list[str]:
    """Prefix ``argv`` so that it runs in the mount (and UTS) namespace of ``pid``.

    ``--root --wd`` take the target's root and working directory as well: without them nsenter
    resets the root to the namespace's real ``/``, which differs from the lab host's own root when
    the lab runs inside a chroot (a fresh Debian root in CI), so ``virsh`` would look for the
    libvirtd socket in the machine's /run instead of the lab host's.
    """
    namespaces = ["--mount", "--uts"] if uts else ["--mount"]
    return ["nsenter", f"--target={pid}", *namespaces, "--root", "--wd", "--", *argv]


def run_in_namespace(
    pid: int,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the mount namespace of ``pid`` and capture its output."""
    return subprocess.run(
        nsenter_argv(pid, argv),
        input=input,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )
