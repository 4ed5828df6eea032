"""The checkpoint a clone leaves on its source, so that the first sync can use bitmap mode.

A shut-off source gets its bitmaps before the first byte is read (any later write is in them);
a running source gets its checkpoint from the live clone's backup job, at the clone's point in
time. After the commit the clone's metadata names the checkpoint and records a stamp of the
clone's files (sync.py compares it to know the clone was not changed since). The checkpoint is
deleted again when the clone rolls back. Sources whose disks cannot carry bitmaps (raw, backing
chains) get none: their syncs use hash mode.
"""

from __future__ import annotations

import dataclasses
import posixpath

from kvm_clone_tui.api.models import VMState
from kvm_clone_tui.api.plans import ClonePlan, bitmap_disks
from kvm_clone_tui.engine import checkpoints, sync_undo
from kvm_clone_tui.engine.clone_metadata import set_clone_metadata
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.journal import Journal
from kvm_clone_tui.engine.remote_agent import RemoteAgent


def wanted(plan: ClonePlan) -> str | None:
    """The checkpoint this clone leaves on the source, None when its disks cannot have one
    (or ``--no-checkpoint``)."""
    if not plan.options.checkpoint:
        return None
    disks, why = bitmap_disks(plan.vm)
    return checkpoints.checkpoint_name(plan.job_id) if why is None and disks else None


def live_xml(plan: ClonePlan, journal: Journal) -> str | None:
    """A live clone's checkpoint XML for its backup job (recorded in the journal first)."""
    name = wanted(plan)
    if name is None:
        return None
    disks, _ = bitmap_disks(plan.vm)
    journal.record.source_checkpoint = name
    journal.save()
    return checkpoints.checkpoint_xml(name, disks, [d.target for d in plan.vm.disks])


async def before_copy(src: Host, plan: ClonePlan, journal: Journal) -> ClonePlan:
    """Checkpoint a shut-off source before its disks are read.

    Returns the plan with the disk files' new sizes: a bitmap makes a qcow2 file a little
    bigger, and the copy must take the file as it is now.
    """
    name = wanted(plan)
    if name is None or plan.live or plan.vm.state is not VMState.SHUT_OFF:
        return plan
    disks, _ = bitmap_disks(plan.vm)
    journal.record.source_checkpoint = name
    journal.save()
    await checkpoints.create_offline(
        src, plan.vm.name, name, disks, [d.target for d in plan.vm.disks]
    )
    paths = [f.source_path for f in plan.files if f.role == "disk"]
    found = await RemoteAgent(src).stat(paths)
    files = []
    for file in plan.files:
        size = found.get(file.source_path, {}).get("size")
        if file.role == "disk" and isinstance(size, int) and size != file.size:
            file = dataclasses.replace(file, size=size, allocated=file.allocated + size - file.size)
            for staged in journal.record.files:
                if staged.staging == file.staging_path and staged.size >= 0:
                    staged.size = size
        files.append(file)
    journal.save()
    return dataclasses.replace(plan, files=tuple(files))


async def record(dst: Host, plan: ClonePlan, journal: Journal) -> str | None:
    """After the commit: clean the copied bitmaps, stamp the clone, name its checkpoint."""
    name = journal.record.source_checkpoint
    if name is None:
        return None
    disk_files = [f for f in plan.files if f.role == "disk"]
    for file in disk_files:
        if file.format == "qcow2":
            root = posixpath.dirname(file.final_path)
            await checkpoints.strip_bitmaps(dst, file.final_path, root)
    stamp = await sync_undo.disk_stamp(RemoteAgent(dst), [f.final_path for f in plan.files])
    await set_clone_metadata(dst, plan.new_uuid, {"checkpoint": name, "dest-stamp": stamp})
    return name


async def forget(src: Host, journal: Journal) -> None:
    """Roll back: delete the checkpoint the clone created on the source (if it did)."""
    name = journal.record.source_checkpoint
    if name is None:
        return
    await checkpoints.delete(src, journal.record.vm, name)
    journal.record.source_checkpoint = None
    journal.save()
