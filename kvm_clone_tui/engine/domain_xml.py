"""Reading libvirt domain XML into the inventory model, tolerant of what hosts really have.

Unexpected content never raises past this module for a well-formed document: unknown disk
types, missing sources or odd attributes become ``None`` values plus a warning on the VM, so one
strange domain does not hide a host's other VMs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from kvm_clone_tui.api.models import NIC, BackingFile, Disk, DiskDevice


class DomainXMLError(ValueError):
    """The document is not a usable domain definition."""


@dataclass
class ParsedDomain:
    """What the inventory takes from a domain's XML."""

    name: str
    uuid: str
    domain_type: str
    vcpus: int
    memory_kib: int
    disks: list[Disk] = field(default_factory=list)
    nics: list[NIC] = field(default_factory=list)
    nvram: str | None = None
    tpm: bool = False
    warnings: list[str] = field(default_factory=list)


_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def _memory_kib(element: ET.Element | None, warnings: list[str]) -> int:
    if element is None or not (element.text or "").strip():
        warnings.append("no <memory> element")
        return 0
    unit = element.get("unit", "KiB").lower()
    try:
        return int(element.text or "0") * _UNITS[unit] // 1024
    except (KeyError, ValueError):
        warnings.append(f"unreadable memory {element.text!r} {unit!r}")
        return 0


def _int(text: str | None, default: int) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        return default


def _source_path(disk: ET.Element, source_type: str) -> str | None:
    source = disk.find("source")
    if source is None:
        return None
    attr = {"file": "file", "block": "dev", "dir": "dir", "network": "name", "volume": "volume"}
    key = attr.get(source_type)
    return source.get(key) if key else None


def _backing_chain(disk: ET.Element) -> tuple[BackingFile, ...]:
    chain: list[BackingFile] = []
    node = disk.find("backingStore")
    while node is not None and node.find("source") is not None:
        source = node.find("source")
        assert source is not None
        path = source.get("file") or source.get("dev") or source.get("name")
        fmt = node.find("format")
        if path:
            chain.append(
                BackingFile(path=path, format=fmt.get("type") if fmt is not None else None)
            )
        node = node.find("backingStore")
    return tuple(chain)


def _disk(element: ET.Element, warnings: list[str]) -> Disk | None:
    target = element.find("target")
    dev = target.get("dev") if target is not None else None
    if not dev:
        warnings.append("a disk without <target dev=...> was ignored")
        return None
    device_name = element.get("device", "disk")
    try:
        device = DiskDevice(device_name)
    except ValueError:
        warnings.append(f"disk {dev}: unknown device type {device_name!r}, treated as disk")
        device = DiskDevice.DISK
    source_type = element.get("type", "file")
    driver = element.find("driver")
    return Disk(
        target=dev,
        device=device,
        source_type=source_type,
        path=_source_path(element, source_type),
        format=driver.get("type") if driver is not None else None,
        bus=target.get("bus") if target is not None else None,
        readonly=element.find("readonly") is not None,
        backing_chain=_backing_chain(element),
    )


def _nic(element: ET.Element) -> NIC:
    mac = element.find("mac")
    source = element.find("source")
    model = element.find("model")
    source_name = None
    if source is not None:
        source_name = source.get("network") or source.get("bridge") or source.get("dev")
    return NIC(
        mac=mac.get("address") if mac is not None else None,
        type=element.get("type", "unknown"),
        source=source_name,
        model=model.get("type") if model is not None else None,
    )


def parse_domain(xml: str) -> ParsedDomain:
    """Parse a domain definition; raises DomainXMLError only when it has no usable name."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXMLError(f"malformed domain XML: {exc}") from exc
    if root.tag != "domain":
        raise DomainXMLError(f"expected <domain>, got <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise DomainXMLError("domain XML has no <name>")
    warnings: list[str] = []
    parsed = ParsedDomain(
        name=name,
        uuid=(root.findtext("uuid") or "").strip(),
        domain_type=root.get("type", "unknown"),
        vcpus=_int(root.findtext("vcpu"), 1),
        memory_kib=_memory_kib(root.find("memory"), warnings),
        warnings=warnings,
    )
    devices = root.find("devices")
    if devices is not None:
        for element in devices.findall("disk"):
            disk = _disk(element, warnings)
            if disk is not None:
                parsed.disks.append(disk)
        parsed.nics = [_nic(e) for e in devices.findall("interface")]
        parsed.tpm = devices.find("tpm") is not None
    parsed.nvram = (root.findtext("os/nvram") or "").strip() or None
    return parsed
