"""Where the UI gets inventories from, and how live events reach the pane showing a host.

The app needs only :meth:`KVMCloneClient.tracker`; anything with the same shape (a fixed
in-process inventory for snapshot tests) can stand in for the client. A source that can also
plan and run clones (:class:`CloneSource`) makes the clone dialog and the jobs panel work; one
that can sync (:class:`SyncSource`) makes sync sessions work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kvm_clone_tui.engine.inventory import InventoryEvent
from kvm_clone_tui.engine.models import HostInventory
from kvm_clone_tui.engine.progress import JobEvent

if TYPE_CHECKING:
    from kvm_clone_tui.engine.clone import CloneResult
    from kvm_clone_tui.engine.clone_options import CloneOptions
    from kvm_clone_tui.engine.config import Config
    from kvm_clone_tui.engine.plan import ClonePlan
    from kvm_clone_tui.engine.sync import SyncOptions, SyncPlan, SyncResult
    from kvm_clone_tui.engine.sync_undo import RevertResult

Listener = Callable[[InventoryEvent], None]
EventCallback = Callable[[JobEvent], None]


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
    ) -> SyncResult:
        """Bring the clone of ``vm`` on ``dest`` up to date (``SyncRefused``: conflicts)."""

    async def revert_sync(self, dest: str, target: str) -> RevertResult:
        """Put clone ``target`` back as it was before its last sync made with a checkpoint
        (``RevertRefused``: nothing to revert, changed since, running)."""


class HostFeeds:
    """Subscribes once to each host's tracker and routes its events to the current listener.

    A pane that is removed and added again, or a host reconnected after a failure, must not
    leave listeners behind on the tracker: the tracker only ever holds this object's callback,
    and events from a tracker that was replaced (after a reconnect) are dropped.
    """

    def __init__(self, source: InventorySource) -> None:
        self.source = source
        self._trackers: dict[str, Tracker] = {}
        self._listeners: dict[str, Listener] = {}

    async def open(self, host: str, listener: Listener) -> HostInventory:
        """Connect to ``host``, follow its events with ``listener`` and return its inventory."""
        tracker = await self.source.tracker(host)
        if self._trackers.get(host) is not tracker:
            self._trackers[host] = tracker
            tracker.subscribe(lambda event: self._dispatch(tracker, event))
        self._listeners[host] = listener
        await tracker.watch()
        inventory = tracker.inventory
        if inventory is None:  # watch() reads the host first; belt and braces
            inventory = await tracker.refresh()
        return inventory

    async def refresh(self, host: str) -> HostInventory:
        """Read ``host`` again (it must have been opened)."""
        return await self._trackers[host].refresh()

    def close(self, host: str) -> None:
        """Stop routing ``host``'s events (the connection stays open for re-use)."""
        self._listeners.pop(host, None)

    def _dispatch(self, tracker: Tracker, event: InventoryEvent) -> None:
        for host, current in self._trackers.items():
            if current is tracker:
                listener = self._listeners.get(host)
                if listener is not None:
                    listener(event)
                return
