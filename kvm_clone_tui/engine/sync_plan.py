"""The sync plan as facts, then rules: what the hosts say, and the pure decision on it.

:func:`gather_sync_facts` makes every host call of planning a sync (the inventories, the
clone's definition and metadata, the clone's disk stamp and the source's checkpoint when bitmap
mode is possible, the route's prerequisites, the source's definition); :func:`decide_sync`
decides from those values alone. The rules are unit-tested in tests/unit/test_sync_rules.py.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import VM, DiskDevice, VMState
from kvm_clone_tui.api.options import SyncOptions
from kvm_clone_tui.api.plans import Conflict, FilePair, PlanWarning, SyncPlan, bitmap_disks
from kvm_clone_tui.engine import checkpoints, sync_undo
from kvm_clone_tui.engine.domain_rewrite import (
    DiskMapping,
    RewriteError,
    RewriteOptions,
    read_clone_metadata,
    rewrite_domain,
)
from kvm_clone_tui.engine.host_port import Hosts
from kvm_clone_tui.engine.journal import new_job_id
from kvm_clone_tui.engine.plan_facts import RouteFacts, gather_route_facts
from kvm_clone_tui.engine.plan_rules import decide_route
from kvm_clone_tui.engine.remote_agent import RemoteAgent


@dataclass(frozen=True)
class SyncFacts:
    """Everything the hosts said that a sync plan depends on."""

    source: str
    dest: str
    vm: VM
    target: VM
    dest_xml: str  # the clone's persistent definition now
    source_xml: str  # the source's persistent definition
    route: RouteFacts
    job_id: str
    dest_stamp: str | None = None  # the clone's disks now (asked when bitmap mode may serve)
    #: why the source's checkpoint cannot serve (asked once the stamp held)
    checkpoint_problem: str | None = None

    @property
    def meta(self) -> dict[str, str]:
        """The clone's own ``kvmclone:clone`` metadata."""
        return read_clone_metadata(self.dest_xml)


# --- the rules --------------------------------------------------------------------------------


def identity_rule(facts: SyncFacts) -> list[Conflict]:
    """The target must be a clone of this VM on this source (its metadata says so)."""
    meta, vm = facts.meta, facts.vm
    if meta.get("source-uuid") != vm.uuid or meta.get("source-host") != facts.source:
        message = (
            f"{facts.target.name} on {facts.dest} is not a clone of {vm.name} on {facts.source} "
            "(its kvmclone metadata names another source)"
        )
        return [Conflict("not-a-clone", message)]
    return []


def target_state_rule(facts: SyncFacts) -> list[Conflict]:
    """The clone is written in place: it must be shut off."""
    target = facts.target
    if target.state is not VMState.SHUT_OFF:
        message = f"{target.name} on {facts.dest} is {target.state.value}: shut it down first"
        return [Conflict("target-state", message, "shut it down first")]
    return []


def pair_rule(vm: VM, target: VM) -> tuple[list[FilePair], list[Conflict]]:
    """Each source disk file and the clone's file it syncs into, chain layer by layer."""
    pairs: list[FilePair] = []
    conflicts: list[Conflict] = []
    theirs = {d.target: d for d in target.disks if d.device is DiskDevice.DISK}
    for disk in (d for d in vm.disks if d.device is DiskDevice.DISK):
        other = theirs.get(disk.target)
        if disk.path is None or disk.source_type != "file":
            message = f"disk {disk.target} is not a file: it cannot be synced"
            conflicts.append(Conflict("disk-type", message))
            continue
        if other is None or other.path is None:
            message = f"the clone has no disk {disk.target}: re-clone it"
            conflicts.append(Conflict("disk-missing", message, "re-clone it"))
            continue
        pairs.append(FilePair(disk.target, disk.path, other.path))
        mine_chain, their_chain = disk.backing_chain, other.backing_chain
        if len(mine_chain) != len(their_chain):
            message = f"disk {disk.target}: the backing chains differ in length: re-clone"
            conflicts.append(Conflict("chain", message, "re-clone"))
            continue
        for i, (a, b) in enumerate(zip(mine_chain, their_chain, strict=True), start=1):
            pairs.append(FilePair(f"{disk.target}.backing{i}", a.path, b.path))
    if vm.nvram and target.nvram:
        pairs.append(FilePair("nvram", vm.nvram, target.nvram))
    return pairs, conflicts


def bitmap_precheck(vm: VM, target: VM, meta: dict[str, str]) -> str | None:
    """Why the clone's metadata and disks rule bitmap mode out (None: the hosts decide)."""
    if meta.get("sync-state") == "reverted":
        return f"{target.name} was reverted to before its last sync"
    if not meta.get("checkpoint"):
        return "the last clone or sync left no checkpoint on the source"
    theirs = {d.target: d for d in target.disks}
    for disk in (d for d in vm.disks if d.device is DiskDevice.DISK):
        other = theirs.get(disk.target)
        if other is None or other.virtual_size != disk.virtual_size:
            return f"disk {disk.target} was resized on the source"
        if other.format not in ("qcow2", "raw"):
            return f"the clone's disk {disk.target} is {other.format}"
    return None


def stamp_holds(meta: dict[str, str], stamp: str | None) -> bool:
    """True when the clone's disks are as the last sync left them (or a bitmap sync resumes)."""
    resuming = meta.get("sync-state") == "in-progress" and meta.get("sync-mode") == "bitmap"
    return stamp == meta.get("dest-stamp") or resuming


def bitmap_unavailable(facts: SyncFacts) -> str | None:
    """Why the changes cannot be taken from the source's dirty bitmaps (None: they can)."""
    meta = facts.meta
    why = bitmap_precheck(facts.vm, facts.target, meta)
    if why is not None:
        return why
    if not stamp_holds(meta, facts.dest_stamp):
        return f"{facts.target.name}'s disks changed since the last sync (was it started?)"
    return facts.checkpoint_problem


def mode_rule(
    facts: SyncFacts, options: SyncOptions, unavailable: str | None
) -> tuple[str, str, list[Conflict]]:
    """(mode, why, conflicts): bitmap when it can serve, else hash (unless bitmap is asked)."""
    mode, reason = "hash", "requested"
    if options.mode not in ("auto", "bitmap", "hash"):
        message = f"unknown sync mode {options.mode!r}: use auto, bitmap or hash"
        return mode, reason, [Conflict("mode", message, "auto, bitmap or hash")]
    if options.mode != "hash" and unavailable is None:
        base = facts.meta.get("checkpoint")
        return "bitmap", f"checkpoint {base} is valid and {facts.target.name} is unchanged", []
    if options.mode == "bitmap":
        message = f"bitmap mode is impossible: {unavailable} (--mode auto uses hash mode)"
        return mode, reason, [Conflict("mode", message, "--mode auto")]
    if options.mode == "auto":
        reason = f"bitmap mode is impossible: {unavailable}"
    return mode, reason, []


def running_rule(vm: VM, mode: str, mode_reason: str) -> list[Conflict]:
    """Hash mode reads the disk files: the source must be shut off."""
    if vm.state is VMState.SHUT_OFF or mode == "bitmap":
        return []
    message = (
        f"{vm.name} is {vm.state.value} and {mode_reason or 'hash mode was asked for'}: "
        "hash mode reads the disk files, so shut it down first (or clone it afresh, live)"
    )
    return [Conflict("source-running", message, "shut it down first")]


def synced_definition(
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


def _early_conflicts(facts: SyncFacts) -> list[Conflict]:
    """The conflicts known before the mode is chosen (bitmap facts are asked only without)."""
    return identity_rule(facts) + target_state_rule(facts) + pair_rule(facts.vm, facts.target)[1]


def decide_sync(facts: SyncFacts, options: SyncOptions) -> SyncPlan:
    """The sync plan the facts and options give: every rule in turn, conflicts collected."""
    vm, target, meta = facts.vm, facts.target, facts.meta
    conflicts = identity_rule(facts) + target_state_rule(facts)
    warnings: list[PlanWarning] = []
    if meta.get("sync-state") == "in-progress":
        message = "the last sync was interrupted: this one resumes and completes it"
        warnings.append(PlanWarning("resume", message))
    pairs, found = pair_rule(vm, target)
    conflicts += found
    disks, unavailable = bitmap_disks(vm)
    if unavailable is None and options.mode != "hash" and not conflicts:
        unavailable = bitmap_unavailable(facts)
    mode, mode_reason, found = mode_rule(facts, options, unavailable)
    conflicts += found + running_rule(vm, mode, mode_reason)
    route, route_reason, direct, found = decide_route(options.transfer, facts.source, facts.route)
    conflicts += found
    dest_xml = ""
    if not conflicts:
        try:
            synced = {**meta, "sync-state": "synced"}
            dest_xml = synced_definition(facts.source_xml, facts.dest_xml, target, pairs, synced)
        except RewriteError as exc:
            message = f"the source's definition cannot be synced: {exc}"
            conflicts.append(Conflict("definition", message))
    base = meta.get("checkpoint")
    return SyncPlan(
        job_id=facts.job_id,
        source_host=facts.source,
        dest_host=facts.dest,
        vm=vm,
        target=target.name,
        target_uuid=target.uuid,
        pairs=tuple(pairs),
        mode=mode,
        mode_reason=mode_reason,
        dest_xml=dest_xml,
        conflicts=tuple(conflicts),
        warnings=tuple(warnings),
        options=options,
        source_running=vm.state is not VMState.SHUT_OFF,
        base_checkpoint=base if mode == "bitmap" else None,
        new_checkpoint=checkpoints.checkpoint_name(facts.job_id) if disks else None,
        bitmap_disks=tuple(disks),
        all_targets=tuple(d.target for d in vm.disks),
        virtual_sizes=tuple((d.target, d.virtual_size or 0) for d in vm.disks),
        dest_formats=tuple((d.target, d.format or "raw") for d in target.disks),
        route=route,
        route_reason=route_reason,
        direct=direct,
    )


# --- asking the hosts -------------------------------------------------------------------------


async def gather_sync_facts(
    hosts: Hosts, source: str, dest: str, vm_name: str, options: SyncOptions
) -> SyncFacts:
    """Ask both hosts everything a sync plan needs (a missing VM or clone is raised)."""
    target_name = options.target_name or vm_name
    src_inv, dst_inv = await asyncio.gather(hosts.inventory(source), hosts.inventory(dest))
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
    src, dst = await hosts.host(source), await hosts.host(dest)
    dest_xml = await dst.domain_xml(target_name, inactive=True)
    source_xml = await src.domain_xml(vm_name, inactive=True)
    route = await gather_route_facts(hosts, options.transfer, src, dst)
    facts = SyncFacts(source, dest, vm, target, dest_xml, source_xml, route, new_job_id())
    disks, not_eligible = bitmap_disks(vm)
    meta = facts.meta
    if (
        options.mode == "hash"
        or not_eligible is not None
        or _early_conflicts(facts)
        or bitmap_precheck(vm, target, meta) is not None
    ):
        return facts
    pairs, _ = pair_rule(vm, target)
    stamp = await sync_undo.disk_stamp(RemoteAgent(dst), [p.dest_path for p in pairs])
    if not stamp_holds(meta, stamp):
        return _with(facts, stamp, None)
    running = vm.state is not VMState.SHUT_OFF
    base = meta.get("checkpoint") or ""
    problem = await checkpoints.invalid_reason(src, vm.name, base, disks, running)
    return _with(facts, stamp, problem)


def _with(facts: SyncFacts, stamp: str | None, problem: str | None) -> SyncFacts:
    return replace(facts, dest_stamp=stamp, checkpoint_problem=problem)


async def build_sync_plan(
    hosts: Hosts, source: str, dest: str, vm_name: str, options: SyncOptions
) -> SyncPlan:
    """Check that ``dest`` holds a clone of ``vm_name`` that can be brought up to date."""
    return decide_sync(await gather_sync_facts(hosts, source, dest, vm_name, options), options)
