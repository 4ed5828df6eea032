"""The inventory's data model: hosts, VMs, disks, NICs and pools (plain, immutable values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from kvm_clone_tui.api.errors import KVMCloneError


class VMState(str, Enum):
    """A VM's run state, named as operators say it (and as ``--status`` accepts it)."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut-off"
    SHUTTING_DOWN = "shutting-down"
    CRASHED = "crashed"
    SUSPENDED = "pmsuspended"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


class DiskDevice(str, Enum):
    """What a ``<disk device=...>`` element is."""

    DISK = "disk"
    CDROM = "cdrom"
    FLOPPY = "floppy"
    LUN = "lun"


@dataclass(frozen=True)
class BackingFile:
    """One layer below a disk image in its backing chain."""

    path: str
    format: str | None


@dataclass(frozen=True)
class Disk:
    """One disk of a VM as libvirt and the image itself describe it."""

    target: str
    device: DiskDevice
    source_type: str  # file | block | network | volume | dir
    path: str | None  # None for an empty CD-ROM or a network disk
    format: str | None
    bus: str | None = None
    readonly: bool = False
    virtual_size: int | None = None  # bytes the guest sees
    allocation: int | None = None  # bytes the image occupies on the host
    backing_chain: tuple[BackingFile, ...] = ()


@dataclass(frozen=True)
class NIC:
    """One network interface."""

    mac: str | None
    type: str
    source: str | None
    model: str | None


@dataclass(frozen=True)
class VM:
    """A libvirt domain on one host."""

    name: str
    uuid: str
    state: VMState
    vcpus: int
    memory_kib: int
    autostart: bool
    persistent: bool
    domain_type: str
    disks: tuple[Disk, ...] = ()
    nics: tuple[NIC, ...] = ()
    nvram: str | None = None
    tpm: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def allocation(self) -> int:
        """Bytes the VM's disks occupy on the host (CD-ROMs excluded)."""
        return sum(d.allocation or 0 for d in self.disks if d.device is DiskDevice.DISK)

    @property
    def virtual_size(self) -> int:
        """Bytes the guest sees on all its disks (CD-ROMs excluded)."""
        return sum(d.virtual_size or 0 for d in self.disks if d.device is DiskDevice.DISK)


@dataclass(frozen=True)
class Pool:
    """A storage pool."""

    name: str
    type: str
    path: str | None
    active: bool
    capacity: int
    allocation: int
    available: int


@dataclass(frozen=True)
class HostInventory:
    """Everything listed on one host at one moment."""

    host: str
    hostname: str
    libvirt_version: str
    vms: tuple[VM, ...] = ()
    pools: tuple[Pool, ...] = ()
    errors: tuple[str, ...] = field(default=())

    def vm(self, name: str) -> VM | None:
        """The VM called ``name``, if any."""
        return next((v for v in self.vms if v.name == name), None)


@dataclass(frozen=True)
class InventoryEvent:
    """A VM appeared, changed or disappeared on a host."""

    host: str
    kind: str  # added | changed | removed | disconnected (then name is "" and vm None)
    name: str
    vm: VM | None
    inventory: HostInventory


@dataclass(frozen=True)
class HostListing:
    """One host's answer to ``list_vms``: its inventory, or why there is none."""

    host: str
    inventory: HostInventory | None
    error: KVMCloneError | None = None
