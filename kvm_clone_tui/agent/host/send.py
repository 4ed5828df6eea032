"""The sending end: ``send`` (a file as a framed stream on stdout; ``--ranges-stdin`` and
``--against-stdin``, the one pass of a sync over a leased, mapped source) and ``stream_out``,
which ``nbd-send`` shares.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

from .extents import allocated_bytes, blocks, blocks_with_data, data_extents, pread_exact
from .hashing import StreamHash, digest_or_none, read_groups
from .paths import open_source
from .version import agent_version
from .wire import (
    BLOCK_STRUCT,
    DIGESTS,
    END_STRUCT,
    FRAME_DATA,
    FRAME_END,
    FRAME_HEADER,
    FRAME_ZERO,
    HASH_READ,
    HEADER_STRUCT,
    MAGIC,
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    PROTOCOL_VERSION,
    RELEASE_EVERY,
    AgentError,
    Progress,
    emit,
    enlarge_pipe,
    json_bytes,
    write_all,
)


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
    meta = dict(protocol=PROTOCOL_VERSION, agent=agent_version(), size=size, block_size=per * bs)
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
    meta = dict(protocol=PROTOCOL_VERSION, agent=agent_version(), size=size, block_size=bs)
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
