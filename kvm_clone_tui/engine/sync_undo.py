"""``sync --checkpoint``: keep what a sync overwrites on the clone, so it can be put back.

Before a block of the clone is overwritten, the receiving agent appends its old contents to an
undo log next to the file (``.kvmclone-undo-<uuid>-<label>``, in the same storage pool). A
manifest (``.kvmclone-undo-<uuid>.json``, next to the clone's first disk) lists the logs, the
clone's definition before the sync and, once the sync is verified, a stamp of the clone's files
as the sync left them. ``revert`` applies the logs (refusing when the clone changed since the
sync), redefines the old definition and removes the logs; a sync that fails half-way is reverted
from them at once, so the clone is left in its old state rather than a mix. Any later sync
discards the previous logs: only the last sync can be undone.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvm_clone_tui.agent.protocol import AgentFailure
from kvm_clone_tui.api.errors import HostError, RevertRefused
from kvm_clone_tui.api.models import DiskDevice, VMState
from kvm_clone_tui.api.plans import SyncPlan
from kvm_clone_tui.api.results import RevertResult
from kvm_clone_tui.engine import nbd_export
from kvm_clone_tui.engine.clone_metadata import set_clone_metadata
from kvm_clone_tui.engine.domain_rewrite import read_clone_metadata
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.remote_agent import RemoteAgent

if TYPE_CHECKING:
    from kvm_clone_tui.engine.host_port import Hosts

UNDO_PREFIX = ".kvmclone-undo-"


def manifest_path(first_dest_path: str, uuid: str) -> str:
    """Where the manifest of a clone's undo logs lives."""
    return posixpath.join(posixpath.dirname(first_dest_path), f"{UNDO_PREFIX}{uuid}.json")


def undo_path(dest_path: str, uuid: str, label: str) -> str:
    """The undo log of one of the clone's files (same directory: same pool)."""
    return posixpath.join(posixpath.dirname(dest_path), f"{UNDO_PREFIX}{uuid}-{label}")


@dataclass(frozen=True)
class UndoFile:
    """One file a checkpointed sync may overwrite."""

    label: str
    dest_path: str
    undo_path: str
    nbd: bool  # written through qemu-nbd (a qcow2 image, guest offsets)
    format: str


def undo_files(plan: SyncPlan) -> list[UndoFile]:
    """What a checkpointed sync of ``plan`` may overwrite, and where the old contents go."""
    formats, bitmap = dict(plan.dest_formats), {d.target for d in plan.bitmap_disks}
    return [
        UndoFile(
            p.label,
            p.dest_path,
            undo_path(p.dest_path, plan.target_uuid, p.label),
            plan.mode == "bitmap" and p.label in bitmap and formats.get(p.label) != "raw",
            formats.get(p.label, "raw"),
        )
        for p in plan.pairs
    ]


async def disk_stamp(agent: RemoteAgent, paths: Sequence[str]) -> str:
    """A fingerprint of files' size, times and identity: it changes when anything writes them."""
    found = await agent.stat(paths)
    parts = []
    for path in sorted(paths):
        st = found.get(path, {})
        if "error" in st:
            raise HostError(agent.host.name, f"cannot stat {path}: {st['error']}")
        parts.append([path, st["size"], st["mtime_ns"], st["ctime_ns"], st["ino"], st["dev"]])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


async def read_manifest(host: Host, path: str) -> dict[str, Any] | None:
    """The manifest at ``path``, None when there is none."""
    done = await host.run(["cat", "--", path], check=False)
    if done.exit_status != 0:
        return None
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise HostError(host.name, f"the undo manifest {path} is damaged: {exc}") from exc
    return data if isinstance(data, dict) else None


async def write_manifest(agent: RemoteAgent, path: str, data: dict[str, Any]) -> None:
    """Write (or atomically replace) the manifest."""
    try:
        text = json.dumps(data, indent=1)
        await agent.put(path, text, root=posixpath.dirname(path), replace=True)
    except AgentFailure as exc:
        raise HostError(agent.host.name, f"cannot write {path}: {exc}") from exc


async def discard(host: Host, agent: RemoteAgent, path: str) -> bool:
    """Remove an earlier sync's undo logs and manifest; True if there were any."""
    manifest = await read_manifest(host, path)
    if manifest is None:
        return False
    for item in manifest.get("files", []):
        log = str(item["undo_path"])
        await agent.remove(log, root=posixpath.dirname(log), missing_ok=True)
    await agent.remove(path, root=posixpath.dirname(path), missing_ok=True)
    return True


async def begin(
    agent: RemoteAgent,
    path: str,
    *,
    job_id: str,
    target: str,
    uuid: str,
    domain_xml: str,
    metadata: dict[str, str],
    files: Sequence[UndoFile],
) -> dict[str, Any]:
    """Write the manifest of a checkpointed sync that is about to start."""
    manifest: dict[str, Any] = {
        "job": job_id,
        "target": target,
        "uuid": uuid,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "state": "syncing",
        "domain_xml": domain_xml,
        "metadata": metadata,
        "files": [f.__dict__ for f in files],
    }
    await write_manifest(agent, path, manifest)
    return manifest


async def seal(agent: RemoteAgent, path: str, manifest: dict[str, Any], stamp: str) -> None:
    """The sync is verified: record the clone's stamp, which a revert will insist on."""
    await write_manifest(agent, path, {**manifest, "state": "complete", "stamp_after": stamp})


async def apply(host: Host, agent: RemoteAgent, manifest: dict[str, Any]) -> int:
    """Put back every saved block (files the sync never wrote have no log); bytes restored."""
    try:
        return await _apply(host, agent, manifest)
    except AgentFailure as exc:
        raise HostError(host.name, f"cannot put the clone back: {exc}") from exc


async def _apply(host: Host, agent: RemoteAgent, manifest: dict[str, Any]) -> int:
    restored = 0
    for item in manifest.get("files", []):
        log, dest = str(item["undo_path"]), str(item["dest_path"])
        root = posixpath.dirname(log)
        exists = await host.run(["test", "-f", log], check=False)
        if exists.exit_status != 0:
            continue
        if item.get("nbd"):
            tag = f"undo-{manifest['job']}-{item['label']}"
            export = await nbd_export.serve(host, dest, str(item["format"]), tag, writable=True)
            try:
                done = await agent.undo_apply(log, root=root, nbd=(export.socket, export.export))
            finally:
                await nbd_export.stop(export)
        else:
            done = await agent.undo_apply(log, root=root, target=dest)
        restored += int(done.get("bytes", 0))
    return restored


async def check_revertible(
    agent: RemoteAgent, manifest: dict[str, Any] | None, paths: Sequence[str], target: str
) -> None:
    """Refuse (RevertRefused) unless the clone is exactly as the checkpointed sync left it
    (or as an interrupted checkpointed sync left it: its logs hold what it overwrote)."""
    if manifest is None:
        raise RevertRefused(
            f"{target} has no checkpoint to go back to: only a sync made with --checkpoint "
            "can be reverted, and only the last one"
        )
    if manifest.get("state") == "syncing":
        return  # cut off before it could put the clone back itself: reverting finishes that
    if await disk_stamp(agent, paths) != manifest.get("stamp_after"):
        raise RevertRefused(
            f"{target}'s disks changed after the sync (was it started?): reverting would mix "
            "states; sync it again instead"
        )


async def revert(hosts: Hosts, dest: str, target: str) -> RevertResult:
    """Put a clone back as it was before its last sync made with ``--checkpoint``."""
    started = time.monotonic()
    vm = (await hosts.inventory(dest)).vm(target)
    if vm is None:
        raise HostError(dest, f"no VM named {target!r} (kvm-clone list {dest})")
    if vm.state is not VMState.SHUT_OFF:
        raise RevertRefused(f"{target} on {dest} is {vm.state.value}: shut it down first")
    first = next((d.path for d in vm.disks if d.device is DiskDevice.DISK and d.path), None)
    if first is None:
        raise RevertRefused(f"{target} has no disk file: nothing to revert")
    host = await hosts.host(dest)
    agent = RemoteAgent(host)
    path = manifest_path(first, vm.uuid)
    manifest = await read_manifest(host, path)
    paths = [str(f["dest_path"]) for f in (manifest or {}).get("files", [])]
    await check_revertible(agent, manifest, paths, target)
    assert manifest is not None
    # The checkpoint the sync left on the source: the next sync deletes it (see below).
    now = read_clone_metadata(await host.domain_xml(target, inactive=True))
    restored = await apply(host, agent, manifest)
    old_xml = str(manifest["domain_xml"])
    await host.define(old_xml)
    if manifest.get("state") == "syncing":
        # An interrupted sync: the source's checkpoint never moved, the clone is back at it.
        updates = {"dest-stamp": await disk_stamp(agent, paths)}
        if now.get("sync-pending"):  # the cut-off sync's own checkpoint: the next sync drops it
            updates["sync-pending"] = now["sync-pending"]
        await set_clone_metadata(host, vm.uuid, updates)
    else:
        # The source's checkpoint moved on with the sync: the next sync compares hashes, and
        # deletes that checkpoint (recorded as pending) on the source.
        pending = {"sync-pending": now["checkpoint"]} if now.get("checkpoint") else {}
        await set_clone_metadata(
            host, vm.uuid, {"sync-state": "reverted", **pending}, ("checkpoint", "dest-stamp")
        )
    await discard(host, agent, path)
    return RevertResult(
        dest, target, str(manifest.get("job", "")), restored, time.monotonic() - started
    )
