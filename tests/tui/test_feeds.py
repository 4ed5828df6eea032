"""HostFeeds: one subscription per tracker, events routed to the pane currently showing a host."""

from __future__ import annotations

from collections.abc import Callable

from kvm_clone_tui.api.models import HostInventory
from kvm_clone_tui.engine.inventory import InventoryEvent
from kvm_clone_tui.tui.hosts.feeds import HostFeeds


class StubTracker:
    def __init__(self, host: str) -> None:
        self.inventory: HostInventory | None = HostInventory(host, host, "9.0.0")
        self.listeners: list[Callable[[InventoryEvent], None]] = []

    def subscribe(self, listener: Callable[[InventoryEvent], None]) -> None:
        self.listeners.append(listener)

    async def watch(self) -> None:
        return None

    async def refresh(self) -> HostInventory:
        assert self.inventory is not None
        return self.inventory

    def emit(self, name: str) -> None:
        assert self.inventory is not None
        for listener in self.listeners:
            listener(InventoryEvent(self.inventory.host, "changed", name, None, self.inventory))


class StubSource:
    def __init__(self) -> None:
        self.trackers: dict[str, StubTracker] = {}

    async def tracker(self, name: str) -> StubTracker:
        return self.trackers.setdefault(name, StubTracker(name))


async def test_events_reach_only_the_current_listener() -> None:
    source = StubSource()
    feeds = HostFeeds(source)
    first: list[str] = []
    second: list[str] = []
    await feeds.open("alpha", lambda e: first.append(e.name))
    source.trackers["alpha"].emit("web01")
    feeds.close("alpha")
    source.trackers["alpha"].emit("db01")  # nobody shows alpha: dropped
    await feeds.open("alpha", lambda e: second.append(e.name))  # the pane is back
    source.trackers["alpha"].emit("writer")
    assert first == ["web01"] and second == ["writer"]
    assert len(source.trackers["alpha"].listeners) == 1  # subscribed once


async def test_events_of_a_replaced_tracker_are_dropped() -> None:
    source = StubSource()
    feeds = HostFeeds(source)
    seen: list[str] = []
    await feeds.open("alpha", lambda e: seen.append(e.name))
    old = source.trackers.pop("alpha")  # a reconnect makes a new tracker
    await feeds.open("alpha", lambda e: seen.append(e.name))
    old.emit("stale")
    source.trackers["alpha"].emit("fresh")
    assert seen == ["fresh"]
