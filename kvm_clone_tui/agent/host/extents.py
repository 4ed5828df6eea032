"""Data extents (``SEEK_DATA``/``SEEK_HOLE``), cutting them into blocks, exact reads, hole
punching; the ``extents`` command.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
from typing import Iterator

from .paths import open_source
from .wire import AgentError, emit


def allocated_bytes(fd: int, size: int) -> int:
    st = os.fstat(fd)
    return size if stat.S_ISBLK(st.st_mode) else st.st_blocks * 512


def data_extents(fd: int, size: int) -> tuple[list[tuple[int, int]], bool]:
    """(offset, length) of the data regions, and whether SEEK_DATA worked (else one extent)."""
    whole = [(0, size)] if size else []
    if not hasattr(os, "SEEK_DATA"):
        return whole, False
    out: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if pos > start:
                out.append((start, pos - start))
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY, errno.ESPIPE):
            return whole, False
        if exc.errno != errno.ENXIO:  # ENXIO: no data past pos
            raise
    return out, True


def blocks(extents: list[tuple[int, int]], bs: int, start: int) -> Iterator[tuple[int, int]]:
    """Cut extents at multiples of ``bs``, skipping everything below ``start``."""
    for off, length in extents:
        end, off = off + length, max(off, start)
        while off < end:
            n = min(end, (off // bs + 1) * bs) - off
            yield off, n
            off += n


def pread_exact(fd: int, mv: memoryview, offset: int) -> None:
    done = 0
    while done < len(mv):
        got = os.preadv(fd, [mv[done:]], offset + done)
        if not got:
            raise AgentError("io", f"source ended early, at offset {offset + done}")
        done += got


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Make a range read as zeros, freeing its blocks where the filesystem can."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        if libc.fallocate(fd, 0x02 | 0x01, offset, length) == 0:  # PUNCH_HOLE | KEEP_SIZE
            return
    except (OSError, AttributeError):
        pass
    size = os.fstat(fd).st_size
    end = min(offset + length, size)
    zero = bytes(min(1 << 20, max(0, end - offset)))
    while offset < end:
        offset += os.pwrite(fd, zero[: end - offset], offset)


def cmd_extents(args: argparse.Namespace) -> int:
    fd, size = open_source(args.path)
    extents, seek = data_extents(fd, size)
    out = dict(path=args.path, size=size, allocated=allocated_bytes(fd, size), seek_data=seek)
    note = None if seek else "SEEK_DATA unsupported: the whole file is reported as data"
    emit(dict(out, extents=[list(e) for e in extents], note=note))
    return 0


def blocks_with_data(extents: list[tuple[int, int]], bs: int) -> set[int]:
    """Indexes of the ``bs``-sized blocks that the data extents touch."""
    return {i for off, n in extents for i in range(off // bs, (off + n - 1) // bs + 1)}
