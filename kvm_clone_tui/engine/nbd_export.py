"""Images served by ``qemu-nbd`` on a host, for reading a bitmap or writing through a format.

A shut-off source's dirty bitmap is read through a read-only export (``--bitmap``), and a qcow2
clone is written through a writable one, so that guest-visible blocks land in the image's own
format. The server serves one client and exits when it disconnects; ``stop`` makes sure it is
gone (and the image closed) before anything else touches the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from dataclasses import dataclass

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.engine.host_port import Host

SOCKET_DIR = "/var/lib/libvirt/qemu"


@dataclass(frozen=True)
class NBDExport:
    """A running qemu-nbd: its socket, export name and pid file."""

    host: Host
    socket: str
    export: str
    pid_file: str
    path: str


async def serve(
    host: Host,
    path: str,
    fmt: str,
    tag: str,
    *,
    writable: bool,
    bitmap: str | None = None,
) -> NBDExport:
    """Start qemu-nbd on ``path`` (returns once its socket accepts connections)."""
    base = posixpath.join(SOCKET_DIR, f"kvmclone-{tag}")
    export = NBDExport(host, base + ".sock", "disk", base + ".pid", path)
    argv = [
        "qemu-nbd",
        "--fork",
        "--shared=1",
        f"--pid-file={export.pid_file}",
        f"--socket={export.socket}",
        f"--export-name={export.export}",
        f"--format={fmt}",
    ]
    if writable:
        argv += ["--discard=unmap", "--detect-zeroes=unmap", "--cache=writeback"]
    else:
        argv += ["--read-only"]
    if bitmap is not None:
        argv += [f"--bitmap={bitmap}"]
    done = await host.run([*argv, path], check=False, timeout=60)
    if done.exit_status != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit {done.exit_status}"])[-1]
        raise HostError(host.name, f"cannot serve {path} with qemu-nbd: {detail}")
    return export


async def stop(export: NBDExport, *, grace: float = 30.0) -> None:
    """Wait for the server to exit (it does once its client is gone), else terminate it."""
    # A zombie counts as gone: the server has exited (and closed the image); who reaps it is
    # not our concern (an init that reaps late would otherwise cost seconds).
    script = (
        'pid=$(cat "$1" 2>/dev/null) || exit 0; i=0; '
        "alive() { [ -e /proc/$pid/stat ] && "
        "[ \"$(sed -e 's/^.*) //' /proc/$pid/stat | cut -c1)\" != Z ]; }; "
        "while alive; do "
        '  i=$((i+1)); [ "$i" -gt "$2" ] && kill "$pid" 2>/dev/null; '
        '  [ "$i" -gt $(($2 + 500)) ] && exit 1; sleep 0.01; '
        'done; rm -f "$1" "$3"'
    )
    ticks = str(int(grace * 100))
    done = await export.host.run(
        ["sh", "-c", script, "stop", export.pid_file, ticks, export.socket],
        check=False,
        timeout=grace + 30,
    )
    if done.exit_status != 0:
        raise HostError(export.host.name, f"qemu-nbd serving {export.path} does not stop")


async def stop_quietly(export: NBDExport) -> None:
    """``stop`` for clean-up paths: never raises, never waits long."""
    with contextlib.suppress(Exception):  # best effort after a failure being reported
        await asyncio.shield(stop(export, grace=2.0))
