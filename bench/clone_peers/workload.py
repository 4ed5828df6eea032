"""The clone benchmark's workload on alpha (VM ``bench-big``: a raw and a qcow2 disk) and the
cleaning of beta between runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.disk_data import DataSource, spread, write_extents
from bench.common.lab import DST, IMAGES, SRC, BenchLab
from bench.common.units import GiB, MiB

VM = "bench-big"
COPY = "bench-copy"


@dataclass(frozen=True)
class Workload:
    """Sizes of the two disks of the bench VM."""

    raw_size: int = 20 * GiB
    raw_data: int = 2 * GiB
    raw_extents: int = 8
    qcow_size: int = 4 * GiB
    qcow_data: int = 256 * MiB
    qcow_extents: int = 4

    @property
    def raw_name(self) -> str:
        """Basename of the raw disk (vda)."""
        return f"{VM}-vda.img"

    @property
    def qcow_name(self) -> str:
        """Basename of the qcow2 disk (vdb)."""
        return f"{VM}-vdb.qcow2"

    @property
    def names(self) -> tuple[str, str]:
        """Both basenames, in the order they are copied."""
        return self.raw_name, self.qcow_name


def domain_xml(workload: Workload, domain_type: str) -> str:
    """The bench VM: two virtio disks (raw vda, qcow2 vdb), no NIC, never started."""
    return (
        f"<domain type='{domain_type}'><name>{VM}</name>"
        "<memory unit='MiB'>256</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{IMAGES}/{workload.raw_name}'/><target dev='vda' bus='virtio'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{IMAGES}/{workload.qcow_name}'/><target dev='vdb' bus='virtio'/></disk>"
        "</devices></domain>"
    )


def make_workload(lab: BenchLab, workload: Workload, tmp: Path) -> None:
    """Write both disks into alpha's images folder and define the VM (reused if present)."""
    images = lab.images(SRC)
    raw, qcow = images / workload.raw_name, images / workload.qcow_name
    defined = VM in lab.run(SRC, "virsh", "list", "--all", "--name").split()
    if (
        defined
        and raw.exists()
        and qcow.exists()
        and raw.stat().st_size == workload.raw_size
        and abs(raw.stat().st_blocks * 512 - workload.raw_data) < 64 * MiB
    ):
        print(f"workload: reusing {VM} on {SRC}", flush=True)
        return
    t0 = time.perf_counter()
    source = DataSource()
    write_extents(
        raw,
        workload.raw_size,
        spread(workload.raw_size, workload.raw_data, workload.raw_extents),
        source,
    )
    scratch = tmp / "vdb.raw"
    write_extents(
        scratch,
        workload.qcow_size,
        spread(workload.qcow_size, workload.qcow_data, workload.qcow_extents),
        source,
    )
    with contextlib.suppress(FileNotFoundError):
        qcow.unlink()
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(scratch), str(qcow)], check=True
    )
    scratch.unlink()
    os.sync()
    if defined:
        lab.run(SRC, "virsh", "undefine", VM)
    lab.run(SRC, "virsh", "define", "/dev/stdin", input=domain_xml(workload, lab.domain_type()))
    lab.run(SRC, "virsh", "pool-refresh", "default")
    print(f"workload: {VM} written and defined on {SRC} in {time.perf_counter() - t0:.0f} s")


def remove_workload(lab: BenchLab, workload: Workload) -> None:
    """Undefine the bench VM on alpha and delete its files."""
    if VM in lab.run(SRC, "virsh", "list", "--all", "--name", check=False).split():
        lab.run(SRC, "virsh", "undefine", VM, check=False)
    for name in workload.names:
        with contextlib.suppress(FileNotFoundError):
            (lab.images(SRC) / name).unlink()
    lab.run(SRC, "virsh", "pool-refresh", "default", check=False)


def dest_names(workload: Workload) -> list[str]:
    """Every name a tool may leave on beta (the peers keep the source's names)."""
    return [*workload.names, f"{COPY}-vda.img", f"{COPY}-vdb.qcow2"]


def clean_destination(lab: BenchLab, workload: Workload) -> None:
    """Undefine the kvm-clone copy on beta and delete every file any tool wrote there."""
    if COPY in lab.run(DST, "virsh", "list", "--all", "--name", check=False).split():
        lab.run(DST, "virsh", "undefine", COPY, check=False)
    images = lab.images(DST)
    for name in dest_names(workload):
        with contextlib.suppress(FileNotFoundError):
            (images / name).unlink()
    for pattern in (f".kvmclone-*{COPY}-*", f".{VM}-*"):  # kvm-clone staging, rsync temp files
        for stale in images.glob(pattern):
            stale.unlink()
    lab.run(DST, "virsh", "pool-refresh", "default", check=False)
