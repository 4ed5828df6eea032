"""A running VM's disks at one point in time: libvirt's pull-mode backup over an NBD socket.

``backup_begin`` freezes the guest's filesystems through its agent when one answers (else the
point in time is crash-consistent), starts a full pull-mode backup exporting every disk as an
NBD export named after its target on a unix socket of the source host, and thaws right away: the
guest never waits longer than the backup's start. Blocks the guest overwrites afterwards are
kept in scratch files in the source's pool until ``backup_end`` ends the job.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from kvm_clone_tui.api.errors import LibvirtError
from kvm_clone_tui.engine.host_port import Host

SOCKET_DIR = "/var/lib/libvirt/qemu"
SCRATCH_PREFIX = ".kvmclone-scratch-"


@dataclass(frozen=True)
class LiveSource:
    """A started backup job: where its NBD exports are and how consistent they are."""

    vm: str
    socket: str
    consistency: str  # application-consistent | crash-consistent
    bitmaps: dict[str, str] = field(default_factory=dict)  # incremental: target -> NBD context


def backup_xml(
    job_id: str,
    disks: Sequence[str],
    all_disks: Sequence[str],
    scratch_dir: str,
    incremental: str | None = None,
) -> tuple[str, str]:
    """The ``<domainbackup>`` of a pull-mode backup (full, or incremental since checkpoint
    ``incremental``); returns (xml, socket path)."""
    socket = posixpath.join(SOCKET_DIR, f"kvmclone-{job_id}.sock")
    parts = ["<domainbackup mode='pull'>"]
    if incremental is not None:
        parts.append(f"<incremental>{escape(incremental)}</incremental>")
    parts += [f"<server transport='unix' socket={quoteattr(socket)}/>", "<disks>"]
    for target in all_disks:
        if target in disks:
            scratch = posixpath.join(scratch_dir, f"{SCRATCH_PREFIX}{job_id}-{target}.qcow2")
            parts.append(
                f"<disk name={quoteattr(target)} backup='yes' type='file'>"
                f"<scratch file={quoteattr(scratch)}/></disk>"
            )
        else:
            parts.append(f"<disk name={quoteattr(target)} backup='no'/>")
    parts.append("</disks></domainbackup>")
    return "".join(parts), socket


async def backup_begin(
    src: Host,
    vm: str,
    job_id: str,
    disks: Sequence[str],
    all_disks: Sequence[str],
    scratch_dir: str,
    *,
    checkpoint_xml: str | None = None,
    incremental: str | None = None,
) -> LiveSource:
    """Start the backup job (freeze, begin, thaw); the exports are ready when this returns.

    ``checkpoint_xml`` creates a checkpoint at the same point in time (the next sync's base);
    ``incremental`` names the checkpoint whose changes the exports' dirty bitmaps show.
    """
    xml, socket = backup_xml(job_id, disks, all_disks, scratch_dir, incremental)
    try:
        began = await src.backup_begin(
            vm, xml, checkpoint_xml, disks if incremental is not None else None
        )
    except LibvirtError as exc:
        raise LibvirtError(
            src.name, f"cannot start a backup of {vm} for a live clone: {exc.message}"
        ) from exc
    return LiveSource(vm=vm, socket=socket, consistency=began.consistency, bitmaps=began.bitmaps)


async def backup_end(src: Host, vm: str) -> None:
    """End the VM's backup job (libvirt removes its scratch files); harmless if none runs."""
    await src.backup_end(vm)
