"""The ports the TUI needs: what it asks of a source of inventories, clones and syncs.

:class:`~kvm_clone_tui.api.client.KVMCloneClient` has all of these shapes; anything else with
the same shape (a fixed in-process inventory for snapshot tests) can stand in for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.events import EventCallback
from kvm_clone_tui.api.models import HostInventory, InventoryEvent
from kvm_clone_tui.api.options import CloneOptions, SyncOptions
from kvm_clone_tui.api.plans import ClonePlan, SyncPlan
from kvm_clone_tui.api.results import CloneResult, RevertResult, SyncResult

__all__ = [
    "CloneSource",
    "CloneStateSource",
    "DomainXMLSource",
    "EventCallback",
    "InventorySource",
    "Listener",
    "SyncSource",
    "Tracker",
]

Listener = Callable[[InventoryEvent], None]


class Tracker(Protocol):
    """One host's live inventory (the shape of the engine's ``InventoryTracker``)."""

    @property
    def inventory(self) -> HostInventory | None:
        """The last inventory read, None before the first read."""

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` on the event loop after every change."""

    async def watch(self) -> None:
        """Start following the host's events (idempotent)."""

    async def refresh(self) -> HostInventory:
        """Read the whole host again."""


class InventorySource(Protocol):
    """What the UI needs from ``KVMCloneClient``."""

    async def tracker(self, name: str) -> Tracker:
        """The live inventory of host ``name`` (connects on first use)."""


@runtime_checkable
class DomainXMLSource(Protocol):
    """A source that can also read a VM's domain XML (the details screen then shows it)."""

    async def domain_xml(self, host: str, vm: str) -> str:
        """The libvirt XML of VM ``vm`` on ``host``."""


@runtime_checkable
class CloneSource(Protocol):
    """A source that can also plan, run and roll back clones (``KVMCloneClient`` can)."""

    @property
    def config(self) -> Config:
        """The configuration: clone defaults and each host's default pool."""

    async def plan_clone(
        self, source: str, dest: str, vm: str, options: CloneOptions | None = None
    ) -> ClonePlan:
        """Check a clone and decide everything about it, copying nothing."""

    async def run_plan(
        self,
        plan: ClonePlan,
        *,
        on_event: EventCallback | None = None,
        auto_rollback: bool = True,
    ) -> CloneResult:
        """Carry out a plan; ``on_event`` gets the transaction log and per-file progress."""

    async def rollback_job(self, job_id: str, on_event: EventCallback | None = None) -> None:
        """Roll back a job that failed and kept its staged files."""

    async def resume_job(
        self, job_id: str, on_event: EventCallback | None = None, *, auto_rollback: bool = True
    ) -> CloneResult:
        """Finish a job that kept its staged files: only missing or differing blocks move."""


@runtime_checkable
class SyncSource(Protocol):
    """A source that can also sync an earlier clone (``KVMCloneClient`` can)."""

    def sync_options(self, **overrides: object) -> SyncOptions:
        """Sync options with the config's defaults, then ``overrides``."""

    async def plan_sync(
        self, source: str, dest: str, vm: str, options: SyncOptions | None = None
    ) -> SyncPlan:
        """Check a sync and say how it would run (mode and why, checkpoints, refusals)."""

    async def sync_vm(
        self,
        source: str,
        dest: str,
        vm: str,
        options: SyncOptions | None = None,
        *,
        on_event: EventCallback | None = None,
        check: bool = False,
    ) -> SyncResult:
        """Bring the clone of ``vm`` on ``dest`` up to date (``check``: ``SyncRefused`` on
        conflicts and the failure itself raise instead of a result with ``success`` False)."""

    async def revert_sync(self, dest: str, target: str) -> RevertResult:
        """Put clone ``target`` back as it was before its last sync made with a checkpoint
        (``RevertRefused``: nothing to revert, changed since, running)."""


@runtime_checkable
class CloneStateSource(Protocol):
    """A source that can also read what a clone's own metadata says about its syncs."""

    async def clone_sync_state(self, host: str, vm: str) -> str | None:
        """The clone's ``sync-state`` (``in-progress`` after a sync that did not complete)."""
