"""Finishing a staged file from what it already holds: compare blocks, send only what differs.

A resumed clone (see ``engine/resume.py``) does to each file it inherits what a hash-mode sync
does to a clone: both hosts hash fixed-size blocks at the same time (the source its file, the
destination the staged file up to its size), the client compares the lists, and the source
sends only the blocks that differ or are missing, written in place. Nothing of the staged file
is trusted unverified: a block written before a crash but never flushed, or damaged since,
hashes differently and is sent again.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from kvm_clone_tui.api.options import SYNC_BLOCK_SIZE
from kvm_clone_tui.api.results import TransferResult
from kvm_clone_tui.api.units import format_bytes
from kvm_clone_tui.engine.block_index import file_hashes
from kvm_clone_tui.engine.host_port import Host
from kvm_clone_tui.engine.journal import Journal, StagedFile
from kvm_clone_tui.engine.progress import RateMeter, disk_progress
from kvm_clone_tui.engine.remote_agent import RemoteAgent, shared_digest
from kvm_clone_tui.engine.transfer import (
    FileTransfer,
    ProgressCallback,
    TransferError,
    TransferOptions,
    copy_file,
)

Note = Callable[[str, str], None]


@dataclass(frozen=True)
class BlockComparison:
    """What a staged file holds of its source, block by block."""

    ranges: tuple[tuple[int, int], ...]  # byte ranges to send (merged differing blocks)
    data_bytes: int  # bytes of the source's blocks that hold data (not zeros)
    reused_bytes: int  # of those, bytes already in the staged file (same block hash)

    @property
    def send_bytes(self) -> int:
        """Bytes of the ranges to send (zero ranges included: they become holes)."""
        return sum(n for _, n in self.ranges)


def compare_blocks(
    mine: list[str | None], theirs: list[str | None], size: int, their_size: int, bs: int
) -> BlockComparison:
    """Compare the source's block hashes (``mine``) with the staged file's (``theirs``).

    Unlike a sync's comparison, blocks past the staged file's end that are zeros in the source
    are not sent: the staged file is extended with a hole there.
    """
    ranges: list[tuple[int, int]] = []
    data = reused = 0
    for i, digest in enumerate(mine):
        # Past the staged file's end it reads as zeros once the receiver extends it to ``size``;
        # a block it holds in part was hashed short, so it only matches if it is all zeros.
        other = theirs[i] if i < len(theirs) and i * bs < their_size else None
        n = min(bs, size - i * bs)
        if digest is not None:
            data += n
        if digest == other:
            reused += 0 if digest is None else n
            continue
        off = i * bs
        if ranges and ranges[-1][0] + ranges[-1][1] == off:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + n)
        else:
            ranges.append((off, n))
    return BlockComparison(tuple(ranges), data, reused)


def split_at_extents(
    ranges: tuple[tuple[int, int], ...], extents: list[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """``ranges`` cut where the source's data ``extents`` begin and end.

    The sender reads a range as one piece and sends it as DATA unless a whole frame is zeros;
    cut at the source's holes, the hole parts become ZERO frames (holes in the staged file too),
    so a resumed file is exactly as sparse as a copied one.
    """
    cuts = sorted({edge for off, n in extents for edge in (off, off + n)})
    out: list[tuple[int, int]] = []
    for off, n in ranges:
        end = off + n
        lo = bisect.bisect_right(cuts, off)
        hi = bisect.bisect_left(cuts, end)
        points = [off, *cuts[lo:hi], end]
        out += [(a, b - a) for a, b in itertools.pairwise(points) if b > a]
    return tuple(out)


def blocks_digest(blocks: list[str | None]) -> str:
    """One digest for a file verified block by block (shown like a stream's digest)."""
    return hashlib.blake2b(json.dumps(blocks).encode(), digest_size=32).hexdigest()


async def _exists(host: Host, path: str) -> bool:
    return (await host.run(["test", "-f", path], check=False)).exit_status == 0


async def resume_file(
    src: Host,
    src_agent: RemoteAgent,
    dst: Host,
    dst_agent: RemoteAgent,
    item: FileTransfer,
    options: TransferOptions,
    on_progress: ProgressCallback,
    *,
    staged: StagedFile,
    journal: Journal,
    note: Note,
) -> TransferResult:
    """Make ``item.dest_path`` (a staged file kept by an interrupted job) equal to its source.

    Same signature as :func:`copy_file` plus the journal entry: a missing staged file is
    copied whole; otherwise only differing blocks move. ``staged.reused`` records what was kept.
    """
    if not await _exists(dst, item.dest_path):
        note("stage", f"{item.label}: nothing of it was staged: copying it whole")
        return await copy_file(src, src_agent, dst, dst_agent, item, options, on_progress)
    started = time.monotonic()
    bs = SYNC_BLOCK_SIZE
    algo = await shared_digest(src_agent, dst_agent)
    index_root = item.dest_root if item.index is not None else None
    src_hashes, dst_hashes, layout = await asyncio.gather(
        file_hashes(src_agent, item.source_path, bs, algo),
        file_hashes(dst_agent, item.dest_path, bs, algo, index_root),
        src_agent.extents(item.source_path),
    )
    size, mine = src_hashes.size, src_hashes.blocks
    their_size, theirs = dst_hashes.size, dst_hashes.blocks
    if size != item.size:
        raise TransferError(
            src.name,
            f"{item.source_path} changed size since the plan ({item.size} -> {size} bytes): "
            "run the clone again",
            "source-changed",
        )
    found = compare_blocks(mine, theirs, size, their_size, bs)
    staged.reused = found.reused_bytes
    journal.save()
    note(
        "plan",
        f"{item.label}: {format_bytes(found.reused_bytes)} of {format_bytes(found.data_bytes)} "
        f"already staged and verified by block hashes; sending {format_bytes(found.send_bytes)}",
    )
    route = "direct" if options.direct is not None else "relay"
    written = 0
    if found.ranges or size != their_size:
        ranges = split_at_extents(found.ranges, [(int(o), int(n)) for o, n in layout["extents"]])
        stamp = dst_hashes.stamp or None  # the staged file must still be as compared
        part = replace(
            item, ranges=ranges, inplace=True, allocated=found.send_bytes, dest_stamp=stamp
        )
        sent = await copy_file(src, src_agent, dst, dst_agent, part, options, on_progress)
        written, route = sent.bytes_written, sent.route
    else:
        total = max(1, found.data_bytes)
        on_progress(disk_progress(item.label, total, total, RateMeter(), True))
    return TransferResult(
        label=item.label,
        route=route,
        bytes_written=written,
        digest=blocks_digest(mine),
        verified=True,
        seconds=time.monotonic() - started,
    )
