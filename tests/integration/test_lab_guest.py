"""The lab's test guest really boots under TCG and writes its records to /dev/vda."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvm_clone_tui.lab.guest import (
    DATA_START,
    READY_MARKER,
    RECORD_SIZE,
    SLOT_COUNT,
    SLOT_SIZE,
    WRITE_MARKER,
    GuestAssets,
    build_guest_assets,
    build_initramfs,
    fetch_kernel,
    probe_boot,
    scan_disk_markers,
)
from kvm_clone_tui.lab.layout import default_cache_dir

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    return default_cache_dir()  # the lab's own cache: the kernel is fetched once per machine


@pytest.fixture(scope="module")
def assets(cache_dir: Path) -> GuestAssets:
    return build_guest_assets(cache_dir)


def test_assets_are_cached(cache_dir: Path, assets: GuestAssets) -> None:
    kernel, modules_dir = fetch_kernel(cache_dir)
    assert kernel == assets.kernel
    mtime = assets.initrd.stat().st_mtime_ns
    assert build_initramfs(cache_dir, modules_dir) == assets.initrd
    assert assets.initrd.stat().st_mtime_ns == mtime


def test_tcg_boot_writes_records_to_disk(assets: GuestAssets, tmp_path: Path) -> None:
    booted = probe_boot(assets, tmp_path, accel="tcg", timeout=180, min_writes=4)
    log = (tmp_path / "probe-tcg.log").read_text(errors="replace")
    assert booted, f"guest wrote too few records; serial log tail:\n{log[-3000:]}"
    assert READY_MARKER in log

    disk = (tmp_path / "probe-tcg.raw").read_bytes()
    assert len(disk) == 64 * MiB
    markers = scan_disk_markers(tmp_path / "probe-tcg.raw")
    assert len(markers) >= 4
    assert sorted(markers.values())[:4] == [1, 2, 3, 4]
    rest = bytearray(disk)
    for offset, counter in markers.items():
        assert offset == DATA_START + (counter % SLOT_COUNT) * SLOT_SIZE
        record = disk[offset : offset + RECORD_SIZE]
        line = f"{WRITE_MARKER} {counter}\n".encode()
        assert record == line.ljust(RECORD_SIZE, b"\0")
        rest[offset : offset + RECORD_SIZE] = bytes(RECORD_SIZE)
    # Nothing else was written: not the first MiB, not past 32 MiB, not between records.
    size, stray = len(rest), len(rest) - len(rest.lstrip(bytes(1)))
    assert stray == size, f"unexpected data at byte offset {stray} of the guest's disk"
