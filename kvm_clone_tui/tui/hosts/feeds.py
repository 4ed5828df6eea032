"""Where the UI gets inventories from, and how live events reach the pane showing a host.

The app needs only :meth:`KVMCloneClient.tracker`; anything with the same shape (a fixed
in-process inventory for snapshot tests) can stand in for the client. A source that can also
plan and run clones (:class:`CloneSource`) makes the clone dialog and the jobs panel work; one
that can sync (:class:`SyncSource`) makes sync sessions work.
"""

from __future__ import annotations

from kvm_clone_tui.api.models import HostInventory, InventoryEvent
from kvm_clone_tui.api.ports import (
    CloneSource,
    DomainXMLSource,
    EventCallback,
    InventorySource,
    Listener,
    SyncSource,
    Tracker,
)

__all__ = [
    "CloneSource",
    "DomainXMLSource",
    "EventCallback",
    "HostFeeds",
    "InventorySource",
    "Listener",
    "SyncSource",
    "Tracker",
]


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
