"""The libvirt side of the host port: each operation as one function over a ``virConnect``.

:class:`~kvm_clone_tui.engine.hosts.SSHHost` runs them in the connection's thread pool
(``LibvirtConnection.call``: libvirt errors become LibvirtError, a lost libvirtd is reopened
and the call made again, so each must be safe to repeat). Nothing else in the engine touches
``virConnect``, except the inventory's and the CPU check's readers that these call.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence

import libvirt

from kvm_clone_tui.engine.host_port import BackupStarted, HostLimits, PoolInfo


def domain_xml(conn: libvirt.virConnect, vm: str, inactive: bool, secure: bool) -> str:
    flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (
        libvirt.VIR_DOMAIN_XML_SECURE if secure else 0
    )
    xml: str = conn.lookupByName(vm).XMLDesc(flags)
    return xml


def define(conn: libvirt.virConnect, xml: str) -> None:
    conn.defineXML(xml)


def start(conn: libvirt.virConnect, uuid: str) -> None:
    conn.lookupByUUIDString(uuid).create()


def undefine_keeping_state(conn: libvirt.virConnect, vm: str) -> None:
    conn.lookupByName(vm).undefineFlags(
        libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
    )


def remove_domain(conn: libvirt.virConnect, uuid: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByUUIDString(uuid)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        )


def edit_metadata(
    conn: libvirt.virConnect, uuid: str, key: str, uri: str, edit: Callable[[str], str]
) -> None:
    dom = conn.lookupByUUIDString(uuid)
    element = edit(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, element, key, uri, libvirt.VIR_DOMAIN_AFFECT_CONFIG
    )


def redefine_checkpoint(conn: libvirt.virConnect, vm: str, make_xml: Callable[[str], str]) -> None:
    dom = conn.lookupByName(vm)
    if dom.isActive():
        raise libvirt.libvirtError(f"{vm} was started while kvm-clone was working")
    xml = make_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    dom.checkpointCreateXML(xml, libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE)


def delete_checkpoint(conn: libvirt.virConnect, vm: str, name: str) -> list[str] | None:
    try:
        dom = conn.lookupByName(vm)
    except libvirt.libvirtError:
        return None  # the VM is gone: nothing to keep clean
    try:
        checkpoint = dom.checkpointLookupByName(name)
    except libvirt.libvirtError:
        checkpoint = None
    if dom.isActive():
        if checkpoint is not None:
            checkpoint.delete(0)
        return None
    if checkpoint is not None:
        checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    paths = []
    for disk in root.iter("disk"):
        driver, source = disk.find("driver"), disk.find("source")
        qcow2 = driver is not None and driver.get("type") == "qcow2"
        if qcow2 and source is not None and source.get("file"):
            paths.append(str(source.get("file")))
    return paths


def checkpoint_problem(conn: libvirt.virConnect, vm: str, name: str, running: bool) -> str | None:
    try:
        checkpoint = conn.lookupByName(vm).checkpointLookupByName(name)
    except libvirt.libvirtError:
        return f"the source has no checkpoint {name} (deleted, or the VM was redefined)"
    if running:  # QEMU holds the bitmaps: asking for the changed size checks they exist
        try:
            checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE)
        except libvirt.libvirtError as exc:
            return f"the running VM lacks the bitmaps of checkpoint {name}: {exc}"
    return None


def backup_begin(
    conn: libvirt.virConnect,
    vm: str,
    backup_xml: str,
    checkpoint_xml: str | None,
    incremental_disks: Sequence[str] | None,
) -> BackupStarted:
    dom = conn.lookupByName(vm)
    frozen = False
    try:
        frozen = dom.fsFreeze() > 0
    except libvirt.libvirtError:
        frozen = False  # no guest agent, or it does not answer: crash-consistent
    try:
        dom.backupBegin(backup_xml, checkpoint_xml, 0)
    finally:
        if frozen:
            with contextlib.suppress(libvirt.libvirtError):
                dom.fsThaw()
    bitmaps: dict[str, str] = {}
    if incremental_disks is not None:
        for disk in ET.fromstring(dom.backupGetXMLDesc(0)).iter("disk"):
            if disk.get("exportbitmap") and disk.get("name") in incremental_disks:
                bitmaps[str(disk.get("name"))] = f"qemu:dirty-bitmap:{disk.get('exportbitmap')}"
    return BackupStarted("application-consistent" if frozen else "crash-consistent", bitmaps)


def backup_end(conn: libvirt.virConnect, vm: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(vm)
        stats = dom.jobStats(0)
        # Only a backup job is ours to end: never abort a migration or a save.
        if stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP:
            dom.abortJob()


def pool(conn: libvirt.virConnect, name: str) -> PoolInfo:
    try:
        p = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        names = ", ".join(sorted(x.name() for x in conn.listAllStoragePools(0))) or "none"
        return PoolInfo(None, 0, f"no storage pool {name!r} on the destination (pools: {names})")
    if not p.isActive():
        return PoolInfo(None, 0, f"pool {name!r} is not active (virsh pool-start {name})")
    p.refresh(0)
    root = ET.fromstring(p.XMLDesc(0))
    kind, path = root.get("type"), (root.findtext("target/path") or "").strip()
    if kind not in ("dir", "fs", "netfs") or not path:
        return PoolInfo(
            None, 0, f"pool {name!r} is of type {kind!r}: only directory pools are supported"
        )
    return PoolInfo(path, int(p.info()[3]))


def limits(conn: libvirt.virConnect) -> HostLimits:
    info = conn.getInfo()
    return HostLimits(int(info[1]), int(info[2]), conn.getCapabilities())
