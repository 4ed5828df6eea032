"""A host's inventory (VMs, disks, pools), read through libvirt and kept current by its events.

A full read costs one bulk stats call plus one XML read per domain; afterwards each lifecycle
event re-reads only the domain it names, so a host with hundreds of VMs is never re-listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from kvm_clone_tui.api.models import (
    VM,
    BackingFile,
    Disk,
    HostInventory,
    InventoryEvent,
    Pool,
    VMState,
)
from kvm_clone_tui.engine.domain_xml import DomainXMLError, parse_domain
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.libvirt_conn import LibvirtConnection

log = logging.getLogger(__name__)

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VMState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VMState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VMState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: VMState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VMState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: VMState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: VMState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VMState.SUSPENDED,
}
_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BLOCK
)


def _block_sizes(stats: dict[str, Any], active: bool) -> dict[str, tuple[int | None, int | None]]:
    """Target -> (virtual size, bytes used on the host) from bulk block stats."""
    sizes: dict[str, tuple[int | None, int | None]] = {}
    for i in range(int(stats.get("block.count", 0))):
        name = stats.get(f"block.{i}.name")
        if not name or name in sizes:
            continue  # later entries with the same name are backing layers
        capacity = stats.get(f"block.{i}.capacity")
        # libvirt reports host usage as `physical` for running domains (where `allocation` is
        # the highest written offset) and as `allocation` for inactive ones.
        used = stats.get(f"block.{i}.physical" if active else f"block.{i}.allocation")
        sizes[name] = (capacity, used)
    return sizes


def _volume_backing(conn: libvirt.virConnect, path: str) -> tuple[BackingFile, ...]:
    """The backing chain of an image that is a pool volume (libvirt knows it for inactive VMs)."""
    chain: list[BackingFile] = []
    seen = {path}
    current = path
    while True:
        try:
            xml = conn.storageVolLookupByPath(current).XMLDesc(0)
        except libvirt.libvirtError:
            return tuple(chain)
        backing = ET.fromstring(xml).find("backingStore")
        if backing is None or not backing.findtext("path"):
            return tuple(chain)
        current = (backing.findtext("path") or "").strip()
        fmt = backing.find("format")
        chain.append(BackingFile(current, fmt.get("type") if fmt is not None else None))
        if current in seen:  # a loop in hostile metadata: stop
            return tuple(chain)
        seen.add(current)


@dataclass(frozen=True)
class HostFacts:
    """Per-host answers read once for all domains (instead of two calls per domain)."""

    autostart: frozenset[str]  # UUIDs
    persistent: frozenset[str]


def read_facts(conn: libvirt.virConnect) -> HostFacts:
    """Which domains autostart and which are persistent, in two calls."""

    def uuids(flag: int) -> frozenset[str]:
        return frozenset(d.UUIDString() for d in conn.listAllDomains(flag))

    return HostFacts(
        uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
        uuids(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT),
    )


def read_vm(
    conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    stats: dict[str, Any],
    facts: HostFacts | None = None,
) -> VM:
    """Build the model of one domain (blocking: run in the libvirt thread pool)."""
    if facts is not None:
        persistent = dom.UUIDString() in facts.persistent
        autostart = dom.UUIDString() in facts.autostart
    else:
        persistent = bool(dom.isPersistent())
        autostart = bool(dom.autostart()) if persistent else False
    state = _STATES.get(int(stats.get("state.state", 0)), VMState.UNKNOWN)
    active = state not in (VMState.SHUT_OFF, VMState.UNKNOWN, VMState.CRASHED)
    try:
        parsed = parse_domain(dom.XMLDesc(0))
    except DomainXMLError as exc:
        return VM(
            name=dom.name(),
            uuid=dom.UUIDString(),
            state=state,
            vcpus=0,
            memory_kib=0,
            autostart=False,
            persistent=persistent,
            domain_type="unknown",
            warnings=(str(exc),),
        )
    sizes = _block_sizes(stats, active)
    disks: list[Disk] = []
    for disk in parsed.disks:
        virtual, used = sizes.get(disk.target, (None, None))
        chain = disk.backing_chain
        if (
            not chain
            and disk.path
            and disk.format not in (None, "raw")
            and disk.source_type in ("file", "block")
        ):
            chain = _volume_backing(conn, disk.path)
        disks.append(
            dataclasses.replace(disk, virtual_size=virtual, allocation=used, backing_chain=chain)
        )
    vcpus = int(stats.get("vcpu.current", parsed.vcpus)) if active else parsed.vcpus
    return VM(
        name=parsed.name,
        uuid=parsed.uuid,
        state=state,
        vcpus=vcpus,
        memory_kib=parsed.memory_kib,
        autostart=autostart,
        persistent=persistent,
        domain_type=parsed.domain_type,
        disks=tuple(disks),
        nics=tuple(parsed.nics),
        nvram=parsed.nvram,
        tpm=parsed.tpm,
        warnings=tuple(parsed.warnings),
    )


def _read_pools(conn: libvirt.virConnect) -> tuple[Pool, ...]:
    pools = []
    for pool in conn.listAllStoragePools(0):
        state, capacity, allocation, available = pool.info()
        root = ET.fromstring(pool.XMLDesc(0))
        pools.append(
            Pool(
                name=pool.name(),
                type=root.get("type", "unknown"),
                path=(root.findtext("target/path") or "").strip() or None,
                active=state == libvirt.VIR_STORAGE_POOL_RUNNING,
                capacity=capacity,
                allocation=allocation,
                available=available,
            )
        )
    return tuple(sorted(pools, key=lambda p: p.name))


@dataclass(frozen=True)
class _HostBase:
    """What one call reads for a whole host: the domains' bulk stats and the host's facts."""

    version: str
    hostname: str
    stats: list[Any]
    facts: HostFacts
    pools: tuple[Pool, ...]


def _read_base(conn: libvirt.virConnect) -> _HostBase:
    major, rest = divmod(conn.getLibVersion(), 1_000_000)
    return _HostBase(
        version=f"{major}.{rest // 1000}.{rest % 1000}",
        hostname=conn.getHostname(),
        stats=conn.getAllDomainStats(_STATS, 0),
        facts=read_facts(conn),
        pools=_read_pools(conn),
    )


def _read_domains(
    conn: libvirt.virConnect, part: list[Any], facts: HostFacts
) -> tuple[list[VM], list[str]]:
    """Models of some domains (blocking), and the errors of those that could not be read."""
    vms, errors = [], []
    for dom, dom_stats in part:
        try:
            vms.append(read_vm(conn, dom, dom_stats, facts))
        except libvirt.libvirtError as exc:
            # A domain undefined while we read it is not an error of the host.
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                errors.append(f"{dom.name()}: {exc.get_error_message()}")
    return vms, errors


def _inventory(host: str, base: _HostBase, vms: list[VM], errors: list[str]) -> HostInventory:
    return HostInventory(
        host=host,
        hostname=base.hostname,
        libvirt_version=base.version,
        vms=tuple(sorted(vms, key=lambda v: v.name)),
        pools=base.pools,
        errors=tuple(errors),
    )


def read_inventory(conn: libvirt.virConnect, host: str) -> HostInventory:
    """Read a whole host on one thread (blocking: run in the libvirt thread pool)."""
    base = _read_base(conn)
    return _inventory(host, base, *_read_domains(conn, base.stats, base.facts))


READ_THREADS = 4


async def read_inventory_parallel(libvirt_conn: LibvirtConnection, host: str) -> HostInventory:
    """Read a whole host with the domains spread over the connection's threads.

    One call gets the bulk stats, the host facts and the pools; the per-domain XML reads (one
    round trip each through SSH) then run several at a time on the same connection.
    """
    base = await libvirt_conn.call(_read_base)
    parts = [base.stats[i::READ_THREADS] for i in range(READ_THREADS)]
    results = await asyncio.gather(
        *(
            libvirt_conn.call(functools.partial(_read_domains, part=part, facts=base.facts))
            for part in parts
            if part
        )
    )
    vms = [vm for found, _ in results for vm in found]
    errors = [e for _, found_errors in results for e in found_errors]
    return _inventory(host, base, vms, errors)


def read_one_vm(conn: libvirt.virConnect, name: str) -> VM | None:
    """Re-read a single domain; None when it no longer exists."""
    try:
        dom = conn.lookupByName(name)
        stats = conn.domainListGetStats([dom], _STATS, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise
    return read_vm(conn, dom, stats[0][1]) if stats else None


class InventoryTracker:
    """Keeps one host's inventory current from libvirt's lifecycle events."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.inventory: HostInventory | None = None
        self._listeners: list[Callable[[InventoryEvent], None]] = []
        self._watching = False
        self._pending: set[str] = set()
        self._lock = asyncio.Lock()
        self._closed_watch: asyncio.Task[None] | None = None

    async def refresh(self) -> HostInventory:
        """Read the whole host again."""
        self.inventory = await self.host.read_inventory()
        return self.inventory

    def subscribe(self, listener: Callable[[InventoryEvent], None]) -> None:
        """Call ``listener`` on the event loop after every change."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[InventoryEvent], None]) -> None:
        """Stop calling ``listener`` (no error if it was not subscribed)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _notify(self, event: InventoryEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    async def watch(self) -> None:
        """Start following the host's domain events (idempotent)."""
        if self._watching:
            return
        self._watching = True
        if self.inventory is None:
            await self.refresh()
        await self.host.watch_domains(self._on_event)
        self._closed_watch = asyncio.get_running_loop().create_task(self._watch_connection())

    async def _watch_connection(self) -> None:
        """Tell subscribers when the host's SSH connection ends (kind ``disconnected``)."""
        with contextlib.suppress(Exception):
            await self.host.wait_closed()
        if self.inventory is not None:
            self._notify(InventoryEvent(self.host.name, "disconnected", "", None, self.inventory))

    def _on_event(self, name: str, event: int, detail: int) -> None:
        if name in self._pending:
            return  # a re-read of this VM is already queued; it will see this change too
        self._pending.add(name)
        asyncio.get_running_loop().create_task(self._update(name))

    async def _update(self, name: str) -> None:
        async with self._lock:
            self._pending.discard(name)
            try:
                vm = await self.host.read_vm(name)
            except Exception as exc:  # keep following events even if one read fails
                log.warning("%s: re-reading %s failed: %s", self.host.name, name, exc)
                return
            assert self.inventory is not None
            old = {v.name: v for v in self.inventory.vms}
            existed = name in old
            if vm is None:
                old.pop(name, None)
                kind = "removed"
            else:
                old[name] = vm
                kind = "changed" if existed else "added"
            if vm is None and not existed:
                return
            self.inventory = dataclasses.replace(
                self.inventory, vms=tuple(sorted(old.values(), key=lambda v: v.name))
            )
            self._notify(InventoryEvent(self.host.name, kind, name, vm, self.inventory))
