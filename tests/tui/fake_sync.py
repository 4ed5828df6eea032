"""Fake syncs with ``KVMCloneClient``'s sync shape: fixed sizes, durations and events.

Real syncs on the lab are tested in test_sync.py; this fake makes the session list
deterministic (each run of a pair changes the next size of ``changes``), and can hold a run at an
exact point (``hold``: before the clone is marked, or after) until ``release`` is set, which a
real sync cannot do reliably: cancelling before the engine marks the clone takes milliseconds.
Like the engine, it marks the clone ``sync-state=in-progress`` in its metadata (``domain_xml``)
while it runs and ``synced`` when it completes. Plans are the engine's: fixed facts
(:func:`fake_sync_facts`: the clone exists on the destination, shut off, its metadata names this
source, its disks are as the last sync left them, the source's checkpoint is valid) through the
real rules (``decide_sync``). A sync made with ``checkpoint=True`` can be reverted
(``revert_sync``) until the next sync, else the engine's ``RevertRefused`` is raised
(``revert_refused`` forces one).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from kvm_clone_tui.api.errors import HostError, SyncRefused
from kvm_clone_tui.api.models import VM, DiskDevice, HostInventory, VMState
from kvm_clone_tui.api.options import SyncOptions
from kvm_clone_tui.api.plans import SyncPlan
from kvm_clone_tui.api.results import SyncResult
from kvm_clone_tui.engine.domain_rewrite import KVMCLONE_NS, read_clone_metadata
from kvm_clone_tui.engine.plan_facts import RouteFacts
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.engine.sync_plan import SyncFacts, decide_sync
from kvm_clone_tui.engine.sync_undo import RevertRefused, RevertResult
from tests.tui.fake_clone import T0, FakeCloneSource, fake_domain_xml, lab_like_clone_source
from tests.tui.fake_source import IMAGES

KiB = 1 << 10
CHANGES = (16 << 20, 64 * KiB, 0)  # bytes changed by the 1st, 2nd, 3rd... run of a pair
BASE = "kvmclone-base"  # the checkpoint the clone's metadata names
STAMP = "stamp-of-the-last-sync"  # the clone's disk stamp: its metadata's, so unchanged


def clone_of(vm: VM, target: str) -> VM:
    """The clone of ``vm`` named ``target`` on the destination, shut off: its disks only."""
    return replace(
        vm,
        name=target,
        uuid=f"22222222-3333-4444-8555-{zlib.crc32(target.encode()):012x}",
        state=VMState.SHUT_OFF,
        disks=tuple(
            replace(d, path=f"{IMAGES}/{target}-{d.target}.qcow2", backing_chain=())
            for d in vm.disks
            if d.device is DiskDevice.DISK
        ),
        nvram=None,
    )


def clone_xml(target: VM, source: str, of: VM | None, sync_state: str | None) -> str:
    """The clone's definition as far as sync cares: its identity and kvmclone metadata (naming
    ``of`` on ``source``, or another VM when ``of`` is None)."""
    uuid = of.uuid if of is not None else "99999999-9999-4999-8999-999999999999"
    state = f" sync-state='{sync_state}'" if sync_state else ""
    meta = (
        f"<metadata><kvmclone:clone xmlns:kvmclone='{KVMCLONE_NS}' source-host='{source}' "
        f"source-uuid='{uuid}' checkpoint='{BASE}' dest-stamp='{STAMP}'{state}/></metadata>"
    )
    return f"<domain type='kvm'><name>{target.name}</name><uuid>{target.uuid}</uuid>{meta}</domain>"


def fake_sync_facts(
    inventories: dict[str, HostInventory],
    source: str,
    dest: str,
    vm_name: str,
    options: SyncOptions,
    *,
    job_id: str,
    sync_state: str | None = None,
    a_clone: bool = True,
) -> SyncFacts:
    """What hosts like the lab's would say to the sync planner, made up without any host: the
    clone is there, shut off, unchanged since the last sync, the source's checkpoint valid; it
    is a clone of another VM unless ``a_clone``."""
    vm = inventories[source].vm(vm_name)
    if vm is None:
        raise HostError(source, f"no VM named {vm_name!r}")
    target = clone_of(vm, options.target_name or vm_name)
    return SyncFacts(
        source=source,
        dest=dest,
        vm=vm,
        target=target,
        dest_xml=clone_xml(target, source, vm if a_clone else None, sync_state),
        source_xml=fake_domain_xml(vm),
        route=RouteFacts(agent_forwarding=True, agent_has_keys=False),
        job_id=job_id,
        dest_stamp=STAMP,
    )


class FakeSyncSource(FakeCloneSource):
    """Plans through the real rules, syncs on script: ``refused`` names are not clones."""

    def __init__(self, base: FakeCloneSource, refused: frozenset[str] = frozenset()) -> None:
        super().__init__(base.inventories, base.failures)
        self.refused = refused
        self.runs: list[tuple[str, str, str, str]] = []
        self.hold: Literal["before-mark", "after-mark"] | None = None  # where runs wait
        self.release = asyncio.Event()
        self.held = 0  # runs that reached ``hold``
        self.sync_states: dict[tuple[str, str], str] = {}  # (host, clone) -> its sync-state
        self.plans: list[SyncOptions] = []  # every plan asked for (the dialog's)
        self.undo: dict[tuple[str, str], tuple[str, int]] = {}  # (host, clone) -> (job, bytes)
        self.reverted: list[tuple[str, str]] = []
        self.revert_refused: str | None = None  # a refusal every revert gets

    async def domain_xml(self, host: str, vm: str) -> str:
        """A clone's definition as far as sync cares: its name and kvmclone metadata."""
        state = self.sync_states.get((host, vm))
        meta = (
            f"<metadata><kvmclone:clone xmlns:kvmclone='{KVMCLONE_NS}' sync-state='{state}'/>"
            "</metadata>"
            if state
            else ""
        )
        return f"<domain type='kvm'><name>{vm}</name>{meta}</domain>"

    async def clone_sync_state(self, host: str, vm: str) -> str | None:
        """As the client reads it: the ``sync-state`` in the clone's kvmclone metadata."""
        return read_clone_metadata(await self.domain_xml(host, vm)).get("sync-state")

    def sync_options(self, **overrides: object) -> SyncOptions:
        return SyncOptions(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    async def plan_sync(
        self, source: str, dest: str, vm: str, options: SyncOptions | None = None
    ) -> SyncPlan:
        options = options or SyncOptions()
        self.plans.append(options)
        return self._plan(source, dest, vm, options, f"sync-{len(self.runs)}")

    def _plan(self, source: str, dest: str, vm: str, options: SyncOptions, job_id: str) -> SyncPlan:
        target = options.target_name or vm
        facts = fake_sync_facts(
            self.inventories,
            source,
            dest,
            vm,
            options,
            job_id=job_id,
            sync_state=self.sync_states.get((dest, target)),
            a_clone=target not in self.refused,
        )
        return decide_sync(facts, options)

    async def sync_vm(
        self,
        source: str,
        dest: str,
        vm: str,
        options: SyncOptions | None = None,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        check: bool = False,
    ) -> SyncResult:
        options = options or SyncOptions()
        target = options.target_name or vm
        job_id = f"sync-{len(self.runs)}"
        plan = self._plan(source, dest, vm, options, job_id)
        if plan.conflicts:
            raise SyncRefused(plan)
        n = sum(1 for r in self.runs if r == (source, vm, dest, target))
        self.runs.append((source, vm, dest, target))
        changed = CHANGES[min(n, len(CHANGES) - 1)]
        labels = [p.label for p in plan.pairs]

        def emit(step: str, message: str, at: float, *disks: DiskProgress) -> None:
            if on_event is not None:
                on_event(JobEvent(job_id, step, message, disks, time=T0 + at))

        await self._wait("before-mark")
        self.undo.pop((dest, target), None)  # a later sync discards the previous undo logs
        self.sync_states[(dest, target)] = "in-progress"
        emit("stage", f"{target} marked as being synced (job {job_id})", 0)
        await self._wait("after-mark")
        emit("plan", f"{labels[0]}: {changed} bytes differ", 0.5)
        emit("copy", "", 1, DiskProgress(labels[0], changed, changed, changed, 0.0, True))
        self.sync_states[(dest, target)] = "synced"
        if options.checkpoint:
            self.undo[(dest, target)] = (job_id, changed)
        emit("done", f"synced {vm} to {dest} as {target}", 1.5)
        return SyncResult(
            job_id,
            source,
            dest,
            vm,
            target,
            plan.mode,
            (),
            changed,
            changed + 512,
            1.5,
            mode_reason=plan.mode_reason,
            checkpoint=plan.new_checkpoint,
            revertible=options.checkpoint,
            consistency="crash-consistent" if plan.source_running else None,
        )

    async def revert_sync(self, dest: str, target: str) -> RevertResult:
        if self.revert_refused is not None:
            raise RevertRefused(self.revert_refused)
        undo = self.undo.pop((dest, target), None)
        if undo is None:
            raise RevertRefused(
                f"{target} has no checkpoint to go back to: only a sync made with --checkpoint "
                "can be reverted, and only the last one"
            )
        self.reverted.append((dest, target))
        self.sync_states[(dest, target)] = "reverted"
        return RevertResult(dest, target, undo[0], undo[1], 0.8)

    async def _wait(self, point: str) -> None:
        if self.hold == point:
            self.held += 1
            await self.release.wait()


def lab_like_sync_source(refused: frozenset[str] = frozenset()) -> FakeSyncSource:
    """:func:`lab_like_clone_source`'s hosts, able to sync on script; its running ``writer``'s
    disk is qcow2 here (the lab's is raw), so that a running source can sync in bitmap mode."""
    base = lab_like_clone_source()
    alpha = base.inventories["alpha"]
    vms = tuple(
        replace(v, disks=tuple(replace(d, format="qcow2") for d in v.disks))
        if v.name == "writer"
        else v
        for v in alpha.vms
    )
    base.inventories["alpha"] = replace(alpha, vms=vms)
    return FakeSyncSource(base, refused)
