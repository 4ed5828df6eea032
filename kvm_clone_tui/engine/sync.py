"""Incremental sync: bring an earlier clone up to date, moving only the blocks that differ.

Hash mode (the mode this version has): both hosts hash fixed-size blocks of each disk file on
their own CPU at the same time, the client compares the lists, and the source sends only the
differing blocks, which the destination writes in place (blocks that became zero are punched
out). Disk files are made byte-identical, so qcow2 images, backing layers and NVRAM files sync
like raw ones. The clone's definition follows the source's (memory, vCPUs, devices) but keeps
its own name, UUID, MAC addresses and disk paths.

While a sync writes, the clone's ``kvmclone:clone`` metadata says ``sync-state="in-progress"``:
an interrupted sync never passes for a finished one, and the next sync (hash mode compares
everything again) resumes it and converges.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import libvirt

from kvm_clone_tui.engine.client import KVMCloneClient
from kvm_clone_tui.engine.domain_rewrite import (
    KVMCLONE_NS,
    DiskMapping,
    RewriteError,
    RewriteOptions,
    read_clone_metadata,
    rewrite_domain,
)
from kvm_clone_tui.engine.errors import HostError, KVMCloneError
from kvm_clone_tui.engine.hosts import Host
from kvm_clone_tui.engine.journal import new_job_id
from kvm_clone_tui.engine.models import VM, DiskDevice, VMState
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.engine.remote_agent import RemoteAgent
from kvm_clone_tui.engine.transfer import FileTransfer, TransferOptions, copy_file
from kvm_clone_tui.engine.units import format_bytes

SYNC_BLOCK_SIZE = 64 << 10
EventCallback = Callable[[JobEvent], None]


@dataclass(frozen=True)
class SyncOptions:
    """How to sync."""

    target_name: str | None = None  # the clone's name on the destination (default: VM's name)
    mode: str = "auto"  # auto | hash
    bandwidth_limit: int | None = None
    verify: bool = True
    parallel: int = 2
    block_size: int = SYNC_BLOCK_SIZE
    no_progress_timeout: float = 120.0


@dataclass(frozen=True)
class FilePair:
    """A source file and the clone's file that must become identical to it."""

    label: str
    source_path: str
    dest_path: str


@dataclass(frozen=True)
class SyncPlan:
    """What a sync will compare and why it can (or cannot) run."""

    job_id: str
    source_host: str
    dest_host: str
    vm: VM
    target: str
    target_uuid: str
    pairs: tuple[FilePair, ...]
    mode: str
    mode_reason: str
    dest_xml: str
    conflicts: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    options: SyncOptions = SyncOptions()

    @property
    def ok(self) -> bool:
        """True when nothing refuses the sync."""
        return not self.conflicts

    def describe(self) -> str:
        """The plan for people (``--dry-run``)."""
        lines = [
            f"sync {self.vm.name} ({self.source_host}) -> {self.target} ({self.dest_host})",
            f"  mode: {self.mode} ({self.mode_reason})",
        ]
        lines += [f"  {p.label:<14} {p.source_path} -> {p.dest_path}" for p in self.pairs]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        lines += [f"  REFUSED: {c}" for c in self.conflicts]
        return "\n".join(lines)


@dataclass(frozen=True)
class FileSync:
    """What one file's sync found and moved."""

    label: str
    blocks: int
    changed_blocks: int
    changed_bytes: int
    bytes_sent: int
    size: int


@dataclass(frozen=True)
class SyncResult:
    """What a finished sync did."""

    job_id: str
    source_host: str
    dest_host: str
    vm: str
    target: str
    mode: str
    files: tuple[FileSync, ...]
    changed_bytes: int
    bytes_sent: int
    seconds: float


class SyncRefused(KVMCloneError):
    """The sync plan has conflicts; nothing was changed."""

    def __init__(self, plan: SyncPlan) -> None:
        super().__init__("sync refused: " + "; ".join(plan.conflicts))
        self.plan = plan


def _pairs(vm: VM, target: VM, conflicts: list[str]) -> list[FilePair]:
    pairs: list[FilePair] = []
    theirs = {d.target: d for d in target.disks if d.device is DiskDevice.DISK}
    for disk in (d for d in vm.disks if d.device is DiskDevice.DISK):
        other = theirs.get(disk.target)
        if disk.path is None or disk.source_type != "file":
            conflicts.append(f"disk {disk.target} is not a file: it cannot be synced")
            continue
        if other is None or other.path is None:
            conflicts.append(f"the clone has no disk {disk.target}: re-clone it")
            continue
        pairs.append(FilePair(disk.target, disk.path, other.path))
        mine_chain, their_chain = disk.backing_chain, other.backing_chain
        if len(mine_chain) != len(their_chain):
            conflicts.append(f"disk {disk.target}: the backing chains differ in length: re-clone")
            continue
        for i, (a, b) in enumerate(zip(mine_chain, their_chain, strict=True), start=1):
            pairs.append(FilePair(f"{disk.target}.backing{i}", a.path, b.path))
    if vm.nvram and target.nvram:
        pairs.append(FilePair("nvram", vm.nvram, target.nvram))
    return pairs


async def build_sync_plan(
    client: KVMCloneClient, source: str, dest: str, vm_name: str, options: SyncOptions
) -> SyncPlan:
    """Check that ``dest`` holds a clone of ``vm_name`` that can be brought up to date."""
    target_name = options.target_name or vm_name
    src_inv, dst_inv = await asyncio.gather(client.inventory(source), client.inventory(dest))
    vm = src_inv.vm(vm_name)
    if vm is None:
        raise HostError(source, f"no VM named {vm_name!r} (kvm-clone list {source})")
    target = dst_inv.vm(target_name)
    if target is None:
        raise HostError(
            dest,
            f"no VM named {target_name!r}: clone it first "
            f"(kvm-clone clone {source} {dest} {vm_name})",
        )
    conflicts: list[str] = []
    warnings: list[str] = []
    dest_xml_now = await client.domain_xml(dest, target_name, inactive=True)
    meta = read_clone_metadata(dest_xml_now)
    if meta.get("source-uuid") != vm.uuid or meta.get("source-host") != source:
        conflicts.append(
            f"{target_name} on {dest} is not a clone of {vm_name} on {source} "
            "(its kvmclone metadata names another source)"
        )
    if target.state is not VMState.SHUT_OFF:
        conflicts.append(f"{target_name} on {dest} is {target.state.value}: shut it down first")
    if vm.state is not VMState.SHUT_OFF:
        conflicts.append(
            f"{vm_name} is {vm.state.value}: hash mode reads the disk files, so "
            "shut it down first (a live clone works on running VMs)"
        )
    if meta.get("sync-state") == "in-progress":
        warnings.append("the last sync was interrupted: this one resumes and completes it")
    mode_reason = {
        "auto": "auto: bitmap mode is not available yet, hash mode compares blocks",
        "hash": "requested",
    }.get(options.mode)
    if mode_reason is None:
        conflicts.append(f"unknown sync mode {options.mode!r}: use auto or hash")
        mode_reason = ""
    pairs = _pairs(vm, target, conflicts)
    dest_xml = ""
    if not conflicts:
        try:
            dest_xml = _synced_definition(
                await client.domain_xml(source, vm_name, inactive=True),
                dest_xml_now,
                target,
                pairs,
                {**meta, "sync-state": "synced"},
            )
        except RewriteError as exc:
            conflicts.append(f"the source's definition cannot be synced: {exc}")
    return SyncPlan(
        job_id=new_job_id(),
        source_host=source,
        dest_host=dest,
        vm=vm,
        target=target_name,
        target_uuid=target.uuid,
        pairs=tuple(pairs),
        mode="hash",
        mode_reason=mode_reason,
        dest_xml=dest_xml,
        conflicts=tuple(conflicts),
        warnings=tuple(warnings),
        options=options,
    )


def _synced_definition(
    source_xml: str, dest_xml: str, target: VM, pairs: Sequence[FilePair], metadata: dict[str, str]
) -> str:
    """The source's definition with the clone's identity: name, UUID, MACs, disk paths."""
    disks = {
        p.label: DiskMapping(
            p.label,
            p.dest_path,
            next((d.format or "raw") for d in target.disks if d.target == p.label),
        )
        for p in pairs
        if "." not in p.label and p.label != "nvram"
    }
    nvram = next((p.dest_path for p in pairs if p.label == "nvram"), None)
    result = rewrite_domain(
        source_xml,
        RewriteOptions(
            new_name=target.name,
            new_uuid=target.uuid,
            disks=disks,
            preserve_mac=True,
            nvram_path=nvram,
            metadata=metadata,
            cdrom_paths_present=frozenset(),
        ),
    )
    # Keep the clone's own MAC addresses, interface by interface.
    theirs = [m.get("address") for m in ET.fromstring(dest_xml).iter("mac")]
    xml = result.xml
    for (_old, mine), address in zip(result.macs, theirs, strict=False):
        if address and mine:
            xml = xml.replace(f"'{mine}'", f"'{address}'").replace(f'"{mine}"', f'"{address}"')
    return xml


def _ranges(
    mine: list[str | None], theirs: list[str | None], size: int, their_size: int, bs: int
) -> list[tuple[int, int]]:
    """Merged byte ranges whose blocks differ (or lie beyond the clone's old size)."""
    out: list[tuple[int, int]] = []
    for i, digest in enumerate(mine):
        other = theirs[i] if i < len(theirs) and (i + 1) * bs <= their_size else "beyond"
        if digest == other:
            continue
        off, n = i * bs, min(bs, size - i * bs)
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


async def _hashes(agent: RemoteAgent, path: str, bs: int) -> tuple[int, list[str | None]]:
    result = await agent.call(["hash", path, "--block-size", str(bs)], timeout=3600)
    return int(result["size"]), list(result["blocks"])


async def _set_sync_state(dst: Host, uuid: str, attributes: dict[str, str]) -> None:
    """Write the clone's kvmclone metadata (persistent definition only)."""
    element = "<clone " + " ".join(f"{k}={quoteattr(v)}" for k, v in attributes.items()) + "/>"

    def write(conn: libvirt.virConnect) -> None:
        conn.lookupByUUIDString(uuid).setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            element,
            "kvmclone",
            KVMCLONE_NS,
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )

    await dst.libvirt.call(write)


async def run_sync(
    client: KVMCloneClient, plan: SyncPlan, on_event: EventCallback | None = None
) -> SyncResult:
    """Carry out a sync plan; an interruption leaves the clone marked in-progress."""
    if not plan.ok:
        raise SyncRefused(plan)
    started = time.monotonic()
    disks: dict[str, DiskProgress] = {}

    def emit(step: str, message: str = "") -> None:
        if on_event is not None:
            on_event(JobEvent(plan.job_id, step, message, tuple(disks.values())))

    def progress(disk: DiskProgress) -> None:
        disks[disk.target] = disk
        emit("copy")

    src, dst = await client.host(plan.source_host), await client.host(plan.dest_host)
    src_agent, dst_agent = RemoteAgent(src), RemoteAgent(dst)
    meta = read_clone_metadata(await client.domain_xml(plan.dest_host, plan.target, inactive=True))
    await _set_sync_state(
        dst, plan.target_uuid, {**meta, "sync-state": "in-progress", "sync-job": plan.job_id}
    )
    emit("stage", f"{plan.target} marked as being synced (job {plan.job_id})")
    bs = plan.options.block_size
    options = TransferOptions(
        bandwidth_limit=plan.options.bandwidth_limit,
        verify=plan.options.verify,
        no_progress_timeout=plan.options.no_progress_timeout,
    )
    gate = asyncio.Semaphore(max(1, plan.options.parallel))

    async def one(pair: FilePair) -> FileSync:
        async with gate:
            (size, mine), (their_size, theirs) = await asyncio.gather(
                _hashes(src_agent, pair.source_path, bs), _hashes(dst_agent, pair.dest_path, bs)
            )
            ranges = _ranges(mine, theirs, size, their_size, bs)
            changed = sum(n for _, n in ranges)
            emit(
                "plan",
                f"{pair.label}: {len(ranges)} range(s), {format_bytes(changed)} of "
                f"{format_bytes(size)} differ",
            )
            sent = 0
            if ranges or size != their_size:
                item = FileTransfer(
                    pair.label,
                    pair.source_path,
                    pair.dest_path,
                    posixpath.dirname(pair.dest_path),
                    size,
                    changed,
                    ranges=tuple(ranges),
                    inplace=True,
                )
                sent = (
                    await copy_file(src, src_agent, dst, dst_agent, item, options, progress)
                ).bytes_written
            return FileSync(pair.label, len(mine), -(-changed // bs), changed, sent, size)

    files = list(await asyncio.gather(*(one(p) for p in plan.pairs)))
    emit("verify", "every changed block arrived and its hash matched")
    xml = plan.dest_xml
    await dst.libvirt.call(lambda c: c.defineXML(xml))
    emit("define", f"{plan.target}'s definition follows {plan.vm.name}'s")
    emit(
        "done",
        f"synced {plan.vm.name} to {plan.dest_host} as {plan.target}: "
        f"{format_bytes(sum(f.changed_bytes for f in files))} changed",
    )
    return SyncResult(
        job_id=plan.job_id,
        source_host=plan.source_host,
        dest_host=plan.dest_host,
        vm=plan.vm.name,
        target=plan.target,
        mode=plan.mode,
        files=tuple(files),
        changed_bytes=sum(f.changed_bytes for f in files),
        bytes_sent=sum(f.bytes_sent for f in files),
        seconds=time.monotonic() - started,
    )
