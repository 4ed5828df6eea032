"""A minimal NBD client (fixed newstyle, structured replies, block status) over a unix socket,
and ``nbd-send``: the stream read from an export (a backup's point in time, or qemu-nbd).
"""

from __future__ import annotations

import argparse
import contextlib
import struct
from typing import Iterator

from .paths import check_path
from .send import stream_out
from .wire import AgentError

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
