"""Source checkpoints: the dirty bitmaps that let the next sync send only what changed.

A clone (and every sync) leaves one checkpoint on the source VM, named ``kvmclone-<job>``: a
persistent dirty bitmap of that name in each qcow2 disk plus libvirt's checkpoint metadata. The
clone's ``kvmclone:clone`` metadata names it; the next sync reads the blocks the bitmap marks
(bitmap mode, see sync.py) and rolls it forward: the new checkpoint is taken at the sync's point in
time, the old one is deleted once the sync is verified.

libvirt 9 creates and deletes checkpoints of *running* domains only. For a shut-off domain the
bitmap is added or removed with ``qemu-img bitmap`` (nothing else has the image open) and the
checkpoint is (re)defined or deleted as metadata only, which is exactly what libvirt itself would
find after the VM had been running: when the VM starts, QEMU loads the persistent bitmap and keeps
recording writes in it, and libvirt can start incremental backups from it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from kvm_clone_tui.api.errors import HostError, LibvirtError
from kvm_clone_tui.api.plans import BitmapDisk
from kvm_clone_tui.api.validation import shell_quote_argv
from kvm_clone_tui.engine import block_index
from kvm_clone_tui.engine.host_port import Host

CHECKPOINT_PREFIX = "kvmclone-"


def checkpoint_name(job_id: str) -> str:
    """The checkpoint (and bitmap) name a job leaves on the source."""
    return f"{CHECKPOINT_PREFIX}{job_id}"


def checkpoint_xml(
    name: str,
    disks: Sequence[BitmapDisk],
    all_targets: Sequence[str],
    *,
    domain_xml: str | None = None,
) -> str:
    """A ``<domaincheckpoint>``: a bitmap named ``name`` on ``disks``, none on the others.

    With ``domain_xml`` (for a redefinition) the creation time and the domain are included.
    """
    with_bitmap = {d.target for d in disks}
    parts = [f"<domaincheckpoint><name>{escape(name)}</name>"]
    if domain_xml is not None:
        parts.append(f"<creationTime>{int(time.time())}</creationTime>")
    parts.append("<disks>")
    for target in all_targets:
        if target in with_bitmap:
            parts.append(
                f"<disk name={quoteattr(target)} checkpoint='bitmap' bitmap={quoteattr(name)}/>"
            )
        else:
            parts.append(f"<disk name={quoteattr(target)} checkpoint='no'/>")
    parts.append("</disks>")
    if domain_xml is not None:
        parts.append(domain_xml)
    parts.append("</domaincheckpoint>")
    return "".join(parts)


async def image_bitmaps(host: Host, path: str) -> dict[str, list[str]]:
    """The persistent bitmaps of a qcow2 image: name -> flags (``auto``, ``in-use``)."""
    done = await host.run(
        ["qemu-img", "info", "--force-share", "--output=json", "-f", "qcow2", path], timeout=60
    )
    try:
        info = json.loads(done.stdout)
        found = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
        return {str(b["name"]): [str(f) for f in b.get("flags", [])] for b in found}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HostError(host.name, f"cannot read the bitmaps of {path}: {exc}") from exc


async def create_offline(
    host: Host, vm: str, name: str, disks: Sequence[BitmapDisk], all_targets: Sequence[str]
) -> None:
    """Checkpoint a shut-off VM: add the bitmaps with qemu-img, then define the metadata."""
    added: list[BitmapDisk] = []
    try:
        for disk in disks:
            await host.run(
                ["qemu-img", "bitmap", "--add", "--enable", "-f", "qcow2", disk.path, name],
                timeout=120,
            )
            added.append(disk)

        await host.redefine_checkpoint(
            vm, lambda inactive: checkpoint_xml(name, disks, all_targets, domain_xml=inactive)
        )
    except BaseException:
        for disk in added:
            with contextlib.suppress(Exception):
                await host.run(["qemu-img", "bitmap", "--remove", disk.path, name], check=False)
        raise


async def delete(host: Host, vm: str, name: str, disks: Sequence[BitmapDisk] | None = None) -> None:
    """Delete a checkpoint and its bitmaps, whether the VM runs or not (missing: no error).

    Without ``disks``, the VM's qcow2 disk files are taken from its definition.
    """
    try:
        paths = await host.delete_checkpoint(vm, name)
    except LibvirtError as exc:
        message = f"cannot delete checkpoint {name} of {vm}: {exc.message}"
        raise LibvirtError(host.name, message) from exc
    if paths is not None and disks is not None:
        paths = [d.path for d in disks]
    for path in paths or []:
        if name in await image_bitmaps(host, path):
            await host.run(["qemu-img", "bitmap", "--remove", path, name], timeout=120)


async def invalid_reason(
    host: Host, vm: str, name: str, disks: Sequence[BitmapDisk], running: bool
) -> str | None:
    """Why checkpoint ``name`` cannot serve an incremental sync (None: it can)."""

    reason = await host.checkpoint_problem(vm, name, running)
    if reason is not None or running:
        return reason
    for disk in disks:
        flags = (await image_bitmaps(host, disk.path)).get(name)
        if flags is None:
            return f"disk {disk.target} has no bitmap {name}"
        if "auto" not in flags:
            return f"the bitmap of disk {disk.target} is disabled"
        if "in-use" in flags:
            return f"the bitmap of disk {disk.target} is inconsistent (QEMU did not stop cleanly)"
    return None


async def strip_bitmaps(host: Host, path: str, root: str) -> list[str]:
    """Remove kvm-clone's bitmaps from a clone's qcow2 image (copied along with its bytes),
    keeping its block index (``root``: the directory it lies in) up to date."""
    found = [b for b in await image_bitmaps(host, path) if b.startswith(CHECKPOINT_PREFIX)]

    async def remove() -> list[str]:  # one round trip for them all
        script = " && ".join(
            shell_quote_argv(["qemu-img", "bitmap", "--remove", path, bitmap]) for bitmap in found
        )
        await host.run(["sh", "-c", script], timeout=120)
        return found

    return await block_index.around_metadata_change(host, path, root, remove) if found else []
