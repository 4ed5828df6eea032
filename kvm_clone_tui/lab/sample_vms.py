"""Sample VMs defined on the lab's first host: the shapes of VM that operators really have.

- ``web01``: one qcow2 disk with data at several offsets and a NIC;
- ``db01``: a raw sparse disk and a qcow2 disk whose files share the basename ``disk.img``;
- ``installer``: a disk plus a CD-ROM ISO;
- ``linked01``: a qcow2 overlay on a backing image (a backing chain);
- ``uefi01``: UEFI firmware with its own NVRAM file (when OVMF is installed);
- ``app.v2``: a name with a dot;
- ``writer``: boots a minimal Linux whose init keeps writing to its disk, left running.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from kvm_clone_tui.lab.guest import GuestAssets
from kvm_clone_tui.lab.host import LabHostRuntime
from kvm_clone_tui.lab.processes import run_in_namespace

IMAGES = "/var/lib/libvirt/images"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
MiB = 1024 * 1024
GiB = 1024 * MiB

WRITER_VM = "writer"
WRITER_CONSOLE_LOG = "/var/log/libvirt/qemu/writer-console.log"


@dataclass(frozen=True)
class Extent:
    """Data to place in a sample disk: ``length`` bytes at ``offset``, random or log text."""

    offset: int
    length: int
    kind: str = "random"


def _fill(path: Path, size: int, extents: list[Extent], seed: int) -> None:
    """Create a sparse raw file of ``size`` bytes with data only at ``extents``."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        for ext in extents:
            f.seek(ext.offset)
            if ext.kind == "random":
                f.write(rng.randbytes(ext.length))
            else:
                line_no = 0
                written = 0
                while written < ext.length:
                    line_no += 1
                    line = (
                        f"2026-11-27T04:{line_no // 60 % 60:02d}:{line_no % 60:02d}Z web01 "
                        f"nginx[{1000 + line_no % 97}]: GET /api/v1/items/{rng.randrange(10**6)} "
                        f"200 {rng.randrange(100, 9000)}\n"
                    ).encode()
                    chunk = line[: ext.length - written]
                    f.write(chunk)
                    written += len(chunk)


def make_disk(dest: Path, fmt: str, size: int, extents: list[Extent], seed: int) -> None:
    """Create a ``raw`` or ``qcow2`` disk at ``dest`` holding ``extents`` of data."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "raw":
        _fill(dest, size, extents, seed)
        return
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        raw = Path(tmp) / "src.raw"
        _fill(raw, size, extents, seed)
        subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, str(raw), str(dest)],
            check=True,
        )


def _disk_xml(path: str, fmt: str, target: str, bus: str = "virtio") -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)}/>"
        f"<source file={quoteattr(path)}/><target dev={quoteattr(target)} bus={quoteattr(bus)}/>"
        "</disk>"
    )


def _nic_xml(mac: str) -> str:
    return (
        f"<interface type='user'><mac address={quoteattr(mac)}/><model type='virtio'/></interface>"
    )


def domain_xml(
    name: str,
    domain_type: str,
    devices: list[str],
    *,
    memory_mib: int = 256,
    vcpus: int = 1,
    os_xml: str | None = None,
) -> str:
    """A small, complete domain definition (a pty serial console unless devices bring one)."""
    if not any(d.startswith("<serial") for d in devices):
        devices = [*devices, "<serial type='pty'/>"]
    os_part = os_xml or "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
    return (
        f"<domain type={quoteattr(domain_type)}><name>{escape(name)}</name>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>{vcpus}</vcpu>{os_part}"
        "<features><acpi/></features><on_poweroff>destroy</on_poweroff>"
        "<on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
        f"<devices>{''.join(devices)}</devices></domain>"
    )


class SampleVMs:
    """Creates the sample VMs on one lab host (idempotent: existing VMs are left alone)."""

    def __init__(self, host: LabHostRuntime, domain_type: str, guest: GuestAssets) -> None:
        self.host = host
        self.domain_type = domain_type
        self.guest = guest

    def _local(self, inside: str) -> Path:
        return self.host.layout.host_path(self.host.host.name, inside)

    def _define(self, name: str, xml: str) -> None:
        xml_file = self.host.dir / f"define-{os.getpid()}.xml"
        xml_file.write_text(xml)
        try:
            self.host.virsh("define", str(xml_file))
        finally:
            xml_file.unlink(missing_ok=True)

    def ensure_all(self) -> list[str]:
        """Define every missing sample VM and start ``writer``; return the names created."""
        existing = set(self.host.virsh("list", "--all", "--name").split())
        builders = {
            "web01": self._web01,
            "db01": self._db01,
            "installer": self._installer,
            "linked01": self._linked01,
            "app.v2": self._app_v2,
            WRITER_VM: self._writer,
        }
        if OVMF_CODE.exists() and OVMF_VARS.exists():
            builders["uefi01"] = self._uefi01
        created = []
        for name, build in builders.items():
            if name not in existing:
                self._define(name, build())
                created.append(name)
        self.host.virsh("pool-refresh", "default", check=False)
        if self.host.virsh("domstate", WRITER_VM).strip() != "running":
            self.host.virsh("start", WRITER_VM)
        return created

    def _web01(self) -> str:
        disk = f"{IMAGES}/web01.qcow2"
        make_disk(
            self._local(disk),
            "qcow2",
            8 * GiB,
            [
                Extent(0, 4 * MiB),
                Extent(1 * GiB, 2 * MiB, "log"),
                Extent(5 * GiB, MiB),
                Extent(8 * GiB - MiB, MiB),
            ],
            seed=1,
        )
        return domain_xml(
            "web01",
            self.domain_type,
            [_disk_xml(disk, "qcow2", "vda"), _nic_xml("52:54:00:6c:ab:01")],
            memory_mib=512,
            vcpus=2,
        )

    def _db01(self) -> str:
        sys_disk, data_disk = f"{IMAGES}/db01/sys/disk.img", f"{IMAGES}/db01/data/disk.img"
        make_disk(
            self._local(sys_disk),
            "raw",
            4 * GiB,
            [Extent(0, 8 * MiB), Extent(2 * GiB, 4 * MiB, "log")],
            seed=2,
        )
        make_disk(
            self._local(data_disk),
            "qcow2",
            2 * GiB,
            [Extent(0, MiB), Extent(1 * GiB, 3 * MiB)],
            seed=3,
        )
        return domain_xml(
            "db01",
            self.domain_type,
            [
                _disk_xml(sys_disk, "raw", "vda"),
                _disk_xml(data_disk, "qcow2", "vdb"),
                _nic_xml("52:54:00:6c:ab:02"),
            ],
            memory_mib=1024,
            vcpus=2,
        )

    def _installer(self) -> str:
        disk, iso = f"{IMAGES}/installer.qcow2", f"{IMAGES}/iso/tools.iso"
        make_disk(self._local(disk), "qcow2", 1 * GiB, [], seed=4)
        iso_local = self._local(iso)
        iso_local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as content:
            Path(content, "README.TXT").write_text("kvm-clone lab tools ISO\n")
            subprocess.run(
                ["genisoimage", "-quiet", "-V", "LABTOOLS", "-o", str(iso_local), content],
                check=True,
            )
        cdrom = (
            f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(iso)}/><target dev='sda' bus='sata'/><readonly/>"
            "</disk>"
        )
        return domain_xml(
            "installer",
            self.domain_type,
            [_disk_xml(disk, "qcow2", "vda"), cdrom],
            os_xml="<os><type arch='x86_64' machine='q35'>hvm</type>"
            "<boot dev='cdrom'/><boot dev='hd'/></os>",
        )

    def _linked01(self) -> str:
        base, overlay = f"{IMAGES}/base/bookworm-base.qcow2", f"{IMAGES}/linked01.qcow2"
        if not self._local(base).exists():
            make_disk(
                self._local(base),
                "qcow2",
                2 * GiB,
                [Extent(0, 2 * MiB), Extent(512 * MiB, MiB, "log")],
                seed=5,
            )
        # The backing path is absolute as seen on the host, so create the overlay inside it.
        run_in_namespace(
            self.host.anchor_pid(),
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", overlay],
        )
        return domain_xml("linked01", self.domain_type, [_disk_xml(overlay, "qcow2", "vda")])

    def _uefi01(self) -> str:
        disk, nvram = f"{IMAGES}/uefi01.qcow2", "/var/lib/libvirt/qemu/nvram/uefi01_VARS.fd"
        make_disk(self._local(disk), "qcow2", 1 * GiB, [Extent(0, MiB)], seed=7)
        nvram_local = self._local(nvram)
        nvram_local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OVMF_VARS, nvram_local)
        os_xml = (
            "<os><type arch='x86_64' machine='q35'>hvm</type>"
            f"<loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>"
            f"<nvram template={quoteattr(str(OVMF_VARS))}>{nvram}</nvram><boot dev='hd'/></os>"
        )
        return domain_xml(
            "uefi01", self.domain_type, [_disk_xml(disk, "qcow2", "vda")], os_xml=os_xml
        )

    def _app_v2(self) -> str:
        disk = f"{IMAGES}/app.v2.qcow2"
        make_disk(self._local(disk), "qcow2", 512 * MiB, [Extent(64 * MiB, MiB)], seed=8)
        return domain_xml("app.v2", self.domain_type, [_disk_xml(disk, "qcow2", "vda")])

    def _writer(self) -> str:
        disk = f"{IMAGES}/writer.raw"
        make_disk(self._local(disk), "raw", 64 * MiB, [], seed=9)
        boot = "/var/lib/libvirt/boot"
        kernel, initrd = f"{boot}/writer-vmlinuz", f"{boot}/writer-initrd.gz"
        for src, inside in ((self.guest.kernel, kernel), (self.guest.initrd, initrd)):
            dest = self._local(inside)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        os_xml = (
            "<os><type arch='x86_64' machine='pc'>hvm</type>"
            f"<kernel>{kernel}</kernel><initrd>{initrd}</initrd>"
            f"<cmdline>{escape(self.guest.cmdline)}</cmdline></os>"
        )
        serial = (
            f"<serial type='file'><source path={quoteattr(WRITER_CONSOLE_LOG)}/>"
            "<target port='0'/></serial>"
        )
        return domain_xml(
            WRITER_VM, self.domain_type, [_disk_xml(disk, "raw", "vda"), serial], os_xml=os_xml
        )
