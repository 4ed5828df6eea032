"""Boot assets for the minimal Linux test guest of the local lab.

The guest is Debian's cloud kernel plus a tiny busybox initramfs whose ``/init``
loads the virtio block modules and then keeps writing numbered 4 KiB records to
``/dev/vda`` between offsets 1 MiB and 32 MiB, so a clone can be checked for data.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
# Loaded in this order; any further modinfo ``depends=`` are pulled in first.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
)
APPLETS = ("sh", "mount", "insmod", "sleep", "dd", "echo", "printf", "mkdir")
READY_MARKER = "KVMCLONE-GUEST-READY"
WRITE_MARKER = "KVMCLONE-WRITE"
WROTE_MARKER = "KVMCLONE-WROTE"
RECORD_SIZE = 4096
SLOT_SIZE = 64 * 1024
SLOT_COUNT = 256
DATA_START = 1024 * 1024  # the last record ends below 1 MiB + 256 * 64 KiB < 32 MiB
CMDLINE = "console=ttyS0 panic=-1 quiet rdinit=/init"

# Record n goes to byte offset (n % 256) * 64 KiB + 1 MiB (seek is in 4 KiB blocks).
INIT_TEMPLATE = f"""#!/bin/sh
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in @MODULES@; do
  insmod /lib/modules/$m.ko || echo "KVMCLONE-INSMOD-FAILED $m"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || echo "KVMCLONE-NO-VDA"
echo {READY_MARKER}
n=0
while true; do
  n=$((n + 1))
  printf '{WRITE_MARKER} %d\\n' $n | dd of=/dev/vda bs={RECORD_SIZE} count=1 \\
    seek=$(( (n % {SLOT_COUNT}) * {SLOT_SIZE // RECORD_SIZE} + {DATA_START // RECORD_SIZE} )) \\
    conv=sync,notrunc,fsync 2>/dev/null || echo "KVMCLONE-WRITE-FAILED $n"
  if [ $n -eq 1 ] || [ $((n % 10)) -eq 0 ]; then echo "{WROTE_MARKER} $n"; fi
  sleep 0.5
done
"""


@dataclass(frozen=True)
class GuestAssets:
    """Kernel, initramfs and kernel command line for a direct-kernel boot."""

    kernel: Path
    initrd: Path
    cmdline: str


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    """Run ``cmd`` with a C locale; raise RuntimeError with its output on failure."""
    env = {**os.environ, "LC_ALL": "C"}
    try:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError(f"{cmd[0]} not found: {exc}") from exc
    if res.returncode != 0:
        output = (res.stderr or res.stdout).strip()
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {output}")
    return res.stdout


def _version_key(version: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", version)]


def _unpacked(root: Path, version: str) -> tuple[Path, Path] | None:
    """Return (vmlinuz, modules dir) if ``root`` holds a complete unpacked kernel."""
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    for mods in (root / "lib" / "modules" / version, root / "usr" / "lib" / "modules" / version):
        if (root / ".complete").is_file() and vmlinuz.is_file() and mods.is_dir():
            return vmlinuz, mods
    return None


def fetch_kernel(cache_dir: Path) -> tuple[Path, Path]:
    """Download and unpack Debian's cloud kernel; return (vmlinuz, lib/modules/<ver>).

    A kernel already unpacked in ``cache_dir`` is reused without calling apt.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = [d.name.removeprefix("kernel-") for d in cache_dir.glob("kernel-*")]
    for version in sorted(done, key=_version_key, reverse=True):
        if found := _unpacked(cache_dir / f"kernel-{version}", version):
            return found
    try:
        deps = _run(["apt-cache", "depends", META_PACKAGE])
    except RuntimeError as exc:
        raise RuntimeError(f"cannot resolve {META_PACKAGE} (run apt-get update?): {exc}") from exc
    match = re.search(r"Depends:\s*<?(linux-image-(\S+?-cloud-amd64))>?\s*$", deps, re.M)
    if not match:
        raise RuntimeError(f"no kernel in apt-cache depends {META_PACKAGE} (run apt-get update?)")
    package, version = match.groups()
    try:
        _run(["apt-get", "download", package], cwd=cache_dir)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot download {package} (run apt-get update?): {exc}") from exc
    debs = sorted(cache_dir.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        raise RuntimeError(f"apt-get download {package} left no .deb in {cache_dir}")
    target = cache_dir / f"kernel-{version}"
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".unpack-"))
    try:
        _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)])
        (tmp / ".complete").write_text(debs[-1].name + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    debs[-1].unlink()
    if not (found := _unpacked(target, version)):
        raise RuntimeError(f"{package} has no boot/vmlinuz-{version} or lib/modules/{version}")
    return found


def _read_module(path: Path) -> bytes:
    """Return the uncompressed bytes of a .ko, .ko.xz or .ko.gz file."""
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko"):
        return path.read_bytes()
    raise RuntimeError(f"unsupported module compression: {path} (only .ko, .ko.xz, .ko.gz)")


def _module_files(modules_dir: Path) -> dict[str, Path]:
    """Map every module name of the kernel to its file, via modules.dep or a tree scan."""
    dep = modules_dir / "modules.dep"
    if dep.is_file():
        rels = [line.split(":", 1)[0] for line in dep.read_text().splitlines() if ":" in line]
        paths = [modules_dir / rel for rel in rels]
    else:  # Debian .debs ship no modules.dep: depmod runs at install time.
        paths = list((modules_dir / "kernel").rglob("*.ko*"))
    return {re.sub(r"\.ko(\.\w+)?$", "", p.name).replace("-", "_"): p for p in paths}


def _load_modules(modules_dir: Path) -> dict[str, bytes]:
    """Return MODULES and their modinfo dependencies, uncompressed, in load order."""
    files = _module_files(modules_dir)
    ordered: dict[str, bytes] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in chain or name not in files:
            raise RuntimeError(f"module {name} missing under {modules_dir} or cyclic ({chain})")
        data = _read_module(files[name])
        deps = re.search(rb"(?:^|\0)depends=([^\0]*)", data)
        for dep in deps.group(1).decode().split(",") if deps else []:
            if dep:
                visit(dep, (*chain, name))
        ordered[name] = data

    for name in MODULES:
        visit(name, ())
    return ordered


def _check_static(busybox: Path) -> bytes:
    """Return busybox's bytes, refusing a dynamically linked binary."""
    data = busybox.read_bytes() if busybox.is_file() else b""
    if data[:5] != b"\x7fELF\x02":
        raise RuntimeError(f"{busybox} missing or not 64-bit ELF (apt-get install busybox-static)")
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    if 3 in types:  # PT_INTERP
        raise RuntimeError(f"{busybox} is dynamically linked (apt-get install busybox-static)")
    return data


def build_initramfs(cache_dir: Path, modules_dir: Path) -> Path:
    """Build (or reuse, keyed by input hash) the guest's gzip'd newc initramfs."""
    busybox = _check_static(BUSYBOX)
    modules = _load_modules(modules_dir)
    init_script = INIT_TEMPLATE.replace("@MODULES@", " ".join(modules))
    digest = hashlib.sha256(init_script.encode() + hashlib.sha256(busybox).digest())
    for name, data in modules.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    out = cache_dir / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".initramfs-") as tmp:
        root = Path(tmp) / "root"
        for sub in ("bin", "dev", "proc", "sys", "lib/modules"):
            (root / sub).mkdir(parents=True)
        (root / "bin" / "busybox").write_bytes(busybox)
        (root / "bin" / "busybox").chmod(0o755)
        for applet in APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        for name, data in modules.items():
            (root / "lib" / "modules" / f"{name}.ko").write_bytes(data)
        (root / "init").write_text(init_script)
        (root / "init").chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        cpio = ["cpio", "--null", "-o", "-H", "newc", "--owner=0:0", "--quiet"]
        listing = "\0".join(names).encode() + b"\0"
        res = subprocess.run(cpio, cwd=root, input=listing, capture_output=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"cpio failed: {res.stderr.decode(errors='replace').strip()}")
        part = Path(tmp) / out.name
        part.write_bytes(gzip.compress(res.stdout, compresslevel=6, mtime=0))
        part.replace(out)
    return out


def build_guest_assets(cache_dir: Path) -> GuestAssets:
    """Fetch the kernel and build the initramfs into ``cache_dir``."""
    kernel, modules_dir = fetch_kernel(cache_dir)
    initrd = build_initramfs(cache_dir, modules_dir)
    return GuestAssets(kernel=kernel, initrd=initrd, cmdline=CMDLINE)


def scan_disk_markers(disk: Path) -> dict[int, int]:
    """Return {byte offset: counter} of the guest's write records in a raw disk image."""
    found: dict[int, int] = {}
    with disk.open("rb") as f:
        for slot in range(SLOT_COUNT):
            f.seek(DATA_START + slot * SLOT_SIZE)
            match = re.match(WRITE_MARKER.encode() + rb" (\d+)\n", f.read(64))
            if match:
                found[DATA_START + slot * SLOT_SIZE] = int(match.group(1))
    return found


def probe_boot(
    assets: GuestAssets, workdir: Path, accel: str = "tcg", timeout: float = 60, min_writes: int = 1
) -> bool:
    """Boot the guest with ``-accel kvm|tcg``; True once ``min_writes`` records are on its disk.

    Disk and serial log stay in ``workdir/probe-<accel>.{raw,log}``. qemu's process
    group is always killed, so a guest that hangs (as nested KVM can) just times out.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    disk, log = workdir / f"probe-{accel}.raw", workdir / f"probe-{accel}.log"
    disk.unlink(missing_ok=True)
    with disk.open("wb") as f:
        f.truncate(64 * 1024 * 1024)
    cmd = ["qemu-system-x86_64", "-accel", accel, "-m", "256", "-nographic", "-no-reboot"]
    cmd += ["-kernel", str(assets.kernel), "-initrd", str(assets.initrd), "-append", assets.cmdline]
    cmd += ["-drive", f"file={disk},if=virtio,format=raw", "-nic", "none"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if len(scan_disk_markers(disk)) >= min_writes:
                return True
            time.sleep(0.25)
        return len(scan_disk_markers(disk)) >= min_writes
    finally:  # the probe's disk is throwaway: no need for a clean shutdown
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
