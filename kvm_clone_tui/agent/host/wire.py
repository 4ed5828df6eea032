"""The wire: frame constants and structs, errors as JSON lines, writes to stdout, progress.

A frame is a 1-byte type, big-endian fields, then its payload (DATA) or JSON (HEADER, END); the
stream and its digest are specified in docs/agent.md, "The stream". These constants are defined
here once: the client's ``kvm_clone_tui.agent.protocol`` imports them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import sys
import time
from typing import Any

# A frame is a 1-byte type, big-endian fields, then its payload (DATA) or JSON (HEADER, END).
MAGIC = b"KVMCLONE1"
FRAME_HEADER = 0x48  # 'H': magic 9s, JSON length u32, JSON
FRAME_DATA = 0x44  # 'D': offset u64, length u32, payload
FRAME_ZERO = 0x5A  # 'Z': offset u64, length u32; an all-zero block, left as a hole
FRAME_END = 0x45  # 'E': JSON length u32, JSON
HEADER_STRUCT = struct.Struct(">B9sI")
BLOCK_STRUCT = struct.Struct(">BQI")
END_STRUCT = struct.Struct(">BI")
DIGEST_SIZE = 32  # stream digest: blake2b of (offset, length, payload) of every DATA frame
BLOCK_DIGEST_SIZE = 16  # per-block digests of `hash`
PROTOCOL_VERSION = 1
DIGESTS = ("blake2b", "sha256")  # sha256 where both hosts hash it in hardware (probe: sha_hw)
DEFAULT_BLOCK_SIZE = 4 << 20
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 4096, 64 << 20
MAX_JSON = 1 << 20
WRITE_CHUNK = 1 << 20  # pwrite size (docs/agent.md: why not a whole block)
WRITEBACK = 32 << 20  # receive: start writing back (and drop from the cache) every 32 MiB
PROGRESS_INTERVAL = 0.25
INLINE_HASH = 256 << 10  # StreamHash: smaller payloads are hashed on the caller's thread
RELEASE_EVERY = 8 << 20  # send --against-stdin gives read pages back this much at a time
HASH_READ = 1 << 20  # `hash` reads this much at a time and hashes its blocks
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class AgentError(Exception):
    """A failure, reported as one JSON line ``{"error": message, "kind": kind, ...}``."""

    def __init__(self, kind: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.path = kind, path
        self.extra: dict[str, Any] = {}

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self), "kind": self.kind}
        return dict(out, path=self.path, **self.extra) if self.path else dict(out, **self.extra)


_ERRNO_KINDS = {errno.ENOSPC: "no-space", errno.EDQUOT: "no-space", errno.ENOENT: "not-found"}
_ERRNO_KINDS.update({errno.EEXIST: "exists", errno.ELOOP: "path", errno.ENOTDIR: "path"})
_ERRNO_KINDS.update({errno.EACCES: "permission", errno.EPERM: "permission"})
_ERRNO_KINDS[errno.EPIPE] = "broken-pipe"


def error_kind(exc: OSError) -> str:
    """The error kind of an OSError: ENOSPC -> "no-space", ELOOP -> "path", ... else "io"."""
    return _ERRNO_KINDS.get(exc.errno or 0, "io")


def os_error(exc: OSError, path: str | None) -> AgentError:
    """Map an OSError to an AgentError: ENOSPC -> "no-space", ELOOP -> "path", ..."""
    what = "refusing a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
    return AgentError(error_kind(exc), f"{what}: {path}", path)


def json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def emit(obj: dict[str, Any], err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(json_bytes(obj).decode() + "\n")
    stream.flush()


def enlarge_pipe(fd: int) -> None:
    """Grow a pipe to 1 MiB: fewer syscalls and wake-ups per block."""
    try:
        import fcntl

        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


class Progress:
    """``{"progress": done, "total": total}`` lines on stderr, at most 4 a second."""

    def __init__(self, total: int) -> None:
        self.total, self.last = total, 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL:
            self.last = now
            emit({"progress": done, "total": self.total}, err=True)


def write_all(*parts: bytes | bytearray | memoryview) -> None:
    """Write to fd 1 with writev (header and payload in one call, no copies) until done."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        try:
            n = os.writev(1, views)
        except OSError as exc:
            raise os_error(exc, "<stdout>") from None
        while views and n >= len(views[0]):
            n -= len(views.pop(0))
        if n:
            views[0] = views[0][n:]
