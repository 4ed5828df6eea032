"""Fake plans and jobs with ``KVMCloneClient``'s clone shape, for snapshot tests only.

A snapshot needs a picture that never changes: fixed job ids, UUIDs, sizes, rates and event
times, and jobs that stop at a chosen point. Real clones on the lab are tested in
test_clone.py (planning, copying, cancelling and rolling back against real hosts).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import replace

from kvm_clone_tui.api.config import Config
from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import VM, Disk, DiskDevice, HostInventory, VMState
from kvm_clone_tui.api.options import CloneOptions
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.engine.clone import CloneFailed, CloneResult
from kvm_clone_tui.engine.cpu_compat import GuestCpu, HostView
from kvm_clone_tui.engine.host_port import HostLimits, PoolInfo
from kvm_clone_tui.engine.plan import ClonePlan, FilePlan, decide
from kvm_clone_tui.engine.plan_facts import CloneFacts, RouteFacts, source_files
from kvm_clone_tui.engine.progress import DiskProgress, JobEvent
from tests.tui.fake_source import FakeSource, GiB, MiB, lab_like_source

T0 = 1_700_000_000.0  # every fake event happens at T0 + n seconds
POOLS = {"default": ("/var/lib/libvirt/images", 200 * GiB), "small": ("/srv/small", 48 * MiB)}
NO_KVM = (
    "the destination offers no KVM acceleration: the clone will not start until its domain "
    "type is changed to qemu"
)
FULL = "No space left on device (writing vda at 3.4 MiB)"
RATES = (1.6, 1.9, 2.1, 2.0, 1.4, 1.2, 1.8, 2.2, 2.0, 2.1, 1.9, 2.0)  # MiB/s, per update


def _ext(fmt: str) -> str:
    return {"qcow2": "qcow2", "raw": "img"}.get(fmt, fmt)


def fake_facts(
    inventories: dict[str, HostInventory], source: str, dest: str, vm_name: str, o: CloneOptions
) -> CloneFacts:
    """What hosts like the lab's would say to the planner, made up without any host."""
    vm = inventories[source].vm(vm_name)
    if vm is None:
        raise HostError(source, f"no VM named {vm_name!r}")
    new_name = o.new_name or vm_name
    pool = o.pool or "default"
    seed = zlib.crc32(f"{source}/{vm_name}/{dest}/{new_name}".encode())
    if pool in POOLS:
        pool_info = PoolInfo(*POOLS[pool])
    else:
        pool_info = PoolInfo(
            None, 0, f"no storage pool {pool!r} on the destination (pools: default, small)"
        )
    sources = source_files(vm, new_name, live=False)
    disks = {d.path: d for d in vm.disks}
    stats = tuple({"kind": "file", "link": False, "real": s.path} for s in sources)
    extents = {
        s.path: {
            "size": disks[s.path].virtual_size or 0,
            "allocated": disks[s.path].allocation or 0,
        }
        for s in sources
    }
    no_cpu = GuestCpu(virttype="kvm", arch=None, machine=None, mode="none")
    kvm = "" if dest == "beta" else "<domain type='kvm'/>"
    return CloneFacts(
        source=source,
        dest=dest,
        vm=replace(vm, state=VMState.SHUT_OFF),  # the fakes copy every VM as if shut off
        new_name=new_name,
        job_id=f"20231114-221320-{seed:08x}",
        new_uuid=f"11111111-2222-4333-8444-{seed:012x}",
        pool=pool,
        pool_info=pool_info,
        source_xml=fake_domain_xml(vm),
        guest_cpu=no_cpu,
        source_cpu=HostView(source),
        dest_cpu=HostView(dest),
        limits=HostLimits(1 << 20, 64, kvm),
        route=RouteFacts(agent_forwarding=True, agent_has_keys=False),
        existing=inventories[dest].vm(new_name),
        stats=stats,
        extents=extents,
        dest_probe={"qemu_img": True},
        dest_peer="127.0.0.3",
    )


def fake_domain_xml(vm: VM) -> str:
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{d.format or 'raw'}'/>"
        f"<source file='{d.path}'/><target dev='{d.target}' bus='virtio'/></disk>"
        for d in vm.disks
        if d.device is DiskDevice.DISK
    )
    return (
        f"<domain type='kvm'><name>{vm.name}</name><uuid>{vm.uuid}</uuid>"
        f"<memory unit='KiB'>{vm.memory_kib}</memory><vcpu>{vm.vcpus}</vcpu>"
        f"<os><type arch='x86_64'>hvm</type></os><devices>{disks}</devices></domain>"
    )


def fake_plan(
    inventories: dict[str, HostInventory], source: str, dest: str, vm_name: str, o: CloneOptions
) -> ClonePlan:
    """What the engine would plan on hosts like the lab's: fixed facts through the real rules."""
    facts = fake_facts(inventories, source, dest, vm_name, o)
    plan = decide(facts, o)
    return replace(  # the pictures pin these: the lab's VM as listed, short reasons
        plan,
        vm=inventories[source].vm(vm_name),
        source_xml="",
        dest_xml="",
        route_reason="through this machine: no SSH agent with keys to forward",
        compress_reason="auto: the hosts share this machine's loopback",
    )


class FakeCloneSource(FakeSource):
    """Fixed inventories that also plan and run fake clones.

    A job copies its files up to ``stop_at`` (a fraction) in 12 scripted updates, then waits
    until cancelled (the fake rolls back, as the engine does); a VM in ``finishing`` completes,
    one in ``failing`` fails there with its staged files kept (``CloneFailed``). Such a job can
    be resumed (``resume_job``): a new job that finds ``stop_at`` of each file already there and
    completes.
    """

    def __init__(
        self,
        inventories: dict[str, HostInventory],
        failures: dict[str, str] | None = None,
        *,
        finishing: frozenset[str] = frozenset({"app.v2"}),
        failing: frozenset[str] = frozenset({"web01"}),
        stop_at: float = 0.45,
    ) -> None:
        super().__init__(inventories, failures)
        self.inventories = inventories
        self.config = Config()
        self.finishing = finishing
        self.failing = failing
        self.stop_at = stop_at
        self.rolled_back: list[str] = []
        self.kept: dict[str, ClonePlan] = {}  # failed jobs that kept their files, by job id
        self.resumed: list[str] = []

    async def plan_clone(
        self, source: str, dest: str, vm: str, options: CloneOptions | None = None
    ) -> ClonePlan:
        return fake_plan(self.inventories, source, dest, vm, options or CloneOptions())

    async def run_plan(
        self,
        plan: ClonePlan,
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        auto_rollback: bool = True,
    ) -> CloneResult:
        def emit(step: str, message: str, at: float, *disks: DiskProgress) -> None:
            if on_event is not None:
                on_event(JobEvent(plan.job_id, step, message, disks, time=T0 + at))

        finishing = plan.vm.name in self.finishing
        for warning in plan.warnings:
            emit("warning", warning.message, 0)
        where = f"pool {plan.pool} ({plan.route}: {plan.route_reason})"
        emit("stage", f"copying {len(plan.files)} file(s) into {where}", 0)
        for i, rate in enumerate(RATES, start=1):
            share = i / len(RATES) * (1.0 if finishing else self.stop_at)
            last = finishing and i == len(RATES)
            emit("copy", "", i / 2, *(_progress(f, share, rate, last) for f in plan.files))
        if plan.vm.name in self.failing:
            cause = HostError(plan.dest_host, f"receive failed: {FULL}")
            emit("failed", str(cause), 6)
            self.kept[plan.job_id] = plan
            raise CloneFailed(plan.job_id, [f.staging_path for f in plan.files], cause)
        if not finishing:
            try:
                await asyncio.Event().wait()  # until cancelled
            except asyncio.CancelledError:
                emit("failed", "cancelled", 9)
                emit("rollback", "rolled back: nothing of this job is left on the destination", 9)
                raise
        emit("verify", ", ".join(f"{f.label} 3f1c9a0b27d4e6f8" for f in plan.files), 7)
        emit("define", f"{plan.new_name} defined on {plan.dest_host} ({plan.new_uuid})", 7)
        emit("done", f"cloned {plan.vm.name} to {plan.dest_host} as {plan.new_name}", 7)
        return CloneResult(
            job_id=plan.job_id,
            source_host=plan.source_host,
            dest_host=plan.dest_host,
            vm=plan.vm.name,
            new_name=plan.new_name,
            uuid=plan.new_uuid,
            route=plan.route,
            files=(),
            bytes_copied=plan.total_bytes,
            seconds=7.0,
            started=False,
        )

    async def rollback_job(
        self, job_id: str, on_event: Callable[[JobEvent], None] | None = None
    ) -> None:
        self.rolled_back.append(job_id)
        self.kept.pop(job_id, None)

    async def resume_job(
        self,
        job_id: str,
        on_event: Callable[[JobEvent], None] | None = None,
        *,
        auto_rollback: bool = True,
    ) -> CloneResult:
        old = self.kept.pop(job_id, None)
        if old is None:
            raise HostError("fake", f"no unfinished job {job_id!r}")
        self.resumed.append(job_id)
        new_id = f"{job_id}-r"
        plan = replace(old, job_id=new_id)
        total = plan.total_bytes
        there = sum(int(f.allocated * self.stop_at) for f in plan.files)

        def emit(step: str, message: str, at: float, *disks: DiskProgress) -> None:
            if on_event is not None:
                on_event(JobEvent(new_id, step, message, disks, time=T0 + at))

        emit(
            "resume",
            f"resuming job {job_id} (as job {new_id}): {format_bytes(there)} of "
            f"{format_bytes(total)} already there; every block is compared with the source "
            "before it is kept",
            10,
        )
        for i, rate in enumerate(RATES, start=1):
            share = self.stop_at + (1 - self.stop_at) * i / len(RATES)
            last = i == len(RATES)
            emit("copy", "", 10 + i / 2, *(_progress(f, share, rate, last) for f in plan.files))
        emit("define", f"{plan.new_name} defined on {plan.dest_host} ({plan.new_uuid})", 17)
        return CloneResult(
            job_id=new_id,
            source_host=plan.source_host,
            dest_host=plan.dest_host,
            vm=plan.vm.name,
            new_name=plan.new_name,
            uuid=plan.new_uuid,
            route=plan.route,
            files=(),
            bytes_copied=total - there,
            seconds=7.0,
            started=False,
            resumed_from=job_id,
            bytes_reused=there,
        )


def _file_plan(disk: Disk, pool_path: str, new_name: str, job_id: str) -> FilePlan:
    final = f"{new_name}-{disk.target}.{_ext(disk.format or 'raw')}"
    return FilePlan(
        label=disk.target,
        role="disk",
        format=disk.format or "raw",
        source_path=disk.path or "",
        final_path=f"{pool_path}/{final}",
        staging_path=f"{pool_path}/.kvmclone-partial-{job_id}-{final}",
        size=disk.virtual_size or 0,
        allocated=disk.allocation or 0,
        virtual_size=disk.virtual_size,
    )


def _progress(f: FilePlan, share: float, rate: float, finished: bool) -> DiskProgress:
    done = int(f.allocated * share)
    eta = (f.allocated - done) / (rate * MiB)
    return DiskProgress(f.label, done, f.allocated, rate * MiB, 0.0 if finished else eta, finished)


def lab_like_clone_source() -> FakeCloneSource:
    """:func:`lab_like_source`'s hosts, able to plan and run fake clones."""
    base = lab_like_source()
    inventories = {host: t.inventory for host, t in base.trackers.items() if t.inventory}
    return FakeCloneSource(inventories, base.failures)
