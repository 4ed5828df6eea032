"""A fixed in-process inventory with KVMCloneClient's ``tracker`` shape, for snapshot tests only.

Snapshots need a picture that never changes; behaviour on real hosts is tested in test_app.py.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from kvm_clone_tui.api.errors import HostError
from kvm_clone_tui.api.models import (
    NIC,
    VM,
    BackingFile,
    Disk,
    DiskDevice,
    HostInventory,
    VMState,
)
from kvm_clone_tui.engine.inventory import InventoryEvent

GiB = 1 << 30
MiB = 1 << 20
IMAGES = "/var/lib/libvirt/images"


def disk(target: str, path: str, fmt: str, virtual: int, allocated: int, **kw: object) -> Disk:
    return Disk(
        target=target,
        device=kw.pop("device", DiskDevice.DISK),  # type: ignore[arg-type]
        source_type="file",
        path=path,
        format=fmt,
        bus="virtio",
        virtual_size=virtual,
        allocation=allocated,
        **kw,  # type: ignore[arg-type]
    )


def vm(name: str, state: VMState, vcpus: int, memory_mib: int, *disks: Disk, **kw: object) -> VM:
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
        **kw,  # type: ignore[arg-type]
    )


def alpha_vms() -> tuple[VM, ...]:
    """The lab's sample VMs, with fixed sizes."""
    return (
        vm(
            "app.v2",
            VMState.SHUT_OFF,
            1,
            256,
            disk("vda", f"{IMAGES}/app.v2.qcow2", "qcow2", GiB, 1300 * 1024),
        ),
        vm(
            "db01",
            VMState.SHUT_OFF,
            2,
            1024,
            disk("vda", f"{IMAGES}/db01/sys/disk.img", "raw", 2 * GiB, 12 * MiB),
            disk("vdb", f"{IMAGES}/db01/data/disk.img", "qcow2", 4 * GiB, 4 * MiB),
        ),
        vm(
            "installer",
            VMState.SHUT_OFF,
            1,
            256,
            disk("vda", f"{IMAGES}/installer.qcow2", "qcow2", GiB, 196 * 1024),
            disk(
                "sda",
                f"{IMAGES}/iso/tools.iso",
                "raw",
                350 * 1024,
                352 * 1024,
                device=DiskDevice.CDROM,
                readonly=True,
            ),
        ),
        vm(
            "linked01",
            VMState.SHUT_OFF,
            1,
            256,
            disk(
                "vda",
                f"{IMAGES}/linked01.qcow2",
                "qcow2",
                GiB,
                196 * 1024,
                backing_chain=(BackingFile(f"{IMAGES}/base/bookworm-base.qcow2", "qcow2"),),
            ),
        ),
        vm(
            "uefi01",
            VMState.SHUT_OFF,
            1,
            256,
            disk("vda", f"{IMAGES}/uefi01.qcow2", "qcow2", GiB, 1300 * 1024),
            nvram="/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd",
        ),
        vm(
            "web01",
            VMState.SHUT_OFF,
            2,
            512,
            disk("vda", f"{IMAGES}/web01.qcow2", "qcow2", 8 * GiB, 8600 * 1024),
            nics=(NIC("52:54:00:6c:ab:01", "network", "default", "virtio"),),
        ),
        vm(
            "writer",
            VMState.RUNNING,
            1,
            256,
            disk("vda", f"{IMAGES}/writer.img", "raw", 64 * MiB, MiB),
        ),
    )


class FakeTracker:
    """A tracker whose inventory never changes unless a test calls :meth:`emit`."""

    def __init__(self, inventory: HostInventory) -> None:
        self.inventory: HostInventory | None = inventory
        self.listeners: list[Callable[[InventoryEvent], None]] = []

    def subscribe(self, listener: Callable[[InventoryEvent], None]) -> None:
        self.listeners.append(listener)

    async def watch(self) -> None:
        return None

    async def refresh(self) -> HostInventory:
        assert self.inventory is not None
        return self.inventory


class FakeSource:
    """Hosts with fixed inventories; a host in ``failures`` fails to connect with that reason."""

    def __init__(
        self, inventories: dict[str, HostInventory], failures: dict[str, str] | None = None
    ) -> None:
        self.trackers = {host: FakeTracker(inv) for host, inv in inventories.items()}
        self.failures = failures or {}

    async def tracker(self, name: str) -> FakeTracker:
        if name in self.failures:
            raise HostError(name, self.failures[name])
        return self.trackers[name]


def lab_like_source() -> FakeSource:
    """alpha with the sample VMs, beta empty, and an address that refuses connections."""
    return FakeSource(
        {
            "alpha": HostInventory("alpha", "alpha", "9.0.0", alpha_vms()),
            "beta": HostInventory("beta", "beta", "9.0.0"),
        },
        failures={"root@127.0.0.99": "connection refused (after 1 attempt)"},
    )
