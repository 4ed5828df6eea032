"""Client side of the host agent's protocol: its JSON lines, progress lines and frames.

The frame constants are the agent's own (``host/wire.py``, defined there once): the agent
package imports only the standard library, so the client can import it as it is.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kvm_clone_tui.agent.host.wire import (
    BLOCK_DIGEST_SIZE,
    BLOCK_STRUCT,
    DIGEST_SIZE,
    END_STRUCT,
    FRAME_DATA,
    FRAME_END,
    FRAME_HEADER,
    FRAME_ZERO,
    HEADER_STRUCT,
    MAGIC,
    PROTOCOL_VERSION,
)

__all__ = [
    "BLOCK_DIGEST_SIZE",
    "BLOCK_STRUCT",
    "DIGEST_SIZE",
    "END_STRUCT",
    "FRAME_DATA",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_ZERO",
    "HEADER_STRUCT",
    "MAGIC",
    "PROTOCOL_VERSION",
    "AgentFailure",
    "BlockHashes",
    "Extents",
    "Frame",
    "Progress",
    "ReceiveResult",
    "encode_data",
    "encode_end",
    "encode_header",
    "encode_zero",
    "iter_frames",
    "parse_progress",
    "parse_result",
    "stream_digest",
]


class AgentFailure(Exception):
    """The agent reported ``{"error": ..., "kind": ...}`` (or said something unreadable)."""

    def __init__(self, kind: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.details: dict[str, Any] = details or {}

    @property
    def path(self) -> str | None:
        path = self.details.get("path")
        return path if isinstance(path, str) else None


def parse_result(text: str | bytes) -> dict[str, Any]:
    """The last JSON line of an agent command's stdout; raises AgentFailure for an error line."""
    text = text.decode(errors="replace") if isinstance(text, bytes) else text
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        obj = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise AgentFailure(
            "protocol", f"host agent printed no JSON result: {text!r:.200}"
        ) from None
    if not isinstance(obj, dict):
        raise AgentFailure("protocol", f"host agent result is not an object: {obj!r:.200}")
    if "error" in obj:
        raise AgentFailure(str(obj.get("kind", "unknown")), str(obj["error"]), obj)
    return obj


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


def parse_progress(line: str | bytes) -> Progress | None:
    """A ``{"progress": n, "total": m}`` stderr line, or None for any other line."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("progress"), int):
        return Progress(obj["progress"], int(obj.get("total", 0)))
    return None


@dataclass(frozen=True)
class Extents:
    size: int
    allocated: int
    extents: list[tuple[int, int]]
    seek_data: bool

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Extents:
        pairs = [(int(o), int(n)) for o, n in obj["extents"]]
        return cls(int(obj["size"]), int(obj["allocated"]), pairs, bool(obj["seek_data"]))


@dataclass(frozen=True)
class ReceiveResult:
    size: int
    bytes_written: int
    zero_bytes: int
    digest: str
    allocated: int
    start_offset: int = 0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ReceiveResult:
        keys = ("size", "bytes_written", "zero_bytes", "allocated", "start_offset")
        size, written, zeros, allocated, start = (int(obj.get(k, 0)) for k in keys)
        return cls(size, written, zeros, str(obj["digest"]), allocated, start)


@dataclass(frozen=True)
class BlockHashes:
    """``hash`` output: per-block blake2b-16 hex digests; None for blocks that read as zeros."""

    size: int
    block_size: int
    blocks: list[str | None]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> BlockHashes:
        return cls(int(obj["size"]), int(obj["block_size"]), list(obj["blocks"]))

    def differing(self, other: BlockHashes) -> list[int]:
        """Indexes of the blocks whose contents differ (same size and block size required)."""
        if (self.size, self.block_size) != (other.size, other.block_size):
            raise ValueError("block hashes of different geometries")
        return [i for i, (a, b) in enumerate(zip(self.blocks, other.blocks)) if a != b]


# ---------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``meta`` for HEADER/END, ``offset``/``length``/``payload`` else."""

    type: int
    offset: int = 0
    length: int = 0
    payload: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)


def encode_header(meta: dict[str, Any]) -> bytes:
    body = json.dumps(meta).encode()
    return HEADER_STRUCT.pack(FRAME_HEADER, MAGIC, len(body)) + body


def encode_data(offset: int, payload: bytes) -> bytes:
    return BLOCK_STRUCT.pack(FRAME_DATA, offset, len(payload)) + payload


def encode_zero(offset: int, length: int) -> bytes:
    return BLOCK_STRUCT.pack(FRAME_ZERO, offset, length)


def encode_end(meta: dict[str, Any]) -> bytes:
    body = json.dumps(meta).encode()
    return END_STRUCT.pack(FRAME_END, len(body)) + body


def iter_frames(read: Callable[[int], bytes]) -> Iterator[Frame]:
    """Decode a stream (``read(n)`` returns up to n bytes, b"" at its end) up to its END frame."""

    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = read(n - len(buf))
            if not chunk:
                raise AgentFailure("truncated", "stream ended before its END frame")
            buf += chunk
        return buf

    ftype, magic, n = HEADER_STRUCT.unpack(exact(HEADER_STRUCT.size))
    if ftype != FRAME_HEADER or magic != MAGIC:
        raise AgentFailure("protocol", "not a kvm-clone stream")
    yield Frame(FRAME_HEADER, meta=json.loads(exact(n)))
    while True:
        ftype = exact(1)[0]
        if ftype == FRAME_END:
            (n,) = struct.unpack(">I", exact(4))
            yield Frame(FRAME_END, meta=json.loads(exact(n)))
            return
        if ftype not in (FRAME_DATA, FRAME_ZERO):
            raise AgentFailure("protocol", f"unknown frame type {ftype:#x}")
        offset, length = struct.unpack(">QI", exact(12))
        payload = exact(length) if ftype == FRAME_DATA else b""
        yield Frame(ftype, offset, length, payload)


def stream_digest(frames: Iterable[Frame]) -> str:
    """The stream digest: blake2b-32 over (offset u64 BE, length u32 BE, payload) of DATA frames."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for frame in frames:
        if frame.type == FRAME_DATA:
            h.update(struct.pack(">QI", frame.offset, frame.length))
            h.update(frame.payload)
    return h.hexdigest()
