"""Fake syncs with ``KVMCloneClient``'s sync shape: fixed sizes, durations and events.

Real syncs on the lab are tested in test_sync.py; this fake makes the session list
deterministic (each run of a pair changes the next size of ``changes``), and can hold a run at an
exact point (``hold``: before the clone is marked, or after) until ``release`` is set, which a
real sync cannot do reliably: cancelling before the engine marks the clone takes milliseconds.
Like the engine, it marks the clone ``sync-state=in-progress`` in its metadata (``domain_xml``)
while it runs and ``synced`` when it completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from kvm_clone_tui.engine.domain_rewrite import KVMCLONE_NS
from kvm_clone_tui.engine.models import DiskDevice
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.engine.sync import SyncOptions, SyncPlan, SyncRefused, SyncResult
from tests.tui.fake_clone import T0, FakeCloneSource, lab_like_clone_source

KiB = 1 << 10
CHANGES = (16 << 20, 64 * KiB, 0)  # bytes changed by the 1st, 2nd, 3rd... run of a pair


class FakeSyncSource(FakeCloneSource):
    """Plans nothing, syncs on script: running VMs and ``refused`` names are refused."""

    def __init__(self, base: FakeCloneSource, refused: frozenset[str] = frozenset()) -> None:
        super().__init__(base.inventories, base.failures)
        self.refused = refused
        self.runs: list[tuple[str, str, str, str]] = []
        self.hold: Literal["before-mark", "after-mark"] | None = None  # where runs wait
        self.release = asyncio.Event()
        self.held = 0  # runs that reached ``hold``
        self.sync_states: dict[tuple[str, str], str] = {}  # (host, clone) -> its sync-state

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

    def sync_options(self, **overrides: object) -> SyncOptions:
        return SyncOptions(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]

    async def sync_vm(
        self,
        source: str,
        dest: str,
        vm: str,
        options: SyncOptions | None = None,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
    ) -> SyncResult:
        target = (options.target_name if options else None) or vm
        the_vm = self.inventories[source].vm(vm)
        assert the_vm is not None
        job_id = f"sync-{len(self.runs)}"
        conflicts = []
        if the_vm.state.value == "running":
            conflicts.append(f"{vm} is running: shut it down (or pause it) before syncing")
        if target in self.refused:
            conflicts.append(f"{target} on {dest} is not a clone of {vm}")
        if conflicts:
            plan = SyncPlan(job_id, source, dest, the_vm, target, "", (), "hash", "", "")
            raise SyncRefused(
                SyncPlan(**{**plan.__dict__, "conflicts": tuple(conflicts)})  # frozen: a copy
            )
        n = sum(1 for r in self.runs if r == (source, vm, dest, target))
        self.runs.append((source, vm, dest, target))
        changed = CHANGES[min(n, len(CHANGES) - 1)]
        labels = [d.target for d in the_vm.disks if d.device is DiskDevice.DISK]

        def emit(step: str, message: str, at: float, *disks: DiskProgress) -> None:
            if on_event is not None:
                on_event(JobEvent(job_id, step, message, disks, time=T0 + at))

        await self._wait("before-mark")
        self.sync_states[(dest, target)] = "in-progress"
        emit("stage", f"{target} marked as being synced (job {job_id})", 0)
        await self._wait("after-mark")
        emit("plan", f"{labels[0]}: {changed} bytes differ", 0.5)
        emit("copy", "", 1, DiskProgress(labels[0], changed, changed, changed, 0.0, True))
        self.sync_states[(dest, target)] = "synced"
        emit("done", f"synced {vm} to {dest} as {target}", 1.5)
        return SyncResult(job_id, source, dest, vm, target, "hash", (), changed, changed + 512, 1.5)

    async def _wait(self, point: str) -> None:
        if self.hold == point:
            self.held += 1
            await self.release.wait()


def lab_like_sync_source(refused: frozenset[str] = frozenset()) -> FakeSyncSource:
    """:func:`lab_like_clone_source`'s hosts, able to sync on script."""
    return FakeSyncSource(lab_like_clone_source(), refused)
