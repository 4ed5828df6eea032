"""Benchmark: TUI responsiveness with big inventories and a busy job (no hosts needed).

Run from the repository::

    .venv/bin/python -m bench.tui_responsiveness [--vms 500] [--panes 2] [--keys 60] [--markdown]

What it measures, headless (Textual's ``run_test``) against in-process fake hosts (defined here:
generated inventories that never change, and a clone job that reports progress until cancelled):

1. First paint: ``--panes`` panes of ``--vms`` VMs each. From the moment a host's inventory
   arrives (its tracker's ``watch`` returns) to the first time that pane's table is rendered
   with all its rows (``render_lines``).
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
import time
import zlib
from collections.abc import Callable

from bench.common.tables import markdown_table, ruled_table
from kvm_clone_tui.engine.clone import CloneResult
from kvm_clone_tui.engine.clone_options import CloneOptions
from kvm_clone_tui.engine.config import Config
from kvm_clone_tui.engine.inventory import InventoryEvent
from kvm_clone_tui.engine.models import VM, Disk, DiskDevice, HostInventory, VMState
from kvm_clone_tui.engine.plan import ClonePlan, FilePlan
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from kvm_clone_tui.tui.app import KVMCloneApp
from kvm_clone_tui.tui.hosts.pane import PaneState
from kvm_clone_tui.tui.hosts.vm_table import VMTable

MiB, GiB = 1 << 20, 1 << 30
IMAGES = "/var/lib/libvirt/images"
SIZE = (200, 50)
PAINT_TARGET_MS, KEY_TARGET_MS = 300.0, 50.0
STATES = (VMState.RUNNING, VMState.SHUT_OFF, VMState.PAUSED)


# -- fake hosts (what the TUI needs of KVMCloneClient, in process) --------------------------------


def disk(target: str, path: str, virtual: int, allocated: int) -> Disk:
    """A qcow2 virtio disk."""
    return Disk(
        target=target,
        device=DiskDevice.DISK,
        source_type="file",
        path=path,
        format="qcow2",
        bus="virtio",
        virtual_size=virtual,
        allocation=allocated,
    )


def vm(name: str, state: VMState, vcpus: int, memory_mib: int, *disks: Disk) -> VM:
    """A persistent KVM guest with a UUID derived from its name."""
    return VM(
        name=name,
        uuid=f"00000000-0000-4000-8000-{zlib.crc32(name.encode()):012x}",
        state=state,
        vcpus=vcpus,
        memory_kib=memory_mib * 1024,
        autostart=False,
        persistent=True,
        domain_type="kvm",
        disks=disks,
    )


def inventory(host: str, count: int) -> HostInventory:
    """``count`` generated VMs (a disk each, varied states and sizes)."""
    vms = tuple(
        vm(
            f"{host}-vm{i:04d}",
            STATES[i % len(STATES)],
            1 + i % 8,
            512 * (1 + i % 16),
            disk("vda", f"{IMAGES}/{host}-vm{i:04d}.qcow2", 20 * GiB, (i % 97) * MiB),
        )
        for i in range(count)
    )
    return HostInventory(host, host, "9.0.0", vms)


def busy_plan(
    inventories: dict[str, HostInventory], source: str, dest: str, name: str
) -> ClonePlan:
    """A clone plan of VM ``name`` with nothing in its way (no host consulted, no rules)."""
    the_vm = inventories[source].vm(name)
    assert the_vm is not None
    job_id = f"20231114-221320-{zlib.crc32(f'{source}/{name}/{dest}'.encode()):08x}"
    files = tuple(
        FilePlan(
            label=d.target,
            role="disk",
            format=d.format or "raw",
            source_path=d.path or "",
            final_path=f"{IMAGES}/{name}-{d.target}.qcow2",
            staging_path=f"{IMAGES}/.kvmclone-partial-{job_id}-{name}-{d.target}.qcow2",
            size=d.virtual_size or 0,
            allocated=d.allocation or 0,
            virtual_size=d.virtual_size,
        )
        for d in the_vm.disks
    )
    total = sum(f.allocated for f in files)
    return ClonePlan(
        job_id=job_id,
        source_host=source,
        dest_host=dest,
        vm=the_vm,
        new_name=name,
        new_uuid=f"11111111-2222-4333-8444-{zlib.crc32(job_id.encode()):012x}",
        pool="default",
        pool_path=IMAGES,
        pool_available=200 * GiB,
        files=files,
        route="relay",
        route_reason="through this machine",
        compress=False,
        compress_reason="off",
        required_space=total + max(64 * MiB, total // 50),
        source_xml="",
    )


class TimedTracker:
    """A host's fixed inventory, handed to the UI ``delay`` seconds after being asked; records
    when."""

    def __init__(self, inv: HostInventory, arrived: dict[str, float], delay: float = 0.0) -> None:
        self.inventory: HostInventory | None = inv
        self.listeners: list[Callable[[InventoryEvent], None]] = []
        self.arrived = arrived
        self.delay = delay

    def subscribe(self, listener: Callable[[InventoryEvent], None]) -> None:
        """Keep ``listener`` (the inventory never changes: it is never called)."""
        self.listeners.append(listener)

    async def watch(self) -> None:
        """Hand the inventory over after ``delay`` s."""
        assert self.inventory is not None
        if self.delay:
            await asyncio.sleep(self.delay)
        self.arrived[self.inventory.host] = time.perf_counter()

    async def refresh(self) -> HostInventory:
        """The same inventory again."""
        assert self.inventory is not None
        return self.inventory


class BusySource:
    """Fake hosts whose clone jobs report progress every 20 ms until cancelled."""

    def __init__(self, trackers: dict[str, TimedTracker]) -> None:
        self.trackers = trackers
        self.inventories = {h: t.inventory for h, t in trackers.items() if t.inventory}
        self.config = Config()

    async def tracker(self, name: str) -> TimedTracker:
        """The live inventory of host ``name``."""
        return self.trackers[name]

    async def plan_clone(
        self, source: str, dest: str, vm: str, options: CloneOptions | None = None
    ) -> ClonePlan:
        """:func:`busy_plan`."""
        return busy_plan(self.inventories, source, dest, vm)

    async def run_plan(
        self,
        plan: ClonePlan,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        auto_rollback: bool = True,
    ) -> CloneResult:
        """Report progress for 3 files every 20 ms, until cancelled."""
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

    async def rollback_job(
        self, job_id: str, on_event: Callable[[JobEvent], None] | None = None
    ) -> None:
        """Nothing to roll back."""

    async def resume_job(
        self,
        job_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        *,
        auto_rollback: bool = True,
    ) -> CloneResult:
        """Never asked for here."""
        raise NotImplementedError("the benchmark's jobs are never resumed")


# -- the measurements -----------------------------------------------------------------------------


def source(
    hosts: list[str], count: int, arrived: dict[str, float], delay: float = 0.0
) -> BusySource:
    """Fake hosts ``hosts`` with ``count`` VMs each, arriving ``delay`` s after being asked."""
    return BusySource({h: TimedTracker(inventory(h, count), arrived, delay) for h in hosts})


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
        plan = busy_plan(src.inventories, "alpha", "beta", "alpha-vm0001")
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


HEADER = ("measure", "result", "target", "ok")


def table(rows: list[tuple[str, str, str, str]]) -> str:
    """The results as aligned columns."""
    return "\n".join(ruled_table(HEADER, rows))


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    """The results as a Markdown table."""
    return "\n".join(markdown_table(HEADER, rows))


def main() -> None:
    """Measure first paint and key latency; print the table."""
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
