"""Content checks of disk images: does what arrived equal the source?"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.common.units import MiB

HASH_BLOCK = MiB
READ_CHUNK = 8 * MiB


def elided_sha256(path: Path) -> str:
    """sha256 over (offset, block) of every 1 MiB block that is not all zeros, plus the size.

    Holes are skipped with SEEK_DATA/SEEK_HOLE and never read; data is read and zero blocks
    are left out. Two files of equal size get the same digest exactly when their contents are
    equal, however they are allocated, at the cost of reading only their data.
    """
    h = hashlib.sha256()
    zero = bytes(HASH_BLOCK)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(size.to_bytes(8, "big"))
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            block = start - start % HASH_BLOCK
            while block < end:
                data = os.pread(fd, HASH_BLOCK, block)
                if data and not zero.startswith(data):
                    h.update(block.to_bytes(8, "big"))
                    h.update(data)
                block += HASH_BLOCK
            pos = block
    finally:
        os.close(fd)
    return h.hexdigest()


def full_sha256(path: Path) -> str:
    """Plain sha256 of every byte (holes read as zeros)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()
