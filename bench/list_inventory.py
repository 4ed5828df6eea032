"""Benchmark: listing hosts (`kvm-clone list`, ``KVMCloneClient.list_vms``) and the live inventory.

Run as root from the repository (it starts a lab of its own; the shared lab is left alone)::

    .venv/bin/python bench/list_inventory.py [--vms 200] [--hosts 3] [--runs 5]

What it does:

1. ``kvm-clone lab --dir <temp dir> up --hosts N --base-address 127.0.0.60 --no-sample-vms``:
   a private lab on addresses the shared lab does not use; ``lab up`` writes the kvm-clone
   config for it (``<dir>/config.yaml``).
2. Defines ``--vms`` VMs on every host (a 1 GiB qcow2 disk, a NIC; libvirt-python inside the
   host's namespace, see ``bench/lab_driver.py``), then measures over ``--runs`` runs:
   the wall time of ``kvm-clone list <hosts> --output json`` (a whole process: Python start-up,
   SSH logins, reads, JSON), and in-process ``KVMCloneClient.list_vms``: cold (new client: SSH
   logins included) and warm (connections already open).
3. Tops the first host up to ``--tracker-vms`` VMs and follows it with
   ``KVMCloneClient.tracker`` + ``watch`` + ``subscribe`` while VMs are defined, started,
   stopped and undefined: event-to-updated-inventory latency, and counts of full reads
   (``read_inventory_parallel``) vs single-VM reads (``read_one_vm``) to show that events never
   cause a re-list; compared with the time of one full re-list.
4. Always tears its lab down (``lab down --purge``), on errors and Ctrl-C too.

Results are printed, and as Markdown with ``--markdown`` (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import libvirt

import kvm_clone_tui.engine.inventory as inventory_module
from kvm_clone_tui.engine.client import KVMCloneClient
from kvm_clone_tui.engine.config import Config, load_config
from kvm_clone_tui.engine.inventory import InventoryEvent, InventoryTracker
from kvm_clone_tui.engine.models import VMState
from kvm_clone_tui.lab.layout import LabLayout, default_cache_dir
from kvm_clone_tui.lab.manager import Lab
from kvm_clone_tui.lab.processes import nsenter_argv

ROOT = Path(__file__).resolve().parent.parent
KVM_CLONE = ROOT / ".venv" / "bin" / "kvm-clone"
DRIVER = Path(__file__).resolve().parent / "lab_driver.py"
TARGET_LIST_SECONDS = 1.5  # the target: 3 hosts x 200 VMs, SSH logins included
EVENT_TIMEOUT = 60.0


# -- small helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """min / median / max of a series of seconds."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        """Smallest value."""
        return min(self.values)

    @property
    def median(self) -> float:
        """Median value."""
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        """Largest value."""
        return max(self.values)

    def ms(self) -> str:
        """``min / median / max`` in milliseconds."""
        return f"{self.min * 1000:.0f} / {self.median * 1000:.0f} / {self.max * 1000:.0f} ms"

    def s(self) -> str:
        """``min / median / max`` in seconds."""
        return f"{self.min:.2f} / {self.median:.2f} / {self.max:.2f} s"


def log(message: str) -> None:
    """Progress on stderr (stdout carries the results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def port_open(address: str, port: int = 22) -> bool:
    """True when something listens on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def next_address(base: str, offset: int) -> str:
    """``base`` + ``offset`` in the last octet (127.0.0.60 + 2 -> 127.0.0.62)."""
    head, last = base.rsplit(".", 1)
    return f"{head}.{int(last) + offset}"


# -- the benchmark's own lab ---------------------------------------------------------------------


class BenchLab:
    """A lab in its own state directory on its own addresses, always purged at the end."""

    def __init__(self, root: Path, hosts: int, base_address: str) -> None:
        self.root = root
        self.hosts = hosts
        self.base_address = base_address
        self.layout = LabLayout(root)
        self.started = False

    def command(self, *args: str) -> list[str]:
        """``kvm-clone lab --dir <root> ARGS``."""
        return [str(KVM_CLONE), "lab", "--dir", str(self.root), *args]

    def up(self) -> float:
        """Start the hosts; return the seconds it took."""
        busy = [
            a
            for a in (next_address(self.base_address, i) for i in range(self.hosts))
            if port_open(a)
        ]
        if busy:
            raise SystemExit(
                f"something already listens on {', '.join(busy)}:22 (another benchmark's lab?); "
                "choose other addresses with --base-address"
            )
        cmd = self.command(
            "up",
            "--hosts",
            str(self.hosts),
            "--base-address",
            self.base_address,
            "--no-sample-vms",
        )
        log(f"$ {shlex.join(cmd)}")
        self.started = True
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        return time.perf_counter() - t0

    def names(self) -> list[str]:
        """The host names (alpha, beta, ...) as ``lab up`` recorded them."""
        state = self.layout.load_state()
        if state is None:
            raise SystemExit(f"no lab state in {self.root} after `lab up`")
        return [h.name for h in state.hosts]

    def domain_type(self) -> str:
        """``qemu`` or ``kvm``, as ``lab up`` chose."""
        state = self.layout.load_state()
        return state.domain_type if state else "qemu"

    def libvirtd_pid(self, name: str) -> int:
        """The pid of the host's libvirtd (the door into its namespace)."""
        return int((self.layout.host_dir(name) / "run" / "libvirtd.pid").read_text().strip())

    def config_path(self) -> Path:
        """The kvm-clone config that ``lab up`` wrote for this lab."""
        path = self.layout.client_config
        if not path.exists():
            raise SystemExit(
                f"{path} does not exist: this kvm-clone's `lab up` does not write a client config "
                "yet (LabLayout.client_config); the benchmark needs it"
            )
        return path

    def down(self) -> None:
        """``lab down --purge``, immune to Ctrl-C while it runs.

        If the command fails (say the CLI does not import because someone is half-way through
        editing it), the lab module's own ``Lab.down`` is called in this process instead: a
        benchmark must never leave its hosts running.
        """
        if not self.started:
            return
        cmd = self.command("down", "--purge")
        log(f"$ {shlex.join(cmd)}")
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            done = subprocess.run(cmd, check=False, stdout=sys.stderr, start_new_session=True)
            if done.returncode != 0:
                log(f"`lab down` exited {done.returncode}; stopping the lab in-process")
                Lab(self.layout, default_cache_dir(), log=log).down(purge=True)
        finally:
            signal.signal(signal.SIGINT, previous)


class HostDriver:
    """``bench/lab_driver.py`` running inside one host's namespace (libvirt, no SSH)."""

    def __init__(self, lab: BenchLab, name: str) -> None:
        self.name = name
        cmd = nsenter_argv(
            lab.libvirtd_pid(name), [sys.executable, str(DRIVER), lab.domain_type()], uts=False
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C goes to the benchmark, which then cleans up
        )
        self._lock = threading.Lock()

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and wait for its answer (thread-safe)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: lab driver exited (code {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"{self.name}: {op} failed: {answer.get('error')}")
        return answer

    def close(self) -> None:
        """Stop the driver."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.process.stdin is not None
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def vm_names(start: int, stop: int, prefix: str = "bench") -> list[str]:
    """``bench-0000`` ... (``stop`` exclusive)."""
    return [f"{prefix}-{i:04d}" for i in range(start, stop)]


# -- counting the inventory's reads --------------------------------------------------------------


# The real functions, captured before any wrapping (the counters must not see these reads).
_ORIGINAL_READ_INVENTORY = inventory_module.read_inventory
_ORIGINAL_READ_ONE_VM = inventory_module.read_one_vm


def counter_free_read(conn: Any, host: str) -> Any:
    """A full read that the counters do not see (for the final consistency check)."""
    return _ORIGINAL_READ_INVENTORY(conn, host)


@dataclass
class ReadCounter:
    """Counts (and times) calls of ``read_inventory_parallel`` (a full read) and ``read_one_vm``
    in this process."""

    full: int = 0
    single: int = 0
    full_seconds: list[float] = field(default_factory=list)
    single_seconds: list[float] = field(default_factory=list)
    single_spans: list[tuple[str, float, float]] = field(default_factory=list)  # monotonic
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, int]:
        """(full reads, single-VM reads) so far."""
        with self.lock:
            return self.full, self.single


@contextlib.contextmanager
def counting_reads() -> Iterator[ReadCounter]:
    """Wrap the inventory module's read functions with counters for the duration."""
    counter = ReadCounter()
    original_full = inventory_module.read_inventory_parallel
    original_one = inventory_module.read_one_vm

    async def full(conn: Any, host: str) -> Any:
        t0 = time.perf_counter()
        try:
            return await original_full(conn, host)
        finally:
            with counter.lock:
                counter.full += 1
                counter.full_seconds.append(time.perf_counter() - t0)

    def one(conn: Any, name: str) -> Any:
        t0 = time.monotonic()
        try:
            return original_one(conn, name)
        finally:
            t1 = time.monotonic()
            with counter.lock:
                counter.single += 1
                counter.single_seconds.append(t1 - t0)
                counter.single_spans.append((name, t0, t1))

    inventory_module.read_inventory_parallel = full  # type: ignore[assignment]
    inventory_module.read_one_vm = one
    try:
        yield counter
    finally:
        inventory_module.read_inventory_parallel = original_full
        inventory_module.read_one_vm = original_one


# -- part 1: listing ------------------------------------------------------------------------------


def time_cli(args: Sequence[str], env: dict[str, str], check: Callable[[str], None]) -> float:
    """Wall time of one ``kvm-clone ARGS`` process; ``check`` validates its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(KVM_CLONE), *args], env=env, capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"kvm-clone {' '.join(args)} exited {done.returncode}: {done.stderr}")
    check(done.stdout)
    return seconds


def check_listing(hosts: Sequence[str], vms: int) -> Callable[[str], None]:
    """A check that the JSON listing names every host with ``vms`` VMs."""

    def check(stdout: str) -> None:
        data = json.loads(stdout)
        counts = {h["host"]: len(h.get("vms", ())) for h in data["hosts"]}
        expected = dict.fromkeys(hosts, vms)
        if counts != expected:
            raise RuntimeError(f"listing has {counts}, expected {expected}")

    return check


async def list_in_process(
    config: Config, hosts: Sequence[str], vms: int, counter: ReadCounter
) -> dict[str, float]:
    """One cold ``list_vms`` (new client), then the SSH logins alone, then a warm one."""
    result: dict[str, float] = {}
    before = counter.snapshot()[0]
    async with KVMCloneClient(config) as client:
        t0 = time.perf_counter()
        listings = await client.list_vms(hosts)
        result["cold"] = time.perf_counter() - t0
        result["cold_full_reads"] = counter.snapshot()[0] - before
        for listing in listings:
            if listing.inventory is None or len(listing.inventory.vms) != vms:
                raise RuntimeError(f"{listing.host}: {listing.error or 'wrong VM count'}")
        before = counter.snapshot()[0]
        t0 = time.perf_counter()
        await client.list_vms(hosts)
        result["warm"] = time.perf_counter() - t0
        result["warm_full_reads"] = counter.snapshot()[0] - before
    async with KVMCloneClient(config) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client.host(h) for h in hosts))
        result["connect"] = time.perf_counter() - t0
    return result


def profile_cold_list(config: Config, hosts: Sequence[str], top: int) -> str:
    """cProfile of one cold in-process ``list_vms``: the top entries by own time."""

    async def once() -> None:
        async with KVMCloneClient(config) as client:
            await client.list_vms(hosts)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(once())
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def import_profile(top: int, max_depth: int = 4) -> str:
    """``python -X importtime`` of ``kvm-clone --version``: the slowest imports (cumulative),
    down to ``max_depth`` levels below ``kvm_clone_tui.cli.main``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kvm_clone_tui", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    entries = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= max_depth:
            entries.append((int(parts[1]), depth, name.strip()))
    entries.sort(reverse=True)
    lines = [f"{'cumulative ms':>13}  module (indent = import depth)"]
    lines += [f"{us / 1000:13.0f}  {'  ' * depth}{name}" for us, depth, name in entries[:top]]
    return "\n".join(lines) + "\n"


def profile_one_read(config: Config, host: str, top: int) -> str:
    """cProfile of the per-domain part of a full read of ``host``: ``read_vm`` with the host
    facts for every domain, as ``read_inventory_parallel`` does it, but one after the other in
    one libvirt worker thread so that one profiler sees every libvirt call (each is one round
    trip through SSH): how many calls a VM costs and how long each takes."""

    def profiled(conn: Any) -> tuple[float, int, cProfile.Profile]:
        stats = conn.getAllDomainStats(inventory_module._STATS, 0)
        facts = inventory_module.read_facts(conn)
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        try:
            for dom, dom_stats in stats:
                inventory_module.read_vm(conn, dom, dom_stats, facts)
        finally:
            profiler.disable()
        return time.perf_counter() - t0, len(stats), profiler

    async def once() -> tuple[float, int, cProfile.Profile]:
        async with KVMCloneClient(config) as client:
            return await (await client.host(host)).libvirt.call(profiled)

    seconds, domains, profiler = asyncio.run(once())
    out = io.StringIO()
    out.write(f"read_vm of the {domains} domains of {host}, one at a time: {seconds:.2f} s\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def bench_listing(
    lab: BenchLab, hosts: Sequence[str], args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """Part 1: ``kvm-clone list`` and ``list_vms`` over every host."""
    config_path = lab.config_path()
    env = dict(os.environ, KVM_CLONE_CONFIG=str(config_path))
    list_args = ["list", *hosts, "--output", "json"]
    results["list_command"] = f"KVM_CLONE_CONFIG={config_path} kvm-clone {' '.join(list_args)}"
    check = check_listing(hosts, args.vms)

    log("kvm-clone --version (Python start-up and imports only)")
    startup = [time_cli(["--version"], env, lambda _out: None) for _ in range(args.runs)]
    results["startup"] = Summary(tuple(startup))

    log(f"kvm-clone list: 1 warm-up + {args.runs} runs")
    results["cli_first"] = time_cli(list_args, env, check)
    cli = []
    for i in range(args.runs):
        cli.append(time_cli(list_args, env, check))
        log(f"  run {i + 1}: {cli[-1]:.2f} s")
    results["cli"] = Summary(tuple(cli))

    config = load_config(config_path)
    log(f"KVMCloneClient.list_vms in process: {args.runs} runs")
    runs = []
    with counting_reads() as counter:
        for _ in range(args.runs):
            runs.append(asyncio.run(list_in_process(config, hosts, args.vms, counter)))
    for key in ("cold", "warm", "connect"):
        results[f"api_{key}"] = Summary(tuple(r[key] for r in runs))
    results["api_cold_full_reads"] = int(runs[0]["cold_full_reads"])
    results["api_warm_full_reads"] = int(runs[0]["warm_full_reads"])
    results["full_read_seconds"] = Summary(tuple(counter.full_seconds))

    if args.profile:
        log("profiling one cold list_vms (cProfile)")
        results["profile"] = profile_cold_list(config, hosts, args.profile)
        results["profile_read"] = profile_one_read(config, hosts[0], args.profile)
        results["profile_imports"] = import_profile(args.profile)


# -- part 2: the live inventory ------------------------------------------------------------------


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
                await libvirt_conn.call(lambda c: _ORIGINAL_READ_ONE_VM(c, group[0]))
                steady.append(time.perf_counter() - t0)
            burst_stop = await burst(driver, tracker, events, "destroy", group, VMState.SHUT_OFF)
            steady_off = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                await libvirt_conn.call(lambda c: _ORIGINAL_READ_ONE_VM(c, group[0]))
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
    config = load_config(lab.config_path())
    asyncio.run(follow_events(config, host, driver, args, results))


# -- reporting ------------------------------------------------------------------------------------


def machine() -> str:
    """A one-line description of this machine."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """A Markdown table, or aligned plain-text columns."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(c.strip() for c in row) + " |" for row in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def _med_max(summary: Summary) -> str:
    """``median (max)`` in milliseconds."""
    return f"{summary.median * 1000:.0f} ({summary.max * 1000:.0f})"


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other people's work on the machine skews
    timings)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: dict[str, Any], args: argparse.Namespace, markdown: bool) -> str:
    """The results as plain text, or as Markdown for docs/benchmarks.md."""
    hosts, vms, tv = args.hosts, args.vms, args.tracker_vms
    lines = [
        f"date: {results['date']}",
        f"machine: {results['machine']}",
        f"load average (1/5/15 min) at start: {results['loadavg']}; "
        f"at end: {results.get('loadavg_end', '?')}",
        f"command: `{results['command']}`",
        f"set-up: lab up ({hosts} hosts) {results['lab_up']:.1f} s; "
        f"defining {hosts} x {vms} VMs {results['define_seconds']:.1f} s",
    ]
    if markdown:
        lines = [f"- {line}" for line in lines]
    out = [*lines, ""]
    rows: list[tuple[str, str]] = []
    if "cli" in results:
        verdict = "meets" if results["cli"].median < TARGET_LIST_SECONDS else "MISSES"
        rows += [
            ("`kvm-clone --version` (Python start-up + imports)", results["startup"].ms()),
            (
                f"`kvm-clone list` {hosts} hosts x {vms} VMs, JSON: first run",
                f"{results['cli_first']:.2f} s",
            ),
            (
                f"`kvm-clone list` {hosts} hosts x {vms} VMs, JSON (wall, whole process)",
                f"{results['cli'].s()} ({verdict} the {TARGET_LIST_SECONDS} s target)",
            ),
            (
                f"`list_vms` cold (new client: SSH logins + libvirt + reads); "
                f"{results['api_cold_full_reads']} full reads",
                results["api_cold"].s(),
            ),
            (
                f"SSH logins + libvirt connections alone ({hosts} hosts in parallel)",
                results["api_connect"].s(),
            ),
            (
                f"`list_vms` warm (connections open); {results['api_warm_full_reads']} full reads",
                results["api_warm"].s(),
            ),
            (
                f"one full read of {vms} VMs (`read_inventory_parallel`, {hosts} hosts at once)",
                results["full_read_seconds"].s(),
            ),
        ]
    if "relist" in results:
        rows += [
            (
                f"full read of {tv} VMs on the host itself (sequential `read_inventory`, "
                "local socket, no SSH)",
                results["local_read"].s(),
            ),
            (
                f"tracker: first read of {tv} VMs (SSH login included)",
                f"{results['tracker_initial']:.2f} s",
            ),
            (
                f"full re-list of {tv} VMs (`tracker.refresh()`, connection open)",
                results["relist"].s(),
            ),
            (
                f"full re-list of {tv} VMs (`list_vms([host])`, connection open)",
                results["relist_api"].s(),
            ),
            (
                "one single-VM re-read (`read_one_vm`, every one of the run)",
                results["single_read_seconds"].ms(),
            ),
            (
                "`read_one_vm` of a running VM, nothing else happening",
                results["steady_running"].ms(),
            ),
            ("`read_one_vm` of a shut-off VM, nothing else happening", results["steady_off"].ms()),
            (
                "event on the loop -> updated inventory, all one-at-a-time actions",
                results["tracker_all"].ms(),
            ),
            (
                f"burst: start {args.burst} VMs; last call returned -> all running in the tracker",
                f"{results['burst_start'] * 1000:.0f} ms",
            ),
            (
                f"burst: stop {args.burst} VMs; last call returned -> all shut off in the tracker",
                f"{results['burst_stop'] * 1000:.0f} ms",
            ),
            (
                "full reads (`read_inventory_parallel`) from the tracker's creation to the end "
                "of the events",
                f"{results['tracker_full_reads']}",
            ),
            (
                "single-VM reads (`read_one_vm`): after the "
                f"{results['tracker_sequential_actions']} one-at-a-time actions / after the "
                "bursts too",
                f"{results['tracker_sequential_singles']} / {results['tracker_single_reads']}",
            ),
            (
                f"inventory events delivered to the subscriber for {results['tracker_actions']} "
                "actions",
                f"{results['tracker_events']}",
            ),
        ]
    if rows:
        out += _table(["measurement", "min / median / max"], rows, markdown)
    if "relist" in results:
        header = [
            "action (one at a time)",
            "libvirt events",
            "event on loop -> updated",
            "of which queued",
            "of which re-read",
            "call returned -> event on loop",
            "call returned -> updated",
        ]
        lat_rows = [
            [
                f"{kind} x{args.events}",
                results["tracker_raw_events"][kind],
                _med_max(results["tracker_latency"][kind]),
                _med_max(results["tracker_queued"][kind]),
                _med_max(results["tracker_reread"][kind]),
                _med_max(results["tracker_delivery"][kind]),
                _med_max(results["tracker_from_call"][kind]),
            ]
            for kind in results["tracker_latency"]
        ]
        out += ["", f"Live inventory of {tv} VMs, milliseconds, median (max):", ""]
        out += _table(header, lat_rows, markdown)
    text = "\n".join(out)
    if "profile" in results:
        text += "\n\ncProfile of one cold in-process list_vms (top by own time):\n"
        text += results["profile"]
    if "profile_imports" in results:
        text += "\nSlowest imports of `kvm-clone --version` (python -X importtime):\n"
        text += results["profile_imports"]
    if "profile_read" in results:
        text += "\ncProfile of the per-domain reads of one host, in one libvirt worker thread:\n"
        text += results["profile_read"]
    return text


# -- main -----------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--vms", type=int, default=200, help="VMs per host for the listing")
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--tracker-vms",
        type=int,
        default=500,
        help="VMs on the first host for the live-inventory part",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=10,
        help="one-at-a-time define/start/stop/undefine actions of each kind",
    )
    parser.add_argument("--burst", type=int, default=10, help="VMs started/stopped in one burst")
    parser.add_argument(
        "--base-address",
        default="127.0.0.60",
        help="loopback address of the benchmark lab's first host",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="state directory for the benchmark lab (default: a new temp dir); "
        "it is purged at the end",
    )
    parser.add_argument("--skip-listing", action="store_true", help="only the live inventory")
    parser.add_argument("--skip-tracker", action="store_true", help="only the listing")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also print the top N cProfile entries of one cold list_vms",
    )
    parser.add_argument("--markdown", action="store_true", help="print results as Markdown")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args(argv)
    if args.tracker_vms < args.vms or args.tracker_vms < args.events + args.burst:
        parser.error("--tracker-vms must be at least --vms and at least --events + --burst")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the lab is torn down whatever happens."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("the benchmark needs root (it runs a lab)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    root = args.dir or Path(tempfile.mkdtemp(prefix="kvm-clone-bench-"))
    lab = BenchLab(root, args.hosts, args.base_address)
    drivers: dict[str, HostDriver] = {}
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg": loadavg(),
        "command": ".venv/bin/python bench/list_inventory.py "
        + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
    }
    try:
        results["lab_up"] = lab.up()
        hosts = lab.names()
        drivers = {h: HostDriver(lab, h) for h in hosts}
        log(f"defining {args.vms} VMs on each of {', '.join(hosts)}")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(
                pool.map(
                    lambda h: drivers[h].request("define_many", names=vm_names(0, args.vms)), hosts
                )
            )
        results["define_seconds"] = time.perf_counter() - t0
        if not args.skip_listing:
            bench_listing(lab, hosts, args, results)
        if not args.skip_tracker:
            bench_tracker(lab, hosts, drivers, args, results)
    except KeyboardInterrupt:
        log("interrupted: tearing the benchmark lab down")
        return 130
    finally:
        results["loadavg_end"] = loadavg()
        for driver in drivers.values():
            driver.close()
        lab.down()
        if args.dir is None and not lab.started:
            with contextlib.suppress(OSError):
                root.rmdir()  # the empty temp dir of a lab that never started
    if args.json:  # first, so that the raw numbers survive a bug in the report
        raw = {k: (list(v.values) if isinstance(v, Summary) else v) for k, v in results.items()}
        for key in (
            "tracker_latency",
            "tracker_from_call",
            "tracker_delivery",
            "tracker_queued",
            "tracker_reread",
        ):
            raw[key] = {k: list(v.values) for k, v in results.get(key, {}).items()}
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    print(report(results, args, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
