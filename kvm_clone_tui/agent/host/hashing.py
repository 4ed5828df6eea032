"""Digests: the stream digest (on a worker thread, overlapping the I/O) and the 16-byte block
digests of ``hash``, computed on up to 4 threads.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .extents import blocks_with_data, data_extents, pread_exact
from .wire import BLOCK_DIGEST_SIZE, DIGEST_SIZE, HASH_READ, INLINE_HASH, AgentError


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


def digest_or_none(algo: str, mv: memoryview, zero: bytes) -> str | None:
    """A block's digest as ``hash`` gives it: None when it reads as all zeros."""
    return None if zero.startswith(mv) else block_digest(algo, mv)


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
