"""Benchmark: TUI responsiveness with big inventories and a busy job (no hosts needed).

Run from the repository::

    .venv/bin/python bench/tui_responsiveness.py [--vms 500] [--panes 2] [--keys 60] [--markdown]

What it measures, headless (Textual's ``run_test``) against in-process fake sources:

1. First paint: ``--panes`` panes of ``--vms`` VMs each (the fake source of the TUI tests, with
   generated VMs). From the moment a host's inventory arrives (its tracker's ``watch`` returns)
   to the first time that pane's table is rendered with all its rows (``render_lines``).
   Target: < 300 ms. Measured twice: with the inventories arriving while the app starts (the
   worst case: the app's own first paint of every widget is included) and once the app is up
   (``--late``, 1 s after start: a host over SSH is never faster). ``--runs`` repeats each and
   reports the median and the worst run.
2. Key latency during a job: a fake clone job in the jobs panel reports progress for 3 files
   every 20 ms (far more often than the engine does) while ``j`` is pressed ``--keys`` times in
   a 500-VM table; from posting the key to the table's cursor action running. Target: < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvm_clone_tui.engine.clone import CloneResult
from kvm_clone_tui.engine.clone_options import CloneOptions
from kvm_clone_tui.engine.models import HostInventory, VMState
from kvm_clone_tui.engine.plan import ClonePlan
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.widgets.host_pane import PaneState
from kvm_clone_tui.tui.widgets.vm_table import VMTable
from tests.tui.fake_clone import FakeCloneSource, fake_plan
from tests.tui.fake_source import IMAGES, FakeTracker, GiB, MiB, disk, vm

SIZE = (200, 50)
PAINT_TARGET_MS, KEY_TARGET_MS = 300.0, 50.0
STATES = (VMState.RUNNING, VMState.SHUT_OFF, VMState.PAUSED)


def inventory(host: str, count: int) -> HostInventory:
    """``count`` generated VMs (a disk each, varied states and sizes)."""
    vms = tuple(
        vm(
            f"{host}-vm{i:04d}",
            STATES[i % len(STATES)],
            1 + i % 8,
            512 * (1 + i % 16),
            disk("vda", f"{IMAGES}/{host}-vm{i:04d}.qcow2", "qcow2", 20 * GiB, (i % 97) * MiB),
        )
        for i in range(count)
    )
    return HostInventory(host, host, "9.0.0", vms)


class TimedTracker(FakeTracker):
    """Hands its inventory to the UI ``delay`` seconds after being asked; records when."""

    def __init__(self, inv: HostInventory, arrived: dict[str, float], delay: float = 0.0) -> None:
        super().__init__(inv)
        self.arrived = arrived
        self.delay = delay

    async def watch(self) -> None:
        assert self.inventory is not None
        if self.delay:
            await asyncio.sleep(self.delay)
        self.arrived[self.inventory.host] = time.perf_counter()


class BusySource(FakeCloneSource):
    """Fake hosts whose clone jobs report progress every 20 ms until cancelled."""

    async def run_plan(
        self,
        plan: ClonePlan,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        auto_rollback: bool = True,
    ) -> CloneResult:
        tick = 0
        while True:
            tick += 1
            disks = tuple(
                DiskProgress(f"vd{c}", tick * MiB, 10**6 * MiB, 50.0 * MiB, 1000.0, False)
                for c in "abc"
            )
            if on_event is not None:
                on_event(JobEvent(plan.job_id, "copy", "", disks))
            await asyncio.sleep(0.02)


def source(
    hosts: list[str], count: int, arrived: dict[str, float], delay: float = 0.0
) -> BusySource:
    inventories = {h: inventory(h, count) for h in hosts}
    src = BusySource(inventories, finishing=frozenset(), failing=frozenset())
    src.trackers = {h: TimedTracker(inv, arrived, delay) for h, inv in inventories.items()}
    return src


async def first_paint(hosts: list[str], count: int, delay: float = 0.0) -> dict[str, float]:
    """Milliseconds from inventory arrival (``delay`` s after start) to the full table's first
    render, per host."""
    arrived: dict[str, float] = {}
    painted: dict[str, float] = {}
    original = VMTable.render_lines

    def render_lines(self: VMTable, crop):  # type: ignore[no-untyped-def]
        lines = original(self, crop)
        pane = self.parent
        host = getattr(pane, "host", None)
        if host and host not in painted and self.row_count >= count:
            painted[host] = time.perf_counter()
        return lines

    VMTable.render_lines = render_lines  # type: ignore[method-assign,assignment]
    try:
        app = KVMCloneApp(hosts, source=source(hosts, count, arrived, delay))
        async with app.run_test(size=SIZE) as pilot:
            deadline = time.monotonic() + 30 + delay
            while len(painted) < len(hosts) and time.monotonic() < deadline:
                await pilot.pause(0.01)
    finally:
        VMTable.render_lines = original  # type: ignore[method-assign]
    return {h: (painted[h] - arrived[h]) * 1000 for h in hosts if h in painted}


async def key_latency(count: int, keys: int) -> list[float]:
    """Milliseconds from posting ``j`` to the cursor action, ``keys`` times, during a job."""
    arrived: dict[str, float] = {}
    src = source(["alpha", "beta"], count, arrived)
    app = KVMCloneApp(["alpha", "beta"], source=src)
    handled: list[float] = []
    latencies: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        while not all(p.state is PaneState.CONNECTED for p in app.panes):
            await pilot.pause(0.01)
        plan = fake_plan(src.inventories, "alpha", "beta", "alpha-vm0001", CloneOptions())
        await app.jobs.start(plan, src)
        await pilot.pause(0.5)  # the job is reporting
        table = app.panes[0].table
        table.focus()
        original = table.action_cursor_down

        def cursor_down() -> None:
            handled.append(time.perf_counter())
            original()

        table.action_cursor_down = cursor_down  # type: ignore[method-assign]
        for _ in range(keys):
            start = time.perf_counter()
            await pilot.press("j")
            if handled:
                latencies.append((handled.pop() - start) * 1000)
            await pilot.pause(0.03)
        for view in app.jobs.active():
            view.cancel()
        await pilot.pause(0.2)
    return latencies


def table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("measure", "result", "target", "ok")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| measure | result | target | ok |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--panes", type=int, default=2)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5, help="first-paint runs of each kind")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    hosts = [f"host{i}" for i in range(1, args.panes + 1)]
    rows: list[tuple[str, str, str, str]] = []
    for label, delay in (("while the app starts", 0.0), ("once the app is up", 1.0)):
        worst_panes = []  # per run: its slower pane
        for _ in range(args.runs):
            paint = asyncio.run(first_paint(hosts, args.vms, delay))
            worst_panes.append(max(paint.values()) if len(paint) == len(hosts) else float("inf"))
        median, worst = statistics.median(worst_panes), max(worst_panes)
        rows.append(
            (
                f"first paint, {args.panes} panes x {args.vms} VMs, arriving {label} "
                f"(slower pane; median / worst of {args.runs} runs)",
                f"{median:.0f} / {worst:.0f} ms",
                f"< {PAINT_TARGET_MS:.0f} ms",
                "yes" if median < PAINT_TARGET_MS else "NO",
            )
        )
    keys = asyncio.run(key_latency(args.vms, args.keys))
    if keys:
        ordered = sorted(keys)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        for label, value in (
            ("median", statistics.median(keys)),
            ("p95", p95),
            ("max", max(keys)),
        ):
            rows.append(
                (
                    f"key to handler during a job, {label} ({len(keys)} keys)",
                    f"{value:.1f} ms",
                    f"< {KEY_TARGET_MS:.0f} ms",
                    "yes" if value < KEY_TARGET_MS else "NO",
                )
            )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(markdown(rows) if args.markdown else table(rows))
    print(f"\nload average at the end (1, 5, 15 min): {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
