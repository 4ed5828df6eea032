"""Turning a source VM's inactive domain XML into the definition of its clone (pure: no I/O).

:func:`rewrite_domain` takes the source's ``virsh dumpxml --inactive`` and what the planner
decided (new name and UUID, where each disk goes, the new NVRAM file, which CD-ROM images exist
on the destination) and returns the XML to define on the destination, the warnings to show and
the MAC addresses it changed. Everything it cannot clone faithfully (block, network, volume and
LUN disks, a TPM whose state libvirt keeps elsewhere than its own swtpm directory) is refused
with a :class:`RewriteError` that names the device. An emulated TPM is kept as it is: libvirt
finds its state by the domain's UUID, and the planner copies that state under the new UUID
(``engine/tpm_state.py``).

The input is untrusted: documents with a DOCTYPE (and so any entity declaration) are refused
before they are parsed into a tree. Unknown elements are kept, and namespace prefixes keep the
names they had in the source (``qemu:``, ``libosinfo:``...); the output is serialised by this
module so that no process-wide ElementTree state is touched (parsing and serialising are in
``engine/xml_roundtrip.py``).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import secrets
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kvm_clone_tui.api.validation import (
    ValidationError,
    validate_remote_path,
    validate_vm_name,
)
from kvm_clone_tui.engine.xml_roundtrip import (
    KVMCLONE_NS,
    RewriteError,
    insert_after,
    insert_child,
    parse_domain,
    remove_child,
    serialize_domain,
)

MAC_PREFIX = "52:54:00"

_QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_CLONE_TAG = f"{{{KVMCLONE_NS}}}clone"
# Directories where libvirt creates per-domain channel sockets itself (older libvirt wrote the
# generated path into the persistent definition; dropping it makes libvirt generate a new one).
_MANAGED_CHANNEL_DIRS = (
    "/var/lib/libvirt/qemu/channel/",
    "/run/libvirt/qemu/channel/",
    "/var/run/libvirt/qemu/channel/",
)
_CHARDEV_TAGS = ("serial", "console", "parallel", "channel")
_FORMAT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
# Characters XML 1.0 cannot carry at all, not even as character references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_WILDCARD_LISTEN = frozenset({"0.0.0.0", "::", "127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class DiskMapping:
    """Where the planner puts one copied disk on the destination."""

    target: str  # the disk's <target dev>, e.g. "vda"
    new_path: str  # absolute path in the destination pool
    new_format: str  # "raw" | "qcow2" | ...


def _empty_metadata() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RewriteOptions:
    """What the planner decided for the clone's definition."""

    new_name: str
    new_uuid: str
    disks: Mapping[str, DiskMapping]  # by target dev
    preserve_mac: bool = False
    # With a seed, new MACs are derived from it (sha256), so re-runs produce the same ones.
    mac_seed: str | None = None
    # CD-ROM/floppy source paths that exist on the destination; other media are ejected.
    cdrom_paths_present: frozenset[str] = frozenset()
    # The clone's NVRAM file on the destination; required when the source has <os><nvram>.
    nvram_path: str | None = None
    # Written as the attributes of <metadata><kvmclone:clone .../></metadata>.
    metadata: Mapping[str, str] = field(default_factory=_empty_metadata)


@dataclass(frozen=True)
class RewriteResult:
    """The destination's domain XML, what to tell the operator, and the MACs that changed."""

    xml: str
    warnings: tuple[str, ...]
    macs: tuple[tuple[str | None, str], ...]  # (old MAC, new MAC) per <interface>, in order


def _target_dev(disk: ET.Element) -> str | None:
    target = disk.find("target")
    return target.get("dev") if target is not None else None


def _same_uuid(first: str, second: str) -> bool:
    try:
        return uuid_module.UUID(first) == uuid_module.UUID(second)
    except ValueError:
        return first.lower() == second.lower()


def _chardev_label(element: ET.Element) -> str:
    target = element.find("target")
    if target is not None:
        for key in ("port", "name"):
            if target.get(key):
                return f"{element.tag} {target.get(key)}"
    return element.tag


# --- options -------------------------------------------------------------------------------


def _check_options(options: RewriteOptions) -> str:
    """Validate what the caller decided; returns the canonical new UUID."""
    try:
        validate_vm_name(options.new_name)
    except ValidationError as exc:
        raise RewriteError(str(exc)) from None
    texts = [options.new_name, options.nvram_path or ""]
    texts += [m.new_path for m in options.disks.values()]
    for text in texts:
        if isinstance(text, str) and _NOT_XML.search(text):
            raise RewriteError(f"{text!r} holds a character XML cannot carry")
    try:
        new_uuid = str(uuid_module.UUID(str(options.new_uuid)))
    except ValueError:
        raise RewriteError(f"bad new UUID {options.new_uuid!r}") from None
    paths: dict[str, str] = {}
    for key, mapping in options.disks.items():
        if mapping.target != key:
            raise RewriteError(f"disk mapping under {key!r} is for target {mapping.target!r}")
        try:
            validate_remote_path(mapping.new_path)
        except ValidationError as exc:
            raise RewriteError(f"disk {key}: {exc}") from None
        if not _FORMAT.fullmatch(mapping.new_format):
            raise RewriteError(f"disk {key}: bad image format {mapping.new_format!r}")
        if mapping.new_path in paths:
            raise RewriteError(
                f"disks {paths[mapping.new_path]} and {key} are both mapped to {mapping.new_path}"
            )
        paths[mapping.new_path] = key
    if options.nvram_path is not None:
        try:
            validate_remote_path(options.nvram_path)
        except ValidationError as exc:
            raise RewriteError(f"NVRAM: {exc}") from None
        if options.nvram_path in paths:
            raise RewriteError(
                f"the NVRAM file and disk {paths[options.nvram_path]} are both mapped to "
                f"{options.nvram_path}"
            )
    for key, value in options.metadata.items():
        if not isinstance(key, str) or not _NCNAME.fullmatch(key):
            raise RewriteError(f"bad metadata key {key!r}: must be an XML attribute name")
        if not isinstance(value, str) or _NOT_XML.search(value):
            raise RewriteError(f"bad metadata value for {key!r}: {value!r}")
    return new_uuid


# --- the rewrite ---------------------------------------------------------------------------


class _Rewriter:
    """One rewrite: the tree is changed in place, warnings and MAC pairs collected."""

    def __init__(self, root: ET.Element, options: RewriteOptions, new_uuid: str) -> None:
        self.root = root
        self.options = options
        self.new_uuid = new_uuid
        self.warnings: list[str] = []
        self.macs: list[tuple[str | None, str]] = []
        name = (root.findtext("name") or "").strip()
        if not name:
            raise RewriteError("domain XML has no <name>")
        self.old_name = name
        self.devices = root.find("devices")
        self.copied: set[str] = set()  # targets of the disks given their new paths

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def run(self) -> None:
        self.identity()
        self.security_labels()
        self.firmware()
        self.disks()
        self.interfaces()
        self.tpm()
        self.chardevs()
        self.graphics()
        self.host_resources()
        self.metadata()

    # identity: name, uuid, id, genid, sysinfo uuid

    def identity(self) -> None:
        root = self.root
        old_uuid = (root.findtext("uuid") or "").strip()
        if old_uuid and _same_uuid(old_uuid, self.new_uuid):
            raise RewriteError(f"the new UUID {self.new_uuid} is the source VM's own UUID")
        name = root.find("name")
        assert name is not None  # checked in __init__
        name.text = self.options.new_name
        uuid = root.find("uuid")
        if uuid is None:
            uuid = ET.Element("uuid")
            insert_after(root, ("name",), uuid)
        uuid.text = self.new_uuid
        root.attrib.pop("id", None)  # a running domain's id (<domain id='5'>)
        for element in root.findall("id"):
            remove_child(root, element)
        genid = root.find("genid")
        if genid is not None:  # an empty <genid/> makes libvirt generate a new generation ID
            genid.text = None
        # libvirt refuses a definition whose SMBIOS system UUID differs from <uuid>.
        for entry in root.findall("sysinfo/system/entry"):
            if entry.get("name") == "uuid":
                entry.text = self.new_uuid

    def security_labels(self) -> None:
        for seclabel in self.root.findall("seclabel"):
            if seclabel.get("type") == "dynamic":
                for child in list(seclabel):
                    if child.tag in ("label", "imagelabel"):
                        remove_child(seclabel, child)

    def firmware(self) -> None:
        os_element = self.root.find("os")
        if os_element is None:
            return
        nvram = os_element.find("nvram")
        if nvram is not None:
            if self.options.nvram_path is None:
                raise RewriteError(
                    "the VM has UEFI variables (<os><nvram>) but no NVRAM path was given for the "
                    "clone"
                )
            if nvram.get("type") not in (None, "file"):
                raise RewriteError(
                    f"<nvram type={nvram.get('type')!r}> is not supported: only an NVRAM file "
                    "can be cloned"
                )
            source = nvram.find("source")
            if source is not None:  # <nvram type='file'><source file=.../></nvram>
                source.attrib.clear()
                source.set("file", self.options.nvram_path)
            else:
                nvram.text = self.options.nvram_path
        for tag in ("kernel", "initrd", "dtb"):
            path = (os_element.findtext(tag) or "").strip()
            if path:
                self.warn(f"os {tag} {path} is not copied; it must exist on the destination")

    # disks

    def disks(self) -> None:
        seen: set[str] = set()
        elements = self.devices.findall("disk") if self.devices is not None else []
        for disk in elements:
            dev = _target_dev(disk)
            if not dev:
                raise RewriteError("a <disk> has no <target dev=...>")
            if dev in seen:
                raise RewriteError(f"two disks have the target {dev}")
            seen.add(dev)
            device = disk.get("device", "disk")
            if device == "lun":
                raise RewriteError(f"disk {dev} is a LUN passthrough: not supported")
            if device in ("cdrom", "floppy"):
                self.removable(disk, dev, device)
            elif device == "disk":
                self.disk(disk, dev)
            else:
                raise RewriteError(f"disk {dev} has the unknown device type {device!r}")
        unused = sorted(key for key in self.options.disks if key not in self.copied)
        if unused:
            raise RewriteError(
                f"disk mapping for {', '.join(unused)}: the domain has no such disk to copy"
            )

    def disk(self, disk: ET.Element, dev: str) -> None:
        source_type = disk.get("type", "file")
        if source_type == "block":
            raise RewriteError(
                f"disk {dev} is a block device: block devices are not supported for cloning"
            )
        if source_type == "network":
            raise RewriteError(
                f"disk {dev} is a network disk: network disks are not supported for cloning"
            )
        if source_type == "volume":
            source = disk.find("source")
            where = ""
            if source is not None:
                where = f" ({source.get('pool')}/{source.get('volume')})"
            raise RewriteError(
                f"disk {dev} is a storage pool volume{where}: not supported; define it with a "
                "file path (<disk type='file'> with <source file=...>)"
            )
        if source_type != "file":
            raise RewriteError(
                f"disk {dev} has the source type {source_type!r}: only file-backed disks can be "
                "cloned"
            )
        source = disk.find("source")
        if source is None or not source.get("file"):
            raise RewriteError(f"disk {dev} has no source file: nothing to copy")
        mapping = self.options.disks.get(dev)
        if mapping is None:
            raise RewriteError(f"disk {dev} has no destination mapping")
        for child in source:
            if child.tag in ("dataStore", "slices"):
                raise RewriteError(f"disk {dev} uses <{child.tag}>: not supported for cloning")
        if disk.find("encryption") is not None or source.find("encryption") is not None:
            self.warn(
                f"disk {dev} is encrypted with a libvirt secret; define the same secret on the "
                "destination"
            )
        startup_policy = source.get("startupPolicy")
        source.attrib.clear()
        source.set("file", mapping.new_path)
        if startup_policy is not None:
            source.set("startupPolicy", startup_policy)
        disk.set("type", "file")
        driver = disk.find("driver")
        if driver is None:
            driver = ET.Element("driver", {"name": "qemu"})
            insert_child(disk, 0, driver)
        driver.set("type", mapping.new_format)
        for tag in ("backingStore", "mirror"):
            for element in disk.findall(tag):
                remove_child(disk, element)
        self.copied.add(dev)

    def removable(self, disk: ET.Element, dev: str, device: str) -> None:
        source = disk.find("source")
        for element in disk.findall("backingStore"):
            remove_child(disk, element)
        if source is None:
            return  # empty drive: stays empty
        source_type = disk.get("type", "file")
        if source_type in ("file", "block"):
            path = source.get("file" if source_type == "file" else "dev")
            if not path:
                remove_child(disk, source)
                return
            if path in self.options.cdrom_paths_present:
                source.attrib.pop("index", None)
                return
            reason = f"{path} is not on the destination"
        elif source_type == "network":
            reason = f"the network image {source.get('protocol')}:{source.get('name')} is not kept"
        elif source_type == "volume":
            reason = f"the pool volume {source.get('pool')}/{source.get('volume')} is not kept"
        else:
            reason = f"its {source_type!r} source is not kept"
        remove_child(disk, source)
        for element in disk.findall("auth"):
            remove_child(disk, element)
        disk.set("type", "file")
        self.warn(f"{device} {dev}: {reason}; ejected")

    # network interfaces

    def interfaces(self) -> None:
        interfaces = self.devices.findall("interface") if self.devices is not None else []
        old: list[str | None] = []
        for interface in interfaces:
            mac = interface.find("mac")
            address = mac.get("address") if mac is not None else None
            old.append(address.strip() if address else None)
        taken = {a.lower() for a in old if a}
        for index, (interface, old_mac) in enumerate(zip(interfaces, old, strict=True)):
            if self.options.preserve_mac and old_mac:
                self.macs.append((old_mac, old_mac))
                continue
            new_mac = self._new_mac(index, taken)
            mac = interface.find("mac")
            if mac is None:
                mac = ET.Element("mac")
                insert_child(interface, 0, mac)
            mac.set("address", new_mac)
            self.macs.append((old_mac, new_mac))

    def _new_mac(self, index: int, taken: set[str]) -> str:
        """A MAC in 52:54:00:xx:xx:xx for interface ``index``, not in ``taken`` (then added).

        With a seed it is sha256(seed, index, attempt), so a re-run gives the same MACs.
        """
        seed = self.options.mac_seed
        attempt = 0
        while True:
            if seed is None:
                tail = secrets.token_bytes(3)
            else:
                tail = hashlib.sha256(f"{seed}\0{index}\0{attempt}".encode()).digest()[:3]
            mac = MAC_PREFIX + "".join(f":{byte:02x}" for byte in tail)
            if mac not in taken:
                taken.add(mac)
                return mac
            attempt += 1

    # devices that hold host state or host paths

    def tpm(self) -> None:
        for tpm in self.devices.findall("tpm") if self.devices is not None else []:
            backend = tpm.find("backend")
            backend_type = backend.get("type") if backend is not None else None
            if backend_type == "emulator":
                assert backend is not None
                # Newer libvirt can keep the state elsewhere (<source type='dir|file'>); only
                # libvirt's own per-UUID directory is copied (engine/tpm_state.py).
                if backend.find("source") is not None:
                    raise RewriteError(
                        "the TPM keeps its state in a place of its own (<backend><source>): "
                        "not supported; remove the <source> to use libvirt's default location"
                    )
            if backend_type == "passthrough":
                self.warn("tpm: the host's TPM is passed through; it must exist on the destination")

    def chardevs(self) -> None:
        if self.devices is None:
            return
        for element in self.devices:
            if element.tag not in _CHARDEV_TAGS:
                continue
            label = _chardev_label(element)
            source = element.find("source")
            kind = element.get("type")
            if source is not None and kind in ("file", "unix") and source.get("path"):
                path = source.get("path", "")
                if kind == "unix" and path.startswith(_MANAGED_CHANNEL_DIRS):
                    del source.attrib["path"]  # libvirt generates the socket path itself
                else:
                    self.rename_host_path(source, "path", label)
            log = element.find("log")
            if log is not None and log.get("file"):
                self.rename_host_path(log, "file", f"{label} log")

    def rename_host_path(self, element: ET.Element, attribute: str, label: str) -> None:
        """Put the new name in a host file's basename in place of the old one, else warn."""
        path = element.get(attribute, "")
        directory, base = posixpath.split(path)
        if self.old_name in base and self.old_name != self.options.new_name:
            element.set(
                attribute,
                posixpath.join(directory, base.replace(self.old_name, self.options.new_name, 1)),
            )
        elif self.old_name != self.options.new_name:
            self.warn(
                f"{label}: {path} does not contain the VM name; kept as it is, it may collide "
                "with another VM's"
            )

    def graphics(self) -> None:
        for graphics in self.devices.findall("graphics") if self.devices is not None else []:
            kind = graphics.get("type", "graphics")
            if graphics.get("autoport") == "no":
                fixed = [
                    f"{key} {graphics.get(key)}"
                    for key in ("port", "tlsPort", "websocket")
                    if graphics.get(key) not in (None, "-1", "0")
                ]
                if fixed:
                    self.warn(
                        f"graphics {kind}: fixed {', '.join(fixed)} kept (autoport='no'); "
                        "it may be taken on the destination"
                    )
            addresses = {graphics.get("listen")}
            addresses.update(listen.get("address") for listen in graphics.findall("listen"))
            for address in sorted(a for a in addresses if a and a not in _WILDCARD_LISTEN):
                self.warn(
                    f"graphics {kind}: listens on {address}, an address of the source host; "
                    "it must exist on the destination"
                )

    def host_resources(self) -> None:
        if self.devices is not None:
            for hostdev in self.devices.findall("hostdev"):
                self.warn(
                    f"hostdev {hostdev.get('type', '?')}: a host device is passed through; "
                    "it must exist on the destination"
                )
            for filesystem in self.devices.findall("filesystem"):
                source = filesystem.find("source")
                where = ""
                if source is not None:
                    where = source.get("dir") or source.get("file") or source.get("name") or ""
                self.warn(
                    f"filesystem {where or filesystem.get('type', '?')}: host directories are "
                    "not copied; it must exist on the destination"
                )
        for element in self.root:
            if isinstance(element.tag, str) and element.tag.startswith(f"{{{_QEMU_NS}}}"):
                local = element.tag.split("}", 1)[1]
                self.warn(
                    f"qemu:{local} passthrough is copied as it is; check it suits the destination"
                )

    # metadata

    def metadata(self) -> None:
        metadata = self.root.find("metadata")
        if metadata is not None:
            for element in metadata.findall(_CLONE_TAG):
                remove_child(metadata, element)
        if not self.options.metadata:
            return
        if metadata is None:
            metadata = ET.Element("metadata")
            insert_after(self.root, ("name", "uuid", "genid", "title", "description"), metadata)
        clone = ET.Element(_CLONE_TAG, dict(self.options.metadata))
        insert_child(metadata, len(metadata), clone)


def rewrite_domain(source_xml: str, options: RewriteOptions) -> RewriteResult:
    """Rewrite the source VM's inactive domain XML into the clone's definition.

    Raises :class:`RewriteError` for hostile or malformed XML, bad options and anything that
    cannot be cloned (see the module documentation); the message names the disk or element.
    """
    new_uuid = _check_options(options)
    parsed = parse_domain(source_xml)
    rewriter = _Rewriter(parsed.root, options, new_uuid)
    rewriter.run()
    xml = serialize_domain(parsed)
    return RewriteResult(xml=xml, warnings=tuple(rewriter.warnings), macs=tuple(rewriter.macs))


def read_clone_metadata(xml: str) -> dict[str, str]:
    """The attributes of the domain's ``<kvmclone:clone>`` metadata, ``{}`` if it has none.

    Raises :class:`RewriteError` for malformed XML or a document with a DOCTYPE.
    """
    root = parse_domain(xml).root
    clone = root.find(f"metadata/{_CLONE_TAG}")
    if clone is None:
        return {}
    return {key: value for key, value in clone.attrib.items() if not key.startswith("{")}


__all__ = [
    "KVMCLONE_NS",
    "DiskMapping",
    "RewriteError",
    "RewriteOptions",
    "RewriteResult",
    "read_clone_metadata",
    "rewrite_domain",
]
