"""Helpers for TUI tests that really clone on the lab: unique names, cleanup, a small pool.

The lab is shared with other tests running at the same time: everything here touches only
what carries this test's own names or job ids.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from kvm_clone_tui.lab.host import LabHostRuntime

IMAGES = "/var/lib/libvirt/images"


def unique_name(what: str) -> str:
    """``tui-<what>-<6 hex>``: a VM name no other test uses."""
    return f"tui-{what}-{uuid.uuid4().hex[:6]}"


def images(runtime: LabHostRuntime) -> Path:
    """The host's default pool, as this machine sees it."""
    return runtime.layout.host_path(runtime.host.name, IMAGES)


def job_files(runtime: LabHostRuntime, job_id: str) -> list[str]:
    """Files a job staged (or set aside) in the host's default pool."""
    return sorted(p.name for p in images(runtime).iterdir() if f"-{job_id}-" in p.name)


def domains(runtime: LabHostRuntime) -> set[str]:
    """Every VM defined on a lab host."""
    return {n for n in runtime.virsh("list", "--all", "--name").splitlines() if n.strip()}


def remove_clone(runtime: LabHostRuntime, name: str, job_ids: tuple[str, ...] = ()) -> None:
    """Undefine VM ``name`` and delete its files and its jobs' files from the default pool."""
    runtime.virsh("destroy", "--domain", name, check=False)
    runtime.virsh("undefine", "--domain", name, "--nvram", "--checkpoints-metadata", check=False)
    for path in images(runtime).iterdir():
        mine = path.name.startswith((f"{name}-", f".kvmclone-index-{name}-"))
        if mine or any(f"-{j}-" in path.name for j in job_ids):
            path.unlink(missing_ok=True)


def inside(runtime: LabHostRuntime, *command: str, check: bool = True) -> str:
    """Run ``command`` in the host's mount namespace (where its extra mounts are)."""
    done = subprocess.run(
        runtime.inside_argv(*command),
        capture_output=True,
        text=True,
        check=check,
    )
    return done.stdout


def small_pool(runtime: LabHostRuntime, name: str, mib: int) -> Iterator[str]:
    """A loop-mounted ext4 pool ``name`` of ``mib`` MiB on the host; yields its path."""
    path = f"/var/lib/libvirt/{name}"
    image = runtime.layout.host_dir(runtime.host.name) / f"{name}.img"
    subprocess.run(["truncate", "-s", f"{mib}M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    try:
        inside(runtime, "mkdir", "-p", path)
        inside(runtime, "mount", "-o", "loop", str(image), path)
        runtime.virsh("pool-create-as", name, "dir", "--target", path)
        yield path
    finally:
        runtime.virsh("pool-destroy", name, check=False)
        inside(runtime, "umount", path, check=False)
        inside(runtime, "rmdir", path, check=False)
        image.unlink(missing_ok=True)


def fill(runtime: LabHostRuntime, path: str) -> None:
    """Write zeros into ``path``/filler until its file system is full."""
    inside(
        runtime,
        "sh",
        "-c",
        f"dd if=/dev/zero of={path}/filler bs=1M 2>/dev/null; sync",
        check=False,
    )
