#!/usr/bin/env python3
"""kvm-clone host agent: probe a host; list extents, send, receive and hash VM disks.

One self-contained file, standard library only, Python 3.8+: the client ships it over SSH and
runs it with ``python3``. Protocol, hash definition and shipping: docs/agent.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import stat
import struct
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, NoReturn

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
_ERRORS_TO_STDERR = False  # True for `send`, whose stdout is the stream


def _own_version() -> str:
    src = globals().get("__agent_source__")  # set by the client's bootstrap
    if not isinstance(src, bytes):
        try:
            path = __file__
            if path.endswith(".pyc"):  # agent-<version>.<tag>.pyc: its source lies beside it
                path = path.rsplit(".", 2)[0] + ".py"
            with open(path, "rb") as f:
                src = f.read()
        except (NameError, OSError):
            return "unknown"
    return hashlib.sha256(src).hexdigest()[:16]


AGENT_VERSION = _own_version()


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


def os_error(exc: OSError, path: str | None) -> AgentError:
    """Map an OSError to an AgentError: ENOSPC -> "no-space", ELOOP -> "path", ..."""
    what = "refusing a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
    return AgentError(_ERRNO_KINDS.get(exc.errno or 0, "io"), f"{what}: {path}", path)


def json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def emit(obj: dict[str, Any], err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(json_bytes(obj).decode() + "\n")
    stream.flush()


def check_path(path: str, what: str = "path") -> str:
    """Accept only absolute, normalised paths without NUL bytes."""
    if "\0" in path or not path.startswith("/") or path.startswith("//"):
        raise AgentError("path", f"{what} must be an absolute path: {path!r}", path)
    if os.path.normpath(path) != path:
        raise AgentError("path", f"{what} must be normalised: {path!r}", path)
    return path


def open_parent(root: str, path: str) -> tuple[int, str]:
    """Open the directory of ``path`` (strictly inside ``root``), never following a symlink.

    Returns (directory fd, final name); callers use ``dir_fd`` so nothing can redirect them.
    """
    check_path(root, "--root")
    prefix = check_path(root) if root == "/" else root + "/"
    if not check_path(path).startswith(prefix) or path == root:
        raise AgentError("path", f"{path} is not inside {root}", path)
    parts = path[len(prefix) :].split("/")
    fd = -1
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        for part in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
            fd, old = os.open(part, flags, dir_fd=fd), fd
            os.close(old)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        raise os_error(exc, path) from None
    return fd, parts[-1]


def open_source(path: str) -> tuple[int, int]:
    """Open a file or block device for reading; return (fd, size)."""
    try:
        fd = os.open(check_path(path), os.O_RDONLY | _CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path) from None
    return fd, os.lseek(fd, 0, os.SEEK_END)


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


DIGESTS = ("blake2b", "sha256")  # sha256 where both hosts hash it in hardware (probe: sha_hw)


def new_hash(algo: str) -> Any:
    """The stream digest: blake2b-32, or sha256 (the same size)."""
    if algo == "sha256":
        return hashlib.sha256()
    if algo != "blake2b":
        raise AgentError("protocol", f"unknown digest {algo!r}")
    return hashlib.blake2b(digest_size=DIGEST_SIZE)


def block_digest(algo: str, mv: memoryview) -> str:
    """The 16-byte digest of one block for ``hash``."""
    if algo == "sha256":
        return hashlib.sha256(mv).hexdigest()[: 2 * BLOCK_DIGEST_SIZE]
    return hashlib.blake2b(mv, digest_size=BLOCK_DIGEST_SIZE).hexdigest()


def sha_in_hardware() -> bool:
    """Whether this CPU computes SHA-256 in hardware (x86 SHA-NI, Arm SHA2): then sha256 runs
    about 2.5x faster than blake2b."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                words = value.split()
                if key.strip() == "flags" and "sha_ni" in words:
                    return True
                if key.strip() == "Features" and "sha2" in words:
                    return True
    except OSError:
        pass
    return False


class StreamHash:
    """The stream digest, computed on a worker thread so that hashing overlaps the I/O.

    A submitted payload must stay untouched until the next ``submit`` or ``hexdigest``; with
    ``lasting`` (payloads that nobody overwrites, e.g. a mapped file), until ``hexdigest``, and
    ``submit`` never waits: the worker hashes while the caller goes on.
    """

    def __init__(self, algo: str = "blake2b", lasting: bool = False) -> None:
        self.h = new_hash(algo)
        self.pool = ThreadPoolExecutor(1)  # one worker: updates run in submission order
        self.last: Future[None] | None = None
        self.lasting = lasting

    def submit(self, head: bytes, payload: memoryview, then: Any = None) -> None:
        """Hash ``head`` and ``payload``; ``then()`` runs on the same worker afterwards (while
        the payload is still untouched). A small payload is hashed here and now: handing it to
        the worker costs more than the overlap gains (a sync's 64 KiB frames)."""
        if len(payload) < INLINE_HASH:
            self.drain()  # what was submitted before comes first
            self.h.update(head)
            self.h.update(payload)
            if then is not None:
                then()
            return
        if self.last is not None and not self.lasting:
            self.last.result()  # the previous payload's buffer is free again
        self.pool.submit(self.h.update, head)
        self.last = self.pool.submit(self.h.update, payload)
        if then is not None:
            self.last = self.pool.submit(then)

    def drain(self) -> None:
        """Wait until every submitted payload is hashed (their buffers are free again)."""
        if self.last is not None:
            self.last.result()

    def hexdigest(self) -> str:
        self.drain()  # raises what went wrong on the worker
        self.pool.shutdown(wait=True)
        return str(self.h.hexdigest())


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


# ---------------------------------------------------------------- block index (docs/agent.md)

INDEX_PREFIX = ".kvmclone-index-"
INDEX_VERSION = 1
MAX_INDEX = 256 << 20  # a 200 GiB disk's index of 64 KiB blocks is ~20 MiB of JSON
HEX = re.compile(f"^[0-9a-f]{{{2 * BLOCK_DIGEST_SIZE}}}$")


def file_stamp(st: os.stat_result) -> list[int]:
    """What changes whenever anything writes, truncates, renames or replaces a file."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def index_name(name: str) -> str | None:
    """The name of the block index kept next to file ``name`` (None: too long a name)."""
    full = f"{INDEX_PREFIX}{name}.json"
    ok = len(full.encode()) <= 240 and not name.startswith(INDEX_PREFIX)
    return full if ok else None


def digest_or_none(algo: str, mv: memoryview, zero: bytes) -> str | None:
    """A block's digest as ``hash`` gives it: None when it reads as all zeros."""
    return None if zero.startswith(mv) else block_digest(algo, mv)


def load_index(
    dfd: int, name: str, stamp: list[int], bs: int | None = None, algo: str | None = None
) -> dict[str, Any] | None:
    """The saved index of ``name`` if it describes the file with this ``stamp``, and
    (when given) has this block size and digest; None otherwise. A cache: never trusted blindly,
    never an error."""
    iname = index_name(name)
    if iname is None:
        return None
    try:
        fd = os.open(iname, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        ist = os.fstat(fd)
        if not stat.S_ISREG(ist.st_mode) or ist.st_size > MAX_INDEX:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
        return None
    if data.get("stamp") != stamp or data.get("algo") not in DIGESTS:
        return None
    size, ibs, found = stamp[2], data.get("block_size"), data.get("blocks")
    if not isinstance(ibs, int) or not MIN_BLOCK_SIZE <= ibs <= MAX_BLOCK_SIZE:
        return None
    if (bs is not None and ibs != bs) or (algo is not None and data["algo"] != algo):
        return None
    if not isinstance(found, list) or len(found) != -(-size // ibs):
        return None
    if not all(b is None or (isinstance(b, str) and HEX.match(b)) for b in found):
        return None
    return data


def save_index(
    dfd: int, name: str, st: os.stat_result, bs: int, algo: str, digests: list[str | None]
) -> bool:
    """Write the index of ``name`` as of stamp ``st`` (temporary file + rename). Failing to
    write it (a full disk) only costs the next sync a hashing pass: it is dropped, not raised."""
    iname = index_name(name)
    if iname is None:
        return False
    tmp = f"{iname}.tmp-{os.getpid()}"
    data = dict(version=INDEX_VERSION, stamp=file_stamp(st), block_size=bs, algo=algo)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | _CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(json_bytes(dict(data, blocks=digests)))
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.close(fd)
        os.rename(tmp, iname, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        drop_index(dfd, name)
        return False
    sweep_orphans(dfd)
    return True


def sweep_orphans(dfd: int) -> None:
    """Remove the indexes of files that are gone (a clone deleted with virsh or by hand) and
    temporary indexes of agents that died while writing one."""
    try:
        names = os.listdir(dfd)
    except OSError:
        return
    for entry in names:
        if not entry.startswith(INDEX_PREFIX):
            continue
        inner, _, pid = entry[len(INDEX_PREFIX) :].rpartition(".json.tmp-")
        if inner and pid.isdigit():
            orphan = not _alive(int(pid))
        elif entry.endswith(".json"):
            orphan = not _exists(entry[len(INDEX_PREFIX) : -len(".json")], dfd)
        else:
            orphan = False
        if orphan:
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=dfd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _exists(name: str, dfd: int) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep its index
    return True


def drop_index(dfd: int, name: str) -> None:
    """Remove the index of ``name``, if there is one."""
    iname = index_name(name)
    if iname is not None:
        with contextlib.suppress(OSError):
            os.unlink(iname, dir_fd=dfd)


def rehash(fd: int, bs: int, algo: str, size: int, which: list[int]) -> dict[int, str | None]:
    """Digests of some blocks, read from the file as it is now."""
    zero: bytes = bytes(bs)
    out: dict[int, str | None] = {}
    buf = memoryview(bytearray(bs))
    for b in which:
        mv = buf[: min(bs, size - b * bs)]
        pread_exact(fd, mv, b * bs)
        out[b] = digest_or_none(algo, mv, zero)
    return out


class BlockIndex:
    """A file's block index, kept up to date while a stream writes the file (``receive
    --index``): blocks a frame covers whole are hashed from the frame; blocks only partly
    written (or cut by a size change) are read back and hashed at the end."""

    def __init__(self, algo: str, bs: int, old: list[str | None], old_size: int, size: int):
        self.algo, self.bs, self.zero = algo, bs, bytes(bs)
        self.size = size
        self.stale: set[int] = set()
        n = -(-size // bs)
        self.digests = (list(old) + [None] * n)[:n]
        if size != old_size:  # the blocks at the old and new ends change length
            for end in (old_size, size):
                if end % bs and (end - 1) // bs < n:
                    self.stale.add((end - 1) // bs)

    def _blocks(self, off: int, n: int) -> Iterator[tuple[int, int, int, bool]]:
        bs, end = self.bs, off + n
        for b in range(off // bs, (end - 1) // bs + 1):
            lo, hi = max(off, b * bs), min(end, (b + 1) * bs, self.size)
            yield b, lo, hi, lo == b * bs and hi == min((b + 1) * bs, self.size)

    def data(self, off: int, mv: memoryview) -> None:
        for b, lo, hi, whole in self._blocks(off, len(mv)):
            if whole:
                self.digests[b] = digest_or_none(self.algo, mv[lo - off : hi - off], self.zero)
                self.stale.discard(b)
            else:
                self.stale.add(b)

    def zeros(self, off: int, n: int) -> None:
        for b, _lo, _hi, whole in self._blocks(off, n):
            if whole:
                self.digests[b] = None
                self.stale.discard(b)
            else:
                self.stale.add(b)

    def finish(self, fd: int) -> list[str | None]:
        for b, digest in rehash(fd, self.bs, self.algo, self.size, sorted(self.stale)).items():
            self.digests[b] = digest
        return self.digests


def cmd_index_refresh(args: argparse.Namespace) -> int:
    """After a change of a qcow2 image's metadata only (``qemu-img bitmap --remove``): keep the
    digests of blocks that lie wholly in data clusters the change kept in place (stdin: their
    host [offset, length] ranges), read and hash every other block that holds data now."""
    try:
        was = [int(x) for x in args.was.split(",")]
        keep = sorted((int(o), int(n)) for o, n in json.loads(sys.stdin.buffer.read() or b"[]"))
    except (ValueError, TypeError) as exc:
        raise AgentError("usage", f"bad --was or ranges: {exc}") from None
    dfd, name = open_parent(args.root, args.path)
    fd = -1
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AgentError("path", f"not a regular file: {args.path}", args.path)
        if len(was) != 5:
            raise AgentError("usage", "--was takes dev,ino,size,mtime_ns,ctime_ns")
        old = load_index(dfd, name, was)
        if old is None:
            drop_index(dfd, name)
            emit({"ok": True, "path": args.path, "refreshed": False, "rehashed": 0})
            return 0
        bs, algo, size = old["block_size"], old["algo"], st.st_size
        n = -(-size // bs)
        digests = (list(old["blocks"]) + [None] * n)[:n]
        kept = set()
        j = 0
        for b in range(min(n, len(old["blocks"]), -(-was[2] // bs))):
            lo, hi = b * bs, min((b + 1) * bs, size)
            while j < len(keep) and keep[j][0] + keep[j][1] <= lo:
                j += 1
            inside = j < len(keep) and keep[j][0] <= lo and hi <= keep[j][0] + keep[j][1]
            if inside and hi - lo == min(bs, was[2] - lo):  # as long as when it was hashed
                kept.add(b)
        extents, _ = data_extents(fd, size)
        with_data = blocks_with_data(extents, bs)
        for b in range(n):
            if b not in with_data:
                digests[b] = None
        todo = sorted(with_data - kept)
        digests_now = rehash(fd, bs, algo, size, todo)
        for b, digest in digests_now.items():
            digests[b] = digest
        if file_stamp(os.fstat(fd)) != file_stamp(st):  # written meanwhile: no index at all
            drop_index(dfd, name)
            emit({"ok": True, "path": args.path, "refreshed": False, "rehashed": len(todo)})
            return 0
        saved = save_index(dfd, name, st, bs, algo, digests)
    except OSError as exc:
        raise os_error(exc, args.path) from None
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(dfd)
    emit({"ok": True, "path": args.path, "refreshed": saved, "rehashed": len(todo)})
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    fd, size = open_source(args.path)
    if args.against_stdin:
        return send_compared(fd, size, args)
    if args.ranges_stdin:  # only these [offset, length] ranges (an incremental sync)
        try:
            ranges = json.loads(sys.stdin.buffer.read() or b"[]")
            extents = [(int(o), int(n)) for o, n in ranges]
        except (ValueError, TypeError) as exc:
            raise AgentError("usage", f"bad --ranges-stdin JSON: {exc}") from None
        if any(o < 0 or n <= 0 or o + n > size for o, n in extents):
            raise AgentError("usage", "a range lies outside the file")
        extents.sort()
    else:
        extents, _ = data_extents(fd, size)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return stream_out(
        size, allocated_bytes(fd, size), extents, [], lambda mv, off: pread_exact(fd, mv, off), args
    )


def read_theirs(data: bytes) -> tuple[int, int, str, list[str | None]]:
    """The destination's ``hash`` answer (size, block_size, algo, blocks), checked."""
    try:
        theirs = json.loads(data)
        size, bs, algo = int(theirs["size"]), int(theirs["block_size"]), str(theirs["algo"])
        blocks = list(theirs["blocks"])
    except (ValueError, TypeError, KeyError) as exc:
        raise AgentError("usage", f"bad --against-stdin JSON: {exc}") from None
    if algo not in DIGESTS or not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE or size < 0:
        raise AgentError("usage", "bad --against-stdin: algo or block size")
    if len(blocks) != -(-size // bs):
        raise AgentError("usage", "bad --against-stdin: the block list does not fit the size")
    return size, bs, algo, blocks


def _lease_broken(signum: int, _frame: object) -> NoReturn:
    raise AgentError(
        "changed",
        "something opened the source file for writing or truncated it while it was read (did "
        "the VM start?); it waits until this send has stopped: sync again once the VM is off",
    )


class LeasedSource:
    """How ``send --against-stdin`` reads the source: mapped into memory under a read lease
    when the kernel grants one (no copies; nobody can open the file for writing or truncate it
    meanwhile: such an open waits while this send stops with an error, so a mapped page never
    vanishes), else with pread into one buffer per chunk in flight."""

    def __init__(self, fd: int, size: int, chunk: int, slots: int) -> None:
        self.fd = fd
        self.mapped: memoryview | None = None
        self.region: Any = None  # the mmap object behind ``mapped``
        self.bufs: list[memoryview] = []
        if size and self._lease():
            import mmap

            self.region = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            self.mapped = memoryview(self.region)
        else:
            self.bufs = [memoryview(bytearray(chunk)) for _ in range(slots)]

    def _lease(self) -> bool:
        try:
            import fcntl
        except ImportError:
            return False
        previous = signal.signal(signal.SIGIO, _lease_broken)
        try:
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETLEASE", 1024), fcntl.F_RDLCK)
        except OSError as exc:
            signal.signal(signal.SIGIO, previous)
            if exc.errno == errno.EAGAIN:
                msg = "the source file is open for writing (does the VM run?): shut it off first"
                raise AgentError("busy", msg) from None
            return False  # a filesystem without leases (NFS): read with pread
        return True

    def read(self, k: int, start: int, end: int) -> memoryview:
        """Chunk ``k`` (``start``..``end``), read now (worker threads)."""
        if self.mapped is not None:
            return self.mapped[start:end]
        mv = self.bufs[k % len(self.bufs)][: end - start]
        pread_exact(self.fd, mv, start)
        return mv

    def view(self, k: int, start: int, end: int) -> memoryview:
        """Chunk ``k`` as ``read`` left it."""
        if self.mapped is not None:
            return self.mapped[start:end]
        return self.bufs[k % len(self.bufs)][: end - start]

    def release(self, start: int, end: int) -> None:
        """``start``..``end`` is hashed and sent: give its pages back (``start`` page-aligned).

        A sync reads the whole source once. Kept, its pages would push the host's useful ones
        (its running VMs') out of the cache for data read once; given back, they are the pages
        the next reads land in, which also spares the CPU a first touch of as many fresh pages
        as the disk is big (on a VM host whose own memory is lent out, such as this project's
        CI machines, that first touch doubled the CPU time of the hashing)."""
        if self.region is not None:
            import mmap

            self.region.madvise(mmap.MADV_DONTNEED, start, end - start)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)

    def done(self) -> None:
        """Everything is read and sent: let writers in again (the mapping is not touched
        any more), so that a VM started now does not fail a finished send."""
        if self.mapped is not None:
            import fcntl

            signal.signal(signal.SIGIO, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, getattr(fcntl, "F_SETLEASE", 1024), fcntl.F_UNLCK)


def send_compared(fd: int, size: int, args: argparse.Namespace) -> int:
    """``send --against-stdin``: read the file once, hash every block as ``hash`` does, and send
    at once each block whose digest differs from the destination's (stdin: its ``hash``
    answer); a block that reads as zeros where the destination has data goes as a ZERO frame.
    Reading and hashing run ahead on worker threads while this thread writes the stream."""
    their_size, bs, algo, theirs = read_theirs(sys.stdin.buffer.read())
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    n = -(-size // bs)
    extents, _ = data_extents(fd, size)
    todo = blocks_with_data(extents, bs)
    todo.update(i for i, d in enumerate(theirs[:n]) if d is not None)
    if their_size % bs and their_size < size:  # their last, short block: compared as missing
        todo.add(their_size // bs)
    per = max(1, HASH_READ // bs)
    groups = read_groups(sorted(todo), per)
    ahead = 8  # chunks read and hashed ahead of the writer (each needs its buffer)
    source = LeasedSource(fd, size, per * bs, ahead + 1)
    mapped = source.mapped is not None  # no buffer is reused: hashing never holds us up
    if mapped:  # hash on while the stream cannot take more (the route's login, a slow receiver)
        ahead = 64
    zero = bytes(bs)

    def differ(i: int, mine: str | None) -> bool:
        if (i + 1) * bs <= their_size or their_size == size:  # as long on both sides
            return theirs[i] != mine
        return mine is not None or i * bs < their_size  # new, or their short last block

    def work(k: int) -> list[bool | None]:
        """Read chunk ``k``; per block: True (send its data), None (send zeros), False."""
        group = groups[k]
        start, end = group[0] * bs, min(size, (group[-1] + 1) * bs)
        mv = source.read(k, start, end)
        out: list[bool | None] = []
        for j, i in enumerate(group):
            mine = digest_or_none(algo, mv[j * bs : min((j + 1) * bs, end - start)], zero)
            out.append((True if mine is not None else None) if differ(i, mine) else False)
        return out

    total = sum(min(size, (g[-1] + 1) * bs) - g[0] * bs for g in groups)
    meta = dict(protocol=PROTOCOL_VERSION, agent=AGENT_VERSION, size=size, block_size=per * bs)
    header = json_bytes(dict(meta, digest=args.digest, allocated=allocated_bytes(fd, size),
                             start_offset=0, total=total))  # fmt: skip
    os.set_blocking(1, True)
    enlarge_pipe(1)
    small = bytearray(HEADER_STRUCT.pack(FRAME_HEADER, MAGIC, len(header)) + header)
    hasher = StreamHash(args.digest, lasting=mapped) if not args.no_hash else None
    progress, scanned, sent, zeros, t0 = Progress(total), 0, 0, 0, time.monotonic()
    released = 0  # pages before this offset are given back (LeasedSource.release)
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        pending = collections.deque(pool.submit(work, k) for k in range(min(ahead, len(groups))))
        for k, group in enumerate(groups):
            verdicts = pending.popleft().result()
            start, end = group[0] * bs, min(size, (group[-1] + 1) * bs)
            mv = source.view(k, start, end)
            j = 0
            while j < len(group):
                if verdicts[j] is None:  # zeros here, data there
                    off, ln = group[j] * bs, min(bs, end - group[j] * bs)
                    small += BLOCK_STRUCT.pack(FRAME_ZERO, off, ln)
                    zeros, j = zeros + ln, j + 1
                    continue
                if not verdicts[j]:
                    j += 1
                    continue
                first = j
                while j < len(group) and verdicts[j]:
                    j += 1
                lo, hi = first * bs, min(j * bs, end - start)
                head = BLOCK_STRUCT.pack(FRAME_DATA, start + lo, hi - lo)
                if hasher is not None:
                    hasher.submit(head[1:], mv[lo:hi])
                write_all(small, head, mv[lo:hi])
                small, sent = bytearray(), sent + hi - lo
            if len(small) >= 1 << 16:
                write_all(small)
                small = bytearray()
            if hasher is not None and not mapped:
                hasher.drain()  # this chunk's buffer is read again for chunk k + ahead + 1
            if end - released >= RELEASE_EVERY or k + 1 == len(groups):
                if hasher is not None:
                    hasher.drain()  # nothing still hashes what is released
                source.release(released, end)
                released = end
            if k + ahead < len(groups):
                pending.append(pool.submit(work, k + ahead))
            scanned += end - start
            progress.update(scanned)
            if args.bwlimit:
                time.sleep(max(0.0, sent / args.bwlimit - (time.monotonic() - t0)))
    digest = hasher.hexdigest() if hasher is not None else ""
    end_ = json_bytes(dict(bytes_read=scanned, bytes_sent=sent, zero_bytes=zeros, digest=digest))
    write_all(small, END_STRUCT.pack(FRAME_END, len(end_)), end_)
    source.done()
    done = {"done": True, "bytes_sent": sent, "zero_bytes": zeros, "digest": digest}
    emit(dict(done, bytes_compared=scanned), err=True)
    return 0


def stream_out(
    size: int,
    allocated: int,
    extents: list[tuple[int, int]],
    zero_extents: list[tuple[int, int]],
    read_into: Any,
    args: argparse.Namespace,
) -> int:
    """Write the framed stream of ``extents`` (read with ``read_into(mv, offset)``) to stdout.

    ``zero_extents`` are known to read as zeros (e.g. NBD block status): sent as ZERO frames
    without reading them.
    """
    bs, start = args.block_size, args.start_offset
    total = sum(max(0, off + n - max(off, start)) for off, n in extents + zero_extents)
    meta = dict(protocol=PROTOCOL_VERSION, agent=AGENT_VERSION, size=size, block_size=bs)
    meta["digest"] = args.digest
    header = json_bytes(dict(meta, allocated=allocated, start_offset=start, total=total))
    os.set_blocking(1, True)
    enlarge_pipe(1)
    small = bytearray(HEADER_STRUCT.pack(FRAME_HEADER, MAGIC, len(header)) + header)
    views = [memoryview(bytearray(bs)), memoryview(bytearray(bs))]
    cur, zero, sent, zeros = 0, bytes(bs), 0, 0
    hasher = StreamHash(args.digest) if not args.no_hash else None
    progress, t0 = Progress(total), time.monotonic()
    work = sorted(
        [(o, n, True) for o, n in blocks(extents, bs, start)]
        + [(o, n, False) for o, n in blocks(zero_extents, bs, start)]
    )
    for off, n, has_data in work:
        mv = views[cur][:n]
        if has_data:
            read_into(mv, off)
        if not has_data or zero.startswith(mv):  # a memcmp that stops at the first non-zero
            small += BLOCK_STRUCT.pack(FRAME_ZERO, off, n)  # batched with what follows
            zeros += n
        else:
            head = BLOCK_STRUCT.pack(FRAME_DATA, off, n)
            if hasher is not None:
                hasher.submit(head[1:], mv)  # hashed while this thread writes it and reads on
            write_all(small, head, mv)
            small, sent, cur = bytearray(), sent + n, cur ^ 1
        if len(small) >= 1 << 16:
            write_all(small)
            small = bytearray()
        progress.update(sent + zeros)
        if args.bwlimit:
            time.sleep(max(0.0, sent / args.bwlimit - (time.monotonic() - t0)))
    digest = hasher.hexdigest() if hasher is not None else ""
    end = json_bytes(
        dict(bytes_read=sent + zeros, bytes_sent=sent, zero_bytes=zeros, digest=digest)
    )
    write_all(small, END_STRUCT.pack(FRAME_END, len(end)), end)
    emit({"done": True, "bytes_sent": sent, "zero_bytes": zeros, "digest": digest}, err=True)
    return 0


# ---------------------------------------------------------------- NBD (reading exports)

NBD_OPTS_MAGIC = 0x49484156454F5054  # "IHAVEOPT"
NBD_REP_MAGIC = 0x3E889045565A9
NBD_REQUEST_MAGIC = 0x25609513
NBD_SIMPLE_REPLY_MAGIC = 0x67446698
NBD_STRUCTURED_REPLY_MAGIC = 0x668E33EF
NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT = 7, 8, 10
NBD_REP_ACK, NBD_REP_INFO, NBD_REP_META_CONTEXT = 1, 3, 4
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC, NBD_CMD_FLUSH = 0, 1, 2, 3
NBD_CMD_WRITE_ZEROES, NBD_CMD_BLOCK_STATUS = 6, 7
NBD_FLAG_READ_ONLY = 1 << 1
NBD_IN_FLIGHT = 16  # writes sent before their replies are read
NBD_REPLY_FLAG_DONE = 1
NBD_REPLY_NONE, NBD_REPLY_DATA, NBD_REPLY_HOLE, NBD_REPLY_STATUS = 0, 1, 2, 5
NBD_STATE_HOLE, NBD_STATE_ZERO = 1, 2
NBD_MAX_STATUS = 1 << 30


class NBDClient:
    """A minimal NBD client (fixed newstyle, structured replies, block status) over a socket."""

    def __init__(self, path: str, export: str, contexts: list[str]) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.handle, self.flags, self.in_flight = 0, 0, 0
        self.contexts: dict[int, str] = {}
        self._handshake(export, contexts)

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, mv: memoryview) -> None:
        done = 0
        while done < len(mv):
            got = self.sock.recv_into(mv[done:])
            if not got:
                raise AgentError("nbd", "the NBD server closed the connection")
            done += got

    def _option(self, option: int, data: bytes) -> None:
        self.sock.sendall(struct.pack(">QII", NBD_OPTS_MAGIC, option, len(data)) + data)

    def _option_reply(self) -> tuple[int, bytes]:
        magic, _option, kind, length = struct.unpack(">QIII", self._recv(20))
        if magic != NBD_REP_MAGIC:
            raise AgentError("nbd", "bad NBD option reply")
        data = self._recv(length)
        if kind & 0x80000000:
            raise AgentError("nbd", f"NBD option refused ({kind:#x}): {data[4:]!r}")
        return kind, data

    def _handshake(self, export: str, contexts: list[str]) -> None:
        if self._recv(8) != b"NBDMAGIC" or struct.unpack(">Q", self._recv(8))[0] != NBD_OPTS_MAGIC:
            raise AgentError("nbd", "not an NBD server (fixed newstyle)")
        self._recv(2)  # handshake flags
        self.sock.sendall(struct.pack(">I", 1 | 2))  # FIXED_NEWSTYLE | NO_ZEROES
        self._option(NBD_OPT_STRUCTURED_REPLY, b"")
        self._option_reply()
        name = export.encode()
        if contexts:
            queries = b"".join(struct.pack(">I", len(c)) + c.encode() for c in contexts)
            self._option(
                NBD_OPT_SET_META_CONTEXT,
                struct.pack(">I", len(name)) + name + struct.pack(">I", len(contexts)) + queries,
            )
            while True:
                kind, data = self._option_reply()
                if kind == NBD_REP_ACK:
                    break
                if kind == NBD_REP_META_CONTEXT:
                    self.contexts[struct.unpack(">I", data[:4])[0]] = data[4:].decode()
        self._option(NBD_OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        self.size = -1
        while True:
            kind, data = self._option_reply()
            if kind == NBD_REP_ACK:
                break
            if kind == NBD_REP_INFO and struct.unpack(">H", data[:2])[0] == 0:
                self.size, self.flags = struct.unpack(">QH", data[2:12])
        if self.size < 0:
            raise AgentError("nbd", "the NBD server did not say the export's size")

    def _request(
        self, command: int, offset: int, length: int, payload: memoryview | None = None
    ) -> int:
        self.handle += 1
        head = struct.pack(">IHHQQI", NBD_REQUEST_MAGIC, 0, command, self.handle, offset, length)
        self.sock.sendall(head)
        if payload is not None:
            self.sock.sendall(payload)
        return self.handle

    def _chunks(self, into: memoryview | None, base: int) -> Iterator[tuple[int, bytes]]:
        """Reply chunks of the last request: (type, payload); OFFSET_DATA lands in ``into``."""
        while True:
            magic = struct.unpack(">I", self._recv(4))[0]
            if magic == NBD_SIMPLE_REPLY_MAGIC:
                error, _handle = struct.unpack(">IQ", self._recv(12))
                if error:
                    raise AgentError("nbd", f"NBD error {error}")
                if into is not None:
                    self._recv_into(into)
                return
            if magic != NBD_STRUCTURED_REPLY_MAGIC:
                raise AgentError("nbd", "bad NBD reply")
            flags, kind, _handle, length = struct.unpack(">HHQI", self._recv(16))
            if kind & 0x8000:
                error = struct.unpack(">I", self._recv(4))[0]
                self._recv(length - 4)
                raise AgentError("nbd", f"NBD error {error}")
            if kind == NBD_REPLY_DATA and into is not None:
                offset = struct.unpack(">Q", self._recv(8))[0] - base
                self._recv_into(into[offset : offset + length - 8])
            elif kind == NBD_REPLY_HOLE and into is not None:
                offset, size = struct.unpack(">QI", self._recv(12))
                into[offset - base : offset - base + size] = bytes(size)
            else:
                yield kind, self._recv(length)
            if flags & NBD_REPLY_FLAG_DONE:
                return

    def read_into(self, mv: memoryview, offset: int) -> None:
        """Read ``len(mv)`` bytes at ``offset`` (at most 32 MiB)."""
        self._settle()  # replies arrive in any order: none of a write may be pending
        self._request(NBD_CMD_READ, offset, len(mv))
        for _ in self._chunks(mv, offset):
            pass

    def _done(self) -> None:
        for _ in self._chunks(None, 0):
            pass

    def _settle(self, keep: int = 0) -> None:
        """Read replies of writes in flight until at most ``keep`` remain (errors raise)."""
        while self.in_flight > keep:
            self._done()
            self.in_flight -= 1

    def write(self, offset: int, mv: memoryview) -> None:
        """Write ``mv`` at ``offset``; up to NBD_IN_FLIGHT writes wait for their replies at
        once (the data is in the socket's buffer when this returns: ``mv`` may be reused)."""
        if self.flags & NBD_FLAG_READ_ONLY:
            raise AgentError("nbd", "the NBD export is read-only")
        self._request(NBD_CMD_WRITE, offset, len(mv), mv)
        self.in_flight += 1
        self._settle(NBD_IN_FLIGHT)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make a range read as zeros (the server may unmap it)."""
        self._request(NBD_CMD_WRITE_ZEROES, offset, length)
        self.in_flight += 1
        self._settle(NBD_IN_FLIGHT)

    def flush(self) -> None:
        """Everything written so far is acknowledged and on stable storage."""
        self._settle()
        self._request(NBD_CMD_FLUSH, 0, 0)
        self._done()

    def block_status(self, context: str) -> list[tuple[int, int, int]]:
        """(offset, length, flags) runs of the whole export for one meta context."""
        ids = [i for i, name in self.contexts.items() if name == context]
        if not ids:
            raise AgentError("nbd", f"the NBD server does not offer {context}")
        runs: list[tuple[int, int, int]] = []
        pos = 0
        while pos < self.size:
            self._request(NBD_CMD_BLOCK_STATUS, pos, min(NBD_MAX_STATUS, self.size - pos))
            got = pos
            for kind, data in self._chunks(None, pos):
                if kind != NBD_REPLY_STATUS or struct.unpack(">I", data[:4])[0] != ids[0]:
                    continue
                for i in range(4, len(data), 8):
                    length, flags = struct.unpack(">II", data[i : i + 8])
                    length = min(length, self.size - got)
                    if length:
                        runs.append((got, length, flags))
                        got += length
            if got == pos:
                raise AgentError("nbd", "NBD block status made no progress")
            pos = got
        return runs

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._request(NBD_CMD_DISC, 0, 0)
        self.sock.close()


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in runs:
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out


def cmd_nbd_send(args: argparse.Namespace) -> int:
    """Like ``send``, reading an NBD export (a backup's point in time) instead of a file."""
    check_path(args.socket, "socket")
    contexts = ["base:allocation"] + ([args.dirty] if args.dirty else [])
    client = NBDClient(args.socket, args.export, contexts)
    try:
        data: list[tuple[int, int]] = []
        zeros: list[tuple[int, int]] = []
        runs = client.block_status("base:allocation")
        if args.dirty:  # only what changed since the bitmap's checkpoint, holes sent as zeros
            dirty = _merge([(o, n) for o, n, f in client.block_status(args.dirty) if f & 1])
            for off, n, flags in _intersect(runs, dirty):
                (zeros if flags & (NBD_STATE_HOLE | NBD_STATE_ZERO) else data).append((off, n))
        else:
            for off, n, flags in runs:
                if flags & NBD_STATE_HOLE:
                    continue  # unallocated: stays a hole on the destination
                (zeros if flags & NBD_STATE_ZERO else data).append((off, n))
        data, zeros = _merge(data), _merge(zeros)
        allocated = sum(n for _, n in data)
        return stream_out(client.size, allocated, data, zeros, client.read_into, args)
    finally:
        client.close()


def _intersect(
    runs: list[tuple[int, int, int]], ranges: list[tuple[int, int]]
) -> Iterator[tuple[int, int, int]]:
    """The parts of (offset, length, flags) ``runs`` inside sorted, disjoint ``ranges``."""
    i = 0
    for off, n, flags in runs:
        end = off + n
        while i < len(ranges) and ranges[i][0] + ranges[i][1] <= off:
            i += 1
        j = i
        while j < len(ranges) and ranges[j][0] < end:
            lo, hi = max(off, ranges[j][0]), min(end, ranges[j][0] + ranges[j][1])
            if hi > lo:
                yield lo, hi - lo, flags
            j += 1


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


class Receiver:
    """Writes a stream from stdin into a sink; ``good``: everything below it is final."""

    def __init__(
        self,
        sink: Any,
        args: argparse.Namespace,
        undo: UndoLog | None = None,
        index: Any = None,
    ) -> None:
        self.sink, self.args, self.undo, self.good, self.got = sink, args, undo, 0, 0
        self.index = index  # a callable (size, start) -> BlockIndex | None, once the header says
        self.blocks: BlockIndex | None = None
        self.inp = io.BufferedReader(io.FileIO(0, "rb", closefd=False), 1 << 18)

    def read_into(self, mv: memoryview) -> None:
        done = 0
        while done < len(mv):
            n = self.inp.readinto(mv[done:])
            if not n:
                raise AgentError("truncated", f"stream ended after {self.got + done} bytes")
            done += n
        self.got += done

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.read_into(memoryview(buf))
        return bytes(buf)

    def read_json(self, n: int) -> dict[str, Any]:
        try:
            obj = json.loads(self.read(n)) if n <= MAX_JSON else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise AgentError("protocol", "bad JSON in a HEADER or END frame")
        return obj

    def run(self) -> dict[str, Any]:
        args, sink, undo = self.args, self.sink, self.undo
        ftype, magic, n = HEADER_STRUCT.unpack(self.read(HEADER_STRUCT.size))
        if ftype != FRAME_HEADER or magic != MAGIC:
            raise AgentError("protocol", "not a kvm-clone stream (bad magic)")
        meta = self.read_json(n)
        try:
            size, bs, start = (int(meta[k]) for k in ("size", "block_size", "start_offset"))
        except (KeyError, TypeError, ValueError):
            raise AgentError("protocol", f"bad header {meta}") from None
        if size != args.size or not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE:
            raise AgentError("protocol", f"header {meta} does not match --size {args.size}")
        if not 0 <= start <= size or (start and not args.resume):
            raise AgentError("protocol", f"start offset {start} needs --resume and <= size")
        sink.start(start)
        self.good = start
        blocks = self.blocks = self.index(size, start) if self.index is not None else None
        views = [memoryview(bytearray(bs)), memoryview(bytearray(bs))]
        cur, written, zeros, flushed = 0, 0, 0, start
        algo = str(meta.get("digest", "blake2b"))
        if algo not in DIGESTS:
            raise AgentError("protocol", f"unknown stream digest {algo!r}")
        hasher = None if args.no_verify else StreamHash(algo)
        progress = Progress(int(meta.get("total", 0)))
        while True:
            ftype = self.read(1)[0]
            if ftype == FRAME_END:
                end = self.read_json(END_STRUCT.unpack(bytes([ftype]) + self.read(4))[1])
                break
            if ftype not in (FRAME_DATA, FRAME_ZERO):
                raise AgentError("protocol", f"unknown frame type {ftype:#x} at byte {self.got}")
            head = self.read(BLOCK_STRUCT.size - 1)
            _, off, n = BLOCK_STRUCT.unpack(bytes([ftype]) + head)
            if not 0 < n <= bs or off < self.good or off + n > size:
                raise AgentError("protocol", f"bad frame: offset {off} length {n} (size {size})")
            if ftype == FRAME_DATA:
                mv = views[cur][:n]
                self.read_into(mv)
                if hasher is not None:  # hashed while this thread writes it and reads on
                    then = None if blocks is None else functools.partial(blocks.data, off, mv)
                    hasher.submit(head, mv, then)
                elif blocks is not None:
                    blocks.data(off, mv)
                if undo is not None:
                    undo.save(off, n)
                sink.write(off, mv)
                written, cur = written + n, cur ^ 1
            else:
                if undo is not None and sink.inplace:
                    undo.save(off, n)
                sink.zero(off, n)
                zeros += n
                if blocks is not None:
                    blocks.zeros(off, n)
            self.good = off + n
            if self.good - flushed >= WRITEBACK:
                sink.written_up_to(max(start, flushed - WRITEBACK), self.good)
                flushed = self.good
            progress.update(written + zeros)
        digest = hasher.hexdigest() if hasher is not None else ""
        if end.get("bytes_sent") != written:
            raise AgentError("digest-mismatch", f"wrote {written} bytes, the sender sent {end}")
        if hasher is not None and end.get("digest") != digest:
            raise AgentError("digest-mismatch", f"digest {digest} != sender's {end.get('digest')}")
        if args.expect_digest and args.expect_digest.lower() != digest:
            raise AgentError("digest-mismatch", f"digest {digest} != expected {args.expect_digest}")
        sink.finish(size)
        out = dict(ok=True, path=args.dest, size=size, start_offset=start, bytes_written=written)
        out.update(zero_bytes=zeros, digest=digest, end_digest_match=hasher is not None)
        if undo is not None:
            out.update(undo=undo.path, undo_bytes=undo.saved, old_size=undo.old_size)
        return dict(out, expected_digest_match=True if args.expect_digest else None)


def _interrupted(signum: int, _frame: object) -> NoReturn:
    raise AgentError("interrupted", f"stopped by signal {signum}")


def cmd_receive(args: argparse.Namespace) -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupted)
    dest, keep = args.dest, args.keep_partial or args.resume or args.inplace
    dfd, name = open_parent(args.root, dest)
    fd, created, ident, receiver = -1, False, (0, 0), None
    try:
        try:
            if args.resume or args.inplace:  # O_NONBLOCK: a planted FIFO must not hang us
                flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
                fd = os.open(name, flags, dir_fd=dfd)
            else:
                access = os.O_RDWR if args.index else os.O_WRONLY  # the index reads back
                flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
                fd, created = os.open(name, flags, args.mode, dir_fd=dfd), True
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if not stat.S_ISREG(st.st_mode):
                raise AgentError("path", f"not a regular file: {dest}", dest)
            if args.expect_stamp and args.expect_stamp != ",".join(map(str, file_stamp(st))):
                msg = f"{dest} changed since it was compared with the source: sync again"
                raise AgentError("changed", msg, dest)
            enlarge_pipe(0)
            sink = FileSink(fd, args.inplace)
            if args.undo and not args.inplace:
                raise AgentError("usage", "--undo needs --inplace")
            undo = UndoLog(args.root, args.undo, sink) if args.undo else None
            index = _index_factory(args, dfd, name, file_stamp(st)) if args.index else None
            receiver = Receiver(sink, args, undo, index)
            try:
                result = receiver.run()
            finally:
                if undo is not None:
                    undo.close()  # kept even after a failure: what was overwritten is in it
            os.fsync(fd)
            result["allocated"] = os.fstat(fd).st_blocks * 512
            if args.index:
                result["index"] = "none"
                if receiver.blocks is None:
                    drop_index(dfd, name)
                else:
                    digests = receiver.blocks.finish(fd)
                    saved = save_index(dfd, name, os.fstat(fd), *_index_kind(args), digests)
                    result["index"] = "saved" if saved else "none"
            os.close(fd)
            fd = -1
            os.fsync(dfd)
        except OSError as exc:
            raise os_error(exc, dest) from None
        except AgentError:
            raise
        except Exception as exc:  # a bug: still clean up
            raise AgentError("internal", f"{type(exc).__name__}: {exc}") from exc
    except AgentError as exc:
        exc.path = exc.path or dest
        if fd >= 0:
            if keep and receiver is not None and exc.kind != "digest-mismatch":
                try:
                    os.fsync(fd)
                    exc.extra["resume_offset"] = receiver.good
                except OSError:
                    pass
            os.close(fd)
        exc.extra["removed"] = created and not keep and _unlink_same(dfd, name, ident)
        if args.index:
            drop_index(dfd, name)
        raise
    finally:
        os.close(dfd)
    emit(result)
    return 0


def _index_kind(args: argparse.Namespace) -> tuple[int, str]:
    return args.index_block_size, args.index


def _index_factory(args: argparse.Namespace, dfd: int, name: str, stamp: list[int]) -> Any:
    """What ``Receiver`` calls with the stream's size and start to get the file's index: for a
    new file all holes; for ``--inplace`` the saved index, if it still describes the file;
    None (no index) for a resumed file or a stale index."""
    bs, algo = _index_kind(args)

    def make(size: int, start: int) -> BlockIndex | None:
        if start:
            return None
        if not args.inplace:
            return BlockIndex(algo, bs, [], size, size)
        found = load_index(dfd, name, stamp, bs, algo)
        return None if found is None else BlockIndex(algo, bs, found["blocks"], stamp[2], size)

    return make


def cmd_nbd_receive(args: argparse.Namespace) -> int:
    """Like ``receive --inplace``, writing into a writable NBD export instead of a file."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupted)
    check_path(args.socket, "socket")
    client = NBDClient(args.socket, args.export, [])
    undo = None
    try:
        sink = NBDSink(client)
        if args.undo:
            if not args.root:
                raise AgentError("usage", "--undo needs --root")
            undo = UndoLog(args.root, args.undo, sink)
        enlarge_pipe(0)
        args.dest, args.inplace, args.resume, args.expect_digest = args.socket, True, False, None
        result = Receiver(sink, args, undo).run()
    finally:
        if undo is not None:
            undo.close()
        client.close()
    emit(result)
    return 0


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


def cmd_put(args: argparse.Namespace) -> int:
    """Write stdin to a file under --root: a new file, or atomically replacing one (--replace)."""
    dfd, name = open_parent(args.root, args.path)
    tmp = f".{name}.put-{os.getpid()}"
    try:
        data = sys.stdin.buffer.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise AgentError("usage", "put takes at most 1 MiB")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if args.replace:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dfd)
        os.fsync(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise os_error(exc, args.path) from None
    finally:
        os.close(dfd)
    emit({"ok": True, "path": args.path, "bytes": len(data)})
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    """Size, times and identity of files (whether a clone's disks changed since a sync)."""
    out: dict[str, Any] = {}
    for p in args.path:
        try:
            st = os.stat(check_path(p), follow_symlinks=False)
            out[p] = dict(
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                ctime_ns=st.st_ctime_ns,
                ino=st.st_ino,
                dev=st.st_dev,
            )
        except OSError as exc:
            out[p] = os_error(exc, p).as_json()
    emit(dict(paths=out))
    return 0


def _unlink_same(dfd: int, name: str, ident: tuple[int, int]) -> bool:
    """Remove ``name`` only if it still is the file that this run created."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != ident:
            return False
        os.unlink(name, dir_fd=dfd)
        os.fsync(dfd)
    except OSError:
        return False
    return True


def cmd_probe(args: argparse.Namespace) -> int:
    paths: dict[str, Any] = {}
    for p in args.path:
        try:
            st = os.statvfs(check_path(p))
            free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            paths[p] = dict(free=free, total=total, holes=_holes_supported(p))
        except OSError as exc:
            paths[p] = os_error(exc, p).as_json()
    out = dict(agent_version=AGENT_VERSION, protocol=PROTOCOL_VERSION, platform=sys.platform)
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


def cmd_extents(args: argparse.Namespace) -> int:
    fd, size = open_source(args.path)
    extents, seek = data_extents(fd, size)
    out = dict(path=args.path, size=size, allocated=allocated_bytes(fd, size), seek_data=seek)
    note = None if seek else "SEEK_DATA unsupported: the whole file is reported as data"
    emit(dict(out, extents=[list(e) for e in extents], note=note))
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    if args.index and not args.root:
        raise AgentError("usage", "--index needs --root (the index is written next to PATH)")
    fd, size = open_source(args.path)
    dfd, name, before = -1, "", file_stamp(os.fstat(fd))
    try:
        if args.index:
            dfd, name = open_parent(args.root, args.path)
            here = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if file_stamp(here) != before or not stat.S_ISREG(here.st_mode):
                os.close(dfd)
                dfd = -1  # not the regular file named PATH (a symlink, a device): no index
        found = load_index(dfd, name, before, args.block_size, args.algo) if dfd >= 0 else None
        out = dict(path=args.path, size=size, block_size=args.block_size, algo=args.algo)
        out["stamp"] = before  # `receive --expect-stamp`: the file must still be as compared
        if found is not None:
            emit(dict(out, index="used", blocks=found["blocks"]))
            return 0
        if args.index_only:
            emit(dict(out, index="none", blocks=None))
            return 0
        digests, seek = hash_blocks(fd, size, args.block_size, args.algo)
        kept = "none"
        after = os.fstat(fd)
        unchanged = dfd >= 0 and file_stamp(after) == before  # nothing wrote it meanwhile
        if unchanged and save_index(dfd, name, after, args.block_size, args.algo, digests):
            kept = "saved"
    except OSError as exc:
        raise os_error(exc, args.path) from None
    finally:
        os.close(fd)
        if dfd >= 0:
            os.close(dfd)
    out = dict(path=args.path, size=size, block_size=args.block_size, seek_data=seek)
    emit(dict(out, algo=args.algo, stamp=before, index=kept, blocks=digests))
    return 0


def blocks_with_data(extents: list[tuple[int, int]], bs: int) -> set[int]:
    """Indexes of the ``bs``-sized blocks that the data extents touch."""
    return {i for off, n in extents for i in range(off // bs, (off + n - 1) // bs + 1)}


def read_groups(indexes: list[int], per: int) -> list[list[int]]:
    """Sorted block indexes cut into runs of consecutive ones, at most ``per`` long: one read
    each."""
    groups: list[list[int]] = []
    for i in indexes:
        if groups and groups[-1][-1] == i - 1 and len(groups[-1]) < per:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def hash_blocks(fd: int, size: int, bs: int, algo: str) -> tuple[list[str | None], bool]:
    """Every block's digest (None: reads as zeros), and whether SEEK_DATA found the holes."""
    zero, local = bytes(bs), threading.local()
    extents, seek = data_extents(fd, size)
    per = max(1, HASH_READ // bs)  # blocks per read: fewer, bigger preads
    groups = read_groups(sorted(blocks_with_data(extents, bs)), per)

    def one(group: list[int]) -> list[str | None]:
        if getattr(local, "buf", None) is None:
            local.buf = memoryview(bytearray(per * bs))
        start, end = group[0] * bs, min(size, (group[-1] + 1) * bs)
        mv = local.buf[: end - start]
        pread_exact(fd, mv, start)
        out: list[str | None] = []
        for k in range(len(group)):
            block = mv[k * bs : min((k + 1) * bs, end - start)]
            out.append(digest_or_none(algo, block, zero))
        return out

    digests: list[str | None] = [None] * ((size + bs - 1) // bs)
    with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        for k in range(0, len(groups), 256):  # a bounded number of futures at a time
            batch = groups[k : k + 256]
            for group, found in zip(batch, pool.map(one, batch)):
                for i, digest in zip(group, found):
                    digests[i] = digest
    return digests, seek


def cmd_rename(args: argparse.Namespace) -> int:
    sfd, sname = open_parent(args.root, args.src)
    try:
        dfd, dname = open_parent(args.root, args.dst)
    except AgentError:
        os.close(sfd)
        raise
    try:
        if not stat.S_ISREG(os.stat(sname, dir_fd=sfd, follow_symlinks=False).st_mode):
            raise AgentError("path", f"not a regular file: {args.src}", args.src)
        before = file_stamp(os.stat(sname, dir_fd=sfd, follow_symlinks=False))
        index = load_index(sfd, sname, before)
        if args.replace:
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        else:  # link() never replaces anything: a no-clobber rename
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(sname, dir_fd=sfd)
        drop_index(sfd, sname)
        drop_index(dfd, dname)  # a replaced file's
        if index is not None:  # the rename changed the file's ctime: the index follows it
            after = os.stat(dname, dir_fd=dfd, follow_symlinks=False)
            if file_stamp(after)[:3] == before[:3] and after.st_mtime_ns == before[3]:
                save_index(dfd, dname, after, index["block_size"], index["algo"], index["blocks"])
        os.fsync(dfd)
        os.fsync(sfd)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            msg = f"{args.dst} exists (--replace replaces it)"
            raise AgentError("exists", msg, args.dst) from None
        raise os_error(exc, args.src) from None
    finally:
        os.close(sfd)
        os.close(dfd)
    emit({"ok": True, "src": args.src, "dst": args.dst})
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    dfd, name = open_parent(args.root, args.path)
    removed = False
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            raise AgentError("path", f"not a regular file: {args.path}", args.path)
        os.unlink(name, dir_fd=dfd)
        drop_index(dfd, name)
        os.fsync(dfd)
        removed = True
    except OSError as exc:
        if not (exc.errno == errno.ENOENT and args.missing_ok):
            raise os_error(exc, args.path) from None
    finally:
        os.close(dfd)
    emit({"ok": True, "path": args.path, "removed": removed})
    return 0


def parse_size(text: str) -> int:
    """``4194304``, ``4M``, ``4MiB``, ``512k`` -> bytes (binary units)."""
    m = re.fullmatch(r"(\d+)([kmgt]?)(i?b)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m.group(1)) << (10 * " kmgt".index(m.group(2) or " "))


def block_size(text: str) -> int:
    n = parse_size(text)
    if n % MIN_BLOCK_SIZE or not MIN_BLOCK_SIZE <= n <= MAX_BLOCK_SIZE:
        raise argparse.ArgumentTypeError(f"not a multiple of 4 KiB up to 64 MiB: {text!r}")
    return n


def digest_hex(text: str) -> str:
    if not re.fullmatch(f"[0-9a-f]{{{2 * DIGEST_SIZE}}}", text.lower()):
        raise argparse.ArgumentTypeError(f"not a {DIGEST_SIZE}-byte hex digest: {text!r}")
    return text


class Parser(argparse.ArgumentParser):
    """Usage errors as JSON lines too."""

    def error(self, message: str) -> NoReturn:
        emit({"error": message, "kind": "usage"}, err=_ERRORS_TO_STDERR)
        sys.exit(2)


def build_parser() -> Parser:
    p = Parser(prog="kvm-clone-agent", description=__doc__)
    p.add_argument("--version", action="version", version=AGENT_VERSION)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    c = sub.add_parser("probe", help="versions, tools, free space, hole support (JSON)")
    c.add_argument("--path", action="append", default=[], help="a directory (repeatable)")
    c.set_defaults(func=cmd_probe)
    c = sub.add_parser("extents", help="size, allocation and data extents of a file (JSON)")
    c.add_argument("path")
    c.set_defaults(func=cmd_extents)
    c = sub.add_parser("send", help="write a file as a framed stream to stdout")
    c.add_argument("path")
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--bwlimit", type=parse_size, default=0, help="bytes per second")
    c.add_argument("--start-offset", type=parse_size, default=0, help="resume from here")
    c.add_argument("--no-hash", action="store_true", help="send no digest (--no-verify)")
    c.add_argument("--digest", choices=DIGESTS, default="blake2b", help="the stream digest")
    c.add_argument(
        "--ranges-stdin",
        action="store_true",
        help="send only the [offset, length] ranges of a JSON list read from stdin",
    )
    c.add_argument(
        "--against-stdin",
        action="store_true",
        help="send only the blocks whose digest differs from the destination's `hash` answer "
        "read from stdin (its block size and digest)",
    )
    c.set_defaults(func=cmd_send)
    c = sub.add_parser("nbd-send", help="like send, reading an NBD export on a unix socket")
    c.add_argument("socket")
    c.add_argument("--export", required=True)
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--bwlimit", type=parse_size, default=0, help="bytes per second")
    c.add_argument("--start-offset", type=parse_size, default=0, help="resume from here")
    c.add_argument("--no-hash", action="store_true", help="send no digest (--no-verify)")
    c.add_argument("--digest", choices=DIGESTS, default="blake2b", help="the stream digest")
    c.add_argument(
        "--dirty",
        metavar="CONTEXT",
        help="send only the blocks this dirty-bitmap meta context marks "
        "(e.g. qemu:dirty-bitmap:backup-vda); holes there are sent as zeros",
    )
    c.set_defaults(func=cmd_nbd_send)
    c = sub.add_parser("receive", help="write a stream from stdin to a new file under --root")
    c.add_argument("dest")
    c.add_argument("--root", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--expect-digest", type=digest_hex)
    c.add_argument("--no-verify", action="store_true", help="no hashing (sender: --no-hash)")
    c.add_argument("--keep-partial", action="store_true", help="keep DEST on failure")
    c.add_argument("--resume", action="store_true", help="continue an existing DEST")
    c.add_argument(
        "--inplace",
        action="store_true",
        help="update an existing DEST: write DATA frames, zero ZERO frames, keep "
        "the rest; DEST is never removed",
    )
    c.add_argument("--mode", type=lambda s: int(s, 8), default=0o600, help="of a new DEST")
    c.add_argument(
        "--undo", metavar="FILE", help="with --inplace: save what gets overwritten in FILE (new)"
    )
    c.add_argument(
        "--index",
        choices=DIGESTS,
        help="keep DEST's block index (for `hash --index`) with this digest; with --inplace "
        "only when DEST's saved index still describes it",
    )
    c.add_argument("--index-block-size", type=block_size, default=64 << 10)
    c.add_argument(
        "--expect-stamp",
        metavar="DEV,INO,SIZE,MTIME,CTIME",
        help="with --inplace: refuse unless DEST is still as `hash` saw it (its `stamp`)",
    )
    c.set_defaults(func=cmd_receive)
    c = sub.add_parser("nbd-receive", help="like receive --inplace, into a writable NBD export")
    c.add_argument("socket")
    c.add_argument("--export", required=True)
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--no-verify", action="store_true", help="no hashing (sender: --no-hash)")
    c.add_argument("--undo", metavar="FILE", help="save what gets overwritten in FILE (new)")
    c.add_argument("--root", help="the directory --undo must lie in")
    c.set_defaults(func=cmd_nbd_receive)
    c = sub.add_parser("undo-apply", help="put back what an undo log saved")
    c.add_argument("undo")
    c.add_argument("--root", required=True, help="the directory UNDO (and TARGET) lie in")
    c.add_argument("--target", help="the file to restore")
    c.add_argument("--nbd", metavar="SOCKET", help="restore through this NBD export instead")
    c.add_argument("--export", default="")
    c.set_defaults(func=cmd_undo_apply)
    c = sub.add_parser("put", help="write stdin (<= 1 MiB) to a new file under --root")
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--replace", action="store_true", help="atomically replace an existing file")
    c.set_defaults(func=cmd_put)
    c = sub.add_parser("stat", help="size, mtime/ctime (ns) and inode of files (JSON)")
    c.add_argument("path", nargs="+")
    c.set_defaults(func=cmd_stat)
    c = sub.add_parser("hash", help="a 16-byte digest of each block; null: reads as zeros (JSON)")
    c.add_argument("path")
    c.add_argument("--block-size", type=block_size, default=DEFAULT_BLOCK_SIZE)
    c.add_argument("--algo", choices=DIGESTS, default="blake2b", help="blake2b-16 or sha256/128")
    c.add_argument(
        "--index",
        action="store_true",
        help="answer from PATH's saved block index when it still describes PATH; else hash "
        "and save one (needs --root)",
    )
    c.add_argument("--root", help="with --index: the directory PATH and its index lie in")
    c.add_argument(
        "--index-only",
        action="store_true",
        help="with --index: answer from the index or not at all (blocks: null), never hash",
    )
    c.set_defaults(func=cmd_hash)
    c = sub.add_parser(
        "index-refresh",
        help="renew PATH's block index after a change of its qcow2 metadata only (stdin: the "
        "host ranges of data clusters the change kept)",
    )
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--was", required=True, help="PATH's stamp before: dev,ino,size,mtime,ctime")
    c.set_defaults(func=cmd_index_refresh)
    c = sub.add_parser("rename", help="rename a file within --root")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--root", required=True)
    c.add_argument("--replace", action="store_true", help="replace an existing DST")
    c.set_defaults(func=cmd_rename)
    c = sub.add_parser("remove", help="remove a regular file within --root")
    c.add_argument("path")
    c.add_argument("--root", required=True)
    c.add_argument("--missing-ok", action="store_true")
    c.set_defaults(func=cmd_remove)
    return p


def main(argv: list[str] | None = None) -> int:
    global _ERRORS_TO_STDERR
    argv = sys.argv[1:] if argv is None else argv
    _ERRORS_TO_STDERR = argv[:1] in (["send"], ["nbd-send"])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except AgentError as exc:
        emit(exc.as_json(), err=_ERRORS_TO_STDERR)
    except OSError as exc:
        emit(os_error(exc, getattr(args, "path", None)).as_json(), err=_ERRORS_TO_STDERR)
    return 1


if __name__ == "__main__":
    sys.exit(main())
