"""The undo log of an in-place receive (what each write overwrote) and ``undo-apply``, which
puts it back.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import struct
from typing import Any

from .nbd import NBDClient
from .paths import check_path, open_parent
from .sinks import FileSink
from .wire import _CLOEXEC, AgentError, emit, os_error

UNDO_MAGIC = b"KVMCLONE-UNDO1\n"
UNDO_RECORD = struct.Struct(">QIB")  # offset, length, kind: 0 reads as zeros, 1 data follows


class UndoLog:
    """The old contents of every range a sync overwrites, saved before it is overwritten,
    so that ``undo-apply`` can put the clone back as it was (``kvm-clone sync --checkpoint``)."""

    def __init__(self, root: str, path: str, sink: Any) -> None:
        self.sink, self.path, self.old_size = sink, path, sink.size()
        self.dfd, name = open_parent(root, path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        try:
            self.fd = os.open(name, flags, 0o600, dir_fd=self.dfd)
        except OSError as exc:
            os.close(self.dfd)
            raise os_error(exc, path) from None
        self.out = io.BufferedWriter(io.FileIO(self.fd, "wb", closefd=False), 1 << 20)
        self.out.write(UNDO_MAGIC + json.dumps({"size": self.old_size}).encode() + b"\n")
        self.saved = 0

    def save(self, offset: int, length: int) -> None:
        """Keep what ``[offset, offset + length)`` holds now (only the part below the old end)."""
        end = min(offset + length, self.old_size)
        if end <= offset:
            return
        mv = memoryview(bytearray(end - offset))
        self.sink.read_old(mv, offset)
        if bytes(len(mv)).startswith(mv):
            self.out.write(UNDO_RECORD.pack(offset, len(mv), 0))
        else:
            self.out.write(UNDO_RECORD.pack(offset, len(mv), 1))
            self.out.write(mv)
            self.saved += len(mv)

    def close(self) -> None:
        self.out.flush()
        os.fsync(self.fd)
        os.close(self.fd)
        os.fsync(self.dfd)
        os.close(self.dfd)


def cmd_undo_apply(args: argparse.Namespace) -> int:
    """Put back what an undo log saved: into a file under --root, or through an NBD export."""
    dfd, name = open_parent(args.root, args.undo)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | _CLOEXEC, dir_fd=dfd)
    except OSError as exc:
        raise os_error(exc, args.undo) from None
    finally:
        os.close(dfd)
    inp = io.BufferedReader(io.FileIO(fd, "rb"), 1 << 20)
    client, tfd = None, -1
    try:
        if inp.read(len(UNDO_MAGIC)) != UNDO_MAGIC:
            raise AgentError("protocol", f"not a kvm-clone undo log: {args.undo}")
        try:
            old_size = int(json.loads(inp.readline())["size"])
        except (ValueError, KeyError, TypeError):
            raise AgentError("protocol", f"bad undo log header: {args.undo}") from None
        if args.nbd:
            client = NBDClient(check_path(args.nbd, "socket"), args.export, [])
            write: Any = client.write
            zero: Any = client.write_zeroes
        else:
            if not args.target:
                raise AgentError("usage", "undo-apply needs --target FILE or --nbd SOCKET")
            tdfd, tname = open_parent(args.root, args.target)
            flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
            try:
                tfd = os.open(tname, flags, dir_fd=tdfd)
            except OSError as exc:
                raise os_error(exc, args.target) from None
            finally:
                os.close(tdfd)
            if not stat.S_ISREG(os.fstat(tfd).st_mode):
                raise AgentError("path", f"not a regular file: {args.target}", args.target)
            sink = FileSink(tfd, True)
            write, zero = sink.write, sink.zero
        restored = records = 0
        while True:
            raw = inp.read(UNDO_RECORD.size)
            if not raw:
                break
            if len(raw) != UNDO_RECORD.size:
                raise AgentError("protocol", f"undo log {args.undo} is truncated")
            off, n, kind = UNDO_RECORD.unpack(raw)
            if kind == 1:
                data = inp.read(n)
                if len(data) != n:
                    raise AgentError("protocol", f"undo log {args.undo} is truncated")
                write(off, memoryview(data))
            else:
                zero(off, n)
            restored, records = restored + n, records + 1
        if client is not None:
            client.flush()
        else:
            os.ftruncate(tfd, old_size)
            os.fsync(tfd)
    finally:
        inp.close()
        if client is not None:
            client.close()
        if tfd >= 0:
            os.close(tfd)
    emit(dict(ok=True, undo=args.undo, records=records, bytes=restored, size=old_size))
    return 0
