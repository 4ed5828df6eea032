"""``probe``: versions, tools, hardware SHA, free space and hole support of a host."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from typing import Any

from .hashing import sha_in_hardware
from .paths import check_path
from .version import agent_version
from .wire import _CLOEXEC, PROTOCOL_VERSION, emit, os_error


def cmd_probe(args: argparse.Namespace) -> int:
    paths: dict[str, Any] = {}
    for p in args.path:
        try:
            st = os.statvfs(check_path(p))
            free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            paths[p] = dict(free=free, total=total, holes=_holes_supported(p))
        except OSError as exc:
            paths[p] = os_error(exc, p).as_json()
    out = dict(agent_version=agent_version(), protocol=PROTOCOL_VERSION, platform=sys.platform)
    out.update(python=platform.python_version(), cpu_count=os.cpu_count() or 1)
    out.update(zstd=shutil.which("zstd"), qemu_img=shutil.which("qemu-img"))
    out.update(sha_hw=sha_in_hardware())
    emit(dict(out, seek_data=hasattr(os, "SEEK_DATA"), paths=paths))
    return 0


def _holes_supported(directory: str) -> bool | None:
    """Whether the filesystem keeps holes: tried on an unnamed O_TMPFILE (never visible)."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | _CLOEXEC, 0o600)
    except (AttributeError, OSError):
        return None
    try:
        os.pwrite(fd, b"x", 1 << 20)
        return os.lseek(fd, 0, os.SEEK_DATA) > 0
    except (AttributeError, OSError):
        return False
    finally:
        os.close(fd)
