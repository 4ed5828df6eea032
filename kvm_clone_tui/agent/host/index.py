"""The block index kept beside a file (``.kvmclone-index-<name>.json``) and the commands that
use it: ``hash`` (``--index``) and ``index-refresh``. Format and rules: docs/agent.md,
"Block index".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import stat
import sys
from typing import Any, Iterator

from .extents import blocks_with_data, data_extents
from .hashing import digest_or_none, hash_blocks, rehash
from .paths import open_parent, open_source
from .wire import (
    _CLOEXEC,
    BLOCK_DIGEST_SIZE,
    DIGESTS,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    AgentError,
    emit,
    json_bytes,
    os_error,
)

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
