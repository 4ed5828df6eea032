"""Where a received stream lands: a regular file (``FileSink``) or a writable NBD export
(``NBDSink``).
"""

from __future__ import annotations

import os

from .extents import punch_hole
from .nbd import NBDClient
from .wire import WRITE_CHUNK, AgentError


class FileSink:
    """Where a received stream lands: a regular file (``receive``)."""

    def __init__(self, fd: int, inplace: bool) -> None:
        self.fd, self.inplace = fd, inplace

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def start(self, offset: int) -> None:
        if not self.inplace:
            os.ftruncate(self.fd, offset)  # drop what a resumed file holds past start

    def write(self, offset: int, mv: memoryview) -> None:
        done, n = 0, len(mv)
        while done < n:  # in 1 MiB pieces: one 4 MiB pwrite costs the kernel 4x more
            done += os.pwrite(self.fd, mv[done : done + WRITE_CHUNK], offset + done)

    def zero(self, offset: int, length: int) -> None:
        if self.inplace:
            punch_hole(self.fd, offset, length)  # the old contents there must read as zeros

    def read_old(self, mv: memoryview, offset: int) -> None:
        done = 0
        while done < len(mv):
            got = os.preadv(self.fd, [mv[done:]], offset + done)
            if not got:  # past the end: reads as zeros
                mv[done:] = bytes(len(mv) - done)
                return
            done += got

    def written_up_to(self, lo: int, hi: int) -> None:
        # DONTNEED starts writeback of the newest window and drops the previous one, clean by
        # now: the final fsync has little left to wait for, and a copy does not push the
        # host's useful pages out of its cache.
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)

    def finish(self, size: int) -> None:
        os.ftruncate(self.fd, size)


class NBDSink:
    """Where a received stream lands: a writable NBD export (``nbd-receive``; a qcow2 image
    served by qemu-nbd, so that guest-visible blocks are written through its format)."""

    inplace = True

    def __init__(self, client: NBDClient) -> None:
        self.client = client

    def size(self) -> int:
        return int(self.client.size)

    def start(self, offset: int) -> None:
        pass

    def write(self, offset: int, mv: memoryview) -> None:
        self.client.write(offset, mv)

    def zero(self, offset: int, length: int) -> None:
        self.client.write_zeroes(offset, length)

    def read_old(self, mv: memoryview, offset: int) -> None:
        self.client.read_into(mv, offset)

    def written_up_to(self, lo: int, hi: int) -> None:
        pass

    def finish(self, size: int) -> None:
        if size != self.client.size:
            raise AgentError("size", f"the export has {self.client.size} bytes, the stream {size}")
        self.client.flush()
