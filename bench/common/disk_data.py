"""Disk contents for workloads: extents of seeded random bytes or log text in sparse files."""

from __future__ import annotations

import datetime
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.common.units import MiB

CHUNK = 8 * MiB


@dataclass(frozen=True)
class Extent:
    """A run of data written into a disk: random bytes or log text."""

    offset: int
    length: int
    kind: str  # random | text


def spread(size: int, data: int, count: int) -> list[Extent]:
    """``count`` equal extents holding ``data`` bytes, first at 0 and last at the end."""
    length = data // count // MiB * MiB
    step = (size - length) // max(1, count - 1) // MiB * MiB
    return [Extent(i * step, length, "random" if i % 2 == 0 else "text") for i in range(count)]


class DataSource:
    """Fast, seeded chunks of random bytes (AES-CTR) and of plausible log text."""

    def __init__(self, seed: int = 20240501) -> None:
        key = hashlib.sha256(str(seed).encode()).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._zeros = bytes(CHUNK)
        self._texts = [self._log_block(seed + i) for i in range(4)]
        self._n = 0

    @staticmethod
    def _log_block(seed: int) -> bytes:
        rnd = random.Random(seed)
        levels = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
        apps = ("nginx", "postgres", "sshd", "cron", "app-worker", "kernel")
        paths = ("/api/v1/items", "/login", "/static/app.js", "/health", "/api/v1/orders")
        out, size, t = [], 0, 1714550400.0
        while size < CHUNK:
            t += rnd.random() * 0.05
            stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
            line = (
                f"{stamp:%Y-%m-%dT%H:%M:%S.%f}Z web{rnd.randrange(1, 9):02d} "
                f"{rnd.choice(apps)}[{rnd.randrange(100, 32000)}]: {rnd.choice(levels)} "
                f"req={rnd.getrandbits(48):012x} {rnd.choice(paths)} "
                f"status={rnd.choice((200, 200, 200, 304, 404, 500))} "
                f"took={rnd.randrange(1, 900)}ms user={rnd.randrange(1, 50000)}\n"
            )
            out.append(line)
            size += len(line)
        return "".join(out).encode()[:CHUNK]

    def chunk(self, kind: str, length: int) -> bytes:
        """``length`` (<= CHUNK) bytes of the given kind."""
        if kind == "random":
            return self._enc.update(self._zeros[:length])
        self._n += 1
        return self._texts[self._n % len(self._texts)][:length]


def write_extents(path: Path, size: int, extents: Sequence[Extent], source: DataSource) -> None:
    """Create a sparse file of ``size`` bytes with ``extents`` written into it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for ext in extents:
            done = 0
            while done < ext.length:
                n = min(CHUNK, ext.length - done)
                os.pwrite(fd, source.chunk(ext.kind, n), ext.offset + done)
                done += n
        os.fsync(fd)
    finally:
        os.close(fd)
