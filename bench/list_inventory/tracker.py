"""Part 2: the live inventory of one host followed while VMs are defined, started, stopped and
undefined: latencies, and how many full and single-VM reads the tracker makes."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import libvirt

from bench.common.lab import BenchLab
from bench.common.lab_driver import HostDriver, vm_names
from bench.common.progress import log
from bench.common.stats import Summary
from bench.list_inventory.reads import (
    ORIGINAL_READ_ONE_VM,
    ReadCounter,
    counter_free_read,
    counting_reads,
)
from kvm_clone_tui.api.client import KVMCloneClient
from kvm_clone_tui.engine.config import Config, load_config
from kvm_clone_tui.engine.inventory import InventoryEvent, InventoryTracker
from kvm_clone_tui.engine.models import VMState

EVENT_TIMEOUT = 60.0


@dataclass
class EventLog:
    """What the tracker's subscriber saw, when libvirt's events reached the loop, and who is
    waiting for what."""

    events: list[tuple[float, InventoryEvent]] = field(default_factory=list)
    arrivals: list[tuple[float, str, int]] = field(default_factory=list)
    waiters: list[tuple[Callable[[InventoryEvent], bool], asyncio.Future[float]]] = field(
        default_factory=list
    )

    def __call__(self, event: InventoryEvent) -> None:
        now = time.monotonic()
        self.events.append((now, event))
        for waiter in list(self.waiters):
            predicate, future = waiter
            if not future.done() and predicate(event):
                future.set_result(now)
                self.waiters.remove(waiter)

    def expect(self, predicate: Callable[[InventoryEvent], bool]) -> asyncio.Future[float]:
        """A future that gets the monotonic time of the first event matching ``predicate``."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((predicate, future))
        return future

    def spy_on(self, tracker: InventoryTracker) -> None:
        """Note the arrival of every raw libvirt event on the asyncio loop (call before
        ``watch``, which registers the tracker's handler)."""
        handler = tracker._on_event

        def on_event(name: str, event: int, detail: int) -> None:
            self.arrivals.append((time.monotonic(), name, event))
            handler(name, event, detail)

        vars(tracker)["_on_event"] = on_event  # shadows the method on this instance only

    def raw_events(self, name: str, start: float, end: float) -> list[tuple[float, int]]:
        """(arrival time, libvirt event id) of ``name``'s events that arrived in [start, end]."""
        return [(t, e) for t, n, e in self.arrivals if n == name and start <= t <= end]


@dataclass
class Latency:
    """One action, on the shared monotonic clock: libvirt call -> raw event on the asyncio loop
    -> single-VM re-read -> subscriber sees the updated inventory."""

    call: tuple[float, float]  # the libvirt call in the driver: start, return
    arrival: float  # the action's first lifecycle event reached the asyncio loop
    read: tuple[float, float]  # the first re-read of the VM after that: start, end
    seen: float  # the subscriber got the expected InventoryEvent
    raw_events: tuple[int, ...]  # lifecycle events the action caused (each may cause a re-read)

    @property
    def event_to_update(self) -> float:
        """Event on the loop -> inventory updated (kvm-clone's own part)."""
        return self.seen - self.arrival

    @property
    def from_call_return(self) -> float:
        """libvirt call returned -> inventory updated (negative: updated before it returned)."""
        return self.seen - self.call[1]

    @property
    def delivery(self) -> float:
        """libvirt call returned -> event on the loop (negative: the event came first)."""
        return self.arrival - self.call[1]

    @property
    def queued(self) -> float:
        """Event on the loop -> its re-read starts in the libvirt thread."""
        return self.read[0] - self.arrival

    @property
    def reread(self) -> float:
        """How long the single-VM re-read took."""
        return self.read[1] - self.read[0]


_LIFECYCLE = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name}"): name
    for name in (
        "DEFINED",
        "UNDEFINED",
        "STARTED",
        "SUSPENDED",
        "RESUMED",
        "STOPPED",
        "SHUTDOWN",
        "PMSUSPENDED",
        "CRASHED",
    )
}


def event_names(events: Sequence[int]) -> str:
    """``STARTED+RESUMED`` for a sequence of libvirt lifecycle event ids."""
    return "+".join(_LIFECYCLE.get(e, str(e)) for e in events)


def is_state(
    name: str, kind: str, state: VMState | None = None
) -> Callable[[InventoryEvent], bool]:
    """Matches the event for VM ``name`` of ``kind`` (and, if given, with the VM in ``state``)."""

    def match(event: InventoryEvent) -> bool:
        if event.name != name or event.kind != kind:
            return False
        return state is None or (event.vm is not None and event.vm.state is state)

    return match


async def act_and_wait(
    driver: HostDriver,
    log_: EventLog,
    counter: ReadCounter,
    op: str,
    name: str,
    expect: Callable[[InventoryEvent], bool],
) -> Latency:
    """Do ``op`` on ``name`` through libvirt and wait until the tracker shows it."""
    future = log_.expect(expect)
    answer = await asyncio.to_thread(driver.request, op, name=name)
    seen = await asyncio.wait_for(future, EVENT_TIMEOUT)
    await asyncio.sleep(0.2)  # let the action's later events (if any) arrive before the next
    t0, t1 = float(answer["t0"]), float(answer["t1"])
    raw = log_.raw_events(name, t0, time.monotonic())
    if not raw:
        raise RuntimeError(f"{op} {name}: the tracker updated without a libvirt event")
    arrival = raw[0][0]
    with counter.lock:
        spans = [(a, b) for n, a, b in counter.single_spans if n == name and a >= arrival]
    if not spans:
        raise RuntimeError(f"{op} {name}: no single-VM re-read after the event")
    return Latency((t0, t1), arrival, spans[0], seen, tuple(e for _t, e in raw))


async def burst(
    driver: HostDriver,
    tracker: InventoryTracker,
    log_: EventLog,
    op: str,
    names: list[str],
    state: VMState,
) -> float:
    """``op`` on every name back to back; seconds from the last call's return until the
    tracker's inventory shows every VM in ``state``."""
    pending = set(names)
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def match(event: InventoryEvent) -> bool:
        if event.vm is not None and event.vm.state is state:
            pending.discard(event.name)
        return not pending

    log_.waiters.append((match, done))
    answer = await asyncio.to_thread(driver.request, f"{op}_many", names=names)
    seen = await asyncio.wait_for(done, EVENT_TIMEOUT)
    assert tracker.inventory is not None
    states = {v.name: v.state for v in tracker.inventory.vms}
    wrong = [n for n in names if states.get(n) is not state]
    if wrong:
        raise RuntimeError(f"after the {op} burst, not {state.value}: {wrong}")
    return max(0.0, seen - float(answer["t1"]))


async def follow_events(
    config: Config,
    host: str,
    driver: HostDriver,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Part 2 proper: the tracker, the events, the counters, the comparison with a re-list."""
    n = args.events
    existing = vm_names(0, args.tracker_vms)
    with counting_reads() as counter:
        async with KVMCloneClient(config) as client:
            t0 = time.perf_counter()
            tracker = await client.tracker(host)
            results["tracker_initial"] = time.perf_counter() - t0
            events = EventLog()
            tracker.subscribe(events)
            events.spy_on(tracker)
            await tracker.watch()
            assert tracker.inventory is not None
            if len(tracker.inventory.vms) != args.tracker_vms:
                raise RuntimeError(f"{host} has {len(tracker.inventory.vms)} VMs in the tracker")
            full_at_start = counter.snapshot()[0]

            latencies: dict[str, list[Latency]] = {
                "define": [],
                "start": [],
                "stop": [],
                "undefine": [],
            }
            new = vm_names(0, n, prefix="bench-new")
            plan: list[tuple[str, str, list[str], str, VMState | None]] = [
                # (what, driver op, VMs, expected inventory event, expected state)
                ("define", "define", new, "added", None),
                ("start", "start", existing[:n], "changed", VMState.RUNNING),
                ("stop", "destroy", existing[:n], "changed", VMState.SHUT_OFF),
                ("undefine", "undefine", new, "removed", None),
            ]
            log(f"{n} x define, start, stop (destroy), undefine, one at a time")
            for what, op, names, kind, state in plan:
                for name in names:
                    latencies[what].append(
                        await act_and_wait(
                            driver, events, counter, op, name, is_state(name, kind, state)
                        )
                    )
            sequential_singles = counter.snapshot()[1]

            log(f"burst: start {args.burst} VMs back to back, then stop them")
            group = existing[n : n + args.burst]
            burst_start = await burst(driver, tracker, events, "start", group, VMState.RUNNING)
            libvirt_conn = (await client.host(host)).libvirt
            steady = []
            for _ in range(args.runs):  # a running VM, nothing else happening
                t0 = time.perf_counter()
                await libvirt_conn.call(lambda c: ORIGINAL_READ_ONE_VM(c, group[0]))
                steady.append(time.perf_counter() - t0)
            burst_stop = await burst(driver, tracker, events, "destroy", group, VMState.SHUT_OFF)
            steady_off = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                await libvirt_conn.call(lambda c: ORIGINAL_READ_ONE_VM(c, group[0]))
                steady_off.append(time.perf_counter() - t0)
            await asyncio.sleep(1.0)  # let any straggling event land before counting
            full_reads, single_reads = counter.snapshot()

            # Is the tracked inventory what a fresh read says? (read past the counters)
            fresh = await (await client.host(host)).libvirt.call(
                lambda c: counter_free_read(c, host)
            )
            tracked = {v.name: v.state for v in tracker.inventory.vms}
            truth = {v.name: v.state for v in fresh.vms}
            if tracked != truth:
                diff = set(tracked.items()) ^ set(truth.items())
                raise RuntimeError(f"tracked inventory differs from a fresh read: {sorted(diff)}")

            log("full re-list of the same host for comparison")
            relist = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                await tracker.refresh()
                relist.append(time.perf_counter() - t0)
            relist_api = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                await client.list_vms([host])
                relist_api.append(time.perf_counter() - t0)

    def per_kind(metric: Callable[[Latency], float]) -> dict[str, Summary]:
        return {k: Summary(tuple(metric(x) for x in v)) for k, v in latencies.items()}

    results["tracker_latency"] = per_kind(lambda x: x.event_to_update)
    results["tracker_from_call"] = per_kind(lambda x: x.from_call_return)
    results["tracker_delivery"] = per_kind(lambda x: x.delivery)
    results["tracker_queued"] = per_kind(lambda x: x.queued)
    results["tracker_reread"] = per_kind(lambda x: x.reread)
    results["tracker_raw_events"] = {
        k: ", ".join(sorted({event_names(x.raw_events) for x in v})) for k, v in latencies.items()
    }
    results["tracker_all"] = Summary(
        tuple(x.event_to_update for v in latencies.values() for x in v)
    )
    results["tracker_actions"] = 4 * n + 2 * args.burst
    results["tracker_sequential_actions"] = 4 * n
    results["tracker_sequential_singles"] = sequential_singles
    results["tracker_full_reads_initial"] = full_at_start
    results["tracker_full_reads"] = full_reads
    results["tracker_single_reads"] = single_reads
    results["tracker_events"] = len(events.events)
    results["burst_start"] = burst_start
    results["burst_stop"] = burst_stop
    results["single_read_seconds"] = Summary(tuple(counter.single_seconds))
    results["relist"] = Summary(tuple(relist))
    results["steady_running"] = Summary(tuple(steady))
    results["steady_off"] = Summary(tuple(steady_off))
    results["relist_api"] = Summary(tuple(relist_api))
    if full_reads != 1:
        raise RuntimeError(f"the tracker re-listed the host: {full_reads} full reads (expected 1)")


def bench_tracker(
    lab: BenchLab,
    hosts: Sequence[str],
    drivers: dict[str, HostDriver],
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    """Part 2: top the first host up to ``--tracker-vms`` VMs and follow it."""
    host = hosts[0]
    driver = drivers[host]
    have = int(driver.request("count")["count"])
    if have < args.tracker_vms:
        log(f"{host}: defining {args.tracker_vms - have} more VMs ({args.tracker_vms} in all)")
        driver.request("define_many", names=vm_names(have, args.tracker_vms))
    local = driver.request("local_read", runs=args.runs)
    results["local_read"] = Summary(tuple(local["seconds"]))
    config = load_config(lab.require_config())
    asyncio.run(follow_events(config, host, driver, args, results))
