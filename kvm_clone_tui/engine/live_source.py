"""A running VM's disks at one point in time: libvirt's pull-mode backup over an NBD socket.

``backup_begin`` freezes the guest's filesystems through its agent when one answers (else the
point in time is crash-consistent), starts a full pull-mode backup exporting every disk as an
NBD export named after its target on a unix socket of the source host, and thaws right away: the
guest never waits longer than the backup's start. Blocks the guest overwrites afterwards are
kept in scratch files in the source's pool until ``backup_end`` ends the job.
"""

from __future__ import annotations

import contextlib
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import libvirt

from kvm_clone_tui.api.errors import LibvirtError
from kvm_clone_tui.engine.hosts import Host

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
    bitmaps: dict[str, str] = {}

    def begin(conn: libvirt.virConnect) -> str:
        dom = conn.lookupByName(vm)
        frozen = False
        try:
            frozen = dom.fsFreeze() > 0
        except libvirt.libvirtError:
            frozen = False  # no guest agent, or it does not answer: crash-consistent
        try:
            dom.backupBegin(xml, checkpoint_xml, 0)
        finally:
            if frozen:
                with contextlib.suppress(libvirt.libvirtError):
                    dom.fsThaw()
        if incremental is not None:
            for disk in ET.fromstring(dom.backupGetXMLDesc(0)).iter("disk"):
                if disk.get("exportbitmap") and disk.get("name") in disks:
                    bitmaps[str(disk.get("name"))] = f"qemu:dirty-bitmap:{disk.get('exportbitmap')}"
        return "application-consistent" if frozen else "crash-consistent"

    try:
        consistency = await src.libvirt.call(begin)
    except LibvirtError as exc:
        raise LibvirtError(
            src.name, f"cannot start a backup of {vm} for a live clone: {exc.message}"
        ) from exc
    return LiveSource(vm=vm, socket=socket, consistency=consistency, bitmaps=bitmaps)


async def backup_end(src: Host, vm: str) -> None:
    """End the VM's backup job (libvirt removes its scratch files); harmless if none runs."""

    def end(conn: libvirt.virConnect) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(vm)
            stats = dom.jobStats(0)
            # Only a backup job is ours to end: never abort a migration or a save.
            if stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP:
                dom.abortJob()

    await src.libvirt.call(end)
